//! Stress: many concurrent callers on one key, round after round, with an invalidation in
//! every round at one of three moments: before the fetch lands, as it lands, and as the
//! callers return. Half of the rounds also have an active observer, so the invalidation
//! refetches at once and supersedes the fetch in flight; in the others the first caller after
//! the invalidation starts the new fetch.
//!
//! Checked in every round:
//! - exactly one query-function call per round and generation (the function records the
//!   round and generation it runs for; each round has generations 0 and 1);
//! - no answer older than the round: every caller of round `r` gets a value of round `r`,
//!   and when the invalidation comes before the fetch lands, of its newest generation;
//! - the cache ends the round with the newest generation's value;
//! - no deadlock or lost wake-up: each round must finish within [`ROUND_LIMIT`] on the
//!   runtime's clock (the test fails), and a watchdog thread aborts the process if the runtime
//!   itself is wedged.
//!
//! Runtimes: tokio multi-thread with 2 workers (feature `tokio`), smol with its executor run on
//! 2 threads (feature `smol`), async-std (feature `async-std`), and always the manual runtime.
//! Size: 1,000 callers x 10 rounds by default; 10,000 callers x 100 rounds with
//! `PYSTACKQUERY_HEAVY=1` (best with `--release`). Run with `--nocapture` for the figures.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use event_listener::Event;
use futures::future::{Either, RemoteHandle};
use pystackquery::testing::TestRuntime;
use pystackquery::{QueryClient, QueryClientConfig, QueryError, QueryOptions, Runtime, key};

/// Longest a round may take on the runtime's clock before the test fails.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

fn heavy() -> bool {
    std::env::var("PYSTACKQUERY_HEAVY").is_ok_and(|v| v == "1")
}

/// (callers per round, rounds).
fn size() -> (usize, u32) {
    if heavy() { (10_000, 100) } else { (1_000, 10) }
}

/// What the query function returns: the round and generation it ran for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Answer {
    round: u32,
    generation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Moment {
    BeforeLanding,
    AsItLands,
    AsCallersReturn,
}

const MOMENTS: [Moment; 3] = [Moment::BeforeLanding, Moment::AsItLands, Moment::AsCallersReturn];

/// Closed until opened, then open for good.
#[derive(Debug, Default)]
struct Gate {
    open: AtomicBool,
    event: Event,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    async fn wait(&self) {
        loop {
            if self.open.load(Ordering::SeqCst) {
                return;
            }
            let listener = self.event.listen();
            if self.open.load(Ordering::SeqCst) {
                return;
            }
            listener.await;
        }
    }
}

/// The test's side of the query function: the round and generation a call belongs to, the
/// round's gate (every call of a round waits at it until it opens), and the calls made.
#[derive(Debug, Default)]
struct Probe {
    round: AtomicU32,
    generation: AtomicU32,
    gate: Mutex<Arc<Gate>>,
    /// Set by the function of the round's first fetch as it returns.
    returning: AtomicBool,
    calls: Mutex<HashMap<Answer, usize>>,
}

impl Probe {
    fn start_round(&self, round: u32) {
        *self.gate.lock().unwrap() = Arc::new(Gate::default());
        self.returning.store(false, Ordering::SeqCst);
        self.generation.store(0, Ordering::SeqCst);
        self.round.store(round, Ordering::SeqCst);
    }

    /// Called before each invalidation: calls from now on belong to the next generation.
    /// Only called once the current generation's call was made, so no call of the engine's
    /// older generation can read the new number.
    fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn gate(&self) -> Arc<Gate> {
        self.gate.lock().unwrap().clone()
    }

    fn calls(&self, round: u32, generation: u32) -> usize {
        self.calls.lock().unwrap().get(&Answer { round, generation }).copied().unwrap_or(0)
    }

    fn calls_in_round(&self, round: u32) -> Vec<(u32, usize)> {
        let mut calls: Vec<_> = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(answer, _)| answer.round == round)
            .map(|(answer, n)| (answer.generation, *n))
            .collect();
        calls.sort_unstable();
        calls
    }
}

fn stress_key() -> pystackquery::QueryKey {
    key!("stress")
}

fn options(probe: &Arc<Probe>) -> QueryOptions<Answer, String> {
    let probe = probe.clone();
    QueryOptions::new(stress_key(), move || {
        let answer = Answer {
            round: probe.round.load(Ordering::SeqCst),
            generation: probe.generation.load(Ordering::SeqCst),
        };
        *probe.calls.lock().unwrap().entry(answer).or_insert(0) += 1;
        let (gate, probe) = (probe.gate(), probe.clone());
        async move {
            gate.wait().await;
            if answer.generation == 0 {
                probe.returning.store(true, Ordering::SeqCst);
            }
            Ok(answer)
        }
    })
    // Fresh for the whole test: no revalidation except the ones invalidation causes.
    .stale_time(Duration::from_secs(3600))
    .retry(0)
}

