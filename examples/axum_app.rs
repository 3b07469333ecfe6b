//! A web service (axum on tokio) in front of a deliberately slow upstream: the cache answers
//! repeated reads, concurrent requests for one todo share one upstream call, and writes are
//! optimistic with rollback when the upstream refuses them.
//!
//! Run with `cargo run --example axum_app -- --port 3000` (`--port 0` picks a free port) and
//! stop it with Ctrl-C, or `cargo run --example axum_app -- --self-test` to start it, send it
//! requests (concurrent ones included) and print what happened. It only listens on 127.0.0.1.
//!
//! | request | what it does |
//! |---|---|
//! | `GET /todos/{id}` | reads through the cache (stale-while-revalidate; one upstream call for concurrent misses) |
//! | `POST /todos/{id}/invalidate` | marks the cached todo stale: the next read refetches it |
//! | `PUT` or `POST /todos/{id}` | body `{"title": .., "done": ..}`: an optimistic update; add `?fail=true` (or `"fail": true`) to make the upstream refuse it and see the rollback |
//! | `GET /debug/cache` | the cache listing (`find_all`) and the cache counters as JSON |
//! | `GET /stats/upstream` | how many times the upstream was called |
#![allow(clippy::print_stdout)]
// The public items are for the tests that include this file; their fields speak for themselves.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pystackquery::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How slow the upstream is when the program runs as it is.
pub const UPSTREAM_DELAY: Duration = Duration::from_millis(300);

/// One todo, as the upstream stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Todo {
    pub id: u32,
    pub title: String,
    pub done: bool,
    /// Bumped by every write the upstream accepts.
    pub version: u32,
}

/// A change to a todo (the body of `PUT /todos/{id}`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TodoPatch {
    pub title: Option<String>,
    pub done: Option<bool>,
    /// Make the upstream refuse this write (to see the rollback).
    #[serde(default)]
    pub fail: bool,
}

impl TodoPatch {
    fn apply(&self, todo: &Todo) -> Todo {
        Todo {
            id: todo.id,
            title: self.title.clone().unwrap_or_else(|| todo.title.clone()),
            done: self.done.unwrap_or(todo.done),
            version: todo.version,
        }
    }
}

/// What the upstream answers instead of a todo.
#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamError {
    NotFound(u32),
    Refused(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound(id) => write!(f, "todo {id} does not exist"),
            Self::Refused(why) => write!(f, "the upstream refused the write: {why}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// The slow service behind the cache: an in-process store that sleeps on every call and
/// counts its calls.
#[derive(Debug)]
pub struct Upstream {
    todos: Mutex<HashMap<u32, Todo>>,
    reads: AtomicUsize,
    writes: AtomicUsize,
    delay: Duration,
}

impl Upstream {
    /// Five todos, each call taking `delay`.
    pub fn new(delay: Duration) -> Self {
        let todos = (1..=5)
            .map(|id| {
                (id, Todo { id, title: format!("todo number {id}"), done: false, version: 1 })
            })
            .collect();
        Self {
            todos: Mutex::new(todos),
            reads: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            delay,
        }
    }

    /// Reads made so far.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Writes attempted so far.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// `GET` on the upstream.
    pub async fn get(&self, id: u32) -> Result<Todo, UpstreamError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let todos = self.todos.lock().unwrap_or_else(PoisonError::into_inner);
        todos.get(&id).cloned().ok_or(UpstreamError::NotFound(id))
    }

    /// `PUT` on the upstream: applies `patch`, unless it asks to fail.
    pub async fn update(&self, id: u32, patch: &TodoPatch) -> Result<Todo, UpstreamError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if patch.fail {
            return Err(UpstreamError::Refused("asked to fail".into()));
        }
        let mut todos = self.todos.lock().unwrap_or_else(PoisonError::into_inner);
        let todo = todos.get_mut(&id).ok_or(UpstreamError::NotFound(id))?;
        *todo = Todo { version: todo.version + 1, ..patch.apply(todo) };
        Ok(todo.clone())
    }
}

/// The input of the update mutation.
#[derive(Clone, Debug)]
pub struct Update {
    pub id: u32,
    pub patch: TodoPatch,
}

/// The state every handler shares.
#[derive(Clone)]
pub struct App {
    pub client: QueryClient,
    pub upstream: Arc<Upstream>,
    update: MutationOptions<Update, Todo, UpstreamError>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("upstream", &self.upstream).finish_non_exhaustive()
    }
}

