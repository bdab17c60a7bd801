//! The `--aws` path, rehearsed against the emulator standing in for AWS
//! through the standard AWS configuration (`AWS_ENDPOINT_URL`, keys in the
//! environment), on a scratch copy of the workspace (so `terraform/` may
//! get a backend file and a `.terraform` of its own):
//!
//! - `bootstrap --aws` creates the state bucket (versioned, encrypted,
//!   public access blocked, TLS only) and writes the backend settings;
//!   again, it changes nothing;
//! - `apply --aws` keeps the state in that bucket, never in `terraform/`;
//! - a state lock held elsewhere makes an apply give up, saying who holds
//!   it, with nothing written; two applies at once leave one consistent
//!   state;
//! - a broken backend file, a state bucket that does not exist and missing
//!   credentials each stop the command with what to do;
//! - the release: `serve --aws` serves the stages (the emulator's API
//!   Gateway has no invoke URL to call), `verify --aws --url` checks
//!   staging there, `publish --aws` refuses without a receipt and with a
//!   foreign change in the plan, converges after being killed between pin
//!   and apply; a second release, `rollback --aws`, `status --aws`, an
//!   empty plan, and `destroy --aws` leaving none of the stack. The pin and
//!   history live in `terraform/`, the receipt in `target/aws/`, and none
//!   of it in the local stack's directory.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;
use support::{Dev, Stack, build_in_real_workspace, copy_workspace, emulator_sdk};

const KEY: &str = "rust-lambda-api/terraform.tfstate";

/// The scratch workspace and a stack whose emulator plays AWS.
struct Aws {
    stack: Stack,
    workspace: PathBuf,
    endpoint: String,
}

