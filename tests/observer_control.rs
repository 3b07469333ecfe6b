//! TanStack Query v5's `QueryObserver` controls: `set_options` (another key, or other options
//! of the same key, while subscribed), memoised `select`, placeholder data made from the
//! previous data (`keep_previous_data`), observer counts per key, and streams that end with
//! their client. Every scenario runs on every runtime.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Counter, Gate, Harness};
use futures::StreamExt;
use pystackquery::{QueryError, QueryKey, QueryOptions, QueryState, key};

type Log<T> = Arc<Mutex<Vec<QueryState<T, String>>>>;

/// A listener that keeps every state it gets.
fn logger<T: Clone + Send + 'static>() -> (Log<T>, impl Fn(&QueryState<T, String>) + Send + Sync) {
    let log: Log<T> = Arc::default();
    let writer = log.clone();
    (log, move |state: &QueryState<T, String>| writer.lock().unwrap().push(state.clone()))
}

fn last<T: Clone>(log: &Log<T>) -> Option<QueryState<T, String>> {
    log.lock().unwrap().last().cloned()
}

/// `("user", id)`, fetched as `"user {id} #{n}"` (n counts this key's calls).
fn user(id: i64, calls: &Counter) -> QueryOptions<String, String> {
    let calls = calls.clone();
    QueryOptions::new(key!("user", id), move || {
        let n = calls.hit();
        async move { Ok(format!("user {id} #{n}")) }
    })
}

/// `("page", n)`, whose fetch waits at `gate` (when given) before answering `"page {n}"`.
fn page(n: i64, gate: Option<&Gate>) -> QueryOptions<String, String> {
    let gate = gate.cloned();
    QueryOptions::new(key!("page", n), move || {
        let gate = gate.clone();
        async move {
            if let Some(gate) = gate {
                gate.wait().await;
            }
            Ok(format!("page {n}"))
        }
    })
}

fn cached(client: &pystackquery::QueryClient, k: QueryKey) -> bool {
    client.cached_keys().contains(&k)
}

async fn set_options_to_another_key_keeps_the_listeners_and_shows_the_new_key(h: Harness) {
    let client = h.client();
    let (calls_1, calls_2) = (Counter::default(), Counter::default());
    let observer = client.watch(&user(1, &calls_1));
    let (log, listener) = logger::<String>();
    let _sub = observer.subscribe(listener);
    h.eventually("user 1", || last(&log).and_then(|s| s.data).as_deref() == Some("user 1 #1"))
        .await;

    observer.set_options(user(2, &calls_2));
    h.eventually("user 2", || last(&log).and_then(|s| s.data).as_deref() == Some("user 2 #1"))
        .await;
    assert_eq!(observer.subscriber_count(), 1, "the same subscription");
    assert_eq!(calls_2.get(), 1, "the new key was fetched (it was stale: never fetched)");
    assert_eq!(observer.result().data.as_deref(), Some("user 2 #1"));

    // The old key's states are not the observer's any more.
    let before = log.lock().unwrap().len();
    client.set_query_data(key!("user", 1), "written to user 1".to_string()).unwrap();
    h.yield_a_little().await;
    let after: Vec<_> = log.lock().unwrap()[before..].iter().map(|s| s.data.clone()).collect();
    assert!(after.is_empty(), "a state of the old key was delivered: {after:?}");
    client.set_query_data(key!("user", 2), "written to user 2".to_string()).unwrap();
    h.eventually("the new key's writes arrive", || {
        last(&log).and_then(|s| s.data).as_deref() == Some("written to user 2")
    })
    .await;
}

async fn set_options_from_a_listener_moves_on_to_the_next_key(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let observer = Arc::new(client.watch(&user(1, &calls)));
    let (weak, next_calls) = (Arc::downgrade(&observer), calls.clone());
    let (log, listener) = logger::<String>();
    let _sub = observer.subscribe(move |state| {
        listener(state);
        // Re-entrant: once user 1 is in, the listener moves its own observer on to user 2.
        if state.data.as_deref() == Some("user 1 #1")
            && let Some(observer) = weak.upgrade()
        {
            observer.set_options(user(2, &next_calls));
        }
    });
    h.eventually("user 2", || last(&log).and_then(|s| s.data).as_deref() == Some("user 2 #2"))
        .await;
    assert_eq!(client.observer_count(key!("user", 1)), 0);
    assert_eq!(client.observer_count(key!("user", 2)), 1);
    assert_eq!(calls.get(), 2);
}

