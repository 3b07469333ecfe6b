//! Work decided under a query's lock and carried out after it is released.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::cell::Listeners;
use crate::client::ClientInner;
use crate::error::panic_message;
use crate::events::CacheEvent;
use crate::key::QueryKey;
use crate::runtime::BoxFuture;
use crate::state::RawState;

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
    pub(crate) listeners: Listeners<T>,
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

    pub(crate) fn run(self, client: &Arc<ClientInner>, key: &QueryKey) {
        if let Some(at) = self.gc {
            client.gc.schedule(client, key.clone(), at);
        }
        if self.gc_cancelled {
            client.gc.cancelled();
        }
        if let (true, Some(l2)) = (self.l2_start, &client.l2) {
            l2.start_worker();
        }
        for task in self.spawns {
            client.runtime.spawner().spawn(task);
        }
        if self.changed {
            client.emit(&CacheEvent::Updated(key.clone()));
        }
        if let Some(notice) = self.notice {
            for (_, listener) in notice.listeners.iter() {
                let call = AssertUnwindSafe(|| listener(&notice.state, notice.version));
                if let Err(payload) = std::panic::catch_unwind(call) {
                    tracing::error!(
                        "query listener panicked: {}; the other listeners still run",
                        panic_message(&*payload)
                    );
                }
            }
        }
    }
}
