//! Mutations as TanStack Query v5 has them: the one-shot `client.mutate`, callbacks with a
//! typed context and the client, the state's variables / context / failure fields, the
//! callback order (the state settles after `on_settled`), the mutation cache (listing, filters,
//! events, garbage collection), scopes, and optimistic writes that reach L2 only once
//! confirmed.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Counter, Gate, Harness};
use pystackquery::storage::MemoryStorage;
use pystackquery::{
    CacheEvent, MutationContext, MutationFilter, MutationOptions, MutationStatus,
    QueryClientConfig, QueryError, QueryOptions, key,
};

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A mutation function that waits at `gate`, then answers the input upper-cased.
fn gated(
    gate: &Gate,
) -> impl Fn(String) -> futures::future::BoxFuture<'static, Result<String, String>> + Send + Sync + 'static
{
    let gate = gate.clone();
    move |input: String| {
        let gate = gate.clone();
        Box::pin(async move {
            gate.wait().await;
            Ok(input.to_uppercase())
        })
    }
}

async fn mutate_runs_options_once_without_a_handle(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let options = MutationOptions::new({
        let calls = calls.clone();
        move |n: u32| {
            calls.hit();
            async move { Ok::<_, String>(n + 1) }
        }
    });
    assert_eq!(client.mutate(&options, 1).await.unwrap(), 2);
    assert_eq!(client.mutate(&options, 41).await.unwrap(), 42);
    assert_eq!(calls.get(), 2);
    let runs = client.find_mutations(());
    assert_eq!(runs.len(), 2);
    assert!(runs[0].id < runs[1].id, "listed in submission order");
    assert!(runs.iter().all(|r| r.status == MutationStatus::Success));
}

async fn callbacks_get_the_client_key_meta_and_typed_on_mutate_result(h: Harness) {
    let client = h.client();
    let seen = log();
    let (a, b, c) = (seen.clone(), seen.clone(), seen.clone());
    let options = MutationOptions::new(|n: u32| async move { Ok::<_, String>(n * 2) })
        .mutation_key(key!("numbers", "double"))
        .meta(serde_json::json!({"origin": "test"}))
        // Set before `on_mutate`: typed for `()`, it still gets the client, key and meta.
        .on_settled(move |data, error, input, cx: &MutationContext<()>| {
            let origin = cx.meta.get("origin").unwrap().as_str().unwrap().to_string();
            a.lock().unwrap().push(format!(
                "settled {data:?} {} {input} {:?} {origin} {}",
                error.is_some(),
                cx.mutation_key,
                cx.on_mutate_result.is_some()
            ));
        })
        .on_mutate(move |input: &u32, cx| {
            b.lock().unwrap().push(format!("mutate {input} {:?}", cx.on_mutate_result));
            format!("snapshot-{input}")
        })
        .on_success(move |data, input, cx: &MutationContext<String>| {
            cx.client.set_query_data(key!("last"), *data).unwrap();
            c.lock().unwrap().push(format!("success {data} {input} {:?}", cx.on_mutate_result));
        });
    assert_eq!(client.mutate(&options, 21).await.unwrap(), 42);
    assert_eq!(
        entries(&seen),
        [
            "mutate 21 None".to_string(),
            "success 42 21 Some(\"snapshot-21\")".into(),
            "settled Some(42) false 21 Some(QueryKey('numbers', 'double')) test true".into(),
        ]
    );
    assert_eq!(client.get_query_data::<u32>(key!("last")).unwrap(), Some(42));
}

