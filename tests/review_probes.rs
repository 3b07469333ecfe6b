//! Probes of the control surface: filters, the listing, defaults, stats, observer controls and
//! key serde, under user code that panics or calls back into the client.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::{Counter, Gate, Harness};
use pystackquery::storage::MemoryStorage;
use pystackquery::{
    FetchStatus, QueryClientConfig, QueryDefaults, QueryError, QueryFilter, QueryKey, QueryOptions,
    QueryStatus, RefetchType, key,
};

/// Data whose `Clone` panics while its flag is set.
#[derive(Debug)]
struct Fragile {
    n: u32,
    fail: Arc<AtomicBool>,
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert!(!self.fail.load(Ordering::SeqCst), "fragile clone");
        Self { n: self.n, fail: self.fail.clone() }
    }
}

fn fragile_options(k: QueryKey, fail: &Arc<AtomicBool>) -> QueryOptions<Fragile, String> {
    let fail = fail.clone();
    QueryOptions::new(k, move || {
        let fail = fail.clone();
        async move { Ok(Fragile { n: 1, fail }) }
    })
}

fn quiet<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
}

async fn a_panicking_clone_while_subscribing_neither_escapes_nor_wedges_the_observer(h: Harness) {
    let client = h.client();
    let fail = Arc::new(AtomicBool::new(false));
    let options = fragile_options(key!("fragile", "sub"), &fail).enabled(false);
    client.set_query_data(key!("fragile", "sub"), Fragile { n: 7, fail: fail.clone() }).unwrap();
    let observer = client.watch(&options);

    fail.store(true, Ordering::SeqCst);
    let subscription = quiet(|| observer.subscribe(|_| {}));
    fail.store(false, Ordering::SeqCst);
    let subscription = subscription.expect("subscribe must not panic");
    assert_eq!(client.observer_count(key!("fragile", "sub")), 1);

    // The observer keeps working: it sees the next write, and leaves on its last unsubscribe.
    client.set_query_data(key!("fragile", "sub"), Fragile { n: 8, fail: fail.clone() }).unwrap();
    h.eventually("the next write", || observer.result().data.map(|f| f.n) == Some(8)).await;
    drop(subscription);
    assert_eq!(client.observer_count(key!("fragile", "sub")), 0, "detached");
}

async fn a_panicking_clone_in_set_options_neither_escapes_nor_wedges_the_observer(h: Harness) {
    let client = h.client();
    let fail = Arc::new(AtomicBool::new(false));
    let k = key!("fragile", "set");
    let options = fragile_options(k.clone(), &fail).enabled(false);
    let observer = client.watch(&options);
    let subscription = observer.subscribe(|_| {});
    assert_eq!(client.observer_count(k.clone()), 1);

    // A write whose state the listeners skip (its copy for them panics): the observer still
    // shows no data, so `set_options` of the same key computes its result again.
    fail.store(true, Ordering::SeqCst);
    client.set_query_data(k.clone(), Fragile { n: 3, fail: fail.clone() }).unwrap();
    let moved = quiet(|| observer.set_options(fragile_options(k.clone(), &fail).enabled(false)));
    fail.store(false, Ordering::SeqCst);
    moved.expect("set_options must not panic");

    // Still movable: another key takes the observer, and the old key is left.
    observer.set_options(fragile_options(key!("fragile", "other"), &fail).enabled(false));
    assert_eq!(client.observer_count(k.clone()), 0, "left the old key");
    assert_eq!(client.observer_count(key!("fragile", "other")), 1);
    drop(subscription);
    assert_eq!(client.observer_count(key!("fragile", "other")), 0);
    h.yield_a_little().await;
}

