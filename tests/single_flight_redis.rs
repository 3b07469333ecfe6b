//! Single flight on a real `redis-server` started by the harness: several clients on their
//! own connections in one process, on each enabled runtime, and several processes (the
//! `single_flight_worker` example) on tokio.
//!
//! Needs feature `redis` (and so a runtime); skipped when `redis-server` is not installed.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::servers::RedisServer;
use common::{Counter, Harness};
use futures::future::join_all;
use pystackquery::storage::{LockOutcome, StorageBackend};
use pystackquery::{QueryClientConfig, QueryOptions, RedisStorage, key};

const CLIENTS: usize = 8;
const KEYS: usize = 100;

async fn eight_connections_and_a_hundred_cold_keys(h: Harness) {
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let storage = RedisStorage::connect(&server.url()).await.unwrap();
        let config = QueryClientConfig::default()
            .storage(storage)
            .storage_timeout(Duration::from_secs(2))
            .stale_time(Duration::from_secs(60))
            .single_flight(Duration::from_secs(5));
        clients.push(h.client_with(config));
    }
    let calls = Counter::default();
    let started = std::time::Instant::now();
    let fetches = clients.iter().flat_map(|client| {
        let (calls, runtime) = (calls.clone(), h.runtime.clone());
        (0..KEYS).map(move |k| {
            let (calls, runtime) = (calls.clone(), runtime.clone());
            let options = QueryOptions::<String, String>::new(key!("cold", k), move || {
                calls.hit();
                let runtime = runtime.clone();
                async move {
                    runtime.sleep(Duration::from_millis(20)).await;
                    Ok(format!("v{k}"))
                }
            })
            .persist();
            async move { client.fetch_query(&options).await.unwrap() }
        })
    });
    let results = join_all(fetches).await;
    let took = started.elapsed();
    for (i, value) in results.iter().enumerate() {
        assert_eq!(value, &format!("v{}", i % KEYS));
    }
    let adopted: u64 = clients.iter().map(|c| c.storage_stats().adopted).sum();
    eprintln!(
        "redis single flight ({}): {CLIENTS} clients x {KEYS} cold keys: {} calls, {adopted} \
         adopted while waiting, the rest hydrated, {took:?}",
        h.name,
        calls.get()
    );
    assert_eq!(calls.get(), KEYS);
    // Every other client read the record once: at its hydration (a process that came late),
    // or while waiting for the lock (adopted).
    let hits: u64 = clients.iter().map(|c| c.storage_stats().hits).sum();
    assert_eq!(hits, ((CLIENTS - 1) * KEYS) as u64);
}

async fn redis_lock_is_exclusive_and_unlocks_only_its_owner(h: Harness) {
    let _ = h;
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let store = RedisStorage::connect(&server.url()).await.unwrap().with_namespace("app:");
    let ttl = Duration::from_secs(5);
    assert_eq!(store.try_lock("('k',)", "a", ttl).await.unwrap(), LockOutcome::Acquired);
    assert_eq!(store.try_lock("('k',)", "b", ttl).await.unwrap(), LockOutcome::Held);
    store.unlock("('k',)", "b").await.unwrap(); // not the owner: nothing happens
    assert_eq!(store.try_lock("('k',)", "b", ttl).await.unwrap(), LockOutcome::Held);
    store.unlock("('k',)", "a").await.unwrap();
    assert_eq!(store.try_lock("('k',)", "b", ttl).await.unwrap(), LockOutcome::Acquired);
    // The lock is beside the record, under the namespace, with the ttl in milliseconds.
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg("app:lock:('k',)").query_async(&mut conn).await.unwrap();
    assert!(pttl > 4000 && pttl <= 5000, "{pttl}");
    let record: Option<String> = store.get("('k',)").await.unwrap();
    assert_eq!(record, None);
    // A lock that expired is free again.
    assert_eq!(
        store.try_lock("('x',)", "a", Duration::from_millis(1)).await.unwrap(),
        LockOutcome::Acquired
    );
    h.sleep(Duration::from_millis(20)).await;
    assert_eq!(store.try_lock("('x',)", "b", ttl).await.unwrap(), LockOutcome::Acquired);
}

