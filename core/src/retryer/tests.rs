use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::executor::block_on;

use super::{Retryer, default_retry_delay};
use crate::error::QueryError;
use crate::runtime::{BoxFuture, Runtime, Spawner, Timer};

/// A timer whose sleeps end at once and are recorded, so a schedule can be read back.
#[derive(Default)]
struct RecordingTimer {
    sleeps: Mutex<Vec<Duration>>,
}

impl Timer for RecordingTimer {
    fn sleep(&self, duration: Duration) -> BoxFuture {
        self.sleeps.lock().unwrap().push(duration);
        Box::pin(async {})
    }
    fn sleep_until(&self, _deadline: std::time::Instant) -> BoxFuture {
        Box::pin(async {})
    }
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
    fn system_now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
}

struct NoSpawn;
impl Spawner for NoSpawn {
    fn spawn(&self, _future: BoxFuture) {}
}

fn runtime() -> (Runtime, Arc<RecordingTimer>) {
    let timer = Arc::new(RecordingTimer::default());
    (Runtime::new(Arc::new(NoSpawn), timer.clone()), timer)
}

fn retryer(retries: u32) -> Retryer<String> {
    Retryer { retries, delay: Arc::new(default_retry_delay), retry_if: None }
}

#[test]
fn failures_sleep_on_the_default_schedule_then_stop() {
    let (rt, timer) = runtime();
    let calls = AtomicU32::new(0);
    let retried = Mutex::new(Vec::new());
    let out = block_on(retryer(3).run_as(
        &rt,
        "function",
        || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("down".to_string()) }
        },
        |n, e| retried.lock().unwrap().push((n, e.to_string())),
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(out.failures, 4);
    assert!(matches!(out.result, Err(QueryError::Failed(e)) if *e == "down"));
    let secs: Vec<u64> = timer.sleeps.lock().unwrap().iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![1, 2, 4]);
    assert_eq!(retried.lock().unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[test]
fn a_success_after_failures_counts_no_failure() {
    let (rt, timer) = runtime();
    let calls = AtomicU32::new(0);
    let out = block_on(retryer(5).run_as(
        &rt,
        "function",
        || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err("flaky".to_string()) } else { Ok(n) } }
        },
        |_, _| {},
    ));
    assert_eq!(out.result.unwrap(), 2);
    assert_eq!(out.failures, 0);
    assert_eq!(timer.sleeps.lock().unwrap().len(), 2);
}

#[test]
fn the_predicate_stops_retries_and_sees_each_attempt() {
    let (rt, _) = runtime();
    let seen = Mutex::new(Vec::new());
    let mut policy = retryer(10);
    policy.retry_if = Some(Arc::new(|attempt, _e: &String| attempt < 1));
    let out = block_on(policy.run_as(
        &rt,
        "function",
        || async { Err::<(), _>("x".to_string()) },
        |n, _| seen.lock().unwrap().push(n),
    ));
    assert_eq!(out.failures, 2);
    assert_eq!(*seen.lock().unwrap(), vec![1]);
}

#[test]
fn panics_in_the_function_its_future_the_predicate_or_the_delay_become_errors() {
    let (rt, _) = runtime();
    let out = block_on(retryer(2).run_as(
        &rt,
        "function",
        || -> futures::future::Ready<Result<(), String>> { panic!("boom at call") },
        |_, _| {},
    ));
    assert!(matches!(out.result, Err(QueryError::Panicked(m)) if m.contains("boom at call")));

    let out = block_on(retryer(2).run_as(
        &rt,
        "function",
        || async { panic!("boom in future") },
        |_: u32, _: &Arc<String>| {},
    ));
    let _: &Result<(), _> = &out.result;
    assert!(matches!(out.result, Err(QueryError::Panicked(m)) if m.contains("boom in future")));

    let mut policy = retryer(2);
    policy.retry_if = Some(Arc::new(|_, _: &String| panic!("bad predicate")));
    let out = block_on(policy.run_as(
        &rt,
        "function",
        || async { Err::<(), _>("e".to_string()) },
        |_, _| {},
    ));
    assert!(
        matches!(&out.result, Err(QueryError::Panicked(m)) if m.contains("retry predicate panicked") && m.contains("bad predicate"))
    );

    let mut policy = retryer(2);
    policy.delay = Arc::new(|_| panic!("bad delay"));
    let out = block_on(policy.run_as(
        &rt,
        "function",
        || async { Err::<(), _>("e".to_string()) },
        |_, _| {},
    ));
    assert!(
        matches!(&out.result, Err(QueryError::Panicked(m)) if m.contains("retry delay panicked"))
    );
    assert_eq!(out.failures, 1);
}

#[test]
fn the_default_delay_doubles_and_caps_without_overflow() {
    assert_eq!(default_retry_delay(0), Duration::from_secs(1));
    assert_eq!(default_retry_delay(4), Duration::from_secs(16));
    assert_eq!(default_retry_delay(5), Duration::from_secs(30));
    assert_eq!(default_retry_delay(u32::MAX), Duration::from_secs(30));
}