async fn a_panicking_clone_in_watch_and_result_is_reported_not_raised(h: Harness) {
    let client = h.client();
    let fail = Arc::new(AtomicBool::new(false));
    let k = key!("fragile", "watch");
    client.set_query_data(k.clone(), Fragile { n: 5, fail: fail.clone() }).unwrap();
    let options = fragile_options(k.clone(), &fail).enabled(false);

    fail.store(true, Ordering::SeqCst);
    let observer = quiet(|| client.watch(&options));
    let observer = observer.expect("watch must not panic");
    let state = quiet(|| observer.result()).expect("result must not panic");
    fail.store(false, Ordering::SeqCst);
    assert_eq!(state.status, QueryStatus::Error);
    assert!(matches!(&state.error, Some(QueryError::Panicked(m)) if m.contains("Clone")));
    assert_eq!(observer.result().data.map(|f| f.n), Some(5), "once Clone works again");
    h.yield_a_little().await;
}

/// Persisted data whose `Clone` panics once: the clone that finds the countdown at zero.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Countdown {
    n: u32,
    #[serde(skip)]
    clones: Arc<AtomicI64>,
}

impl Clone for Countdown {
    fn clone(&self) -> Self {
        assert!(self.clones.fetch_sub(1, Ordering::SeqCst) != 0, "countdown clone");
        Self { n: self.n, clones: self.clones.clone() }
    }
}

async fn a_panicking_clone_of_persisted_data_neither_escapes_nor_hangs_waiters(h: Harness) {
    let client = h.client_with(QueryClientConfig::default().storage(MemoryStorage::new()));
    let clones = Arc::new(AtomicI64::new(i64::MAX));
    let gate = Gate::default();
    let options = QueryOptions::new(key!("persisted"), {
        let (clones, gate) = (clones.clone(), gate.clone());
        move || {
            let (clones, gate) = (clones.clone(), gate.clone());
            async move {
                gate.wait().await;
                Ok::<_, String>(Countdown { n: 1, clones })
            }
        }
    })
    .persist()
    .retry(0);

    // A fetch: its result is copied for the waiters and for the cache; the copy for L2 panics.
    let fetch = client.fetch_query(&options);
    let opener = async {
        h.eventually("the fetch starts", || client.is_fetching(()) == 1).await;
        clones.store(2, Ordering::SeqCst);
        gate.open();
    };
    let (result, ()) = futures::join!(
        futures::future::select(Box::pin(fetch), Box::pin(h.sleep(Duration::from_secs(10)))),
        opener
    );
    clones.store(i64::MAX, Ordering::SeqCst);
    let futures::future::Either::Left((result, _)) = result else {
        panic!("the fetch's waiter hung")
    };
    assert_eq!(result.unwrap().n, 1);
    let info = client.find(key!("persisted")).unwrap();
    assert_eq!(info.fetch_status, FetchStatus::Idle, "{info}");

    // A write to the persisted key: stored as given, then copied for L2, and that copy panics.
    clones.store(0, Ordering::SeqCst);
    let written = quiet(|| {
        let data = Countdown { n: 2, clones: clones.clone() };
        client.set_query_data(key!("persisted"), data).unwrap();
    });
    clones.store(i64::MAX, Ordering::SeqCst);
    written.expect("set_query_data must not panic");
    assert_eq!(client.get_query_data::<Countdown>(key!("persisted")).unwrap().unwrap().n, 2);
    assert!(client.find(key!("persisted")).unwrap().gc_in.is_some(), "collectable");
}

async fn a_panicking_clone_of_a_selected_value_neither_escapes_nor_wedges_the_observer(h: Harness) {
    let client = h.client();
    let fail = Arc::new(AtomicBool::new(false));
    client.set_query_data(key!("selected"), 3u32).unwrap();
    let options =
        QueryOptions::new(key!("selected"), || async { Ok::<_, String>(4u32) }).enabled(false);
    let observer = client.watch(&options).select({
        let fail = fail.clone();
        move |n: &u32| Fragile { n: *n, fail: fail.clone() }
    });
    drop(observer.subscribe(|_| {}));

    // Subscribing again shows the same data: the value `select` made of it is copied, and
    // that copy panics.
    fail.store(true, Ordering::SeqCst);
    let subscription = quiet(|| observer.subscribe(|_| {}));
    fail.store(false, Ordering::SeqCst);
    let subscription = subscription.expect("subscribe must not panic");
    client.set_query_data(key!("selected"), 5u32).unwrap();
    h.eventually("the next write", || observer.result().data.map(|f| f.n) == Some(5)).await;
    drop(subscription);
    assert_eq!(client.observer_count(key!("selected")), 0, "detached");
}

