//! The engine's behaviour (the seed's `tests/core/*.py` and more), on every runtime.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{Counter, Gate, Harness};
use pystackquery::{FetchStatus, QueryClientConfig, QueryError, QueryOptions, QueryStatus, key};

type Opts<T> = QueryOptions<T, String>;

fn counting(key: pystackquery::QueryKey, calls: &Counter) -> Opts<String> {
    let calls = calls.clone();
    QueryOptions::new(key, move || {
        let n = calls.hit();
        async move { Ok(format!("data_{n}")) }
    })
}

fn gated(
    key: pystackquery::QueryKey,
    calls: &Counter,
    gate: &Gate,
    value: &'static str,
) -> Opts<String> {
    let (calls, gate) = (calls.clone(), gate.clone());
    QueryOptions::new(key, move || {
        calls.hit();
        let gate = gate.clone();
        async move {
            gate.wait().await;
            Ok(value.to_string())
        }
    })
}

async fn fetch_query_caches_fresh_data(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let opts = counting(key!("test"), &calls).stale_time(Duration::from_secs(60));
    assert_eq!(client.fetch_query(&opts).await.unwrap(), "data_1");
    assert_eq!(client.fetch_query(&opts).await.unwrap(), "data_1");
    assert_eq!(calls.get(), 1, "a fresh hit must not call the function");
}

async fn stale_while_revalidate(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let opts = counting(key!("swr"), &calls).stale_time(Duration::ZERO);
    assert_eq!(client.fetch_query(&opts).await.unwrap(), "data_1");
    // Stale: the old value comes back at once and one background refetch starts.
    assert_eq!(client.fetch_query(&opts).await.unwrap(), "data_1");
    h.eventually("background refetch lands", || {
        client.get_query_data::<String>(key!("swr")).unwrap().as_deref() == Some("data_2")
    })
    .await;
    assert_eq!(calls.get(), 2);
}

async fn concurrent_callers_share_one_fetch(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let runtime = h.runtime.clone();
    let counter = calls.clone();
    let opts: Opts<&str> = QueryOptions::new(key!("dedup"), move || {
        counter.hit();
        let runtime = runtime.clone();
        async move {
            runtime.sleep(Duration::from_millis(50)).await;
            Ok("done")
        }
    });
    let (a, b, c) = futures::join!(
        client.fetch_query(&opts),
        client.fetch_query(&opts),
        client.fetch_query(&opts)
    );
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), ("done", "done", "done"));
    assert_eq!(calls.get(), 1);
}

async fn thousand_spawned_callers_one_call(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let runtime = h.runtime.clone();
    let counter = calls.clone();
    let opts: Opts<u64> = QueryOptions::new(key!("hot", 1), move || {
        counter.hit();
        let runtime = runtime.clone();
        async move {
            runtime.sleep(Duration::from_millis(30)).await;
            Ok(7)
        }
    });
    let handles: Vec<_> = (0..1000)
        .map(|_| {
            let (client, opts) = (client.clone(), opts.clone());
            h.runtime.spawn_with_handle(async move { client.fetch_query(&opts).await })
        })
        .collect();
    for result in futures::future::join_all(handles).await {
        assert_eq!(result.unwrap(), 7);
    }
    assert_eq!(calls.get(), 1, "1,000 concurrent callers must share one call");
}

async fn dropped_caller_does_not_cancel_others(h: Harness) {
    let client = h.client();
    let (calls, gate) = (Counter::default(), Gate::default());
    let opts = gated(key!("drop"), &calls, &gate, "value").stale_time(Duration::from_secs(60));
    let mut first = Box::pin(client.fetch_query(&opts));
    assert!(futures::poll!(first.as_mut()).is_pending());
    let mut second = Box::pin(client.fetch_query(&opts));
    assert!(futures::poll!(second.as_mut()).is_pending(), "second caller joins the fetch");
    drop(first);
    gate.open();
    assert_eq!(second.await.unwrap(), "value");
    assert_eq!(calls.get(), 1);
}

