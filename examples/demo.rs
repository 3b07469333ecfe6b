//! The main demo: caching, deduplication, stale-while-revalidate, invalidation, errors and
//! SQLite persistence, on the default runtime (tokio).
//!
//! Run with `cargo run --example demo`, then run it again: the second run is served from the
//! SQLite file the first one wrote (`target/pystackquery-demo.db`, or `$PYSTACKQUERY_DEMO_DB`).
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pystackquery::SqliteStorage;
use pystackquery::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct User {
    id: u32,
    name: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var_os("PYSTACKQUERY_DEMO_DB")
        .map_or_else(|| PathBuf::from("target/pystackquery-demo.db"), PathBuf::from);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let storage = SqliteStorage::open(&path)?;
    let config = QueryClientConfig::default().retry(1).storage(storage);
    let client = QueryClient::with_config(config)?;
    let calls = Arc::new(AtomicUsize::new(0));

    let user_in_memory = |id: u32| {
        let calls = calls.clone();
        QueryOptions::new(key!("user", id), move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                // A slow "API": 200 ms of simulated latency.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, std::io::Error>(User { id, name: format!("user-{id}") })
            }
        })
        .stale_time(Duration::from_secs(60))
    };
    // Persisted queries are also kept in SQLite (L2), so the next run starts warm.
    let user = |id: u32| user_in_memory(id).persist();

    println!("1. First fetch of ('user', 1), with SQLite at {}:", path.display());
    let t = Instant::now();
    let u = client.fetch_query(&user(1)).await?;
    let took = t.elapsed();
    if client.storage_stats().hits > 0 {
        let fresh = calls.load(Ordering::SeqCst) == 0;
        println!(
            "   {} in {took:?}: served from disk (written by an earlier run), {}",
            u.name,
            if fresh { "fresh, no call" } else { "stale, revalidating in the background" }
        );
    } else {
        println!("   {} in {took:?}: not on disk yet, so the function was called", u.name);
    }

    println!("2. Cached fetch (fresh for 60 s, no call):");
    let t = Instant::now();
    let u = client.fetch_query(&user(1)).await?;
    println!("   {} in {:?}", u.name, t.elapsed());

    println!("3. Ten concurrent fetches of a cold key share one call:");
    let before = calls.load(Ordering::SeqCst);
    let opts = user_in_memory(2); // memory only, so it is cold on every run
    let results = futures::future::join_all((0..10).map(|_| client.fetch_query(&opts))).await;
    println!(
        "   {} results, {} call(s)",
        results.iter().filter(|r| r.is_ok()).count(),
        calls.load(Ordering::SeqCst) - before
    );

    println!("4. Invalidate the ('user',) prefix: data stays, marked stale (on disk too):");
    let n = client.invalidate_queries(key!("user"), true).await;
    let state = client.get_query_state::<User, std::io::Error>(key!("user", 1))?.expect("cached");
    println!("   {n} queries invalidated; data_updated_at = {:?}", state.data_updated_at);

    println!("5. Stale read returns at once and revalidates in the background:");
    let t = Instant::now();
    let u = client.fetch_query(&user(1)).await?;
    let state = client.get_query_state::<User, std::io::Error>(key!("user", 1))?.expect("cached");
    println!("   {} in {:?} (refetch running: {})", u.name, t.elapsed(), state.is_fetching());

    println!("6. Errors are retried, then shared by every caller:");
    let failing = QueryOptions::new(key!("broken"), || async {
        Err::<u8, _>(std::io::Error::other("service down"))
    })
    .retry_delay(|_| Duration::from_millis(50));
    match client.fetch_query(&failing).await {
        Ok(_) => println!("   unexpected success"),
        Err(e) => println!("   error after 1 retry: {e}"),
    }

    println!("7. Optimistic write with set_query_data:");
    client.set_query_data(key!("user", 3), User { id: 3, name: "draft".into() })?;
    let u = client.get_query_data::<User>(key!("user", 3))?.expect("just set");
    println!("   {} without any fetch", u.name);

    // Let the background refetch of step 5 land, then write everything pending to disk.
    tokio::time::sleep(Duration::from_millis(250)).await;
    client.flush_storage().await;
    println!("Done: {} call(s) of the user function in total.", calls.load(Ordering::SeqCst));
    println!("L2: {}", client.storage_stats());
    println!("Run it again: step 1 will be served from {}.", path.display());
    Ok(())
}
