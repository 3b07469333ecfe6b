//! The client's L2 tier: bounded calls, the circuit breaker, the coalescing write queue and
//! the counters.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use event_listener::Event;
use futures::FutureExt;
use futures::future::{Either, select};

use super::breaker::Breaker;
use super::record::{Record, RecordError};
use super::{StorageBackend, StorageError, StorageFuture, StorageStats};
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
    /// Notified when the write worker has finished an op, and when it stops.
    progress: Event,
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
    /// Whether every op pushed before the push numbered `next` has been carried out, given up
    /// on or dropped.
    fn done_before(&self, next: u64) -> bool {
        let current = self.current.as_ref().is_none_or(|op| op.number >= next);
        let oldest = self.order.front().and_then(|key| self.pending.get(key));
        current && oldest.is_none_or(|(number, _)| *number >= next)
    }
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
                next: 0,
                running: false,
                current: None,
            }),
            progress: Event::new(),
        }
    }

    /// The storage timeout: the longest one backend call may take.
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
    fn delete_pending(&self, key: &QueryKey) -> bool {
        let q = self.lock_queue();
        q.pending.get(key).is_some_and(|(_, op)| op.is_delete())
            || q.current.as_ref().is_some_and(|op| op.delete && op.key == *key)
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
        let text = match self.call("read", key, |b| b.get(name)).await? {
            Ok(Some(text)) => text,
            Ok(None) => {
                bump(&self.counters.misses);
                return None;
            }
            Err(error) => {
                // The store answered with a value that is not text: the record is bad, the
                // store is not.
                bump(&self.counters.decode_failures);
                tracing::warn!(%key, "L2 record ignored: {error}");
                return None;
            }
        };
        match catch_unwind(|| decode(&text)) {
            Ok(Ok(record)) => {
                bump(&self.counters.hits);
                Some(record)
            }
            Ok(Err(error)) => {
                bump(&self.counters.decode_failures);
                tracing::warn!(%key, "L2 record ignored: {error}");
                None
            }
            Err(payload) => {
                bump(&self.counters.decode_failures);
                let message = panic_message(&*payload);
                tracing::error!(%key, "L2 record ignored: decoding it panicked: {message}");
                None
            }
        }
    }

    /// Runs one backend call under the breaker and the timeout, containing panics.
    ///
    /// `None` when the call was skipped (open breaker), failed, panicked or timed out (all
    /// counted, and all but the skip count towards the breaker). `Some(Err(_))` only for
    /// [`StorageError::InvalidRecord`]: the store answered with a value it could not read as
    /// text, which says nothing about the store's health; the caller counts it.
    async fn call<'s: 'f, 'f, R>(
        &'s self,
        what: &'static str,
        key: &QueryKey,
        op: impl FnOnce(&'s dyn StorageBackend) -> StorageFuture<'f, R>,
    ) -> Option<Result<R, StorageError>> {
        let timeout = self.timeout();
        let now = self.runtime.now();
        let probe = {
            let mut breaker = self.lock_breaker();
            if !breaker.allow(now, timeout) {
                bump(&self.counters.skipped);
                return None;
            }
            breaker.is_open()
        };
        // A probe whose caller goes away before it ends frees the breaker's probe slot.
        let mut probe = Probe { l2: self, started: probe.then_some(now) };
        let ended = self.bounded(op, now, timeout).await;
        probe.started = None;
        match ended {
            Ended::Answered(Ok(value)) => {
                self.lock_breaker().success();
                Some(Ok(value))
            }
            Ended::Answered(Err(error @ StorageError::InvalidRecord(_))) => {
                self.lock_breaker().success();
                Some(Err(error))
            }
            Ended::Answered(Err(error)) => {
                bump(&self.counters.errors);
                tracing::warn!(%key, "L2 {what} failed: {error}");
                self.failure();
                None
            }
            Ended::Panicked(payload) => {
                bump(&self.counters.errors);
                let message = panic_message(&*payload);
                tracing::error!(
                    %key,
                    "L2 {what} failed: storage backend {} panicked: {message}",
                    self.backend.name()
                );
                self.failure();
                None
            }
            Ended::TimedOut => {
                bump(&self.counters.timeouts);
                tracing::warn!(%key, "L2 {what} timed out after {timeout:?}");
                self.failure();
                None
            }
        }
    }

    /// Makes the backend call and waits for it until `started + timeout`, catching a panic of
    /// the backend's method or of its future.
    async fn bounded<'s: 'f, 'f, R>(
        &'s self,
        op: impl FnOnce(&'s dyn StorageBackend) -> StorageFuture<'f, R>,
        started: Instant,
        timeout: Duration,
    ) -> Ended<R> {
        let backend = &*self.backend;
        let call = match catch_unwind(AssertUnwindSafe(|| op(backend))) {
            Ok(call) => call,
            Err(payload) => return Ended::Panicked(payload),
        };
        let mut call = AssertUnwindSafe(call).catch_unwind();
        // A backend that answers at once (memory, SQLite, a cache hit) needs no timer.
        let result = match (&mut call).now_or_never() {
            Some(result) => result,
            None => match started.checked_add(timeout) {
                Some(deadline) => match select(call, self.runtime.sleep_until(deadline)).await {
                    Either::Left((result, _)) => result,
                    Either::Right(((), _)) => return Ended::TimedOut,
                },
                // A timeout too long to represent is no timeout: arm no timer.
                None => call.await,
            },
        };
        result.map_or_else(Ended::Panicked, Ended::Answered)
    }

    /// Counts the outcome of a write or delete: `counter` on success. A backend that answers
    /// a write with [`StorageError::InvalidRecord`] is counted as an error, not a failure.
    fn written(
        &self,
        key: &QueryKey,
        what: &str,
        done: Option<Result<(), StorageError>>,
        counter: &AtomicU64,
    ) {
        match done {
            Some(Ok(())) => bump(counter),
            Some(Err(error)) => {
                bump(&self.counters.errors);
                tracing::warn!(%key, "L2 {what} failed: {error}");
            }
            None => {}
        }
    }

    fn failure(&self) {
        let now = self.runtime.now();
        let opened = self.lock_breaker().failure(
            now,
            self.settings.failure_threshold,
            self.settings.cooldown,
        );
        if opened && self.lock_breaker().is_open_for_good() {
            tracing::warn!(
                "L2 storage is failing; calls stop for good (the cooldown {:?} has no end)",
                self.settings.cooldown
            );
        } else if opened {
            tracing::warn!(
                "L2 storage is failing; calls pause for {:?}, then one probe is tried",
                self.settings.cooldown
            );
        }
    }
}

