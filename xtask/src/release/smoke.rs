//! The smoke suite: declarative HTTP cases (`events/smoke.json`), run in
//! order against a stage's base URL, each judged by its status and the body
//! fields it names; and the rule that every route has a case.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gateway::config::path_matches;

/// The suite, relative to the workspace root.
pub const CASES_FILE: &str = "events/smoke.json";

/// How long a case may take before it fails (API Gateway gives up at 29 s).
const CASE_TIMEOUT: Duration = Duration::from_secs(35);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    #[allow(dead_code)] // documentation for the file's readers
    about: Option<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// `METHOD /path?query`, the path below the stage.
    pub request: String,
    /// Sent as JSON; a string is sent as it is.
    pub body: Option<Value>,
    /// Whether the request carries the run's API key (`x-api-key`): yes
    /// unless this says `false`.
    pub api_key: Option<bool>,
    pub expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: u16,
    /// Fields that must be present with exactly these values.
    pub body: Option<Value>,
}

impl Case {
    /// The method and the path (without its query).
    pub fn route(&self) -> Result<(&str, &str)> {
        let (method, target) = self
            .request
            .split_once(' ')
            .with_context(|| format!("case `{}`: request is not `METHOD /path`", self.name))?;
        let path = target.split('?').next().unwrap_or_default();
        if !path.starts_with('/') {
            bail!("case `{}`: the path must start with /", self.name);
        }
        Ok((method, path))
    }
}

/// The suite in `text`, `{run}` replaced by `run`.
pub fn parse(text: &str, run: &str) -> Result<Vec<Case>> {
    let suite: Suite = serde_json::from_str(&text.replace("{run}", run))?;
    if suite.cases.is_empty() {
        bail!("no cases");
    }
    for case in &suite.cases {
        case.route()?;
    }
    Ok(suite.cases)
}

/// Reads the suite from the workspace root.
pub fn load(run: &str) -> Result<Vec<Case>> {
    let path = crate::project_root().join(CASES_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, run).with_context(|| format!("reading the smoke suite {}", path.display()))
}

/// An id for one run: letters and digits, as user ids must be.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{:x}{:x}",
        nanos & 0xffff_ffff_ffff,
        std::process::id() & 0xffff
    )
}

/// The routes (`METHOD /resource/{param}`) no case requests.
pub fn uncovered(routes: &[(String, String)], cases: &[Case]) -> Vec<String> {
    routes
        .iter()
        .filter(|(method, template)| {
            !cases.iter().any(|case| match case.route() {
                Ok((case_method, path)) => {
                    (case_method == method || method == "ANY") && path_matches(template, path)
                }
                Err(_) => false,
            })
        })
        .map(|(method, template)| format!("{method} {template}"))
        .collect()
}

/// How one case went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub name: String,
    pub request: String,
    pub expected_status: u16,
    /// `None` when no answer came.
    pub status: Option<u16>,
    pub passed: bool,
    /// Why it failed.
    pub failure: Option<String>,
    pub millis: f64,
}

/// `Ok` when every field of `expected` is in `actual` with the same value
/// (objects field by field, recursively; anything else exactly), as the
/// sample events are judged; otherwise the first field that differs.
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

/// Judges an answer.
pub fn judge(case: &Case, status: u16, body: &Value) -> Result<(), String> {
    if status != case.expect.status {
        return Err(format!(
            "status {status}, expected {}: {}",
            case.expect.status,
            brief(body)
        ));
    }
    if let Some(expected) = &case.expect.body
        && let Err(field) = contains(expected, body)
    {
        let field = if field.is_empty() {
            "(the body)"
        } else {
            &field
        };
        return Err(format!(
            "`{field}` differs: expected {}, got {}",
            brief(expected),
            brief(body)
        ));
    }
    Ok(())
}