async fn the_function_can_take_the_context(h: Harness) {
    let client = h.client();
    client.set_query_data(key!("cart"), 2u32).unwrap();
    let checkout = MutationOptions::with_context(|extra: u32, cx| async move {
        let in_cart = cx.client.get_query_data::<u32>(key!("cart")).unwrap().unwrap_or(0);
        let tag = cx.meta.get("tag").and_then(|t| t.as_str()).unwrap_or("?").to_string();
        Ok::<_, String>(format!("{tag} {} {:?}", in_cart + extra, cx.mutation_key))
    })
    .mutation_key(key!("checkout"))
    .meta(serde_json::json!({"tag": "web"}));
    assert_eq!(client.mutate(&checkout, 1).await.unwrap(), "web 3 Some(QueryKey('checkout',))");
}

async fn states_show_variables_context_and_settle_after_the_callbacks(h: Harness) {
    let client = h.client();
    let gate = Gate::default();
    let states = log();
    let in_callback = log();
    let during = in_callback.clone();
    let mutation = client.mutation(
        MutationOptions::new(gated(&gate)).on_mutate(|text: &String, _| text.len()).on_success(
            move |_, _, cx| {
                let counted = cx.client.is_mutating(());
                during.lock().unwrap().push(format!("mutating {counted}"));
            },
        ),
    );
    let s = states.clone();
    let _sub = mutation.subscribe(move |st| {
        s.lock()
            .unwrap()
            .push(format!("{:?} {:?} {:?} {:?}", st.status, st.variables, st.context, st.data));
    });
    let running = h.runtime.spawn_with_handle({
        let mutation = mutation.clone();
        async move { mutation.mutate("todo".to_string()).await }
    });
    h.eventually("pending with its context", || mutation.state().context == Some(4)).await;
    let state = mutation.state();
    assert!(state.is_pending() && state.submitted_at.is_some() && state.settled_at.is_none());
    gate.open();
    assert_eq!(running.await.unwrap(), "TODO");
    assert_eq!(entries(&in_callback), ["mutating 1"], "pending while on_success runs");
    assert_eq!(
        entries(&states),
        [
            "Pending Some(\"todo\") None None".to_string(),
            "Pending Some(\"todo\") Some(4) None".into(),
            "Success Some(\"todo\") Some(4) Some(\"TODO\")".into(),
        ]
    );
    let state = mutation.state();
    assert!(state.settled_at.is_some() && state.failure_count == 0);
    assert_eq!(client.is_mutating(()), 0);
}

async fn failed_attempts_show_count_and_reason(h: Harness) {
    let client = h.client();
    let failures = log();
    let mutation = client.mutation(
        MutationOptions::new(|_: u8| async { Err::<u8, _>("err".to_string()) })
            .retry(1)
            .retry_delay(|_| Duration::from_millis(10)),
    );
    let f = failures.clone();
    let _sub = mutation.subscribe(move |st| {
        let reason = st.failure_reason.as_ref().map(|e| e.to_string());
        f.lock().unwrap().push(format!("{:?} {} {:?}", st.status, st.failure_count, reason));
    });
    let error = mutation.mutate(1).await.unwrap_err();
    assert!(matches!(error, QueryError::Failed(_)));
    assert_eq!(
        entries(&failures),
        [
            "Pending 0 None".to_string(),
            "Pending 1 Some(\"err\")".into(),
            "Error 2 Some(\"err\")".into(),
        ]
    );
    let state = mutation.state();
    assert_eq!(state.error.unwrap().to_string(), "err");
    assert!(state.data.is_none());
}

