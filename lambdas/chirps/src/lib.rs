//! `chirps`: short messages, listed newest first, and how many there are,
//! stored in DynamoDB.
//!
//! The request is parsed and validated into a [`Command`] by pure code
//! ([`parse`]); [`Chirps::handle`] runs it against a [`ChirpStore`] in the
//! table configured for the request's stage.
//!
//! - `POST /chirps` `{"author": "...", "text": "..."}`: saves a chirp with a
//!   new random `id` and its `created_at` (RFC 3339), and answers it.
//! - `GET /chirps?limit=N&cursor=C`: `{"chirps": [...], "next_cursor": C}`,
//!   at most N (1 to 100, 20 by default) chirps, newest first; `next_cursor`
//!   is the `cursor` of the next page, `null` on the last one.
//! - `GET /chirps/count`: `{"count": N}`, the number of chirps saved, kept
//!   in the same write as each chirp (the [`ChirpStore`] contract), so it
//!   never drifts.
//!
//! A cursor is opaque to clients: the base64url (no padding) of the last
//! chirp's key ([`ChirpKey::sort_key`]). One that does not decode to such a
//! key is a 400, never a key of the client's own making sent to the store.
//! A refused request changes nothing.

pub mod dynamo;
pub mod samples;
pub mod store;

use std::time::{SystemTime, UNIX_EPOCH};

pub use api::Tables;
use api::{ApiError, Envelope, Request};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::{Chirp, ChirpKey, ChirpStore, Page};

/// What a valid request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Post {
        author: String,
        text: String,
    },
    List {
        limit: usize,
        after: Option<ChirpKey>,
    },
    Count,
}

/// The `POST` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    author: String,
    text: String,
}

pub const AUTHOR_MAX_CHARS: usize = 64;
pub const TEXT_MAX_CHARS: usize = 280;
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// Longer values are not echoed back in a message.
const ECHO_MAX_CHARS: usize = 64;

fn valid_author(author: String) -> Result<String, ApiError> {
    const RULE: &str = "expected 1 to 64 letters, digits, `_` or `-` ([0-9A-Za-z_-])";
    let chars = author.chars().count();
    if (1..=AUTHOR_MAX_CHARS).contains(&chars)
        && author
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(author)
    } else if chars > ECHO_MAX_CHARS {
        Err(ApiError::bad_request(format!(
            "invalid author ({chars} characters): {RULE}"
        )))
    } else {
        Err(ApiError::bad_request(format!(
            "invalid author `{author}`: {RULE}"
        )))
    }
}

/// 1 to 280 characters (Unicode scalar values), not only whitespace.
fn valid_text(text: String) -> Result<String, ApiError> {
    let chars = text.chars().count();
    if !(1..=TEXT_MAX_CHARS).contains(&chars) {
        Err(ApiError::bad_request(format!(
            "invalid text: expected 1 to {TEXT_MAX_CHARS} characters, got {chars}"
        )))
    } else if text.trim().is_empty() {
        Err(ApiError::bad_request(
            "invalid text: it is blank (only whitespace)",
        ))
    } else {
        Ok(text)
    }
}

fn post_body(body: &str) -> Result<PostBody, ApiError> {
    const SHAPE: &str = r#"expected a JSON object {"author": string, "text": string}"#;
    api::json_object(body, SHAPE)?;
    serde_json::from_str(body).map_err(|err| ApiError::bad_request(format!("invalid body: {err}")))
}

fn valid_limit(raw: &str) -> Result<usize, ApiError> {
    let rule = format!("expected an integer from 1 to {MAX_LIMIT}");
    // Digits only: `usize::from_str` would also take `+3`.
    let limit = Some(raw)
        .filter(|raw| !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|raw| raw.parse().ok())
        .filter(|limit| (1..=MAX_LIMIT).contains(limit));
    match limit {
        Some(limit) => Ok(limit),
        None if raw.chars().count() > ECHO_MAX_CHARS => Err(ApiError::bad_request(format!(
            "invalid limit ({} characters): {rule}",
            raw.chars().count()
        ))),
        None => Err(ApiError::bad_request(format!(
            "invalid limit `{raw}`: {rule}"
        ))),
    }
}

/// The cursor that continues after `key`.
pub fn cursor(key: &ChirpKey) -> String {
    URL_SAFE_NO_PAD.encode(key.sort_key())
}

