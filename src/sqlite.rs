//! [`SqliteStorage`]: the embedded L2 backend, a SQLite file used from the calling thread.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use pystackquery_core::storage::{StorageBackend, StorageError, StorageFuture};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};

/// Writes between two purges of expired rows.
const PURGE_EVERY: u32 = 256;

/// The longest busy timeout SQLite takes (`i32` milliseconds); rusqlite panics beyond it.
const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// An L2 backend in a SQLite file (bundled SQLite, no system library needed).
///
/// Each call runs at once on the calling thread, on one connection that threads take turns
/// on, and returns a future that is already complete. So the backend needs no async runtime
/// and works the same under tokio, smol, async-std and any clock, virtual ones included: the
/// client takes the answer without arming its storage timeout. There is no queue of pending
/// calls.
///
/// A call blocks the calling thread while SQLite works: usually microseconds, and at most
/// about the busy timeout when the connection is in use by another thread or another
/// connection (another client, another process) holds the database's write lock; after that
/// the call fails and the client counts the failure. The busy timeout is
/// [`DEFAULT_BUSY_TIMEOUT`](Self::DEFAULT_BUSY_TIMEOUT) (250 ms, well under the client's default
/// storage timeout of 1 s); [`open_with_busy_timeout`](Self::open_with_busy_timeout) sets
/// another.
///
/// The file is opened in WAL mode with `synchronous=NORMAL`, so several clients and several
/// processes (Python ones included) can share it. The table is the Python library's SQLite
/// recipe plus an expiry column:
///
/// ```sql
/// CREATE TABLE cache (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL)
/// ```
///
/// `expires_at` holds Unix seconds (`NULL`: never). A file created by the Python recipe
/// (without that column) gets it added on open. Expired rows are never returned; they are
/// purged when the file is opened, every 256 writes, and by
/// [`purge_expired`](Self::purge_expired). A value that is `NULL` (a table made without
/// `NOT NULL`) reads as no record; one that is not UTF-8 text reads as
/// [`StorageError::InvalidRecord`], which the client counts as a record it cannot decode.
///
/// Clones share the connection; it is closed when the last clone is dropped.
///
/// # Examples
///
/// ```
/// use pystackquery::prelude::*;
/// use pystackquery::SqliteStorage;
///
/// # let dir = std::env::temp_dir().join(format!("pystackquery-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let storage = SqliteStorage::open(dir.join("cache.db"))?;
/// let config = QueryClientConfig::default().storage(storage);
/// # drop(config);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), pystackquery::storage::StorageError>(())
/// ```
///
/// Answers that survive the process: a second run (here, a second client on the same file)
/// is served from disk without calling the query function.
///
/// ```
/// use std::time::Duration;
/// use pystackquery::prelude::*;
/// use pystackquery::SqliteStorage;
///
/// # #[cfg(feature = "tokio")]
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// #   let dir = std::env::temp_dir().join(format!("pystackquery-runs-{}", std::process::id()));
/// #   std::fs::create_dir_all(&dir)?;
///     let path = dir.join("answers.db");
///     let hour = Duration::from_secs(3600);
///
///     // First run: fetched, then written to the file.
///     let client = QueryClient::with_config(QueryClientConfig::default().storage(SqliteStorage::open(&path)?))?;
///     let answer = QueryOptions::new(key!("answer"), || async { Ok::<u32, std::io::Error>(42) });
///     client.fetch_query(&answer.stale_time(hour).persist()).await?;
///     client.flush_storage().await; // before exiting
///     drop(client);
///
///     // Second run: restored from the file, fresh for an hour, no call.
///     let client = QueryClient::with_config(QueryClientConfig::default().storage(SqliteStorage::open(&path)?))?;
///     let offline = QueryOptions::new(key!("answer"), || async { Err::<u32, _>(std::io::Error::other("offline")) });
///     assert_eq!(client.fetch_query(&offline.stale_time(hour).persist()).await?, 42);
/// #   std::fs::remove_dir_all(&dir).ok();
///     Ok(())
/// }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
#[derive(Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connection while no call is using it.
    idle: Mutex<Option<Database>>,
    /// Notified when a call gives the connection back.
    returned: Condvar,
    busy_timeout: Duration,
    path: PathBuf,
}

struct Database {
    connection: Connection,
    /// The busy timeout currently set on the connection (see [`SqliteStorage::with`]).
    busy_timeout: Duration,
    writes_since_purge: u32,
}

