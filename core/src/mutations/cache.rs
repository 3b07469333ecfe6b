//! The client's mutation cache: every mutation run, listed by id until it is collected, and the
//! queues that make runs sharing a scope run one at a time in submission order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use event_listener::Event;

use super::info::{MutationFilter, MutationInfo, MutationStatus};
use crate::sync::Mutex;

/// The runs of one client, and its scope queues. Every lock here is a leaf: no user code and
/// no other lock is taken under it (filters' predicates run on a snapshot).
pub(crate) struct MutationCache {
    next_id: AtomicU64,
    runs: Mutex<BTreeMap<u64, MutationInfo>>,
    scopes: Mutex<HashMap<Arc<str>, VecDeque<u64>>>,
    /// Notified whenever a run leaves a scope queue.
    turn: Event,
}

impl MutationCache {
    pub(crate) fn new() -> Self {
        Self {
            next_id: AtomicU64::new(1),
            runs: Mutex::new(BTreeMap::new()),
            scopes: Mutex::new(HashMap::new()),
            turn: Event::new(),
        }
    }

    /// A new run id (increasing in submission order).
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Lists a new run.
    pub(crate) fn add(&self, info: MutationInfo) {
        self.runs.lock().insert(info.id, info);
    }

    /// Changes a listed run; returns its new snapshot, or `None` if it is no longer listed.
    pub(crate) fn update(
        &self,
        id: u64,
        f: impl FnOnce(&mut MutationInfo),
    ) -> Option<MutationInfo> {
        let mut runs = self.runs.lock();
        let info = runs.get_mut(&id)?;
        f(info);
        Some(info.clone())
    }

    /// Unlists a run; returns its last snapshot.
    pub(crate) fn remove(&self, id: u64) -> Option<MutationInfo> {
        self.runs.lock().remove(&id)
    }

    /// Unlists every settled run (pending ones keep running and stay listed); returns them.
    pub(crate) fn clear_settled(&self) -> Vec<MutationInfo> {
        let mut runs = self.runs.lock();
        let settled: Vec<u64> = runs
            .values()
            .filter(|info| info.status != MutationStatus::Pending)
            .map(|info| info.id)
            .collect();
        settled.iter().filter_map(|id| runs.remove(id)).collect()
    }

    /// The runs `filter` chooses, in submission order.
    pub(crate) fn find(&self, filter: &MutationFilter) -> Vec<MutationInfo> {
        let snapshot: Vec<MutationInfo> = self.runs.lock().values().cloned().collect();
        snapshot.into_iter().filter(|info| filter.matches(info)).collect()
    }

    /// Queues run `id` in `scope` (at submission, before `on_mutate`).
    pub(crate) fn enter_scope(&self, scope: &Arc<str>, id: u64) {
        self.scopes.lock().entry(scope.clone()).or_default().push_back(id);
    }

    /// Whether run `id` is first in its scope's queue.
    pub(crate) fn is_first(&self, scope: &Arc<str>, id: u64) -> bool {
        self.scopes.lock().get(scope).and_then(|q| q.front().copied()) == Some(id)
    }

    /// Waits until run `id` is first in its scope's queue.
    pub(crate) async fn wait_turn(&self, scope: &Arc<str>, id: u64) {
        loop {
            if self.is_first(scope, id) {
                return;
            }
            let listener = self.turn.listen();
            if self.is_first(scope, id) {
                return;
            }
            listener.await;
        }
    }

    /// Takes run `id` out of its scope's queue (settled, or dropped) and wakes the waiters.
    pub(crate) fn leave_scope(&self, scope: &Arc<str>, id: u64) {
        {
            let mut scopes = self.scopes.lock();
            if let Some(queue) = scopes.get_mut(scope) {
                queue.retain(|&queued| queued != id);
                if queue.is_empty() {
                    scopes.remove(scope);
                }
            }
        }
        self.turn.notify(usize::MAX);
    }
}

impl fmt::Debug for MutationCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutationCache").field("runs", &self.runs.lock().len()).finish()
    }
}
