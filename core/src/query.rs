//! One key's state machine: state, generation fencing, the in-flight fetch shared by every
//! caller, retries, panics, and when the query may be garbage-collected (see `gc`).
//!
//! Locking: each query has one mutex; it is never held while user code runs (query functions,
//! callbacks, listeners) or while the runtime is asked to spawn. Work decided under the lock is
//! collected in [`Effects`] and carried out after the lock is released. The cache lock may be
//! taken before a query lock, never after one.

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use event_listener::Event;
use futures::FutureExt;

use crate::cache::{AnyQuery, GcVerdict};
use crate::client::ClientInner;
use crate::error::{ErasedError, QueryError, panic_message};
use crate::events::CacheEvent;
use crate::key::QueryKey;
use crate::options::OptionsInner;
use crate::retry::RetryPolicy;
use crate::runtime::BoxFuture;
use crate::runtime::Runtime;
use crate::state::{FetchStatus, QueryStatus, RawState};
use crate::storage::record::{Codec, CodecFn, Record};
use crate::storage::{L2, L2Op};

/// A state listener: receives each new state with its version number.
pub(crate) type Listener<T> = Arc<dyn Fn(&RawState<T>, u64) + Send + Sync>;

/// A query's listeners with their ids, replaced (copy on write) when one is added or removed.
type Listeners<T> = Arc<Vec<(u64, Listener<T>)>>;

/// Listener ids come from one counter for the whole process, so a query needs no counter of
/// its own.
static NEXT_LISTENER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The cached query for one key, with data of type `T`.
pub(crate) struct QueryCell<T> {
    key: QueryKey,
    inner: Mutex<CellInner<T>>,
}

pub(crate) struct CellInner<T> {
    pub(crate) state: RawState<T>,
    /// Monotonic instant the data became fresh; `None` when stale (invalidated, restored as
    /// stale, or no data).
    pub(crate) fresh_at: Option<Instant>,
    /// Advanced by every write that must not be overwritten by an older fetch.
    pub(crate) generation: u64,
    /// Advanced by every state change; listeners drop notices older than one they have seen.
    pub(crate) version: u64,
    in_flight: Option<Arc<FetchSlot<T>>>,
    pub(crate) paused: bool,
    pub(crate) observers: u32,
    pub(crate) detached: bool,
    /// When this query may be garbage-collected (client clock, nanoseconds); [`NEVER`] when it
    /// may not.
    gc_at: u64,
    /// The time of this query's entry in the client's gc heap; [`NEVER`] when it has none.
    gc_queued: u64,
    /// The query's gc time in nanoseconds (saturated), or [`NEVER`] when unset (the client
    /// default applies).
    gc_time: u64,
    /// `None` while there is no listener (most queries), to save an allocation per query.
    listeners: Option<Listeners<T>>,
    /// How to fetch this key again without a caller's options (invalidation, resume).
    fetcher: Option<Arc<dyn Fetcher<T>>>,
    /// How to persist this key; set by the first persisting options that touch it.
    pub(crate) codec: Option<CodecFn<T>>,
    /// The gate of the key's one L2 read, once it has started.
    hydration: Option<Arc<Gate>>,
    /// The key's L2 read has finished, was abandoned, or was not needed.
    hydrated: bool,
}

/// See [`QueryCell::quick_answer`].
pub(crate) enum QuickAnswer<T> {
    Data(T),
    Join(Arc<FetchSlot<T>>),
}

/// What a caller of [`QueryCell::begin_hydration`] must do.
pub(crate) enum HydrationStep {
    /// Another caller is reading: wait for this gate (bounded by the storage timeout).
    Wait(Arc<Gate>),
    /// Run this read (it opens `gate` when done, or when dropped).
    Run { gate: Arc<Gate>, read: BoxFuture },
}

impl HydrationStep {
    /// Awaits the step in the caller: runs the read inline, or waits for another's.
    pub(crate) async fn settle(self, client: &ClientInner) {
        match self {
            Self::Run { read, .. } => read.await,
            Self::Wait(gate) => gate.wait(&client.runtime, client.storage_timeout()).await,
        }
    }
}

/// Opened once a hydration read has finished (or been abandoned).
pub(crate) struct Gate {
    open: AtomicBool,
    event: Event,
}

impl Gate {
    fn new() -> Self {
        Self { open: AtomicBool::new(false), event: Event::new() }
    }

    fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    /// Waits for the gate to open, at most `timeout`.
    pub(crate) async fn wait(&self, runtime: &Runtime, timeout: Duration) {
        let opened = async {
            loop {
                if self.open.load(Ordering::Acquire) {
                    return;
                }
                let listener = self.event.listen();
                if self.open.load(Ordering::Acquire) {
                    return;
                }
                listener.await;
            }
        };
        futures::pin_mut!(opened);
        let _ = futures::future::select(opened, runtime.sleep(timeout)).await;
    }
}

impl<T> CellInner<T> {
    /// The query's gc time, or the client's when the query has none.
    fn gc_time(&self, client: &ClientInner) -> Duration {
        if self.gc_time == NEVER {
            client.config.gc_time
        } else {
            Duration::from_nanos(self.gc_time)
        }
    }

    fn set_gc_time(&mut self, gc_time: Duration) {
        // 584 years and more all mean "never"; NEVER itself is kept for "unset".
        self.gc_time = u64::try_from(gc_time.as_nanos()).unwrap_or(NEVER - 1).min(NEVER - 1);
    }
}

/// The outcome of one fetch, shared by every caller that joined it.
pub(crate) struct FetchSlot<T> {
    /// The query generation the fetch was started under.
    generation: u64,
    result: OnceLock<Result<T, ErasedError>>,
    done: Event,
}

impl<T: Clone> FetchSlot<T> {
    fn new(generation: u64) -> Self {
        Self { generation, result: OnceLock::new(), done: Event::new() }
    }

    fn complete(&self, result: Result<T, ErasedError>) {
        let _ = self.result.set(result);
        self.done.notify(usize::MAX);
    }

    /// Waits for the fetch to finish. Dropping the wait does not cancel the fetch.
    pub(crate) async fn wait(&self) -> Result<T, ErasedError> {
        loop {
            if let Some(result) = self.result.get() {
                return result.clone();
            }
            let listener = self.done.listen();
            if let Some(result) = self.result.get() {
                return result.clone();
            }
            listener.await;
        }
    }
}

/// Starts a fetch of a cell with options whose error type is erased.
pub(crate) trait Fetcher<T>: Send + Sync {
    fn start(
        self: Arc<Self>,
        cell: &Arc<QueryCell<T>>,
        client: &Arc<ClientInner>,
    ) -> Arc<FetchSlot<T>>;

    /// How the options persist their data, if they do.
    fn codec(&self) -> Option<CodecFn<T>>;
}

/// Work decided under a query's lock, carried out after it is released.
#[must_use]
pub(crate) struct Effects<T> {
    changed: bool,
    notice: Option<Notice<T>>,
    pub(crate) spawns: Vec<BoxFuture>,
    /// An L2 write was queued and the write worker must be started.
    l2_start: bool,
    /// Queue for garbage collection at this time.
    gc: Option<u64>,
    /// A queued garbage collection was cancelled.
    gc_cancelled: bool,
}

struct Notice<T> {
    listeners: Listeners<T>,
    state: RawState<T>,
    version: u64,
}

impl<T> Effects<T> {
    pub(crate) fn none() -> Self {
        Self {
            changed: false,
            notice: None,
            spawns: Vec::new(),
            l2_start: false,
            gc: None,
            gc_cancelled: false,
        }
    }

