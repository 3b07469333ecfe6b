//! Query filters, refetch types, the cache listing, defaults per key prefix and per mutation
//! key, and `meta` in the query function's context: TanStack Query v5's `QueryFilters`,
//! `refetchType`, `queryCache.findAll`, `setQueryDefaults`, `setMutationDefaults` and `meta`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Counter, Gate, Harness};
use pystackquery::{
    FetchStatus, MutationDefaults, MutationOptions, QueryClientConfig, QueryDefaults, QueryFilter,
    QueryOptions, QueryStatus, RefetchType, key,
};

const HOUR: Duration = Duration::from_secs(3600);

/// Options for `k` whose function counts its calls and answers `"{name}_{n}"`.
fn counting(k: pystackquery::QueryKey, calls: &Counter) -> QueryOptions<String, String> {
    let calls = calls.clone();
    let name = k.to_string();
    QueryOptions::new(k, move || {
        let n = calls.hit();
        let name = name.clone();
        async move { Ok(format!("{name}_{n}")) }
    })
}

async fn an_exact_filter_chooses_one_key_and_a_key_chooses_its_prefix(h: Harness) {
    let client = h.client();
    for k in [key!("todos"), key!("todos", 1), key!("todos", 2), key!("users")] {
        client.set_query_data(k, 0u8).unwrap();
    }
    assert_eq!(client.invalidate_queries(QueryFilter::exact(key!("todos")), false).await, 1);
    let invalidated: Vec<String> = client
        .find_all(())
        .into_iter()
        .filter(|q| q.is_invalidated)
        .map(|q| q.key.to_string())
        .collect();
    assert_eq!(invalidated, ["('todos',)"]);
    assert_eq!(client.invalidate_queries(key!("todos"), false).await, 3, "a key is a prefix");
    assert_eq!(client.remove_queries(QueryFilter::exact(key!("todos", 3))), 0, "not cached");
    assert_eq!(client.remove_queries(QueryFilter::exact(key!("todos", 1))), 1);
    assert_eq!(client.len(), 3);
}

async fn refetch_types_choose_active_inactive_all_or_none(h: Harness) {
    let client = h.client();
    let (observed_calls, unobserved_calls) = (Counter::default(), Counter::default());
    let observed = counting(key!("q", "observed"), &observed_calls);
    let unobserved = counting(key!("q", "unobserved"), &unobserved_calls);
    let _subscription = client.watch(&observed).subscribe(|_| {});
    h.eventually("the observer's first fetch", || observed_calls.get() == 1).await;
    h.eventually("it settles", || client.is_fetching(()) == 0).await;
    client.fetch_query(&unobserved).await.unwrap();

    let expect = [
        (RefetchType::None, 1, 1),
        (RefetchType::Active, 2, 1),
        (RefetchType::Inactive, 2, 2),
        (RefetchType::All, 3, 3),
    ];
    for (refetch, observed_after, unobserved_after) in expect {
        assert_eq!(client.invalidate_queries(key!("q"), refetch).await, 2);
        assert_eq!(observed_calls.get(), observed_after, "{refetch:?}: observed query");
        assert_eq!(unobserved_calls.get(), unobserved_after, "{refetch:?}: unobserved query");
    }
    // `true` and `false` still read as before.
    client.invalidate_queries(key!("q"), true).await;
    assert_eq!((observed_calls.get(), unobserved_calls.get()), (4, 3));
}

