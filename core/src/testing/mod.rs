//! A deterministic runtime for tests: a manual clock and a single-threaded executor.
//!
//! [`TestRuntime`] implements the [`Spawner`] and [`Timer`] seam with virtual time. Sleeps
//! complete only when time moves, and time moves only when the test says so:
//! [`advance`](TestRuntime::advance) steps the clock, firing every sleep in deadline order and
//! running the woken tasks between deadlines; [`block_on`](TestRuntime::block_on) drives a future
//! and, whenever nothing is runnable, jumps the clock to the next deadline (as tokio's paused
//! clock does). Spawned tasks run in FIFO order on the thread that drives the runtime, so a test
//! gives the same answer on every run, and a 300-second garbage-collection test takes
//! microseconds.
//!
//! Here: [`TestRuntime`] and its shared state; the executor (tasks, wakers, spawner) is in
//! `executor`, the timer and its sleeps in `clock`.
//!
//! [`Spawner`]: crate::runtime::Spawner
//! [`Timer`]: crate::runtime::Timer
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
//! use pystackquery_core::testing::TestRuntime;
//!
//! let test = TestRuntime::new();
//! let runtime = test.runtime();
//! let done = Arc::new(AtomicBool::new(false));
//! let flag = done.clone();
//! let timer = runtime.clone();
//! runtime.spawn(async move {
//!     timer.sleep(Duration::from_secs(300)).await;
//!     flag.store(true, Ordering::SeqCst);
//! });
//! test.advance(Duration::from_secs(299));
//! assert!(!done.load(Ordering::SeqCst));
//! test.advance(Duration::from_secs(1));
//! assert!(done.load(Ordering::SeqCst));
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use crate::runtime::Runtime;

mod clock;
mod executor;

use clock::{MAX_ELAPSED, TestTimer};
use executor::{MainWaker, Task, TestSpawner};

/// How long [`TestRuntime::block_on`] waits for a wake-up from another thread when no task is
/// runnable and no timer is pending, before it declares the test stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A manual clock plus a deterministic executor. Cloning shares the same clock and queue.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
///
/// // Stale-while-revalidate, tested in microseconds and the same on every run.
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let calls = Arc::new(AtomicU32::new(0));
/// let counter = calls.clone();
/// let options = QueryOptions::new(key!("v"), move || {
///     let v = counter.fetch_add(1, Ordering::SeqCst) + 1;
///     async move { Ok::<_, String>(v) }
/// })
/// .stale_time(Duration::from_secs(60));
/// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), 1);
/// test.advance(Duration::from_secs(61));
/// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), 1, "stale, served at once");
/// test.run_until_idle(); // the background revalidation
/// assert_eq!(client.get_query_data::<u32>(key!("v")).unwrap(), Some(2));
/// # }
/// ```
#[derive(Clone)]
pub struct TestRuntime {
    shared: Arc<Shared>,
    /// Shared by the clones: the runtime shuts down when the last handle is dropped.
    _owner: Arc<Owner>,
}

/// Shuts the runtime down when the last [`TestRuntime`] handle goes.
struct Owner {
    shared: Arc<Shared>,
}

struct Shared {
    base: Instant,
    base_system: SystemTime,
    state: Mutex<State>,
    wakeup: Condvar,
    live_tasks: AtomicUsize,
}

#[derive(Default)]
struct State {
    elapsed: Duration,
    timers: BTreeMap<(Instant, u64), Waker>,
    next_timer: u64,
    ready: VecDeque<Arc<Task>>,
    main_woken: bool,
    /// Every task spawned and not finished, by id: like a real executor, the runtime owns its
    /// tasks, so a task that is pending with no waker stored anywhere stays alive (and pending)
    /// until it finishes or the runtime is dropped.
    tasks: HashMap<u64, Arc<Task>>,
    next_task: u64,
    /// The last `TestRuntime` handle was dropped: spawns are refused (dropped at once).
    shut_down: bool,
}

