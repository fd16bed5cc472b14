//! The object write-ahead log of an index on a shared object store, its
//! writer lease and the fence that stops a stale writer (issue 17).
//!
//! # Layout
//!
//! | Module | Concern |
//! |---|---|
//! | `faulty` | (tests) a fault-injecting `ObjectStore`: fail, delay, hold, apply-then-error, call counters |

#[cfg(test)]
mod faulty;
