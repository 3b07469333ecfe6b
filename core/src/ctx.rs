//! The client context: everything the query layer needs from its client (runtime, defaults,
//! store, events, L2 tier, pending seeds, gc queue, clock, counters), defined below the query layer so that
//! queries, observers and mutations never import the public client type.
//!
//! [`ErasedQuery`] is the engine's face of a query whatever its data type: the store holds
//! `Arc<dyn ErasedQuery>`, and bulk operations (invalidate, reset, pause, ...) reach typed
//! queries through it. It is implemented in `query`, above this module.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use event_listener::{Event, EventListener};

use crate::cache::{QueryCache, Stamp, Stored};
use crate::coherence::{CoherenceSink, Inbox, Publisher, new_origin};
use crate::config::QueryClientConfig;
use crate::defaults::{MutationDefaults, QueryDefaults, Registry};
use crate::dehydrate::{HydrateOutcome, Snapshot};
use crate::events::{CacheEvent, EventHub};
use crate::filter::{QueryFilter, RefetchType};
use crate::gc::heap::GcQueue;
use crate::gc::removable::GcVerdict;
use crate::inspect::QueryInfo;
use crate::key::QueryKey;
use crate::meta::Meta;
use crate::mutations::cache::MutationCache;
use crate::retryer::RetryDelayFn;
use crate::runtime::{BoxFuture, Runtime};
use crate::seeds::Seeds;
use crate::stats::Counters;
use crate::storage::{L2, L2Settings};

/// A query as the engine sees it without knowing its data type.
pub(crate) trait ErasedQuery: Stored {
    /// Upcast for downcasting to the typed query.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Borrowing upcast, for the hit path (no reference-count traffic).
    fn as_any(&self) -> &dyn Any;
    /// Whether the query writes to L2.
    fn persisted(&self) -> bool;
    /// Garbage collection: what to do with this query at `now` (client clock).
    fn gc_check(&self, now: u64) -> GcVerdict;
    /// The time of this query's entry in the gc queue, if it has one (`u64::MAX` if not).
    fn gc_queued(&self) -> u64;
    /// Marks stale, and refetches when `refetch` includes the query (by whether it is active).
    /// Returns the refetch to wait for.
    fn invalidate(self: Arc<Self>, ctx: &Arc<Ctx>, refetch: RefetchType) -> Option<BoxFuture>;
    /// Back to the initial state.
    fn reset(self: Arc<Self>, ctx: &Arc<Ctx>);
    /// Whether a fetch is in flight.
    fn fetching(&self) -> bool;
    /// A snapshot for inspection and filters.
    fn info(&self, ctx: &Ctx) -> QueryInfo;
    /// Fetches again with the options it was last used with (joining a fetch in flight), unless
    /// it has none or is paused; returns the fetch to wait for.
    fn refetch(self: Arc<Self>, ctx: &Arc<Ctx>) -> Option<BoxFuture>;
    /// Cancels the fetch in flight, if any; returns a future that waits until it has settled.
    fn cancel(&self) -> Option<BoxFuture>;
    /// The query has left the store: cancel its fetch, and tell its observers (they attach to
    /// a new query for the key).
    fn removed(&self);
    /// Pauses background fetching.
    fn pause(&self, ctx: &Arc<Ctx>);
    /// Resumes background fetching.
    fn resume(self: Arc<Self>, ctx: &Arc<Ctx>, refetch: bool);
    /// Observers attached now, enabled or not.
    fn observer_count(&self) -> usize;
    /// The query's state as a record for a dehydrated state (if it is persisted).
    fn dehydrate(&self) -> Snapshot;
    /// Coherence: marks stale as another process's invalidation did (no L2 write: the sender
    /// wrote the record), refetching when `refetch` and the query is active.
    fn invalidate_remote(self: Arc<Self>, ctx: &Arc<Ctx>, refetch: bool);
    /// Coherence: back to the initial state as another process's reset did (it deleted the
    /// record).
    fn reset_remote(self: Arc<Self>, ctx: &Arc<Ctx>);
    /// Coherence: another process wrote data stamped `at` to L2. If the query is persisted and
    /// its data is older, returns the read that restores the record if it is newer.
    fn adopt_remote(self: Arc<Self>, ctx: &Arc<Ctx>, at: SystemTime) -> Option<BoxFuture>;
    /// Restores the key's pending seed now if the query is persisted (its data type is
    /// known); otherwise the seed stays pending.
    fn claim_seed(self: Arc<Self>, ctx: &Arc<Ctx>) -> HydrateOutcome;
}

