use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use super::*;
use crate::samples::{
    self, PENDING_ID, UPLOADED_ID, by_id, call, create, create_body, envelope, url_path,
};
use crate::store::{MemoryObjects, MemoryStore, StoreError};

const EXPIRY: Duration = Duration::from_secs(900);

fn memory_files() -> Files<MemoryStore, MemoryObjects> {
    Files {
        store: MemoryStore::default(),
        objects: MemoryObjects::default(),
        tables: samples::tables("files-table"),
        buckets: samples::tables("files-bucket"),
        url_expiry: EXPIRY,
    }
}

#[tokio::test]
async fn every_sample_event() {
    samples::check_all(|| async { memory_files() }).await;
}

#[tokio::test]
async fn the_life_of_a_file_whatever_its_name() {
    for name in samples::odd_names()
        .iter()
        .chain([&"report.pdf".to_owned()])
    {
        samples::check_life_of_a_file(&memory_files(), name).await;
    }
}

#[tokio::test]
async fn refused_requests_change_nothing() {
    let files = memory_files();
    samples::seed(&files).await;
    let before = samples::snapshot(&files).await;
    for (status, envelope) in samples::refused_requests() {
        let (got, body) = call(&files, json!(envelope)).await;
        assert_eq!(got, status, "{envelope:?}: {body}");
        assert_eq!(samples::snapshot(&files).await, before, "{envelope:?}");
    }
}

/// The upload URL names the stage's bucket and the new id, nothing of the
/// name; the other stage's bucket appears nowhere in it.
#[tokio::test]
async fn urls_name_the_stage_bucket_and_the_id_only() {
    let files = memory_files();
    for (stage, bucket, other) in [
        ("staging", "files-bucket-staging", "files-bucket-prod"),
        ("prod", "files-bucket-prod", "files-bucket-staging"),
    ] {
        let mut request = envelope("POST", "/files", None, &create_body("x/../y", "a/b", 1));
        request.stage = stage.into();
        let (status, body) = call(&files, json!(request)).await;
        assert_eq!(status, 200, "{body}");
        let url = body["upload_url"].as_str().unwrap();
        let id = body["id"].as_str().unwrap();
        assert_eq!(url_path(url), format!("/{bucket}/{id}"));
        assert!(!url.contains(other), "{url}");
        let table = files.tables.for_stage(stage.parse().unwrap());
        assert_eq!(files.store.records(table).len(), 1, "{stage}");
    }
}

/// The memory store honours its URLs as S3 does a presigned one: the
/// declared type and size only.
#[tokio::test]
async fn an_upload_url_takes_the_declared_type_and_size_only() {
    let files = memory_files();
    let (_, body) = call(&files, create("a.txt", "text/plain", 3)).await;
    let url = body["upload_url"].as_str().unwrap();
    assert_eq!(files.objects.put(url, "text/html", b"abc"), 403);
    assert_eq!(files.objects.put(url, "text/plain", b"abcd"), 403);
    assert_eq!(files.objects.put(url, "text/plain", b"ab"), 403);
    assert!(files.objects.contents("files-bucket-staging").is_empty());
    assert_eq!(files.objects.put(url, "text/plain", b"abc"), 200);
    // A content type with `&` survives the memory URL's query.
    let (_, body) = call(&files, create("a", "a&b/c&d", 1)).await;
    let url = body["upload_url"].as_str().unwrap();
    assert_eq!(files.objects.put(url, "a&b/c&d", b"x"), 200);
}

