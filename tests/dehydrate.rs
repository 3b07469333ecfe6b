//! `dehydrate` / `hydrate`: cached queries as plain data in the L2 record format and back,
//! newer wins, without storage; pending seeds for keys whose type is not known yet. TanStack
//! Query's hydration tests are ported in `dehydrate_tanstack.rs`, and the Python library reads
//! and writes the states in `dehydrate_python.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::servers::ScratchDir;
use common::storage::{python_record, unix_now};
use common::{Counter, Gate, Harness};
use pystackquery::storage::MemoryStorage;
use pystackquery::{
    DehydrateOptions, DehydratedQuery, DehydratedState, QueryClientConfig, QueryFilter, QueryKey,
    QueryOptions, QueryStatus, key,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);

/// Persisted options for `k` whose function counts its calls and answers `value`.
fn answering<T>(k: QueryKey, calls: &Counter, value: T) -> QueryOptions<T, String>
where
    T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
{
    let calls = calls.clone();
    QueryOptions::new(k, move || {
        calls.hit();
        let value = value.clone();
        async move { Ok(value) }
    })
    .persist()
}

fn one(k: QueryKey, state: Value) -> DehydratedState {
    DehydratedState::new(vec![DehydratedQuery::new(k, state)])
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    name: String,
    langs: Vec<String>,
}

async fn round_trip_through_a_file_fresh_and_stale_by_timestamp(h: Harness) {
    let server = h.client();
    let calls = Counter::default();
    let ada = User { name: "Ada".into(), langs: vec!["rs".into()] };
    server.fetch_query(&answering(key!("user", 1), &calls, ada.clone())).await.unwrap();
    server.fetch_query(&answering(key!("count"), &calls, 7u64)).await.unwrap();
    let state = server.dehydrate(());
    assert_eq!(state.queries.len(), 2);
    let dir = ScratchDir::new("dehydrate");
    let path = dir.path().join("cache.json");
    std::fs::write(&path, serde_json::to_string(&state).unwrap()).unwrap();

    let client = h.client();
    let read: DehydratedState =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(read, state);
    let report = client.hydrate(read);
    assert_eq!((report.deferred, report.applied), (2, 0), "{report:?}");
    assert_eq!(client.len(), 0, "seeds are not cached queries");
    assert_eq!(client.pending_seeds(), 2);

    // Fresh by its timestamp: no call.
    let offline = Counter::default();
    let nobody = User { name: "?".into(), langs: vec![] };
    let user = answering(key!("user", 1), &offline, nobody).stale_time(HOUR);
    assert_eq!(client.fetch_query(&user).await.unwrap(), ada);
    assert_eq!(offline.get(), 0);
    assert_eq!(client.len(), 1);

    // Stale by its timestamp: answered at once, revalidated in the background.
    h.sleep(Duration::from_millis(20)).await;
    let count = answering(key!("count"), &offline, 8u64).stale_time(Duration::from_millis(10));
    assert_eq!(client.fetch_query(&count).await.unwrap(), 7);
    h.eventually("the revalidation", || {
        client.get_query_data::<u64>(key!("count")).unwrap() == Some(8)
    })
    .await;
    assert_eq!(offline.get(), 1);
    assert_eq!(client.pending_seeds(), 0);
}

