//! Lock helpers: taking a lock poisoned by an earlier panic is an internal error, never a
//! panic on a request path.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{Error, Result};

/// Read-locks `lock`; a lock poisoned by an earlier panic is an internal error.
pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> Result<RwLockReadGuard<'_, T>> {
    lock.read().map_err(|_| poisoned())
}

/// Write-locks `lock`; a lock poisoned by an earlier panic is an internal error.
pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> Result<RwLockWriteGuard<'_, T>> {
    lock.write().map_err(|_| poisoned())
}

/// Locks `mutex`; a mutex poisoned by an earlier panic is an internal error.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    mutex.lock().map_err(|_| poisoned())
}

fn poisoned() -> Error {
    Error::Internal("engine state is unavailable after an earlier panic".to_owned())
}