async fn active_and_inactive_filters_follow_enabled_observers(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let enabled = counting(key!("a", "enabled"), &calls);
    let disabled = counting(key!("a", "disabled"), &calls).enabled(false);
    client.set_query_data(key!("a", "none"), "x".to_string()).unwrap();
    let _on = client.watch(&enabled).subscribe(|_| {});
    let _off = client.watch(&disabled).subscribe(|_| {});
    h.eventually("the enabled observer's fetch", || {
        client.is_fetching(()) == 0 && calls.get() == 1
    })
    .await;

    let names = |filter: QueryFilter| -> Vec<String> {
        client.find_all(filter).into_iter().map(|q| q.key.to_string()).collect()
    };
    assert_eq!(names(QueryFilter::all().active()), ["('a', 'enabled')"]);
    assert_eq!(names(QueryFilter::all().inactive()), ["('a', 'disabled')", "('a', 'none')"]);
    let disabled_info = client.find(key!("a", "disabled")).unwrap();
    assert_eq!((disabled_info.observers, disabled_info.active_observers), (1, 0));
    // A query observed only by disabled observers is not refetched in bulk.
    assert_eq!(client.refetch_queries(key!("a")).await, 1);
    assert_eq!(calls.get(), 2);
}

async fn stale_and_fetch_status_filters(h: Harness) {
    let client = h.client();
    let (calls, gate) = (Counter::default(), Gate::default());
    let fresh = counting(key!("s", "fresh"), &calls).stale_time(HOUR);
    let stale = counting(key!("s", "stale"), &calls);
    client.fetch_query(&fresh).await.unwrap();
    client.fetch_query(&stale).await.unwrap();
    let stale_keys: Vec<String> =
        client.find_all(QueryFilter::all().stale(true)).iter().map(|q| q.key.to_string()).collect();
    assert_eq!(stale_keys, ["('s', 'stale')"]);
    assert_eq!(client.refetch_queries(QueryFilter::all().stale(true)).await, 1);
    assert_eq!(calls.get(), 3);
    assert_eq!(
        client.get_query_data::<String>(key!("s", "fresh")).unwrap().unwrap(),
        "('s', 'fresh')_1"
    );

    let slow = QueryOptions::new(key!("s", "slow"), {
        let gate = gate.clone();
        move || {
            let gate = gate.clone();
            async move {
                gate.wait().await;
                Ok::<_, String>("done".to_string())
            }
        }
    });
    let waiter = h.runtime.spawn_with_handle({
        let (client, slow) = (client.clone(), slow.clone());
        async move { client.fetch_query(&slow).await }
    });
    h.eventually("the slow fetch starts", || client.is_fetching(()) == 1).await;
    let fetching = client.find_all(QueryFilter::all().fetching());
    assert_eq!(fetching.len(), 1);
    assert_eq!(fetching[0].key, key!("s", "slow"));
    assert_eq!(fetching[0].fetch_status, FetchStatus::Fetching);
    assert_eq!(client.is_fetching(QueryFilter::all().fetch_status(FetchStatus::Idle)), 0);
    gate.open();
    assert_eq!(waiter.await.unwrap(), "done");
    assert!(client.find_all(QueryFilter::all().fetching()).is_empty());
}

async fn a_predicate_sees_each_query_and_a_panicking_one_matches_nothing(h: Harness) {
    let client = h.client();
    client.set_query_data(key!("p", 1), 1u32).unwrap();
    client.set_query_data(key!("p", 2), "two".to_string()).unwrap();
    client.set_query_data(key!("p", 3), 3u32).unwrap();
    let numbers = QueryFilter::prefix(key!("p")).predicate(|q| q.type_name == "u32");
    assert_eq!(client.get_queries_data::<u32>(numbers.clone()).len(), 2);
    let panicking = QueryFilter::all().predicate(|q| {
        assert!(q.key.len() > 5, "a predicate bug");
        true
    });
    assert_eq!(client.remove_queries(panicking), 0);
    assert_eq!(client.len(), 3);
    assert_eq!(client.remove_queries(numbers), 2);
    assert_eq!(client.cached_keys(), vec![key!("p", 2)]);
}

