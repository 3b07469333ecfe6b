//! The one listener list of the engine: copy-on-write, delivered without any lock held,
//! optionally newest-wins per listener, panics contained.
//!
//! [`Listeners`] is the bare list, for an owner that already has a lock (a query keeps its
//! listeners under its own lock, so an idle query pays one pointer for them).
//! [`ListenerList`] adds a lock of its own, for owners that have none (observers, mutations,
//! cache events). Either way a notification takes a [`Snapshot`] under the lock and calls the
//! listeners after releasing it, so a listener may subscribe, unsubscribe or call back into the
//! client.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::error::panic_message;
use crate::sync::Mutex;

/// Listener ids come from one counter for the whole process, so no list needs a counter.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A listener's callback: the state and its version.
pub(crate) type Callback<S> = Box<dyn Fn(&S, u64) + Send + Sync>;

struct Listener<S> {
    id: u64,
    /// `version + 1` of the newest state accepted (0: none yet), for newest-wins delivery.
    delivered: AtomicU64,
    /// A thread is calling this listener (newest-wins delivery calls it one state at a time).
    running: AtomicBool,
    /// `version + 1` of the newest state the listener was called with, written only by the
    /// thread that holds `running`: a state older than that, left pending by a thread that
    /// was slow to hand it over, is stale by the time the runner finds it.
    called: AtomicU64,
    /// The newest state that arrived while the listener was running, for the runner to
    /// deliver next; `has_pending` mirrors whether it is set.
    pending: Mutex<Option<(u64, S)>>,
    has_pending: AtomicBool,
    call: Callback<S>,
}

type List<S> = Arc<Vec<Arc<Listener<S>>>>;

/// A copy-on-write list of listeners, guarded by its owner's lock. Empty costs one pointer.
pub(crate) struct Listeners<S> {
    list: Option<List<S>>,
}

/// The listeners at one moment, to notify after the owner's lock is released.
pub(crate) struct Snapshot<S>(Option<List<S>>);

impl<S> Listeners<S> {
    /// No listeners.
    pub(crate) const fn new() -> Self {
        Self { list: None }
    }

    /// Adds a listener and returns its id.
    pub(crate) fn add(&mut self, call: Callback<S>) -> u64 {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let listener = Arc::new(Listener {
            id,
            delivered: AtomicU64::new(0),
            running: AtomicBool::new(false),
            called: AtomicU64::new(0),
            pending: Mutex::new(None),
            has_pending: AtomicBool::new(false),
            call,
        });
        let mut list: Vec<_> = self.list.iter().flat_map(|l| l.iter().cloned()).collect();
        list.push(listener);
        self.list = Some(Arc::new(list));
        id
    }

    /// Removes listener `id` (if present) and returns how many remain.
    pub(crate) fn remove(&mut self, id: u64) -> usize {
        let Some(current) = &self.list else {
            return 0;
        };
        if current.iter().any(|l| l.id == id) {
            let list: Vec<_> = current.iter().filter(|l| l.id != id).cloned().collect();
            self.list = (!list.is_empty()).then(|| Arc::new(list));
        }
        self.len()
    }

    /// Number of listeners.
    pub(crate) fn len(&self) -> usize {
        self.list.as_ref().map_or(0, |l| l.len())
    }

    /// No listeners.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_none()
    }

    /// The current listeners, to notify once the owner's lock is released; `None` when there
    /// are none (nothing to clone, nothing to notify).
    pub(crate) fn snapshot(&self) -> Option<Snapshot<S>> {
        self.list.clone().map(|l| Snapshot(Some(l)))
    }
}

impl<S: Clone> Snapshot<S> {
    /// Calls every listener with `state`, newest-wins and one state at a time per listener: a
    /// listener that has already accepted `version` or a newer one is skipped; a state that
    /// arrives while the listener runs (from another thread, or re-entrantly from inside the
    /// listener) is left for the running call to deliver next, replacing any older one. So a
    /// listener sees states in order, never two calls at once, and always ends with the newest.
    pub(crate) fn notify(&self, state: &S, version: u64) {
        for listener in self.0.iter().flat_map(|l| l.iter()) {
            deliver_ordered(listener, state, version);
        }
    }

