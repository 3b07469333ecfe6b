//! The persistence max age: L2 records live apart from the query's `gc_time` (24 hours by
//! default), a record older than the max age is not restored, zero persists nothing, and a
//! max age of ten years or more writes records without expiry.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::storage::{python_record, unix_now};
use common::{Counter, Harness};
use pystackquery::storage::MemoryStorage;
use pystackquery::{QueryClient, QueryClientConfig, QueryOptions, key};
use serde_json::json;

type Opts = QueryOptions<String, String>;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn persisted(key: pystackquery::QueryKey, calls: &Counter, value: &'static str) -> Opts {
    let calls = calls.clone();
    QueryOptions::new(key, move || {
        calls.hit();
        async move { Ok(value.to_string()) }
    })
    .persist()
}

fn client(h: &Harness, store: &MemoryStorage, config: QueryClientConfig) -> QueryClient {
    h.client_with(config.storage(store.clone()).stale_time(Duration::from_secs(3600)))
}

/// Whether `ttl` is `expected`, less the little real time the test took.
fn about(ttl: Option<Duration>, expected: Duration) -> bool {
    ttl.is_some_and(|ttl| ttl <= expected && ttl + Duration::from_secs(10) > expected)
}

async fn a_record_outlives_gc_time(h: Harness) {
    let store = MemoryStorage::new();
    let calls = Counter::default();
    let first = client(&h, &store, QueryClientConfig::default());
    let options = persisted(key!("cli"), &calls, "answer").gc_time(Duration::from_millis(20));
    first.fetch_query(&options).await.unwrap();
    first.flush_storage().await;
    assert!(about(store.ttl("('cli',)"), DAY), "{:?}", store.ttl("('cli',)"));
    h.eventually("collected from memory", || first.find(key!("cli")).is_none()).await;
    drop(first);

    // The next run of the tool, after the query left memory: served from storage.
    let second = client(&h, &store, QueryClientConfig::default());
    assert_eq!(second.fetch_query(&options).await.unwrap(), "answer");
    assert_eq!(calls.get(), 1);
}

async fn the_record_expires_by_max_age(h: Harness) {
    let store = MemoryStorage::new();
    let calls = Counter::default();
    let ten_minutes = Duration::from_secs(600);
    let client = client(&h, &store, QueryClientConfig::default().persist_max_age(ten_minutes));
    client.fetch_query(&persisted(key!("client"), &calls, "a")).await.unwrap();
    let own = persisted(key!("own"), &calls, "b").persist_max_age(Duration::from_secs(30));
    client.fetch_query(&own).await.unwrap();
    client.flush_storage().await;
    assert!(about(store.ttl("('client',)"), ten_minutes), "{:?}", store.ttl("('client',)"));
    assert!(about(store.ttl("('own',)"), Duration::from_secs(30)), "{:?}", store.ttl("('own',)"));
    // A later write (set_query_data) keeps the query's own max age.
    client.set_query_data(key!("own"), "c".to_string()).unwrap();
    client.flush_storage().await;
    assert!(about(store.ttl("('own',)"), Duration::from_secs(30)), "{:?}", store.ttl("('own',)"));

    // So does a write to a key restored from storage without a fetch.
    store.insert("('restored',)", python_record(json!("r"), unix_now(&h.runtime)));
    let restored =
        persisted(key!("restored"), &calls, "x").persist_max_age(Duration::from_secs(45));
    assert_eq!(client.fetch_query(&restored).await.unwrap(), "r");
    client.set_query_data(key!("restored"), "s".to_string()).unwrap();
    client.flush_storage().await;
    let ttl = store.ttl("('restored',)");
    assert!(about(ttl, Duration::from_secs(45)), "{ttl:?}");

    if h.manual.is_some() {
        // On the manual clock: 31 s later the record is too old to restore, even though this
        // store (on the real clock) still holds it.
        h.sleep(Duration::from_secs(31)).await;
        let later = self::client(&h, &store, QueryClientConfig::default());
        let again =
            persisted(key!("own"), &calls, "fetched").persist_max_age(Duration::from_secs(30));
        assert!(store.peek("('own',)").is_some());
        assert_eq!(later.fetch_query(&again).await.unwrap(), "fetched");
        assert_eq!((later.storage_stats().hits, later.storage_stats().misses), (0, 1));
    }
}

