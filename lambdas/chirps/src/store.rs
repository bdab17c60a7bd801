//! Where chirps live: a small trait whose contract is that a chirp and its
//! count are written together or not at all, implemented over DynamoDB
//! ([`crate::dynamo`]) and in memory (unit tests).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

/// A chirp id: 32 lowercase hex digits (128 random bits).
pub const ID_LEN: usize = 32;

/// Whether `id` is a chirp id ([`ID_LEN`] lowercase hex digits).
pub fn is_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where a chirp sorts: by its creation time, then by its id (for chirps of
/// the same millisecond). Ordered as its [`sort_key`](Self::sort_key) is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChirpKey {
    /// Milliseconds since the Unix epoch.
    pub created_millis: u64,
    pub id: String,
}

/// The digits of the creation time in a sort key: enough until the year
/// 33658, and fixed, so the string order is the numeric order.
const MILLIS_DIGITS: usize = 15;

impl ChirpKey {
    /// The key as one string, `<millis, 15 digits>#<id>`: the table's sort
    /// key, and what a cursor encodes.
    pub fn sort_key(&self) -> String {
        format!(
            "{:0width$}#{}",
            self.created_millis,
            self.id,
            width = MILLIS_DIGITS
        )
    }

    /// The inverse of [`sort_key`](Self::sort_key); `None` for anything it
    /// never writes.
    pub fn from_sort_key(sort_key: &str) -> Option<Self> {
        let (millis, id) = sort_key.split_once('#')?;
        if millis.len() != MILLIS_DIGITS || !millis.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !is_id(id) {
            return None;
        }
        Some(ChirpKey {
            created_millis: millis.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// A stored chirp, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chirp {
    pub id: String,
    pub author: String,
    pub text: String,
    /// RFC 3339, UTC, in milliseconds: `2026-01-01T00:00:00.000Z`.
    pub created_at: String,
    /// The same instant, in milliseconds since the Unix epoch (the key).
    #[serde(skip)]
    pub created_millis: u64,
}

impl Chirp {
    pub fn new(id: &str, author: &str, text: &str, created_millis: u64) -> Self {
        Chirp {
            id: id.to_owned(),
            author: author.to_owned(),
            text: text.to_owned(),
            created_at: rfc3339(created_millis),
            created_millis,
        }
    }

    pub fn key(&self) -> ChirpKey {
        ChirpKey {
            created_millis: self.created_millis,
            id: self.id.clone(),
        }
    }
}

/// `millis` since the Unix epoch as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(millis: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

/// One page of the feed, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub chirps: Vec<Chirp>,
    /// The key of the last chirp of the page when older chirps follow it;
    /// `None` on the last page.
    pub next: Option<ChirpKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A chirp with this key exists; nothing was written.
    #[error("a chirp with key `{0}` exists")]
    Exists(String),
    /// The store could not answer: network, throttling, a corrupt item.
    #[error("{0}")]
    Backend(String),
}

/// The feed of one table.
///
/// **The count never drifts.** [`create`](Self::create) saves the chirp
/// and adds one to the count atomically, both or neither, so
/// [`count`](Self::count) is always the number of chirps saved, however
/// many writers race.
pub trait ChirpStore: Send + Sync {
    /// Saves `chirp` and counts it, only if no chirp has its key
    /// ([`StoreError::Exists`] otherwise, and nothing is written).
    fn create(
        &self,
        table: &str,
        chirp: &Chirp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` (at least 1) chirps, newest first: the newest of all,
    /// or those older than `after` (the `next` of the previous page).
    fn list(
        &self,
        table: &str,
        limit: usize,
        after: Option<&ChirpKey>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// How many chirps [`create`](Self::create) saved.
    fn count(&self, table: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[derive(Debug, Default)]
struct Feed {
    chirps: BTreeMap<ChirpKey, Chirp>,
    count: u64,
}

/// The contract of [`ChirpStore`] over a map, for fast unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<HashMap<String, Feed>>,
}

impl ChirpStore for MemoryStore {
    async fn create(&self, table: &str, chirp: &Chirp) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().unwrap();
        let feed = tables.entry(table.to_owned()).or_default();
        let key = chirp.key();
        if feed.chirps.contains_key(&key) {
            return Err(StoreError::Exists(key.sort_key()));
        }
        feed.chirps.insert(key, chirp.clone());
        feed.count += 1;
        Ok(())
    }

    async fn list(
        &self,
        table: &str,
        limit: usize,
        after: Option<&ChirpKey>,
    ) -> Result<Page, StoreError> {
        let tables = self.tables.lock().unwrap();
        let Some(feed) = tables.get(table) else {
            return Ok(Page {
                chirps: Vec::new(),
                next: None,
            });
        };
        let older = match after {
            Some(after) => feed.chirps.range(..after),
            None => feed.chirps.range(..),
        };
        let newest = older.rev().take(limit + 1).map(|(_, chirp)| chirp.clone());
        Ok(page(newest.collect(), limit))
    }

    async fn count(&self, table: &str) -> Result<u64, StoreError> {
        let tables = self.tables.lock().unwrap();
        Ok(tables.get(table).map_or(0, |feed| feed.count))
    }
}

/// The page of `limit` chirps out of `chirps`, the newest `limit + 1` (or
/// fewer: then there are no more): one more than the page says whether
/// older chirps follow, so the last page has no `next`.
pub(crate) fn page(mut chirps: Vec<Chirp>, limit: usize) -> Page {
    let next = if chirps.len() > limit {
        chirps.truncate(limit);
        chirps.last().map(Chirp::key)
    } else {
        None
    };
    Page { chirps, next }
}
