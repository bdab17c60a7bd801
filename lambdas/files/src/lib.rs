//! `files`: file records in DynamoDB, their bytes in S3, moved by the client
//! itself through presigned URLs (the function never carries a file's
//! bytes).
//!
//! The request is parsed and validated into a [`Command`] by pure code
//! ([`parse`]); [`Files::handle`] runs it against a [`FileStore`] (the
//! records) and an [`ObjectStore`] (the bytes) in the table and bucket
//! configured for the request's stage.
//!
//! - `POST /files` `{"name": "...", "content_type": "type/subtype", "size": N}`:
//!   saves a record under a new random `id` and answers it with
//!   `upload_url`, a presigned `PUT` of the object, and `expires_at` (RFC
//!   3339, UTC), when that URL stops working. The URL is bound to the
//!   declared `Content-Type` and `Content-Length` (both signed): S3 refuses
//!   a PUT with another type or size.
//! - `GET /files/{id}`: the record with `download_url`, a presigned `GET`,
//!   and its `expires_at`; 409 while nothing was uploaded yet, 404 without
//!   a record.
//! - `DELETE /files/{id}`: removes the object, then the record (so a retry
//!   after a failure between the two finishes the job); 404 without a
//!   record.
//!
//! The object's key is the id ([`store::object_key`]), never anything of
//! the client's: a name is any 1 to 255 characters, kept in the record
//! only. The URLs' validity is the function's configuration
//! (`FILES_URL_EXPIRY_SECONDS`), the same for uploads and downloads. A
//! refused request changes nothing.

pub mod dynamo;
pub mod s3;
pub mod samples;
pub mod store;

use std::time::{Duration, SystemTime};

pub use api::Tables;
use api::{ApiError, Envelope, Request};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::{FileRecord, FileStore, ObjectStore, Validity, object_key};

/// What a valid request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create {
        name: String,
        content_type: String,
        size: u64,
    },
    Get {
        id: String,
    },
    Delete {
        id: String,
    },
}

/// The `POST` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    content_type: String,
    size: u64,
}

pub const NAME_MAX_CHARS: usize = 255;
/// The most one S3 `PutObject` takes: 5 GiB.
pub const MAX_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The longest type or subtype name (RFC 6838, 4.2).
const MIME_NAME_MAX_CHARS: usize = 127;

/// Longer values are not echoed back in a message.
const ECHO_MAX_CHARS: usize = 64;

fn valid_name(name: String) -> Result<String, ApiError> {
    let chars = name.chars().count();
    if (1..=NAME_MAX_CHARS).contains(&chars) {
        Ok(name)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid name: expected 1 to {NAME_MAX_CHARS} characters, got {chars}"
        )))
    }
}

/// A type or subtype name of RFC 6838 (4.2): a letter or digit, then up
/// to 126 letters, digits or `!#$&-^_.+`.
fn is_mime_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= MIME_NAME_MAX_CHARS
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

/// `type/subtype` and nothing else (no parameters): the value the upload
/// URL signs as `Content-Type`, so the client must send exactly it.
fn valid_content_type(content_type: String) -> Result<String, ApiError> {
    const RULE: &str = "expected a media type `type/subtype` (RFC 6838 names: letters, digits \
                        and !#$&-^_.+; no parameters), such as `application/pdf`";
    match content_type.split_once('/') {
        Some((kind, subtype)) if is_mime_name(kind) && is_mime_name(subtype) => Ok(content_type),
        _ if content_type.chars().count() > ECHO_MAX_CHARS => Err(ApiError::bad_request(format!(
            "invalid content_type ({} characters): {RULE}",
            content_type.chars().count()
        ))),
        _ => Err(ApiError::bad_request(format!(
            "invalid content_type `{content_type}`: {RULE}"
        ))),
    }
}

fn valid_size(size: u64) -> Result<u64, ApiError> {
    if (1..=MAX_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid size {size}: expected 1 to {MAX_SIZE} bytes (5 GiB, the most one S3 PUT takes)"
        )))
    }
}

fn create_body(body: &str) -> Result<CreateBody, ApiError> {
    const SHAPE: &str =
        r#"expected a JSON object {"name": string, "content_type": string, "size": integer}"#;
    api::json_object(body, SHAPE)?;
    serde_json::from_str(body).map_err(|err| ApiError::bad_request(format!("invalid body: {err}")))
}

