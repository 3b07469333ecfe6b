//! Infinite queries: TanStack Query v5's `infiniteQueryBehavior` (B*) and
//! `InfiniteQueryObserver` (O*) tests, on every runtime. The client's infinite operations
//! and everything beyond the TanStack suites are in `infinite_client.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pages::{Calls, Holds, Opts, cached, data, numbers};
use common::{Counter, Harness};
use futures::FutureExt;
use pystackquery::{
    InfiniteData, InfiniteQueryOptions, PageContext, PageDirection, QueryClient, QueryError,
    QueryKey, QueryStatus, key,
};
use serde_json::json;

use PageDirection::{Backward, Forward};

// ---- infiniteQueryBehavior.test (B*) ----

// B1 (a missing query function) cannot happen: the page function is a constructor argument.

async fn b2_max_pages_limits_the_pages_in_both_directions(h: Harness) {
    let client = h.client();
    let (calls, k) = (Calls::new(), key!("b2"));
    let options = numbers(k.clone(), &calls, &Holds::default()).max_pages(2);
    let observer = client.watch_infinite(&options);
    let _subscription = observer.subscribe(|_| {});
    h.eventually("the first page", || observer.result().is_success()).await;
    let state = observer.result();
    assert_eq!(state.data, Some(data([1], [1])));
    assert!(!state.is_fetching());
    let first = calls.first();
    assert_eq!((first.key, first.page_param, first.direction), (k, 1, Forward));
    assert!(first.meta.is_empty());

    calls.clear();
    assert_eq!(observer.fetch_next_page().await.data, Some(data([1, 2], [1, 2])));
    assert_eq!(calls.params(), [(2, Forward)]);
    calls.clear();
    assert_eq!(observer.fetch_previous_page().await.data, Some(data([0, 1], [0, 1])));
    assert_eq!(calls.params(), [(0, Backward)], "the last page went");
    calls.clear();
    assert_eq!(observer.fetch_previous_page().await.data, Some(data([-1, 0], [-1, 0])));
    assert_eq!(calls.params(), [(-1, Backward)]);
    calls.clear();
    assert_eq!(observer.fetch_next_page().await.data.unwrap().pages, [0, 1]);
    assert_eq!(calls.params(), [(1, Forward)], "the first page went");
    calls.clear();
    observer.refetch().await;
    assert_eq!(calls.params(), [(0, Forward), (1, Forward)]);
    assert_eq!(observer.result().data, Some(data([0, 1], [0, 1])));
}

async fn b3_cancelling_the_first_fetch_leaves_no_data(h: Harness) {
    let client = h.client();
    let (calls, holds) = (Calls::new(), Holds::default());
    let _gate = holds.hold(1);
    let options = numbers(key!("b3"), &calls, &holds);
    let observer = client.watch_infinite(&options);
    let _subscription = observer.subscribe(|_| {});
    h.eventually("the first page is asked for", || calls.len() == 1).await;
    assert_eq!(client.cancel_queries(key!("b3")).await, 1);
    let state = observer.result();
    assert!(!state.is_fetching());
    // Cancellation reverts (TanStack's cancelQueries): the query is as before the fetch.
    assert_eq!(state.status, QueryStatus::Idle);
    assert!(state.data.is_none() && state.error.is_none());
    assert_eq!(calls.params(), [(1, Forward)]);
}

async fn b4_a_cancelled_refetch_keeps_the_pages_and_fetches_no_more(h: Harness) {
    let client = h.client();
    let (calls, holds, k) = (Calls::new(), Holds::default(), key!("b4"));
    // During the refetch page 1 answers at once, with another value, and page 2 waits.
    let options = {
        let (calls, holds) = (calls.clone(), holds.clone());
        InfiniteQueryOptions::new(
            k.clone(),
            1,
            move |cx: PageContext<i32>| {
                let n = calls.record(&cx);
                let gate = holds.gate(cx.page_param).filter(|_| n > 2);
                async move {
                    if let Some(gate) = gate {
                        gate.wait().await;
                    }
                    Ok::<_, String>(if n > 2 { cx.page_param * 100 } else { cx.page_param })
                }
            },
            |_: &i32, _: &[i32], last: &i32, _: &[i32]| Some(last + 1),
        )
    };
    let observer = client.watch_infinite(&options);
    let _subscription = observer.subscribe(|_| {});
    h.eventually("the first page", || observer.result().is_success()).await;
    assert_eq!(observer.fetch_next_page().await.data, Some(data([1, 2], [1, 2])));
    assert_eq!(calls.params(), [(1, Forward), (2, Forward)]);

    let _gate = holds.hold(2);
    let refetch = h.runtime.spawn_with_handle({
        let (client, options) = (client.clone(), options.clone());
        async move { client.fetch_query_fresh(options.query_options()).await }
    });
    h.eventually("page 2 of the refetch is asked for", || calls.len() == 4).await;
    let state = observer.result();
    assert!(state.is_fetching() && !state.is_error());
    assert_eq!(client.cancel_queries(k).await, 1);
    assert!(matches!(refetch.await, Err(QueryError::Cancelled)));
    let state = observer.result();
    assert!(!state.is_fetching() && state.error.is_none());
    assert_eq!(state.status, QueryStatus::Success);
    assert_eq!(state.data, Some(data([1, 2], [1, 2])), "the refetched page 1 is discarded");
    h.yield_a_little().await;
    assert_eq!(calls.len(), 4);
}

