//! Reliability at the edges: cancellation, runtimes that drop tasks, re-entrant `Drop`,
//! panicking `Clone`, observer lifecycle races, disabled observers, removal and reset of
//! observed queries, invalidation during revalidation, polling after a slow fetch, hydration
//! shared between callers, and the order of cache events.
#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::storage::{Fault, FaultyStorage, python_record, unix_now};
use common::{Counter, Gate, Harness};
use pystackquery::runtime::{BoxFuture, Spawner};
use pystackquery::testing::TestRuntime;
use pystackquery::{
    CacheEvent, FetchStatus, QueryClient, QueryClientConfig, QueryError, QueryKey, QueryOptions,
    QueryStatus, Runtime, key,
};
use serde_json::json;

type Opts<T> = QueryOptions<T, String>;

fn counting(key: QueryKey, calls: &Counter) -> Opts<String> {
    let calls = calls.clone();
    QueryOptions::new(key, move || {
        let n = calls.hit();
        async move { Ok(format!("data_{n}")) }
    })
}

/// The first call never finishes (it waits on a gate nobody opens, so its task stays alive on
/// every runtime); later calls answer `data_N` at once.
fn first_call_hangs(key: QueryKey, calls: &Counter) -> Opts<String> {
    let calls = calls.clone();
    QueryOptions::new(key, move || {
        let n = calls.hit();
        let fut: Pin<Box<dyn Future<Output = Result<String, String>> + Send>> = if n == 1 {
            Box::pin(async {
                Gate::default().wait().await;
                Err("unreachable".to_string())
            })
        } else {
            Box::pin(async move { Ok(format!("data_{n}")) })
        };
        fut
    })
}

// --- Item 1: a spawn that never runs -------------------------------------------------------

/// A spawner whose runtime has shut down: every task is dropped unpolled.
struct ClosedSpawner;
impl Spawner for ClosedSpawner {
    fn spawn(&self, future: BoxFuture) {
        drop(future);
    }
}

#[test]
fn a_fetch_spawned_on_a_closed_runtime_completes_cancelled_and_later_callers_retry() {
    let test = TestRuntime::new();
    let timer = test.runtime().timer().clone();
    let runtime = Runtime::new(Arc::new(ClosedSpawner), timer);
    let client = QueryClient::with_runtime(runtime, QueryClientConfig::default());
    let calls = Counter::default();
    let options = counting(key!("closed"), &calls);
    for _ in 0..3 {
        let result = futures::executor::block_on(client.fetch_query(&options));
        assert!(matches!(result, Err(QueryError::Cancelled)), "{result:?}");
    }
    assert_eq!(calls.get(), 0, "the task never ran");
    let state = client.get_query_state::<String, String>(key!("closed")).unwrap().unwrap();
    assert_eq!(state.fetch_status, FetchStatus::Idle, "the cancelled fetch was reverted");
    assert_eq!(state.status, QueryStatus::Idle);
}

#[cfg(feature = "tokio")]
#[test]
fn a_fetch_after_the_tokio_runtime_shut_down_does_not_hang() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let runtime = pystackquery::TokioRuntime::from_handle(rt.handle().clone()).unwrap();
    let client = QueryClient::with_runtime(runtime.into_runtime(), QueryClientConfig::default());
    drop(rt);
    let calls = Counter::default();
    let options = counting(key!("after shutdown"), &calls);
    for _ in 0..2 {
        let result = futures::executor::block_on(client.fetch_query(&options));
        assert!(matches!(result, Err(QueryError::Cancelled)), "{result:?}");
    }
}

// --- Item 3: a value whose Drop calls back into the client --------------------------------

/// Data whose `Drop` pauses and resumes its own key: it locks the very query that held it.
#[derive(Clone)]
struct Reentrant {
    n: u32,
    client: Arc<Mutex<Option<QueryClient>>>,
    drops: Arc<AtomicUsize>,
}

