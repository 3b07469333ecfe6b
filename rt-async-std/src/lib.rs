//! async-std adapter for pystackquery: [`AsyncStdRuntime`] implements the engine's [`Spawner`]
//! and [`Timer`] with async-std's global executor.
//!
//! **Legacy.** async-std is discontinued upstream (RUSTSEC-2025-0052); this adapter stays thin
//! and exists for applications that have not moved yet. New code should use smol, which
//! async-std is built on, or tokio.
//!
//! ```
//! use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions};
//! use pystackquery_async_std::AsyncStdRuntime;
//!
//! let client = QueryClient::with_runtime(AsyncStdRuntime.into_runtime(), QueryClientConfig::default());
//! let options = QueryOptions::new(("answer",), || async { Ok::<_, std::io::Error>(42) });
//! assert_eq!(async_std::task::block_on(client.fetch_query(&options)).unwrap(), 42);
//! ```
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

use std::time::Instant;

use pystackquery_core::Runtime;
use pystackquery_core::runtime::{BoxFuture, Spawner, Timer};

/// Spawns on async-std's global executor and sleeps with its timers.
///
/// # Examples
///
/// ```
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions};
/// use pystackquery_async_std::AsyncStdRuntime;
///
/// async_std::task::block_on(async {
///     let client = QueryClient::with_runtime(AsyncStdRuntime.into_runtime(), QueryClientConfig::default());
///     let options = QueryOptions::new(("greeting",), || async { Ok::<_, std::io::Error>("hello") });
///     assert_eq!(client.fetch_query(&options).await.unwrap(), "hello");
/// });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStdRuntime;

impl AsyncStdRuntime {
    /// Wraps this adapter in the engine's [`Runtime`].
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{QueryClient, QueryClientConfig};
    /// use pystackquery_async_std::AsyncStdRuntime;
    ///
    /// let client = QueryClient::with_runtime(AsyncStdRuntime.into_runtime(), QueryClientConfig::default());
    /// assert!(client.is_empty());
    /// ```
    pub fn into_runtime(self) -> Runtime {
        Runtime::from_adapter(self)
    }
}

impl Spawner for AsyncStdRuntime {
    fn spawn(&self, future: BoxFuture) {
        // Dropping an async-std JoinHandle detaches the task.
        drop(async_std::task::spawn(future));
    }
}

impl Timer for AsyncStdRuntime {
    fn sleep_until(&self, deadline: Instant) -> BoxFuture {
        // async-std's sleep adds `duration` to the clock with a checked addition and never
        // fires when that overflows, so any deadline is accepted.
        let duration = deadline.saturating_duration_since(Instant::now());
        Box::pin(async_std::task::sleep(duration))
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}