impl TestRuntime {
    /// A runtime whose clock starts now (virtual time then moves only on request).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// assert!(client.is_empty());
    /// # }
    /// ```
    pub fn new() -> Self {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            base_system: SystemTime::now(),
            state: Mutex::new(State::default()),
            wakeup: Condvar::new(),
            live_tasks: AtomicUsize::new(0),
        });
        Self { _owner: Arc::new(Owner { shared: shared.clone() }), shared }
    }

    /// The [`Runtime`] to hand to a client.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// // Every `runtime()` shares the same clock and queue: two clients, one virtual time.
    /// let a = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let b = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// assert_eq!(a.runtime().now(), b.runtime().now());
    /// # }
    /// ```
    pub fn runtime(&self) -> Runtime {
        Runtime::new(
            Arc::new(TestSpawner { shared: self.shared.clone() }),
            Arc::new(TestTimer { shared: self.shared.clone() }),
        )
    }

    /// Virtual time elapsed since the runtime was created.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// assert_eq!(test.elapsed(), Duration::ZERO);
    /// test.advance(Duration::from_secs(5));
    /// assert_eq!(test.elapsed(), Duration::from_secs(5));
    /// # }
    /// ```
    pub fn elapsed(&self) -> Duration {
        self.shared.lock().elapsed
    }

    /// Number of sleeps registered and not yet fired or dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("a"), 1u32).unwrap(); // unobserved: its garbage collection is due
    /// test.run_until_idle();
    /// assert!(test.pending_timers() > 0);
    /// test.advance(Duration::from_secs(300));
    /// assert!(client.is_empty());
    /// # }
    /// ```
    pub fn pending_timers(&self) -> usize {
        self.shared.lock().timers.len()
    }

    /// Number of spawned tasks that have not finished (pending ones included).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let runtime = test.runtime();
    /// let timer = runtime.clone();
    /// runtime.spawn(async move { timer.sleep(Duration::from_secs(1)).await });
    /// assert_eq!(test.live_tasks(), 1);
    /// test.advance(Duration::from_secs(1));
    /// assert_eq!(test.live_tasks(), 0); // e.g. check that nothing leaks after a test
    /// # }
    /// ```
    pub fn live_tasks(&self) -> usize {
        self.shared.live_tasks.load(Ordering::SeqCst)
    }

    /// Runs spawned tasks until none is runnable. The clock does not move.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) });
    /// let _subscription = client.watch(&options).subscribe(|_| {}); // spawns a fetch
    /// assert_eq!(client.get_query_data::<u32>(key!("n")).unwrap(), None);
    /// test.run_until_idle(); // runs it, without moving the clock
    /// assert_eq!(client.get_query_data::<u32>(key!("n")).unwrap(), Some(1));
    /// # }
    /// ```
    pub fn run_until_idle(&self) {
        while let Some(task) = self.shared.pop_ready() {
            task.run();
        }
    }

    /// Moves the clock forward by `duration`, firing sleeps in deadline order and running the
    /// tasks they wake before moving on to the next deadline.
    ///
    /// The clock stops at ten thousand years past its start: a larger `duration` is clamped, so
    /// `advance(Duration::MAX)` fires every sleep that can fire and never overflows.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) })
    ///     .gc_time(Duration::from_secs(300));
    /// test.block_on(client.fetch_query(&options)).unwrap();
    /// test.advance(Duration::from_secs(299));
    /// assert_eq!(client.len(), 1);
    /// test.advance(Duration::from_secs(1)); // five minutes, in microseconds
    /// assert_eq!(client.len(), 0);
    /// # }
    /// ```
    pub fn advance(&self, duration: Duration) {
        self.run_until_idle();
        let target = self.shared.lock().elapsed.saturating_add(duration).min(MAX_ELAPSED);
        while self.fire_next_timer(Some(target)) {
            self.run_until_idle();
        }
        self.shared.lock().elapsed = target;
        self.run_until_idle();
    }

    /// Drives `future` to completion on this thread, running spawned tasks as they become
    /// runnable. Whenever nothing can run, the clock jumps to the next pending deadline.
    ///
    /// # Panics
    ///
    /// If nothing can run, no timer is pending, and no other thread wakes a task within twenty
    /// seconds: the future can never complete, and a test should fail rather than hang.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let flaky = QueryOptions::new(key!("flaky"), || async { Err::<u32, _>("down".to_string()) });
    /// // Three retries with the default backoff (1 s, 2 s, 4 s): the clock jumps over each sleep.
    /// assert!(test.block_on(client.fetch_query(&flaky)).is_err());
    /// assert_eq!(test.elapsed(), Duration::from_secs(7));
    /// # }
    /// ```
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let mut future = pin!(future);
        let main = Arc::new(MainWaker { shared: Arc::downgrade(&self.shared) });
        let waker = Waker::from(main);
        let mut cx = Context::from_waker(&waker);
        self.shared.lock().main_woken = true;
        loop {
            let poll_main = std::mem::take(&mut self.shared.lock().main_woken);
            if poll_main && let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            if let Some(task) = self.shared.pop_ready() {
                task.run();
                continue;
            }
            if self.shared.lock().main_woken {
                continue;
            }
            if self.fire_next_timer(None) {
                continue;
            }
            self.wait_for_external_wake();
        }
    }

    /// Fires the earliest timer (if its deadline is within `limit`), moving the clock to it.
    fn fire_next_timer(&self, limit: Option<Duration>) -> bool {
        let waker = {
            let mut state = self.shared.lock();
            let Some((&(deadline, id), _)) = state.timers.iter().next() else {
                return false;
            };
            let at = deadline.saturating_duration_since(self.shared.base);
            if limit.is_some_and(|limit| at > limit) {
                return false;
            }
            if at > MAX_ELAPSED {
                // Beyond the end of the manual clock: this sleep never completes.
                state.timers.remove(&(deadline, id));
                return true;
            }
            if at > state.elapsed {
                state.elapsed = at;
            }
            state.timers.remove(&(deadline, id))
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    fn wait_for_external_wake(&self) {
        let state = self.shared.lock();
        let (state, timeout) = self
            .shared
            .wakeup
            .wait_timeout_while(state, STALL_TIMEOUT, |s| {
                s.ready.is_empty() && !s.main_woken && s.timers.is_empty()
            })
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stalled = timeout.timed_out() && state.ready.is_empty() && !state.main_woken;
        drop(state);
        assert!(!stalled, "TestRuntime::block_on stalled: nothing runnable, no timer pending");
    }
}

impl Default for TestRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TestRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestRuntime")
            .field("elapsed", &self.elapsed())
            .field("pending_timers", &self.pending_timers())
            .field("live_tasks", &self.live_tasks())
            .finish()
    }
}

impl Drop for Owner {
    /// Shuts the runtime down as tokio's does, once its last handle (clones included) is
    /// dropped: the tasks still pending are dropped (outside the lock: their `Drop` may use
    /// the runtime), and later spawns are refused.
    fn drop(&mut self) {
        let (tasks, ready) = {
            let mut state = self.shared.lock();
            state.shut_down = true;
            (std::mem::take(&mut state.tasks), std::mem::take(&mut state.ready))
        };
        drop(ready);
        for (_, task) in tasks {
            task.shut_down();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while this lock is held can only come from this module's own bookkeeping;
        // the state stays consistent, so recover the guard rather than cascade the panic.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pop_ready(&self) -> Option<Arc<Task>> {
        self.lock().ready.pop_front()
    }

    fn now(&self) -> Instant {
        self.base + self.lock().elapsed
    }
}
