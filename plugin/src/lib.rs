//! `kubectl hostport`, a kubectl plugin (krew-style name `kubectl-hostport`) for
//! hostport-allocator: `ports` (who holds which port), `free <class>` (free ranges), `why
//! <claim|pod>` (the chain of reasons a claim or pod waits), `reserve`/`release` (admins'
//! reservations). Tables by default, `-o json` for scripts.

pub mod cli;
pub mod error;
pub mod free;
pub mod ports;
pub mod reservations;
pub mod snapshot;
pub mod table;
pub mod why;

pub use error::Error;