fn valid_id(id: &str) -> Result<String, ApiError> {
    const RULE: &str = "expected the 32 lowercase hex digits POST /files answered";
    if store::is_id(id) {
        Ok(id.to_owned())
    } else if id.chars().count() > ECHO_MAX_CHARS {
        Err(ApiError::bad_request(format!(
            "invalid file id ({} characters): {RULE}",
            id.chars().count()
        )))
    } else {
        Err(ApiError::bad_request(format!(
            "invalid file id `{id}`: {RULE}"
        )))
    }
}

/// Refuses any query parameter: no route here takes one.
fn no_query(envelope: &Envelope) -> Result<(), ApiError> {
    let Some(unknown) = envelope.query.keys().next() else {
        return Ok(());
    };
    let route = envelope.route();
    Err(ApiError::bad_request(
        if unknown.chars().count() > ECHO_MAX_CHARS {
            format!("unknown query parameter: {route} takes no query parameters")
        } else {
            format!("unknown query parameter `{unknown}`: {route} takes no query parameters")
        },
    ))
}

/// Validates a request into a [`Command`]; every failure is a 400 (404 for
/// a route this function does not serve) that says what is wrong.
pub fn parse(envelope: &Envelope) -> Result<Command, ApiError> {
    let route = envelope.route();
    let id = || valid_id(envelope.path_param("id")?);
    match route.as_str() {
        "POST /files" => {
            no_query(envelope)?;
            let body = create_body(&envelope.body)?;
            Ok(Command::Create {
                name: valid_name(body.name)?,
                content_type: valid_content_type(body.content_type)?,
                size: valid_size(body.size)?,
            })
        }
        "GET /files/{id}" => {
            let id = id()?;
            no_query(envelope)?;
            Ok(Command::Get { id })
        }
        "DELETE /files/{id}" => {
            let id = id()?;
            no_query(envelope)?;
            Ok(Command::Delete { id })
        }
        other => Err(ApiError::not_found(format!("no route `{other}` in files"))),
    }
}

/// The variables naming each stage's files table: `FILES_TABLE_STAGING`, `FILES_TABLE_PROD`.
pub const TABLE_VARIABLES: &str = "FILES_TABLE";
/// The variables naming each stage's bucket: `FILES_BUCKET_STAGING`, `FILES_BUCKET_PROD`.
pub const BUCKET_VARIABLES: &str = "FILES_BUCKET";
/// The variable holding how long a presigned URL is valid, in seconds.
pub const EXPIRY_VARIABLE: &str = "FILES_URL_EXPIRY_SECONDS";
/// The longest validity SigV4 allows a presigned URL: 7 days.
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Each stage's files table, from the function's configuration.
pub fn tables_from_env() -> Result<Tables, String> {
    Tables::from_env(TABLE_VARIABLES, "files table")
}

/// Each stage's bucket, from the function's configuration
/// ([`BUCKET_VARIABLES`]), so no bucket name is ever built from request data.
pub fn buckets_from_env() -> Result<Tables, String> {
    buckets_from_lookup(|name| std::env::var(name).ok())
}

/// [`buckets_from_env`] through `lookup`: both variables must be set and
/// non-empty.
pub fn buckets_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Tables, String> {
    Tables::from_lookup(BUCKET_VARIABLES, "files bucket", lookup)
}

/// How long presigned URLs are valid, from the function's configuration.
pub fn url_expiry_from_env() -> Result<Duration, String> {
    url_expiry_from_lookup(|name| std::env::var(name).ok())
}

/// [`url_expiry_from_env`] through `lookup`: whole seconds, 1 to 604800
/// (7 days, the most SigV4 allows).
pub fn url_expiry_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Duration, String> {
    let rule = format!(
        "it is how long presigned URLs are valid, in whole seconds from 1 to {}",
        MAX_EXPIRY.as_secs()
    );
    let raw = lookup(EXPIRY_VARIABLE)
        .filter(|raw| !raw.is_empty())
        .ok_or_else(|| format!("{EXPIRY_VARIABLE} is not set: {rule}"))?;
    Some(&raw)
        .filter(|raw| raw.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|raw| raw.parse().ok())
        .map(Duration::from_secs)
        .filter(|expiry| (Duration::from_secs(1)..=MAX_EXPIRY).contains(expiry))
        .ok_or_else(|| format!("{EXPIRY_VARIABLE} is `{raw}`: {rule}"))
}