async fn successful_persisted_queries_only_unless_asked(h: Harness) {
    let client = h.client_with(QueryClientConfig::default().retry(0));
    let calls = Counter::default();
    client.fetch_query(&answering(key!("ok"), &calls, 1u32)).await.unwrap();
    let failing =
        QueryOptions::new(key!("failed"), || async { Err::<u32, _>("boom".to_string()) }).persist();
    assert!(client.fetch_query(&failing).await.is_err());
    let gate = Gate::default();
    let g = gate.clone();
    let pending = QueryOptions::new(key!("pending"), move || {
        let g = g.clone();
        async move {
            g.wait().await;
            Ok::<u32, String>(3)
        }
    })
    .persist();
    let _observing = client.watch(&pending).subscribe(|_| {});
    client.set_query_data(key!("set only"), 4u32).unwrap();
    let unpersisted = QueryOptions::new(key!("memory"), || async { Ok::<_, String>(5u32) });
    client.fetch_query(&unpersisted).await.unwrap();
    h.eventually("the pending fetch", || client.is_fetching(key!("pending")) == 1).await;

    let keys = |state: &DehydratedState| -> Vec<QueryKey> {
        state.queries.iter().map(|q| q.key.clone()).collect()
    };
    assert_eq!(keys(&client.dehydrate(())), [key!("ok")]);
    let settled = DehydrateOptions::new().should_dehydrate(|q| q.status != QueryStatus::Pending);
    let with_errors = client.dehydrate_with((), settled);
    assert_eq!(keys(&with_errors), [key!("failed"), key!("ok")]);
    let error = &with_errors.queries[0].state;
    assert_eq!((error["status"].as_str(), error["error"].as_str()), (Some("ERROR"), Some("boom")));
    assert_eq!(error["data"], Value::Null);
    let everything = client.dehydrate_with((), DehydrateOptions::new().should_dehydrate(|_| true));
    assert_eq!(keys(&everything), [key!("failed"), key!("ok"), key!("pending")]);
    assert_eq!(everything.queries[2].state["status"], "PENDING");
    assert_eq!(everything.queries[2].state["fetch_status"], "IDLE", "a record is data at rest");
    let panicky = DehydrateOptions::new().should_dehydrate(|_| panic!("predicate"));
    assert!(client.dehydrate_with((), panicky).queries.is_empty());

    // The error restores as an error (the next read fetches).
    let other = h.client();
    assert_eq!(other.hydrate(with_errors).deferred, 2);
    let disabled = failing.clone().enabled(false);
    let _watching = other.watch(&disabled).subscribe(|_| {});
    h.eventually("the error restored", || {
        let state = other.get_query_state::<u32, String>(key!("failed")).unwrap();
        state.is_some_and(|s| s.status == QueryStatus::Error)
    })
    .await;
    let state = other.get_query_state::<u32, String>(key!("failed")).unwrap().unwrap();
    assert_eq!(state.error.unwrap().to_string(), "boom");
    assert_eq!(state.data, None);
    gate.open();
}

async fn newer_data_wins_either_way(h: Harness) {
    let calls = Counter::default();
    let older = h.client();
    older.fetch_query(&answering(key!("k"), &calls, "older".to_string())).await.unwrap();
    let older_state = older.dehydrate(());
    h.sleep(Duration::from_millis(5)).await;
    let newer = h.client();
    newer.fetch_query(&answering(key!("k"), &calls, "newer".to_string())).await.unwrap();
    let newer_state = newer.dehydrate(());

    let report = newer.hydrate(older_state.clone());
    assert_eq!((report.applied, report.skipped), (0, 1), "{report:?}");
    assert_eq!(newer.get_query_data::<String>(key!("k")).unwrap().unwrap(), "newer");
    let report = older.hydrate(newer_state.clone());
    assert_eq!((report.applied, report.skipped), (1, 0), "{report:?}");
    assert_eq!(older.get_query_data::<String>(key!("k")).unwrap().unwrap(), "newer");
    let report = older.hydrate(newer_state);
    assert_eq!((report.applied, report.skipped), (0, 1), "as new is not newer: {report:?}");
    let state = older.get_query_state::<String, String>(key!("k")).unwrap().unwrap();
    assert_eq!(state.data_update_count, 2, "fetched once, hydrated once");

    // An older seed than the pending one is skipped; a newer one replaces it.
    let fresh = h.client();
    assert_eq!(fresh.hydrate(older.dehydrate(())).deferred, 1);
    assert_eq!(fresh.hydrate(older_state.clone()).skipped, 1);
    let seeded = answering(key!("k"), &calls, String::new()).stale_time(HOUR);
    assert_eq!(fresh.fetch_query(&seeded).await.unwrap(), "newer");
    assert_eq!(calls.get(), 2);
}

