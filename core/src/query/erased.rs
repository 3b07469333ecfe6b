//! The type-erased face of a query: what the store ([`Stored`]) and the engine's bulk
//! operations ([`ErasedQuery`]) see of a [`QueryCell`] whatever its data type.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::cell::{NOT_FRESH, QueryCell, stale_at};
use crate::cache::Stored;
use crate::ctx::{Ctx, ErasedQuery};
use crate::dehydrate::{HydrateOutcome, Snapshot};
use crate::filter::RefetchType;
use crate::gc::removable::GcVerdict;
use crate::inspect::QueryInfo;
use crate::key::QueryKey;
use crate::runtime::BoxFuture;

impl<T: Clone + Send + Sync + 'static> Stored for QueryCell<T> {
    fn key(&self) -> &QueryKey {
        &self.key
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }

    fn is_idle(&self) -> bool {
        let g = self.lock();
        g.is_idle() && !g.detached
    }

    fn try_detach(&self, force: bool) -> bool {
        let mut g = self.lock();
        if !force && !g.is_idle() {
            return false;
        }
        g.detached = true;
        g.generation += 1;
        g.removal.cancel();
        true
    }
}

impl<T: Clone + Send + Sync + 'static> ErasedQuery for QueryCell<T> {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn persisted(&self) -> bool {
        self.lock().codec().is_some()
    }

    fn gc_check(&self, now: u64) -> GcVerdict {
        let mut g = self.lock();
        let idle = g.is_idle() && !g.detached;
        g.removal.check(idle, now)
    }

    fn gc_queued(&self) -> u64 {
        self.lock().removal.queued()
    }

    fn invalidate(self: Arc<Self>, ctx: &Arc<Ctx>, refetch: RefetchType) -> Option<BoxFuture> {
        let slot = QueryCell::invalidate(&self, ctx, refetch, true)?;
        Some(Box::pin(async move {
            let _ = slot.wait().await;
        }))
    }

    fn reset(self: Arc<Self>, ctx: &Arc<Ctx>) {
        QueryCell::reset(&self, ctx, true);
    }

    fn invalidate_remote(self: Arc<Self>, ctx: &Arc<Ctx>, refetch: bool) {
        let refetch = if refetch { RefetchType::Active } else { RefetchType::None };
        let _ = QueryCell::invalidate(&self, ctx, refetch, false);
    }

    fn reset_remote(self: Arc<Self>, ctx: &Arc<Ctx>) {
        QueryCell::reset(&self, ctx, false);
    }

    fn adopt_remote(self: Arc<Self>, ctx: &Arc<Ctx>, at: SystemTime) -> Option<BoxFuture> {
        QueryCell::adopt_remote(&self, ctx, at)
    }

    fn fetching(&self) -> bool {
        self.lock().in_flight().is_some()
    }

    fn info(&self, ctx: &Ctx) -> QueryInfo {
        let (now, clock, wall) = (ctx.runtime.now(), ctx.clock(), ctx.runtime.system_now());
        let (mut info, own_stale_time, fresh_at, error) = {
            let g = self.lock();
            let s = &g.state;
            let info = QueryInfo {
                key: self.key.clone(),
                type_name: std::any::type_name::<T>(),
                status: s.status,
                fetch_status: s.fetch_status,
                has_data: s.data.is_some(),
                data_updated_at: s.data_updated_at,
                error_updated_at: s.error_updated_at(),
                age: None,
                is_stale: true,
                is_invalidated: s.is_invalidated,
                observers: g.observers(),
                active_observers: g.active(),
                gc_in: g.removal.due().map(|at| Duration::from_nanos(at.saturating_sub(clock))),
                persisted: g.codec().is_some(),
                data_update_count: s.data_update_count,
                error_update_count: s.error_update_count(),
                fetch_failure_count: s.fetch_failure_count(),
                error: None,
            };
            let has_data = s.data.is_some();
            let own = g.fetcher().and_then(|f| f.stale_time());
            (info, own, if has_data { g.fresh_at } else { NOT_FRESH }, s.error().cloned())
        };
        // Resolving defaults and formatting the error (user `Display`) happen after the lock.
        let stale_time = ctx.stale_time(&self.key, own_stale_time);
        info.is_stale = stale_at(fresh_at, ctx.nanos(now), stale_time);
        if info.has_data {
            info.age = info.data_updated_at.map(|at| wall.duration_since(at).unwrap_or_default());
        }
        info.error = error.map(|e| {
            std::panic::catch_unwind(AssertUnwindSafe(|| e.to_string()))
                .unwrap_or_else(|_| "(the error's Display panicked)".to_string())
        });
        info
    }

    fn refetch(self: Arc<Self>, ctx: &Arc<Ctx>) -> Option<BoxFuture> {
        let fetcher = {
            let g = self.lock();
            if !QueryCell::refetchable(&g) {
                return None;
            }
            g.fetcher().cloned()?
        };
        let slot = fetcher.start(&self, ctx);
        Some(Box::pin(async move {
            let _ = slot.wait().await;
        }))
    }

    fn cancel(&self) -> Option<BoxFuture> {
        let slot = self.cancel_fetch()?;
        Some(Box::pin(async move {
            let _ = slot.wait().await;
        }))
    }

    fn removed(&self) {
        let _ = self.cancel_fetch();
        self.tell_detached();
    }

    fn pause(&self, ctx: &Arc<Ctx>) {
        QueryCell::pause(self, ctx);
    }

    fn resume(self: Arc<Self>, ctx: &Arc<Ctx>, refetch: bool) {
        QueryCell::resume(&self, ctx, refetch);
    }

    fn observer_count(&self) -> usize {
        usize::try_from(self.lock().observers()).unwrap_or(usize::MAX)
    }

    fn dehydrate(&self) -> Snapshot {
        self.snapshot()
    }

    fn claim_seed(self: Arc<Self>, ctx: &Arc<Ctx>) -> HydrateOutcome {
        QueryCell::claim_seed(&self, ctx)
    }
}
