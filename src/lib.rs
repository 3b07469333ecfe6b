//! Async data fetching and caching for Rust, in the style of TanStack Query: query keys,
//! caching, request deduplication, retries with backoff, stale-while-revalidate, invalidation by
//! key prefix, and a bounded in-memory cache, on the runtime you pick by cargo feature.
//!
//! This crate is the facade: it re-exports the engine (`pystackquery-core`), picks a runtime
//! by feature, and builds clients on it. Library authors who must not pick a runtime depend on
//! `pystackquery-core` and take a [`Runtime`] from their caller.
//!
//! # Example
//!
//! ```
//! use pystackquery::prelude::*;
//!
//! # #[cfg(feature = "tokio")]
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let client = QueryClient::new()?;
//!     let user = QueryOptions::new(key!("user", 42), || async {
//!         Ok::<_, std::io::Error>("Ada Lovelace".to_string())
//!     });
//!     let name = client.fetch_query(&user).await?;
//!     assert_eq!(name, "Ada Lovelace");
//!     Ok(())
//! }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tokio` | yes | [`TokioRuntime`]; `QueryClient::new()` uses the current tokio runtime |
//! | `smol` | no | [`SmolRuntime`] on smol's global executor |
//! | `async-std` | no | [`AsyncStdRuntime`] (legacy: async-std is discontinued upstream) |
//! | `sqlite` | yes | `SqliteStorage`: embedded L2 in a SQLite file (calls run inline, bounded by a short busy timeout) |
//! | `redis` | no | `RedisStorage`: L2 shared by many processes, and `RedisBus`: coherence between them over pub/sub (needs a runtime feature) |
//! | `test-util` | no | `testing`: a manual clock and a deterministic executor for your tests (`TestRuntime`) |
//!
//! Any combination compiles. With several runtimes enabled, `QueryClient::new()` picks tokio if
//! a tokio runtime is running on the calling thread, else smol, else async-std. Without one it
//! returns [`NoRuntime`]; [`QueryClient::with_runtime`] always works.
//!
//! For example, a smol program with SQLite persistence, and the test runtime in its tests:
//!
//! ```toml
//! [dependencies]
//! pystackquery = { version = "0.1", default-features = false, features = ["smol", "sqlite"] }
//!
//! [dev-dependencies]
//! pystackquery = { version = "0.1", default-features = false, features = ["smol", "sqlite", "test-util"] }
//! ```
//!
//! The engine itself ([`QueryClient`], [`QueryOptions`], [`QueryObserver`], [`Mutation`],
//! [`InfiniteQueryOptions`], [`storage::MemoryStorage`], [`coherence::MemoryBus`], ...) is the
//! same under every combination; features only add runtimes and storage backends.
//!
//! # When not to use it
//!
//! If you only need a bounded map, a cache crate (moka, quick_cache) is smaller. If you write a
//! library, depend on `pystackquery-core` so your users keep their choice of runtime.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

pub use pystackquery_core::*;

#[cfg(all(
    feature = "redis",
    not(any(feature = "tokio", feature = "smol", feature = "async-std"))
))]
compile_error!("the `redis` feature needs a runtime feature: `tokio`, `smol` or `async-std`");

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_bus;
#[cfg(feature = "redis")]
mod redis_lock;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "redis")]
pub use crate::redis::RedisStorage;
#[cfg(feature = "redis")]
pub use crate::redis_bus::{RedisBus, RedisBusStats};
#[cfg(feature = "sqlite")]
pub use crate::sqlite::SqliteStorage;

#[cfg(feature = "async-std")]
pub use pystackquery_async_std::AsyncStdRuntime;
#[cfg(feature = "smol")]
pub use pystackquery_smol::SmolRuntime;
#[cfg(feature = "tokio")]
pub use pystackquery_tokio::TokioRuntime;

/// The names most programs need: `use pystackquery::prelude::*;`.
pub mod prelude {
    pub use crate::{
        FetchStatus, InfiniteQueryOptions, Mutation, MutationContext, MutationOptions, QueryClient,
        QueryClientConfig, QueryClientExt, QueryError, QueryFilter, QueryKey, QueryOptions,
        QueryState, QueryStatus, RefetchType, Runtime, key,
    };
}