async fn b5_cancelling_between_refetched_pages_stops_the_loop(h: Harness) {
    let client = h.client();
    let (calls, k) = (Calls::new(), key!("b5"));
    // Page 1 cancels the query (its own fetch) while it answers.
    let canceller: Arc<Mutex<Option<QueryClient>>> = Arc::new(Mutex::new(Some(client.clone())));
    let options = {
        let (calls, canceller, k) = (calls.clone(), canceller.clone(), k.clone());
        InfiniteQueryOptions::new(
            k.clone(),
            1,
            move |cx: PageContext<i32>| {
                calls.record(&cx);
                if cx.page_param == 1
                    && let Some(client) = canceller.lock().unwrap().take()
                {
                    assert!(client.cancel_queries(k.clone()).now_or_never().is_none());
                }
                async move { Ok::<_, String>(cx.page_param) }
            },
            |last: &i32, _: &[i32], _: &i32, _: &[i32]| Some(last + 1),
        )
    };
    client.set_query_data(k.clone(), data([1, 2], [1, 2])).unwrap();
    let outcome = client.fetch_query_fresh(options.query_options()).await;
    assert!(matches!(outcome, Err(QueryError::Cancelled)), "{outcome:?}");
    assert_eq!(calls.params(), [(1, Forward)], "page 2 of 2 is never asked for");
    assert_eq!(cached(&client, k), Some(data([1, 2], [1, 2])));
}

async fn b6_a_failing_page_with_retries_does_not_loop(h: Harness) {
    let client = h.client();
    let calls = Calls::new();
    let errors = Arc::new(Mutex::new(0));
    // Page p is the item "item-{p+1}" with next cursor p+1, up to page 3 (no next).
    let options = {
        let (calls, errors, runtime) = (calls.clone(), errors.clone(), h.runtime.clone());
        InfiniteQueryOptions::new(
            key!("b6"),
            1u32,
            move |cx: PageContext<u32>| {
                calls.record(&cx);
                let (errors, runtime) = (errors.clone(), runtime.clone());
                async move {
                    runtime.sleep(Duration::from_millis(10)).await;
                    let p = cx.page_param;
                    if p == 2 {
                        let mut errors = errors.lock().unwrap();
                        if *errors < 3 {
                            *errors += 1;
                            return Err("429".to_string());
                        }
                    }
                    Ok((format!("item-{}", p + 1), (p < 3).then_some(p + 1)))
                }
            },
            |last: &(String, Option<u32>), _: &[_], _: &u32, _: &[u32]| last.1,
        )
        .retry(5)
        .retry_delay(|_| Duration::from_millis(10))
    };
    let params = |d: InfiniteData<(String, Option<u32>), u32>| d.page_params;
    assert_eq!(params(client.fetch_next_page(&options).await.unwrap()), [1]);
    assert_eq!(params(client.fetch_next_page(&options).await.unwrap()), [1, 2]);
    assert_eq!(calls.len(), 5, "page 2 failed three times, then answered");
    assert_eq!(params(client.fetch_next_page(&options).await.unwrap()), [1, 2, 3]);
    *errors.lock().unwrap() = 0;
    let last = client.fetch_next_page(&options).await.unwrap();
    assert_eq!(last.page_params, [1, 2, 3], "no next page: nothing fetched");
    assert_eq!(last.pages[2], ("item-4".to_string(), None));
    assert_eq!(calls.len(), 6);
}

async fn b7_an_initial_param_of_none_is_fetched(h: Harness) {
    let client = h.client();
    let options: Opts<String, Option<u32>> = InfiniteQueryOptions::new(
        key!("b7"),
        None,
        |_| async { Ok("data".to_string()) },
        |_, _, _, _| None,
    );
    let observer = client.watch_infinite(&options);
    let _subscription = observer.subscribe(|_| {});
    h.eventually("the first page", || observer.result().is_success()).await;
    let state = observer.result();
    assert!(!state.is_fetching());
    assert_eq!(state.data, Some(data(["data".to_string()], [None])));
}

