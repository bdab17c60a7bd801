use api::Envelope;
use serde_json::json;

use super::*;
use crate::store::MemoryStore;

fn memory_users() -> Users<MemoryStore> {
    Users {
        store: MemoryStore::default(),
        tables: samples::tables("users"),
    }
}

#[tokio::test]
async fn every_sample_event() {
    samples::check_all(|| async { memory_users() }).await;
}

/// A reads v1; B deletes it and creates it again; A's writes at 1 are 409s.
#[tokio::test]
async fn a_version_never_repeats_after_delete_and_recreate() {
    samples::check_recreate_after_delete(&memory_users()).await;
}

/// A deleted user reads as missing and is refused by every write but a
/// create, which goes on above the version it was deleted at.
#[tokio::test]
async fn a_tombstone_is_no_user() {
    let store = MemoryStore::default();
    let id = "grace001";
    store.create("t", id, "Grace").await.unwrap();
    store.update("t", id, "Grace Hopper", 1).await.unwrap();
    store.delete("t", id, 2).await.unwrap();
    assert_eq!(store.get("t", id).await.unwrap(), None);
    // The tombstone is at 3: no write at 3 (or any version) takes it.
    for version in [1, 2, 3, 4] {
        assert!(matches!(
            store.update("t", id, "Eve", version).await,
            Err(StoreError::Conflict { current: None })
        ));
        assert!(matches!(
            store.delete("t", id, version).await,
            Err(StoreError::Conflict { current: None })
        ));
    }
    assert_eq!(store.get("t", id).await.unwrap(), None);
    let again = store.create("t", id, "Grace again").await.unwrap();
    assert_eq!(again.lock_version, 4);
    assert!(matches!(
        store.create("t", id, "Imposter").await,
        Err(StoreError::Conflict { current: Some(4) })
    ));
    assert_eq!(store.get("t", id).await.unwrap(), Some(again));
}

fn envelope(method: &str, id: &str, body: &str, query: &[(&str, &str)]) -> Envelope {
    Envelope {
        method: method.into(),
        resource: "/user/{id}".into(),
        path: [("id".to_owned(), id.to_owned())].into(),
        query: query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.into(),
        stage: "staging".into(),
        request_id: "test".into(),
    }
}

/// `parse` of a POST body: the command, or the 400 message fragment.
fn check_post(body: &str, expected: Result<Command, &str>) {
    let result = parse(&envelope("POST", "abcdefgh", body, &[]));
    api::testing::check_parsed(body, result, expected);
}

