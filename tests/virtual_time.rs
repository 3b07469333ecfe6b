//! Time-based behaviour on the manual clock: backoff delays, staleness boundaries and
//! garbage collection, checked to the exact instant in microseconds of real time.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pystackquery::testing::TestRuntime;
use pystackquery::{QueryClient, QueryClientConfig, QueryOptions, key};

fn client(test: &TestRuntime, config: QueryClientConfig) -> QueryClient {
    QueryClient::with_runtime(test.runtime(), config)
}

/// Attempt times, relative to the first attempt, of a query that always fails.
fn attempt_offsets(retries: u32) -> Vec<Duration> {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default());
    let times = Arc::new(Mutex::new(Vec::new()));
    let (log, runtime) = (times.clone(), test.runtime());
    let options = QueryOptions::new(key!("backoff"), move || {
        log.lock().unwrap().push(runtime.now());
        async { Err::<u8, _>("down".to_string()) }
    })
    .retry(retries);
    assert!(test.block_on(client.fetch_query(&options)).is_err());
    let times = times.lock().unwrap();
    times.iter().map(|t| *t - times[0]).collect()
}

#[test]
fn default_backoff_waits_1_2_4_seconds() {
    let secs = |s: &[u64]| s.iter().map(|&s| Duration::from_secs(s)).collect::<Vec<_>>();
    assert_eq!(attempt_offsets(3), secs(&[0, 1, 3, 7]));
}

#[test]
fn default_backoff_caps_at_30_seconds() {
    let offsets = attempt_offsets(7);
    let gaps: Vec<u64> = offsets.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    assert_eq!(gaps, vec![1, 2, 4, 8, 16, 30, 30]);
}

#[test]
fn client_retry_delay_applies_when_query_sets_none() {
    let test = TestRuntime::new();
    let config = QueryClientConfig::default()
        .retry(2)
        .retry_delay(|n| Duration::from_secs(10 * (u64::from(n) + 1)));
    let client = client(&test, config);
    let options = QueryOptions::new(key!("k"), || async { Err::<u8, _>("x".to_string()) });
    let start = test.elapsed();
    assert!(test.block_on(client.fetch_query(&options)).is_err());
    assert_eq!(test.elapsed() - start, Duration::from_secs(30));
}

#[test]
fn data_turns_stale_exactly_at_stale_time() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default());
    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    let options = QueryOptions::new(key!("stale"), move || {
        *counter.lock().unwrap() += 1;
        async { Ok::<_, String>(1u8) }
    })
    .stale_time(Duration::from_secs(10));
    test.block_on(client.fetch_query(&options)).unwrap();
    test.advance(Duration::from_millis(9_999));
    test.block_on(client.fetch_query(&options)).unwrap();
    test.run_until_idle();
    assert_eq!(*calls.lock().unwrap(), 1, "still fresh 1 ms before stale_time");
    test.advance(Duration::from_millis(1));
    test.block_on(client.fetch_query(&options)).unwrap();
    test.run_until_idle();
    assert_eq!(*calls.lock().unwrap(), 2, "stale at stale_time: one background refetch");
}

#[test]
fn unobserved_query_is_collected_exactly_at_gc_time() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default());
    let options = QueryOptions::new(key!("gc"), || async { Ok::<_, String>(1u8) });
    test.block_on(client.fetch_query(&options)).unwrap();
    test.advance(Duration::from_millis(299_999));
    assert_eq!(client.len(), 1, "not before gc_time");
    test.advance(Duration::from_millis(1));
    assert_eq!(client.len(), 0, "removed at gc_time");
    assert_eq!(test.pending_timers(), 0);
    assert_eq!(test.live_tasks(), 0);
}

#[test]
fn a_new_write_restarts_the_gc_clock() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default().gc_time(Duration::from_secs(60)));
    client.set_query_data(key!("gc"), 1u8).unwrap();
    test.advance(Duration::from_secs(50));
    client.set_query_data(key!("gc"), 2u8).unwrap();
    test.advance(Duration::from_secs(50));
    assert_eq!(client.get_query_data::<u8>(key!("gc")).unwrap(), Some(2));
    test.advance(Duration::from_secs(10));
    assert!(client.is_empty());
    assert_eq!(test.pending_timers(), 0, "the replaced timer was cancelled, not leaked");
}

