//! Storage helpers shared by the persistence and backend suites: records in the Python
//! library's shape, and a backend wrapper that can be slowed down, made to refuse, made to
//! return garbage, or made to panic, on the test's runtime clock.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pystackquery::Runtime;
use pystackquery::storage::{
    LockOutcome, MemoryStorage, StorageBackend, StorageError, StorageFuture,
};

/// Unix seconds of the runtime's wall clock.
pub fn unix_now(runtime: &Runtime) -> f64 {
    runtime.system_now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A record as `json.dumps(QueryState.to_dict())` writes it for successful data.
pub fn python_record(data: serde_json::Value, data_updated_at: f64) -> String {
    serde_json::json!({
        "status": "SUCCESS",
        "fetch_status": "IDLE",
        "data": data,
        "error": null,
        "data_updated_at": data_updated_at,
        "error_updated_at": null,
        "fetch_failure_count": 0,
        "fetch_failure_reason": null,
    })
    .to_string()
}

/// What a [`FaultyStorage`] does with each call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Forward to the inner store.
    None,
    /// Wait this long on the runtime clock, then forward.
    Delay(Duration),
    /// Delay writes and deletes only; reads answer at once.
    DelayWrites(Duration),
    /// Fail every call.
    Refuse,
    /// Answer every read with text that is not a record (writes still land).
    Garbage,
    /// Panic inside `get`, `set` or `delete` itself, before a future is returned.
    PanicInCall,
    /// Return a future that panics when it is polled.
    PanicInPoll,
}

/// A [`MemoryStorage`] behind a switchable fault.
#[derive(Clone)]
pub struct FaultyStorage {
    pub inner: MemoryStorage,
    fault: Arc<Mutex<Fault>>,
    runtime: Runtime,
    pub calls: Arc<Mutex<Vec<&'static str>>>,
}

impl FaultyStorage {
    pub fn new(runtime: &Runtime) -> Self {
        Self {
            inner: MemoryStorage::new(),
            fault: Arc::new(Mutex::new(Fault::None)),
            runtime: runtime.clone(),
            calls: Arc::default(),
        }
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn run<'a, T: Send + 'a>(
        &'a self,
        what: &'static str,
        forward: impl FnOnce() -> StorageFuture<'a, T> + Send + 'a,
        garbage: Option<T>,
    ) -> StorageFuture<'a, T> {
        self.calls.lock().unwrap().push(what);
        let fault = *self.fault.lock().unwrap();
        assert!(fault != Fault::PanicInCall, "injected panic in {what}");
        let runtime = self.runtime.clone();
        Box::pin(async move {
            match fault {
                Fault::None => forward().await,
                Fault::Delay(delay) => {
                    runtime.sleep(delay).await;
                    forward().await
                }
                Fault::DelayWrites(delay) => {
                    if what != "get" {
                        runtime.sleep(delay).await;
                    }
                    forward().await
                }
                Fault::Refuse => Err(StorageError::unavailable("connection refused (injected)")),
                Fault::Garbage => match garbage {
                    Some(garbage) => Ok(garbage),
                    None => forward().await,
                },
                Fault::PanicInCall => unreachable!("panicked before the future was made"),
                Fault::PanicInPoll => panic!("injected panic while polling {what}"),
            }
        })
    }
}

impl StorageBackend for FaultyStorage {
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<String>> {
        self.run("get", move || self.inner.get(key), Some(Some("\u{1}garbage{".to_string())))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> StorageFuture<'a, ()> {
        self.run("set", move || self.inner.set(key, value, ttl), None)
    }

    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()> {
        self.run("delete", move || self.inner.delete(key), None)
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> StorageFuture<'a, LockOutcome> {
        self.run("lock", move || self.inner.try_lock(key, token, ttl), None)
    }

    fn unlock<'a>(&'a self, key: &'a str, token: &'a str) -> StorageFuture<'a, ()> {
        self.run("unlock", move || self.inner.unlock(key, token), None)
    }
}
