//! The query cell: one key's state, its lock, and the state transitions that callers drive
//! (writes, invalidation, reset, pause and resume).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::effects::{Effects, Notice};
use super::fetch::{FetchSlot, Fetcher};
use super::hydrate::Gate;
use crate::ctx::Ctx;
use crate::gc::removable::Removable;
use crate::key::QueryKey;
use crate::listeners::{Callback, Listeners};
use crate::state::{FetchStatus, QueryStatus, RawState};
use crate::storage::record::CodecFn;
use crate::sync::{Mutex, MutexGuard};

/// The cached query for one key, with data of type `T`.
pub(crate) struct QueryCell<T> {
    pub(crate) key: QueryKey,
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
    pub(crate) in_flight: Option<Arc<FetchSlot<T>>>,
    pub(crate) paused: bool,
    pub(crate) observers: u32,
    pub(crate) detached: bool,
    /// When this query may be garbage-collected.
    pub(crate) removal: Removable,
    /// State listeners (observers' attachments); one pointer while there are none.
    pub(crate) listeners: Listeners<RawState<T>>,
    /// How to fetch this key again without a caller's options (invalidation, resume).
    pub(crate) fetcher: Option<Arc<dyn Fetcher<T>>>,
    /// How to persist this key; set by the first persisting options that touch it.
    pub(crate) codec: Option<CodecFn<T>>,
    /// The gate of the key's one L2 read, once it has started.
    pub(crate) hydration: Option<Arc<Gate>>,
    /// The key's L2 read has finished, was abandoned, or was not needed.
    pub(crate) hydrated: bool,
}

/// See [`QueryCell::quick_answer`].
pub(crate) enum QuickAnswer<T> {
    Data(T),
    Join(Arc<FetchSlot<T>>),
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
                removal: Removable::new(),
                listeners: Listeners::new(),
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
        self.inner.lock()
    }

    /// A notice for the listeners, if there are any.
    pub(crate) fn notice(g: &CellInner<T>) -> Option<Notice<T>> {
        let listeners = g.listeners.snapshot()?;
        Some(Notice { listeners, state: g.state.clone(), version: g.version })
    }

    pub(crate) fn idle_fetch_status(g: &CellInner<T>) -> FetchStatus {
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

    pub(crate) fn set_data(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        g: &mut CellInner<T>,
        data: T,
        effects: &mut Effects<T>,
    ) {
        g.generation += 1;
        g.state.status = QueryStatus::Success;
        g.state.data = Some(data);
        g.state.error = None;
        g.state.data_updated_at = Some(ctx.runtime.system_now());
        g.state.fetch_failure_count = 0;
        g.state.fetch_failure_reason = None;
        g.fresh_at = Some(ctx.runtime.now());
        Self::changed(g, effects);
        self.persist(g, ctx, effects);
        self.maybe_schedule_gc(g, ctx, effects);
    }

    /// Adds a state listener (called with each new state and its version); returns its id.
    pub(crate) fn add_listener(g: &mut CellInner<T>, listener: Callback<RawState<T>>) -> u64 {
        g.listeners.add(listener)
    }

    /// Removes a state listener.
    pub(crate) fn remove_listener(g: &mut CellInner<T>, id: u64) {
        g.listeners.remove(id);
    }

    /// Remembers how to refetch, and how to persist if the options persist.
    pub(crate) fn set_fetcher(g: &mut CellInner<T>, fetcher: Arc<dyn Fetcher<T>>) {
        if g.codec.is_none() {
            g.codec = fetcher.codec();
        }
        g.fetcher = Some(fetcher);
    }

    /// Whether a fetch is in flight.
    pub(crate) fn is_fetching(g: &CellInner<T>) -> bool {
        g.in_flight.is_some()
    }

    /// Marks stale and, when observed and asked to, starts a fresh fetch under the new
    /// generation. Returns the fetch to wait for, if one started.
    pub(crate) fn invalidate(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
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
            self.persist(&g, ctx, &mut effects);
            let fetcher = g.fetcher.clone();
            (refetch && g.observers > 0 && !g.paused).then_some(fetcher).flatten()
        };
        effects.run(ctx, &self.key);
        slot.map(|fetcher| fetcher.start(self, ctx))
    }

    /// Back to the initial state, fencing off older fetches.
    pub(crate) fn reset(self: &Arc<Self>, ctx: &Arc<Ctx>) {
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
            self.unpersist(&g, ctx, &mut effects);
        }
        effects.run(ctx, &self.key);
    }

    /// Pauses background fetching.
    pub(crate) fn pause(&self, ctx: &Arc<Ctx>) {
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
        effects.run(ctx, &self.key);
    }

    /// Resumes background fetching; with `refetch`, fetches at once.
    pub(crate) fn resume(self: &Arc<Self>, ctx: &Arc<Ctx>, refetch: bool) {
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
        effects.run(ctx, &self.key);
        if refetch && let Some(fetcher) = fetcher {
            let _ = fetcher.start(self, ctx);
        }
    }
}
