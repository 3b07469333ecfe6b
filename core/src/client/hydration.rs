//! Dehydration and hydration (TanStack's `dehydrate` / `hydrate`): cached queries as plain
//! data in the L2 record format, and back, newer wins.

use std::collections::HashSet;

use super::QueryClient;
use crate::dehydrate::{
    DehydrateOptions, DehydratedQuery, DehydratedState, HydrateOutcome, HydrateReport, Snapshot,
};
use crate::filter::QueryFilter;
use crate::key::QueryKey;
use crate::seeds::{Offer, Seed};
use crate::storage::record::RecordHead;

impl QueryClient {
    /// The successful, persistable queries that `filter` chooses, as plain data
    /// (TanStack's `dehydrate` with its default `shouldDehydrateQuery`): write it to a file
    /// with `serde_json` and [`hydrate`](Self::hydrate) it into a client at the next start,
    /// or hand a server's cache to a client, or to a Python process (the format is on
    /// [`DehydratedState`]). Needs no L2 storage.
    ///
    /// Only queries whose data can be serialized are included: those used with
    /// [`QueryOptions::persist`](crate::QueryOptions::persist) options at least once (a fetch,
    /// a prefetch, an observer). Rust cannot ask at run time whether a type implements
    /// `Serialize`, so a key only ever written with `set_query_data`, or used with options that
    /// do not persist, is left out. The states are cloned under each query's lock and encoded
    /// after it is released; a query whose data fails to encode (or whose `Serialize`,
    /// `Display` or `Clone` panics) is left out and logged at `warn`. Queries come in key
    /// order. [`dehydrate_with`](Self::dehydrate_with) chooses other statuses.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::Duration;
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let server = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let user = QueryOptions::new(key!("user", 1), || async { Ok::<_, String>("Ada".to_string()) })
    ///     .persist();
    /// test.block_on(server.fetch_query(&user)).unwrap();
    /// server.set_query_data(key!("scratch"), 1u8).unwrap(); // never persisted: left out
    /// let text = serde_json::to_string(&server.dehydrate(())).unwrap();
    /// assert!(text.starts_with(r#"{"queries":[{"key":["user",1],"state":{"#));
    /// assert!(text.contains(r#""status":"SUCCESS""#) && text.contains(r#""data":"Ada""#));
    ///
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let report = client.hydrate(serde_json::from_str(&text).unwrap());
    /// assert_eq!(report.deferred, 1, "kept until the key's first use");
    /// let offline = QueryOptions::new(key!("user", 1), || async { Err::<String, _>("offline".to_string()) })
    ///     .persist()
    ///     .stale_time(Duration::from_secs(60));
    /// assert_eq!(test.block_on(client.fetch_query(&offline)).unwrap(), "Ada"); // fresh: no call
    /// # }
    /// ```
    pub fn dehydrate(&self, filter: impl Into<QueryFilter>) -> DehydratedState {
        self.dehydrate_with(filter, DehydrateOptions::default())
    }

    /// As [`dehydrate`](Self::dehydrate), with `options` choosing which of the chosen
    /// queries are dehydrated instead of the successful ones (for example errors too), and
    /// whether pending seeds come along.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{DehydrateOptions, QueryClient, QueryClientConfig, QueryOptions, QueryStatus, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let failing = QueryOptions::new(key!("flaky"), || async { Err::<u32, _>("down".to_string()) })
    ///     .retry(0)
    ///     .persist();
    /// assert!(test.block_on(client.fetch_query(&failing)).is_err());
    /// assert!(client.dehydrate(()).queries.is_empty(), "successful queries only by default");
    ///
    /// let errors_too = DehydrateOptions::new().should_dehydrate(|q| q.status != QueryStatus::Pending);
    /// let state = client.dehydrate_with((), errors_too);
    /// assert_eq!(state.queries[0].state["status"], "ERROR");
    /// assert_eq!(state.queries[0].state["error"], "down");
    /// # }
    /// ```
    pub fn dehydrate_with(
        &self,
        filter: impl Into<QueryFilter>,
        options: DehydrateOptions,
    ) -> DehydratedState {
        let filter = filter.into();
        let mut queries = Vec::new();
        for entry in self.ctx.candidates(&filter) {
            if !entry.persisted() {
                continue;
            }
            let info = entry.info(&self.ctx);
            if !filter.matches(&info) || !options.wants(&info) {
                continue;
            }
            match entry.dehydrate() {
                Snapshot::Record(state) => {
                    queries.push(DehydratedQuery::new(entry.key().clone(), state));
                }
                Snapshot::NotPersisted => {}
                Snapshot::Failed(reason) => {
                    tracing::warn!(key = %entry.key(), "query not dehydrated: {reason}");
                }
            }
        }
        if options.seeds() {
            let dehydrated: HashSet<QueryKey> = queries.iter().map(|q| q.key.clone()).collect();
            for (key, seed) in self.ctx.seeds.matching(filter.key()) {
                if !dehydrated.contains(&key) {
                    queries.push(DehydratedQuery::new(key, seed.state));
                }
            }
            queries.sort_by(|a, b| a.key.cmp(&b.key));
        }
        DehydratedState::new(queries)
    }

