//! The admission webhook (work in progress: see issue 6).
#![forbid(unsafe_code)]
