//! [`RedisStorage`]: a shared L2 for many processes, Python and Rust alike.

use std::sync::Arc;
use std::time::Duration;

use pystackquery_core::storage::{LockOutcome, StorageBackend, StorageError, StorageFuture};

use crate::redis_lock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ErrorKind, RedisError};

/// An L2 backend on Redis, through a reconnecting connection.
///
/// Records are stored with `SET key value EX ttl` under plain keys by default, so the Python
/// library's Redis recipe reads and writes the same entries (`('user', 42)`). With
/// [`with_namespace`](Self::with_namespace), keys get a prefix instead. It implements the
/// fetch locks of single flight (`lock:<key>`, see `redis_lock`).
///
/// The connection runs on tokio when the `tokio` feature is on and the call is made inside a
/// tokio runtime, and on smol's reactor otherwise (the `smol` and `async-std` features). When
/// the server goes away, calls fail (the client counts them and backs off) and the
/// connection is re-established in the background. A value that is not UTF-8 text reads as
/// [`StorageError::InvalidRecord`], which the client counts as a record it cannot decode.
///
/// # Examples
///
/// ```no_run
/// use pystackquery::prelude::*;
/// use pystackquery::RedisStorage;
///
/// # async fn run() -> Result<(), pystackquery::storage::StorageError> {
/// let storage = RedisStorage::connect("redis://127.0.0.1:6379/").await?.with_namespace("app:");
/// let config = QueryClientConfig::default().storage(storage);
/// # let _ = config;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStorage {
    connection: ConnectionManager,
    namespace: Option<Arc<str>>,
}

impl RedisStorage {
    /// Connects to `url` (`redis://host:port/db`) and returns once the first connection is up.
    /// Call it inside the runtime the client runs on.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when the URL is invalid or the server cannot be reached.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use pystackquery::prelude::*;
    /// use pystackquery::RedisStorage;
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let storage = RedisStorage::connect("redis://127.0.0.1:6379/").await?; // fails if it is down
    ///     let client = QueryClient::with_config(QueryClientConfig::default().storage(storage))?;
    ///     let user = QueryOptions::new(key!("user", 42), || async { Ok::<_, std::io::Error>("Ada".to_string()) })
    ///         .persist(); // written to Redis as `('user', 42)`, readable by Python pystackquery
    ///     client.fetch_query(&user).await?;
    ///     client.flush_storage().await;
    ///     Ok(())
    /// }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let client = redis::Client::open(url).map_err(StorageError::unavailable)?;
        let connection = ConnectionManager::new_with_config(client, manager_config())
            .await
            .map_err(StorageError::unavailable)?;
        Ok(Self { connection, namespace: None })
    }

    /// Like [`connect`](Self::connect), without waiting for the server: the connection is
    /// made on first use, so a process can start while Redis is down. Call it inside the
    /// runtime the client runs on.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when the URL is invalid.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery::prelude::*;
    /// use pystackquery::RedisStorage;
    ///
    /// # #[cfg(feature = "tokio")]
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     // Nothing listens on port 1: the process starts all the same, and storage calls fail
    ///     // (counted) until Redis is there.
    ///     let storage = RedisStorage::connect_lazy("redis://127.0.0.1:1/")?;
    ///     let client = QueryClient::with_config(QueryClientConfig::default().storage(storage))?;
    ///     assert!(client.config().has_storage());
    ///     Ok(())
    /// }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {}
    /// ```
    pub fn connect_lazy(url: &str) -> Result<Self, StorageError> {
        let client = redis::Client::open(url).map_err(StorageError::unavailable)?;
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config())
            .map_err(StorageError::unavailable)?;
        Ok(Self { connection, namespace: None })
    }

    /// Prefixes every key with `namespace` (for example `"myapp:"`). Default: no prefix, which
    /// is what Python pystackquery's Redis recipe uses.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery::RedisStorage;
    ///
    /// # #[cfg(feature = "tokio")]
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     // Keys become `billing:('invoice', 7)`; Python's recipe uses no prefix.
    ///     let _storage = RedisStorage::connect_lazy("redis://127.0.0.1:6379/")?.with_namespace("billing:");
    ///     Ok(())
    /// }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {}
    /// ```
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        let namespace: String = namespace.into();
        self.namespace = (!namespace.is_empty()).then(|| namespace.into());
        self
    }

    fn full_key(&self, key: &str) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}{key}"),
            None => key.to_owned(),
        }
    }
}

fn manager_config() -> ConnectionManagerConfig {
    // Short timeouts and few reconnection attempts: the client bounds every call anyway, and
    // a call should fail fast while the server is away rather than queue behind reconnects.
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

pub(crate) fn storage_error(error: RedisError) -> StorageError {
    let unreachable = error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.kind() == ErrorKind::Io;
    if unreachable { StorageError::unavailable(error) } else { StorageError::backend(error) }
}

impl StorageBackend for RedisStorage {
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<String>> {
        let mut connection = self.connection.clone();
        let key = self.full_key(key);
        Box::pin(async move {
            // Read bytes, not text: a value that is not UTF-8 is a bad record, not a failing
            // server (the client counts it as a decode failure, not towards its breaker).
            let bytes: Option<Vec<u8>> = connection.get(key).await.map_err(storage_error)?;
            bytes.map(String::from_utf8).transpose().map_err(StorageError::invalid_record)
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> StorageFuture<'a, ()> {
        let mut connection = self.connection.clone();
        let key = self.full_key(key);
        Box::pin(async move {
            match ttl {
                // EX takes whole seconds; round up so a record never lives less than its
                // time to live. Zero would be rejected by Redis.
                Some(ttl) => {
                    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
                    connection.set_ex(key, value, seconds.max(1)).await.map_err(storage_error)
                }
                None => connection.set(key, value).await.map_err(storage_error),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()> {
        let mut connection = self.connection.clone();
        let key = self.full_key(key);
        Box::pin(async move { connection.del(key).await.map_err(storage_error) })
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> StorageFuture<'a, LockOutcome> {
        let key = self.full_key(&redis_lock::lock_key(key));
        Box::pin(redis_lock::try_lock(self.connection.clone(), key, token.to_owned(), ttl))
    }

    fn unlock<'a>(&'a self, key: &'a str, token: &'a str) -> StorageFuture<'a, ()> {
        let key = self.full_key(&redis_lock::lock_key(key));
        Box::pin(redis_lock::unlock(self.connection.clone(), key, token.to_owned()))
    }
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}