impl Drop for Reentrant {
    fn drop(&mut self) {
        let client = self.client.lock().unwrap().clone();
        if let Some(client) = client {
            client.pause(key!("reentrant"));
            client.resume(key!("reentrant"), false);
        }
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_value_whose_drop_calls_back_into_the_client_does_not_deadlock() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let test = TestRuntime::new();
        let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
        let hook = Arc::new(Mutex::new(Some(client.clone())));
        let drops = Arc::new(AtomicUsize::new(0));
        let value = |n| Reentrant { n, client: hook.clone(), drops: drops.clone() };
        client.set_query_data(key!("reentrant"), value(1)).unwrap();
        client.set_query_data(key!("reentrant"), value(2)).unwrap(); // drops value 1
        client.update_query_data(key!("reentrant"), |_| value(3)).unwrap();
        client.reset_queries(key!("reentrant"));
        let options = QueryOptions::new(key!("reentrant"), {
            let hook = hook.clone();
            let drops = drops.clone();
            move || {
                let v = Reentrant { n: 4, client: hook.clone(), drops: drops.clone() };
                async move { Ok::<_, String>(v) }
            }
        });
        let fetched = test.block_on(client.fetch_query(&options)).unwrap();
        assert_eq!(fetched.n, 4);
        *hook.lock().unwrap() = None;
        done.send(drops.load(Ordering::SeqCst)).unwrap();
    });
    let drops = finished.recv_timeout(Duration::from_secs(20)).expect("deadlocked");
    assert!(drops >= 3, "old values were dropped ({drops})");
}

// --- Item 4 and cancellation ----------------------------------------------------------------

async fn cancel_queries_stops_a_fetch_that_never_ends_and_reverts(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = first_call_hangs(key!("stuck"), &calls);
    let waiter = h.runtime.spawn_with_handle({
        let (client, options) = (client.clone(), options.clone());
        async move { client.fetch_query(&options).await }
    });
    h.eventually("the fetch starts", || calls.get() == 1).await;
    let state = client.get_query_state::<String, String>(key!("stuck")).unwrap().unwrap();
    assert_eq!(state.status, QueryStatus::Pending);
    assert_eq!(client.cancel_queries(key!("stuck")).await, 1);
    assert!(matches!(waiter.await, Err(QueryError::Cancelled)));
    let state = client.get_query_state::<String, String>(key!("stuck")).unwrap().unwrap();
    assert_eq!(state.status, QueryStatus::Idle, "reverted to the state before the fetch");
    assert_eq!(state.fetch_status, FetchStatus::Idle);
    assert_eq!(client.cancel_queries(key!("stuck")).await, 0, "nothing left to cancel");
    // The key is not wedged: the next call fetches.
    assert_eq!(client.fetch_query(&options).await.unwrap(), "data_2");
}

async fn cancelling_keeps_the_data_a_stale_key_had(h: Harness) {
    let client = h.client();
    client.set_query_data(key!("kept"), "old".to_string()).unwrap();
    client.invalidate_queries(key!("kept"), false).await;
    let calls = Counter::default();
    let options = QueryOptions::new(key!("kept"), {
        let calls = calls.clone();
        move || {
            calls.hit();
            futures::future::pending::<Result<String, String>>()
        }
    });
    assert_eq!(client.fetch_query(&options).await.unwrap(), "old", "stale data at once");
    h.eventually("the revalidation starts", || calls.get() == 1).await;
    assert_eq!(client.cancel_queries(()).await, 1);
    let state = client.get_query_state::<String, String>(key!("kept")).unwrap().unwrap();
    assert_eq!(state.data.as_deref(), Some("old"));
    assert_eq!(state.status, QueryStatus::Success);
    assert!(!state.is_fetching());
}

async fn the_query_function_sees_the_cancel_signal(h: Harness) {
    let client = h.client();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let started = Counter::default();
    let runtime = h.runtime.clone();
    let options: Opts<String> = QueryOptions::with_context(key!("signal"), {
        let (saw_cancel, started) = (saw_cancel.clone(), started.clone());
        move |cx| {
            assert_eq!(cx.key, key!("signal"));
            started.hit();
            // Hand the signal to work of its own, as a function driving a client library
            // or a thread would; the function's own future never finishes.
            let saw_cancel = saw_cancel.clone();
            let signal = cx.signal.clone();
            runtime.spawn(async move {
                signal.cancelled().await;
                saw_cancel.store(signal.is_cancelled(), Ordering::SeqCst);
            });
            futures::future::pending::<Result<String, String>>()
        }
    });
    h.runtime.spawn({
        let (client, options) = (client.clone(), options.clone());
        async move { client.prefetch_query(&options).await }
    });
    h.eventually("the fetch is in flight", || started.get() == 1).await;
    assert_eq!(client.cancel_queries(key!("signal")).await, 1);
    h.eventually("the function's own work saw the signal", || saw_cancel.load(Ordering::SeqCst))
        .await;
    let state = client.get_query_state::<String, String>(key!("signal")).unwrap().unwrap();
    assert!(!state.is_fetching());
}

