//! `QueryClient::cache_stats`: what each read, fetch, retry, eviction, garbage collection and
//! cancellation counts, scenario by scenario, on every runtime; the text and JSON forms of
//! `CacheStats` and `StorageStats`; and the event and stats types shared across tasks as they
//! are.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Counter, Gate, Harness};
use pystackquery::storage::StorageStats;
use pystackquery::{
    CacheEvent, CacheStats, EventSubscription, QueryClient, QueryClientConfig, QueryError,
    QueryKey, QueryOptions, key,
};

// Shared across tasks and threads without a wrapper: checked at compile time.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    fn clone<T: Clone>() {}
    send_sync::<CacheStats>();
    send_sync::<StorageStats>();
    send_sync::<CacheEvent>();
    send_sync::<EventSubscription>();
    clone::<CacheEvent>();
};

/// Every counter, for exact comparisons (`CacheStats` is `#[non_exhaustive]`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    hits: u64,
    misses: u64,
    fetches: u64,
    failures: u64,
    retries: u64,
    evictions: u64,
    gc_removals: u64,
    cancellations: u64,
}

fn counts(client: &QueryClient) -> Counts {
    let s = client.cache_stats();
    Counts {
        hits: s.hits,
        misses: s.misses,
        fetches: s.fetches,
        failures: s.failures,
        retries: s.retries,
        evictions: s.evictions,
        gc_removals: s.gc_removals,
        cancellations: s.cancellations,
    }
}

fn counting(key: QueryKey, calls: &Counter) -> QueryOptions<String, String> {
    let calls = calls.clone();
    QueryOptions::new(key, move || {
        let n = calls.hit();
        async move { Ok(format!("data_{n}")) }
    })
    .stale_time(Duration::from_secs(60))
}

fn gated(key: QueryKey, gate: &Gate) -> QueryOptions<String, String> {
    let gate = gate.clone();
    QueryOptions::new(key, move || {
        let gate = gate.clone();
        async move {
            gate.wait().await;
            Ok("gated".to_string())
        }
    })
}

async fn a_cold_fetch_is_one_miss_and_one_fetch(h: Harness) {
    let client = h.client();
    assert_eq!(counts(&client), Counts::default(), "nothing before the first read");
    let calls = Counter::default();
    client.fetch_query(&counting(key!("cold"), &calls)).await.unwrap();
    assert_eq!(counts(&client), Counts { misses: 1, fetches: 1, ..Counts::default() });
    assert_eq!(client.cache_stats().hit_ratio(), 0.0);
}

async fn fresh_data_is_a_hit_for_every_read(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = counting(key!("fresh"), &calls);
    client.fetch_query(&options).await.unwrap();
    client.fetch_query(&options).await.unwrap();
    client.fetch_query_fresh(&options).await.unwrap();
    client.ensure_query_data(&options).await.unwrap();
    client.prefetch_query(&options).await;
    assert_eq!(calls.get(), 1);
    assert_eq!(counts(&client), Counts { hits: 4, misses: 1, fetches: 1, ..Counts::default() });
    assert_eq!(client.cache_stats().hit_ratio(), 0.8);
}

async fn stale_data_returned_at_once_is_a_hit_and_its_revalidation_a_fetch(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = counting(key!("stale"), &calls);
    client.fetch_query(&options).await.unwrap();
    client.invalidate_queries(key!("stale"), false).await;
    assert_eq!(client.fetch_query(&options).await.unwrap(), "data_1", "stale, at once");
    h.eventually("revalidated", || {
        client.get_query_data::<String>(key!("stale")).unwrap().as_deref() == Some("data_2")
    })
    .await;
    assert_eq!(counts(&client), Counts { hits: 1, misses: 1, fetches: 2, ..Counts::default() });
    // Waiting for the refetch of stale data is a miss.
    client.invalidate_queries(key!("stale"), false).await;
    assert_eq!(client.fetch_query_fresh(&options).await.unwrap(), "data_3");
    assert_eq!(counts(&client), Counts { hits: 1, misses: 2, fetches: 3, ..Counts::default() });
}

async fn concurrent_callers_share_one_fetch_and_each_counts_a_miss(h: Harness) {
    const CALLERS: u64 = 8;
    let client = h.client();
    let gate = Gate::default();
    let options = gated(key!("shared"), &gate);
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, options) = (client.clone(), options.clone());
            h.runtime.spawn_with_handle(async move { client.fetch_query(&options).await })
        })
        .collect();
    h.eventually("every caller waits", || client.cache_stats().misses == CALLERS).await;
    gate.open();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), "gated");
    }
    let stats = client.cache_stats();
    assert_eq!(stats.hits + stats.misses, CALLERS);
    assert_eq!(counts(&client), Counts { misses: CALLERS, fetches: 1, ..Counts::default() });
}