async fn an_invalidated_record_restores_stale_and_never_overwrites(h: Harness) {
    let calls = Counter::default();
    let server = h.client();
    server.fetch_query(&answering(key!("k"), &calls, 1u32)).await.unwrap();
    server.invalidate_queries(key!("k"), false).await;
    let state = server.dehydrate(());
    assert_eq!(state.queries[0].state["data_updated_at"], json!(0.0));

    let client = h.client();
    client.hydrate(state.clone());
    let gate = Gate::default();
    let (g, counted) = (gate.clone(), calls.clone());
    let options = QueryOptions::new(key!("k"), move || {
        counted.hit();
        let g = g.clone();
        async move {
            g.wait().await;
            Ok::<_, String>(2u32)
        }
    })
    .persist()
    .stale_time(HOUR);
    assert_eq!(client.fetch_query(&options).await.unwrap(), 1, "stale data, at once");
    let info = client.find(key!("k")).unwrap();
    assert!(info.is_invalidated && info.is_stale && info.is_fetching(), "{info}");
    gate.open();
    h.eventually("revalidated", || client.get_query_data::<u32>(key!("k")).unwrap() == Some(2))
        .await;
    assert_eq!(client.hydrate(state).skipped, 1, "0.0 is older than any data");
    assert_eq!(client.get_query_data::<u32>(key!("k")).unwrap(), Some(2));
}

async fn a_seed_waits_for_the_first_persisting_use(h: Harness) {
    let calls = Counter::default();
    let server = h.client();
    for (k, v) in
        [(key!("fetch"), 1u32), (key!("watch"), 2), (key!("prefetch"), 3), (key!("plain"), 4)]
    {
        server.fetch_query(&answering(k, &calls, v)).await.unwrap();
    }
    let client = h.client();
    assert_eq!(client.hydrate(server.dehydrate(())).deferred, 4);
    assert!(client.find(key!("fetch")).is_none());
    assert_eq!(client.get_query_data::<u32>(key!("fetch")).unwrap(), None, "type unknown");
    assert_eq!(client.get_query_data_async::<u32>(key!("fetch")).await.unwrap(), Some(1));
    assert_eq!(client.pending_seeds(), 4, "reading does not take the seed");

    let offline = Counter::default();
    let fresh = |k: QueryKey| answering(k, &offline, 0u32).stale_time(HOUR);
    assert_eq!(client.fetch_query(&fresh(key!("fetch"))).await.unwrap(), 1);
    let observer = client.watch(&fresh(key!("watch")));
    let _subscription = observer.subscribe(|_| {});
    h.eventually("the observer shows the seed", || observer.result().data == Some(2)).await;
    client.prefetch_query(&fresh(key!("prefetch"))).await;
    assert_eq!(client.get_query_data::<u32>(key!("prefetch")).unwrap(), Some(3));
    assert_eq!(offline.get(), 0, "every seed was fresh");

    // Options that do not persist do not take the seed (its type is unknown to them); the
    // data they fetch is newer than the seed, which the first persisting use then drops.
    let plain = QueryOptions::new(key!("plain"), || async { Ok::<_, String>(40u32) });
    assert_eq!(client.fetch_query(&plain).await.unwrap(), 40);
    assert_eq!(client.pending_seeds(), 1);
    assert_eq!(client.fetch_query(&fresh(key!("plain"))).await.unwrap(), 40);
    assert_eq!(client.pending_seeds(), 0);
    assert_eq!(offline.get(), 0);
}

async fn an_observer_switching_to_persisting_options_takes_the_seed(h: Harness) {
    let server = h.client();
    let calls = Counter::default();
    server.fetch_query(&answering(key!("k"), &calls, 1u32)).await.unwrap();
    let client = h.client();
    let memory_only = QueryOptions::new(key!("k"), || async { Ok::<u32, String>(0) });
    let observer = client.watch(&memory_only.enabled(false));
    let _subscription = observer.subscribe(|_| {});
    assert_eq!(client.hydrate(server.dehydrate(())).deferred, 1, "the key has no codec yet");
    observer.set_options(answering(key!("k"), &calls, 2u32).enabled(false));
    h.eventually("the seed shown", || observer.result().data == Some(1)).await;
    assert_eq!((client.pending_seeds(), calls.get()), (0, 1));
}

