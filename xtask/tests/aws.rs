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
//!   state.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;
use support::{Stack, build_in_real_workspace, copy_workspace, emulator_sdk};

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
}