/// A new file id: 128 bits from the operating system's generator, as
/// [`store::ID_LEN`] hex digits.
fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; store::ID_LEN / 2];
    getrandom::getrandom(&mut bytes)
        .map_err(|err| ApiError::internal(format!("no random id: {err}")))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// The function: the two stores and the stage-to-table and stage-to-bucket
/// configuration.
#[derive(Debug)]
pub struct Files<S, O> {
    pub store: S,
    pub objects: O,
    pub tables: Tables,
    pub buckets: Tables,
    /// How long every presigned URL is valid.
    pub url_expiry: Duration,
}

/// Where a request's stage keeps its files.
struct Place<'a> {
    table: &'a str,
    bucket: &'a str,
}

impl<S: FileStore, O: ObjectStore> Files<S, O> {
    pub async fn handle(&self, request: Request) -> Result<Value, ApiError> {
        let envelope = &request.envelope;
        let stage = envelope.stage()?;
        let place = Place {
            table: self.tables.for_stage(stage),
            bucket: self.buckets.for_stage(stage),
        };
        let command = parse(envelope)?;
        tracing::debug!(?command, place.table, place.bucket, "files request");
        self.execute(place, command).await
    }

    /// A validity starting at `now` (to the second: the signature's own).
    fn validity(&self, now: SystemTime) -> Validity {
        Validity {
            signed_at: store::whole_second(now),
            expires_in: self.url_expiry,
        }
    }

    async fn execute(&self, place: Place<'_>, command: Command) -> Result<Value, ApiError> {
        let Place { table, bucket } = place;
        match command {
            Command::Create {
                name,
                content_type,
                size,
            } => {
                let id = new_id()?;
                let now = SystemTime::now();
                let validity = self.validity(now);
                // Signed before the record is written: a URL that cannot
                // be made leaves no record behind.
                let upload_url = self
                    .objects
                    .upload_url(bucket, &object_key(&id), &content_type, size, validity)
                    .await
                    .map_err(ApiError::internal)?;
                let record = FileRecord {
                    id,
                    name,
                    content_type,
                    size,
                    created_at: store::rfc3339_millis(now),
                };
                // `Exists` is a fault of ours too: 128 random bits do not
                // repeat unless the generator is broken.
                self.store
                    .create(table, &record)
                    .await
                    .map_err(ApiError::internal)?;
                Ok(with_url(&record, "upload_url", upload_url, validity))
            }
            Command::Get { id } => {
                let record = self.record(table, &id).await?;
                let key = object_key(&id);
                let uploaded = self
                    .objects
                    .exists(bucket, &key)
                    .await
                    .map_err(ApiError::internal)?;
                if !uploaded {
                    return Err(ApiError::Conflict {
                        message: format!(
                            "file `{id}` has not been uploaded yet: PUT its bytes to the upload_url \
                             POST /files answered first (or POST /files again once it expired)"
                        ),
                        current_lock_version: None,
                    });
                }
                let validity = self.validity(SystemTime::now());
                let download_url = self
                    .objects
                    .download_url(bucket, &key, validity)
                    .await
                    .map_err(ApiError::internal)?;
                Ok(with_url(&record, "download_url", download_url, validity))
            }
            Command::Delete { id } => {
                self.record(table, &id).await?;
                // The object first: a failure after it leaves the record,
                // and a retry deletes the (gone) object again, then it.
                self.objects
                    .delete(bucket, &object_key(&id))
                    .await
                    .map_err(ApiError::internal)?;
                let deleted = self
                    .store
                    .delete(table, &id)
                    .await
                    .map_err(ApiError::internal)?;
                if !deleted {
                    // Another delete took the record meanwhile.
                    return Err(not_found(&id));
                }
                Ok(json!({ "id": id, "deleted": true }))
            }
        }
    }

    async fn record(&self, table: &str, id: &str) -> Result<FileRecord, ApiError> {
        self.store
            .get(table, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| not_found(id))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("file `{id}` not found"))
}

/// The record's fields, with a presigned URL under `field` and its
/// `expires_at`.
fn with_url(record: &FileRecord, field: &str, url: String, validity: Validity) -> Value {
    let mut body = json!(record);
    body[field] = json!(url);
    body["expires_at"] = json!(store::rfc3339_seconds(validity.expires_at()));
    body
}

#[cfg(test)]
mod tests;