/// The 409 names the file and says what to do; once the bytes are there
/// the same request is a 200 with a download URL.
#[tokio::test]
async fn a_file_is_downloadable_only_once_uploaded() {
    let files = memory_files();
    samples::seed(&files).await;
    let (status, body) = call(&files, by_id("GET", PENDING_ID)).await;
    assert_eq!(status, 409);
    assert_eq!(
        body["message"],
        format!(
            "file `{PENDING_ID}` has not been uploaded yet: PUT its bytes to the upload_url \
             POST /files answered first (or POST /files again once it expired)"
        )
    );
    let (status, body) = call(&files, by_id("GET", UPLOADED_ID)).await;
    assert_eq!(status, 200, "{body}");
    let url = body["download_url"].as_str().unwrap();
    assert_eq!(
        url_path(url),
        format!("/files-bucket-staging/{UPLOADED_ID}")
    );
    let object = files.objects.fetch(url).unwrap();
    assert_eq!(object.bytes, samples::UPLOADED_BYTES);
    assert_eq!(object.content_type, "application/pdf");
}

/// A record store whose next delete fails, once.
#[derive(Debug, Default)]
struct FailingDelete {
    inner: MemoryStore,
    fail_next: AtomicBool,
}

impl FileStore for FailingDelete {
    async fn create(&self, table: &str, record: &FileRecord) -> Result<(), StoreError> {
        self.inner.create(table, record).await
    }

    async fn get(&self, table: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        self.inner.get(table, id).await
    }

    async fn delete(&self, table: &str, id: &str) -> Result<bool, StoreError> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Backend("throttled".into()));
        }
        self.inner.delete(table, id).await
    }
}

/// Object first, then record: a delete that fails between the two leaves
/// the record (a GET says it is not uploaded), and the retry finishes.
#[tokio::test]
async fn a_failed_delete_is_finished_by_its_retry() {
    let files = Files {
        store: FailingDelete::default(),
        objects: MemoryObjects::default(),
        tables: samples::tables("t"),
        buckets: samples::tables("b"),
        url_expiry: EXPIRY,
    };
    samples::seed(&files).await;
    files.store.fail_next.store(true, Ordering::SeqCst);
    let (status, body) = call(&files, by_id("DELETE", UPLOADED_ID)).await;
    assert_eq!((status, &body["message"]), (500, &json!("internal error")));
    assert!(files.objects.contents("b-staging").is_empty());
    assert_eq!(call(&files, by_id("GET", UPLOADED_ID)).await.0, 409);
    let (status, body) = call(&files, by_id("DELETE", UPLOADED_ID)).await;
    assert_eq!(
        (status, body),
        (200, json!({"id": UPLOADED_ID, "deleted": true}))
    );
    assert_eq!(call(&files, by_id("GET", UPLOADED_ID)).await.0, 404);
    assert_eq!(
        files.store.inner.records("t-staging").len(),
        1,
        "the other file stays"
    );
}

/// `parse` of a POST body: the command, or the 400 message fragment.
fn check_create(body: &str, expected: Result<(&str, &str, u64), &str>) {
    let expected = expected.map(|(name, content_type, size)| Command::Create {
        name: name.into(),
        content_type: content_type.into(),
        size,
    });
    let result = parse(&envelope("POST", "/files", None, body));
    api::testing::check_parsed(body, result, expected);
}

