//! Every lock in core is taken through this module.
//!
//! One place decides which primitives the engine runs on, so that a randomized scheduler or a
//! model checker can swap them in under a cfg (as async-lock's `mod sync` does for loom), and
//! so that the poisoning policy is written once: a panic never happens while one of these
//! locks is held with state half-updated (no user code runs under an engine lock, and the one
//! exception, the data type's `Clone`, is contained; see the lock order in ARCHITECTURE.md), so
//! a poisoned lock still guards consistent data and is recovered.
//!
//! With `RUSTFLAGS="--cfg shuttle"` the locks are shuttle's, so its randomized and PCT schedulers
//! explore every interleaving of lock acquisitions (`core/tests/shuttle.rs`); atomics and
//! `event-listener` stay std's (their wake-ups reach shuttle's tasks through ordinary wakers).

use std::fmt;
use std::sync::PoisonError;

#[cfg(shuttle)]
use shuttle::sync as imp;
#[cfg(not(shuttle))]
use std::sync as imp;

pub(crate) use imp::MutexGuard;

/// A mutual-exclusion lock whose `lock` never fails.
pub(crate) struct Mutex<T: ?Sized>(imp::Mutex<T>);

impl<T> Mutex<T> {
    /// A new unlocked mutex holding `value`.
    pub(crate) fn new(value: T) -> Self {
        Self(imp::Mutex::new(value))
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, blocking the thread until the lock is free. A lock poisoned by a panic elsewhere
    /// is recovered (see the module docs for why that is sound here).
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: ?Sized> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Mutex { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::Mutex;

    #[test]
    fn a_poisoned_lock_is_recovered_with_its_data() {
        let lock = std::sync::Arc::new(Mutex::new(1));
        let poisoner = lock.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("poison the lock");
        })
        .join();
        *lock.lock() += 1;
        assert_eq!(*lock.lock(), 2);
    }
}
