//! Coherence over a real `redis-server` (started by the harness on a loopback port): two
//! clients with separate storage and bus connections stand for two processes. What one does
//! reaches the other; a Redis restart marks the other's persisted keys stale, so none that
//! was invalidated meanwhile is served fresh; and the propagation latency over loopback.
//!
//! Needs feature `redis` (and so a runtime). The real two-process figure is
//! `examples/fleet_latency.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use common::servers::RedisServer;
use pystackquery::{
    CacheEvent, QueryClient, QueryClientConfig, QueryKey, QueryOptions, RedisBus, RedisStorage, key,
};

async fn member(h: &Harness, url: &str) -> (QueryClient, RedisBus) {
    let bus = RedisBus::connect(url).await.unwrap().with_namespace("fleet:");
    let config = QueryClientConfig::default()
        .storage(RedisStorage::connect(url).await.unwrap().with_namespace("fleet:"))
        .bus(bus.clone())
        .stale_time(Duration::from_secs(60))
        .storage_timeout(Duration::from_millis(300))
        .storage_circuit_breaker(3, Duration::from_millis(200));
    (h.client_with(config), bus)
}

async fn subscribed(h: &Harness, bus: &RedisBus, count: u64) {
    h.eventually("the bus subscribed", || bus.stats().subscriptions >= count).await;
}

fn options(key: QueryKey, value: &str) -> QueryOptions<String, String> {
    let value = value.to_string();
    QueryOptions::new(key, move || {
        let value = value.clone();
        async move { Ok(value) }
    })
    .persist()
}

fn data(client: &QueryClient, key: QueryKey) -> Option<String> {
    client.get_query_data::<String>(key).unwrap()
}

fn invalidated(client: &QueryClient, key: QueryKey) -> bool {
    client.get_query_state::<String, String>(key).unwrap().is_some_and(|s| s.is_invalidated)
}

/// A fetches `keys`, B hydrates them from A's records.
async fn both_hold(a: &QueryClient, b: &QueryClient, keys: &[QueryKey]) {
    for key in keys {
        a.fetch_query(&options(key.clone(), "v1")).await.unwrap();
    }
    a.flush_storage().await;
    for key in keys {
        assert_eq!(b.fetch_query(&options(key.clone(), "b's own")).await.unwrap(), "v1");
    }
}

async fn propagation(h: Harness) {
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(reason) => return eprintln!("skipped: {reason}"),
    };
    let ((a, bus_a), (b, bus_b)) =
        (member(&h, &server.url()).await, member(&h, &server.url()).await);
    subscribed(&h, &bus_a, 1).await;
    subscribed(&h, &bus_b, 1).await;
    let keys = [key!("p", 1), key!("p", 2), key!("p", 3), key!("p", 4)];
    both_hold(&a, &b, &keys).await;

    a.invalidate_queries(key!("p", 1), false).await;
    h.eventually("invalidate reaches B", || invalidated(&b, key!("p", 1))).await;
    a.set_query_data(key!("p", 2), "v2".to_string()).unwrap();
    h.eventually("set reaches B", || data(&b, key!("p", 2)).as_deref() == Some("v2")).await;
    a.reset_queries(key!("p", 3));
    h.eventually("reset reaches B", || data(&b, key!("p", 3)).is_none()).await;
    a.remove_queries(key!("p", 4));
    h.eventually("remove reaches B", || b.find(key!("p", 4)).is_none()).await;
    assert_eq!(a.storage_stats().errors + b.storage_stats().errors, 0);
}

mod redis_propagation {
    #[cfg(feature = "tokio")]
    #[test]
    fn on_tokio() {
        crate::common::run_tokio_multi("propagation", super::propagation);
    }
    #[cfg(feature = "smol")]
    #[test]
    fn on_smol() {
        crate::common::run_smol("propagation", super::propagation);
    }
    #[cfg(feature = "async-std")]
    #[test]
    fn on_async_std() {
        crate::common::run_async_std("propagation", super::propagation);
    }
}

