//! The fetch behaviour hook: options that fetch by something other than one call of the query
//! function (the infinite layer's page loop), and the tag that tells fetches of one key apart.

use std::sync::Arc;

use crate::cancel::QueryContext;
use crate::runtime::BoxFuture;

/// One attempt of a fetch: called once per attempt (the first and each retry), always with the
/// fetch's context. State it keeps lives as long as the fetch, across its retries.
pub(crate) type Attempt<T, E> = Box<dyn FnMut(QueryContext) -> BoxFuture<Result<T, E>> + Send>;

/// Replaces the query function when set: called once when a fetch begins, with a copy of the
/// data the query held at that moment, and returns the fetch's [`Attempt`] function.
pub(crate) type Behavior<T, E> = Arc<dyn Fn(Option<T>) -> Attempt<T, E> + Send + Sync>;

/// What a fetch is for, which decides whether a new fetch of the key joins the one in flight.
///
/// - A `Refetch` joins any fetch in flight (the engine's one-fetch-per-key rule).
/// - A `NextPage` or `PreviousPage` joins a fetch with the same tag, and any fetch while the
///   query has no data; otherwise it supersedes the fetch in flight (TanStack's
///   `cancelRefetch`): the older one can no longer store, and its waiters get the newer
///   one's outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum FetchTag {
    /// A plain fetch: first load, refetch, invalidation, polling.
    #[default]
    Refetch,
    /// One more page after the last one.
    NextPage,
    /// One more page before the first one.
    PreviousPage,
}
