//! `status`: `GET /status` describes the running instance (server time, when
//! this instance started, the function version and alias it runs as, the
//! stage); `GET /health` is the cheap check for load balancers and smoke tests.
//!
//! `GET /status?drill=KIND` fails on purpose, through the real error path
//! (the function's error, the integration response, the gateway), so a
//! deployed stage's error mapping can be checked on demand: `400`, `403`,
//! `404`, `409` and `500` answer that status as an API error does;
//! `timeout` runs past the function's timeout; `crash` exits the process.
//! Staging only: on prod a drill is refused with a 403.

use std::time::SystemTime;

use api::{ApiError, Request, Stage};
use serde_json::{Value, json};

/// Facts about this execution environment, read once per cold start.
#[derive(Debug, Clone)]
struct Instance {
    started_at: SystemTime,
    function_name: String,
    function_version: String,
}

impl Instance {
    fn from_env() -> Self {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Instance {
            started_at: SystemTime::now(),
            function_name: var("AWS_LAMBDA_FUNCTION_NAME", "status"),
            function_version: var("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        }
    }
}

/// The alias named in an invoked function ARN; `None` for an unqualified
/// call or one naming a version (`:7`, `:$LATEST`).
fn alias(invoked_function_arn: &str) -> Option<&str> {
    // arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    let qualifier = invoked_function_arn.splitn(8, ':').nth(7)?;
    let is_version = qualifier == "$LATEST" || qualifier.bytes().all(|b| b.is_ascii_digit());
    (!is_version).then_some(qualifier)
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// What a drill asks for, checked before anything fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drill {
    Status(u16),
    Timeout,
    Crash,
}

impl Drill {
    /// The drill `kind` names on `stage`: refused on prod (403) and for a
    /// kind there is none of (400).
    fn parse(kind: &str, stage: Stage) -> Result<Drill, ApiError> {
        if stage == Stage::Prod {
            return Err(ApiError::forbidden(
                "drills run on staging only: prod serves users",
            ));
        }
        match kind {
            "400" | "403" | "404" | "409" | "500" => {
                Ok(Drill::Status(kind.parse().expect("a status from the list")))
            }
            "timeout" => Ok(Drill::Timeout),
            "crash" => Ok(Drill::Crash),
            other => Err(ApiError::bad_request(format!(
                "unknown drill `{other}`: one of 400, 403, 404, 409, 500, timeout, crash"
            ))),
        }
    }

    fn run(self, deadline_ms: u64) -> ApiError {
        match self {
            Drill::Status(status) => {
                let message = format!("drill: the {status} this stage answers for such an error");
                match status {
                    400 => ApiError::bad_request(message),
                    403 => ApiError::forbidden(message),
                    404 => ApiError::not_found(message),
                    409 => ApiError::Conflict {
                        message,
                        current_lock_version: None,
                    },
                    _ => ApiError::internal(message),
                }
            }
            Drill::Timeout => {
                // Past the deadline Lambda stops the invocation (Sandbox.Timedout).
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                let left = deadline_ms.saturating_sub(now);
                tracing::warn!(left_ms = left, "drill: running past the deadline");
                // Blocking is fine: nothing else runs in this environment meanwhile.
                std::thread::sleep(std::time::Duration::from_millis(left + 5_000));
                ApiError::internal("drill: still running after the deadline")
            }
            Drill::Crash => {
                tracing::error!("drill: crashing the process");
                std::process::exit(70);
            }
        }
    }
}

async fn handle(instance: &Instance, request: Request) -> Result<Value, ApiError> {
    let envelope = &request.envelope;
    let stage = envelope.stage()?;
    match envelope.route().as_str() {
        "GET /status" if envelope.query.contains_key("drill") => {
            let drill = Drill::parse(&envelope.query["drill"], stage)?;
            Err(drill.run(request.context.deadline))
        }
        "GET /status" => Ok(json!({
            "status": "ok",
            "server_time": rfc3339(SystemTime::now()),
            "started_at": rfc3339(instance.started_at),
            "function": instance.function_name,
            "function_version": instance.function_version,
            "alias": alias(&request.context.invoked_function_arn),
            "stage": stage,
            "build": env!("CARGO_PKG_VERSION"),
        })),
        "GET /health" => Ok(json!({ "status": "ok" })),
        other => Err(ApiError::not_found(format!("no route `{other}` in status"))),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    api::init_logging();
    let instance = Instance::from_env();
    api::serve(|request| handle(&instance, request)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_runtime::{Context, LambdaEvent};

    fn instance() -> Instance {
        Instance {
            started_at: SystemTime::UNIX_EPOCH,
            function_name: "example-status".into(),
            function_version: "7".into(),
        }
    }

    async fn call(event: Value, context: Context) -> (u16, Value) {
        let instance = instance();
        let handler = |request| handle(&instance, request);
        api::testing::response(api::invoke(&handler, LambdaEvent::new(event, context)).await)
    }

    #[tokio::test]
    async fn every_sample_event() {
        for sample in api::testing::samples("status") {
            sample.check(call(sample.event.clone(), Context::default()).await);
        }
    }

    #[tokio::test]
    async fn status_reports_the_instance_and_the_alias_it_was_invoked_as() {
        let mut context = Context::default();
        context.invoked_function_arn =
            "arn:aws:lambda:us-east-1:123456789012:function:example-status:prod".into();
        let event = json!({
            "method": "GET", "resource": "/status", "stage": "prod", "request_id": "r1"
        });
        let (status, body) = call(event, context).await;
        assert_eq!(status, 200);
        assert_eq!(body["started_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(body["function_version"], "7");
        assert_eq!(body["alias"], "prod");
        assert_eq!(body["stage"], "prod");
        let server_time = humantime::parse_rfc3339(body["server_time"].as_str().unwrap()).unwrap();
        assert!(server_time > SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn the_alias_is_a_non_version_qualifier() {
        let arn = "arn:aws:lambda:eu-west-1:123456789012:function:f";
        assert_eq!(alias(arn), None);
        assert_eq!(alias(&format!("{arn}:staging")), Some("staging"));
        assert_eq!(alias(&format!("{arn}:prod")), Some("prod"));
        assert_eq!(alias(&format!("{arn}:12")), None);
        assert_eq!(alias(&format!("{arn}:$LATEST")), None);
        assert_eq!(alias(""), None);
    }
}
