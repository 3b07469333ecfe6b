//! `zipf`: a realistic read-through workload. Two tasks on a two-worker tokio runtime share
//! one million operations over one million keys drawn from a Zipf distribution (s = 1.0); the
//! cache holds at most 100,000 entries and a miss is served by an instant function. Each
//! iteration starts from an empty cache and replays the same pre-drawn key sequence.
//!
//! Peers: this crate's `fetch_query` (options built per call, as a request handler would;
//! a one-hour stale time, as the peers never expire entries),
//! moka's `get_with` and quick_cache's `get_or_insert_async`. Criterion reports operations
//! per second; the hit ratio of each (1 − function calls / operations) is printed and written
//! to `target/criterion/zipf/hit_ratio.json` for `scripts/bench_report.py`.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pystackquery::{QueryClient, QueryClientConfig, QueryKey, QueryOptions, TokioRuntime, key};

const KEYS: usize = 1_000_000;
const OPS: usize = 1_000_000;
const CAPACITY: usize = 100_000;
const TASKS: usize = 2;

/// splitmix64: a small, seeded generator, so every run replays the same sequence.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `OPS` key indices drawn from Zipf(s = 1) over `KEYS` ranks, by inverting the CDF.
fn zipf_sequence() -> Vec<u32> {
    let mut cdf = Vec::with_capacity(KEYS);
    let mut total = 0.0f64;
    for rank in 1..=KEYS {
        total += 1.0 / rank as f64;
        cdf.push(total);
    }
    let mut state = 0x5EED_u64;
    (0..OPS)
        .map(|_| {
            let u = (splitmix(&mut state) >> 11) as f64 / (1u64 << 53) as f64 * total;
            cdf.partition_point(|&c| c < u).min(KEYS - 1) as u32
        })
        .collect()
}

struct Workload {
    keys: Vec<QueryKey>,
    seq: Vec<u32>,
}

/// Runs `op` over the sequence on `TASKS` tasks (task t takes every TASKS-th operation);
/// returns the wall time.
fn run<F, Fut>(rt: &tokio::runtime::Runtime, w: &Arc<Workload>, op: F) -> Duration
where
    F: Fn(Arc<Workload>, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (w, op) = (w.clone(), op.clone());
                tokio::spawn(async move {
                    let mut i = t;
                    while i < OPS {
                        op(w.clone(), i).await;
                        i += TASKS;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        start.elapsed()
    })
}

/// Replays the workload `iters` times, each time on a new cache from `make` (made outside the
/// timing) with `calls` reset, so that it counts the misses of the last replay; returns the
/// summed wall time.
fn replay<C, F, Fut>(
    rt: &tokio::runtime::Runtime,
    w: &Arc<Workload>,
    calls: &Arc<AtomicU64>,
    iters: u64,
    make: impl Fn() -> C,
    op: F,
) -> Duration
where
    C: Clone + Send + Sync + 'static,
    F: Fn(C, Arc<Workload>, usize, Arc<AtomicU64>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let cache = make();
        calls.store(0, Ordering::Relaxed);
        let (calls, op) = (calls.clone(), op.clone());
        total += run(rt, w, move |w, i| op(cache.clone(), w, i, calls.clone()));
    }
    total
}

fn zipf(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(TASKS)
        .enable_all()
        .build()
        .unwrap();
    let w = Arc::new(Workload {
        keys: (0..KEYS as u64).map(|i| key!("item", i)).collect(),
        seq: zipf_sequence(),
    });
    let calls = Arc::new(AtomicU64::new(0));
    let mut ratios: Vec<(&str, f64)> = Vec::new();
    let mut g = c.benchmark_group("zipf");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(OPS as u64));

    let hit_ratio = |calls: &AtomicU64| 1.0 - calls.load(Ordering::Relaxed) as f64 / OPS as f64;

    g.bench_function("pystackquery_fetch_query", |b| {
        b.iter_custom(|iters| {
            let make = || {
                let runtime = TokioRuntime::from_handle(rt.handle().clone()).unwrap();
                let config = QueryClientConfig::default()
                    .cache_max_size(CAPACITY)
                    .stale_time(Duration::from_secs(3600));
                QueryClient::with_runtime(runtime.into_runtime(), config)
            };
            replay(&rt, &w, &calls, iters, make, |client, w, i, calls| async move {
                let n = w.seq[i] as u64;
                let options = QueryOptions::new(w.keys[n as usize].clone(), move || {
                    calls.fetch_add(1, Ordering::Relaxed);
                    async move { Ok::<u64, String>(n) }
                });
                assert_eq!(client.fetch_query(&options).await.unwrap(), n);
            })
        })
    });
    ratios.push(("pystackquery_fetch_query", hit_ratio(&calls)));

    g.bench_function("moka_get_with", |b| {
        b.iter_custom(|iters| {
            let make = || moka::future::Cache::<QueryKey, u64>::new(CAPACITY as u64);
            replay(&rt, &w, &calls, iters, make, |cache, w, i, calls| async move {
                let n = w.seq[i] as u64;
                let got = cache
                    .get_with(w.keys[n as usize].clone(), async {
                        calls.fetch_add(1, Ordering::Relaxed);
                        n
                    })
                    .await;
                assert_eq!(got, n);
            })
        })
    });
    ratios.push(("moka_get_with", hit_ratio(&calls)));

    g.bench_function("quick_cache_get_or_insert_async", |b| {
        b.iter_custom(|iters| {
            let make = || Arc::new(quick_cache::sync::Cache::<QueryKey, u64>::new(CAPACITY));
            replay(&rt, &w, &calls, iters, make, |cache, w, i, calls| async move {
                let n = w.seq[i] as u64;
                let got = cache
                    .get_or_insert_async(&w.keys[n as usize], async {
                        calls.fetch_add(1, Ordering::Relaxed);
                        Ok::<u64, ()>(n)
                    })
                    .await
                    .unwrap();
                assert_eq!(got, n);
            })
        })
    });
    ratios.push(("quick_cache_get_or_insert_async", hit_ratio(&calls)));
    g.finish();

    println!("zipf hit ratio (1 - calls / operations, last iteration):");
    for (name, r) in &ratios {
        println!("  {name:<34} {:>6.2} %", r * 100.0);
    }
    let dir = std::path::Path::new("target/criterion/zipf");
    if std::fs::create_dir_all(dir).is_ok() {
        let json: serde_json::Value =
            ratios.iter().map(|(n, r)| (n.to_string(), serde_json::Value::from(*r))).collect();
        let _ = std::fs::write(dir.join("hit_ratio.json"), json.to_string());
    }
}

criterion_group!(benches, zipf);
criterion_main!(benches);