async fn invalidating_a_query_removed_meanwhile_writes_no_record(h: Harness) {
    let store = MemoryStorage::new();
    let client = h.client_with(QueryClientConfig::default().storage(store.clone()));
    let persisted = |i: i64| {
        QueryOptions::new(key!("gone", i), move || async move { Ok::<_, String>(i) }).persist()
    };
    for i in 0..2 {
        client.fetch_query(&persisted(i)).await.unwrap();
    }
    client.flush_storage().await;
    assert!(store.peek("('gone', 0)").is_some());

    // Deciding on the second query removes the first, which the filter has chosen already.
    let inner = client.clone();
    let filter = QueryFilter::prefix(key!("gone")).predicate(move |q| {
        if q.key == key!("gone", 1) {
            inner.remove_queries(QueryFilter::exact(key!("gone", 0)));
        }
        true
    });
    client.invalidate_queries(filter, false).await;
    client.flush_storage().await;
    assert!(client.find(key!("gone", 0)).is_none());
    assert!(store.peek("('gone', 0)").is_none(), "the removed key's record was written again");
    assert!(client.find(key!("gone", 1)).unwrap().is_invalidated);
}

/// Options for `k` whose function counts its calls and answers `"{k}_{n}"`.
fn counting(k: QueryKey, calls: &Counter) -> QueryOptions<String, String> {
    let calls = calls.clone();
    let name = k.to_string();
    QueryOptions::new(k, move || {
        let n = calls.hit();
        let name = name.clone();
        async move { Ok(format!("{name}_{n}")) }
    })
}

async fn a_predicate_may_call_back_into_the_client(h: Harness) {
    let client = h.client();
    for i in 0..4 {
        client.set_query_data(key!("re", i), i).unwrap();
    }
    let inner = client.clone();
    // The predicate writes, lists and removes queries of the same prefix while it is asked.
    let filter = QueryFilter::prefix(key!("re")).predicate(move |q| {
        let n = q.key.parts().last().and_then(|p| p.as_int()).unwrap_or(0);
        inner.set_query_data(q.key.clone(), 100 + n as i32).unwrap();
        assert!(!inner.find_all(key!("re")).is_empty());
        if n == 3 {
            inner.remove_queries(QueryFilter::exact(key!("re", 2)));
        }
        n % 2 == 0
    });
    client.invalidate_queries(filter.clone(), RefetchType::All).await;
    let invalidated: Vec<String> = client
        .find_all(key!("re"))
        .into_iter()
        .filter(|q| q.is_invalidated)
        .map(|q| q.key.to_string())
        .collect();
    assert_eq!(invalidated, ["('re', 0)"], "key 2 was removed before its turn");
    assert_eq!(client.get_query_data::<i32>(key!("re", 1)).unwrap(), Some(101));
    assert_eq!(client.remove_queries(filter), 1, "key 2 is gone: only key 0 is left to remove");
    assert_eq!(client.len(), 2);
}

async fn invalidation_refetches_neither_paused_nor_function_less_queries(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let paused = counting(key!("inv", "paused"), &calls);
    client.fetch_query(&paused).await.unwrap();
    assert!(client.pause(key!("inv", "paused")));
    client.set_query_data(key!("inv", "bare"), "x".to_string()).unwrap();
    assert_eq!(client.invalidate_queries(key!("inv"), RefetchType::All).await, 2);
    assert_eq!(client.refetch_queries(key!("inv")).await, 0);
    assert_eq!(calls.get(), 1);
    assert_eq!(client.find(key!("inv", "paused")).unwrap().fetch_status, FetchStatus::Paused);
    assert!(client.resume(key!("inv", "paused"), true));
    h.eventually("resumed and refetched", || calls.get() == 2).await;
}

/// An error whose `Display` panics.
struct Unprintable;

impl std::fmt::Display for Unprintable {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("display bug")
    }
}

