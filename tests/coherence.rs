//! Cross-process coherence, engine side: two clients sharing one `MemoryStorage` and one
//! `MemoryBus` stand for two processes. What one does to a persisted key reaches the other's
//! memory; its own messages are ignored; a reconnection marks persisted keys stale; keys that
//! are not persisted take no part. On every runtime.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Counter, Harness};
use pystackquery::coherence::MemoryBus;
use pystackquery::storage::MemoryStorage;
use pystackquery::{CacheEvent, QueryClient, QueryClientConfig, QueryKey, QueryOptions, key};

struct Fleet {
    a: QueryClient,
    b: QueryClient,
    bus: MemoryBus,
    calls: Counter,
}

fn fleet(h: &Harness) -> Fleet {
    let storage = Arc::new(MemoryStorage::new());
    let bus = MemoryBus::new();
    let config = || {
        QueryClientConfig::default()
            .storage(storage.clone())
            .bus(bus.clone())
            .stale_time(Duration::from_secs(60))
    };
    Fleet { a: h.client_with(config()), b: h.client_with(config()), bus, calls: Counter::default() }
}

fn options(key: QueryKey, calls: &Counter, value: &str) -> QueryOptions<String, String> {
    let (calls, value) = (calls.clone(), value.to_string());
    QueryOptions::new(key, move || {
        calls.hit();
        let value = value.clone();
        async move { Ok(value) }
    })
    .persist()
}

fn data(client: &QueryClient, key: QueryKey) -> Option<String> {
    client.get_query_data::<String>(key).unwrap()
}

fn invalidated(client: &QueryClient, key: QueryKey) -> bool {
    client.get_query_state::<String, String>(key).unwrap().is_some_and(|s| s.is_invalidated)
}

/// Both clients hold `key` with `value` (B hydrated it from A's record).
async fn both_hold(h: &Harness, f: &Fleet, key: QueryKey, value: &str) {
    f.a.fetch_query(&options(key.clone(), &f.calls, value)).await.unwrap();
    f.a.flush_storage().await;
    let got = f.b.fetch_query(&options(key.clone(), &f.calls, "b's own")).await.unwrap();
    assert_eq!(got, value, "B hydrated A's record");
    // Later writes get later timestamps (the manual clock only moves when told).
    h.sleep(Duration::from_millis(10)).await;
}

async fn invalidate_reaches_the_other_process(h: Harness) {
    let f = fleet(&h);
    both_hold(&h, &f, key!("inv", 1), "v1").await;
    assert!(!invalidated(&f.b, key!("inv", 1)));
    assert_eq!(f.a.invalidate_queries(key!("inv"), false).await, 1);
    h.eventually("B marks it stale", || invalidated(&f.b, key!("inv", 1))).await;
    assert!(f.b.find(key!("inv", 1)).unwrap().is_stale);
    assert_eq!(data(&f.b, key!("inv", 1)).as_deref(), Some("v1"), "data is kept");
}

async fn invalidate_refetches_active_queries_elsewhere(h: Harness) {
    let f = fleet(&h);
    both_hold(&h, &f, key!("active"), "v1").await;
    let b_calls = Counter::default();
    let observer = f.b.watch(&options(key!("active"), &b_calls, "b refetched"));
    let _subscription = observer.subscribe(|_| {});
    f.a.invalidate_queries(key!("active"), false).await;
    h.eventually("B refetches its active query", || {
        data(&f.b, key!("active")).as_deref() == Some("b refetched")
    })
    .await;
    // B's refetch is announced in turn: A adopts the newer data.
    h.eventually("A adopts B's data", || {
        data(&f.a, key!("active")).as_deref() == Some("b refetched")
    })
    .await;
}

async fn remove_reaches_the_other_process(h: Harness) {
    let f = fleet(&h);
    both_hold(&h, &f, key!("rm", 1), "v1").await;
    assert_eq!(f.a.remove_queries(key!("rm")), 1);
    h.eventually("B drops it", || f.b.find(key!("rm", 1)).is_none()).await;
    // The record is gone too: B's next read fetches.
    let before = f.calls.get();
    let got = f.b.fetch_query(&options(key!("rm", 1), &f.calls, "refetched")).await.unwrap();
    assert_eq!((got.as_str(), f.calls.get()), ("refetched", before + 1));
}

async fn reset_reaches_the_other_process(h: Harness) {
    let f = fleet(&h);
    both_hold(&h, &f, key!("reset"), "v1").await;
    assert_eq!(f.a.reset_queries(key!("reset")), 1);
    h.eventually("B resets it", || data(&f.b, key!("reset")).is_none()).await;
    assert!(f.b.find(key!("reset")).is_some(), "reset keeps the query");
}

