//! The local Lambda host and API gateway, end to end: `cargo xtask dev`
//! serving what the real Terraform applied to the emulator, the real
//! `bootstrap` binaries behind it, plain HTTP in front.
//!
//! The stack has two fixture functions besides the API's own (see
//! `xtask/fixtures/`), routed by a Terraform override: `faulty` (a 2 s
//! timeout; `/impatient/...` reaches it through a 300 ms integration
//! timeout) and `crash-at-init`; and limits of its own (two API key
//! consumers, a usage plan and stage throttle low enough to reach). One
//! scenario on one stack, because an apply is the slow part.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Dev, Stack, edit_manifest, emulator_sdk, with_routes};

/// Every route of the API and every error status its functions answer,
/// on `stage`, with a user id of the test's choosing.
fn check_routes(dev: &Dev, stage: &str, id: &str) {
    let status = dev.check("GET", &format!("/{stage}/status"), None, 200);
    assert_eq!(status["stage"], stage);
    assert_eq!(status["alias"], stage);
    assert_eq!(
        dev.check("GET", &format!("/{stage}/health"), None, 200),
        json!({"status": "ok"})
    );

    let user = format!("/{stage}/user/{id}");
    let missing = dev.check("GET", &user, None, 404);
    assert!(missing["message"].as_str().unwrap().contains("not found"));
    let created = dev.check(
        "POST",
        &user,
        Some(r#"{"name": "Ada \"the\" Countess"}"#),
        200,
    );
    assert_eq!(
        created,
        json!({"id": id, "name": "Ada \"the\" Countess", "lock_version": 1})
    );
    assert_eq!(dev.check("GET", &user, None, 200), created);
    let updated = dev.check(
        "POST",
        &user,
        Some(r#"{"name": "Ada", "lock_version": 1}"#),
        200,
    );
    assert_eq!(updated["lock_version"], 2);
    // A stale write is a 409 with the current version, and changes nothing.
    let stale = dev.check(
        "POST",
        &user,
        Some(r#"{"name": "Eve", "lock_version": 1}"#),
        409,
    );
    assert_eq!(stale["current_lock_version"], 2);
    assert_eq!(dev.check("GET", &user, None, 200)["name"], "Ada");
    // Bad input is a 400 and changes nothing.
    dev.check("POST", &user, Some(r#"{"name": "Eve""#), 400);
    dev.check("POST", &user, Some(r#"{"name": ""}"#), 400);
    dev.check("GET", &format!("/{stage}/user/no!"), None, 400);
    dev.check("DELETE", &user, None, 400);
    dev.check("DELETE", &format!("{user}?lock_version=1"), None, 409);
    assert_eq!(dev.check("GET", &user, None, 200)["lock_version"], 2);
    assert_eq!(
        dev.check("DELETE", &format!("{user}?lock_version=2"), None, 200),
        json!({"id": id, "deleted": true})
    );
    dev.check("GET", &user, None, 404);
    // A deleted user is missing to every write but a create, at any version.
    dev.check(
        "POST",
        &user,
        Some(r#"{"name": "Eve", "lock_version": 2}"#),
        404,
    );
    dev.check("DELETE", &format!("{user}?lock_version=3"), None, 404);
    // Created again, it starts above the deleted version, so a write with a
    // version read before the delete is a 409, never a silent overwrite.
    let recreated = dev.check("POST", &user, Some(r#"{"name": "Bea"}"#), 200);
    let version = recreated["lock_version"].as_u64().unwrap();
    assert!(
        version > 2,
        "re-created at a version the id had: {recreated}"
    );
    assert_eq!(
        recreated,
        json!({"id": id, "name": "Bea", "lock_version": version})
    );
    for stale in [1, 2] {
        let body = format!(r#"{{"name": "Eve", "lock_version": {stale}}}"#);
        let refused = dev.check("POST", &user, Some(&body), 409);
        assert_eq!(refused["current_lock_version"], version);
        let path = format!("{user}?lock_version={stale}");
        let refused = dev.check("DELETE", &path, None, 409);
        assert_eq!(refused["current_lock_version"], version);
    }
    assert_eq!(dev.check("GET", &user, None, 200), recreated);
    let path = format!("{user}?lock_version={version}");
    dev.check("DELETE", &path, None, 200);
    dev.check("GET", &user, None, 404);

    // Statuses only the fixture answers, through the same patterns.
    for status in [400, 403, 404, 409, 500] {
        let body = dev.check(
            "GET",
            &format!("/{stage}/fault/error-{status}"),
            None,
            status,
        );
        assert_eq!(body["message"], format!("asked for {status}"));
    }
    // API Gateway's own answers.
    let forbidden = json!({"message": "Missing Authentication Token"});
    assert_eq!(
        dev.check("GET", &format!("/{stage}/nope"), None, 403),
        forbidden
    );
    assert_eq!(
        dev.check("PUT", &format!("/{stage}/status"), None, 403),
        forbidden
    );
    assert_eq!(
        dev.check("GET", &format!("/{stage}/user"), None, 403),
        forbidden
    );
}

/// One HTTP/1.1 request to `url` (`http://HOST:PORT/...`, as a presigned
/// URL names the emulator): its status and body.
fn fetch(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, target) = rest.split_at(rest.find('/').unwrap());
    let mut stream = TcpStream::connect(host).unwrap();
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an HTTP response");
    let status = String::from_utf8_lossy(&response[..split])
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (status, response[split + 4..].to_vec())
}

/// The stack's limits (`test_limits.auto.tfvars.json`): two consumers; per
/// key 1 request/s, a burst of 6 and 12 a day; per stage method 10/s, 20.
const LIMITS: &str = r#"{
  "api_key_consumers": ["alice", "bob"],
  "usage_plan": { "rate_limit": 1, "burst_limit": 6, "daily_quota": 12 },
  "throttling_rate_limit": 10,
  "throttling_burst_limit": 20
}"#;

/// The files routes behind their API keys, a file's bytes through its
/// presigned URLs, and the usage plan's and the stage's limits, as API
/// Gateway enforces them.
fn check_keys_and_files(stack: &Stack, dev: &Dev) {
    let key = |consumer: &str, stage: &str| {
        stack
            .ok(&["apikey", consumer, "--stage", stage])
            .trim()
            .to_owned()
    };
    let (alice, alice_prod, bob) = (
        key("alice", "staging"),
        key("alice", "prod"),
        key("bob", "staging"),
    );
    assert_ne!(alice, alice_prod, "one key opens both stages");
    assert_ne!(alice, bob);
    let which = stack.xtask(&["apikey"]);
    assert!(!which.status.success());
    assert!(
        String::from_utf8_lossy(&which.stderr).contains("name one of alice, bob"),
        "{}",
        String::from_utf8_lossy(&which.stderr)
    );

    // No key, a key nobody has, another stage's key: API Gateway's 403,
    // and no function runs.
    let post = r#"{"name": "../odd/name é?&.txt", "content_type": "text/plain", "size": 11}"#;
    let runs = |dev: &Dev| dev.lines("[rust-lambda-api-files:$LATEST] START").len();
    let ran = runs(dev);
    for headers in [
        vec![],
        vec![("x-api-key", "not-a-key-of-this-api-at-all")],
        vec![("x-api-key", alice_prod.as_str())],
    ] {
        let refused = dev.call_with("POST", "/staging/files", &headers, Some(post));
        assert_eq!(
            (refused.status, &refused.body),
            (403, &json!({"message": "Forbidden"})),
            "{headers:?}"
        );
        assert!(
            refused
                .head
                .contains("x-amzn-errortype: forbiddenexception")
        );
    }
    assert_eq!(runs(dev), ran, "a refused request reached the function");

    // With alice's key: a record, then the bytes through the upload URL,
    // then back through the download URL.
    let with = |key: &str| [("x-api-key", key.to_owned())];
    let call = |method: &str, path: &str, key: &str, body: Option<&str>| {
        let headers = with(key);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        dev.call_with(method, path, &headers, body)
    };
    let created = call("POST", "/staging/files", &alice, Some(post));
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["name"], "../odd/name é?&.txt");
    let upload = created.body["upload_url"].as_str().unwrap().to_owned();
    // The object is the id, in staging's bucket; the name is in no URL.
    assert!(upload.contains("-files-staging-"), "{upload}");
    assert!(!upload.contains("-files-prod-"), "{upload}");
    assert!(upload.contains(&format!("/{id}?")), "{upload}");
    assert!(!upload.contains("odd"), "{upload}");
    let file = format!("/staging/files/{id}");
    let early = call("GET", &file, &alice, None);
    assert_eq!(early.status, 409, "{}", early.body);
    let (put, answer) = fetch(
        "PUT",
        &upload,
        &[("Content-Type", "text/plain")],
        b"hello files",
    );
    assert_eq!(put, 200, "{}", String::from_utf8_lossy(&answer));
    let uploaded = call("GET", &file, &alice, None);
    assert_eq!(uploaded.status, 200, "{}", uploaded.body);
    assert_eq!(uploaded.body["size"], 11);
    let download = uploaded.body["download_url"].as_str().unwrap().to_owned();
    assert_eq!(
        fetch("GET", &download, &[], b""),
        (200, b"hello files".to_vec())
    );
    let deleted = call("DELETE", &file, &alice, None);
    assert_eq!(deleted.body, json!({"id": id, "deleted": true}));
    assert_eq!(call("GET", &file, &alice, None).status, 404);
    assert_eq!(
        fetch("GET", &download, &[], b"").0,
        404,
        "the object outlived its delete"
    );

    // bob's key: a burst of 6, then 429 until the bucket refills (1/s).
    let missing = "/staging/files/ffffffffffffffffffffffffffffffff";
    let burst: Vec<u16> = (0..9)
        .map(|_| call("GET", missing, &bob, None).status)
        .collect();
    assert_eq!(burst[..6], [404; 6], "{burst:?}");
    assert!(burst[7..].iter().all(|status| *status == 429), "{burst:?}");
    let throttled = call("GET", missing, &bob, None);
    assert_eq!(
        (throttled.status, &throttled.body),
        (429, &json!({"message": "Too Many Requests"}))
    );
    assert!(
        throttled
            .head
            .contains("x-amzn-errortype: toomanyrequestsexception")
    );
    // Refilled, bob spends the rest of his 12 a day (the throttled ones
    // took none of it: at most one of those nine ran past the burst), and
    // then it is the quota that refuses.
    std::thread::sleep(Duration::from_secs(6));
    let admitted = (0..6)
        .take_while(|_| call("GET", missing, &bob, None).status == 404)
        .count();
    assert!(admitted >= 5, "{admitted} admitted after the refill");
    std::thread::sleep(Duration::from_secs(2));
    let spent = call("GET", missing, &bob, None);
    assert_eq!(
        (spent.status, &spent.body),
        (429, &json!({"message": "Limit Exceeded"}))
    );
    assert!(
        spent
            .head
            .contains("x-amzn-errortype: limitexceededexception")
    );
    // Each key has its own bucket and quota: alice's still works.
    assert_eq!(call("GET", missing, &alice, None).status, 404);

    // The stage's throttle, per method, for everyone: a burst of 20.
    let replies: Vec<_> = (0..30)
        .map(|_| dev.call("GET", "/staging/health", None))
        .collect();
    let ok = replies.iter().filter(|reply| reply.status == 200).count();
    let refused: Vec<_> = replies.iter().filter(|reply| reply.status == 429).collect();
    assert_eq!(ok + refused.len(), 30);
    assert!((20..30).contains(&ok), "{ok} of 30 admitted");
    assert_eq!(refused[0].body, json!({"message": "Too Many Requests"}));
    // Another method's bucket is untouched.
    dev.check("GET", "/staging/status", None, 200);
}

/// Publishes `$LATEST` of `function` on the emulator; the new version.
fn publish(stack: &Stack, function: &str) -> String {
    let (runtime, config) = emulator_sdk(stack);
    runtime.block_on(async {
        aws_sdk_lambda::Client::new(&config)
            .publish_version()
            .function_name(format!("rust-lambda-api-{function}"))
            .send()
            .await
            .unwrap()
            .version
            .unwrap()
    })
}

/// Adds `GET /` behind Terraform's back, with a request template of its own.
fn add_root_method_with_another_template(stack: &Stack) {
    use aws_sdk_apigateway::types::IntegrationType;
    let api_id = stack.ok(&["tf", "--", "output", "-raw", "api_id"]);
    let (runtime, config) = emulator_sdk(stack);
    runtime.block_on(async {
        let client = aws_sdk_apigateway::Client::new(&config);
        let resources = client.get_resources().rest_api_id(&api_id).send().await.unwrap();
        let root = resources
            .items()
            .iter()
            .find(|resource| resource.path() == Some("/"))
            .and_then(|resource| resource.id())
            .unwrap()
            .to_owned();
        client
            .put_method()
            .rest_api_id(&api_id)
            .resource_id(&root)
            .http_method("GET")
            .authorization_type("NONE")
            .send()
            .await
            .unwrap();
        client
            .put_integration()
            .rest_api_id(&api_id)
            .resource_id(&root)
            .http_method("GET")
            .r#type(IntegrationType::Aws)
            .integration_http_method("POST")
            .uri(
                "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/\
                 arn:aws:lambda:us-east-1:123456789012:function:rust-lambda-api-status:${stageVariables.stage}/invocations",
            )
            .request_templates("application/json", r#"{"method": "$context.httpMethod"}"#)
            .send()
            .await
            .unwrap();
    });
}

/// Writes the local prod pin, as `publish` will, and applies it.
fn pin_prod(stack: &Stack, functions: Value) {
    let revision = stack.ok(&["tf", "--", "output", "-raw", "api_revision"]);
    let pin = json!({ "prod_release": {
        "release": 1, "note": "test", "functions": functions, "api_revision": revision,
    }});
    std::fs::write(
        stack.local.join("terraform/prod.auto.tfvars.json"),
        pin.to_string(),
    )
    .unwrap();
    stack.ok(&["apply"]);
}

#[test]
fn the_local_gateway_serves_what_terraform_applied() {
    let stack = Stack::new("dev");
    let artifacts = stack.artifacts.to_str().unwrap().to_owned();
    stack.ok(&[
        "build",
        "--out-dir",
        &artifacts,
        "chirps",
        "files",
        "status",
        "users",
        "faulty",
        "crash-at-init",
    ]);
    stack.ok(&["emulator", "start", "--port", "0"]);
    let dir = stack.local.join("terraform");
    std::fs::create_dir_all(&dir).unwrap();
    let routes = with_routes(&[
        ("GET /fault/{kind}", "faulty"),
        ("GET /impatient/{kind}", "faulty"),
        ("GET /init-crash", "crash-at-init"),
    ]);
    let overrides = r#"
resource "aws_lambda_function" "this" {
  timeout                        = each.key == "faulty" ? 2 : var.timeout
  reserved_concurrent_executions = each.key == "faulty" ? 3 : -1
}

resource "aws_api_gateway_integration" "this" {
  timeout_milliseconds = startswith(each.key, "GET /impatient/") ? 300 : 29000
}
"#;
    std::fs::write(
        dir.join("test_faults_override.tf"),
        routes.clone() + overrides,
    )
    .unwrap();
    std::fs::write(dir.join("test_limits.auto.tfvars.json"), LIMITS).unwrap();

    // Idle environments are shut down after 4 s (checked at the end).
    let dev = Dev::start_with(&stack, &["--idle-timeout", "4s"]);

    // Staging: every route and status. Prod has nothing published: its
    // routes exist, their aliases do not.
    check_routes(&dev, "staging", "ada00001");
    check_keys_and_files(&stack, &dev);

    // A route's key requirement changed in place (Terraform's UpdateMethod,
    // which the emulator gets from serve_moto.py): staging asks for a key at
    // once, and stops asking when it is changed back.
    let keyed: String = routes
        .lines()
        .map(|line| match line.contains("\"GET /chirps/count\"") {
            true => line.replace(
                "{ function = \"chirps\" }",
                "{ function = \"chirps\", api_key = true }",
            ),
            false => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(keyed, routes, "no GET /chirps/count route to change");
    std::fs::write(dir.join("test_faults_override.tf"), keyed + overrides).unwrap();
    stack.ok(&["apply"]);
    assert_eq!(
        dev.check("GET", "/staging/chirps/count", None, 403),
        json!({"message": "Forbidden"})
    );
    std::fs::write(
        dir.join("test_faults_override.tf"),
        routes.clone() + overrides,
    )
    .unwrap();
    stack.ok(&["apply"]);
    dev.check("GET", "/staging/chirps/count", None, 200);
    assert_eq!(
        dev.check("GET", "/staging/status", None, 200)["function_version"],
        "$LATEST"
    );
    assert_eq!(
        dev.check("GET", "/prod/status", None, 500),
        json!({"message": "Internal server error"})
    );
    dev.check("GET", "/prod/nope", None, 403);
    assert_eq!(
        dev.check("GET", "/qa/status", None, 403),
        json!({"message": "Forbidden"})
    );

    // What API Gateway refuses before any function runs, changing nothing.
    dev.check(
        "POST",
        "/staging/user/grace001",
        Some(r#"{"name": "Grace"}"#),
        200,
    );
    let too_long = format!(
        "POST /staging/user/grace001 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        10 * 1024 * 1024 + 1
    );
    assert_eq!(dev.raw(too_long.as_bytes()).status, 413);
    let text = "POST /staging/user/grace001 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
                Content-Length: 2\r\nConnection: close\r\n\r\nhi";
    let unsupported = dev.raw(text.as_bytes());
    assert_eq!(unsupported.status, 415);
    assert_eq!(
        unsupported.body,
        json!({"message": "Unsupported Media Type"})
    );
    let grace = dev.check("GET", "/staging/user/grace001", None, 200);
    assert_eq!(
        (grace["name"].as_str(), grace["lock_version"].as_u64()),
        (Some("Grace"), Some(1))
    );

    // Faults: each answers its status, and the next request works.
    // `ok` tells how many invocations its process has served.
    let invocations = || {
        let body = dev.check("GET", "/staging/fault/ok", None, 200);
        body["invocations"].as_u64().unwrap()
    };
    let failed = json!("the function failed without an API error: see its logs");
    // A panic is the runtime's invocation error; the process lives on.
    let before = invocations();
    assert_eq!(
        dev.check("GET", "/staging/fault/panic", None, 502)["message"],
        failed
    );
    assert_eq!(invocations(), before + 2);
    // A process that dies mid-request: 502, and a new process next time.
    assert_eq!(
        dev.check("GET", "/staging/fault/exit", None, 502)["message"],
        failed
    );
    assert_eq!(invocations(), 1);
    // Past the function's 2 s timeout: killed, 502, a new process.
    let started = Instant::now();
    dev.check("GET", "/staging/fault/sleep", None, 502);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(invocations(), 1);
    // An answer over Lambda's 6 MB: 502.
    dev.check("GET", "/staging/fault/huge", None, 502);
    invocations();
    // Past the integration's 300 ms timeout: API Gateway's 504, while the
    // function runs on to its own timeout (and is then replaced).
    let started = Instant::now();
    assert_eq!(
        dev.check("GET", "/staging/impatient/sleep", None, 504),
        json!({"message": "Endpoint request timed out"})
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(invocations(), 1);
    // A function that cannot initialise: 502 every time, the rest unharmed.
    dev.check("GET", "/staging/init-crash", None, 502);
    dev.check("GET", "/staging/health", None, 200);
    dev.check("GET", "/staging/init-crash", None, 502);

    // The host, without the gateway: one event, its REPORT.
    let invoked = stack.xtask(&["invoke", "status", "--event", "status"]);
    assert!(invoked.status.success());
    let result: Value = serde_json::from_slice(&invoked.stdout).unwrap();
    assert_eq!(result["function_version"], "$LATEST");
    let log = String::from_utf8_lossy(&invoked.stderr);
    assert!(log.contains("REPORT RequestId: "), "{log}");
    assert!(log.contains("Init Duration: "), "{log}");
    let not_yet = stack.xtask(&["invoke", "status", "--event", "status", "--alias", "prod"]);
    assert!(!not_yet.status.success());
    assert!(String::from_utf8_lossy(&not_yet.stderr).contains("has no `prod`"));

    // Publish version 1 of every function and pin prod to it: /prod serves
    // it, on its own table, without restarting the gateway.
    let v1: Vec<String> = ["status", "users", "faulty"]
        .iter()
        .map(|function| publish(&stack, function))
        .collect();
    assert_eq!(v1, ["1", "1", "1"]);
    pin_prod(&stack, json!({"status": "1", "users": "1", "faulty": "1"}));
    check_routes(&dev, "prod", "bob00001");
    check_routes(&dev, "staging", "bob00001");
    assert_eq!(
        dev.check("GET", "/prod/status", None, 200)["function_version"],
        "1"
    );
    assert_eq!(
        dev.check("GET", "/staging/status", None, 200)["function_version"],
        "$LATEST"
    );
    dev.check(
        "POST",
        "/prod/user/carol001",
        Some(r#"{"name": "Carol"}"#),
        200,
    );
    dev.check("GET", "/staging/user/carol001", None, 404);

    // New code for status (the fixture's zip stands in for a rebuild):
    // staging runs it at once, prod keeps version 1 until pinned to 2.
    edit_manifest(&stack.artifacts, |manifest| {
        manifest["functions"]["status"] = manifest["functions"]["faulty"].clone();
    });
    stack.ok(&["apply"]);
    assert_eq!(
        dev.check("GET", "/staging/status", None, 200)["fixture"],
        "faulty"
    );
    let prod = dev.check("GET", "/prod/status", None, 200);
    assert_eq!(
        (prod["status"].as_str(), prod["function_version"].as_str()),
        (Some("ok"), Some("1"))
    );
    assert_eq!(publish(&stack, "status"), "2");
    pin_prod(&stack, json!({"status": "2", "users": "1", "faulty": "1"}));
    let prod = dev.check("GET", "/prod/status", None, 200);
    assert_eq!(prod["fixture"], "faulty");
    assert_eq!(prod["function_version"], "2");
    assert!(
        prod["invoked_function_arn"]
            .as_str()
            .unwrap()
            .ends_with(":prod")
    );

    // A new route, applied but not published: staging serves it, prod
    // keeps serving the API revision it was deployed at.
    let more_routes = with_routes(&[
        ("GET /fault/{kind}", "faulty"),
        ("GET /impatient/{kind}", "faulty"),
        ("GET /init-crash", "crash-at-init"),
        ("GET /later/{kind}", "faulty"),
    ]);
    std::fs::write(dir.join("test_faults_override.tf"), more_routes + overrides).unwrap();
    stack.ok(&["apply"]);
    assert_eq!(
        dev.check("GET", "/staging/later/ok", None, 200)["fixture"],
        "faulty"
    );
    assert_eq!(
        dev.check("GET", "/prod/later/ok", None, 403),
        json!({"message": "Missing Authentication Token"})
    );
    assert_eq!(
        dev.check("GET", "/prod/status", None, 200)["function_version"],
        "2"
    );
    dev.check("GET", "/prod/fault/error-409", None, 409);

    // Execution environments scale out as Lambda's do, up to the function's
    // reserved concurrency (3 for `faulty`): of four naps at once, three run,
    // each in an environment of its own; the fourth is throttled, which API
    // Gateway answers with its own 500.
    let starts = |log: &str| {
        log.matches("[rust-lambda-api-faulty:$LATEST] START")
            .count()
    };
    let started = starts(&dev.log());
    let naps = dev.concurrently(4, "/staging/fault/nap");
    let (ran, throttled): (Vec<_>, Vec<_>) = naps.iter().partition(|reply| reply.status == 200);
    assert_eq!(
        (ran.len(), throttled.len()),
        (3, 1),
        "{:?}",
        naps.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(
        throttled[0].body,
        json!({"message": "Internal server error"})
    );
    assert!(
        throttled[0]
            .head
            .contains("x-amzn-errortype: internalservererrorexception")
    );
    let pids: std::collections::BTreeSet<u64> = ran
        .iter()
        .map(|reply| reply.body["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        pids.len(),
        3,
        "concurrent requests shared an environment: {pids:?}"
    );
    assert_eq!(starts(&dev.log()) - started, 3, "the throttled request ran");
    // Warm afterwards: the next one runs in one of those three.
    let warm = dev.check("GET", "/staging/fault/ok", None, 200);
    assert!(pids.contains(&warm["pid"].as_u64().unwrap()));
    assert!(warm["invocations"].as_u64().unwrap() >= 2);
    // Idle past 4 s, the environments are shut down: the next is a cold start.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        dev.log()
            .contains("[rust-lambda-api-faulty:$LATEST] shut down"),
        "{}",
        dev.log()
    );
    let cold = dev.check("GET", "/staging/fault/ok", None, 200);
    assert!(!pids.contains(&cold["pid"].as_u64().unwrap()));
    assert_eq!(cold["invocations"], 1);

    // Terraform agrees nothing is left to do.
    let plan = stack.xtask(&["tf", "--", "plan", "-input=false", "-detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0));
    drop(dev);

    // An integration with a request template of its own: the gateway
    // refuses to start rather than send a function an envelope that
    // template would not have made.
    add_root_method_with_another_template(&stack);
    let refused = stack.xtask(&["dev", "--no-build", "--port", "0"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("the local gateway refuses to serve this API")
            && stderr.contains("cannot serve `GET /`")
            && stderr.contains("request template for application/json is not the one"),
        "{stderr}"
    );
}
