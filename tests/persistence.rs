//! L2 persistence in the engine (the seed's `test_persistence.py` and more), on every
//! runtime, with the in-memory backend and a fault-injecting wrapper around it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::storage::{Fault, FaultyStorage, python_record, unix_now};
use common::{Counter, Harness};
use pystackquery::storage::MemoryStorage;
use pystackquery::{QueryClient, QueryClientConfig, QueryOptions, QueryStatus, key};
use serde_json::{Value, json};

type Opts = QueryOptions<String, String>;

/// Persisted options for `key` that count calls and return `value`.
fn persisted(key: pystackquery::QueryKey, calls: &Counter, value: &'static str) -> Opts {
    let calls = calls.clone();
    QueryOptions::new(key, move || {
        calls.hit();
        async move { Ok(value.to_string()) }
    })
    .persist()
}

fn stored(store: &MemoryStorage, key: &str) -> Value {
    serde_json::from_str(&store.peek(key).expect("a record")).unwrap()
}

fn client(h: &Harness, store: &MemoryStorage, stale: Duration) -> QueryClient {
    h.client_with(QueryClientConfig::default().storage(store.clone()).stale_time(stale))
}

/// A client on a store whose faults stay well inside a generous timeout.
fn slow_store_client(h: &Harness, store: &FaultyStorage) -> QueryClient {
    let config = QueryClientConfig::default()
        .storage(store.clone())
        .stale_time(Duration::from_secs(100))
        .storage_timeout(Duration::from_secs(5));
    h.client_with(config)
}

async fn successful_fetch_writes_the_record(h: Harness) {
    let store = MemoryStorage::new();
    let client = client(&h, &store, Duration::ZERO);
    let calls = Counter::default();
    let before = unix_now(&h.runtime);
    client.fetch_query(&persisted(key!("write"), &calls, "fresh_write")).await.unwrap();
    client.flush_storage().await;

    let record = stored(&store, "('write',)");
    assert_eq!(record["data"], "fresh_write");
    assert_eq!(record["status"], "SUCCESS");
    assert_eq!(record["fetch_status"], "IDLE");
    assert_eq!(record["error"], Value::Null);
    assert_eq!(record["fetch_failure_count"], 0);
    let at = record["data_updated_at"].as_f64().unwrap();
    // Float seconds: allow for rounding in the last digits.
    let now = unix_now(&h.runtime);
    assert!(at >= before - 1e-3 && at <= now + 1e-3, "{at} not in [{before}, {now}]");
    // The record lives for the persistence max age (24 hours), not the query's gc time.
    let ttl = store.ttl("('write',)").unwrap();
    let day = Duration::from_secs(24 * 3600);
    assert!(ttl <= day && ttl > day - Duration::from_secs(10), "{ttl:?}");
    assert_eq!(client.storage_stats().writes, 1);
}

async fn stale_record_is_served_then_revalidated(h: Harness) {
    let store = MemoryStorage::new();
    store.insert(
        "('persist',)",
        python_record(json!("persisted_data"), unix_now(&h.runtime) - 1000.0),
    );
    let client = client(&h, &store, Duration::ZERO);
    let calls = Counter::default();

    let data = client.fetch_query(&persisted(key!("persist"), &calls, "new_data")).await.unwrap();
    assert_eq!(data, "persisted_data");
    h.eventually("background refetch", || {
        client.get_query_data::<String>(key!("persist")).unwrap().as_deref() == Some("new_data")
    })
    .await;
    assert_eq!(calls.get(), 1);
    let stats = client.storage_stats();
    assert_eq!((stats.hydrations, stats.hits, stats.misses), (1, 1, 0));
    client.flush_storage().await;
    assert_eq!(stored(&store, "('persist',)")["data"], "new_data");
}