async fn fetch_completes_after_every_caller_dropped(h: Harness) {
    let client = h.client();
    let (calls, gate) = (Counter::default(), Gate::default());
    let opts = gated(key!("orphan"), &calls, &gate, "kept");
    let mut caller = Box::pin(client.fetch_query(&opts));
    assert!(futures::poll!(caller.as_mut()).is_pending());
    drop(caller);
    gate.open();
    h.eventually("orphaned fetch is cached", || {
        client.get_query_data::<String>(key!("orphan")).unwrap().as_deref() == Some("kept")
    })
    .await;
    assert_eq!(calls.get(), 1);
}

async fn lifecycle_states(h: Harness) {
    let client = h.client();
    let (calls, gate) = (Counter::default(), Gate::default());
    let opts = gated(key!("lifecycle"), &calls, &gate, "result");
    assert!(client.get_query_state::<String, String>(key!("lifecycle")).unwrap().is_none());
    let mut fetch = Box::pin(client.fetch_query(&opts));
    assert!(futures::poll!(fetch.as_mut()).is_pending());
    let state = client.get_query_state::<String, String>(key!("lifecycle")).unwrap().unwrap();
    assert!(state.is_pending() && state.is_fetching() && state.is_loading());
    gate.open();
    assert_eq!(fetch.await.unwrap(), "result");
    let state = client.get_query_state::<String, String>(key!("lifecycle")).unwrap().unwrap();
    assert!(state.is_success() && !state.is_fetching());
    assert_eq!(state.data.as_deref(), Some("result"));
    assert!(state.data_updated_at.is_some());
}

async fn retry_until_success_resets_failure_count(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let counter = calls.clone();
    let opts: Opts<&str> = QueryOptions::new(key!("retry"), move || {
        let n = counter.hit();
        async move { if n < 3 { Err("fail".to_string()) } else { Ok("success") } }
    })
    .retry(3)
    .retry_delay(|_| Duration::from_millis(5));
    assert_eq!(client.fetch_query(&opts).await.unwrap(), "success");
    assert_eq!(calls.get(), 3);
    let state = client.get_query_state::<&str, String>(key!("retry")).unwrap().unwrap();
    assert!(state.is_success());
    assert_eq!(state.fetch_failure_count, 0);
    assert!(state.fetch_failure_reason.is_none());
}

async fn exhausted_retries_share_error_with_all_waiters(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let errors = Counter::default();
    let counter = calls.clone();
    let seen = errors.clone();
    let opts: Opts<u32> = QueryOptions::new(key!("fails"), move || {
        let n = counter.hit();
        async move { Err(format!("boom {n}")) }
    })
    .retry(2)
    .retry_delay(|_| Duration::from_millis(2))
    .on_error(move |_| {
        seen.hit();
    });
    let (a, b) = futures::join!(client.fetch_query(&opts), client.fetch_query(&opts));
    for result in [a, b] {
        match result {
            Err(QueryError::Failed(e)) => assert_eq!(*e, "boom 3"),
            other => panic!("expected the last attempt's error, got {other:?}"),
        }
    }
    assert_eq!(calls.get(), 3, "one attempt plus two retries");
    assert_eq!(errors.get(), 1, "on_error runs once per fetch");
    let state = client.get_query_state::<u32, String>(key!("fails")).unwrap().unwrap();
    assert!(state.is_error());
    assert_eq!(state.fetch_failure_count, 3);
    assert!(state.error_updated_at.is_some());
}

async fn retry_predicate_stops_retries(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let counter = calls.clone();
    let opts: Opts<u32> = QueryOptions::new(key!("permanent"), move || {
        counter.hit();
        async { Err("404".to_string()) }
    })
    .retry(5)
    .retry_delay(|_| Duration::from_millis(1))
    .retry_if(|_, e: &String| !e.starts_with('4'));
    assert!(client.fetch_query(&opts).await.is_err());
    assert_eq!(calls.get(), 1, "a non-retryable error ends the fetch at once");
}

