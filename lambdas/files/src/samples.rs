//! The state the `events/files` samples are written against, the loop that
//! runs every sample through the handler, and the scenarios that take more
//! than one request (a client's upload and download through the URLs among
//! them). Shared by the unit tests (in memory) and the tests against the
//! emulator over HTTP (DynamoDB and S3).
//!
//! The function's stores only sign URLs; what a client does with them, and
//! what a test looks at, is here: [`Records`] and [`Objects`], implemented
//! for the in-memory stores below and by the emulator tests for theirs.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use api::Envelope;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use crate::store::{
    FileRecord, FileStore, MemoryObjects, MemoryStore, ObjectStore, Validity, object_key,
};
use crate::{Files, Tables};

/// A [`FileStore`] whose every record a test can read.
pub trait Records: FileStore {
    /// Every record of `table`, in id order.
    fn records(&self, table: &str) -> impl Future<Output = Vec<FileRecord>> + Send;
}

/// An [`ObjectStore`] with what a client does through its URLs, and every
/// object a test can read.
pub trait Objects: ObjectStore {
    /// A client's PUT of `bytes`, with `content_type`, through `url`: the
    /// status the store answers.
    fn upload(
        &self,
        url: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> impl Future<Output = u16> + Send;

    /// A client's GET through `url`: the status and the body.
    fn download(&self, url: &str) -> impl Future<Output = (u16, Vec<u8>)> + Send;

    /// Every object of `bucket`: key, content type and bytes, in key order.
    fn contents(&self, bucket: &str)
    -> impl Future<Output = Vec<(String, String, Vec<u8>)>> + Send;
}

impl Records for MemoryStore {
    async fn records(&self, table: &str) -> Vec<FileRecord> {
        MemoryStore::records(self, table)
    }
}

impl Objects for MemoryObjects {
    async fn upload(&self, url: &str, content_type: &str, bytes: &[u8]) -> u16 {
        self.put(url, content_type, bytes)
    }

    async fn download(&self, url: &str) -> (u16, Vec<u8>) {
        match self.fetch(url) {
            Some(object) => (200, object.bytes),
            None => (404, Vec::new()),
        }
    }

