//! The main demo, on tokio with SQLite: a fetch, a cache hit, deduplication,
//! stale-while-revalidate, an observer printing every state change, invalidation, an
//! optimistic mutation rolled back when the server rejects it (and one it accepts), and SQLite
//! persistence.
//!
//! Run with `cargo run --example demo`, then run it again: the second run is served from the
//! SQLite file the first one wrote (`target/pystackquery-demo.db`, or `$PYSTACKQUERY_DEMO_DB`).
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use pystackquery::SqliteStorage;
use pystackquery::prelude::*;
use serde::{Deserialize, Serialize};

/// Where the demo writes its lines: stdout when run, a buffer in its test.
pub(crate) type Out = Arc<Mutex<dyn Write + Send>>;

macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let mut w = $out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(w, $($arg)*);
    }};
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct User {
    pub(crate) id: u32,
    pub(crate) name: String,
}

/// The stand-in for a web API: 80 ms per request, a table of names, and a rule for renames.
#[derive(Debug, Default)]
struct Server {
    names: Mutex<HashMap<u32, String>>,
    user_calls: AtomicUsize,
    visits: AtomicUsize,
}

const LATENCY: Duration = Duration::from_millis(80);
const MAX_NAME: usize = 16;

impl Server {
    async fn get_user(&self, id: u32) -> Result<User, std::io::Error> {
        self.user_calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(LATENCY).await;
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let name = names.get(&id).cloned().unwrap_or_else(|| match id {
            1 => "Ada Lovelace".to_string(),
            _ => format!("user-{id}"),
        });
        Ok(User { id, name })
    }

    async fn rename(&self, id: u32, name: String) -> Result<User, String> {
        tokio::time::sleep(LATENCY).await;
        if name.chars().count() > MAX_NAME {
            return Err(format!("names have at most {MAX_NAME} characters"));
        }
        self.names.lock().unwrap_or_else(PoisonError::into_inner).insert(id, name.clone());
        Ok(User { id, name })
    }

    async fn count_visit(&self) -> Result<usize, std::io::Error> {
        let n = self.visits.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(LATENCY).await;
        Ok(n)
    }
}

/// What a run found, for its test.
#[allow(dead_code)] // read by the test
#[derive(Debug)]
pub(crate) struct Report {
    /// `('user', 1)` came from the SQLite file (an earlier run wrote it).
    pub(crate) served_from_disk: bool,
    /// Calls of the user function.
    pub(crate) user_calls: usize,
}

