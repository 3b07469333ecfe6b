//! Fetches that look at storage before they call the query function, for processes that
//! share one store: storage-first revalidation (adopt a newer record another process wrote)
//! and cross-process single flight (one process fetches a cold key, the others wait for its
//! record). Both run inside the fetch task, so callers of the key join the one fetch as ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::cell::QueryCell;
use super::effects::Effects;
use super::fetch::{FetchSlot, clone_data};
use super::hydrate::ROUNDING_SLACK;
use super::run::FetchGuard;
use crate::ctx::Ctx;
use crate::key::QueryKey;
use crate::options::FetchTag;
use crate::runtime::Runtime;
use crate::storage::record::{Codec, Record};
use crate::storage::{L2, LockOutcome};

/// What the query held when its fetch began.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prior {
    /// It had no data: single flight applies.
    pub(crate) cold: bool,
    /// Its data was invalidated: a revalidation then always calls the function.
    pub(crate) invalidated: bool,
}

/// What a fetch does after looking at storage.
pub(crate) enum Before {
    /// The fetch ended with a record from storage: no call.
    Adopted,
    /// Call the function; with `Some`, holding the key's lock until the record is written.
    Call(Option<Held>),
}

/// The first pause between two looks at a lock held by another process; it doubles up to
/// [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(2);
const MAX_POLL: Duration = Duration::from_millis(50);

/// A key's storage lock held by this fetch. Released by [`Held::release`] after the record is
/// flushed; dropped unreleased (the fetch was cancelled), it unlocks in a spawned task.
pub(crate) struct Held {
    l2: Arc<L2>,
    key: QueryKey,
    token: String,
    runtime: Runtime,
    released: bool,
}

impl Held {
    /// Waits until the fetch's record write is done (or given up on), then unlocks.
    pub(crate) async fn release(self) {
        self.l2.flush().await;
        self.unlock().await;
    }

    /// Unlocks now.
    async fn unlock(mut self) {
        self.released = true;
        self.l2.unlock(&self.key, &self.token).await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.released {
            let (l2, key) = (self.l2.clone(), self.key.clone());
            let token = std::mem::take(&mut self.token);
            self.runtime.spawn(async move { l2.unlock(&key, &token).await });
        }
    }
}

/// A token no other fetch, here or in another process, uses.
fn token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}-{n}", std::process::id(), nanos.as_nanos())
}

/// Whether a record's data is fresh at `now` for `stale_time` (by the wall clock).
fn fresh(record: &Record<impl Sized>, now: SystemTime, stale_time: Duration) -> bool {
    match record.data_updated_at.map(|at| now.duration_since(at)) {
        Some(Ok(age)) => age < stale_time,
        Some(Err(ahead)) => ahead.duration() < ROUNDING_SLACK,
        None => false,
    }
}

