//! What the control plane's catalog and a data plane say to each other about serving an index
//! (the catalog's `DataPlaneHost` trait, implemented in-process by the data plane and remotely
//! by split mode): how to open it ([`AttachMode`]) and why a change failed ([`AttachError`],
//! [`HostError`]), with a data plane's own refusal kept with its class ([`Cause`]).

use crate::Cause;

/// Why the data plane could not open an index.
#[derive(Debug, Clone)]
pub enum AttachError {
    /// The requested port is taken by another program; the catalog tries the next one.
    PortInUse,
    /// The data plane did not answer in time or could not be reached (worth retrying).
    Unavailable(String),
    /// Anything else, described for the operator.
    Failed(String),
    /// The data plane refused with an error of its own (e.g. its disk is full), kept with its
    /// class.
    Refused(Cause),
}

/// Why the data plane did not carry out a change to a served index (configure, detach).
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// The data plane did not answer in time or could not be reached (worth retrying).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else, described for the operator.
    #[error("{0}")]
    Failed(String),
    /// The data plane refused with an error of its own (e.g. its disk is full), kept with its
    /// class.
    #[error("{0}")]
    Refused(Cause),
}

/// Whether the data plane starts an index afresh or recovers its stored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// A new, empty index (any stale data of that name is discarded).
    Create,
    /// An index the catalog knew before a restart: its data is recovered.
    Recover,
}