async fn invalidation_with_refetch_cancels_the_stuck_fetch_and_hands_its_waiters_the_new_one(
    h: Harness,
) {
    let client = h.client();
    let calls = Counter::default();
    let options = first_call_hangs(key!("handover"), &calls);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let _sub = client.watch(&options).subscribe(move |s| log.lock().unwrap().push(s.data.clone()));
    h.eventually("the observer's fetch starts", || calls.get() == 1).await;
    let waiter = h.runtime.spawn_with_handle({
        let (client, options) = (client.clone(), options.clone());
        async move { client.fetch_query(&options).await }
    });
    h.yield_a_little().await;
    assert_eq!(client.invalidate_queries(key!("handover"), true).await, 1);
    assert_eq!(waiter.await.unwrap(), "data_2", "the stuck fetch's waiter got the new result");
    assert_eq!(calls.get(), 2);
    h.eventually("the observer sees it", || {
        seen.lock().unwrap().last() == Some(&Some("data_2".to_string()))
    })
    .await;
}

#[test]
fn dropping_the_client_drops_its_data_even_with_a_fetch_that_never_ends() {
    let test = TestRuntime::new();
    let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    let live = Arc::new(AtomicUsize::new(0));
    struct Tracked(Arc<AtomicUsize>);
    impl Clone for Tracked {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, Ordering::SeqCst);
            Tracked(self.0.clone())
        }
    }
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    live.fetch_add(1, Ordering::SeqCst);
    client.set_query_data(key!("tracked"), Tracked(live.clone())).unwrap();
    let calls = Counter::default();
    let stuck = first_call_hangs(key!("stuck"), &calls);
    // Start the fetch and leave: the caller holds no handle of the client any more.
    assert!(futures::FutureExt::now_or_never(client.fetch_query(&stuck)).is_none());
    test.run_until_idle();
    assert_eq!(calls.get(), 1);
    drop(client);
    test.run_until_idle();
    assert_eq!(live.load(Ordering::SeqCst), 0, "the cache was freed");
    assert_eq!(test.live_tasks(), 0, "the stuck fetch was cancelled and its task ended");
}

async fn cancel_when_unobserved_cancels_once_every_caller_and_observer_left(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let fetching = |client: &QueryClient, k: QueryKey| {
        client.get_query_state::<String, String>(k).unwrap().is_some_and(|s| s.is_fetching())
    };
    // Default: the fetch outlives its callers.
    let keep = first_call_hangs(key!("kept going"), &calls);
    assert!(futures::FutureExt::now_or_never(client.fetch_query(&keep)).is_none());
    h.yield_a_little().await;
    assert!(fetching(&client, key!("kept going")));

    // Opted in: two callers leave, then it is cancelled. Both are polled once here, so both
    // are waiting before either leaves.
    let calls = Counter::default();
    let opt_in = first_call_hangs(key!("abandoned"), &calls).cancel_when_unobserved(true);
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut a = Box::pin(client.fetch_query(&opt_in));
    let mut b = Box::pin(client.fetch_query(&opt_in));
    assert!(a.as_mut().poll(&mut cx).is_pending());
    assert!(b.as_mut().poll(&mut cx).is_pending());
    h.eventually("the fetch starts", || calls.get() == 1).await;
    drop(a);
    h.yield_a_little().await;
    assert!(fetching(&client, key!("abandoned")), "one caller still waits");
    drop(b);
    h.eventually("cancelled", || !fetching(&client, key!("abandoned"))).await;

    // An observer counts as wanting it too.
    let calls = Counter::default();
    let watched = first_call_hangs(key!("watched"), &calls).cancel_when_unobserved(true);
    let subscription = client.watch(&watched).subscribe(|_| {});
    h.eventually("the observer's fetch starts", || calls.get() == 1).await;
    assert!(futures::FutureExt::now_or_never(client.fetch_query(&watched)).is_none());
    h.yield_a_little().await;
    assert!(fetching(&client, key!("watched")), "observed: the caller leaving is not enough");
    drop(subscription);
    h.eventually("cancelled after the observer left", || !fetching(&client, key!("watched"))).await;
}

