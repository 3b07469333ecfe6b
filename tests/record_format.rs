//! L2 records are byte for byte what Python's `json.dumps(state.to_dict())` writes: the same
//! separators, the same `\uXXXX` escapes, the same float digits. Python (`python3`, only its
//! `json` module) writes the reference records; the tests skip, saying why, without it.
#![allow(clippy::unwrap_used)]

mod common;

use common::servers::python;
use common::{Counter, Harness};
use pystackquery::storage::{MemoryStorage, Record};
use pystackquery::{QueryClientConfig, QueryOptions, key};
use serde_json::Value;

/// Reads a JSON list of states (each a list of the `to_dict` values, in its order) from
/// argv[1] and prints one `json.dumps(state.to_dict())` per line. With argv[2], also prints a
/// state whose data is that many random doubles of every magnitude.
const PY_RECORDS: &str = r#"
import json, random, struct, sys
FIELDS = ["status", "fetch_status", "data", "error", "data_updated_at", "error_updated_at",
          "fetch_failure_count", "fetch_failure_reason"]
states = [dict(zip(FIELDS, values)) for values in json.loads(sys.argv[1])]
if len(sys.argv) > 2:
    rng = random.Random(7)
    floats = []
    while len(floats) < int(sys.argv[2]):
        x = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if x == x and abs(x) != float("inf"):
            floats.append(x)
    floats += [rng.uniform(0, 1) * 10.0 ** rng.randint(-30, 30) for _ in range(1000)]
    states.append(dict(zip(FIELDS, ["SUCCESS", "IDLE", floats, None, 1764066000.25, None, 0,
                                    None])))
for state in states:
    print(json.dumps(state))
"#;

/// Tricky states, as the JSON list of their `to_dict` values.
const STATES: &str = r#"[
  ["SUCCESS", "IDLE", {"a": "caf\u00e9 \u65e5\u672c \ud83d\ude00 \u2603", "b": "say \"hi\" \\ back/slash",
    "c": "\u0000\u0001\u0007\b\t\n\u000b\f\r\u001f\u007f\u0080\u00ff\u2028\uffff"},
   null, 1764066000.25, null, 0, null],
  ["SUCCESS", "IDLE", [0.1, 0.2, 1e16, 1e15, 1e-7, 1e-5, 0.0001, 1.5, -0.0, 0.0, 100.0,
    123456789.123456789, 1.7976931348623157e308, 5e-324, 2.5e-300],
   null, 1764066000.123456, null, 0, null],
  ["SUCCESS", "IDLE", [18446744073709551615, -9223372036854775808, 0, -1, 9007199254740993,
    true, false, null, "", [], {}, [[[]]], {"k": {"n": [1, {"m": null}]}}],
   null, 0.0, null, 0, null],
  ["SUCCESS", "IDLE", null, null, 1e-05, null, 0, null],
  ["SUCCESS", "IDLE", "\ud83c\udff3\ufe0f\u200d\ud83c\udf08 text \"in\" quotes",
   null, 1700000000.5, null, 0, null],
  ["ERROR", "IDLE", [1, 2], "boom \u201cquoted\u201d \u2713\nline two", 1764066000.5,
   1764066001.75, 3, "timeout after 2.5 s \u2014 retrying"],
  ["ERROR", "IDLE", null, "plain", null, 1764066001.0, 1, "plain"]
]"#;

/// Every Python record, read by Rust and written back, comes out byte for byte the same.
#[test]
fn rust_writes_the_records_python_writes() {
    let Some(out) = python(PY_RECORDS, &[STATES, "10000"]) else { return };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    for line in lines {
        let record = Record::<Value>::from_json(line).unwrap();
        let written = record.to_json().unwrap();
        if written != line {
            let at = written.bytes().zip(line.bytes()).take_while(|(a, b)| a == b).count();
            panic!(
                "differs at byte {at}:\n rust:   {}\n python: {}",
                &written[at.saturating_sub(40)..(at + 40).min(written.len())],
                &line[at.saturating_sub(40)..(at + 40).min(line.len())]
            );
        }
    }
}

/// What the client writes to storage after a fetch is what Python writes for the same data
/// and timestamp.
async fn the_client_writes_python_bytes(h: Harness) {
    let states: Vec<Vec<Value>> = serde_json::from_str(STATES).unwrap();
    let store = MemoryStorage::new();
    let client = h.client_with(QueryClientConfig::default().storage(store.clone()));
    let calls = Counter::default();
    let mut expected = Vec::new();
    for (i, state) in states.iter().filter(|s| s[0] == "SUCCESS").enumerate() {
        let data = state[2].clone();
        let c = calls.clone();
        let options = QueryOptions::new(key!("case", i64::try_from(i).unwrap()), move || {
            c.hit();
            let data = data.clone();
            async move { Ok::<_, String>(data) }
        })
        .persist();
        client.fetch_query(&options).await.unwrap();
        client.flush_storage().await;
        let written = store.peek(&format!("('case', {i})")).expect("a record");
        let at: Value = serde_json::from_str::<Value>(&written).unwrap()["data_updated_at"].clone();
        let python_state = Value::Array(vec![
            "SUCCESS".into(),
            "IDLE".into(),
            state[2].clone(),
            Value::Null,
            at,
            Value::Null,
            0.into(),
            Value::Null,
        ]);
        expected.push((python_state, written));
    }
    let (states, written): (Vec<Value>, Vec<String>) = expected.into_iter().unzip();
    let Some(out) = python(PY_RECORDS, &[&Value::Array(states).to_string()]) else { return };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, written.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(client.storage_stats().writes, u64::try_from(written.len()).unwrap());
}

runtime_suite!(the_client_writes_python_bytes);
