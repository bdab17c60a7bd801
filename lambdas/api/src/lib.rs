//! What every function behind the API shares.
//!
//! API Gateway calls each function through a non-proxy (`AWS`) integration
//! with one generic request template, so every function receives the same
//! [`Envelope`]. A function answers with a JSON body (HTTP 200) or fails with
//! an [`ApiError`], which leaves the function as the Lambda error message
//! `"<status>: <json body>"`: API Gateway selects the integration response by
//! matching the `<status>: ` prefix and passes the JSON through unchanged.
//!
//! [`serve`] is the whole runtime glue: it parses the envelope, calls the
//! handler, turns errors into that message and logs internal faults with the
//! request id. Handlers stay plain async functions over typed input.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;

use futures_util::FutureExt;
use tracing::level_filters::LevelFilter;

use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "sdk")]
pub mod sdk;
pub mod testing;

/// The request as the API Gateway request template delivers it.
///
/// `resource` is the route's resource path with its placeholders
/// (`/user/{id}`), `path` the values of those placeholders. `body` is the raw
/// request body (empty when there is none); handlers parse it themselves so a
/// malformed body is their 400, not a runtime error.
/// Fields the template may add later are ignored, so a function version
/// pinned before the addition keeps working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub method: String,
    pub resource: String,
    #[serde(default)]
    pub path: BTreeMap<String, String>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    pub stage: String,
    pub request_id: String,
}

impl Envelope {
    /// The route key, as the Terraform route table spells it: `"GET /user/{id}"`.
    pub fn route(&self) -> String {
        format!("{} {}", self.method, self.resource)
    }

    /// The stage this request came through, validated against the fixed set.
    pub fn stage(&self) -> Result<Stage, ApiError> {
        self.stage.parse()
    }

    /// A path parameter the route declares; its absence is a 400.
    pub fn path_param(&self, name: &str) -> Result<&str, ApiError> {
        self.path
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ApiError::bad_request(format!("missing path parameter `{name}`")))
    }
}

/// The API stages. Anything else in a request is rejected, so configuration
/// keyed by stage (table names) can never be looked up with request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Staging,
    Prod,
}

impl Stage {
    pub const ALL: [Stage; 2] = [Stage::Staging, Stage::Prod];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Staging => "staging",
            Stage::Prod => "prod",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| {
                ApiError::bad_request(format!("unknown stage `{s}`: expected staging or prod"))
            })
    }
}

/// The table of each stage, from the function's configuration: the
/// variables `<PREFIX>_STAGING` and `<PREFIX>_PROD` (`USERS_TABLE_STAGING`,
/// say), so no table name is ever built from request data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub staging: String,
    pub prod: String,
}

impl Tables {
    /// Reads `<prefix>_STAGING` and `<prefix>_PROD`; `what` names them in
    /// the error (`users table`).
    pub fn from_env(prefix: &str, what: &str) -> Result<Self, String> {
        Self::from_lookup(prefix, what, |name| std::env::var(name).ok())
    }

    /// Reads the two variables through `lookup`; both must be set and non-empty.
    pub fn from_lookup(
        prefix: &str,
        what: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let var = |stage: &str| {
            let name = format!("{prefix}_{stage}");
            lookup(&name)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| format!("{name} is not set: it names the {what} of that stage"))
        };
        Ok(Tables {
            staging: var("STAGING")?,
            prod: var("PROD")?,
        })
    }

    pub fn for_stage(&self, stage: Stage) -> &str {
        match stage {
            Stage::Staging => &self.staging,
            Stage::Prod => &self.prod,
        }
    }
}

/// Why a request failed, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the message says what is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// 403: the request is understood and refused (on this stage, say).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such item, or no such route in this function.
    #[error("{0}")]
    NotFound(String),
    /// 409: an optimistic-lock condition failed. `current_lock_version` is
    /// what the store holds now (`None`: the item does not exist).
    #[error("{message}")]
    Conflict {
        message: String,
        current_lock_version: Option<u64>,
    },
    /// 500: a fault of ours. The detail goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of an error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_lock_version: Option<u64>,
    pub request_id: String,
}