/// No runtime was available for [`QueryClientExt::new`].
///
/// # Examples
///
/// ```
/// use pystackquery::prelude::*;
///
/// // Outside any runtime (here: no smol or async-std feature, and not inside tokio), the error
/// // says what to do instead.
/// match QueryClient::new() {
///     Ok(_client) => {} // a runtime was available (e.g. the `smol` feature is on)
///     Err(error) => assert!(error.to_string().starts_with("no async runtime available")),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no async runtime available: {reason}")]
pub struct NoRuntime {
    reason: &'static str,
}

/// The runtime `QueryClient::new()` would use: tokio if a tokio runtime is running on this
/// thread (feature `tokio`), else smol's global executor (feature `smol`), else async-std's
/// (feature `async-std`).
///
/// # Errors
///
/// [`NoRuntime`] when no enabled runtime is available, e.g. only `tokio` is enabled and the
/// call is made outside a tokio runtime.
///
/// # Examples
///
/// ```
/// use pystackquery::{QueryClient, QueryClientConfig, default_runtime};
///
/// # #[cfg(feature = "tokio")]
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     // Inside a tokio runtime with the `tokio` feature: that runtime.
///     let runtime = default_runtime().unwrap();
///     let client = QueryClient::with_runtime(runtime, QueryClientConfig::default());
///     assert!(client.is_empty());
/// }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
pub fn default_runtime() -> Result<Runtime, NoRuntime> {
    #[cfg(feature = "tokio")]
    {
        match TokioRuntime::current() {
            Ok(tokio) => return Ok(tokio.into_runtime()),
            Err(pystackquery_tokio::TokioRuntimeError::TimeDisabled) => {
                return Err(NoRuntime {
                    reason: "the current tokio runtime has no time driver; build it with enable_all()",
                });
            }
            Err(_) => {}
        }
    }
    #[cfg(feature = "smol")]
    {
        #[allow(clippy::needless_return)]
        return Ok(SmolRuntime::global().into_runtime());
    }
    #[cfg(all(feature = "async-std", not(feature = "smol")))]
    {
        #[allow(clippy::needless_return)]
        return Ok(AsyncStdRuntime.into_runtime());
    }
    #[cfg(not(any(feature = "smol", feature = "async-std")))]
    {
        Err(NoRuntime {
            reason: if cfg!(feature = "tokio") {
                "not inside a tokio runtime; call from within one, or use QueryClient::with_runtime"
            } else {
                "no runtime feature is enabled (tokio, smol, async-std); use QueryClient::with_runtime"
            },
        })
    }
}

/// Builds a [`QueryClient`] on the feature-selected runtime (see [`default_runtime`]).
///
/// It is a trait so that `QueryClient::new()` reads naturally while the client type stays the
/// engine's own (a library taking a `pystackquery_core::QueryClient` accepts this one).
///
/// # Examples
///
/// ```
/// use pystackquery::prelude::*; // brings `QueryClientExt` into scope
///
/// # #[cfg(feature = "tokio")]
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let client = QueryClient::new()?; // the engine's `QueryClient`, on the current tokio runtime
///     assert!(client.is_empty());
///     Ok(())
/// }
/// # #[cfg(not(feature = "tokio"))]
/// # fn main() {}
/// ```
pub trait QueryClientExt: Sized {
    /// A client with default configuration on the feature-selected runtime.
    ///
    /// # Errors
    ///
    /// [`NoRuntime`] when no runtime is available.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery::prelude::*;
    ///
    /// # #[cfg(feature = "tokio")]
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let client = QueryClient::new()?;
    ///     let user = QueryOptions::new(key!("user", 1), || async { Ok::<_, std::io::Error>("Ada") });
    ///     assert_eq!(client.fetch_query(&user).await?, "Ada");
    ///     Ok(())
    /// }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {}
    /// ```
    fn new() -> Result<Self, NoRuntime>;

