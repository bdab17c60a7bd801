//! [`ChirpStore`] over DynamoDB: one table per stage, keyed by `pk` (S,
//! partition key) and `sk` (S, sort key), holding two kinds of item.
//!
//! - A chirp: `pk` = `"feed"`, `sk` = [`ChirpKey::sort_key`]
//!   (`<created millis, 15 digits>#<id>`), `id`, `author`, `text`,
//!   `created_at` (S). Every chirp is in the one partition `"feed"`, so the
//!   feed is one `Query` in sort-key order, newest first (see
//!   `terraform/dynamodb.tf` for what that single partition costs).
//! - The counter: `pk` = `"counter"`, `sk` = `"chirps"`, `count` (N), the
//!   number of chirps, written only by the transaction that saves a chirp.
//!
//! A chirp is saved by one `TransactWriteItems`: its `Put`, conditioned on
//! `attribute_not_exists(pk)` (no chirp has that key), and an `ADD` of 1 to
//! the counter. DynamoDB applies both or neither, so the count never
//! drifts: a failed condition cancels the `ADD` too, and a retried request
//! (the SDK's, after a lost response) carries the same client request token
//! and is not applied twice.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use crate::store::{Chirp, ChirpKey, ChirpStore, Page, StoreError, page};

type Item = HashMap<String, AttributeValue>;

/// The partition of every chirp.
const FEED: &str = "feed";
/// The counter's key.
const COUNTER_PK: &str = "counter";
const COUNTER_SK: &str = "chirps";

/// How many times a transaction is sent, in all, while DynamoDB cancels it
/// for a passing reason (another transaction on the counter at the same
/// moment, throttling).
const ATTEMPTS: u32 = 6;

/// The DynamoDB store. Clone the store (its client is shared): make it
/// once per cold start.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: api::sdk::Lazy<Client>,
}

impl DynamoStore {
    /// A store over `client`: one made already, or an [`api::sdk::Lazy`]
    /// one, made on the first request that needs it.
    pub fn new(client: impl Into<api::sdk::Lazy<Client>>) -> Self {
        DynamoStore {
            client: client.into(),
        }
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn corrupt(field: &str, item: &Item) -> StoreError {
    let sk = match item.get("sk") {
        Some(AttributeValue::S(sk)) => sk.as_str(),
        _ => "?",
    };
    StoreError::Backend(format!("item `{sk}` has no valid `{field}`"))
}

/// The chirp a feed item holds.
fn chirp_from(item: &Item) -> Result<Chirp, StoreError> {
    let text = |field: &str| match item.get(field) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(corrupt(field, item)),
    };
    let key = ChirpKey::from_sort_key(&text("sk")?).ok_or_else(|| corrupt("sk", item))?;
    if text("id")? != key.id {
        return Err(corrupt("id", item));
    }
    Ok(Chirp {
        id: key.id,
        author: text("author")?,
        text: text("text")?,
        created_at: text("created_at")?,
        created_millis: key.created_millis,
    })
}

fn backend(err: impl std::error::Error) -> StoreError {
    StoreError::Backend(aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string())
}

/// What a failed `TransactWriteItems` means for the next attempt.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Cancelled with nothing written, for a reason that passes (another
    /// transaction on the counter at the same moment, throttling): send it
    /// again, with a new token (a cancelled transaction's is spent).
    Retry,
    /// The same request is still being applied: ask again with its token.
    InProgress,
    /// The Put's condition failed: a chirp has this key.
    Exists,
    /// Anything else: final.
    Other,
}

/// Reads a failed transaction's service error.
fn failure(err: &TransactWriteItemsError) -> Failure {
    match err {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => {
            // One reason per item, in order: the Put's, then the ADD's.
            let codes: Vec<&str> = cancelled
                .cancellation_reasons()
                .iter()
                .map(|reason| reason.code().unwrap_or("None"))
                .collect();
            if codes.first() == Some(&"ConditionalCheckFailed") {
                Failure::Exists
            } else if codes
                .iter()
                .all(|code| matches!(*code, "None" | "TransactionConflict" | "ThrottlingError"))
                && codes.iter().any(|code| *code != "None")
            {
                Failure::Retry
            } else {
                Failure::Other
            }
        }
        TransactWriteItemsError::TransactionInProgressException(_) => Failure::InProgress,
        _ => Failure::Other,
    }
}

/// The pause before attempt `attempt` (from 1): 20 ms, doubling with each
/// attempt, of which a random half or more (so racing writers spread out).
fn backoff(attempt: u32) -> Duration {
    let ceiling = 10u64 << attempt.min(6);
    let mut byte = [0u8; 1];
    let spread = match getrandom::getrandom(&mut byte) {
        Ok(()) => ceiling * u64::from(byte[0]) / 255,
        Err(_) => ceiling / 2,
    };
    Duration::from_millis(ceiling / 2 + spread / 2)
}

