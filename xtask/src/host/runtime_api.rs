//! The Lambda Runtime API (`2018-06-01`) of one execution environment, on
//! its own loopback port: what a custom runtime such as `lambda_runtime`
//! calls to take invocations and hand back results.
//!
//! - `GET  /runtime/invocation/next`: blocks until the host delivers an event.
//! - `POST /runtime/invocation/{id}/response`: the result (at most 6 MB).
//! - `POST /runtime/invocation/{id}/error`: a function error.
//! - `POST /runtime/init/error`: the runtime failed to initialise.
//!
//! Everything the runtime says goes to the host as a [`FromRuntime`].

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::PAYLOAD_LIMIT;

const PREFIX: &str = "/2018-06-01/runtime";

/// An invocation, as `/next` hands it to the runtime.
#[derive(Debug)]
pub struct Event {
    pub request_id: String,
    pub payload: Vec<u8>,
    pub deadline_ms: u64,
    pub invoked_arn: String,
}

/// What the runtime told the host.
#[derive(Debug, PartialEq, Eq)]
pub enum FromRuntime {
    /// It asked for the next invocation (it is initialised and idle).
    Next,
    Response {
        request_id: String,
        body: Vec<u8>,
    },
    Error {
        request_id: String,
        error_type: String,
        message: String,
    },
    InitError {
        error_type: String,
        message: String,
    },
}

/// The host's side of a running Runtime API. Dropping it stops the server.
pub struct Handle {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    events: mpsc::UnboundedSender<Event>,
    server: tokio::task::JoinHandle<()>,
}

impl Handle {
    pub fn deliver(&self, event: Event) {
        // The server outlives every delivery: it stops only when dropped.
        let _ = self.events.send(event);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Shared {
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    to_host: mpsc::UnboundedSender<FromRuntime>,
    /// The invocation the runtime holds, if any.
    current: Mutex<Option<String>>,
}

impl RuntimeApi {
    /// Listens on a free loopback port.
    pub async fn start() -> Result<(Handle, mpsc::UnboundedReceiver<FromRuntime>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let (events, events_rx) = mpsc::unbounded_channel();
        let (to_host, from_runtime) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: tokio::sync::Mutex::new(events_rx),
            to_host,
            current: Mutex::new(None),
        });
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok((
            Handle {
                address,
                events,
                server,
            },
            from_runtime,
        ))
    }
}

/// Namespace for [`RuntimeApi::start`].
pub struct RuntimeApi;

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let Some(route) = path.strip_prefix(PREFIX) else {
        return not_found(&path);
    };
    let route: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    match (request.method(), route.as_slice()) {
        (&Method::GET, ["invocation", "next"]) => next(shared).await,
        (&Method::POST, ["invocation", id, kind @ ("response" | "error")]) => {
            let id = (*id).to_owned();
            let kind = *kind;
            if shared.current.lock().expect("current lock").as_deref() != Some(id.as_str()) {
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({"errorMessage": format!("Invalid request ID: {id}"), "errorType": "InvalidRequestID"}),
                );
            }
            let error_type = header(&request, "lambda-runtime-function-error-type");
            let body = match read_within(request.into_body(), PAYLOAD_LIMIT).await {
                Some(body) => body,
                None => {
                    let message = format!(
                        "Response payload size exceeded maximum allowed payload size ({PAYLOAD_LIMIT} bytes)."
                    );
                    finish(
                        shared,
                        FromRuntime::Error {
                            request_id: id,
                            error_type: "Function.ResponseSizeTooLarge".into(),
                            message: message.clone(),
                        },
                    );
                    return answer(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        json!({"errorMessage": message, "errorType": "RequestEntityTooLarge"}),
                    );
                }
            };
            let message = if kind == "response" {
                FromRuntime::Response {
                    request_id: id,
                    body,
                }
            } else {
                let (error_type, message) = error_document(&body, error_type);
                FromRuntime::Error {
                    request_id: id,
                    error_type,
                    message,
                }
            };
            finish(shared, message);
            answer(StatusCode::ACCEPTED, json!({"status": "OK"}))
        }
        (&Method::POST, ["init", "error"]) => {
            let error_type = header(&request, "lambda-runtime-function-error-type");
            let body = request
                .into_body()
                .collect()
                .await
                .map(|body| body.to_bytes().to_vec())
                .unwrap_or_default();
            let (error_type, message) = error_document(&body, error_type);
            let _ = shared.to_host.send(FromRuntime::InitError {
                error_type,
                message,
            });
            answer(StatusCode::ACCEPTED, json!({"status": "OK"}))
        }
        _ => not_found(&path),
    }
}

/// `/next`: tell the host the runtime is idle, then wait for an event.
async fn next(shared: &Shared) -> Response<Full<Bytes>> {
    let _ = shared.to_host.send(FromRuntime::Next);
    let event = shared.events.lock().await.recv().await;
    let Some(event) = event else {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errorMessage": "the host stopped", "errorType": "ServiceException"}),
        );
    };
    *shared.current.lock().expect("current lock") = Some(event.request_id.clone());
    let trace_id = format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        event.deadline_ms / 1000,
        &event.request_id.replace('-', "")[..24],
        &event.request_id.replace('-', "")[16..32],
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", &event.request_id)
        .header("lambda-runtime-deadline-ms", event.deadline_ms.to_string())
        .header("lambda-runtime-invoked-function-arn", &event.invoked_arn)
        .header("lambda-runtime-trace-id", trace_id)
        .body(Full::new(Bytes::from(event.payload)))
        .expect("valid response")
}

/// The whole body if it is at most `limit` bytes. A longer one is read to
/// its end all the same (and dropped), so the runtime gets our 413 on a
/// healthy connection rather than a reset.
async fn read_within(mut body: Incoming, limit: usize) -> Option<Vec<u8>> {
    let mut kept = Vec::new();
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map(|frame| frame.into_data()) else {
            return None;
        };
        if let Ok(data) = data {
            total += data.len();
            if total <= limit {
                kept.extend_from_slice(&data);
            }
        }
    }
    (total <= limit).then_some(kept)
}

fn finish(shared: &Shared, message: FromRuntime) {
    *shared.current.lock().expect("current lock") = None;
    let _ = shared.to_host.send(message);
}

/// `errorType` and `errorMessage` of an error document; the header's type
/// when the body has none, and the raw body as the message when it is not one.
fn error_document(body: &[u8], header_type: Option<String>) -> (String, String) {
    let document: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error_type = document["errorType"]
        .as_str()
        .map(str::to_owned)
        .or(header_type)
        .unwrap_or_else(|| "Unhandled".to_owned());
    let message = match document["errorMessage"].as_str() {
        Some(message) => message.to_owned(),
        None => String::from_utf8_lossy(body).into_owned(),
    };
    (error_type, message)
}

fn header(request: &Request<Incoming>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn answer(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

fn not_found(path: &str) -> Response<Full<Bytes>> {
    answer(
        StatusCode::NOT_FOUND,
        json!({"errorMessage": format!("no Runtime API route {path}"), "errorType": "NotFound"}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_keep_type_and_message() {
        let body = br#"{"errorType":"Fixture","errorMessage":"400: {\"message\":\"x\"}"}"#;
        assert_eq!(
            error_document(body, None),
            ("Fixture".into(), r#"400: {"message":"x"}"#.into())
        );
        assert_eq!(
            error_document(b"{}", Some("Runtime.Unknown".into())),
            ("Runtime.Unknown".into(), "{}".into())
        );
        assert_eq!(
            error_document(b"plain text", None),
            ("Unhandled".into(), "plain text".into())
        );
    }
}
