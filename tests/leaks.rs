//! Proof that churn leaks nothing: observers subscribing and unsubscribing, fetches whose
//! callers go away or whose functions panic, fetches cancelled or superseded; then, once the
//! clock passes `gc_time`, no query is cached, no task or timer is left, every value the
//! engine made was dropped, and the heap is back where it started (within 64 KiB).
//!
//! One `#[test]` runs the scenarios one after another, so no other test allocates while a
//! [`Region`] counts. Each scenario runs twice on the same client: a small warm-up round
//! (lazily initialised statics, the first growth of the cache's and the manual runtime's
//! tables) and then the measured round, counted from before it starts to after gc.
//!
//! Sizes: 1/10 of the full counts by default, so `cargo test` stays fast; the full counts
//! (1,000,000 subscription cycles, 100,000 fetches, 10,000 cancellations) with
//! `PYSTACKQUERY_HEAVY=1`, best with `--release`. Run with `--nocapture` to see the figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::alloc::System;
use std::panic::PanicHookInfo;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use pystackquery::runtime::BoxFuture;
use pystackquery::testing::TestRuntime;
use pystackquery::{
    QueryClient, QueryClientConfig, QueryError, QueryOptions, QueryState, Runtime, Subscription,
    key,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Most net heap growth a measured round may leave behind.
const BUDGET: i64 = 64 * 1024;

/// Most blocks a measured round may leave allocated: a leak of one small block every
/// thousand iterations stays under [`BUDGET`] at the default size, but not under this.
const MAX_BLOCKS: i64 = 64;

/// The client's gc time: short, so the scenarios also exercise collection as they run.
const GC_TIME: Duration = Duration::from_secs(1);

/// The message of every panic this test plans; the panic hook keeps them quiet (printing
/// them would also grow the test harness's capture buffer inside a measured region).
const PLANNED: &str = "planned panic in a query function";

type Opts<T> = QueryOptions<T, String>;

// ---------------------------------------------------------------------------------------------
// The value type: counts every instance made (new or cloned) and every instance dropped.

static CREATED: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, PartialEq, Eq)]
struct Tracked {
    value: u64,
    /// Some heap, so a leaked value also shows in the byte count.
    payload: Box<[u8; 48]>,
}

impl Tracked {
    fn new(value: u64) -> Self {
        CREATED.fetch_add(1, Ordering::SeqCst);
        Self { value, payload: Box::new([7; 48]) }
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        CREATED.fetch_add(1, Ordering::SeqCst);
        Self { value: self.value, payload: self.payload.clone() }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

fn live_values() -> isize {
    CREATED.load(Ordering::SeqCst) as isize - DROPPED.load(Ordering::SeqCst) as isize
}

// ---------------------------------------------------------------------------------------------
// Sizes and the measuring frame.

fn heavy() -> bool {
    std::env::var("PYSTACKQUERY_HEAVY").is_ok_and(|v| v == "1")
}

/// `full` with `PYSTACKQUERY_HEAVY=1`, else a tenth of it.
fn size(full: usize) -> usize {
    if heavy() { full } else { full / 10 }
}

struct Figures {
    name: &'static str,
    iterations: usize,
    /// Net heap growth of the measured round, gc included.
    net_bytes: i64,
    /// Net blocks still allocated after the measured round (allocations minus frees).
    net_blocks: i64,
    allocations: usize,
    elapsed: Duration,
    warm_up: usize,
    /// Net heap growth of the warm-up round: tables grown once and kept.
    warm_up_bytes: i64,
    /// Net heap growth from before the runtime and client were made to after they were
    /// dropped (lazily initialised statics of the first scenario show here).
    after_drop_bytes: i64,
}

/// Runs `scenario` once small (warm-up) and once at `iterations`, on one manual runtime and
/// one client; after each, moves the clock past `gc_time` and checks that nothing is left.
/// Returns the measured round's figures.
fn measure(
    name: &'static str,
    iterations: usize,
    warm_up: usize,
    scenario: impl Fn(&TestRuntime, &QueryClient, usize),
) -> Figures {
    let whole = Region::new(GLOBAL);
    let test = TestRuntime::new();
    let client = QueryClient::with_runtime(
        test.runtime(),
        QueryClientConfig::default().gc_time(GC_TIME).retry(0),
    );
    let values_before = live_values();

    let region = Region::new(GLOBAL);
    scenario(&test, &client, warm_up);
    settle(name, &test, &client, values_before);
    let (warm_up_bytes, _) = net(region.change());

    let started = Instant::now();
    let region = Region::new(GLOBAL);
    scenario(&test, &client, iterations);
    settle(name, &test, &client, values_before);
    let stats = region.change();
    let elapsed = started.elapsed();

    let (net_bytes, net_blocks) = net(stats);
    drop(client);
    drop(test);
    assert_eq!(live_values(), values_before, "{name}: values alive after the client is gone");
    let (after_drop_bytes, _) = net(whole.change());
    Figures {
        name,
        iterations,
        net_bytes,
        net_blocks,
        allocations: stats.allocations,
        elapsed,
        warm_up,
        warm_up_bytes,
        after_drop_bytes,
    }
}

/// Net heap bytes and net live blocks of a region's change.
fn net(stats: stats_alloc::Stats) -> (i64, i64) {
    // stats_alloc's `realloc` already books a growth in `bytes_allocated` and a shrink in
    // `bytes_deallocated` (see benches/memory.rs): the net is their difference.
    let bytes = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    let blocks = stats.allocations as i64 - stats.deallocations as i64;
    (bytes, blocks)
}

/// Moves the clock past `gc_time` and checks that the client and the runtime are empty and
/// every value made since `values_before` was counted is gone.
fn settle(name: &str, test: &TestRuntime, client: &QueryClient, values_before: isize) {
    test.run_until_idle();
    test.advance(GC_TIME + Duration::from_secs(1));
    assert_eq!(client.len(), 0, "{name}: queries left after gc: {:?}", client.cached_keys());
    assert_eq!(test.live_tasks(), 0, "{name}: tasks left after gc");
    assert_eq!(test.pending_timers(), 0, "{name}: timers left after gc");
    assert_eq!(live_values(), values_before, "{name}: values created but never dropped");
}

/// Keeps planned panics quiet; any other panic goes to the previous hook.
fn quiet_planned_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        if message != Some(PLANNED) {
            previous(info);
        }
    }));
}