    async fn contents(&self, bucket: &str) -> Vec<(String, String, Vec<u8>)> {
        MemoryObjects::contents(self, bucket)
            .into_iter()
            .map(|(key, object)| (key, object.content_type, object.bytes))
            .collect()
    }
}

/// The file the samples find uploaded: `0…01`, "report.pdf",
/// `application/pdf`, the 11 bytes of [`UPLOADED_BYTES`].
pub const UPLOADED_ID: &str = "00000000000000000000000000000001";
pub const UPLOADED_BYTES: &[u8] = b"%PDF-1.7 hi";
/// The file the samples find recorded but not uploaded: `0…02`,
/// "notes.txt", `text/plain`, 5 bytes.
pub const PENDING_ID: &str = "00000000000000000000000000000002";

/// The records every sample may rely on, in the staging table; the prod
/// table and bucket are empty.
pub fn fixture() -> Vec<FileRecord> {
    let record =
        |id: &str, name: &str, content_type: &str, size: u64, created_at: &str| FileRecord {
            id: id.into(),
            name: name.into(),
            content_type: content_type.into(),
            size,
            created_at: created_at.into(),
        };
    vec![
        record(
            UPLOADED_ID,
            "report.pdf",
            "application/pdf",
            UPLOADED_BYTES.len() as u64,
            "2026-01-01T00:00:00.000Z",
        ),
        record(
            PENDING_ID,
            "notes.txt",
            "text/plain",
            5,
            "2026-01-01T00:00:01.000Z",
        ),
    ]
}

/// Brings empty staging stores to the fixture state, through the stores'
/// own writes and a client's upload through the store's own upload URL.
pub async fn seed<S: FileStore, O: Objects>(files: &Files<S, O>) {
    let (table, bucket) = (&files.tables.staging, &files.buckets.staging);
    for record in fixture() {
        files.store.create(table, &record).await.unwrap();
    }
    let validity = Validity {
        signed_at: crate::store::whole_second(std::time::SystemTime::now()),
        expires_in: Duration::from_secs(60),
    };
    let uploaded = &fixture()[0];
    let url = files
        .objects
        .upload_url(
            bucket,
            &object_key(UPLOADED_ID),
            &uploaded.content_type,
            uploaded.size,
            validity,
        )
        .await
        .unwrap();
    let status = files
        .objects
        .upload(&url, &uploaded.content_type, UPLOADED_BYTES)
        .await;
    assert_eq!(status, 200, "seeding {url}");
}

/// Names for tests: `<prefix>-staging` and `<prefix>-prod`.
pub fn tables(prefix: &str) -> Tables {
    Tables {
        staging: format!("{prefix}-staging"),
        prod: format!("{prefix}-prod"),
    }
}

/// Everything both stages hold: each table's records and each bucket's
/// objects.
pub type Snapshot = [(Vec<FileRecord>, Vec<(String, String, Vec<u8>)>); 2];

pub async fn snapshot<S: Records, O: Objects>(files: &Files<S, O>) -> Snapshot {
    let stage = |table, bucket| async move {
        (
            files.store.records(table).await,
            files.objects.contents(bucket).await,
        )
    };
    [
        stage(&files.tables.staging, &files.buckets.staging).await,
        stage(&files.tables.prod, &files.buckets.prod).await,
    ]
}

/// Runs `envelope` through the handler as the runtime does: the status and
/// body a client sees.
pub async fn call<S: FileStore, O: ObjectStore>(
    files: &Files<S, O>,
    envelope: Value,
) -> (u16, Value) {
    let handler = |request| files.handle(request);
    let event = LambdaEvent::new(envelope, Context::default());
    api::testing::response(api::invoke(&handler, event).await)
}

/// Runs every `events/files` sample against a fresh, seeded function from
/// `fresh` and checks its response; a sample answered with an error must
/// leave both tables and both buckets as they were.
pub async fn check_all<S, O, F, Fut>(mut fresh: F)
where
    S: Records,
    O: Objects,
    F: FnMut() -> Fut,
    Fut: Future<Output = Files<S, O>>,
{
    for sample in api::testing::samples("files") {
        let files = fresh().await;
        seed(&files).await;
        let before = snapshot(&files).await;
        sample.check(call(&files, sample.event.clone()).await);
        if sample.expected.status != 200 {
            let after = snapshot(&files).await;
            assert_eq!(after, before, "{}: a refusal wrote", sample.path.display());
        }
    }
}

/// A request on staging.
pub fn envelope(method: &str, resource: &str, id: Option<&str>, body: &str) -> Envelope {
    Envelope {
        method: method.into(),
        resource: resource.into(),
        path: id
            .map(|id| ("id".to_owned(), id.to_owned()))
            .into_iter()
            .collect(),
        query: Default::default(),
        body: body.into(),
        stage: "staging".into(),
        request_id: "contract".into(),
    }
}

/// A `POST /files` body.
pub fn create_body(name: &str, content_type: &str, size: u64) -> String {
    json!({ "name": name, "content_type": content_type, "size": size }).to_string()
}

/// A `POST /files` envelope on staging.
pub fn create(name: &str, content_type: &str, size: u64) -> Value {
    json!(envelope(
        "POST",
        "/files",
        None,
        &create_body(name, content_type, size)
    ))
}

/// A `GET` or `DELETE /files/{id}` envelope on staging.
pub fn by_id(method: &str, id: &str) -> Value {
    json!(envelope(method, "/files/{id}", Some(id), ""))
}

/// Names that are only data: slashes, `..`, a would-be bucket, URL syntax,
/// quotes, control characters, 255 characters of 4 bytes. Each is stored
/// and answered as it is, and appears in no key and no URL.
pub fn odd_names() -> Vec<String> {
    [
        "../../etc/passwd",
        "/absolute/path.txt",
        "..",
        "a/b/c",
        "files-prod/x",
        "?x-id=DeleteObject&X-Amz-Expires=604800#frag",
        "%2e%2e%2f%00",
        "C:\\Windows\\system32",
        r#"quote " and ' and ` "#,
        "tab\tnew\nline\r\u{0}nul",
        "Ünïcödé ✓ 🐦 文件.pdf",
        "\u{202e}fdp.exe",
        " ",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(["🐦".repeat(255)])
    .collect()
}

/// Requests every one of which must be refused, with that status, leaving
/// both tables and buckets as they were.
pub fn refused_requests() -> Vec<(u16, Envelope)> {
    let post = |body: &str| envelope("POST", "/files", None, body);
    let on = |stage: &str, mut envelope: Envelope| {
        envelope.stage = stage.into();
        envelope
    };
    let good = create_body("a.txt", "text/plain", 5);
    let mut with_query = post(&good);
    with_query.query.insert("size".into(), "5".into());
    let mut get_with_query = envelope("GET", "/files/{id}", Some(UPLOADED_ID), "");
    get_with_query.query.insert("x".into(), "1".into());
    vec![
        (400, post("")),
        (400, post("{")),
        (400, post("[]")),
        (400, post(r#"{"name": "a", "content_type": "text/plain"}"#)),
        (
            400,
            post(r#"{"name": "a", "content_type": "text/plain", "size": 5, "id": "x"}"#),
        ),
        (
            400,
            post(r#"{"name": "a", "name": "b", "content_type": "text/plain", "size": 5}"#),
        ),
        (
            400,
            post(r#"{"name": "a", "content_type": "text/plain", "size": -1}"#),
        ),
        (
            400,
            post(r#"{"name": "a", "content_type": "text/plain", "size": 1.5}"#),
        ),
        (
            400,
            post(r#"{"name": "a", "content_type": "text/plain", "size": "5"}"#),
        ),
        (400, post(&create_body("", "text/plain", 5))),
        (400, post(&create_body(&"x".repeat(256), "text/plain", 5))),
        (400, post(&create_body("a", "text", 5))),
        (400, post(&create_body("a", "text/plain; charset=utf-8", 5))),
        (
            400,
            post(&create_body("a", "text/plain\r\nx-amz-acl: public-read", 5)),
        ),
        (400, post(&create_body("a", "../..", 5))),
        (400, post(&create_body("a", "text/plain", 0))),
        (
            400,
            post(&create_body("a", "text/plain", crate::MAX_SIZE + 1)),
        ),
        (400, with_query),
        (400, on("prod", post(&create_body("", "text/plain", 5)))),
        (400, on("qa", post(&good))),
        (
            400,
            on(
                "qa",
                envelope("DELETE", "/files/{id}", Some(UPLOADED_ID), ""),
            ),
        ),
        (400, envelope("GET", "/files/{id}", Some("../prod"), "")),
        (
            400,
            envelope(
                "DELETE",
                "/files/{id}",
                Some("0000000000000000000000000000000A"),
                "",
            ),
        ),
        (400, get_with_query),
        (
            404,
            envelope("DELETE", "/files/{id}", Some(&"f".repeat(32)), ""),
        ),
        (
            404,
            on(
                "prod",
                envelope("DELETE", "/files/{id}", Some(UPLOADED_ID), ""),
            ),
        ),
        (409, envelope("GET", "/files/{id}", Some(PENDING_ID), "")),
        (
            404,
            envelope("PUT", "/files/{id}", Some(UPLOADED_ID), &good),
        ),
        (404, envelope("GET", "/files", None, "")),
    ]
}

/// The query parameters of `url`, percent-decoded.
pub fn query_params(url: &str) -> BTreeMap<String, String> {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// `%XX` escapes decoded (an invalid one kept as it is).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of `url` (after the authority, before the query).
pub fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme
        .find('/')
        .map_or("", |start| &after_scheme[start..]);
    path.split_once('?').map_or(path, |(path, _)| path)
}

/// The host (and port) of `url`.
pub fn url_host(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .split(['/', '?'])
        .next()
        .unwrap_or(after_scheme)
}

/// The whole life of one file through the handler and a client, on
/// staging: created (the answer echoes the record, the URL is bound as
/// declared and expires when configured), 409 until uploaded, uploaded,
/// downloaded byte for byte,
/// deleted (object and record), then 404; prod never sees any of it.
pub async fn check_life_of_a_file<S: Records, O: Objects>(files: &Files<S, O>, name: &str) {
    let bytes = "Hello, files! ✓".as_bytes();
    let size = bytes.len() as u64;
    let (status, created) = call(files, create(name, "text/plain", size)).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(crate::store::is_id(&id), "{id}");
    for (field, value) in [
        ("name", json!(name)),
        ("content_type", json!("text/plain")),
        ("size", json!(size)),
    ] {
        assert_eq!(created[field], value, "{field}");
    }
    let upload_url = created["upload_url"].as_str().unwrap();
    check_expiry(&created, files.url_expiry);

    let (staging_table, staging_bucket) = (&files.tables.staging, &files.buckets.staging);
    let records = files.store.records(staging_table).await;
    let expected_record = FileRecord {
        id: id.clone(),
        name: name.to_owned(),
        content_type: "text/plain".into(),
        size,
        created_at: created["created_at"].as_str().unwrap().to_owned(),
    };
    assert_eq!(records, vec![expected_record.clone()]);

    // Not uploaded: 409, saying what to do.
    let (status, body) = call(files, by_id("GET", &id)).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("PUT its bytes to the upload_url"),
        "{body}"
    );

    let status = files.objects.upload(upload_url, "text/plain", bytes).await;
    assert_eq!(status, 200, "{upload_url}");
    assert_eq!(
        files.objects.contents(staging_bucket).await,
        vec![(object_key(&id), "text/plain".to_owned(), bytes.to_vec())]
    );

    let (status, got) = call(files, by_id("GET", &id)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        api::testing::contains(&json!(expected_record), &got),
        Ok(())
    );
    check_expiry(&got, files.url_expiry);
    let download_url = got["download_url"].as_str().unwrap();
    assert_eq!(
        files.objects.download(download_url).await,
        (200, bytes.to_vec())
    );

    let (status, deleted) = call(files, by_id("DELETE", &id)).await;
    assert_eq!((status, deleted), (200, json!({"id": id, "deleted": true})));
    assert_eq!(files.objects.contents(staging_bucket).await, vec![]);
    assert_eq!(files.store.records(staging_table).await, vec![]);
    let (status, _) = call(files, by_id("GET", &id)).await;
    assert_eq!(status, 404);
    let (status, _) = call(files, by_id("DELETE", &id)).await;
    assert_eq!(status, 404);

    // Prod never saw any of it.
    let [_, prod] = snapshot(files).await;
    assert_eq!(prod, (vec![], vec![]));
}

/// `expires_at` is RFC 3339 UTC to the second, `expiry` after the URL's
/// own `X-Amz-Date` (or now, for a URL without one), in the future.
pub fn check_expiry(body: &Value, expiry: Duration) {
    let expires_at = body["expires_at"].as_str().unwrap();
    assert!(
        expires_at.ends_with('Z') && expires_at.len() == 20,
        "{expires_at}"
    );
    let at = humantime::parse_rfc3339(expires_at).unwrap();
    let now = std::time::SystemTime::now();
    assert!(at > now, "{expires_at} is past");
    assert!(
        at <= now + expiry,
        "{expires_at} is beyond {expiry:?} from now"
    );
}
