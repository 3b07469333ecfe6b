//! TanStack Query v5's control surface, as far as it is built: `fetch_query_fresh`
//! (`fetchQuery`), `ensure_query_data` (`ensureQueryData`), the state's invalidation mark and
//! update counts, and `QueryError` as a standard error for any displayable error type.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{Counter, Gate, Harness};
use pystackquery::{QueryError, QueryOptions, key};

fn counting(calls: &Counter, stale: Duration) -> QueryOptions<String, String> {
    let calls = calls.clone();
    QueryOptions::new(key!("surface"), move || {
        let n = calls.hit();
        async move { Ok(format!("data_{n}")) }
    })
    .stale_time(stale)
}

async fn fetch_query_fresh_waits_for_the_refetch_of_stale_data(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = counting(&calls, Duration::from_millis(50));
    assert_eq!(client.fetch_query_fresh(&options).await.unwrap(), "data_1", "cold: fetched");
    assert_eq!(client.fetch_query_fresh(&options).await.unwrap(), "data_1", "fresh: as is");
    assert_eq!(calls.get(), 1);
    h.sleep(Duration::from_millis(60)).await;
    assert_eq!(client.fetch_query_fresh(&options).await.unwrap(), "data_2", "stale: awaited");
    assert_eq!(calls.get(), 2);
}

async fn fetch_query_fresh_joins_a_refetch_in_flight(h: Harness) {
    let client = h.client();
    client.set_query_data(key!("surface"), "old".to_string()).unwrap();
    client.invalidate_queries(key!("surface"), false).await;
    let (calls, gate) = (Counter::default(), Gate::default());
    let options = QueryOptions::new(key!("surface"), {
        let (calls, gate) = (calls.clone(), gate.clone());
        move || {
            let n = calls.hit();
            let gate = gate.clone();
            async move {
                gate.wait().await;
                Ok::<_, String>(format!("data_{n}"))
            }
        }
    });
    // The default returns the stale value and starts one revalidation...
    assert_eq!(client.fetch_query(&options).await.unwrap(), "old");
    // ...which the waiting form joins rather than starting another.
    let fresh = h.runtime.spawn_with_handle({
        let (client, options) = (client.clone(), options.clone());
        async move { client.fetch_query_fresh(&options).await }
    });
    h.yield_a_little().await;
    gate.open();
    assert_eq!(fresh.await.unwrap(), "data_1");
    assert_eq!(calls.get(), 1);
}

async fn ensure_query_data_never_revalidates(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = counting(&calls, Duration::ZERO);
    assert_eq!(client.ensure_query_data(&options).await.unwrap(), "data_1", "cold: fetched");
    h.sleep(Duration::from_millis(10)).await;
    for _ in 0..3 {
        assert_eq!(client.ensure_query_data(&options).await.unwrap(), "data_1");
    }
    h.yield_a_little().await;
    assert_eq!(calls.get(), 1, "stale data is returned as it is, with no revalidation");
}

async fn invalidation_keeps_the_timestamp_and_counts_updates(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = counting(&calls, Duration::from_secs(60));
    client.fetch_query(&options).await.unwrap();
    let before = client.get_query_state::<String, String>(key!("surface")).unwrap().unwrap();
    assert_eq!(before.data_update_count, 1);
    assert!(!before.is_invalidated);
    client.invalidate_queries(key!("surface"), false).await;
    let after = client.get_query_state::<String, String>(key!("surface")).unwrap().unwrap();
    assert!(after.is_invalidated);
    assert_eq!(after.data_updated_at, before.data_updated_at, "invalidation keeps the timestamp");
    assert!(after.is_stale(SystemTime::now(), Duration::from_secs(3600)), "invalidated is stale");
    client.set_query_data(key!("surface"), "set".to_string()).unwrap();
    let set = client.get_query_state::<String, String>(key!("surface")).unwrap().unwrap();
    assert!(!set.is_invalidated);
    assert_eq!(set.data_update_count, 2);

    let failing: QueryOptions<String, String> =
        QueryOptions::new(key!("failing"), || async { Err("down".to_string()) }).retry(0);
    assert!(client.fetch_query(&failing).await.is_err());
    assert!(client.fetch_query_fresh(&failing).await.is_err());
    let state = client.get_query_state::<String, String>(key!("failing")).unwrap().unwrap();
    assert_eq!(state.error_update_count, 2);
    assert_eq!(state.data_update_count, 0);
}

async fn is_fetching_and_is_mutating_count_what_runs(h: Harness) {
    let client = h.client();
    let gate = Gate::default();
    let slow = |k: pystackquery::QueryKey| {
        let gate = gate.clone();
        QueryOptions::new(k, move || {
            let gate = gate.clone();
            async move {
                gate.wait().await;
                Ok::<_, String>(1u8)
            }
        })
    };
    let subs: Vec<_> = [key!("todos", 1), key!("todos", 2), key!("users", 1)]
        .into_iter()
        .map(|k| client.watch(&slow(k)).subscribe(|_| {}))
        .collect();
    h.eventually("three fetches", || client.is_fetching(()) == 3).await;
    assert_eq!(client.is_fetching(key!("todos")), 2);
    let mutation = client.mutation(pystackquery::MutationOptions::new({
        let gate = gate.clone();
        move |_: ()| {
            let gate = gate.clone();
            async move {
                gate.wait().await;
                Ok::<_, String>(())
            }
        }
    }));
    assert_eq!(client.is_mutating(()), 0);
    let running = h.runtime.spawn_with_handle({
        let mutation = mutation.clone();
        async move { mutation.mutate(()).await }
    });
    h.eventually("the mutation runs", || client.is_mutating(()) == 1).await;
    gate.open();
    running.await.unwrap();
    assert_eq!(client.is_mutating(()), 0);
    h.eventually("fetches done", || client.is_fetching(()) == 0).await;
    drop(subs);
}