async fn fresh_record_is_served_without_a_call(h: Harness) {
    let store = MemoryStorage::new();
    let written = unix_now(&h.runtime) - 10.0;
    store.insert("('fresh',)", python_record(json!("from_disk"), written));
    let client = client(&h, &store, Duration::from_secs(60));
    let calls = Counter::default();

    let data = client.fetch_query(&persisted(key!("fresh"), &calls, "from_fn")).await.unwrap();
    assert_eq!(data, "from_disk");
    h.yield_a_little().await;
    assert_eq!(calls.get(), 0);
    let state = client.get_query_state::<String, String>(key!("fresh")).unwrap().unwrap();
    assert_eq!(state.status, QueryStatus::Success);
    let restored = state.data_updated_at.unwrap();
    let restored = restored.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((restored - written).abs() < 1e-3, "{restored} vs {written}");
}

async fn a_fresh_record_restored_without_a_fetch_is_still_collected(h: Harness) {
    let store = MemoryStorage::new();
    store.insert("('fresh',)", python_record(json!("from_disk"), unix_now(&h.runtime)));
    let client = client(&h, &store, Duration::from_secs(60));
    let options =
        persisted(key!("fresh"), &Counter::default(), "from_fn").gc_time(Duration::from_millis(50));
    assert_eq!(client.fetch_query(&options).await.unwrap(), "from_disk");
    assert!(client.find(key!("fresh")).unwrap().gc_in.is_some(), "scheduled after the read");
    h.eventually("collected", || client.find(key!("fresh")).is_none()).await;
}

async fn invalidation_is_persisted_as_epoch(h: Harness) {
    let store = MemoryStorage::new();
    let client = client(&h, &store, Duration::ZERO);
    let calls = Counter::default();
    client.fetch_query(&persisted(key!("del"), &calls, "val")).await.unwrap();
    client.flush_storage().await;
    assert_eq!(client.invalidate_queries(key!("del"), true).await, 1);
    client.flush_storage().await;

    let record = stored(&store, "('del',)");
    assert_eq!(record["data_updated_at"], json!(0.0));
    assert_eq!(record["data"], "val");
}

async fn second_client_hydrates_without_calling(h: Harness) {
    let store = MemoryStorage::new();
    let calls = Counter::default();
    let first = client(&h, &store, Duration::from_secs(100));
    first.fetch_query(&persisted(key!("user", 1), &calls, "sql_data")).await.unwrap();
    first.flush_storage().await;

    let second = client(&h, &store, Duration::from_secs(100));
    let data = second.fetch_query(&persisted(key!("user", 1), &calls, "other")).await.unwrap();
    assert_eq!(data, "sql_data");
    h.yield_a_little().await;
    assert_eq!(calls.get(), 1, "the second client must not call the function");
}

async fn remove_and_reset_delete_the_record(h: Harness) {
    let store = MemoryStorage::new();
    let client = client(&h, &store, Duration::from_secs(100));
    let calls = Counter::default();
    for name in ["a", "b"] {
        client.fetch_query(&persisted(key!("doc", name), &calls, "v")).await.unwrap();
    }
    client.flush_storage().await;
    assert_eq!(store.len(), 2);

    assert_eq!(client.remove_queries(key!("doc", "a")), 1);
    assert_eq!(client.reset_queries(key!("doc", "b")), 1);
    client.flush_storage().await;
    assert!(store.is_empty(), "left: {:?}", store.keys());
    assert_eq!(client.storage_stats().deletes, 2);

    // Removed data does not come back: the next use calls the function again.
    client.fetch_query(&persisted(key!("doc", "a"), &calls, "v")).await.unwrap();
    assert_eq!(calls.get(), 3);
}

