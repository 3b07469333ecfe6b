//! Shortcuts for common patterns: parallel and dependent queries, and [`CachedQuery`], the
//! Rust form of the seed's `@query` decorator.

use std::fmt;

use crate::client::QueryClient;
use crate::error::{QueryError, TypeMismatch};
use crate::options::QueryOptions;

/// Fetches queries of one type concurrently; results come back in input order.
///
/// For queries of different types, join their futures directly:
/// `futures::join!(client.fetch_query(&user), client.fetch_query(&posts))`.
pub async fn parallel_queries<T, E>(
    client: &QueryClient,
    options: &[QueryOptions<T, E>],
) -> Vec<Result<T, QueryError<E>>>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    futures::future::join_all(options.iter().map(|o| client.fetch_query(o))).await
}

/// Fetches `parent`, then the query `then` builds from its data.
///
/// # Errors
///
/// The parent's error (the child is not fetched), or the child's.
pub async fn dependent_query<P, T, E>(
    client: &QueryClient,
    parent: &QueryOptions<P, E>,
    then: impl FnOnce(P) -> QueryOptions<T, E>,
) -> Result<T, QueryError<E>>
where
    P: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    let data = client.fetch_query(parent).await?;
    client.fetch_query(&then(data)).await
}

/// A query bound to a client: call it, invalidate it, read its cached data.
///
/// The seed's `@query(client, key)` decorator, as a value.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{CachedQuery, QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let users = CachedQuery::new(&client, QueryOptions::new(key!("users"), || async {
///     Ok::<_, String>(vec!["ada", "grace"])
/// }));
/// assert_eq!(test.block_on(users.call()).unwrap().len(), 2);
/// assert_eq!(users.data().unwrap().unwrap().len(), 2);
/// # }
/// ```
pub struct CachedQuery<T, E> {
    client: QueryClient,
    options: QueryOptions<T, E>,
}

impl<T, E> CachedQuery<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: fmt::Display + Send + Sync + 'static,
{
    /// Binds `options` to `client`.
    pub fn new(client: &QueryClient, options: QueryOptions<T, E>) -> Self {
        Self { client: client.clone(), options }
    }

    /// Fetches through the cache (see [`QueryClient::fetch_query`]).
    ///
    /// # Errors
    ///
    /// As [`QueryClient::fetch_query`].
    pub async fn call(&self) -> Result<T, QueryError<E>> {
        self.client.fetch_query(&self.options).await
    }

    /// Invalidates this query's key (and keys under it), refetching if observed.
    pub async fn invalidate(&self) {
        self.client.invalidate_queries(self.options.key().clone(), true).await;
    }

    /// The cached data, without fetching.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] if the key holds another type.
    pub fn data(&self) -> Result<Option<T>, TypeMismatch> {
        self.client.get_query_data(self.options.key().clone())
    }

    /// The options.
    pub fn options(&self) -> &QueryOptions<T, E> {
        &self.options
    }
}

impl<T, E> fmt::Debug for CachedQuery<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedQuery").field("key", &self.options.inner.key).finish()
    }
}