async fn the_mutation_cache_lists_filters_and_counts(h: Harness) {
    let client = h.client();
    let gate = Gate::default();
    let options = |k: pystackquery::QueryKey| MutationOptions::new(gated(&gate)).mutation_key(k);
    let a1 = h.runtime.spawn_with_handle({
        let (client, o) = (client.clone(), options(key!("a", 1)));
        async move { client.mutate(&o, "x".to_string()).await }
    });
    let a2 = h.runtime.spawn_with_handle({
        let (client, o) = (client.clone(), options(key!("a", 2)));
        async move { client.mutate(&o, "y".to_string()).await }
    });
    client.mutate(&MutationOptions::new(gated(&Gate::opened())), "z".to_string()).await.unwrap();
    h.eventually("both keyed runs pending", || client.is_mutating(()) == 2).await;
    assert_eq!(client.is_mutating(key!("a")), 2);
    assert_eq!(client.is_mutating(MutationFilter::exact(key!("a", 1))), 1);
    assert_eq!(client.is_mutating(key!("b")), 0);
    assert_eq!(client.find_mutations(()).len(), 3);
    assert_eq!(client.find_mutations(key!("a")).len(), 2, "a run without a key never matches one");
    let second = MutationFilter::all()
        .predicate(|m| m.mutation_key.as_ref().is_some_and(|k| k.parts()[1].as_int() == Some(2)));
    assert_eq!(client.find_mutations(second).len(), 1);
    let done = MutationFilter::all().status(MutationStatus::Success);
    assert_eq!(client.find_mutations(done).len(), 1);
    gate.open();
    a1.await.unwrap();
    a2.await.unwrap();
    assert_eq!(client.is_mutating(()), 0);
    assert_eq!(
        client.find_mutations(MutationFilter::all().status(MutationStatus::Success)).len(),
        3
    );
}

async fn mutation_events_and_garbage_collection(h: Harness) {
    let client = h.client();
    let events = log();
    let e = events.clone();
    let _events = client.subscribe_events(move |event| {
        let line = match event {
            CacheEvent::MutationAdded(m) => format!("added {} {:?}", m.id, m.status),
            CacheEvent::MutationUpdated(m) => format!("updated {} {:?}", m.id, m.status),
            CacheEvent::MutationRemoved(m) => format!("removed {} {:?}", m.id, m.status),
            _ => return,
        };
        e.lock().unwrap().push(line);
    });
    let options = MutationOptions::new(|n: u8| async move { Ok::<_, String>(n) })
        .gc_time(Duration::from_millis(50));
    client.mutate(&options, 1).await.unwrap();
    let id = client.find_mutations(()).first().unwrap().id;
    assert_eq!(entries(&events), [format!("added {id} Pending"), format!("updated {id} Success")]);
    h.eventually("collected after its gc time", || client.find_mutations(()).is_empty()).await;
    assert_eq!(entries(&events).last().unwrap(), &format!("removed {id} Success"));

    // A gc time too long to represent keeps the run; `clear` removes settled runs.
    let kept = options.clone().gc_time(Duration::MAX);
    client.mutate(&kept, 2).await.unwrap();
    h.sleep(Duration::from_millis(100)).await;
    assert_eq!(client.find_mutations(()).len(), 1);
    client.clear();
    assert!(client.find_mutations(()).is_empty());
}

async fn a_scope_runs_mutations_one_at_a_time_in_submission_order(h: Harness) {
    let client = h.client();
    let order = log();
    let (first_gate, second_gate) = (Gate::default(), Gate::default());
    let options = {
        let (log, first_gate, second_gate) =
            (order.clone(), first_gate.clone(), second_gate.clone());
        MutationOptions::new(move |n: u8| {
            let order = log.clone();
            let (first_gate, second_gate) = (first_gate.clone(), second_gate.clone());
            async move {
                order.lock().unwrap().push(format!("start {n}"));
                if n == 1 {
                    first_gate.wait().await
                } else {
                    second_gate.wait().await
                }
                order.lock().unwrap().push(format!("end {n}"));
                if n == 1 { Err("first failed".to_string()) } else { Ok(n) }
            }
        })
        .scope("doc")
        .on_mutate({
            let order = order.clone();
            move |n: &u8, _| order.lock().unwrap().push(format!("mutate {n}"))
        })
    };
    let first = h.runtime.spawn_with_handle({
        let (client, o) = (client.clone(), options.clone());
        async move { client.mutate(&o, 1).await }
    });
    h.eventually("the first run starts", || entries(&order).contains(&"start 1".to_string())).await;
    let second_handle = client.mutation(options.clone());
    let second = h.runtime.spawn_with_handle({
        let m = second_handle.clone();
        async move { m.mutate(2).await }
    });
    h.eventually("the second run waits its turn", || second_handle.state().is_paused).await;
    second_gate.open(); // would finish at once, but it is not its turn
    h.yield_a_little().await;
    assert_eq!(entries(&order), ["mutate 1", "start 1", "mutate 2"], "on_mutate runs at once");
    let paused = client.find_mutations(MutationFilter::all().predicate(|m| m.is_paused));
    assert_eq!(paused.len(), 1);
    first_gate.open();
    assert!(first.await.is_err(), "the first failed");
    assert_eq!(second.await.unwrap(), 2, "a failure does not stop the scope");
    assert_eq!(entries(&order), ["mutate 1", "start 1", "mutate 2", "end 1", "start 2", "end 2"]);
    assert!(!second_handle.state().is_paused);
}

