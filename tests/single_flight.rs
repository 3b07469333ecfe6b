//! Processes sharing one store: cross-process single flight for cold keys and storage-first
//! revalidation of stale ones, on every runtime. Several clients sharing one `MemoryStorage`
//! model several processes (the store's locks are shared by its clones).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::storage::{Fault, FaultyStorage, python_record, unix_now};
use common::{Counter, Gate, Harness};
use futures::FutureExt;
use futures::future::join_all;
use pystackquery::storage::{MemoryStorage, StorageBackend};
use pystackquery::{QueryClient, QueryClientConfig, QueryKey, QueryOptions, Runtime, key};
use serde_json::json;

type Opts = QueryOptions<String, String>;

const TTL: Duration = Duration::from_millis(300);

/// Persisted options for `key` that count calls, take `took` on the runtime clock, and
/// return `value`.
fn slow(key: QueryKey, calls: &Counter, runtime: &Runtime, took: Duration, value: &str) -> Opts {
    let (calls, runtime, value) = (calls.clone(), runtime.clone(), value.to_string());
    QueryOptions::new(key, move || {
        calls.hit();
        let (runtime, value) = (runtime.clone(), value.clone());
        async move {
            runtime.sleep(took).await;
            Ok(value)
        }
    })
    .persist()
}

fn flight_client(h: &Harness, store: impl StorageBackend) -> QueryClient {
    // Fresh for a minute: a record hydrated from another process's fetch is not revalidated.
    let config = QueryClientConfig::default().stale_time(Duration::from_secs(60));
    h.client_with(config.storage(store).single_flight(TTL))
}

async fn n_clients_and_m_cold_keys_make_m_calls(h: Harness) {
    const CLIENTS: usize = 4;
    const KEYS: usize = 10;
    let store = MemoryStorage::new();
    let clients: Vec<_> = (0..CLIENTS).map(|_| flight_client(&h, store.clone())).collect();
    let calls = Counter::default();
    let took = Duration::from_millis(20);
    let fetches = clients.iter().flat_map(|client| {
        let (calls, runtime) = (calls.clone(), h.runtime.clone());
        (0..KEYS).map(move |k| {
            let options = slow(key!("k", k), &calls, &runtime, took, &format!("v{k}"));
            async move { client.fetch_query(&options).await.unwrap() }
        })
    });
    let results = join_all(fetches).await;
    assert_eq!(calls.get(), KEYS, "one call per key across {CLIENTS} clients");
    for (i, value) in results.iter().enumerate() {
        assert_eq!(value, &format!("v{}", i % KEYS));
    }
    // Every other client read the record once: at its hydration (it came late), or while
    // waiting for the lock (adopted).
    let hits: u64 = clients.iter().map(|c| c.storage_stats().hits).sum();
    assert_eq!(hits, ((CLIENTS - 1) * KEYS) as u64);
    let adopted: u64 = clients.iter().map(|c| c.storage_stats().adopted).sum();
    assert!(adopted > 0 && adopted <= hits, "{adopted}");
    let fetches: u64 = clients.iter().map(|c| c.cache_stats().fetches).sum();
    assert_eq!(fetches, KEYS as u64 + adopted, "an adopted record still counts as a fetch");
    // The locks are released (by each holder's task, after its record is flushed: callers
    // may wake first): every key's lock is free again well before its ttl.
    let started = h.runtime.now();
    for k in 0..KEYS {
        let name = key!("k", k).storage_string().to_string();
        h.eventually("the lock is released", || {
            let outcome = store.try_lock(&name, "probe", TTL).now_or_never().unwrap().unwrap();
            outcome == pystackquery::storage::LockOutcome::Acquired
        })
        .await;
    }
    assert!(h.runtime.now() - started < TTL);
}

