//! The library side of the `larch` binary: the server wiring that `larch serve` runs and the
//! integration tests start, so both run the very same code.
//!
//! # Layout
//! - [`embedded`]: the embedded server (both planes and the admin port in one process) as a
//!   library function: a [`embedded::Config`] of values in, a [`embedded::Running`] handle
//!   (addresses, stop, join) out.
//! - [`lifecycle`]: what every server command shares — the data-dir lock, the admin port,
//!   the wait from recovery to shutdown — and this library's [`Error`].
//!
//! Flag parsing, signals, logging setup and exit codes stay in the binary (`src/main.rs`).

pub mod embedded;
pub mod lifecycle;

pub use lifecycle::{Error, Result};
