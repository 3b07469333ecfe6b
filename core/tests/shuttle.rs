//! Randomized scheduling with shuttle: the engine's concurrency claims checked over thousands of
//! interleavings of its locks, with the random scheduler and with PCT (depth 3).
//!
//! Run with a separate target directory, since the cfg changes every crate's build:
//!
//! ```text
//! RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=target/shuttle \
//!     cargo test -p pystackquery-core --release --test shuttle
//! ```
//!
//! `SHUTTLE_ITERATIONS` sets the iterations per scheduler (default 1,000). A failing schedule is
//! printed by shuttle together with the panic; replay it with `shuttle::replay(scenario, "…")`
//! (put the printed string into the `REPLAY` environment variable and the scenario's name into
//! `SCENARIO` to have `replay_one` below do it).
#![cfg(shuttle)]
#![allow(clippy::unwrap_used, missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pystackquery_core::runtime::{BoxFuture, Spawner, Timer};
use pystackquery_core::{QueryClient, QueryClientConfig, QueryError, QueryOptions, Runtime, key};

/// Spawns on shuttle's executor. Time stands still: no scenario sleeps (no retries, no
/// storage), and staleness is set by the options. Counts the tasks still alive, so that a
/// scenario can wait for every one to end: shuttle ends an execution by unwinding the tasks
/// left, which does not mix with the locks a fetch's guard takes when it is dropped.
struct ShuttleRuntime {
    start: Instant,
    live: Arc<AtomicUsize>,
}

struct Alive(Arc<AtomicUsize>);
impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Spawner for ShuttleRuntime {
    fn spawn(&self, future: BoxFuture) {
        self.live.fetch_add(1, Ordering::SeqCst);
        let alive = Alive(self.live.clone());
        drop(shuttle::future::spawn(async move {
            let _alive = alive;
            future.await;
        }));
    }
}

thread_local! {
    static LIVE: std::cell::RefCell<Option<Arc<AtomicUsize>>> = const { std::cell::RefCell::new(None) };
}

/// Waits until every task the scenario's client spawned has ended.
async fn settle() {
    let live = LIVE.with(|l| l.borrow().clone()).unwrap();
    while live.load(Ordering::SeqCst) > 0 {
        shuttle::future::yield_now().await;
    }
}

impl Timer for ShuttleRuntime {
    fn sleep_until(&self, _deadline: Instant) -> BoxFuture {
        Box::pin(futures::future::pending())
    }
    fn now(&self) -> Instant {
        self.start
    }
    fn system_now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }
}

fn client() -> QueryClient {
    let live = Arc::new(AtomicUsize::new(0));
    LIVE.with(|l| *l.borrow_mut() = Some(live.clone()));
    let rt = Arc::new(ShuttleRuntime { start: Instant::now(), live });
    // No gc: its sweeper would outlive the scenario, and shuttle ends an execution by
    // unwinding the tasks still alive, which does not mix with locks taken while dropping.
    let config = QueryClientConfig::default()
        .retry(0)
        .stale_time(Duration::from_secs(3600))
        .gc_time(Duration::MAX);
    QueryClient::with_runtime(Runtime::new(rt.clone(), rt), config)
}

/// A query function that yields a few times (so other tasks interleave) and counts its calls.
fn yielding(
    calls: &Arc<AtomicUsize>,
    value: &'static str,
) -> impl Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync + 'static
{
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            for _ in 0..3 {
                shuttle::future::yield_now().await;
            }
            Ok(value.to_string())
        })
    }
}