/// The connection, checked out by one call; given back on drop, even when unwinding.
struct Checkout<'a> {
    inner: &'a Inner,
    database: Option<Database>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(database) = self.database.take() {
            *lock(&self.inner.idle) = Some(database);
            self.inner.returned.notify_one();
        }
    }
}

/// Locks `mutex`, recovering it if a panic poisoned it: it only guards whether the connection
/// is checked out, which a panic cannot leave half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStorage {
    /// How long a call waits for another connection's write lock before it fails, unless
    /// [`open_with_busy_timeout`](Self::open_with_busy_timeout) says otherwise: 250 ms.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_millis(250);

    /// Opens (creating if needed) the database at `path` and creates the table, with the
    /// [default busy timeout](Self::DEFAULT_BUSY_TIMEOUT).
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when the file cannot be opened or created, or is not a
    /// SQLite database.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery::SqliteStorage;
    /// use pystackquery::storage::StorageError;
    ///
    /// # let dir = std::env::temp_dir().join(format!("pystackquery-open-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let storage = SqliteStorage::open(dir.join("cache.db"))?; // created on first open
    /// let again = SqliteStorage::open(dir.join("cache.db"))?; // a second connection to the file
    /// # drop((storage, again));
    /// std::fs::write(dir.join("notes.txt"), "not a database, just text that is long enough to check").unwrap();
    /// assert!(matches!(SqliteStorage::open(dir.join("notes.txt")), Err(StorageError::Unavailable(_))));
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), StorageError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with_busy_timeout(path, Self::DEFAULT_BUSY_TIMEOUT)
    }

    /// Like [`open`](Self::open), with another busy timeout: how long a call waits for
    /// another connection's write lock before it fails. A call blocks its thread for at most
    /// about this long, so keep it well under the client's storage timeout. SQLite counts it in
    /// milliseconds in an `i32`: a longer timeout (about 24 days) is cut to that.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when the file cannot be opened or created, or is not a
    /// SQLite database.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery::SqliteStorage;
    ///
    /// # let dir = std::env::temp_dir().join(format!("pystackquery-busy-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("cache.db");
    /// let storage = SqliteStorage::open_with_busy_timeout(path, Duration::from_millis(50))?;
    /// # drop(storage);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), pystackquery::storage::StorageError>(())
    /// ```
    pub fn open_with_busy_timeout(
        path: impl AsRef<Path>,
        busy_timeout: Duration,
    ) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let busy_timeout = busy_timeout.min(MAX_BUSY_TIMEOUT);
        let connection = open_connection(&path, busy_timeout).map_err(StorageError::unavailable)?;
        let database = Database { connection, busy_timeout, writes_since_purge: 0 };
        Ok(Self {
            inner: Arc::new(Inner {
                idle: Mutex::new(Some(database)),
                returned: Condvar::new(),
                busy_timeout,
                path,
            }),
        })
    }

    /// The database file.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery::SqliteStorage;
    ///
    /// # let dir = std::env::temp_dir().join(format!("pystackquery-path-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let storage = SqliteStorage::open(dir.join("cache.db"))?;
    /// assert!(storage.path().ends_with("cache.db"));
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), pystackquery::storage::StorageError>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Deletes expired rows now; returns how many.
    ///
    /// # Errors
    ///
    /// A [`StorageError`] from SQLite.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery::SqliteStorage;
    /// use pystackquery::storage::StorageBackend;
    ///
    /// # let dir = std::env::temp_dir().join(format!("pystackquery-purge-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let storage = SqliteStorage::open(dir.join("cache.db"))?;
    /// futures::executor::block_on(async {
    ///     storage.set("('short',)", "{}", Some(Duration::from_millis(1))).await?;
    ///     storage.set("('kept',)", "{}", None).await?;
    ///     std::thread::sleep(Duration::from_millis(20)); // SQLite expiry follows the wall clock
    ///     assert_eq!(storage.purge_expired().await?, 1);
    ///     Ok::<_, pystackquery::storage::StorageError>(())
    /// })?;
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), pystackquery::storage::StorageError>(())
    /// ```
    pub async fn purge_expired(&self) -> Result<usize, StorageError> {
        self.with(|database| purge(&database.connection, now_seconds()))
    }

    /// Runs `work` on the connection, on this thread. Waiting for the connection (in use by
    /// another thread) and for the database (locked by another connection) share one busy
    /// timeout, so the call blocks for at most about that long.
    fn with<T>(
        &self,
        work: impl FnOnce(&mut Database) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let started = Instant::now();
        let mut checkout = self.checkout(started)?;
        let Some(database) = checkout.database.as_mut() else {
            return Err(StorageError::Closed);
        };
        // Whatever the wait for the connection used up is taken off SQLite's own wait.
        let waited = started.elapsed();
        let budget = if waited < Duration::from_millis(1) {
            self.inner.busy_timeout
        } else {
            self.inner.busy_timeout.saturating_sub(waited)
        };
        if budget != database.busy_timeout {
            database.connection.busy_timeout(budget).map_err(StorageError::backend)?;
            database.busy_timeout = budget;
        }
        work(database).map_err(StorageError::backend)
    }

    /// Takes the connection, waiting at most the busy timeout (from `started`) for another
    /// thread to give it back.
    fn checkout(&self, started: Instant) -> Result<Checkout<'_>, StorageError> {
        let inner = &*self.inner;
        let mut idle = lock(&inner.idle);
        while idle.is_none() {
            let left = inner.busy_timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(StorageError::backend(
                    "the SQLite connection stayed in use by other calls past the busy timeout",
                ));
            }
            idle =
                inner.returned.wait_timeout(idle, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        Ok(Checkout { inner, database: idle.take() })
    }

    fn get_now(&self, key: &str) -> Result<Option<String>, StorageError> {
        let value = self.with(|database| {
            database
                .connection
                .prepare_cached(
                    "SELECT value FROM cache \
                     WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                )?
                .query_row(params![key, now_seconds()], |row| Ok(Text::read(row.get_ref(0)?)))
                .optional()
        })?;
        match value {
            None | Some(Text::Null) => Ok(None),
            Some(Text::Bytes(bytes)) => {
                String::from_utf8(bytes).map(Some).map_err(StorageError::invalid_record)
            }
        }
    }

    fn set_now(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), StorageError> {
        self.with(|database| {
            let now = now_seconds();
            let expires_at = ttl.map(|ttl| now + ttl.as_secs_f64());
            database
                .connection
                .prepare_cached(
                    "INSERT INTO cache (key, value, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(key) DO UPDATE SET \
                     value = excluded.value, expires_at = excluded.expires_at",
                )?
                .execute(params![key, value, expires_at])?;
            database.writes_since_purge += 1;
            if database.writes_since_purge >= PURGE_EVERY {
                database.writes_since_purge = 0;
                if let Err(error) = purge(&database.connection, now) {
                    tracing::warn!("purging expired SQLite rows failed: {error}");
                }
            }
            Ok(())
        })
    }

    fn delete_now(&self, key: &str) -> Result<(), StorageError> {
        self.with(|database| {
            database
                .connection
                .prepare_cached("DELETE FROM cache WHERE key = ?1")?
                .execute(params![key])
                .map(drop)
        })
    }
}