async fn a_dropped_run_leaves_its_scope(h: Harness) {
    let client = h.client();
    let gate = Gate::default();
    let options = MutationOptions::new(gated(&gate)).scope("s");
    let mut first = Box::pin(client.mutate(&options, "a".to_string()));
    assert!(futures::poll!(&mut first).is_pending());
    let second = h.runtime.spawn_with_handle({
        let (client, o) = (client.clone(), options.clone());
        async move { client.mutate(&o, "b".to_string()).await }
    });
    h.eventually("the second is queued", || client.is_mutating(()) == 2).await;
    drop(first);
    gate.open();
    assert_eq!(second.await.unwrap(), "B");
    let cancelled = client.find_mutations(MutationFilter::all().status(MutationStatus::Error));
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].error.as_deref(), Some("cancelled"));
}

async fn different_scopes_and_unscoped_runs_are_concurrent(h: Harness) {
    let client = h.client();
    let gate = Gate::default();
    let a = MutationOptions::new(gated(&gate)).scope("a");
    let b = MutationOptions::new(gated(&gate)).scope("b");
    let free = MutationOptions::new(gated(&gate));
    let runs: Vec<_> = [a, b, free.clone(), free]
        .into_iter()
        .map(|o| {
            let client = client.clone();
            h.runtime.spawn_with_handle(async move { client.mutate(&o, "x".to_string()).await })
        })
        .collect();
    h.eventually("all four pending", || client.is_mutating(()) == 4).await;
    assert!(client.find_mutations(()).iter().all(|m| !m.is_paused), "none waits for another");
    gate.open();
    for run in runs {
        assert_eq!(run.await.unwrap(), "X");
    }
}

fn persisted_user(calls: &Counter) -> QueryOptions<String, String> {
    let calls = calls.clone();
    QueryOptions::new(key!("user"), move || {
        let n = calls.hit();
        async move { Ok(format!("server-{n}")) }
    })
    .stale_time(Duration::from_secs(3600))
    .persist()
}

fn record_data(store: &MemoryStorage) -> String {
    let record: serde_json::Value =
        serde_json::from_str(&store.peek("('user',)").unwrap()).unwrap();
    record["data"].as_str().unwrap().to_string()
}

async fn optimistic_writes_reach_storage_only_once_confirmed(h: Harness) {
    let store = MemoryStorage::new();
    let client = h.client_with(QueryClientConfig::default().storage(store.clone()));
    let calls = Counter::default();
    client.fetch_query(&persisted_user(&calls)).await.unwrap();
    client.flush_storage().await;
    assert_eq!(record_data(&store), "server-1");

    let gate = Gate::default();
    let rename = MutationOptions::new(gated(&gate))
        .on_mutate(|name: &String, cx| cx.set_optimistic(key!("user"), name.clone()).unwrap());
    let running = h.runtime.spawn_with_handle({
        let (client, rename) = (client.clone(), rename.clone());
        async move { client.mutate(&rename, "optimistic".to_string()).await }
    });
    h.eventually("the optimistic write shows", || {
        client.get_query_data::<String>(key!("user")).unwrap().as_deref() == Some("optimistic")
    })
    .await;
    // Even an invalidation (which rewrites the record) does not persist unconfirmed data.
    client.invalidate_queries(key!("user"), false).await;
    client.flush_storage().await;
    assert_eq!(record_data(&store), "server-1", "L2 holds only confirmed data");
    gate.open();
    running.await.unwrap();
    client.flush_storage().await;
    assert_eq!(record_data(&store), "optimistic", "confirmed by the success");
}

