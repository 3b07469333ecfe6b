//! Optimistic writes: data a mutation shows before its outcome is known. Memory and observers
//! see it at once; L2 does not, until the mutation succeeds, so the record on disk is always
//! confirmed data.

use std::sync::Arc;

use super::cell::{CellInner, QueryCell};
use super::effects::Effects;
use crate::ctx::Ctx;

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
    /// Writes `data` as unconfirmed (as `set_data` does, but not persisted), for one more run
    /// whose outcome is pending. Returns the data it replaced, for a rollback.
    pub(crate) fn write_optimistic(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        g: &mut CellInner<T>,
        data: T,
        effects: &mut Effects<T>,
    ) {
        g.generation += 1;
        Self::store_success(g, ctx, data, effects);
        g.unconfirmed = true;
        g.x().optimistic_runs = g.optimistic_runs().saturating_add(1);
        Self::changed(g, effects);
        self.maybe_schedule_gc(g, ctx, effects);
    }

    /// A run that wrote optimistically succeeded: once no other run's optimistic write is
    /// pending, the data is confirmed and persisted (unless a confirmed write came since).
    pub(crate) fn confirm_optimistic(self: &Arc<Self>, ctx: &Arc<Ctx>) {
        let mut effects = Effects::none();
        {
            let mut g = self.lock();
            if let Some(x) = g.x_opt() {
                x.optimistic_runs = x.optimistic_runs.saturating_sub(1);
            }
            if g.optimistic_runs() == 0 && g.unconfirmed {
                g.unconfirmed = false;
                self.persist(&g, ctx, &mut effects);
            }
        }
        effects.run(ctx, &self.key);
    }

    /// A run that wrote optimistically failed or was dropped: the data stays unconfirmed (not
    /// persisted) until a confirmed write (a fetch, `set_query_data`, a rollback).
    pub(crate) fn release_optimistic(&self) {
        let mut g = self.lock();
        if let Some(x) = g.x_opt() {
            x.optimistic_runs = x.optimistic_runs.saturating_sub(1);
        }
    }
}

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
    /// Empties the query's data in memory (a rollback to "no data"), fencing off older fetches;
    /// the L2 record is not touched.
    pub(crate) fn clear_data(
        self: &Arc<Self>,
        ctx: &Arc<Ctx>,
        g: &mut CellInner<T>,
        effects: &mut Effects<T>,
    ) {
        g.generation += 1;
        g.fresh_at = super::cell::NOT_FRESH;
        let fetch_status = g.state.fetch_status;
        let old = std::mem::take(&mut g.state);
        effects.discard_state(old);
        g.state.fetch_status = fetch_status;
        g.unconfirmed = false;
        Self::changed(g, effects);
        self.maybe_schedule_gc(g, ctx, effects);
    }
}