async fn a_failing_fetch_counts_its_retries_and_one_failure(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options: QueryOptions<String, String> = QueryOptions::new(key!("failing"), {
        let calls = calls.clone();
        move || {
            calls.hit();
            async { Err("down".to_string()) }
        }
    })
    .retry(2)
    .retry_delay(|_| Duration::ZERO);
    assert!(matches!(client.fetch_query(&options).await, Err(QueryError::Failed(_))));
    assert_eq!(calls.get(), 3, "the first attempt and two retries");
    assert_eq!(
        counts(&client),
        Counts { misses: 1, fetches: 1, failures: 1, retries: 2, ..Counts::default() }
    );
}

async fn a_full_cache_counts_its_evictions(h: Harness) {
    let client = h.client_with(QueryClientConfig::default().cache_max_size(2));
    let calls = Counter::default();
    for i in 0..3 {
        client.fetch_query(&counting(key!("lru", i), &calls)).await.unwrap();
    }
    assert_eq!(client.cached_keys(), vec![key!("lru", 1), key!("lru", 2)]);
    assert_eq!(
        counts(&client),
        Counts { misses: 3, fetches: 3, evictions: 1, ..Counts::default() }
    );
}

async fn garbage_collection_counts_each_query_it_removes(h: Harness) {
    const GC_TIME: Duration = Duration::from_millis(50);
    let client = h.client_with(QueryClientConfig::default().gc_time(GC_TIME));
    let calls = Counter::default();
    client.fetch_query(&counting(key!("collected"), &calls)).await.unwrap();
    if h.manual.is_some() {
        // Only the manual clock can tell "just before" from "at" gc_time.
        h.sleep(GC_TIME - Duration::from_millis(1)).await;
        assert_eq!((client.len(), client.cache_stats().gc_removals), (1, 0), "not yet");
    }
    h.eventually("collected", || client.is_empty()).await;
    assert_eq!(
        counts(&client),
        Counts { misses: 1, fetches: 1, gc_removals: 1, ..Counts::default() }
    );
}

async fn cancel_queries_counts_a_cancellation_not_a_failure(h: Harness) {
    let client = h.client();
    let gate = Gate::default(); // never opened
    let options = gated(key!("cancelled"), &gate);
    let caller = h.runtime.spawn_with_handle({
        let (client, options) = (client.clone(), options.clone());
        async move { client.fetch_query(&options).await }
    });
    h.eventually("the caller waits", || client.cache_stats().misses == 1).await;
    assert_eq!(client.cancel_queries(key!("cancelled")).await, 1);
    assert!(matches!(caller.await, Err(QueryError::Cancelled)));
    assert_eq!(
        counts(&client),
        Counts { misses: 1, fetches: 1, cancellations: 1, ..Counts::default() }
    );
}

async fn display_names_every_counter(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = counting(key!("shown"), &calls);
    client.fetch_query(&options).await.unwrap();
    client.fetch_query(&options).await.unwrap();
    let text = client.cache_stats().to_string();
    assert_eq!(
        text,
        "hits 1, misses 1, fetches 1, failures 0, retries 0, evictions 0, gc removals 0, \
         cancellations 0"
    );
    for name in [
        "hits",
        "misses",
        "fetches",
        "failures",
        "retries",
        "evictions",
        "gc removals",
        "cancellations",
    ] {
        assert!(text.contains(name), "{name} missing from {text:?}");
    }
}

async fn serializes_with_the_field_names(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    client.fetch_query(&counting(key!("json"), &calls)).await.unwrap();
    let json = serde_json::to_value(client.cache_stats()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "hits": 0, "misses": 1, "fetches": 1, "failures": 0, "retries": 0,
            "evictions": 0, "gc_removals": 0, "cancellations": 0,
        })
    );
}

#[test]
fn storage_stats_show_and_serialize_every_counter() {
    let stats = StorageStats::default();
    assert_eq!(
        stats.to_string(),
        "hydrations 0, hits 0, misses 0, decode failures 0, encode failures 0, writes 0, \
         deletes 0, write drops 0, errors 0, timeouts 0, skipped 0, adopted 0"
    );
    let json = serde_json::to_value(stats).unwrap();
    let mut fields: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "adopted",
            "decode_failures",
            "deletes",
            "encode_failures",
            "errors",
            "hits",
            "hydrations",
            "misses",
            "skipped",
            "timeouts",
            "write_drops",
            "writes",
        ]
    );
    assert!(json.as_object().unwrap().values().all(|v| v == 0));
}

runtime_suite!(
    a_cold_fetch_is_one_miss_and_one_fetch,
    fresh_data_is_a_hit_for_every_read,
    stale_data_returned_at_once_is_a_hit_and_its_revalidation_a_fetch,
    concurrent_callers_share_one_fetch_and_each_counts_a_miss,
    a_failing_fetch_counts_its_retries_and_one_failure,
    a_full_cache_counts_its_evictions,
    garbage_collection_counts_each_query_it_removes,
    cancel_queries_counts_a_cancellation_not_a_failure,
    display_names_every_counter,
    serializes_with_the_field_names,
);
