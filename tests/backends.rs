//! The shipped L2 backends, for real: SQLite files on disk and `redis-server` processes on
//! loopback ports started by the harness. The seed's persistence and infrastructure
//! scenarios run on both, on tokio, smol and async-std; then each backend's own guarantees,
//! Python interoperability, and a Redis killed and restarted in the middle of a run.
//!
//! Needs features `sqlite` and `redis` (see `required-features`), and so a runtime; the
//! scenarios run on each enabled runtime, the Python and Redis-specific tests on tokio.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;
#[cfg(feature = "tokio")]
use std::time::Instant;

#[cfg(feature = "tokio")]
use common::servers::python;
use common::servers::{RedisServer, ScratchDir};
use common::storage::{python_record, unix_now};
use common::{Counter, Harness};
use pystackquery::storage::StorageBackend;
use pystackquery::{
    QueryClient, QueryClientConfig, QueryOptions, RedisStorage, SqliteStorage, key,
};
use serde_json::{Value, json};

type Store = Arc<dyn StorageBackend>;

fn persisted(
    key: pystackquery::QueryKey,
    calls: &Counter,
    value: &'static str,
) -> QueryOptions<String, String> {
    let calls = calls.clone();
    QueryOptions::new(key, move || {
        calls.hit();
        async move { Ok(value.to_string()) }
    })
    .persist()
}

fn client(h: &Harness, store: &Store, stale: Duration) -> QueryClient {
    h.client_with(QueryClientConfig::default().storage(store.clone()).stale_time(stale))
}

async fn raw(store: &Store, key: &str) -> Option<Value> {
    store.get(key).await.unwrap().map(|text| serde_json::from_str(&text).unwrap())
}

/// The seed's persistence and infrastructure scenarios against one real store.
async fn scenarios(h: &Harness, store: Store) {
    // Write after a successful fetch.
    let calls = Counter::default();
    let c = client(h, &store, Duration::ZERO);
    c.fetch_query(&persisted(key!("write"), &calls, "fresh_write")).await.unwrap();
    c.flush_storage().await;
    let record = raw(&store, "('write',)").await.expect("record written");
    assert_eq!(
        (record["data"].clone(), record["status"].clone()),
        (json!("fresh_write"), json!("SUCCESS"))
    );

    // Hydration of stale data, then a background refetch.
    let old = python_record(json!("persisted_data"), unix_now(&h.runtime) - 1000.0);
    store.set("('persist',)", &old, Some(Duration::from_secs(60))).await.unwrap();
    let calls = Counter::default();
    let data = c.fetch_query(&persisted(key!("persist"), &calls, "new_data")).await.unwrap();
    assert_eq!(data, "persisted_data");
    h.eventually("background refetch", || {
        c.get_query_data::<String>(key!("persist")).unwrap().as_deref() == Some("new_data")
    })
    .await;
    c.flush_storage().await;
    assert_eq!(raw(&store, "('persist',)").await.unwrap()["data"], "new_data");

    // Invalidation is persisted with data_updated_at 0.
    c.invalidate_queries(key!("write"), true).await;
    c.flush_storage().await;
    assert_eq!(raw(&store, "('write',)").await.unwrap()["data_updated_at"], json!(0.0));

    // A second client hydrates the first one's data without calling its function.
    let calls = Counter::default();
    let first = client(h, &store, Duration::from_secs(100));
    first.fetch_query(&persisted(key!("infra", 1), &calls, "shared_data")).await.unwrap();
    first.flush_storage().await;
    let second = client(h, &store, Duration::from_secs(100));
    let data = second.fetch_query(&persisted(key!("infra", 1), &calls, "other")).await.unwrap();
    assert_eq!(data, "shared_data");
    assert_eq!(calls.get(), 1);

    // Removal deletes the record.
    assert_eq!(second.remove_queries(key!("infra")), 1);
    second.flush_storage().await;
    assert_eq!(raw(&store, "('infra', 1)").await, None);
    assert_eq!(first.storage_stats().errors + second.storage_stats().errors, 0);
}

fn sqlite_store(dir: &ScratchDir) -> Store {
    Arc::new(SqliteStorage::open(dir.path().join("cache.db")).unwrap())
}

