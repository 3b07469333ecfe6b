//! The type-erased face of a query: what the store ([`Stored`]) and the engine's bulk
//! operations ([`ErasedQuery`]) see of a [`QueryCell`] whatever its data type.

use std::any::Any;
use std::sync::Arc;

use super::cell::QueryCell;
use crate::cache::Stored;
use crate::ctx::{Ctx, ErasedQuery};
use crate::gc::removable::GcVerdict;
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
        self.lock().codec.is_some()
    }

    fn gc_check(&self, now: u64) -> GcVerdict {
        let mut g = self.lock();
        let idle = g.is_idle() && !g.detached;
        g.removal.check(idle, now)
    }

    fn gc_queued(&self) -> u64 {
        self.lock().removal.queued()
    }

    fn invalidate(self: Arc<Self>, ctx: &Arc<Ctx>, refetch: bool) -> Option<BoxFuture> {
        let slot = QueryCell::invalidate(&self, ctx, refetch)?;
        Some(Box::pin(async move {
            let _ = slot.wait().await;
        }))
    }

    fn reset(self: Arc<Self>, ctx: &Arc<Ctx>) {
        QueryCell::reset(&self, ctx);
    }

    fn fetching(&self) -> bool {
        self.lock().in_flight.is_some()
    }

    fn refetch(self: Arc<Self>, ctx: &Arc<Ctx>) -> Option<BoxFuture> {
        let fetcher = {
            let g = self.lock();
            if g.paused || g.detached {
                return None;
            }
            g.fetcher.clone()?
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
        usize::try_from(self.lock().observers).unwrap_or(usize::MAX)
    }
}