async fn the_old_key_becomes_unobserved_and_its_gc_clock_starts(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let gc = Duration::from_millis(200);
    let observer = client.watch(&user(1, &calls).gc_time(gc));
    let _sub = observer.subscribe(|_| {});
    h.eventually("user 1", || observer.result().data.is_some()).await;
    assert_eq!(client.observer_count(key!("user", 1)), 1);

    observer.set_options(user(2, &calls).gc_time(gc));
    assert_eq!(client.observer_count(key!("user", 1)), 0, "left at once");
    assert_eq!(client.observer_count(key!("user", 2)), 1);
    assert!(cached(&client, key!("user", 1)), "still cached until its gc time has passed");
    h.eventually("user 2", || observer.result().data.as_deref() == Some("user 2 #2")).await;
    h.eventually("the old key is collected", || !cached(&client, key!("user", 1))).await;
    h.sleep(gc * 2).await;
    assert!(cached(&client, key!("user", 2)), "the observed key is never collected");
}

async fn enabling_with_set_options_fetches_stale_data_and_disabling_makes_it_inactive(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let off = user(1, &calls).enabled(false);
    let observer = client.watch(&off);
    let _sub = observer.subscribe(|_| {});
    h.yield_a_little().await;
    assert_eq!(calls.get(), 0, "disabled: no fetch");
    assert_eq!(client.observer_count(key!("user", 1)), 1, "a disabled observer is attached");

    observer.set_options(user(1, &calls));
    h.eventually("enabled: fetched", || observer.result().data.as_deref() == Some("user 1 #1"))
        .await;
    assert_eq!(calls.get(), 1);
    client.invalidate_queries(key!("user", 1), true).await;
    assert_eq!(calls.get(), 2, "enabled: invalidation refetches for it");

    observer.set_options(user(1, &calls).enabled(false));
    client.invalidate_queries(key!("user", 1), true).await;
    h.yield_a_little().await;
    assert_eq!(calls.get(), 2, "disabled again: not active, invalidation does not refetch");

    // Enabling fresh data fetches nothing.
    client.set_query_data(key!("user", 1), "fresh".to_string()).unwrap();
    observer.set_options(user(1, &calls).stale_time(Duration::from_secs(600)));
    h.yield_a_little().await;
    assert_eq!(calls.get(), 2, "fresh: no fetch");
    assert_eq!(observer.result().data.as_deref(), Some("fresh"));
}

async fn changing_the_interval_restarts_polling_and_disabling_stops_it(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    client.set_query_data(key!("user", 1), "seed".to_string()).unwrap();
    let fresh = |every: Duration| {
        user(1, &calls).stale_time(Duration::from_secs(7200)).refetch_interval(every)
    };
    let observer = client.watch(&fresh(Duration::from_secs(3600)));
    let _sub = observer.subscribe(|_| {});
    h.sleep(Duration::from_millis(50)).await;
    assert_eq!(calls.get(), 0, "fresh data, an hourly interval: nothing yet");

    observer.set_options(fresh(Duration::from_millis(10)));
    h.eventually("polling at the new period", || calls.get() >= 3).await;

    observer.set_options(fresh(Duration::from_millis(10)).enabled(false));
    h.yield_a_little().await;
    let stopped = calls.get();
    h.sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.get(), stopped, "a disabled observer does not poll");

    observer.set_options(fresh(Duration::ZERO));
    h.sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.get(), stopped, "an interval of zero never polls");
    if let Some(manual) = &h.manual {
        // On the manual clock, exactly one fetch per period.
        let _ = manual;
        observer.set_options(fresh(Duration::from_secs(30)));
        h.sleep(Duration::from_secs(95)).await;
        assert_eq!(calls.get(), stopped + 3);
    }
}

