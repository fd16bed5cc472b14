//! A log file in memory that fails on request.

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{LogFile, frame};

/// What the next operations of a [`MemoryFile`] do.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Appends fail with this error after writing `partial` bytes.
    pub(crate) append: Option<io::ErrorKind>,
    pub(crate) partial: usize,
    /// Syncs fail with this error.
    pub(crate) sync: Option<io::ErrorKind>,
    /// Truncation fails.
    pub(crate) truncate: bool,
    /// How long a sync takes.
    pub(crate) sync_delay: Duration,
}

/// A log file in memory; clones share the bytes and the faults.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryFile {
    pub(crate) bytes: Arc<Mutex<Vec<u8>>>,
    pub(crate) faults: Arc<Mutex<Faults>>,
}

impl MemoryFile {
    /// A file holding a header for file number 1.
    pub(crate) fn with_header() -> Self {
        let file = MemoryFile::default();
        file.bytes
            .lock()
            .unwrap()
            .extend_from_slice(&frame::header(1));
        file
    }

    pub(crate) fn len(&self) -> u64 {
        self.bytes.lock().unwrap().len() as u64
    }
}

impl LogFile for MemoryFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let faults = self.faults.lock().unwrap();
        let mut file = self.bytes.lock().unwrap();
        match faults.append {
            Some(kind) => {
                file.extend_from_slice(&bytes[..faults.partial.min(bytes.len())]);
                Err(io::Error::from(kind))
            }
            None => {
                file.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        let (delay, fault) = {
            let faults = self.faults.lock().unwrap();
            (faults.sync_delay, faults.sync)
        };
        std::thread::sleep(delay);
        fault.map_or(Ok(()), |kind| Err(io::Error::from(kind)))
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if self.faults.lock().unwrap().truncate {
            return Err(io::Error::other("truncate failed"));
        }
        self.bytes.lock().unwrap().truncate(len as usize);
        Ok(())
    }
}
