//! The examples `demo`, `background_worker`, `smol_cli` and `infinite_scroll`, run through the
//! functions their `main` calls, with their output checked.
#![allow(clippy::unwrap_used)]

#[path = "../examples/background_worker.rs"]
#[allow(dead_code)]
mod background_worker;
#[path = "../examples/demo.rs"]
#[allow(dead_code)]
mod demo;
#[path = "../examples/infinite_scroll.rs"]
#[allow(dead_code)]
mod infinite_scroll;
#[path = "../examples/smol_cli.rs"]
#[allow(dead_code)]
mod smol_cli;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pystackquery::testing::TestRuntime;
use pystackquery::{QueryClient, QueryClientConfig, SmolRuntime, key};

/// What the examples write to in these tests.
type Buf = Arc<Mutex<Vec<u8>>>;

/// A buffer, and the `Out` handle the examples take to write to it (each example declares the
/// same `Out` type).
fn buffer() -> (Buf, demo::Out) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let out: Arc<Mutex<dyn Write + Send>> = buf.clone();
    (buf, out)
}

fn text(buf: &Buf) -> String {
    String::from_utf8(buf.lock().unwrap().clone()).unwrap()
}

/// Takes the buffer's text so far, leaving it empty.
fn take(buf: &Buf) -> String {
    String::from_utf8(std::mem::take(&mut *buf.lock().unwrap())).unwrap()
}

/// A SQLite path of its own in the temp dir, removed (with its journal files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let file = format!("pystackquery-example-{name}-{}-{n}.db", std::process::id());
        let db = Self(std::env::temp_dir().join(file));
        db.remove();
        db
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn remove(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The index of the first line containing `needle`, failing with the whole output otherwise.
fn line_of(output: &str, needle: &str) -> usize {
    output
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{output}"))
}

// ---- demo ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_second_run_is_served_from_disk() {
    let db = TempDb::new("demo");
    let (buf, out) = buffer();

    let first = demo::run(db.path(), &out).await.unwrap();
    let output = take(&buf);
    assert!(!first.served_from_disk, "{output}");
    assert!(output.contains("this run served from disk: no"), "{output}");
    assert!(output.contains("not on disk yet, so the function was called"), "{output}");
    // Cache hit, deduplication, stale-while-revalidate.
    assert!(output.contains("Ada Lovelace in") && output.contains(", 0 call(s)"), "{output}");
    assert!(output.contains("10 results, 1 call(s)"), "{output}");
    assert!(output.contains("visits = 1 at once"), "{output}");
    assert!(output.contains("after the refetch landed: visits = 2"), "{output}");
    // The observer saw the invalidation's refetch.
    let invalidated = line_of(&output, "== 6.");
    let fetching = line_of(&output, "[observer] SUCCESS FETCHING (invalidated)");
    assert!(fetching > invalidated, "{output}");
    assert!(output.contains("2 queries invalidated"), "{output}");
    assert!(output.contains("('user', 2) is only marked stale (stale: true)"), "{output}");
    // The rejected rename: shown by the observer, then rolled back.
    let optimistic = line_of(&output, "[observer] SUCCESS IDLE: \"Augusta Ada King");
    let rejected = line_of(&output, "the server said: names have at most 16 characters");
    let rolled_back =
        output.lines().skip(optimistic + 1).position(|l| l.contains("\"Ada Lovelace\""));
    assert!(optimistic < rejected && rolled_back.is_some(), "{output}");
    assert!(output.contains("after the rollback: Ada Lovelace"), "{output}");
    assert!(output.contains("[observer] SUCCESS IDLE: \"Ada King\""), "{output}");
    assert!(output.contains("the server confirmed: Ada King"), "{output}");
    // 1 (cold) + 1 (deduplicated) + 1 (the invalidation's refetch).
    assert_eq!(first.user_calls, 3, "{output}");

    let second = demo::run(db.path(), &out).await.unwrap();
    let output = take(&buf);
    assert!(second.served_from_disk, "{output}");
    assert!(output.contains("this run served from disk: yes"), "{output}");
    // The accepted rename of the first run is what SQLite held; no call for it.
    assert!(output.contains("Ada King in") && output.contains("fresh, no call"), "{output}");
    assert_eq!(second.user_calls, 2, "deduplicated cold key and the refetch only:\n{output}");
}