async fn cancel_and_reset_take_filters(h: Harness) {
    let client = h.client();
    let gate = Gate::default();
    let blocked = |k: pystackquery::QueryKey| {
        let gate = gate.clone();
        QueryOptions::new(k, move || {
            let gate = gate.clone();
            async move {
                gate.wait().await;
                Ok::<_, String>(1u8)
            }
        })
    };
    let (one, two) = (blocked(key!("c", 1)), blocked(key!("c", 2)));
    let first = h.runtime.spawn_with_handle({
        let (client, one) = (client.clone(), one.clone());
        async move { client.fetch_query(&one).await }
    });
    let second = h.runtime.spawn_with_handle({
        let (client, two) = (client.clone(), two.clone());
        async move { client.fetch_query(&two).await }
    });
    h.eventually("both fetches start", || client.is_fetching(()) == 2).await;
    assert_eq!(client.cancel_queries(QueryFilter::exact(key!("c", 1))).await, 1);
    assert!(first.await.is_err(), "the cancelled fetch's caller hears of it");
    assert_eq!(client.is_fetching(()), 1);
    gate.open();
    assert_eq!(second.await.unwrap(), 1);
    assert_eq!(client.reset_queries(QueryFilter::all().predicate(|q| q.has_data())), 1);
    assert_eq!(client.find(key!("c", 2)).unwrap().status, QueryStatus::Idle);
}

async fn the_listing_reports_types_statuses_age_observers_and_gc(h: Harness) {
    let client = h.client_with(QueryClientConfig::default().gc_time(Duration::from_secs(10)));
    let options = QueryOptions::new(key!("listed"), || async { Ok::<_, String>(vec![1u8, 2]) })
        .stale_time(Duration::from_secs(5));
    let subscription = client.watch(&options).subscribe(|_| {});
    h.eventually("the observer's fetch", || client.is_fetching(()) == 0).await;
    let info = client.find(key!("listed")).unwrap();
    assert_eq!(info.type_name, std::any::type_name::<Vec<u8>>());
    assert_eq!((info.status, info.fetch_status), (QueryStatus::Success, FetchStatus::Idle));
    assert_eq!((info.observers, info.active_observers), (1, 1));
    assert!(info.gc_in.is_none(), "an observed query is never collected");
    assert!(!info.is_stale && !info.persisted && info.error.is_none());
    assert_eq!(info.data_update_count, 1);

    drop(subscription);
    h.sleep(Duration::from_secs(6)).await;
    let info = client.find(key!("listed")).unwrap();
    assert!(info.is_stale, "older than its own stale time of 5 s");
    assert_eq!(info.observers, 0);
    let (age, gc_in) = (info.age.unwrap(), info.gc_in.unwrap());
    assert!(age >= Duration::from_secs(6), "age {age:?}");
    assert!(gc_in <= Duration::from_secs(4), "gc in {gc_in:?}");
    if h.manual.is_some() {
        // Virtual time: the observer left exactly 6 s ago; the fetch ended a tick before.
        assert_eq!(gc_in, Duration::from_secs(4));
        assert!(age < Duration::from_millis(6_010), "age {age:?}");
    }
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["key"], "('listed',)");
    assert_eq!(json["status"], "SUCCESS");
    assert_eq!(json["fetch_status"], "IDLE");
    assert_eq!(json["is_stale"], true);
    assert_eq!(json["observers"], 0);
    assert!(json["age_secs"].as_f64().unwrap() >= 6.0);
    assert!(json["gc_in_secs"].as_f64().unwrap() <= 4.0);
    assert!(info.to_string().starts_with("('listed',) SUCCESS IDLE stale age"));
}

async fn the_listing_shows_the_error_message(h: Harness) {
    let client = h.client();
    let options = QueryOptions::new(key!("broken"), || async {
        Err::<u8, _>("upstream said 503".to_string())
    })
    .retry(0);
    assert!(client.fetch_query(&options).await.is_err());
    let info = client.find(key!("broken")).unwrap();
    assert_eq!(info.status, QueryStatus::Error);
    assert_eq!(info.error.as_deref(), Some("upstream said 503"));
    assert_eq!(info.error_update_count, 1);
}