struct Stress {
    runtime: Runtime,
    client: QueryClient,
    probe: Arc<Probe>,
    options: QueryOptions<Answer, String>,
    callers: usize,
}

type Caller = RemoteHandle<Result<Answer, QueryError<String>>>;

#[derive(Default)]
struct Counts {
    waiting: Arc<AtomicUsize>,
    returned: Arc<AtomicUsize>,
}

impl Stress {
    /// Spawns `n` callers; each counts itself in `waiting` once its first poll left it
    /// waiting for a fetch (it has joined one), and in `returned` once it has its answer.
    fn spawn_callers(&self, n: usize, counts: &Counts) -> Vec<Caller> {
        (0..n)
            .map(|_| {
                let (client, options) = (self.client.clone(), self.options.clone());
                let (waiting, returned) = (counts.waiting.clone(), counts.returned.clone());
                self.runtime.spawn_with_handle(async move {
                    let mut fetch = pin!(client.fetch_query(&options));
                    let result = match futures::poll!(fetch.as_mut()) {
                        Poll::Ready(result) => result,
                        Poll::Pending => {
                            waiting.fetch_add(1, Ordering::SeqCst);
                            fetch.await
                        }
                    };
                    returned.fetch_add(1, Ordering::SeqCst);
                    result
                })
            })
            .collect()
    }

    /// Waits (on the runtime's clock) until `condition` holds; the round's bound fails the
    /// test if it never does.
    async fn until(&self, mut condition: impl FnMut() -> bool) {
        while !condition() {
            self.runtime.sleep(Duration::from_millis(1)).await;
        }
    }

    /// One round: returns every caller's result.
    async fn round(
        &self,
        r: u32,
        moment: Moment,
        observed: bool,
    ) -> Vec<Result<Answer, QueryError<String>>> {
        let (probe, client) = (&self.probe, &self.client);
        probe.start_round(r);
        // No data from the previous round: every caller of this one waits for a fetch.
        client.reset_queries(stress_key());
        let observer = client.watch(&self.options);
        let subscription = observed.then(|| observer.subscribe(|_| {}));
        let counts = Counts::default();
        let half = self.callers / 2;
        let mut callers = self.spawn_callers(half, &counts);
        // The first wave has joined the round's first fetch, which waits at the gate.
        self.until(|| counts.waiting.load(Ordering::SeqCst) == half).await;
        assert_eq!(probe.calls(r, 0), 1, "round {r}: one call for the first wave");
        let gate = probe.gate();
        match moment {
            Moment::BeforeLanding => {
                probe.next_generation();
                // The first poll applies the invalidation; with an observer it then waits for
                // the refetch, which waits at the gate.
                let mut invalidation = pin!(client.invalidate_queries(stress_key(), observed));
                let pending = futures::poll!(invalidation.as_mut()).is_pending();
                assert_eq!(pending, observed, "only a refetch makes the invalidation wait");
                callers.extend(self.spawn_callers(self.callers - half, &counts));
                self.until(|| probe.calls(r, 1) == 1).await;
                gate.open();
                if pending {
                    invalidation.await;
                }
            }
            Moment::AsItLands => {
                // The function returns on a worker thread while this thread waits for that
                // moment to invalidate: the invalidation and the fetch's write race.
                probe.next_generation();
                gate.open();
                while !probe.returning.load(Ordering::SeqCst) {
                    YieldNow(false).await;
                }
                client.invalidate_queries(stress_key(), observed).await;
                callers.extend(self.spawn_callers(self.callers - half, &counts));
            }
            Moment::AsCallersReturn => {
                gate.open();
                while counts.returned.load(Ordering::SeqCst) == 0 {
                    YieldNow(false).await;
                }
                probe.next_generation();
                client.invalidate_queries(stress_key(), observed).await;
                callers.extend(self.spawn_callers(self.callers - half, &counts));
            }
        }
        let results = futures::future::join_all(callers).await;
        // The new generation's fetch runs (without an observer, a caller after the
        // invalidation started it, maybe in the background) and its value is stored.
        let newest = Answer { round: r, generation: 1 };
        self.until(|| {
            client
                .get_query_state::<Answer, String>(stress_key())
                .unwrap()
                .is_some_and(|s| !s.is_fetching() && s.data == Some(newest))
        })
        .await;
        drop(subscription);
        drop(observer);
        results
    }
}