async fn panicking_function_errors_every_waiter_and_key_recovers(h: Harness) {
    let client = h.client();
    let (calls, gate) = (Counter::default(), Gate::default());
    let (counter, g) = (calls.clone(), gate.clone());
    let opts: Opts<&str> = QueryOptions::new(key!("panics"), move || {
        let n = counter.hit();
        let g = g.clone();
        async move {
            if n == 1 {
                g.wait().await;
                panic!("query function exploded");
            }
            Ok("recovered")
        }
    })
    .retry(3);
    let mut a = Box::pin(client.fetch_query(&opts));
    let mut b = Box::pin(client.fetch_query(&opts));
    assert!(futures::poll!(a.as_mut()).is_pending());
    assert!(futures::poll!(b.as_mut()).is_pending());
    gate.open();
    for result in [a.await, b.await] {
        match result {
            Err(QueryError::Panicked(m)) => assert!(m.contains("exploded")),
            other => panic!("expected a panic error, got {other:?}"),
        }
    }
    assert_eq!(calls.get(), 1, "a panic is not retried");
    assert_eq!(client.fetch_query(&opts).await.unwrap(), "recovered");
}

async fn invalidation_marks_stale(h: Harness) {
    let client = h.client();
    let opts: Opts<&str> = QueryOptions::new(key!("users", "1"), || async { Ok("alice") });
    client.fetch_query(&opts).await.unwrap();
    assert_eq!(client.get_query_data::<&str>(key!("users", "1")).unwrap(), Some("alice"));
    assert_eq!(client.invalidate_queries(key!("users"), true).await, 1);
    let state = client.get_query_state::<&str, String>(key!("users", "1")).unwrap().unwrap();
    assert_eq!(state.data, Some("alice"), "data stays until refetched");
    assert!(state.is_invalidated, "marked invalidated");
    assert!(state.data_updated_at > Some(SystemTime::UNIX_EPOCH), "its timestamp is kept");
}

async fn invalidation_by_prefix_only_touches_matches(h: Harness) {
    let client = h.client();
    for k in [key!("todos", 1), key!("todos", 2), key!("todo"), key!("users", 1)] {
        client.set_query_data(k, 1u8).unwrap();
    }
    assert_eq!(client.invalidate_queries(key!("todos"), false).await, 2);
    let invalidated = |k| client.get_query_state::<u8, String>(k).unwrap().unwrap().is_invalidated;
    assert!(invalidated(key!("todos", 1)));
    assert!(invalidated(key!("todos", 2)));
    assert!(!invalidated(key!("todo")));
    assert!(!invalidated(key!("users", 1)));
    assert_eq!(client.invalidate_queries((), false).await, 4, "the empty key matches all");
}

async fn invalidation_during_fetch_never_lands_stale_result_as_fresh(h: Harness) {
    let client = h.client();
    let k = key!("fence");
    client.set_query_data(k.clone(), "v1".to_string()).unwrap();
    let (calls, gate) = (Counter::default(), Gate::default());
    let old = gated(k.clone(), &calls, &gate, "pre-invalidation");
    // Stale hit: returns v1 and starts a background fetch that will return old data.
    assert_eq!(client.fetch_query(&old).await.unwrap(), "v1");
    h.eventually("background fetch starts", || calls.get() == 1).await;
    client.invalidate_queries(k.clone(), true).await;
    gate.open();
    h.eventually("old fetch finishes", || {
        !client.get_query_state::<String, String>(k.clone()).unwrap().unwrap().is_fetching()
    })
    .await;
    let state = client.get_query_state::<String, String>(k.clone()).unwrap().unwrap();
    assert_eq!(state.data.as_deref(), Some("v1"), "the fenced fetch must not write");
    assert!(state.is_invalidated, "still stale");
    // The next read revalidates under the new generation.
    let fresh = counting(k.clone(), &calls);
    client.fetch_query(&fresh).await.unwrap();
    h.eventually("revalidation lands", || {
        client.get_query_data::<String>(k.clone()).unwrap().as_deref() == Some("data_2")
    })
    .await;
}