#[test]
fn post_bodies() {
    let create = |name: &str| Command::Create {
        id: "abcdefgh".into(),
        name: name.into(),
    };
    check_post(r#"{"name":"Ada"}"#, Ok(create("Ada")));
    check_post(
        r#"{"name":"it's \"quoted\""}"#,
        Ok(create(r#"it's "quoted""#)),
    );
    check_post(
        &json!({"name": "é".repeat(256)}).to_string(),
        Ok(create(&"é".repeat(256))),
    );
    check_post(
        r#"{"name":"Ada","lock_version":4}"#,
        Ok(Command::Update {
            id: "abcdefgh".into(),
            name: "Ada".into(),
            expected: 4,
        }),
    );
    check_post("", Err("missing body"));
    check_post("{", Err("not valid JSON"));
    check_post("[1]", Err("not an object"));
    check_post(r#""Ada""#, Err("not an object"));
    check_post("{}", Err("missing field `name`"));
    check_post(r#"{"name":""}"#, Err("1 to 256 characters, got 0"));
    check_post(
        &json!({"name": "x".repeat(257)}).to_string(),
        Err("got 257"),
    );
    check_post(
        r#"{"name":7}"#,
        Err("invalid type: integer `7`, expected a string"),
    );
    check_post(
        r#"{"name":"Ada","admin":true}"#,
        Err("unknown field `admin`"),
    );
    check_post(
        r#"{"name":"Ada","lock_version":"3"}"#,
        Err("invalid type: string"),
    );
    check_post(
        r#"{"name":"Ada","lock_version":-1}"#,
        Err("invalid value: integer `-1`"),
    );
    check_post(
        r#"{"name":"Ada","lock_version":1.5}"#,
        Err("invalid type: floating point"),
    );
    check_post(
        r#"{"name":"Ada","lock_version":0}"#,
        Err("versions start at 1"),
    );
    check_post(
        r#"{"name":"Ada","lock_version":null}"#,
        Err("lock_version is null"),
    );
    check_post(
        r#"{"name":"Ada","lock_version":9007199254740991}"#,
        Ok(Command::Update {
            id: "abcdefgh".into(),
            name: "Ada".into(),
            expected: (1 << 53) - 1,
        }),
    );
    check_post(
        r#"{"name":"Ada","lock_version":9007199254740992}"#,
        Err("the largest is 9007199254740991"),
    );
    check_post(
        r#"{"name":"Ada","lock_version":18446744073709551615}"#,
        Err("the largest is"),
    );
}

#[test]
fn ids() {
    for good in ["abcdefgh", "ABC12345", &"a".repeat(64)] {
        assert!(parse(&envelope("GET", good, "", &[])).is_ok(), "{good}");
    }
    for bad in [
        "",
        "abcdefg",
        &"a".repeat(65),
        "abcdefg-",
        "abcdéfgh",
        "abcd efgh",
        "../../etc",
    ] {
        let err = parse(&envelope("GET", bad, "", &[])).unwrap_err();
        assert_eq!(err.status(), 400, "{bad}");
        assert!(err.to_string().contains("invalid user id"), "{bad}: {err}");
    }
    let long = "x".repeat(10_000);
    let err = parse(&envelope("GET", &long, "", &[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid user id (10000 characters)") && err.len() < 200,
        "{err}"
    );
}

#[test]
fn delete_needs_the_version_in_the_query() {
    let delete = |query: &[(&str, &str)]| parse(&envelope("DELETE", "abcdefgh", "", query));
    assert_eq!(
        delete(&[("lock_version", "3")]).unwrap(),
        Command::Delete {
            id: "abcdefgh".into(),
            expected: 3
        }
    );
    for (query, fragment) in [
        (&[][..], "missing query parameter `lock_version`"),
        (&[("lock_version", "x")][..], "invalid lock_version `x`"),
        (&[("lock_version", "-2")][..], "invalid lock_version `-2`"),
        (&[("lock_version", "0")][..], "versions start at 1"),
        (&[("lock_version", "+3")][..], "invalid lock_version `+3`"),
        (&[("lock_version", "")][..], "invalid lock_version ``"),
        (&[("lock_version", "3.0")][..], "invalid lock_version `3.0`"),
        (
            &[("lock_version", "9007199254740992")][..],
            "the largest is",
        ),
        (
            &[("lock_version", "99999999999999999999")][..],
            "invalid lock_version",
        ),
    ] {
        let err = delete(query).unwrap_err();
        assert!(err.to_string().contains(fragment), "{query:?}: {err}");
    }
}

#[test]
fn unknown_routes_are_404() {
    let mut put = envelope("PUT", "abcdefgh", "", &[]);
    assert_eq!(parse(&put).unwrap_err().status(), 404);
    put.method = "GET".into();
    put.resource = "/users".into();
    assert_eq!(parse(&put).unwrap_err().status(), 404);
}

/// A refused request leaves the store exactly as it was.
#[tokio::test]
async fn refused_writes_change_nothing() {
    let users = memory_users();
    samples::seed(&users.store, "users-staging").await;
    let before = users
        .store
        .get("users-staging", samples::FIXTURE_ID)
        .await
        .unwrap();
    let id = samples::FIXTURE_ID;
    let refused = [
        (409, envelope("POST", id, r#"{"name":"Eve"}"#, &[])),
        (
            409,
            envelope("POST", id, r#"{"name":"Eve","lock_version":2}"#, &[]),
        ),
        (
            409,
            envelope("POST", id, r#"{"name":"Eve","lock_version":4}"#, &[]),
        ),
        (
            400,
            envelope("POST", id, r#"{"name":"","lock_version":3}"#, &[]),
        ),
        (
            400,
            envelope("POST", id, r#"{"name":"Eve","lock_version":3,"x":1}"#, &[]),
        ),
        (
            400,
            envelope("POST", id, r#"{"name":"Eve","lock_version":null}"#, &[]),
        ),
        (409, envelope("DELETE", id, "", &[("lock_version", "2")])),
        (400, envelope("DELETE", id, "", &[])),
        (400, envelope("DELETE", id, "", &[("lock_version", "+3")])),
    ];
    for (status, envelope) in refused {
        let request = Request {
            envelope: envelope.clone(),
            context: Default::default(),
        };
        let err = users.handle(request).await.unwrap_err();
        assert_eq!(err.status(), status, "{envelope:?}: {err}");
        let after = users.store.get("users-staging", id).await.unwrap();
        assert_eq!(after, before, "{envelope:?} changed the user");
    }
}
