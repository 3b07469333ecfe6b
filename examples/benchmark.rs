//! The Python library's `examples/benchmark.py` workloads, offline: a local function with a
//! simulated latency stands in for the web API. Prints the same kind of table the seed
//! prints, plus the cost of serving a cold key from L2 (SQLite, and Redis when `REDIS_URL` is
//! set and the `redis` feature is on).
//!
//! Run with `cargo run --release --example benchmark` (timings of a debug build mean little).
//! Criterion's side-by-side comparisons with other caches are in `benches/`.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pystackquery::prelude::*;
use pystackquery::storage::StorageBackend;
use serde_json::json;

/// The stand-in for an HTTP GET: 50 ms of latency, then a JSON-like payload.
async fn api_get(path: &str) -> Result<Arc<serde_json::Value>, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(Arc::new(json!({ "path": path, "items": (0..100).collect::<Vec<u32>>() })))
}

fn header(title: &str) {
    println!("\n{}\n  {title}\n{}\n", "=".repeat(64), "=".repeat(64));
}

fn row(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<44} {value:>16}");
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

fn ns(d: Duration, n: u32) -> String {
    format!("{:.0}ns", d.as_secs_f64() * 1e9 / f64::from(n))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    header("pystackquery (Rust) - offline benchmark");

    println!("BENCHMARK 1: Library overhead (HashMap vs fetch_query hit)");
    println!("{}", "-".repeat(50));
    let iterations = 100_000u32;
    let data = Arc::new(json!({"id": 1, "name": "test", "data": (0..100).collect::<Vec<u32>>()}));
    let map: Mutex<HashMap<&str, Arc<serde_json::Value>>> =
        Mutex::new(HashMap::from([("key", data.clone())]));
    let t = Instant::now();
    for _ in 0..iterations {
        let hit = map.lock().map(|m| m.get("key").cloned()).ok().flatten();
        std::hint::black_box(hit);
    }
    let manual = t.elapsed();
    let client = QueryClient::with_config(
        QueryClientConfig::default().stale_time(Duration::from_secs(3600)),
    )?;
    let options = QueryOptions::new(key!("key"), || api_get("/key"));
    client.set_query_data(key!("key"), data.clone())?;
    let t = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(client.fetch_query(&options).await?);
    }
    let library = t.elapsed();
    row("Iterations:", iterations);
    row("Mutex<HashMap> get + Arc clone:", ms(manual));
    row("fetch_query (fresh hit):", ms(library));
    row("Overhead ratio:", format!("{:.2}x", library.as_secs_f64() / manual.as_secs_f64()));
    row("Manual per op:", ns(manual, iterations));
    row("Library per op:", ns(library, iterations));

    println!("\nBENCHMARK 2: Same workload (1 fetch + 99 cache reads)");
    println!("{}", "-".repeat(50));
    let reads = 100;
    let manual_cache: Mutex<HashMap<&str, Arc<serde_json::Value>>> = Mutex::default();
    let t = Instant::now();
    for _ in 0..reads {
        let cached = manual_cache.lock().ok().and_then(|m| m.get("user_1").cloned());
        if cached.is_none() {
            let fetched = api_get("/users/1").await?;
            if let Ok(mut m) = manual_cache.lock() {
                m.insert("user_1", fetched);
            }
        }
    }
    let manual = t.elapsed();
    let client = QueryClient::with_config(
        QueryClientConfig::default().stale_time(Duration::from_secs(3600)),
    )?;
    let options = QueryOptions::new(key!("user", "1"), || api_get("/users/1"));
    let t = Instant::now();
    for _ in 0..reads {
        client.fetch_query(&options).await?;
    }
    let library = t.elapsed();
    row("Total reads:", reads);
    row("Manual cache total:", ms(manual));
    row("pystackquery total:", ms(library));
    row("Difference:", ms(library.saturating_sub(manual)));
    row(
        "Overhead:",
        format!("{:.2}%", (library.as_secs_f64() / manual.as_secs_f64() - 1.0) * 100.0),
    );

    println!("\nBENCHMARK 3: Request deduplication (10 concurrent)");
    println!("{}", "-".repeat(50));
    let concurrent = 10;
    let naive_fetches = AtomicUsize::new(0);
    let t = Instant::now();
    futures::future::join_all((0..concurrent).map(|_| async {
        naive_fetches.fetch_add(1, Ordering::SeqCst);
        api_get("/products/1").await
    }))
    .await;
    let naive = t.elapsed();
    let fetches = Arc::new(AtomicUsize::new(0));
    let counted = fetches.clone();
    let client = QueryClient::new()?;
    let options = QueryOptions::new(key!("product", "1"), move || {
        counted.fetch_add(1, Ordering::SeqCst);
        api_get("/products/1")
    });
    let t = Instant::now();
    futures::future::join_all((0..concurrent).map(|_| client.fetch_query(&options))).await;
    let deduped = t.elapsed();
    row("Concurrent requests:", concurrent);
    row("Without a cache, fetches:", naive_fetches.load(Ordering::SeqCst));
    row("pystackquery fetches:", fetches.load(Ordering::SeqCst));
    row("Without a cache, time:", ms(naive));
    row("pystackquery time:", ms(deduped));

    println!("\nBENCHMARK 4: Parallel fetch of 4 resources");
    println!("{}", "-".repeat(50));
    let paths: [&'static str; 4] = ["/users/1", "/users/2", "/products/1", "/posts/1"];
    let t = Instant::now();
    futures::future::join_all(paths.iter().map(|p| api_get(p))).await;
    let manual = t.elapsed();
    let client = QueryClient::new()?;
    let all: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(i, &p)| QueryOptions::new(key!("item", i as u64), move || api_get(p)))
        .collect();
    let t = Instant::now();
    futures::future::join_all(all.iter().map(|o| client.fetch_query(o))).await;
    let library = t.elapsed();
    row("Resources:", paths.len());
    row("Manual join_all:", ms(manual));
    row("pystackquery:", ms(library));
    row("Overhead:", ms(library.saturating_sub(manual)));

    println!("\nBENCHMARK 5: What only the library does");
    println!("{}", "-".repeat(50));
    let client = QueryClient::new()?; // stale_time 0: every read revalidates
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let options = QueryOptions::new(key!("stale-test"), move || {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::io::Error>(n)
        }
    });
    client.fetch_query(&options).await?;
    let t = Instant::now();
    let stale = client.fetch_query(&options).await?;
    let stale_time = t.elapsed();
    tokio::time::sleep(Duration::from_millis(150)).await;
    row("Stale read returned (value, time):", format!("{stale}, {}", ms(stale_time)));
    row("Background refetches triggered:", count.load(Ordering::SeqCst) - 1);
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let log = transitions.clone();
    let observer = client.watch(&QueryOptions::new(key!("obs-test"), || api_get("/quotes/1")));
    let subscription = observer.subscribe(move |s| {
        if let Ok(mut log) = log.lock() {
            log.push(s.status.name());
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(subscription);
    let transitions = transitions.lock().map(|t| t.join(" -> ")).unwrap_or_default();
    row("Observer transitions:", transitions);

    header("L2: a cold key served from storage (fresh record, no call)");
    let dir = std::env::temp_dir().join(format!("pystackquery-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = pystackquery::SqliteStorage::open(dir.join("bench.db"))?;
    l2_cold_hits("SQLite (file, WAL)", Arc::new(sqlite)).await?;
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_URL") {
        let redis = pystackquery::RedisStorage::connect(&url).await?.with_namespace("bench:");
        l2_cold_hits("Redis (127.0.0.1)", Arc::new(redis)).await?;
    }
    #[cfg(feature = "redis")]
    if std::env::var("REDIS_URL").is_err() {
        println!("  (set REDIS_URL=redis://127.0.0.1:6379/ to measure Redis too)");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Median and 99th percentile of a cold `fetch_query` answered by an L2 record, against a
/// cold fetch with no storage whose function answers at once.
async fn l2_cold_hits(
    name: &str,
    storage: Arc<dyn StorageBackend>,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = 1000u64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
    for i in 0..n {
        let record = json!({"status": "SUCCESS", "fetch_status": "IDLE",
            "data": {"id": i, "name": format!("user-{i}")}, "error": null,
            "data_updated_at": now, "error_updated_at": null,
            "fetch_failure_count": 0, "fetch_failure_reason": null});
        storage.set(&format!("('user', {i})"), &record.to_string(), None).await?;
    }
    let config =
        QueryClientConfig::default().storage(storage).stale_time(Duration::from_secs(3600));
    let with_l2 = QueryClient::with_config(config)?;
    let plain = QueryClient::with_config(QueryClientConfig::default())?;
    let mut l2_times = Vec::new();
    let mut cold_times = Vec::new();
    let l2_calls = Arc::new(AtomicUsize::new(0));
    for i in 0..n {
        let options = |calls: Arc<AtomicUsize>| {
            QueryOptions::new(key!("user", i), move || {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, std::io::Error>(json!({"id": i})) }
            })
        };
        let persisted = options(l2_calls.clone()).persist();
        let plain_options = options(Arc::default());
        let t = Instant::now();
        with_l2.fetch_query(&persisted).await?;
        l2_times.push(t.elapsed());
        let t = Instant::now();
        plain.fetch_query(&plain_options).await?;
        cold_times.push(t.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * p) as usize]
    };
    let us = |d: Duration| format!("{:.1}µs", d.as_secs_f64() * 1e6);
    println!("  {name}: {n} cold keys");
    row(
        "  served from L2, median / p99:",
        format!("{} / {}", us(pct(&mut l2_times, 0.5)), us(pct(&mut l2_times, 0.99))),
    );
    row(
        "  no storage, instant fn, median / p99:",
        format!("{} / {}", us(pct(&mut cold_times, 0.5)), us(pct(&mut cold_times, 0.99))),
    );
    row("  functions called with L2 (expect 0):", l2_calls.load(Ordering::SeqCst));
    row("  L2 hits:", with_l2.storage_stats().hits);
    Ok(())
}
