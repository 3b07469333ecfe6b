//! L2 persistence: the [`StorageBackend`] seam, the in-memory backend, and the counters.
//!
//! A client configured with [`QueryClientConfig::storage`](crate::QueryClientConfig::storage)
//! keeps a second tier behind its memory cache. Queries opt in with
//! [`QueryOptions::persist`](crate::QueryOptions::persist) (their data type must implement
//! serde's `Serialize` and `DeserializeOwned`); every other query stays in memory only, on the
//! same client.
//!
//! - **Writes** happen in the background after a successful fetch, `set_query_data` and
//!   invalidation. They are coalesced per key (the last state wins) in a bounded queue that
//!   drops the oldest key when full; the record's time to live is the query's persistence max
//!   age ([`QueryClientConfig::persist_max_age`](crate::QueryClientConfig::persist_max_age),
//!   24 hours by default), not its `gc_time`; zero writes nothing.
//!   `remove_queries` and `reset_queries` delete the record.
//! - **Hydration**: the first use of a cold key reads its record once. `fetch_query` waits for
//!   that read, never longer than the storage timeout. The newer of memory and storage wins; a
//!   record older than the max age is a miss; a record stamped in the future counts as stale;
//!   a record that does not decode (including one that is not UTF-8 text,
//!   [`StorageError::InvalidRecord`]) is a miss, logged at `warn`, counted, and overwritten by
//!   the next write. It says nothing about the store's health.
//! - **Faults**: every call is bounded by the storage timeout. After repeated failures (errors,
//!   timeouts, a backend that panics) the client stops calling storage for a cool-down period,
//!   then probes again with one call. A storage error or panic never fails a caller and never
//!   stalls one past the timeout. A timeout or cool-down too long to add to the clock never
//!   overflows: such a timeout means no timeout, such a cool-down means storage is not called
//!   again for the rest of the process.
//! - **Shutdown**: if the runtime drops the background write task (it has shut down), the
//!   writes still queued are dropped and counted, and
//!   [`QueryClient::flush_storage`](crate::QueryClient::flush_storage) returns.
//!
//! The record is the JSON object the Python library writes, byte for byte as its
//! `json.dumps(state.to_dict())` writes it (one line; wrapped here), so Python and Rust
//! processes can share one store:
//!
//! ```text
//! key:   ('user', 42)
//! value: {"status": "SUCCESS", "fetch_status": "IDLE", "data": {"name": "Ada"}, "error": null,
//!         "data_updated_at": 1764066000.25, "error_updated_at": null,
//!         "fetch_failure_count": 0, "fetch_failure_reason": null}
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

mod breaker;
mod l2;
mod memory;
mod pyjson;
pub(crate) mod record;
mod writer;

pub(crate) use l2::{L2, L2Settings};
pub use memory::MemoryStorage;
pub use record::{Record, RecordError};
pub(crate) use writer::L2Op;

