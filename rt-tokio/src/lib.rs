//! Tokio adapter for pystackquery: [`TokioRuntime`] implements the engine's
//! [`Spawner`] and [`Timer`] on a tokio runtime handle.
//!
//! ```
//! use pystackquery_core::{QueryClient, QueryClientConfig};
//! use pystackquery_tokio::TokioRuntime;
//!
//! let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
//! let runtime = TokioRuntime::from_handle(rt.handle().clone()).unwrap().into_runtime();
//! let client = QueryClient::with_runtime(runtime, QueryClientConfig::default());
//! # drop(client);
//! ```
//!
//! The handle's runtime needs its time driver (`enable_time` or `enable_all`). Sleeps are
//! created inside the handle's context, so they work when polled from any executor.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use pystackquery_core::Runtime;
use pystackquery_core::runtime::{BoxFuture, Spawner, Timer};
use tokio::runtime::Handle;

/// Spawns on, and sleeps with, one tokio runtime.
///
/// # Examples
///
/// ```
/// use pystackquery_core::{QueryClient, QueryClientConfig};
/// use pystackquery_tokio::TokioRuntime;
///
/// #[tokio::main]
/// async fn serve() {
///     // In an application: the runtime `#[tokio::main]` started.
///     let runtime = TokioRuntime::current().expect("inside tokio").into_runtime();
///     let client = QueryClient::with_runtime(runtime, QueryClientConfig::default());
///     assert!(client.is_empty());
/// }
/// serve();
/// ```
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    handle: Handle,
}

/// Why a [`TokioRuntime`] could not be built.
///
/// # Examples
///
/// ```
/// use pystackquery_tokio::{TokioRuntime, TokioRuntimeError};
///
/// match TokioRuntime::current() {
///     Ok(_) => unreachable!("no tokio runtime on this thread"),
///     Err(TokioRuntimeError::NoCurrentRuntime) => {} // e.g. fall back to another runtime
///     Err(error) => panic!("{error}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokioRuntimeError {
    /// Not called from within a tokio runtime.
    NoCurrentRuntime,
    /// The runtime was built without its time driver (`enable_time`).
    TimeDisabled,
}

impl std::fmt::Display for TokioRuntimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NoCurrentRuntime => "no tokio runtime is running on this thread",
            Self::TimeDisabled => "the tokio runtime has no time driver (build it with enable_all)",
        })
    }
}

impl std::error::Error for TokioRuntimeError {}

impl TokioRuntime {
    /// The runtime the calling thread is running in.
    ///
    /// # Errors
    ///
    /// [`TokioRuntimeError::NoCurrentRuntime`] outside a tokio runtime;
    /// [`TokioRuntimeError::TimeDisabled`] if its time driver is off.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions};
    /// use pystackquery_tokio::{TokioRuntime, TokioRuntimeError};
    ///
    /// assert_eq!(TokioRuntime::current().unwrap_err(), TokioRuntimeError::NoCurrentRuntime);
    ///
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn inside_tokio() {
    ///     let runtime = TokioRuntime::current().unwrap().into_runtime();
    ///     let client = QueryClient::with_runtime(runtime, QueryClientConfig::default());
    ///     let options = QueryOptions::new(("answer",), || async { Ok::<_, std::io::Error>(42) });
    ///     assert_eq!(client.fetch_query(&options).await.unwrap(), 42);
    /// }
    /// inside_tokio();
    /// ```
    pub fn current() -> Result<Self, TokioRuntimeError> {
        let handle = Handle::try_current().map_err(|_| TokioRuntimeError::NoCurrentRuntime)?;
        Self::from_handle(handle)
    }

    /// The runtime behind `handle`.
    ///
    /// Tokio offers no way to ask whether a runtime has its time driver, and panics when a
    /// sleep is created without one. This constructor therefore creates one sleep under
    /// [`std::panic::catch_unwind`], so that later sleeps cannot panic. It changes no
    /// process-wide state (the panic hook in particular is left alone), so it is safe to call
    /// from many threads at once. When the driver is missing, the caught panic still reaches
    /// the process's panic hook (the default hook prints one line), and under `panic = "abort"`
    /// it aborts the process.
    ///
    /// # Errors
    ///
    /// [`TokioRuntimeError::TimeDisabled`] if the runtime has no time driver.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_tokio::{TokioRuntime, TokioRuntimeError};
    ///
    /// // A runtime built without its time driver is refused instead of panicking later.
    /// let no_timer = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// assert_eq!(TokioRuntime::from_handle(no_timer.handle().clone()).unwrap_err(), TokioRuntimeError::TimeDisabled);
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// assert!(TokioRuntime::from_handle(rt.handle().clone()).is_ok());
    /// ```
    pub fn from_handle(handle: Handle) -> Result<Self, TokioRuntimeError> {
        let probe = {
            let _context = handle.enter();
            std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO)))
        };
        probe.map_err(|_| TokioRuntimeError::TimeDisabled)?;
        Ok(Self { handle })
    }

    /// The handle.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_tokio::TokioRuntime;
    ///
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let adapter = TokioRuntime::from_handle(rt.handle().clone()).unwrap();
    /// assert_eq!(adapter.handle().id(), rt.handle().id());
    /// ```
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Wraps this adapter in the engine's [`Runtime`].
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{QueryClient, QueryClientConfig};
    /// use pystackquery_tokio::TokioRuntime;
    ///
    /// let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    /// let runtime = TokioRuntime::from_handle(rt.handle().clone()).unwrap().into_runtime();
    /// let client = QueryClient::with_runtime(runtime, QueryClientConfig::default());
    /// assert!(client.is_empty());
    /// ```
    pub fn into_runtime(self) -> Runtime {
        Runtime::from_adapter(self)
    }
}

impl Spawner for TokioRuntime {
    fn spawn(&self, future: BoxFuture) {
        // Dropping a tokio JoinHandle detaches the task, which is what the engine wants.
        drop(self.handle.spawn(future));
    }
}

impl Timer for TokioRuntime {
    fn sleep_until(&self, deadline: Instant) -> BoxFuture {
        // Tokio rounds a deadline up to the next millisecond with an unchecked addition when
        // the sleep is first polled, which panics within a millisecond of the latest
        // representable instant. Such a deadline is never reached: sleep forever instead.
        if deadline.checked_add(Duration::from_millis(1)).is_none() {
            return Box::pin(futures::future::pending());
        }
        let _context = self.handle.enter();
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)))
    }

    fn now(&self) -> Instant {
        // Follows tokio's clock, so a runtime with paused time (tokio's test-util) works.
        tokio::time::Instant::now().into_std()
    }
}
