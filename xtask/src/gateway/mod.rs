//! The local API gateway: serves every stage of the applied REST API on
//! loopback (`/staging/...`, `/prod/...`), the way API Gateway serves a
//! non-proxy Lambda integration, with the functions run by the local
//! [`Host`].
//!
//! A request goes stage -> resource and method -> integration -> the
//! function version the stage's variables select (alias -> version ->
//! `CodeSha256` -> artifact) -> integration response. The configuration is
//! the emulator's ([`config`]), reloaded whenever Terraform's local state
//! changes (and no apply is under way), so a promotion takes effect without
//! a restart. API Gateway's own answers:
//!
//! - unknown stage: 403 `{"message":"Forbidden"}`; unknown resource or
//!   method: 403 `{"message":"Missing Authentication Token"}`;
//! - a key-required method without a valid key of the stage's usage plans
//!   (`x-api-key`): 403 `{"message":"Forbidden"}`; over the key's quota:
//!   429 `{"message":"Limit Exceeded"}`; over the key's or the stage's
//!   throttle: 429 `{"message":"Too Many Requests"}` ([`limits`]);
//! - body over 10 MB: 413; content type without a template (passthrough
//!   `NEVER`): 415;
//! - the integration's timeout passed: 504; the function could not be
//!   invoked at all: 500; a function error is mapped by the integration
//!   responses (here, a crash or timeout is the configuration's 502).

pub mod access_log;
pub mod config;
pub mod limits;
pub mod mapping;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::LocalDir;
use crate::host::{Host, Outcome, new_request_id};
use crate::live::{self, Applied, Aws};
use config::{Api, Integration, IntegrationResponse, Stage};
use mapping::Context as TemplateContext;

/// API Gateway's limit on a request's body.
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// A failed load is retried this often (each request may try).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What one request met on its way, for its metrics and access log line.
#[derive(Debug, Default)]
struct Trace {
    method: String,
    path: String,
    api_name: String,
    api_id: String,
    /// The stage that answered (none: no stage, no metrics).
    stage: Option<String>,
    access_log: Option<config::AccessLog>,
    resource_path: Option<String>,
    api_key_id: Option<String>,
    integration_latency: Option<Duration>,
    /// What Lambda's `Invoke` answered: 200 (a function error too), 429, 500.
    integration_status: Option<u16>,
}

pub struct Gateway {
    /// The access log stream this gateway writes (one per process, as API
    /// Gateway writes to streams of its own).
    access_log_stream: String,
    source: Source,
    aws: Aws,
    pub host: Arc<Host>,
    loaded: tokio::sync::RwLock<Loaded>,
    reloading: tokio::sync::Mutex<()>,
    limiter: std::sync::Mutex<limits::Limiter>,
}

/// Where the gateway learns what is applied.
enum Source {
    /// The local stack: its Terraform state's outputs, reloaded whenever
    /// that file changes.
    Local(LocalDir),
    /// A stack applied elsewhere (`serve --aws`, an AWS-compatible endpoint
    /// standing in for AWS): the outputs read at start; the API and its
    /// aliases re-read every [`REMOTE_REFRESH`]; configurations recorded
    /// under `records`.
    Remote {
        applied: Box<Applied>,
        records: LocalDir,
        /// Whether it has loaded (and recorded the applied revision) once.
        started: std::sync::atomic::AtomicBool,
    },
}

/// How often a [`Source::Remote`] gateway re-reads the API and aliases.
const REMOTE_REFRESH: Duration = Duration::from_secs(1);

impl Source {
    /// What changes when the applied stack does (`None`: nothing to watch).
    fn stamp(&self) -> Option<(SystemTime, u64)> {
        match self {
            Source::Local(local) => stamp(local),
            Source::Remote { .. } => None,
        }
    }

    /// Whether the last load is still what is applied.
    fn fresh(&self, loaded: &Loaded, stamp: Option<(SystemTime, u64)>) -> bool {
        match self {
            Source::Local(_) => {
                loaded.stamp == stamp && (loaded.api.is_ok() || loaded.at.elapsed() < RETRY_AFTER)
            }
            Source::Remote { .. } => loaded.at.elapsed() < REMOTE_REFRESH,
        }
    }

