//! Infinite queries through the client: the infinite tests of TanStack Query v5's
//! `queryClient` (A*), then page deduplication, superseding, cancellation, errors, panics,
//! retries, `max_pages` and persistence, on every runtime.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::pages::{Calls, Holds, Opts, cached, data, numbers};
use common::{Counter, Harness};
use pystackquery::storage::MemoryStorage;
use pystackquery::{
    FetchStatus, InfiniteData, InfiniteQueryOptions, PageContext, PageDirection, QueryClientConfig,
    QueryError, QueryKey, QueryStatus, RefetchType, key,
};
use serde_json::json;

use PageDirection::Forward;

// ---- queryClient.test, infinite queries (A*) ----

/// Pages that answer `answer`, initial param `initial`, recorded; no next page.
fn answering(
    k: QueryKey,
    initial: i32,
    answer: &'static str,
    calls: &Calls<i32>,
) -> Opts<String, i32> {
    let calls = calls.clone();
    InfiniteQueryOptions::new(
        k,
        initial,
        move |cx: PageContext<i32>| {
            calls.record(&cx);
            async move { Ok(answer.to_string()) }
        },
        |_, _, _, _| None,
    )
}

fn strings(pages: &[&str]) -> Vec<String> {
    pages.iter().map(ToString::to_string).collect()
}

async fn a1_a2_ensure_returns_cached_pages_or_fetches_the_first(h: Harness) {
    let client = h.client();
    let calls = Calls::new();
    client.set_query_data(key!("a1"), data(strings(&["bar"]), [0])).unwrap();
    let cached = answering(key!("a1"), 1, "data", &calls);
    let got = client.ensure_query_data(cached.query_options()).await.unwrap();
    assert_eq!(got, data(strings(&["bar"]), [0]));
    assert_eq!(calls.len(), 0);

    let cold = answering(key!("a2"), 1, "data", &calls);
    let got = client.ensure_query_data(cold.query_options()).await.unwrap();
    assert_eq!(got, data(strings(&["data"]), [1]));
}

async fn a3_stale_pages_are_returned_then_refetched_from_the_stored_param(h: Harness) {
    let client = h.client();
    let calls = Calls::new();
    client.set_query_data(key!("a3"), data(strings(&["old"]), [0])).unwrap();
    let options = answering(key!("a3"), 1, "new", &calls);
    let got = client.fetch_infinite_query(&options).await.unwrap();
    assert_eq!(got, data(strings(&["old"]), [0]), "stale, returned at once");
    h.eventually("the revalidation", || client.is_fetching(()) == 0 && calls.len() == 1).await;
    let got = client.get_query_data(key!("a3")).unwrap();
    assert_eq!(got, Some(data(strings(&["new"]), [0])));
    assert_eq!(calls.params(), [(0, Forward)], "the stored param, not the initial one");
}

async fn a4_static_data_is_never_refetched(h: Harness) {
    let client = h.client();
    let calls = Calls::new();
    client.set_query_data(key!("a4", "cached"), data(strings(&["cached"]), [0])).unwrap();
    let cached = answering(key!("a4", "cached"), 1, "data", &calls).stale_time(Duration::MAX);
    let got = client.fetch_infinite_query(&cached).await.unwrap();
    assert_eq!(got, data(strings(&["cached"]), [0]));
    assert_eq!(calls.len(), 0);
    let cold = answering(key!("a4", "cold"), 1, "data", &calls).stale_time(Duration::MAX);
    assert_eq!(client.fetch_infinite_query(&cold).await.unwrap(), data(strings(&["data"]), [1]));
    client.fetch_infinite_query(&cold).await.unwrap();
    assert_eq!(calls.len(), 1);
}

async fn a5_fetch_infinite_query_and_a_selecting_observer(h: Harness) {
    let client = h.client();
    let options = InfiniteQueryOptions::new(
        key!("a5"),
        10,
        |cx: PageContext<i32>| async move { Ok::<_, String>(cx.page_param) },
        |_, _, _, _| None,
    );
    let got = client.fetch_infinite_query(&options).await.unwrap();
    assert_eq!(got, data([10], [10]));
    assert_eq!(cached(&client, key!("a5")), Some(got));
    let observer = client
        .watch_infinite(&options)
        .select(|d: &InfiniteData<i32, i32>| d.pages.iter().map(|p| p * 2).collect::<Vec<_>>());
    let _subscription = observer.subscribe(|_| {});
    h.eventually("settled", || !observer.result().is_fetching()).await;
    assert_eq!(observer.result().data, Some(vec![20]));
}

