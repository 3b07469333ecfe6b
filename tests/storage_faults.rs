//! Storage faults on the manual clock: a store that is slow, refuses, or answers garbage never
//! fails a caller and never holds one past the storage timeout; the breaker stops calling a
//! failing store and probes it again; the write queue coalesces and drops the oldest.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Counter;
use common::storage::{Fault, FaultyStorage, python_record, unix_now};
use pystackquery::testing::TestRuntime;
use pystackquery::{QueryClient, QueryClientConfig, QueryOptions, key};
use serde_json::json;

fn persisted(name: &'static str, calls: &Counter) -> QueryOptions<String, String> {
    let calls = calls.clone();
    QueryOptions::new(key!(name), move || {
        let n = calls.hit();
        async move { Ok(format!("{name}_{n}")) }
    })
    .persist()
    .stale_time(Duration::from_secs(600))
}

fn setup(fault: Fault) -> (TestRuntime, FaultyStorage, QueryClient) {
    let test = TestRuntime::new();
    let store = FaultyStorage::new(&test.runtime());
    store.set_fault(fault);
    let config = QueryClientConfig::default()
        .storage(store.clone())
        .storage_timeout(Duration::from_millis(100))
        .storage_circuit_breaker(3, Duration::from_secs(10));
    let client = QueryClient::with_runtime(test.runtime(), config);
    (test, store, client)
}

#[test]
fn slow_storage_holds_a_cold_fetch_no_longer_than_the_timeout() {
    let (test, store, client) = setup(Fault::Delay(Duration::from_secs(30)));
    store.inner.insert("('slow',)", python_record(json!("stored"), unix_now(&test.runtime())));
    let calls = Counter::default();
    let start = test.elapsed();
    let data = test.block_on(client.fetch_query(&persisted("slow", &calls)));
    // The hydration read was abandoned at exactly the timeout; the function answered.
    assert_eq!(data.unwrap(), "slow_1");
    assert_eq!(test.elapsed() - start, Duration::from_millis(100));
    test.advance(Duration::ZERO); // fire the read's own timeout, due at the same instant
    assert_eq!(client.storage_stats().timeouts, 1);

    // A warm key never touches storage on the hit path.
    let start = test.elapsed();
    assert_eq!(test.block_on(client.fetch_query(&persisted("slow", &calls))).unwrap(), "slow_1");
    assert_eq!(test.elapsed(), start);
}

#[test]
fn refusing_storage_fails_no_caller_and_the_breaker_probes_later() {
    let (test, store, client) = setup(Fault::Refuse);
    let calls = Counter::default();
    let names = ["a", "b", "c", "d", "e", "f"];
    for name in names {
        let data = test.block_on(client.fetch_query(&persisted(name, &calls)));
        assert_eq!(data.unwrap(), format!("{name}_{}", calls.get()));
    }
    test.block_on(client.flush_storage());
    let stats = client.storage_stats();
    // Three failures open the breaker; every later call is skipped without touching storage.
    assert_eq!(stats.errors, 3);
    assert_eq!(store.call_count(), 3);
    assert_eq!(stats.skipped, 2 * names.len() as u64 - 3, "{stats}");
    assert_eq!(stats.writes, 0);

    // After the cool-down one probe goes through; the store is back, so writes resume.
    store.set_fault(Fault::None);
    test.advance(Duration::from_secs(10));
    client.set_query_data(key!("a"), "a_new".to_string()).unwrap();
    test.block_on(client.flush_storage());
    client.set_query_data(key!("b"), "b_new".to_string()).unwrap();
    test.block_on(client.flush_storage());
    assert_eq!(client.storage_stats().writes, 2);
    assert!(store.inner.peek("('a',)").unwrap().contains("a_new"));
    assert!(store.inner.peek("('b',)").unwrap().contains("b_new"));
}

#[test]
fn a_failed_probe_reopens_the_breaker() {
    let (test, store, client) = setup(Fault::Refuse);
    let calls = Counter::default();
    for name in ["a", "b", "c"] {
        test.block_on(client.fetch_query(&persisted(name, &calls))).unwrap();
    }
    assert_eq!(store.call_count(), 3);
    test.advance(Duration::from_secs(10));
    test.block_on(client.fetch_query(&persisted("d", &calls))).unwrap(); // the probe
    test.block_on(client.fetch_query(&persisted("e", &calls))).unwrap(); // skipped again
    assert_eq!(store.call_count(), 4);
    assert_eq!(client.storage_stats().errors, 4);
}

#[test]
fn garbage_reads_are_misses_and_writes_still_land() {
    let (test, store, client) = setup(Fault::Garbage);
    let calls = Counter::default();
    assert_eq!(test.block_on(client.fetch_query(&persisted("g", &calls))).unwrap(), "g_1");
    test.block_on(client.flush_storage());
    let stats = client.storage_stats();
    assert_eq!((stats.decode_failures, stats.writes, stats.errors), (1, 1, 0));
    assert!(store.inner.peek("('g',)").unwrap().contains("g_1"));
}

#[test]
fn write_queue_coalesces_per_key_and_drops_the_oldest() {
    let test = TestRuntime::new();
    let store = FaultyStorage::new(&test.runtime());
    let config = QueryClientConfig::default()
        .storage(store.clone())
        .storage_timeout(Duration::from_secs(60))
        .storage_queue_size(2);
    let client = QueryClient::with_runtime(test.runtime(), config);
    let calls = Counter::default();
    let names = ["k0", "k1", "k2", "k3", "k4"];
    for name in names {
        test.block_on(client.fetch_query(&persisted(name, &calls))).unwrap();
    }
    test.block_on(client.flush_storage());
    assert_eq!(client.storage_stats().writes, 5);

    store.set_fault(Fault::DelayWrites(Duration::from_secs(1)));
    client.set_query_data(key!("k0"), "k0_new".to_string()).unwrap();
    test.run_until_idle(); // the worker is now inside a one-second write of k0
    for name in &names[1..] {
        client.set_query_data(key!(*name), format!("{name}_new")).unwrap();
    }
    // k1 and k2 were dropped to make room for k3 and k4; a second write of k4 replaces the
    // pending one without dropping anything.
    client.set_query_data(key!("k4"), "k4_last".to_string()).unwrap();
    test.block_on(client.flush_storage());
    let stats = client.storage_stats();
    assert_eq!(stats.write_drops, 2, "{stats}");
    assert_eq!(stats.writes, 5 + 3);
    let value = |name: &str| -> String {
        let raw = store.inner.peek(&format!("('{name}',)")).unwrap();
        serde_json::from_str::<serde_json::Value>(&raw).unwrap()["data"].as_str().unwrap().into()
    };
    assert_eq!(value("k0"), "k0_new");
    assert_eq!(value("k1"), "k1_2"); // the first fetch's value: the second write was dropped
    assert_eq!(value("k2"), "k2_3");
    assert_eq!(value("k3"), "k3_new");
    assert_eq!(value("k4"), "k4_last");
}
