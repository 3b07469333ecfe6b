//! The query cell: one key's state, its lock, and the state transitions that callers drive
//! (writes, invalidation, reset, pause and resume).

use std::sync::Arc;
use std::time::Duration;

use super::effects::{Effects, Notice};
use super::extra::Extra;
use super::fetch::{FetchSlot, Fetcher, clone_data};
use crate::coherence::{Announce, CoherenceOp};
use crate::ctx::Ctx;
use crate::error::{ErasedError, panic_message};
use crate::filter::RefetchType;
use crate::gc::removable::Removable;
use crate::key::QueryKey;
use crate::listeners::Callback;
use crate::state::{FetchStatus, QueryStatus, RawState, next_data_id};
use crate::sync::{Mutex, MutexGuard};

/// [`CellInner::fresh_at`] of data that is stale whatever the stale time.
pub(crate) const NOT_FRESH: i64 = i64::MIN;

/// The cached query for one key, with data of type `T`.
pub(crate) struct QueryCell<T> {
    pub(crate) key: QueryKey,
    inner: Mutex<CellInner<T>>,
}

pub(crate) struct CellInner<T> {
    pub(crate) state: RawState<T>,
    /// When the data became fresh, in signed nanoseconds from the client's clock base
    /// ([`Ctx::nanos`]); [`NOT_FRESH`] when stale (invalidated, restored as stale, or no data).
    pub(crate) fresh_at: i64,
    /// Advanced by every write that must not be overwritten by an older fetch.
    pub(crate) generation: u64,
    /// Advanced by every state change; listeners drop notices older than one they have seen.
    pub(crate) version: u64,
    pub(crate) paused: bool,
    pub(crate) detached: bool,
    /// The key's L2 read has finished, was abandoned, or was not needed.
    pub(crate) hydrated: bool,
    /// The data is a mutation's optimistic write, not confirmed: it is not persisted.
    pub(crate) unconfirmed: bool,
    /// When this query may be garbage-collected.
    pub(crate) removal: Removable,
    /// Fetch, observers, listeners, refetch and persistence: allocated when first needed (see
    /// [`Extra`]).
    pub(crate) extra: Option<Box<Extra<T>>>,
}

