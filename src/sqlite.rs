//! [`SqliteStorage`]: the embedded L2 backend, a SQLite file served by a dedicated thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use futures::channel::oneshot;
use pystackquery_core::storage::{StorageBackend, StorageError, StorageFuture};
use rusqlite::{Connection, OptionalExtension, params};

/// Writes between two purges of expired rows.
const PURGE_EVERY: u32 = 256;

/// An L2 backend in a SQLite file (bundled SQLite, no system library needed).
///
/// All database work runs on one dedicated thread, so the backend needs no async runtime and
/// works the same under tokio, smol and async-std. The file is opened in WAL mode with a
/// busy timeout, so several clients and several processes (Python ones included) can share
/// it. The table is the Python library's SQLite recipe plus an expiry column:
///
/// ```sql
/// CREATE TABLE cache (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL)
/// ```
///
/// `expires_at` holds Unix seconds (`NULL`: never). A file created by the Python recipe
/// (without that column) gets it added on open. Expired rows are never returned; they are
/// purged when the file is opened, every 256 writes, and by
/// [`purge_expired`](Self::purge_expired).
///
/// Clones share the thread and the connection; the thread exits when the last clone is
/// dropped.
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
/// # let _ = config;
/// # Ok::<(), pystackquery::storage::StorageError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStorage {
    commands: mpsc::Sender<Command>,
    path: Arc<PathBuf>,
}

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

enum Command {
    Get { key: String, reply: Reply<Option<String>> },
    Set { key: String, value: String, ttl: Option<Duration>, reply: Reply<()> },
    Delete { key: String, reply: Reply<()> },
    Purge { reply: Reply<usize> },
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path`, creates the table, and starts the
    /// thread that serves it.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when the file cannot be opened or created, is not a
    /// SQLite database, or the thread cannot be started.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let connection = open_connection(&path).map_err(StorageError::unavailable)?;
        let (commands, inbox) = mpsc::channel();
        std::thread::Builder::new()
            .name("pystackquery-sqlite".into())
            .spawn(move || serve(connection, inbox))
            .map_err(StorageError::unavailable)?;
        Ok(Self { commands, path: Arc::new(path) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes expired rows now; returns how many.
    ///
    /// # Errors
    ///
    /// A [`StorageError`] from SQLite, or [`StorageError::Closed`] if the thread has exited.
    pub async fn purge_expired(&self) -> Result<usize, StorageError> {
        self.ask(|reply| Command::Purge { reply }).await
    }

    fn ask<T: Send + 'static>(
        &self,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> StorageFuture<'static, T> {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(command(reply));
        Box::pin(async move {
            sent.map_err(|_| StorageError::Closed)?;
            answer.await.map_err(|_| StorageError::Closed)?
        })
    }
}

impl StorageBackend for SqliteStorage {
    fn get<'a>(&'a self, key: &'a str) -> StorageFuture<'a, Option<String>> {
        self.ask(|reply| Command::Get { key: key.to_owned(), reply })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Option<Duration>,
    ) -> StorageFuture<'a, ()> {
        self.ask(|reply| Command::Set { key: key.to_owned(), value: value.to_owned(), ttl, reply })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StorageFuture<'a, ()> {
        self.ask(|reply| Command::Delete { key: key.to_owned(), reply })
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(5))?;
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

/// Serves commands until every handle is dropped.
fn serve(connection: Connection, inbox: mpsc::Receiver<Command>) {
    let mut writes_since_purge = 0u32;
    for command in inbox {
        let now = now_seconds();
        match command {
            Command::Get { key, reply } => {
                let _ = reply.send(get(&connection, &key, now).map_err(StorageError::backend));
            }
            Command::Set { key, value, ttl, reply } => {
                let expires_at = ttl.map(|ttl| now + ttl.as_secs_f64());
                let result = connection
                    .prepare_cached(
                        "INSERT INTO cache (key, value, expires_at) VALUES (?1, ?2, ?3) \
                         ON CONFLICT(key) DO UPDATE SET \
                         value = excluded.value, expires_at = excluded.expires_at",
                    )
                    .and_then(|mut statement| statement.execute(params![key, value, expires_at]))
                    .map(drop)
                    .map_err(StorageError::backend);
                let _ = reply.send(result);
                writes_since_purge += 1;
                if writes_since_purge >= PURGE_EVERY {
                    writes_since_purge = 0;
                    if let Err(error) = purge(&connection, now) {
                        tracing::warn!("purging expired SQLite rows failed: {error}");
                    }
                }
            }
            Command::Delete { key, reply } => {
                let result = connection
                    .prepare_cached("DELETE FROM cache WHERE key = ?1")
                    .and_then(|mut statement| statement.execute(params![key]))
                    .map(drop)
                    .map_err(StorageError::backend);
                let _ = reply.send(result);
            }
            Command::Purge { reply } => {
                let _ = reply.send(purge(&connection, now).map_err(StorageError::backend));
            }
        }
    }
}

fn get(connection: &Connection, key: &str, now: f64) -> rusqlite::Result<Option<String>> {
    connection
        .prepare_cached(
            "SELECT value FROM cache WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
        )?
        .query_row(params![key, now], |row| row.get(0))
        .optional()
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
