//! One process of a fleet sharing a Redis with single flight on: fetches `KEYS` cold keys
//! concurrently once the wall clock reaches `START` (Unix seconds, so that every process of
//! the fleet starts together), then prints how many times its query function was called.
//!
//! `cargo run --example single_flight_worker --features redis -- redis://127.0.0.1:6379/ 100 0`
//! (the test `single_flight_redis` starts several of these against one server).
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pystackquery::RedisStorage;
use pystackquery::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: single_flight_worker URL KEYS START")?;
    let keys: u32 = args.next().ok_or("KEYS missing")?.parse()?;
    let start: f64 = args.next().ok_or("START missing")?.parse()?;

    let storage = RedisStorage::connect(&url).await?;
    let config = QueryClientConfig::default()
        .storage(storage)
        .storage_timeout(Duration::from_secs(2))
        // A record another process just wrote is fresh: no revalidation follows hydration.
        .stale_time(Duration::from_secs(60))
        .single_flight(Duration::from_secs(5));
    let client = QueryClient::with_config(config)?;
    let calls = Arc::new(AtomicUsize::new(0));

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    if start > now {
        tokio::time::sleep(Duration::from_secs_f64(start - now)).await;
    }
    let fetches = (0..keys).map(|k| {
        let calls = calls.clone();
        let options = QueryOptions::<String, String>::new(key!("fleet", k), move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                // A slow "API".
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(format!("v{k}"))
            }
        })
        .persist();
        let client = client.clone();
        async move { client.fetch_query(&options).await }
    });
    for (k, result) in futures::future::join_all(fetches).await.into_iter().enumerate() {
        assert_eq!(result?, format!("v{k}"));
    }
    client.flush_storage().await;
    println!("{}", calls.load(Ordering::SeqCst));
    Ok(())
}