/// Waits until no fetch is in flight (the background refetches of a section have landed).
async fn settle(client: &QueryClient) {
    while client.is_fetching(()) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the demo with its SQLite file at `db`, writing to `out`.
pub(crate) async fn run(db: &Path, out: &Out) -> Result<Report, Box<dyn std::error::Error>> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let config = QueryClientConfig::default().retry(0).storage(SqliteStorage::open(db)?);
    let client = QueryClient::with_config(config)?;
    let server = Arc::new(Server::default());

    let user_in_memory = |id: u32| {
        let server = server.clone();
        QueryOptions::new(key!("user", id), move || {
            let server = server.clone();
            async move { server.get_user(id).await }
        })
        .stale_time(Duration::from_secs(60))
    };
    // Persisted queries are kept in SQLite (L2) too, so the next run starts warm.
    let user = |id: u32| user_in_memory(id).persist();
    let calls = || server.user_calls.load(Ordering::SeqCst);

    say!(out, "== 1. Fetch ('user', 1), with SQLite at {} ==", db.display());
    let t = Instant::now();
    let u = client.fetch_query(&user(1)).await?;
    let took = t.elapsed();
    let served_from_disk = client.storage_stats().hits > 0;
    if served_from_disk {
        // Older than the 60 s stale time, it is returned all the same, and refetched.
        let how = if client.is_fetching(key!("user", 1)) > 0 {
            "stale, so revalidating in the background"
        } else {
            "fresh, no call"
        };
        let written = client
            .get_query_state::<User, std::io::Error>(key!("user", 1))?
            .and_then(|state| state.data_updated_at)
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .map_or_else(String::new, |age| format!(" {} s ago", age.as_secs()));
        say!(
            out,
            "   {} in {}: served from disk (written{written} by an earlier run), {how}",
            u.name,
            ms(took)
        );
    } else {
        say!(out, "   {} in {}: not on disk yet, so the function was called", u.name, ms(took));
    }
    say!(out, "   this run served from disk: {}", if served_from_disk { "yes" } else { "no" });
    settle(&client).await;

    say!(out, "== 2. Cache hit: fresh for 60 s, so no call ==");
    let before = calls();
    let t = Instant::now();
    let u = client.fetch_query(&user(1)).await?;
    say!(out, "   {} in {}, {} call(s)", u.name, ms(t.elapsed()), calls() - before);

    say!(out, "== 3. Deduplication: ten concurrent fetches of a cold key share one call ==");
    let before = calls();
    let cold = user_in_memory(2); // memory only, so it is cold on every run
    let results = futures::future::join_all((0..10).map(|_| client.fetch_query(&cold))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    say!(out, "   {ok} results, {} call(s)", calls() - before);

    say!(out, "== 4. Stale-while-revalidate: ('visits',) is fresh for 100 ms ==");
    let visits = {
        let server = server.clone();
        QueryOptions::new(key!("visits"), move || {
            let server = server.clone();
            async move { server.count_visit().await }
        })
        .stale_time(Duration::from_millis(100))
    };
    let n = client.fetch_query(&visits).await?;
    say!(out, "   cold fetch: visits = {n}");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let t = Instant::now();
    let n = client.fetch_query(&visits).await?;
    let refetching = client.is_fetching(key!("visits")) > 0;
    say!(
        out,
        "   120 ms later: visits = {n} at once ({}), background refetch running: {refetching}",
        ms(t.elapsed())
    );
    settle(&client).await;
    let n = client.get_query_data::<usize>(key!("visits"))?.unwrap_or(0);
    say!(out, "   after the refetch landed: visits = {n}");

    say!(out, "== 5. An observer of ('user', 1) prints every state change from here on ==");
    let observer = client.watch(&user(1)).select(|u: &User| u.name.clone());
    let log = out.clone();
    let subscription = observer.subscribe(move |state| {
        say!(
            log,
            "   [observer] {} {}{}: {:?}",
            state.status.name(),
            state.fetch_status.name(),
            if state.is_invalidated { " (invalidated)" } else { "" },
            state.data.as_deref().unwrap_or("-")
        );
    });
    settle(&client).await;

    say!(out, "== 6. Invalidate the ('user',) prefix ==");
    let n = client.invalidate_queries(key!("user"), true).await;
    settle(&client).await;
    say!(out, "   {n} queries invalidated: the observed one was refetched at once,");
    if let Some(info) = client.find(key!("user", 2)) {
        say!(
            out,
            "   the unobserved ('user', 2) is only marked stale (stale: {}), until its next read",
            info.is_stale
        );
    }

    say!(
        out,
        "== 7. Optimistic rename, rejected by the server: shown at once, then rolled back =="
    );
    let rename = {
        let server = server.clone();
        MutationOptions::new(move |name: String| {
            let server = server.clone();
            async move { server.rename(1, name).await }
        })
        .on_mutate(|name: &String, cx| {
            // Shown to every reader and observer now; written to SQLite only on success.
            let _ = cx.set_optimistic(key!("user", 1), User { id: 1, name: name.clone() });
        })
        // On failure, put back what the optimistic write replaced. On success the optimistic
        // value becomes confirmed data and is written to SQLite.
        .on_error(|_error, _name, cx| cx.rollback())
    };
    match client.mutate(&rename, "Augusta Ada King, Countess of Lovelace".to_string()).await {
        Ok(u) => say!(out, "   unexpected success: {}", u.name),
        Err(e) => say!(out, "   the server said: {e}"),
    }
    let now = client.get_query_data::<User>(key!("user", 1))?.map(|u| u.name);
    say!(out, "   after the rollback: {}", now.as_deref().unwrap_or("-"));

    say!(out, "== 8. Optimistic rename, accepted ==");
    let u = client.mutate(&rename, "Ada King".to_string()).await?;
    say!(out, "   the server confirmed: {}", u.name);

    drop(subscription);
    settle(&client).await;
    client.flush_storage().await;

    say!(out, "== 9. SQLite persistence ==");
    say!(out, "   L2: {}", client.storage_stats());
    say!(out, "   {} call(s) of the user function in this run", calls());
    say!(out, "   run it again: step 1 will be served from {}", db.display());
    Ok(Report { served_from_disk, user_calls: calls() })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = std::env::var_os("PYSTACKQUERY_DEMO_DB")
        .map_or_else(|| PathBuf::from("target/pystackquery-demo.db"), PathBuf::from);
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    run(&db, &out).await?;
    Ok(())
}
