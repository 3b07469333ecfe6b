//! The runtime seam: how the engine spawns work and reads the clock.
//!
//! The engine never names an executor. It talks to two small object-safe traits, [`Spawner`] and
//! [`Timer`], held together in a cheap-to-clone [`Runtime`]. Adapter crates
//! (`pystackquery-tokio`, `pystackquery-smol`, `pystackquery-async-std`) implement them in about
//! a hundred lines each; tests use [`crate::testing::TestRuntime`] (feature `test-util`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::RemoteHandle;

/// A boxed, sendable future with no borrowed data: the unit of work the engine hands to a
/// [`Spawner`], and the shape of every [`Timer`] sleep.
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
    pub fn new(spawner: Arc<dyn Spawner>, timer: Arc<dyn Timer>) -> Self {
        Self { spawner, timer }
    }

    /// Builds a runtime from one value that is both spawner and timer (what adapters are).
    pub fn from_adapter<A: Spawner + Timer>(adapter: A) -> Self {
        let shared = Arc::new(adapter);
        Self { spawner: shared.clone(), timer: shared }
    }

    /// The spawner.
    pub fn spawner(&self) -> &Arc<dyn Spawner> {
        &self.spawner
    }

    /// The timer.
    pub fn timer(&self) -> &Arc<dyn Timer> {
        &self.timer
    }

    /// Starts `future` in the background, fire and forget.
    pub fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawner.spawn(Box::pin(future));
    }

    /// Starts `future` in the background and returns a handle to its output. Dropping the
    /// handle cancels the future (this comes from `futures`, not from the runtime).
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
    pub fn sleep(&self, duration: Duration) -> BoxFuture {
        self.timer.sleep(duration)
    }

    /// Sleeps until `deadline` on this runtime's clock. Any instant is accepted: one the
    /// runtime's timer cannot represent gives a sleep that never completes.
    pub fn sleep_until(&self, deadline: Instant) -> BoxFuture {
        self.timer.sleep_until(deadline)
    }

    /// The current monotonic instant.
    pub fn now(&self) -> Instant {
        self.timer.now()
    }

    /// The current wall-clock time.
    pub fn system_now(&self) -> SystemTime {
        self.timer.system_now()
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}