    pub(crate) fn run(self, client: &Arc<ClientInner>, key: &QueryKey) {
        if let Some(at) = self.gc {
            client.gc.schedule(client, key.clone(), at);
        }
        if self.gc_cancelled {
            client.gc.cancelled();
        }
        if let (true, Some(l2)) = (self.l2_start, &client.l2) {
            l2.start_worker();
        }
        for task in self.spawns {
            client.runtime.spawner().spawn(task);
        }
        if self.changed {
            client.emit(&CacheEvent::Updated(key.clone()));
        }
        if let Some(notice) = self.notice {
            for (_, listener) in notice.listeners.iter() {
                let call = AssertUnwindSafe(|| listener(&notice.state, notice.version));
                if let Err(payload) = std::panic::catch_unwind(call) {
                    tracing::error!(
                        "query listener panicked: {}; the other listeners still run",
                        panic_message(&*payload)
                    );
                }
            }
        }
    }
}

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
    pub(crate) fn new(key: QueryKey) -> Self {
        Self {
            key,
            inner: Mutex::new(CellInner {
                state: RawState::default(),
                fresh_at: None,
                generation: 0,
                version: 0,
                in_flight: None,
                paused: false,
                observers: 0,
                detached: false,
                gc_at: NEVER,
                gc_queued: NEVER,
                gc_time: NEVER,
                listeners: None,
                fetcher: None,
                codec: None,
                hydration: None,
                hydrated: false,
            }),
        }
    }

    pub(crate) fn key(&self) -> &QueryKey {
        &self.key
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, CellInner<T>> {
        // User code never runs under this lock, so a poisoned lock still guards consistent
        // state (only an allocation failure could unwind here).
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A notice for the listeners, if there are any.
    fn notice(g: &CellInner<T>) -> Option<Notice<T>> {
        let listeners = g.listeners.clone()?;
        Some(Notice { listeners, state: g.state.clone(), version: g.version })
    }

    fn idle_fetch_status(g: &CellInner<T>) -> FetchStatus {
        if g.paused { FetchStatus::Paused } else { FetchStatus::Idle }
    }

    /// Marks a state change and collects the notice for it.
    pub(crate) fn changed(g: &mut CellInner<T>, effects: &mut Effects<T>) {
        g.version += 1;
        effects.changed = true;
        effects.notice = Self::notice(g);
    }

    /// Whether the data is stale at `now` for `stale_time`.
    pub(crate) fn is_stale(g: &CellInner<T>, now: Instant, stale_time: Duration) -> bool {
        match g.fresh_at {
            Some(at) => now.saturating_duration_since(at) >= stale_time,
            None => true,
        }
    }

    /// What a `fetch_query` may do at once without starting anything: return fresh data (or
    /// stale data whose revalidation is already running, or cannot run: paused), or join the
    /// fetch in flight for a key with no data yet.
    pub(crate) fn quick_answer(
        g: &CellInner<T>,
        now: Instant,
        stale_time: Duration,
    ) -> Option<QuickAnswer<T>> {
        if g.detached {
            return None;
        }
        match &g.state.data {
            Some(data) => {
                let settled =
                    !Self::is_stale(g, now, stale_time) || g.in_flight.is_some() || g.paused;
                settled.then(|| QuickAnswer::Data(data.clone()))
            }
            None => {
                let f = g.in_flight.as_ref()?;
                (f.generation == g.generation).then(|| QuickAnswer::Join(f.clone()))
            }
        }
    }

    /// Joins the fetch in flight for the current generation, or starts one.
    pub(crate) fn join_or_begin<E>(
        self: &Arc<Self>,
        g: &mut CellInner<T>,
        client: &Arc<ClientInner>,
        options: &Arc<OptionsInner<T, E>>,
        effects: &mut Effects<T>,
    ) -> Arc<FetchSlot<T>>
    where
        E: fmt::Display + Send + Sync + 'static,
    {
        if let Some(f) = &g.in_flight
            && f.generation == g.generation
        {
            return f.clone();
        }
        let generation = g.generation;
        let slot = Arc::new(FetchSlot::new(generation));
        g.in_flight = Some(slot.clone());
        g.set_gc_time(options.gc_time.unwrap_or(client.config.gc_time));
        Self::cancel_gc(g, effects);
        if g.state.data.is_none() {
            g.state.status = QueryStatus::Pending;
        }
        g.state.fetch_status = FetchStatus::Fetching;
        Self::changed(g, effects);
        let task =
            run_fetch(self.clone(), client.clone(), options.clone(), generation, slot.clone());
        effects.spawns.push(Box::pin(task));
        slot
    }

    /// Starts (or joins) a fetch with `options` and remembers them for later refetches.
    pub(crate) fn fetch_with<E>(
        self: &Arc<Self>,
        client: &Arc<ClientInner>,
        options: &Arc<OptionsInner<T, E>>,
    ) -> Arc<FetchSlot<T>>
    where
        E: fmt::Display + Send + Sync + 'static,
    {
        let mut effects = Effects::none();
        let slot = {
            let mut g = self.lock();
            g.fetcher = Some(options.clone());
            self.join_or_begin(&mut g, client, options, &mut effects)
        };
        effects.run(client, &self.key);
        slot
    }

    /// Records the outcome of a fetch started under `generation`.
    fn finish(
        self: &Arc<Self>,
        client: &Arc<ClientInner>,
        generation: u64,
        slot: &Arc<FetchSlot<T>>,
        result: Result<T, ErasedError>,
        failures: u32,
        before_wake: impl FnOnce(),
    ) {
        let mut effects = Effects::none();
        {
            let mut g = self.lock();
            let current = g.generation == generation && !g.detached;
            let ours = g.in_flight.as_ref().is_some_and(|f| Arc::ptr_eq(f, slot));
            if ours {
                g.in_flight = None;
            }
            if current {
                match &result {
                    Ok(data) => {
                        g.state.status = QueryStatus::Success;
                        g.state.data = Some(data.clone());
                        g.state.error = None;
                        g.state.data_updated_at = Some(client.runtime.system_now());
                        g.state.fetch_failure_count = 0;
                        g.state.fetch_failure_reason = None;
                        g.fresh_at = Some(client.runtime.now());
                        self.persist(&g, client, &mut effects);
                    }
                    Err(error) => {
                        g.state.status = QueryStatus::Error;
                        g.state.error = Some(error.clone());
                        g.state.error_updated_at = Some(client.runtime.system_now());
                        g.state.fetch_failure_count = failures;
                        g.state.fetch_failure_reason = Some(error.clone());
                    }
                }
            }
            if ours {
                g.state.fetch_status = Self::idle_fetch_status(&g);
            }
            if current || ours {
                Self::changed(&mut g, &mut effects);
            }
            self.maybe_schedule_gc(&mut g, client, &mut effects);
        }
        effects.run(client, &self.key);
        before_wake();
        slot.complete(result);
    }

    /// Records a failed attempt that will be retried.
    fn record_failure(
        &self,
        client: &Arc<ClientInner>,
        generation: u64,
        failures: u32,
        error: ErasedError,
    ) {
        let mut effects = Effects::none();
        {
            let mut g = self.lock();
            if g.generation != generation || g.detached {
                return;
            }
            g.state.fetch_failure_count = failures;
            g.state.fetch_failure_reason = Some(error);
            Self::changed(&mut g, &mut effects);
        }
        effects.run(client, &self.key);
    }

    /// Schedules removal `gc_time` from now if the query is unobserved and idle.
    pub(crate) fn maybe_schedule_gc(
        self: &Arc<Self>,
        g: &mut CellInner<T>,
        client: &Arc<ClientInner>,
        effects: &mut Effects<T>,
    ) {
        if g.observers > 0 || g.in_flight.is_some() || g.detached {
            return;
        }
        let gc_time = g.gc_time(client);
        let at = u64::try_from(gc_time.as_nanos()).ok().and_then(|d| client.clock().checked_add(d));
        // A gc time too large to represent means "never".
        g.gc_at = at.unwrap_or(NEVER);
        if g.gc_at < g.gc_queued {
            g.gc_queued = g.gc_at;
            effects.gc = Some(g.gc_at);
        }
    }

    /// Cancels a pending garbage collection.
    pub(crate) fn cancel_gc(g: &mut CellInner<T>, effects: &mut Effects<T>) {
        if std::mem::replace(&mut g.gc_at, NEVER) != NEVER {
            effects.gc_cancelled = true;
        }
    }

    /// Writes data as if fetched now, fencing off older fetches.
    pub(crate) fn set_data(
        self: &Arc<Self>,
        client: &Arc<ClientInner>,
        g: &mut CellInner<T>,
        data: T,
        effects: &mut Effects<T>,
    ) {
        g.generation += 1;
        g.state.status = QueryStatus::Success;
        g.state.data = Some(data);
        g.state.error = None;
        g.state.data_updated_at = Some(client.runtime.system_now());
        g.state.fetch_failure_count = 0;
        g.state.fetch_failure_reason = None;
        g.fresh_at = Some(client.runtime.now());
        Self::changed(g, effects);
        self.persist(g, client, effects);
        self.maybe_schedule_gc(g, client, effects);
    }

    /// Adds a listener; returns its id.
    pub(crate) fn add_listener(g: &mut CellInner<T>, listener: Listener<T>) -> u64 {
        let id = NEXT_LISTENER.fetch_add(1, Ordering::Relaxed);
        let mut list: Vec<_> = g.listeners.iter().flat_map(|l| l.iter().cloned()).collect();
        list.push((id, listener));
        g.listeners = Some(Arc::new(list));
        id
    }

    /// Removes a listener.
    pub(crate) fn remove_listener(g: &mut CellInner<T>, id: u64) {
        let Some(current) = &g.listeners else {
            return;
        };
        if current.iter().any(|(i, _)| *i == id) {
            let list: Vec<_> = current.iter().filter(|(i, _)| *i != id).cloned().collect();
            g.listeners = (!list.is_empty()).then(|| Arc::new(list));
        }
    }

    /// Remembers how to refetch, and how to persist if the options persist.
    pub(crate) fn set_fetcher(g: &mut CellInner<T>, fetcher: Arc<dyn Fetcher<T>>) {
        if g.codec.is_none() {
            g.codec = fetcher.codec();
        }
        g.fetcher = Some(fetcher);
    }

    /// Marks the key persisted when `codec` is set.
    fn adopt_codec(g: &mut CellInner<T>, codec: Option<CodecFn<T>>) {
        if g.codec.is_none() {
            g.codec = codec;
        }
    }

    /// Queues a write of the current state to L2 when the key is persisted and holds data.
    /// The write is queued before the query's lock is released, so that anyone who can see the
    /// state can also `flush_storage` it; the worker is started after (no spawning under a
    /// lock).
    fn persist(&self, g: &CellInner<T>, client: &ClientInner, effects: &mut Effects<T>) {
        let (Some(l2), Some(codec)) = (&client.l2, g.codec) else {
            return;
        };
        if g.state.status != QueryStatus::Success {
            return;
        }
        let state = g.state.clone();
        let ttl = record_ttl(g.gc_time(client));
        let op = L2Op::Put { encode: Box::new(move || (codec().encode)(&state)), ttl };
        effects.l2_start |= l2.push(self.key.clone(), op);
    }

    /// Queues a delete of the key's L2 record when the key is persisted.
    fn unpersist(&self, g: &CellInner<T>, client: &ClientInner, effects: &mut Effects<T>) {
        if let (Some(l2), Some(_)) = (&client.l2, g.codec) {
            effects.l2_start |= l2.push(self.key.clone(), L2Op::Delete);
        }
    }

    /// Claims the key's one L2 read if it is persisted, cold and not yet hydrated: returns the
    /// read to run (the caller awaits it or spawns it), or the gate to wait on while another
    /// caller's read is under way.
    ///
    /// `options` mark the key persisted if they persist, and give the gc time the restored
    /// query keeps if no fetch follows.
    pub(crate) fn begin_hydration<E>(
        self: &Arc<Self>,
        g: &mut CellInner<T>,
        client: &Arc<ClientInner>,
        options: &OptionsInner<T, E>,
    ) -> Option<HydrationStep> {
        let l2 = client.l2.as_ref()?;
        Self::adopt_codec(g, options.codec);
        if g.hydrated {
            return None;
        }
        if let Some(gate) = &g.hydration {
            return Some(HydrationStep::Wait(gate.clone()));
        }
        let codec = g.codec?;
        if g.state.data.is_some() {
            // Data written in this process since the key was created is newer than L2.
            g.hydrated = true;
            return None;
        }
        let gate = Arc::new(Gate::new());
        g.hydration = Some(gate.clone());
        if g.gc_time == NEVER {
            g.set_gc_time(options.gc_time.unwrap_or(client.config.gc_time));
        }
        let read = hydrate(self.clone(), client.clone(), l2.clone(), codec(), gate.clone());
        Some(HydrationStep::Run { gate, read: Box::pin(read) })
    }

    /// Restores a record read from L2 unless memory holds newer data.
    fn apply_record(
        g: &mut CellInner<T>,
        client: &ClientInner,
        record: Record<T>,
        effects: &mut Effects<T>,
    ) -> bool {
        let Some(data) = record.data else {
            return false;
        };
        if g.state.data.is_some() {
            let newer = match (record.data_updated_at, g.state.data_updated_at) {
                (Some(stored), Some(memory)) => stored > memory,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !newer {
                return false;
            }
        }
        g.state.status = match record.status {
            QueryStatus::Error => QueryStatus::Error,
            _ => QueryStatus::Success,
        };
        g.state.data = Some(data);
        g.state.error = record.error.map(|m| ErasedError::Restored(m.into()));
        g.state.data_updated_at = record.data_updated_at;
        g.state.error_updated_at = record.error_updated_at;
        g.state.fetch_failure_count = record.fetch_failure_count;
        g.state.fetch_failure_reason =
            record.fetch_failure_reason.map(|m| ErasedError::Restored(m.into()));
        // Age by the wall clock; a record from the future, or older than this machine's
        // monotonic clock can express, is stale.
        g.fresh_at = record.data_updated_at.and_then(|at| {
            let age = match client.runtime.system_now().duration_since(at) {
                Ok(age) => age,
                // Float seconds round to within a microsecond; only a real lead is "future".
                Err(ahead) if ahead.duration() < ROUNDING_SLACK => Duration::ZERO,
                Err(_) => return None,
            };
            client.runtime.now().checked_sub(age)
        });
        Self::changed(g, effects);
        true
    }

    /// After hydration, fetches if the key still needs it (used by observers, which do not
    /// wait for hydration before showing a state).
    pub(crate) fn fetch_after_hydration<E>(
        self: &Arc<Self>,
        gate: Arc<Gate>,
        client: &Arc<ClientInner>,
        options: &Arc<OptionsInner<T, E>>,
    ) -> BoxFuture
    where
        E: fmt::Display + Send + Sync + 'static,
    {
        let (cell, client, options) = (self.clone(), client.clone(), options.clone());
        Box::pin(async move {
            gate.wait(&client.runtime, client.storage_timeout()).await;
            let stale_time = options.stale_time.unwrap_or(client.config.stale_time);
            let mut effects = Effects::none();
            {
                let mut g = cell.lock();
                let wanted = !g.detached
                    && !g.paused
                    && g.observers > 0
                    && !Self::is_fetching(&g)
                    && (g.state.data.is_none()
                        || Self::is_stale(&g, client.runtime.now(), stale_time));
                if wanted {
                    let _ = cell.join_or_begin(&mut g, &client, &options, &mut effects);
                }
            }
            effects.run(&client, &cell.key);
        })
    }

    /// Whether a fetch is in flight.
    pub(crate) fn is_fetching(g: &CellInner<T>) -> bool {
        g.in_flight.is_some()
    }

    /// Marks stale and, when observed and asked to, starts a fresh fetch under the new
    /// generation. Returns the fetch to wait for, if one started.
    pub(crate) fn invalidate(
        self: &Arc<Self>,
        client: &Arc<ClientInner>,
        refetch: bool,
    ) -> Option<Arc<FetchSlot<T>>> {
        let mut effects = Effects::none();
        let slot = {
            let mut g = self.lock();
            g.generation += 1;
            g.fresh_at = None;
            if g.state.data.is_some() {
                g.state.data_updated_at = Some(SystemTime::UNIX_EPOCH);
            }
            Self::changed(&mut g, &mut effects);
            self.persist(&g, client, &mut effects);
            let fetcher = g.fetcher.clone();
            (refetch && g.observers > 0 && !g.paused).then_some(fetcher).flatten()
        };
        effects.run(client, &self.key);
        slot.map(|fetcher| fetcher.start(self, client))
    }

    /// Back to the initial state, fencing off older fetches.
    pub(crate) fn reset(self: &Arc<Self>, client: &Arc<ClientInner>) {
        let mut effects = Effects::none();
        {
            let mut g = self.lock();
            g.generation += 1;
            g.fresh_at = None;
            g.state = RawState::default();
            if g.in_flight.is_some() {
                // The old fetch is still running; say so until it ends.
                g.state.fetch_status = FetchStatus::Fetching;
            } else {
                g.state.fetch_status = Self::idle_fetch_status(&g);
            }
            Self::changed(&mut g, &mut effects);
            self.unpersist(&g, client, &mut effects);
        }
        effects.run(client, &self.key);
    }

    /// Pauses background fetching.
    pub(crate) fn pause(&self, client: &Arc<ClientInner>) {
        let mut effects = Effects::none();
        {
            let mut g = self.lock();
            if g.paused {
                return;
            }
            g.paused = true;
            if g.in_flight.is_none() {
                g.state.fetch_status = FetchStatus::Paused;
            }
            Self::changed(&mut g, &mut effects);
        }
        effects.run(client, &self.key);
    }

    /// Resumes background fetching; with `refetch`, fetches at once.
    pub(crate) fn resume(self: &Arc<Self>, client: &Arc<ClientInner>, refetch: bool) {
        let mut effects = Effects::none();
        let fetcher = {
            let mut g = self.lock();
            if !g.paused {
                return;
            }
            g.paused = false;
            if g.in_flight.is_none() {
                g.state.fetch_status = FetchStatus::Idle;
            }
            Self::changed(&mut g, &mut effects);
            g.fetcher.clone()
        };
        effects.run(client, &self.key);
        if refetch && let Some(fetcher) = fetcher {
            let _ = fetcher.start(self, client);
        }
    }
}

impl<T: Clone + Send + Sync + 'static> AnyQuery for QueryCell<T> {
    fn key(&self) -> &QueryKey {
        &self.key
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }

    fn try_detach(&self, force: bool) -> bool {
        let mut g = self.lock();
        if !force && (g.observers > 0 || g.in_flight.is_some()) {
            return false;
        }
        g.detached = true;
        g.generation += 1;
        g.gc_at = NEVER;
        true
    }

    fn is_idle(&self) -> bool {
        let g = self.lock();
        g.observers == 0 && g.in_flight.is_none() && !g.detached
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn gc_check(&self, now: u64) -> GcVerdict {
        let mut g = self.lock();
        let idle = g.observers == 0 && g.in_flight.is_none() && !g.detached;
        let at = g.gc_at;
        if !idle || at == NEVER {
            g.gc_queued = NEVER;
            GcVerdict::Keep
        } else if at > now {
            g.gc_queued = at;
            GcVerdict::Later(at)
        } else {
            g.gc_queued = NEVER;
            GcVerdict::Remove
        }
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn persisted(&self) -> bool {
        self.lock().codec.is_some()
    }

    fn invalidate(self: Arc<Self>, client: &Arc<ClientInner>, refetch: bool) -> Option<BoxFuture> {
        let slot = QueryCell::invalidate(&self, client, refetch)?;
        Some(Box::pin(async move {
            let _ = slot.wait().await;
        }))
    }

    fn reset(self: Arc<Self>, client: &Arc<ClientInner>) {
        QueryCell::reset(&self, client);
    }

    fn pause(&self, client: &Arc<ClientInner>) {
        QueryCell::pause(self, client);
    }

    fn resume(self: Arc<Self>, client: &Arc<ClientInner>, refetch: bool) {
        QueryCell::resume(&self, client, refetch);
    }
}

impl<T, E> Fetcher<T> for OptionsInner<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    fn start(
        self: Arc<Self>,
        cell: &Arc<QueryCell<T>>,
        client: &Arc<ClientInner>,
    ) -> Arc<FetchSlot<T>> {
        cell.fetch_with(client, &self)
    }

    fn codec(&self) -> Option<CodecFn<T>> {
        self.codec
    }
}

/// The "no time" value of `gc_at` and `gc_queued`.
const NEVER: u64 = u64::MAX;

/// How far ahead of the wall clock a restored timestamp may be and still count as "now":
/// the float seconds of the record format round to well within this.
const ROUNDING_SLACK: Duration = Duration::from_millis(1);

/// The time to live of a record for a query with `gc_time`: a gc time of ten years or more
/// means "keep" and writes no expiry.
fn record_ttl(gc_time: Duration) -> Option<Duration> {
    const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    (gc_time < FOREVER).then_some(gc_time)
}

/// The one L2 read of a cold key.
async fn hydrate<T: Clone + Send + Sync + 'static>(
    cell: Arc<QueryCell<T>>,
    client: Arc<ClientInner>,
    l2: Arc<L2>,
    codec: Codec<T>,
    gate: Arc<Gate>,
) {
    // However this read ends (finished, or dropped with its caller), the key counts as
    // hydrated and the gate opens, so that no waiter waits for a read that will not finish.
    struct Finish<T: Clone + Send + Sync + 'static>(Arc<QueryCell<T>>, Arc<Gate>);
    impl<T: Clone + Send + Sync + 'static> Drop for Finish<T> {
        fn drop(&mut self) {
            let mut g = self.0.lock();
            g.hydrated = true;
            g.hydration = None;
            drop(g);
            self.1.open();
        }
    }
    let _finish = Finish(cell.clone(), gate);
    l2.count_hydration();
    let record = l2.read(&cell.key, codec.decode).await;
    let mut effects = Effects::none();
    {
        let mut g = cell.lock();
        g.hydrated = true;
        g.hydration = None;
        if let Some(record) = record
            && !g.detached
            && QueryCell::apply_record(&mut g, &client, record, &mut effects)
        {
            tracing::debug!(key = %cell.key, "hydrated from L2");
            // A fresh record may mean no fetch follows, and gc is scheduled when a fetch
            // ends: schedule it here so the restored query is still collected.
            cell.maybe_schedule_gc(&mut g, &client, &mut effects);
        }
    }
    effects.run(&client, &cell.key);
}