async fn sqlite_scenarios(h: Harness) {
    let dir = ScratchDir::new("sqlite");
    scenarios(&h, sqlite_store(&dir)).await;
}

async fn redis_scenarios(h: Harness) {
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let store: Store = Arc::new(RedisStorage::connect(&server.url()).await.unwrap());
    scenarios(&h, store).await;
}

mod sqlite_backend {
    #[cfg(feature = "tokio")]
    #[test]
    fn on_tokio() {
        crate::common::run_tokio_multi("sqlite", super::sqlite_scenarios);
    }
    #[cfg(feature = "smol")]
    #[test]
    fn on_smol() {
        crate::common::run_smol("sqlite", super::sqlite_scenarios);
    }
    #[cfg(feature = "async-std")]
    #[test]
    fn on_async_std() {
        crate::common::run_async_std("sqlite", super::sqlite_scenarios);
    }
}

mod redis_backend {
    #[cfg(feature = "tokio")]
    #[test]
    fn on_tokio() {
        crate::common::run_tokio_multi("redis", super::redis_scenarios);
    }
    #[cfg(feature = "smol")]
    #[test]
    fn on_smol() {
        crate::common::run_smol("redis", super::redis_scenarios);
    }
    #[cfg(feature = "async-std")]
    #[test]
    fn on_async_std() {
        crate::common::run_async_std("redis", super::redis_scenarios);
    }
}

#[test]
fn sqlite_creates_the_file_and_never_returns_expired_rows() {
    let dir = ScratchDir::new("sqlite-expiry");
    let path = dir.path().join("nested.db");
    let store = SqliteStorage::open(&path).unwrap();
    assert!(path.exists());
    futures::executor::block_on(async {
        store.set("short", "1", Some(Duration::from_millis(1))).await.unwrap();
        store.set("long", "2", Some(Duration::from_secs(3600))).await.unwrap();
        store.set("forever", "3", None).await.unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(store.get("short").await.unwrap(), None);
        assert_eq!(store.get("long").await.unwrap().as_deref(), Some("2"));
        assert_eq!(store.get("forever").await.unwrap().as_deref(), Some("3"));
        assert_eq!(store.purge_expired().await.unwrap(), 1);
    });
    // The schema is the documented one.
    let db = rusqlite::Connection::open(&path).unwrap();
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('cache')")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(columns, ["key", "value", "expires_at"]);
    let mode: String = db.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn sqlite_file_is_shared_by_several_handles() {
    let dir = ScratchDir::new("sqlite-shared");
    let path = dir.path().join("shared.db");
    let (a, b) = (SqliteStorage::open(&path).unwrap(), SqliteStorage::open(&path).unwrap());
    futures::executor::block_on(async {
        a.set("k", "from a", None).await.unwrap();
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some("from a"));
        b.delete("k").await.unwrap();
        assert_eq!(a.get("k").await.unwrap(), None);
    });
}

#[test]
fn sqlite_open_reports_a_clear_error() {
    let dir = ScratchDir::new("sqlite-bad");
    // A directory is not a database file.
    let error = SqliteStorage::open(dir.path()).unwrap_err();
    assert!(error.to_string().starts_with("storage unavailable"), "{error}");
    let not_db = dir.path().join("text.db");
    std::fs::write(&not_db, "this is not a database, just text that is long enough").unwrap();
    assert!(SqliteStorage::open(&not_db).is_err());
}

/// `QueryState.from_dict` of the seed, reduced to what it reads, applied to every row.
#[cfg(feature = "tokio")]
const PY_READ: &str = r#"
import enum, json, sqlite3, sys
QueryStatus = enum.Enum("QueryStatus", "IDLE PENDING SUCCESS ERROR")
FetchStatus = enum.Enum("FetchStatus", "IDLE FETCHING PAUSED")
out = {}
for key, value in sqlite3.connect(sys.argv[1]).execute("SELECT key, value FROM cache"):
    d = json.loads(value)
    state = dict(
        status=QueryStatus[d["status"]].name,
        fetch_status=FetchStatus[d["fetch_status"]].name,
        data=d["data"],
        error=d["error"] if d.get("error") else None,
        data_updated_at=float(d["data_updated_at"]) if d.get("data_updated_at") else None,
        error_updated_at=d.get("error_updated_at") or None,
        fetch_failure_count=int(d.get("fetch_failure_count", 0)),
        fetch_failure_reason=d["fetch_failure_reason"] if d.get("fetch_failure_reason") else None,
    )
    out[key] = state