async fn a_failed_mutation_rolls_back_and_storage_never_saw_it(h: Harness) {
    let store = MemoryStorage::new();
    let client = h.client_with(QueryClientConfig::default().storage(store.clone()));
    let calls = Counter::default();
    client.fetch_query(&persisted_user(&calls)).await.unwrap();
    let failing = |rollback: bool| {
        MutationOptions::new(|_: String| async { Err::<(), _>("rejected".to_string()) })
            .on_mutate(|name: &String, cx| cx.set_optimistic(key!("user"), name.clone()).unwrap())
            .on_error(move |_, _, cx| {
                if rollback {
                    cx.rollback();
                    cx.rollback(); // only the first call restores
                }
            })
    };
    assert!(client.mutate(&failing(true), "bad".to_string()).await.is_err());
    assert_eq!(client.get_query_data::<String>(key!("user")).unwrap().as_deref(), Some("server-1"));

    assert!(client.mutate(&failing(false), "kept".to_string()).await.is_err());
    client.flush_storage().await;
    assert_eq!(client.get_query_data::<String>(key!("user")).unwrap().as_deref(), Some("kept"));
    assert_eq!(record_data(&store), "server-1", "unconfirmed data is never persisted");
    // The next confirmed write (a fetch) is persisted again.
    client.invalidate_queries(key!("user"), false).await;
    client.fetch_query_fresh(&persisted_user(&calls)).await.unwrap();
    client.flush_storage().await;
    assert_eq!(record_data(&store), "server-2");
}

async fn rolling_back_a_key_that_had_no_data_empties_it(h: Harness) {
    let client = h.client();
    let options = MutationOptions::new(|_: u8| async { Err::<(), _>("no".to_string()) })
        .on_mutate(|n: &u8, cx| cx.set_optimistic(key!("fresh"), *n).unwrap())
        .on_error(|_, _, cx| cx.rollback());
    assert!(client.mutate(&options, 7).await.is_err());
    assert_eq!(client.get_query_data::<u8>(key!("fresh")).unwrap(), None);
    let wrong_type = MutationOptions::new(|_: u8| async { Ok::<_, String>(()) })
        .on_mutate(|_: &u8, cx| cx.set_optimistic(key!("fresh"), "text").is_err());
    let mutation = client.mutation(wrong_type);
    mutation.mutate(1).await.unwrap();
    assert_eq!(mutation.state().context, Some(true), "a wrong type is an error, not a panic");
}

runtime_suite!(
    mutate_runs_options_once_without_a_handle,
    callbacks_get_the_client_key_meta_and_typed_on_mutate_result,
    the_function_can_take_the_context,
    states_show_variables_context_and_settle_after_the_callbacks,
    failed_attempts_show_count_and_reason,
    the_mutation_cache_lists_filters_and_counts,
    mutation_events_and_garbage_collection,
    a_scope_runs_mutations_one_at_a_time_in_submission_order,
    a_dropped_run_leaves_its_scope,
    different_scopes_and_unscoped_runs_are_concurrent,
    optimistic_writes_reach_storage_only_once_confirmed,
    a_failed_mutation_rolls_back_and_storage_never_saw_it,
    rolling_back_a_key_that_had_no_data_empties_it,
);
