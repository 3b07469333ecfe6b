//! The runtime seam: how the engine spawns work and reads the clock.
//!
//! The engine never names an executor. It talks to two small object-safe traits, [`Spawner`] and
//! [`Timer`], held together in a cheap-to-clone [`Runtime`]. Adapter crates
//! (`pystackquery-tokio`, `pystackquery-smol`, `pystackquery-async-std`) implement them in about
//! a hundred lines each; tests use [`crate::testing::TestRuntime`] (feature `test-util`).
//!
//! To write an adapter for another executor, implement both traits on one type and wrap it
//! with [`Runtime::from_adapter`], whose documentation has a complete one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::RemoteHandle;

/// A boxed, sendable future with no borrowed data: the unit of work the engine hands to a
/// [`Spawner`], and the shape of every [`Timer`] sleep.
///
/// # Examples
///
/// ```
/// use pystackquery_core::runtime::BoxFuture;
///
/// let work: BoxFuture = Box::pin(async {});
/// let answer: BoxFuture<u32> = Box::pin(async { 42 });
/// futures::executor::block_on(work);
/// assert_eq!(futures::executor::block_on(answer), 42);
/// ```
pub type BoxFuture<T = ()> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs futures in the background, fire and forget.
///
/// Implementations must not cancel the future when they return: the engine relies on a spawned
/// fetch running to completion even if every caller that waited for it has gone away. Adapters
/// detach whatever handle their runtime returns (tokio detaches on drop, smol cancels on drop;
/// an adapter hides that difference).
///
/// When the runtime can no longer run work (it shut down), dropping the future is the right
/// answer: the engine notices and reports [`crate::QueryError::Cancelled`] to waiters.
///
/// # Examples
///
/// ```
/// use pystackquery_core::runtime::{BoxFuture, Spawner};
///
/// /// Runs every future on a new thread (fine for a demo, wasteful in production).
/// #[derive(Debug)]
/// struct ThreadSpawner;
///
/// impl Spawner for ThreadSpawner {
///     fn spawn(&self, future: BoxFuture) {
///         std::thread::spawn(move || futures::executor::block_on(future));
///     }
/// }
/// ```
pub trait Spawner: Send + Sync + 'static {
    /// Starts `future` in the background and returns at once.
    fn spawn(&self, future: BoxFuture);
}

/// The clock and the sleeps of a runtime.
///
/// [`now`](Timer::now) is monotonic and drives everything the engine measures (staleness,
/// garbage collection, retry backoff, refetch intervals);
/// [`system_now`](Timer::system_now) is the wall clock and is used only for the timestamps
/// written to persistent storage and shown in [`crate::QueryState`].
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use pystackquery_core::runtime::{BoxFuture, Timer};
///
/// /// A timer that sleeps by blocking a helper thread (fine for a demo).
/// #[derive(Debug)]
/// struct ThreadTimer;
///
/// impl Timer for ThreadTimer {
///     fn sleep_until(&self, deadline: Instant) -> BoxFuture {
///         let (tx, rx) = futures::channel::oneshot::channel::<()>();
///         std::thread::spawn(move || {
///             std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
///             let _ = tx.send(());
///         });
///         Box::pin(async move {
///             let _ = rx.await;
///         })
///     }
///     fn now(&self) -> Instant {
///         Instant::now()
///     }
/// }
///
/// futures::executor::block_on(ThreadTimer.sleep(Duration::from_millis(1)));
/// ```
pub trait Timer: Send + Sync + 'static {
    /// A future that completes at `deadline` (at once if it has passed), measured on
    /// [`now`](Timer::now)'s clock. It must work when created outside the runtime's own context.
    ///
    /// Every `Instant` must be accepted without a panic, when the future is created and when it
    /// is polled: a deadline too far away for the runtime's timer to represent gives a future
    /// that never completes (for example [`futures::future::pending`]).
    fn sleep_until(&self, deadline: Instant) -> BoxFuture;

    /// A future that completes `duration` from now. The default computes the deadline from
    /// [`now`](Timer::now) and calls [`sleep_until`](Timer::sleep_until).
    ///
    /// Every `Duration` is accepted without a panic: when `now + duration` cannot be
    /// represented as an `Instant` (as for [`Duration::MAX`]), the future never completes. An
    /// implementation that overrides this method must keep that contract.
    fn sleep(&self, duration: Duration) -> BoxFuture {
        match self.now().checked_add(duration) {
            Some(deadline) => self.sleep_until(deadline),
            None => Box::pin(futures::future::pending()),
        }
    }

    /// The current monotonic instant.
    fn now(&self) -> Instant;

    /// The current wall-clock time. Defaults to [`SystemTime::now`]; a test clock moves it with
    /// the monotonic clock.
    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A [`Spawner`] and a [`Timer`]: everything the engine needs from an executor.
///
/// Cloning is two reference-count increments.
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
/// let started = runtime.now();
/// test.block_on(async move {
///     runtime.sleep(Duration::from_secs(60)).await;
/// });
/// assert_eq!(test.runtime().now() - started, Duration::from_secs(60));
/// # }
/// ```
#[derive(Clone)]
pub struct Runtime {
    spawner: Arc<dyn Spawner>,
    timer: Arc<dyn Timer>,
}

