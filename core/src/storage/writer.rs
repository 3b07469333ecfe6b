//! The L2 write queue, coalescing per key and bounded, and the worker task that drains it.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::l2::{L2, bump, panic_message};
use super::record::RecordError;
use crate::coherence::{Announce, CoherenceOp};
use crate::key::QueryKey;

/// A write decided by the engine, carried out by the write worker.
pub(crate) enum L2Op {
    /// Store a state; encoding is deferred to the worker so callers never pay for it, and a
    /// write replaced by a newer one is never encoded. Once done, `announce` is published on
    /// the coherence bus (as `invalidate` if the write failed).
    Put {
        encode: Box<dyn FnOnce() -> Result<String, RecordError> + Send>,
        ttl: Option<Duration>,
        announce: Option<Announce>,
    },
    /// Delete the record; once done, publish the announcement, if any.
    Delete(Option<Announce>),
}

impl L2Op {
    fn is_delete(&self) -> bool {
        matches!(self, Self::Delete(_))
    }
}

pub(crate) struct WriteQueue {
    /// The pending op of each key, with the number of the push that made the key pending (an
    /// op that replaces a pending one keeps that number, as it keeps the key's place).
    pending: HashMap<QueryKey, (u64, L2Op)>,
    /// Keys with a pending op, oldest first; each key appears once. So their numbers rise.
    order: VecDeque<QueryKey>,
    /// The number the next push that makes a key pending gets.
    next: u64,
    /// Whether a worker task is draining the queue.
    running: bool,
    /// The op the worker is carrying out.
    current: Option<Current>,
}

/// The op the write worker is carrying out.
struct Current {
    key: QueryKey,
    delete: bool,
    /// Its number (see [`WriteQueue::pending`]).
    number: u64,
}

impl WriteQueue {
    pub(super) fn new() -> Self {
        Self {
            pending: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            running: false,
            current: None,
        }
    }

    /// Whether every op pushed before the push numbered `next` has been carried out, given up
    /// on or dropped.
    fn done_before(&self, next: u64) -> bool {
        let current = self.current.as_ref().is_none_or(|op| op.number >= next);
        let oldest = self.order.front().and_then(|key| self.pending.get(key));
        current && oldest.is_none_or(|(number, _)| *number >= next)
    }
}

impl L2 {
    /// Queues `op` for `key` and starts the write worker if it is not running.
    pub(crate) fn enqueue(self: &Arc<Self>, key: QueryKey, op: L2Op) {
        if self.push(key, op) {
            self.start_worker();
        }
    }

    /// Queues `op` for `key`, replacing an op already pending for it. When the queue is full,
    /// the oldest pending op is dropped and counted. Returns whether the caller must call
    /// [`start_worker`](Self::start_worker) (it may hold a lock; this never spawns).
    pub(crate) fn push(&self, key: QueryKey, op: L2Op) -> bool {
        let mut q = self.lock_queue();
        if let Some((_, slot)) = q.pending.get_mut(&key) {
            *slot = op;
        } else {
            let number = q.next;
            q.next += 1;
            q.pending.insert(key.clone(), (number, op));
            q.order.push_back(key);
            if q.order.len() > self.settings.queue_capacity.max(1)
                && let Some(oldest) = q.order.pop_front()
            {
                q.pending.remove(&oldest);
                bump(&self.counters.write_drops);
                tracing::debug!(key = %oldest, "L2 write queue full; dropped the oldest");
            }
        }
        !std::mem::replace(&mut q.running, true)
    }

    /// Spawns the write worker (after [`push`](Self::push) said it is needed).
    ///
    /// The worker's hold on the "running" flag exists before the spawn and moves into the
    /// task, so a runtime that drops the task, unpolled or in the middle of a write, still
    /// hands the queue over (see [`Worker`]).
    pub(crate) fn start_worker(self: &Arc<Self>) {
        let worker = Worker { l2: self.clone(), handed_over: false };
        self.runtime.spawn(worker.run());
    }