    /// An apply holds the state (serve what was there before it).
    fn locked(&self) -> bool {
        match self {
            Source::Local(local) => live::state_locked(local),
            Source::Remote { .. } => false,
        }
    }

    async fn load(&self, aws: &Aws) -> Result<Api> {
        match self {
            Source::Local(local) => {
                let applied = Applied::read(local)?;
                config::load(aws, &applied, local).await
            }
            Source::Remote {
                applied,
                records,
                started,
            } => {
                let first = !started.swap(true, std::sync::atomic::Ordering::SeqCst);
                config::load_recording(aws, applied, records, first).await
            }
        }
    }
}

struct Loaded {
    api: Result<Arc<Api>, String>,
    /// The state file's modification time and length when loaded.
    stamp: Option<(SystemTime, u64)>,
    at: Instant,
}

impl Gateway {
    /// Loads the applied API; an error (something this gateway does not
    /// emulate, nothing applied) refuses to start.
    pub async fn new(local: &LocalDir, aws: Aws, host: Arc<Host>) -> Result<Arc<Gateway>> {
        Gateway::from_source(Source::Local(local.clone()), aws, host).await
    }

    /// A gateway of a stack applied elsewhere (`applied`: its outputs),
    /// whose API `aws` reads; configurations it loads are recorded under
    /// `records`.
    pub async fn remote(
        applied: Applied,
        records: LocalDir,
        aws: Aws,
        host: Arc<Host>,
    ) -> Result<Arc<Gateway>> {
        let started = std::sync::atomic::AtomicBool::new(false);
        let source = Source::Remote {
            applied: Box::new(applied),
            records,
            started,
        };
        Gateway::from_source(source, aws, host).await
    }

    async fn from_source(source: Source, aws: Aws, host: Arc<Host>) -> Result<Arc<Gateway>> {
        let stamp = source.stamp();
        let api = source.load(&aws).await?;
        Ok(Arc::new(Gateway {
            access_log_stream: new_request_id().replace('-', ""),
            source,
            aws,
            host,
            loaded: tokio::sync::RwLock::new(Loaded {
                api: Ok(Arc::new(api)),
                stamp,
                at: Instant::now(),
            }),
            reloading: tokio::sync::Mutex::new(()),
            limiter: std::sync::Mutex::new(limits::Limiter::default()),
        }))
    }

    /// The API as last loaded.
    pub async fn api(&self) -> Result<Arc<Api>, String> {
        self.loaded.read().await.api.clone()
    }

