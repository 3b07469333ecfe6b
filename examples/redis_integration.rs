//! Two processes sharing one Redis: the first fetches a few profiles and persists them (L2);
//! the second, started by the first, reads them from Redis without calling its own fetch
//! function; then the first invalidates one profile and the second sees it go stale at once
//! (the coherence bus), and refetches it on its next read.
//!
//! Run with `cargo run --example redis_integration --features redis`. Without
//! `--redis-url redis://HOST:PORT/` it starts a throwaway `redis-server` on a free 127.0.0.1 port
//! and stops it at the end (if `redis-server` is not installed it says so and exits).
#![allow(clippy::print_stdout)]
// The public items are for the tests that include this file; their fields speak for themselves.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pystackquery::prelude::*;
use pystackquery::{RedisBus, RedisStorage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The keys both processes use, under this Redis namespace.
pub const NAMESPACE: &str = "redis-example:";
/// The profiles the first process fetches.
pub const IDS: [u32; 3] = [1, 2, 3];
/// The profile it invalidates.
pub const INVALIDATED: u32 = 2;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What both processes cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: u32,
    pub name: String,
    /// Which process fetched it.
    pub fetched_by: String,
}

/// The query of profile `id`, persisted in Redis; `calls` counts the fetches.
pub fn profile_query(
    id: u32,
    role: &str,
    calls: Arc<AtomicUsize>,
) -> QueryOptions<Profile, String> {
    let role = role.to_string();
    QueryOptions::new(key!("profile", id), move || {
        calls.fetch_add(1, Ordering::SeqCst);
        let fetched_by = role.clone();
        async move {
            // A slow source only this process can reach.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(Profile { id, name: format!("profile {id}"), fetched_by })
        }
    })
    .stale_time(Duration::from_secs(300))
    .persist()
}

