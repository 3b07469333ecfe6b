//! Persistence glue: queuing L2 writes and deletes, and the one hydration of a key: its
//! pending seed, and its one L2 read when cold.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::Shared;

use super::cell::{CellInner, NOT_FRESH, QueryCell};
use super::dehydrate::decode_seed;
use super::effects::Effects;
use crate::coherence::{Announce, CoherenceOp};
use crate::ctx::Ctx;
use crate::error::ErasedError;
use crate::options::OptionsInner;
use crate::runtime::BoxFuture;
use crate::seeds::Seed;
use crate::state::{QueryStatus, next_data_id};
use crate::storage::record::{Codec, CodecFn, Record};
use crate::storage::{L2, L2Op};

/// The key's one L2 read, shared by everyone who needs it: whoever polls it drives it, so a
/// caller that drops out does not abandon the read for the others. It is bounded by the
/// storage timeout (every L2 call is).
pub(crate) type HydrationStep = Shared<BoxFuture>;

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
    /// Marks the key persisted when `codec` is set, with the options' own persistence max
    /// age (the last persisting options' wins).
    pub(crate) fn adopt_codec(
        g: &mut CellInner<T>,
        codec: Option<CodecFn<T>>,
        max_age: Option<Duration>,
    ) {
        if codec.is_some() {
            g.x().persist_max_age = max_age;
        }
        if g.codec().is_none() {
            g.x().codec = codec;
        }
    }

    /// Queues a write of the current state to L2 when the key is persisted and holds data.
    /// The write is queued before the query's lock is released, so that anyone who can see the
    /// state can also `flush_storage` it; the worker is started after (no spawning under a
    /// lock). With a coherence bus, the write is announced once done (`set`, or `invalidate`
    /// for an invalidated state). Returns whether a write was queued.
    pub(crate) fn persist(&self, g: &CellInner<T>, ctx: &Ctx, effects: &mut Effects<T>) -> bool {
        let (Some(l2), Some(codec)) = (&ctx.l2, g.codec()) else {
            return false;
        };
        if g.state.status != QueryStatus::Success || g.unconfirmed {
            return false;
        }
        // The record's lifetime is the query's persistence max age, not its gc time: a
        // record outlives the query in memory (and the process). Zero writes nothing.
        let max_age = ctx.persist_max_age(g.persist_max_age());
        if max_age.is_zero() {
            return false;
        }
        // The data type's `Clone` may panic: this state is then not written (the next one is).
        let Ok(state) = self.copy_state(g) else { return false };
        let ttl = record_ttl(max_age);
        let announce = ctx.publisher.as_ref().map(|_| {
            let op =
                if g.state.is_invalidated { CoherenceOp::Invalidate } else { CoherenceOp::Set };
            Announce { op, at: g.state.data_updated_at }
        });
        let op = L2Op::Put { encode: Box::new(move || (codec().encode)(&state)), ttl, announce };
        effects.l2_start |= l2.push(self.key.clone(), op);
        true
    }

    /// Queues a delete of the key's L2 record when the key is persisted (announced as a
    /// `reset` once done, with a coherence bus).
    pub(crate) fn unpersist(&self, g: &CellInner<T>, ctx: &Ctx, effects: &mut Effects<T>) {
        if let (Some(l2), Some(_)) = (&ctx.l2, g.codec()) {
            let announce =
                ctx.publisher.as_ref().map(|_| Announce { op: CoherenceOp::Reset, at: None });
            effects.l2_start |= l2.push(self.key.clone(), L2Op::Delete(announce));
        }
    }

    /// Coherence: another process wrote data stamped `at`. If this query is persisted and its
    /// data is older, returns the read of the key's record, which restores it if it is newer
    /// than memory then (as hydration does). Holds the query and the client weakly.
    pub(crate) fn adopt_remote(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        at: SystemTime,
    ) -> Option<BoxFuture> {
        let l2 = ctx.l2.clone()?;
        let (codec, max_age) = {
            let g = self.lock();
            let codec = g.codec().filter(|_| !g.detached)?;
            let older = g.state.data_updated_at.is_none_or(|memory| {
                at.duration_since(memory).is_ok_and(|lead| lead > TIMESTAMP_SLACK)
            });
            (older.then_some(codec)?, ctx.persist_max_age(g.persist_max_age()))
        };
        if max_age.is_zero() {
            return None;
        }
        let (cell, weak_ctx, key) = (Arc::downgrade(self), Arc::downgrade(ctx), self.key.clone());
        Some(Box::pin(async move {
            let record = l2.read(&key, codec().decode, max_age).await.filter(|r| r.data.is_some());
            let (Some(record), Some(cell), Some(ctx)) =
                (record, cell.upgrade(), weak_ctx.upgrade())
            else {
                return;
            };
            let mut effects = Effects::none();
            {
                let mut g = cell.lock();
                if !g.detached && QueryCell::apply_record(&mut g, &ctx, record, &mut effects) {
                    tracing::debug!(key = %cell.key, "adopted another process's data");
                    cell.maybe_schedule_gc(&mut g, &ctx, &mut effects);
                }
            }
            effects.run(&ctx, &cell.key);
        }))
    }

    /// Claims the key's one hydration if it is persisted: its pending seed (from
    /// `QueryClient::hydrate`), if any, and, with L2, its one read of a cold key not yet
    /// hydrated. Returns the step to run (the caller awaits it or spawns it), or the gate to
    /// wait on while another caller's step is under way.
    ///
    /// `options` mark the key persisted if they persist, and give the gc time the restored
    /// query keeps if no fetch follows.
    pub(crate) fn begin_hydration<E>(
        self: &Arc<Self>,
        g: &mut CellInner<T>,
        ctx: &Arc<Ctx>,
        options: &OptionsInner<T, E>,
    ) -> Option<HydrationStep> {
        Self::adopt_codec(g, options.codec, options.persist_max_age);
        if let Some(read) = g.hydration() {
            return Some(read.clone());
        }
        let codec = g.codec()?;
        // The seeds map is a leaf lock, taken here under the query's lock so that a seed
        // offered meanwhile is either taken here or claimed by its `hydrate` call.
        let seed = ctx.seeds.take(&self.key);
        // Data written in this process since the key was created is newer than L2; a max age
        // of zero keeps the key out of L2.
        let max_age = ctx.persist_max_age(g.persist_max_age());
        let l2 = ctx
            .l2
            .as_ref()
            .filter(|_| !g.hydrated && g.state.data.is_none() && !max_age.is_zero())
            .cloned();
        if seed.is_none() && l2.is_none() {
            g.hydrated = true;
            return None;
        }
        let x = g.x();
        if !x.gc_time.is_set() {
            x.gc_time.set(ctx.gc_time(&options.key, options.gc_time));
        }
        let l2 = l2.map(|l2| (l2, max_age));
        let read = hydrate(Arc::downgrade(self), Arc::downgrade(ctx), l2, codec(), seed);
        let read: BoxFuture = Box::pin(read);
        let read = read.shared();
        g.x().hydration = Some(read.clone());
        Some(read)
    }

    /// Whether the key's first use with `codec`'s options will restore something first (a
    /// seed, or an L2 read): initial data waits for it.
    pub(crate) fn hydration_due(
        &self,
        g: &CellInner<T>,
        ctx: &Ctx,
        codec: Option<CodecFn<T>>,
    ) -> bool {
        codec.is_some()
            && (g.hydration().is_some()
                || (!g.hydrated && ctx.l2.is_some())
                || ctx.seeds.contains(&self.key))
    }

    /// The options' initial data for a query that has none yet, made with no lock held (the
    /// initial data function is user code): `None` when the options have none, the query
    /// already has data, or making it panicked (logged).
    pub(crate) fn initial_for<E>(self: &Arc<Self>, options: &OptionsInner<T, E>) -> Option<T> {
        let initial = options.initial_data.as_ref()?;
        if self.lock().state.data.is_some() {
            return None;
        }
        let data = match initial {
            crate::options::InitialData::Value(v) => super::fetch::clone_data(v).ok(),
            crate::options::InitialData::Fn(make) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| make())).ok()
            }
        };
        if data.is_none() {
            tracing::error!("the initial data could not be made (a panic); nothing seeded");
        }
        data
    }

    /// Seeds a query that has no data with `initial` (from [`initial_for`](Self::initial_for)),
    /// as if fetched at the options' initial data timestamp. Returns whether it did; an unused
    /// value is dropped after the lock.
    pub(crate) fn seed_initial<E>(
        g: &mut CellInner<T>,
        ctx: &Ctx,
        options: &OptionsInner<T, E>,
        initial: &mut Option<T>,
        effects: &mut Effects<T>,
    ) -> bool {
        if g.state.data.is_some() {
            return false;
        }
        let Some(data) = initial.take() else {
            return false;
        };
        let now = ctx.runtime.system_now();
        let at = options.initial_data_updated_at.unwrap_or(now);
        g.state.status = QueryStatus::Success;
        g.state.data = Some(data);
        g.state.data_id = next_data_id();
        g.state.data_updated_at = Some(at);
        g.state.is_invalidated = false;
        g.state.data_update_count = g.state.data_update_count.saturating_add(1);
        g.fresh_at = match now.duration_since(at) {
            Ok(age) => ago(ctx, age),
            Err(_) => NOT_FRESH, // from the future: stale
        };
        Self::changed(g, effects);
        true
    }

    /// Restores a record (read from L2, or hydrated) unless memory holds newer data: the
    /// record's `data_updated_at` must be later than memory's (beyond the float rounding of
    /// the record format). A record without data restores only an error, into a query that
    /// has neither data nor an error. Returns whether it restored anything; data not restored
    /// is dropped after the lock, with the effects.
    pub(crate) fn apply_record(
        g: &mut CellInner<T>,
        ctx: &Ctx,
        record: Record<T>,
        effects: &mut Effects<T>,
    ) -> bool {
        let Some(data) = record.data else {
            return Self::apply_error_record(g, record, effects);
        };
        if g.state.data.is_some() {
            let newer = match (record.data_updated_at, g.state.data_updated_at) {
                (Some(stored), Some(memory)) => {
                    stored.duration_since(memory).is_ok_and(|lead| lead > TIMESTAMP_SLACK)
                }
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !newer {
                effects.discard(Some(data));
                return false;
            }
        }
        g.state.status = match record.status {
            QueryStatus::Error => QueryStatus::Error,
            _ => QueryStatus::Success,
        };
        effects.discard(g.state.data.replace(data));
        g.state.data_id = next_data_id();
        g.unconfirmed = false;
        g.state.data_updated_at = record.data_updated_at;
        // The Python library marks an invalidated record with a timestamp of 0.0.
        g.state.is_invalidated = record.data_updated_at == Some(std::time::SystemTime::UNIX_EPOCH);
        g.state.data_update_count = g.state.data_update_count.saturating_add(1);
        let error = record.error.map(|m| ErasedError::Restored(m.into()));
        let reason = record.fetch_failure_reason.map(|m| ErasedError::Restored(m.into()));
        let values = error.is_some()
            || reason.is_some()
            || record.error_updated_at.is_some()
            || record.fetch_failure_count > 0;
        // A record without an error side leaves none allocated.
        if let Some(f) = g.state.failure_for(values) {
            effects.discard_error(std::mem::replace(&mut f.error, error));
            f.error_updated_at = record.error_updated_at;
            f.fetch_failure_count = record.fetch_failure_count;
            effects.discard_error(std::mem::replace(&mut f.fetch_failure_reason, reason));
        }
        // Age by the wall clock; a record from the future is stale.
        g.fresh_at =
            match record.data_updated_at.map(|at| ctx.runtime.system_now().duration_since(at)) {
                Some(Ok(age)) => ago(ctx, age),
                // Float seconds round to within a microsecond; only a real lead is "future".
                Some(Err(ahead)) if ahead.duration() < ROUNDING_SLACK => ago(ctx, Duration::ZERO),
                _ => NOT_FRESH,
            };
        Self::changed(g, effects);
        true
    }

    /// Restores an error record that has no data into a query that has neither data nor an
    /// error (TanStack's `hydrate` of a query dehydrated in error); the next read fetches.
    fn apply_error_record(
        g: &mut CellInner<T>,
        record: Record<T>,
        effects: &mut Effects<T>,
    ) -> bool {
        let restorable = record.status == QueryStatus::Error
            && g.state.data.is_none()
            && g.state.error().is_none()
            && matches!(g.state.status, QueryStatus::Idle | QueryStatus::Pending);
        if !restorable {
            return false;
        }
        g.state.status = QueryStatus::Error;
        let message = record.error.unwrap_or_else(|| "(restored error)".to_string());
        let reason = record.fetch_failure_reason.map(|m| ErasedError::Restored(m.into()));
        let f = g.state.failure_mut();
        // The query had no error: nothing is replaced.
        f.error = Some(ErasedError::Restored(message.into()));
        f.error_updated_at = record.error_updated_at;
        f.error_update_count = f.error_update_count.saturating_add(1);
        f.fetch_failure_count = record.fetch_failure_count;
        effects.discard_error(std::mem::replace(&mut f.fetch_failure_reason, reason));
        Self::changed(g, effects);
        true
    }

    /// After hydration, fetches if the key still needs it (used by observers, which do not
    /// wait for hydration before showing a state).
    pub(crate) fn fetch_after_hydration<E>(
        self: &Arc<Self>,
        read: HydrationStep,
        ctx: &Arc<Ctx>,
        options: &Arc<OptionsInner<T, E>>,
    ) -> BoxFuture
    where
        E: fmt::Display + Send + Sync + 'static,
    {
        let (cell, ctx, options) = (self.clone(), ctx.clone(), options.clone());
        Box::pin(async move {
            read.await;
            let stale_time = ctx.stale_time(&options.key, options.stale_time);
            let mut effects = Effects::none();
            {
                let mut g = cell.lock();
                let wanted = !g.detached
                    && !g.paused
                    && g.observers() > 0
                    && Self::current_fetch(&g).is_none()
                    && (g.state.data.is_none() || Self::is_stale(&g, ctx.now_nanos(), stale_time));
                if wanted {
                    let _ = cell.join_or_begin(&mut g, &ctx, &options, &mut effects);
                }
            }
            effects.run(&ctx, &cell.key);
        })
    }
}