/// Pages named after their param, from 10 in steps of 5; `count` counts next-param calls,
/// and there is no page after 20.
fn by_fives(k: QueryKey, count: &Counter) -> Opts<String, i32> {
    let count = count.clone();
    InfiniteQueryOptions::new(
        k,
        10,
        |cx: PageContext<i32>| async move { Ok::<_, String>(cx.page_param.to_string()) },
        move |_, _, last, _| {
            count.hit();
            (*last < 20).then_some(last + 5)
        },
    )
}

async fn a6_a7_prefetching_a_number_of_pages_stops_at_the_last(h: Harness) {
    let client = h.client();
    let count = Counter::default();
    let three = by_fives(key!("a6"), &count).pages(3);
    client.prefetch_query(three.query_options()).await;
    let expected = data(strings(&["10", "15", "20"]), [10, 15, 20]);
    assert_eq!(client.get_query_data(key!("a6")).unwrap(), Some(expected.clone()));
    assert_eq!(count.get(), 2);

    let count = Counter::default();
    let five = by_fives(key!("a7"), &count).pages(5);
    client.prefetch_query(five.query_options()).await;
    assert_eq!(client.get_query_data(key!("a7")).unwrap(), Some(expected));
    assert_eq!(count.get(), 3, "the third call said there is no next page");
}

// ---- beyond the TanStack suites ----

async fn concurrent_next_page_calls_share_one_fetch(h: Harness) {
    let client = h.client();
    let (calls, holds) = (Calls::new(), Holds::default());
    let options = numbers(key!("dedup"), &calls, &holds);
    client.fetch_infinite_query(&options).await.unwrap();
    let gate = holds.hold(2);
    let observer = client.watch_infinite(&options);
    // Both calls are in before the page answers: the second joins the first's fetch.
    let (first, second, ()) =
        futures::join!(client.fetch_next_page(&options), client.fetch_next_page(&options), async {
            h.eventually("page 2 is asked for", || calls.len() == 2).await;
            assert!(observer.is_fetching_next_page() && !observer.is_fetching_previous_page());
            gate.open();
        });
    assert_eq!(first.unwrap(), data([1, 2], [1, 2]));
    assert_eq!(second.unwrap(), data([1, 2], [1, 2]));
    assert_eq!(calls.params(), [(1, Forward), (2, Forward)], "one call for page 2");
    assert!(!observer.is_fetching_next_page());
}

async fn a_page_fetch_supersedes_another_kind_and_a_refetch_joins_it(h: Harness) {
    let client = h.client();
    let (calls, holds, k) = (Calls::new(), Holds::default(), key!("supersede"));
    let options = numbers(k.clone(), &calls, &holds);
    client.fetch_infinite_query(&options).await.unwrap();
    let observer = client.watch_infinite(&options);
    let gate = holds.hold(0);
    let previous = h.runtime.spawn_with_handle({
        let (client, options) = (client.clone(), options.clone());
        async move { client.fetch_previous_page(&options).await }
    });
    h.eventually("page 0 is asked for", || calls.len() == 2).await;
    assert!(observer.is_fetching_previous_page());
    // The next page replaces the previous page's fetch, whose caller gets its outcome.
    assert_eq!(client.fetch_next_page(&options).await.unwrap(), data([1, 2], [1, 2]));
    assert_eq!(previous.await.unwrap(), data([1, 2], [1, 2]));
    gate.open();
    h.yield_a_little().await;
    assert_eq!(cached(&client, k.clone()), Some(data([1, 2], [1, 2])));

    // A refetch joins a page fetch in flight.
    let gate = holds.hold(3);
    let (next, refetch, ()) = futures::join!(
        client.fetch_next_page(&options),
        client.fetch_query_fresh(options.query_options()),
        async {
            h.eventually("page 3 is asked for", || calls.len() == 4).await;
            gate.open();
        }
    );
    assert_eq!(next.unwrap(), data([1, 2, 3], [1, 2, 3]));
    assert_eq!(refetch.unwrap(), data([1, 2, 3], [1, 2, 3]));
    assert_eq!(calls.len(), 4);
}

async fn cancelling_a_page_fetch_keeps_the_pages(h: Harness) {
    let client = h.client();
    let (calls, holds, k) = (Calls::new(), Holds::default(), key!("cancel"));
    let options = numbers(k.clone(), &calls, &holds);
    client.fetch_infinite_query(&options).await.unwrap();
    let _gate = holds.hold(2);
    let next = h.runtime.spawn_with_handle({
        let (client, options) = (client.clone(), options.clone());
        async move { client.fetch_next_page(&options).await }
    });
    h.eventually("page 2 is asked for", || calls.len() == 2).await;
    assert_eq!(client.cancel_queries(k.clone()).await, 1);
    assert!(matches!(next.await, Err(QueryError::Cancelled)));
    let state = client.get_query_state::<InfiniteData<i32, i32>, String>(k).unwrap().unwrap();
    assert_eq!(state.data, Some(data([1], [1])));
    assert_eq!((state.status, state.fetch_status), (QueryStatus::Success, FetchStatus::Idle));
    assert!(!client.watch_infinite(&options).is_fetching_next_page());
}