impl App {
    /// A client (no retries: the upstream's errors are final) in front of `upstream`. Call it
    /// inside a tokio runtime.
    pub fn new(upstream: Arc<Upstream>) -> Result<Self, pystackquery::NoRuntime> {
        let client = QueryClient::with_config(QueryClientConfig::default().retry(0))?;
        let writer = upstream.clone();
        // Built once, run per request with `client.mutate`.
        let update = MutationOptions::new(move |update: Update| {
            let upstream = writer.clone();
            async move { upstream.update(update.id, &update.patch).await }
        })
        .mutation_key(key!("todo", "update"))
        // Show the change at once; a reader sees it while the upstream is still working.
        .on_mutate(|update: &Update, cx| {
            let _ = cx.update_optimistic(key!("todo", update.id), |cached: Option<&Todo>| {
                cached.map(|todo| update.patch.apply(todo))
            });
        })
        // The upstream refused: put back what the cache held before.
        .on_error(|_error, _update, cx| cx.rollback())
        // The upstream accepted: cache its answer (with its new version).
        .on_success(|todo, update, cx| {
            let _ = cx.client.set_query_data(key!("todo", update.id), todo.clone());
        });
        Ok(Self { client, upstream, update })
    }

    /// The query of one todo: fresh for 30 s, then served stale while it is refetched.
    pub fn todo_query(&self, id: u32) -> QueryOptions<Todo, UpstreamError> {
        let upstream = self.upstream.clone();
        QueryOptions::new(key!("todo", id), move || {
            let upstream = upstream.clone();
            async move { upstream.get(id).await }
        })
        .stale_time(Duration::from_secs(30))
    }

    /// The routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/todos/{id}", get(read_todo).put(update_todo).post(update_todo))
            .route("/todos/{id}/invalidate", post(invalidate_todo))
            .route("/debug/cache", get(debug_cache))
            .route("/stats/upstream", get(upstream_stats))
            .with_state(self)
    }
}

fn error_response(error: &QueryError<UpstreamError>) -> Response {
    let status = match error {
        QueryError::Failed(e) if matches!(**e, UpstreamError::NotFound(_)) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_GATEWAY,
    };
    (status, Json(json!({ "error": error.to_string() }))).into_response()
}

async fn read_todo(State(app): State<App>, Path(id): Path<u32>) -> Response {
    match app.client.fetch_query(&app.todo_query(id)).await {
        Ok(todo) => Json(todo).into_response(),
        Err(error) => error_response(&error),
    }
}

async fn invalidate_todo(State(app): State<App>, Path(id): Path<u32>) -> Json<serde_json::Value> {
    // Mark it stale only; the next read refetches it.
    let n = app.client.invalidate_queries(QueryFilter::exact(key!("todo", id)), false).await;
    Json(json!({ "invalidated": n }))
}

#[derive(Debug, Deserialize)]
struct UpdateParams {
    #[serde(default)]
    fail: bool,
}

async fn update_todo(
    State(app): State<App>,
    Path(id): Path<u32>,
    Query(params): Query<UpdateParams>,
    Json(mut patch): Json<TodoPatch>,
) -> Response {
    patch.fail |= params.fail;
    match app.client.mutate(&app.update, Update { id, patch }).await {
        Ok(todo) => Json(todo).into_response(),
        Err(error) => {
            let cached = app.client.get_query_data::<Todo>(key!("todo", id)).ok().flatten();
            let status = match &error {
                QueryError::Failed(e) if matches!(**e, UpstreamError::NotFound(_)) => {
                    StatusCode::NOT_FOUND
                }
                _ => StatusCode::BAD_GATEWAY,
            };
            let body = json!({ "error": error.to_string(), "rolled_back_to": cached });
            (status, Json(body)).into_response()
        }
    }
}

async fn debug_cache(State(app): State<App>) -> Json<serde_json::Value> {
    Json(json!({
        "queries": app.client.find_all(QueryFilter::all()),
        "stats": app.client.cache_stats(),
    }))
}

async fn upstream_stats(State(app): State<App>) -> Json<serde_json::Value> {
    Json(json!({ "reads": app.upstream.reads(), "writes": app.upstream.writes() }))
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub upstream: Arc<Upstream>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds 127.0.0.1:`port` (0: a free port) and serves in a task until it is aborted.
pub async fn spawn_server(
    port: u16,
    delay: Duration,
) -> Result<Server, Box<dyn std::error::Error>> {
    let upstream = Arc::new(Upstream::new(delay));
    let router = App::new(upstream.clone())?.router();
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(Server { addr, upstream, task })
}

/// A minimal HTTP/1.1 client: one request per connection. Returns the status and the body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// `GET path` as JSON.
pub async fn get_json(addr: SocketAddr, path: &str) -> std::io::Result<(u16, serde_json::Value)> {
    let (status, body) = request(addr, "GET", path, None).await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)))
}

