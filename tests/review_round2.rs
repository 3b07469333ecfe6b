//! Regression probes of the lazily allocated query part, the shared error side, the options a
//! `fetch_query` records and the test runtime's task ownership.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Counter, Harness};
use pystackquery::testing::TestRuntime;
use pystackquery::{QueryFilter, QueryKey, QueryOptions, key};

const HOUR: Duration = Duration::from_secs(3600);

fn named(k: QueryKey, name: &'static str, calls: &Counter) -> QueryOptions<String, String> {
    let calls = calls.clone();
    QueryOptions::new(k, move || {
        let n = calls.hit();
        async move { Ok(format!("{name}_{n}")) }
    })
}

/// A read answered from memory without a fetch (TanStack's `ensureQueryData`, or `fetchQuery`
/// of fresh data) leaves the options of a query that already has some: the mounted observer's
/// stale time still lists it, and an invalidation refetches it with the observer's function.
async fn a_read_without_a_fetch_keeps_the_observed_options(h: Harness) {
    let client = h.client();
    let k = key!("kept", "options");
    let (mine, other) = (Counter::default(), Counter::default());
    let options = named(k.clone(), "mine", &mine).stale_time(HOUR);
    let observer = client.watch(&options);
    let _subscription = observer.subscribe(|_| {});
    h.eventually("the first fetch", || observer.result().data.is_some()).await;
    assert_eq!(mine.get(), 1);

    let read = named(k.clone(), "other", &other);
    assert_eq!(client.ensure_query_data(&read).await.unwrap(), "mine_1");
    let fresh = named(k.clone(), "other", &other).stale_time(HOUR);
    assert_eq!(client.fetch_query(&fresh).await.unwrap(), "mine_1");
    assert_eq!(other.get(), 0, "nothing fetched");

    let info = client.find(k.clone()).unwrap();
    assert!(!info.is_stale, "fresh by the observer's stale time: {info}");
    client.invalidate_queries(QueryFilter::all(), pystackquery::RefetchType::Active).await;
    assert_eq!(mine.get(), 2, "refetched with the observer's function");
    assert_eq!(other.get(), 0);
}

runtime_suite!(a_read_without_a_fetch_keeps_the_observed_options);

/// Dropping one handle of a test runtime (a clone) does not shut it down: spawns still run.
#[test]
fn dropping_a_clone_of_the_test_runtime_leaves_it_running() {
    let test = TestRuntime::new();
    drop(test.clone());
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    test.runtime().spawn(async move { flag.store(true, Ordering::SeqCst) });
    test.run_until_idle();
    assert!(ran.load(Ordering::SeqCst), "the task ran");
    assert_eq!(test.live_tasks(), 0);
}
