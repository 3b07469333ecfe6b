//! A long-running worker on smol: observers with a `refetch_interval` poll three local
//! sources (a temperature sensor, a job queue, an exchange-rate feed that fails now and then)
//! and print every change of state; Ctrl-C stops it cleanly, printing how often each source
//! was read.
//!
//! Run with `cargo run --example background_worker --features smol` and stop it with Ctrl-C.
//! Options: `--for-seconds N` stops by itself after N seconds; `--interval-ms N` sets the base
//! polling period (1000 ms).
#![allow(clippy::print_stdout)]

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pystackquery::prelude::*;

/// Where the worker writes its lines: stdout when run, a buffer in its test.
pub(crate) type Out = Arc<Mutex<dyn Write + Send>>;

macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let mut w = $out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(w, $($arg)*);
    }};
}

/// The command line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settings {
    /// The fastest source's polling period; the others poll at 1.5x and 2x.
    pub(crate) interval: Duration,
    /// Stop by itself after this long (else only on Ctrl-C).
    pub(crate) run_for: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Self { interval: Duration::from_secs(1), run_for: None }
    }
}

/// Parses `--for-seconds N` and `--interval-ms N`.
pub(crate) fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Settings, String> {
    let mut settings = Settings::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--for-seconds" => {
                let secs: f64 = value(&arg)?.parse().map_err(|e| format!("--for-seconds: {e}"))?;
                let run_for =
                    Duration::try_from_secs_f64(secs).map_err(|e| format!("--for-seconds: {e}"))?;
                settings.run_for = Some(run_for);
            }
            "--interval-ms" => {
                let ms: u64 = value(&arg)?.parse().map_err(|e| format!("--interval-ms: {e}"))?;
                settings.interval = Duration::from_millis(ms.max(1));
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: background_worker [--for-seconds N] [--interval-ms N]"
                ));
            }
        }
    }
    Ok(settings)
}

/// One local data source: an async function with a call counter, whose readings change from
/// call to call, and which may fail every `fail_every`-th call.
#[derive(Debug)]
pub(crate) struct Source {
    pub(crate) name: &'static str,
    unit: &'static str,
    decimals: usize,
    /// Its polling period, as a multiple of the base interval (in halves).
    halves: u32,
    fail_every: Option<usize>,
    reading: fn(usize) -> f64,
    calls: AtomicUsize,
    changes: AtomicUsize,
}

impl Source {
    /// How many times the source was read.
    pub(crate) fn reads(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Reads the source: 10 ms of simulated latency on the client's runtime.
    async fn read(&self, runtime: &Runtime) -> Result<f64, String> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        runtime.sleep(Duration::from_millis(10)).await;
        if self.fail_every.is_some_and(|k| n.is_multiple_of(k)) {
            return Err("upstream timed out".to_string());
        }
        Ok((self.reading)(n))
    }
}

/// The three sources the worker watches.
pub(crate) fn sources() -> Vec<Arc<Source>> {
    let source = |name, unit, decimals, halves, fail_every, reading| {
        Arc::new(Source {
            name,
            unit,
            decimals,
            halves,
            fail_every,
            reading,
            calls: AtomicUsize::new(0),
            changes: AtomicUsize::new(0),
        })
    };
    vec![
        // A sensor drifting around 21 °C.
        source("sensor", "°C", 2, 2, None, |n| 20.0 + ((n * 7) % 10) as f64 / 4.0),
        // A job queue filling and draining.
        source("queue", "jobs", 0, 3, None, |n| ((n * 5) % 17) as f64),
        // An exchange-rate feed whose every third call times out.
        source("eur_usd", "USD", 4, 4, Some(3), |n| 1.08 + n as f64 / 1000.0),
    ]
}

/// What the worker did per source: calls of its function, and state changes printed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SourceReport {
    pub(crate) name: &'static str,
    pub(crate) calls: usize,
    pub(crate) changes: usize,
}

/// Watches `sources` on `client` until `stop` completes, printing each change of state to
/// `out`; then unsubscribes (which stops the polling) and prints a summary.
pub(crate) async fn run(
    client: &QueryClient,
    sources: &[Arc<Source>],
    settings: &Settings,
    stop: impl Future<Output = ()>,
    out: &Out,
) -> Vec<SourceReport> {
    let runtime = client.runtime().clone();
    let start = runtime.now();
    let every = |source: &Source| settings.interval * source.halves / 2;
    say!(out, "watching {} sources; Ctrl-C stops", sources.len());
    for source in sources {
        say!(out, "  {:<8} every {:?}", source.name, every(source));
    }
    let mut subscriptions = Vec::new();
    for source in sources {
        let every = every(source);
        let options = {
            let (source, runtime) = (source.clone(), runtime.clone());
            QueryOptions::new(key!("source", source.name), move || {
                let (source, runtime) = (source.clone(), runtime.clone());
                async move { source.read(&runtime).await }
            })
            .refetch_interval(every)
            .retry(0)
        };
        // The listener gets every state; it prints only when the status or the value changed
        // (a refetch starting or ending with the same value is not a change).
        let last: Mutex<Option<(QueryStatus, Option<f64>)>> = Mutex::new(None);
        let (log, source, runtime) = (out.clone(), source.clone(), runtime.clone());
        let subscription = client.watch(&options).subscribe(move |state| {
            let now = (state.status, state.data);
            let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.as_ref() == Some(&now) {
                return;
            }
            *last = Some(now);
            source.changes.fetch_add(1, Ordering::SeqCst);
            let at = runtime.now().saturating_duration_since(start).as_secs_f64();
            let shown = state
                .data
                .map_or("-".to_string(), |v| format!("{v:.*} {}", source.decimals, source.unit));
            let what = match (&state.status, &state.error) {
                (QueryStatus::Error, Some(e)) => format!("error: {e} (still showing {shown})"),
                (QueryStatus::Success, _) => shown,
                (status, _) => status.name().to_lowercase(),
            };
            say!(log, "[{at:>7.2}s] {:<8} {what}", source.name);
        });
        subscriptions.push(subscription);
    }

    stop.await;
    drop(subscriptions); // no observer left: the polling stops
    let at = runtime.now().saturating_duration_since(start);
    say!(out, "stopped after {:.2}s", at.as_secs_f64());
    sources
        .iter()
        .map(|s| {
            let report = SourceReport {
                name: s.name,
                calls: s.reads(),
                changes: s.changes.load(Ordering::SeqCst),
            };
            say!(out, "  {:<8} {} reads, {} changes", report.name, report.calls, report.changes);
            report
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = parse_args(std::env::args().skip(1))?;
    let (ctrl_c, on_ctrl_c) = smol::channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = ctrl_c.try_send(());
    })?;
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    let runtime = pystackquery::SmolRuntime::global().into_runtime();
    let client = QueryClient::with_runtime(runtime, QueryClientConfig::default());
    smol::block_on(async {
        let interrupted = async {
            let _ = on_ctrl_c.recv().await;
        };
        let stop = async {
            match settings.run_for {
                Some(run_for) => {
                    let deadline = Instant::now() + run_for;
                    let elapsed = async {
                        smol::Timer::at(deadline).await;
                    };
                    smol::future::or(interrupted, elapsed).await;
                }
                None => interrupted.await,
            }
        };
        run(&client, &sources(), &settings, stop, &out).await;
    });
    Ok(())
}