impl Aws {
    /// `cargo xtask ARGS` against "AWS": the emulator through the standard
    /// variables, nothing of the developer's own AWS set-up.
    fn xtask(&self, args: &[&str]) -> Output {
        self.stack.xtask_with(args, &self.env())
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIAEMULATEDDEPLOYER"),
            ("AWS_SECRET_ACCESS_KEY", "emulated"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
    }

    fn ok(&self, args: &[&str]) -> String {
        self.stack.ok_with(args, &self.env())
    }

    fn terraform_dir(&self) -> PathBuf {
        self.workspace.join("terraform")
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The state object's version ids.
async fn state_versions(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeSet<String> {
    let listed = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(KEY)
        .send()
        .await
        .unwrap();
    listed
        .versions()
        .iter()
        .filter(|version| version.key() == Some(KEY))
        .filter_map(|version| version.version_id().map(str::to_owned))
        .collect()
}

fn backend_bucket(workspace: &Path) -> String {
    let settings = std::fs::read_to_string(workspace.join("terraform/state.s3.tfbackend")).unwrap();
    let line = settings
        .lines()
        .find(|line| line.starts_with("bucket"))
        .unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}

#[test]
fn the_aws_state_lives_in_a_locked_bucket() {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let workspace = scratch.join("aws-workspace");
    copy_workspace(&workspace);
    let mut stack = Stack::new("aws");
    stack
        .env
        .push(("XTASK_WORKSPACE".to_owned(), workspace.clone()));
    build_in_real_workspace(&stack);
    stack.ok(&["emulator", "start", "--port", "0"]);
    let record: Value =
        serde_json::from_slice(&std::fs::read(stack.local.join("emulator.json")).unwrap()).unwrap();
    let endpoint = record["endpoint"].as_str().unwrap().to_owned();
    let aws = Aws {
        stack,
        workspace: workspace.clone(),
        endpoint,
    };
    let backend_file = aws.terraform_dir().join("state.s3.tfbackend");

    // Refused, changing nothing: bootstrap without --aws, an AWS apply
    // before there is a state bucket.
    let local = aws.xtask(&["bootstrap"]);
    assert!(!local.status.success());
    assert!(text(&local).contains("pass --aws"), "{}", text(&local));
    let early = aws.xtask(&["apply", "--aws", "--yes"]);
    assert!(!early.status.success());
    assert!(
        text(&early).contains("run `cargo xtask bootstrap --aws` once"),
        "{}",
        text(&early)
    );
    // A backend file that is not backend settings, and one naming a bucket
    // that does not exist: each stops at `terraform init`, saying what to
    // do, with nothing applied.
    for (settings, says) in [
        ("bucket = = \"x\"\n", "is not valid backend settings"),
        (
            "bucket       = \"no-such-state-bucket\"\nkey          = \"s.tfstate\"\n\
             region       = \"us-east-1\"\nuse_lockfile = true\n",
            "does not exist for these credentials",
        ),
    ] {
        std::fs::write(&backend_file, settings).unwrap();
        let broken = aws.xtask(&["apply", "--aws", "--yes"]);
        assert!(!broken.status.success());
        assert!(text(&broken).contains(says), "{}", text(&broken));
        std::fs::remove_file(&backend_file).unwrap();
        let _ = std::fs::remove_dir_all(aws.terraform_dir().join(".terraform"));
    }
    let dry = aws.ok(&["bootstrap", "--aws", "--dry-run"]);
    assert!(dry.contains("dry run: nothing was created"), "{dry}");
    assert!(!backend_file.exists());

    let (runtime, config) = emulator_sdk(&aws.stack);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let buckets = runtime.block_on(s3.list_buckets().send()).unwrap();
    assert!(buckets.buckets().is_empty(), "a dry run made a bucket");

    // The bucket, as the state needs it.
    let made = aws.ok(&["bootstrap", "--aws", "--yes"]);
    assert!(made.contains("wrote "), "{made}");
    let bucket = backend_bucket(&workspace);
    assert_eq!(bucket, "rust-lambda-api-tfstate-123456789012");
    let settings = std::fs::read_to_string(&backend_file).unwrap();
    assert!(settings.contains(&format!("key          = \"{KEY}\"")));
    assert!(settings.contains("use_lockfile = true"), "{settings}");
    runtime.block_on(async {
        let encryption = s3
            .get_bucket_encryption()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let rule = &encryption
            .server_side_encryption_configuration()
            .unwrap()
            .rules()[0];
        assert_eq!(
            rule.apply_server_side_encryption_by_default()
                .unwrap()
                .sse_algorithm()
                .as_str(),
            "AES256"
        );
        let blocked = s3
            .get_public_access_block()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let blocked = blocked.public_access_block_configuration().unwrap();
        assert_eq!(
            (
                blocked.block_public_acls(),
                blocked.block_public_policy(),
                blocked.ignore_public_acls(),
                blocked.restrict_public_buckets()
            ),
            (Some(true), Some(true), Some(true), Some(true))
        );
        let policy = s3.get_bucket_policy().bucket(&bucket).send().await.unwrap();
        let policy: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        let statement = &policy["Statement"][0];
        assert_eq!(statement["Effect"], "Deny");
        assert_eq!(
            statement["Condition"]["Bool"]["aws:SecureTransport"],
            "false"
        );
    });
    // Again: nothing to create, the settings file as it was.
    // (From a shell in another region too: the settings file says where.)
    let mut elsewhere = aws.env();
    elsewhere.push(("AWS_REGION", "eu-west-1"));
    let again = aws
        .stack
        .xtask_with(&["bootstrap", "--aws", "--yes"], &elsewhere);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("is up to date"), "{}", text(&again));
    assert!(text(&again).contains("No changes."), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(&backend_file).unwrap(), settings);
    // Asked for another bucket than the settings name: refused before
    // anything is made, the settings file as it was.
    let refused = aws.xtask(&["bootstrap", "--aws", "--yes", "--bucket", "another-state"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("names other settings"),
        "{}",
        text(&refused)
    );
    assert_eq!(std::fs::read_to_string(&backend_file).unwrap(), settings);
    let buckets = runtime.block_on(s3.list_buckets().send()).unwrap();
    assert_eq!(buckets.buckets().len(), 1, "{buckets:?}");

    // TLS only: the emulator (plain HTTP; it evaluates bucket policies for
    // object requests) refuses an object request as AWS would over HTTP.
    // It speaks no TLS, so for the rest of this rehearsal the policy goes.
    let refused = runtime.block_on(
        s3.put_object()
            .bucket(&bucket)
            .key("over-http")
            .body(ByteStream::from_static(b"plain"))
            .send(),
    );
    let refused = refused.expect_err("the bucket took an object over plain HTTP");
    assert_eq!(
        refused.raw_response().map(|r| r.status().as_u16()),
        Some(403),
        "{refused:?}"
    );
    runtime
        .block_on(s3.delete_bucket_policy().bucket(&bucket).send())
        .unwrap();

    // The stack's state goes to the bucket, not to terraform/.
    aws.ok(&["apply", "--aws", "--yes"]);
    assert!(!aws.terraform_dir().join("terraform.tfstate").exists());
    let versions = runtime.block_on(state_versions(&s3, &bucket));
    assert!(!versions.is_empty(), "no state in {bucket}");
    let state: Value = runtime.block_on(async {
        let object = s3
            .get_object()
            .bucket(&bucket)
            .key(KEY)
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&object.body.collect().await.unwrap().into_bytes()).unwrap()
    });
    let types: Vec<&str> = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|resource| resource["type"].as_str())
        .collect();
    for kind in [
        "aws_lambda_function",
        "aws_lambda_alias",
        "aws_api_gateway_rest_api",
        "aws_dynamodb_table",
    ] {
        assert!(types.contains(&kind), "no {kind} in the bucket's state");
    }
    let lock_key = format!("{KEY}.tflock");
    let lock_left = runtime.block_on(s3.head_object().bucket(&bucket).key(&lock_key).send());
    assert!(lock_left.is_err(), "the apply left its lock behind");

    // A lock held elsewhere (another runner's apply): the apply gives up
    // after its timeout, saying who holds it, and writes nothing.
    let held = serde_json::json!({
        "ID": "5a6e0c8e-0000-4000-8000-000000000001",
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": "deployer@ci-runner-7",
        "Version": "1.11.4",
        "Created": "2026-12-02T04:00:00Z",
        "Path": format!("{bucket}/{KEY}"),
    });
    runtime
        .block_on(
            s3.put_object()
                .bucket(&bucket)
                .key(&lock_key)
                .body(ByteStream::from(held.to_string().into_bytes()))
                .send(),
        )
        .unwrap();
    std::fs::write(
        aws.terraform_dir().join("memory.auto.tfvars.json"),
        r#"{"memory_size": 256}"#,
    )
    .unwrap();
    let locked = aws.xtask(&["apply", "--aws", "--yes", "--lock-timeout", "2s"]);
    assert!(!locked.status.success(), "applied under another's lock");
    assert!(
        text(&locked).contains("deployer@ci-runner-7"),
        "{}",
        text(&locked)
    );
    assert_eq!(runtime.block_on(state_versions(&s3, &bucket)), versions);
    runtime
        .block_on(s3.delete_object().bucket(&bucket).key(&lock_key).send())
        .unwrap();

    // Two applies of the same change at once: Terraform lets one write at a
    // time; whichever comes second waits, then finds nothing to do or its
    // plan stale, and says so. One consistent state either way.
    let env: Vec<(String, String)> = aws
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let apply = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        for key in support::foreign_env() {
            command.env_remove(key);
        }
        command
            .args(["apply", "--aws", "--yes"])
            .env("XTASK_LOCAL_DIR", &aws.stack.local)
            .env("XTASK_ARTIFACTS_DIR", &aws.stack.artifacts)
            .env("XTASK_WORKSPACE", &workspace)
            .envs(env.iter().cloned())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command.spawn().unwrap()
    };
    let (first, second) = (apply(), apply());
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let succeeded = outputs.iter().filter(|o| o.status.success()).count();
    assert!(succeeded >= 1, "neither apply succeeded");
    for output in &outputs {
        eprintln!(
            "$ cargo xtask apply --aws --yes (at once)\n{}",
            text(output)
        );
    }
    for output in outputs.iter().filter(|o| !o.status.success()) {
        let said = text(output);
        assert!(
            said.contains("Saved plan is stale") || said.contains("state lock"),
            "an apply failed for another reason:\n{said}"
        );
    }
    let plan = aws.xtask(&[
        "tf",
        "--aws",
        "--",
        "plan",
        "-input=false",
        "-detailed-exitcode",
    ]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let lambda = aws_sdk_lambda::Client::new(&config);
    let memory = runtime
        .block_on(
            lambda
                .get_function_configuration()
                .function_name("rust-lambda-api-status")
                .send(),
        )
        .unwrap()
        .memory_size();
    assert_eq!(memory, Some(256));
    // The bucket is versioned (moto 5.2.1 answers GetBucketVersioning in
    // a shape the SDK refuses; the versions themselves are the proof).
    let kept = runtime.block_on(state_versions(&s3, &bucket));
    assert!(
        kept.len() > versions.len() && kept.is_superset(&versions),
        "the replaced states were not kept: {versions:?} then {kept:?}"
    );
    let lock_left = runtime.block_on(s3.head_object().bucket(&bucket).key(&lock_key).send());
    assert!(lock_left.is_err(), "an apply left its lock behind");

    // Missing credentials: said, before anything is read or written.
    let mut keyless = aws.env();
    keyless.retain(|(key, _)| !key.starts_with("AWS_ACCESS_KEY_ID"));
    keyless.push(("AWS_ACCESS_KEY_ID", ""));
    let anonymous = aws.stack.xtask_with(&["status", "--aws"], &keyless);
    assert!(!anonymous.status.success());
    assert!(
        text(&anonymous).contains("No AWS credentials"),
        "{}",
        text(&anonymous)
    );

    release_on_aws(&aws, &runtime, &config);
}

/// The release flow on "AWS", the stack applied (status at 256 MB) and
/// nothing published yet.
fn release_on_aws(aws: &Aws, runtime: &tokio::runtime::Runtime, config: &aws_config::SdkConfig) {
    let lambda = aws_sdk_lambda::Client::new(config);
    let pin_path = aws.terraform_dir().join("prod.auto.tfvars.json");
    let history_path = aws.terraform_dir().join("prod.releases.json");
    let receipt_path = aws.workspace.join("target/aws/receipt.json");
    let prod_version = |function: &str| -> Option<String> {
        runtime
            .block_on(
                lambda
                    .get_alias()
                    .function_name(format!("rust-lambda-api-{function}"))
                    .name("prod")
                    .send(),
            )
            .ok()
            .and_then(|alias| alias.function_version().map(str::to_owned))
    };
    let refused = |args: &[&str]| -> String {
        let output = aws.xtask(args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "cargo xtask {} did not refuse:\n{}",
            args.join(" "),
            text(&output)
        );
        text(&output)
    };

    // Nothing verified: refused.
    let err = refused(&["publish", "--aws"]);
    assert!(err.contains("no verify receipt"), "{err}");
    // On AWS itself, API Gateway serves the stages: serve --aws refuses
    // without an endpoint standing in for AWS.
    let mut real = aws.env();
    real.retain(|(key, _)| *key != "AWS_ENDPOINT_URL");
    real.push(("AWS_ENDPOINT_URL", ""));
    let refused_serve = aws.stack.xtask_with(&["serve", "--aws"], &real);
    assert!(!refused_serve.status.success());
    assert!(
        text(&refused_serve).contains("API Gateway serves the stages"),
        "{}",
        text(&refused_serve)
    );

    let serve = Dev::launch(&aws.stack, &["serve", "--aws", "--port", "0"], &aws.env());
    let staging = format!("http://{}/staging", serve.address);
    serve.check("GET", "/prod/status", None, 500);
    let bad_url = aws.xtask(&["verify", "--aws", "--url", "127.0.0.1:1/staging"]);
    assert_eq!(bad_url.status.code(), Some(2), "{}", text(&bad_url));
    assert!(
        text(&bad_url).contains("is not a base URL"),
        "{}",
        text(&bad_url)
    );

    // Release 1.
    let verified = aws.ok(&["verify", "--aws", "--url", &staging]);
    assert!(verified.contains("verified: "), "{verified}");
    let receipt: Value = serde_json::from_slice(&std::fs::read(&receipt_path).unwrap()).unwrap();
    assert_eq!(receipt["target"], "aws");
    assert_eq!(receipt["url"], staging.as_str());
    assert_eq!(receipt["passed"], true);
    assert!(
        !aws.stack.local.join("release").exists(),
        "a release file went to the local stack"
    );
    let pin = std::fs::read(&pin_path).unwrap();
    let dry = aws.ok(&["publish", "--aws", "--dry-run"]);
    assert!(dry.contains("dry run: nothing was published"), "{dry}");
    assert_eq!(std::fs::read(&pin_path).unwrap(), pin);
    assert_eq!(prod_version("status"), None);

    // A foreign change in terraform/ rides along: refused, named, nothing
    // pinned.
    let edit = aws.terraform_dir().join("prod_alias_override.tf");
    std::fs::write(
        &edit,
        "resource \"aws_lambda_alias\" \"staging\" {\n  description = \"smuggled\"\n}\n",
    )
    .unwrap();
    let err = refused(&["publish", "--aws"]);
    assert!(err.contains("aws_lambda_alias.staging"), "{err}");
    assert_eq!(std::fs::read(&pin_path).unwrap(), pin);
    std::fs::remove_file(&edit).unwrap();

    // Killed between writing the pin and applying it: prod has not moved;
    // run again, it converges.
    let pause = aws.workspace.join("pause");
    std::fs::create_dir_all(&pause).unwrap();
    let mut interrupted = aws.env();
    let pause_dir = pause.to_str().unwrap().to_owned();
    interrupted.extend([
        ("XTASK_TEST_PAUSE_DIR", pause_dir.as_str()),
        ("XTASK_TEST_PAUSE_AT", "apply"),
        ("XTASK_TEST_PAUSE_FUNCTION", "prod"),
    ]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    for key in support::foreign_env() {
        command.env_remove(key);
    }
    let mut child = command
        .args(["publish", "--aws"])
        .env("XTASK_LOCAL_DIR", &aws.stack.local)
        .env("XTASK_ARTIFACTS_DIR", &aws.stack.artifacts)
        .env("XTASK_WORKSPACE", &aws.workspace)
        .envs(interrupted.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !pause.join("prod.ready").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "publish never reached its apply"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "publish ended before its apply"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_ne!(
        std::fs::read(&pin_path).unwrap(),
        pin,
        "the pin was not written"
    );
    assert_eq!(prod_version("status"), None, "prod moved before the apply");
    let published = aws.ok(&["publish", "--aws"]);
    assert!(published.contains("prod is at release 1"), "{published}");
    assert!(published.contains("commit "), "{published}");
    assert_eq!(prod_version("status").as_deref(), Some("1"));
    let history: Value = serde_json::from_slice(&std::fs::read(&history_path).unwrap()).unwrap();
    assert_eq!(
        history["releases"].as_array().unwrap().len(),
        1,
        "{history}"
    );
    let answered = |path: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let reply = serve.call("GET", path, None);
            if reply.status == 200 || std::time::Instant::now() > deadline {
                return reply;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    };
    let prod = answered("/prod/status");
    assert_eq!(prod.status, 200, "{}", prod.body);
    assert_eq!(prod.body["function_version"], "1", "{}", prod.body);

    // Release 2: status with more memory (a version snapshots its
    // configuration), verified and published.
    std::fs::write(
        aws.terraform_dir().join("memory.auto.tfvars.json"),
        r#"{"memory_size": 512}"#,
    )
    .unwrap();
    aws.ok(&["apply", "--aws", "--yes"]);
    let err = refused(&["publish", "--aws"]);
    assert!(err.contains("changed since verify"), "{err}");
    aws.ok(&["verify", "--aws", "--url", &staging]);
    let published = aws.ok(&["publish", "--aws"]);
    assert!(published.contains("prod is at release 2"), "{published}");
    assert_eq!(prod_version("status").as_deref(), Some("2"));
    let status = aws.ok(&["status", "--aws"]);
    assert!(status.contains("release 2"), "{status}");

    // Rollback: prod on release 1's versions again, and the pin says so.
    let rolled = aws.ok(&["rollback", "--aws"]);
    assert!(rolled.contains("prod is at release 1"), "{rolled}");
    assert_eq!(prod_version("status").as_deref(), Some("1"));
    let pinned: Value = serde_json::from_slice(&std::fs::read(&pin_path).unwrap()).unwrap();
    assert_eq!(pinned["prod_release"]["release"], 1, "{pinned}");
    let status = aws.ok(&["status", "--aws"]);
    assert!(status.contains("release 1"), "{status}");
    let plan = aws.xtask(&["plan", "--aws"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    drop(serve);

    // Teardown: nothing of the stack stays; the state bucket does.
    let destroyed = aws.ok(&["destroy", "--aws", "--yes", "--delete-data"]);
    assert!(destroyed.contains("destroyed"), "{destroyed}");
    assert!(!receipt_path.exists(), "the receipt outlived the stack");
    runtime.block_on(async {
        let functions = lambda.list_functions().send().await.unwrap();
        assert!(functions.functions().is_empty(), "{functions:?}");
        let apis = aws_sdk_apigateway::Client::new(config)
            .get_rest_apis()
            .send()
            .await
            .unwrap();
        assert!(apis.items().is_empty(), "{apis:?}");
        let tables = aws_sdk_dynamodb::Client::new(config)
            .list_tables()
            .send()
            .await
            .unwrap();
        assert!(tables.table_names().is_empty(), "{tables:?}");
    });
}