/// A boxed future borrowing from the backend and its arguments, as returned by
/// [`StorageBackend`]'s methods.
///
/// # Examples
///
/// ```
/// use pystackquery_core::storage::{StorageError, StorageFuture};
///
/// // A backend method's body: an `async` block, boxed.
/// fn get<'a>(key: &'a str) -> StorageFuture<'a, Option<String>> {
///     Box::pin(async move { if key.is_empty() { Err(StorageError::backend("empty key")) } else { Ok(None) } })
/// }
/// assert_eq!(futures::executor::block_on(get("('a',)")).unwrap(), None);
/// ```
pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// A key-value store for serialized query states (the L2 tier).
///
/// Keys are the queries' storage strings (Python's `str()` of the key tuple, such as
/// `('user', 42)`); values are JSON records. Implementations need not enforce timeouts: the
/// client bounds every call with its storage timeout and drops calls that overrun it. A value
/// the store holds but cannot read as text should be reported as
/// [`StorageError::InvalidRecord`], so that it counts as a bad record rather than a failing
/// store. A panic in a method or in its future is caught by the client and counted as a
/// failed call.
///
/// The trait is object-safe; the client holds an `Arc<dyn StorageBackend>`.
///
/// # Examples
///
/// A backend that forwards to [`MemoryStorage`] and counts reads:
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use pystackquery_core::storage::{MemoryStorage, StorageBackend, StorageFuture};
///
/// #[derive(Default)]
/// struct Counting {
///     inner: MemoryStorage,
///     reads: AtomicUsize,
/// }
///
/// impl StorageBackend for Counting {
///     fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<String>> {
///         self.reads.fetch_add(1, Ordering::Relaxed);
///         self.inner.get(key)
///     }
///     fn set<'a>(
///         &'a self,
///         key: &'a str,
///         value: &'a str,
///         ttl: Option<Duration>,
///     ) -> StorageFuture<'a, ()> {
///         self.inner.set(key, value, ttl)
///     }
///     fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()> {
///         self.inner.delete(key)
///     }
/// }
///
/// let storage = Counting::default();
/// futures::executor::block_on(async {
///     storage.set("('a',)", "{}", None).await.unwrap();
///     assert_eq!(storage.get("('a',)").await.unwrap().as_deref(), Some("{}"));
/// });
/// assert_eq!(storage.reads.load(Ordering::Relaxed), 1);
/// ```
pub trait StorageBackend: Send + Sync + 'static {
    /// The value stored under `key`, or `None` when there is none or it has expired.
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<String>>;

    /// Stores `value` under `key`, replacing any previous value. With a `ttl`, the value
    /// expires that long after this call; `None` means it never expires.
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> StorageFuture<'a, ()>;

    /// Removes `key`. Removing a missing key is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()>;

    /// Takes the cross-process fetch lock of the record `key` for `ttl`, owned by `token`,
    /// if nobody holds it (for [`QueryClientConfig::single_flight`]). The lock lives beside
    /// the record, never under the record's own key, and expires by itself after `ttl`.
    /// Default: [`LockOutcome::Unsupported`] (the client then fetches as without the lock).
    ///
    /// [`QueryClientConfig::single_flight`]: crate::QueryClientConfig::single_flight
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> StorageFuture<'a, LockOutcome> {
        let _ = (key, token, ttl);
        Box::pin(async { Ok(LockOutcome::Unsupported) })
    }

    /// Releases the lock of `key` if `token` still owns it (a lock that expired and was taken
    /// by another owner is left alone). Default: does nothing.
    fn unlock<'a>(&'a self, key: &'a str, token: &'a str) -> StorageFuture<'a, ()> {
        let _ = (key, token);
        Box::pin(async { Ok(()) })
    }

    /// A name for this backend in log messages. Defaults to the implementing type's name.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }
}

/// The answer of [`StorageBackend::try_lock`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pystackquery_core::storage::{LockOutcome, MemoryStorage, StorageBackend};
///
/// let storage = MemoryStorage::new();
/// futures::executor::block_on(async {
///     let first = storage.try_lock("('n',)", "worker-1", Duration::from_secs(30)).await.unwrap();
///     let second = storage.try_lock("('n',)", "worker-2", Duration::from_secs(30)).await.unwrap();
///     assert_eq!((first, second), (LockOutcome::Acquired, LockOutcome::Held));
/// });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockOutcome {
    /// The lock is now the caller's, until it unlocks or the ttl passes.
    Acquired,
    /// Another owner holds the lock.
    Held,
    /// The backend has no locks.
    Unsupported,
}

impl<S: StorageBackend + ?Sized> StorageBackend for std::sync::Arc<S> {
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<String>> {
        (**self).get(key)
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> StorageFuture<'a, ()> {
        (**self).set(key, value, ttl)
    }

    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()> {
        (**self).delete(key)
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> StorageFuture<'a, LockOutcome> {
        (**self).try_lock(key, token, ttl)
    }

    fn unlock<'a>(&'a self, key: &'a str, token: &'a str) -> StorageFuture<'a, ()> {
        (**self).unlock(key, token)
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}

