//! The engine's hot paths beside the caches a Rust user would pick instead, each group one
//! workload with every peer in it (see `docs/benchmarks.md` for a full run and the targets).
//!
//! - `hit_1t`: a fresh `fetch_query` hit, cycling over 1,000 keys with prebuilt options, against
//!   `Mutex<HashMap>` get + `Arc` clone, quick_cache (sync `get`, async
//!   `get_value_or_guard_async`) and `moka::future::Cache` (`get`, `get_with`). Every map is
//!   keyed by the same prebuilt `QueryKey`s and holds the same `Arc` values.
//!   The composite floor `mutex_hashmap_get_arc_clone_now` adds the one `Instant::now()` a
//!   cache with exact staleness must read per hit.
//! - `hit_1t_str3`: the fresh hit with three-part string keys `("todos", "list", "page=i")`,
//!   against the composite floor and moka `get`.
//! - `hit_2t`: the same on two threads at once; the time is per hit over both threads.
//! - `coalesce`: W = 1, 10, 100, 1,000 concurrent callers of one cold key on a tokio
//!   current-thread runtime (exactly one call of the function is asserted; one client, a new
//!   key per iteration; the peers a new cache per iteration), against tokio
//!   `OnceCell::get_or_init`, moka `get_with` and quick_cache `get_or_insert_async`. Criterion
//!   reports per-caller throughput.
//! - `notify`: N = 1, 10, 100, 1,000 observers of one key, one state change delivered to all,
//!   against `event-listener` (N listeners notified and polled) and tokio `watch` (N receivers
//!   seeing the change).
//! - `swr_stale_hit`: hits on a stale key whose single revalidation is in flight, beside the
//!   fresh hit; exactly one revalidation is asserted.
//! - `invalidate_prefix`: 1,000,000 cached keys `("t", i / 10, i % 10)`, a prefix matching 10,
//!   against a scan over every key (the seed's algorithm) on a `HashMap`.
//! - `l2_promote`: an L1 miss served by an in-memory L2 record, against `serde_json` decoding
//!   of the same record plus a `HashMap` insert.
//!
//! Data is built outside the timed closures. Run with `cargo bench --bench query`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::FutureExt;
use pystackquery::storage::{MemoryStorage, Record};
use pystackquery::{QueryClient, QueryClientConfig, QueryKey, QueryOptions, TokioRuntime, key};

type Value = Arc<String>;
type Opts = QueryOptions<Value, String>;

const KEYS: usize = 1_000;

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn client_on(rt: &tokio::runtime::Runtime, config: QueryClientConfig) -> QueryClient {
    let runtime = TokioRuntime::from_handle(rt.handle().clone()).unwrap().into_runtime();
    QueryClient::with_runtime(runtime, config)
}

/// 1,000 keys, their options, and a client holding fresh data for all of them.
struct Warm {
    keys: Vec<QueryKey>,
    options: Vec<Opts>,
    values: Vec<Value>,
    client: QueryClient,
}

fn warm(rt: &tokio::runtime::Runtime) -> Warm {
    let config = QueryClientConfig::default().stale_time(Duration::from_secs(3600));
    let client = client_on(rt, config);
    let keys: Vec<QueryKey> = (0..KEYS as u64).map(|i| key!("user", i)).collect();
    let values: Vec<Value> = (0..KEYS).map(|i| Arc::new(format!("user-{i}"))).collect();
    let options = keys
        .iter()
        .map(|k| QueryOptions::new(k.clone(), || async { Err::<Value, _>("unused".to_string()) }))
        .collect();
    for (k, v) in keys.iter().zip(&values) {
        client.set_query_data(k.clone(), v.clone()).unwrap();
    }
    Warm { keys, options, values, client }
}

