//! All indexes of this node, by name.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, RwLock},
};

use crate::{
    Error, Index, IndexConfig, Result,
    index::{read_lock, write_lock},
};

/// All indexes of this node, by name. Cheap to clone: clones share the same
/// indexes.
///
/// Index names are validated by the control plane; here they are opaque keys.
#[derive(Clone, Default)]
pub struct Engine {
    indexes: Arc<RwLock<BTreeMap<String, Arc<Index>>>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.index_names().unwrap_or_default();
        f.debug_struct("Engine").field("indexes", &names).finish()
    }
}

impl Engine {
    /// An engine without indexes.
    pub fn new() -> Self {
        Engine::default()
    }

    /// Creates an empty index; `AlreadyExists` if the name is taken.
    pub fn create_index(&self, name: &str, config: IndexConfig) -> Result<Arc<Index>> {
        let mut indexes = write_lock(&self.indexes)?;
        if indexes.contains_key(name) {
            return Err(Error::AlreadyExists(format!(
                "index '{name}' already exists"
            )));
        }
        let index = Arc::new(Index::new(name, config));
        indexes.insert(name.to_owned(), Arc::clone(&index));
        Ok(index)
    }

    /// The index called `name`; `NotFound` if there is none.
    pub fn index(&self, name: &str) -> Result<Arc<Index>> {
        read_lock(&self.indexes)?
            .get(name)
            .cloned()
            .ok_or_else(|| index_not_found(name))
    }

    /// Removes the index called `name` and its data; `NotFound` if there is
    /// none. Requests already holding the index finish against it.
    pub fn drop_index(&self, name: &str) -> Result<()> {
        write_lock(&self.indexes)?
            .remove(name)
            .map(drop)
            .ok_or_else(|| index_not_found(name))
    }

    /// Names of all indexes, sorted.
    pub fn index_names(&self) -> Result<Vec<String>> {
        Ok(read_lock(&self.indexes)?.keys().cloned().collect())
    }
}

fn index_not_found(name: &str) -> Error {
    Error::NotFound(format!("index '{name}' not found"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dimension, ErrorCode, Metric};

    fn config() -> IndexConfig {
        IndexConfig {
            dimension: Dimension::new(3).unwrap(),
            metric: Metric::Euclidean,
        }
    }

    #[test]
    fn index_lifecycle() {
        let engine = Engine::new();
        let index = engine.create_index("a", config()).unwrap();
        assert_eq!(index.name(), "a");
        assert_eq!(index.config(), config());
        let err = engine.create_index("a", config()).unwrap_err();
        assert_eq!(
            (err.code(), err.to_string()),
            (ErrorCode::AlreadyExists, "index 'a' already exists".into())
        );
        // Clones share indexes.
        let clone = engine.clone();
        assert!(Arc::ptr_eq(&clone.index("a").unwrap(), &index));
        assert_eq!(engine.index_names().unwrap(), ["a"]);
        clone.drop_index("a").unwrap();
        let err = engine.index("a").unwrap_err();
        assert_eq!(
            (err.code(), err.to_string()),
            (ErrorCode::NotFound, "index 'a' not found".into())
        );
        assert_eq!(
            engine.drop_index("a").unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert!(format!("{engine:?}").contains("Engine"));
    }
}
