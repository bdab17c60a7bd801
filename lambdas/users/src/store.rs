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

impl User {
    /// A user as a create stores it: at `lock_version` 1.
    pub fn new(id: &str, name: &str) -> Self {
        User {
            id: id.to_owned(),
            name: name.to_owned(),
            lock_version: 1,
        }
    }
}

type Key = (String, String);

/// The contract of [`UserStore`] over a map, for fast unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    items: Mutex<HashMap<Key, User>>,
}

fn key(table: &str, id: &str) -> Key {
    (table.to_owned(), id.to_owned())
}

/// The stored user, if it is at `expected`; the conflict otherwise.
fn locked<'a>(
    items: &'a mut HashMap<Key, User>,
    table: &str,
    id: &str,
    expected: u64,
) -> Result<&'a mut User, StoreError> {
    match items.get_mut(&key(table, id)) {
        Some(user) if user.lock_version == expected => Ok(user),
        other => Err(StoreError::Conflict {
            current: other.map(|user| user.lock_version),
        }),
    }
}

impl UserStore for MemoryStore {
    async fn get(&self, table: &str, id: &str) -> Result<Option<User>, StoreError> {
        Ok(self.items.lock().unwrap().get(&key(table, id)).cloned())
    }

    async fn create(&self, table: &str, id: &str, name: &str) -> Result<User, StoreError> {
        let mut items = self.items.lock().unwrap();
        if let Some(existing) = items.get(&key(table, id)) {
            return Err(StoreError::Conflict {
                current: Some(existing.lock_version),
            });
        }
        let user = User::new(id, name);
        items.insert(key(table, id), user.clone());
        Ok(user)
    }

    async fn update(
        &self,
        table: &str,
        id: &str,
        name: &str,
        expected: u64,
    ) -> Result<User, StoreError> {
        let mut items = self.items.lock().unwrap();
        let user = locked(&mut items, table, id, expected)?;
        user.name = name.to_owned();
        user.lock_version += 1;
        Ok(user.clone())
    }

    async fn delete(&self, table: &str, id: &str, expected: u64) -> Result<(), StoreError> {
        let mut items = self.items.lock().unwrap();
        locked(&mut items, table, id, expected)?;
        items.remove(&key(table, id));
        Ok(())
    }
}