async fn an_old_record_is_not_restored(h: Harness) {
    let store = MemoryStorage::new();
    let now = unix_now(&h.runtime);
    store.insert("('old',)", python_record(json!("ancient"), now - 25.0 * 3600.0));
    store.insert("('young',)", python_record(json!("recent"), now - 23.0 * 3600.0));
    let client = client(&h, &store, QueryClientConfig::default());
    let calls = Counter::default();

    assert_eq!(client.get_query_data_async::<String>(key!("old")).await.unwrap(), None);
    let data = client.fetch_query(&persisted(key!("old"), &calls, "new")).await.unwrap();
    assert_eq!(data, "new", "a record older than the max age is a miss");
    assert_eq!(calls.get(), 1);
    let data = client.fetch_query(&persisted(key!("young"), &calls, "new")).await.unwrap();
    assert_eq!(data, "recent", "a record younger than the max age is restored");
    let stats = client.storage_stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));

    // A query's own max age decides for its key.
    store.insert("('week',)", python_record(json!("kept"), now - 3.0 * 24.0 * 3600.0));
    let week = persisted(key!("week"), &calls, "new").persist_max_age(DAY * 7);
    assert_eq!(client.fetch_query(&week).await.unwrap(), "kept");
}

async fn zero_persists_nothing(h: Harness) {
    let store = MemoryStorage::new();
    let now = unix_now(&h.runtime);
    store.insert("('kept',)", python_record(json!("stored"), now));
    let config = QueryClientConfig::default().persist_max_age(Duration::ZERO);
    let client = client(&h, &store, config);
    let calls = Counter::default();

    client.fetch_query(&persisted(key!("zero"), &calls, "memory")).await.unwrap();
    client.set_query_data(key!("zero"), "set".to_string()).unwrap();
    assert_eq!(client.invalidate_queries(key!("zero"), false).await, 1);
    let data = client.fetch_query(&persisted(key!("kept"), &calls, "fetched")).await.unwrap();
    assert_eq!(data, "fetched", "nothing is read either");
    client.flush_storage().await;
    assert_eq!(store.keys(), vec!["('kept',)".to_string()]);
    let stats = client.storage_stats();
    assert_eq!((stats.writes, stats.hydrations, stats.hits), (0, 0, 0));

    // A query's own zero, on a client that persists.
    let client = self::client(&h, &store, QueryClientConfig::default());
    let own = persisted(key!("own zero"), &calls, "x").persist_max_age(Duration::ZERO);
    client.fetch_query(&own).await.unwrap();
    client.flush_storage().await;
    assert!(store.peek("('own zero',)").is_none());
}

async fn max_never_expires(h: Harness) {
    let store = MemoryStorage::new();
    let config = QueryClientConfig::default().persist_max_age(Duration::MAX);
    let client = client(&h, &store, config);
    let calls = Counter::default();
    client.fetch_query(&persisted(key!("forever"), &calls, "v")).await.unwrap();
    client.flush_storage().await;
    assert!(store.peek("('forever',)").is_some());
    assert_eq!(store.ttl("('forever',)"), None, "no expiry");

    // However old, a record is restored.
    store.insert("('1970',)", python_record(json!("old"), 1.0));
    let data = client.fetch_query(&persisted(key!("1970"), &calls, "new")).await.unwrap();
    assert_eq!(data, "old");
}

runtime_suite!(
    a_record_outlives_gc_time,
    the_record_expires_by_max_age,
    an_old_record_is_not_restored,
    zero_persists_nothing,
    max_never_expires,
);
