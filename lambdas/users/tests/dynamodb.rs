//! The DynamoDB store against a real DynamoDB API over HTTP: the moto
//! emulator (`testkit::moto`), started on a free loopback port for this
//! test binary.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use testkit::moto::{dynamodb as client, unreachable_dynamodb};
use users::dynamo::DynamoStore;
use users::samples;
use users::store::{StoreError, User, UserStore};
use users::{Tables, Users};

/// A new table, keyed like the real one (`id`, a string).
async fn create_table(client: &Client, name: &str) {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// A function over fresh, empty staging and prod tables.
async fn fresh_users() -> Users<DynamoStore> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let tables: Tables = samples::tables(&format!("users{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let client = client();
    create_table(&client, &tables.staging).await;
    create_table(&client, &tables.prod).await;
    Users {
        store: DynamoStore::new(client),
        tables,
    }
}

fn conflict(result: Result<impl std::fmt::Debug, StoreError>) -> Option<u64> {
    match result {
        Err(StoreError::Conflict { current }) => current,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn every_sample_event_against_dynamodb() {
    samples::check_all(fresh_users).await;
}

#[tokio::test]
async fn create_read_update_delete() {
    let Users { store, tables } = fresh_users().await;
    let table = &tables.staging;
    assert_eq!(store.get(table, "grace001").await.unwrap(), None);

    let created = store.create(table, "grace001", "Grace").await.unwrap();
    let expected = User {
        id: "grace001".into(),
        name: "Grace".into(),
        lock_version: 1,
    };
    assert_eq!(created, expected);
    assert_eq!(store.get(table, "grace001").await.unwrap(), Some(expected));

    let updated = store
        .update(table, "grace001", "Grace Hopper", 1)
        .await
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.lock_version),
        ("Grace Hopper", 2)
    );
    assert_eq!(store.get(table, "grace001").await.unwrap(), Some(updated));

    store.delete(table, "grace001", 2).await.unwrap();
    assert_eq!(store.get(table, "grace001").await.unwrap(), None);
    // The prod table never saw any of it.
    assert_eq!(store.get(&tables.prod, "grace001").await.unwrap(), None);
}

#[tokio::test]
async fn stale_writes_are_conflicts_and_change_nothing() {
    let Users { store, tables } = fresh_users().await;
    let table = &tables.staging;
    store.create(table, "grace001", "Grace").await.unwrap();
    let current = store
        .update(table, "grace001", "Grace Hopper", 1)
        .await
        .unwrap();

    assert_eq!(
        conflict(store.create(table, "grace001", "Imposter").await),
        Some(2)
    );
    assert_eq!(
        conflict(store.update(table, "grace001", "Stale", 1).await),
        Some(2)
    );
    assert_eq!(
        conflict(store.update(table, "grace001", "Future", 3).await),
        Some(2)
    );
    assert_eq!(conflict(store.delete(table, "grace001", 1).await), Some(2));
    assert_eq!(store.get(table, "grace001").await.unwrap(), Some(current));

    // Writes to a user that does not exist: the condition fails with no item.
    assert_eq!(
        conflict(store.update(table, "nobody001", "X", 1).await),
        None
    );
    assert_eq!(conflict(store.delete(table, "nobody001", 1).await), None);
    assert_eq!(store.get(table, "nobody001").await.unwrap(), None);
}

/// A reads v1; B deletes it and creates it again; A's writes at 1 are 409s.
#[tokio::test]
async fn a_version_never_repeats_after_delete_and_recreate_against_dynamodb() {
    samples::check_recreate_after_delete(&fresh_users().await).await;
}

/// A delete leaves the item as a tombstone (`deleted`, the next version, no
/// name), which reads as missing and no write but a create takes.
#[tokio::test]
async fn delete_leaves_a_tombstone_that_reads_as_missing() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let Users { store, tables } = fresh_users().await;
    let table = &tables.staging;
    store.create(table, "grace001", "Grace").await.unwrap();
    store
        .update(table, "grace001", "Grace Hopper", 1)
        .await
        .unwrap();
    store.delete(table, "grace001", 2).await.unwrap();

    let raw = || async {
        client()
            .get_item()
            .table_name(table)
            .key("id", AttributeValue::S("grace001".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .unwrap()
    };
    let tombstone = raw().await;
    assert_eq!(
        tombstone,
        [
            ("id".to_owned(), AttributeValue::S("grace001".into())),
            ("lock_version".to_owned(), AttributeValue::N("3".into())),
            ("deleted".to_owned(), AttributeValue::Bool(true)),
        ]
        .into()
    );
    assert_eq!(store.get(table, "grace001").await.unwrap(), None);
    for version in [1, 2, 3, 4] {
        assert_eq!(
            conflict(store.update(table, "grace001", "Eve", version).await),
            None
        );
        assert_eq!(
            conflict(store.delete(table, "grace001", version).await),
            None
        );
    }
    assert_eq!(raw().await, tombstone);

    let again = store
        .create(table, "grace001", "Grace again")
        .await
        .unwrap();
    assert_eq!(again.lock_version, 4);
    assert_eq!(
        conflict(store.create(table, "grace001", "Imposter").await),
        Some(4)
    );
    assert_eq!(store.get(table, "grace001").await.unwrap(), Some(again));
    assert!(!raw().await.contains_key("deleted"));
}

/// A tombstone without a version cannot be created over (the new user would
/// restart at 1), and a `deleted` that is not `true` is no user: both are
/// backend errors (500s), never a version that repeats or a 404.
#[tokio::test]
async fn corrupt_tombstones_are_backend_errors() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let Users { store, tables } = fresh_users().await;
    let table = &tables.staging;
    let put = |id: &str, attributes: Vec<(&str, AttributeValue)>| {
        let request = client()
            .put_item()
            .table_name(table)
            .item("id", AttributeValue::S(id.into()));
        let request = attributes
            .into_iter()
            .fold(request, |request, (name, value)| request.item(name, value));
        async move { request.send().await.unwrap() }
    };
    put("noversion", vec![("deleted", AttributeValue::Bool(true))]).await;
    assert!(matches!(
        store.create(table, "noversion", "Grace").await,
        Err(StoreError::Backend(_))
    ));
    put(
        "oddflag1",
        vec![
            ("name", AttributeValue::S("Grace".into())),
            ("lock_version", AttributeValue::N("2".into())),
            ("deleted", AttributeValue::S("no".into())),
        ],
    )
    .await;
    assert!(matches!(
        store.get(table, "oddflag1").await,
        Err(StoreError::Backend(_))
    ));
}

/// 8 creates racing for one tombstone: exactly one wins, above the deleted
/// version, and the others conflict with the winner's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_of_a_deleted_user_one_wins() {
    let Users { store, tables } = fresh_users().await;
    let table = tables.staging.clone();
    store.create(&table, "grace001", "Grace").await.unwrap();
    store.delete(&table, "grace001", 1).await.unwrap();

    let creates = (0..8).map(|writer| {
        let (store, table) = (store.clone(), table.clone());
        tokio::spawn(async move {
            store
                .create(&table, "grace001", &format!("writer {writer}"))
                .await
        })
    });
    let mut won = Vec::new();
    for create in creates.collect::<Vec<_>>() {
        match create.await.unwrap() {
            Ok(user) => won.push(user),
            Err(StoreError::Conflict { current }) => assert_eq!(current, Some(3)),
            Err(err) => panic!("{err}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(won[0].lock_version, 3);
    assert_eq!(
        store.get(&table, "grace001").await.unwrap(),
        Some(won.remove(0))
    );
}

/// 8 writers x 25 read-modify-write increments of one counter (kept in the
/// user's name), each retrying on conflict: no increment is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_lose_nothing() {
    const WRITERS: u64 = 8;
    const INCREMENTS: u64 = 25;
    let Users { store, tables } = fresh_users().await;
    let table = tables.staging.clone();
    store.create(&table, "counter1", "0").await.unwrap();

    let writers = (0..WRITERS).map(|_| {
        let (store, table) = (store.clone(), table.clone());
        tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..INCREMENTS {
                loop {
                    let user = store.get(&table, "counter1").await.unwrap().unwrap();
                    let next = user.name.parse::<u64>().unwrap() + 1;
                    match store
                        .update(&table, "counter1", &next.to_string(), user.lock_version)
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(err) => panic!("{err}"),
                    }
                }
            }
            conflicts
        })
    });
    let mut conflicts = 0;
    for writer in writers.collect::<Vec<_>>() {
        conflicts += writer.await.unwrap();
    }

    let counter = store.get(&table, "counter1").await.unwrap().unwrap();
    assert_eq!(counter.name, (WRITERS * INCREMENTS).to_string());
    assert_eq!(counter.lock_version, 1 + WRITERS * INCREMENTS);
    assert!(
        conflicts > 0,
        "8 concurrent writers never conflicted: the test proves nothing"
    );
}

/// A store that cannot reach DynamoDB fails with a backend error (a 500 at
/// the API), never a conflict or a "not found".
#[tokio::test]
async fn unreachable_store_is_a_backend_error() {
    let store = DynamoStore::new(unreachable_dynamodb());
    assert!(matches!(
        store.get("users-staging", "grace001").await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        store.update("users-staging", "grace001", "x", 1).await,
        Err(StoreError::Backend(_))
    ));
}

/// The cold start makes no SDK client: the first request that needs one
/// does ([`api::sdk::Lazy`]).
#[test]
fn the_cold_start_makes_no_sdk_client() {
    testkit::init::assert_init_makes_no_sdk_client(
        env!("CARGO_BIN_EXE_users"),
        &[("USERS_TABLE_STAGING", "t"), ("USERS_TABLE_PROD", "t")],
    );
}