    /// Calls listener `id` only, as [`notify`](Self::notify) does (the immediate call of a new
    /// subscriber).
    pub(crate) fn notify_one(&self, id: u64, state: &S, version: u64) {
        if let Some(listener) = self.0.iter().flat_map(|l| l.iter()).find(|l| l.id == id) {
            deliver_ordered(listener, state, version);
        }
    }
}

impl<S> Snapshot<S> {
    /// Calls every listener with `state` unless it has already accepted `version` or a newer
    /// one; calls from several threads may overlap (for listeners that order states
    /// themselves, such as an observer's attachment to its query).
    pub(crate) fn notify_concurrent(&self, state: &S, version: u64) {
        for listener in self.0.iter().flat_map(|l| l.iter()) {
            let stamp = version.saturating_add(1);
            if listener.delivered.fetch_max(stamp, Ordering::AcqRel) < stamp {
                call(listener, state, version);
            }
        }
    }

    /// Calls every listener with `state`, each call made (events, where each one counts).
    pub(crate) fn notify_every(&self, state: &S) {
        for listener in self.0.iter().flat_map(|l| l.iter()) {
            call(listener, state, 0);
        }
    }
}

/// The hand-over between a runner and a thread leaving a state is a store-then-load on each
/// side (`has_pending` then `running`, `running` then `has_pending`): only sequentially
/// consistent operations rule out both sides missing the other's store (on x86 too, whose
/// store buffer allows exactly that reordering), so every operation here is `SeqCst`.
fn deliver_ordered<S: Clone>(listener: &Listener<S>, state: &S, version: u64) {
    let stamp = version.saturating_add(1);
    if listener.delivered.fetch_max(stamp, Ordering::SeqCst) >= stamp {
        return; // This listener already accepted this state or a newer one.
    }
    let mut next: Option<(u64, S)> = None;
    loop {
        if listener
            .running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            break;
        }
        // Someone is calling the listener: leave the state for them. Cloned outside the lock
        // (the state's `Clone` may be user code).
        let copy = next.take().unwrap_or_else(|| (version, state.clone()));
        {
            let mut pending = listener.pending.lock();
            if pending.as_ref().is_none_or(|(v, _)| *v < copy.0) {
                *pending = Some(copy);
                listener.has_pending.store(true, Ordering::SeqCst);
            }
        }
        // If the runner finished in the meantime, it may not have seen it: take over.
        if listener.running.load(Ordering::SeqCst) {
            return;
        }
        match take_pending(listener) {
            Some(p) => next = Some(p),
            None => return,
        }
    }
    // This thread runs the listener until no newer state is waiting.
    match next {
        Some((v, s)) => call_in_order(listener, &s, v),
        None => call_in_order(listener, state, version),
    }
    loop {
        while let Some((v, s)) = take_pending(listener) {
            call_in_order(listener, &s, v);
        }
        listener.running.store(false, Ordering::SeqCst);
        // A state left between the last look and the release: run again if nobody else does.
        if !listener.has_pending.load(Ordering::SeqCst)
            || listener
                .running
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return;
        }
    }
}

/// Calls the listener unless it was already called with this version or a newer one. Only the
/// thread holding `running` calls it: a thread that accepted an older state, then was slow to
/// leave it pending, may leave it after the runner took (and called) a newer one.
fn call_in_order<S>(listener: &Listener<S>, state: &S, version: u64) {
    let stamp = version.saturating_add(1);
    if listener.called.load(Ordering::SeqCst) >= stamp {
        return;
    }
    listener.called.store(stamp, Ordering::SeqCst);
    call(listener, state, version);
}

