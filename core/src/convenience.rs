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
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, parallel_queries, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let users: Vec<_> = (1..=3)
///     .map(|id| QueryOptions::new(key!("user", id), move || async move { Ok::<_, String>(id * 10) }))
///     .collect();
/// let results = test.block_on(parallel_queries(&client, &users));
/// assert_eq!(results.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [10, 20, 30]);
/// # }
/// ```
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
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, dependent_query, key, testing::TestRuntime};
///
/// let test = TestRuntime::new();
/// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
/// let me = QueryOptions::new(key!("me"), || async { Ok::<_, String>(7u32) }); // the user's id
/// let projects = test.block_on(dependent_query(&client, &me, |id| {
///     QueryOptions::new(key!("projects", id), move || async move { Ok(vec![format!("project of {id}")]) })
/// }));
/// assert_eq!(projects.unwrap(), ["project of 7"]);
/// assert!(client.find(key!("projects", 7)).is_some()); // both are cached
/// # }
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{CachedQuery, QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// let config = CachedQuery::new(&client, QueryOptions::new(key!("config"), || async { Ok::<_, String>(1u32) }));
    /// assert_eq!(config.options().key(), &key!("config"));
    /// assert_eq!(config.data().unwrap(), None); // nothing fetched yet
    /// # }
    /// ```
    pub fn new(client: &QueryClient, options: QueryOptions<T, E>) -> Self {
        Self { client: client.clone(), options }
    }

    /// Fetches through the cache (see [`QueryClient::fetch_query`]).
    ///
    /// # Errors
    ///
    /// As [`QueryClient::fetch_query`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{CachedQuery, QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let time = CachedQuery::new(&client, QueryOptions::new(key!("time"), || async { Ok::<_, String>("12:00") }));
    /// assert_eq!(test.block_on(time.call()).unwrap(), "12:00");
    /// # }
    /// ```
    pub async fn call(&self) -> Result<T, QueryError<E>> {
        self.client.fetch_query(&self.options).await
    }

    /// Invalidates this query's key (and keys under it), refetching if observed.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{CachedQuery, QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let todos = CachedQuery::new(&client, QueryOptions::new(key!("todos"), || async { Ok::<_, String>(vec!["a"]) }));
    /// test.block_on(todos.call()).unwrap();
    /// test.block_on(todos.invalidate());
    /// assert!(client.find(key!("todos")).unwrap().is_invalidated);
    /// # }
    /// ```
    pub async fn invalidate(&self) {
        self.client.invalidate_queries(self.options.key().clone(), true).await;
    }

    /// The cached data, without fetching.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] if the key holds another type.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{CachedQuery, QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let n = CachedQuery::new(&client, QueryOptions::new(key!("n"), || async { Ok::<_, String>(3u32) }));
    /// assert_eq!(n.data().unwrap(), None);
    /// test.block_on(n.call()).unwrap();
    /// assert_eq!(n.data().unwrap(), Some(3));
    /// # }
    /// ```
    pub fn data(&self) -> Result<Option<T>, TypeMismatch> {
        self.client.get_query_data(self.options.key().clone())
    }

    /// The options.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{CachedQuery, QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// let n = CachedQuery::new(&client, QueryOptions::new(key!("n"), || async { Ok::<_, String>(3u32) }));
    /// let observer = client.watch(n.options()); // observe what it caches
    /// assert!(observer.result().is_idle());
    /// # }
    /// ```
    pub fn options(&self) -> &QueryOptions<T, E> {
        &self.options
    }
}

impl<T, E> fmt::Debug for CachedQuery<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedQuery").field("key", &self.options.inner.key).finish()
    }
}