fn hit_1t(c: &mut Criterion) {
    let rt = tokio_rt();
    let w = warm(&rt);
    let map: Mutex<HashMap<QueryKey, Value>> =
        Mutex::new(w.keys.iter().cloned().zip(w.values.iter().cloned()).collect());
    let qc: quick_cache::sync::Cache<QueryKey, Value> = quick_cache::sync::Cache::new(KEYS * 2);
    let moka: moka::future::Cache<QueryKey, Value> = moka::future::Cache::new(KEYS as u64 * 2);
    for (k, v) in w.keys.iter().zip(&w.values) {
        qc.insert(k.clone(), v.clone());
        rt.block_on(moka.insert(k.clone(), v.clone()));
    }
    rt.block_on(moka.run_pending_tasks());

    let mut g = c.benchmark_group("hit_1t");
    let mut i = 0;
    g.bench_function("pystackquery_fetch_query", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(w.client.fetch_query(&w.options[i]).now_or_never().unwrap().unwrap())
        })
    });
    g.bench_function("mutex_hashmap_get_arc_clone", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(map.lock().unwrap().get(&w.keys[i]).cloned().unwrap())
        })
    });
    g.bench_function("mutex_hashmap_get_arc_clone_now", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let now = black_box(Instant::now());
            black_box((map.lock().unwrap().get(&w.keys[i]).cloned().unwrap(), now))
        })
    });
    g.bench_function("quick_cache_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(qc.get(&w.keys[i]).unwrap())
        })
    });
    g.bench_function("quick_cache_get_async", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let got = qc.get_value_or_guard_async(&w.keys[i]).now_or_never().unwrap();
            black_box(got.ok().unwrap())
        })
    });
    g.bench_function("moka_future_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(moka.get(&w.keys[i]).now_or_never().unwrap().unwrap())
        })
    });
    g.bench_function("moka_future_get_with", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let v = &w.values[i];
            let got = moka.get_with(w.keys[i].clone(), async { v.clone() }).now_or_never();
            black_box(got.unwrap())
        })
    });
    g.finish();
}

/// `hit_1t` with three-part string keys `("todos", "list", "page=i")`: the key shape of a real
/// application, hashed and compared part by part.
fn hit_1t_str3(c: &mut Criterion) {
    let rt = tokio_rt();
    let config = QueryClientConfig::default().stale_time(Duration::from_secs(3600));
    let client = client_on(&rt, config);
    let keys: Vec<QueryKey> =
        (0..KEYS).map(|i| key!("todos", "list", format!("page={i}"))).collect();
    let values: Vec<Value> = (0..KEYS).map(|i| Arc::new(format!("page-{i}"))).collect();
    let options: Vec<Opts> = keys
        .iter()
        .map(|k| QueryOptions::new(k.clone(), || async { Err::<Value, _>("unused".to_string()) }))
        .collect();
    let moka: moka::future::Cache<QueryKey, Value> = moka::future::Cache::new(KEYS as u64 * 2);
    for (k, v) in keys.iter().zip(&values) {
        client.set_query_data(k.clone(), v.clone()).unwrap();
        rt.block_on(moka.insert(k.clone(), v.clone()));
    }
    rt.block_on(moka.run_pending_tasks());
    let map: Mutex<HashMap<QueryKey, Value>> =
        Mutex::new(keys.iter().cloned().zip(values.iter().cloned()).collect());

    let mut g = c.benchmark_group("hit_1t_str3");
    let mut i = 0;
    g.bench_function("pystackquery_fetch_query", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(client.fetch_query(&options[i]).now_or_never().unwrap().unwrap())
        })
    });
    g.bench_function("mutex_hashmap_get_arc_clone_now", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let now = black_box(Instant::now());
            black_box((map.lock().unwrap().get(&keys[i]).cloned().unwrap(), now))
        })
    });
    g.bench_function("moka_future_get", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(moka.get(&keys[i]).now_or_never().unwrap().unwrap())
        })
    });
    g.finish();
}

/// Runs `op(thread, i)` `iters` times split over two threads; returns the wall time.
fn two_threads(iters: u64, op: &(dyn Fn(usize, usize) + Sync)) -> Duration {
    let barrier = Barrier::new(3);
    let per = (iters / 2).max(1) as usize;
    std::thread::scope(|s| {
        for t in 0..2 {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..per {
                    op(t, i);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn hit_2t(c: &mut Criterion) {
    let rt = tokio_rt();
    let w = warm(&rt);
    let map: Mutex<HashMap<QueryKey, Value>> =
        Mutex::new(w.keys.iter().cloned().zip(w.values.iter().cloned()).collect());
    let qc: quick_cache::sync::Cache<QueryKey, Value> = quick_cache::sync::Cache::new(KEYS * 2);
    for (k, v) in w.keys.iter().zip(&w.values) {
        qc.insert(k.clone(), v.clone());
    }
    // Each thread walks the keys from its own offset.
    let at = |t: usize, i: usize| (i * 7 + t * (KEYS / 2)) % KEYS;
    let mut g = c.benchmark_group("hit_2t");
    g.bench_function("pystackquery_fetch_query", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                let got = w.client.fetch_query(&w.options[at(t, i)]).now_or_never();
                black_box(got.unwrap().unwrap());
            })
        })
    });
    g.bench_function("mutex_hashmap_get_arc_clone", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                black_box(map.lock().unwrap().get(&w.keys[at(t, i)]).cloned().unwrap());
            })
        })
    });
    g.bench_function("quick_cache_get", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                black_box(qc.get(&w.keys[at(t, i)]).unwrap());
            })
        })
    });
    g.finish();
}

