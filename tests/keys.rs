//! Key strings must equal Python's `str()` of the same tuple, byte for byte, so Rust and
//! Python processes address the same records in a shared store.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use pystackquery::{QueryKey, key};

fn awkward_keys() -> Vec<(QueryKey, &'static str)> {
    vec![
        (key!("user", "123"), "('user', '123')"),
        (key!("key"), "('key',)"),
        (key!("user", 42), "('user', 42)"),
        (key!("a", true), "('a', True)"),
        (key!("neg", -7, false), "('neg', -7, False)"),
        (key!(), "()"),
        (key!("it's"), ""),
        (key!("say \"hi\""), ""),
        (key!("both ' and \""), ""),
        (key!("back\\slash"), ""),
        (key!("line\nbreak", "tab\there", "cr\rhere"), ""),
        (key!("bell\u{7}", "del\u{7f}", "nul\u{0}"), ""),
        (key!("café", "日本語", "emoji 🎉"), ""),
        (key!("nbsp\u{a0}", "soft\u{ad}hyphen", "zwsp\u{200b}", "ls\u{2028}"), ""),
        (key!("c1\u{85}", "bom\u{feff}", "private\u{e000}", "astral\u{10ffff}"), ""),
        (key!(u64::MAX, i64::MIN), "(18446744073709551615, -9223372036854775808)"),
    ]
}

#[test]
fn known_strings() {
    for (key, expected) in awkward_keys() {
        if !expected.is_empty() {
            assert_eq!(key.storage_string(), expected);
            assert_eq!(key.to_string(), expected);
        }
    }
}

/// The key as JSON that a Python program turns back into the same tuple.
fn as_json(key: &QueryKey) -> serde_json::Value {
    let parts: Vec<serde_json::Value> = key
        .parts()
        .iter()
        .map(|p| {
            if let Some(s) = p.as_str() {
                serde_json::json!(["s", s])
            } else if let Some(i) = p.as_int() {
                serde_json::json!(["i", i.to_string()])
            } else {
                serde_json::json!(["b", p.as_bool() == Some(true)])
            }
        })
        .collect();
    serde_json::Value::Array(parts)
}

const PYTHON: &str = r#"
import json, sys
decode = {"s": lambda v: v, "i": int, "b": bool}
for key in json.load(sys.stdin):
    t = tuple(decode[kind](value) for kind, value in key)
    sys.stdout.write(json.dumps(str(t)) + "\n")
"#;

#[test]
fn matches_python_str_of_the_same_tuple() {
    use std::io::Write;
    use std::process::Stdio;
    let keys = awkward_keys();
    let input = serde_json::Value::Array(keys.iter().map(|(k, _)| as_json(k)).collect());
    let child = Command::new("python3")
        .arg("-c")
        .arg(PYTHON)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!("SKIPPED matches_python_str_of_the_same_tuple: python3 not runnable ({e})");
            return;
        }
    };
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "python3 failed: {}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), keys.len());
    for ((key, _), python) in keys.iter().zip(&lines) {
        assert_eq!(key.storage_string(), python, "key {:?}", key.parts());
    }
}

#[test]
fn prefix_matching_is_part_wise() {
    assert!(key!("todos").is_prefix_of(&key!("todos", "active")));
    assert!(!key!("todos").is_prefix_of(&key!("users")));
    assert!(!key!("todos", "active").is_prefix_of(&key!("todos")));
    assert!(!key!("todo").is_prefix_of(&key!("todos")), "parts, not characters");
    assert!(!key!("1").is_prefix_of(&key!(1)), "a string part never equals an integer part");
    assert!(key!().is_prefix_of(&key!("anything")));
}

#[test]
fn conversions_agree() {
    assert_eq!(QueryKey::from(("user", 42)), key!("user", 42));
    assert_eq!(QueryKey::from(["a", "b"]), key!("a", "b"));
    assert_eq!(QueryKey::from(vec![1u32, 2]), key!(1, 2));
    assert_eq!(QueryKey::from("solo"), key!("solo"));
    assert_eq!(key!(5u64), key!(5i32));
}
