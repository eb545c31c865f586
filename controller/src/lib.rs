//! The allocator controller (work in progress: see issue 5).
#![forbid(unsafe_code)]