async fn the_listing_survives_an_error_whose_display_panics(h: Harness) {
    let client = h.client();
    let options =
        QueryOptions::new(key!("unprintable"), || async { Err::<u8, _>(Unprintable) }).retry(0);
    assert!(client.fetch_query(&options).await.is_err());
    let info = client.find(key!("unprintable")).unwrap();
    assert_eq!(info.status, QueryStatus::Error);
    assert!(info.error.unwrap().contains("Display panicked"));
    assert_eq!(client.find_all(QueryFilter::all().stale(true)).len(), 1);
}

async fn extreme_defaults_never_collect_and_never_go_stale(h: Harness) {
    let client = h.client();
    client.set_query_defaults((), QueryDefaults::new().stale_time(Duration::MAX));
    client.set_query_defaults(key!("x"), QueryDefaults::new().gc_time(Duration::MAX));
    let calls = Counter::default();
    let options = counting(key!("x", 1), &calls);
    client.fetch_query(&options).await.unwrap();
    // An hour of virtual time; a moment on the real runtimes.
    h.sleep(if h.manual.is_some() { Duration::from_secs(3600) } else { Duration::from_millis(20) })
        .await;
    let info = client.find(key!("x", 1)).unwrap();
    assert!(!info.is_stale, "the () defaults apply to every key");
    assert!(info.gc_in.is_none(), "never collected");
    assert!(info.to_string().contains("fresh"));
    client.fetch_query(&options).await.unwrap();
    assert_eq!(calls.get(), 1, "fresh: no second fetch");
    // Same prefix again: replaced, not layered.
    client.set_query_defaults((), QueryDefaults::new().stale_time(Duration::ZERO));
    assert!(client.find(key!("x", 1)).unwrap().is_stale);
    assert_eq!(client.get_query_defaults(()).unwrap().stale_time_value(), Some(Duration::ZERO));
}

async fn a_panicking_retry_delay_from_defaults_fails_the_fetch_and_frees_the_key(h: Harness) {
    let client = h.client();
    client.set_query_defaults(
        key!("delay"),
        QueryDefaults::new().retry(2).retry_delay(|_| panic!("delay bug")),
    );
    let calls = Counter::default();
    let options = QueryOptions::new(key!("delay", 1), {
        let calls = calls.clone();
        move || {
            let n = calls.hit();
            async move { if n == 1 { Err("first".to_string()) } else { Ok(n) } }
        }
    });
    match client.fetch_query(&options).await {
        Err(QueryError::Panicked(m)) => assert!(m.contains("retry delay"), "{m}"),
        other => panic!("expected the delay's panic, got {other:?}"),
    }
    assert!(!client.find(key!("delay", 1)).unwrap().is_fetching());
    assert_eq!(client.fetch_query(&options).await.unwrap(), 2, "the key works");
}

async fn fetches_add_up_after_supersedes_and_cancellations(h: Harness) {
    use futures::FutureExt;
    let client = h.client();
    let settled = Counter::default();
    let gate = Gate::default();
    let options = QueryOptions::new(key!("churn"), {
        let gate = gate.clone();
        move || {
            let gate = gate.clone();
            async move {
                gate.wait().await;
                Ok::<_, String>(1u8)
            }
        }
    })
    .on_settled({
        let settled = settled.clone();
        move |_, _| {
            settled.hit();
        }
    });
    let _subscription = client.watch(&options).subscribe(|_| {});
    for round in 0..20 {
        match round % 4 {
            0 => {
                let _ = client.invalidate_queries(key!("churn"), true).now_or_never();
            }
            1 => drop(client.reset_queries(key!("churn"))),
            2 => {
                client.cancel_queries(key!("churn")).await;
                let _ = client.refetch_queries(key!("churn")).now_or_never();
            }
            _ => drop(client.remove_queries(key!("churn"))),
        }
        h.yield_a_little().await;
    }
    gate.open();
    h.eventually("idle", || client.is_fetching(()) == 0).await;
    // Every fetch counted ended once: settled (its callbacks ran) or cancelled.
    h.eventually("the counts add up", || {
        let s = client.cache_stats();
        s.fetches == settled.get() as u64 + s.cancellations
    })
    .await;
    assert!(client.cache_stats().cancellations > 0);
}

