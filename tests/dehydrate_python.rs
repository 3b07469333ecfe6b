//! Interoperability with the Python library: `QueryState.from_dict` reads every state of a
//! dehydrated state, and states written by `QueryState.to_dict()` hydrate in Rust. Skipped,
//! with the reason printed, where no interpreter imports the library (it needs Python 3.12 or
//! later; `.ci/run` installs it).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::servers::ScratchDir;
use common::storage::unix_now;
use common::{Counter, Harness};
use pystackquery::{DehydrateOptions, QueryClientConfig, QueryKey, QueryOptions, QueryStatus, key};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const HOUR: Duration = Duration::from_secs(3600);

/// Persisted options for `k` whose function counts its calls and answers `value`.
fn answering<T>(k: QueryKey, calls: &Counter, value: T) -> QueryOptions<T, String>
where
    T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
{
    let calls = calls.clone();
    QueryOptions::new(k, move || {
        calls.hit();
        let value = value.clone();
        async move { Ok(value) }
    })
    .persist()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    name: String,
    langs: Vec<String>,
}

/// An interpreter that imports the Python library (`pystackquery`, which needs Python 3.12 or
/// later), or why there is none. Tried in order: `$PYSTACKQUERY_PYTHON` (set by `.ci/run`
/// after installing the library), `python3`, `python3.13`, `python3.12`, pyenv's installs.
fn python_with_library() -> Result<&'static str, &'static str> {
    static FOUND: OnceLock<Option<String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let mut candidates: Vec<String> =
            std::env::var("PYSTACKQUERY_PYTHON").into_iter().collect();
        candidates.extend(["python3", "python3.13", "python3.12"].map(String::from));
        let pyenv = std::env::var("PYENV_ROOT")
            .map(PathBuf::from)
            .or_else(|_| std::env::var("HOME").map(|home| PathBuf::from(home).join(".pyenv")));
        if let Ok(Ok(versions)) = pyenv.map(|root| std::fs::read_dir(root.join("versions"))) {
            let mut installs: Vec<PathBuf> = versions.flatten().map(|e| e.path()).collect();
            installs.sort();
            candidates
                .extend(installs.iter().rev().map(|v| v.join("bin/python3").display().to_string()));
        }
        candidates.into_iter().find(|python| {
            Command::new(python)
                .args(["-c", "import pystackquery"])
                .output()
                .is_ok_and(|out| out.status.success())
        })
    });
    found.as_deref().ok_or(
        "no python3 here imports pystackquery (pip install pystackquery==1.0.1, Python >= 3.12)",
    )
}

/// Runs `script` with the Python library; `None`, with the reason printed, without one.
fn python_library(script: &str, args: &[&str]) -> Option<String> {
    let python = match python_with_library() {
        Ok(python) => python,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return None;
        }
    };
    let output = Command::new(python).arg("-c").arg(script).args(args).output().unwrap();
    assert!(output.status.success(), "python failed: {}", String::from_utf8_lossy(&output.stderr));
    Some(String::from_utf8(output.stdout).unwrap())
}

/// Reads every state of a dehydrated state with `QueryState.from_dict`.
const PY_FROM_DICT: &str = r#"
import json, sys
from pystackquery import QueryState
out = []
for q in json.load(open(sys.argv[1]))["queries"]:
    s = QueryState.from_dict(q["state"])
    out.append({"key": q["key"], "status": s.status.name, "fetch_status": s.fetch_status.name,
                "data": s.data, "error": str(s.error) if s.error is not None else None,
                "data_updated_at": s.data_updated_at, "failures": s.fetch_failure_count,
                "same": s.to_dict() == q["state"]})
print(json.dumps(out))
"#;

/// Writes states with `QueryState.to_dict`, stamped relative to the time given.
const PY_TO_DICT: &str = r#"
import json, sys
from pystackquery import QueryState, QueryStatus
now = float(sys.argv[1])
def state(**fields):
    return QueryState(**fields).to_dict()
print(json.dumps({"queries": [
    {"key": ["user", 42], "state": state(status=QueryStatus.SUCCESS,
        data={"name": "Ada", "langs": ["py", "rs"]}, data_updated_at=now)},
    {"key": ["it's", 'say "hi"', 7, True], "state": state(status=QueryStatus.SUCCESS,
        data=[1.5, None], data_updated_at=now)},
    {"key": ["old"], "state": state(status=QueryStatus.SUCCESS, data="old",
        data_updated_at=now - 3600)},
    {"key": ["failed"], "state": state(status=QueryStatus.ERROR, error=ValueError("boom"),
        error_updated_at=now, fetch_failure_count=1, fetch_failure_reason=ValueError("boom"))},
]}))
"#;

