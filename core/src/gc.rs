//! Garbage collection of unobserved queries: one sweeper task per client, however many
//! queries wait for removal.
//!
//! A query that becomes idle records the time it may be removed (`gc_at`, on the client clock)
//! and, unless it is already queued, pushes `(gc_at, key)` onto the client's heap. Cancelling
//! (a new observer, a fetch) only clears `gc_at`; the heap entry goes stale and is dropped
//! when the sweeper reaches it. A query written again after it was queued keeps its old heap
//! entry, which the sweeper re-queues at the new time when it comes due. So the heap holds at
//! most about one entry per queued query, and scheduling costs a heap push, not a task and a
//! timer per query.
//!
//! The sweeper sleeps until the earliest entry, and exits when the heap is empty (the next
//! schedule starts it again), so an idle client holds no task and no timer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use event_listener::Event;

use crate::cache::GcVerdict;
use crate::client::ClientInner;
use crate::key::QueryKey;
use crate::runtime::Runtime;

pub(crate) struct GcQueue {
    inner: Mutex<GcInner>,
    /// Wakes the sweeper: an earlier deadline, a cancellation to look at, or the client gone.
    wake: Event,
}

#[derive(Default)]
struct GcInner {
    heap: BinaryHeap<Reverse<(u64, QueryKey)>>,
    running: bool,
    /// Set by a cancellation: the earliest entries may be stale, so look before sleeping.
    revalidate: bool,
}

impl GcQueue {
    pub(crate) fn new() -> Self {
        Self { inner: Mutex::new(GcInner::default()), wake: Event::new() }
    }

    fn lock(&self) -> MutexGuard<'_, GcInner> {
        // No user code runs under this lock.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `key` for a look at `at` (client clock), starting the sweeper if needed.
    pub(crate) fn schedule(&self, client: &Arc<ClientInner>, key: QueryKey, at: u64) {
        let (spawn, earlier) = {
            let mut q = self.lock();
            let earlier = q.heap.peek().is_some_and(|Reverse((first, _))| at < *first);
            q.heap.push(Reverse((at, key)));
            (!std::mem::replace(&mut q.running, true), earlier)
        };
        if spawn {
            let task = sweep(Arc::downgrade(client), client.runtime.clone());
            client.runtime.spawn(task);
        } else if earlier {
            self.wake.notify(1);
        }
    }

    /// A queued query no longer wants removal: let the sweeper drop its entry, so that no
    /// timer stays armed for it.
    pub(crate) fn cancelled(&self) {
        self.lock().revalidate = true;
        self.wake.notify(1);
    }

    /// The client is going away: let the sweeper see it and exit.
    pub(crate) fn close(&self) {
        self.wake.notify(usize::MAX);
    }
}

/// The sweeper: removes queries whose time has come, sleeps until the next one.
async fn sweep(client: Weak<ClientInner>, runtime: Runtime) {
    loop {
        let (listener, deadline) = {
            let Some(client) = client.upgrade() else {
                return;
            };
            let listener = client.gc.wake.listen();
            let Some(next) = sweep_due(&client) else {
                return;
            };
            (listener, client.base.checked_add(Duration::from_nanos(next)))
        };
        match deadline {
            Some(deadline) => {
                let sleep = runtime.sleep_until(deadline);
                let _ = futures::future::select(sleep, listener).await;
            }
            None => listener.await,
        }
    }
}

/// Handles every due entry (and, after a cancellation, every stale one at the front).
/// Returns the time of the next entry, or `None` when the heap is empty and the sweeper stops.
fn sweep_due(client: &Arc<ClientInner>) -> Option<u64> {
    let gc = &client.gc;
    let now = client.clock();
    let mut validating = std::mem::take(&mut gc.lock().revalidate);
    loop {
        let (at, key) = {
            let mut q = gc.lock();
            let Some(Reverse((first, _))) = q.heap.peek() else {
                q.running = false;
                return None;
            };
            if *first > now && !validating {
                return Some(*first);
            }
            let Reverse(top) = q.heap.pop()?;
            top
        };
        let verdict = client.cache.lookup(&key).map(|entry| (entry.gc_check(now), entry));
        match verdict {
            None | Some((GcVerdict::Keep, _)) => {}
            Some((GcVerdict::Later(then), _)) => {
                if then == at {
                    validating = false; // a current entry: the ones behind it are later
                }
                gc.lock().heap.push(Reverse((then, key)));
            }
            Some((GcVerdict::Remove, entry)) => {
                if client.cache.remove_if_idle(&key, &entry) {
                    tracing::debug!(%key, "garbage-collected unobserved query");
                    client.emit_removed(&key);
                }
            }
        }
    }
}
