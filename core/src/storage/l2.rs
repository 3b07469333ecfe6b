//! The client's L2 tier: bounded calls, the circuit breaker and the counters; the write
//! queue and its worker are in `writer`.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use event_listener::Event;
use futures::FutureExt;
use futures::future::{Either, select};

use super::breaker::Breaker;
use super::record::{Record, RecordError};
use super::writer::WriteQueue;
use super::{LockOutcome, StorageBackend, StorageError, StorageFuture, StorageStats};
use crate::coherence::Publisher;
use crate::key::QueryKey;
use crate::runtime::Runtime;
use crate::sync::{Mutex, MutexGuard};

/// Tuning of the L2 tier, from the client configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct L2Settings {
    pub(crate) timeout: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) failure_threshold: u32,
    pub(crate) cooldown: Duration,
}

pub(crate) struct L2 {
    pub(super) backend: Arc<dyn StorageBackend>,
    pub(super) runtime: Runtime,
    pub(super) settings: L2Settings,
    pub(super) counters: Counters,
    pub(super) breaker: Mutex<Breaker>,
    pub(super) queue: Mutex<WriteQueue>,
    /// Notified when the write worker has finished an op, and when it stops.
    pub(super) progress: Event,
    /// The coherence bus, told about each op carried out that has an announcement.
    pub(super) publisher: Option<Publisher>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) hydrations: AtomicU64,
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) decode_failures: AtomicU64,
    pub(super) encode_failures: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) deletes: AtomicU64,
    pub(super) write_drops: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) adopted: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl L2 {
    pub(crate) fn new(
        backend: Arc<dyn StorageBackend>,
        runtime: Runtime,
        settings: L2Settings,
        publisher: Option<Publisher>,
    ) -> Self {
        Self {
            publisher,
            backend,
            runtime,
            settings,
            counters: Counters::default(),
            breaker: Mutex::new(Breaker::new()),
            queue: Mutex::new(WriteQueue::new()),
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
            adopted: get(&c.adopted),
        }
    }

    pub(crate) fn count_hydration(&self) {
        bump(&self.counters.hydrations);
    }

    /// Counts a fetch that ended with a record read from storage instead of a call.
    pub(crate) fn count_adopted(&self) {
        bump(&self.counters.adopted);
    }

    /// Tries to take `key`'s fetch lock for `ttl` as `token`, under the breaker and the
    /// timeout. `None` when the call failed, timed out or was skipped (all counted).
    pub(crate) async fn try_lock(
        &self,
        key: &QueryKey,
        token: &str,
        ttl: Duration,
    ) -> Option<LockOutcome> {
        let name = key.storage_string();
        self.call("lock", key, |b| b.try_lock(name, token, ttl)).await?.ok()
    }

    /// Releases `key`'s fetch lock if `token` owns it; a failure is counted and logged (the
    /// lock then expires by itself).
    pub(crate) async fn unlock(&self, key: &QueryKey, token: &str) {
        let name = key.storage_string();
        let _ = self.call("unlock", key, |b| b.unlock(name, token)).await;
    }

    pub(super) fn lock_queue(&self) -> MutexGuard<'_, WriteQueue> {
        self.queue.lock()
    }

    fn lock_breaker(&self) -> MutexGuard<'_, Breaker> {
        self.breaker.lock()
    }

    /// Reads and decodes `key`'s record. `None` on a miss, a failure, a timeout, an
    /// undecodable record, a record older than `max_age` (a miss: the store kept it past its
    /// time to live) or an open breaker (all counted).
    pub(crate) async fn read<T>(
        &self,
        key: &QueryKey,
        decode: fn(&str) -> Result<Record<T>, RecordError>,
        max_age: Duration,
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
            Ok(Ok(record))
                if outlived(record.data_updated_at, self.runtime.system_now(), max_age) =>
            {
                bump(&self.counters.misses);
                tracing::debug!(%key, "L2 record ignored: older than the max age {max_age:?}");
                None
            }
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
    pub(super) async fn call<'s: 'f, 'f, R>(
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
    /// Returns whether it succeeded.
    pub(super) fn written(
        &self,
        key: &QueryKey,
        what: &str,
        done: Option<Result<(), StorageError>>,
        counter: &AtomicU64,
    ) -> bool {
        match done {
            Some(Ok(())) => {
                bump(counter);
                true
            }
            Some(Err(error)) => {
                bump(&self.counters.errors);
                tracing::warn!(%key, "L2 {what} failed: {error}");
                false
            }
            None => false,
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

/// Whether a record stamped `data_updated_at` is older than `max_age` at `now` (every record
/// is, for a max age of zero). A record without a timestamp, or with the invalidation mark
/// (the Unix epoch), has no age to tell: it is restored (as stale data), and lives as long as
/// the store keeps it, which is the max age from its writing for a store that honours the
/// time to live.
pub(crate) fn outlived(
    data_updated_at: Option<SystemTime>,
    now: SystemTime,
    max_age: Duration,
) -> bool {
    if max_age.is_zero() {
        return true;
    }
    match data_updated_at {
        Some(at) if at != SystemTime::UNIX_EPOCH => {
            now.duration_since(at).is_ok_and(|age| age > max_age)
        }
        _ => false,
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
pub(super) fn panic_message(payload: &(dyn Any + Send)) -> &str {
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
