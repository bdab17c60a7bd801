//! The store state the `events/chirps` samples are written against, the
//! loop that runs every sample through the handler, and the scenarios of the
//! [`ChirpStore`] contract that take more than one request. Shared by the
//! unit tests (in-memory store) and the DynamoDB tests (the emulator over
//! HTTP).

use std::future::Future;

use api::Envelope;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use crate::store::{Chirp, ChirpStore};
use crate::{Chirps, Tables};

/// The chirps every sample may rely on, oldest first, in the staging table
/// (so its count is 3): one a second from 2026-01-01T00:00:00.000Z, with
/// the ids `0…01`, `0…02` and `0…03`. The prod table is empty.
pub fn fixture() -> Vec<Chirp> {
    const NEW_YEAR_2026: u64 = 1_767_225_600_000;
    [
        ("ada", "Hello, world!"),
        ("grace_hopper", r#"It's "a bug", not a feature."#),
        ("linus-t", "Ünïcödé ✓ 🐦"),
    ]
    .into_iter()
    .zip(1u64..)
    .map(|((author, text), n)| {
        Chirp::new(
            &format!("{n:032x}"),
            author,
            text,
            NEW_YEAR_2026 + (n - 1) * 1000,
        )
    })
    .collect()
}

/// Brings an empty `table` to the fixture state, through the store's own
/// writes.
pub async fn seed<S: ChirpStore>(store: &S, table: &str) {
    for chirp in fixture() {
        store.create(table, &chirp).await.unwrap();
    }
}

/// Table names for tests: `<prefix>-staging` and `<prefix>-prod`.
pub fn tables(prefix: &str) -> Tables {
    Tables {
        staging: format!("{prefix}-staging"),
        prod: format!("{prefix}-prod"),
    }
}

/// What a table holds, as the store reads it: every chirp, newest first,
/// and the count.
pub async fn contents<S: ChirpStore>(store: &S, table: &str) -> (Vec<Chirp>, u64) {
    let mut chirps = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(table, crate::MAX_LIMIT, after.as_ref())
            .await
            .unwrap();
        chirps.extend(page.chirps);
        match page.next {
            None => break,
            next => after = next,
        }
    }
    (chirps, store.count(table).await.unwrap())
}

/// Runs `envelope` through the handler as the runtime does: the status and
/// body a client sees.
pub async fn call<S: ChirpStore>(chirps: &Chirps<S>, envelope: Value) -> (u16, Value) {
    let handler = |request| chirps.handle(request);
    let event = LambdaEvent::new(envelope, Context::default());
    api::testing::response(api::invoke(&handler, event).await)
}

/// Runs every `events/chirps` sample against a fresh, seeded function from
/// `fresh` and checks its response; a sample answered with an error must
/// leave both tables as they were.
pub async fn check_all<S, F, Fut>(mut fresh: F)
where
    S: ChirpStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = Chirps<S>>,
{
    for sample in api::testing::samples("chirps") {
        let chirps = fresh().await;
        seed(&chirps.store, &chirps.tables.staging).await;
        let before = both_tables(&chirps).await;
        sample.check(call(&chirps, sample.event.clone()).await);
        if sample.expected.status != 200 {
            let after = both_tables(&chirps).await;
            assert_eq!(after, before, "{}: a refusal wrote", sample.path.display());
        }
    }
}

async fn both_tables<S: ChirpStore>(chirps: &Chirps<S>) -> [(Vec<Chirp>, u64); 2] {
    let Tables { staging, prod } = &chirps.tables;
    [
        contents(&chirps.store, staging).await,
        contents(&chirps.store, prod).await,
    ]
}

/// A request on staging.
pub fn envelope(method: &str, resource: &str, body: &str, query: &[(&str, &str)]) -> Envelope {
    Envelope {
        method: method.into(),
        resource: resource.into(),
        path: Default::default(),
        query: query
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        body: body.into(),
        stage: "staging".into(),
        request_id: "contract".into(),
    }
}

/// A `POST /chirps` body.
pub fn post(author: &str, text: &str) -> String {
    json!({ "author": author, "text": text }).to_string()
}