async fn python_reads_every_dehydrated_state(h: Harness) {
    let client = h.client_with(QueryClientConfig::default().retry(0));
    let calls = Counter::default();
    let ada = User { name: "Ada".into(), langs: vec!["rs".into()] };
    client.fetch_query(&answering(key!("user", 42), &calls, ada)).await.unwrap();
    client.fetch_query(&answering(key!("nothing"), &calls, None::<u8>)).await.unwrap();
    client.fetch_query(&answering(key!("stale"), &calls, 3u32)).await.unwrap();
    client.invalidate_queries(key!("stale"), false).await;
    let failing =
        QueryOptions::new(key!("failed"), || async { Err::<u8, _>("boom".to_string()) }).persist();
    assert!(client.fetch_query(&failing).await.is_err());
    let settled = DehydrateOptions::new().should_dehydrate(|q| q.status != QueryStatus::Pending);
    let state = client.dehydrate_with((), settled);
    assert_eq!(state.queries.len(), 4);
    let dir = ScratchDir::new("dehydrate-py");
    let path = dir.path().join("state.json");
    std::fs::write(&path, serde_json::to_string(&state).unwrap()).unwrap();

    let Some(out) = python_library(PY_FROM_DICT, &[path.to_str().unwrap()]) else { return };
    let read: Vec<Value> = serde_json::from_str(&out).unwrap();
    let by_key = |k: Value| read.iter().find(|q| q["key"] == k).unwrap().clone();
    let user = by_key(json!(["user", 42]));
    assert_eq!(
        (user["status"].as_str(), user["fetch_status"].as_str()),
        (Some("SUCCESS"), Some("IDLE"))
    );
    assert_eq!(user["data"], json!({"name": "Ada", "langs": ["rs"]}));
    assert!((user["data_updated_at"].as_f64().unwrap() - unix_now(&h.runtime)).abs() < 60.0);
    assert_eq!(by_key(json!(["nothing"]))["data"], Value::Null);
    let failed = by_key(json!(["failed"]));
    assert_eq!(
        (failed["status"].as_str(), failed["error"].as_str()),
        (Some("ERROR"), Some("boom"))
    );
    assert_eq!(failed["failures"], 1);
    let stale = by_key(json!(["stale"]));
    assert_eq!(stale["data"], 3);
    assert_eq!(stale["data_updated_at"], Value::Null, "Python reads the 0.0 mark as no time");
    for q in &read {
        assert_eq!(q["same"] == true, q["key"] != json!(["stale"]), "to_dict gives back {q}");
    }
}

async fn python_states_hydrate_in_rust(h: Harness) {
    let now = unix_now(&h.runtime).to_string();
    let Some(out) = python_library(PY_TO_DICT, &[&now]) else { return };
    let client = h.client();
    let report = client.hydrate(serde_json::from_str(&out).unwrap());
    assert_eq!(report.deferred, 4, "{report:?}");
    let calls = Counter::default();
    let nobody = User { name: "?".into(), langs: vec![] };
    let user = answering(key!("user", 42), &calls, nobody).stale_time(HOUR);
    let ada = User { name: "Ada".into(), langs: vec!["py".into(), "rs".into()] };
    assert_eq!(client.fetch_query(&user).await.unwrap(), ada);
    let awkward = answering(key!("it's", "say \"hi\"", 7, true), &calls, Vec::<Option<f64>>::new())
        .stale_time(HOUR);
    assert_eq!(client.fetch_query(&awkward).await.unwrap(), vec![Some(1.5), None]);
    assert_eq!(calls.get(), 0, "both fresh");
    let old = answering(key!("old"), &calls, "new".to_string()).stale_time(Duration::from_secs(60));
    assert_eq!(client.fetch_query(&old).await.unwrap(), "old", "stale: revalidated");
    h.eventually("the revalidation", || calls.get() == 1).await;
    let failed = answering(key!("failed"), &calls, 0u8).enabled(false);
    let _watching = client.watch(&failed).subscribe(|_| {});
    h.eventually("the error restored", || {
        let state = client.get_query_state::<u8, String>(key!("failed")).unwrap();
        state.is_some_and(|s| s.error.is_some_and(|e| e.to_string() == "boom"))
    })
    .await;
}

runtime_suite!(python_reads_every_dehydrated_state, python_states_hydrate_in_rust);
