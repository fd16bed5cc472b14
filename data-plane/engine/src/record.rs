//! What a write is once validated: a [`NewRecord`] and the [`WriteOp`] mutations of one
//! namespace. Validation (`validate`) builds them, the log (`codec`) and segments (`segment`)
//! encode them, and the namespace store (`namespace`) applies them; none of those needs the
//! others to name them.

use crate::{Metadata, SparseVector, VectorId};

/// A validated record, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewRecord {
    pub(crate) id: VectorId,
    pub(crate) values: Vec<f32>,
    pub(crate) sparse: Option<SparseVector>,
    /// `None` when the client gave no metadata or an empty object.
    pub(crate) metadata: Option<Metadata>,
}

/// One validated mutation of a namespace. Applying it cannot fail; records it
/// names that do not exist are skipped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WriteOp {
    /// Insert or replace whole records, in order (a repeated id: the last wins).
    Upsert(Vec<NewRecord>),
    /// Remove these records.
    Delete(Vec<VectorId>),
    /// Remove every record; the namespace stays.
    DeleteAll,
    /// Change parts of one record.
    Update {
        id: VectorId,
        values: Option<Vec<f32>>,
        sparse: Option<SparseVector>,
        /// Keys to set in the record's metadata.
        patch: Option<Metadata>,
    },
    /// Set `patch`'s keys in the metadata of each record.
    MergeMetadata { ids: Vec<VectorId>, patch: Metadata },
}
