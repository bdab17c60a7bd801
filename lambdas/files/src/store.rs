//! Where files live: their records in a [`FileStore`] (DynamoDB,
//! [`crate::dynamo`]) and their bytes in an [`ObjectStore`] (S3,
//! [`crate::s3`]), both also in memory (unit tests).
//!
//! The function never moves a file's bytes itself: it hands out presigned
//! URLs, and the client PUTs and GETs through them. So an [`ObjectStore`]
//! signs URLs, says whether an object is there, and deletes it; nothing
//! more.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// A file id: 32 lowercase hex digits (128 random bits).
pub const ID_LEN: usize = 32;

/// Whether `id` is a file id ([`ID_LEN`] lowercase hex digits).
pub fn is_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The object key of file `id`: the id itself, so no key is ever made of
/// a client's name (slashes, `..`, anything), only of 32 hex digits.
pub fn object_key(id: &str) -> String {
    debug_assert!(is_id(id), "{id:?} is not a file id");
    id.to_owned()
}

/// A file's record, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    pub id: String,
    /// The client's name for it: any 1 to 255 characters, stored and
    /// answered, never part of a key or a URL.
    pub name: String,
    /// `type/subtype`: what the upload URL is bound to.
    pub content_type: String,
    /// Bytes: what the upload URL is bound to.
    pub size: u64,
    /// RFC 3339, UTC, in milliseconds: `2026-01-01T00:00:00.000Z`.
    pub created_at: String,
}