async fn set_query_data_survives_in_flight_fetch(h: Harness) {
    let client = h.client();
    let (calls, gate) = (Counter::default(), Gate::default());
    let opts = gated(key!("manual"), &calls, &gate, "fetched");
    let mut fetch = Box::pin(client.fetch_query(&opts));
    assert!(futures::poll!(fetch.as_mut()).is_pending());
    client.set_query_data(key!("manual"), "manual".to_string()).unwrap();
    gate.open();
    // The caller that started the fetch gets what it fetched...
    assert_eq!(fetch.await.unwrap(), "fetched");
    // ...but the cache keeps the newer manual value.
    let state = client.get_query_state::<String, String>(key!("manual")).unwrap().unwrap();
    assert_eq!(state.data.as_deref(), Some("manual"));
    assert_eq!(state.fetch_status, FetchStatus::Idle);
}

async fn set_query_data_creates_missing_query(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    client.set_query_data(key!("seeded"), "seed".to_string()).unwrap();
    assert_eq!(client.get_query_data::<String>(key!("seeded")).unwrap().as_deref(), Some("seed"));
    let opts = counting(key!("seeded"), &calls).stale_time(Duration::from_secs(60));
    assert_eq!(client.fetch_query(&opts).await.unwrap(), "seed");
    assert_eq!(calls.get(), 0);
}

async fn update_query_data_sees_old_value(h: Harness) {
    let client = h.client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..3 {
        let seen = seen.clone();
        client
            .update_query_data(key!("counter"), move |old: Option<&u32>| {
                seen.lock().unwrap().push(old.copied());
                old.map_or(1, |n| n + 1)
            })
            .unwrap();
    }
    assert_eq!(*seen.lock().unwrap(), vec![None, Some(1), Some(2)]);
    assert_eq!(client.get_query_data::<u32>(key!("counter")).unwrap(), Some(3));
}

async fn wrong_type_is_a_clear_error(h: Harness) {
    let client = h.client();
    client.set_query_data(key!("typed"), "text".to_string()).unwrap();
    let err = client.get_query_data::<u32>(key!("typed")).unwrap_err();
    assert!(err.to_string().contains("('typed',)"), "{err}");
    assert!(err.to_string().contains("u32"), "{err}");
    let opts: Opts<u32> = QueryOptions::new(key!("typed"), || async { Ok(1) });
    assert!(matches!(client.fetch_query(&opts).await, Err(QueryError::TypeMismatch(_))));
    assert!(client.set_query_data(key!("typed"), 5u32).is_err());
    // The original entry is untouched.
    assert_eq!(client.get_query_data::<String>(key!("typed")).unwrap().as_deref(), Some("text"));
}

async fn lru_bound_and_eviction_order(h: Harness) {
    let client = h.client_with(QueryClientConfig::default().cache_max_size(3));
    for name in ["a", "b", "c"] {
        client.set_query_data(key!(name), 0u8).unwrap();
    }
    client.get_query_data::<u8>(key!("a")).unwrap(); // a becomes most recently used
    client.set_query_data(key!("d"), 0u8).unwrap();
    assert_eq!(client.len(), 3);
    assert_eq!(client.cached_keys(), vec![key!("c"), key!("a"), key!("d")], "b was least recent");
    client.set_query_data(key!("e"), 0u8).unwrap();
    assert_eq!(client.cached_keys(), vec![key!("a"), key!("d"), key!("e")]);
}