// ---- background_worker ----

#[test]
fn background_worker_prints_changes_of_every_source_and_stops() {
    let test = TestRuntime::new();
    let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    let sources = background_worker::sources();
    let settings = background_worker::parse_args(
        ["--interval-ms", "1000", "--for-seconds", "10"].map(String::from),
    )
    .unwrap();
    assert_eq!(settings.run_for, Some(Duration::from_secs(10)));
    let (buf, out) = buffer();

    // Ten seconds of virtual time: the sensor polls every 1 s, the queue every 1.5 s and the
    // exchange rate every 2 s, its third read failing.
    let stop = test.runtime().sleep(settings.run_for.unwrap());
    let reports = test.block_on(background_worker::run(&client, &sources, &settings, stop, &out));
    let output = text(&buf);

    for (report, min_reads) in reports.iter().zip([10, 7, 5]) {
        assert!(report.calls >= min_reads, "{report:?}\n{output}");
        assert!(report.changes > 2, "{report:?}\n{output}");
        let printed = output.lines().filter(|l| l.contains(&format!("s] {:<8} ", report.name)));
        assert_eq!(printed.count(), report.changes, "{output}");
    }
    assert!(output.contains("[   0.00s] sensor   pending"), "{output}");
    assert!(output.contains("s] sensor   2"), "a reading in °C: {output}");
    assert!(
        output.contains("eur_usd  error: upstream timed out (still showing 1.0820 USD)"),
        "{output}"
    );
    assert!(output.contains("stopped after 10.00s"), "{output}");

    // Stopped: no observer is left, so nothing polls any more.
    let reads: Vec<usize> = sources.iter().map(|s| s.reads()).collect();
    test.advance(Duration::from_secs(30));
    assert_eq!(sources.iter().map(|s| s.reads()).collect::<Vec<_>>(), reads);
    assert_eq!(client.observer_count(key!("source", "sensor")), 0);
}

#[test]
fn background_worker_stops_by_itself_on_smol() {
    let settings = background_worker::parse_args(
        ["--for-seconds", "0.5", "--interval-ms", "100"].map(String::from),
    )
    .unwrap();
    let runtime = SmolRuntime::global().into_runtime();
    let client = QueryClient::with_runtime(runtime, QueryClientConfig::default());
    let sources = background_worker::sources();
    let (buf, out) = buffer();
    let run_for = settings.run_for.unwrap();
    let stop = async move {
        smol::Timer::after(run_for).await;
    };
    let reports = smol::block_on(background_worker::run(&client, &sources, &settings, stop, &out));
    let output = text(&buf);
    // Real time: lower bounds only (pending, then the first reading, at least).
    for report in &reports {
        assert!(report.calls >= 1 && report.changes >= 2, "{report:?}\n{output}");
    }
    assert!(output.contains("stopped after"), "{output}");
}

#[test]
fn background_worker_rejects_unknown_arguments() {
    assert!(background_worker::parse_args(["--forever".to_string()]).is_err());
    assert!(background_worker::parse_args(["--for-seconds".to_string()]).is_err());
    let defaults = background_worker::parse_args([]).unwrap();
    assert_eq!((defaults.interval, defaults.run_for), (Duration::from_secs(1), None));
}

// ---- smol_cli ----

fn cli(args: &[&str]) -> (smol_cli::Summary, String) {
    let args = smol_cli::parse_args(args.iter().map(ToString::to_string)).unwrap();
    let (buf, out) = buffer();
    let summary =
        smol::block_on(smol_cli::run(&args, &out, indicatif::ProgressDrawTarget::hidden()))
            .unwrap();
    (summary, text(&buf))
}