async fn a_failed_page_keeps_the_pages(h: Harness) {
    let client = h.client();
    let k = key!("failing");
    let options = InfiniteQueryOptions::new(
        k.clone(),
        1,
        |cx: PageContext<i32>| async move {
            match cx.page_param {
                1 => Ok(1),
                p => Err(format!("no page {p}")),
            }
        },
        |last: &i32, _: &[i32], _: &i32, _: &[i32]| Some(last + 1),
    )
    .retry(0);
    client.fetch_infinite_query(&options).await.unwrap();
    let error = client.fetch_next_page(&options).await.unwrap_err();
    assert_eq!(error.failed().map(String::as_str), Some("no page 2"));
    let observer = client.watch_infinite(&options);
    let state = observer.result();
    assert_eq!(state.status, QueryStatus::Error);
    assert_eq!(state.data, Some(data([1], [1])));
    assert!(observer.has_next_page(), "computed on the pages kept");
}

async fn a_panicking_next_param_function_fails_the_fetch_and_reads_as_no_page(h: Harness) {
    let client = h.client();
    let (calls, k) = (Calls::new(), key!("panicky"));
    let options = {
        let calls = calls.clone();
        InfiniteQueryOptions::new(
            k.clone(),
            1,
            move |cx: PageContext<i32>| {
                calls.record(&cx);
                async move { Ok::<_, String>(cx.page_param) }
            },
            |_: &i32, _: &[i32], _: &i32, _: &[i32]| -> Option<i32> { panic!("a cursor bug") },
        )
    };
    client.fetch_infinite_query(&options).await.unwrap();
    assert!(!client.has_next_page(&options), "a panic reads as no page");
    let Err(QueryError::Panicked(message)) = client.fetch_next_page(&options).await else {
        panic!("the fetch fails with the panic");
    };
    assert!(message.contains("get_next_page_param panicked: a cursor bug"), "{message}");
    assert_eq!(cached(&client, k.clone()), Some(data([1], [1])), "the pages stay");
    assert_eq!(calls.len(), 1);
    // The key keeps working: a refetch of its one page calls no param function.
    assert_eq!(client.fetch_query_fresh(options.query_options()).await.unwrap(), data([1], [1]));
    assert_eq!(client.is_fetching(()), 0);
}

/// A page whose `Clone` panics while `explode` is set.
#[derive(Debug)]
struct Fragile {
    value: i32,
    explode: Arc<AtomicBool>,
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert!(!self.explode.load(Ordering::SeqCst), "a Clone bug");
        Self { value: self.value, explode: self.explode.clone() }
    }
}