/// The key a [`cursor`] encodes; anything else is a 400 (not echoed: it
/// is opaque, and may be long).
fn valid_cursor(raw: &str) -> Result<ChirpKey, ApiError> {
    URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|sort_key| ChirpKey::from_sort_key(&sort_key))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid cursor: send the next_cursor of the previous page as it is",
            )
        })
}

/// Refuses a query parameter the route does not take (a misspelt `limit`
/// would otherwise be a silent default).
fn only_query(envelope: &Envelope, takes: &[&str]) -> Result<(), ApiError> {
    let Some(unknown) = envelope
        .query
        .keys()
        .find(|name| !takes.contains(&name.as_str()))
    else {
        return Ok(());
    };
    let takes = match takes {
        [] => "no query parameters".to_owned(),
        names => format!("only {}", names.join(", ")),
    };
    let route = envelope.route();
    Err(ApiError::bad_request(
        if unknown.chars().count() > ECHO_MAX_CHARS {
            format!("unknown query parameter: {route} takes {takes}")
        } else {
            format!("unknown query parameter `{unknown}`: {route} takes {takes}")
        },
    ))
}

/// Validates a request into a [`Command`]; every failure is a 400 (404 for
/// a route this function does not serve) that says what is wrong.
pub fn parse(envelope: &Envelope) -> Result<Command, ApiError> {
    let route = envelope.route();
    match route.as_str() {
        "POST /chirps" => {
            only_query(envelope, &[])?;
            let body = post_body(&envelope.body)?;
            Ok(Command::Post {
                author: valid_author(body.author)?,
                text: valid_text(body.text)?,
            })
        }
        "GET /chirps" => {
            only_query(envelope, &["limit", "cursor"])?;
            let limit = match envelope.query.get("limit") {
                Some(raw) => valid_limit(raw)?,
                None => DEFAULT_LIMIT,
            };
            let after = envelope
                .query
                .get("cursor")
                .map(|raw| valid_cursor(raw))
                .transpose()?;
            Ok(Command::List { limit, after })
        }
        "GET /chirps/count" => {
            only_query(envelope, &[])?;
            Ok(Command::Count)
        }
        other => Err(ApiError::not_found(format!("no route `{other}` in chirps"))),
    }
}

/// The variables naming each stage's chirps table: `CHIRPS_TABLE_STAGING`, `CHIRPS_TABLE_PROD`.
pub const TABLE_VARIABLES: &str = "CHIRPS_TABLE";

/// Each stage's chirps table, from the function's configuration.
pub fn tables_from_env() -> Result<Tables, String> {
    Tables::from_env(TABLE_VARIABLES, "chirps table")
}

/// A new chirp id: 128 bits from the operating system's generator, as
/// [`store::ID_LEN`] hex digits.
fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; store::ID_LEN / 2];
    getrandom::getrandom(&mut bytes)
        .map_err(|err| ApiError::internal(format!("no random id: {err}")))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn now_millis() -> Result<u64, ApiError> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|err| ApiError::internal(format!("the clock is before 1970: {err}")))?;
    u64::try_from(since_epoch.as_millis()).map_err(ApiError::internal)
}

/// The function: a store and the stage-to-table configuration.
#[derive(Debug)]
pub struct Chirps<S> {
    pub store: S,
    pub tables: Tables,
}

impl<S: ChirpStore> Chirps<S> {
    pub async fn handle(&self, request: Request) -> Result<Value, ApiError> {
        let envelope = &request.envelope;
        let table = self.tables.for_stage(envelope.stage()?);
        let command = parse(envelope)?;
        tracing::debug!(?command, table, "chirps request");
        self.execute(table, command).await
    }

    async fn execute(&self, table: &str, command: Command) -> Result<Value, ApiError> {
        let store = &self.store;
        match command {
            Command::Post { author, text } => {
                let chirp = Chirp::new(&new_id()?, &author, &text, now_millis()?);
                // `Exists` is a fault of ours too: 128 random bits do not
                // repeat unless the generator is broken.
                store
                    .create(table, &chirp)
                    .await
                    .map_err(ApiError::internal)?;
                Ok(json!(chirp))
            }
            Command::List { limit, after } => {
                let Page { chirps, next } = store
                    .list(table, limit, after.as_ref())
                    .await
                    .map_err(ApiError::internal)?;
                Ok(json!({ "chirps": chirps, "next_cursor": next.as_ref().map(cursor) }))
            }
            Command::Count => {
                let count = store.count(table).await.map_err(ApiError::internal)?;
                Ok(json!({ "count": count }))
            }
        }
    }
}

#[cfg(test)]
mod tests;