async fn set_and_fetch_reach_the_other_process_newer_wins(h: Harness) {
    let f = fleet(&h);
    both_hold(&h, &f, key!("set"), "v1").await;
    f.a.set_query_data(key!("set"), "v2".to_string()).unwrap();
    h.eventually("B adopts A's set", || data(&f.b, key!("set")).as_deref() == Some("v2")).await;
    assert!(!f.b.find(key!("set")).unwrap().is_stale, "adopted data is as fresh as A's");

    // A successful fetch in A reaches B as well, without B calling its function.
    h.sleep(Duration::from_millis(10)).await;
    let b_calls = f.calls.get();
    f.a.invalidate_queries(key!("set"), false).await;
    // Stale while revalidate: the invalidated data now, the fetch in the background.
    let stale = f.a.fetch_query(&options(key!("set"), &f.calls, "v3")).await.unwrap();
    assert_eq!(stale, "v2");
    h.eventually("A fetched", || data(&f.a, key!("set")).as_deref() == Some("v3")).await;
    h.eventually("B adopts A's fetch", || data(&f.b, key!("set")).as_deref() == Some("v3")).await;
    assert_eq!(f.calls.get(), b_calls + 1, "only A fetched");

    // Older data never wins: B writes newer data, then A's older announcement is ignored.
    h.sleep(Duration::from_millis(10)).await;
    f.b.set_query_data(key!("set"), "v4".to_string()).unwrap();
    h.eventually("A adopts B's set", || data(&f.a, key!("set")).as_deref() == Some("v4")).await;
    f.a.flush_storage().await;
    f.b.flush_storage().await;
    h.yield_a_little().await;
    assert_eq!(data(&f.b, key!("set")).as_deref(), Some("v4"));
}

async fn own_messages_are_ignored(h: Harness) {
    let f = fleet(&h);
    both_hold(&h, &f, key!("own"), "v1").await;
    let updates = Arc::new(AtomicUsize::new(0));
    let seen = updates.clone();
    let _events = f.a.subscribe_events(move |event| {
        if matches!(event, CacheEvent::Updated(k) if *k == key!("own")) {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let published = f.bus.published();
    f.a.invalidate_queries(key!("own"), false).await;
    f.a.flush_storage().await;
    h.eventually("B hears it", || invalidated(&f.b, key!("own"))).await;
    h.yield_a_little().await;
    assert_eq!(f.bus.published(), published + 1);
    assert_eq!(updates.load(Ordering::SeqCst), 1, "A applied only its own invalidation");
}

async fn a_reconnection_marks_persisted_keys_stale(h: Harness) {
    let f = fleet(&h);
    both_hold(&h, &f, key!("outage", 1), "v1").await;
    both_hold(&h, &f, key!("outage", 2), "v1").await;
    f.b.set_query_data(key!("local only"), 1u32).unwrap(); // not persisted
    f.bus.disconnect();
    f.a.invalidate_queries(key!("outage", 1), false).await;
    f.a.flush_storage().await;
    h.yield_a_little().await;
    assert!(!invalidated(&f.b, key!("outage", 1)), "the message was lost");
    f.bus.reconnect();
    h.eventually("B marks every persisted key stale", || {
        invalidated(&f.b, key!("outage", 1)) && invalidated(&f.b, key!("outage", 2))
    })
    .await;
    let fresh: Vec<_> = f.b.find_all(()).into_iter().filter(|q| !q.is_stale).collect();
    assert_eq!(fresh.len(), 1, "only the key that is not persisted stays fresh: {fresh:?}");
    assert_eq!(fresh[0].key, key!("local only"));
}

async fn keys_not_persisted_take_no_part(h: Harness) {
    let f = fleet(&h);
    let published = f.bus.published();
    f.a.set_query_data(key!("plain"), 1u32).unwrap();
    f.b.set_query_data(key!("plain"), 1u32).unwrap();
    f.a.invalidate_queries(key!("plain"), false).await;
    f.a.remove_queries(key!("plain"));
    f.a.flush_storage().await;
    h.yield_a_little().await;
    assert_eq!(f.bus.published(), published);
    assert!(f.b.find(key!("plain")).is_some_and(|q| !q.is_stale));
}

async fn a_panicking_listener_does_not_stop_delivery(h: Harness) {
    let f = fleet(&h);
    both_hold(&h, &f, key!("p", 1), "v1").await;
    both_hold(&h, &f, key!("p", 2), "v1").await;
    let _events = f.b.subscribe_events(|event| {
        if matches!(event, CacheEvent::Updated(_)) {
            panic!("a listener that panics");
        }
    });
    f.a.invalidate_queries(key!("p", 1), false).await;
    f.a.set_query_data(key!("p", 2), "v2".to_string()).unwrap();
    h.eventually("both reach B", || {
        invalidated(&f.b, key!("p", 1)) && data(&f.b, key!("p", 2)).as_deref() == Some("v2")
    })
    .await;
}

runtime_suite!(
    invalidate_reaches_the_other_process,
    invalidate_refetches_active_queries_elsewhere,
    remove_reaches_the_other_process,
    reset_reaches_the_other_process,
    set_and_fetch_reach_the_other_process_newer_wins,
    own_messages_are_ignored,
    a_reconnection_marks_persisted_keys_stale,
    keys_not_persisted_take_no_part,
    a_panicking_listener_does_not_stop_delivery,
);
