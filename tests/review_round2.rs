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

/// An error whose `Drop` reads the query it was stored in: it must run outside the query's
/// lock.
struct Reentrant {
    client: Option<pystackquery::QueryClient>,
    key: QueryKey,
}

impl std::fmt::Display for Reentrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reentrant")
    }
}

impl Drop for Reentrant {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.find(self.key.clone());
            let _ = client.get_query_state::<u32, Reentrant>(self.key.clone());
        }
    }
}

/// The error side keeps TanStack's semantics: a success clears the error, the failure count
/// and reason but keeps `error_updated_at` and `error_update_count`; a reset clears them all;
/// the replaced error is dropped outside the lock.
async fn the_error_side_keeps_its_semantics_and_drops_outside_the_lock(h: Harness) {
    let client = h.client();
    let k = key!("error", "side");
    let fail = Arc::new(AtomicBool::new(true));
    let (c, kk, f) = (client.clone(), k.clone(), fail.clone());
    let options = QueryOptions::new(k.clone(), move || {
        let failing = f.load(Ordering::SeqCst);
        let error = Reentrant { client: Some(c.clone()), key: kk.clone() };
        async move { if failing { Err(error) } else { Ok(7u32) } }
    })
    .retry(0);
    assert!(client.fetch_query(&options).await.is_err());
    let failed = client.get_query_state::<u32, Reentrant>(k.clone()).unwrap().unwrap();
    assert!(failed.error.is_some());
    assert_eq!((failed.fetch_failure_count, failed.error_update_count), (1, 1));
    let at = failed.error_updated_at;
    assert!(at.is_some());
    drop(failed);

    fail.store(false, Ordering::SeqCst);
    h.sleep(Duration::from_millis(5)).await;
    assert_eq!(client.fetch_query(&options).await.ok(), Some(7));
    let ok = client.get_query_state::<u32, Reentrant>(k.clone()).unwrap().unwrap();
    assert!(ok.error.is_none() && ok.fetch_failure_reason.is_none());
    assert_eq!(ok.fetch_failure_count, 0);
    assert_eq!((ok.error_updated_at, ok.error_update_count), (at, 1), "kept after a success");

    assert_eq!(client.reset_queries(QueryFilter::all()), 1);
    let reset = client.get_query_state::<u32, Reentrant>(k.clone()).unwrap().unwrap();
    assert_eq!((reset.error_updated_at, reset.error_update_count), (None, 0));
    client.clear();
}

runtime_suite!(
    a_read_without_a_fetch_keeps_the_observed_options,
    the_error_side_keeps_its_semantics_and_drops_outside_the_lock,
);
