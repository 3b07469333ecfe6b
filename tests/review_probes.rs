//! Probes of the control surface: filters, the listing, defaults, stats, observer controls and
//! key serde, under user code that panics or calls back into the client.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::{Gate, Harness};
use pystackquery::storage::MemoryStorage;
use pystackquery::{
    FetchStatus, QueryClientConfig, QueryError, QueryFilter, QueryKey, QueryOptions, QueryStatus,
    key,
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

runtime_suite!(
    a_panicking_clone_while_subscribing_neither_escapes_nor_wedges_the_observer,
    a_panicking_clone_in_set_options_neither_escapes_nor_wedges_the_observer,
    a_panicking_clone_in_watch_and_result_is_reported_not_raised,
    a_panicking_clone_of_persisted_data_neither_escapes_nor_hangs_waiters,
    a_panicking_clone_of_a_selected_value_neither_escapes_nor_wedges_the_observer,
    invalidating_a_query_removed_meanwhile_writes_no_record,
);
