//! The function's stores against real DynamoDB and S3 APIs over HTTP: the
//! moto emulator (`testkit::moto`), started on a free loopback port for this
//! test binary, with the S3 client the function builds (`files::s3::client`
//! of an SDK configuration whose endpoint is the emulator, as
//! `AWS_ENDPOINT_URL` makes it on the local stack). Bytes go up and down
//! through the presigned URLs with a plain HTTP client, as curl would.
//!
//! Moto's S3 accepts any signature and ignores expiry: what the signatures
//! bind is `tests/sigv4.rs`'s (s3s-fs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use files::dynamo::DynamoStore;
use files::s3::S3Objects;
use files::samples::{
    self, Objects, Records, UPLOADED_ID, by_id, call, create, query_params, url_host, url_path,
};
use files::store::{FileRecord, FileStore, ObjectStore, StoreError, Validity};
use files::{Files, Tables};
use serde_json::json;
use testkit::moto;

/// The DynamoDB store, and every record of a table by `Scan`.
struct MotoRecords(DynamoStore);

impl FileStore for MotoRecords {
    async fn create(&self, table: &str, record: &FileRecord) -> Result<(), StoreError> {
        self.0.create(table, record).await
    }

    async fn get(&self, table: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        self.0.get(table, id).await
    }

    async fn delete(&self, table: &str, id: &str) -> Result<bool, StoreError> {
        self.0.delete(table, id).await
    }
}

impl Records for MotoRecords {
    async fn records(&self, table: &str) -> Vec<FileRecord> {
        let mut records = Vec::new();
        for item in raw_items(table).await {
            let id = text(&item, "id");
            records.push(self.0.get(table, &id).await.unwrap().unwrap());
        }
        records
    }
}

/// The S3 store, a client's requests through its URLs over HTTP, and every
/// object of a bucket by `ListObjectsV2` and `GetObject`.
struct MotoObjects(S3Objects);

impl ObjectStore for MotoObjects {
    async fn upload_url(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        size: u64,
        validity: Validity,
    ) -> Result<String, StoreError> {
        self.0
            .upload_url(bucket, key, content_type, size, validity)
            .await
    }

    async fn download_url(
        &self,
        bucket: &str,
        key: &str,
        validity: Validity,
    ) -> Result<String, StoreError> {
        self.0.download_url(bucket, key, validity).await
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        self.0.exists(bucket, key).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.0.delete(bucket, key).await
    }
}

impl Objects for MotoObjects {
    async fn upload(&self, url: &str, content_type: &str, bytes: &[u8]) -> u16 {
        let response =
            testkit::http::send("PUT", url, &[("content-type", content_type)], bytes).await;
        response.status
    }

    async fn download(&self, url: &str) -> (u16, Vec<u8>) {
        let response = testkit::http::send("GET", url, &[], b"").await;
        (response.status, response.body)
    }

    async fn contents(&self, bucket: &str) -> Vec<(String, String, Vec<u8>)> {
        let s3 = moto::s3();
        let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
        let mut objects = Vec::new();
        for object in listed.contents() {
            let key = object.key().unwrap().to_owned();
            let got = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            let content_type = got.content_type().unwrap_or_default().to_owned();
            let bytes = got.body.collect().await.unwrap().to_vec();
            objects.push((key, content_type, bytes));
        }
        objects
    }
}

type Item = HashMap<String, AttributeValue>;

fn text(item: &Item, name: &str) -> String {
    match &item[name] {
        AttributeValue::S(value) => value.clone(),
        other => panic!("{name} is {other:?}"),
    }
}

/// Every item of `table` as DynamoDB holds it, in id order.
async fn raw_items(table: &str) -> Vec<Item> {
    let output = moto::dynamodb()
        .scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(
        output.last_evaluated_key.is_none(),
        "a test table fits a page"
    );
    let mut items = output.items().to_vec();
    items.sort_by_key(|item| text(item, "id"));
    items
}

/// A new table, keyed like the real one (`id`, a string).
async fn create_table(name: &str) {
    moto::dynamodb()
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

const EXPIRY: Duration = Duration::from_secs(900);

/// A function over fresh, empty staging and prod tables and buckets, its
/// URLs valid for `expiry`.
async fn fresh_files_expiring(expiry: Duration) -> Files<MotoRecords, MotoObjects> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tables: Tables = samples::tables(&format!("files{n}"));
    let buckets: Tables = samples::tables(&format!("files-bucket{n}"));
    create_table(&tables.staging).await;
    create_table(&tables.prod).await;
    let s3 = moto::s3();
    for bucket in [&buckets.staging, &buckets.prod] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let config = moto::sdk_config();
    Files {
        store: MotoRecords(DynamoStore::new(aws_sdk_dynamodb::Client::new(&config))),
        objects: MotoObjects(S3Objects::new(files::s3::client(&config))),
        tables,
        buckets,
        url_expiry: expiry,
    }
}