async fn retry_predicate_and_delay_panics_reach_every_waiter_named(h: Harness) {
    let client = h.client();
    for (name, options) in [
        (
            "retry predicate",
            QueryOptions::new(key!("bad predicate"), || async { Err::<u8, _>("e".to_string()) })
                .retry(3)
                .retry_if(|_, _| panic!("predicate bug")),
        ),
        (
            "retry delay",
            QueryOptions::new(key!("bad delay"), || async { Err::<u8, _>("e".to_string()) })
                .retry(3)
                .retry_delay(|_| panic!("delay bug")),
        ),
    ] {
        let (a, b) = futures::join!(client.fetch_query(&options), client.fetch_query(&options));
        for result in [a, b] {
            match result {
                Err(QueryError::Panicked(m)) => assert!(m.contains(name), "{m}"),
                other => panic!("{name}: expected a panic error, got {other:?}"),
            }
        }
        let state = client.get_query_state::<u8, String>(options.key().clone()).unwrap().unwrap();
        assert_eq!(state.status, QueryStatus::Error);
        assert!(!state.is_fetching());
    }
}

/// Mount, unmount, mount in one tick (React's StrictMode pattern): the second subscription must
/// not join the fetch the first one's departure cancelled.
async fn a_caller_after_a_cancel_starts_a_new_fetch_instead_of_joining_the_doomed_one(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = counting(key!("strict"), &calls).cancel_when_unobserved(true);
    let observer = client.watch(&options);
    drop(observer.subscribe(|_| {})); // mount and unmount: the fetch is abandoned
    let seen = Arc::new(Mutex::new(None));
    let log = seen.clone();
    let _again = observer.subscribe(move |s| *log.lock().unwrap() = s.data.clone());
    h.eventually("the new subscription gets data", || seen.lock().unwrap().is_some()).await;

    // The same with an explicit cancel followed at once by a read.
    let gate = Gate::default();
    let slow_calls = Counter::default();
    let slow = QueryOptions::new(key!("cancelled then read"), {
        let (gate, calls) = (gate.clone(), slow_calls.clone());
        move || {
            let (gate, n) = (gate.clone(), calls.hit());
            async move {
                if n == 1 {
                    gate.wait().await; // never opened: only the cancel ends it
                }
                Ok::<_, String>(format!("data_{n}"))
            }
        }
    });
    assert!(futures::FutureExt::now_or_never(client.fetch_query(&slow)).is_none());
    h.eventually("the first fetch is running", || slow_calls.get() == 1).await;
    let cancel = client.cancel_queries(key!("cancelled then read"));
    let read = client.fetch_query(&slow);
    let (cancelled, read) = futures::join!(cancel, read);
    assert_eq!(cancelled, 1);
    assert_eq!(read.unwrap(), "data_2", "the read started its own fetch");
}

// --- Item 8: a panicking Clone ----------------------------------------------------------------

static CLONE_PANICS: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
struct Fragile(u32);
impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert!(!CLONE_PANICS.load(Ordering::SeqCst), "fragile clone");
        Fragile(self.0)
    }
}

#[test]
fn a_panicking_clone_as_a_fetch_finishes_wakes_every_waiter_with_an_error() {
    let test = TestRuntime::new();
    let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    let gate = Gate::default();
    let options: Opts<Fragile> = QueryOptions::new(key!("fragile"), {
        let gate = gate.clone();
        move || {
            let gate = gate.clone();
            async move {
                gate.wait().await;
                Ok(Fragile(7))
            }
        }
    });
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let (client, options) = (client.clone(), options.clone());
            test.runtime().spawn_with_handle(async move { client.fetch_query(&options).await })
        })
        .collect();
    test.run_until_idle();
    CLONE_PANICS.store(true, Ordering::SeqCst);
    gate.open();
    for waiter in waiters {
        match test.block_on(waiter) {
            Err(QueryError::Panicked(m)) => assert!(m.contains("Clone"), "{m}"),
            other => panic!("expected a Clone panic error, got {other:?}"),
        }
    }
    CLONE_PANICS.store(false, Ordering::SeqCst);
    let state = client.get_query_state::<Fragile, String>(key!("fragile")).unwrap().unwrap();
    assert!(!state.is_fetching(), "the key is not wedged");
}

