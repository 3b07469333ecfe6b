//! Cache-level events, for metrics and inspectors: queries added, updated and removed,
//! observers added and removed.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::key::QueryKey;
use crate::listeners::ListenerList;
use crate::mutations::info::MutationInfo;

/// Something that happened in a client's cache.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use std::sync::{Arc, Mutex};
/// use pystackquery_core::{CacheEvent, QueryClient, QueryClientConfig, key, testing::TestRuntime};
///
/// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
/// let removed = Arc::new(Mutex::new(Vec::new()));
/// let log = removed.clone();
/// let _subscription = client.subscribe_events(move |event| {
///     if let CacheEvent::Removed(key) = event {
///         log.lock().unwrap().push(key.clone()); // e.g. count evictions by key prefix
///     }
/// });
/// client.set_query_data(key!("a"), 1u32).unwrap();
/// client.remove_queries(key!("a"));
/// assert_eq!(*removed.lock().unwrap(), [key!("a")]);
/// # }
/// ```
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
    /// A mutation run started (TanStack's mutation cache `added`).
    MutationAdded(MutationInfo),
    /// A mutation run's state changed: paused or resumed in its scope, an attempt failed, it
    /// settled.
    MutationUpdated(MutationInfo),
    /// A settled mutation run left the mutation cache (`gc_time` after settling).
    MutationRemoved(MutationInfo),
}

/// The event listeners of one client. Emitting costs one atomic load when nobody listens.
pub(crate) struct EventHub {
    listeners: ListenerList<CacheEvent>,
}

impl EventHub {
    pub(crate) fn new() -> Self {
        Self { listeners: ListenerList::new() }
    }

    /// Calls every listener with `event`, with no lock held.
    pub(crate) fn emit(&self, event: &CacheEvent) {
        self.listeners.notify_every(event);
    }

    /// Registers `listener` until the returned subscription is dropped.
    pub(crate) fn add(
        self: &Arc<Self>,
        listener: impl Fn(&CacheEvent) + Send + Sync + 'static,
    ) -> EventSubscription {
        let id = self.listeners.add(Box::new(move |event, _| listener(event)));
        EventSubscription { hub: Arc::downgrade(self), id }
    }
}

/// Keeps a cache-event listener registered; dropping it unsubscribes.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{QueryClient, QueryClientConfig, testing::TestRuntime};
///
/// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
/// // Keep it as long as the listener should run, e.g. in the struct that owns the metrics.
/// struct Metrics { _events: pystackquery_core::EventSubscription }
/// let metrics = Metrics { _events: client.subscribe_events(|_event| {}) };
/// drop(metrics); // unsubscribed
/// # }
/// ```
#[must_use = "dropping the subscription unsubscribes at once"]
pub struct EventSubscription {
    hub: Weak<EventHub>,
    id: u64,
}

impl EventSubscription {
    /// Unsubscribes now (the same as dropping).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// let events = Arc::new(AtomicU32::new(0));
    /// let count = events.clone();
    /// let subscription = client.subscribe_events(move |_| { count.fetch_add(1, Ordering::SeqCst); });
    /// client.set_query_data(key!("a"), 1u32).unwrap();
    /// let seen = events.load(Ordering::SeqCst);
    /// assert!(seen >= 1);
    /// subscription.unsubscribe();
    /// client.set_query_data(key!("b"), 2u32).unwrap();
    /// assert_eq!(events.load(Ordering::SeqCst), seen); // nothing after unsubscribing
    /// # }
    /// ```
    pub fn unsubscribe(self) {}
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.listeners.remove(self.id);
        }
    }
}

impl fmt::Debug for EventSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSubscription").field("id", &self.id).finish()
    }
}