/// A shared, type-erased query.
pub(crate) type Entry = Arc<dyn ErasedQuery>;

/// What every part of the engine shares with its client. Held as `Arc<Ctx>` by the client,
/// by fetch tasks and by observers; the gc sweeper holds it weakly.
pub(crate) struct Ctx {
    pub(crate) runtime: Runtime,
    pub(crate) config: QueryClientConfig,
    pub(crate) cache: QueryCache<dyn ErasedQuery>,
    pub(crate) events: Arc<EventHub>,
    pub(crate) l2: Option<Arc<L2>>,
    pub(crate) gc: GcQueue,
    /// The origin of the client clock (see [`Ctx::clock`]).
    pub(crate) base: Instant,
    /// Mutation runs, listed until collected, and their scope queues.
    pub(crate) mutations: MutationCache,
    /// Defaults per key prefix.
    pub(crate) query_defaults: Registry<QueryDefaults>,
    /// Defaults per mutation key prefix.
    pub(crate) mutation_defaults: Registry<MutationDefaults>,
    /// What [`CacheStats`](crate::CacheStats) reports, striped by thread; hits on the fast
    /// path are counted by the store's shards instead.
    pub(crate) stats: Counters,
    /// Hydrated records waiting for their key's first persisting use (at most the cache's
    /// size).
    pub(crate) seeds: Seeds,
    /// Coherence (with a bus): how this client publishes, and what it has received.
    pub(crate) publisher: Option<Publisher>,
    pub(crate) inbox: Option<Arc<Inbox>>,
    /// Every `QueryClient` handle has been dropped (observers may still hold this context).
    closed: AtomicBool,
    /// Notified once, when `closed` is set.
    closing: Event,
}

impl Ctx {
    /// A context on `runtime` with `config`'s defaults and storage.
    pub(crate) fn new(runtime: Runtime, config: QueryClientConfig) -> Self {
        let origin = new_origin();
        let publisher = config.bus.clone().map(|bus| Publisher::new(bus, origin.clone()));
        let inbox = config.bus.as_ref().map(|bus| {
            let inbox = Arc::new(Inbox::new(origin.clone()));
            let sink = CoherenceSink(inbox.clone());
            let subscribe = std::panic::AssertUnwindSafe(|| bus.subscribe(sink, &runtime));
            if std::panic::catch_unwind(subscribe).is_err() {
                tracing::error!(
                    "the coherence bus panicked in subscribe; nothing will be received"
                );
            }
            inbox
        });
        let l2 = config.storage.clone().map(|backend| {
            let settings = L2Settings {
                timeout: config.storage_timeout,
                queue_capacity: config.storage_queue_size,
                failure_threshold: config.storage_failure_threshold,
                cooldown: config.storage_cooldown,
            };
            Arc::new(L2::new(backend, runtime.clone(), settings, publisher.clone()))
        });
        let base = runtime.now();
        Self {
            cache: QueryCache::new(config.cache_max_size),
            seeds: Seeds::new(config.cache_max_size),
            publisher,
            inbox,
            runtime,
            config,
            events: Arc::new(EventHub::new()),
            l2,
            gc: GcQueue::new(),
            base,
            mutations: MutationCache::new(),
            closed: AtomicBool::new(false),
            closing: Event::new(),
            query_defaults: Registry::new(),
            mutation_defaults: Registry::new(),
            stats: Counters::new(),
        }
    }

    /// A query's stale time: its own, else its prefix defaults', else the client's.
    pub(crate) fn stale_time(&self, key: &QueryKey, own: Option<Duration>) -> Duration {
        own.or_else(|| self.query_defaults.resolve(key, |d| d.stale_time))
            .unwrap_or(self.config.stale_time)
    }

    /// A query's gc time: its own, else its prefix defaults', else the client's.
    pub(crate) fn gc_time(&self, key: &QueryKey, own: Option<Duration>) -> Duration {
        own.or_else(|| self.query_defaults.resolve(key, |d| d.gc_time))
            .unwrap_or(self.config.gc_time)
    }

    /// A query's persistence max age: its own, else the client's.
    pub(crate) fn persist_max_age(&self, own: Option<Duration>) -> Duration {
        own.unwrap_or(self.config.persist_max_age)
    }

    /// A query's retries: its own, else its prefix defaults', else the client's.
    pub(crate) fn retry(&self, key: &QueryKey, own: Option<u32>) -> u32 {
        own.or_else(|| self.query_defaults.resolve(key, |d| d.retry)).unwrap_or(self.config.retry)
    }