    /// A client with `config` on the feature-selected runtime.
    ///
    /// # Errors
    ///
    /// [`NoRuntime`] when no runtime is available.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use pystackquery::prelude::*;
    ///
    /// # #[cfg(feature = "tokio")]
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let config = QueryClientConfig::default().stale_time(Duration::from_secs(30)).retry(1);
    ///     let client = QueryClient::with_config(config)?;
    ///     assert_eq!(client.config().retry_value(), 1);
    ///     Ok(())
    /// }
    /// # #[cfg(not(feature = "tokio"))]
    /// # fn main() {}
    /// ```
    fn with_config(config: QueryClientConfig) -> Result<Self, NoRuntime>;
}

impl QueryClientExt for QueryClient {
    fn new() -> Result<Self, NoRuntime> {
        Self::with_config(QueryClientConfig::default())
    }

    fn with_config(config: QueryClientConfig) -> Result<Self, NoRuntime> {
        Ok(QueryClient::with_runtime(default_runtime()?, config))
    }
}

/// The README's examples, compiled and run as doc tests.
#[cfg(all(doctest, feature = "tokio", feature = "sqlite"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The testing guide (`docs/testing.md`), compiled and run as doc tests.
#[cfg(all(doctest, feature = "test-util"))]
#[doc = include_str!("../docs/testing.md")]
pub struct TestingGuide;

/// The getting-started guide (`docs/getting-started.md`), compiled and run as doc tests.
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../docs/getting-started.md")]
pub struct GettingStartedGuide;

/// The query options guide (`docs/query-options.md`), compiled and run as doc tests.
#[cfg(all(doctest, feature = "test-util"))]
#[doc = include_str!("../docs/query-options.md")]
pub struct QueryOptionsGuide;

/// The mutations guide (`docs/mutations.md`), compiled and run as doc tests.
#[cfg(all(doctest, feature = "test-util"))]
#[doc = include_str!("../docs/mutations.md")]
pub struct MutationsGuide;

/// The cache management guide (`docs/cache-management.md`), compiled and run as doc tests.
#[cfg(all(doctest, feature = "test-util"))]
#[doc = include_str!("../docs/cache-management.md")]
pub struct CacheManagementGuide;

/// The observers guide (`docs/observers.md`), compiled and run as doc tests.
#[cfg(all(doctest, feature = "test-util", feature = "tokio"))]
#[doc = include_str!("../docs/observers.md")]
pub struct ObserversGuide;

/// The storage backends guide (`docs/storage-backends.md`), compiled and run as doc tests.
#[cfg(all(
    doctest,
    feature = "test-util",
    feature = "tokio",
    feature = "sqlite",
    feature = "redis"
))]
#[doc = include_str!("../docs/storage-backends.md")]
pub struct StorageBackendsGuide;

/// The advanced patterns guide (`docs/advanced-patterns.md`), compiled and run as doc tests.
#[cfg(all(doctest, feature = "test-util", feature = "tokio"))]
#[doc = include_str!("../docs/advanced-patterns.md")]
pub struct AdvancedPatternsGuide;

/// The framework integrations guide (`docs/framework-integrations.md`), compiled and run as
/// doc tests.
#[cfg(all(
    doctest,
    feature = "test-util",
    feature = "tokio",
    feature = "smol",
    feature = "sqlite"
))]
#[doc = include_str!("../docs/framework-integrations.md")]
pub struct FrameworkIntegrationsGuide;

/// The runtimes guide (`docs/runtimes.md`), compiled and run as doc tests.
#[cfg(all(doctest, feature = "test-util", feature = "tokio", feature = "smol"))]
#[doc = include_str!("../docs/runtimes.md")]
pub struct RuntimesGuide;

/// The persistence reference (`docs/persistence.md`), compiled and run as doc tests.
#[cfg(all(doctest, feature = "test-util", feature = "tokio", feature = "sqlite"))]
#[doc = include_str!("../docs/persistence.md")]
pub struct PersistenceGuide;

/// The fleets guide (`docs/fleets.md`), compiled and run as doc tests (the Redis block starts
/// its own `redis-server`, or returns early when none is installed).
#[cfg(all(doctest, feature = "tokio", feature = "redis"))]
#[doc = include_str!("../docs/fleets.md")]
pub struct FleetsGuide;

/// The guide for users of the Python library (`docs/from-python.md`), compiled and run as doc
/// tests.
#[cfg(all(doctest, feature = "tokio", feature = "sqlite"))]
#[doc = include_str!("../docs/from-python.md")]
pub struct FromPythonGuide;
