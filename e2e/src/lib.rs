//! End-to-end scenarios and the in-process API server (work in progress: see issue 4).
#![forbid(unsafe_code)]