/// See [`QueryCell::quick_answer`].
pub(crate) enum QuickAnswer<T> {
    Data(T),
    Join(Arc<FetchSlot<T>>),
    /// The data type's `Clone` panicked.
    Failed(ErasedError),
}

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
    pub(crate) fn new(key: QueryKey) -> Self {
        Self {
            key,
            inner: Mutex::new(CellInner {
                state: RawState::default(),
                fresh_at: NOT_FRESH,
                generation: 0,
                version: 0,
                paused: false,
                detached: false,
                hydrated: false,
                unconfirmed: false,
                removal: Removable::new(),
                extra: None,
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
        let listeners = g.x_ref()?.listeners.snapshot()?;
        // The data type's `Clone` is user code; a panic in it costs the listeners this state
        // (they get the next one), never the transition under way.
        let state = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.state.clone()));
        match state {
            Ok(state) => Some(Notice { listeners, state, version: g.version }),
            Err(_) => {
                tracing::error!("the data type's Clone panicked; listeners skip this state");
                None
            }
        }
    }

    /// A copy of the state (for an observer, or an L2 write), or the message of a panic in the
    /// data type's `Clone` (user code, run under this lock as on the hit path; the state is
    /// skipped, as listeners skip it, and the query keeps working).
    pub(crate) fn copy_state(&self, g: &CellInner<T>) -> Result<RawState<T>, Arc<str>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.state.clone())).map_err(
            |payload| {
                let message =
                    format!("the data type's Clone panicked: {}", panic_message(&*payload));
                tracing::error!(key = %self.key, "{message}");
                message.into()
            },
        )
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
    /// `now` is signed nanoseconds from the clock base ([`Ctx::nanos`]).
    pub(crate) fn is_stale(g: &CellInner<T>, now: i64, stale_time: Duration) -> bool {
        stale_at(g.fresh_at, now, stale_time)
    }

    /// What a `fetch_query` may do at once without starting anything: return fresh data (or
    /// stale data whose revalidation is already running, or cannot run: paused), or join the
    /// fetch in flight for a key with no data yet.
    pub(crate) fn quick_answer(
        g: &CellInner<T>,
        now: i64,
        stale_time: Duration,
    ) -> Option<QuickAnswer<T>> {
        if g.detached {
            return None;
        }
        match &g.state.data {
            Some(data) => {
                let settled = !Self::is_stale(g, now, stale_time)
                    || Self::current_fetch(g).is_some()
                    || g.paused;
                settled.then(|| match clone_data(data) {
                    Ok(data) => QuickAnswer::Data(data),
                    Err(error) => QuickAnswer::Failed(error),
                })
            }
            None => Self::current_fetch(g).map(|f| QuickAnswer::Join(f.clone())),
        }
    }

    /// The fetch in flight for the current generation, if any. A fetch of an older generation
    /// (started before an invalidation or a write) may still be running, but nobody joins it:
    /// its result will not be stored. Nor does anybody join a cancelled fetch whose task has
    /// not ended yet: a new fetch starts.
    pub(crate) fn current_fetch(g: &CellInner<T>) -> Option<&Arc<FetchSlot<T>>> {
        g.in_flight().filter(|f| f.generation == g.generation && !f.signal.is_cancelled())
    }

    pub(crate) fn set_data(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        g: &mut CellInner<T>,
        data: T,
        effects: &mut Effects<T>,
    ) {
        g.generation += 1;
        Self::store_success(g, ctx, data, effects);
        Self::changed(g, effects);
        self.persist(g, ctx, effects);
        self.maybe_schedule_gc(g, ctx, effects);
    }

    /// Stores `data` as fetched now: success, no error, fresh, not invalidated, counted. The
    /// values it replaces are dropped after the lock (see [`Effects::discard`]).
    pub(crate) fn store_success(
        g: &mut CellInner<T>,
        ctx: &Ctx,
        data: T,
        effects: &mut Effects<T>,
    ) {
        g.state.status = QueryStatus::Success;
        effects.discard(g.state.data.replace(data));
        g.state.data_id = next_data_id();
        g.state.data_updated_at = Some(ctx.runtime.system_now());
        if let Some(f) = g.state.failure_opt() {
            effects.discard_error(f.error.take());
            f.fetch_failure_count = 0;
            effects.discard_error(f.fetch_failure_reason.take());
        }
        g.state.is_invalidated = false;
        g.state.data_update_count = g.state.data_update_count.saturating_add(1);
        g.fresh_at = ctx.now_nanos();
        g.unconfirmed = false;
    }

    /// Adds a state listener (called with each new state and its version); returns its id.
    pub(crate) fn add_listener(g: &mut CellInner<T>, listener: Callback<RawState<T>>) -> u64 {
        g.x().listeners.add(listener)
    }

    /// Removes a state listener.
    pub(crate) fn remove_listener(g: &mut CellInner<T>, id: u64) {
        if let Some(x) = g.x_opt() {
            x.listeners.remove(id);
        }
    }

    /// Remembers how to refetch, and how to persist if the options persist. The options they
    /// replace are dropped after the lock is released (they hold user closures).
    pub(crate) fn set_fetcher(
        g: &mut CellInner<T>,
        fetcher: Arc<dyn Fetcher<T>>,
        effects: &mut Effects<T>,
    ) {
        if fetcher.codec().is_some() {
            g.x().persist_max_age = fetcher.persist_max_age();
        }
        if g.codec().is_none() {
            g.x().codec = fetcher.codec();
        }
        effects.discard_fetcher(g.x().fetcher.replace(fetcher));
    }

    /// Tells the listeners (observers) that the query has left the store: they receive the
    /// current state once more and see it is detached, and attach to a new query for the key.
    pub(crate) fn tell_detached(&self) {
        let notice = {
            let mut g = self.lock();
            g.version += 1;
            Self::notice(&g)
        };
        if let Some(notice) = notice {
            notice.listeners.notify_concurrent(&notice.state, notice.version);
        }
    }

    /// Cancels the fetch in flight, if any (see [`FetchSlot::cancel`]); returns it, to wait for.
    pub(crate) fn cancel_fetch(&self) -> Option<Arc<FetchSlot<T>>> {
        let slot = self.lock().in_flight().cloned()?;
        slot.cancel().then_some(slot)
    }

    /// Whether a bulk refetch may fetch this query: not paused, not detached, and not disabled
    /// (observed only by disabled observers, which TanStack skips too).
    pub(crate) fn refetchable(g: &CellInner<T>) -> bool {
        let disabled = g.observers() > 0 && g.active() == 0;
        !(g.paused || g.detached || disabled)
    }

    /// Marks stale and, when `refetch` includes it (by whether it is active), starts a fetch
    /// under the new generation, superseding a fetch in flight (whose waiters get the new
    /// fetch's outcome). Returns the fetch to wait for, if one started.
    ///
    /// `local`: this process invalidated it, so the invalidated state is written to L2 and
    /// announced on the coherence bus; otherwise (a message from another process, or a
    /// reconnection) memory alone changes.
    pub(crate) fn invalidate(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        refetch: RefetchType,
        local: bool,
    ) -> Option<Arc<FetchSlot<T>>> {
        let mut effects = Effects::none();
        let mut announce = false;
        let slot = {
            let mut g = self.lock();
            if g.detached {
                // Removed since it was chosen: its L2 record may be deleted already.
                return None;
            }
            g.generation += 1;
            g.fresh_at = NOT_FRESH;
            g.state.is_invalidated = true;
            Self::changed(&mut g, &mut effects);
            if local {
                // A state that is not written (no data yet) is announced at once.
                announce = !self.persist(&g, ctx, &mut effects) && g.codec().is_some();
            }
            match g.fetcher().cloned() {
                Some(fetcher) if refetch.includes(g.active() > 0) && Self::refetchable(&g) => {
                    Some(fetcher.begin(self, &mut g, ctx, &mut effects))
                }
                _ => None,
            }
        };
        effects.run(ctx, &self.key);
        if announce {
            ctx.publish(&self.key, Announce { op: CoherenceOp::Invalidate, at: None });
        }
        slot
    }

    /// Back to the initial state, fencing off older fetches. A fetch in flight is cancelled;
    /// an active query (an enabled observer) fetches again at once, and the cancelled fetch's
    /// waiters get that fetch's outcome. `local`: the record is deleted (and the reset
    /// announced); otherwise another process has done so.
    pub(crate) fn reset(self: &Arc<Self>, ctx: &Arc<Ctx>, local: bool) {
        let mut effects = Effects::none();
        {
            let mut g = self.lock();
            g.generation += 1;
            g.fresh_at = NOT_FRESH;
            let old = std::mem::take(&mut g.state);
            effects.discard_state(old);
            g.unconfirmed = false;
            let refetch = g.fetcher().cloned().filter(|_| g.active() > 0 && !g.paused);
            match refetch {
                Some(fetcher) => {
                    let _ = fetcher.begin(self, &mut g, ctx, &mut effects);
                }
                None => {
                    if let Some(old) = g.x_opt().and_then(|x| x.in_flight.take()) {
                        old.cancel();
                    }
                    g.state.fetch_status = Self::idle_fetch_status(&g);
                    Self::changed(&mut g, &mut effects);
                }
            }
            if local {
                self.unpersist(&g, ctx, &mut effects);
            }
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
            if g.in_flight().is_none() {
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
            if g.in_flight().is_none() {
                g.state.fetch_status = FetchStatus::Idle;
            }
            Self::changed(&mut g, &mut effects);
            g.fetcher().cloned()
        };
        effects.run(ctx, &self.key);
        if refetch && let Some(fetcher) = fetcher {
            let _ = fetcher.start(self, ctx);
        }
    }
}

/// Whether data fresh since `fresh_at` is stale at `now` for `stale_time` (both in signed
/// nanoseconds from the clock base; [`NOT_FRESH`]: always stale).
pub(crate) fn stale_at(fresh_at: i64, now: i64, stale_time: Duration) -> bool {
    if fresh_at == NOT_FRESH {
        return true;
    }
    // An instant after `now` (not expected of a monotonic clock) counts as no time at all.
    let elapsed = u64::try_from(now.saturating_sub(fresh_at)).unwrap_or(0);
    Duration::from_nanos(elapsed) >= stale_time
}
