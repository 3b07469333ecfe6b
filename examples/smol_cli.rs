//! A command-line tool on smol whose answers survive between runs: it looks up the latest
//! version of many packages in parallel from a slow (local, simulated) registry, with a
//! progress bar, and keeps the answers in SQLite for an hour. Run it twice: the second run
//! makes no registry call. `--inspect` then prints the cache (key, status, age) as a table.
//!
//! ```text
//! cargo run --example smol_cli --features smol -- [--db PATH] [--inspect] [NAME...]
//! ```
//!
//! Without names it looks up 24 well-known ones; the cache is `target/pystackquery-cli.db`
//! unless `--db` says otherwise.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pystackquery::prelude::*;
use pystackquery::{QueryInfo, SmolRuntime, SqliteStorage};
use serde::{Deserialize, Serialize};

/// Where the tool writes its lines: stdout when run, a buffer in its test.
pub(crate) type Out = Arc<Mutex<dyn Write + Send>>;

macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let mut w = $out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(w, $($arg)*);
    }};
}

/// The names looked up when none is given.
pub(crate) const DEFAULT_NAMES: [&str; 24] = [
    "serde",
    "tokio",
    "smol",
    "rand",
    "regex",
    "clap",
    "anyhow",
    "thiserror",
    "log",
    "tracing",
    "futures",
    "bytes",
    "hyper",
    "reqwest",
    "axum",
    "rayon",
    "itertools",
    "chrono",
    "uuid",
    "once_cell",
    "parking_lot",
    "criterion",
    "proptest",
    "indicatif",
];

/// How long an answer counts as fresh: within it, a run makes no registry call.
const FRESH_FOR: Duration = Duration::from_secs(3600);

/// The command line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Args {
    pub(crate) db: PathBuf,
    pub(crate) inspect: bool,
    pub(crate) names: Vec<String>,
}

/// Parses `[--db PATH] [--inspect] [NAME...]`.
pub(crate) fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed =
        Args { db: PathBuf::from("target/pystackquery-cli.db"), inspect: false, names: Vec::new() };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--db" => parsed.db = args.next().ok_or("--db needs a path")?.into(),
            "--inspect" => parsed.inspect = true,
            flag if flag.starts_with('-') => {
                return Err(format!(
                    "unknown option {flag}; usage: smol_cli [--db PATH] [--inspect] [NAME...]"
                ));
            }
            name => parsed.names.push(name.to_string()),
        }
    }
    if parsed.names.is_empty() {
        parsed.names = DEFAULT_NAMES.iter().map(ToString::to_string).collect();
    }
    Ok(parsed)
}

/// A registry's answer: what is cached and persisted (serde, for SQLite).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Release {
    pub(crate) name: String,
    pub(crate) version: String,
}

/// The stand-in for a package registry's HTTP API: 50 to 400 ms per lookup, counted.
#[derive(Debug)]
struct Registry {
    runtime: Runtime,
    calls: AtomicUsize,
}

impl Registry {
    async fn latest(&self, name: &str) -> Result<Release, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // A stable pseudo-random number per name, for its latency and version.
        let h = name.bytes().fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        self.runtime.sleep(Duration::from_millis(50 + h % 350)).await;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) {
            return Err(format!("no package named {name:?}"));
        }
        let version = format!("{}.{}.{}", h % 3, (h / 3) % 40, (h / 120) % 17);
        Ok(Release { name: name.to_string(), version })
    }
}

/// What a run did, for its test.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    /// Calls made to the registry.
    pub(crate) upstream_calls: usize,
    /// Answers restored from SQLite.
    pub(crate) from_disk: u64,
    /// Each name with its version, or the error.
    pub(crate) answers: Vec<(String, Result<String, String>)>,
}