    /// Restores a [`DehydratedState`] (from [`dehydrate`](Self::dehydrate), a file, another
    /// process, Python's `QueryState.to_dict`): TanStack's `hydrate`. Needs no L2 storage.
    ///
    /// For each query, newer wins: its record is restored only if memory has no data for the
    /// key, or has older data (by `data_updated_at`, strictly later beyond the format's float
    /// rounding), so newer data in memory is never overwritten, and a state hydrated twice is
    /// applied once. The rules are those of the L2 path: restored data is fresh or stale by
    /// its timestamp (with the stale time of the options the key is used with), an
    /// invalidated record (`data_updated_at` 0.0) restores stale and invalidated, a fetch in
    /// flight keeps running (and its result, being newer, wins), and an error record without
    /// data restores the error into a query without data or error. Options are not part of
    /// a dehydrated state: the key's own options apply.
    ///
    /// The record's data type is known only where the key is cached with persisting options
    /// (see [`dehydrate`](Self::dehydrate)): such a query is restored at once (the record is
    /// decoded with no lock held). Any other record is kept as a *pending seed*, restored the
    /// first time the key is used with [`persist`](crate::QueryOptions::persist)ed options
    /// (`fetch_query` and its siblings, `prefetch_query`, an observer), before its L2 read
    /// if it has one, and newer wins against both memory and the L2 record. Until then
    /// [`get_query_data_async`](Self::get_query_data_async) reads it (`get_query_data`
    /// cannot: it has no serde bound). Seeds do not count as cached queries
    /// ([`len`](Self::len), [`find_all`](Self::find_all)); [`clear`](Self::clear) and
    /// [`remove_queries`](Self::remove_queries) of their key drop them; at most
    /// [`cache_max_size`](crate::QueryClientConfig::cache_max_size) are kept (a new one
    /// evicts the oldest, logged at `warn`). A record that is not a record, or whose data
    /// does not decode as the key's type, is dropped and logged at `warn`: the key works as
    /// if it had never been hydrated. A panicking `Deserialize` is contained.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{DehydratedQuery, DehydratedState, QueryClient, QueryClientConfig, QueryOptions, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(2) }).persist();
    /// assert_eq!(test.block_on(client.fetch_query(&options)).unwrap(), 2);
    ///
    /// // A record from 2023, as Python's `QueryState.to_dict()` writes it: older than memory.
    /// let old = serde_json::json!({"status": "SUCCESS", "fetch_status": "IDLE", "data": 1,
    ///     "error": null, "data_updated_at": 1700000000.0, "error_updated_at": null,
    ///     "fetch_failure_count": 0, "fetch_failure_reason": null});
    /// let report = client.hydrate(DehydratedState::new(vec![DehydratedQuery::new(key!("n"), old)]));
    /// assert_eq!((report.applied, report.skipped), (0, 1));
    /// assert_eq!(client.get_query_data::<u32>(key!("n")).unwrap(), Some(2));
    /// # }
    /// ```
    pub fn hydrate(&self, state: DehydratedState) -> HydrateReport {
        let mut report = HydrateReport::default();
        for query in state.queries {
            report.add(self.hydrate_one(query.key, query.state));
        }
        report
    }

    fn hydrate_one(&self, key: QueryKey, state: serde_json::Value) -> HydrateOutcome {
        let head = match RecordHead::of(&state) {
            Ok(head) => head,
            Err(error) => {
                tracing::warn!(%key, "hydrated record dropped: {error}");
                return HydrateOutcome::Undecodable;
            }
        };
        // Offer it as a seed first, then let the key's query, if cached with persisting
        // options, claim it under its lock: a first use of the key that runs meanwhile takes
        // it itself (also under that lock), so no seed is left behind by a race.
        let seed = Seed { state, data_updated_at: head.data_updated_at };
        match self.ctx.seeds.offer(key.clone(), seed) {
            Offer::Older => return HydrateOutcome::Skipped,
            Offer::Kept { evicted: Some(evicted) } => {
                tracing::warn!(key = %evicted, "pending seed dropped: seeds are bounded by cache_max_size");
            }
            Offer::Kept { evicted: None } => {}
        }
        match self.ctx.cache.lookup(&key) {
            Some(entry) => entry.claim_seed(&self.ctx),
            None => HydrateOutcome::Deferred,
        }
    }

    /// How many hydrated records are waiting for their key's first use with persisting
    /// options (see [`hydrate`](Self::hydrate)).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{DehydratedQuery, DehydratedState, QueryClient, QueryClientConfig, QueryOptions, key};
    /// use pystackquery_core::testing::TestRuntime;
    ///
    /// let test = TestRuntime::new();
    /// let source = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("n"), || async { Ok::<u32, String>(5) }).persist();
    /// test.block_on(source.fetch_query(&options)).unwrap();
    ///
    /// let target = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// target.hydrate(source.dehydrate(()));
    /// assert_eq!(target.pending_seeds(), 1); // waiting for the key's first use
    /// assert_eq!(test.block_on(target.fetch_query(&options)).unwrap(), 5);
    /// assert_eq!(target.pending_seeds(), 0);
    /// # }
    /// ```
    pub fn pending_seeds(&self) -> usize {
        self.ctx.seeds.len()
    }
}