fn take_pending<S>(listener: &Listener<S>) -> Option<(u64, S)> {
    if !listener.has_pending.load(Ordering::SeqCst) {
        return None;
    }
    let mut pending = listener.pending.lock();
    listener.has_pending.store(false, Ordering::SeqCst);
    pending.take()
}

fn call<S>(listener: &Listener<S>, state: &S, version: u64) {
    let call = AssertUnwindSafe(|| (listener.call)(state, version));
    if let Err(payload) = std::panic::catch_unwind(call) {
        tracing::error!(
            "listener panicked: {}; the other listeners still run",
            panic_message(&*payload)
        );
    }
}

/// A listener list with a lock of its own. `is_empty` is one atomic load.
pub(crate) struct ListenerList<S> {
    inner: Mutex<Listeners<S>>,
    len: AtomicUsize,
}

impl<S> ListenerList<S> {
    pub(crate) fn new() -> Self {
        Self { inner: Mutex::new(Listeners::new()), len: AtomicUsize::new(0) }
    }

    /// Adds a listener and returns its id.
    pub(crate) fn add(&self, call: Callback<S>) -> u64 {
        let mut list = self.inner.lock();
        let id = list.add(call);
        self.len.store(list.len(), Ordering::Release);
        id
    }

    /// Removes listener `id`; returns how many remain.
    pub(crate) fn remove(&self, id: u64) -> usize {
        let mut list = self.inner.lock();
        let left = list.remove(id);
        self.len.store(left, Ordering::Release);
        left
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notifies every listener, newest-wins and in order (see [`Snapshot::notify`]); no lock
    /// is held during the calls.
    pub(crate) fn notify(&self, state: &S, version: u64)
    where
        S: Clone,
    {
        if let Some(snapshot) = self.snapshot() {
            snapshot.notify(state, version);
        }
    }

    /// Notifies every listener of every call (see [`Snapshot::notify_every`]).
    pub(crate) fn notify_every(&self, state: &S) {
        if let Some(snapshot) = self.snapshot() {
            snapshot.notify_every(state);
        }
    }

    /// Notifies listener `id` only.
    pub(crate) fn notify_one(&self, id: u64, state: &S, version: u64)
    where
        S: Clone,
    {
        if let Some(snapshot) = self.snapshot() {
            snapshot.notify_one(id, state, version);
        }
    }

    fn snapshot(&self) -> Option<Snapshot<S>> {
        if self.is_empty() {
            return None;
        }
        self.inner.lock().snapshot()
    }
}

impl<S> fmt::Debug for ListenerList<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerList").field("len", &self.len()).finish()
    }
}

/// Keeps a listener subscribed; dropping it unsubscribes.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, Subscription, key, testing::TestRuntime};
///
/// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
/// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) }).enabled(false);
/// let observer = client.watch(&options);
/// // A screen keeps its subscriptions; closing the screen drops them.
/// let screen: Vec<Subscription> = vec![observer.subscribe(|_| {}), observer.subscribe(|_| {})];
/// assert_eq!(observer.subscriber_count(), 2);
/// drop(screen);
/// assert_eq!(observer.subscriber_count(), 0);
/// # }
/// ```
#[must_use = "dropping the subscription unsubscribes at once"]
pub struct Subscription {
    unsubscribe: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Subscription {
    pub(crate) fn new(unsubscribe: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self { unsubscribe: Some(Box::new(unsubscribe)) }
    }

    /// Unsubscribes now (the same as dropping the subscription).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) }).enabled(false);
    /// let calls = Arc::new(AtomicU32::new(0));
    /// let count = calls.clone();
    /// let subscription = client.watch(&options).subscribe(move |_| { count.fetch_add(1, Ordering::SeqCst); });
    /// subscription.unsubscribe();
    /// client.set_query_data(key!("n"), 2u32).unwrap();
    /// assert_eq!(calls.load(Ordering::SeqCst), 1); // only the initial state
    /// # }
    /// ```
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

#[cfg(test)]
mod tests;
