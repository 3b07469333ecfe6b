//! Cache-level events, for metrics and inspectors: queries added, updated and removed,
//! observers added and removed.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::error::panic_message;
use crate::key::QueryKey;

/// Something that happened in a client's cache.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheEvent {
    /// A query was created for this key.
    Added(QueryKey),
    /// A query's state changed.
    Updated(QueryKey),
    /// A query left memory (removed, garbage-collected or evicted).
    Removed(QueryKey),
    /// An observer subscribed to this key.
    ObserverAdded(QueryKey),
    /// An observer's last subscription to this key ended.
    ObserverRemoved(QueryKey),
}

type EventListener = Arc<dyn Fn(&CacheEvent) + Send + Sync>;

/// The listeners of one client. Emitting costs one atomic load when nobody listens.
#[derive(Default)]
pub(crate) struct EventHub {
    any: AtomicBool,
    next: AtomicU64,
    listeners: Mutex<Arc<[(u64, EventListener)]>>,
}

impl EventHub {
    pub(crate) fn new() -> Self {
        Self {
            any: AtomicBool::new(false),
            next: AtomicU64::new(0),
            listeners: Mutex::new(Arc::from(Vec::new())),
        }
    }

    pub(crate) fn emit(&self, event: &CacheEvent) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (_, listener) in listeners.iter() {
            if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| listener(event))) {
                tracing::error!("cache event listener panicked: {}", panic_message(&*payload));
            }
        }
    }

    pub(crate) fn add(self: &Arc<Self>, listener: EventListener) -> EventSubscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = guard.iter().cloned().collect();
        list.push((id, listener));
        *guard = list.into();
        self.any.store(true, Ordering::Release);
        EventSubscription { hub: Arc::downgrade(self), id }
    }

    fn remove(&self, id: u64) {
        let mut guard = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let list: Vec<_> = guard.iter().filter(|(i, _)| *i != id).cloned().collect();
        self.any.store(!list.is_empty(), Ordering::Release);
        *guard = list.into();
    }
}

/// Keeps a cache-event listener registered; dropping it unsubscribes.
#[must_use = "dropping the subscription unsubscribes at once"]
pub struct EventSubscription {
    hub: Weak<EventHub>,
    id: u64,
}

impl EventSubscription {
    /// Unsubscribes now (the same as dropping).
    pub fn unsubscribe(self) {}
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(self.id);
        }
    }
}

impl fmt::Debug for EventSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSubscription").field("id", &self.id).finish()
    }
}