/// Finishes the slot with [`QueryError::Cancelled`] if the fetch task is dropped unfinished
/// (the runtime shut down), so that no caller waits forever.
struct FetchGuard<T: Clone + Send + Sync + 'static> {
    cell: Arc<QueryCell<T>>,
    client: Arc<ClientInner>,
    generation: u64,
    slot: Arc<FetchSlot<T>>,
    finished: bool,
}

impl<T: Clone + Send + Sync + 'static> FetchGuard<T> {
    fn finish(
        &mut self,
        result: Result<T, ErasedError>,
        failures: u32,
        before_wake: impl FnOnce(),
    ) {
        self.finished = true;
        self.cell.finish(&self.client, self.generation, &self.slot, result, failures, before_wake);
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for FetchGuard<T> {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            self.cell.finish(
                &self.client,
                self.generation,
                &self.slot,
                Err(ErasedError::Cancelled),
                0,
                || {},
            );
        }
    }
}

/// One fetch: attempts with backoff, panics caught, callbacks run, outcome recorded.
async fn run_fetch<T, E>(
    cell: Arc<QueryCell<T>>,
    client: Arc<ClientInner>,
    options: Arc<OptionsInner<T, E>>,
    generation: u64,
    slot: Arc<FetchSlot<T>>,
) where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    let policy = RetryPolicy {
        retries: options.retry.unwrap_or(client.config.retry),
        delay: options.retry_delay.clone().unwrap_or_else(|| client.config.retry_delay.clone()),
        retry_if: options.retry_if.clone(),
    };
    let runtime = client.runtime.clone();
    let mut guard = FetchGuard { cell, client, generation, slot, finished: false };
    let mut attempt: u32 = 0;
    let outcome: Result<T, QueryError<E>> = loop {
        match call_catching_panics(&options).await {
            Ok(Ok(data)) => break Ok(data),
            Ok(Err(error)) => {
                let error = Arc::new(error);
                match policy.next_delay(attempt, &error) {
                    Some(delay) => {
                        attempt += 1;
                        let erased = ErasedError::Failed(error);
                        guard.cell.record_failure(&guard.client, generation, attempt, erased);
                        runtime.sleep(delay).await;
                    }
                    None => break Err(QueryError::Failed(error)),
                }
            }
            Err(message) => break Err(QueryError::Panicked(message)),
        }
    };
    let failures = if outcome.is_err() { attempt + 1 } else { 0 };
    let erased = outcome.clone().map_err(|e| ErasedError::from_typed(&e));
    // Callbacks run after the state is written and before waiters wake, so a caller that
    // awaited the fetch observes their effects.
    guard.finish(erased, failures, || run_callbacks(&options, &outcome));
}

