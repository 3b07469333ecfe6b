//! Reading and writing a key's data and state directly, without fetching.

use std::panic::AssertUnwindSafe;

use serde::de::DeserializeOwned;

use super::QueryClient;
use crate::error::TypeMismatch;
use crate::filter::QueryFilter;
use crate::key::QueryKey;
use crate::query::{self, Effects, QueryCell, clone_data};
use crate::state::QueryState;
use crate::storage::record::Record;

impl QueryClient {
    /// The key's data from memory, without fetching. `Ok(None)` when the key is not cached or
    /// has no data (a pending seed, see [`hydrate`](Self::hydrate), is not read here:
    /// [`get_query_data_async`](Self::get_query_data_async) reads it).
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key holds another type than `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// assert_eq!(client.get_query_data::<String>(key!("user", 1)).unwrap(), None);
    /// client.set_query_data(key!("user", 1), "Ada".to_string()).unwrap();
    /// assert_eq!(client.get_query_data::<String>(key!("user", 1)).unwrap().as_deref(), Some("Ada"));
    /// // Asking for another type is an error, not a panic.
    /// assert!(client.get_query_data::<u32>(key!("user", 1)).is_err());
    /// # }
    /// ```
    pub fn get_query_data<T>(&self, key: impl Into<QueryKey>) -> Result<Option<T>, TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
    {
        let key = key.into();
        Ok(query::existing::<T>(&self.ctx, &key)?.and_then(|cell| cell.lock().state.data.clone()))
    }

    /// The key's data from memory, or else from its pending seed
    /// ([`hydrate`](Self::hydrate)) or L2 storage, the newer of the two (without putting it
    /// in memory or taking the seed). `Ok(None)` when none has it, when storage fails or
    /// times out, or when the record does not decode as `T` (an L2 one is counted in
    /// [`StorageStats::decode_failures`](crate::storage::StorageStats::decode_failures)).
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key is in memory with another type than `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::Arc;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    /// use pystackquery_core::storage::MemoryStorage;
    ///
    /// let test = TestRuntime::new();
    /// let storage = Arc::new(MemoryStorage::new()); // shared by two clients
    /// let config = || QueryClientConfig::default().storage(storage.clone());
    /// let first = QueryClient::with_runtime(test.runtime(), config());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(7) }).persist();
    /// test.block_on(async {
    ///     first.fetch_query(&options).await.unwrap();
    ///     first.flush_storage().await;
    ///     let second = QueryClient::with_runtime(test.runtime(), config());
    ///     assert_eq!(second.get_query_data::<u32>(key!("n")).unwrap(), None); // memory only
    ///     assert_eq!(second.get_query_data_async::<u32>(key!("n")).await.unwrap(), Some(7)); // from L2
    /// });
    /// # }
    /// ```
    pub async fn get_query_data_async<T>(
        &self,
        key: impl Into<QueryKey>,
    ) -> Result<Option<T>, TypeMismatch>
    where
        T: Clone + Send + Sync + DeserializeOwned + 'static,
    {
        let key = key.into();
        let mut own_max_age = None;
        if let Some(cell) = query::existing::<T>(&self.ctx, &key)? {
            let g = cell.lock();
            if let Some(data) = g.state.data.clone() {
                return Ok(Some(data));
            }
            own_max_age = g.persist_max_age();
        }
        let max_age = self.ctx.persist_max_age(own_max_age);
        let seed = self.ctx.seeds.peek(&key).and_then(|seed| {
            let decode = AssertUnwindSafe(|| Record::<T>::from_value(seed.state));
            std::panic::catch_unwind(decode).ok()?.ok().filter(|record| record.data.is_some())
        });
        let stored = match &self.ctx.l2 {
            Some(l2) => l2.read(&key, Record::<T>::from_json, max_age).await,
            None => None,
        };
        let newer = match (seed, stored) {
            (Some(seed), Some(stored)) if stored.data_updated_at > seed.data_updated_at => stored,
            (Some(seed), _) => seed,
            (None, Some(stored)) => stored,
            (None, None) => return Ok(None),
        };
        Ok(newer.data)
    }