print(json.dumps(out))
"#;

/// Writes with the seed's SQLite recipe: `str(key)` and `json.dumps(state.to_dict())`.
#[cfg(feature = "tokio")]
const PY_WRITE: &str = r#"
import json, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT)")
for key, data in [(("user", 42), {"name": "Ada", "langs": ["py", "rs"]}),
                  (("it's", 'say "hi"', 7, True), [1.5, None])]:
    state = {"status": "SUCCESS", "fetch_status": "IDLE", "data": data, "error": None,
             "data_updated_at": time.time(), "error_updated_at": None,
             "fetch_failure_count": 0, "fetch_failure_reason": None}
    db.execute("INSERT OR REPLACE INTO cache (key, value) VALUES (?, ?)",
               (str(key), json.dumps(state)))
db.commit()
print(str(("it's", 'say "hi"', 7, True)))
"#;

#[cfg(feature = "tokio")]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    name: String,
    langs: Vec<String>,
}

#[cfg(feature = "tokio")]
#[test]
fn python_reads_what_rust_writes() {
    common::run_tokio_multi("python_reads", |h| async move {
        let dir = ScratchDir::new("py-read");
        let path = dir.path().join("cache.db");
        let store: Store = Arc::new(SqliteStorage::open(&path).unwrap());
        let c = client(&h, &store, Duration::from_secs(60));
        let user = User { name: "Ada".into(), langs: vec!["rs".into()] };
        let u = user.clone();
        let options = QueryOptions::new(key!("user", 42), move || {
            let u = u.clone();
            async move { Ok::<_, String>(u) }
        })
        .persist();
        c.fetch_query(&options).await.unwrap();
        c.set_query_data(key!("flag", true), Some(3u8)).unwrap(); // not persisted: no options
        let flagged =
            QueryOptions::new(key!("opt", "none"), || async { Ok::<_, String>(None::<u8>) })
                .persist();
        c.fetch_query(&flagged).await.unwrap();
        c.flush_storage().await;
        drop(c);

        let Some(out) = python(PY_READ, &[path.to_str().unwrap()]) else { return };
        let rows: Value = serde_json::from_str(&out).unwrap();
        let row = &rows["('user', 42)"];
        assert_eq!(row["status"], "SUCCESS");
        assert_eq!(row["fetch_status"], "IDLE");
        assert_eq!(row["data"], json!({"name": "Ada", "langs": ["rs"]}));
        assert_eq!(row["error"], Value::Null);
        assert_eq!(row["fetch_failure_count"], 0);
        let at = row["data_updated_at"].as_f64().unwrap();
        assert!((unix_now(&h.runtime) - at).abs() < 60.0);
        assert_eq!(rows["('opt', 'none')"]["data"], Value::Null);
        assert!(rows.get("('flag', True)").is_none());
    });
}

#[cfg(feature = "tokio")]
#[test]
fn rust_hydrates_what_python_writes() {
    common::run_tokio_multi("python_writes", |h| async move {
        let dir = ScratchDir::new("py-write");
        let path = dir.path().join("cache.db");
        let Some(out) = python(PY_WRITE, &[path.to_str().unwrap()]) else { return };
        let awkward = key!("it's", "say \"hi\"", 7, true);
        assert_eq!(out.trim_end(), awkward.to_string(), "key strings match Python's str()");

        let store: Store = Arc::new(SqliteStorage::open(&path).unwrap());
        let c = client(&h, &store, Duration::from_secs(60));
        let calls = Counter::default();
        let counted = calls.clone();
        let options = QueryOptions::new(key!("user", 42), move || {
            counted.hit();
            async { Ok::<_, String>(User { name: "?".into(), langs: vec![] }) }
        })
        .persist();
        let user = c.fetch_query(&options).await.unwrap();
        assert_eq!(user, User { name: "Ada".into(), langs: vec!["py".into(), "rs".into()] });
        let counted = calls.clone();
        let options = QueryOptions::new(awkward, move || {
            counted.hit();
            async { Ok::<Vec<Option<f64>>, String>(vec![]) }
        })
        .persist();
        assert_eq!(c.fetch_query(&options).await.unwrap(), vec![Some(1.5), None]);
        assert_eq!(calls.get(), 0, "both came from Python's records");
        assert_eq!(c.storage_stats().hits, 2);
    });
}