async fn b8_no_next_page_when_the_next_param_is_none(h: Harness) {
    let client = h.client();
    let calls = Calls::new();
    let options = {
        let calls = calls.clone();
        InfiniteQueryOptions::new(
            key!("b8"),
            1,
            move |cx: PageContext<i32>| {
                calls.record(&cx);
                async move { Ok::<_, String>(cx.page_param) }
            },
            |last: &i32, _: &[i32], _: &i32, _: &[i32]| (*last != 1).then_some(last + 1),
        )
    };
    let observer = client.watch_infinite(&options);
    let _subscription = observer.subscribe(|_| {});
    h.eventually("the first page", || observer.result().is_success()).await;
    assert!(!observer.has_next_page());
    let state = observer.fetch_next_page().await;
    assert_eq!(state.data, Some(data([1], [1])));
    assert!(!state.is_fetching());
    assert_eq!(calls.len(), 1);
}

// B9 (the persister wraps the whole fetch once) is the persistence test below: one record
// write per fetch of every page.

// ---- infiniteQueryObserver.test (O*) ----

/// A page function that waits 10 ms and answers 1.
fn one_after_10ms(h: &Harness, k: QueryKey, calls: &Calls<i32>) -> Opts<i32, i32> {
    let (calls, runtime) = (calls.clone(), h.runtime.clone());
    InfiniteQueryOptions::new(
        k,
        1,
        move |cx: PageContext<i32>| {
            calls.record(&cx);
            let runtime = runtime.clone();
            async move {
                runtime.sleep(Duration::from_millis(10)).await;
                Ok(1)
            }
        },
        |_, _, _, _| Some(2),
    )
}

async fn o1_an_infinite_query_with_select(h: Harness) {
    let client = h.client();
    let options = one_after_10ms(&h, key!("o1"), &Calls::new());
    let observer = client.watch_infinite(&options).select(|d: &InfiniteData<i32, i32>| {
        data(d.pages.iter().map(ToString::to_string).collect::<Vec<_>>(), d.page_params.clone())
    });
    let last = Arc::new(Mutex::new(None));
    let log = last.clone();
    let subscription = observer.subscribe(move |state| *log.lock().unwrap() = state.data.clone());
    h.eventually("the first page", || last.lock().unwrap().is_some()).await;
    drop(subscription);
    assert_eq!(*last.lock().unwrap(), Some(data(["1".to_string()], [1])));
}

async fn o2_the_meta_reaches_the_page_function(h: Harness) {
    let client = h.client();
    let calls = Calls::new();
    let options = one_after_10ms(&h, key!("o2"), &calls).meta(json!({ "it": "works" }));
    let observer = client.watch_infinite(&options);
    let subscription = observer.subscribe(|_| {});
    h.eventually("the first page", || observer.result().is_success()).await;
    drop(subscription);
    assert_eq!(observer.result().data, Some(data([1], [1])));
    assert_eq!(calls.first().meta.get("it"), Some(&json!("works")));
}

async fn o3_param_functions_get_the_current_page_params(h: Harness) {
    let client = h.client();
    let single = Arc::new(Mutex::new(Vec::<String>::new()));
    let all = Arc::new(Mutex::new(Vec::<String>::new()));
    let join =
        |params: &[i32]| params.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let options = {
        let (s1, a1, s2, a2) = (single.clone(), all.clone(), single.clone(), all.clone());
        let runtime = h.runtime.clone();
        InfiniteQueryOptions::new(
            key!("o3"),
            1,
            move |cx: PageContext<i32>| {
                let runtime = runtime.clone();
                async move {
                    runtime.sleep(Duration::from_millis(10)).await;
                    Ok::<_, String>(cx.page_param.to_string())
                }
            },
            move |_: &String, _: &[String], last: &i32, params: &[i32]| {
                s1.lock().unwrap().push(format!("next{last}"));
                a1.lock().unwrap().push(format!("next{}", join(params)));
                Some(last + 1)
            },
        )
        .get_previous_page_param(move |_, _, first, params| {
            s2.lock().unwrap().push(format!("prev{first}"));
            a2.lock().unwrap().push(format!("prev{}", join(params)));
            Some(first - 1)
        })
    };
    let observer = client.watch_infinite(&options);
    // Where TanStack computes a result (after each fetch), ask for both flags.
    let flags = || (observer.has_next_page(), observer.has_previous_page());
    observer.fetch_next_page().await; // no data: the first page
    assert_eq!(flags(), (true, true));
    observer.fetch_previous_page().await;
    assert_eq!(flags(), (true, true));
    assert_eq!(*single.lock().unwrap(), ["next1", "prev1", "prev1", "next1", "prev0"]);
    assert_eq!(*all.lock().unwrap(), ["next1", "prev1", "prev1", "next0,1", "prev0,1"]);

    single.lock().unwrap().clear();
    all.lock().unwrap().clear();
    let state = observer.refetch().await;
    assert_eq!(state.data, Some(data(["0".to_string(), "1".to_string()], [0, 1])));
    assert_eq!(flags(), (true, true));
    assert_eq!(*single.lock().unwrap(), ["next0", "next1", "prev0"]);
    assert_eq!(*all.lock().unwrap(), ["next0", "next0,1", "prev0,1"]);
}