    /// The key's full state from memory. `Ok(None)` when the key is not cached.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key holds another data type than `T` (a cached error of
    /// another type than `E` shows as [`QueryError::TypeMismatch`](crate::QueryError::TypeMismatch) inside the state).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<_, String>(1u32) });
    /// test.block_on(client.fetch_query(&options)).unwrap();
    /// let state = client.get_query_state::<u32, String>(key!("n")).unwrap().unwrap();
    /// assert!(state.is_success() && !state.is_fetching());
    /// assert_eq!((state.data, state.data_update_count), (Some(1), 1));
    /// assert!(client.get_query_state::<u32, String>(key!("other")).unwrap().is_none());
    /// # }
    /// ```
    pub fn get_query_state<T, E>(
        &self,
        key: impl Into<QueryKey>,
    ) -> Result<Option<QueryState<T, E>>, TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        let key = key.into();
        Ok(query::existing::<T>(&self.ctx, &key)?.map(|cell| {
            let g = cell.lock();
            g.state.typed(&key)
        }))
    }

    /// Writes data for a key as if it had just been fetched, creating the query when missing.
    /// A fetch in flight for the key finishes but does not overwrite this value.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key holds another type than `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("user", 1), "Ada".to_string()).unwrap();
    /// // Set data counts as just fetched: fresh for the options' stale time.
    /// let options = QueryOptions::new(key!("user", 1), || async { Ok::<_, String>("fetched".to_string()) })
    ///     .stale_time(Duration::from_secs(60));
    /// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), "Ada");
    /// assert_eq!(client.cache_stats().fetches, 0);
    /// # }
    /// ```
    pub fn set_query_data<T>(&self, key: impl Into<QueryKey>, data: T) -> Result<(), TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
    {
        let key = key.into();
        let cell = query::cell::<T>(&self.ctx, &key)?;
        let mut effects = Effects::none();
        cell.set_data(&self.ctx, &mut cell.lock(), data, &mut effects);
        effects.run(&self.ctx, &key);
        Ok(())
    }

    /// Replaces a key's data with `update(old)`, creating the query when missing, and returns
    /// the new value. `update` runs without any lock held (it may call back into the client);
    /// if the data changes meanwhile, it runs again on the newer value.
    ///
    /// # Errors
    ///
    /// [`TypeMismatch`] when the key holds another type than `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("todos"), vec!["write docs".to_string()]).unwrap();
    /// let todos = client
    ///     .update_query_data(key!("todos"), |old: Option<&Vec<String>>| {
    ///         let mut todos = old.cloned().unwrap_or_default();
    ///         todos.push("ship".to_string());
    ///         todos
    ///     })
    ///     .unwrap();
    /// assert_eq!(todos, ["write docs", "ship"]);
    /// // A missing key starts from `None`.
    /// let visits = client.update_query_data(key!("visits"), |n: Option<&u32>| n.copied().unwrap_or(0) + 1);
    /// assert_eq!(visits.unwrap(), 1);
    /// # }
    /// ```
    pub fn update_query_data<T>(
        &self,
        key: impl Into<QueryKey>,
        mut update: impl FnMut(Option<&T>) -> T,
    ) -> Result<T, TypeMismatch>
    where
        T: Clone + Send + Sync + 'static,
    {
        let key = key.into();
        loop {
            let cell = query::cell::<T>(&self.ctx, &key)?;
            let (old, version) = {
                let g = cell.lock();
                (g.state.data.clone(), g.version)
            };
            let new = update(old.as_ref());
            let mut effects = Effects::none();
            {
                let mut g = cell.lock();
                if g.detached || g.version != version {
                    continue;
                }
                cell.set_data(&self.ctx, &mut g, new.clone(), &mut effects);
            }
            effects.run(&self.ctx, &key);
            return Ok(new);
        }
    }

    /// The data of every query `filter` chooses (a key is a prefix filter) that holds a `T`,
    /// with its key, in key order (TanStack's `getQueriesData`). Queries of other types are
    /// left out; `None` is a query without data. Nothing is fetched and the LRU order is not touched.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("todos", 1), "write".to_string()).unwrap();
    /// client.set_query_data(key!("todos", 2), "test".to_string()).unwrap();
    /// client.set_query_data(key!("todos", "count"), 2u32).unwrap(); // another type: left out
    /// let todos = client.get_queries_data::<String>(key!("todos"));
    /// assert_eq!(todos, vec![(key!("todos", 1), Some("write".into())), (key!("todos", 2), Some("test".into()))]);
    /// # }
    /// ```
    pub fn get_queries_data<T>(&self, filter: impl Into<QueryFilter>) -> Vec<(QueryKey, Option<T>)>
    where
        T: Clone + Send + Sync + 'static,
    {
        self.ctx
            .select(&filter.into())
            .into_iter()
            .filter_map(|entry| {
                let key = entry.key().clone();
                let cell = entry.into_any().downcast::<QueryCell<T>>().ok()?;
                let data = cell.lock().state.data.as_ref().map(clone_data);
                Some((key, data.and_then(Result::ok)))
            })
            .collect()
    }

    /// Replaces the data of every query `filter` chooses that holds a `T` with
    /// `update(key, old)`, as [`set_query_data`](Self::set_query_data) does for one (TanStack's
    /// `setQueriesData`); `update` returning `None` leaves that query as it is. `update` runs
    /// with no lock held. Returns the keys written.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, key, testing::TestRuntime};
    ///
    /// let client = QueryClient::with_runtime(TestRuntime::new().runtime(), QueryClientConfig::default());
    /// client.set_query_data(key!("price", "a"), 10u32).unwrap();
    /// client.set_query_data(key!("price", "b"), 20u32).unwrap();
    /// let written = client.set_queries_data(key!("price"), |_key, old: Option<&u32>| old.map(|p| p * 2));
    /// assert_eq!(written, [key!("price", "a"), key!("price", "b")]);
    /// assert_eq!(client.get_query_data::<u32>(key!("price", "b")).unwrap(), Some(40));
    /// # }
    /// ```
    pub fn set_queries_data<T>(
        &self,
        filter: impl Into<QueryFilter>,
        mut update: impl FnMut(&QueryKey, Option<&T>) -> Option<T>,
    ) -> Vec<QueryKey>
    where
        T: Clone + Send + Sync + 'static,
    {
        let mut written = Vec::new();
        for (key, old) in self.get_queries_data::<T>(filter) {
            if let Some(new) = update(&key, old.as_ref())
                && self.set_query_data(key.clone(), new).is_ok()
            {
                written.push(key);
            }
        }
        written
    }
}
