//! The Terraform configuration, applied by `cargo xtask` to a real emulator
//! (moto over HTTP) with the real Terraform and the real build artifacts.
//!
//! One scenario on one emulator, because an apply from scratch is the slow
//! part: apply, then ask Terraform what a rebuild, a code change and a new
//! route would change (plans only, so each question starts from the same
//! applied state); at the end, `destroy` tears it down. The stack lives in
//! its own directories under `CARGO_TARGET_TMPDIR`, on a free port, and
//! never touches `target/local`.

mod support;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value;
use support::{Stack, edit_manifest, with_routes};

fn values<'a>(state: &'a [Value], address: &str) -> &'a Value {
    &state
        .iter()
        .find(|resource| resource["address"] == address)
        .unwrap_or_else(|| panic!("{address} is not in the state"))["values"]
}

/// What the emulator lists of every kind of resource the stack makes
/// (functions, APIs, tables, roles, log groups, buckets, alarms, topics), each as the raw
/// response of its list call. The emulator checks no signature, so a plain
/// request naming the service in its credential scope will do.
fn emulator_lists(stack: &Stack) -> Vec<(&'static str, String)> {
    use std::io::{Read, Write};
    let record: Value =
        serde_json::from_slice(&std::fs::read(stack.local.join("emulator.json")).unwrap()).unwrap();
    let address = record["endpoint"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let calls: [(&str, &str, &str, &[&str], &str); 8] = [
        ("lambda", "GET", "/2015-03-31/functions/", &[], ""),
        ("apigateway", "GET", "/restapis", &[], ""),
        (
            "dynamodb",
            "POST",
            "/",
            &[
                "X-Amz-Target: DynamoDB_20120810.ListTables",
                "Content-Type: application/x-amz-json-1.0",
            ],
            "{}",
        ),
        (
            "iam",
            "POST",
            "/",
            &["Content-Type: application/x-www-form-urlencoded"],
            "Action=ListRoles&Version=2010-05-08",
        ),
        (
            "logs",
            "POST",
            "/",
            &[
                "X-Amz-Target: Logs_20140328.DescribeLogGroups",
                "Content-Type: application/x-amz-json-1.1",
            ],
            "{}",
        ),
        ("s3", "GET", "/", &[], ""),
        (
            "monitoring",
            "POST",
            "/",
            &["Content-Type: application/x-www-form-urlencoded"],
            "Action=DescribeAlarms&Version=2010-08-01",
        ),
        (
            "sns",
            "POST",
            "/",
            &["Content-Type: application/x-www-form-urlencoded"],
            "Action=ListTopics&Version=2010-03-31",
        ),
    ];
    calls
        .iter()
        .map(|(service, method, path, headers, body)| {
            let mut stream = std::net::TcpStream::connect(&address).unwrap();
            let mut request = format!(
                "{method} {path} HTTP/1.0\r\nHost: {address}\r\nAuthorization: AWS4-HMAC-SHA256 \
                 Credential=local/20261202/us-east-1/{service}/aws4_request, SignedHeaders=host, \
                 Signature=0\r\nContent-Length: {}\r\n",
                body.len()
            );
            for header in *headers {
                request += &format!("{header}\r\n");
            }
            request += "\r\n";
            request += body;
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            assert!(
                response.starts_with("HTTP/1.1 200"),
                "{service}: {response}"
            );
            (*service, response)
        })
        .collect()
}

fn set(changes: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    changes
        .iter()
        .map(|(address, actions)| (address.to_string(), actions.to_string()))
        .collect()
}

#[test]
fn terraform_on_the_emulator() {
    let stack = Stack::new("terraform");
    let artifacts = stack.artifacts.to_str().unwrap().to_owned();
    stack.ok(&["build", "--out-dir", &artifacts]);
    stack.ok(&["emulator", "start", "--port", "0"]);
    let again = stack.xtask(&["emulator", "start"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already runs"));
    stack.ok(&["tf", "--", "validate"]);

    // From scratch, then nothing left to do.
    stack.ok(&["apply"]);
    let empty = stack.xtask(&["tf", "--", "plan", "-input=false", "-detailed-exitcode"]);
    assert_eq!(empty.status.code(), Some(0), "a second plan has changes");

    // An aliased provider (for us-east-1 certificates, say), with a profile
    // of a real account, in a file of the user's; and the developer's own
    // AWS set-up in the environment. The override covers the alias too, and
    // none of that environment reaches the local stack's Terraform: the
    // plan reads the alias's data source from the emulator (real AWS is
    // unreachable here, and that profile exists nowhere).
    let aliased = stack.local.join("terraform/aliased.tf");
    std::fs::write(
        &aliased,
        r#"provider "aws" {
  alias   = "us_east_1"
  region  = "us-east-1"
  profile = "someones-real-account"
}

data "aws_caller_identity" "us_east_1" {
  provider = aws.us_east_1
}

output "aliased_account" {
  value = data.aws_caller_identity.us_east_1.account_id
}
"#,
    )
    .unwrap();
    let developer = [
        ("AWS_PROFILE", "someones-real-account"),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("AWS_ENDPOINT_URL", "http://192.0.2.1:9"),
        ("AWS_ENDPOINT_URL_STS", "http://192.0.2.1:9"),
    ];
    let planned = stack.xtask_with(&["plan"], &developer);
    assert_ne!(
        planned.status.code(),
        Some(1),
        "the aliased provider did not plan on the emulator:\n{}",
        String::from_utf8_lossy(&planned.stderr)
    );
    let override_tf =
        std::fs::read_to_string(stack.local.join("terraform/local_override.tf")).unwrap();
    assert!(override_tf.contains(r#"alias                       = "us_east_1""#));
    // A provider of another AWS family cannot be pointed at the emulator.
    std::fs::write(
        &aliased,
        "provider \"awscc\" {\n  region = \"us-east-1\"\n}\n",
    )
    .unwrap();
    let refused = stack.xtask(&["plan"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not the `awscc` provider"));
    std::fs::remove_file(&aliased).unwrap();

    // What was applied: the manifest's code, staging on $LATEST, no prod
    // alias before the first publish, a table per stage, PITR on prod only.
    let state = stack.state();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(stack.artifacts.join("manifest.json")).unwrap())
            .unwrap();
    for (name, artifact) in manifest["functions"].as_object().unwrap() {
        let function = values(&state, &format!("aws_lambda_function.this[\"{name}\"]"));
        assert_eq!(function["code_sha256"], artifact["code_sha256"], "{name}");
        assert_eq!(function["runtime"], "provided.al2023");
        assert_eq!(function["handler"], "bootstrap");
        let staging = values(&state, &format!("aws_lambda_alias.staging[\"{name}\"]"));
        assert_eq!(staging["function_version"], "$LATEST");
    }
    assert!(
        !state
            .iter()
            .any(|resource| resource["type"] == "aws_lambda_alias" && resource["name"] == "prod"),
        "a prod alias exists before anything was published"
    );
    for (stage, pitr) in [("staging", false), ("prod", true)] {
        for kind in ["users", "chirps", "files"] {
            let table = values(&state, &format!("aws_dynamodb_table.{kind}[\"{stage}\"]"));
            assert_eq!(table["billing_mode"], "PAY_PER_REQUEST");
            assert_eq!(
                table["point_in_time_recovery"][0]["enabled"], pitr,
                "{kind} {stage}"
            );
        }
    }

    // The files buckets: private, encrypted, one per stage, named apart.
    for stage in ["staging", "prod"] {
        let bucket = values(&state, &format!("aws_s3_bucket.files[\"{stage}\"]"));
        let name = bucket["bucket"].as_str().unwrap();
        assert!(name.contains(&format!("-files-{stage}-")), "{name}");
        let block = values(
            &state,
            &format!("aws_s3_bucket_public_access_block.files[\"{stage}\"]"),
        );
        for field in [
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        ] {
            assert_eq!(block[field], true, "{stage} {field}");
        }
        let encryption = values(
            &state,
            &format!("aws_s3_bucket_server_side_encryption_configuration.files[\"{stage}\"]"),
        );
        assert_eq!(
            encryption["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"],
            "AES256"
        );
    }

    // The policy: exactly the item actions each function's code uses on
    // exactly its two tables, the files function's object actions on its
    // own buckets' objects (and ListBucket on those buckets, so a missing
    // object is a 404), writing to the functions' own log groups, and
    // X-Ray's two actions (which take no resource but "*").
    let policy = values(&state, "aws_iam_role_policy.this")["policy"]
        .as_str()
        .unwrap();
    let policy: Value = serde_json::from_str(policy).unwrap();
    let mut grants = BTreeSet::new();
    for statement in policy["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow");
        let list = |field: &str| -> Vec<String> {
            match &statement[field] {
                Value::String(one) => vec![one.clone()],
                many => many
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|item| item.as_str().unwrap().to_owned())
                    .collect(),
            }
        };
        for action in list("Action") {
            assert!(!action.contains('*'), "wildcard action {action}");
            for resource in list("Resource") {
                grants.insert((action.clone(), resource));
            }
        }
    }
    let arn = |address: &str| values(&state, address)["arn"].as_str().unwrap().to_owned();
    let mut expected = BTreeSet::new();
    let items = [
        ("users", &["GetItem", "UpdateItem"][..]),
        ("chirps", &["GetItem", "PutItem", "Query", "UpdateItem"][..]),
        ("files", &["DeleteItem", "GetItem", "PutItem"][..]),
    ];
    for (kind, actions) in items {
        for stage in ["staging", "prod"] {
            let table = arn(&format!("aws_dynamodb_table.{kind}[\"{stage}\"]"));
            for action in actions {
                expected.insert((format!("dynamodb:{action}"), table.clone()));
            }
        }
    }
    for stage in ["staging", "prod"] {
        let bucket = arn(&format!("aws_s3_bucket.files[\"{stage}\"]"));
        for action in ["DeleteObject", "GetObject", "PutObject"] {
            expected.insert((format!("s3:{action}"), format!("{bucket}/*")));
        }
        expected.insert(("s3:ListBucket".to_owned(), bucket));
    }
    for name in manifest["functions"].as_object().unwrap().keys() {
        let group = arn(&format!("aws_cloudwatch_log_group.this[\"{name}\"]"));
        for action in ["CreateLogStream", "PutLogEvents"] {
            expected.insert((format!("logs:{action}"), format!("{group}:*")));
        }
    }
    for action in ["PutTelemetryRecords", "PutTraceSegments"] {
        expected.insert((format!("xray:{action}"), "*".to_owned()));
    }
    assert_eq!(grants, expected);

    // A rebuild of the same source changes nothing.
    stack.ok(&["build", "--out-dir", &artifacts]);
    assert_eq!(stack.plan(), set(&[]), "a rebuild changed the plan");

    // New code for one function (the users zip stands in for a rebuilt
    // status): that function's code changes, and nothing else, prod least.
    edit_manifest(&stack.artifacts, |manifest| {
        manifest["functions"]["status"] = manifest["functions"]["users"].clone();
    });
    assert_eq!(
        stack.plan(),
        set(&[("aws_lambda_function.this[\"status\"]", "update")])
    );
    stack.ok(&["build", "--out-dir", &artifacts]);
    assert_eq!(
        stack.plan(),
        set(&[]),
        "the rebuild did not restore the manifest"
    );

    // A watch build (`dev --watch`'s profile): the local stack takes it,
    // marked as one, and Terraform refuses it anywhere `accept_watch_builds`
    // is not set, as on AWS.
    edit_manifest(&stack.artifacts, |manifest| {
        manifest["functions"]["status"]["profile"] = "watch".into();
    });
    // The function says so in its description, and nothing else changes.
    assert_eq!(
        stack.plan(),
        set(&[("aws_lambda_function.this[\"status\"]", "update")])
    );
    let refused = stack.xtask(&[
        "tf",
        "--",
        "plan",
        "-input=false",
        "-var",
        "accept_watch_builds=false",
    ]);
    assert!(!refused.status.success(), "a watch build was planned");
    // Terraform wraps its diagnostics: compare the words.
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let words: Vec<&str> = stderr
        .split_whitespace()
        .filter(|word| *word != "│")
        .collect();
    assert!(
        words
            .join(" ")
            .contains("status is a `cargo xtask dev --watch` build (profile watch)"),
        "{stderr}"
    );
    stack.ok(&["build", "--out-dir", &artifacts]);
    assert_eq!(
        stack.plan(),
        set(&[]),
        "the rebuild did not restore the manifest"
    );

    // A new route: its resource, method, integration and responses, and a
    // staging redeployment. No other route's resources, nothing of prod.
    let route = "GET /user/{id}/history";
    let routes = stack.local.join("terraform/test_route_override.tf");
    std::fs::write(&routes, with_routes(&[(route, "users")])).unwrap();
    let changes = stack.plan();
    std::fs::remove_file(&routes).unwrap();
    let mut expected = vec![
        (
            "aws_api_gateway_resource.depth3[\"/user/{id}/history\"]".to_owned(),
            "create",
        ),
        (
            format!("aws_api_gateway_method.this[\"{route}\"]"),
            "create",
        ),
        (
            format!("aws_api_gateway_integration.this[\"{route}\"]"),
            "create",
        ),
        (
            "aws_api_gateway_deployment.staging".to_owned(),
            "create,delete",
        ),
        (
            "aws_api_gateway_stage.this[\"staging\"]".to_owned(),
            "update",
        ),
    ];
    for status in ["200", "400", "403", "404", "409", "500", "502"] {
        for kind in ["method_response", "integration_response"] {
            expected.push((
                format!("aws_api_gateway_{kind}.this[\"{route} {status}\"]"),
                "create",
            ));
        }
    }
    let expected: Vec<(&str, &str)> = expected
        .iter()
        .map(|(address, actions)| (address.as_str(), *actions))
        .collect();
    assert_eq!(changes, set(&expected));
    assert_eq!(stack.plan(), set(&[]), "the route override was not removed");

    // Pinning prod (what `publish` will write): the prod alias and its
    // permission appear, prod is redeployed, and nothing else changes. A pin
    // on $LATEST is refused.
    let pin = stack.local.join("terraform/prod.auto.tfvars.json");
    let unpublished = std::fs::read_to_string(&pin).unwrap();
    let write_pin = |version: &str| {
        let release = serde_json::json!({ "prod_release": {
            "release": 1, "note": "test", "functions": { "status": version }, "api_revision": "r1",
        }});
        std::fs::write(&pin, release.to_string()).unwrap();
    };
    write_pin("1");
    assert_eq!(
        stack.plan(),
        set(&[
            ("aws_lambda_alias.prod[\"status\"]", "create"),
            ("aws_lambda_permission.this[\"status:prod\"]", "create"),
            ("aws_api_gateway_deployment.prod", "create,delete"),
            ("aws_api_gateway_stage.this[\"prod\"]", "update"),
        ])
    );
    write_pin("$LATEST");
    let refused = stack.xtask(&["tf", "--", "plan", "-input=false"]);
    assert!(
        !refused.status.success(),
        "a prod pin on $LATEST was planned"
    );
    std::fs::write(&pin, unpublished).unwrap();
    assert_eq!(stack.plan(), set(&[]), "the pin was not restored");

    // Teardown. Data in a staging table and bucket, and prod's tables'
    // deletion protection: a dry run shows them and destroys nothing; a
    // destroy without --delete-data refuses, nothing destroyed; with it,
    // the emulator keeps nothing of the stack.
    let before = emulator_lists(&stack);
    for (service, listed) in &before {
        assert!(
            listed.contains("rust-lambda-api"),
            "{service} lists nothing of the stack"
        );
    }
    let (runtime, config) = support::emulator_sdk(&stack);
    runtime.block_on(async {
        aws_sdk_dynamodb::Client::new(&config)
            .put_item()
            .table_name("rust-lambda-api-users-staging")
            .item(
                "id",
                aws_sdk_dynamodb::types::AttributeValue::S("kept".into()),
            )
            .send()
            .await
            .unwrap();
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(s3)
            .put_object()
            .bucket("rust-lambda-api-files-staging-123456789012")
            .key("kept")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"data"))
            .send()
            .await
            .unwrap();
    });
    let resources = stack.state().len();
    let dry = stack.ok(&["destroy", "--dry-run"]);
    for said in [
        "aws_lambda_function: rust-lambda-api-chirps, rust-lambda-api-files",
        "table rust-lambda-api-users-staging holds items",
        "bucket rust-lambda-api-files-staging-123456789012 holds objects",
        "aws_dynamodb_table.users[\"prod\"] has deletion protection on",
        "dry run: nothing was destroyed",
    ] {
        assert!(dry.contains(said), "{said:?} not in:\n{dry}");
    }
    assert_eq!(
        stack.state().len(),
        resources,
        "the dry run destroyed something"
    );
    let refused = stack.xtask(&["destroy"]);
    assert!(
        !refused.status.success(),
        "destroyed data without --delete-data"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--delete-data"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        stack.state().len(),
        resources,
        "the refused destroy destroyed something"
    );
    let destroyed = stack.ok(&["destroy", "--delete-data"]);
    assert!(
        destroyed.contains("nothing of the stack remains"),
        "{destroyed}"
    );
    for (service, listed) in emulator_lists(&stack) {
        assert!(
            !listed.contains("rust-lambda-api"),
            "{service} still lists:\n{listed}"
        );
    }
    let again = stack.ok(&["destroy"]);
    assert!(again.contains("nothing to destroy"), "{again}");

    // The emulator's lifetime is the local stack's.
    stack.ok(&["emulator", "status"]);
    stack.ok(&["emulator", "stop"]);
    assert_eq!(stack.xtask(&["emulator", "status"]).status.code(), Some(1));
}

/// The configuration in `terraform/` is the real one: the local stack's
/// differences live in the generated override, never in `terraform/`.
#[test]
fn terraform_dir_knows_no_emulator() {
    // Its roots: the stack's, and the state bucket's (bootstrap/).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("bootstrap"), root.join("deployer")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    assert!(files.iter().any(|path| path.ends_with("bootstrap/main.tf")));
    for path in files {
        let name = path.file_name().and_then(OsStr::to_str).unwrap().to_owned();
        if path.extension() != Some(OsStr::new("tf")) {
            continue;
        }
        assert!(
            !name.ends_with("override.tf"),
            "{name}: override files belong to the local stack"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for local in ["127.0.0.1", "localhost", "endpoints", "skip_credentials"] {
            assert!(!text.contains(local), "{name} mentions {local}");
        }
    }
}
