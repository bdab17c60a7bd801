//! Where users live: a small trait with optimistic locking in its contract,
//! implemented over DynamoDB ([`crate::dynamo`]) and in memory (unit tests).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use serde::Serialize;

/// A stored user. `lock_version` starts at 1 and grows by one per write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub lock_version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The lock condition failed. `current` is the stored version, `None`
    /// when the item does not exist (for a create it always exists).
    #[error("lock condition failed (current lock_version {current:?})")]
    Conflict { current: Option<u64> },
    /// The store could not answer: network, throttling, a corrupt item.
    #[error("{0}")]
    Backend(String),
}

/// Every write is conditional; none overwrites silently.
pub trait UserStore: Send + Sync {
    fn get(
        &self,
        table: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// Creates `id` at `lock_version` 1, only if it does not exist yet.
    fn create(
        &self,
        table: &str,
        id: &str,
        name: &str,
    ) -> impl Future<Output = Result<User, StoreError>> + Send;

    /// Renames `id`, only if its stored `lock_version` is `expected`; the
    /// result carries `expected + 1`.
    fn update(
        &self,
        table: &str,
        id: &str,
        name: &str,
        expected: u64,
    ) -> impl Future<Output = Result<User, StoreError>> + Send;

    /// Deletes `id`, only if its stored `lock_version` is `expected`.
    fn delete(
        &self,
        table: &str,
        id: &str,
        expected: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The contract of [`UserStore`] over a map, for fast unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    items: Mutex<HashMap<(String, String), User>>,
}

impl MemoryStore {
    /// Checks the lock of an existing item, then applies `write` to it.
    fn conditional<T>(
        &self,
        table: &str,
        id: &str,
        expected: u64,
        write: impl FnOnce(&mut HashMap<(String, String), User>, &mut User) -> T,
    ) -> Result<T, StoreError> {
        let mut items = self.items.lock().unwrap();
        let key = (table.to_owned(), id.to_owned());
        match items.get(&key).cloned() {
            Some(mut user) if user.lock_version == expected => Ok(write(&mut items, &mut user)),
            other => Err(StoreError::Conflict {
                current: other.map(|user| user.lock_version),
            }),
        }
    }
}

impl UserStore for MemoryStore {
    async fn get(&self, table: &str, id: &str) -> Result<Option<User>, StoreError> {
        let items = self.items.lock().unwrap();
        Ok(items.get(&(table.to_owned(), id.to_owned())).cloned())
    }

    async fn create(&self, table: &str, id: &str, name: &str) -> Result<User, StoreError> {
        let mut items = self.items.lock().unwrap();
        let key = (table.to_owned(), id.to_owned());
        if let Some(existing) = items.get(&key) {
            return Err(StoreError::Conflict {
                current: Some(existing.lock_version),
            });
        }
        let user = User {
            id: id.to_owned(),
            name: name.to_owned(),
            lock_version: 1,
        };
        items.insert(key, user.clone());
        Ok(user)
    }

    async fn update(
        &self,
        table: &str,
        id: &str,
        name: &str,
        expected: u64,
    ) -> Result<User, StoreError> {
        self.conditional(table, id, expected, |items, user| {
            user.name = name.to_owned();
            user.lock_version += 1;
            items.insert((table.to_owned(), id.to_owned()), user.clone());
            user.clone()
        })
    }

    async fn delete(&self, table: &str, id: &str, expected: u64) -> Result<(), StoreError> {
        self.conditional(table, id, expected, |items, _| {
            items.remove(&(table.to_owned(), id.to_owned()));
        })
    }
}