#[test]
fn create_bodies() {
    check_create(
        &create_body("a.pdf", "application/pdf", 1),
        Ok(("a.pdf", "application/pdf", 1)),
    );
    check_create(
        r#"{"size": 7, "content_type": "text/plain", "name": "it's \"q\""}"#,
        Ok((r#"it's "q""#, "text/plain", 7)),
    );
    check_create("", Err("missing body"));
    check_create(" \n", Err("missing body"));
    check_create("{", Err("not valid JSON"));
    check_create("[1]", Err("not an object"));
    check_create("null", Err("not an object"));
    check_create("{}", Err("missing field `name`"));
    check_create(
        r#"{"name": "a", "size": 1}"#,
        Err("missing field `content_type`"),
    );
    check_create(
        r#"{"name": "a", "content_type": "a/b"}"#,
        Err("missing field `size`"),
    );
    check_create(
        r#"{"name": "a", "content_type": "a/b", "size": 1, "key": "../x"}"#,
        Err("unknown field `key`, expected one of `name`, `content_type`, `size`"),
    );
    check_create(
        r#"{"name": "a", "content_type": "a/b", "size": 1, "size": 2}"#,
        Err("duplicate field `size`"),
    );
    check_create(
        r#"{"name": 7, "content_type": "a/b", "size": 1}"#,
        Err("invalid type: integer `7`, expected a string"),
    );
    for (size, fragment) in [
        ("-1", "invalid value: integer `-1`, expected u64"),
        ("1.5", "invalid type: floating point `1.5`, expected u64"),
        ("1e3", "invalid type: floating point `1000.0`, expected u64"),
        ("\"5\"", "invalid type: string \"5\", expected u64"),
        ("null", "invalid type: null, expected u64"),
        ("18446744073709551616", "expected u64"),
    ] {
        let body = format!(r#"{{"name": "a", "content_type": "a/b", "size": {size}}}"#);
        check_create(&body, Err(fragment));
    }
}

#[test]
fn names_are_1_to_255_characters_not_bytes() {
    for good in
        samples::odd_names()
            .into_iter()
            .chain(["x".repeat(255), "é".repeat(255), "x".into()])
    {
        check_create(&create_body(&good, "a/b", 1), Ok((&good, "a/b", 1)));
    }
    check_create(
        &create_body("", "a/b", 1),
        Err("invalid name: expected 1 to 255 characters, got 0"),
    );
    check_create(&create_body(&"x".repeat(256), "a/b", 1), Err("got 256"));
    check_create(&create_body(&"🐦".repeat(256), "a/b", 1), Err("got 256"));
}

#[test]
fn content_types_are_type_slash_subtype() {
    for good in [
        "application/pdf",
        "text/plain",
        "image/svg+xml",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/x-www-form-urlencoded",
        "Text/HTML",
        "a/b",
        "0/9",
        "a!#$&-^_.+/b!#$&-^_.+",
    ] {
        check_create(&create_body("n", good, 1), Ok(("n", good, 1)));
    }
    let long_name = "a".repeat(127);
    check_create(
        &create_body("n", &format!("{long_name}/{long_name}"), 1),
        Ok(("n", &format!("{long_name}/{long_name}"), 1)),
    );
    for bad in [
        "",
        "text",
        "text/",
        "/plain",
        "text/plain/x",
        "text/plain; charset=utf-8",
        "text/plain ",
        " text/plain",
        "text /plain",
        "text/plain\r\nx-amz-acl: public-read",
        "-text/plain",
        "text/.plain",
        "text/pla\"in",
        "text/plain,text/html",
        "tëxt/plain",
        "*/*",
        "../..",
        "a/b\0",
    ] {
        check_create(&create_body("n", bad, 1), Err("invalid content_type"));
    }
    check_create(
        &create_body("n", "text", 1),
        Err("invalid content_type `text`: expected a media type `type/subtype`"),
    );
    let too_long = format!("{}/b", "a".repeat(128));
    let err = parse(&envelope(
        "POST",
        "/files",
        None,
        &create_body("n", &too_long, 1),
    ))
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid content_type (130 characters)"),
        "{err}"
    );
}

#[test]
fn sizes_are_1_byte_to_5_gib() {
    for good in [1, 2, MAX_SIZE - 1, MAX_SIZE] {
        check_create(&create_body("n", "a/b", good), Ok(("n", "a/b", good)));
    }
    assert_eq!(MAX_SIZE, 5_368_709_120);
    check_create(
        &create_body("n", "a/b", 0),
        Err("invalid size 0: expected 1 to 5368709120 bytes (5 GiB, the most one S3 PUT takes)"),
    );
    check_create(
        &create_body("n", "a/b", MAX_SIZE + 1),
        Err("invalid size 5368709121"),
    );
    check_create(&create_body("n", "a/b", u64::MAX), Err("invalid size"));
}

#[test]
fn ids_and_routes() {
    for method in ["GET", "DELETE"] {
        let parsed = parse(&envelope(method, "/files/{id}", Some(UPLOADED_ID), "")).unwrap();
        let id = UPLOADED_ID.to_owned();
        let expected = match method {
            "GET" => Command::Get { id },
            _ => Command::Delete { id },
        };
        assert_eq!(parsed, expected);
        for bad in [
            "",
            "1",
            "../prod",
            "0000000000000000000000000000000A",
            &format!("{UPLOADED_ID}0"),
            &UPLOADED_ID[1..],
            &format!("{}g", &UPLOADED_ID[1..]),
            "0000000000000000000000000000000/",
        ] {
            let err = parse(&envelope(method, "/files/{id}", Some(bad), "")).unwrap_err();
            assert_eq!(err.status(), 400, "{bad}");
            assert!(err.to_string().starts_with("invalid file id"), "{err}");
        }
        let err = parse(&envelope(method, "/files/{id}", None, "")).unwrap_err();
        assert_eq!(err.to_string(), "missing path parameter `id`");
        let err = parse(&envelope(method, "/files/{id}", Some(&"x".repeat(100)), "")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid file id (100 characters)"),
            "{err}"
        );
    }
    let mut with_query = envelope("GET", "/files/{id}", Some(UPLOADED_ID), "");
    with_query.query.insert("download".into(), "1".into());
    assert_eq!(
        parse(&with_query).unwrap_err().to_string(),
        "unknown query parameter `download`: GET /files/{id} takes no query parameters"
    );
    for (method, resource) in [
        ("PUT", "/files/{id}"),
        ("GET", "/files"),
        ("POST", "/files/{id}"),
    ] {
        let err = parse(&envelope(method, resource, Some(UPLOADED_ID), "")).unwrap_err();
        assert_eq!(err.status(), 404, "{method} {resource}");
        assert_eq!(
            err.to_string(),
            format!("no route `{method} {resource}` in files")
        );
    }
}

fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn each_stage_has_its_own_bucket_from_configuration() {
    const BOTH: &[(&str, &str)] = &[
        ("FILES_BUCKET_STAGING", "b-s"),
        ("FILES_BUCKET_PROD", "b-p"),
    ];
    let buckets = buckets_from_lookup(env(BOTH)).unwrap();
    assert_eq!(buckets.for_stage(api::Stage::Staging), "b-s");
    assert_eq!(buckets.for_stage(api::Stage::Prod), "b-p");
    assert_eq!(
        buckets_from_lookup(env(&[("FILES_BUCKET_STAGING", "b-s")])).unwrap_err(),
        "FILES_BUCKET_PROD is not set: it names the files bucket of that stage"
    );
    let empty = buckets_from_lookup(env(&[
        ("FILES_BUCKET_STAGING", ""),
        ("FILES_BUCKET_PROD", "p"),
    ]));
    assert!(
        empty
            .unwrap_err()
            .starts_with("FILES_BUCKET_STAGING is not set")
    );
}

#[test]
fn the_url_expiry_is_required_whole_seconds_up_to_7_days() {
    let expiry = |value: &'static str| {
        let vars: &'static [(&str, &str)] = Box::leak(Box::new([(EXPIRY_VARIABLE, value)]));
        url_expiry_from_lookup(env(vars))
    };
    assert_eq!(expiry("900"), Ok(Duration::from_secs(900)));
    assert_eq!(expiry("1"), Ok(Duration::from_secs(1)));
    assert_eq!(expiry("604800"), Ok(Duration::from_secs(604_800)));
    for bad in [
        "0",
        "604801",
        "-1",
        "+5",
        "15m",
        "1.5",
        " 900",
        "99999999999999999999",
    ] {
        assert_eq!(
            expiry(bad).unwrap_err(),
            format!(
                "FILES_URL_EXPIRY_SECONDS is `{bad}`: it is how long presigned URLs are valid, \
                 in whole seconds from 1 to 604800"
            )
        );
    }
    for unset in [url_expiry_from_lookup(env(&[])), expiry("")] {
        assert!(
            unset
                .unwrap_err()
                .starts_with("FILES_URL_EXPIRY_SECONDS is not set"),
        );
    }
}