    /// The write worker was dropped before it emptied the queue: the runtime will not run it
    /// again (it has shut down), so the ops still queued, and the one under way, are dropped
    /// and counted, and the next push starts a new worker.
    fn abandon_queue(&self) {
        let (dropped, ops) = {
            let mut q = self.lock_queue();
            let dropped = q.order.len() + usize::from(q.current.is_some());
            q.order.clear();
            q.current = None;
            q.running = false;
            (dropped, std::mem::take(&mut q.pending))
        };
        drop(ops); // the states they hold are dropped outside the lock
        if dropped > 0 {
            let count = u64::try_from(dropped).unwrap_or(u64::MAX);
            self.counters.write_drops.fetch_add(count, Ordering::Relaxed);
            tracing::warn!(
                "the runtime dropped the L2 write worker (has it shut down?); \
                 {dropped} pending writes dropped"
            );
        }
    }

    /// Waits until every op queued before this call has been carried out, given up on or
    /// dropped. Ops queued later are not waited for, so a steady stream of writes cannot hold
    /// a flush forever; an op queued earlier and replaced later (same key) is waited for, in
    /// its newer form.
    pub(crate) async fn flush(&self) {
        let mut next = None;
        loop {
            let listener = self.progress.listen();
            {
                let q = self.lock_queue();
                let next = *next.get_or_insert(q.next);
                if q.done_before(next) {
                    return;
                }
            }
            listener.await;
        }
    }

    /// Whether a delete of `key` is queued or under way, so a read must not trust storage.
    pub(super) fn delete_pending(&self, key: &QueryKey) -> bool {
        let q = self.lock_queue();
        q.pending.get(key).is_some_and(|(_, op)| op.is_delete())
            || q.current.as_ref().is_some_and(|op| op.delete && op.key == *key)
    }
}

/// The write worker. It holds the queue's "running" flag from before it is spawned until it
/// hands the queue over: either by finding the queue empty (under the queue lock, so that a
/// racing push is either seen here or starts a new worker), or by being dropped unfinished,
/// in which case the runtime has shut down and what is queued is dropped and counted
/// ([`L2::abandon_queue`]). Either way, [`L2::flush`] waiters are woken; they are also woken
/// after each op.
struct Worker {
    l2: Arc<L2>,
    handed_over: bool,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.handed_over {
            self.l2.abandon_queue();
        }
        self.l2.progress.notify(usize::MAX);
    }
}

impl Worker {
    /// Carries out queued ops one at a time until the queue is empty.
    async fn run(mut self) {
        let l2 = self.l2.clone();
        loop {
            let next = {
                let mut q = l2.lock_queue();
                let next = q.order.pop_front().and_then(|key| {
                    let (number, op) = q.pending.remove(&key)?;
                    Some((key, number, op))
                });
                q.current = next.as_ref().map(|(key, number, op)| Current {
                    key: key.clone(),
                    delete: op.is_delete(),
                    number: *number,
                });
                if next.is_none() {
                    q.running = false;
                    self.handed_over = true;
                }
                next
            };
            let Some((key, _, op)) = next else {
                return;
            };
            let name = key.storage_string();
            let announce = match op {
                L2Op::Put { encode, ttl, announce } => {
                    let written = match catch_unwind(AssertUnwindSafe(encode)) {
                        Ok(Ok(text)) => {
                            let done = l2.call("write", &key, |b| b.set(name, &text, ttl)).await;
                            l2.written(&key, "write", done, &l2.counters.writes)
                        }
                        Ok(Err(error)) => {
                            bump(&l2.counters.encode_failures);
                            tracing::warn!(%key, "L2 write skipped: {error}");
                            false
                        }
                        Err(payload) => {
                            bump(&l2.counters.encode_failures);
                            let message = panic_message(&*payload);
                            tracing::error!(%key, "L2 write skipped: encoding panicked: {message}");
                            false
                        }
                    };
                    // Receivers cannot read data that was not written: they mark it stale.
                    announce.map(|a| {
                        if written { a } else { Announce { op: CoherenceOp::Invalidate, ..a } }
                    })
                }
                L2Op::Delete(announce) => {
                    let done = l2.call("delete", &key, |b| b.delete(name)).await;
                    l2.written(&key, "delete", done, &l2.counters.deletes);
                    announce
                }
            };
            if let (Some(announce), Some(publisher)) = (announce, &l2.publisher) {
                publisher.publish(&key, announce);
            }
            l2.lock_queue().current = None;
            l2.progress.notify(usize::MAX);
        }
    }
}
