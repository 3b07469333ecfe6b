//! Listener lists shared by observers and mutations: copy-on-write, delivered without locks,
//! newest-wins per listener, panics contained.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::panic_message;

struct Entry<S> {
    id: u64,
    /// `version + 1` of the newest state delivered (0: none yet).
    delivered: AtomicU64,
    call: Box<dyn Fn(&S) + Send + Sync>,
}

/// Listeners of states of type `S`.
pub(crate) struct ListenerList<S> {
    entries: Mutex<Arc<[Arc<Entry<S>>]>>,
    next: AtomicU64,
}

impl<S> ListenerList<S> {
    pub(crate) fn new() -> Self {
        Self { entries: Mutex::new(Arc::from(Vec::new())), next: AtomicU64::new(0) }
    }

    fn snapshot(&self) -> Arc<[Arc<Entry<S>>]> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds a listener and returns its id.
    pub(crate) fn add(&self, call: Box<dyn Fn(&S) + Send + Sync>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry { id, delivered: AtomicU64::new(0), call });
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = guard.iter().cloned().collect();
        list.push(entry);
        *guard = list.into();
        id
    }

    /// Removes a listener; returns how many remain.
    pub(crate) fn remove(&self, id: u64) -> usize {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let list: Vec<_> = guard.iter().filter(|e| e.id != id).cloned().collect();
        let left = list.len();
        *guard = list.into();
        left
    }

    pub(crate) fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Delivers `state` (of `version`) to every listener that has not seen a newer one.
    pub(crate) fn deliver(&self, state: &S, version: u64) {
        for entry in self.snapshot().iter() {
            Self::deliver_to(entry, state, version);
        }
    }

    /// Delivers `state` to listener `id` only (the immediate call of a new subscriber).
    pub(crate) fn deliver_one(&self, id: u64, state: &S, version: u64) {
        if let Some(entry) = self.snapshot().iter().find(|e| e.id == id) {
            Self::deliver_to(entry, state, version);
        }
    }

    fn deliver_to(entry: &Entry<S>, state: &S, version: u64) {
        let stamp = version + 1;
        if entry.delivered.fetch_max(stamp, Ordering::AcqRel) >= stamp {
            return; // This listener already saw this state or a newer one.
        }
        if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| (entry.call)(state))) {
            tracing::error!(
                "listener panicked: {}; other listeners still run",
                panic_message(&*payload)
            );
        }
    }
}

impl<S> fmt::Debug for ListenerList<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerList").field("len", &self.len()).finish()
    }
}

/// Keeps a listener subscribed; dropping it unsubscribes.
#[must_use = "dropping the subscription unsubscribes at once"]
pub struct Subscription {
    unsubscribe: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Subscription {
    pub(crate) fn new(unsubscribe: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self { unsubscribe: Some(Box::new(unsubscribe)) }
    }

    /// Unsubscribes now (the same as dropping the subscription).
    pub fn unsubscribe(mut self) {
        if let Some(f) = self.unsubscribe.take() {
            f();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(f) = self.unsubscribe.take() {
            f();
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("active", &self.unsubscribe.is_some()).finish()
    }
}
