//! The runtime-free engine of pystackquery: async data fetching and caching in the style of
//! TanStack Query, on any executor.
//!
//! Give a key and an async function; the engine caches the result, deduplicates concurrent
//! requests, retries with backoff, serves stale data while it revalidates, and lets you
//! invalidate by key prefix. It depends on no runtime: spawning and time come from a
//! [`Runtime`] value (a [`runtime::Spawner`] and a [`runtime::Timer`]), supplied by an adapter
//! crate (`pystackquery-tokio`, `pystackquery-smol`, `pystackquery-async-std`) or by
//! [`testing::TestRuntime`] in tests.
//!
//! # Main types
//!
//! - [`QueryClient`]: owns the cache; `fetch_query`, `invalidate_queries`, `set_query_data`, ...
//! - [`QueryOptions`]: a key, a query function and per-query options.
//! - [`QueryKey`] and [`key!`]: keys of string, integer and boolean parts.
//! - [`QueryState`]: what a query holds (status, data, error, timestamps).
//! - [`QueryError`]: why there is no data; the query function's error stays typed.
//! - [`InfiniteQueryOptions`] and [`InfiniteQueryObserver`]: paged ("infinite") queries, a
//!   page at a time forward or backward (see [`infinite`]).
//! - [`CacheStats`]: hits, misses, fetches, retries, evictions, ... from
//!   [`QueryClient::cache_stats`].
//! - [`coherence::CoherenceBus`]: cross-process coherence of persisted keys (opt-in), with
//!   [`coherence::MemoryBus`] between clients of one process.
//! - [`storage::StorageBackend`]: the L2 seam (persistence behind memory), with
//!   [`storage::MemoryStorage`]; queries opt in with [`QueryOptions::persist`].
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "test-util")] {
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key};
//! use pystackquery_core::testing::TestRuntime;
//!
//! let test = TestRuntime::new();
//! let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
//! let calls = Arc::new(AtomicUsize::new(0));
//! let counter = calls.clone();
//! let options = QueryOptions::new(key!("user", 1), move || {
//!     counter.fetch_add(1, Ordering::SeqCst);
//!     async { Ok::<_, std::io::Error>("Ada".to_string()) }
//! });
//!
//! test.block_on(async {
//!     // Two concurrent callers share one call of the function.
//!     let (a, b) = futures::join!(client.fetch_query(&options), client.fetch_query(&options));
//!     assert_eq!(a.unwrap(), "Ada");
//!     assert_eq!(b.unwrap(), "Ada");
//! });
//! assert_eq!(calls.load(Ordering::SeqCst), 1);
//! # }
//! ```
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `test-util` | [`testing`]: a manual clock and a deterministic executor |
//!
//! # When not to use it
//!
//! For a plain bounded map with no fetching, use a cache crate (moka, quick_cache). For an
//! application that has picked its runtime, depend on the `pystackquery` facade instead, which
//! chooses the runtime by cargo feature and ships storage backends.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

// Layers, bottom to top (a module imports only modules below it; see ARCHITECTURE.md):
// runtime, key, key_serde, error, state, sync, meta, stats -> cancel, listeners, events, retryer,
// coherence, storage, seeds, gc, inspect, filter, dehydrate, mutations -> config, options,
// defaults -> cache -> ctx, handle -> sweeper, receiver -> query -> observer, mutation -> client
// -> convenience, infinite.
pub mod runtime;
mod stats;
mod sync;

mod error;
mod key;
mod key_serde;
mod meta;
mod mutations;
mod state;

mod cancel;
pub mod coherence;
mod dehydrate;
mod events;
mod filter;
mod gc;
mod inspect;
mod listeners;
mod retryer;
mod seeds;
pub mod storage;

mod config;
mod defaults;
mod options;

mod cache;
mod ctx;
mod handle;
mod receiver;
mod sweeper;

mod query;

mod mutation;
mod observer;

mod client;
mod convenience;
pub mod infinite;

#[cfg(feature = "test-util")]
pub mod testing;

pub use cancel::{CancelSignal, QueryContext};
pub use client::QueryClient;
pub use config::QueryClientConfig;
pub use convenience::{CachedQuery, dependent_query, parallel_queries};
pub use defaults::{MutationDefaults, QueryDefaults};
pub use dehydrate::{DehydrateOptions, DehydratedQuery, DehydratedState, HydrateReport};
pub use error::{QueryError, TypeMismatch};
pub use events::{CacheEvent, EventSubscription};
pub use filter::{QueryFilter, RefetchType};
pub use infinite::{
    InfiniteData, InfiniteQueryObserver, InfiniteQueryOptions, PageContext, PageDirection,
};
pub use inspect::QueryInfo;
pub use key::{KeyPart, QueryKey};
pub use listeners::Subscription;
pub use meta::Meta;
pub use mutation::{Mutation, MutationContext, MutationOptions, MutationState, MutationStatus};
pub use mutations::info::{MutationFilter, MutationInfo};
pub use observer::{QueryObserver, QueryStream};
pub use options::QueryOptions;
pub use retryer::{MAX_DEFAULT_RETRY_DELAY, RetryDelayFn, RetryIfFn, default_retry_delay};
pub use runtime::Runtime;
pub use state::{FetchStatus, QueryState, QueryStatus};
pub use stats::CacheStats;