    /// The API as applied now: reloaded if Terraform changed the state since.
    pub async fn current(&self) -> Result<Arc<Api>, String> {
        let stamp = self.source.stamp();
        {
            let loaded = self.loaded.read().await;
            // While an apply holds the state, serve what was there before it.
            if self.source.fresh(&loaded, stamp) || self.source.locked() {
                return loaded.api.clone();
            }
        }
        let _reloading = self.reloading.lock().await;
        if self.source.fresh(&*self.loaded.read().await, stamp) {
            return self.api().await;
        }
        let last = self.api().await.ok().map(|api| summary(&api));
        let api = match self.source.load(&self.aws).await {
            Ok(api) => {
                let api = Arc::new(api);
                // (A remote source reloads every second: said when it moved.)
                let now = summary(&api);
                if last.as_ref() != Some(&now) || matches!(self.source, Source::Local(_)) {
                    self.host
                        .log
                        .line(format_args!("==> reloaded the applied API: {now}"));
                }
                let served: Vec<_> = api
                    .stages
                    .values()
                    .flat_map(|stage| stage.targets.values())
                    .filter_map(|target| target.as_ref().ok())
                    .flat_map(|target| target.routed.versions().cloned())
                    .collect();
                self.host.retain(|function| served.contains(function));
                Ok(api)
            }
            Err(err) => {
                let err = format!("{err:#}");
                self.host.log.line(format_args!(
                    "==> cannot serve the applied API (every request answers 500): {err}"
                ));
                Err(err)
            }
        };
        *self.loaded.write().await = Loaded {
            api: api.clone(),
            stamp,
            at: Instant::now(),
        };
        api
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => accepted?,
                () = &mut shutdown => {
                    // What the last requests recorded goes out before the end.
                    if let Some(telemetry) = self.host.telemetry() {
                        telemetry.flush().await;
                    }
                    return Ok(());
                }
            };
            let _ = stream.set_nodelay(true);
            let gateway = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let received = SystemTime::now();
        let request_id = new_request_id();
        let line = format!("{} {}", request.method(), request.uri());
        let mut trace = Trace {
            method: request.method().as_str().to_owned(),
            path: request.uri().path().to_owned(),
            ..Trace::default()
        };
        let response = self.respond(request, &request_id, &mut trace).await;
        let latency = started.elapsed();
        self.host.log.line(format_args!(
            "{line} -> {} ({:.1} ms)",
            response.status().as_u16(),
            latency.as_secs_f64() * 1000.0
        ));
        let mut response = response;
        response.headers_mut().insert(
            "x-amzn-requestid",
            request_id.parse().expect("a request id is a header value"),
        );
        self.record(&trace, &response, &request_id, peer, received, latency);
        response
    }

    /// A request's metrics and its access log line, as API Gateway records
    /// them, where the host records its invocations.
    fn record(
        &self,
        trace: &Trace,
        response: &Response<Full<Bytes>>,
        request_id: &str,
        peer: SocketAddr,
        received: SystemTime,
        latency: Duration,
    ) {
        let (Some(telemetry), Some(stage)) = (self.host.telemetry(), &trace.stage) else {
            return;
        };
        let status = response.status().as_u16();
        telemetry.request(
            &trace.api_name,
            stage,
            status,
            latency,
            trace.integration_latency,
        );
        let Some(access_log) = &trace.access_log else {
            return;
        };
        let ms = |d: Duration| format!("{}", d.as_millis());
        let error = response
            .extensions()
            .get::<GatewayError>()
            .map(|error| error.0.clone());
        let length = hyper::body::Body::size_hint(response.body())
            .exact()
            .unwrap_or_default();
        let epoch = received
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let values: BTreeMap<&str, Option<String>> = BTreeMap::from([
            ("requestId", Some(request_id.to_owned())),
            (
                "extendedRequestId",
                Some(new_request_id().replace('-', "")[..16].to_owned()),
            ),
            ("apiId", Some(trace.api_id.clone())),
            ("stage", Some(stage.clone())),
            ("identity.sourceIp", Some(peer.ip().to_string())),
            ("requestTime", Some(access_log::clf_time(received))),
            ("requestTimeEpoch", Some(epoch.as_millis().to_string())),
            ("httpMethod", Some(trace.method.clone())),
            ("resourcePath", trace.resource_path.clone()),
            ("path", Some(trace.path.clone())),
            ("status", Some(status.to_string())),
            ("protocol", Some("HTTP/1.1".to_owned())),
            ("responseLength", Some(length.to_string())),
            ("responseLatency", Some(ms(latency))),
            ("integrationLatency", trace.integration_latency.map(ms)),
            ("integration.latency", trace.integration_latency.map(ms)),
            (
                "integration.status",
                trace.integration_status.map(|s| s.to_string()),
            ),
            (
                "integrationStatus",
                trace.integration_status.map(|s| s.to_string()),
            ),
            ("identity.apiKeyId", trace.api_key_id.clone()),
            ("error.message", error),
        ]);
        let line = access_log::render(&access_log.format, &values);
        telemetry.log(&access_log.group, &self.access_log_stream, &line);
    }

    async fn respond(
        &self,
        request: Request<Incoming>,
        request_id: &str,
        trace: &mut Trace,
    ) -> Response<Full<Bytes>> {
        let api = match self.current().await {
            Ok(api) => api,
            Err(_) => return internal_error(),
        };
        trace.api_name = api.name.clone();
        trace.api_id = api.id.clone();
        let path = request.uri().path().to_owned();
        // A custom domain name's host: its base path mappings choose the
        // stage, and the stage is not in the path.
        let host = request
            .headers()
            .get(hyper::header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let (stage_name, rest) = match api.by_domain(host, &path) {
            Some(Some((stage, rest))) => (stage, rest),
            Some(None) => {
                return gateway_error(StatusCode::FORBIDDEN, "Forbidden", "AccessDeniedException");
            }
            None => match path.trim_start_matches('/').split_once('/') {
                Some((stage, rest)) => (stage.to_owned(), format!("/{rest}")),
                None => (path.trim_start_matches('/').to_owned(), "/".to_owned()),
            },
        };
        let stage_name = stage_name.as_str();
        let Some(stage) = api.stages.get(stage_name) else {
            return if stage_name.is_empty() {
                missing_token()
            } else {
                gateway_error(StatusCode::FORBIDDEN, "Forbidden", "AccessDeniedException")
            };
        };
        trace.stage = Some(stage.name.clone());
        trace.access_log = stage.access_log.clone();
        let routes = match &stage.routes {
            Ok(routes) => routes,
            Err(reason) => {
                self.host.log.line(format_args!("{stage_name}: {reason}"));
                return internal_error();
            }
        };
        let Some((resource, path_params)) = routes.find(&rest) else {
            return missing_token();
        };
        trace.resource_path = Some(resource.path.clone());
        let method = request.method().as_str().to_owned();
        let Some(integration) = resource.method(&method) else {
            return missing_token();
        };
        let key = integration.api_key_required.then(|| {
            request
                .headers()
                .get("x-api-key")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| stage.keys.get(value))
        });
        trace.api_key_id = key.flatten().map(|grant| grant.key_id.clone());
        let admitted = self
            .limiter
            .lock()
            // Its counts stay consistent whatever panicked while holding it.
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admit(
                &format!("{stage_name} {method} {}", resource.path),
                key,
                stage.throttle,
                Instant::now(),
                SystemTime::now(),
            );
        match admitted {
            Ok(()) => {}
            Err(limits::Refusal::Forbidden) => {
                return gateway_error(StatusCode::FORBIDDEN, "Forbidden", "ForbiddenException");
            }
            Err(limits::Refusal::QuotaSpent) => {
                return gateway_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Limit Exceeded",
                    "LimitExceededException",
                );
            }
            Err(limits::Refusal::Throttled) => {
                return gateway_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too Many Requests",
                    "TooManyRequestsException",
                );
            }
        }

        let declared = request
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|length| length > BODY_LIMIT) {
            return too_long();
        }
        let content_type = request
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| "application/json".to_owned());
        let query = query_params(request.uri().query().unwrap_or_default());
        let body = match Limited::new(request.into_body(), BODY_LIMIT)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return too_long(),
        };

        let templated = integration.content_types.contains(&content_type);
        let payload = if templated {
            let envelope = json!({
                "method": method,
                "resource": resource.path,
                "path": path_params,
                "query": query,
                "body": String::from_utf8_lossy(&body),
                "stage": stage.variables.get("stage").cloned().unwrap_or_default(),
                "request_id": request_id,
            });
            let payload = serde_json::to_vec(&envelope).expect("JSON");
            // Lambda refuses the invocation (API Gateway: 500), counting the
            // envelope as AWS's template writes it.
            if escaped_len(&payload) > crate::host::REQUEST_PAYLOAD_LIMIT {
                self.host.log.line(format_args!(
                    "{stage_name} {method} {}: RequestEntityTooLargeException: the envelope \
                     is {} bytes as API Gateway writes it, over Lambda's {}",
                    resource.path,
                    escaped_len(&payload),
                    crate::host::REQUEST_PAYLOAD_LIMIT
                ));
                return internal_error();
            }
            payload
        } else if integration.passthrough == "WHEN_NO_MATCH"
            || (integration.passthrough == "WHEN_NO_TEMPLATES"
                && integration.content_types.is_empty())
        {
            // Text, as API Gateway reads a body of a type not declared binary:
            // bytes that are not UTF-8 become U+FFFD.
            String::from_utf8_lossy(&body).into_owned().into_bytes()
        } else {
            return gateway_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type",
                "UnsupportedMediaTypeException",
            );
        };

        let target = match stage.targets.get(&integration.uri) {
            Some(Ok(target)) => target,
            Some(Err(reason)) => {
                self.host.log.line(format_args!(
                    "{stage_name} {method} {}: {reason}",
                    resource.path
                ));
                return internal_error();
            }
            None => return internal_error(),
        };
        // A weighted alias (a canary) runs its other version for its share.
        let function = target.routed.pick();
        let invoked = Instant::now();
        let invocation = tokio::time::timeout(
            integration.timeout,
            self.host
                .invoke(function, target.invoked_arn.clone(), payload),
        )
        .await;
        trace.integration_latency = Some(invoked.elapsed());
        let Ok(invocation) = invocation else {
            self.host.log.line(format_args!(
                "{stage_name} {method} {}: no answer within the integration timeout ({} ms)",
                resource.path,
                integration.timeout.as_millis()
            ));
            return gateway_error(
                StatusCode::GATEWAY_TIMEOUT,
                "Endpoint request timed out",
                "IntegrationTimeout",
            );
        };
        trace.integration_status = Some(match &invocation.outcome {
            Outcome::Throttled { .. } => 429,
            Outcome::ServiceError(_) => 500,
            Outcome::Response(_) | Outcome::FunctionError { .. } => 200,
        });
        let context = TemplateContext {
            request_id,
            stage: &stage.name,
            http_method: &method,
            resource_path: &resource.path,
            stage_variables: &stage.variables,
        };
        map_outcome(integration, &invocation.outcome, &context)
    }
}