#[cfg(feature = "tokio")]
#[test]
fn redis_keys_are_plain_or_namespaced_and_expire() {
    common::run_tokio_multi("redis_keys", |h| async move {
        let server = match RedisServer::start() {
            Ok(server) => server,
            Err(reason) => return eprintln!("skipped: {reason}"),
        };
        let plain: Store = Arc::new(RedisStorage::connect(&server.url()).await.unwrap());
        let spaced: Store =
            Arc::new(RedisStorage::connect(&server.url()).await.unwrap().with_namespace("app:"));
        let config = QueryClientConfig::default()
            .storage(spaced.clone())
            .persist_max_age(Duration::from_secs(90));
        let c = h.client_with(config);
        c.fetch_query(&persisted(key!("user", 7), &Counter::default(), "u7")).await.unwrap();
        c.flush_storage().await;
        let mut conn = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ttl: i64 =
            redis::cmd("TTL").arg("app:('user', 7)").query_async(&mut conn).await.unwrap();
        assert!((85..=90).contains(&ttl), "ttl {ttl}");
        assert!(plain.get("('user', 7)").await.unwrap().is_none());
        assert!(plain.get("app:('user', 7)").await.unwrap().is_some());
    });
}

/// Kills the server in the middle of a run of fetches, restarts it, and checks that no caller
/// failed, none waited much past the storage timeout, and writes resumed.
#[cfg(feature = "tokio")]
#[test]
fn redis_killed_and_restarted_mid_run() {
    common::run_tokio_multi("redis_restart", |h| async move {
        let mut server = match RedisServer::start() {
            Ok(server) => server,
            Err(reason) => return eprintln!("skipped: {reason}"),
        };
        let timeout = Duration::from_millis(200);
        let store = RedisStorage::connect(&server.url()).await.unwrap();
        let config = QueryClientConfig::default()
            .storage(store.clone())
            .storage_timeout(timeout)
            .storage_circuit_breaker(3, Duration::from_millis(300))
            .stale_time(Duration::from_secs(60));
        let c = h.client_with(config);
        let mut worst = Duration::ZERO;
        let mut round = 0;
        let fetch_round = async |round: usize, c: &QueryClient| {
            let options = persisted(key!("run", round as u64), &Counter::default(), "v");
            let start = Instant::now();
            let result = c.fetch_query(&options).await;
            let took = start.elapsed();
            assert_eq!(result.unwrap(), "v", "round {round}");
            c.set_query_data(key!("run", round as u64), format!("v{round}")).unwrap();
            took
        };
        for _ in 0..20 {
            worst = worst.max(fetch_round(round, &c).await);
            round += 1;
        }
        server.kill();
        for _ in 0..20 {
            worst = worst.max(fetch_round(round, &c).await);
            round += 1;
            h.sleep(Duration::from_millis(20)).await;
        }
        server.restart();
        // Writes resume once the breaker's probe finds the server back.
        let deadline = Instant::now() + Duration::from_secs(20);
        let resumed = loop {
            worst = worst.max(fetch_round(round, &c).await);
            c.flush_storage().await;
            let key = format!("('run', {round})");
            round += 1;
            if store.get(&key).await.ok().flatten().is_some() {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            h.sleep(Duration::from_millis(50)).await;
        };
        let stats = c.storage_stats();
        eprintln!("redis restart: worst caller latency {worst:?} over {round} rounds; {stats}");
        assert!(resumed, "writes did not resume after the restart: {stats}");
        assert!(stats.errors + stats.timeouts > 0, "the outage was not noticed: {stats}");
        // No caller waits past the storage timeout plus a margin for a loaded 2-core machine.
        assert!(worst <= timeout + Duration::from_millis(300), "worst {worst:?}");
    });
}