async fn a_holder_that_never_finishes_delays_the_others_by_the_ttl(h: Harness) {
    let store = MemoryStorage::new();
    let holder = flight_client(&h, store.clone());
    let stuck = Gate::default();
    let held = Counter::default();
    let options = {
        let (stuck, held) = (stuck.clone(), held.clone());
        QueryOptions::<String, String>::new(key!("dead"), move || {
            held.hit();
            let stuck = stuck.clone();
            async move {
                stuck.wait().await;
                Ok("never".to_string())
            }
        })
        .persist()
    };
    let background = holder.clone();
    h.runtime.spawn(async move {
        let _ = background.fetch_query(&options).await;
    });
    h.eventually("the holder calls", || held.get() == 1).await;

    let other = flight_client(&h, store.clone());
    let calls = Counter::default();
    let started = h.runtime.now();
    let value = other
        .fetch_query(&slow(key!("dead"), &calls, &h.runtime, Duration::ZERO, "mine"))
        .await
        .unwrap();
    let waited = h.runtime.now() - started;
    assert_eq!(value, "mine");
    assert_eq!(calls.get(), 1);
    assert!(waited >= TTL, "fetched after {waited:?}, before the lock's ttl {TTL:?}");
    assert!(waited < TTL * 3, "waited {waited:?}");
    assert_eq!(other.storage_stats().adopted, 0);
    drop(holder);
}

async fn a_cancelled_holder_unlocks_at_once(h: Harness) {
    let store = MemoryStorage::new();
    let holder = flight_client(&h, store.clone());
    let held = Counter::default();
    let options = {
        let held = held.clone();
        QueryOptions::<String, String>::new(key!("cancelled"), move || {
            held.hit();
            futures::future::pending::<Result<String, String>>()
        })
        .persist()
    };
    let background = holder.clone();
    h.runtime.spawn(async move {
        let _ = background.fetch_query(&options).await;
    });
    h.eventually("the holder calls", || held.get() == 1).await;

    let other = flight_client(&h, store.clone());
    let calls = Counter::default();
    let started = h.runtime.now();
    let options = slow(key!("cancelled"), &calls, &h.runtime, Duration::ZERO, "mine");
    let waiting = other.fetch_query(&options);
    let cancel = async {
        h.sleep(TTL / 6).await;
        holder.cancel_queries(pystackquery::QueryFilter::all()).await;
    };
    let (value, ()) = futures::join!(waiting, cancel);
    let waited = h.runtime.now() - started;
    assert_eq!(value.unwrap(), "mine");
    assert_eq!(calls.get(), 1);
    assert!(waited >= TTL / 6 && waited < TTL, "waited {waited:?}");
}

async fn storage_first_adopts_a_newer_record_with_no_call(h: Harness) {
    let store = MemoryStorage::new();
    let stale = Duration::from_millis(100);
    let config =
        QueryClientConfig::default().storage(store.clone()).stale_time(stale).storage_first(true);
    let client = h.client_with(config);
    let calls = Counter::default();
    let options = slow(key!("sf"), &calls, &h.runtime, Duration::ZERO, "mine");
    assert_eq!(client.fetch_query(&options).await.unwrap(), "mine");
    client.flush_storage().await;
    h.sleep(stale * 2).await;
    // Another process refetched meanwhile and wrote its newer data.
    store.insert("('sf',)", python_record(json!("theirs"), unix_now(&h.runtime)));

    assert_eq!(client.fetch_query(&options).await.unwrap(), "mine", "stale, then revalidated");
    h.eventually("the newer record is adopted", || {
        client.get_query_data::<String>(key!("sf")).unwrap().as_deref() == Some("theirs")
    })
    .await;
    assert_eq!(calls.get(), 1, "adopted with no call");
    let stats = client.storage_stats();
    assert_eq!((stats.adopted, stats.hits), (1, 1));
    // Adopted data ages from the record's own timestamp: fresh now, no fetch.
    assert_eq!(client.fetch_query(&options).await.unwrap(), "theirs");
    h.yield_a_little().await;
    assert_eq!(calls.get(), 1);
}

