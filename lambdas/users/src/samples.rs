//! The store state the `events/users` samples are written against, and the
//! loop that runs every sample through the handler. Shared by the unit tests
//! (in-memory store) and the DynamoDB tests (the emulator over HTTP).

use std::future::Future;

use lambda_runtime::{Context, LambdaEvent};

use crate::store::UserStore;
use crate::{Tables, Users};

/// The user every sample may rely on: `ada00001`, "Ada Lovelace", at
/// `lock_version` 3, in the staging table. Nothing else exists.
pub const FIXTURE_ID: &str = "ada00001";

/// Brings an empty `table` to the fixture state, through the store's own
/// writes (a create and two updates).
pub async fn seed<S: UserStore>(store: &S, table: &str) {
    store.create(table, FIXTURE_ID, "Ada").await.unwrap();
    store.update(table, FIXTURE_ID, "Ada L.", 1).await.unwrap();
    store
        .update(table, FIXTURE_ID, "Ada Lovelace", 2)
        .await
        .unwrap();
}

/// Runs every `events/users` sample against a fresh, seeded function from
/// `fresh` and checks its response.
pub async fn check_all<S, F, Fut>(mut fresh: F)
where
    S: UserStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = Users<S>>,
{
    for sample in api::testing::samples("users") {
        let users = fresh().await;
        seed(&users.store, &users.tables.staging).await;
        let handler = |request| users.handle(request);
        let event = LambdaEvent::new(sample.event.clone(), Context::default());
        sample.check(api::testing::response(api::invoke(&handler, event).await));
    }
}

/// Table names for tests: `<prefix>-staging` and `<prefix>-prod`.
pub fn tables(prefix: &str) -> Tables {
    Tables {
        staging: format!("{prefix}-staging"),
        prod: format!("{prefix}-prod"),
    }
}