async fn query_defaults_layer_between_the_client_and_the_query(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    client.set_query_defaults(key!("cfg"), QueryDefaults::new().stale_time(HOUR));
    let inherits = counting(key!("cfg", "a"), &calls);
    client.fetch_query(&inherits).await.unwrap();
    client.fetch_query(&inherits).await.unwrap();
    assert_eq!(calls.get(), 1, "fresh for an hour by its prefix's defaults");
    assert!(!client.find(key!("cfg", "a")).unwrap().is_stale);

    let own = counting(key!("cfg", "b"), &calls).stale_time(Duration::ZERO);
    client.fetch_query(&own).await.unwrap();
    client.fetch_query(&own).await.unwrap();
    h.yield_a_little().await;
    assert_eq!(calls.get(), 3, "the query's own stale time wins: the second read revalidates");

    let elsewhere = counting(key!("other"), &calls);
    client.fetch_query(&elsewhere).await.unwrap();
    client.fetch_query(&elsewhere).await.unwrap();
    h.yield_a_little().await;
    assert_eq!(calls.get(), 5, "other prefixes keep the client's stale time of zero");

    // A later registration for a longer prefix overrides; the same prefix replaces.
    client.set_query_defaults(key!("cfg", "c"), QueryDefaults::new().stale_time(Duration::ZERO));
    let override_ = counting(key!("cfg", "c"), &calls);
    client.fetch_query(&override_).await.unwrap();
    client.fetch_query(&override_).await.unwrap();
    h.yield_a_little().await;
    assert_eq!(calls.get(), 7);
    client.set_query_defaults(key!("cfg", "c"), QueryDefaults::new().retry(5));
    assert_eq!(client.get_query_defaults(key!("cfg", "c")).unwrap().retry_value(), Some(5));
    let replaced = counting(key!("cfg", "c", 1), &calls);
    client.fetch_query(&replaced).await.unwrap();
    client.fetch_query(&replaced).await.unwrap();
    assert_eq!(calls.get(), 8, "the replaced defaults no longer set a stale time");
}

async fn query_defaults_set_retries_and_gc_time(h: Harness) {
    let client = h.client();
    client.set_query_defaults(
        key!("flaky"),
        QueryDefaults::new()
            .retry(2)
            .retry_delay(|_| Duration::ZERO)
            .gc_time(Duration::from_secs(2)),
    );
    let calls = Counter::default();
    let failing = QueryOptions::new(key!("flaky", 1), {
        let calls = calls.clone();
        move || {
            calls.hit();
            async { Err::<u8, _>("no".to_string()) }
        }
    });
    let error = client.fetch_query(&failing).await.unwrap_err();
    assert_eq!(calls.get(), 3, "one attempt and two retries: {error}");
    assert!(client.find(key!("flaky", 1)).is_some());
    h.eventually("collected after the defaults' gc time", || {
        client.find(key!("flaky", 1)).is_none()
    })
    .await;
}

async fn query_defaults_set_the_refetch_interval_of_observers(h: Harness) {
    let client = h.client();
    client.set_query_defaults(
        key!("polled"),
        QueryDefaults::new().refetch_interval(Duration::from_millis(20)),
    );
    let calls = Counter::default();
    let polled = counting(key!("polled", 1), &calls);
    let subscription = client.watch(&polled).subscribe(|_| {});
    h.eventually("three fetches by the defaults' interval", || calls.get() >= 3).await;
    drop(subscription);
    let unpolled = Counter::default();
    let _other = client.watch(&counting(key!("unpolled"), &unpolled)).subscribe(|_| {});
    h.sleep(Duration::from_millis(100)).await;
    assert_eq!(unpolled.get(), 1, "no defaults for this prefix: no polling");
}