/// `time` as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339_millis(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// `time` as RFC 3339 in UTC, to the second (a signature's resolution).
pub fn rfc3339_seconds(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `time` truncated to the whole second: what a SigV4 signature carries
/// (`X-Amz-Date`), so an expiry computed from it is the URL's own.
pub fn whole_second(time: SystemTime) -> SystemTime {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record with this id exists; nothing was written.
    #[error("a file record `{0}` exists")]
    Exists(String),
    /// The store could not answer: network, permissions, a corrupt item.
    #[error("{0}")]
    Backend(String),
}

/// The records of one table.
///
/// No write is unconditional: a create requires the id to be absent, a
/// delete requires it to be present.
pub trait FileStore: Send + Sync {
    /// Saves `record`, only if no record has its id ([`StoreError::Exists`]
    /// otherwise, and nothing is written).
    fn create(
        &self,
        table: &str,
        record: &FileRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The record, `None` if there is none.
    fn get(
        &self,
        table: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<FileRecord>, StoreError>> + Send;

    /// Deletes the record, only if there is one: `false` if there was none
    /// (nothing was written).
    fn delete(
        &self,
        table: &str,
        id: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// When a presigned URL is signed and for how long it is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// A whole second ([`whole_second`]).
    pub signed_at: SystemTime,
    pub expires_in: Duration,
}

impl Validity {
    /// The last instant the URL is accepted.
    pub fn expires_at(&self) -> SystemTime {
        self.signed_at + self.expires_in
    }
}

/// The objects of one bucket, reached through presigned URLs.
pub trait ObjectStore: Send + Sync {
    /// A URL that PUTs an object at `key`, valid as `validity` says, and
    /// only with this `Content-Type` and a body of exactly `size` bytes
    /// (both headers are signed).
    fn upload_url(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        size: u64,
        validity: Validity,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// A URL that GETs the object at `key`, valid as `validity` says.
    fn download_url(
        &self,
        bucket: &str,
        key: &str,
        validity: Validity,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// Whether an object is at `key` (uploaded).
    fn exists(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Removes the object at `key`; none there is no error (so a retried
    /// delete succeeds).
    fn delete(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The contract of [`FileStore`] over a map, for fast unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<HashMap<String, BTreeMap<String, FileRecord>>>,
}

impl MemoryStore {
    /// Every record of `table`, in id order.
    pub fn records(&self, table: &str) -> Vec<FileRecord> {
        let tables = self.tables.lock().unwrap();
        tables
            .get(table)
            .map(|records| records.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl FileStore for MemoryStore {
    async fn create(&self, table: &str, record: &FileRecord) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().unwrap();
        let records = tables.entry(table.to_owned()).or_default();
        if records.contains_key(&record.id) {
            return Err(StoreError::Exists(record.id.clone()));
        }
        records.insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn get(&self, table: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let tables = self.tables.lock().unwrap();
        Ok(tables
            .get(table)
            .and_then(|records| records.get(id))
            .cloned())
    }

    async fn delete(&self, table: &str, id: &str) -> Result<bool, StoreError> {
        let mut tables = self.tables.lock().unwrap();
        Ok(tables
            .get_mut(table)
            .and_then(|records| records.remove(id))
            .is_some())
    }
}

/// An object in [`MemoryObjects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryObject {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// The contract of [`ObjectStore`] over a map, for fast unit tests. Its
/// URLs are `memory:///<bucket>/<key>?<what is signed>`, which
/// [`MemoryObjects::put`] and [`MemoryObjects::fetch`] honour as S3 honours a
/// presigned URL (the method, the bound headers, not the expiry).
#[derive(Debug, Default)]
pub struct MemoryObjects {
    objects: Mutex<BTreeMap<(String, String), MemoryObject>>,
}

/// A [`MemoryObjects`] URL taken apart: method, bucket, key, and the bound
/// `content-type` and `content-length` of an upload.
fn memory_url(url: &str) -> Option<(String, String, String, BTreeMap<String, String>)> {
    let rest = url.strip_prefix("memory:///")?;
    let (path, query) = rest.split_once('?')?;
    let (bucket, key) = path.split_once('/')?;
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let method = params.get("method")?.clone();
    Some((method, bucket.to_owned(), key.to_owned(), params))
}

/// `value` as a [`MemoryObjects`] URL carries it (a content type may hold
/// `&`, and `%` then stands for itself no more).
fn query_value(value: &str) -> String {
    value.replace('%', "%25").replace('&', "%26")
}

impl MemoryObjects {
    /// A client's PUT of `bytes` with `content_type` through `url`: the
    /// status S3 would answer (200, or 403 when the request is not the one
    /// signed).
    pub fn put(&self, url: &str, content_type: &str, bytes: &[u8]) -> u16 {
        let Some((method, bucket, key, params)) = memory_url(url) else {
            return 403;
        };
        let signed = |name: &str| params.get(name).map(String::as_str);
        if method != "PUT"
            || signed("content-type") != Some(&query_value(content_type))
            || signed("content-length") != Some(&bytes.len().to_string())
        {
            return 403;
        }
        let object = MemoryObject {
            content_type: content_type.to_owned(),
            bytes: bytes.to_vec(),
        };
        self.objects.lock().unwrap().insert((bucket, key), object);
        200
    }

    /// A client's GET through `url`: the object, `None` for a URL that is
    /// not a download URL or names no object.
    pub fn fetch(&self, url: &str) -> Option<MemoryObject> {
        let (method, bucket, key, _) = memory_url(url)?;
        if method != "GET" {
            return None;
        }
        self.objects.lock().unwrap().get(&(bucket, key)).cloned()
    }

    /// Every object of `bucket`, in key order.
    pub fn contents(&self, bucket: &str) -> Vec<(String, MemoryObject)> {
        let objects = self.objects.lock().unwrap();
        objects
            .iter()
            .filter(|((b, _), _)| b == bucket)
            .map(|((_, key), object)| (key.clone(), object.clone()))
            .collect()
    }
}

impl ObjectStore for MemoryObjects {
    async fn upload_url(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        size: u64,
        validity: Validity,
    ) -> Result<String, StoreError> {
        Ok(format!(
            "memory:///{bucket}/{key}?method=PUT&content-type={}&content-length={size}&expires={}",
            query_value(content_type),
            validity.expires_in.as_secs()
        ))
    }

    async fn download_url(
        &self,
        bucket: &str,
        key: &str,
        validity: Validity,
    ) -> Result<String, StoreError> {
        Ok(format!(
            "memory:///{bucket}/{key}?method=GET&expires={}",
            validity.expires_in.as_secs()
        ))
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        let objects = self.objects.lock().unwrap();
        Ok(objects.contains_key(&(bucket.to_owned(), key.to_owned())))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let mut objects = self.objects.lock().unwrap();
        objects.remove(&(bucket.to_owned(), key.to_owned()));
        Ok(())
    }
}