/// A `value` cell as read: `NULL`, or the bytes of its text (numbers in their SQL text form).
enum Text {
    Null,
    Bytes(Vec<u8>),
}

impl Text {
    fn read(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => Self::Null,
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Self::Bytes(bytes.to_vec()),
            ValueRef::Integer(n) => Self::Bytes(n.to_string().into_bytes()),
            ValueRef::Real(x) => Self::Bytes(x.to_string().into_bytes()),
        }
    }
}

fn ready<'a, T: Send + 'a>(result: Result<T, StorageError>) -> StorageFuture<'a, T> {
    Box::pin(futures::future::ready(result))
}

impl StorageBackend for SqliteStorage {
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<String>> {
        ready(self.get_now(key))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> StorageFuture<'a, ()> {
        ready(self.set_now(key, value, ttl))
    }

    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()> {
        ready(self.delete_now(key))
    }
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStorage").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

fn open_connection(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(busy_timeout)?;
    // `journal_mode` answers with the mode in force; WAL lets readers and one writer from
    // several processes work at once.
    let _mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.execute(
        "CREATE TABLE IF NOT EXISTS cache \
         (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL)",
        [],
    )?;
    // A file made by the Python library's recipe has no expiry column: add it, so both keep
    // working on the same file (Python's inserts leave it NULL, which means "never").
    let has_expiry: bool = connection.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('cache') WHERE name = 'expires_at'",
        [],
        |row| row.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_expiry {
        connection.execute("ALTER TABLE cache ADD COLUMN expires_at REAL", [])?;
    }
    purge(&connection, now_seconds())?;
    Ok(connection)
}

fn purge(connection: &Connection, now: f64) -> rusqlite::Result<usize> {
    connection.execute(
        "DELETE FROM cache WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        params![now],
    )
}

fn now_seconds() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