/// How a bounded backend call ended.
enum Ended<R> {
    /// The backend answered.
    Answered(Result<R, StorageError>),
    /// The backend's method, or its future, panicked.
    Panicked(Box<dyn Any + Send>),
    /// The storage timeout passed first.
    TimedOut,
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a payload that is not a string)")
}

/// The probe slot of a call the breaker let through while open; freed if the call is dropped
/// before it ends (its caller went away), so that the next call may probe at once.
struct Probe<'a> {
    l2: &'a L2,
    started: Option<Instant>,
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            self.l2.lock_breaker().probe_abandoned(started);
        }
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
            match op {
                L2Op::Put { encode, ttl } => match catch_unwind(AssertUnwindSafe(encode)) {
                    Ok(Ok(text)) => {
                        let done = l2.call("write", &key, |b| b.set(name, &text, ttl)).await;
                        l2.written(&key, "write", done, &l2.counters.writes);
                    }
                    Ok(Err(error)) => {
                        bump(&l2.counters.encode_failures);
                        tracing::warn!(%key, "L2 write skipped: {error}");
                    }
                    Err(payload) => {
                        bump(&l2.counters.encode_failures);
                        let message = panic_message(&*payload);
                        tracing::error!(%key, "L2 write skipped: encoding panicked: {message}");
                    }
                },
                L2Op::Delete => {
                    let done = l2.call("delete", &key, |b| b.delete(name)).await;
                    l2.written(&key, "delete", done, &l2.counters.deletes);
                }
            }
            l2.lock_queue().current = None;
            l2.progress.notify(usize::MAX);
        }
    }
}
