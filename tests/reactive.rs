//! Observers, cache events, mutations and the convenience API (the seed's
//! `test_observers.py` and `test_mutations.py` scenarios, and re-entrancy), on every runtime.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Counter, Gate, Harness};
use futures::StreamExt;
use pystackquery::{
    CacheEvent, CachedQuery, MutationContext, MutationOptions, QueryError, QueryOptions,
    QueryState, Subscription, dependent_query, key, parallel_queries,
};

type Opts<T> = QueryOptions<T, String>;

fn counting(k: pystackquery::QueryKey, calls: &Counter) -> Opts<u32> {
    let calls = calls.clone();
    QueryOptions::new(k, move || {
        let n = calls.hit() as u32;
        async move { Ok(n) }
    })
}

async fn subscribe_gets_current_state_then_fetch(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let observer = client.watch(&counting(key!("obs"), &calls));
    let seen = Arc::new(Mutex::new(Vec::<QueryState<u32, String>>::new()));
    let log = seen.clone();
    let sub = observer.subscribe(move |s| log.lock().unwrap().push(s.clone()));
    assert!(!seen.lock().unwrap().is_empty(), "called at once");
    h.eventually("fetched", || seen.lock().unwrap().last().is_some_and(|s| s.data == Some(1)))
        .await;
    assert_eq!(calls.get(), 1, "the first subscriber starts one fetch");
    assert_eq!(observer.result().data, Some(1));
    drop(sub);
}

async fn many_observers_share_one_query_and_fetch(h: Harness) {
    let client = h.client();
    let (calls, gate) = (Counter::default(), Gate::default());
    let (c, g) = (calls.clone(), gate.clone());
    let opts: Opts<u32> = QueryOptions::new(key!("shared"), move || {
        c.hit();
        let g = g.clone();
        async move {
            g.wait().await;
            Ok(5)
        }
    });
    let observers: Vec<_> = (0..10).map(|_| client.watch(&opts)).collect();
    let subs: Vec<Subscription> = observers.iter().map(|o| o.subscribe(|_| {})).collect();
    gate.open();
    h.eventually("all see data", || observers.iter().all(|o| o.result().data == Some(5))).await;
    assert_eq!(calls.get(), 1);
    assert_eq!(client.len(), 1);
    drop(subs);
}

async fn select_transforms_per_observer(h: Harness) {
    let client = h.client();
    let opts: Opts<Vec<u32>> = QueryOptions::new(key!("list"), || async { Ok(vec![1, 2, 3]) });
    let len = client.watch(&opts).select(|v: &Vec<u32>| v.len());
    let sum = client.watch(&opts).select(|v: &Vec<u32>| v.iter().sum::<u32>());
    let (_a, _b) = (len.subscribe(|_| {}), sum.subscribe(|_| {}));
    h.eventually("selected", || len.result().data == Some(3) && sum.result().data == Some(6)).await;
    assert_eq!(client.get_query_data::<Vec<u32>>(key!("list")).unwrap(), Some(vec![1, 2, 3]));
    let broken = client.watch(&opts).select(|_: &Vec<u32>| -> u8 { panic!("bad select") });
    let _c = broken.subscribe(|_| {});
    let state = broken.result();
    assert!(matches!(state.error, Some(QueryError::Panicked(ref m)) if m.contains("bad select")));
}

async fn placeholder_shown_while_pending_never_stored(h: Harness) {
    let client = h.client();
    let gate = Gate::default();
    let g = gate.clone();
    let opts: Opts<String> = QueryOptions::new(key!("ph"), move || {
        let g = g.clone();
        async move {
            g.wait().await;
            Ok("real".to_string())
        }
    })
    .placeholder_data("placeholder".to_string());
    let observer = client.watch(&opts);
    let _sub = observer.subscribe(|_| {});
    let state = observer.result();
    assert_eq!(state.data.as_deref(), Some("placeholder"));
    assert!(state.is_placeholder && state.is_pending());
    assert_eq!(client.get_query_data::<String>(key!("ph")).unwrap(), None, "never cached");
    gate.open();
    h.eventually("real data", || observer.result().data.as_deref() == Some("real")).await;
    assert!(!observer.result().is_placeholder);
}

async fn disabled_query_does_not_fetch_until_refetch(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let observer = client.watch(&counting(key!("off"), &calls).enabled(false));
    let _sub = observer.subscribe(|_| {});
    h.yield_a_little().await;
    assert_eq!(calls.get(), 0);
    assert_eq!(observer.refetch().await.data, Some(1));
}

async fn refetch_forces_a_fetch(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let observer =
        client.watch(&counting(key!("force"), &calls).stale_time(Duration::from_secs(600)));
    let _sub = observer.subscribe(|_| {});
    h.eventually("first", || observer.result().data == Some(1)).await;
    assert_eq!(observer.refetch().await.data, Some(2), "fresh data is refetched on request");
}