async fn lru_never_evicts_a_fetching_query(h: Harness) {
    let client = h.client_with(QueryClientConfig::default().cache_max_size(1));
    let (calls, gate) = (Counter::default(), Gate::default());
    let opts = gated(key!("busy"), &calls, &gate, "slow");
    let mut fetch = Box::pin(client.fetch_query(&opts));
    assert!(futures::poll!(fetch.as_mut()).is_pending());
    client.set_query_data(key!("other"), "x".to_string()).unwrap();
    assert!(client.cached_keys().contains(&key!("busy")), "in-flight query must stay");
    gate.open();
    assert_eq!(fetch.await.unwrap(), "slow");
    client.set_query_data(key!("third"), "y".to_string()).unwrap();
    assert_eq!(client.len(), 1, "once idle, the bound applies again");
}

async fn remove_reset_and_clear(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let opts = counting(key!("gone", 1), &calls).stale_time(Duration::from_secs(60));
    client.fetch_query(&opts).await.unwrap();
    assert_eq!(client.remove_queries(key!("gone")), 1);
    assert_eq!(client.get_query_data::<String>(key!("gone", 1)).unwrap(), None);
    assert_eq!(client.fetch_query(&opts).await.unwrap(), "data_2", "removed data is refetched");

    assert_eq!(client.reset_queries(key!("gone")), 1);
    let state = client.get_query_state::<String, String>(key!("gone", 1)).unwrap().unwrap();
    assert_eq!(state.status, QueryStatus::Idle);
    assert!(state.data.is_none() && state.data_updated_at.is_none());

    client.set_query_data(key!("x"), 1u8).unwrap();
    client.clear();
    assert!(client.is_empty());
}

async fn pause_and_resume(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let opts = counting(key!("pause"), &calls);
    client.fetch_query(&opts).await.unwrap();
    assert!(client.pause(key!("pause")));
    let state = client.get_query_state::<String, String>(key!("pause")).unwrap().unwrap();
    assert!(state.is_paused());
    // Stale, but paused: no background refetch.
    assert_eq!(client.fetch_query(&opts).await.unwrap(), "data_1");
    h.yield_a_little().await;
    assert_eq!(calls.get(), 1);
    assert!(client.resume(key!("pause"), false));
    let state = client.get_query_state::<String, String>(key!("pause")).unwrap().unwrap();
    assert!(!state.is_paused());
    assert!(!client.pause(key!("missing")));
}

async fn resume_with_refetch_fetches(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let opts = counting(key!("resume"), &calls);
    client.fetch_query(&opts).await.unwrap();
    client.pause(key!("resume"));
    client.resume(key!("resume"), true);
    h.eventually("resume refetch", || calls.get() == 2).await;
}

async fn set_option_wins_over_client_default_even_if_equal_to_library_default(h: Harness) {
    let client = h.client_with(QueryClientConfig::default().retry(0));
    let calls = Counter::default();
    let counter = calls.clone();
    let explicit: Opts<u8> = QueryOptions::new(key!("explicit"), move || {
        counter.hit();
        async { Err("no".to_string()) }
    })
    .retry(3)
    .retry_delay(|_| Duration::from_millis(1));
    assert!(client.fetch_query(&explicit).await.is_err());
    assert_eq!(calls.get(), 4, "retry(3) set on the query wins over the client's 0");

    let inherited_calls = Counter::default();
    let counter = inherited_calls.clone();
    let inherited: Opts<u8> = QueryOptions::new(key!("inherited"), move || {
        counter.hit();
        async { Err("no".to_string()) }
    });
    assert!(client.fetch_query(&inherited).await.is_err());
    assert_eq!(inherited_calls.get(), 1, "unset retry inherits the client's 0");
}