async fn a_seed_and_the_l2_record_newer_wins(h: Harness) {
    let store = MemoryStorage::new();
    let now = unix_now(&h.runtime);
    let record = |data: &str, age: f64| -> String { python_record(json!(data), now - age) };
    store.insert(key!("l2 newer").storage_string(), record("l2", 10.0));
    store.insert(key!("seed newer").storage_string(), record("l2", 100.0));
    let seed = |k: QueryKey, age: f64| -> DehydratedQuery {
        DehydratedQuery::new(k, serde_json::from_str(&record("seed", age)).unwrap())
    };
    let client = h.client_with(QueryClientConfig::default().storage(store.clone()));
    let report = client.hydrate(DehydratedState::new(vec![
        seed(key!("l2 newer"), 100.0),
        seed(key!("seed newer"), 10.0),
    ]));
    assert_eq!(report.deferred, 2);
    let calls = Counter::default();
    let options = |k: QueryKey| answering(k, &calls, String::new()).stale_time(HOUR);
    assert_eq!(client.fetch_query(&options(key!("l2 newer"))).await.unwrap(), "l2");
    assert_eq!(client.fetch_query(&options(key!("seed newer"))).await.unwrap(), "seed");
    assert_eq!(calls.get(), 0);
    assert_eq!(client.storage_stats().hits, 2, "both L2 records were read");
    client.flush_storage().await;
    let stored: Value =
        serde_json::from_str(&store.peek(key!("seed newer").storage_string()).unwrap()).unwrap();
    assert_eq!(stored["data"], "seed", "the newer seed is written through");
}

/// Deserializing 13 panics.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Touchy(u32);

impl<'de> Deserialize<'de> for Touchy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(deserializer)?;
        assert_ne!(n, 13, "unlucky");
        Ok(Self(n))
    }
}

async fn an_undecodable_record_is_reported_and_the_key_still_works(h: Harness) {
    let calls = Counter::default();
    let client = h.client();
    let now = unix_now(&h.runtime);
    let text: Value = serde_json::from_str(&python_record(json!("text"), now)).unwrap();
    // Cached with a codec: decoded at once, reported, memory untouched.
    let number = answering(key!("n"), &calls, 1u32);
    client.fetch_query(&number).await.unwrap();
    let report = client.hydrate(one(key!("n"), text.clone()));
    assert_eq!(report.undecodable, 1, "{report:?}");
    assert_eq!(client.get_query_data::<u32>(key!("n")).unwrap(), Some(1));
    // Not a record at all: reported at once, even for an unknown key.
    let bogus = json!({"status": "BOGUS", "data": 1});
    let report = client.hydrate(DehydratedState::new(vec![
        DehydratedQuery::new(key!("x"), json!([1, 2])),
        DehydratedQuery::new(key!("y"), bogus),
        DehydratedQuery::new(key!("z"), json!({"status": "SUCCESS", "data_updated_at": "soon"})),
    ]));
    assert_eq!(report.undecodable, 3, "{report:?}");
    assert_eq!(client.pending_seeds(), 0);
    // A seed of the wrong type: dropped at the first use, which fetches.
    assert_eq!(client.hydrate(one(key!("seed"), text)).deferred, 1);
    let seeded = answering(key!("seed"), &calls, 5u32).stale_time(HOUR);
    assert_eq!(client.fetch_query(&seeded).await.unwrap(), 5);
    assert_eq!((calls.get(), client.pending_seeds()), (2, 0));
    // A panicking `Deserialize`: contained, the key fetches.
    let unlucky: Value = serde_json::from_str(&python_record(json!(13), now)).unwrap();
    assert_eq!(client.hydrate(one(key!("touchy"), unlucky)).deferred, 1);
    let touchy = answering(key!("touchy"), &calls, Touchy(7)).stale_time(HOUR);
    assert_eq!(client.fetch_query(&touchy).await.unwrap(), Touchy(7));
    assert_eq!(calls.get(), 3);
}

