//! Coherence latency between real processes over Redis on loopback: this process writes
//! (`set_query_data`) N persisted keys one at a time; P - 1 other processes (this program
//! again, as `peer`) hold the same keys and print when each new value reached their memory.
//! Prints p50 / p99 / max of the time from the write to a peer's update, over every peer's
//! updates (all clocks are this machine's wall clock).
//!
//! Run with `cargo run --release --example fleet_latency --features tokio,redis -- [N] [P] [URL]`
//! (N = 1000 and P = 2 by default). Without a URL it starts a throwaway `redis-server` on a
//! free loopback port.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pystackquery::prelude::*;
use pystackquery::{CacheEvent, RedisBus, RedisStorage};

fn options(i: u64, value: &str) -> QueryOptions<String, String> {
    let value = value.to_string();
    QueryOptions::new(key!("lat", i), move || {
        let value = value.clone();
        async move { Ok(value) }
    })
    .persist()
}

/// A fleet member whose memory holds all `n` keys (an evicted key gets no update).
async fn member(url: &str, n: u64) -> (QueryClient, RedisBus) {
    let bus = RedisBus::connect(url).await.unwrap().with_namespace("fleet:");
    let config = QueryClientConfig::default()
        .storage(RedisStorage::connect(url).await.unwrap().with_namespace("fleet:"))
        .bus(bus.clone())
        .stale_time(Duration::from_secs(600))
        .cache_max_size((n as usize).max(1000));
    let client = QueryClient::with_config(config).unwrap();
    while bus.stats().subscriptions == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (client, bus)
}

fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// The second process: hold the keys, print `<i> <unix nanos>` for each update.
async fn peer(url: &str, n: u64) {
    let (client, _bus) = member(url, n).await;
    for i in 0..n {
        client.fetch_query(&options(i, "peer's own")).await.unwrap();
    }
    let (sender, receiver) = mpsc::channel();
    let sender = std::sync::Mutex::new(sender);
    let _events = client.subscribe_events(move |event| {
        if let CacheEvent::Updated(key) = event
            && let Some(i) = key.parts().get(1).and_then(|p| p.as_int())
        {
            let _ = sender.lock().unwrap().send((i, unix_nanos()));
        }
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut seen = 0;
    while seen < n {
        let (i, at) =
            tokio::task::block_in_place(|| receiver.recv_timeout(Duration::from_secs(10)))
                .expect("no update for 10 s");
        println!("{i} {at}");
        std::io::stdout().flush().unwrap();
        seen += 1;
    }
}

struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_server() -> (Server, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is not installed; pass a redis:// URL");
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    (Server(Some(child)), format!("redis://127.0.0.1:{port}/"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("peer") {
        return peer(&args[2], args[3].parse().unwrap()).await;
    }
    let n: u64 = args.get(1).map_or(1000, |n| n.parse().expect("N must be a number"));
    let processes: usize = args.get(2).map_or(2, |p| p.parse().expect("P must be a number"));
    assert!(processes >= 2, "P counts this process and at least one peer");
    let (_server, url) = match args.get(3) {
        Some(url) => (Server(None), url.clone()),
        None => start_server(),
    };
    let (client, _bus) = member(&url, n).await;
    for i in 0..n {
        client.fetch_query(&options(i, "v1")).await.unwrap();
    }
    client.flush_storage().await;

    let (lines, receiver) = mpsc::channel::<String>();
    let mut children = Vec::new();
    for _ in 1..processes {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["peer", &url, &n.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, stdout) = (lines.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        children.push(child);
    }
    let next = || {
        tokio::task::block_in_place(|| receiver.recv_timeout(Duration::from_secs(20)))
            .expect("a peer stopped answering")
    };
    for _ in 1..processes {
        assert_eq!(next(), "ready");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;

    let mut latencies = Vec::with_capacity(n as usize * (processes - 1));
    for i in 0..n {
        let sent = unix_nanos();
        client.set_query_data(key!("lat", i), format!("v2-{i}")).unwrap();
        for _ in 1..processes {
            let line = next();
            let (got, at) = line.split_once(' ').unwrap();
            assert_eq!(got.parse::<u64>().unwrap(), i, "updates arrive in order");
            latencies.push(Duration::from_nanos((at.parse::<u128>().unwrap() - sent) as u64));
        }
    }
    for mut child in children {
        let _ = child.wait();
    }
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "coherence latency, {processes} processes, loopback Redis, {n} sets ({} updates): p50 \
         {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        pct(50),
        pct(99),
        latencies[latencies.len() - 1]
    );
}