// --- Item 11: subscribe racing the last unsubscribe -----------------------------------------

#[test]
fn a_subscription_racing_the_last_unsubscription_is_never_lost() {
    let test = TestRuntime::new();
    let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    let options = QueryOptions::new(key!("race"), || async { Ok::<u32, String>(0) }).enabled(false);
    let observer = Arc::new(client.watch(&options));
    for round in 1..=2_000u32 {
        let first = observer.subscribe(|_| {});
        let seen = Arc::new(Mutex::new(None));
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let leaving = std::thread::spawn({
            let barrier = barrier.clone();
            move || {
                barrier.wait();
                drop(first);
            }
        });
        let joining = std::thread::spawn({
            let (barrier, observer, seen) = (barrier.clone(), observer.clone(), seen.clone());
            move || {
                barrier.wait();
                observer.subscribe(move |s| *seen.lock().unwrap() = s.data)
            }
        });
        leaving.join().unwrap();
        let second = joining.join().unwrap();
        client.set_query_data(key!("race"), round).unwrap();
        assert_eq!(*seen.lock().unwrap(), Some(round), "round {round}: the subscriber was lost");
        drop(second);
    }
}

// --- Item 12: disabled observers are not active ----------------------------------------------

async fn disabled_observers_neither_make_a_query_active_nor_poll(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = counting(key!("disabled"), &calls)
        .enabled(false)
        .refetch_interval(Duration::from_millis(20));
    client.set_query_data(key!("disabled"), "seed".to_string()).unwrap();
    let _sub = client.watch(&options).subscribe(|_| {});
    client.invalidate_queries(key!("disabled"), true).await;
    h.sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.get(), 0, "a disabled observer neither refetches on invalidation nor polls");
}

// --- Item 13: observers survive clear, remove and reset ----------------------------------------

async fn observers_keep_working_after_clear_remove_and_reset(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = counting(key!("kept alive"), &calls).stale_time(Duration::from_secs(600));
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let log = seen.clone();
    let _sub = client.watch(&options).subscribe(move |s| log.lock().unwrap().push(s.data.clone()));
    let last = |seen: &Arc<Mutex<Vec<Option<String>>>>| seen.lock().unwrap().last().cloned();
    h.eventually("first fetch", || last(&seen) == Some(Some("data_1".into()))).await;

    client.clear();
    h.eventually("refetched after clear", || last(&seen) == Some(Some("data_2".into()))).await;
    client.set_query_data(key!("kept alive"), "written".to_string()).unwrap();
    h.eventually("a write reaches it", || last(&seen) == Some(Some("written".into()))).await;

    assert_eq!(client.remove_queries(key!("kept alive")), 1);
    h.eventually("refetched after remove", || last(&seen) == Some(Some("data_3".into()))).await;

    assert_eq!(client.reset_queries(key!("kept alive")), 1);
    h.eventually("reset refetches an active query", || last(&seen) == Some(Some("data_4".into())))
        .await;
    assert_eq!(calls.get(), 4);
}

async fn a_polled_query_keeps_polling_into_its_new_query_after_remove(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = counting(key!("polled"), &calls).refetch_interval(Duration::from_millis(30));
    let seen = Arc::new(Mutex::new(None));
    let log = seen.clone();
    let _sub = client.watch(&options).subscribe(move |s| *log.lock().unwrap() = s.data.clone());
    h.eventually("first fetch", || calls.get() >= 1).await;
    client.remove_queries(key!("polled"));
    let after = calls.get();
    h.eventually("polling goes on", || calls.get() >= after + 2).await;
    let latest = format!("data_{}", calls.get());
    h.eventually("and lands in the cache the observer sees", || {
        client.get_query_data::<String>(key!("polled")).unwrap().is_some()
            && seen.lock().unwrap().is_some()
    })
    .await;
    let _ = latest;
}

// --- Item 14: invalidation while a revalidation is in flight ----------------------------------