async fn removal_racing_a_new_hydration_wins(h: Harness) {
    let store = FaultyStorage::new(&h.runtime);
    let client = slow_store_client(&h, &store);
    let calls = Counter::default();
    client.fetch_query(&persisted(key!("k"), &calls, "old")).await.unwrap();
    client.flush_storage().await;

    // The delete is slow; a fetch right after the removal must not hydrate the old record.
    store.set_fault(Fault::DelayWrites(Duration::from_millis(50)));
    client.remove_queries(key!("k"));
    let data = client.fetch_query(&persisted(key!("k"), &calls, "new")).await.unwrap();
    assert_eq!(data, "new");
    assert_eq!(calls.get(), 2);
    client.flush_storage().await;
    store.set_fault(Fault::None);
    client.flush_storage().await;
}

async fn eviction_and_clear_keep_the_record(h: Harness) {
    let store = MemoryStorage::new();
    let config = QueryClientConfig::default()
        .storage(store.clone())
        .stale_time(Duration::from_secs(100))
        .cache_max_size(1);
    let client = h.client_with(config);
    let calls = Counter::default();
    client.fetch_query(&persisted(key!("a"), &calls, "A")).await.unwrap();
    client.fetch_query(&persisted(key!("b"), &calls, "B")).await.unwrap();
    client.flush_storage().await;
    assert_eq!(client.cached_keys(), vec![key!("b")], "a was evicted");
    client.clear();
    assert_eq!(store.len(), 2);

    // Both hydrate again from L2, with no call.
    assert_eq!(client.fetch_query(&persisted(key!("a"), &calls, "x")).await.unwrap(), "A");
    assert_eq!(client.fetch_query(&persisted(key!("b"), &calls, "x")).await.unwrap(), "B");
    assert_eq!(calls.get(), 2);
}

async fn record_from_the_future_is_stale(h: Harness) {
    let store = MemoryStorage::new();
    store.insert("('future',)", python_record(json!("ahead"), unix_now(&h.runtime) + 3600.0));
    let client = client(&h, &store, Duration::from_secs(600));
    let calls = Counter::default();
    let data = client.fetch_query(&persisted(key!("future"), &calls, "now")).await.unwrap();
    assert_eq!(data, "ahead");
    h.eventually("revalidation of a future record", || calls.get() == 1).await;
}

async fn undecodable_record_is_a_counted_miss_and_is_overwritten(h: Harness) {
    let store = MemoryStorage::new();
    store.insert("('bad',)", "{not json");
    store.insert("('wrong_type',)", python_record(json!({"a": 1}), unix_now(&h.runtime)));
    let client = client(&h, &store, Duration::from_secs(100));
    let calls = Counter::default();

    assert_eq!(client.fetch_query(&persisted(key!("bad"), &calls, "good")).await.unwrap(), "good");
    let data = client.fetch_query(&persisted(key!("wrong_type"), &calls, "typed")).await.unwrap();
    assert_eq!(data, "typed");
    assert_eq!(calls.get(), 2);
    assert_eq!(client.storage_stats().decode_failures, 2);
    client.flush_storage().await;
    assert_eq!(stored(&store, "('bad',)")["data"], "good");
    assert_eq!(stored(&store, "('wrong_type',)")["data"], "typed");
}

/// Data with no serde implementation: usable on a client with storage, never written.
#[derive(Clone, Debug, PartialEq)]
struct Opaque(u32);

async fn unserializable_data_stays_in_memory(h: Harness) {
    let store = MemoryStorage::new();
    let client = client(&h, &store, Duration::from_secs(100));
    let options = QueryOptions::new(key!("opaque"), || async { Ok::<_, String>(Opaque(7)) });
    assert_eq!(client.fetch_query(&options).await.unwrap(), Opaque(7));
    client.set_query_data(key!("opaque"), Opaque(8)).unwrap();
    client.invalidate_queries(key!("opaque"), false).await;
    client.remove_queries(key!("opaque"));
    client.flush_storage().await;
    assert!(store.is_empty());
    assert_eq!(client.storage_stats(), Default::default());
}

