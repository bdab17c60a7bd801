use serde_json::json;

use super::*;
use crate::samples::{envelope, post};
use crate::store::{MemoryStore, StoreError};

fn memory_chirps() -> Chirps<MemoryStore> {
    Chirps {
        store: MemoryStore::default(),
        tables: samples::tables("chirps"),
    }
}

#[tokio::test]
async fn every_sample_event() {
    samples::check_all(|| async { memory_chirps() }).await;
}

#[tokio::test]
async fn every_page_size_lists_each_chirp_once_newest_first() {
    samples::check_pagination(&memory_chirps()).await;
}

/// `parse` of a POST body: the command, or the 400 message fragment.
fn check_post(body: &str, expected: Result<(&str, &str), &str>) {
    let expected = expected.map(|(author, text)| Command::Post {
        author: author.into(),
        text: text.into(),
    });
    let result = parse(&envelope("POST", "/chirps", body, &[]));
    api::testing::check_parsed(body, result, expected);
}

#[test]
fn post_bodies() {
    check_post(&post("ada", "hi"), Ok(("ada", "hi")));
    check_post(
        r#"{"text": "it's \"quoted\"", "author": "a"}"#,
        Ok(("a", r#"it's "quoted""#)),
    );
    check_post("", Err("missing body"));
    check_post(" \n", Err("missing body"));
    check_post("{", Err("not valid JSON"));
    check_post(
        r#"{"author": "ada", "text": "hi"} x"#,
        Err("not valid JSON"),
    );
    check_post("[1]", Err("not an object"));
    check_post("null", Err("not an object"));
    check_post(r#""hi""#, Err("not an object"));
    check_post("{}", Err("missing field `author`"));
    check_post(r#"{"author": "ada"}"#, Err("missing field `text`"));
    check_post(r#"{"text": "hi"}"#, Err("missing field `author`"));
    check_post(
        r#"{"author": "ada", "text": "hi", "id": "x"}"#,
        Err("unknown field `id`, expected `author` or `text`"),
    );
    check_post(
        r#"{"author": "ada", "text": "hi", "created_at": "2020-01-01T00:00:00Z"}"#,
        Err("unknown field `created_at`"),
    );
    check_post(
        r#"{"author": "ada", "author": "eve", "text": "hi"}"#,
        Err("duplicate field `author`"),
    );
    check_post(
        r#"{"author": 7, "text": "hi"}"#,
        Err("invalid type: integer `7`, expected a string"),
    );
    check_post(
        r#"{"author": "ada", "text": null}"#,
        Err("invalid type: null, expected a string"),
    );
}

#[test]
fn authors() {
    for good in [
        "a",
        "Ada",
        "grace_hopper",
        "linus-t",
        "0",
        "_-_",
        &"a".repeat(64),
    ] {
        check_post(&post(good, "hi"), Ok((good, "hi")));
    }
    for bad in [
        "",
        "ada lovelace",
        "ada.l",
        "ada!",
        "élodie",
        "ada\n",
        "ａｄａ", // fullwidth letters are letters, but not ASCII
        "../x",
        &"a".repeat(64).replace('a', "é"),
    ] {
        check_post(&post(bad, "hi"), Err("invalid author"));
    }
    check_post(&post("", "hi"), Err("invalid author ``: expected 1 to 64"));
    // Too long: named by its length, not echoed.
    let long = "a".repeat(65);
    let err = parse(&envelope("POST", "/chirps", &post(&long, "hi"), &[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid author (65 characters): expected 1 to 64 letters, digits, `_` or `-` ([0-9A-Za-z_-])"
    );
}

#[test]
fn texts_are_1_to_280_characters_not_bytes_and_not_blank() {
    for good in [
        "x".to_owned(),
        " x ".to_owned(),
        "x".repeat(280),
        // 280 characters of 2, 3 and 4 bytes each.
        "é".repeat(280),
        "✓".repeat(280),
        "🐦".repeat(280),
        "line 1\nline 2".to_owned(),
    ] {
        check_post(&post("ada", &good), Ok(("ada", &good)));
    }
    check_post(&post("ada", ""), Err("expected 1 to 280 characters, got 0"));
    check_post(&post("ada", &"x".repeat(281)), Err("got 281"));
    check_post(&post("ada", &"🐦".repeat(281)), Err("got 281"));
    for blank in [" ", "   ", "\n", "\t \r\n", "\u{3000}", "\u{a0}\u{2003}"] {
        check_post(&post("ada", blank), Err("invalid text: it is blank"));
    }
}

/// `parse` of `GET /chirps` with this query.
fn list(query: &[(&str, &str)]) -> Result<Command, ApiError> {
    parse(&envelope("GET", "/chirps", "", query))
}

#[test]
fn limits() {
    assert_eq!(
        list(&[]).unwrap(),
        Command::List {
            limit: 20,
            after: None
        }
    );
    for (raw, limit) in [("1", 1), ("20", 20), ("100", 100), ("007", 7)] {
        assert_eq!(
            list(&[("limit", raw)]).unwrap(),
            Command::List { limit, after: None },
            "{raw}"
        );
    }
    for bad in [
        "0",
        "101",
        "-1",
        "x",
        "",
        "+5",
        " 5",
        "5 ",
        "1.0",
        "1e2",
        "99999999999999999999999",
    ] {
        let err = list(&[("limit", bad)]).unwrap_err();
        assert_eq!(err.status(), 400, "{bad}");
        assert_eq!(
            err.to_string(),
            format!("invalid limit `{bad}`: expected an integer from 1 to 100")
        );
    }
    let err = list(&[("limit", &"9".repeat(1000))]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid limit (1000 characters)"),
        "{err}"
    );
}

#[test]
fn cursors_round_trip_and_anything_else_is_refused() {
    let key = ChirpKey {
        created_millis: 1_767_225_600_123,
        id: "0123456789abcdef0123456789abcdef".into(),
    };
    let encoded = cursor(&key);
    assert!(
        encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{encoded} is not URL-safe"
    );
    assert_eq!(
        list(&[("cursor", &encoded), ("limit", "5")]).unwrap(),
        Command::List {
            limit: 5,
            after: Some(key.clone())
        }
    );

    let b64 = |text: &str| URL_SAFE_NO_PAD.encode(text);
    let padded = base64::engine::general_purpose::URL_SAFE.encode(key.sort_key() + "x");
    let standard = base64::engine::general_purpose::STANDARD.encode([0xfb, 0xff, 0xfe]);
    for bad in [
        String::new(),
        "!!!!".to_owned(),
        format!("{encoded}="),
        padded,
        standard,
        b64("hello"),
        b64(""),
        b64("001767225600123"),
        b64("1767225600123#0123456789abcdef0123456789abcdef"),
        b64("001767225600123#0123456789ABCDEF0123456789ABCDEF"),
        b64("001767225600123#0123456789abcdef"),
        b64("001767225600123#0123456789abcdef0123456789abcdef#x"),
        b64("-01767225600123#0123456789abcdef0123456789abcdef"),
        URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0xfd]),
    ] {
        let err = list(&[("cursor", &bad)]).unwrap_err();
        assert_eq!(err.status(), 400, "{bad}");
        assert_eq!(
            err.to_string(),
            "invalid cursor: send the next_cursor of the previous page as it is",
            "{bad}"
        );
    }
}

#[test]
fn sort_keys_sort_as_their_keys() {
    let key = |created_millis, id: &str| ChirpKey {
        created_millis,
        id: id.repeat(32),
    };
    let keys = [
        key(0, "0"),
        key(9, "f"),
        key(10, "0"),
        key(1_767_225_600_000, "0"),
        key(1_767_225_600_000, "1"),
        key(999_999_999_999_999, "f"),
    ];
    for pair in keys.windows(2) {
        assert!(pair[0] < pair[1]);
        assert!(pair[0].sort_key() < pair[1].sort_key(), "{pair:?}");
    }
    for key in keys {
        assert_eq!(ChirpKey::from_sort_key(&key.sort_key()), Some(key));
    }
}

#[test]
fn a_query_parameter_a_route_does_not_take_is_refused() {
    for (method, resource, query, fragment) in [
        (
            "GET",
            "/chirps",
            &[("limt", "5")][..],
            "unknown query parameter `limt`: GET /chirps takes only limit, cursor",
        ),
        (
            "GET",
            "/chirps/count",
            &[("limit", "5")][..],
            "unknown query parameter `limit`: GET /chirps/count takes no query parameters",
        ),
        (
            "POST",
            "/chirps",
            &[("author", "ada")][..],
            "unknown query parameter `author`: POST /chirps takes no query parameters",
        ),
    ] {
        let err = parse(&envelope(method, resource, &post("ada", "hi"), query)).unwrap_err();
        assert_eq!((err.status(), err.to_string()), (400, fragment.to_owned()));
    }
}

#[test]
fn unknown_routes_are_404() {
    for (method, resource) in [
        ("PUT", "/chirps"),
        ("DELETE", "/chirps"),
        ("POST", "/chirps/count"),
        ("GET", "/chirp"),
    ] {
        let err = parse(&envelope(method, resource, "", &[])).unwrap_err();
        assert_eq!(err.status(), 404, "{method} {resource}");
    }
}

/// A POST answers the chirp it saved: a new random id, the time now, and
/// the author and text as sent; the list and the count have it at once.
#[tokio::test]
async fn a_post_saves_and_counts_the_chirp_it_answers() {
    let chirps = memory_chirps();
    let before = now_millis().unwrap();
    let mut answered = Vec::new();
    for text in ["first", "second 🐦"] {
        let body = post("ada", text);
        let (status, chirp) =
            samples::call(&chirps, json!(envelope("POST", "/chirps", &body, &[]))).await;
        assert_eq!(status, 200, "{chirp}");
        assert_eq!(
            (chirp["author"].as_str(), chirp["text"].as_str()),
            (Some("ada"), Some(text))
        );
        let id = chirp["id"].as_str().unwrap();
        assert!(store::is_id(id), "{id}");
        let created = humantime::parse_rfc3339(chirp["created_at"].as_str().unwrap()).unwrap();
        let created = created.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(
            before <= created && created <= now_millis().unwrap(),
            "{chirp}"
        );
        assert_eq!(
            chirp.as_object().unwrap().len(),
            4,
            "only id, author, text, created_at: {chirp}"
        );
        answered.push(chirp);
    }
    assert_ne!(answered[0]["id"], answered[1]["id"]);

    let (listed, count) = samples::contents(&chirps.store, "chirps-staging").await;
    assert_eq!(count, 2);
    // Newest first: by time, then (within one millisecond) by id.
    answered.sort_by_key(|chirp| (chirp["created_at"].to_string(), chirp["id"].to_string()));
    answered.reverse();
    assert_eq!(json!(listed), json!(answered));
    assert_eq!(
        samples::contents(&chirps.store, "chirps-prod").await,
        (vec![], 0)
    );
}

#[tokio::test]
async fn a_chirp_whose_key_exists_is_not_saved_nor_counted() {
    let store = MemoryStore::default();
    let chirp = &samples::fixture()[0];
    store.create("t", chirp).await.unwrap();
    let mut same_key = chirp.clone();
    same_key.text = "another".into();
    assert!(matches!(
        store.create("t", &same_key).await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(
        samples::contents(&store, "t").await,
        (vec![chirp.clone()], 1)
    );
}

/// A refused request leaves both tables exactly as they were.
#[tokio::test]
async fn refused_requests_change_nothing() {
    let chirps = memory_chirps();
    samples::seed(&chirps.store, "chirps-staging").await;
    let before = samples::contents(&chirps.store, "chirps-staging").await;
    for (status, envelope) in samples::refused_requests() {
        let request = Request {
            envelope: envelope.clone(),
            context: Default::default(),
        };
        let err = chirps.handle(request).await.unwrap_err();
        assert_eq!(err.status(), status, "{envelope:?}: {err}");
        let after = samples::contents(&chirps.store, "chirps-staging").await;
        assert_eq!(after, before, "{envelope:?} changed the table");
        let prod = samples::contents(&chirps.store, "chirps-prod").await;
        assert_eq!(prod, (vec![], 0), "{envelope:?} changed prod");
    }
}
