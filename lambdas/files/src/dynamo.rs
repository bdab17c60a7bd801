//! [`FileStore`] over DynamoDB: one table per stage, keyed by `id` (S,
//! partition key). Items: `id`, `name`, `content_type`, `created_at` (S)
//! and `size` (N).
//!
//! No write is unconditional: a create is a `PutItem` conditioned on
//! `attribute_not_exists(id)`, a delete a `DeleteItem` conditioned on
//! `attribute_exists(id)` (a failed condition is "no record", not an error).
//! Reads are strongly consistent: a record is there as soon as its `POST`
//! answered.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::store::{FileRecord, FileStore, StoreError};

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

fn corrupt(field: &str, item: &Item) -> StoreError {
    let id = match item.get("id") {
        Some(AttributeValue::S(id)) => id.as_str(),
        _ => "?",
    };
    StoreError::Backend(format!("item `{id}` has no valid `{field}`"))
}

/// The record an item holds.
fn record_from(item: &Item) -> Result<FileRecord, StoreError> {
    let text = |field: &str| match item.get(field) {
        Some(AttributeValue::S(value)) => Ok(value.clone()),
        _ => Err(corrupt(field, item)),
    };
    let size = match item.get("size") {
        Some(AttributeValue::N(size)) => size.parse().map_err(|_| corrupt("size", item))?,
        _ => return Err(corrupt("size", item)),
    };
    Ok(FileRecord {
        id: text("id")?,
        name: text("name")?,
        content_type: text("content_type")?,
        size,
        created_at: text("created_at")?,
    })
}

fn backend(err: impl std::error::Error) -> StoreError {
    StoreError::Backend(aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string())
}

impl FileStore for DynamoStore {
    async fn create(&self, table: &str, record: &FileRecord) -> Result<(), StoreError> {
        let sent = self
            .client
            .put_item()
            .table_name(table)
            .item("id", s(&record.id))
            .item("name", s(&record.name))
            .item("content_type", s(&record.content_type))
            .item("size", AttributeValue::N(record.size.to_string()))
            .item("created_at", s(&record.created_at))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    Err(StoreError::Exists(record.id.clone()))
                }
                _ => Err(backend(err)),
            },
        }
    }

    async fn get(&self, table: &str, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(table)
            .key("id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        output.item().map(record_from).transpose()
    }

    async fn delete(&self, table: &str, id: &str) -> Result<bool, StoreError> {
        let sent = self
            .client
            .delete_item()
            .table_name(table)
            .key("id", s(id))
            .condition_expression("attribute_exists(id)")
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                Some(DeleteItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(backend(err)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(fields: &[(&str, AttributeValue)]) -> Item {
        fields
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    #[test]
    fn a_record_round_trips_and_a_corrupt_item_is_an_error() {
        let good = [
            ("id", s("00000000000000000000000000000001")),
            ("name", s("a/../b ✓")),
            ("content_type", s("text/plain")),
            ("size", AttributeValue::N("5".into())),
            ("created_at", s("2026-01-01T00:00:00.000Z")),
        ];
        let record = record_from(&item(&good)).unwrap();
        assert_eq!(record.name, "a/../b ✓");
        assert_eq!(record.size, 5);
        for (field, bad) in [
            ("size", AttributeValue::N("-1".into())),
            ("size", s("5")),
            ("name", AttributeValue::N("1".into())),
        ] {
            let mut fields = good.to_vec();
            fields.retain(|(name, _)| *name != field);
            fields.push((field, bad));
            let err = record_from(&item(&fields)).unwrap_err();
            assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
        }
    }
}