/// The integration response for a Lambda outcome, rendered.
pub fn map_outcome(
    integration: &Integration,
    outcome: &Outcome,
    context: &TemplateContext,
) -> Response<Full<Bytes>> {
    let chosen = match outcome {
        Outcome::ServiceError(message) => {
            eprintln!("Lambda invocation failed: {message}");
            return internal_error();
        }
        // A throttled invocation (Lambda's 429) never reaches the selection
        // patterns: API Gateway answers its own 500 "Internal server error",
        // and no integration response can map it otherwise. Reported from
        // REST APIs on AWS: AWS Knowledge Center "How do I resolve 'Internal
        // server error' from a Lambda integration" (throttling), AWS re:Post
        // QUfI6bsdd0SOiPeyimzxSkfQ ("API Gateway converts this into HTTP 500
        // Internal Server Error"), and AWS's answer on Stack Overflow 36363280
        // ("There is no way to map Lambda's 429 to any status code. It will
        // always be considered as 500."). (The gateway-response table lists
        // INTEGRATION_FAILURE at 504, but that is not what clients see.)
        Outcome::Throttled { reason } => {
            eprintln!(
                "Lambda invocation failed with status: 429 ({reason}). Execution failed due to \
                 configuration error: Rate Exceeded."
            );
            return internal_error();
        }
        Outcome::Response(_) => integration.default.as_ref(),
        Outcome::FunctionError { message, .. } => integration
            .responses
            .iter()
            .find(|response| {
                response
                    .pattern
                    .as_ref()
                    .is_some_and(|pattern| pattern.matches(message))
            })
            .or(integration.default.as_ref()),
    };
    let Some(IntegrationResponse {
        status, template, ..
    }) = chosen
    else {
        eprintln!("no integration response matches and there is no default one");
        return internal_error();
    };
    let payload = outcome.payload();
    let body = match template {
        None => payload,
        Some(template) => match template.render(&payload, context) {
            Ok(body) => body.into_bytes(),
            Err(err) => {
                eprintln!("the {status} response template failed: {err:#}");
                return internal_error();
            }
        },
    };
    json_response(
        StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
        body,
    )
}