async fn storage_first_calls_when_the_record_is_older_or_stale(h: Harness) {
    let store = MemoryStorage::new();
    let stale = Duration::from_millis(100);
    let config =
        QueryClientConfig::default().storage(store.clone()).stale_time(stale).storage_first(true);
    let client = h.client_with(config);
    let calls = Counter::default();
    let options = slow(key!("old"), &calls, &h.runtime, Duration::ZERO, "mine");
    client.fetch_query(&options).await.unwrap();
    client.flush_storage().await;
    h.sleep(stale * 2).await;
    // Older than memory: ignored.
    store.insert("('old',)", python_record(json!("older"), unix_now(&h.runtime) - 1000.0));
    client.fetch_query(&options).await.unwrap();
    h.eventually("revalidated by a call", || calls.get() == 2).await;
    client.flush_storage().await;
    h.sleep(stale * 2).await;
    // Newer than memory but stale by the query's stale time: also a call.
    let newer = unix_now(&h.runtime) - 0.15;
    store.insert("('old',)", python_record(json!("stale"), newer));
    client.fetch_query(&options).await.unwrap();
    h.eventually("revalidated by a call", || calls.get() == 3).await;
    h.yield_a_little().await;
    assert_eq!(client.get_query_data::<String>(key!("old")).unwrap().as_deref(), Some("mine"));
    assert_eq!(client.storage_stats().adopted, 0);
}

async fn invalidation_always_calls_with_storage_first(h: Harness) {
    let store = MemoryStorage::new();
    let config = QueryClientConfig::default()
        .storage(store.clone())
        .stale_time(Duration::from_secs(60))
        .storage_first(true);
    let client = h.client_with(config);
    let calls = Counter::default();
    let options = slow(key!("inv"), &calls, &h.runtime, Duration::ZERO, "mine");
    client.fetch_query(&options).await.unwrap();
    client.flush_storage().await;
    store.insert("('inv',)", python_record(json!("theirs"), unix_now(&h.runtime) + 0.0005));
    client
        .invalidate_queries(pystackquery::QueryFilter::all(), pystackquery::RefetchType::None)
        .await;
    client.fetch_query(&options).await.unwrap();
    h.eventually("refetched by a call", || calls.get() == 2).await;
    assert_eq!(client.storage_stats().adopted, 0);
}

async fn storage_down_fetches_as_without_the_features(h: Harness) {
    let store = FaultyStorage::new(&h.runtime);
    store.set_fault(Fault::Refuse);
    let config = |s: &FaultyStorage| {
        QueryClientConfig::default()
            .storage(s.clone())
            .single_flight(TTL)
            .storage_first(true)
            .storage_timeout(Duration::from_millis(50))
    };
    let (a, b) = (h.client_with(config(&store)), h.client_with(config(&store)));
    let calls = Counter::default();
    let took = Duration::from_millis(5);
    let options = slow(key!("down"), &calls, &h.runtime, took, "v");
    let started = h.runtime.now();
    let (x, y) = futures::join!(a.fetch_query(&options), b.fetch_query(&options));
    assert_eq!((x.unwrap(), y.unwrap()), ("v".to_string(), "v".to_string()));
    assert_eq!(calls.get(), 2, "each process fetches, as without single flight");
    assert!(h.runtime.now() - started < TTL, "nobody waited for a lock");
    // Revalidation of stale data calls too.
    a.fetch_query(&options).await.unwrap();
    h.eventually("revalidated by a call", || calls.get() == 3).await;
    assert!(a.storage_stats().errors + a.storage_stats().skipped > 0);
    assert_eq!(a.storage_stats().adopted + b.storage_stats().adopted, 0);
}

runtime_suite!(
    n_clients_and_m_cold_keys_make_m_calls,
    a_holder_that_never_finishes_delays_the_others_by_the_ttl,
    a_cancelled_holder_unlocks_at_once,
    storage_first_adopts_a_newer_record_with_no_call,
    storage_first_calls_when_the_record_is_older_or_stale,
    invalidation_always_calls_with_storage_first,
    storage_down_fetches_as_without_the_features,
);