#[test]
fn smol_cli_second_run_makes_no_upstream_call() {
    let db = TempDb::new("cli");
    let db_arg = db.path().to_str().unwrap();

    let (first, output) = cli(&["--db", db_arg]);
    assert_eq!(first.answers.len(), smol_cli::DEFAULT_NAMES.len(), "{output}");
    assert_eq!(first.upstream_calls, smol_cli::DEFAULT_NAMES.len(), "{output}");
    assert_eq!(first.from_disk, 0);
    assert!(first.answers.iter().all(|(_, a)| a.is_ok()), "{output}");
    assert!(output.contains("24 names: 24 registry calls, 0 served from"), "{output}");

    let (second, output) = cli(&["--db", db_arg]);
    assert_eq!(second.upstream_calls, 0, "{output}");
    assert_eq!(second.from_disk, 24, "{output}");
    assert_eq!(second.answers, first.answers, "the same answers, from SQLite");
    assert!(output.contains("24 names: 0 registry calls, 24 served from"), "{output}");
}

#[test]
fn smol_cli_inspect_lists_keys_status_and_age() {
    let db = TempDb::new("cli-inspect");
    let db_arg = db.path().to_str().unwrap();
    let (_, _) = cli(&["--db", db_arg, "serde", "smol"]);

    let (summary, output) = cli(&["--db", db_arg, "--inspect", "serde", "smol", "no such!"]);
    // The two known names come from disk; the bad one is asked (and retried once).
    assert_eq!((summary.upstream_calls, summary.from_disk), (2, 2), "{output}");
    let header = line_of(&output, "key");
    for column in ["status", "fetch", "age", "stale", "persisted"] {
        assert!(output.lines().nth(header).unwrap().contains(column), "{output}");
    }
    let serde = output.lines().nth(line_of(&output, "('release', 'serde')")).unwrap();
    let fields: Vec<&str> = serde.split_whitespace().collect();
    assert_eq!(&fields[2..4], ["SUCCESS", "IDLE"], "{output}");
    assert!(fields[4].ends_with('s'), "an age in seconds: {output}");
    assert_eq!(&fields[5..], ["no", "yes"], "fresh, persisted: {output}");
    assert!(output.contains("('release', 'smol')"), "{output}");
    let bad = output.lines().nth(line_of(&output, "('release', 'no such!')")).unwrap();
    assert!(bad.contains("ERROR") && bad.contains(" - "), "no data, no age: {output}");
    assert!(output.contains("error: no package named \"no such!\""), "{output}");
    assert!(output.contains("3 queries in the cache"), "{output}");
}

#[test]
fn smol_cli_parses_its_arguments() {
    let args =
        smol_cli::parse_args(["--inspect", "a", "--db", "x.db", "b"].map(String::from)).unwrap();
    assert!(args.inspect);
    assert_eq!(args.db, PathBuf::from("x.db"));
    assert_eq!(args.names, ["a", "b"]);
    assert_eq!(smol_cli::parse_args([]).unwrap().names.len(), 24);
    assert!(smol_cli::parse_args(["--db".to_string()]).is_err());
    assert!(smol_cli::parse_args(["--verbose".to_string()]).is_err());
}

// ---- infinite_scroll ----

#[test]
fn infinite_scroll_prints_the_expected_pages() {
    let test = TestRuntime::new();
    let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    let (buf, out) = buffer();
    test.block_on(infinite_scroll::run(&client, &out)).unwrap();
    let expected = "\
1. The first page:
     offset  0: #1 #2 #3 #4 #5
   has_next_page = true
2. Two scroll events at once share one request:
   both see offsets [0, 5]; 1 request
3. Scroll to the end:
   fetched offset 10, now 3 pages
   fetched offset 15, now 4 pages
   fetched offset 20, now 5 pages
     offset  0: #1 #2 #3 #4 #5
     offset  5: #6 #7 #8 #9 #10
     offset 10: #11 #12 #13 #14 #15
     offset 15: #16 #17 #18 #19 #20
     offset 20: #21 #22 #23
   5 pages, 23 posts, has_next_page = false, 5 requests so far
4. A window of at most 3 pages, opened at offset 10 (a link into the feed):
   open:     offsets [10]
   next:     offsets [10, 15]
   next:     offsets [10, 15, 20]
   previous: offsets [5, 10, 15]
   previous: offsets [0, 5, 10]
   has_previous_page = false
5. Invalidate the feed: every cached page is refetched, from its first offset:
   2 queries invalidated; 8 requests; the feed has offsets [0, 5, 10, 15, 20]
";
    assert_eq!(text(&buf), expected);
}