/// A request body that must be a JSON object: the object, or a 400 that
/// says what is wrong, ending with `shape` (what a valid body looks like).
/// Deserialize the fields from the text afterwards, not from this value,
/// so a repeated field is refused rather than silently the last one.
pub fn json_object(body: &str, shape: &str) -> Result<serde_json::Value, ApiError> {
    if body.trim().is_empty() {
        return Err(ApiError::bad_request(format!("missing body: {shape}")));
    }
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|err| ApiError::bad_request(format!("body is not valid JSON ({err}): {shape}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "body is not an object: {shape}"
        )));
    }
    Ok(value)
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound(message.into())
    }

    pub fn internal(detail: impl fmt::Display) -> Self {
        ApiError::Internal(detail.to_string())
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict { .. } => 409,
            ApiError::Internal(_) => 500,
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "NotFound",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Internal(_) => "Internal",
        }
    }

    /// The body the client receives.
    pub fn body(&self, request_id: &str) -> ErrorBody {
        let message = match self {
            ApiError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let current_lock_version = match self {
            ApiError::Conflict {
                current_lock_version,
                ..
            } => *current_lock_version,
            _ => None,
        };
        ErrorBody {
            message,
            current_lock_version,
            request_id: request_id.to_owned(),
        }
    }

    /// The Lambda error this becomes: the message is `"<status>: <json>"`,
    /// with the JSON serialized by serde (so quotes in a message stay valid).
    pub fn into_diagnostic(self, request_id: &str) -> Diagnostic {
        let body =
            serde_json::to_string(&self.body(request_id)).expect("an ErrorBody always serializes");
        Diagnostic {
            error_type: self.error_type().to_owned(),
            error_message: format!("{}: {body}", self.status()),
        }
    }
}

/// Parses `"<status>: <json>"`, the inverse of [`ApiError::into_diagnostic`];
/// `None` for any other message (a crash, a timeout, a runtime error).
pub fn parse_error_message(message: &str) -> Option<(u16, Value)> {
    let (status, json) = message.split_once(": ")?;
    if status.len() != 3 {
        return None;
    }
    let status = status.parse().ok()?;
    let body = serde_json::from_str(json).ok()?;
    Some((status, body))
}

/// One invocation, after the envelope was parsed.
pub struct Request {
    pub envelope: Envelope,
    pub context: Context,
}

/// The runtime adapter shared by every function: envelope in, JSON body or
/// `"<status>: <json>"` error out. Exposed (rather than buried in [`serve`])
/// so tests drive a handler exactly as the runtime does.
///
/// Whatever goes wrong leaves as `"<status>: <json>"`, so API Gateway's
/// selection patterns always match: an envelope that does not parse (the
/// request template is ours, so that is our fault) and a panicking handler
/// are 500s, their detail in the log only.
pub async fn invoke<F, Fut>(handler: &F, event: LambdaEvent<Value>) -> Result<Value, Diagnostic>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Result<Value, ApiError>>,
{
    let LambdaEvent { payload, context } = event;
    // Errors quote API Gateway's request id, the one the client can see;
    // the Lambda request id is in every log line (the runtime's span).
    let (result, request_id) = match serde_json::from_value::<Envelope>(payload) {
        Ok(envelope) => {
            let request_id = envelope.request_id.clone();
            let handled = AssertUnwindSafe(handler(Request { envelope, context }))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(ApiError::internal(panic_message(&*panic))));
            (handled, request_id)
        }
        Err(err) => {
            let err = ApiError::internal(format!("malformed request envelope: {err}"));
            (Err(err), context.request_id)
        }
    };
    result.map_err(|err| {
        match &err {
            ApiError::Internal(detail) => {
                tracing::error!(status = 500, %detail, api_request_id = %request_id, "request failed")
            }
            other => {
                tracing::info!(status = other.status(), error = %other, api_request_id = %request_id, "request refused")
            }
        }
        err.into_diagnostic(&request_id)
    })
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("handler panicked: {message}")
}

/// Runs `handler` under the Lambda Runtime API until the process is stopped.
pub async fn serve<F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Result<Value, ApiError>>,
{
    let handler = &handler;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        invoke(handler, event)
    }))
    .await
}

/// Structured JSON logs on stdout, one object per line, carrying the fields of
/// the runtime's per-invocation span (`requestId`). The level comes from
/// `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG` (`error` .. `trace`), `info` by default.
///
/// lambda_runtime logs every error a handler returns at ERROR, a 400 as much
/// as a 500. [`invoke`] already logs each failure once at its real level
/// (4xx info, 5xx error with the detail) and catches handler panics itself,
/// so that runtime layer's lines are only duplicates and are dropped.
pub fn init_logging() {
    use tracing_subscriber::util::SubscriberInitExt;
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|level| level.parse().ok())
        .unwrap_or(LevelFilter::INFO);
    log_subscriber(level, std::io::stdout).init();
}

