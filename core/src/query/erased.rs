//! The type-erased face of a query, as the store and the client's bulk operations see it.

use std::any::Any;
use std::sync::Arc;

use super::cell::QueryCell;
use super::removal::NEVER;
use crate::cache::{AnyQuery, GcVerdict};
use crate::client::ClientInner;
use crate::key::QueryKey;
use crate::runtime::BoxFuture;

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