async fn keep_previous_data_pages_across_set_options(h: Harness) {
    let client = h.client();
    let (first, gate) = (Gate::default(), Gate::default());
    let observer = client.watch(&page(1, Some(&first)).keep_previous_data());
    let (log, listener) = logger::<String>();
    let _sub = observer.subscribe(listener);
    let state = observer.result();
    assert!(state.data.is_none() && !state.is_placeholder, "no previous data yet: {state:?}");
    first.open();
    h.eventually("page 1", || observer.result().data.as_deref() == Some("page 1")).await;

    observer.set_options(page(2, Some(&gate)).keep_previous_data());
    let state = observer.result();
    assert_eq!(state.data.as_deref(), Some("page 1"), "the previous page stays on show");
    assert!(state.is_placeholder && state.is_pending() && state.is_fetching(), "{state:?}");
    assert_eq!(client.get_query_data::<String>(key!("page", 2)).unwrap(), None, "not cached");
    let shown = last(&log).unwrap();
    assert!(shown.is_placeholder && shown.data.as_deref() == Some("page 1"), "{shown:?}");

    gate.open();
    h.eventually("page 2", || observer.result().data.as_deref() == Some("page 2")).await;
    assert!(!observer.result().is_placeholder);
    let last_state = last(&log).unwrap();
    assert!(!last_state.is_placeholder && last_state.data.as_deref() == Some("page 2"));

    // Back to a cached page: its own data, not a placeholder.
    observer.set_options(page(1, None).keep_previous_data());
    let state = observer.result();
    assert_eq!(state.data.as_deref(), Some("page 1"));
    assert!(!state.is_placeholder);
}

async fn select_runs_once_per_data_change_not_per_state_change(h: Harness) {
    let client = h.client();
    let (calls, selects, gate) = (Counter::default(), Counter::default(), Gate::default());
    client.set_query_data(key!("counted"), 0u32).unwrap();
    let options = QueryOptions::new(key!("counted"), {
        let (calls, gate) = (calls.clone(), gate.clone());
        move || {
            let n = calls.hit() as u32;
            let gate = gate.clone();
            async move {
                gate.wait().await;
                Ok::<_, String>(n)
            }
        }
    });
    let observer = client.watch(&options).select({
        let selects = selects.clone();
        move |n: &u32| {
            selects.hit();
            format!("n = {n}")
        }
    });
    let (log, listener) = logger::<String>();
    let _sub = observer.subscribe(listener);
    // Stale cached data: shown at once, and revalidated; the fetch waits at the gate.
    h.eventually("fetching", || last(&log).is_some_and(|s| s.is_fetching())).await;
    assert_eq!(last(&log).unwrap().data.as_deref(), Some("n = 0"));
    assert_eq!(selects.get(), 1, "the fetch starting does not change the data");

    gate.open();
    h.eventually("fetched", || last(&log).and_then(|s| s.data).as_deref() == Some("n = 1")).await;
    h.eventually("idle", || !last(&log).unwrap().is_fetching()).await;
    assert_eq!(selects.get(), 2, "one run for the new data");

    client.invalidate_queries(key!("counted"), false).await;
    h.eventually("invalidated", || last(&log).unwrap().is_invalidated).await;
    assert_eq!(observer.result().data.as_deref(), Some("n = 1"));
    assert_eq!(selects.get(), 2, "invalidation changes the state, not the data");

    let refetched = observer.refetch().await;
    assert_eq!(refetched.data.as_deref(), Some("n = 2"));
    h.eventually("idle again", || !last(&log).unwrap().is_fetching()).await;
    let states = log.lock().unwrap().len();
    assert!(states >= 4, "several states were delivered: {states}");
    assert_eq!(selects.get(), 3, "once per data: {states} states, 3 data");
}

async fn a_panicking_select_keeps_the_last_good_value(h: Harness) {
    let client = h.client();
    let selects = Counter::default();
    client.set_query_data(key!("fragile"), 1u32).unwrap();
    let options = QueryOptions::new(key!("fragile"), || async { Ok::<_, String>(1u32) })
        .stale_time(Duration::from_secs(600));
    let observer = client.watch(&options).select({
        let selects = selects.clone();
        move |n: &u32| {
            selects.hit();
            assert_ne!(*n, 2, "two is not selectable");
            n * 10
        }
    });
    let _sub = observer.subscribe(|_| {});
    assert_eq!(observer.result().data, Some(10));

    client.set_query_data(key!("fragile"), 2u32).unwrap();
    let state = observer.result();
    assert!(state.is_error(), "{state:?}");
    assert!(
        matches!(state.error, Some(QueryError::Panicked(ref m)) if m.contains("not selectable"))
    );
    assert_eq!(state.data, Some(10), "the last good value stays");
    assert_eq!(selects.get(), 2);

    client.invalidate_queries(key!("fragile"), false).await;
    let state = observer.result();
    assert!(state.is_invalidated && state.is_error() && state.data == Some(10), "{state:?}");
    assert_eq!(selects.get(), 2, "the same data is not selected again");

    client.set_query_data(key!("fragile"), 3u32).unwrap();
    let state = observer.result();
    assert!(state.is_success() && state.error.is_none(), "{state:?}");
    assert_eq!(state.data, Some(30));
}