async fn bulk_reads_writes_and_refetches_by_prefix(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let todo = |i: i64| {
        let calls = calls.clone();
        QueryOptions::new(key!("todos", i), move || {
            let n = calls.hit();
            async move { Ok::<_, String>(format!("todo {i} v{n}")) }
        })
        .stale_time(Duration::from_secs(600))
    };
    for i in 1..=2 {
        client.fetch_query(&todo(i)).await.unwrap();
    }
    client.set_query_data(key!("todos", "count"), 2u32).unwrap();
    client.set_query_data(key!("users", 1), "ada".to_string()).unwrap();
    let data = client.get_queries_data::<String>(key!("todos"));
    assert_eq!(data.len(), 2, "another type under the prefix is left out: {data:?}");
    let written = client.set_queries_data::<String>(key!("todos"), |key, old| {
        (key != &key!("todos", 2)).then(|| format!("{} (edited)", old.unwrap()))
    });
    assert_eq!(written, vec![key!("todos", 1)]);
    assert!(
        client.get_query_data::<String>(key!("todos", 1)).unwrap().unwrap().ends_with("(edited)")
    );
    let before = calls.get();
    assert_eq!(client.refetch_queries(key!("todos")).await, 2, "only queries with a function");
    assert_eq!(calls.get(), before + 2);
    assert_eq!(client.get_queries_data::<String>(()).len(), 3);
}

/// The initial data function is user code: it runs with no lock held, so it may read the
/// client, even the key it seeds (this deadlocked while it ran under the query's lock).
async fn initial_data_fn_may_call_back_into_the_client(h: Harness) {
    let client = h.client();
    let reader = client.clone();
    let options = QueryOptions::new(key!("seeded"), || async { Ok::<_, String>(0u32) })
        .stale_time(Duration::from_secs(60))
        .initial_data_fn(move || {
            let current = reader.get_query_data::<u32>(key!("seeded")).unwrap();
            current.map_or(5, |n| n + 1)
        });
    assert_eq!(client.fetch_query(&options).await.unwrap(), 5);
    let watched = client.watch(&options.clone().initial_data_fn(|| 9));
    assert_eq!(watched.result().data, Some(5), "seeded once: the data is kept");
}

async fn initial_data_seeds_without_a_fetch_fresh_or_stale_by_its_timestamp(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let fresh = counting(&calls, Duration::from_secs(60)).initial_data("seed".to_string());
    assert_eq!(client.fetch_query(&fresh).await.unwrap(), "seed");
    h.yield_a_little().await;
    assert_eq!(calls.get(), 0, "fresh initial data needs no fetch");
    let state = client.get_query_state::<String, String>(key!("surface")).unwrap().unwrap();
    assert!(state.is_success() && !state.is_placeholder && state.data_update_count == 1);

    // Stale by its timestamp: returned at once and revalidated.
    let calls = Counter::default();
    let old = h.runtime.system_now() - Duration::from_secs(3600);
    let stale = QueryOptions::new(key!("stale seed"), {
        let calls = calls.clone();
        move || {
            let n = calls.hit();
            async move { Ok::<_, String>(format!("data_{n}")) }
        }
    })
    .stale_time(Duration::from_secs(60))
    .initial_data("old seed".to_string())
    .initial_data_updated_at(old);
    assert_eq!(client.fetch_query(&stale).await.unwrap(), "old seed");
    h.eventually("revalidated", || {
        client.get_query_data::<String>(key!("stale seed")).unwrap().as_deref() == Some("data_1")
    })
    .await;

    // Never over data the query already has; the function form runs only when it seeds.
    let made = Counter::default();
    let seeded = QueryOptions::new(key!("stale seed"), || async { Ok::<_, String>("x".into()) })
        .stale_time(Duration::from_secs(60))
        .initial_data_fn({
            let made = made.clone();
            move || {
                made.hit();
                "should not appear".to_string()
            }
        });
    assert_eq!(client.fetch_query(&seeded).await.unwrap(), "data_1");
    assert_eq!(made.get(), 0);

    // An observer of a cold key shows the initial data at once.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let observed = QueryOptions::new(key!("observed seed"), || async { Ok::<_, String>(1u8) })
        .stale_time(Duration::from_secs(60))
        .initial_data(7u8);
    let _sub = client.watch(&observed).subscribe(move |s| log.lock().unwrap().push(s.data));
    h.yield_a_little().await;
    assert_eq!(*seen.lock().unwrap(), vec![Some(7)], "seeded, fresh: no fetch");
}

#[test]
fn a_query_error_with_a_string_error_converts_into_a_boxed_error() {
    fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let failed: Result<(), QueryError<String>> =
            Err(QueryError::Failed(Arc::new("upstream said 503".to_string())));
        failed?;
        Ok(())
    }
    assert_eq!(run().unwrap_err().to_string(), "upstream said 503");
}

runtime_suite!(
    fetch_query_fresh_waits_for_the_refetch_of_stale_data,
    fetch_query_fresh_joins_a_refetch_in_flight,
    ensure_query_data_never_revalidates,
    invalidation_keeps_the_timestamp_and_counts_updates,
    is_fetching_and_is_mutating_count_what_runs,
    bulk_reads_writes_and_refetches_by_prefix,
    initial_data_seeds_without_a_fetch_fresh_or_stale_by_its_timestamp,
    initial_data_fn_may_call_back_into_the_client,
);
