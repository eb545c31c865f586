//! The admission webhook of hostport-allocator (work in progress: see issue 6). Today: the
//! TLS serving layer (`tls`), used by the e2e API server's admission tests.
#![forbid(unsafe_code)]

pub mod tls;