fn brief(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn client() -> Result<Client> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("loading the system's TLS root certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// Runs `cases` in order against `base` (`http://127.0.0.1:PORT/staging`),
/// with `api_key` where a case does not refuse it.
pub async fn run(base: &str, cases: &[Case], api_key: Option<&str>) -> Result<Vec<Outcome>> {
    let client = client()?;
    let mut outcomes = Vec::new();
    for case in cases {
        let started = Instant::now();
        let key = api_key.filter(|_| case.api_key != Some(false));
        let answer = tokio::time::timeout(CASE_TIMEOUT, call(&client, base, case, key)).await;
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        let (status, verdict) = match answer {
            Ok(Ok((status, body))) => (Some(status), judge(case, status, &body)),
            Ok(Err(err)) => (None, Err(format!("no answer: {err:#}"))),
            Err(_) => (None, Err(format!("no answer within {CASE_TIMEOUT:?}"))),
        };
        outcomes.push(Outcome {
            name: case.name.clone(),
            request: case.request.clone(),
            expected_status: case.expect.status,
            status,
            passed: verdict.is_ok(),
            failure: verdict.err(),
            millis,
        });
    }
    Ok(outcomes)
}

/// `GET base+path` without a key: its status and JSON body.
pub async fn get(base: &str, path: &str) -> Result<(u16, Value)> {
    let case: Case = serde_json::from_value(serde_json::json!({
        "name": "get",
        "request": format!("GET {path}"),
        "expect": {"status": 200},
    }))?;
    tokio::time::timeout(CASE_TIMEOUT, call(&client()?, base, &case, None))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {CASE_TIMEOUT:?}"))?
}

async fn call(
    client: &Client,
    base: &str,
    case: &Case,
    api_key: Option<&str>,
) -> Result<(u16, Value)> {
    let (method, _) = case.route()?;
    let target = case
        .request
        .split_once(' ')
        .map(|(_, target)| target)
        .unwrap_or_default();
    let body = match &case.body {
        None => Vec::new(),
        Some(Value::String(raw)) => raw.clone().into_bytes(),
        Some(value) => serde_json::to_vec(value)?,
    };
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{target}", base.trim_end_matches('/')))
        .header("content-type", "application/json")
        .header("user-agent", "cargo-xtask-verify");
    if let Some(key) = api_key {
        request = request.header("x-api-key", key);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn case(request: &str, status: u16, body: Option<Value>) -> Case {
        Case {
            name: request.to_owned(),
            request: request.to_owned(),
            body: None,
            api_key: None,
            expect: Expect { status, body },
        }
    }

    #[test]
    fn the_committed_suite_parses_and_covers_the_routes_of_terraform() {
        let cases = load("abc123").unwrap();
        assert!(cases.iter().all(|case| !case.request.contains("{run}")));
        assert!(
            cases
                .iter()
                .any(|case| case.request == "GET /user/smokeabc123")
        );
        // The route table's keys, read from terraform/api.tf.
        let routes: Vec<(String, String)> = crate::routes::Table::read(&crate::project_root())
            .unwrap()
            .routes
            .into_keys()
            .map(|route| (route.method, route.path))
            .collect();
        assert!(routes.len() >= 5, "{routes:?}");
        // A route that needs an API key is also asked without one, and refused.
        let table = crate::routes::Table::read(&crate::project_root()).unwrap();
        for route in &table.api_key {
            assert!(
                cases.iter().any(|case| case.api_key == Some(false)
                    && case.expect.status == 403
                    && case
                        .route()
                        .is_ok_and(|(method, path)| method == route.method
                            && path_matches(&route.path, path))),
                "no case asks `{}` without an API key and expects 403",
                route.key()
            );
        }
        assert_eq!(uncovered(&routes, &cases), Vec::<String>::new());
        let statuses: std::collections::BTreeSet<u16> =
            cases.iter().map(|case| case.expect.status).collect();
        for status in [200, 400, 403, 404, 409] {
            assert!(statuses.contains(&status), "no case expects {status}");
        }
    }

    #[test]
    fn a_route_without_a_case_is_named() {
        let routes = vec![
            ("GET".to_owned(), "/user/{id}".to_owned()),
            ("DELETE".to_owned(), "/user/{id}".to_owned()),
            ("GET".to_owned(), "/status".to_owned()),
        ];
        let cases = vec![case("GET /user/ada00001?x=1", 200, None)];
        assert_eq!(
            uncovered(&routes, &cases),
            ["DELETE /user/{id}", "GET /status"]
        );
    }

    #[test]
    fn answers_are_judged_by_status_and_the_fields_named() {
        let expected = case("GET /x", 409, Some(json!({"current_lock_version": 2})));
        let body = json!({"message": "stale", "current_lock_version": 2});
        assert_eq!(judge(&expected, 409, &body), Ok(()));
        let err = judge(&expected, 200, &body).unwrap_err();
        assert!(err.starts_with("status 200, expected 409"), "{err}");
        let err = judge(&expected, 409, &json!({"current_lock_version": 3})).unwrap_err();
        assert!(err.starts_with("`current_lock_version` differs"), "{err}");
        let err = judge(&expected, 409, &json!("not an object")).unwrap_err();
        assert!(err.starts_with("`(the body)` differs"), "{err}");
        assert_eq!(judge(&case("GET /x", 404, None), 404, &json!(null)), Ok(()));
    }

    #[test]
    fn a_malformed_suite_is_refused() {
        assert!(parse(r#"{"cases": []}"#, "r").is_err());
        assert!(
            parse(
                r#"{"cases": [{"name": "x", "request": "GET", "expect": {"status": 200}}]}"#,
                "r"
            )
            .is_err()
        );
        assert!(
            parse(
                r#"{"cases": [{"name": "x", "request": "GET x", "expect": {"status": 200}}]}"#,
                "r"
            )
            .is_err()
        );
        assert!(parse(r#"{"cases": [{"name": "x", "request": "GET /x", "expect": {"status": 200, "typo": 1}}]}"#, "r").is_err());
        assert!(run_id().bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
