//! When a query may be garbage-collected: its gc time and the bookkeeping that schedules and
//! cancels its removal (TanStack's `Removable`).

use std::sync::Arc;
use std::time::Duration;

use super::cell::{CellInner, QueryCell};
use super::effects::Effects;
use crate::client::ClientInner;

impl<T> CellInner<T> {
    /// The query's gc time, or the client's when the query has none.
    pub(crate) fn gc_time(&self, client: &ClientInner) -> Duration {
        if self.gc_time == NEVER {
            client.config.gc_time
        } else {
            Duration::from_nanos(self.gc_time)
        }
    }

    pub(crate) fn set_gc_time(&mut self, gc_time: Duration) {
        // 584 years and more all mean "never"; NEVER itself is kept for "unset".
        self.gc_time = u64::try_from(gc_time.as_nanos()).unwrap_or(NEVER - 1).min(NEVER - 1);
    }
}

impl<T: Clone + Send + Sync + 'static> QueryCell<T> {
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
}

/// The "no time" value of `gc_at` and `gc_queued`.
pub(crate) const NEVER: u64 = u64::MAX;