async fn set_query_data_on_a_persisted_key_is_written(h: Harness) {
    let store = MemoryStorage::new();
    let client = client(&h, &store, Duration::from_secs(100));
    let calls = Counter::default();
    client.fetch_query(&persisted(key!("todo", 1), &calls, "draft")).await.unwrap();
    client.set_query_data(key!("todo", 1), "done".to_string()).unwrap();
    client.flush_storage().await;
    assert_eq!(stored(&store, "('todo', 1)")["data"], "done");
}

async fn get_query_data_async_reads_memory_then_storage(h: Harness) {
    let store = MemoryStorage::new();
    store.insert("('only_l2',)", python_record(json!([1, 2, 3]), unix_now(&h.runtime)));
    let client = client(&h, &store, Duration::from_secs(100));
    client.set_query_data(key!("only_l1"), vec![9u32]).unwrap();

    assert_eq!(
        client.get_query_data_async::<Vec<u32>>(key!("only_l1")).await.unwrap(),
        Some(vec![9])
    );
    assert_eq!(
        client.get_query_data_async::<Vec<u32>>(key!("only_l2")).await.unwrap(),
        Some(vec![1, 2, 3])
    );
    assert_eq!(client.get_query_data_async::<Vec<u32>>(key!("nowhere")).await.unwrap(), None);
    // Reading L2 does not put the key in memory.
    assert_eq!(client.get_query_data::<Vec<u32>>(key!("only_l2")).unwrap(), None);
    let stats = client.storage_stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

async fn memory_newer_than_storage_wins(h: Harness) {
    let store = FaultyStorage::new(&h.runtime);
    store.inner.insert("('race',)", python_record(json!("old"), unix_now(&h.runtime) - 1000.0));
    store.set_fault(Fault::Delay(Duration::from_millis(50)));
    let client = slow_store_client(&h, &store);
    let calls = Counter::default();
    let options = persisted(key!("race"), &calls, "fetched");
    let pending = {
        let (client, options) = (client.clone(), options.clone());
        h.runtime.spawn_with_handle(async move { client.fetch_query(&options).await })
    };
    h.eventually("hydration read started", || store.call_count() == 1).await;
    client.set_query_data(key!("race"), "mine".to_string()).unwrap();

    assert_eq!(pending.await.unwrap(), "mine");
    assert_eq!(client.get_query_data::<String>(key!("race")).unwrap().as_deref(), Some("mine"));
    assert_eq!(calls.get(), 0);
}

async fn observer_shows_hydrated_data_and_skips_a_fresh_fetch(h: Harness) {
    let store = MemoryStorage::new();
    store.insert("('watched',)", python_record(json!("disk"), unix_now(&h.runtime) - 5.0));
    let client = client(&h, &store, Duration::from_secs(60));
    let calls = Counter::default();
    let observer = client.watch(&persisted(key!("watched"), &calls, "net"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let _sub = observer.subscribe(move |s| log.lock().unwrap().push(s.data.clone()));
    h.eventually("hydrated state reaches the observer", || {
        seen.lock().unwrap().last().cloned().flatten().as_deref() == Some("disk")
    })
    .await;
    h.yield_a_little().await;
    assert_eq!(calls.get(), 0);
}

runtime_suite!(
    successful_fetch_writes_the_record,
    stale_record_is_served_then_revalidated,
    fresh_record_is_served_without_a_call,
    a_fresh_record_restored_without_a_fetch_is_still_collected,
    invalidation_is_persisted_as_epoch,
    second_client_hydrates_without_calling,
    remove_and_reset_delete_the_record,
    removal_racing_a_new_hydration_wins,
    eviction_and_clear_keep_the_record,
    record_from_the_future_is_stale,
    undecodable_record_is_a_counted_miss_and_is_overwritten,
    unserializable_data_stays_in_memory,
    set_query_data_on_a_persisted_key_is_written,
    get_query_data_async_reads_memory_then_storage,
    memory_newer_than_storage_wins,
    observer_shows_hydrated_data_and_skips_a_fresh_fetch,
);
