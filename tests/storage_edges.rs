//! Edges of the L2 tier: a write worker the runtime drops, backends that panic, records that
//! are not text, durations too large to add to an instant, and `SqliteStorage` under a virtual
//! clock. Time-dependent tests run on the manual clock; the SQLite tests use real files and
//! the Redis tests a real `redis-server` (skipped when it is not installed).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::Duration;

use common::Counter;
use common::storage::{Fault, FaultyStorage};
use futures::FutureExt;
use pystackquery::runtime::{BoxFuture, Spawner};
use pystackquery::storage::StorageBackend;
use pystackquery::testing::TestRuntime;
use pystackquery::{QueryClient, QueryClientConfig, QueryKey, QueryOptions, Runtime, key};

fn persisted(key: QueryKey, calls: &Counter) -> QueryOptions<String, String> {
    let calls = calls.clone();
    let name = key.to_string();
    QueryOptions::new(key, move || {
        let n = calls.hit();
        let name = name.clone();
        async move { Ok(format!("{name}#{n}")) }
    })
    .persist()
    .stale_time(Duration::from_secs(600))
}

/// Runs `future` on the manual clock for at most an hour of virtual time; whether it finished.
fn finishes_within_an_hour(test: &TestRuntime, future: impl Future<Output = ()>) -> bool {
    let runtime = test.runtime();
    test.block_on(async move {
        futures::select! {
            () = future.fuse() => true,
            () = runtime.sleep(Duration::from_secs(3600)).fuse() => false,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// 1. A write worker the runtime drops.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Hand every future to the manual runtime.
    Forward,
    /// Drop every future unpolled, as a runtime that has shut down does.
    Drop,
    /// Keep every future, unpolled, for the test to poll or drop.
    Park,
}

struct ModalSpawner {
    forward: Arc<dyn Spawner>,
    mode: Mutex<Mode>,
    parked: Mutex<Vec<BoxFuture>>,
}

impl Spawner for ModalSpawner {
    fn spawn(&self, future: BoxFuture) {
        match *self.mode.lock().unwrap() {
            Mode::Forward => self.forward.spawn(future),
            Mode::Drop => drop(future),
            Mode::Park => self.parked.lock().unwrap().push(future),
        }
    }
}

/// A client whose spawner can be switched; two persisted keys already fetched and written.
fn modal_setup() -> (TestRuntime, Arc<ModalSpawner>, FaultyStorage, QueryClient) {
    let test = TestRuntime::new();
    let spawner = Arc::new(ModalSpawner {
        forward: test.runtime().spawner().clone(),
        mode: Mutex::new(Mode::Forward),
        parked: Mutex::new(Vec::new()),
    });
    let runtime = Runtime::new(spawner.clone(), test.runtime().timer().clone());
    let store = FaultyStorage::new(&runtime);
    let config = QueryClientConfig::default()
        .storage(store.clone())
        .storage_timeout(Duration::from_secs(60));
    let client = QueryClient::with_runtime(runtime, config);
    let calls = Counter::default();
    for name in ["a", "b"] {
        test.block_on(client.fetch_query(&persisted(key!(name), &calls))).unwrap();
    }
    assert!(finishes_within_an_hour(&test, client.flush_storage()));
    assert_eq!(client.storage_stats().writes, 2);
    (test, spawner, store, client)
}

#[test]
fn flush_returns_when_the_runtime_drops_the_write_worker_unpolled() {
    let (test, spawner, store, client) = modal_setup();
    *spawner.mode.lock().unwrap() = Mode::Drop;
    client.set_query_data(key!("a"), "lost".to_string()).unwrap();
    assert!(finishes_within_an_hour(&test, client.flush_storage()), "flush_storage hung");
    let stats = client.storage_stats();
    assert_eq!((stats.writes, stats.write_drops), (2, 1), "{stats}");

    // The dropped worker handed over: the next write starts a new one, which lands.
    *spawner.mode.lock().unwrap() = Mode::Forward;
    client.set_query_data(key!("a"), "kept".to_string()).unwrap();
    assert!(finishes_within_an_hour(&test, client.flush_storage()));
    assert_eq!(client.storage_stats().writes, 3);
    assert!(store.inner.peek("('a',)").unwrap().contains("kept"));
}

#[test]
fn flush_returns_when_the_runtime_drops_the_write_worker_mid_write() {
    let (test, spawner, store, client) = modal_setup();
    store.set_fault(Fault::DelayWrites(Duration::from_secs(10)));
    *spawner.mode.lock().unwrap() = Mode::Park;
    client.set_query_data(key!("a"), "a_new".to_string()).unwrap();
    let mut worker = spawner.parked.lock().unwrap().pop().expect("the write worker was spawned");
    // Poll it once: it takes the write of `a` and waits inside the (slow) store.
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    assert!(worker.as_mut().poll(&mut cx).is_pending());
    client.set_query_data(key!("b"), "b_new".to_string()).unwrap(); // queued behind it
    assert!(spawner.parked.lock().unwrap().is_empty(), "one worker at a time");
    drop(worker); // the runtime shuts down with the worker inside a write

    assert!(finishes_within_an_hour(&test, client.flush_storage()), "flush_storage hung");
    let stats = client.storage_stats();
    assert_eq!((stats.writes, stats.write_drops), (2, 2), "{stats}");

    store.set_fault(Fault::None);
    *spawner.mode.lock().unwrap() = Mode::Forward;
    client.set_query_data(key!("b"), "b_last".to_string()).unwrap();
    assert!(finishes_within_an_hour(&test, client.flush_storage()));
    assert!(store.inner.peek("('b',)").unwrap().contains("b_last"));
}

#[test]
fn flush_waits_only_for_the_writes_queued_before_it() {
    let (test, store, client) = faulty_setup(Duration::from_secs(60), 5, Duration::from_secs(10));
    let calls = Counter::default();
    for name in ["a", "b"] {
        test.block_on(client.fetch_query(&persisted(key!(name), &calls))).unwrap();
    }
    assert!(finishes_within_an_hour(&test, client.flush_storage()));
    store.set_fault(Fault::DelayWrites(Duration::from_secs(1)));
    client.set_query_data(key!("a"), "a_new".to_string()).unwrap();
    let start = test.elapsed();
    let (writer, runtime) = (client.clone(), test.runtime());
    test.block_on(async move {
        // The flush is polled first, so it starts waiting before the stream of writes below.
        let keep_writing = async {
            for i in 0..1000 {
                writer.set_query_data(key!("b"), format!("b_{i}")).unwrap();
                runtime.sleep(Duration::from_millis(100)).await;
            }
        };
        futures::select_biased! {
            () = client.flush_storage().fuse() => {}
            () = keep_writing.fuse() => panic!("flush_storage waited for writes queued after it"),
        }
    });
    let took = test.elapsed() - start;
    assert!(took <= Duration::from_millis(1100), "took {took:?}: more than the one write of `a`");
    assert!(store.inner.peek("('a',)").unwrap().contains("a_new"));
}

// ---------------------------------------------------------------------------------------------
// 2. Backends that panic.

fn faulty_setup(
    timeout: Duration,
    failures: u32,
    cooldown: Duration,
) -> (TestRuntime, FaultyStorage, QueryClient) {
    let test = TestRuntime::new();
    let store = FaultyStorage::new(&test.runtime());
    let config = QueryClientConfig::default()
        .storage(store.clone())
        .storage_timeout(timeout)
        .storage_circuit_breaker(failures, cooldown);
    let client = QueryClient::with_runtime(test.runtime(), config);
    (test, store, client)
}

fn panicking_reads_are_failures(fault: Fault) {
    let (test, store, client) =
        faulty_setup(Duration::from_millis(100), 3, Duration::from_secs(10));
    store.set_fault(fault);
    let calls = Counter::default();
    let names = ["a", "b", "c", "d", "e", "f"];
    for name in names {
        let data = test.block_on(client.fetch_query(&persisted(key!(name), &calls)));
        assert_eq!(data.unwrap(), format!("('{name}',)#{}", calls.get()));
    }
    assert!(finishes_within_an_hour(&test, client.flush_storage()));
    let stats = client.storage_stats();
    // Panics count as errors and open the breaker like any failure.
    assert_eq!((stats.errors, stats.misses, stats.writes), (3, 0, 0), "{stats}");
    assert_eq!(store.call_count(), 3);
    assert_eq!(stats.skipped, 2 * names.len() as u64 - 3, "{stats}");

    // After the cooldown, a probe to the healed store closes the breaker.
    store.set_fault(Fault::None);
    test.advance(Duration::from_secs(10));
    client.set_query_data(key!("a"), "a_new".to_string()).unwrap();
    assert!(finishes_within_an_hour(&test, client.flush_storage()));
    assert_eq!(client.storage_stats().writes, 1);
    assert!(store.inner.peek("('a',)").unwrap().contains("a_new"));
}

#[test]
fn a_backend_is_named_in_logs_by_its_type() {
    let test = TestRuntime::new();
    let store: Arc<dyn StorageBackend> = Arc::new(FaultyStorage::new(&test.runtime()));
    assert!(store.name().ends_with("::FaultyStorage"), "{}", store.name());
    let shared = Arc::new(store);
    assert!(shared.name().ends_with("::FaultyStorage"), "{}", shared.name());
}

#[test]
fn a_backend_that_panics_in_get_counts_as_a_failure() {
    panicking_reads_are_failures(Fault::PanicInCall);
}

#[test]
fn a_backend_whose_future_panics_counts_as_a_failure() {
    panicking_reads_are_failures(Fault::PanicInPoll);
}

#[test]
fn a_backend_that_panics_in_set_skips_the_write_and_the_worker_goes_on() {
    let (test, store, client) =
        faulty_setup(Duration::from_millis(100), 3, Duration::from_secs(10));
    let calls = Counter::default();
    test.block_on(client.fetch_query(&persisted(key!("w"), &calls))).unwrap();
    assert!(finishes_within_an_hour(&test, client.flush_storage()));
    for (n, fault) in [Fault::PanicInPoll, Fault::PanicInCall].into_iter().enumerate() {
        store.set_fault(fault);
        client.set_query_data(key!("w"), format!("panicked {n}")).unwrap();
        assert!(finishes_within_an_hour(&test, client.flush_storage()), "flush_storage hung");
    }
    let stats = client.storage_stats();
    assert_eq!((stats.writes, stats.errors), (1, 2), "{stats}");
    store.set_fault(Fault::None);
    client.set_query_data(key!("w"), "landed".to_string()).unwrap();
    assert!(finishes_within_an_hour(&test, client.flush_storage()));
    assert_eq!(client.storage_stats().writes, 2);
    assert!(store.inner.peek("('w',)").unwrap().contains("landed"));
}

// ---------------------------------------------------------------------------------------------
// 4. Durations too large to add to an instant.

#[test]
fn a_storage_timeout_near_duration_max_never_overflows() {
    for timeout in [Duration::MAX, Duration::from_secs(u64::MAX / 4)] {
        let (test, store, client) = faulty_setup(timeout, 1, Duration::from_secs(10));
        let calls = Counter::default();
        store.set_fault(Fault::Refuse);
        test.block_on(client.fetch_query(&persisted(key!("open"), &calls))).unwrap();
        assert_eq!(store.call_count(), 1, "one refused call opened the breaker");
        test.advance(Duration::from_secs(10));

        // The probe hangs in a slow store; a second call while it runs must be refused by
        // the half-open breaker, not overflow computing when the probe counts as lost.
        store.set_fault(Fault::Delay(Duration::from_secs(60)));
        let probe = test.runtime().spawn_with_handle({
            let client = client.clone();
            let options = persisted(key!("probe"), &calls);
            async move { client.fetch_query(&options).await }
        });
        test.run_until_idle();
        assert_eq!(store.call_count(), 2, "the probe");
        let data = test.block_on(client.fetch_query(&persisted(key!("other"), &calls)));
        assert_eq!(data.unwrap(), "('other',)#2");
        assert_eq!(store.call_count(), 2, "refused while the probe runs");

        test.advance(Duration::from_secs(60));
        assert!(test.block_on(probe).is_ok());
        let stats = client.storage_stats();
        assert_eq!((stats.errors, stats.timeouts), (1, 0), "{stats}");
    }
}

#[test]
fn a_cooldown_of_duration_max_keeps_the_breaker_open() {
    let (test, store, client) = faulty_setup(Duration::from_millis(100), 2, Duration::MAX);
    let calls = Counter::default();
    store.set_fault(Fault::Refuse);
    for name in ["a", "b"] {
        test.block_on(client.fetch_query(&persisted(key!(name), &calls))).unwrap();
    }
    assert_eq!(store.call_count(), 2);
    store.set_fault(Fault::None);
    test.advance(Duration::from_secs(86_400 * 365));
    test.block_on(client.fetch_query(&persisted(key!("c"), &calls))).unwrap();
    assert!(finishes_within_an_hour(&test, client.flush_storage()));
    assert_eq!(store.call_count(), 2, "no probe: the cooldown never ends");
    assert_eq!(client.storage_stats().errors, 2);
}

// ---------------------------------------------------------------------------------------------
// 3 and 5. Records that are not text, and SqliteStorage on any clock.

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use pystackquery::storage::{StorageBackend, StorageError};
    use pystackquery::testing::TestRuntime;
    use pystackquery::{QueryClient, QueryClientConfig, SqliteStorage, key};
    use rusqlite::params;
    use serde_json::json;

    use super::persisted;
    use crate::common::servers::ScratchDir;
    use crate::common::storage::{python_record, unix_now};
    use crate::common::{Counter, Harness};

    /// A table made by Python without `NOT NULL`: six values that are not UTF-8 (text and
    /// blobs), one `NULL`, and one valid fresh record.
    fn seed(path: &Path, now: f64) {
        let db = rusqlite::Connection::open(path).unwrap();
        db.execute("CREATE TABLE cache (key TEXT PRIMARY KEY, value TEXT)", []).unwrap();
        for i in 0..6 {
            let bytes = vec![b'{', 0xff, 0xfe, b'"', i];
            let sql = if i % 2 == 0 {
                "INSERT INTO cache (key, value) VALUES (?1, CAST(?2 AS TEXT))"
            } else {
                "INSERT INTO cache (key, value) VALUES (?1, ?2)"
            };
            db.execute(sql, params![format!("('bad', {i})"), bytes]).unwrap();
        }
        db.execute("INSERT INTO cache (key, value) VALUES ('(''null'',)', NULL)", []).unwrap();
        db.execute(
            "INSERT INTO cache (key, value) VALUES ('(''good'',)', ?1)",
            params![python_record(json!("stored"), now)],
        )
        .unwrap();
    }

    async fn non_utf8_and_null_values_are_misses_not_failures(h: Harness) {
        let dir = ScratchDir::new("sqlite-bytes");
        let path = dir.path().join("cache.db");
        seed(&path, unix_now(&h.runtime));
        let store = SqliteStorage::open(&path).unwrap();
        let client = h.client_with(QueryClientConfig::default().storage(store));
        // Six reads in a row with nothing in between: were they failures, the fifth would
        // open the breaker (default: five failures) and the valid record would be skipped.
        for i in 0..6 {
            assert_eq!(client.get_query_data_async::<String>(key!("bad", i)).await.unwrap(), None);
        }
        assert_eq!(client.get_query_data_async::<String>(key!("null")).await.unwrap(), None);
        let calls = Counter::default();
        let data = client.fetch_query(&persisted(key!("good"), &calls)).await.unwrap();
        assert_eq!(data, "stored");
        assert_eq!(calls.get(), 0, "the valid record was served: the breaker stayed closed");
        let stats = client.storage_stats();
        assert_eq!(
            (stats.decode_failures, stats.misses, stats.hits, stats.errors, stats.skipped),
            (6, 1, 1, 0, 0),
            "{stats}"
        );
    }

    async fn a_second_client_hydrates_what_the_first_wrote(h: Harness) {
        let dir = ScratchDir::new("sqlite-clock");
        let store = Arc::new(SqliteStorage::open(dir.path().join("cache.db")).unwrap());
        let calls = Counter::default();
        let first = h.client_with(QueryClientConfig::default().storage(store.clone()));
        let data = first.fetch_query(&persisted(key!("shared"), &calls)).await.unwrap();
        first.flush_storage().await;
        let second = h.client_with(QueryClientConfig::default().storage(store.clone()));
        assert_eq!(second.fetch_query(&persisted(key!("shared"), &calls)).await.unwrap(), data);
        assert_eq!(calls.get(), 1, "hydrated with no call");
        for stats in [first.storage_stats(), second.storage_stats()] {
            assert_eq!((stats.errors, stats.timeouts), (0, 0), "{stats}");
        }
        assert_eq!((first.storage_stats().writes, second.storage_stats().hits), (1, 1));
    }

    crate::runtime_suite!(
        non_utf8_and_null_values_are_misses_not_failures,
        a_second_client_hydrates_what_the_first_wrote,
    );

    #[test]
    fn works_on_the_manual_clock_with_no_timer() {
        let test = TestRuntime::new();
        let dir = ScratchDir::new("sqlite-manual");
        let store = Arc::new(SqliteStorage::open(dir.path().join("cache.db")).unwrap());
        let calls = Counter::default();
        let config = || QueryClientConfig::default().storage(store.clone());
        let first = QueryClient::with_runtime(test.runtime(), config());
        let start = test.elapsed();
        test.block_on(first.fetch_query(&persisted(key!("k"), &calls))).unwrap();
        test.block_on(first.flush_storage());
        let second = QueryClient::with_runtime(test.runtime(), config());
        test.block_on(second.fetch_query(&persisted(key!("k"), &calls))).unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(test.elapsed(), start, "no storage call waited on the clock");
        assert_eq!(second.storage_stats().hits, 1);
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn works_on_tokio_with_paused_time() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let runtime =
            pystackquery::TokioRuntime::from_handle(rt.handle().clone()).unwrap().into_runtime();
        rt.block_on(async move {
            let dir = ScratchDir::new("sqlite-paused");
            let store = Arc::new(SqliteStorage::open(dir.path().join("cache.db")).unwrap());
            let calls = Counter::default();
            let config = || QueryClientConfig::default().storage(store.clone());
            let first = QueryClient::with_runtime(runtime.clone(), config());
            first.fetch_query(&persisted(key!("k"), &calls)).await.unwrap();
            first.flush_storage().await;
            let second = QueryClient::with_runtime(runtime.clone(), config());
            second.fetch_query(&persisted(key!("k"), &calls)).await.unwrap();
            assert_eq!(calls.get(), 1);
            let stats = second.storage_stats();
            assert_eq!((stats.hits, stats.timeouts, first.storage_stats().timeouts), (1, 0, 0));
        });
    }

    /// Holds the database's write lock from another connection, then times one write.
    fn time_a_blocked_write(path: &Path, store: &SqliteStorage) -> (Duration, StorageError) {
        let blocker = rusqlite::Connection::open(path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let start = Instant::now();
        let error = futures::executor::block_on(store.set("k", "v", None)).unwrap_err();
        let took = start.elapsed();
        blocker.execute_batch("ROLLBACK").unwrap();
        (took, error)
    }

    #[test]
    fn a_locked_database_fails_a_call_within_the_default_busy_timeout() {
        let dir = ScratchDir::new("sqlite-busy");
        let path = dir.path().join("cache.db");
        let store = SqliteStorage::open(&path).unwrap();
        let (took, error) = time_a_blocked_write(&path, &store);
        assert!(took < Duration::from_millis(900), "blocked {took:?}: {error}");
        assert!(took >= Duration::from_millis(200), "gave up after {took:?}: {error}");
        futures::executor::block_on(store.set("k", "v", None)).unwrap();
    }

    #[test]
    fn the_busy_timeout_can_be_set_and_threads_sharing_a_storage_share_it() {
        let dir = ScratchDir::new("sqlite-busy-set");
        let path = dir.path().join("cache.db");
        let short =
            SqliteStorage::open_with_busy_timeout(&path, Duration::from_millis(20)).unwrap();
        let (took, _) = time_a_blocked_write(&path, &short);
        assert!(took < Duration::from_millis(200), "blocked {took:?}");

        // Four threads on one storage while the database is locked: each waits for the
        // connection and for the lock within one busy timeout, not one after the other.
        let busy = Duration::from_millis(400);
        let store = SqliteStorage::open_with_busy_timeout(&path, busy).unwrap();
        let blocker = rusqlite::Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let key = format!("k{i}");
                    let result = futures::executor::block_on(store.set(&key, "v", None));
                    (start.elapsed(), result.is_err())
                })
            })
            .collect();
        let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        blocker.execute_batch("ROLLBACK").unwrap();
        for (took, failed) in outcomes {
            assert!(failed);
            assert!(took < busy + Duration::from_millis(300), "blocked {took:?}");
        }
        futures::executor::block_on(store.set("k", "v", None)).unwrap();
        assert_eq!(store.name(), "pystackquery::sqlite::SqliteStorage");

        // A busy timeout too long for SQLite is cut to its longest, without a panic.
        let patient = SqliteStorage::open_with_busy_timeout(&path, Duration::MAX).unwrap();
        futures::executor::block_on(patient.set("k", "w", None)).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Records that are not text in Redis.

#[cfg(feature = "redis")]
mod redis_records {
    use pystackquery::{QueryClientConfig, RedisStorage, key};
    use serde_json::json;

    use super::persisted;
    use crate::common::servers::RedisServer;
    use crate::common::storage::{python_record, unix_now};
    use crate::common::{Counter, Harness};

    async fn non_utf8_values_are_misses_not_failures(h: Harness) {
        let server = match RedisServer::start() {
            Ok(server) => server,
            Err(reason) => return eprintln!("skipped: {reason}"),
        };
        let mut raw = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
        for i in 0..6u8 {
            let bytes = vec![b'{', 0xff, 0xfe, b'"', i];
            redis::cmd("SET")
                .arg(format!("('bad', {i})"))
                .arg(bytes)
                .query::<()>(&mut raw)
                .unwrap();
        }
        let good = python_record(json!("stored"), unix_now(&h.runtime));
        redis::cmd("SET").arg("('good',)").arg(good).query::<()>(&mut raw).unwrap();

        let store = RedisStorage::connect(&server.url()).await.unwrap();
        let client = h.client_with(QueryClientConfig::default().storage(store));
        // Six reads in a row with nothing in between: were they failures, the fifth would
        // open the breaker (default: five failures) and the valid record would be skipped.
        for i in 0..6 {
            assert_eq!(client.get_query_data_async::<String>(key!("bad", i)).await.unwrap(), None);
        }
        let calls = Counter::default();
        let data = client.fetch_query(&persisted(key!("good"), &calls)).await.unwrap();
        assert_eq!(data, "stored");
        assert_eq!(calls.get(), 0, "the valid record was served: the breaker stayed closed");
        let stats = client.storage_stats();
        assert_eq!(
            (stats.decode_failures, stats.hits, stats.errors, stats.skipped),
            (6, 1, 0, 0),
            "{stats}"
        );
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn non_utf8_values_on_tokio() {
        crate::common::run_tokio_multi("redis_bytes", non_utf8_values_are_misses_not_failures);
    }

    #[cfg(feature = "smol")]
    #[test]
    fn non_utf8_values_on_smol() {
        crate::common::run_smol("redis_bytes", non_utf8_values_are_misses_not_failures);
    }

    #[cfg(feature = "async-std")]
    #[test]
    fn non_utf8_values_on_async_std() {
        crate::common::run_async_std("redis_bytes", non_utf8_values_are_misses_not_failures);
    }
}