async fn invalidate_refetches_observed_queries(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let observer = client.watch(&counting(key!("inv", 1), &calls));
    let _sub = observer.subscribe(|_| {});
    h.eventually("first", || observer.result().data == Some(1)).await;
    client.invalidate_queries(key!("inv"), true).await;
    assert_eq!(observer.result().data, Some(2), "awaited refetch landed");
}

async fn listeners_may_reenter_the_client(h: Harness) {
    let client = h.client();
    let gate = Gate::default();
    let g = gate.clone();
    let opts: Opts<u32> = QueryOptions::new(key!("re"), move || {
        let g = g.clone();
        async move {
            g.wait().await;
            Ok(1)
        }
    });
    let observer = Arc::new(client.watch(&opts));
    let inner_subs: Arc<Mutex<Vec<Subscription>>> = Arc::default();
    let (c, o, subs) = (client.clone(), observer.clone(), inner_subs.clone());
    let own: Arc<Mutex<Option<Subscription>>> = Arc::default();
    let own2 = own.clone();
    let sub = observer.subscribe(move |state| {
        if state.data == Some(1) {
            // Re-enter: write another key, subscribe again, invalidate (no await here).
            c.set_query_data(key!("side"), 9u8).unwrap();
            subs.lock().unwrap().push(o.subscribe(|_| {}));
            let invalidated =
                futures::FutureExt::now_or_never(c.invalidate_queries(key!("side"), false));
            assert_eq!(invalidated, Some(1), "invalidation without refetch completes at once");
            // Unsubscribe ourselves from inside our own callback.
            own2.lock().unwrap().take();
        }
    });
    *own.lock().unwrap() = Some(sub);
    gate.open();
    h.eventually("reentrant listener ran", || !inner_subs.lock().unwrap().is_empty()).await;
    assert_eq!(client.get_query_data::<u8>(key!("side")).unwrap(), Some(9));
    assert!(own.lock().unwrap().is_none());
    assert_eq!(observer.subscriber_count(), 1);
}

async fn panicking_listener_is_isolated(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let observer = client.watch(&counting(key!("panic-listener"), &calls));
    let good = Counter::default();
    let g = good.clone();
    let _bad = observer.subscribe(|s| {
        if s.data.is_some() {
            panic!("listener bug");
        }
    });
    let _good = observer.subscribe(move |s| {
        if s.data.is_some() {
            g.hit();
        }
    });
    h.eventually("good listener still runs", || good.get() >= 1).await;
    client.set_query_data(key!("panic-listener"), 7u32).unwrap();
    assert!(good.get() >= 2);
}

async fn stream_yields_latest_states(h: Harness) {
    let client = h.client();
    client.set_query_data(key!("stream"), 0u32).unwrap();
    let opts: Opts<u32> =
        QueryOptions::new(key!("stream"), || async { Ok(0) }).stale_time(Duration::from_secs(600));
    let observer = client.watch(&opts);
    let mut stream = observer.stream();
    assert_eq!(stream.next().await.unwrap().data, Some(0));
    for i in 1..=100u32 {
        client.set_query_data(key!("stream"), i).unwrap();
    }
    // A slow consumer sees the newest state, not a backlog of 100.
    assert_eq!(stream.next().await.unwrap().data, Some(100));
    assert!(futures::poll!(stream.next()).is_pending());
    drop(stream);
    assert_eq!(observer.subscriber_count(), 0);
}

async fn cache_events_are_reported(h: Harness) {
    let client = h.client();
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let _events = client.subscribe_events(move |e| log.lock().unwrap().push(e.clone()));
    let opts: Opts<u8> = QueryOptions::new(key!("ev"), || async { Ok(1) });
    let observer = client.watch(&opts);
    let sub = observer.subscribe(|_| {});
    h.eventually("fetched", || observer.result().data == Some(1)).await;
    drop(sub);
    client.remove_queries(key!("ev"));
    let events = events.lock().unwrap();
    for expected in [
        CacheEvent::Added(key!("ev")),
        CacheEvent::ObserverAdded(key!("ev")),
        CacheEvent::Updated(key!("ev")),
        CacheEvent::ObserverRemoved(key!("ev")),
        CacheEvent::Removed(key!("ev")),
    ] {
        assert!(events.contains(&expected), "missing {expected:?} in {events:?}");
    }
}

