//! Work decided under a query's lock and carried out after it is released.

use std::sync::Arc;

use crate::ctx::Ctx;
use crate::events::CacheEvent;
use crate::key::QueryKey;
use crate::listeners::Snapshot;
use crate::runtime::BoxFuture;
use crate::state::RawState;
use crate::sweeper;

/// Work decided under a query's lock, carried out after it is released.
#[must_use]
pub(crate) struct Effects<T> {
    pub(crate) changed: bool,
    pub(crate) notice: Option<Notice<T>>,
    pub(crate) spawns: Vec<BoxFuture>,
    /// An L2 write was queued and the write worker must be started.
    pub(crate) l2_start: bool,
    /// Queue for garbage collection at this time.
    pub(crate) gc: Option<u64>,
    /// A queued garbage collection was cancelled.
    pub(crate) gc_cancelled: bool,
}

pub(crate) struct Notice<T> {
    pub(crate) listeners: Snapshot<RawState<T>>,
    pub(crate) state: RawState<T>,
    pub(crate) version: u64,
}

impl<T> Effects<T> {
    pub(crate) fn none() -> Self {
        Self {
            changed: false,
            notice: None,
            spawns: Vec::new(),
            l2_start: false,
            gc: None,
            gc_cancelled: false,
        }
    }

    pub(crate) fn run(self, ctx: &Arc<Ctx>, key: &QueryKey) {
        if let Some(at) = self.gc {
            sweeper::schedule(ctx, key.clone(), at);
        }
        if self.gc_cancelled {
            ctx.gc.cancelled();
        }
        if let (true, Some(l2)) = (self.l2_start, &ctx.l2) {
            l2.start_worker();
        }
        for task in self.spawns {
            ctx.runtime.spawner().spawn(task);
        }
        if self.changed {
            ctx.emit(&CacheEvent::Updated(key.clone()));
        }
        if let Some(notice) = self.notice {
            notice.listeners.notify(&notice.state, notice.version);
        }
    }
}
