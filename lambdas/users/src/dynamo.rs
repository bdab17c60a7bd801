//! [`UserStore`] over DynamoDB. Items: `id` (S, partition key), `name` (S),
//! `lock_version` (N). Every write carries a condition expression, and a
//! failed one returns the stored item (`ReturnValuesOnConditionCheckFailure`)
//! so the 409 can say which version is current without a second read.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::{
    delete_item::DeleteItemError, put_item::PutItemError, update_item::UpdateItemError,
};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use crate::store::{StoreError, User, UserStore};

type Item = HashMap<String, AttributeValue>;

/// The HTTPS client for the SDK: rustls with ring, the CA roots of the
/// system. Build it once per cold start, with the SDK config.
pub fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The DynamoDB store. Clone the client, not the store: build it once per
/// cold start.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
}

impl DynamoStore {
    pub fn new(client: Client) -> Self {
        DynamoStore { client }
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

fn user_from(item: &Item) -> Result<User, StoreError> {
    let text = |field: &str| match item.get(field) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(corrupt(field, item)),
    };
    Ok(User {
        id: text("id")?,
        name: text("name")?,
        lock_version: lock_version_of(item)?,
    })
}

fn corrupt(field: &str, item: &Item) -> StoreError {
    let id = match item.get("id") {
        Some(AttributeValue::S(id)) => id.as_str(),
        _ => "?",
    };
    StoreError::Backend(format!("item `{id}` has no valid `{field}`"))
}

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

condition_failure!(PutItemError, UpdateItemError, DeleteItemError);

/// Maps a write's SDK error: a failed condition becomes a conflict carrying
/// the stored version (if the item exists), anything else a backend error.
fn failed<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ConditionFailure + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(item) = err.as_service_error().and_then(E::condition_failed) {
        return match item.map(lock_version_of).transpose() {
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
        output.item().map(user_from).transpose()
    }

    async fn create(&self, table: &str, id: &str, name: &str) -> Result<User, StoreError> {
        let user = User::new(id, name);
        self.client
            .put_item()
            .table_name(table)
            .item("id", s(id))
            .item("name", s(name))
            .item("lock_version", n(user.lock_version))
            .condition_expression("attribute_not_exists(id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .map_err(failed)?;
        Ok(user)
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
            .condition_expression("lock_version = :expected")
            .expression_attribute_names("#name", "name")
            .expression_attribute_values(":name", s(name))
            .expression_attribute_values(":next", n(expected + 1))
            .expression_attribute_values(":expected", n(expected))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .map_err(failed)?;
        let item = output
            .attributes()
            .ok_or_else(|| StoreError::Backend("UpdateItem returned no attributes".into()))?;
        user_from(item)
    }

    async fn delete(&self, table: &str, id: &str, expected: u64) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(table)
            .key("id", s(id))
            .condition_expression("lock_version = :expected")
            .expression_attribute_values(":expected", n(expected))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await
            .map_err(failed)?;
        Ok(())
    }
}
