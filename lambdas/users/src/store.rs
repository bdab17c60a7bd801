//! Where users live: a small trait with optimistic locking in its contract,
//! implemented over DynamoDB ([`crate::dynamo`]) and in memory (unit tests).
//!
//! A delete leaves a tombstone that keeps the id's last version, so that a
//! version never repeats for an id: a writer holding a version it read
//! before a delete can never match the user created after it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use serde::Serialize;

/// A stored user. `lock_version` starts at 1 for an id never seen before
/// and grows by one per write, a delete included (see [`UserStore`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub lock_version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The lock condition failed. `current` is the stored user's version,
    /// `None` when there is no user: the id never existed or was deleted
    /// (a tombstone's version is never reported; for a create there always
    /// is a user).
    #[error("lock condition failed (current lock_version {current:?})")]
    Conflict { current: Option<u64> },
    /// The store could not answer: network, throttling, a corrupt item.
    #[error("{0}")]
    Backend(String),
}

/// Every write is conditional; none overwrites silently.
///
/// **A lock_version never repeats for an id.** Every write of an id
/// (create, update, delete) leaves it at a version above every version it
/// had before. A delete therefore does not forget the id: it leaves a
/// tombstone at the deleted version + 1, which no read returns and no
/// update or delete takes (to them it is a missing user, as if the id never
/// existed), and a create on it goes on from there. So a write conditioned
/// on a version read before a delete can never succeed against the user
/// created after it.
pub trait UserStore: Send + Sync {
    /// The user, `None` if the id never existed or was deleted.
    fn get(
        &self,
        table: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// Creates `id`, only if there is no user `id`: at `lock_version` 1 if
    /// the id never existed, else (it was deleted) at its tombstone's
    /// version + 1. Of creates racing for one id, only one succeeds.
    fn create(
        &self,
        table: &str,
        id: &str,
        name: &str,
    ) -> impl Future<Output = Result<User, StoreError>> + Send;

    /// Renames `id`, only if it is a user whose stored `lock_version` is
    /// `expected`; the result carries `expected + 1`.
    fn update(
        &self,
        table: &str,
        id: &str,
        name: &str,
        expected: u64,
    ) -> impl Future<Output = Result<User, StoreError>> + Send;

    /// Deletes `id`, only if it is a user whose stored `lock_version` is
    /// `expected`, leaving its tombstone at `expected + 1`.
    fn delete(
        &self,
        table: &str,
        id: &str,
        expected: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

type Key = (String, String);

/// What [`MemoryStore`] holds for an id.
#[derive(Debug, Clone)]
enum Item {
    User(User),
    /// A deleted user: only the version it left, for the next create.
    Tombstone {
        lock_version: u64,
    },
}

/// The contract of [`UserStore`] over a map, for fast unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    items: Mutex<HashMap<Key, Item>>,
}

fn key(table: &str, id: &str) -> Key {
    (table.to_owned(), id.to_owned())
}

/// The stored user, if it is at `expected`; the conflict otherwise (with no
/// version for a missing or deleted user).
fn locked<'a>(
    items: &'a mut HashMap<Key, Item>,
    table: &str,
    id: &str,
    expected: u64,
) -> Result<&'a mut User, StoreError> {
    match items.get_mut(&key(table, id)) {
        Some(Item::User(user)) => match user.lock_version {
            current if current == expected => Ok(user),
            current => Err(StoreError::Conflict {
                current: Some(current),
            }),
        },
        None | Some(Item::Tombstone { .. }) => Err(StoreError::Conflict { current: None }),
    }
}

impl UserStore for MemoryStore {
    async fn get(&self, table: &str, id: &str) -> Result<Option<User>, StoreError> {
        Ok(match self.items.lock().unwrap().get(&key(table, id)) {
            Some(Item::User(user)) => Some(user.clone()),
            None | Some(Item::Tombstone { .. }) => None,
        })
    }

    async fn create(&self, table: &str, id: &str, name: &str) -> Result<User, StoreError> {
        let mut items = self.items.lock().unwrap();
        let lock_version = match items.get(&key(table, id)) {
            None => 1,
            Some(Item::Tombstone { lock_version }) => lock_version + 1,
            Some(Item::User(existing)) => {
                return Err(StoreError::Conflict {
                    current: Some(existing.lock_version),
                });
            }
        };
        let user = User {
            id: id.to_owned(),
            name: name.to_owned(),
            lock_version,
        };
        items.insert(key(table, id), Item::User(user.clone()));
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
        let tombstone = Item::Tombstone {
            lock_version: expected + 1,
        };
        items.insert(key(table, id), tombstone);
        Ok(())
    }
}
