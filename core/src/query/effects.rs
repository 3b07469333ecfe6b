//! Work decided under a query's lock and carried out after it is released.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::fetch::Fetcher;
use crate::ctx::Ctx;
use crate::error::{ErasedError, panic_message};
use crate::events::CacheEvent;
use crate::key::QueryKey;
use crate::listeners::Snapshot;
use crate::runtime::BoxFuture;
use crate::state::{Failure, RawState};
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
    /// Values replaced under the lock, dropped after it is released: their `Drop` is user
    /// code and may call back into the client.
    trash: Trash<T>,
}

struct Trash<T> {
    data: Vec<T>,
    errors: Vec<ErasedError>,
    failures: Vec<Arc<Failure>>,
    fetcher: Option<Arc<dyn Fetcher<T>>>,
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
            trash: Trash {
                data: Vec::new(),
                errors: Vec::new(),
                failures: Vec::new(),
                fetcher: None,
            },
        }
    }

    /// Keeps replaced data to drop after the lock is released.
    pub(crate) fn discard(&mut self, data: Option<T>) {
        self.trash.data.extend(data);
    }

    /// Keeps a replaced error to drop after the lock is released.
    pub(crate) fn discard_error(&mut self, error: Option<ErasedError>) {
        self.trash.errors.extend(error);
    }

    /// Keeps a whole replaced state to drop after the lock is released.
    pub(crate) fn discard_state(&mut self, mut state: RawState<T>) {
        self.trash.failures.extend(state.take_failure());
        self.discard(state.data);
    }

    /// Keeps replaced options to drop after the lock is released.
    pub(crate) fn discard_fetcher(&mut self, fetcher: Option<Arc<dyn Fetcher<T>>>) {
        if fetcher.is_some() {
            self.trash.fetcher = fetcher;
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
            notice.listeners.notify_concurrent(&notice.state, notice.version);
        }
        let trash = self.trash;
        if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| drop(trash))) {
            tracing::error!(%key, "dropping a replaced value panicked: {}", panic_message(&*payload));
        }
    }
}