async fn none_and_unit_are_cacheable(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let counter = calls.clone();
    let opts: Opts<Option<u32>> = QueryOptions::new(key!("nothing"), move || {
        counter.hit();
        async { Ok(None) }
    })
    .stale_time(Duration::from_secs(60));
    assert_eq!(client.fetch_query(&opts).await.unwrap(), None);
    assert_eq!(client.fetch_query(&opts).await.unwrap(), None);
    assert_eq!(calls.get(), 1, "Some(None) is data, not a miss");
    assert_eq!(client.get_query_data::<Option<u32>>(key!("nothing")).unwrap(), Some(None));
    client.set_query_data(key!("unit"), ()).unwrap();
    assert_eq!(client.get_query_data::<()>(key!("unit")).unwrap(), Some(()));
}

async fn prefetch_swallows_errors(h: Harness) {
    let client = h.client_with(QueryClientConfig::default().retry(0));
    let opts: Opts<u8> = QueryOptions::new(key!("prefetch"), || async { Err("down".to_string()) });
    client.prefetch_query(&opts).await;
    let state = client.get_query_state::<u8, String>(key!("prefetch")).unwrap().unwrap();
    assert!(state.is_error());
    let ok: Opts<u8> = QueryOptions::new(key!("prefetch-ok"), || async { Ok(9) });
    client.prefetch_query(&ok).await;
    assert_eq!(client.get_query_data::<u8>(key!("prefetch-ok")).unwrap(), Some(9));
}

async fn callbacks_run_and_a_panicking_callback_is_contained(h: Harness) {
    let client = h.client();
    let settled = Counter::default();
    let s = settled.clone();
    let opts: Opts<u8> = QueryOptions::new(key!("callbacks"), || async { Ok(1) })
        .on_success(|_| panic!("callback bug"))
        .on_settled(move |data, error| {
            assert_eq!((data.copied(), error.is_none()), (Some(1), true));
            s.hit();
        });
    assert_eq!(client.fetch_query(&opts).await.unwrap(), 1);
    h.eventually("on_settled ran", || settled.get() == 1).await;
    assert_eq!(
        client.fetch_query(&opts.clone().stale_time(Duration::from_secs(9))).await.unwrap(),
        1
    );
}

async fn error_then_success_clears_error(h: Harness) {
    let client = h.client_with(QueryClientConfig::default().retry(0));
    let calls = Counter::default();
    let counter = calls.clone();
    let opts: Opts<u8> = QueryOptions::new(key!("flaky"), move || {
        let n = counter.hit();
        async move { if n == 1 { Err("first".to_string()) } else { Ok(2) } }
    });
    assert!(client.fetch_query(&opts).await.is_err());
    assert_eq!(client.fetch_query(&opts).await.unwrap(), 2, "an error state has no data: refetch");
    let state = client.get_query_state::<u8, String>(key!("flaky")).unwrap().unwrap();
    assert!(state.is_success() && state.error.is_none());
}

runtime_suite!(
    fetch_query_caches_fresh_data,
    stale_while_revalidate,
    concurrent_callers_share_one_fetch,
    thousand_spawned_callers_one_call,
    dropped_caller_does_not_cancel_others,
    fetch_completes_after_every_caller_dropped,
    lifecycle_states,
    retry_until_success_resets_failure_count,
    exhausted_retries_share_error_with_all_waiters,
    retry_predicate_stops_retries,
    panicking_function_errors_every_waiter_and_key_recovers,
    invalidation_marks_stale,
    invalidation_by_prefix_only_touches_matches,
    invalidation_during_fetch_never_lands_stale_result_as_fresh,
    set_query_data_survives_in_flight_fetch,
    set_query_data_creates_missing_query,
    update_query_data_sees_old_value,
    wrong_type_is_a_clear_error,
    lru_bound_and_eviction_order,
    lru_never_evicts_a_fetching_query,
    remove_reset_and_clear,
    pause_and_resume,
    resume_with_refetch_fetches,
    set_option_wins_over_client_default_even_if_equal_to_library_default,
    none_and_unit_are_cacheable,
    prefetch_swallows_errors,
    callbacks_run_and_a_panicking_callback_is_contained,
    error_then_success_clears_error,
);