/// Looks at storage before a fetch of a persisted key calls its function, as the client's
/// configuration asks: storage-first for a stale key, single flight for a cold one. Any
/// storage failure (counted by the L2 tier) means "call the function", as without either.
pub(crate) async fn before_call<T: Clone + Send + Sync + 'static>(
    guard: &mut FetchGuard<T>,
    tag: FetchTag,
    codec: Option<Codec<T>>,
    stale_time: Option<Duration>,
    prior: Prior,
) -> Before {
    // Queries that do not persist, and page fetches, pay nothing.
    let Some(codec) = codec.filter(|_| tag == FetchTag::Refetch) else {
        return Before::Call(None);
    };
    let Some(ctx) = guard.ctx.upgrade() else { return Before::Call(None) };
    let (storage_first, single_flight) = (ctx.config.storage_first, ctx.config.single_flight);
    let wanted = match prior.cold {
        true => single_flight.is_some(),
        false => storage_first && !prior.invalidated,
    };
    let Some(l2) = ctx.l2.clone().filter(|_| wanted) else { return Before::Call(None) };
    let stale_time = ctx.stale_time(&guard.cell.key, stale_time);
    let own_max_age = guard.cell.lock().persist_max_age();
    let max_age = ctx.persist_max_age(own_max_age);
    if max_age.is_zero() {
        return Before::Call(None);
    }
    let runtime = ctx.runtime.clone();
    // The fetch holds its client weakly, across storage calls too.
    drop(ctx);
    let key = guard.cell.key.clone();
    if !prior.cold {
        let Some(record) = l2.read(&key, codec.decode, max_age).await else {
            return Before::Call(None);
        };
        let adopt = record.status != crate::state::QueryStatus::Error
            && fresh(&record, runtime.system_now(), stale_time);
        return match adopt && adopt_record(guard, &l2, record) {
            true => Before::Adopted,
            false => Before::Call(None),
        };
    }
    let Some(ttl) = single_flight else { return Before::Call(None) };
    let began = runtime.system_now();
    let deadline = runtime.now().checked_add(ttl);
    let token = token();
    // A record written by the lock's holder is at most about `ttl` older than this wait.
    let usable = |record: &Record<T>| {
        record.data.is_some()
            && record.status != crate::state::QueryStatus::Error
            && (fresh(record, runtime.system_now(), stale_time)
                || record
                    .data_updated_at
                    .is_some_and(|at| began.checked_sub(ttl).is_none_or(|since| at >= since)))
    };
    let mut pause = FIRST_POLL;
    loop {
        let held = match l2.try_lock(&key, &token, ttl).await {
            Some(LockOutcome::Acquired) => true,
            Some(LockOutcome::Held) => false,
            _ => return Before::Call(None),
        };
        let held = held.then(|| Held {
            l2: l2.clone(),
            key: key.clone(),
            token: token.clone(),
            runtime: runtime.clone(),
            released: false,
        });
        // Holding the lock or not, the record may be there by now: the previous holder
        // writes it before it unlocks.
        if let Some(record) = l2.read(&key, codec.decode, max_age).await
            && usable(&record)
            && adopt_record(guard, &l2, record)
        {
            if let Some(held) = held {
                held.unlock().await;
            }
            return Before::Adopted;
        }
        if held.is_some() {
            return Before::Call(held);
        }
        let now = runtime.now();
        let left = deadline.map_or(pause, |d| d.saturating_duration_since(now));
        if left.is_zero() {
            tracing::debug!(%key, "single flight: the lock's holder wrote nothing in time");
            return Before::Call(None);
        }
        runtime.sleep(pause.min(left)).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// Ends the guard's fetch with `record` if it is still the query's current fetch and the
/// record is newer than memory (`apply_record`); otherwise the fetch goes on to call.
fn adopt_record<T: Clone + Send + Sync + 'static>(
    guard: &mut FetchGuard<T>,
    l2: &L2,
    record: Record<T>,
) -> bool {
    let Some(ctx) = guard.ctx.upgrade() else { return false };
    // The caller's copy is made before the lock: the data type's `Clone` is user code.
    let Some(Ok(data)) = record.data.as_ref().map(clone_data) else { return false };
    if !guard.cell.adopt(&ctx, l2, &guard.slot, record) {
        return false;
    }
    tracing::debug!(key = %guard.cell.key, "fetch adopted a record from storage");
    guard.finished = true;
    guard.slot.complete(Ok(data));
    true
}

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
    /// Restores `record` as the outcome of `slot`'s fetch, if the fetch is still current and
    /// the record is newer than memory (counted before anyone can see it). The slot is left
    /// for the caller to complete.
    fn adopt(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        l2: &L2,
        slot: &Arc<FetchSlot<T>>,
        record: Record<T>,
    ) -> bool {
        let mut effects = Effects::none();
        let adopted = {
            let mut g = self.lock();
            let ours = g.in_flight().is_some_and(|f| Arc::ptr_eq(f, slot));
            let current = ours && g.generation == slot.generation && !g.detached;
            let adopted = current && Self::apply_record(&mut g, ctx, record, &mut effects);
            if adopted {
                l2.count_adopted();
                if let Some(x) = g.x_opt() {
                    x.in_flight = None;
                }
                g.state.fetch_status = Self::idle_fetch_status(&g);
                Self::changed(&mut g, &mut effects);
                self.maybe_schedule_gc(&mut g, ctx, &mut effects);
            }
            adopted
        };
        effects.run(ctx, &self.key);
        adopted
    }
}