/// Serializing panics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Explosive(u32);

impl Serialize for Explosive {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("cannot serialize")
    }
}

async fn encode_failures_skip_the_query(h: Harness) {
    let calls = Counter::default();
    let client = h.client();
    client.fetch_query(&answering(key!("a", "ok"), &calls, 1u8)).await.unwrap();
    client.fetch_query(&answering(key!("a", "panics"), &calls, Explosive(1))).await.unwrap();
    let map = BTreeMap::from([((1u8, 2u8), 3u8)]); // keys JSON cannot hold
    client.fetch_query(&answering(key!("a", "tuple keys"), &calls, map)).await.unwrap();
    let state = client.dehydrate(key!("a"));
    let keys: Vec<QueryKey> = state.queries.into_iter().map(|q| q.key).collect();
    assert_eq!(keys, [key!("a", "ok")]);
    assert_eq!(
        client.fetch_query(&answering(key!("a", "panics"), &calls, Explosive(2))).await.unwrap(),
        Explosive(1)
    );
}

async fn seeds_are_bounded_dropped_by_clear_and_remove_and_can_be_dehydrated(h: Harness) {
    let now = unix_now(&h.runtime);
    let state = |v: u32| -> Value { serde_json::from_str(&python_record(json!(v), now)).unwrap() };
    let seeds = |keys: &[QueryKey]| -> DehydratedState {
        DehydratedState::new(
            keys.iter().map(|k| DehydratedQuery::new(k.clone(), state(1))).collect(),
        )
    };
    let client = h.client_with(QueryClientConfig::default().cache_max_size(3));
    let keys = [key!("a", 1), key!("a", 2), key!("b", 1), key!("c", 1)];
    assert_eq!(client.hydrate(seeds(&keys)).deferred, 4);
    assert_eq!(client.pending_seeds(), 3, "bounded by cache_max_size: the oldest went");
    assert_eq!(client.get_query_data_async::<u32>(key!("a", 1)).await.unwrap(), None);

    // Dehydrating carries seeds along only when asked to.
    assert!(client.dehydrate(()).queries.is_empty());
    let with_seeds = client.dehydrate_with((), DehydrateOptions::new().include_seeds(true));
    assert_eq!(with_seeds, seeds(&keys[1..]));
    let a_only = client.dehydrate_with(key!("a"), DehydrateOptions::new().include_seeds(true));
    assert_eq!(a_only.queries.len(), 1);

    // A filter with conditions beyond the key leaves seeds; a key filter drops them.
    assert_eq!(client.remove_queries(QueryFilter::all().inactive()), 0);
    assert_eq!(client.pending_seeds(), 3);
    client.remove_queries(QueryFilter::exact(key!("a")));
    assert_eq!(client.pending_seeds(), 3, "an exact key chooses only itself");
    client.remove_queries(key!("a"));
    assert_eq!(client.pending_seeds(), 2);
    client.clear();
    assert_eq!(client.pending_seeds(), 0);
    let calls = Counter::default();
    let b = answering(key!("b", 1), &calls, 9u32).stale_time(HOUR);
    assert_eq!(client.fetch_query(&b).await.unwrap(), 9, "the seed is gone");
}

runtime_suite!(
    round_trip_through_a_file_fresh_and_stale_by_timestamp,
    successful_persisted_queries_only_unless_asked,
    newer_data_wins_either_way,
    an_invalidated_record_restores_stale_and_never_overwrites,
    a_seed_waits_for_the_first_persisting_use,
    an_observer_switching_to_persisting_options_takes_the_seed,
    a_seed_and_the_l2_record_newer_wins,
    an_undecodable_record_is_reported_and_the_key_still_works,
    encode_failures_skip_the_query,
    seeds_are_bounded_dropped_by_clear_and_remove_and_can_be_dehydrated,
);
