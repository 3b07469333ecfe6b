//! When a query may be garbage-collected: its gc time and the bookkeeping that schedules and
//! cancels its removal (TanStack's `Removable`).

use std::sync::Arc;

use super::cell::{CellInner, QueryCell};
use super::effects::Effects;
use crate::ctx::Ctx;

impl<T> CellInner<T> {
    /// Neither observed, nor fetching, nor reading its L2 record: the query may be evicted or
    /// collected.
    pub(crate) fn is_idle(&self) -> bool {
        self.observers() == 0 && self.in_flight().is_none() && self.hydration().is_none()
    }
}

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
    /// Schedules removal `gc_time` from now if the query is unobserved and idle.
    pub(crate) fn maybe_schedule_gc(
        self: &Arc<Self>,
        g: &mut CellInner<T>,
        ctx: &Arc<Ctx>,
        effects: &mut Effects<T>,
    ) {
        if !g.is_idle() || g.detached {
            return;
        }
        g.trim();
        let gc_time = g.gc_time(ctx.gc_time(&self.key, None));
        if let Some(at) = g.removal.schedule(ctx.clock(), gc_time) {
            effects.gc = Some(at);
        }
    }

    /// Cancels a pending garbage collection.
    pub(crate) fn cancel_gc(g: &mut CellInner<T>, effects: &mut Effects<T>) {
        if g.removal.cancel() {
            effects.gc_cancelled = true;
        }
    }
}
