//! Mutation edge cases on every runtime: panicking callbacks (sync and async forms, while the
//! callback's future is created and while it is polled), panicking retry policies, and a
//! `mutate()` future dropped before it settles.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Counter, Gate, Harness};
use pystackquery::{MutationContext, MutationOptions, MutationStatus, QueryError};

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// The message of a `Panicked` error, or a test failure.
fn panic_message<T: std::fmt::Debug>(result: &Result<T, QueryError<String>>) -> String {
    match result {
        Err(QueryError::Panicked(message)) => message.to_string(),
        other => panic!("expected a Panicked error, got {other:?}"),
    }
}

/// Compiles only if the value can move to another thread (`mutate()` futures are spawned).
fn assert_send<T: Send>(_: &T) {}

/// A mutation function that counts its calls and doubles its input.
fn doubling(calls: &Counter) -> impl Fn(u32) -> std::future::Ready<Result<u32, String>> + use<> {
    let calls = calls.clone();
    move |x: u32| {
        calls.hit();
        std::future::ready(Ok(x * 2))
    }
}

async fn sync_on_mutate_panic_settles_with_error(h: Harness) {
    let client = h.client();
    let (calls, seen) = (Counter::default(), log());
    let (on_error, on_settled) = (seen.clone(), seen.clone());
    let mutation = client.mutation(
        MutationOptions::new(doubling(&calls))
            .on_mutate(|_: &u32, _| -> u32 { panic!("optimistic update failed") })
            .on_error(move |error, input, cx: &MutationContext<u32>| {
                let context = cx.on_mutate_result;
                on_error.lock().unwrap().push(format!("error {input} {context:?} {error:?}"));
            })
            .on_settled(move |data, error, input, cx| {
                let context = cx.on_mutate_result;
                let failed = error.is_some();
                on_settled
                    .lock()
                    .unwrap()
                    .push(format!("settled {input} {data:?} {failed} {context:?}"));
            }),
    );
    let states = log();
    let s = states.clone();
    let _sub = mutation.subscribe(move |st| s.lock().unwrap().push(format!("{:?}", st.status)));

    let result = mutation.mutate(7).await;
    let message = panic_message(&result);
    assert!(message.starts_with("mutation on_mutate callback panicked: "), "{message}");
    assert!(message.contains("optimistic update failed"), "{message}");
    assert_eq!(calls.get(), 0, "the mutation function must not run after on_mutate panicked");
    let state = mutation.state();
    assert_eq!(state.status, MutationStatus::Error);
    assert!(state.settled_at.is_some());
    assert!(matches!(state.error, Some(QueryError::Panicked(_))));
    let seen = entries(&seen);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("error 7 None Panicked"), "{seen:?}");
    assert_eq!(seen[1], "settled 7 None true None");
    assert_eq!(entries(&states), vec!["Pending", "Error"]);

    // The mutation keeps working.
    let working = client.mutation(MutationOptions::new(doubling(&calls)));
    assert_eq!(working.mutate(2).await.unwrap(), 4);
}

async fn async_on_mutate_panics_are_contained(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    // Panics while its future is created (before any `async` block exists).
    let creating = client.mutation(
        MutationOptions::new(doubling(&calls))
            .on_mutate_async(|_: u32, _| -> std::future::Ready<u32> { panic!("creating") }),
    );
    let message = panic_message(&creating.mutate(1).await);
    assert!(message.starts_with("mutation on_mutate callback panicked: "), "{message}");
    assert!(message.contains("creating"), "{message}");
    assert!(creating.state().is_error());

    // Panics while its future is polled.
    let polling = client.mutation(MutationOptions::new(doubling(&calls)).on_mutate_async(
        |x: u32, _| async move {
            assert!(x != 0, "polling");
            x
        },
    ));
    let message = panic_message(&polling.mutate(0).await);
    assert!(message.starts_with("mutation on_mutate callback panicked: "), "{message}");
    assert!(message.contains("polling"), "{message}");
    assert!(polling.state().is_error());
    assert_eq!(polling.mutate(3).await.unwrap(), 6);
    assert!(polling.state().is_success());
    assert_eq!(calls.get(), 1);
}

