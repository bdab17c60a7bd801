//! What the presigned URLs bind, shown against a server that checks SigV4:
//! s3s-fs (`testkit::s3s_fs`), on a free loopback port with known keys and
//! a fresh directory. Moto (`tests/moto.rs`) accepts any signature and
//! ignores expiry; s3s-fs refuses a URL whose signature, method, path,
//! query or signed headers differ from what was signed, and one past its
//! `X-Amz-Expires`.
//!
//! Needs the s3s-fs binary (`$S3S_FS`, or `target/tools/bin/s3s-fs`):
//! without it every test here fails, saying how to install it.

use std::time::Duration;

use files::s3::S3Objects;
use files::samples::{by_id, call, create, query_params, url_path};
use files::store::{MemoryStore, ObjectStore, Validity, whole_second};
use files::{Files, Tables};
use testkit::http::{Response, send};
use testkit::s3s_fs::S3sFs;

/// A function over in-memory records and s3s-fs's buckets (both made
/// here), its URLs valid for `expiry`.
async fn files_on(server: &S3sFs, expiry: Duration) -> Files<MemoryStore, S3Objects> {
    let config = server.sdk_config();
    let buckets = Tables {
        staging: "files-staging".into(),
        prod: "files-prod".into(),
    };
    let s3 = testkit::moto::s3_of(&config);
    for bucket in [&buckets.staging, &buckets.prod] {
        if s3.head_bucket().bucket(bucket).send().await.is_err() {
            s3.create_bucket().bucket(bucket).send().await.unwrap();
        }
    }
    Files {
        store: MemoryStore::default(),
        objects: S3Objects::new(files::s3::client(&config)),
        tables: files::samples::tables("files"),
        buckets,
        url_expiry: expiry,
    }
}

/// `POST /files` on staging: the id and the upload URL.
async fn post(
    files: &Files<MemoryStore, S3Objects>,
    content_type: &str,
    size: u64,
) -> (String, String) {
    let (status, body) = call(files, create("a/../b.txt", content_type, size)).await;
    assert_eq!(status, 200, "{body}");
    let text = |field: &str| body[field].as_str().unwrap().to_owned();
    (text("id"), text("upload_url"))
}

async fn put(url: &str, content_type: &str, bytes: &[u8]) -> Response {
    send("PUT", url, &[("content-type", content_type)], bytes).await
}

/// A 403 whose S3 error says `why` (`<Code>SignatureDoesNotMatch</Code>`,
/// say): refused for that reason, not another.
#[track_caller]
fn assert_refused_for(response: &Response, why: &str, what: &str) {
    let text = response.text();
    assert_eq!(response.status, 403, "{what}: {text}");
    assert!(
        text.contains(why),
        "{what}: refused, but not for {why}: {text}"
    );
}

#[track_caller]
fn assert_refused(response: &Response, what: &str) {
    assert_refused_for(response, "<Code>SignatureDoesNotMatch</Code>", what);
}

#[track_caller]
fn assert_expired(response: &Response, what: &str) {
    assert_refused_for(response, "Request has expired", what);
}

