//! smol adapter for pystackquery: [`SmolRuntime`] implements the engine's [`Spawner`] and
//! [`Timer`] with smol's executor and `async-io` timers.
//!
//! ```
//! use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions};
//! use pystackquery_smol::SmolRuntime;
//!
//! let client = QueryClient::with_runtime(SmolRuntime::global().into_runtime(), QueryClientConfig::default());
//! let options = QueryOptions::new(("answer",), || async { Ok::<_, std::io::Error>(42) });
//! assert_eq!(smol::block_on(client.fetch_query(&options)).unwrap(), 42);
//! ```
//!
//! By default tasks go to smol's global executor, whose threads start on first use; pass your
//! own `Arc<smol::Executor>` with [`SmolRuntime::with_executor`] if you drive one yourself.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use pystackquery_core::Runtime;
use pystackquery_core::runtime::{BoxFuture, Spawner, Timer};

/// Spawns on a smol executor and sleeps with `async-io` timers.
///
/// # Examples
///
/// ```
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions};
/// use pystackquery_smol::SmolRuntime;
///
/// smol::block_on(async {
///     let client = QueryClient::with_runtime(SmolRuntime::global().into_runtime(), QueryClientConfig::default());
///     let options = QueryOptions::new(("greeting",), || async { Ok::<_, std::io::Error>("hello") });
///     assert_eq!(client.fetch_query(&options).await.unwrap(), "hello");
/// });
/// ```
#[derive(Clone, Debug, Default)]
pub struct SmolRuntime {
    executor: Option<Arc<smol::Executor<'static>>>,
}

impl SmolRuntime {
    /// Spawns on smol's global executor.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions};
    /// use pystackquery_smol::SmolRuntime;
    ///
    /// let client = QueryClient::with_runtime(SmolRuntime::global().into_runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(("n",), || async { Ok::<_, std::io::Error>(1) });
    /// assert_eq!(smol::block_on(client.fetch_query(&options)).unwrap(), 1);
    /// ```
    pub fn global() -> Self {
        Self { executor: None }
    }

    /// Spawns on `executor`; you must drive it (e.g. `executor.run(...)` on some thread).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions};
    /// use pystackquery_smol::SmolRuntime;
    ///
    /// let executor = Arc::new(smol::Executor::new());
    /// let runtime = SmolRuntime::with_executor(executor.clone()).into_runtime();
    /// let client = QueryClient::with_runtime(runtime, QueryClientConfig::default());
    /// let options = QueryOptions::new(("n",), || async { Ok::<_, std::io::Error>(2) });
    /// // This thread drives the executor while it waits for the answer.
    /// let answer = smol::block_on(executor.run(client.fetch_query(&options)));
    /// assert_eq!(answer.unwrap(), 2);
    /// ```
    pub fn with_executor(executor: Arc<smol::Executor<'static>>) -> Self {
        Self { executor: Some(executor) }
    }

    /// Wraps this adapter in the engine's [`Runtime`].
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{QueryClient, QueryClientConfig};
    /// use pystackquery_smol::SmolRuntime;
    ///
    /// let client = QueryClient::with_runtime(SmolRuntime::default().into_runtime(), QueryClientConfig::default());
    /// assert!(client.is_empty());
    /// ```
    pub fn into_runtime(self) -> Runtime {
        Runtime::from_adapter(self)
    }
}

impl Spawner for SmolRuntime {
    fn spawn(&self, future: BoxFuture) {
        // smol cancels a task when its handle drops; detach so the task runs to completion.
        match &self.executor {
            Some(executor) => executor.spawn(future).detach(),
            None => smol::spawn(future).detach(),
        }
    }
}

impl Timer for SmolRuntime {
    fn sleep_until(&self, deadline: Instant) -> BoxFuture {
        // async-io accepts any instant: its reactor only compares deadlines with the clock, so
        // one too far away to be reached never fires, as the `Timer` contract asks.
        Box::pin(smol::Timer::at(deadline).map(drop))
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}