/// Query string parameters, decoded as a form is (`+` is a space); the
/// last of a repeated name wins, even an empty one, as on API Gateway (its
/// single-value map: `?a=1&a=2` is `a=2`).
fn query_params(query: &str) -> BTreeMap<String, String> {
    let decode = |text: &str| config::percent_decode(&text.replace('+', " "));
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// The size of the envelope `payload` (JSON as serde writes it, non-ASCII
/// characters as they are) as API Gateway's template writes it: through
/// `$util.escapeJavaScript`, which writes each non-ASCII character as a
/// `\uXXXX` escape per UTF-16 unit (`é`: 6 bytes, not 2; `😀`: 12, not 4).
/// Lambda's request limit counts that.
fn escaped_len(payload: &[u8]) -> usize {
    let text = String::from_utf8_lossy(payload);
    payload.len()
        + text
            .chars()
            .filter(|c| !c.is_ascii())
            .map(|c| 6 * c.len_utf16() - c.len_utf8())
            .sum::<usize>()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// An answer of API Gateway's own: its message is the access log's
/// `$context.error.message`.
#[derive(Debug, Clone)]
struct GatewayError(String);

fn gateway_error(status: StatusCode, message: &str, error_type: &str) -> Response<Full<Bytes>> {
    let mut response = json_response(
        status,
        json!({ "message": message }).to_string().into_bytes(),
    );
    response.headers_mut().insert(
        "x-amzn-errortype",
        error_type.parse().expect("a header value"),
    );
    response
        .extensions_mut()
        .insert(GatewayError(message.to_owned()));
    response
}

fn missing_token() -> Response<Full<Bytes>> {
    gateway_error(
        StatusCode::FORBIDDEN,
        "Missing Authentication Token",
        "MissingAuthenticationTokenException",
    )
}

fn internal_error() -> Response<Full<Bytes>> {
    gateway_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal server error",
        "InternalServerErrorException",
    )
}

fn too_long() -> Response<Full<Bytes>> {
    gateway_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request Too Long",
        "RequestTooLongException",
    )
}