async fn set_options_to_a_key_of_another_type_reports_it_and_recovers(h: Harness) {
    let client = h.client();
    client.set_query_data(key!("typed", "num"), 1u32).unwrap();
    let calls = Counter::default();
    let observer = client.watch(&counting(key!("typed", "str"), &calls));
    let subscription = observer.subscribe(|_| {});
    h.eventually("fetched", || observer.result().data.is_some()).await;

    observer.set_options(counting(key!("typed", "num"), &calls));
    let state = observer.result();
    assert!(matches!(state.error, Some(QueryError::TypeMismatch(_))), "{state:?}");
    assert_eq!(client.observer_count(key!("typed", "str")), 0);
    assert_eq!(client.observer_count(key!("typed", "num")), 0);

    observer.set_options(counting(key!("typed", "str"), &calls));
    assert_eq!(client.observer_count(key!("typed", "str")), 1);
    client.set_query_data(key!("typed", "str"), "back".to_string()).unwrap();
    h.eventually("back", || observer.result().data.as_deref() == Some("back")).await;
    drop(subscription);
    assert_eq!(client.observer_count(key!("typed", "str")), 0);
}

async fn observers_follow_their_key_through_a_filtered_removal(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let observer = client.watch(&counting(key!("rm", 1), &calls));
    let _subscription = observer.subscribe(|_| {});
    h.eventually("fetched", || observer.result().data.is_some()).await;
    let removed = client.remove_queries(QueryFilter::all().active());
    assert_eq!(removed, 1);
    assert_eq!(client.observer_count(key!("rm", 1)), 1, "attached to the new query");
    h.eventually("refetched", || calls.get() == 2).await;
    h.eventually("shown", || observer.result().data.as_deref() == Some("('rm', 1)_2")).await;
}

#[test]
fn keys_round_trip_through_json_and_bad_json_is_refused() {
    for k in [
        key!(u64::MAX, i64::MIN, -1, 0),
        key!("ünïcødé 🦀", "", "quote'\"", true, false),
        QueryKey::from(()),
    ] {
        let json = serde_json::to_string(&k).unwrap();
        let back: QueryKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, k, "{json}");
        assert_eq!(back.storage_string(), k.storage_string());
    }
    assert_eq!(serde_json::to_string(&key!(u64::MAX)).unwrap(), "[18446744073709551615]");
    // 2^63 parses as a u64 and stays one number with one representation.
    let big: QueryKey = serde_json::from_str("[9223372036854775808]").unwrap();
    assert_eq!(big, key!(9_223_372_036_854_775_808u64));
    let small: QueryKey = serde_json::from_str("[5]").unwrap();
    assert_eq!(small, key!(5u64));
    for bad in
        ["{}", "\"user\"", "[1.5]", "[null]", "[[1]]", "[{\"a\":1}]", "[18446744073709551616]"]
    {
        let error = serde_json::from_str::<QueryKey>(bad).unwrap_err().to_string();
        assert!(error.contains("key"), "{bad}: {error}");
    }
}

runtime_suite!(
    a_panicking_clone_while_subscribing_neither_escapes_nor_wedges_the_observer,
    a_panicking_clone_in_set_options_neither_escapes_nor_wedges_the_observer,
    a_panicking_clone_in_watch_and_result_is_reported_not_raised,
    a_panicking_clone_of_persisted_data_neither_escapes_nor_hangs_waiters,
    a_panicking_clone_of_a_selected_value_neither_escapes_nor_wedges_the_observer,
    invalidating_a_query_removed_meanwhile_writes_no_record,
    a_predicate_may_call_back_into_the_client,
    invalidation_refetches_neither_paused_nor_function_less_queries,
    the_listing_survives_an_error_whose_display_panics,
    extreme_defaults_never_collect_and_never_go_stale,
    a_panicking_retry_delay_from_defaults_fails_the_fetch_and_frees_the_key,
    fetches_add_up_after_supersedes_and_cancellations,
    set_options_to_a_key_of_another_type_reports_it_and_recovers,
    observers_follow_their_key_through_a_filtered_removal,
);