/// How much later than memory's a restored timestamp must be to count as newer: the float
/// seconds of the record format keep about a quarter of a microsecond, so a state
/// dehydrated and hydrated back is "as new", not newer.
pub(crate) const TIMESTAMP_SLACK: Duration = Duration::from_micros(1);

/// How far ahead of the wall clock a restored timestamp may be and still count as "now":
/// the float seconds of the record format round to well within this.
pub(crate) const ROUNDING_SLACK: Duration = Duration::from_millis(1);

/// The time to live of a record for a query with persistence max age `max_age` (not zero:
/// zero writes nothing): ten years or more means "keep" and writes no expiry.
pub(crate) fn record_ttl(max_age: Duration) -> Option<Duration> {
    const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    (max_age < FOREVER).then_some(max_age)
}

/// The key's one hydration: its pending seed first, if any, then its one L2 read of a cold
/// key, if due, restoring no record older than the max age given with `l2` (newer wins at
/// each step). Holds the query and the client weakly: the query
/// keeps this step (shared) until it finishes, and must not be kept alive by it.
pub(crate) async fn hydrate<T: Clone + Send + Sync + 'static>(
    cell: Weak<QueryCell<T>>,
    ctx: Weak<Ctx>,
    l2: Option<(Arc<L2>, Duration)>,
    codec: Codec<T>,
    seed: Option<Seed>,
) {
    // However this step ends (finished, or dropped), the key counts as hydrated, so that no
    // later caller waits for a step that will not finish.
    struct Finish<T: Clone + Send + Sync + 'static>(Weak<QueryCell<T>>);
    impl<T: Clone + Send + Sync + 'static> Drop for Finish<T> {
        fn drop(&mut self) {
            if let Some(cell) = self.0.upgrade() {
                let read = {
                    let mut g = cell.lock();
                    g.hydrated = true;
                    g.x_opt().and_then(|x| x.hydration.take())
                };
                drop(read);
            }
        }
    }
    let _finish = Finish(cell.clone());
    // The seed is decoded first, with no lock held; it is applied after the L2 record, so
    // that newer wins among memory, L2 and the seed, and a seed that wins is written through
    // to L2 only once the read is over.
    let seed = match seed {
        Some(seed) => {
            let Some(key) = cell.upgrade().map(|c| c.key.clone()) else {
                return;
            };
            decode_seed(&key, codec, seed)
        }
        None => None,
    };
    let mut record = None;
    if let Some((l2, max_age)) = l2 {
        let Some(key) = cell.upgrade().map(|c| c.key.clone()) else {
            return;
        };
        l2.count_hydration();
        record = l2.read(&key, codec.decode, max_age).await;
    }
    let (Some(cell), Some(ctx)) = (cell.upgrade(), ctx.upgrade()) else {
        return;
    };
    let mut effects = Effects::none();
    let read = {
        let mut g = cell.lock();
        g.hydrated = true;
        let mut restored = false;
        if !g.detached {
            if let Some(record) = record
                && QueryCell::apply_record(&mut g, &ctx, record, &mut effects)
            {
                tracing::debug!(key = %cell.key, "hydrated from L2");
                restored = true;
            }
            if let Some(seed) = seed
                && QueryCell::apply_record(&mut g, &ctx, seed, &mut effects)
            {
                tracing::debug!(key = %cell.key, "hydrated from a dehydrated state");
                cell.persist(&g, &ctx, &mut effects);
                restored = true;
            }
        }
        let read = g.x_opt().and_then(|x| x.hydration.take());
        if restored {
            // A fresh record may mean no fetch follows, and gc is scheduled when a fetch
            // ends: schedule it here (the step is over, so the query may be idle) so that
            // the restored query is still collected.
            cell.maybe_schedule_gc(&mut g, &ctx, &mut effects);
        }
        read
    };
    drop(read);
    effects.run(&ctx, &cell.key);
}

/// The instant `age` before now, as [`CellInner::fresh_at`] (saturating: an age beyond the
/// clock's range is as old as it can be, still fresh for a long enough stale time).
fn ago(ctx: &Ctx, age: Duration) -> i64 {
    let age = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
    ctx.now_nanos().saturating_sub(age).max(NOT_FRESH + 1)
}