async fn fresh_files() -> Files<MotoRecords, MotoObjects> {
    fresh_files_expiring(EXPIRY).await
}

#[tokio::test]
async fn every_sample_event_against_moto() {
    samples::check_all(fresh_files).await;
}

/// Created, 409, uploaded through the URL, downloaded through the other,
/// deleted: for every odd name (one after another, on one pair of tables
/// and buckets, each left empty by the delete).
#[tokio::test]
async fn the_life_of_a_file_whatever_its_name_against_moto() {
    let files = fresh_files().await;
    for name in samples::odd_names()
        .iter()
        .chain([&"report.pdf".to_owned()])
    {
        samples::check_life_of_a_file(&files, name).await;
    }
}

/// The URL of a staging file is the emulator's endpoint, path-style, with
/// the staging bucket and the id as its whole path: no name, and nowhere
/// the prod bucket. The upload lands in staging's bucket only; prod's
/// URLs name prod's bucket.
#[tokio::test]
async fn a_staging_url_reaches_the_staging_bucket_only() {
    let files = fresh_files().await;
    let endpoint_host = moto::moto()
        .endpoint
        .trim_start_matches("http://")
        .to_owned();
    let (status, body) = call(&files, create("files-prod/../x", "text/plain", 2)).await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap();
    let url = body["upload_url"].as_str().unwrap();
    assert_eq!(url_host(url), endpoint_host, "{url}");
    assert_eq!(url_path(url), format!("/{}/{id}", files.buckets.staging));
    assert!(!url.contains(&files.buckets.prod), "{url}");
    assert!(!url.contains("files-prod"), "{url}");
    assert_eq!(files.objects.upload(url, "text/plain", b"hi").await, 200);
    let staging = files.objects.contents(&files.buckets.staging).await;
    assert_eq!(
        staging,
        vec![(id.to_owned(), "text/plain".into(), b"hi".to_vec())]
    );
    assert_eq!(files.objects.contents(&files.buckets.prod).await, vec![]);

    let mut on_prod =
        samples::envelope("POST", "/files", None, &samples::create_body("x", "a/b", 1));
    on_prod.stage = "prod".into();
    let (status, body) = call(&files, json!(on_prod)).await;
    assert_eq!(status, 200, "{body}");
    let url = body["upload_url"].as_str().unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(url_path(url), format!("/{}/{id}", files.buckets.prod));
    assert!(!url.contains(&files.buckets.staging), "{url}");
}

/// What the URLs sign, read back from them: `X-Amz-Expires` is the
/// configured validity and `expires_at` is `X-Amz-Date` plus it; the
/// upload signs `content-length`, `content-type` and `host`, the download
/// `host`; no checksum is asked for.
#[tokio::test]
async fn the_urls_expire_and_sign_as_the_request_says() {
    for expiry in [Duration::from_secs(900), Duration::from_secs(3600)] {
        let files = fresh_files_expiring(expiry).await;
        let (status, created) = call(&files, create("a.bin", "application/octet-stream", 3)).await;
        assert_eq!(status, 200, "{created}");
        let upload = created["upload_url"].as_str().unwrap();
        let params = query_params(upload);
        assert_eq!(params["X-Amz-Expires"], expiry.as_secs().to_string());
        assert_eq!(
            params["X-Amz-SignedHeaders"],
            "content-length;content-type;host"
        );
        assert!(
            !params
                .keys()
                .any(|name| name.to_lowercase().contains("checksum"))
        );
        check_expires_at(&created, &params["X-Amz-Date"], expiry);

        let id = created["id"].as_str().unwrap();
        assert_eq!(
            files
                .objects
                .upload(upload, "application/octet-stream", b"abc")
                .await,
            200
        );
        let (status, got) = call(&files, by_id("GET", id)).await;
        assert_eq!(status, 200, "{got}");
        let download = got["download_url"].as_str().unwrap();
        let params = query_params(download);
        assert_eq!(params["X-Amz-Expires"], expiry.as_secs().to_string());
        assert_eq!(params["X-Amz-SignedHeaders"], "host");
        check_expires_at(&got, &params["X-Amz-Date"], expiry);
    }
}