fn log_subscriber<W>(level: LevelFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target("lambda_runtime::layers::panic", LevelFilter::OFF);
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_writer(writer);
    tracing_subscriber::registry().with(json).with(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_has_its_own_table_from_configuration() {
        let env = |vars: &'static [(&str, &str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        const BOTH: &[(&str, &str)] = &[("T_STAGING", "t-s"), ("T_PROD", "t-p")];
        let tables = Tables::from_lookup("T", "things table", env(BOTH)).unwrap();
        assert_eq!(tables.for_stage(Stage::Staging), "t-s");
        assert_eq!(tables.for_stage(Stage::Prod), "t-p");
        let missing =
            Tables::from_lookup("T", "things table", env(&[("T_STAGING", "t-s")])).unwrap_err();
        assert_eq!(
            missing,
            "T_PROD is not set: it names the things table of that stage"
        );
        const EMPTY: &[(&str, &str)] = &[("T_STAGING", ""), ("T_PROD", "p")];
        let empty = Tables::from_lookup("T", "things table", env(EMPTY)).unwrap_err();
        assert!(empty.starts_with("T_STAGING is not set"), "{empty}");
    }

    #[test]
    fn error_message_round_trips_through_the_status_prefix() {
        let err = ApiError::bad_request(r#"name must not contain "quotes\" or 'these'"#);
        let diagnostic = err.into_diagnostic("req-1");
        assert!(diagnostic.error_message.starts_with("400: {"));
        let (status, body) = parse_error_message(&diagnostic.error_message).unwrap();
        assert_eq!(status, 400);
        assert_eq!(
            body["message"],
            r#"name must not contain "quotes\" or 'these'"#
        );
        assert_eq!(body["request_id"], "req-1");
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let diagnostic = ApiError::internal("connection refused to 10.0.0.1").into_diagnostic("r");
        let (status, body) = parse_error_message(&diagnostic.error_message).unwrap();
        assert_eq!(status, 500);
        assert_eq!(body["message"], "internal error");
        assert!(!diagnostic.error_message.contains("10.0.0.1"));
    }

    #[test]
    fn conflicts_carry_the_current_version() {
        let err = ApiError::Conflict {
            message: "stale".into(),
            current_lock_version: Some(7),
        };
        let (status, body) = parse_error_message(&err.into_diagnostic("r").error_message).unwrap();
        assert_eq!(
            (status, body["current_lock_version"].as_u64()),
            (409, Some(7))
        );
    }

    #[test]
    fn only_the_two_stages_parse() {
        assert_eq!("staging".parse::<Stage>().unwrap(), Stage::Staging);
        assert_eq!("prod".parse::<Stage>().unwrap(), Stage::Prod);
        for bad in ["", "Prod", "dev", "prod ", "../prod"] {
            let err = bad.parse::<Stage>().unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn malformed_envelopes_are_internal_errors_that_never_reach_the_handler() {
        let handler = |_: Request| async { panic!("the handler must not run") };
        let mut context = Context::default();
        context.request_id = "lambda-req".into();
        for payload in [
            serde_json::json!({"method": "GET"}),
            serde_json::json!("GET /status"),
            serde_json::json!({"method": "GET", "resource": "/status", "stage": "prod", "request_id": 7}),
        ] {
            let result = invoke(&handler, LambdaEvent::new(payload.clone(), context.clone())).await;
            let (status, body) = parse_error_message(&result.unwrap_err().error_message).unwrap();
            assert_eq!(status, 500, "{payload}");
            assert_eq!(body["message"], "internal error");
            assert_eq!(body["request_id"], "lambda-req");
        }
    }

    #[tokio::test]
    async fn fields_the_template_may_add_later_are_ignored() {
        let handler =
            |request: Request| async move { Ok(serde_json::json!(request.envelope.route())) };
        let payload = serde_json::json!({"method": "GET", "resource": "/status", "stage": "prod",
                                         "request_id": "r", "source_ip": "192.0.2.1"});
        let result = invoke(&handler, LambdaEvent::new(payload, Context::default())).await;
        assert_eq!(result.unwrap(), "GET /status");
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_with_the_request_id() {
        let handler = |_: Request| async { panic!("index out of bounds: secret detail") };
        let payload = serde_json::json!({"method": "GET", "resource": "/status", "stage": "prod",
                                         "request_id": "api-req"});
        let result = invoke(&handler, LambdaEvent::new(payload, Context::default())).await;
        let message = result.unwrap_err().error_message;
        let (status, body) = parse_error_message(&message).unwrap();
        assert_eq!(
            (status, body["message"].as_str()),
            (500, Some("internal error"))
        );
        assert_eq!(body["request_id"], "api-req");
        assert!(!message.contains("secret"), "{message}");
    }

    /// One JSON object per line, with the runtime span's request id; the
    /// runtime's duplicate report of a returned error is dropped.
    #[test]
    fn logs_are_json_lines_with_the_request_id() {
        use std::sync::{Arc, Mutex};
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buffer = buffer.clone();
            move || Sink(buffer.clone())
        };
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing::subscriber::with_default(log_subscriber(LevelFilter::INFO, writer), || {
            let span = tracing::info_span!("Lambda runtime invoke", requestId = "lambda-1");
            let _entered = span.enter();
            tracing::info!(status = 400, "request refused");
            tracing::error!(target: "lambda_runtime::layers::panic", "Diagnostic {{ .. }}");
            tracing::debug!("below the level");
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0]["span"]["requestId"], "lambda-1");
        assert_eq!(lines[0]["fields"]["status"], 400);
        assert_eq!(lines[0]["level"], "INFO");
    }

    #[test]
    fn foreign_error_messages_are_not_api_errors() {
        for message in [
            "Task timed out after 3.00 seconds",
            "4000: {}",
            "400: not json",
            "",
        ] {
            assert_eq!(parse_error_message(message), None, "{message:?}");
        }
    }
}
