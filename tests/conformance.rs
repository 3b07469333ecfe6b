//! The adapter conformance suite: what the engine assumes of every `Spawner` and `Timer`,
//! checked once per runtime (tokio current- and multi-thread, smol, async-std, manual).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Harness;

async fn spawned_work_runs(h: Harness) {
    let (tx, rx) = futures::channel::oneshot::channel();
    h.runtime.spawn(async move {
        tx.send(42).unwrap();
    });
    assert_eq!(rx.await.unwrap(), 42);
}

async fn spawn_with_handle_returns_output(h: Harness) {
    let handle = h.runtime.spawn_with_handle(async { 6 * 7 });
    assert_eq!(handle.await, 42);
}

async fn sleeps_complete_in_deadline_order_and_not_early(h: Harness) {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for ms in [60u64, 20, 40] {
        let (runtime, order) = (h.runtime.clone(), order.clone());
        handles.push(h.runtime.spawn_with_handle(async move {
            let start = runtime.now();
            runtime.sleep(Duration::from_millis(ms)).await;
            let slept = runtime.now() - start;
            order.lock().unwrap().push(ms);
            slept >= Duration::from_millis(ms)
        }));
    }
    for not_early in futures::future::join_all(handles).await {
        assert!(not_early, "a sleep completed before its deadline");
    }
    assert_eq!(*order.lock().unwrap(), vec![20, 40, 60]);
}

async fn sleep_until_past_deadline_is_immediate(h: Harness) {
    let past = h.runtime.now();
    h.runtime.sleep(Duration::from_millis(2)).await;
    h.runtime.sleep_until(past).await;
}

async fn now_is_monotonic(h: Harness) {
    let mut last = h.runtime.now();
    for _ in 0..100 {
        let now = h.runtime.now();
        assert!(now >= last);
        last = now;
    }
    h.runtime.sleep(Duration::from_millis(5)).await;
    assert!(h.runtime.now() - last >= Duration::from_millis(5));
    assert!(h.runtime.system_now() > std::time::UNIX_EPOCH);
}

async fn dropping_a_handle_cancels_the_work(h: Harness) {
    let ran = Arc::new(AtomicBool::new(false));
    let (runtime, flag) = (h.runtime.clone(), ran.clone());
    let handle = h.runtime.spawn_with_handle(async move {
        runtime.sleep(Duration::from_millis(20)).await;
        flag.store(true, Ordering::SeqCst);
    });
    drop(handle);
    h.sleep(Duration::from_millis(60)).await;
    assert!(!ran.load(Ordering::SeqCst), "work continued after its handle was dropped");
}

async fn timer_created_outside_the_runtime_context_works(h: Harness) {
    let runtime = h.runtime.clone();
    // A plain OS thread is outside every runtime's context (no tokio handle entered).
    let sleep =
        std::thread::spawn(move || runtime.sleep(Duration::from_millis(10))).join().unwrap();
    let start = h.runtime.now();
    sleep.await;
    assert!(h.runtime.now() - start >= Duration::from_millis(5));
}

async fn spawn_from_outside_the_runtime_context_works(h: Harness) {
    let runtime = h.runtime.clone();
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || runtime.spawn(async move { tx.send(()).unwrap() })).join().unwrap();
    rx.await.unwrap();
}

runtime_suite!(
    spawned_work_runs,
    spawn_with_handle_returns_output,
    sleeps_complete_in_deadline_order_and_not_early,
    sleep_until_past_deadline_is_immediate,
    now_is_monotonic,
    dropping_a_handle_cancels_the_work,
    timer_created_outside_the_runtime_context_works,
    spawn_from_outside_the_runtime_context_works,
);