async fn a_placeholder_function_gets_the_previous_data_and_runs_only_when_it_changes(h: Harness) {
    let client = h.client();
    let (gate, made) = (Gate::default(), Counter::default());
    let with_fn = |n: i64, gate: Option<&Gate>| {
        let made = made.clone();
        page(n, gate).placeholder_data_fn(move |previous: Option<&String>| {
            made.hit();
            Some(match previous {
                Some(previous) => format!("after {previous}"),
                None => "nothing yet".to_string(),
            })
        })
    };
    let first = Gate::default();
    let observer = client.watch(&with_fn(1, Some(&first)));
    let _sub = observer.subscribe(|_| {});
    let state = observer.result();
    assert_eq!(state.data.as_deref(), Some("nothing yet"));
    assert!(state.is_placeholder);
    let runs = made.get();
    // State changes without data.
    assert!(client.pause(key!("page", 1)));
    assert!(client.resume(key!("page", 1), false));
    h.yield_a_little().await;
    assert_eq!(observer.result().data.as_deref(), Some("nothing yet"));
    assert_eq!(made.get(), runs, "same options, same previous data: not made again");

    first.open();
    h.eventually("page 1", || observer.result().data.as_deref() == Some("page 1")).await;
    observer.set_options(with_fn(2, Some(&gate)));
    let state = observer.result();
    assert_eq!(state.data.as_deref(), Some("after page 1"));
    assert!(state.is_placeholder);
    gate.open();
    h.eventually("page 2", || observer.result().data.as_deref() == Some("page 2")).await;
    assert!(!observer.result().is_placeholder);

    // The value form still works, and a function returning `None` shows nothing.
    let later = Gate::default();
    let valued = client.watch(&page(3, Some(&later)).placeholder_data("loading".into()));
    let _v = valued.subscribe(|_| {});
    assert!(valued.result().is_placeholder && valued.result().data.as_deref() == Some("loading"));
    let none = client.watch(&page(4, Some(&later)).placeholder_data_fn(|_| None));
    let _n = none.subscribe(|_| {});
    assert!(!none.result().is_placeholder && none.result().data.is_none());
    later.open();
    h.eventually("page 4", || none.result().data.as_deref() == Some("page 4")).await;
}

async fn observer_count_counts_attached_observers_per_key(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    assert_eq!(client.observer_count(key!("user", 1)), 0, "not cached");
    let a = client.watch(&user(1, &calls));
    let b = client.watch(&user(1, &calls).enabled(false));
    assert_eq!(client.observer_count(key!("user", 1)), 0, "not subscribed");
    let a1 = a.subscribe(|_| {});
    let a2 = a.subscribe(|_| {});
    let b1 = b.subscribe(|_| {});
    assert_eq!(client.observer_count(key!("user", 1)), 2, "observers, enabled or not");
    assert_eq!(client.observer_count(key!("user")), 0, "a key, not a prefix");
    drop(a1);
    assert_eq!(client.observer_count(key!("user", 1)), 2, "a still has a subscription");
    b.set_options(user(2, &calls));
    assert_eq!(client.observer_count(key!("user", 1)), 1);
    assert_eq!(client.observer_count(key!("user", 2)), 1);
    drop((a2, b1));
    assert_eq!(client.observer_count(key!("user", 1)), 0);
    assert_eq!(client.observer_count(key!("user", 2)), 0);
}