async fn o4_param_functions_are_not_called_without_pages(h: Harness) {
    let client = h.client();
    let (next_calls, previous_calls) = (Counter::default(), Counter::default());
    let options = {
        let (next_calls, previous_calls) = (next_calls.clone(), previous_calls.clone());
        InfiniteQueryOptions::new(
            key!("o4"),
            1,
            |cx: PageContext<i32>| async move { Ok::<_, String>(cx.page_param) },
            move |_: &i32, _: &[i32], last: &i32, _: &[i32]| {
                next_calls.hit();
                Some(last + 1)
            },
        )
        .get_previous_page_param(move |_, _, first, _| {
            previous_calls.hit();
            Some(first - 1)
        })
    };
    let observer = client.watch_infinite(&options);
    let _subscription = observer.subscribe(|_| {});
    h.eventually("the first page", || observer.result().is_success()).await;
    client.set_query_data(key!("o4"), data::<i32, i32>([], [])).unwrap();
    assert!(!observer.has_next_page() && !observer.has_previous_page());
    assert_eq!((next_calls.get(), previous_calls.get()), (0, 0));
}

/// O5 (the next param becomes `undefined`) and O6 (`null`) are one case in Rust: `None`.
async fn o5_o6_a_refetch_stops_when_there_is_no_next_page(h: Harness) {
    let client = h.client();
    let calls = Calls::new();
    let next = Arc::new(Mutex::new(Some(2)));
    let options = {
        let (calls, next, runtime) = (calls.clone(), next.clone(), h.runtime.clone());
        InfiniteQueryOptions::new(
            key!("o5"),
            1,
            move |cx: PageContext<i32>| {
                calls.record(&cx);
                let runtime = runtime.clone();
                async move {
                    runtime.sleep(Duration::from_millis(10)).await;
                    Ok::<_, String>(cx.page_param.to_string())
                }
            },
            move |_: &String, _: &[String], _: &i32, _: &[i32]| *next.lock().unwrap(),
        )
    };
    let observer = client.watch_infinite(&options);
    observer.fetch_next_page().await;
    let state = observer.fetch_next_page().await;
    assert_eq!(state.data.unwrap().pages, ["1", "2"]);
    assert_eq!(calls.len(), 2);
    assert!(observer.has_next_page());

    *next.lock().unwrap() = None;
    let state = observer.refetch().await;
    assert_eq!(state.data.unwrap().pages, ["1"]);
    assert_eq!(calls.len(), 3, "only page 1 was refetched");
    assert!(!observer.has_next_page());
}

async fn o7_the_initial_state_before_any_fetch(h: Harness) {
    let client = h.client();
    let options = one_after_10ms(&h, key!("o7"), &Calls::new());
    let observer = client.watch_infinite(&options);
    let state = observer.result();
    assert!(state.data.is_none() && !state.is_fetching() && !state.is_error());
    assert!(!observer.has_next_page() && !observer.has_previous_page());
    assert!(!observer.is_fetching_next_page() && !observer.is_fetching_previous_page());
}

runtime_suite!(
    b2_max_pages_limits_the_pages_in_both_directions,
    b3_cancelling_the_first_fetch_leaves_no_data,
    b4_a_cancelled_refetch_keeps_the_pages_and_fetches_no_more,
    b5_cancelling_between_refetched_pages_stops_the_loop,
    b6_a_failing_page_with_retries_does_not_loop,
    b7_an_initial_param_of_none_is_fetched,
    b8_no_next_page_when_the_next_param_is_none,
    o1_an_infinite_query_with_select,
    o2_the_meta_reaches_the_page_function,
    o3_param_functions_get_the_current_page_params,
    o4_param_functions_are_not_called_without_pages,
    o5_o6_a_refetch_stops_when_there_is_no_next_page,
    o7_the_initial_state_before_any_fetch,
);