#[test]
fn a_fetching_query_is_not_collected() {
    let test = TestRuntime::new();
    let client =
        client(&test, QueryClientConfig::default().gc_time(Duration::from_secs(1)).retry(0));
    let runtime = test.runtime();
    let slow = QueryOptions::new(key!("slow"), move || {
        let runtime = runtime.clone();
        async move {
            runtime.sleep(Duration::from_secs(100)).await;
            Ok::<_, String>(1u8)
        }
    });
    client.set_query_data(key!("slow"), 0u8).unwrap();
    // Stale hit: starts a 100 s background fetch.
    test.block_on(client.fetch_query(&slow)).unwrap();
    test.advance(Duration::from_secs(50));
    assert_eq!(client.len(), 1, "a query with a fetch in flight is never collected");
    test.advance(Duration::from_secs(50));
    assert_eq!(client.get_query_data::<u8>(key!("slow")).unwrap(), Some(1));
    test.advance(Duration::from_secs(1));
    assert!(client.is_empty(), "collected gc_time after the fetch ended");
}

#[test]
fn dropping_the_client_cancels_gc_timers() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default());
    for i in 0..100u32 {
        client.set_query_data(key!("k", i), i).unwrap();
    }
    test.run_until_idle();
    // One sweeper timer serves every pending removal, however many queries wait.
    assert_eq!(test.pending_timers(), 1);
    assert_eq!(test.live_tasks(), 1);
    drop(client);
    test.run_until_idle();
    assert_eq!(test.pending_timers(), 0);
    assert_eq!(test.live_tasks(), 0);
}

fn counted(calls: &Arc<Mutex<u32>>, k: pystackquery::QueryKey) -> QueryOptions<u32, String> {
    let calls = calls.clone();
    QueryOptions::new(k, move || {
        let mut n = calls.lock().unwrap();
        *n += 1;
        let v = *n;
        async move { Ok(v) }
    })
}

#[test]
fn observed_query_is_collected_gc_time_after_last_unsubscribe() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default());
    let calls = Arc::new(Mutex::new(0));
    let observer = client.watch(&counted(&calls, key!("o")));
    let sub = observer.subscribe(|_| {});
    test.advance(Duration::from_secs(3600));
    assert_eq!(client.len(), 1, "an observed query is never collected");
    drop(sub);
    test.advance(Duration::from_millis(299_999));
    assert_eq!(client.len(), 1);
    test.advance(Duration::from_millis(1));
    assert_eq!(client.len(), 0);
}

#[test]
fn resubscribing_cancels_gc() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default().gc_time(Duration::from_secs(60)));
    let calls = Arc::new(Mutex::new(0));
    let observer = client.watch(&counted(&calls, key!("o")));
    drop(observer.subscribe(|_| {}));
    test.advance(Duration::from_secs(59));
    let sub = observer.subscribe(|_| {});
    test.advance(Duration::from_secs(600));
    assert_eq!(client.len(), 1, "the pending removal was cancelled");
    assert_eq!(test.pending_timers(), 0, "and its timer is gone");
    drop(sub);
    test.advance(Duration::from_secs(60));
    assert_eq!(client.len(), 0);
}

/// Options polling `("poll",)` every `every`, on data that stays fresh for two hours (so only
/// the interval fetches), with the key already cached.
fn polled(
    client: &QueryClient,
    calls: &Arc<Mutex<u32>>,
    every: Duration,
) -> QueryOptions<u32, String> {
    client.set_query_data(key!("poll"), 0u32).unwrap();
    counted(calls, key!("poll")).stale_time(Duration::from_secs(7200)).refetch_interval(every)
}

#[test]
fn interval_of_30s_fetches_120_times_an_hour_and_stops_after_unsubscribe() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default());
    let calls = Arc::new(Mutex::new(0));
    let options = polled(&client, &calls, Duration::from_secs(30));
    let observer = client.watch(&options);
    let sub = observer.subscribe(|_| {});
    test.advance(Duration::from_secs(3600));
    assert_eq!(*calls.lock().unwrap(), 120);
    drop(sub);
    test.advance(Duration::from_secs(3600));
    assert_eq!(*calls.lock().unwrap(), 120, "no polling after the last unsubscribe");
}

#[test]
fn paused_query_skips_interval_ticks_until_resumed() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default());
    let calls = Arc::new(Mutex::new(0));
    let options = polled(&client, &calls, Duration::from_secs(10));
    let _sub = client.watch(&options).subscribe(|_| {});
    test.advance(Duration::from_secs(30));
    assert_eq!(*calls.lock().unwrap(), 3);
    client.pause(key!("poll"));
    test.advance(Duration::from_secs(30));
    assert_eq!(*calls.lock().unwrap(), 3);
    client.resume(key!("poll"), false);
    test.advance(Duration::from_secs(30));
    assert_eq!(*calls.lock().unwrap(), 6);
}

