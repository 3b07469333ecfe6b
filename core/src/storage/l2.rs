//! The client's L2 tier: bounded calls, the circuit breaker, the coalescing write queue and
//! the counters.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use event_listener::Event;
use futures::FutureExt;
use futures::future::{Either, select};

use super::breaker::Breaker;
use super::record::{Record, RecordError};
use super::{StorageBackend, StorageFuture, StorageStats};
use crate::key::QueryKey;
use crate::runtime::Runtime;
use crate::sync::{Mutex, MutexGuard};

/// A write decided by the engine, carried out by the write worker.
pub(crate) enum L2Op {
    /// Store a state; encoding is deferred to the worker so callers never pay for it, and a
    /// write replaced by a newer one is never encoded.
    Put { encode: Box<dyn FnOnce() -> Result<String, RecordError> + Send>, ttl: Option<Duration> },
    /// Delete the record.
    Delete,
}

impl L2Op {
    fn is_delete(&self) -> bool {
        matches!(self, Self::Delete)
    }
}

/// Tuning of the L2 tier, from the client configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct L2Settings {
    pub(crate) timeout: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) failure_threshold: u32,
    pub(crate) cooldown: Duration,
}

pub(crate) struct L2 {
    backend: Arc<dyn StorageBackend>,
    runtime: Runtime,
    settings: L2Settings,
    counters: Counters,
    breaker: Mutex<Breaker>,
    queue: Mutex<WriteQueue>,
    /// Notified when the write worker finds the queue empty.
    idle: Event,
}

#[derive(Default)]
struct Counters {
    hydrations: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    decode_failures: AtomicU64,
    encode_failures: AtomicU64,
    writes: AtomicU64,
    deletes: AtomicU64,
    write_drops: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    skipped: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct WriteQueue {
    pending: HashMap<QueryKey, L2Op>,
    /// Keys with a pending op, oldest first; each key appears once.
    order: VecDeque<QueryKey>,
    /// Whether a worker task is draining the queue.
    running: bool,
    /// The op the worker is carrying out: (key, is a delete).
    current: Option<(QueryKey, bool)>,
}

impl L2 {
    pub(crate) fn new(
        backend: Arc<dyn StorageBackend>,
        runtime: Runtime,
        settings: L2Settings,
    ) -> Self {
        Self {
            backend,
            runtime,
            settings,
            counters: Counters::default(),
            breaker: Mutex::new(Breaker::new()),
            queue: Mutex::new(WriteQueue {
                pending: HashMap::new(),
                order: VecDeque::new(),
                running: false,
                current: None,
            }),
            idle: Event::new(),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    pub(crate) fn stats(&self) -> StorageStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StorageStats {
            hydrations: get(&c.hydrations),
            hits: get(&c.hits),
            misses: get(&c.misses),
            decode_failures: get(&c.decode_failures),
            encode_failures: get(&c.encode_failures),
            writes: get(&c.writes),
            deletes: get(&c.deletes),
            write_drops: get(&c.write_drops),
            errors: get(&c.errors),
            timeouts: get(&c.timeouts),
            skipped: get(&c.skipped),
        }
    }

    pub(crate) fn count_hydration(&self) {
        bump(&self.counters.hydrations);
    }

    fn lock_queue(&self) -> MutexGuard<'_, WriteQueue> {
        self.queue.lock()
    }