/// `expires_at` is `amz_date` (`20260101T000000Z`) plus `expiry`.
fn check_expires_at(body: &serde_json::Value, amz_date: &str, expiry: Duration) {
    let d = amz_date;
    let signed_at = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    );
    let signed_at = humantime::parse_rfc3339(&signed_at).unwrap();
    let expires_at = humantime::parse_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires_at.duration_since(signed_at).unwrap(),
        expiry,
        "{body}"
    );
}

/// The item a POST writes, as DynamoDB holds it; nothing else anywhere.
#[tokio::test]
async fn a_post_writes_one_item_and_no_object() {
    let files = fresh_files().await;
    let (status, created) = call(&files, create("Ünïcödé/../✓.txt", "text/plain", 5)).await;
    assert_eq!(status, 200, "{created}");
    let s = |value: &str| AttributeValue::S(value.to_owned());
    let expected: Item = [
        ("id", s(created["id"].as_str().unwrap())),
        ("name", s("Ünïcödé/../✓.txt")),
        ("content_type", s("text/plain")),
        ("size", AttributeValue::N("5".into())),
        ("created_at", s(created["created_at"].as_str().unwrap())),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    assert_eq!(raw_items(&files.tables.staging).await, vec![expected]);
    assert_eq!(raw_items(&files.tables.prod).await, vec![]);
    for bucket in [&files.buckets.staging, &files.buckets.prod] {
        assert_eq!(files.objects.contents(bucket).await, vec![]);
    }
}

/// A delete removes the object and the record, as S3 and DynamoDB see
/// them; the other file stays.
#[tokio::test]
async fn a_delete_removes_the_object_and_the_record() {
    let files = fresh_files().await;
    samples::seed(&files).await;
    let (status, body) = call(&files, by_id("DELETE", UPLOADED_ID)).await;
    assert_eq!(
        (status, body),
        (200, json!({"id": UPLOADED_ID, "deleted": true}))
    );
    let head = moto::s3()
        .head_object()
        .bucket(&files.buckets.staging)
        .key(UPLOADED_ID)
        .send()
        .await;
    assert!(head.unwrap_err().into_service_error().is_not_found());
    let left: Vec<String> = raw_items(&files.tables.staging)
        .await
        .iter()
        .map(|item| text(item, "id"))
        .collect();
    assert_eq!(left, [samples::PENDING_ID]);
}

/// Every refused request leaves both tables and both buckets exactly as
/// they were.
#[tokio::test]
async fn refused_requests_change_nothing_against_moto() {
    let files = fresh_files().await;
    samples::seed(&files).await;
    let before = samples::snapshot(&files).await;
    assert_eq!((before[0].0.len(), before[0].1.len()), (2, 1));
    for (status, envelope) in samples::refused_requests() {
        let (got, body) = call(&files, json!(envelope)).await;
        assert_eq!(got, status, "{envelope:?}: {body}");
        assert_eq!(samples::snapshot(&files).await, before, "{envelope:?}");
    }
}

/// S3 that cannot be reached is a 500 (its detail in the log only), never
/// taken for "not uploaded" (409) or "no such file" (404).
#[tokio::test]
async fn an_unreachable_bucket_is_an_internal_error() {
    let reachable = fresh_files().await;
    let files = Files {
        objects: S3Objects::new(files::s3::client(&moto::unreachable_sdk_config())),
        store: reachable.store,
        tables: reachable.tables,
        buckets: reachable.buckets,
        url_expiry: EXPIRY,
    };
    for record in samples::fixture() {
        files
            .store
            .create(&files.tables.staging, &record)
            .await
            .unwrap();
    }
    for request in [by_id("GET", UPLOADED_ID), by_id("DELETE", UPLOADED_ID)] {
        let (status, body) = call(&files, request.clone()).await;
        assert_eq!(
            (status, &body["message"]),
            (500, &json!("internal error")),
            "{request}"
        );
    }
    assert_eq!(
        raw_items(&files.tables.staging).await.len(),
        2,
        "nothing deleted"
    );
}

/// The cold start makes neither SDK client: the first request that needs
/// each does ([`api::sdk::Lazy`]).
#[test]
fn the_cold_start_makes_no_sdk_client() {
    testkit::init::assert_init_makes_no_sdk_client(
        env!("CARGO_BIN_EXE_files"),
        &[
            ("FILES_TABLE_STAGING", "t"),
            ("FILES_TABLE_PROD", "t"),
            ("FILES_BUCKET_STAGING", "b"),
            ("FILES_BUCKET_PROD", "b"),
            ("FILES_URL_EXPIRY_SECONDS", "900"),
        ],
    );
}