/// Calls the query function and awaits it, turning a panic in either step into a message.
async fn call_catching_panics<T, E>(
    options: &OptionsInner<T, E>,
) -> Result<Result<T, E>, Arc<str>> {
    let future = std::panic::catch_unwind(AssertUnwindSafe(|| (options.query_fn)()))
        .map_err(|payload| panic_message(&*payload))?;
    AssertUnwindSafe(future).catch_unwind().await.map_err(|payload| panic_message(&*payload))
}

fn run_callbacks<T, E>(options: &OptionsInner<T, E>, outcome: &Result<T, QueryError<E>>) {
    let guarded = |name: &str, f: &dyn Fn()| {
        if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
            tracing::error!("query {name} callback panicked: {}", panic_message(&*payload));
        }
    };
    match outcome {
        Ok(data) => {
            if let Some(cb) = &options.on_success {
                guarded("on_success", &|| cb(data));
            }
            if let Some(cb) = &options.on_settled {
                guarded("on_settled", &|| cb(Some(data), None));
            }
        }
        Err(error) => {
            if let Some(cb) = &options.on_error {
                guarded("on_error", &|| cb(error));
            }
            if let Some(cb) = &options.on_settled {
                guarded("on_settled", &|| cb(None, Some(error)));
            }
        }
    }
}