/// `url` with query parameter `name` set to `value` (sent as it is: the
/// values here need no percent-encoding).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((n, _)) if n == name => format!("{n}={value}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// The URL as signed uploads and downloads; the same URL with anything of
/// it changed, or with another type or size than signed, is refused (403)
/// and stores nothing.
#[tokio::test]
async fn a_presigned_url_works_exactly_as_signed() {
    let server = S3sFs::start();
    let files = files_on(&server, Duration::from_secs(300)).await;
    let bytes = b"exactly these 26 bytes ok!";
    let (id, url) = post(&files, "text/plain", bytes.len() as u64).await;

    let mut signature = query_params(&url)["X-Amz-Signature"].clone();
    let last = signature.pop().unwrap();
    signature.push(if last == '0' { '1' } else { '0' });
    let prod_path = url.replacen("/files-staging/", "/files-prod/", 1);
    assert_eq!(url_path(&prod_path), format!("/files-prod/{id}"));
    let other_key = url.replacen(&id, &"f".repeat(32), 1);
    let refusals = [
        (
            with_param(&url, "X-Amz-Signature", &signature),
            "text/plain",
            &bytes[..],
            "a changed signature",
        ),
        (
            url.clone(),
            "text/html",
            &bytes[..],
            "another content type than signed",
        ),
        (
            url.clone(),
            "text/plain; charset=utf-8",
            &bytes[..],
            "parameters on the signed type",
        ),
        (
            url.clone(),
            "text/plain",
            &bytes[..25],
            "fewer bytes than signed",
        ),
        (
            url.clone(),
            "text/plain",
            &b"exactly these 26 bytes ok!!"[..],
            "more bytes than signed",
        ),
        (
            prod_path,
            "text/plain",
            &bytes[..],
            "the prod bucket in a staging URL",
        ),
        (other_key, "text/plain", &bytes[..], "another key"),
        (
            with_param(&url, "X-Amz-Expires", "604800"),
            "text/plain",
            &bytes[..],
            "a longer expiry",
        ),
    ];
    for (tampered, content_type, body, what) in refusals {
        assert_refused(&put(&tampered, content_type, body).await, what);
    }
    // The wrong method: a GET through the upload URL.
    assert_refused(
        &send("GET", &url, &[], b"").await,
        "GET through the upload URL",
    );
    let s3 = testkit::moto::s3_of(&server.sdk_config());
    for bucket in ["files-staging", "files-prod"] {
        let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
        assert_eq!(listed.contents(), [], "{bucket} after the refusals");
    }

    let response = put(&url, "text/plain", bytes).await;
    assert!(
        (200..300).contains(&response.status),
        "the URL as signed: {} {}",
        response.status,
        response.text()
    );
    let (status, got) = call(&files, by_id("GET", &id)).await;
    assert_eq!(status, 200, "{got}");
    let download = got["download_url"].as_str().unwrap();
    let response = send("GET", download, &[], b"").await;
    assert_eq!(
        (response.status, &response.body[..]),
        (200, &bytes[..]),
        "{}",
        response.text()
    );
    assert_eq!(response.header("content-type"), Some("text/plain"));

    let mut signature = query_params(download)["X-Amz-Signature"].clone();
    signature.replace_range(0..1, if signature.starts_with('a') { "b" } else { "a" });
    let tampered = with_param(download, "X-Amz-Signature", &signature);
    assert_refused(
        &send("GET", &tampered, &[], b"").await,
        "a changed download signature",
    );
    assert_refused(
        &send("DELETE", download, &[], b"").await,
        "DELETE through the download URL",
    );
    assert_eq!(
        send("GET", download, &[], b"").await.body,
        bytes,
        "still there"
    );
}

/// A URL valid for 1 s is refused 2 s later, the upload and the download.
#[tokio::test]
async fn an_expired_url_is_refused() {
    let server = S3sFs::start();
    let files = files_on(&server, Duration::from_secs(1)).await;
    let (id, url) = post(&files, "application/octet-stream", 3).await;
    assert_eq!(query_params(&url)["X-Amz-Expires"], "1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_expired(
        &put(&url, "application/octet-stream", b"abc").await,
        "an expired upload",
    );

    // Uploaded through a fresh URL, then an expired download.
    let validity = Validity {
        signed_at: whole_second(std::time::SystemTime::now()),
        expires_in: Duration::from_secs(60),
    };
    let fresh = files
        .objects
        .upload_url(
            "files-staging",
            &id,
            "application/octet-stream",
            3,
            validity,
        )
        .await
        .unwrap();
    let response = put(&fresh, "application/octet-stream", b"abc").await;
    assert!((200..300).contains(&response.status), "{}", response.text());
    let (status, got) = call(&files, by_id("GET", &id)).await;
    assert_eq!(status, 200, "{got}");
    let download = got["download_url"].as_str().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_expired(
        &send("GET", download, &[], b"").await,
        "an expired download",
    );
}
