//! A client's sending side: its origin id, the [`Publisher`] (the bus and that origin), and
//! the [`Announce`] an L2 op publishes once carried out.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::bus::CoherenceBus;
use super::message::{CoherenceMessage, CoherenceOp};
use crate::key::QueryKey;

/// A new origin id, unique among this process's clients and unlikely to repeat across
/// processes: the process id, the clock, and a counter.
pub(crate) fn new_origin() -> Arc<str> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    format!("{:x}-{:x}-{n}", std::process::id(), nanos).into()
}

/// What an L2 op announces once it has been carried out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Announce {
    pub(crate) op: CoherenceOp,
    pub(crate) at: Option<SystemTime>,
}

/// A client's sending side: the bus and its origin.
#[derive(Clone)]
pub(crate) struct Publisher {
    bus: Arc<dyn CoherenceBus>,
    origin: Arc<str>,
}

impl Publisher {
    pub(crate) fn new(bus: Arc<dyn CoherenceBus>, origin: Arc<str>) -> Self {
        Self { bus, origin }
    }

    /// Sends `op` about `key`; a panicking bus is contained (logged).
    pub(crate) fn publish(&self, key: &QueryKey, announce: Announce) {
        let data_updated_at = announce
            .at
            .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        let message = CoherenceMessage {
            v: 1,
            origin: self.origin.to_string(),
            op: announce.op,
            key: key.storage_string().to_owned(),
            parts: Some(key.clone()),
            data_updated_at,
        };
        if catch_unwind(AssertUnwindSafe(|| self.bus.publish(&message))).is_err() {
            tracing::error!(%key, "the coherence bus panicked in publish; message lost");
        }
    }
}
