//! Sample events and the one `check` that judges a response against them.
//!
//! `events/<function>/<name>.json` is an [`Envelope`](crate::Envelope) as API
//! Gateway would deliver it (usable as-is as a Lambda payload);
//! `events/<function>/<name>.expected.json` says what it must give:
//! `{"status": 409, "body": {...}}`, where `body` lists the fields that must
//! be present with exactly these values (others may be present too).

use std::path::{Path, PathBuf};

use lambda_runtime::Diagnostic;
use serde::Deserialize;
use serde_json::Value;

use crate::parse_error_message;

/// What a sample event must produce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub status: u16,
    pub body: Value,
}

/// One sample event with its expectation.
#[derive(Debug, Clone)]
pub struct Sample {
    pub path: PathBuf,
    pub event: Value,
    pub expected: Expected,
}

/// `events/` at the workspace root.
pub fn events_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

/// Every sample of `function`, sorted by file name. Panics (failing the test)
/// on a sample without its `.expected.json`, an expectation without its
/// sample, another kind of file, or invalid JSON.
pub fn samples(function: &str) -> Vec<Sample> {
    let dir = events_root().join(function);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            name.ends_with(".json"),
            "{}: only .json files belong here",
            path.display()
        );
        if let Some(stem) = name.strip_suffix(".expected.json") {
            let sample = path.with_file_name(format!("{stem}.json"));
            assert!(
                sample.exists(),
                "{} expects a missing sample",
                path.display()
            );
        }
    }
    let mut paths: Vec<PathBuf> = files
        .into_iter()
        .filter(|path| is_event_file(path))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no sample events in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let expected_path = path.with_extension("expected.json");
            Sample {
                event: read_json(&path),
                expected: serde_json::from_value(read_json(&expected_path))
                    .unwrap_or_else(|err| panic!("{}: {err}", expected_path.display())),
                path,
            }
        })
        .collect()
}

/// A sample event file: `*.json` but not `*.expected.json`.
fn is_event_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".json") && !name.ends_with(".expected.json")
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// A function's result as an API Gateway client sees it: a success is 200
/// with the returned body, an error is its `"<status>: <json>"` message
/// taken apart. Anything else would be a 502 from API Gateway.
pub fn response(result: Result<Value, Diagnostic>) -> (u16, Value) {
    match result {
        Ok(body) => (200, body),
        Err(diagnostic) => parse_error_message(&diagnostic.error_message).unwrap_or_else(|| {
            panic!(
                "error message is not `<status>: <json>`: {:?}",
                diagnostic.error_message
            )
        }),
    }
}

impl Sample {
    /// Asserts the response matches the expectation.
    pub fn check(&self, (status, body): (u16, Value)) {
        let name = self.path.display();
        assert_eq!(status, self.expected.status, "{name}: status (body {body})");
        if let Err(field) = contains(&self.expected.body, &body) {
            panic!(
                "{name}: body field `{field}` differs: expected {}, got {body}",
                self.expected.body
            );
        }
    }
}

/// `Ok` when every field of `expected` is in `actual` with the same value
/// (objects compared field by field, recursively; anything else, `null`
/// included, exactly);
/// otherwise the path of the first field that differs.
pub fn contains(expected: &Value, actual: &Value) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let got = have.get(key).ok_or_else(|| key.clone())?;
                contains(value, got).map_err(|inner| match inner.as_str() {
                    "" => key.clone(),
                    _ => format!("{key}.{inner}"),
                })?;
            }
            Ok(())
        }
        _ if expected == actual => Ok(()),
        _ => Err(String::new()),
    }
}

/// Judges what a function's `parse` made of `input`: the command `expected`,
/// or a 400 whose message contains the fragment `expected` names.
#[track_caller]
pub fn check_parsed<C: std::fmt::Debug + PartialEq>(
    input: &str,
    result: Result<C, crate::ApiError>,
    expected: Result<C, &str>,
) {
    match (result, expected) {
        (Ok(command), Ok(want)) => assert_eq!(command, want, "{input}"),
        (Err(err), Err(fragment)) => {
            assert_eq!(err.status(), 400, "{input}: {err}");
            assert!(
                err.to_string().contains(fragment),
                "{input}: `{err}` lacks `{fragment}`"
            );
        }
        (other, want) => panic!("{input}: got {other:?}, expected {want:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contains_compares_the_named_fields_only() {
        let actual = json!({"id": "a", "lock_version": 2, "name": "Ada"});
        assert_eq!(contains(&json!({"lock_version": 2}), &actual), Ok(()));
        assert!(contains(&json!({"lock_version": 3}), &actual).is_err());
        assert_eq!(
            contains(&json!({"missing": 1}), &actual),
            Err("missing".into())
        );
        assert_eq!(
            contains(&json!({"a": {"b": 1}}), &json!({"a": {"b": 2}})),
            Err("a.b".into())
        );
        assert!(contains(&json!("x"), &json!({"x": 1})).is_err());
        assert_eq!(
            contains(&json!({"alias": null}), &json!({"alias": null})),
            Ok(())
        );
        assert_eq!(
            contains(&json!({"alias": null}), &json!({"alias": "prod"})),
            Err("alias".into())
        );
    }
}
