//! The store state the `events/users` samples are written against, the
//! loop that runs every sample through the handler, and the scenarios of the
//! [`UserStore`] contract that take more than one request. Shared by the unit
//! tests (in-memory store) and the DynamoDB tests (the emulator over HTTP).

use std::future::Future;

use api::Envelope;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use crate::store::{User, UserStore};
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

/// Requests through the handler, as the samples run, about one user of the
/// staging table.
struct Client<'a, S> {
    users: &'a Users<S>,
    id: &'a str,
}

impl<S: UserStore> Client<'_, S> {
    /// `method` (`POST` with `body`, `DELETE` with `?lock_version=<version>`)
    /// must answer `status` with at least the fields of `want`.
    async fn expect(
        &self,
        method: &str,
        body: &str,
        version: Option<u64>,
        status: u16,
        want: Value,
    ) {
        let envelope = Envelope {
            method: method.into(),
            resource: "/user/{id}".into(),
            path: [("id".to_owned(), self.id.to_owned())].into(),
            query: version
                .map(|version| ("lock_version".to_owned(), version.to_string()))
                .into_iter()
                .collect(),
            body: body.into(),
            stage: "staging".into(),
            request_id: "contract".into(),
        };
        let request = format!("{method} {body} lock_version={version:?}");
        let handler = |request| self.users.handle(request);
        let event = LambdaEvent::new(json!(envelope), Context::default());
        let (got, answer) = api::testing::response(api::invoke(&handler, event).await);
        assert_eq!(got, status, "{request}: {answer}");
        if let Err(field) = api::testing::contains(&want, &answer) {
            panic!("{request}: field `{field}` differs: expected {want}, got {answer}");
        }
    }

    /// `POST` of `{"name": name}`, with `"lock_version": version` if any.
    async fn post(&self, name: &str, version: Option<u64>, status: u16, want: Value) {
        let body = match version {
            None => json!({ "name": name }),
            Some(version) => json!({ "name": name, "lock_version": version }),
        };
        self.expect("POST", &body.to_string(), version, status, want)
            .await;
    }

    async fn delete(&self, version: u64, status: u16, want: Value) {
        self.expect("DELETE", "", Some(version), status, want).await;
    }
}

/// "A lock_version never repeats for an id", through the handler of a
/// function over an empty staging table: A reads a user at 1; B deletes it
/// and creates it again; every write A sends with a version it read is stale
/// (409 naming B's version) and B's user survives. Between the delete and
/// the new create the id answers as one that never existed (404 to a read,
/// an update and a delete at any version); the new user starts at 3, above
/// the deleted 1 and the tombstone's 2, and a second round goes on from 3.
pub async fn check_recreate_after_delete<S: UserStore>(users: &Users<S>) {
    const ID: &str = "lin00001";
    let client = Client { users, id: ID };
    let table = &users.tables.staging;
    let user = |name: &str, lock_version: u64| User {
        id: ID.into(),
        name: name.into(),
        lock_version,
    };
    let not_found = || json!({ "message": format!("user `{ID}` not found") });
    let deleted = || json!({ "id": ID, "deleted": true });
    let stale = |version: u64, current: u64| {
        let message =
            format!("lock_version {version} of user `{ID}` is stale: read it again and retry");
        json!({ "message": message, "current_lock_version": current })
    };

    // A creates and reads the user at 1.
    client.post("Ann", None, 200, json!(user("Ann", 1))).await;
    client
        .expect("GET", "", None, 200, json!(user("Ann", 1)))
        .await;

    // B deletes it: from now on the id is missing, at every version.
    client.delete(1, 200, deleted()).await;
    assert_eq!(users.store.get(table, ID).await.unwrap(), None);
    client.expect("GET", "", None, 404, not_found()).await;
    for version in [1, 2, 3] {
        client.post("Eve", Some(version), 404, not_found()).await;
        client.delete(version, 404, not_found()).await;
    }
    assert_eq!(users.store.get(table, ID).await.unwrap(), None);

    // B creates it again: above every version the id had.
    client.post("Bob", None, 200, json!(user("Bob", 3))).await;

    // A's writes with what it read are stale, and change nothing.
    for version in [1, 2] {
        client
            .post("Ann", Some(version), 409, stale(version, 3))
            .await;
        client.delete(version, 409, stale(version, 3)).await;
    }
    let exists = json!({ "current_lock_version": 3 });
    client.post("Ann", None, 409, exists).await;
    client
        .expect("GET", "", None, 200, json!(user("Bob", 3)))
        .await;
    let stored = users.store.get(table, ID).await.unwrap();
    assert_eq!(stored, Some(user("Bob", 3)));

    // A second round goes on from there: 3 deleted, 4 the tombstone, 5.
    client.delete(3, 200, deleted()).await;
    client.post("Cy", None, 200, json!(user("Cy", 5))).await;
    for version in [1, 3, 4] {
        client
            .post("Eve", Some(version), 409, stale(version, 5))
            .await;
    }
    let stored = users.store.get(table, ID).await.unwrap();
    assert_eq!(stored, Some(user("Cy", 5)));
    // The prod table never saw any of it.
    assert_eq!(users.store.get(&users.tables.prod, ID).await.unwrap(), None);
}