async fn sync_on_success_and_on_settled_panics_keep_the_result(h: Harness) {
    let client = h.client();
    let (calls, settled) = (Counter::default(), Counter::default());
    let counted = settled.clone();
    let mutation = client.mutation(
        MutationOptions::new(doubling(&calls))
            .on_success(|_, _, _| panic!("on_success exploded"))
            .on_settled(move |_, _, _, _| {
                counted.hit();
                panic!("on_settled exploded");
            }),
    );
    assert_eq!(mutation.mutate(4).await.unwrap(), 8);
    assert_eq!(settled.get(), 1, "on_settled runs after on_success panicked");
    let state = mutation.state();
    assert!(state.is_success());
    assert_eq!(state.data, Some(8));
    assert!(state.settled_at.is_some());
}

async fn sync_on_error_panic_keeps_the_error(h: Harness) {
    let client = h.client();
    let settled = Counter::default();
    let counted = settled.clone();
    let mutation = client.mutation(
        MutationOptions::new(|_: u32| async { Err::<u32, _>("rejected".to_string()) })
            .on_error(|_, _, _| panic!("rollback exploded"))
            .on_settled(move |_, error, _, _| {
                assert!(error.is_some());
                counted.hit();
            }),
    );
    let result = mutation.mutate(1).await;
    assert_eq!(result.unwrap_err().failed().map(String::as_str), Some("rejected"));
    assert_eq!(settled.get(), 1, "on_settled runs after on_error panicked");
    assert!(mutation.state().is_error());
}

async fn async_callbacks_panicking_while_created_are_contained(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let ok = client.mutation(
        MutationOptions::new(doubling(&calls))
            .on_success_async(|_, _, _| -> std::future::Ready<()> { panic!("success") })
            .on_settled_async(|_, _, _, _| -> std::future::Ready<()> { panic!("settled") }),
    );
    assert_eq!(ok.mutate(5).await.unwrap(), 10);
    assert!(ok.state().is_success());

    let failing = client.mutation(
        MutationOptions::new(|_: u32| async { Err::<u32, _>("no".to_string()) })
            .on_error_async(|_, _, _| -> std::future::Ready<()> { panic!("error") }),
    );
    assert!(matches!(failing.mutate(5).await, Err(QueryError::Failed(_))));
    assert!(failing.state().is_error());
}

async fn retry_predicate_panic_settles_mutation(h: Harness) {
    let client = h.client();
    let (attempts, settled) = (Counter::default(), log());
    let (a, s) = (attempts.clone(), settled.clone());
    let mutation = client.mutation(
        MutationOptions::new(move |_: u32| {
            a.hit();
            async { Err::<u32, _>("flaky".to_string()) }
        })
        .retry(3)
        .retry_delay(|_| Duration::from_millis(1))
        .retry_if(|_, _| panic!("predicate bug"))
        .on_settled(move |_, error, _, _| {
            s.lock().unwrap().push(format!("{error:?}"));
        }),
    );
    let result = mutation.mutate(1).await;
    let message = panic_message(&result);
    assert!(message.starts_with("retry predicate panicked: "), "{message}");
    assert!(message.contains("predicate bug"), "{message}");
    assert_eq!(attempts.get(), 1);
    let state = mutation.state();
    assert_eq!(state.status, MutationStatus::Error);
    assert!(state.settled_at.is_some());
    assert_eq!(entries(&settled).len(), 1, "on_settled runs once");
}

async fn retry_delay_panic_settles_mutation(h: Harness) {
    let client = h.client();
    let (attempts, settled) = (Counter::default(), Counter::default());
    let (a, s) = (attempts.clone(), settled.clone());
    let mutation = client.mutation(
        MutationOptions::new(move |_: u32| {
            a.hit();
            async { Err::<u32, _>("flaky".to_string()) }
        })
        .retry(3)
        .retry_delay(|_| panic!("delay bug"))
        .on_settled(move |_, error, _, _| {
            assert!(matches!(error, Some(QueryError::Panicked(_))));
            s.hit();
        }),
    );
    let result = mutation.mutate(1).await;
    let message = panic_message(&result);
    assert!(message.starts_with("retry delay panicked: "), "{message}");
    assert!(message.contains("delay bug"), "{message}");
    assert_eq!(attempts.get(), 1);
    let state = mutation.state();
    assert_eq!(state.status, MutationStatus::Error);
    assert!(state.settled_at.is_some());
    assert_eq!(settled.get(), 1);
}

