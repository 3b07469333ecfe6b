//! `mem_per_entry`: heap bytes per idle cached entry, beyond its key and value, for 100,000
//! entries with short keys (`("k", i)`) and `u64` values, measured by a counting allocator,
//! beside `HashMap`, quick_cache and moka holding the same prebuilt keys.
//!
//! The keys are built before counting starts and moved in by `Arc` clone, so the figure is
//! what each cache adds per entry: its map slot, LRU links, per-entry bookkeeping, and for
//! pystackquery the query's state and its pending garbage-collection timer. The criterion
//! group times filling each cache; the byte figures are printed and written to
//! `target/criterion/mem_per_entry/bytes.json` for `scripts/bench_report.py`.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::alloc::System;
use std::collections::HashMap;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pystackquery::{QueryClient, QueryClientConfig, QueryKey, TokioRuntime, key};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: u64 = 100_000;

fn keys() -> Vec<QueryKey> {
    (0..N).map(|i| key!("k", i)).collect()
}

/// Net heap bytes allocated by `fill` per entry; what it returns is dropped after counting.
fn bytes_per_entry<T>(fill: impl FnOnce() -> T) -> f64 {
    let region = Region::new(GLOBAL);
    let kept = fill();
    let stats = region.change();
    drop(kept);
    // stats_alloc 0.1's `realloc` already adds a growth (`new_size - old_size`) to
    // `bytes_allocated` and a shrink to `bytes_deallocated`; `bytes_reallocated` is the same
    // signed difference again, a summary of those realloc calls, not extra bytes. So the net is
    // allocated minus deallocated; adding `bytes_reallocated` would count every byte a `Vec`
    // or table grew by in place twice.
    let net = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64;
    net / N as f64
}

fn client(rt: &tokio::runtime::Runtime) -> QueryClient {
    let runtime = TokioRuntime::from_handle(rt.handle().clone()).unwrap().into_runtime();
    let config = QueryClientConfig::default().cache_max_size(N as usize * 2);
    QueryClient::with_runtime(runtime, config)
}

fn fill_client(client: &QueryClient, keys: &[QueryKey]) {
    for (i, k) in keys.iter().enumerate() {
        client.set_query_data(k.clone(), i as u64).unwrap();
    }
}

fn fill_hashmap(keys: &[QueryKey]) -> HashMap<QueryKey, u64> {
    keys.iter().enumerate().map(|(i, k)| (k.clone(), i as u64)).collect::<HashMap<_, _>>()
}

fn fill_quick_cache(keys: &[QueryKey]) -> quick_cache::sync::Cache<QueryKey, u64> {
    let cache = quick_cache::sync::Cache::new(N as usize * 2);
    for (i, k) in keys.iter().enumerate() {
        cache.insert(k.clone(), i as u64);
    }
    cache
}

fn fill_moka(
    rt: &tokio::runtime::Runtime,
    keys: &[QueryKey],
) -> moka::future::Cache<QueryKey, u64> {
    let cache = moka::future::Cache::new(N * 2);
    rt.block_on(async {
        for (i, k) in keys.iter().enumerate() {
            cache.insert(k.clone(), i as u64).await;
        }
        cache.run_pending_tasks().await;
    });
    cache
}

fn mem_per_entry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let keys = keys();
    let ours = bytes_per_entry(|| {
        let client = client(&rt);
        fill_client(&client, &keys);
        client
    });
    let hashmap = bytes_per_entry(|| fill_hashmap(&keys));
    let quick = bytes_per_entry(|| fill_quick_cache(&keys));
    let moka = bytes_per_entry(|| fill_moka(&rt, &keys));
    let figures = [
        ("pystackquery", ours),
        ("hashmap", hashmap),
        ("quick_cache", quick),
        ("moka_future", moka),
    ];
    println!("mem_per_entry (bytes per idle entry beyond key and value, {N} entries):");
    for (name, bytes) in figures {
        println!("  {name:<14} {bytes:>8.1}");
    }
    let dir = std::path::Path::new("target/criterion/mem_per_entry");
    if std::fs::create_dir_all(dir).is_ok() {
        let json: serde_json::Value =
            figures.iter().map(|(n, b)| (n.to_string(), serde_json::Value::from(*b))).collect();
        let _ = std::fs::write(dir.join("bytes.json"), json.to_string());
    }

    let mut g = c.benchmark_group("mem_per_entry");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("pystackquery_fill_100k", |b| {
        b.iter_batched(
            || client(&rt),
            |client| fill_client(&client, &keys),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("hashmap_fill_100k", |b| b.iter(|| fill_hashmap(&keys)));
    g.bench_function("quick_cache_fill_100k", |b| b.iter(|| fill_quick_cache(&keys)));
    g.bench_function("moka_fill_100k", |b| b.iter(|| fill_moka(&rt, &keys)));
    g.finish();
}

criterion_group!(benches, mem_per_entry);
criterion_main!(benches);