/// Another program (a Python process, say) publishes the documented JSON by hand, without
/// `parts`: the client finds the key by its storage string and applies it.
#[cfg(feature = "tokio")]
#[test]
fn a_hand_written_message_is_applied() {
    common::run_tokio_multi("foreign", |h| async move {
        let server = match RedisServer::start() {
            Ok(server) => server,
            Err(reason) => return eprintln!("skipped: {reason}"),
        };
        let ((a, bus_a), (b, bus_b)) =
            (member(&h, &server.url()).await, member(&h, &server.url()).await);
        subscribed(&h, &bus_a, 1).await;
        subscribed(&h, &bus_b, 1).await;
        both_hold(&a, &b, &[key!("user", 42)]).await;
        let mut conn = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let message = r#"{"origin":"py-1234","op":"invalidate","key":"('user', 42)"}"#;
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg("fleet:pystackquery:coherence")
            .arg(message)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(receivers, 2, "both clients subscribe on the documented channel");
        h.eventually("B applies it", || invalidated(&b, key!("user", 42))).await;
        h.eventually("A applies it", || invalidated(&a, key!("user", 42))).await;
    });
}

/// Redis is killed while B holds fresh keys; A invalidates them during the outage (the
/// messages are lost); after the restart B's resubscription marks every persisted key stale,
/// so none of the keys A invalidated is served fresh by B.
#[cfg(feature = "tokio")]
#[test]
fn redis_restart_marks_entries_stale() {
    common::run_tokio_multi("restart", |h| async move {
        let mut server = match RedisServer::start() {
            Ok(server) => server,
            Err(reason) => return eprintln!("skipped: {reason}"),
        };
        let ((a, _), (b, bus_b)) =
            (member(&h, &server.url()).await, member(&h, &server.url()).await);
        subscribed(&h, &bus_b, 1).await;
        let keys: Vec<QueryKey> = (0..20u64).map(|i| key!("r", i)).collect();
        both_hold(&a, &b, &keys).await;
        let fresh = |client: &QueryClient| {
            client.find_all(key!("r")).into_iter().filter(|q| !q.is_stale).count()
        };
        assert_eq!(fresh(&b), 20);

        server.kill();
        assert_eq!(a.invalidate_queries(key!("r"), false).await, 20);
        a.flush_storage().await;
        h.sleep(Duration::from_millis(100)).await;
        assert_eq!(fresh(&b), 20, "the messages were lost with Redis");

        server.restart();
        subscribed(&h, &bus_b, 2).await;
        h.eventually("B marks its persisted keys stale", || fresh(&b) == 0).await;
        let served_fresh = keys.iter().filter(|k| !invalidated(&b, (*k).clone())).count();
        assert_eq!(served_fresh, 0, "no key A invalidated is served fresh by B");
        eprintln!("redis restart: B's bus {:?}", bus_b.stats());
    });
}

/// Propagation latency of `set_query_data` in A to the update of B's memory, over loopback,
/// two clients with separate connections in one process (the two-process figure is the
/// `fleet_latency` example).
#[cfg(feature = "tokio")]
#[test]
fn redis_propagation_latency() {
    common::run_tokio_multi("latency", |h| async move {
        let server = match RedisServer::start() {
            Ok(server) => server,
            Err(reason) => return eprintln!("skipped: {reason}"),
        };
        const N: u64 = 200;
        let ((a, _), (b, bus_b)) =
            (member(&h, &server.url()).await, member(&h, &server.url()).await);
        subscribed(&h, &bus_b, 1).await;
        let keys: Vec<QueryKey> = (0..N).map(|i| key!("lat", i)).collect();
        both_hold(&a, &b, &keys).await;
        h.sleep(Duration::from_millis(5)).await;
        let (sender, receiver) = std::sync::mpsc::channel::<(QueryKey, Instant)>();
        let sender = std::sync::Mutex::new(sender);
        let _events = b.subscribe_events(move |event| {
            if let CacheEvent::Updated(key) = event {
                let _ = sender.lock().unwrap().send((key.clone(), Instant::now()));
            }
        });
        let mut latencies = Vec::new();
        for key in &keys {
            let start = Instant::now();
            a.set_query_data(key.clone(), "v2".to_string()).unwrap();
            let arrived = loop {
                match receiver.try_recv() {
                    Ok((updated, at)) if updated == *key => break at,
                    Ok(_) => {}
                    Err(_) => {
                        assert!(start.elapsed() < Duration::from_secs(5), "{key} never arrived");
                        h.sleep(Duration::from_micros(50)).await;
                    }
                }
            };
            latencies.push(arrived - start);
        }
        latencies.sort();
        let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
        eprintln!(
            "coherence latency over {N} sets (2 clients, 1 process, loopback Redis): \
             p50 {:?}, p99 {:?}, max {:?}",
            pct(50),
            pct(99),
            latencies[latencies.len() - 1]
        );
        assert!(keys.iter().all(|k| data(&b, k.clone()).as_deref() == Some("v2")));
    });
}