    /// A query's retry delay: its own, else its prefix defaults', else the client's.
    pub(crate) fn retry_delay(&self, key: &QueryKey, own: Option<&RetryDelayFn>) -> RetryDelayFn {
        own.cloned()
            .or_else(|| self.query_defaults.resolve(key, |d| d.retry_delay.clone()))
            .unwrap_or_else(|| self.config.retry_delay.clone())
    }

    /// A query's refetch interval: its own, else its prefix defaults'.
    pub(crate) fn refetch_interval(
        &self,
        key: &QueryKey,
        own: Option<Duration>,
    ) -> Option<Duration> {
        own.or_else(|| self.query_defaults.resolve(key, |d| d.refetch_interval))
    }

    /// A query's meta: its own, else its prefix defaults'.
    pub(crate) fn meta(&self, key: &QueryKey, own: Option<&Meta>) -> Meta {
        own.cloned()
            .or_else(|| self.query_defaults.resolve(key, |d| d.meta.clone()))
            .unwrap_or_default()
    }

    /// The cached queries that `filter`'s key condition chooses, in key order.
    pub(crate) fn candidates(&self, filter: &QueryFilter) -> Vec<Entry> {
        match filter.key() {
            None => self.cache.find_matching(None),
            Some((key, false)) => self.cache.find_matching(Some(key)),
            Some((key, true)) => self.cache.lookup(key).into_iter().collect(),
        }
    }

    /// The cached queries `filter` chooses, in key order.
    pub(crate) fn select(&self, filter: &QueryFilter) -> Vec<Entry> {
        let entries = self.candidates(filter);
        if !filter.needs_info() {
            return entries;
        }
        entries.into_iter().filter(|entry| filter.matches(&entry.info(self))).collect()
    }

    /// Marks the client gone (its last handle was dropped) and wakes whoever waits for that
    /// (observers' streams).
    pub(crate) fn close(&self) {
        if let Some(inbox) = &self.inbox {
            inbox.close();
        }
        self.closed.store(true, Ordering::SeqCst);
        self.closing.notify(usize::MAX);
    }

    /// Whether the client is gone: observers start no new work, and their streams end.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// A listener notified when the client closes; check [`is_closed`](Self::is_closed) after
    /// creating it.
    pub(crate) fn on_close(&self) -> EventListener {
        self.closing.listen()
    }

    /// The runtime clock as nanoseconds since the client was built.
    pub(crate) fn clock(&self) -> u64 {
        self.since_base(self.runtime.now())
    }

    /// `at` as signed nanoseconds from the clock base (earlier instants are negative; a
    /// restored record's freshness may predate the client), saturating.
    pub(crate) fn nanos(&self, at: Instant) -> i64 {
        match at.checked_duration_since(self.base) {
            Some(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            None => i64::try_from(self.base.duration_since(at).as_nanos())
                .map_or(i64::MIN + 1, |before| -before),
        }
    }

    /// The runtime clock now, as [`nanos`](Self::nanos).
    pub(crate) fn now_nanos(&self) -> i64 {
        self.nanos(self.runtime.now())
    }

    pub(crate) fn since_base(&self, now: Instant) -> u64 {
        // Saturates after 584 years.
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A use stamp for the LRU order, now.
    pub(crate) fn stamp(&self) -> Stamp {
        Stamp::new(self.clock())
    }

    pub(crate) fn emit(&self, event: &CacheEvent) {
        self.events.emit(event);
    }

    /// Publishes `announce` about `key` on the coherence bus, if there is one.
    pub(crate) fn publish(&self, key: &QueryKey, announce: crate::coherence::Announce) {
        if let Some(publisher) = &self.publisher {
            publisher.publish(key, announce);
        }
    }

    pub(crate) fn emit_removed(&self, key: &QueryKey) {
        self.events.emit(&CacheEvent::Removed(key.clone()));
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // Detach every query and cancel its fetch (a fetch holds its client only weakly, so a
        // fetch that never ends cannot keep this cache alive), and let the gc sweeper see that
        // the client is gone. No observer is left to tell: observers hold the context.
        if let Some(inbox) = &self.inbox {
            inbox.close();
        }
        for entry in self.cache.remove_matching(None) {
            let _ = entry.cancel();
        }
        self.gc.close();
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("cache", &self.cache).finish_non_exhaustive()
    }
}