/// What the self-test saw.
#[derive(Debug, Default)]
pub struct SelfTest {
    /// Upstream reads for `concurrent` simultaneous GETs of one cold todo.
    pub concurrent: usize,
    pub reads_for_concurrent: usize,
    /// Upstream reads after a second GET (cached).
    pub reads_after_cached_get: usize,
    /// Upstream reads once the read after the invalidation has revalidated.
    pub reads_after_invalidate: usize,
    /// Title returned by the read after the accepted write.
    pub title_after_write: String,
    /// Status of the refused write, and the title read after it.
    pub refused_status: u16,
    pub title_after_refused: String,
    /// Keys listed by `/debug/cache`.
    pub listed_keys: Vec<serde_json::Value>,
}

/// Sends the server at `addr` the requests that show what the cache does, printing each step.
pub async fn self_test(
    addr: SocketAddr,
    concurrent: usize,
) -> Result<SelfTest, Box<dyn std::error::Error>> {
    let reads = async || -> std::io::Result<usize> {
        let (_, stats) = get_json(addr, "/stats/upstream").await?;
        Ok(stats["reads"].as_u64().unwrap_or(0) as usize)
    };
    let mut report = SelfTest { concurrent, ..SelfTest::default() };

    let answers =
        futures::future::join_all((0..concurrent).map(|_| get_json(addr, "/todos/1"))).await;
    let ok = answers.iter().filter(|a| matches!(a, Ok((200, _)))).count();
    report.reads_for_concurrent = reads().await?;
    println!(
        "{concurrent} concurrent GET /todos/1: {ok} answered 200, {} upstream read(s)",
        report.reads_for_concurrent
    );

    get_json(addr, "/todos/1").await?;
    report.reads_after_cached_get = reads().await?;
    println!(
        "GET /todos/1 again: served from the cache ({} read(s) in all)",
        report.reads_after_cached_get
    );

    request(addr, "POST", "/todos/1/invalidate", None).await?;
    let (_, todo) = get_json(addr, "/todos/1").await?;
    println!("POST /todos/1/invalidate, then GET: {} (stale, revalidating)", todo["title"]);
    for _ in 0..200 {
        report.reads_after_invalidate = reads().await?;
        if report.reads_after_invalidate > report.reads_after_cached_get {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("  upstream reads now: {}", report.reads_after_invalidate);

    let (status, body) =
        request(addr, "PUT", "/todos/1", Some(r#"{"title": "buy oat milk"}"#)).await?;
    let (_, todo) = get_json(addr, "/todos/1").await?;
    report.title_after_write = todo["title"].as_str().unwrap_or_default().to_string();
    println!("PUT /todos/1 (accepted): {status} {body}; GET: {}", todo["title"]);

    let (status, body) =
        request(addr, "PUT", "/todos/1?fail=true", Some(r#"{"title": "never saved"}"#)).await?;
    let (_, todo) = get_json(addr, "/todos/1").await?;
    report.refused_status = status;
    report.title_after_refused = todo["title"].as_str().unwrap_or_default().to_string();
    println!(
        "PUT /todos/1?fail=true (refused): {status} {body}; GET: {} (rolled back)",
        todo["title"]
    );

    let (_, cache) = get_json(addr, "/debug/cache").await?;
    report.listed_keys = cache["queries"]
        .as_array()
        .map(|queries| queries.iter().map(|q| q["key"].clone()).collect())
        .unwrap_or_default();
    println!("GET /debug/cache: keys {:?}, stats {}", report.listed_keys, cache["stats"]);
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 3000u16;
    let mut self_test_mode = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a number")?.parse()?,
            "--self-test" => self_test_mode = true,
            other => {
                return Err(
                    format!("unknown argument {other:?} (use --port N, --self-test)").into()
                );
            }
        }
    }
    if self_test_mode {
        let server = spawn_server(0, UPSTREAM_DELAY).await?;
        println!("self-test against http://{}", server.addr);
        let report = self_test(server.addr, 20).await?;
        server.task.abort();
        let passed = report.reads_for_concurrent == 1
            && report.reads_after_cached_get == 1
            && report.reads_after_invalidate == 2
            && report.title_after_write == "buy oat milk"
            && report.title_after_refused == "buy oat milk";
        println!("self-test {}", if passed { "passed" } else { "FAILED" });
        if !passed {
            std::process::exit(1);
        }
        return Ok(());
    }
    let upstream = Arc::new(Upstream::new(UPSTREAM_DELAY));
    let router = App::new(upstream)?.router();
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await?;
    println!("listening on http://{} (Ctrl-C stops it)", listener.local_addr()?);
    println!("try: curl http://{}/todos/1", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("stopped");
    Ok(())
}