async fn a_panicking_clone_of_the_pages_fails_the_page_fetch_only(h: Harness) {
    let client = h.client();
    let explode = Arc::new(AtomicBool::new(false));
    let options = {
        let explode = explode.clone();
        InfiniteQueryOptions::new(
            key!("fragile"),
            1,
            move |cx: PageContext<i32>| {
                let explode = explode.clone();
                async move { Ok::<_, String>(Fragile { value: cx.page_param, explode }) }
            },
            |_: &Fragile, _: &[Fragile], last: &i32, _: &[i32]| Some(last + 1),
        )
    };
    client.fetch_infinite_query(&options).await.unwrap();
    explode.store(true, Ordering::SeqCst);
    // The copy the page fetch starts from cannot be made: the fetch fails, nothing is called.
    let Err(QueryError::Panicked(message)) = client.fetch_next_page(&options).await else {
        panic!("the fetch fails with the panic");
    };
    assert!(message.contains("Clone panicked"), "{message}");
    explode.store(false, Ordering::SeqCst);
    let data = client.fetch_next_page(&options).await.unwrap();
    assert_eq!(data.pages.iter().map(|p| p.value).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(data.page_params, [1, 2]);
}

async fn a_retried_refetch_resumes_at_the_failed_page(h: Harness) {
    let client = h.client();
    let (calls, k) = (Calls::new(), key!("resume"));
    let options = {
        let calls = calls.clone();
        InfiniteQueryOptions::new(
            k.clone(),
            1,
            move |cx: PageContext<i32>| {
                let n = calls.record(&cx);
                async move {
                    if n == 2 {
                        return Err("flaky".to_string());
                    }
                    Ok(cx.page_param * 10)
                }
            },
            |_: &i32, _: &[i32], last: &i32, _: &[i32]| Some(last + 1),
        )
        .retry(1)
        .retry_delay(|_| Duration::ZERO)
    };
    client.set_query_data(k, data([0, 0, 0], [1, 2, 3])).unwrap();
    let got = client.fetch_query_fresh(options.query_options()).await.unwrap();
    assert_eq!(got, data([10, 20, 30], [1, 2, 3]));
    let params: Vec<i32> = calls.params().into_iter().map(|(p, _)| p).collect();
    assert_eq!(params, [1, 2, 2, 3], "page 1 is not fetched again");
}

async fn page_fetches_leave_the_query_refetching_every_page(h: Harness) {
    let client = h.client();
    let (calls, holds, k) = (Calls::new(), Holds::default(), key!("refetcher"));
    let options = numbers(k.clone(), &calls, &holds);
    let observer = client.watch_infinite(&options);
    // A next page of a query without data fetches the first page, as a next-page fetch.
    let gate = holds.hold(1);
    let first = h.runtime.spawn_with_handle({
        let (client, options) = (client.clone(), options.clone());
        async move { client.fetch_next_page(&options).await }
    });
    h.eventually("page 1 is asked for", || calls.len() == 1).await;
    assert!(observer.is_fetching_next_page());
    gate.open();
    assert_eq!(first.await.unwrap(), data([1], [1]));
    client.fetch_next_page(&options).await.unwrap();
    client.fetch_previous_page(&options).await.unwrap();
    calls.clear();
    assert_eq!(client.invalidate_queries(k.clone(), RefetchType::All).await, 1);
    assert_eq!(calls.params(), [(0, Forward), (1, Forward), (2, Forward)]);
    assert_eq!(cached(&client, k), Some(data([0, 1, 2], [0, 1, 2])));
}

async fn max_pages_slides_over_a_refetch_of_more_pages(h: Harness) {
    let client = h.client();
    let calls = Calls::new();
    let options = numbers(key!("window"), &calls, &Holds::default()).pages(4).max_pages(2);
    let got = client.fetch_infinite_query(&options).await.unwrap();
    assert_eq!(got, data([3, 4], [3, 4]));
    assert_eq!(calls.len(), 4);
}

async fn infinite_queries_persist_and_hydrate(h: Harness) {
    let store = MemoryStorage::new();
    let config = QueryClientConfig::default().storage(store.clone());
    let first = h.client_with(config.clone().stale_time(Duration::ZERO));
    let (calls, k) = (Calls::new(), key!("persisted", "feed"));
    let options = numbers(k.clone(), &calls, &Holds::default()).persist();
    first.fetch_infinite_query(&options).await.unwrap();
    first.flush_storage().await;
    first.fetch_next_page(&options).await.unwrap();
    first.flush_storage().await;
    assert_eq!(first.storage_stats().writes, 2);
    let record: serde_json::Value =
        serde_json::from_str(&store.peek("('persisted', 'feed')").unwrap()).unwrap();
    assert_eq!(record["data"], json!({ "pages": [1, 2], "pageParams": [1, 2] }));
    // B9: a refetch of every page writes once, for the whole fetch.
    first.fetch_query_fresh(options.query_options()).await.unwrap();
    first.flush_storage().await;
    assert_eq!(first.storage_stats().writes, 3);
    assert_eq!(calls.len(), 4);

    let fresh = config.stale_time(Duration::from_secs(100));
    let second = h.client_with(fresh.clone());
    assert_eq!(second.fetch_infinite_query(&options).await.unwrap(), data([1, 2], [1, 2]));
    h.yield_a_little().await;
    assert_eq!(calls.len(), 4, "hydrated without a call");

    // A page fetch of a cold persisted key goes after the stored pages.
    let third = h.client_with(fresh);
    assert_eq!(third.fetch_next_page(&options).await.unwrap(), data([1, 2, 3], [1, 2, 3]));
    assert_eq!(calls.params()[4..], [(3, Forward)]);
}

runtime_suite!(
    a1_a2_ensure_returns_cached_pages_or_fetches_the_first,
    a3_stale_pages_are_returned_then_refetched_from_the_stored_param,
    a4_static_data_is_never_refetched,
    a5_fetch_infinite_query_and_a_selecting_observer,
    a6_a7_prefetching_a_number_of_pages_stops_at_the_last,
    concurrent_next_page_calls_share_one_fetch,
    a_page_fetch_supersedes_another_kind_and_a_refetch_joins_it,
    cancelling_a_page_fetch_keeps_the_pages,
    a_failed_page_keeps_the_pages,
    a_panicking_next_param_function_fails_the_fetch_and_reads_as_no_page,
    a_panicking_clone_of_the_pages_fails_the_page_fetch_only,
    a_retried_refetch_resumes_at_the_failed_page,
    page_fetches_leave_the_query_refetching_every_page,
    max_pages_slides_over_a_refetch_of_more_pages,
    infinite_queries_persist_and_hydrate,
);
