//! [`UserStore`] over DynamoDB. Items: `id` (S, partition key), `name` (S),
//! `lock_version` (N). A delete leaves a tombstone instead: `id`,
//! `lock_version` (the deleted version + 1) and `deleted` (BOOL true), no
//! `name`; no read returns it as a user. Every write carries a condition
//! expression, and a failed one returns the stored item
//! (`ReturnValuesOnConditionCheckFailure`) so the 409 can say which version
//! is current without a second read (none for a tombstone: to every write
//! but a create it is a missing user).

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use crate::store::{StoreError, User, UserStore};

type Item = HashMap<String, AttributeValue>;

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

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn lock_version_of(item: &Item) -> Result<u64, StoreError> {
    match item.get("lock_version") {
        Some(AttributeValue::N(number)) => {
            number.parse().map_err(|_| corrupt("lock_version", item))
        }
        _ => Err(corrupt("lock_version", item)),
    }
}

/// Whether `item` is a deleted user's tombstone (`deleted` is true; no
/// other value is ever written).
fn is_tombstone(item: &Item) -> Result<bool, StoreError> {
    match item.get("deleted") {
        None => Ok(false),
        Some(AttributeValue::Bool(true)) => Ok(true),
        Some(_) => Err(corrupt("deleted", item)),
    }
}

/// The user `item` holds, `None` for a tombstone.
fn user_from(item: &Item) -> Result<Option<User>, StoreError> {
    if is_tombstone(item)? {
        return Ok(None);
    }
    let text = |field: &str| match item.get(field) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(corrupt(field, item)),
    };
    Ok(Some(User {
        id: text("id")?,
        name: text("name")?,
        lock_version: lock_version_of(item)?,
    }))
}

/// The user a successful create or update returns (`ReturnValue::AllNew`).
fn written_user(operation: &str, item: Option<&Item>) -> Result<User, StoreError> {
    let item =
        item.ok_or_else(|| StoreError::Backend(format!("{operation} returned no attributes")))?;
    user_from(item)?.ok_or_else(|| corrupt("name", item))
}

/// The version a conflict reports for the stored `item`: the user's, or
/// `None` for a tombstone, as for a missing item (a tombstone's version must
/// still be valid: a corrupt one is an error, not a missing user).
fn current_version(item: &Item) -> Result<Option<u64>, StoreError> {
    let version = lock_version_of(item)?;
    Ok((!is_tombstone(item)?).then_some(version))
}

fn corrupt(field: &str, item: &Item) -> StoreError {
    let id = match item.get("id") {
        Some(AttributeValue::S(id)) => id.as_str(),
        _ => "?",
    };
    StoreError::Backend(format!("item `{id}` has no valid `{field}`"))
}

/// The condition of an update or delete: the item is a user (not a
/// tombstone, which matches no version a client may send) at `:expected`.
const LIVE_AT_EXPECTED: &str = "lock_version = :expected AND attribute_not_exists(deleted)";

/// The operation errors that can be a failed condition expression.
trait ConditionFailure {
    /// `Some(stored item, if any)` when the condition failed.
    fn condition_failed(&self) -> Option<Option<&Item>>;
}

macro_rules! condition_failure {
    ($($error:ty),*) => {$(
        impl ConditionFailure for $error {
            fn condition_failed(&self) -> Option<Option<&Item>> {
                match self {
                    Self::ConditionalCheckFailedException(failure) => Some(failure.item()),
                    _ => None,
                }
            }
        }
    )*};
}

condition_failure!(UpdateItemError);

/// Maps a write's SDK error: a failed condition becomes a conflict carrying
/// the stored version (if the item is a user), anything else a backend
/// error.
fn failed<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ConditionFailure + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(item) = err.as_service_error().and_then(E::condition_failed) {
        return match item.map(current_version).transpose().map(Option::flatten) {
            Ok(current) => StoreError::Conflict { current },
            Err(err) => err,
        };
    }
    backend(err)
}

fn backend(err: impl std::error::Error) -> StoreError {
    StoreError::Backend(aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string())
}

impl UserStore for DynamoStore {
    async fn get(&self, table: &str, id: &str) -> Result<Option<User>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(output.item().map(user_from).transpose()?.flatten())
    }

    /// One conditional write, for a new id and a tombstone alike: the
    /// condition admits no item or a tombstone, and the new version is
    /// computed from the stored one in the same write (1 where there is
    /// none), so it is the tombstone's + 1 by construction. DynamoDB
    /// evaluates the condition and applies the update atomically, so of two
    /// racing creates the second finds a user (no `deleted`) and conflicts
    /// with its version. A tombstone without a version is refused (it would
    /// restart at 1): the conflict then fails to read it, a backend error.
    async fn create(&self, table: &str, id: &str, name: &str) -> Result<User, StoreError> {
        let output = self
            .client
            .update_item()
            .table_name(table)
            .key("id", s(id))
            .update_expression(
                "SET #name = :name, lock_version = if_not_exists(lock_version, :zero) + :one \
                 REMOVE deleted",
            )
            .condition_expression(
                "attribute_not_exists(id) OR (deleted = :true AND attribute_exists(lock_version))",
            )
            .expression_attribute_names("#name", "name")
            .expression_attribute_values(":name", s(name))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .map_err(failed)?;
        written_user("UpdateItem (create)", output.attributes())
    }

    async fn update(
        &self,
        table: &str,
        id: &str,
        name: &str,
        expected: u64,
    ) -> Result<User, StoreError> {
        let output = self
            .client
            .update_item()
            .table_name(table)
            .key("id", s(id))
            .update_expression("SET #name = :name, lock_version = :next")
            .condition_expression(LIVE_AT_EXPECTED)
            .expression_attribute_names("#name", "name")
            .expression_attribute_values(":name", s(name))
            .expression_attribute_values(":next", n(expected + 1))
            .expression_attribute_values(":expected", n(expected))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .map_err(failed)?;
        written_user("UpdateItem", output.attributes())
    }

    /// Turns the user into its tombstone, in place: the item keeps the id's
    /// last version for the next create (see [`UserStore`]).
    async fn delete(&self, table: &str, id: &str, expected: u64) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(table)
            .key("id", s(id))
            .update_expression("SET deleted = :true, lock_version = :next REMOVE #name")
            .condition_expression(LIVE_AT_EXPECTED)
            .expression_attribute_names("#name", "name")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":next", n(expected + 1))
            .expression_attribute_values(":expected", n(expected))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .map_err(failed)?;
        Ok(())
    }
}
