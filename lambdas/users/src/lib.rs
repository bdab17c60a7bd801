//! `users`: `GET`, `POST` and `DELETE /user/{id}`, stored in DynamoDB with
//! optimistic locking on `lock_version`.
//!
//! The request is parsed and validated into a [`Command`] by pure code
//! ([`parse`]); [`Users::handle`] runs it against a [`UserStore`] in the
//! table configured for the request's stage.
//!
//! - `GET /user/{id}`: the user, or 404.
//! - `POST /user/{id}` `{"name": "..."}`: creates the user (409 with its
//!   version if it exists): at `lock_version` 1 for an id never seen, above
//!   every earlier version for an id deleted before (see below). With
//!   `"lock_version": N` it updates instead, only if the stored version is
//!   still N (409 with the current version if not, 404 if there is no such
//!   user).
//! - `DELETE /user/{id}?lock_version=N`: deletes, with the same check.
//!
//! A version never repeats for an id (the [`UserStore`] contract): a delete
//! keeps the id's last version in a tombstone, so a user created again
//! after a delete starts above it and a client holding a version it read
//! before the delete gets a 409, never a silent overwrite of the new user.
//! A deleted id otherwise answers as one that never existed: 404 to a read,
//! an update and a delete.

pub mod dynamo;
pub mod samples;
pub mod store;

pub use api::Tables;
use api::{ApiError, Envelope, Request};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::{StoreError, UserStore};

/// What a valid request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Get {
        id: String,
    },
    Create {
        id: String,
        name: String,
    },
    Update {
        id: String,
        name: String,
        expected: u64,
    },
    Delete {
        id: String,
        expected: u64,
    },
}

/// The `POST` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    name: String,
    lock_version: Option<u64>,
}

const NAME_MAX_CHARS: usize = 256;

fn valid_id(id: &str) -> Result<String, ApiError> {
    const RULE: &str = "expected 8 to 64 letters or digits ([0-9A-Za-z])";
    if (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id.to_owned())
    } else if id.chars().count() > 64 {
        // Not echoed back: it may be long.
        Err(ApiError::bad_request(format!(
            "invalid user id ({} characters): {RULE}",
            id.chars().count()
        )))
    } else {
        Err(ApiError::bad_request(format!(
            "invalid user id `{id}`: {RULE}"
        )))
    }
}

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

/// The largest `lock_version` a client may send: JSON numbers above 2^53 - 1
/// lose precision in many clients, and the store adds one to it.
const MAX_LOCK_VERSION: u64 = (1 << 53) - 1;

fn valid_lock_version(version: u64) -> Result<u64, ApiError> {
    match version {
        0 => Err(ApiError::bad_request(
            "invalid lock_version 0: versions start at 1",
        )),
        1..=MAX_LOCK_VERSION => Ok(version),
        _ => Err(ApiError::bad_request(format!(
            "invalid lock_version {version}: the largest is {MAX_LOCK_VERSION}"
        ))),
    }
}

fn post_body(body: &str) -> Result<PostBody, ApiError> {
    const SHAPE: &str =
        r#"expected a JSON object {"name": string, "lock_version": integer (to update)}"#;
    let value = api::json_object(body, SHAPE)?;
    if value.get("lock_version").is_some_and(Value::is_null) {
        return Err(ApiError::bad_request(
            "invalid body: lock_version is null: send the version you read, or leave it out to create",
        ));
    }
    serde_json::from_value(value)
        .map_err(|err| ApiError::bad_request(format!("invalid body: {err}")))
}

/// Validates a request into a [`Command`]; every failure is a 400 or 404
/// that says what is wrong.
pub fn parse(envelope: &Envelope) -> Result<Command, ApiError> {
    let route = envelope.route();
    let id = || valid_id(envelope.path_param("id")?);
    match route.as_str() {
        "GET /user/{id}" => Ok(Command::Get { id: id()? }),
        "POST /user/{id}" => {
            let id = id()?;
            let body = post_body(&envelope.body)?;
            let name = valid_name(body.name)?;
            Ok(match body.lock_version {
                None => Command::Create { id, name },
                Some(version) => Command::Update {
                    id,
                    name,
                    expected: valid_lock_version(version)?,
                },
            })
        }
        "DELETE /user/{id}" => {
            let id = id()?;
            let expected = match envelope.query.get("lock_version") {
                None => Err(ApiError::bad_request(
                    "missing query parameter `lock_version`: send the version you read",
                )),
                // Digits only: `u64::from_str` would also take `+3`.
                Some(raw) => Some(raw)
                    .filter(|raw| raw.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|raw| raw.parse().ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "invalid lock_version `{raw}`: expected a positive integer"
                        ))
                    }),
            }?;
            Ok(Command::Delete {
                id,
                expected: valid_lock_version(expected)?,
            })
        }
        other => Err(ApiError::not_found(format!("no route `{other}` in users"))),
    }
}

/// The variables naming each stage's users table: `USERS_TABLE_STAGING`, `USERS_TABLE_PROD`.
pub const TABLE_VARIABLES: &str = "USERS_TABLE";

/// Each stage's users table, from the function's configuration.
pub fn tables_from_env() -> Result<Tables, String> {
    Tables::from_env(TABLE_VARIABLES, "users table")
}

/// The function: a store and the stage-to-table configuration.
#[derive(Debug)]
pub struct Users<S> {
    pub store: S,
    pub tables: Tables,
}

impl<S: UserStore> Users<S> {
    pub async fn handle(&self, request: Request) -> Result<Value, ApiError> {
        let envelope = &request.envelope;
        let table = self.tables.for_stage(envelope.stage()?);
        let command = parse(envelope)?;
        tracing::debug!(?command, table, "users request");
        self.execute(table, command).await
    }

    async fn execute(&self, table: &str, command: Command) -> Result<Value, ApiError> {
        let store = &self.store;
        match command {
            Command::Get { id } => match store.get(table, &id).await.map_err(ApiError::internal)? {
                Some(user) => Ok(json!(user)),
                None => Err(not_found(&id)),
            },
            Command::Create { id, name } => match store.create(table, &id, &name).await {
                Ok(user) => Ok(json!(user)),
                Err(StoreError::Conflict { current }) => Err(ApiError::Conflict {
                    message: format!(
                        "user `{id}` already exists: send its lock_version to update it"
                    ),
                    current_lock_version: current,
                }),
                Err(err) => Err(ApiError::internal(err)),
            },
            Command::Update { id, name, expected } => {
                match store.update(table, &id, &name, expected).await {
                    Ok(user) => Ok(json!(user)),
                    Err(err) => Err(write_failed(&id, expected, err)),
                }
            }
            Command::Delete { id, expected } => match store.delete(table, &id, expected).await {
                Ok(()) => Ok(json!({ "id": id, "deleted": true })),
                Err(err) => Err(write_failed(&id, expected, err)),
            },
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("user `{id}` not found"))
}

/// A conditional write on an existing user failed: with no current version
/// (no user: never created, or deleted) it is a 404.
fn write_failed(id: &str, expected: u64, err: StoreError) -> ApiError {
    match err {
        StoreError::Conflict { current: None } => not_found(id),
        StoreError::Conflict { current } => ApiError::Conflict {
            message: format!(
                "lock_version {expected} of user `{id}` is stale: read it again and retry"
            ),
            current_lock_version: current,
        },
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests;