/// A client whose L2 is Redis at `url`, joined to the coherence bus; returns once its bus
/// subscription is up.
pub async fn connect(url: &str) -> Result<QueryClient, BoxError> {
    let bus = RedisBus::connect(url).await?.with_namespace(NAMESPACE);
    let storage = RedisStorage::connect(url).await?.with_namespace(NAMESPACE);
    let client =
        QueryClient::with_config(QueryClientConfig::default().storage(storage).bus(bus.clone()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while bus.stats().subscriptions == 0 {
        if Instant::now() > deadline {
            return Err("the coherence bus did not subscribe within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(client)
}

/// The second process (`reader`): reads every profile (from Redis), reports how many fetches
/// that took, then waits for the invalidation and refetches. Each report is a line given to
/// `say` (the first process reads them from its stdout).
pub async fn reader(url: &str, mut say: impl FnMut(String)) -> Result<(), BoxError> {
    let client = connect(url).await?;
    let calls = Arc::new(AtomicUsize::new(0));
    for id in IDS {
        let profile = client.fetch_query(&profile_query(id, "reader", calls.clone())).await?;
        say(format!("hydrated {id} fetched_by={}", profile.fetched_by));
    }
    say(format!("fetches {}", calls.load(Ordering::SeqCst)));
    say("ready".into());

    let key = key!("profile", INVALIDATED);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.find(key.clone()).is_some_and(|info| info.is_invalidated) {
        if Instant::now() > deadline {
            return Err("no invalidation arrived within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    say(format!("invalidated {key}"));
    // Waits for a new value rather than serving the stale one.
    let profile =
        client.fetch_query_fresh(&profile_query(INVALIDATED, "reader", calls.clone())).await?;
    say(format!("refetched {INVALIDATED} fetched_by={}", profile.fetched_by));
    say(format!("fetches {}", calls.load(Ordering::SeqCst)));
    client.flush_storage().await;
    Ok(())
}

/// What the first process saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Fetches made by the first process.
    pub writer_fetches: usize,
    /// Every line the second process reported.
    pub reader_lines: Vec<String>,
}

impl Outcome {
    /// The reader's fetch count reported before the invalidation.
    pub fn reader_fetches_before(&self) -> Option<usize> {
        self.reader_lines.iter().find_map(|l| l.strip_prefix("fetches ")?.parse().ok())
    }

    /// Its count at the end.
    pub fn reader_fetches_after(&self) -> Option<usize> {
        self.reader_lines.iter().rev().find_map(|l| l.strip_prefix("fetches ")?.parse().ok())
    }
}

/// The first process (`writer`): fetches and persists every profile, starts the reader with
/// `start_reader` (which returns the reader's lines), waits until the reader is ready,
/// invalidates one profile and waits for the reader to finish.
pub async fn writer(
    url: &str,
    start_reader: impl FnOnce() -> Result<mpsc::UnboundedReceiver<String>, BoxError>,
) -> Result<Outcome, BoxError> {
    let client = connect(url).await?;
    let calls = Arc::new(AtomicUsize::new(0));
    for id in IDS {
        client.fetch_query(&profile_query(id, "writer", calls.clone())).await?;
    }
    // Wait until the records are in Redis.
    client.flush_storage().await;
    let mut outcome =
        Outcome { writer_fetches: calls.load(Ordering::SeqCst), ..Outcome::default() };
    println!(
        "[writer] fetched {} profiles ({} fetches), persisted to Redis",
        IDS.len(),
        outcome.writer_fetches
    );

    let mut lines = start_reader()?;
    let mut next = async || -> Result<String, BoxError> {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.recv())
            .await
            .map_err(|_| "the reader stopped answering")?
            .ok_or("the reader ended early")?;
        println!("[reader] {line}");
        Ok(line)
    };
    loop {
        let line = next().await?;
        outcome.reader_lines.push(line.clone());
        if line == "ready" {
            break;
        }
    }
    let n =
        client.invalidate_queries(QueryFilter::exact(key!("profile", INVALIDATED)), false).await;
    println!("[writer] invalidated {n} key: ('profile', {INVALIDATED})");
    while let Ok(line) = next().await {
        outcome.reader_lines.push(line);
    }
    Ok(outcome)
}

/// A `redis-server` this program started, stopped on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    pub url: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `redis-server` on a free 127.0.0.1 port, without persistence. `Ok(None)` when it is
/// not installed.
pub fn start_redis() -> Result<Option<RedisServer>, BoxError> {
    if Command::new("redis-server").arg("--version").output().is_err() {
        return Ok(None);
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()?;
    let server = RedisServer { child, url: format!("redis://127.0.0.1:{port}/") };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("redis-server did not start on port {port}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Some(server))
}

/// Starts this program again as the reader; its stdout lines come back on the channel.
fn spawn_reader_process(url: &str) -> Result<mpsc::UnboundedReceiver<String>, BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["reader", url])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (send, receive) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
        let _ = child.wait();
    });
    Ok(receive)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("reader") {
        let url = args.get(1).ok_or("reader needs a URL")?;
        return reader(url, |line| {
            println!("{line}");
            let _ = std::io::stdout().flush();
        })
        .await;
    }
    let (_server, url) = match args.as_slice() {
        [flag, url] if flag == "--redis-url" => (None, url.clone()),
        [] => match start_redis()? {
            Some(server) => {
                let url = server.url.clone();
                println!("started redis-server at {url}");
                (Some(server), url)
            }
            None => {
                println!(
                    "redis-server is not installed (e.g. apt-get install redis-server); pass --redis-url redis://HOST:PORT/ to use another server. Nothing to do."
                );
                return Ok(());
            }
        },
        _ => return Err("usage: redis_integration [--redis-url redis://HOST:PORT/]".into()),
    };
    let outcome = writer(&url, || spawn_reader_process(&url)).await?;
    println!(
        "done: the writer fetched {} time(s); the reader fetched {:?} time(s) before the \
         invalidation (it read Redis) and {:?} in all (the refetch after it)",
        outcome.writer_fetches,
        outcome.reader_fetches_before(),
        outcome.reader_fetches_after()
    );
    Ok(())
}