/// Why a storage call failed.
///
/// # Examples
///
/// ```
/// use pystackquery_core::storage::{MemoryStorage, StorageBackend, StorageError};
///
/// // A backend reports what went wrong; the client counts it and moves on (memory keeps working).
/// fn check(result: Result<Option<String>, StorageError>) -> &'static str {
///     match result {
///         Ok(Some(_)) => "hit",
///         Ok(None) => "miss",
///         Err(StorageError::Unavailable(_)) => "store down",
///         Err(_) => "store error",
///     }
/// }
/// let storage = MemoryStorage::new();
/// assert_eq!(check(futures::executor::block_on(storage.get("('n',)"))), "miss");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The store could not be reached (connection refused or lost, file not openable).
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// The store was reached and refused or failed the operation.
    #[error("storage operation failed: {0}")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
    /// The backend has been shut down.
    #[error("storage backend is closed")]
    Closed,
    /// The store holds a value for the key that the backend cannot read as text (it is not
    /// UTF-8, for example). The client treats it as a record that does not decode: a miss,
    /// counted in [`StorageStats::decode_failures`], which never counts towards the circuit
    /// breaker.
    #[error("storage record is not valid text: {0}")]
    InvalidRecord(#[source] Box<dyn StdError + Send + Sync>),
}

impl StorageError {
    /// An [`Unavailable`](Self::Unavailable) error from any error value.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::storage::StorageError;
    ///
    /// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    /// let error = StorageError::unavailable(refused); // the store cannot be reached
    /// assert!(matches!(error, StorageError::Unavailable(_)));
    /// ```
    pub fn unavailable(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Unavailable(error.into())
    }

    /// A [`Backend`](Self::Backend) error from any error value.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::storage::StorageError;
    ///
    /// let error = StorageError::backend("READONLY You can't write against a read only replica");
    /// assert!(matches!(error, StorageError::Backend(_)));
    /// ```
    pub fn backend(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Backend(error.into())
    }

    /// An [`InvalidRecord`](Self::InvalidRecord) error from any error value (such as a
    /// [`std::string::FromUtf8Error`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::storage::StorageError;
    ///
    /// let bytes = vec![0xff, 0xfe];
    /// let error = String::from_utf8(bytes).map_err(StorageError::invalid_record).unwrap_err();
    /// assert!(matches!(error, StorageError::InvalidRecord(_)));
    /// ```
    pub fn invalid_record(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::InvalidRecord(error.into())
    }
}

/// What the client's L2 tier has done since the client was built, from
/// [`QueryClient::storage_stats`](crate::QueryClient::storage_stats). Its `Display` shows every
/// counter on one line; it serializes (serde) as an object with the field names.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
/// use pystackquery_core::storage::MemoryStorage;
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default().storage(MemoryStorage::new()));
/// let n = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(1) }).persist();
/// test.block_on(async {
///     client.fetch_query(&n).await.unwrap(); // a cold key: one hydration read, a miss
///     client.flush_storage().await;
/// });
/// let stats = client.storage_stats();
/// assert_eq!((stats.hydrations, stats.misses, stats.writes), (1, 1, 1));
/// println!("{stats}"); // every counter on one line, e.g. for a log
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct StorageStats {
    /// Hydration reads started (one per cold key on first use).
    pub hydrations: u64,
    /// Reads that found a record that decoded.
    pub hits: u64,
    /// Reads that found no record.
    pub misses: u64,
    /// Records that could not be decoded, or that the store could not read as text
    /// (treated as misses).
    pub decode_failures: u64,
    /// States that could not be encoded (their write was skipped).
    pub encode_failures: u64,
    /// Records written.
    pub writes: u64,
    /// Records deleted.
    pub deletes: u64,
    /// Pending writes dropped because the write queue was full, or because the runtime
    /// dropped the background write task (it shut down).
    pub write_drops: u64,
    /// Calls that returned an error or panicked.
    pub errors: u64,
    /// Calls that overran the storage timeout.
    pub timeouts: u64,
    /// Calls skipped because storage was failing and the client was waiting to probe it.
    pub skipped: u64,
    /// Fetches that ended with a record another process wrote instead of a call of the query
    /// function (storage-first revalidation, or waiting for a single-flight lock's holder).
    /// The fetch itself still counts in [`CacheStats::fetches`](crate::CacheStats::fetches).
    pub adopted: u64,
}

impl fmt::Display for StorageStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hydrations {}, hits {}, misses {}, decode failures {}, encode failures {}, writes {}, \
             deletes {}, write drops {}, errors {}, timeouts {}, skipped {}, adopted {}",
            self.hydrations,
            self.hits,
            self.misses,
            self.decode_failures,
            self.encode_failures,
            self.writes,
            self.deletes,
            self.write_drops,
            self.errors,
            self.timeouts,
            self.skipped,
            self.adopted
        )
    }
}