async fn a_stream_ends_once_the_client_is_dropped_and_not_before(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    client.set_query_data(key!("user", 1), "seed".to_string()).unwrap();
    let options = user(1, &calls).stale_time(Duration::from_secs(600));
    let observer = client.watch(&options);
    let mut stream = observer.stream();
    assert_eq!(stream.next().await.unwrap().data.as_deref(), Some("seed"));
    h.yield_a_little().await;
    assert!(futures::poll!(stream.next()).is_pending(), "nothing new, not ended");

    let other = client.clone();
    drop(client);
    h.yield_a_little().await;
    assert!(futures::poll!(stream.next()).is_pending(), "a clone of the client is alive");
    other.set_query_data(key!("user", 1), "last".to_string()).unwrap();
    let late = client_less_observer(&other, &calls);
    drop(other);

    assert_eq!(stream.next().await.unwrap().data.as_deref(), Some("last"), "pending state first");
    assert!(stream.next().await.is_none(), "then the end");
    assert!(stream.next().await.is_none(), "and it stays ended");
    assert_eq!(observer.result().data.as_deref(), Some("last"), "the observer keeps its state");

    // An observer of a closed client delivers its state once and starts nothing.
    let (log, listener) = logger::<String>();
    let _sub = late.subscribe(listener);
    h.yield_a_little().await;
    let states = log.lock().unwrap().clone();
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(calls.get(), 0, "no fetch for a closed client");
    let mut ended = late.stream();
    assert!(ended.next().await.is_some(), "its current state");
    assert!(ended.next().await.is_none());
}

/// An observer of a stale key made before the client goes (it would fetch on subscribing).
fn client_less_observer(
    client: &pystackquery::QueryClient,
    calls: &Counter,
) -> pystackquery::QueryObserver<String, String> {
    client.watch(&user(9, calls))
}

async fn set_options_racing_subscribe_and_unsubscribe(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let keys = 3;
    let options = {
        let calls = calls.clone();
        move |i: i64| user(i % keys, &calls).enabled(i % 2 == 0)
    };
    let observer = Arc::new(client.watch(&options(0)));
    const ROUNDS: i64 = 300;
    let race = |hold: bool| {
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let held = hold.then(|| observer.subscribe(|_| {}));
        let switcher = std::thread::spawn({
            let (observer, barrier, options) = (observer.clone(), barrier.clone(), options.clone());
            move || {
                barrier.wait();
                for i in 0..ROUNDS {
                    observer.set_options(options(i));
                }
            }
        });
        let subscribers: Vec<_> = (0..2)
            .map(|_| {
                let (observer, barrier) = (observer.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..ROUNDS {
                        drop(observer.subscribe(|_| {}));
                    }
                })
            })
            .collect();
        switcher.join().unwrap();
        subscribers.into_iter().for_each(|t| t.join().unwrap());
        held
    };
    let counts = |client: &pystackquery::QueryClient| -> Vec<usize> {
        (0..keys).map(|i| client.observer_count(key!("user", i))).collect()
    };
    let final_key = (ROUNDS - 1) % keys;

    // Every subscription comes and goes: nothing is left attached.
    drop(race(false));
    assert_eq!(observer.subscriber_count(), 0);
    assert_eq!(counts(&client), vec![0; keys as usize]);

    // With a subscription held throughout, the observer ends on the last options' key only.
    let held = race(true);
    let mut expected = vec![0; keys as usize];
    expected[final_key as usize] = 1;
    assert_eq!(counts(&client), expected);
    let (log, listener) = logger::<String>();
    let _sub = observer.subscribe(listener);
    client.set_query_data(key!("user", final_key), "after the race".to_string()).unwrap();
    h.eventually("the last key's states arrive", || {
        last(&log).and_then(|s| s.data).as_deref() == Some("after the race")
    })
    .await;
    drop((held, _sub));
    assert_eq!(counts(&client), vec![0; keys as usize]);
    h.eventually("fetches settle", || client.is_fetching(()) == 0).await;
}

runtime_suite!(
    set_options_to_another_key_keeps_the_listeners_and_shows_the_new_key,
    set_options_from_a_listener_moves_on_to_the_next_key,
    the_old_key_becomes_unobserved_and_its_gc_clock_starts,
    enabling_with_set_options_fetches_stale_data_and_disabling_makes_it_inactive,
    changing_the_interval_restarts_polling_and_disabling_stops_it,
    keep_previous_data_pages_across_set_options,
    select_runs_once_per_data_change_not_per_state_change,
    a_panicking_select_keeps_the_last_good_value,
    a_placeholder_function_gets_the_previous_data_and_runs_only_when_it_changes,
    observer_count_counts_attached_observers_per_key,
    a_stream_ends_once_the_client_is_dropped_and_not_before,
    set_options_racing_subscribe_and_unsubscribe,
);