mod redis_clients {
    #[cfg(feature = "tokio")]
    #[test]
    fn on_tokio() {
        crate::common::run_tokio_multi("tokio", super::eight_connections_and_a_hundred_cold_keys);
    }
    #[cfg(feature = "smol")]
    #[test]
    fn on_smol() {
        crate::common::run_smol("smol", super::eight_connections_and_a_hundred_cold_keys);
    }
    #[cfg(feature = "async-std")]
    #[test]
    fn on_async_std() {
        crate::common::run_async_std("async-std", super::eight_connections_and_a_hundred_cold_keys);
    }
    #[cfg(feature = "tokio")]
    #[test]
    fn lock_on_tokio() {
        crate::common::run_tokio_multi(
            "lock",
            super::redis_lock_is_exclusive_and_unlocks_only_its_owner,
        );
    }
}

/// Eight processes (the `single_flight_worker` example, built by `cargo test`) against one
/// server, a hundred cold keys each: a hundred calls in all.
#[cfg(feature = "tokio")]
#[test]
fn eight_processes_and_a_hundred_cold_keys() {
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let exe = std::env::current_exe().unwrap();
    let worker = exe.parent().unwrap().parent().unwrap().join("examples/single_flight_worker");
    if !worker.exists() {
        return eprintln!("skipped: {} is not built", worker.display());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let start = (now + Duration::from_secs(2)).as_secs_f64().to_string();
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::process::Command::new(&worker)
                .args([server.url(), KEYS.to_string(), start.clone()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0;
    let mut per_process = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a worker failed: {:?}", output.status);
        let calls: usize = String::from_utf8(output.stdout).unwrap().trim().parse().unwrap();
        per_process.push(calls);
        total += calls;
    }
    eprintln!(
        "redis single flight: {CLIENTS} processes x {KEYS} cold keys: {total} calls \
         (per process {per_process:?}), {:?} including the 2 s start delay",
        started.elapsed()
    );
    assert_eq!(total, KEYS);
}

/// A lock holder killed mid-fetch (`SIGKILL`: it never unlocks) holds its fleet up for at
/// most the lock ttl: a worker started right after it makes exactly one call per key, and
/// finishes within the ttl, its own fetches and a bound for a slow machine. (`cargo test
/// --test single_flight_redis` alone does not build the worker: build the example first.)
#[cfg(feature = "tokio")]
#[test]
fn a_killed_lock_holder_delays_the_fleet_by_at_most_the_lock_ttl() {
    use std::io::BufRead;

    const HELD_KEYS: usize = 20;
    const LOCK_TTL: Duration = Duration::from_millis(1500);
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let exe = std::env::current_exe().unwrap();
    let worker = exe.parent().unwrap().parent().unwrap().join("examples/single_flight_worker");
    if !worker.exists() {
        return eprintln!("skipped: {} is not built", worker.display());
    }
    let ttl_ms = LOCK_TTL.as_millis().to_string();
    let mut holder = std::process::Command::new(&worker)
        .args([server.url(), HELD_KEYS.to_string(), "0".into(), ttl_ms.clone(), "hold".into()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its first line says it holds every key's lock (read on a thread, so that a holder that
    // never says it fails the test instead of hanging it).
    let stdout = holder.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(line.as_deref().map(str::trim), Ok("holding"), "the holder did not start");

    let started = std::time::Instant::now();
    let output = std::process::Command::new(&worker)
        .args([server.url(), HELD_KEYS.to_string(), "0".into(), ttl_ms])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(output.status.success(), "the worker failed: {:?}", output.status);
    let calls: usize = String::from_utf8(output.stdout).unwrap().trim().parse().unwrap();
    eprintln!(
        "redis single flight: a holder of {HELD_KEYS} locks (ttl {LOCK_TTL:?}) killed; the \
         next worker made {calls} calls in {took:?}"
    );
    assert_eq!(calls, HELD_KEYS);
    let bound = LOCK_TTL + Duration::from_secs(5);
    assert!(took < bound, "the next worker took {took:?}, more than {bound:?}");
    // The dead holder's locks were there (killing it released nothing): the worker waited.
    assert!(took >= LOCK_TTL / 2, "the next worker took only {took:?}");
}