impl ChirpStore for DynamoStore {
    async fn create(&self, table: &str, chirp: &Chirp) -> Result<(), StoreError> {
        let key = chirp.key();
        let put = Put::builder()
            .table_name(table)
            .item("pk", s(FEED))
            .item("sk", s(&key.sort_key()))
            .item("id", s(&chirp.id))
            .item("author", s(&chirp.author))
            .item("text", s(&chirp.text))
            .item("created_at", s(&chirp.created_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(backend)?;
        let count = Update::builder()
            .table_name(table)
            .key("pk", s(COUNTER_PK))
            .key("sk", s(COUNTER_SK))
            .update_expression("ADD #count :one")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .build()
            .map_err(backend)?;
        let items = [
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(count).build(),
        ];
        let mut token = 0;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.to_vec()))
                // At most 36 characters: the id (32) and the try.
                .client_request_token(format!("{}-{token}", chirp.id))
                .send()
                .await;
            let Err(err) = sent else {
                return Ok(());
            };
            match err.as_service_error().map_or(Failure::Other, failure) {
                Failure::Retry => token += 1,
                Failure::InProgress => {}
                Failure::Exists => return Err(StoreError::Exists(key.sort_key())),
                Failure::Other => return Err(backend(err)),
            }
            tracing::debug!(attempt, sort_key = %key.sort_key(), "chirp transaction cancelled, retrying");
        }
        Err(StoreError::Backend(format!(
            "the chirp transaction was cancelled {ATTEMPTS} times (conflicts, throttling)"
        )))
    }

    /// One `Query` of the feed partition, newest first, for one more chirp
    /// than the page (whether another page follows), continued while
    /// DynamoDB stops short of it (its 1 MB page). Strongly consistent: a
    /// chirp is listed as soon as its `POST` answered.
    async fn list(
        &self,
        table: &str,
        limit: usize,
        after: Option<&ChirpKey>,
    ) -> Result<Page, StoreError> {
        let want = limit + 1;
        let mut chirps = Vec::with_capacity(want);
        let mut start = None;
        loop {
            let remaining = i32::try_from(want - chirps.len()).map_err(backend)?;
            let mut query = self
                .client
                .query()
                .table_name(table)
                .expression_attribute_values(":feed", s(FEED))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(remaining)
                .set_exclusive_start_key(start);
            query = match after {
                Some(after) => query
                    .key_condition_expression("pk = :feed AND sk < :after")
                    .expression_attribute_values(":after", s(&after.sort_key())),
                None => query.key_condition_expression("pk = :feed"),
            };
            let output = query.send().await.map_err(backend)?;
            for item in output.items() {
                chirps.push(chirp_from(item)?);
            }
            start = output.last_evaluated_key;
            if chirps.len() >= want || start.is_none() {
                break;
            }
        }
        Ok(page(chirps, limit))
    }

    async fn count(&self, table: &str) -> Result<u64, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", s(COUNTER_PK))
            .key("sk", s(COUNTER_SK))
            .projection_expression("#count")
            .expression_attribute_names("#count", "count")
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let Some(item) = output.item() else {
            return Ok(0); // no chirp was ever saved
        };
        match item.get("count") {
            Some(AttributeValue::N(count)) => count.parse().map_err(|_| corrupt("count", item)),
            _ => Err(corrupt("count", item)),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::{
        TransactionCanceledException, TransactionInProgressException,
    };

    use super::*;

    fn cancelled(codes: &[&str]) -> TransactWriteItemsError {
        let reasons = codes
            .iter()
            .map(|code| CancellationReason::builder().code(*code).build())
            .collect();
        TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .set_cancellation_reasons(Some(reasons))
                .build(),
        )
    }

    #[test]
    fn only_passing_cancellations_are_retried() {
        for (codes, expected) in [
            (&["ConditionalCheckFailed", "None"][..], Failure::Exists),
            (
                &["ConditionalCheckFailed", "TransactionConflict"][..],
                Failure::Exists,
            ),
            (&["None", "TransactionConflict"][..], Failure::Retry),
            (&["TransactionConflict", "None"][..], Failure::Retry),
            (&["ThrottlingError", "ThrottlingError"][..], Failure::Retry),
            (&["None", "ValidationError"][..], Failure::Other),
            (
                &["ItemCollectionSizeLimitExceeded", "None"][..],
                Failure::Other,
            ),
            (&["None", "None"][..], Failure::Other),
            (&[][..], Failure::Other),
        ] {
            assert_eq!(failure(&cancelled(codes)), expected, "{codes:?}");
        }
        let in_progress = TransactWriteItemsError::TransactionInProgressException(
            TransactionInProgressException::builder().build(),
        );
        assert_eq!(failure(&in_progress), Failure::InProgress);
    }

    #[test]
    fn backoffs_double_and_stay_within_their_bounds() {
        for attempt in 1..ATTEMPTS {
            let ceiling = Duration::from_millis(10 << attempt);
            for _ in 0..20 {
                let pause = backoff(attempt);
                assert!(
                    ceiling / 2 <= pause && pause <= ceiling,
                    "{attempt}: {pause:?}"
                );
            }
        }
    }
}