impl Runtime {
    /// Pairs a spawner with a timer.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::Arc;
    /// use pystackquery_core::runtime::Runtime;
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// // Spawner and timer may come from different places; here both from the test runtime.
    /// let test = TestRuntime::new();
    /// let parts = test.runtime();
    /// let runtime = Runtime::new(Arc::clone(parts.spawner()), Arc::clone(parts.timer()));
    /// assert_eq!(runtime.now(), parts.now());
    /// # }
    /// ```
    pub fn new(spawner: Arc<dyn Spawner>, timer: Arc<dyn Timer>) -> Self {
        Self { spawner, timer }
    }

    /// Builds a runtime from one value that is both spawner and timer (what adapters are).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use pystackquery_core::runtime::{BoxFuture, Runtime, Spawner, Timer};
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key};
    ///
    /// /// A whole adapter in one type: a thread per task, a thread per sleep (a demo, not a design).
    /// #[derive(Debug)]
    /// struct Threads;
    ///
    /// impl Spawner for Threads {
    ///     fn spawn(&self, future: BoxFuture) {
    ///         std::thread::spawn(move || futures::executor::block_on(future));
    ///     }
    /// }
    ///
    /// impl Timer for Threads {
    ///     fn sleep_until(&self, deadline: Instant) -> BoxFuture {
    ///         let (done, wait) = futures::channel::oneshot::channel::<()>();
    ///         std::thread::spawn(move || {
    ///             std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    ///             let _ = done.send(());
    ///         });
    ///         Box::pin(async move { let _ = wait.await; })
    ///     }
    ///     fn now(&self) -> Instant {
    ///         Instant::now()
    ///     }
    /// }
    ///
    /// let client = QueryClient::with_runtime(Runtime::from_adapter(Threads), QueryClientConfig::default());
    /// let answer = QueryOptions::new(key!("answer"), || async { Ok::<_, String>(42) });
    /// assert_eq!(futures::executor::block_on(client.fetch_query(&answer)).unwrap(), 42);
    /// ```
    pub fn from_adapter<A: Spawner + Timer>(adapter: A) -> Self {
        let shared = Arc::new(adapter);
        Self { spawner: shared.clone(), timer: shared }
    }

    /// The spawner.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let runtime = test.runtime();
    /// runtime.spawner().spawn(Box::pin(async {})); // the trait object itself
    /// test.run_until_idle();
    /// assert_eq!(test.live_tasks(), 0);
    /// # }
    /// ```
    pub fn spawner(&self) -> &Arc<dyn Spawner> {
        &self.spawner
    }

    /// The timer.
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
    /// let start = runtime.timer().now();
    /// test.advance(Duration::from_secs(3));
    /// assert_eq!(runtime.timer().now() - start, Duration::from_secs(3));
    /// # }
    /// ```
    pub fn timer(&self) -> &Arc<dyn Timer> {
        &self.timer
    }

    /// Starts `future` in the background, fire and forget.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let done = Arc::new(AtomicBool::new(false));
    /// let flag = done.clone();
    /// test.runtime().spawn(async move { flag.store(true, Ordering::SeqCst) });
    /// test.run_until_idle();
    /// assert!(done.load(Ordering::SeqCst));
    /// # }
    /// ```
    pub fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawner.spawn(Box::pin(future));
    }

    /// Starts `future` in the background and returns a handle to its output. Dropping the
    /// handle cancels the future (this comes from `futures`, not from the runtime).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let handle = test.runtime().spawn_with_handle(async { 6 * 7 });
    /// assert_eq!(test.block_on(handle), 42);
    /// # }
    /// ```
    pub fn spawn_with_handle<F>(&self, future: F) -> RemoteHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (task, handle) = future.remote_handle();
        self.spawner.spawn(Box::pin(task));
        handle
    }

    /// Sleeps for `duration` on this runtime's clock. Any duration is accepted: one that
    /// reaches past the latest representable `Instant` (such as [`Duration::MAX`]) gives a
    /// sleep that never completes.
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
    /// test.block_on(runtime.sleep(Duration::from_secs(10))); // virtual time: returns at once
    /// assert_eq!(test.elapsed(), Duration::from_secs(10));
    /// # }
    /// ```
    pub fn sleep(&self, duration: Duration) -> BoxFuture {
        self.timer.sleep(duration)
    }

    /// Sleeps until `deadline` on this runtime's clock. Any instant is accepted: one the
    /// runtime's timer cannot represent gives a sleep that never completes.
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
    /// let deadline = runtime.now() + Duration::from_secs(2);
    /// test.block_on(runtime.sleep_until(deadline));
    /// assert_eq!(runtime.now(), deadline);
    /// # }
    /// ```
    pub fn sleep_until(&self, deadline: Instant) -> BoxFuture {
        self.timer.sleep_until(deadline)
    }

    /// The current monotonic instant.
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
    /// let before = runtime.now();
    /// test.advance(Duration::from_millis(1500));
    /// assert_eq!(runtime.now().duration_since(before), Duration::from_millis(1500));
    /// # }
    /// ```
    pub fn now(&self) -> Instant {
        self.timer.now()
    }

    /// The current wall-clock time.
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
    /// let before = runtime.system_now();
    /// test.advance(Duration::from_secs(60)); // the test clock moves the wall clock too
    /// assert_eq!(runtime.system_now().duration_since(before).unwrap(), Duration::from_secs(60));
    /// # }
    /// ```
    pub fn system_now(&self) -> SystemTime {
        self.timer.system_now()
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}