/// Yields once to the executor.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Fails the test if `future` does not finish within `limit` on the runtime's clock.
async fn bounded<F: Future>(runtime: &Runtime, what: &str, future: F) -> F::Output {
    let future = pin!(future);
    match futures::future::select(future, runtime.sleep(ROUND_LIMIT)).await {
        Either::Left((output, _)) => output,
        Either::Right(_) => {
            panic!("{what}: no progress in {ROUND_LIMIT:?}: deadlock or lost wake-up")
        }
    }
}

/// Aborts the process when no round finishes for `limit` of real time: the backstop for a
/// runtime so stuck that its own timer cannot fail the test.
struct Watchdog(mpsc::Sender<()>);

impl Watchdog {
    fn start(name: &'static str, limit: Duration) -> Self {
        let (tick, ticks) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            loop {
                match ticks.recv_timeout(limit) {
                    Ok(()) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        eprintln!("stress ({name}): no round finished in {limit:?}: aborting");
                        std::process::abort();
                    }
                }
            }
        });
        Self(tick)
    }

    fn tick(&self) {
        let _ = self.0.send(());
    }
}

async fn stress(name: &'static str, runtime: Runtime) {
    let (callers, rounds) = size();
    let probe = Arc::new(Probe::default());
    let stress = Stress {
        client: QueryClient::with_runtime(runtime.clone(), QueryClientConfig::default()),
        options: options(&probe),
        probe: probe.clone(),
        runtime: runtime.clone(),
        callers,
    };
    let watchdog = Watchdog::start(name, ROUND_LIMIT * 2);
    let started = Instant::now();
    // Per moment: answers of generation 0 and of generation 1.
    let mut seen: HashMap<Moment, [usize; 2]> = HashMap::new();
    for r in 0..rounds {
        let moment = MOMENTS[r as usize % 3];
        let observed = (r / 3) % 2 == 1;
        let what = format!("{name}: round {r} ({moment:?}, observed: {observed})");
        let results = bounded(&runtime, &what, stress.round(r, moment, observed)).await;
        assert_eq!(results.len(), callers, "{what}");
        for result in results {
            let answer = match result {
                Ok(answer) => answer,
                Err(error) => panic!("{what}: a caller got {error:?}"),
            };
            assert_eq!(answer.round, r, "{what}: an answer from another round: {answer:?}");
            assert!(answer.generation <= 1, "{what}: unknown generation: {answer:?}");
            if moment == Moment::BeforeLanding {
                assert_eq!(answer.generation, 1, "{what}: the superseded fetch's answer");
            }
            seen.entry(moment).or_default()[answer.generation as usize] += 1;
        }
        assert_eq!(
            probe.calls_in_round(r),
            vec![(0, 1), (1, 1)],
            "{what}: calls per generation (generation, calls)"
        );
        watchdog.tick();
    }
    let total: usize = probe.calls.lock().unwrap().values().sum();
    assert_eq!(total, 2 * rounds as usize, "{name}: two calls per round");
    let mut moments: Vec<_> = seen.into_iter().collect();
    moments.sort_by_key(|(moment, _)| MOMENTS.iter().position(|m| m == moment));
    println!(
        "stress ({name}): {callers} callers x {rounds} rounds in {:.2?}; answers by generation \
         [0, 1]: {moments:?}",
        started.elapsed()
    );
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_multi_thread_two_workers() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let runtime =
        pystackquery::TokioRuntime::from_handle(rt.handle().clone()).unwrap().into_runtime();
    rt.block_on(stress("tokio multi-thread, 2 workers", runtime));
}

#[cfg(feature = "smol")]
#[test]
fn smol_two_executor_threads() {
    let executor = Arc::new(smol::Executor::new());
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (executor, stopped) = (executor.clone(), stopped.clone());
            std::thread::spawn(move || smol::block_on(executor.run(stopped.recv())))
        })
        .collect();
    let runtime = pystackquery::SmolRuntime::with_executor(executor).into_runtime();
    smol::block_on(stress("smol, 2 executor threads", runtime));
    drop(stop);
    for thread in threads {
        let _ = thread.join().unwrap();
    }
}

#[cfg(feature = "async-std")]
#[test]
fn async_std_global_executor() {
    let runtime = pystackquery::AsyncStdRuntime.into_runtime();
    async_std::task::block_on(stress("async-std", runtime));
}

#[test]
fn manual_runtime() {
    let test = TestRuntime::new();
    test.block_on(stress("manual runtime", test.runtime()));
}
