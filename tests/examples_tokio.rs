//! The tokio examples' behaviour, through the functions their `main`s call: the axum service
//! over real loopback HTTP, the dashboard rendered headless on tokio's paused clock, and the
//! two Redis roles against a throwaway `redis-server` (skipped when it is not installed); and
//! the offline `benchmark`, for what it counts.
#![allow(clippy::unwrap_used, clippy::print_stdout, unreachable_pub)]

#[allow(dead_code)]
#[path = "../examples/axum_app.rs"]
mod axum_app;

#[allow(dead_code)]
#[path = "../examples/dashboard.rs"]
mod dashboard;

#[cfg(feature = "redis")]
#[allow(dead_code)]
#[path = "../examples/redis_integration.rs"]
mod redis_integration;

#[cfg(feature = "redis")]
#[path = "common/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use axum_app::{get_json, request, spawn_server};

// ---- axum_app ------------------------------------------------------------------------------

/// Polls `condition` every 10 ms for up to 5 s.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_concurrent_reads_of_one_todo_make_one_upstream_call() {
    let server = spawn_server(0, Duration::from_millis(200)).await.unwrap();
    let answers =
        futures::future::join_all((0..16).map(|_| get_json(server.addr, "/todos/3"))).await;
    for answer in answers {
        let (status, todo) = answer.unwrap();
        assert_eq!(status, 200);
        assert_eq!(todo["title"], "todo number 3");
    }
    assert_eq!(server.upstream.reads(), 1, "16 concurrent misses share one upstream call");

    let (status, _) = get_json(server.addr, "/todos/3").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(server.upstream.reads(), 1, "a fresh todo is served from the cache");
    let (_, stats) = get_json(server.addr, "/stats/upstream").await.unwrap();
    assert_eq!(stats["reads"], 1);
    server.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_read_after_invalidate_refetches() {
    let server = spawn_server(0, Duration::from_millis(50)).await.unwrap();
    get_json(server.addr, "/todos/2").await.unwrap();
    assert_eq!(server.upstream.reads(), 1);

    let (status, body) = request(server.addr, "POST", "/todos/2/invalidate", None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"invalidated":1}"#));
    assert_eq!(server.upstream.reads(), 1, "invalidating marks stale; it does not fetch");

    // Served stale at once, revalidated in the background.
    let (status, todo) = get_json(server.addr, "/todos/2").await.unwrap();
    assert_eq!((status, todo["title"].as_str()), (200, Some("todo number 2")));
    assert!(eventually(|| server.upstream.reads() == 2).await, "the read refetched");
    server.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_writes_are_optimistic_and_a_refused_one_rolls_back() {
    let server = spawn_server(0, Duration::from_millis(400)).await.unwrap();
    let addr = server.addr;
    get_json(addr, "/todos/1").await.unwrap();

    let (status, body) =
        request(addr, "PUT", "/todos/1", Some(r#"{"title": "walk the dog"}"#)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, todo) = get_json(addr, "/todos/1").await.unwrap();
    assert_eq!((todo["title"].as_str(), todo["version"].as_u64()), (Some("walk the dog"), Some(2)));
    assert_eq!(server.upstream.reads(), 1, "the write's answer went into the cache");

    // A refused write: visible while the upstream works on it, gone after.
    let refused = tokio::spawn(async move {
        request(addr, "PUT", "/todos/1?fail=true", Some(r#"{"title": "never saved"}"#)).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, during) = get_json(addr, "/todos/1").await.unwrap();
    assert_eq!(during["title"], "never saved", "optimistic while in flight");
    let (status, body) = refused.await.unwrap().unwrap();
    assert_eq!(status, 502);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["rolled_back_to"]["title"], "walk the dog");
    let (_, after) = get_json(addr, "/todos/1").await.unwrap();
    assert_eq!(after["title"], "walk the dog", "rolled back");

    // The flag may also come in the body; POST works like PUT.
    let (status, _) =
        request(addr, "POST", "/todos/1", Some(r#"{"done": true, "fail": true}"#)).await.unwrap();
    assert_eq!(status, 502);
    let (_, after) = get_json(addr, "/todos/1").await.unwrap();
    assert_eq!(after["done"], false);
    assert_eq!(server.upstream.writes(), 3);
    server.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_debug_cache_lists_keys_and_stats() {
    let server = spawn_server(0, Duration::from_millis(10)).await.unwrap();
    get_json(server.addr, "/todos/4").await.unwrap();
    get_json(server.addr, "/todos/4").await.unwrap();
    let (status, missing) = get_json(server.addr, "/todos/99").await.unwrap();
    assert_eq!(status, 404, "{missing}");

    let (status, cache) = get_json(server.addr, "/debug/cache").await.unwrap();
    assert_eq!(status, 200);
    let queries = cache["queries"].as_array().unwrap();
    let keys: Vec<&str> = queries.iter().filter_map(|q| q["key"].as_str()).collect();
    assert!(keys.contains(&"('todo', 4)"), "{cache}");
    let four = queries.iter().find(|q| q["key"] == "('todo', 4)").unwrap();
    assert_eq!(four["status"], "SUCCESS", "{four}");
    assert_eq!(cache["stats"]["fetches"], 2, "todo 4 and todo 99: {cache}");
    assert_eq!(cache["stats"]["hits"], 1, "{cache}");
    server.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_self_test_passes() {
    let server = spawn_server(0, Duration::from_millis(50)).await.unwrap();
    let report = axum_app::self_test(server.addr, 8).await.unwrap();
    assert_eq!(report.reads_for_concurrent, 1);
    assert_eq!(report.reads_after_cached_get, 1);
    assert_eq!(report.reads_after_invalidate, 2);
    assert_eq!(report.title_after_write, "buy oat milk");
    assert_eq!((report.refused_status, report.title_after_refused.as_str()), (502, "buy oat milk"));
    assert_eq!(report.listed_keys, [serde_json::json!("('todo', 1)")]);
    server.task.abort();
}

// ---- dashboard -----------------------------------------------------------------------------

async fn frames(n: usize, keys: &str) -> String {
    let screen = dashboard::run_headless(n, keys, 110, 24).await.unwrap();
    println!("{screen}");
    screen
}

#[tokio::test(start_paused = true)]
async fn dashboard_shows_the_observed_queries() {
    let screen = frames(3, "").await;
    assert!(screen.contains("Users [ok]"), "{screen}");
    assert!(screen.contains("> 1 Ada Lovelace"));
    assert!(screen.contains("5 Ken Thompson"));
    assert!(screen.contains("Details [ok]") && screen.contains("ID: 1"));
    assert!(screen.contains("Simplicity is prerequisite for reliability."));
    assert!(screen.contains("quote #1"));
    assert!(screen.contains("source calls: list 1, details 1, quote 1, writes 0"));
}

#[tokio::test(start_paused = true)]
async fn dashboard_selection_moves_the_detail_observer() {
    let screen = frames(4, "..jj").await;
    assert!(screen.contains("> 3 Grace Hopper"), "{screen}");
    assert!(screen.contains("ID: 3") && screen.contains("Email: grace@example.org"));
    let screen = frames(5, "..jjk").await;
    assert!(screen.contains("> 2 Alan Turing") && screen.contains("ID: 2"), "{screen}");
}

#[tokio::test(start_paused = true)]
async fn dashboard_star_is_saved_and_a_refused_star_rolls_back() {
    let screen = frames(4, "..s").await;
    assert!(screen.contains("> 1 Ada Lovelace *"), "{screen}");
    assert!(screen.contains("Starred: yes"));
    assert!(screen.contains("Saved: Ada Lovelace starred"));

    let screen = frames(4, "..x").await;
    assert!(screen.contains("> 1 Ada Lovelace"), "{screen}");
    assert!(!screen.contains("Ada Lovelace *"), "rolled back: {screen}");
    assert!(screen.contains("Starred: no"));
    assert!(screen.contains("rolled back") && screen.contains("writes 1"));
}

#[tokio::test(start_paused = true)]
async fn dashboard_invalidate_refetches_the_observed_users() {
    let screen = frames(4, "..i").await;
    assert!(screen.contains("Invalidated 2 user queries"), "{screen}");
    assert!(screen.contains("list 2, details 2"), "{screen}");
}

#[tokio::test(start_paused = true)]
async fn dashboard_quote_polls_and_pauses() {
    let screen = frames(26, "").await;
    assert!(screen.contains("quote #3"), "2.6 s of polling every second: {screen}");
    let screen = frames(26, "..p").await;
    assert!(screen.contains("quote #1") && screen.contains("polling paused"), "{screen}");
    let screen = frames(5, "..r").await;
    assert!(screen.contains("quote #2"), "refetched on demand: {screen}");
}

// ---- redis_integration ---------------------------------------------------------------------

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_second_process_hydrates_and_sees_the_invalidation() {
    let server = match servers::RedisServer::start() {
        Ok(server) => server,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let url = server.url();
    let reader_url = url.clone();
    let outcome = redis_integration::writer(&url, move || {
        let (send, receive) = tokio::sync::mpsc::unbounded_channel();
        // The reader role, in this process with its own client (as a second process would).
        tokio::spawn(async move {
            redis_integration::reader(&reader_url, move |line| {
                let _ = send.send(line);
            })
            .await
            .unwrap();
        });
        Ok(receive)
    })
    .await
    .unwrap();

    assert_eq!(outcome.writer_fetches, 3);
    for id in redis_integration::IDS {
        let line = format!("hydrated {id} fetched_by=writer");
        assert!(outcome.reader_lines.contains(&line), "{:?}", outcome.reader_lines);
    }
    assert_eq!(outcome.reader_fetches_before(), Some(0), "the reader read Redis, not its source");
    assert!(outcome.reader_lines.contains(&"invalidated ('profile', 2)".to_string()));
    assert!(outcome.reader_lines.contains(&"refetched 2 fetched_by=reader".to_string()));
    assert_eq!(outcome.reader_fetches_after(), Some(1), "{:?}", outcome.reader_lines);
}

// ---- the programs as they run --------------------------------------------------------------

/// The example's executable, when `cargo test` built it beside this test (it builds examples
/// unless told to run one test target only) from the current source; `None` otherwise.
fn example_binary(name: &str) -> Option<std::path::PathBuf> {
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let binary = deps.parent()?.join("examples").join(name);
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let built = binary.metadata().ok()?.modified().ok()?;
    (built >= source.metadata().ok()?.modified().ok()?).then_some(binary)
}

/// Runs an example's executable with `args`, returning its stdout, or says why it is skipped.
fn run_example(name: &str, args: &[&str]) -> Option<String> {
    let Some(binary) = example_binary(name) else {
        println!("skipped: the {name} example is not built (run `cargo test` with every target)");
        return None;
    };
    let output = std::process::Command::new(binary).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{name} {args:?} failed: {stdout}");
    Some(stdout)
}

#[test]
fn axum_app_self_test_program() {
    if let Some(out) = run_example("axum_app", &["--self-test"]) {
        assert!(
            out.contains("20 concurrent GET /todos/1: 20 answered 200, 1 upstream read(s)"),
            "{out}"
        );
        assert!(out.trim_end().ends_with("self-test passed"), "{out}");
    }
}

#[test]
fn dashboard_headless_program() {
    if let Some(out) = run_example("dashboard", &["--headless", "6", "--keys", "..j.s"]) {
        assert!(
            out.contains("> 2 Alan Turing *") && out.contains("Saved: Alan Turing starred"),
            "{out}"
        );
    }
}

#[cfg(feature = "redis")]
#[test]
fn redis_integration_program_runs_two_processes() {
    let server = match servers::RedisServer::start() {
        Ok(server) => server,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    if let Some(out) = run_example("redis_integration", &["--redis-url", &server.url()]) {
        for line in [
            "[reader] hydrated 1 fetched_by=writer",
            "[reader] fetches 0",
            "[writer] invalidated 1 key: ('profile', 2)",
            "[reader] invalidated ('profile', 2)",
            "[reader] refetched 2 fetched_by=reader",
            "[reader] fetches 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in:\n{out}");
        }
    }
}

/// The offline benchmark: its numbers are timings, but what it counts is behaviour.
#[cfg(feature = "sqlite")]
#[test]
fn benchmark_program_counts_what_the_library_does() {
    if let Some(out) = run_example("benchmark", &[]) {
        let value = |label: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(label))
                .map(|l| l[l.find(label).unwrap() + label.len()..].trim().to_string())
        };
        assert_eq!(value("Without a cache, fetches:").as_deref(), Some("10"), "{out}");
        assert_eq!(
            value("pystackquery fetches:").as_deref(),
            Some("1"),
            "one fetch for ten: {out}"
        );
        assert_eq!(value("Background refetches triggered:").as_deref(), Some("1"), "{out}");
        assert_eq!(value("Observer transitions:").as_deref(), Some("PENDING -> SUCCESS"), "{out}");
        assert_eq!(value("functions called with L2 (expect 0):").as_deref(), Some("0"), "{out}");
        assert_eq!(value("L2 hits:").as_deref(), Some("1000"), "{out}");
    }
}