fn iterations() -> usize {
    std::env::var("SHUTTLE_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
}

fn check(scenario: fn()) {
    shuttle::check_random(scenario, iterations());
    shuttle::check_pct(scenario, iterations(), 3);
}

// --- The scenarios ------------------------------------------------------------------------

/// Eight tasks fetch one cold key: exactly one call, the same value for all, no deadlock.
fn eight_callers_one_call() {
    shuttle::future::block_on(async {
        let client = client();
        let calls = Arc::new(AtomicUsize::new(0));
        let options = QueryOptions::new(key!("k"), yielding(&calls, "v"));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (client, options) = (client.clone(), options.clone());
                shuttle::future::spawn(async move { client.fetch_query(&options).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), "v");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

/// Waiters dropped at random points: the rest get the value; with every one gone the fetch
/// still completes and is cached (the documented default); nothing stays in flight; the next
/// call is a hit.
fn dropped_waiters() {
    shuttle::future::block_on(async {
        let client = client();
        let calls = Arc::new(AtomicUsize::new(0));
        let options = QueryOptions::new(key!("k"), yielding(&calls, "v"));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (client, options) = (client.clone(), options.clone());
            tasks.push(shuttle::future::spawn(async move {
                let fetch = client.fetch_query(&options);
                if i % 2 == 0 {
                    // Leave after `i` yields, maybe before the fetch lands.
                    let leave = async {
                        for _ in 0..i {
                            shuttle::future::yield_now().await;
                        }
                    };
                    futures::pin_mut!(fetch, leave);
                    match futures::future::select(fetch, leave).await {
                        futures::future::Either::Left((result, _)) => Some(result),
                        futures::future::Either::Right(_) => None,
                    }
                } else {
                    Some(fetch.await)
                }
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            let result = task.await.unwrap();
            if i % 2 == 1 {
                assert_eq!(result.unwrap().unwrap(), "v");
            }
        }
        // Every caller is done; the fetch lands even if all had left.
        while client.get_query_data::<String>(key!("k")).unwrap().is_none() {
            shuttle::future::yield_now().await;
        }
        let state = client.get_query_state::<String, String>(key!("k")).unwrap().unwrap();
        assert!(!state.is_fetching(), "the in-flight slot is empty");
        assert_eq!(client.fetch_query(&options).await.unwrap(), "v");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

/// A function that panics or errors on its first call: every waiter gets the error, the
/// next call succeeds.
fn first_attempt_fails() {
    for panics in [false, true] {
        shuttle::future::block_on(async move {
            let client = client();
            let calls = Arc::new(AtomicUsize::new(0));
            let counter = calls.clone();
            let options = QueryOptions::new(key!("k"), move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    shuttle::future::yield_now().await;
                    match n {
                        0 if panics => panic!("first attempt panics"),
                        0 => Err("first attempt fails".to_string()),
                        _ => Ok("v".to_string()),
                    }
                }
            });
            let tasks: Vec<_> = (0..3)
                .map(|_| {
                    let (client, options) = (client.clone(), options.clone());
                    shuttle::future::spawn(async move { client.fetch_query(&options).await })
                })
                .collect();
            // Waiters that joined the first fetch share its error; one that arrived after it
            // settled starts the second fetch and gets its value.
            let mut errors = 0;
            for task in tasks {
                match task.await.unwrap() {
                    Err(QueryError::Failed(_)) if !panics => errors += 1,
                    Err(QueryError::Panicked(_)) if panics => errors += 1,
                    Ok(v) => assert_eq!(v, "v"),
                    other => panic!("expected the first attempt's error, got {other:?}"),
                }
            }
            assert!(errors >= 1, "the first fetch's caller got its error");
            assert_eq!(client.fetch_query(&options).await.unwrap(), "v");
            assert_eq!(calls.load(Ordering::SeqCst), 2, "one failed call, one good one");
        });
    }
}

/// Invalidation, `set_query_data`, remove and reset racing a fetch that started before them:
/// the older result is never visible as fresh.
fn writes_racing_an_older_fetch() {
    for write in ["set", "invalidate", "remove", "reset"] {
        shuttle::future::block_on(async move {
            let client = client();
            let calls = Arc::new(AtomicUsize::new(0));
            let options = QueryOptions::new(key!("k"), yielding(&calls, "old"));
            let fetch = shuttle::future::spawn({
                let (client, options) = (client.clone(), options.clone());
                async move { client.fetch_query(&options).await }
            });
            while calls.load(Ordering::SeqCst) == 0 {
                shuttle::future::yield_now().await;
            }
            // The fetch has started; the write races its completion.
            let writer = shuttle::future::spawn({
                let client = client.clone();
                async move {
                    match write {
                        "set" => client.set_query_data(key!("k"), "new".to_string()).unwrap(),
                        "invalidate" => {
                            client.invalidate_queries(key!("k"), false).await;
                        }
                        "remove" => {
                            client.remove_queries(key!("k"));
                        }
                        _ => {
                            client.reset_queries(key!("k"));
                        }
                    }
                }
            });
            writer.await.unwrap();
            let _ = fetch.await.unwrap();
            let state = client.get_query_state::<String, String>(key!("k")).unwrap();
            let data = state.as_ref().and_then(|s| s.data.clone());
            match write {
                "set" => assert_eq!(data.as_deref(), Some("new")),
                "invalidate" => {
                    if data.as_deref() == Some("old") {
                        assert!(state.unwrap().is_invalidated, "old data shown as fresh");
                    }
                }
                _ => assert_eq!(data, None, "{write}: old data came back"),
            }
            settle().await;
        });
    }
}

/// Subscribing while the last subscriber unsubscribes: the new subscriber is never lost.
fn subscribe_racing_last_unsubscribe() {
    shuttle::future::block_on(async {
        let client = client();
        let options =
            QueryOptions::new(key!("k"), || async { Ok::<u32, String>(0) }).enabled(false);
        let observer = Arc::new(client.watch(&options));
        let first = observer.subscribe(|_| {});
        let seen = Arc::new(Mutex::new(None));
        let leaving = shuttle::future::spawn(async move { drop(first) });
        let joining = shuttle::future::spawn({
            let (observer, seen) = (observer.clone(), seen.clone());
            async move { observer.subscribe(move |s| *seen.lock().unwrap() = s.data) }
        });
        leaving.await.unwrap();
        let second = joining.await.unwrap();
        client.set_query_data(key!("k"), 7u32).unwrap();
        assert_eq!(*seen.lock().unwrap(), Some(7));
        drop(second);
    });
}

/// `set_options` moving a subscribed observer to another key while its last subscriber leaves
/// and a new one joins: the observer ends attached to the new key only, once, and the new
/// subscriber gets that key's states.
fn set_options_racing_subscribe_and_unsubscribe() {
    shuttle::future::block_on(async {
        let client = client();
        let calls = Arc::new(AtomicUsize::new(0));
        let a = QueryOptions::new(key!("a"), yielding(&calls, "a")).enabled(false);
        let b = QueryOptions::new(key!("b"), yielding(&calls, "b"));
        let observer = Arc::new(client.watch(&a));
        let first = observer.subscribe(|_| {});
        let seen = Arc::new(Mutex::new(None));
        let switching = shuttle::future::spawn({
            let observer = observer.clone();
            async move { observer.set_options(b) }
        });
        let leaving = shuttle::future::spawn(async move { drop(first) });
        let joining = shuttle::future::spawn({
            let (observer, seen) = (observer.clone(), seen.clone());
            async move { observer.subscribe(move |s| *seen.lock().unwrap() = s.data.clone()) }
        });
        switching.await.unwrap();
        leaving.await.unwrap();
        let second = joining.await.unwrap();
        settle().await;
        assert_eq!(client.observer_count(key!("a")), 0, "left the old key");
        assert_eq!(client.observer_count(key!("b")), 1, "attached to the new key, once");
        client.set_query_data(key!("b"), "set".to_string()).unwrap();
        assert_eq!(seen.lock().unwrap().as_deref(), Some("set"));
        drop(second);
        assert_eq!(client.observer_count(key!("b")), 0);
        settle().await;
    });
}

/// Cancellation racing completion: every waiter gets the value or `Cancelled`, never hangs,
/// and the query ends either with the value or back in its state before the fetch.
fn cancel_racing_completion() {
    shuttle::future::block_on(async {
        let client = client();
        let calls = Arc::new(AtomicUsize::new(0));
        let options = QueryOptions::new(key!("k"), yielding(&calls, "v"));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (client, options) = (client.clone(), options.clone());
                shuttle::future::spawn(async move { client.fetch_query(&options).await })
            })
            .collect();
        let canceller = shuttle::future::spawn({
            let client = client.clone();
            async move { client.cancel_queries(key!("k")).await }
        });
        let mut outcomes = Vec::new();
        for waiter in waiters {
            outcomes.push(waiter.await.unwrap());
        }
        canceller.await.unwrap();
        let state = client.get_query_state::<String, String>(key!("k")).unwrap().unwrap();
        assert!(!state.is_fetching());
        for outcome in &outcomes {
            match outcome {
                Ok(v) => assert_eq!(v, "v"),
                Err(QueryError::Cancelled) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        match state.data.as_deref() {
            Some("v") => {}
            None => assert!(state.is_idle() || state.is_pending() || state.is_error()),
            other => panic!("unexpected data {other:?}"),
        }
        settle().await;
    });
}

/// Listeners that call back into the client, driven from two tasks at once: no deadlock, and
/// each observer ends with the final state.
fn reentrant_listeners_from_two_tasks() {
    shuttle::future::block_on(async {
        let client = client();
        let options =
            QueryOptions::new(key!("k"), || async { Ok::<u32, String>(0) }).enabled(false);
        let last = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let mut subscriptions = Vec::new();
        for i in 0..2 {
            let (reader, last) = (client.clone(), last.clone());
            let observer = client.watch(&options);
            subscriptions.push(observer.subscribe(move |s| {
                // Re-enter the client from inside the listener.
                let _ = reader.get_query_data::<u32>(key!("k"));
                reader.set_query_data(key!("side", i as i64), s.data.unwrap_or(0)).unwrap();
                last[i].store(s.data.unwrap_or(0) as usize, Ordering::SeqCst);
            }));
        }
        let writers: Vec<_> = (1..=2u32)
            .map(|v| {
                let client = client.clone();
                shuttle::future::spawn(async move { client.set_query_data(key!("k"), v).unwrap() })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let final_value = client.get_query_data::<u32>(key!("k")).unwrap().unwrap() as usize;
        for slot in last.iter() {
            assert_eq!(slot.load(Ordering::SeqCst), final_value, "the final state was delivered");
        }
        drop(subscriptions);
    });
}

macro_rules! scenarios {
    ($($name:ident),*) => {
        $( #[test] fn $name() { check(super::$name) } )*

        /// Replays the schedule in `REPLAY` for the scenario named in `SCENARIO`.
        #[test]
        fn replay_one() {
            let (Ok(schedule), Ok(name)) = (std::env::var("REPLAY"), std::env::var("SCENARIO")) else {
                return;
            };
            $( if name == stringify!($name) { shuttle::replay(super::$name, &schedule); } )*
        }
    };
}

mod shuttle_checks {
    use super::check;
    scenarios!(
        eight_callers_one_call,
        dropped_waiters,
        first_attempt_fails,
        writes_racing_an_older_fetch,
        subscribe_racing_last_unsubscribe,
        set_options_racing_subscribe_and_unsubscribe,
        cancel_racing_completion,
        reentrant_listeners_from_two_tasks
    );
}