fn stamp(local: &LocalDir) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(live::state_file(local)).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// One line per stage: what it serves.
pub fn summary(api: &Api) -> String {
    api.stages
        .values()
        .map(|stage| format!("{} {}", stage.name, serves(stage)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a stage's functions run, e.g. `status:$LATEST, users:$LATEST`.
pub fn serves(stage: &Stage) -> String {
    if let Err(reason) = &stage.routes {
        return format!("nothing ({reason})");
    }
    let mut functions = std::collections::BTreeSet::new();
    let mut missing = std::collections::BTreeSet::new();
    for target in stage.targets.values() {
        match target {
            Ok(target) => {
                functions.insert(target.routed.describe());
            }
            Err(reason) => {
                missing.insert(reason.as_str());
            }
        }
    }
    let mut out: Vec<String> = functions.into_iter().collect();
    if !missing.is_empty() {
        let missing: Vec<&str> = missing.into_iter().collect();
        out.push(format!("500 where {}", missing.join(", ")));
    }
    out.join(", ")
}

/// Binds the gateway's port on loopback.
pub async fn bind(port: u16) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("cannot listen on 127.0.0.1:{port} (in use? pick another with --port)")
        })?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}

/// The body of a JSON response, for printing.
pub fn pretty(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => serde_json::to_string_pretty(&value).expect("JSON"),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapping::{SelectionPattern, Template};

    fn integration() -> Integration {
        let prefixed = |status: u16| IntegrationResponse {
            status,
            pattern: Some(SelectionPattern::new(&format!("{status}: .*")).unwrap()),
            template: Some(Template::parse("$input.path('$.errorMessage').substring(5)").unwrap()),
        };
        Integration {
            api_key_required: false,
            uri: String::new(),
            timeout: Duration::from_secs(29),
            content_types: vec!["application/json".into()],
            passthrough: "NEVER".into(),
            responses: vec![
                prefixed(404),
                IntegrationResponse {
                    status: 502,
                    pattern: Some(SelectionPattern::new(r"(?!(?:404): )[\s\S]+").unwrap()),
                    template: Some(
                        Template::parse(
                            r#"{"message": "failed", "request_id": "$context.requestId"}"#,
                        )
                        .unwrap(),
                    ),
                },
            ],
            default: Some(IntegrationResponse {
                status: 200,
                pattern: None,
                template: None,
            }),
        }
    }

    async fn check(integration: &Integration, outcome: Outcome, status: u16, body: &str) {
        let variables = BTreeMap::new();
        let context = TemplateContext {
            request_id: "gw-1",
            stage: "staging",
            http_method: "GET",
            resource_path: "/x",
            stage_variables: &variables,
        };
        let response = map_outcome(integration, &outcome, &context);
        assert_eq!(response.status().as_u16(), status, "{outcome:?}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(String::from_utf8_lossy(&bytes), body, "{outcome:?}");
    }

    #[tokio::test]
    async fn outcomes_map_through_the_integration_responses() {
        let error = |error_type: &str, message: &str| Outcome::FunctionError {
            error_type: error_type.into(),
            message: message.into(),
        };
        let integration = integration();
        check(
            &integration,
            Outcome::Response(br#"{"ok":true}"#.to_vec()),
            200,
            r#"{"ok":true}"#,
        )
        .await;
        check(
            &integration,
            error("NotFound", r#"404: {"message":"no \"x\""}"#),
            404,
            r#"{"message":"no \"x\""}"#,
        )
        .await;
        check(
            &integration,
            error(
                "Runtime.ExitError",
                "RequestId: r Error: Runtime exited with error: exit status 3",
            ),
            502,
            r#"{"message": "failed", "request_id": "gw-1"}"#,
        )
        .await;
        check(
            &integration,
            Outcome::ServiceError("ResourceNotFoundException".into()),
            500,
            r#"{"message":"Internal server error"}"#,
        )
        .await;
        // Throttled: API Gateway's own 500, even though the catch-all
        // pattern would match any error message.
        check(
            &integration,
            Outcome::Throttled {
                reason: "ReservedFunctionConcurrentInvocationLimitExceeded".into(),
            },
            500,
            r#"{"message":"Internal server error"}"#,
        )
        .await;
    }

    #[tokio::test]
    async fn an_unmatched_error_takes_the_default_response_as_api_gateway_does() {
        let mut integration = integration();
        integration.responses.truncate(1);
        check(
            &integration,
            Outcome::FunctionError {
                error_type: "E".into(),
                message: "boom".into(),
            },
            200,
            r#"{"errorMessage":"boom","errorType":"E"}"#,
        )
        .await;
    }

    #[test]
    fn query_strings_decode_and_the_last_value_wins() {
        let query = query_params("a=1&b=x%20y&a=2&flag&=v");
        assert_eq!(query["a"], "2");
        assert_eq!(query["b"], "x y");
        assert_eq!(query["flag"], "");
        assert_eq!(query[""], "v");
        // As a form: `+` is a space, `%2B` a plus; an empty last value wins.
        let query = query_params("email=test+alias%2B1%40x.com&a=1&a=");
        assert_eq!(query["email"], "test alias+1@x.com");
        assert_eq!(query["a"], "");
    }

    #[test]
    fn the_envelope_is_counted_as_api_gateway_escapes_it() {
        assert_eq!(escaped_len(br#"{"body":"abc"}"#), 14);
        // é is 2 bytes here and `\u00e9` (6) there; 😀 4 and 12.
        assert_eq!(escaped_len("{\"body\":\"é\"}".as_bytes()), 11 + 2 + 4);
        assert_eq!(escaped_len("😀".as_bytes()), 12);
        // A body of 1.1 M `é`: 2.2 MB here, 6.6 MB as AWS counts it.
        let body = "é".repeat(1_100_000);
        assert!(body.len() < crate::host::REQUEST_PAYLOAD_LIMIT);
        assert!(escaped_len(body.as_bytes()) > crate::host::REQUEST_PAYLOAD_LIMIT);
    }
}