async fn meta_reaches_the_query_function(h: Harness) {
    let client = h.client();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reading = |k: pystackquery::QueryKey| {
        let seen = seen.clone();
        QueryOptions::with_context(k, move |cx| {
            seen.lock().unwrap().push(cx.meta.value().clone());
            async { Ok::<_, String>(0u8) }
        })
    };
    client.set_query_defaults(
        key!("m"),
        QueryDefaults::new().meta(serde_json::json!({"from": "defaults"})),
    );
    client.fetch_query(&reading(key!("m", 1))).await.unwrap();
    client
        .fetch_query(&reading(key!("m", 2)).meta(serde_json::json!({"from": "query"})))
        .await
        .unwrap();
    client.fetch_query(&reading(key!("none"))).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            serde_json::json!({"from": "defaults"}),
            serde_json::json!({"from": "query"}),
            serde_json::Value::Null
        ]
    );
}

async fn mutation_defaults_apply_by_mutation_key(h: Harness) {
    let client = h.client();
    client.set_mutation_defaults(
        key!("todos"),
        MutationDefaults::new().retry(2).retry_delay(|_| Duration::ZERO),
    );
    let calls = Counter::default();
    let failing = |retry: Option<u32>| {
        let calls = calls.clone();
        let options = MutationOptions::new(move |_: u8| {
            calls.hit();
            async { Err::<u8, _>("no".to_string()) }
        })
        .mutation_key(key!("todos", "add"));
        match retry {
            Some(n) => options.retry(n),
            None => options,
        }
    };
    assert!(client.mutation(failing(None)).mutate(1).await.is_err());
    assert_eq!(calls.get(), 3, "retries from the defaults of the key's prefix");
    assert!(client.mutation(failing(Some(0))).mutate(1).await.is_err());
    assert_eq!(calls.get(), 4, "the mutation's own retry wins");
    let unkeyed = {
        let calls = calls.clone();
        MutationOptions::new(move |_: u8| {
            calls.hit();
            async { Err::<u8, _>("no".to_string()) }
        })
    };
    assert!(client.mutation(unkeyed).mutate(1).await.is_err());
    assert_eq!(calls.get(), 5, "no key: no defaults, no retry");
}

/// A query answered from a restored L2 record, with no fetch, is listed by the stale time of
/// the options it was read with (not the client's default of zero), and a bulk refetch of
/// inactive queries can refetch it with their function.
async fn a_query_restored_from_storage_is_listed_by_its_own_options(h: Harness) {
    let store = pystackquery::storage::MemoryStorage::new();
    let calls = Counter::default();
    let options = counting(key!("restored"), &calls).stale_time(HOUR).persist();
    let first = h.client_with(QueryClientConfig::default().storage(store.clone()));
    assert_eq!(first.fetch_query(&options).await.unwrap(), "('restored',)_1");
    first.flush_storage().await;
    drop(first);

    let second = h.client_with(QueryClientConfig::default().storage(store.clone()));
    assert_eq!(second.fetch_query(&options).await.unwrap(), "('restored',)_1");
    assert_eq!(calls.get(), 1, "served from the record");
    let info = second.find(key!("restored")).unwrap();
    assert!(!info.is_stale, "fresh for an hour by its options: {info}");
    assert!(second.find_all(QueryFilter::all().stale(true)).is_empty());
    second.refetch_queries(QueryFilter::all().inactive()).await;
    assert_eq!(calls.get(), 2, "refetched with the options' function");
}

runtime_suite!(
    a_query_restored_from_storage_is_listed_by_its_own_options,
    an_exact_filter_chooses_one_key_and_a_key_chooses_its_prefix,
    refetch_types_choose_active_inactive_all_or_none,
    active_and_inactive_filters_follow_enabled_observers,
    stale_and_fetch_status_filters,
    a_predicate_sees_each_query_and_a_panicking_one_matches_nothing,
    cancel_and_reset_take_filters,
    the_listing_reports_types_statuses_age_observers_and_gc,
    the_listing_shows_the_error_message,
    query_defaults_layer_between_the_client_and_the_query,
    query_defaults_set_retries_and_gc_time,
    query_defaults_set_the_refetch_interval_of_observers,
    meta_reaches_the_query_function,
    mutation_defaults_apply_by_mutation_key,
);