    fn lock_breaker(&self) -> MutexGuard<'_, Breaker> {
        self.breaker.lock()
    }

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
        if let Some(slot) = q.pending.get_mut(&key) {
            *slot = op;
        } else {
            q.pending.insert(key.clone(), op);
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
    pub(crate) fn start_worker(self: &Arc<Self>) {
        let l2 = self.clone();
        self.runtime.spawn(async move { l2.drain().await });
    }

    /// Carries out queued ops one at a time until the queue is empty.
    async fn drain(self: Arc<Self>) {
        // Stops being "the worker" in the same critical section that finds the queue empty,
        // so that a push racing with the exit either is seen here or starts a new worker. If
        // the runtime drops this task instead, the guard hands over the same way.
        struct Running<'a>(&'a L2, bool);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    let mut q = self.0.lock_queue();
                    q.running = false;
                    q.current = None;
                }
                self.0.idle.notify(usize::MAX);
            }
        }
        let mut running = Running(&self, false);
        loop {
            let next = {
                let mut q = self.lock_queue();
                let next = q.order.pop_front().and_then(|key| {
                    let op = q.pending.remove(&key)?;
                    Some((key, op))
                });
                q.current = next.as_ref().map(|(key, op)| (key.clone(), op.is_delete()));
                if next.is_none() {
                    q.running = false;
                }
                next
            };
            let Some((key, op)) = next else {
                running.1 = true; // already handed over under the lock
                return;
            };
            let name = key.storage_string();
            match op {
                L2Op::Put { encode, ttl } => match encode() {
                    Ok(text) => {
                        let done = self.call("write", &key, |b| b.set(name, &text, ttl)).await;
                        if done.is_some() {
                            bump(&self.counters.writes);
                        }
                    }
                    Err(error) => {
                        bump(&self.counters.encode_failures);
                        tracing::warn!(%key, "L2 write skipped: {error}");
                    }
                },
                L2Op::Delete => {
                    if self.call("delete", &key, |b| b.delete(name)).await.is_some() {
                        bump(&self.counters.deletes);
                    }
                }
            }
        }
    }

    /// Waits until every queued op has been carried out (or given up on).
    pub(crate) async fn flush(&self) {
        loop {
            let listener = self.idle.listen();
            {
                let q = self.lock_queue();
                if !q.running && q.order.is_empty() {
                    return;
                }
            }
            listener.await;
        }
    }

    /// Whether a delete of `key` is queued or under way, so a read must not trust storage.
    fn delete_pending(&self, key: &QueryKey) -> bool {
        let q = self.lock_queue();
        q.pending.get(key).is_some_and(L2Op::is_delete)
            || q.current.as_ref().is_some_and(|(k, delete)| *delete && k == key)
    }

    /// Reads and decodes `key`'s record. `None` on a miss, a failure, a timeout, an
    /// undecodable record or an open breaker (all counted).
    pub(crate) async fn read<T>(
        &self,
        key: &QueryKey,
        decode: fn(&str) -> Result<Record<T>, RecordError>,
    ) -> Option<Record<T>> {
        if self.delete_pending(key) {
            bump(&self.counters.misses);
            return None;
        }
        let name = key.storage_string();
        match self.call("read", key, |b| b.get(name)).await? {
            None => {
                bump(&self.counters.misses);
                None
            }
            Some(text) => match decode(&text) {
                Ok(record) => {
                    bump(&self.counters.hits);
                    Some(record)
                }
                Err(error) => {
                    bump(&self.counters.decode_failures);
                    tracing::warn!(%key, "L2 record ignored: {error}");
                    None
                }
            },
        }
    }

    /// Runs one backend call under the breaker and the timeout.
    async fn call<'s: 'f, 'f, R>(
        &'s self,
        what: &'static str,
        key: &QueryKey,
        op: impl FnOnce(&'s dyn StorageBackend) -> StorageFuture<'f, R>,
    ) -> Option<R> {
        let timeout = self.settings.timeout;
        if !self.lock_breaker().allow(self.runtime.now(), timeout) {
            bump(&self.counters.skipped);
            return None;
        }
        let mut call = op(&*self.backend);
        // A backend that answers at once (memory, a cache hit) needs no timer. `None`: the
        // call overran the timeout.
        let outcome = match (&mut call).now_or_never() {
            Some(result) => Some(result),
            None => match select(call, self.runtime.sleep(timeout)).await {
                Either::Left((result, _)) => Some(result),
                Either::Right(((), _)) => None,
            },
        };
        match outcome {
            Some(Ok(value)) => {
                self.lock_breaker().success();
                Some(value)
            }
            Some(Err(error)) => {
                bump(&self.counters.errors);
                tracing::warn!(%key, "L2 {what} failed: {error}");
                self.failure();
                None
            }
            None => {
                bump(&self.counters.timeouts);
                tracing::warn!(%key, "L2 {what} timed out after {timeout:?}");
                self.failure();
                None
            }
        }
    }

    fn failure(&self) {
        let now = self.runtime.now();
        let opened = self.lock_breaker().failure(
            now,
            self.settings.failure_threshold,
            self.settings.cooldown,
        );
        if opened {
            tracing::warn!(
                "L2 storage is failing; calls pause for {:?}, then one probe is tried",
                self.settings.cooldown
            );
        }
    }
}