/// Looks up every name of `args` (in parallel, with a progress bar drawn to `progress`),
/// prints the answers, and the cache as a table with `--inspect`.
pub(crate) async fn run(
    args: &Args,
    out: &Out,
    progress: ProgressDrawTarget,
) -> Result<Summary, Box<dyn std::error::Error>> {
    if let Some(dir) = args.db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let runtime = SmolRuntime::global().into_runtime();
    // FRESH_FOR is the client's default stale time too: the cache listing judges an answer
    // restored from SQLite (and not refetched) by the client's default.
    let config = QueryClientConfig::default()
        .retry(1)
        .stale_time(FRESH_FOR)
        .storage(SqliteStorage::open(&args.db)?);
    let client = QueryClient::with_runtime(runtime.clone(), config);
    let registry = Arc::new(Registry { runtime, calls: AtomicUsize::new(0) });

    let release = |name: &str| {
        let (registry, name) = (registry.clone(), name.to_string());
        QueryOptions::new(key!("release", name.as_str()), move || {
            let (registry, name) = (registry.clone(), name.clone());
            async move { registry.latest(&name).await }
        })
        .stale_time(FRESH_FOR)
        .retry_delay(|_| Duration::from_millis(100))
        .persist()
    };

    let bar = ProgressBar::with_draw_target(Some(args.names.len() as u64), progress);
    if let Ok(style) = ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {wide_msg}") {
        bar.set_style(style);
    }
    let lookups = args.names.iter().map(|name| {
        let (client, bar, options) = (&client, &bar, release(name));
        async move {
            let answer = client.fetch_query(&options).await;
            bar.inc(1);
            bar.set_message(name.clone());
            (name.clone(), answer.map(|r| r.version).map_err(|e| e.to_string()))
        }
    });
    let answers = futures::future::join_all(lookups).await;
    bar.finish_and_clear();

    for (name, answer) in &answers {
        match answer {
            Ok(version) => say!(out, "{name:<14} {version}"),
            Err(error) => say!(out, "{name:<14} error: {error}"),
        }
    }
    // Stale answers are served at once and revalidated: let that land before writing out.
    while client.is_fetching(()) > 0 {
        runtime_sleep(&client, Duration::from_millis(10)).await;
    }
    client.flush_storage().await;
    let summary = Summary {
        upstream_calls: registry.calls.load(Ordering::SeqCst),
        from_disk: client.storage_stats().hits,
        answers,
    };
    say!(
        out,
        "{} names: {} registry calls, {} served from {}",
        summary.answers.len(),
        summary.upstream_calls,
        summary.from_disk,
        args.db.display()
    );
    if args.inspect {
        let mut cache = client.find_all(());
        cache.sort_by(|a, b| a.key.cmp(&b.key));
        print_table(out, &cache);
    }
    Ok(summary)
}

async fn runtime_sleep(client: &QueryClient, d: Duration) {
    client.runtime().sleep(d).await;
}

fn age(d: Option<Duration>) -> String {
    match d.map(|d| d.as_secs()) {
        None => "-".to_string(),
        Some(s) if s < 60 => format!("{s}s"),
        Some(s) if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        Some(s) => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The cache as a table: key, status, fetch status, age, stale, persisted.
fn print_table(out: &Out, cache: &[QueryInfo]) {
    let keys: Vec<String> = cache.iter().map(|q| q.key.to_string()).collect();
    let width = keys.iter().map(String::len).max().unwrap_or(0).max(3);
    say!(
        out,
        "{:<width$}  {:<7}  {:<8}  {:>7}  {:<5}  persisted",
        "key",
        "status",
        "fetch",
        "age",
        "stale"
    );
    for (key, q) in keys.iter().zip(cache) {
        say!(
            out,
            "{key:<width$}  {:<7}  {:<8}  {:>7}  {:<5}  {}",
            q.status.name(),
            q.fetch_status.name(),
            age(q.age),
            if q.is_stale { "yes" } else { "no" },
            if q.persisted { "yes" } else { "no" },
        );
    }
    say!(out, "{} queries in the cache", cache.len());
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args(std::env::args().skip(1))?;
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    // indicatif draws on stderr when it is a terminal, and nothing otherwise.
    smol::block_on(run(&args, &out, ProgressDrawTarget::stderr()))?;
    Ok(())
}
