//! The main demo: caching, deduplication, stale-while-revalidate, invalidation and errors,
//! on the default runtime (tokio).
//!
//! Run with `cargo run --example demo`.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pystackquery::prelude::*;

#[derive(Clone, Debug)]
struct User {
    id: u32,
    name: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = QueryClient::with_config(QueryClientConfig::default().retry(1))?;
    let calls = Arc::new(AtomicUsize::new(0));

    let user = |id: u32| {
        let calls = calls.clone();
        QueryOptions::new(key!("user", id), move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                // A slow "API": 200 ms of simulated latency.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, std::io::Error>(Arc::new(User { id, name: format!("user-{id}") }))
            }
        })
        .stale_time(Duration::from_secs(60))
    };

    println!("1. Cold fetch (calls the function):");
    let t = Instant::now();
    let u = client.fetch_query(&user(1)).await?;
    println!("   {} (id {}) in {:?}", u.name, u.id, t.elapsed());

    println!("2. Cached fetch (fresh for 60 s, no call):");
    let t = Instant::now();
    let u = client.fetch_query(&user(1)).await?;
    println!("   {} in {:?}", u.name, t.elapsed());

    println!("3. Ten concurrent fetches of a cold key share one call:");
    let before = calls.load(Ordering::SeqCst);
    let opts = user(2);
    let results = futures::future::join_all((0..10).map(|_| client.fetch_query(&opts))).await;
    println!(
        "   {} results, {} call(s)",
        results.iter().filter(|r| r.is_ok()).count(),
        calls.load(Ordering::SeqCst) - before
    );

    println!("4. Invalidate ('user',) prefix: data stays, marked stale:");
    let n = client.invalidate_queries(key!("user"), true).await;
    let state =
        client.get_query_state::<Arc<User>, std::io::Error>(key!("user", 1))?.expect("cached");
    println!("   {n} queries invalidated; data_updated_at = {:?}", state.data_updated_at);

    println!("5. Stale read returns at once and revalidates in the background:");
    let t = Instant::now();
    let u = client.fetch_query(&user(1)).await?;
    println!("   {} in {:?} (refetch running: {})", u.name, t.elapsed(), {
        let s =
            client.get_query_state::<Arc<User>, std::io::Error>(key!("user", 1))?.expect("cached");
        s.is_fetching()
    });

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
    client.set_query_data(key!("user", 3), Arc::new(User { id: 3, name: "draft".into() }))?;
    let u = client.get_query_data::<Arc<User>>(key!("user", 3))?.expect("just set");
    println!("   {} without any fetch", u.name);
    println!("Done: {} calls of the user function in total.", calls.load(Ordering::SeqCst));
    Ok(())
}