#[test]
fn interval_never_runs_two_fetches_of_one_key_at_once() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default());
    let running = Arc::new(Mutex::new((0u32, 0u32))); // (now, max)
    let (r, runtime) = (running.clone(), test.runtime());
    let options = QueryOptions::new(key!("slow-poll"), move || {
        let (r, runtime) = (r.clone(), runtime.clone());
        async move {
            {
                let mut g = r.lock().unwrap();
                g.0 += 1;
                g.1 = g.1.max(g.0);
            }
            runtime.sleep(Duration::from_secs(25)).await; // longer than the interval
            r.lock().unwrap().0 -= 1;
            Ok::<_, String>(1u8)
        }
    })
    .refetch_interval(Duration::from_secs(10));
    let observers: Vec<_> = (0..3).map(|_| client.watch(&options)).collect();
    let _subs: Vec<_> = observers.iter().map(|o| o.subscribe(|_| {})).collect();
    test.advance(Duration::from_secs(600));
    assert_eq!(running.lock().unwrap().1, 1);
}

#[test]
fn hundred_thousand_subscribe_cycles_leave_nothing_behind() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default());
    let calls = Arc::new(Mutex::new(0));
    let options = counted(&calls, key!("cycle")).stale_time(Duration::from_secs(86_400));
    let observer = client.watch(&options);
    for _ in 0..100_000 {
        let sub = observer.subscribe(|_| {});
        drop(sub);
        test.run_until_idle();
    }
    assert_eq!(*calls.lock().unwrap(), 1);
    assert_eq!(observer.subscriber_count(), 0);
    test.advance(Duration::from_secs(300));
    assert_eq!(client.len(), 0, "no query left");
    assert_eq!(test.pending_timers(), 0, "no timer left");
    assert_eq!(test.live_tasks(), 0, "no task left");
}

/// The gc sweeper keeps one heap for every query: removals scheduled out of order, pushed back
/// by a new write, or cancelled by an observer each happen at exactly their own time.
#[test]
fn the_sweeper_removes_each_query_at_its_own_time() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default());
    let gc = |secs: u64, name: &'static str| {
        QueryOptions::new(key!(name), || async { Ok::<_, String>(0u8) })
            .gc_time(Duration::from_secs(secs))
    };
    for (secs, name) in [(30, "c"), (10, "a"), (20, "b"), (40, "d")] {
        test.block_on(client.fetch_query(&gc(secs, name))).unwrap();
    }
    let alive = |client: &QueryClient| {
        let mut keys: Vec<String> = client.cached_keys().iter().map(|k| k.to_string()).collect();
        keys.sort();
        keys
    };
    test.advance(Duration::from_secs(5));
    client.set_query_data(key!("a"), 1u8).unwrap(); // a: pushed back to 15 s
    let observer = client.watch(&gc(40, "d").enabled(false));
    let sub = observer.subscribe(|_| {}); // d: cancelled while observed
    test.advance(Duration::from_millis(9_999));
    assert_eq!(alive(&client), ["('a',)", "('b',)", "('c',)", "('d',)"], "at 14.999 s");
    test.advance(Duration::from_millis(1));
    assert_eq!(alive(&client), ["('b',)", "('c',)", "('d',)"], "a at 15 s");
    test.advance(Duration::from_secs(5));
    assert_eq!(alive(&client), ["('c',)", "('d',)"], "b at 20 s");
    test.advance(Duration::from_secs(10));
    assert_eq!(alive(&client), ["('d',)"], "c at 30 s");
    test.advance(Duration::from_secs(100));
    assert_eq!(alive(&client), ["('d',)"], "d is observed");
    drop(sub); // d: removed 40 s after its last observer left
    test.advance(Duration::from_millis(39_999));
    assert_eq!(alive(&client), ["('d',)"]);
    test.advance(Duration::from_millis(1));
    assert!(client.is_empty());
    assert_eq!((test.pending_timers(), test.live_tasks()), (0, 0), "the sweeper has exited");
}

/// Eviction across shards follows the exact least-recently-used order of one thread, checked
/// against a model over many keys.
#[test]
fn eviction_follows_the_lru_order_across_shards() {
    let test = TestRuntime::new();
    let client = client(&test, QueryClientConfig::default().cache_max_size(40));
    let mut model: Vec<u64> = Vec::new(); // least recently used first
    let use_key = |client: &QueryClient, i: u64, model: &mut Vec<u64>| {
        client.set_query_data(key!("k", i), i).unwrap();
        model.retain(|&k| k != i);
        model.push(i);
        if model.len() > 40 {
            model.remove(0);
        }
    };
    // A fixed pseudo-random walk over 100 keys: inserts, re-uses and evictions interleave.
    let mut x: u64 = 12345;
    for _ in 0..2_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        use_key(&client, (x >> 33) % 100, &mut model);
    }
    let expected: Vec<_> = model.iter().map(|&i| key!("k", i)).collect();
    assert_eq!(client.cached_keys(), expected);
    test.run_until_idle();
}