async fn dropped_mutate_is_cancelled(h: Harness) {
    let client = h.client();
    let callbacks = Counter::default();
    let (c1, c2, c3) = (callbacks.clone(), callbacks.clone(), callbacks.clone());
    let mutation = client.mutation(
        MutationOptions::new(|x: u32| async move {
            if x == 0 {
                futures::future::pending::<()>().await;
            }
            Ok::<_, String>(x)
        })
        .on_success(move |_, _, _| {
            c1.hit();
        })
        .on_error(move |_, _, _| {
            c2.hit();
        })
        .on_settled(move |_, _, _, _| {
            c3.hit();
        }),
    );
    let states = log();
    let s = states.clone();
    let _sub = mutation.subscribe(move |st| s.lock().unwrap().push(format!("{:?}", st.status)));

    let mut running = Box::pin(mutation.mutate(0));
    assert_send(&running);
    assert!(futures::poll!(&mut running).is_pending());
    assert!(mutation.state().is_pending());
    drop(running);

    let state = mutation.state();
    assert_eq!(state.status, MutationStatus::Error);
    assert!(matches!(state.error, Some(QueryError::Cancelled)), "{:?}", state.error);
    assert!(state.settled_at.is_some());
    assert_eq!(entries(&states), vec!["Pending", "Error"], "listeners hear the cancellation");
    assert_eq!(callbacks.get(), 0, "no callback runs for a dropped mutate()");

    // A later run is unaffected.
    assert_eq!(mutation.mutate(3).await.unwrap(), 3);
    assert!(mutation.state().is_success());
    assert_eq!(callbacks.get(), 2);
}

async fn dropped_mutate_during_on_mutate_is_cancelled(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let mutation = client.mutation(MutationOptions::new(doubling(&calls)).on_mutate_async(
        |_: u32, _| async {
            futures::future::pending::<()>().await;
            1u8
        },
    ));
    let mut running = Box::pin(mutation.mutate(1));
    assert!(futures::poll!(&mut running).is_pending());
    drop(running);
    let state = mutation.state();
    assert!(matches!(state.error, Some(QueryError::Cancelled)), "{:?}", state.error);
    assert_eq!(calls.get(), 0);
}

async fn dropping_an_older_run_keeps_the_newer_run_pending(h: Harness) {
    let client = h.client();
    let gate = Gate::default();
    let g = gate.clone();
    let mutation = client.mutation(MutationOptions::new(move |x: u32| {
        let g = g.clone();
        async move {
            if x == 0 {
                futures::future::pending::<()>().await;
            }
            g.wait().await;
            Ok::<_, String>(x)
        }
    }));
    let mut older = Box::pin(mutation.mutate(0));
    assert!(futures::poll!(&mut older).is_pending());
    let mut newer = Box::pin(mutation.mutate(1));
    assert!(futures::poll!(&mut newer).is_pending());
    drop(older);
    assert!(mutation.state().is_pending(), "the newer run is still running");
    gate.open();
    assert_eq!(newer.await.unwrap(), 1);
    assert!(mutation.state().is_success());
}

async fn dropping_after_settling_keeps_the_outcome(h: Harness) {
    let client = h.client();
    let calls = Counter::default();
    let mutation = client.mutation(
        MutationOptions::new(doubling(&calls))
            .on_success_async(|_, _, _| futures::future::pending::<()>()),
    );
    let mut running = Box::pin(mutation.mutate(2));
    assert!(futures::poll!(&mut running).is_pending(), "waits in on_success");
    let state = mutation.state();
    assert!(state.is_pending(), "pending while its callbacks run, as in TanStack Query");
    assert_eq!(client.is_mutating(()), 1);
    drop(running);
    let state = mutation.state();
    assert!(state.is_success(), "the function had succeeded before the run was dropped");
    assert_eq!(client.is_mutating(()), 0);
    assert_eq!(state.data, Some(4));
    assert!(state.error.is_none());
}

runtime_suite!(
    sync_on_mutate_panic_settles_with_error,
    async_on_mutate_panics_are_contained,
    sync_on_success_and_on_settled_panics_keep_the_result,
    sync_on_error_panic_keeps_the_error,
    async_callbacks_panicking_while_created_are_contained,
    retry_predicate_panic_settles_mutation,
    retry_delay_panic_settles_mutation,
    dropped_mutate_is_cancelled,
    dropped_mutate_during_on_mutate_is_cancelled,
    dropping_an_older_run_keeps_the_newer_run_pending,
    dropping_after_settling_keeps_the_outcome,
);