async fn mutation_success_and_callbacks(h: Harness) {
    let client = h.client();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l1, l2) = (log.clone(), log.clone());
    let mutation = client.mutation(
        MutationOptions::new(|x: u32| async move { Ok::<_, String>(x * 2) })
            .on_success(move |data, input, _| {
                l1.lock().unwrap().push(format!("success {data} {input}"))
            })
            .on_settled(move |data, error, _, _| {
                l2.lock().unwrap().push(format!("settled {:?} {}", data, error.is_some()))
            }),
    );
    let states = Arc::new(Mutex::new(Vec::new()));
    let s = states.clone();
    let _sub = mutation.subscribe(move |st| s.lock().unwrap().push(st.status));
    assert!(mutation.state().is_idle());
    assert_eq!(mutation.mutate(21).await.unwrap(), 42);
    assert!(mutation.state().is_success());
    assert_eq!(mutation.state().data, Some(42));
    assert_eq!(
        *log.lock().unwrap(),
        vec!["success 42 21".to_string(), "settled Some(42) false".into()]
    );
    use pystackquery::MutationStatus::*;
    assert_eq!(*states.lock().unwrap(), vec![Pending, Success]);
    mutation.reset();
    assert!(mutation.state().is_idle());
}

async fn optimistic_update_rolls_back_on_error(h: Harness) {
    let client = h.client();
    client.set_query_data(key!("todos"), vec!["a".to_string()]).unwrap();
    let mutation = client.mutation(
        MutationOptions::new(|_: String| async { Err::<(), _>("server said no".to_string()) })
            .on_mutate(move |title: &String, cx| {
                cx.update_optimistic(key!("todos"), |old: Option<&Vec<String>>| {
                    let mut new = old.cloned().unwrap_or_default();
                    new.push(title.clone());
                    Some(new)
                })
                .unwrap();
                cx.client.get_query_data::<Vec<String>>(key!("todos")).unwrap()
            })
            .on_error(|_, _, cx: &MutationContext<Option<Vec<String>>>| {
                let shown = cx.on_mutate_result.clone().flatten().unwrap();
                assert_eq!(shown, ["a", "b"], "on_mutate saw its optimistic write");
                cx.rollback();
            })
            .retry(1)
            .retry_delay(|_| Duration::from_millis(1)),
    );
    let result = mutation.mutate("b".to_string()).await;
    assert!(matches!(result, Err(QueryError::Failed(_))));
    assert_eq!(
        client.get_query_data::<Vec<String>>(key!("todos")).unwrap(),
        Some(vec!["a".to_string()])
    );
    let state = mutation.state();
    assert!(state.is_error());
    assert_eq!(state.failure_count, 2);
}

async fn mutation_async_callbacks_and_panics(h: Harness) {
    let client = h.client();
    let hits = Counter::default();
    let hc = hits.clone();
    let mutation = client.mutation(
        MutationOptions::new(|x: u8| async move {
            if x == 0 {
                panic!("division by zero");
            }
            Ok::<_, String>(10 / x)
        })
        .on_mutate_async(|x: u8, _| async move { u32::from(x) + 100 })
        .on_success_async(move |_, _, cx| {
            let hc = hc.clone();
            async move {
                assert_eq!(cx.on_mutate_result, Some(105));
                hc.hit();
            }
        }),
    );
    assert_eq!(mutation.mutate(5).await.unwrap(), 2);
    assert_eq!(hits.get(), 1);
    assert!(matches!(mutation.mutate(0).await, Err(QueryError::Panicked(_))));
}

async fn convenience_helpers(h: Harness) {
    let client = h.client();
    let all: Vec<Opts<u32>> = (1..=3u32)
        .map(|i| QueryOptions::new(key!("p", i), move || async move { Ok(i * 10) }))
        .collect();
    let results: Vec<u32> =
        parallel_queries(&client, &all).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(results, vec![10, 20, 30]);

    let user: Opts<u32> = QueryOptions::new(key!("user"), || async { Ok(7) });
    let posts = dependent_query(&client, &user, |id| {
        QueryOptions::new(key!("posts", id), move || async move { Ok(format!("posts of {id}")) })
    })
    .await
    .unwrap();
    assert_eq!(posts, "posts of 7");

    let calls = Counter::default();
    let cached = CachedQuery::new(
        &client,
        counting(key!("cached"), &calls).stale_time(Duration::from_secs(60)),
    );
    assert_eq!(cached.call().await.unwrap(), 1);
    assert_eq!(cached.call().await.unwrap(), 1);
    assert_eq!(cached.data().unwrap(), Some(1));
    cached.invalidate().await;
    assert_eq!(cached.call().await.unwrap(), 1, "stale data returned while revalidating");
    h.eventually("revalidated", || cached.data().unwrap() == Some(2)).await;
}

runtime_suite!(
    subscribe_gets_current_state_then_fetch,
    many_observers_share_one_query_and_fetch,
    select_transforms_per_observer,
    placeholder_shown_while_pending_never_stored,
    disabled_query_does_not_fetch_until_refetch,
    refetch_forces_a_fetch,
    invalidate_refetches_observed_queries,
    listeners_may_reenter_the_client,
    panicking_listener_is_isolated,
    stream_yields_latest_states,
    cache_events_are_reported,
    mutation_success_and_callbacks,
    optimistic_update_rolls_back_on_error,
    mutation_async_callbacks_and_panics,
    convenience_helpers,
);
