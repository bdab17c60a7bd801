//! A plain HTTP/1.1 client (hyper, no TLS): what a client does with a
//! presigned URL on the local stack, as `curl -X PUT -H ... --data-binary`
//! would.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// What the server answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method` to `url` (an `http://` URL, used exactly as given) with
/// `headers` and `body`; hyper adds `Host` from the URL and, for a
/// non-empty body, its `Content-Length`. Panics (failing the test) when
/// no answer comes within 30 s.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap_or_else(|err| panic!("{url}: not a request: {err}"));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let answer = async {
        let response = client
            .request(request)
            .await
            .unwrap_or_else(|err| panic!("{url}: {err}"));
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{url}: reading the body: {err}"))
            .to_bytes()
            .to_vec();
        Response {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .unwrap_or_else(|_| panic!("{url}: no answer within 30 s"))
}
