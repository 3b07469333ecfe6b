//! Edges of the runtime seam: sleeps of any length on every runtime, and building tokio
//! adapters concurrently without touching process-wide state.
//!
//! One test here installs a process-wide panic hook, and every test of a binary shares it, so
//! this file has its own binary and its other tests do not depend on the hook.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use pystackquery::testing::TestRuntime;

/// The longest duration that can be added to `from` without leaving `Instant`'s range.
fn longest_representable_after(from: Instant) -> Duration {
    let (mut lo, mut hi) = (0u64, u64::MAX);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if from.checked_add(Duration::from_secs(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let secs = Duration::from_secs(lo);
    let (mut lo, mut hi) = (0u32, 999_999_999u32);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if from.checked_add(secs + Duration::from_nanos(u64::from(mid))).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    secs + Duration::from_nanos(u64::from(lo))
}

async fn sleep_of_any_duration_is_pending(h: Harness) {
    let now = h.runtime.now();
    let longest = longest_representable_after(now);
    for duration in [
        Duration::MAX,
        Duration::from_secs(u64::MAX / 4),
        longest,
        longest.saturating_sub(Duration::from_micros(500)),
        Duration::from_secs(86_400 * 365 * 1000),
    ] {
        let mut sleep = h.runtime.sleep(duration);
        assert!(futures::poll!(&mut sleep).is_pending(), "sleep({duration:?}) completed");
        drop(sleep);
    }
}

async fn sleep_until_the_latest_instant_is_pending(h: Harness) {
    let now = h.runtime.now();
    let latest = now + longest_representable_after(now);
    for deadline in [latest, latest - Duration::from_micros(500), latest - Duration::from_secs(1)] {
        let mut sleep = h.runtime.sleep_until(deadline);
        assert!(futures::poll!(&mut sleep).is_pending(), "sleep_until(latest) completed");
        drop(sleep);
    }
}

async fn short_sleeps_still_complete(h: Harness) {
    let started = h.runtime.now();
    h.runtime.sleep(Duration::from_millis(2)).await;
    h.runtime.sleep_until(h.runtime.now() + Duration::from_millis(1)).await;
    h.runtime.sleep(Duration::ZERO).await;
    assert!(h.runtime.now() - started >= Duration::from_millis(3));
}

runtime_suite!(
    sleep_of_any_duration_is_pending,
    sleep_until_the_latest_instant_is_pending,
    short_sleeps_still_complete,
);

/// On the manual clock, virtual time can run far ahead of the real clock; a sleep whose
/// deadline cannot be represented must still never complete.
#[test]
fn manual_clock_far_ahead_of_real_time_never_completes_an_endless_sleep() {
    let test = TestRuntime::new();
    test.advance(Duration::from_secs(86_400 * 365 * 40));
    let runtime = test.runtime();
    let pending = test.block_on(async move {
        let mut sleep = runtime.sleep(Duration::MAX);
        futures::poll!(&mut sleep).is_pending()
    });
    assert!(pending, "sleep(Duration::MAX) completed after the clock moved forty years");
}

#[cfg(feature = "tokio")]
mod tokio_adapter {
    use std::panic::PanicHookInfo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    use pystackquery::TokioRuntime;
    use pystackquery_tokio::TokioRuntimeError;

    /// Marks the panic this test raises to check which hook is installed.
    const MARKER: &str = "runtime_edges hook probe";

    static MARKED: AtomicUsize = AtomicUsize::new(0);

    fn message<'a>(info: &'a PanicHookInfo<'_>) -> &'a str {
        if let Some(s) = info.payload().downcast_ref::<&'static str>() {
            s
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s
        } else {
            ""
        }
    }

    /// Raises and catches a marked panic; true if this test's hook saw it.
    fn hook_is_ours() -> bool {
        let before = MARKED.load(Ordering::SeqCst);
        let _ = std::panic::catch_unwind(|| std::panic::panic_any(MARKER));
        MARKED.load(Ordering::SeqCst) > before
    }

    #[test]
    fn concurrent_adapters_keep_the_panic_hook() {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = message(info);
            if text == MARKER {
                MARKED.fetch_add(1, Ordering::SeqCst);
            } else if !text.contains("timers are disabled") {
                // Anything else (a failing test) is reported as usual.
                previous(info);
            }
        }));
        assert!(hook_is_ours());

        const THREADS: usize = 8;
        const ROUNDS: usize = 200;
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut builder = tokio::runtime::Builder::new_current_thread();
                    // Every other thread probes a runtime without a time driver.
                    if i % 2 == 0 {
                        builder.enable_time();
                    }
                    let rt = builder.build().unwrap();
                    for _ in 0..ROUNDS {
                        barrier.wait();
                        let built = TokioRuntime::from_handle(rt.handle().clone());
                        if i % 2 == 0 {
                            assert!(built.is_ok());
                        } else {
                            assert_eq!(built.unwrap_err(), TokioRuntimeError::TimeDisabled);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(hook_is_ours(), "building TokioRuntimes replaced the process's panic hook");
    }
}

/// The test runtime owns its tasks as tokio does: a task pending on a future that stores no
/// waker (here a mutation whose function never answers) stays pending instead of being dropped
/// (which a mutation would report as cancelled); dropping the runtime drops it, and a runtime
/// handle used after that spawns nothing.
#[test]
fn the_test_runtime_keeps_a_task_that_stores_no_waker_until_it_is_dropped() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use pystackquery::{MutationOptions, MutationStatus, QueryClient, QueryClientConfig};

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let test = TestRuntime::new();
    let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    let mutation = client
        .mutation(MutationOptions::new(|_: u8| futures::future::pending::<Result<u8, String>>()));
    let run = mutation.clone();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Flag(dropped.clone());
    let runtime = test.runtime();
    runtime.spawn(Box::pin(async move {
        let _flag = flag;
        let _ = run.mutate(1).await;
    }));
    test.run_until_idle();
    assert_eq!(mutation.state().status, MutationStatus::Pending, "{:?}", mutation.state());
    assert!(!dropped.load(Ordering::SeqCst), "the pending task is kept");

    drop(test);
    assert!(dropped.load(Ordering::SeqCst), "dropping the runtime drops its tasks");
    assert_eq!(mutation.state().status, MutationStatus::Error, "the run reports it was cancelled");
    let late = Arc::new(AtomicBool::new(false));
    let late_flag = Flag(late.clone());
    runtime.spawn(Box::pin(async move {
        let _flag = late_flag;
    }));
    assert!(late.load(Ordering::SeqCst), "a spawn after shutdown is dropped at once");
}