/// A `GET /chirps` envelope on staging with this query.
pub fn list_request(query: &[(&str, &str)]) -> Value {
    json!(envelope("GET", "/chirps", "", query))
}

/// Requests every one of which must be refused, with that status, leaving
/// both tables as they were: each way a `POST` can be invalid, a bad
/// `limit` and `cursor`, an unknown stage and route.
pub fn refused_requests() -> Vec<(u16, Envelope)> {
    let post_body = |body: &str| envelope("POST", "/chirps", body, &[]);
    let mut unknown_stage = post_body(&post("ada", "hi"));
    unknown_stage.stage = "qa".into();
    let mut prod_invalid = post_body(&post("ada", ""));
    prod_invalid.stage = "prod".into();
    vec![
        (400, post_body("")),
        (400, post_body(r#"{"author": "ada", "text": "#)),
        (400, post_body(r#"["ada", "hi"]"#)),
        (400, post_body(r#"{"author": "ada"}"#)),
        (400, post_body(r#"{"text": "hi"}"#)),
        (
            400,
            post_body(r#"{"author": "ada", "text": "hi", "id": "x"}"#),
        ),
        (
            400,
            post_body(r#"{"author": "ada", "author": "eve", "text": "hi"}"#),
        ),
        (400, post_body(r#"{"author": "ada", "text": 7}"#)),
        (400, post_body(&post("", "hi"))),
        (400, post_body(&post("ada lovelace", "hi"))),
        (400, post_body(&post(&"a".repeat(65), "hi"))),
        (400, post_body(&post("ada", ""))),
        (400, post_body(&post("ada", " \n\t"))),
        (400, post_body(&post("ada", &"x".repeat(281)))),
        (
            400,
            envelope("POST", "/chirps", &post("ada", "hi"), &[("x", "1")]),
        ),
        (400, prod_invalid),
        (400, unknown_stage),
        (404, envelope("PUT", "/chirps", &post("ada", "hi"), &[])),
        (404, envelope("DELETE", "/chirps", "", &[])),
        (400, envelope("GET", "/chirps", "", &[("limit", "0")])),
        (400, envelope("GET", "/chirps", "", &[("limit", "101")])),
        (400, envelope("GET", "/chirps", "", &[("cursor", "nope")])),
        (400, envelope("GET", "/chirps/count", "", &[("x", "1")])),
    ]
}

/// Every page of `GET /chirps?limit=<limit>` on staging, following
/// `next_cursor` until it is `null`: the chirps of all pages, in order,
/// and how many pages there were.
pub async fn read_all_pages<S: ChirpStore>(
    chirps: &Chirps<S>,
    limit: usize,
) -> (Vec<Value>, usize) {
    let limit = limit.to_string();
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let mut query = vec![("limit", limit.as_str())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor));
        }
        let (status, body) = call(chirps, list_request(&query)).await;
        assert_eq!(status, 200, "{query:?}: {body}");
        pages += 1;
        let page = body["chirps"].as_array().unwrap();
        assert!(page.len() <= limit.parse().unwrap(), "{body}");
        all.extend(page.iter().cloned());
        match &body["next_cursor"] {
            Value::Null => break,
            Value::String(next) => {
                assert!(!page.is_empty(), "a cursor after an empty page: {body}");
                cursor = Some(next.clone());
            }
            other => panic!("next_cursor {other}"),
        }
    }
    (all, pages)
}

/// Over the seeded fixture, through the handler: every page size from 1
/// to 4 lists the three chirps exactly once, newest first, in as many
/// pages as it takes (no empty last page: a full page is the last when no
/// older chirp follows it).
pub async fn check_pagination<S: ChirpStore>(chirps: &Chirps<S>) {
    seed(&chirps.store, &chirps.tables.staging).await;
    let newest_first: Vec<Value> = fixture().iter().rev().map(|chirp| json!(chirp)).collect();
    for (limit, pages) in [(1, 3), (2, 2), (3, 1), (4, 1)] {
        let (all, got_pages) = read_all_pages(chirps, limit).await;
        assert_eq!(all, newest_first, "limit {limit}");
        assert_eq!(got_pages, pages, "limit {limit}");
    }
}