async fn a_read_after_invalidation_never_joins_the_older_revalidation(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let gate = Gate::default();
    let options = QueryOptions::new(key!("rv"), {
        let (calls, gate) = (calls.clone(), gate.clone());
        move || {
            let n = calls.hit();
            let gate = gate.clone();
            async move {
                if n == 1 {
                    gate.wait().await; // the old revalidation, still running
                }
                Ok::<_, String>(format!("v{n}"))
            }
        }
    })
    .stale_time(Duration::ZERO);
    client.set_query_data(key!("rv"), "v0".to_string()).unwrap();
    assert_eq!(client.fetch_query(&options).await.unwrap(), "v0");
    h.eventually("revalidation 1 starts", || calls.get() == 1).await;
    client.invalidate_queries(key!("rv"), false).await;
    assert_eq!(client.fetch_query(&options).await.unwrap(), "v0", "stale data at once");
    h.eventually("a new revalidation started", || calls.get() == 2).await;
    h.eventually("it lands", || {
        client.get_query_data::<String>(key!("rv")).unwrap().as_deref() == Some("v2")
    })
    .await;
    gate.open();
    h.yield_a_little().await;
    assert_eq!(client.get_query_data::<String>(key!("rv")).unwrap().as_deref(), Some("v2"));
    assert_eq!(calls.get(), 2, "one fetch per generation");
}

// --- Items 9 and 15: polling periods ---------------------------------------------------------

#[test]
fn polling_skips_the_ticks_missed_during_a_slow_fetch() {
    let test = TestRuntime::new();
    let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    let calls = Counter::default();
    let runtime = test.runtime();
    let options = QueryOptions::new(key!("slow poll"), {
        let calls = calls.clone();
        move || {
            let n = calls.hit();
            let runtime = runtime.clone();
            async move {
                if n == 2 {
                    runtime.sleep(Duration::from_secs(3600)).await; // one slow fetch
                }
                Ok::<_, String>(n)
            }
        }
    })
    .refetch_interval(Duration::from_secs(30));
    let _sub = client.watch(&options).subscribe(|_| {});
    test.run_until_idle();
    assert_eq!(calls.get(), 1, "the mount fetch");
    test.advance(Duration::from_secs(30)); // tick 1: the slow fetch starts
    assert_eq!(calls.get(), 2);
    test.advance(Duration::from_secs(3600)); // it ends; 120 ticks were missed meanwhile
    test.advance(Duration::from_secs(61)); // two more regular ticks
    // The mount, the slow fetch, and a regular tick every 30 s after it: the missed ticks are
    // not replayed (that would be 120 fetches at once).
    assert!(calls.get() <= 5, "missed ticks were replayed: {} calls", calls.get());
    assert!(calls.get() >= 4, "polling went on after the slow fetch: {} calls", calls.get());
}

#[test]
fn refetch_intervals_of_zero_and_max_neither_panic_nor_spin() {
    let test = TestRuntime::new();
    let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    for (name, every) in [("zero", Duration::ZERO), ("max", Duration::MAX)] {
        let calls = Counter::default();
        let options = counting(key!("interval", name), &calls).refetch_interval(every);
        let _sub = client.watch(&options).subscribe(|_| {});
        test.advance(Duration::from_secs(3600));
        assert_eq!(calls.get(), 1, "{name}: only the mount fetch");
    }
}

// --- Item 16 and 17: hydration ---------------------------------------------------------------

fn slow_store(test: &TestRuntime, key: &QueryKey) -> FaultyStorage {
    let store = FaultyStorage::new(&test.runtime());
    let record = python_record(json!("stored"), unix_now(&test.runtime()));
    store.inner.insert(key.storage_string(), record);
    store.set_fault(Fault::Delay(Duration::from_millis(50)));
    store
}

#[test]
fn a_prefetch_keeps_its_result_when_the_cache_fills_during_its_storage_read() {
    let test = TestRuntime::new();
    let store = slow_store(&test, &key!("hydrating"));
    let config = QueryClientConfig::default().storage(store.clone()).cache_max_size(1);
    let client = QueryClient::with_runtime(test.runtime(), config);
    let calls = Counter::default();
    let options = counting(key!("hydrating"), &calls).persist().stale_time(Duration::from_secs(60));
    let prefetch = test.runtime().spawn_with_handle({
        let (client, options) = (client.clone(), options.clone());
        async move { client.prefetch_query(&options).await }
    });
    test.run_until_idle();
    client.set_query_data(key!("other"), "x".to_string()).unwrap(); // would evict
    test.block_on(prefetch);
    assert_eq!(
        client.get_query_data::<String>(key!("hydrating")).unwrap().as_deref(),
        Some("stored")
    );
    assert_eq!(calls.get(), 0);
}