/// Resolves after `runtime` has slept `ms` virtual milliseconds.
fn sleep_ms(runtime: &Runtime, ms: u64) -> BoxFuture {
    runtime.sleep(Duration::from_millis(ms))
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: observers subscribing and unsubscribing.

const OBSERVED_KEYS: u64 = 64;

/// Observer options of one of four kinds for key `k`: enabled, disabled, cancelling its fetch
/// when the last observer leaves, polling every 10 ms. Every fetch takes 2 ms of virtual time.
/// (`select` is applied per observer, in `subscribe_cycles`.)
fn observer_options(runtime: &Runtime, k: u64, kind: u64, calls: &KindCalls) -> Opts<Tracked> {
    let (runtime, calls) = (runtime.clone(), calls.clone());
    let options = QueryOptions::new(key!("observed", k), move || {
        calls[kind as usize].fetch_add(1, Ordering::Relaxed);
        let sleep = sleep_ms(&runtime, 2);
        async move {
            sleep.await;
            Ok(Tracked::new(k))
        }
    });
    match kind {
        1 => options.enabled(false),
        2 => options.cancel_when_unobserved(true),
        3 => options.refetch_interval(Duration::from_millis(10)),
        _ => options,
    }
}

/// Query-function calls per observer kind.
type KindCalls = Arc<[AtomicUsize; 4]>;

fn subscribe_cycles(test: &TestRuntime, client: &QueryClient, cycles: usize) {
    let runtime = test.runtime();
    let seen = Arc::new(AtomicUsize::new(0));
    let calls: KindCalls = Arc::default();
    // Options built once per key and kind (as applications do), plus a few observers kept for
    // the whole run and subscribed to again and again.
    let options: Vec<Vec<Opts<Tracked>>> = (0..OBSERVED_KEYS)
        .map(|k| (0..4).map(|kind| observer_options(&runtime, k, kind, &calls)).collect())
        .collect();
    let kept: Vec<_> = (0..8).map(|k| client.watch(&options[k][k % 4])).collect();
    let listener = |seen: &Arc<AtomicUsize>| {
        let seen = seen.clone();
        move |state: &QueryState<Tracked, String>| {
            if state.data.as_ref().is_some_and(|data| data.payload[0] == 7) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let mut held: Vec<Subscription> = Vec::new();
    for i in 0..cycles {
        let i = i as u64;
        let k = (i % OBSERVED_KEYS) as usize;
        // Each key meets every case below with every kind of options.
        let kind = (i / (8 * OBSERVED_KEYS)) % 4;
        let case = (i + i / OBSERVED_KEYS) % 8;
        let opts = &options[k][kind as usize];
        match case {
            // A new observer per cycle, through `select`.
            0 | 1 => {
                let observer = client.watch(opts).select(|t: &Tracked| t.value);
                let sub = observer.subscribe(|_| {});
                drop(observer); // the subscription keeps it alive
                drop(sub);
            }
            // One of the kept observers, subscribed to and left at once.
            2 => drop(kept[(i / 8) as usize % kept.len()].subscribe(listener(&seen))),
            // One of the kept observers, subscribed to for a while.
            3 => held.push(kept[(i / 8) as usize % kept.len()].subscribe(|_| {})),
            // A stream, polled once.
            4 => {
                let mut stream = client.watch(opts).stream();
                let _ = futures::StreamExt::next(&mut stream).now_or_never();
            }
            // A new observer per cycle, two overlapping subscriptions.
            _ => {
                let observer = client.watch(opts);
                let a = observer.subscribe(listener(&seen));
                let b = observer.subscribe(|_| {});
                drop(a);
                drop(observer);
                drop(b);
            }
        }
        if i % 8 == 7 {
            test.run_until_idle();
        }
        if i % 64 == 63 {
            held.clear();
            test.advance(Duration::from_millis(3));
        }
    }
    drop(held);
    drop(kept);
    test.run_until_idle();
    let calls: Vec<usize> = calls.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    if cycles >= 1024 {
        assert!(seen.load(Ordering::Relaxed) > 0, "listeners saw data");
        // Kind 2's fetches are mostly cancelled (abandoned) before their function runs.
        assert!(calls[0] > 0 && calls[3] > 0, "enabled kinds fetch: {calls:?}");
        assert_eq!(calls[1], 0, "a disabled observer never fetches");
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: fetches, a tenth of the callers dropped before completion, a hundredth of the
// query functions panicking.

/// Keys per batch; each has ten callers.
const FETCH_KEYS: usize = 10;
const CALLERS_PER_KEY: usize = 10;

fn fetches(test: &TestRuntime, client: &QueryClient, total: usize) {
    let runtime = test.runtime();
    let calls = Arc::new(AtomicUsize::new(0));
    let batches = total / (FETCH_KEYS * CALLERS_PER_KEY);
    let (mut ok, mut panicked, mut dropped) = (0, 0, 0);
    for batch in 0..batches {
        let mut kept = Vec::new();
        let mut abandoned = Vec::new();
        for j in 0..FETCH_KEYS {
            let n = batch * FETCH_KEYS + j; // one query function call per key and batch
            let panics = n % 100 == 42;
            let (rt, counter) = (runtime.clone(), calls.clone());
            // New options every batch, on keys that come back after gc (every 20 batches).
            let options: Opts<Tracked> = QueryOptions::new(key!("fetch", n % 200), move || {
                counter.fetch_add(1, Ordering::Relaxed);
                let sleep = sleep_ms(&rt, 1);
                async move {
                    sleep.await;
                    if panics {
                        panic!("planned panic in a query function");
                    }
                    Ok(Tracked::new(n as u64))
                }
            });
            for c in 0..CALLERS_PER_KEY {
                let fetch = {
                    let (client, options) = (client.clone(), options.clone());
                    async move { client.fetch_query(&options).await }
                };
                match c {
                    // Polled once, then dropped while it waits.
                    0 if j % 2 == 0 => {
                        assert!(fetch.now_or_never().is_none(), "a cold fetch cannot be ready");
                        dropped += 1;
                    }
                    // Spawned, then its handle dropped while it waits (below).
                    0 => {
                        abandoned.push(runtime.spawn_with_handle(fetch));
                        dropped += 1;
                    }
                    _ => kept.push((n, panics, runtime.spawn_with_handle(fetch))),
                }
            }
        }
        test.run_until_idle();
        drop(abandoned);
        test.advance(Duration::from_millis(1));
        for (n, panics, handle) in kept {
            match test.block_on(handle) {
                Ok(value) if !panics => {
                    assert_eq!(value.value, n as u64);
                    ok += 1;
                }
                Err(QueryError::Panicked(message)) if panics => {
                    assert!(message.contains(PLANNED), "{message}");
                    panicked += 1;
                }
                other => panic!("fetch {n}: unexpected outcome {other:?}"),
            }
        }
        // Let unobserved queries expire now and then, so keys are created again.
        if batch % 20 == 19 {
            test.advance(GC_TIME + Duration::from_millis(1));
        }
    }
    assert_eq!(calls.load(Ordering::Relaxed), batches * FETCH_KEYS, "one call per key and batch");
    assert_eq!(ok + panicked + dropped, batches * FETCH_KEYS * CALLERS_PER_KEY);
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: cancellations, by `cancel_queries` and by invalidation with refetch.

const CANCEL_KEYS: usize = 10;

fn cancellations(test: &TestRuntime, client: &QueryClient, total: usize) {
    let runtime = test.runtime();
    let (calls, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Each batch cancels `CANCEL_KEYS` fetches one way and supersedes as many the other way.
    let batches = total / (2 * CANCEL_KEYS);
    for batch in 0..batches {
        // (a) cancel_queries on fetches in flight: half the functions watch their signal,
        // half never finish on their own (their future is dropped at its next poll).
        let mut waiters = Vec::new();
        for j in 0..CANCEL_KEYS {
            let (counter, done) = (calls.clone(), finished.clone());
            let options: Opts<Tracked> = QueryOptions::with_context(key!("cancel", j), move |cx| {
                counter.fetch_add(1, Ordering::Relaxed);
                let done = done.clone();
                async move {
                    if j % 2 == 0 {
                        cx.signal.cancelled().await;
                    } else {
                        futures::future::pending::<()>().await;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    Err("stopped".to_string())
                }
            });
            let (client, options) = (client.clone(), options.clone());
            waiters
                .push(runtime.spawn_with_handle(async move { client.fetch_query(&options).await }));
        }
        test.run_until_idle();
        assert_eq!(test.block_on(client.cancel_queries(key!("cancel"))), CANCEL_KEYS);
        for waiter in waiters {
            assert!(matches!(test.block_on(waiter), Err(QueryError::Cancelled)));
        }

        // (b) fetches superseded by invalidation with refetch: an observer makes each query
        // active, a caller joins its fetch; the invalidation starts a new fetch, cancels the
        // old one, and the caller gets the new fetch's value.
        // Keys come back every 10 batches, after gc: each batch starts them cold.
        let prefix = key!("supersede", batch % 10);
        let mut observed = Vec::new();
        for j in 0..CANCEL_KEYS {
            let (rt, counter, done) = (runtime.clone(), calls.clone(), finished.clone());
            let generation = Arc::new(AtomicUsize::new(0));
            let base = batch as u64 * 100;
            let k = key!("supersede", batch % 10, j);
            let options: Opts<Tracked> = QueryOptions::new(k, move || {
                counter.fetch_add(1, Ordering::Relaxed);
                let g = base + generation.fetch_add(1, Ordering::Relaxed) as u64;
                let (sleep, done) = (sleep_ms(&rt, 5), done.clone());
                async move {
                    sleep.await;
                    done.fetch_add(1, Ordering::Relaxed);
                    Ok(Tracked::new(g))
                }
            });
            let observer = client.watch(&options);
            let subscription = observer.subscribe(|_| {});
            let waiter = {
                let (client, options) = (client.clone(), options.clone());
                runtime.spawn_with_handle(async move { client.fetch_query(&options).await })
            };
            observed.push((observer, subscription, waiter));
        }
        test.run_until_idle();
        let invalidation = runtime.spawn_with_handle({
            let client = client.clone();
            async move { client.invalidate_queries(prefix, true).await }
        });
        test.run_until_idle();
        test.advance(Duration::from_millis(5));
        assert_eq!(test.block_on(invalidation), CANCEL_KEYS);
        let newer = batch as u64 * 100 + 1;
        for (observer, subscription, waiter) in observed {
            let value = test.block_on(waiter).unwrap();
            assert_eq!(value.value, newer, "the caller gets the superseding fetch's value");
            assert_eq!(observer.result().data.map(|t| t.value), Some(newer));
            drop(subscription);
        }
        if batch % 10 == 9 {
            test.advance(GC_TIME + Duration::from_millis(1));
        }
    }
    let calls = calls.load(Ordering::Relaxed);
    assert_eq!(
        calls,
        batches * 3 * CANCEL_KEYS,
        "one call per cancelled fetch, two per superseded"
    );
    assert_eq!(
        finished.load(Ordering::Relaxed),
        batches * CANCEL_KEYS,
        "only the superseding fetches finish"
    );
}

// ---------------------------------------------------------------------------------------------

#[test]
fn churn_leaves_nothing_behind() {
    quiet_planned_panics();
    let mode = if heavy() { "PYSTACKQUERY_HEAVY=1, full counts" } else { "1/10 of full counts" };
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("leaks: {mode}, {build} build");
    let figures = [
        measure("subscribe/unsubscribe cycles", size(1_000_000), 2_048, subscribe_cycles),
        measure("fetches (10% dropped, 1% panicking)", size(100_000), 2_000, fetches),
        measure("cancellations (cancel_queries + superseded)", size(10_000), 200, cancellations),
    ];
    for f in &figures {
        println!(
            "leaks: {:<45} {:>9} iterations: net heap {:>+6} bytes, {:>+3} blocks \
             ({} allocations, {:.2?}); warm-up of {} kept {:+} bytes; {:+} bytes once the \
             client is dropped",
            f.name,
            f.iterations,
            f.net_bytes,
            f.net_blocks,
            f.allocations,
            f.elapsed,
            f.warm_up,
            f.warm_up_bytes,
            f.after_drop_bytes
        );
    }
    for f in &figures {
        assert!(
            f.net_bytes < BUDGET,
            "{}: net heap growth {} bytes after gc (budget {BUDGET})",
            f.name,
            f.net_bytes
        );
        assert!(
            f.net_blocks < MAX_BLOCKS,
            "{}: {} more blocks allocated than freed after gc (at most {MAX_BLOCKS})",
            f.name,
            f.net_blocks
        );
    }
}