fn coalesce(c: &mut Criterion) {
    let rt = tokio_rt();
    let mut g = c.benchmark_group("coalesce");
    for w in [1usize, 10, 100, 1000] {
        g.throughput(Throughput::Elements(w as u64));
        g.bench_with_input(BenchmarkId::new("pystackquery_fetch_query", w), &w, |b, &w| {
            // One client, as an application has, and a key never used before per input: the
            // client's one-time costs (its gc sweeper task) are not counted per miss.
            let client = client_on(&rt, QueryClientConfig::default());
            let mut next = 0_u64;
            b.iter_batched(
                || {
                    // Each input has its own key and call counter: criterion prepares
                    // inputs in batches before it runs them.
                    next += 1;
                    let calls = Arc::new(AtomicUsize::new(0));
                    let counted = calls.clone();
                    let options: Opts = QueryOptions::new(key!("cold", next), move || {
                        counted.fetch_add(1, Ordering::Relaxed);
                        async { Ok(Arc::new("v".to_string())) }
                    });
                    (options, calls)
                },
                |(options, calls)| {
                    let all =
                        futures::future::join_all((0..w).map(|_| client.fetch_query(&options)));
                    let results = rt.block_on(all);
                    assert_eq!(calls.load(Ordering::Relaxed), 1, "exactly one call");
                    black_box(results);
                    options
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("tokio_oncecell_get_or_init", w), &w, |b, &w| {
            b.iter_batched(
                tokio::sync::OnceCell::<Value>::new,
                |cell| {
                    let all = futures::future::join_all(
                        (0..w).map(|_| cell.get_or_init(|| async { Arc::new("v".to_string()) })),
                    );
                    black_box(rt.block_on(all).len());
                    cell
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("moka_get_with", w), &w, |b, &w| {
            let k = key!("cold");
            b.iter_batched(
                || moka::future::Cache::<QueryKey, Value>::new(16),
                |cache| {
                    let all =
                        futures::future::join_all((0..w).map(|_| {
                            cache.get_with(k.clone(), async { Arc::new("v".to_string()) })
                        }));
                    black_box(rt.block_on(all));
                    cache
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("quick_cache_get_or_insert_async", w), &w, |b, &w| {
            let k = key!("cold");
            b.iter_batched(
                || quick_cache::sync::Cache::<QueryKey, Value>::new(16),
                |cache| {
                    let all = futures::future::join_all((0..w).map(|_| {
                        cache.get_or_insert_async(&k, async {
                            Ok::<_, ()>(Arc::new("v".to_string()))
                        })
                    }));
                    black_box(rt.block_on(all));
                    cache
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn notify(c: &mut Criterion) {
    let rt = tokio_rt();
    let mut g = c.benchmark_group("notify");
    for n in [1usize, 10, 100, 1000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("pystackquery_observers", n), &n, |b, &n| {
            let client = client_on(&rt, QueryClientConfig::default());
            let options: Opts =
                QueryOptions::new(key!("watched"), || async { Ok(Arc::new("v".to_string())) })
                    .enabled(false);
            let seen = Arc::new(AtomicUsize::new(0));
            let observers: Vec<_> = (0..n).map(|_| client.watch(&options)).collect();
            let _subs: Vec<_> = observers
                .iter()
                .map(|o| {
                    let seen = seen.clone();
                    o.subscribe(move |s| {
                        black_box(&s.data);
                        seen.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            let value = Arc::new("changed".to_string());
            b.iter(|| {
                let before = seen.load(Ordering::Relaxed);
                client.set_query_data(key!("watched"), value.clone()).unwrap();
                assert_eq!(seen.load(Ordering::Relaxed) - before, n);
            })
        });
        g.bench_with_input(BenchmarkId::new("event_listener", n), &n, |b, &n| {
            let event = event_listener::Event::new();
            b.iter_batched(
                || (0..n).map(|_| Box::pin(event.listen())).collect::<Vec<_>>(),
                |listeners| {
                    event.notify(usize::MAX);
                    for l in listeners {
                        l.now_or_never().unwrap();
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("tokio_watch", n), &n, |b, &n| {
            let (tx, rx) = tokio::sync::watch::channel(Arc::new("v".to_string()));
            let mut receivers: Vec<_> = (0..n).map(|_| rx.clone()).collect();
            let value = Arc::new("changed".to_string());
            b.iter(|| {
                tx.send(value.clone()).unwrap();
                for r in &mut receivers {
                    assert!(r.has_changed().unwrap());
                    black_box(r.borrow_and_update().clone());
                }
            })
        });
    }
    g.finish();
}

fn swr_stale_hit(c: &mut Criterion) {
    let rt = tokio_rt();
    let fresh = warm(&rt);
    let client = client_on(&rt, QueryClientConfig::default()); // stale_time 0
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    // The revalidation never finishes, so every hit after the first finds it in flight.
    let options: Opts = QueryOptions::new(key!("stale"), move || {
        counted.fetch_add(1, Ordering::Relaxed);
        futures::future::pending()
    });
    client.set_query_data(key!("stale"), Arc::new("old".to_string())).unwrap();
    let first = client.fetch_query(&options).now_or_never().unwrap().unwrap();
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(5)).await }); // revalidation starts
    assert_eq!(first.as_str(), "old");

    let mut g = c.benchmark_group("swr_stale_hit");
    g.bench_function("pystackquery_stale_hit", |b| {
        b.iter(|| black_box(client.fetch_query(&options).now_or_never().unwrap().unwrap()))
    });
    let mut i = 0;
    g.bench_function("pystackquery_fresh_hit", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(fresh.client.fetch_query(&fresh.options[i]).now_or_never().unwrap().unwrap())
        })
    });
    g.finish();
    assert_eq!(calls.load(Ordering::Relaxed), 1, "exactly one revalidation");
}

fn invalidate_prefix(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let rt = tokio_rt();
    let config = QueryClientConfig::default().cache_max_size(N as usize + 1);
    let client = client_on(&rt, config);
    let mut scan_map: HashMap<QueryKey, Value> = HashMap::with_capacity(N as usize);
    let value = Arc::new("v".to_string());
    for i in 0..N {
        let k = key!("t", i / 10, i % 10);
        client.set_query_data(k.clone(), value.clone()).unwrap();
        scan_map.insert(k, value.clone());
    }
    let prefix = key!("t", 54_321u64);
    let mut g = c.benchmark_group("invalidate_prefix");
    g.bench_function("pystackquery_invalidate_queries", |b| {
        b.iter(|| {
            let n = client.invalidate_queries(prefix.clone(), false).now_or_never().unwrap();
            assert_eq!(n, 10);
        })
    });
    g.sample_size(10);
    g.bench_function("hashmap_scan_all_keys", |b| {
        b.iter(|| {
            let n = scan_map.keys().filter(|k| prefix.is_prefix_of(k)).count();
            assert_eq!(n, 10);
        })
    });
    g.finish();
}

fn l2_promote(c: &mut Criterion) {
    let rt = tokio_rt();
    let store = MemoryStorage::new();
    let written =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let record = serde_json::json!({"status": "SUCCESS", "fetch_status": "IDLE",
        "data": "a value from L2", "error": null, "data_updated_at": written,
        "error_updated_at": null, "fetch_failure_count": 0, "fetch_failure_reason": null})
    .to_string();
    store.insert("('l2',)", record.clone());
    let config =
        QueryClientConfig::default().storage(store.clone()).stale_time(Duration::from_secs(3600));
    let client = client_on(&rt, config);
    let options: QueryOptions<String, String> =
        QueryOptions::new(key!("l2"), || async { Err("must not be called".to_string()) }).persist();

    let mut g = c.benchmark_group("l2_promote");
    // Cold fetches made (none when a filter skips the group).
    let mut cold = 0_u64;
    g.bench_function("pystackquery_cold_fetch_from_l2", |b| {
        b.iter_batched(
            // Memory only: the record stays in L2. Per iteration, so that every routine
            // call finds the key cold (a shared client cannot be prepared in batches).
            || client.clear(),
            |()| {
                cold += 1;
                let got = rt.block_on(client.fetch_query(&options)).unwrap();
                assert_eq!(got, "a value from L2");
            },
            BatchSize::PerIteration,
        )
    });
    let k = key!("l2");
    g.bench_function("serde_json_decode_and_insert", |b| {
        b.iter_batched(
            HashMap::<QueryKey, String>::new,
            |mut map| {
                let record: Record<String> = Record::from_json(black_box(&record)).unwrap();
                map.insert(k.clone(), record.data.unwrap());
                map
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let stats = client.storage_stats();
    assert_eq!(stats.decode_failures, 0);
    assert!(stats.hits >= cold, "{cold} cold fetches were served from L2: {stats}");
}

criterion_group!(
    benches,
    hit_1t,
    hit_1t_str3,
    hit_2t,
    coalesce,
    notify,
    swr_stale_hit,
    invalidate_prefix,
    l2_promote
);
criterion_main!(benches);
