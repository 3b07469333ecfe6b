//! One process of a fleet sharing a Redis with single flight on: fetches `KEYS` cold keys
//! concurrently once the wall clock reaches `START` (Unix seconds, so that every process of
//! the fleet starts together), then prints how many times its query function was called.
//!
//! Optional: `LOCK_TTL_MS`, the single-flight lock ttl (5000 by default), and `hold`: then the
//! query function never finishes in time (it sleeps 60 s); the worker prints `holding` once it
//! has called it for every key (it holds every key's lock then), for a test to kill it.
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
    let usage = "usage: single_flight_worker URL KEYS START [LOCK_TTL_MS [hold]]";
    let url = args.next().ok_or(usage)?;
    let keys: u32 = args.next().ok_or("KEYS missing")?.parse()?;
    let start: f64 = args.next().ok_or("START missing")?.parse()?;
    let lock_ttl = match args.next() {
        Some(ms) => Duration::from_millis(ms.parse()?),
        None => Duration::from_secs(5),
    };
    let hold = match args.next().as_deref() {
        None => false,
        Some("hold") => true,
        Some(_) => return Err(usage.into()),
    };
    let work = match hold {
        true => Duration::from_secs(60),
        false => Duration::from_millis(20),
    };

    let storage = RedisStorage::connect(&url).await?;
    let config = QueryClientConfig::default()
        .storage(storage)
        .storage_timeout(Duration::from_secs(2))
        // A record another process just wrote is fresh: no revalidation follows hydration.
        .stale_time(Duration::from_secs(60))
        .single_flight(lock_ttl);
    let client = QueryClient::with_config(config)?;
    let calls = Arc::new(AtomicUsize::new(0));

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    if start > now {
        tokio::time::sleep(Duration::from_secs_f64(start - now)).await;
    }
    let fetches = (0..keys).map(|k| {
        let calls = calls.clone();
        let options = QueryOptions::<String, String>::new(key!("fleet", k), move || {
            let called = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if hold && called == keys as usize {
                // Every key's lock is ours now.
                println!("holding");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            async move {
                // A slow "API".
                tokio::time::sleep(work).await;
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
