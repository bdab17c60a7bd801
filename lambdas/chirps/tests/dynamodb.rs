//! The DynamoDB store against a real DynamoDB API over HTTP: the moto
//! emulator (`testkit::moto`), started on a free loopback port for this
//! test binary.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use chirps::dynamo::DynamoStore;
use chirps::samples::{self, envelope, post};
use chirps::store::{Chirp, ChirpKey, ChirpStore, StoreError};
use chirps::{Chirps, Tables};
use serde_json::json;
use testkit::moto::{dynamodb as client, unreachable_dynamodb};

type Item = HashMap<String, AttributeValue>;

/// A new table, keyed like the real one (`pk` and `sk`, strings).
async fn create_table(client: &Client, name: &str) {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, key_type| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .unwrap();
}

/// A function over fresh, empty staging and prod tables.
async fn fresh_chirps() -> Chirps<DynamoStore> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let tables: Tables =
        samples::tables(&format!("chirps{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let client = client();
    create_table(&client, &tables.staging).await;
    create_table(&client, &tables.prod).await;
    Chirps {
        store: DynamoStore::new(client),
        tables,
    }
}

/// Every item of `table` as DynamoDB holds it, in key order.
async fn raw_items(table: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let output = client()
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(output.items().iter().cloned());
        start = output.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    let key = |item: &Item| {
        let text = |name: &str| match &item[name] {
            AttributeValue::S(value) => value.clone(),
            other => panic!("{name} is {other:?}"),
        };
        (text("pk"), text("sk"))
    };
    items.sort_by_key(key);
    items
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

#[tokio::test]
async fn every_sample_event_against_dynamodb() {
    samples::check_all(fresh_chirps).await;
}

#[tokio::test]
async fn every_page_size_lists_each_chirp_once_newest_first_against_dynamodb() {
    samples::check_pagination(&fresh_chirps().await).await;
}

/// The items a POST writes: the chirp in the feed partition under its sort
/// key, and the counter, in the same table; nothing in prod.
#[tokio::test]
async fn a_post_writes_the_chirp_and_the_counter() {
    let chirps = fresh_chirps().await;
    let body = post("ada", "Hello 🐦");
    let (status, chirp) =
        samples::call(&chirps, json!(envelope("POST", "/chirps", &body, &[]))).await;
    assert_eq!(status, 200, "{chirp}");
    let text = |field: &str| chirp[field].as_str().unwrap().to_owned();
    let created = humantime::parse_rfc3339(&text("created_at")).unwrap();
    let key = ChirpKey {
        created_millis: created
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        id: text("id"),
    };
    let expected_chirp: Item = [
        ("pk", s("feed")),
        ("sk", s(&key.sort_key())),
        ("id", s(&text("id"))),
        ("author", s("ada")),
        ("text", s("Hello 🐦")),
        ("created_at", s(&text("created_at"))),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let counter: Item = [
        ("pk", s("counter")),
        ("sk", s("chirps")),
        ("count", AttributeValue::N("1".into())),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    assert_eq!(
        raw_items(&chirps.tables.staging).await,
        vec![counter, expected_chirp]
    );
    assert_eq!(raw_items(&chirps.tables.prod).await, vec![]);
    let (status, count) =
        samples::call(&chirps, json!(envelope("GET", "/chirps/count", "", &[]))).await;
    assert_eq!((status, count), (200, json!({"count": 1})));
}

/// The transaction is all or nothing: when the Put's condition fails (a
/// chirp with that key exists), the counter's ADD is not applied either.
#[tokio::test]
async fn a_chirp_whose_key_exists_is_neither_saved_nor_counted() {
    let Chirps { store, tables } = fresh_chirps().await;
    let table = &tables.staging;
    samples::seed(&store, table).await;
    let before = raw_items(table).await;
    let mut same_key: Chirp = samples::fixture()[1].clone();
    same_key.author = "eve".into();
    same_key.text = "overwritten".into();
    assert!(matches!(
        store.create(table, &same_key).await,
        Err(StoreError::Exists(sort_key)) if sort_key == same_key.key().sort_key()
    ));
    assert_eq!(raw_items(table).await, before);
    assert_eq!(store.count(table).await.unwrap(), 3);
}

/// Every refused request leaves both tables exactly as they were, item
/// for item.
#[tokio::test]
async fn refused_requests_leave_the_tables_as_they_were() {
    let chirps = fresh_chirps().await;
    samples::seed(&chirps.store, &chirps.tables.staging).await;
    let before = raw_items(&chirps.tables.staging).await;
    assert_eq!(before.len(), 4, "3 chirps and the counter");
    for (status, envelope) in samples::refused_requests() {
        let (got, body) = samples::call(&chirps, json!(envelope)).await;
        assert_eq!(got, status, "{envelope:?}: {body}");
        assert_eq!(
            raw_items(&chirps.tables.staging).await,
            before,
            "{envelope:?} changed staging"
        );
        assert_eq!(
            raw_items(&chirps.tables.prod).await,
            vec![],
            "{envelope:?} changed prod"
        );
    }
}

/// 8 writers x 25 chirps at once, through the handler: the count is exactly
/// 200, and following the cursor lists exactly those 200, each once,
/// newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_are_all_counted_and_listed() {
    const WRITERS: usize = 8;
    const CHIRPS: usize = 25;
    let chirps = std::sync::Arc::new(fresh_chirps().await);
    let writers = (0..WRITERS).map(|writer| {
        let chirps = chirps.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..CHIRPS {
                let body = post(&format!("writer{writer}"), &format!("chirp {n}"));
                let (status, chirp) =
                    samples::call(&*chirps, json!(envelope("POST", "/chirps", &body, &[]))).await;
                assert_eq!(status, 200, "{chirp}");
                ids.push(chirp["id"].as_str().unwrap().to_owned());
            }
            ids
        })
    });
    let mut posted = BTreeSet::new();
    for writer in writers.collect::<Vec<_>>() {
        posted.extend(writer.await.unwrap());
    }
    assert_eq!(posted.len(), WRITERS * CHIRPS);

    let (status, count) =
        samples::call(&*chirps, json!(envelope("GET", "/chirps/count", "", &[]))).await;
    assert_eq!((status, count), (200, json!({ "count": WRITERS * CHIRPS })));

    // 7 a page: 29 pages, the last of them with 4.
    let (listed, pages) = samples::read_all_pages(&chirps, 7).await;
    assert_eq!(pages, (WRITERS * CHIRPS).div_ceil(7));
    assert_eq!(listed.len(), WRITERS * CHIRPS);
    let ids: BTreeSet<String> = listed
        .iter()
        .map(|chirp| chirp["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, posted, "listed other chirps than those posted");
    let keys: Vec<(String, String)> = listed
        .iter()
        .map(|chirp| {
            let field = |name: &str| chirp[name].as_str().unwrap().to_owned();
            (field("created_at"), field("id"))
        })
        .collect();
    for pair in keys.windows(2) {
        // RFC 3339 in UTC to the millisecond sorts as its instant does.
        assert!(pair[0] > pair[1], "not newest first: {pair:?}");
    }
}

/// A store that cannot reach DynamoDB fails with a backend error (a 500 at
/// the API), never "exists" or an empty feed.
#[tokio::test]
async fn unreachable_store_is_a_backend_error() {
    let store = DynamoStore::new(unreachable_dynamodb());
    let chirp = &samples::fixture()[0];
    assert!(matches!(
        store.create("chirps-staging", chirp).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        store.list("chirps-staging", 20, None).await,
        Err(StoreError::Backend(_))
    ));
    assert!(matches!(
        store.count("chirps-staging").await,
        Err(StoreError::Backend(_))
    ));
}

/// Items the store never writes are backend errors (500s), never chirps or
/// a count of zero.
#[tokio::test]
async fn corrupt_items_are_backend_errors() {
    let Chirps { store, tables } = fresh_chirps().await;
    let table = &tables.staging;
    let put = |attributes: Vec<(&str, AttributeValue)>| {
        let request = client().put_item().table_name(table);
        let request = attributes
            .into_iter()
            .fold(request, |request, (name, value)| request.item(name, value));
        async move { request.send().await.unwrap() }
    };
    put(vec![
        ("pk", s("counter")),
        ("sk", s("chirps")),
        ("count", s("three")),
    ])
    .await;
    assert!(matches!(
        store.count(table).await,
        Err(StoreError::Backend(_))
    ));
    put(vec![
        ("pk", s("feed")),
        ("sk", s("not a sort key")),
        ("id", s("x")),
        ("author", s("ada")),
        ("text", s("hi")),
        ("created_at", s("2026-01-01T00:00:00.000Z")),
    ])
    .await;
    assert!(matches!(
        store.list(table, 20, None).await,
        Err(StoreError::Backend(_))
    ));
}

/// The cold start makes no SDK client: the first request that needs one
/// does ([`api::sdk::Lazy`]).
#[test]
fn the_cold_start_makes_no_sdk_client() {
    testkit::init::assert_init_makes_no_sdk_client(
        env!("CARGO_BIN_EXE_chirps"),
        &[("CHIRPS_TABLE_STAGING", "t"), ("CHIRPS_TABLE_PROD", "t")],
    );
}