#[test]
fn dropping_the_caller_that_reads_storage_does_not_abandon_the_read_for_the_others() {
    let test = TestRuntime::new();
    let store = slow_store(&test, &key!("shared read"));
    let config = QueryClientConfig::default().storage(store.clone());
    let client = QueryClient::with_runtime(test.runtime(), config);
    let calls = Counter::default();
    let options =
        counting(key!("shared read"), &calls).persist().stale_time(Duration::from_secs(60));
    let first = test.runtime().spawn_with_handle({
        let (client, options) = (client.clone(), options.clone());
        async move { client.fetch_query(&options).await }
    });
    test.run_until_idle();
    let others: Vec<_> = (0..10)
        .map(|_| {
            let (client, options) = (client.clone(), options.clone());
            test.runtime().spawn_with_handle(async move { client.fetch_query(&options).await })
        })
        .collect();
    test.run_until_idle();
    drop(first); // the caller that started the read goes away
    for other in others {
        assert_eq!(test.block_on(other).unwrap(), "stored");
    }
    assert_eq!(calls.get(), 0, "nobody went to the network");
}

// --- Item 19: event order --------------------------------------------------------------------

async fn a_subscription_announces_its_observer_before_the_states_it_causes(h: Harness) {
    let client = h.client();
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let _events = client.subscribe_events(move |e| log.lock().unwrap().push(e.clone()));
    let calls = Counter::default();
    let _sub = client.watch(&counting(key!("ordered"), &calls)).subscribe(|_| {});
    h.eventually("fetched", || calls.get() == 1 && events.lock().unwrap().len() >= 4).await;
    h.yield_a_little().await;
    let k = key!("ordered");
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            CacheEvent::Added(k.clone()),
            CacheEvent::ObserverAdded(k.clone()),
            CacheEvent::Updated(k.clone()),
            CacheEvent::Updated(k),
        ]
    );
}

// --- Item 21: the hit path marks a key persisted ------------------------------------------------

#[test]
fn a_key_read_only_through_the_hit_path_with_persisting_options_is_persisted() {
    let test = TestRuntime::new();
    let store = pystackquery::storage::MemoryStorage::new();
    let config = QueryClientConfig::default().storage(store.clone());
    let client = QueryClient::with_runtime(test.runtime(), config);
    client.set_query_data(key!("hit"), "memory only".to_string()).unwrap();
    test.block_on(client.flush_storage());
    assert!(store.peek(key!("hit").storage_string()).is_none(), "not persisted yet");
    let calls = Counter::default();
    let options = counting(key!("hit"), &calls).persist().stale_time(Duration::from_secs(60));
    assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), "memory only");
    client.set_query_data(key!("hit"), "now persisted".to_string()).unwrap();
    test.block_on(client.flush_storage());
    let record = store.peek(key!("hit").storage_string()).expect("the write reached L2");
    assert!(record.contains("now persisted"), "{record}");
    assert_eq!(calls.get(), 0);
}

runtime_suite!(
    a_caller_after_a_cancel_starts_a_new_fetch_instead_of_joining_the_doomed_one,
    retry_predicate_and_delay_panics_reach_every_waiter_named,
    cancel_when_unobserved_cancels_once_every_caller_and_observer_left,
    cancel_queries_stops_a_fetch_that_never_ends_and_reverts,
    cancelling_keeps_the_data_a_stale_key_had,
    the_query_function_sees_the_cancel_signal,
    invalidation_with_refetch_cancels_the_stuck_fetch_and_hands_its_waiters_the_new_one,
    disabled_observers_neither_make_a_query_active_nor_poll,
    observers_keep_working_after_clear_remove_and_reset,
    a_polled_query_keeps_polling_into_its_new_query_after_remove,
    a_read_after_invalidation_never_joins_the_older_revalidation,
    a_subscription_announces_its_observer_before_the_states_it_causes,
);
