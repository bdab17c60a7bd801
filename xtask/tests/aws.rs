//! The `--aws` path, rehearsed against the emulator standing in for AWS
//! through the standard AWS configuration (`AWS_ENDPOINT_URL`, keys in the
//! environment), on a scratch copy of the workspace (so `terraform/` may
//! get a backend file and a `.terraform` of its own), with IAM enforced:
//! an administrator bootstraps and makes the deployer (`deployer --aws`),
//! and everything after runs with the keys of a user holding only the
//! deployer policy (as the emulator judges it: [`EMULATED_POLICY`]), or
//! only the read-only one:
//!
//! - `bootstrap --aws` creates the state bucket (versioned, encrypted,
//!   public access blocked, TLS only) and writes the backend settings;
//!   again, it changes nothing;
//! - `apply --aws` keeps the state in that bucket, never in `terraform/`;
//! - the deployer may not make an IAM user or read another bucket; the
//!   read-only user may plan (without a lock) and read the status, and its
//!   apply is refused, saying why;
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
use support::{Dev, Stack, build_in_real_workspace, copy_workspace, emulator_sdk_as};

const KEY: &str = "rust-lambda-api/terraform.tfstate";

/// The scratch workspace and a stack whose emulator plays AWS; the keys
/// commands run with.
struct Aws {
    stack: Stack,
    workspace: PathBuf,
    endpoint: String,
    keys: Keys,
}

/// An IAM user's access key.
#[derive(Clone, Debug)]
struct Keys {
    id: String,
    secret: String,
}

/// The IAM set-up the emulator needs, in Python with boto3 (moto's own
/// dependency), as `python3 -c IAM ENDPOINT COMMAND ...`:
///
/// - `admin`: while IAM is not enforced yet, an `admin` user allowed
///   everything, then enforcement on (moto's `/moto-api/reset-auth`);
/// - `user NAME POLICY` (with an admin's keys in the environment): a user
///   holding only POLICY, translated by `translate` below;
/// - `expired` (as the admin): session credentials that have expired;
/// - `zone NAME`, `records ZONE` (as the admin): a Route 53 hosted zone, its
///   records;
/// - `probe` (with the deployer's keys): what the deployer may not do.
///
/// Each prints JSON.
const IAM: &str = r#"
import json, sys, urllib.request
import boto3, botocore.config, botocore.session

endpoint, command = sys.argv[1], sys.argv[2]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")

def key(user):
    made = iam.create_access_key(UserName=user)["AccessKey"]
    return {"id": made["AccessKeyId"], "secret": made["SecretAccessKey"]}

# The policy as moto 5.2 judges it (the shipped one stays in AWS's terms):
# API Gateway by operation name, not by HTTP method (apigateway:GET -> every
# operation that is a GET); CloudWatch by its signing name (cloudwatch:X
# -> monitoring:X); S3's HeadBucket as its own action (AWS
# authorizes it as ListBucket); and every resource but S3's as "*", since
# moto judges those actions on "*" (so only S3's scoping is checked here).
def translate(policy):
    model = botocore.session.get_session().get_service_model("apigateway")
    by_method = {}
    for name in model.operation_names:
        by_method.setdefault(model.operation_model(name).http["method"], []).append("apigateway:" + name)
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        judged = []
        for action in actions:
            service, name = action.split(":", 1)
            if service == "apigateway":
                judged += by_method[name]
            elif service == "cloudwatch":
                judged.append("monitoring:" + name)
            else:
                judged.append(action)
            if action == "s3:ListBucket":
                judged.append("s3:HeadBucket")
        statement["Action"] = sorted(set(judged))
        if not any(action.startswith("s3:") for action in judged):
            statement["Resource"] = "*"
        statement.pop("Condition", None)
    return policy

if command == "admin":
    iam.create_user(UserName="admin")
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="admin", PolicyName="everything", PolicyDocument=json.dumps(everything))
    made = key("admin")
    request = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request).read()
    print(json.dumps(made))
elif command == "user":
    name, policy = sys.argv[3], json.loads(sys.argv[4])
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(translate(policy)))
    print(json.dumps(key(name)))
elif command == "expired":
    # Session credentials of a role the admin may assume, for one second.
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"AWS": "arn:aws:iam::123456789012:user/admin"}}]}
    iam.create_role(RoleName="short-lived", AssumeRolePolicyDocument=json.dumps(trust))
    sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1",
                       config=botocore.config.Config(parameter_validation=False))
    made = sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/short-lived",
                           RoleSessionName="stale", DurationSeconds=1)["Credentials"]
    import time
    time.sleep(2)
    print(json.dumps({"id": made["AccessKeyId"], "secret": made["SecretAccessKey"], "token": made["SessionToken"]}))
elif command == "zone":
    route53 = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")
    made = route53.create_hosted_zone(Name=sys.argv[3], CallerReference="aws.rs")
    print(json.dumps({"id": made["HostedZone"]["Id"].split("/")[-1]}))
elif command == "records":
    route53 = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")
    listed = route53.list_resource_record_sets(HostedZoneId=sys.argv[3])["ResourceRecordSets"]
    print(json.dumps([[record["Name"], record["Type"]] for record in listed]))
elif command == "probe":
    said = {}
    try:
        iam.create_user(UserName="intruder")
        said["create_user"] = "allowed"
    except Exception as err:
        said["create_user"] = err.response["Error"]["Code"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        s3.list_objects_v2(Bucket=sys.argv[3])
        said["other_bucket"] = "allowed"
    except Exception as err:
        said["other_bucket"] = err.response["Error"]["Code"]
    print(json.dumps(said))
"#;

/// `python3 -c IAM ENDPOINT ARGS` as `keys` (none: any, before enforcement).
fn iam(endpoint: &str, keys: Option<&Keys>, args: &[&str]) -> Value {
    let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut command = Command::new(python);
    for key in support::foreign_env() {
        command.env_remove(key);
    }
    let (id, secret) = keys.map_or(("setup", "setup"), |k| (k.id.as_str(), k.secret.as_str()));
    let output = command
        .args(["-c", IAM, endpoint])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

impl Keys {
    fn from(value: &Value) -> Keys {
        Keys {
            id: value["id"].as_str().unwrap().to_owned(),
            secret: value["secret"].as_str().unwrap().to_owned(),
        }
    }
}

impl Aws {
    /// `cargo xtask ARGS` against "AWS": the emulator through the standard
    /// variables, nothing of the developer's own AWS set-up.
    fn xtask(&self, args: &[&str]) -> Output {
        self.stack.xtask_with(args, &self.env())
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env_as(&self.keys)
    }

    /// The environment of a command run as `keys`' user.
    fn env_as<'a>(&'a self, keys: &'a Keys) -> Vec<(&'a str, &'a str)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", keys.id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", keys.secret.as_str()),
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
    // IAM enforced once the admin exists.
    stack.ok_with(
        &["emulator", "start", "--port", "0"],
        &[("INITIAL_NO_AUTH_ACTION_COUNT", "1000000000")],
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(stack.local.join("emulator.json")).unwrap()).unwrap();
    let endpoint = record["endpoint"].as_str().unwrap().to_owned();
    let admin = Keys::from(&iam(&endpoint, None, &["admin"]));
    let mut aws = Aws {
        stack,
        workspace: workspace.clone(),
        endpoint,
        keys: admin.clone(),
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

    let (runtime, config) = emulator_sdk_as(&aws.stack, &admin.id, &admin.secret);
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

    // The deployer, made by the admin: its policies, and the roles GitHub's
    // workflows assume. From now on every command runs as a user holding
    // the deployer policy and nothing else.
    let refused = aws.xtask(&["deployer"]);
    assert!(text(&refused).contains("pass --aws"), "{}", text(&refused));
    let dry = aws.ok(&["deployer", "--aws", "--repository", "acme/api", "--dry-run"]);
    assert!(dry.contains("dry run: nothing was created"), "{dry}");
    // The stack gets a custom domain, in a zone the admin made.
    let zone = iam(&aws.endpoint, Some(&admin), &["zone", "example.test"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(
        aws.terraform_dir().join("domain.auto.tfvars.json"),
        serde_json::json!({"domain": "example.test", "hosted_zone_id": zone}).to_string(),
    )
    .unwrap();
    let made = aws.ok(&[
        "deployer",
        "--aws",
        "--repository",
        "acme/api",
        "--hosted-zone-id",
        &zone,
        "--yes",
    ]);
    assert!(
        made.contains(
            "AWS_DEPLOYER_ROLE_ARN = arn:aws:iam::123456789012:role/rust-lambda-api-deployer"
        ),
        "{made}"
    );
    let policy = |name: &str| -> String {
        let output = Command::new("terraform")
            .arg(format!(
                "-chdir={}",
                aws.terraform_dir().join("deployer").display()
            ))
            .args(["output", "-raw", name])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    let (deployer_policy, readonly_policy) = (policy("deployer_policy"), policy("readonly_policy"));
    // An independent IAM linter finds nothing in either.
    let parliament = std::env::var_os("PARLIAMENT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/linters/bin/parliament"),
        PathBuf::from,
    );
    for document in [&deployer_policy, &readonly_policy] {
        let linted = Command::new(&parliament)
            .args(["--string", document])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|err| {
                panic!(
                    "{}: {err} (`cargo xtask test` installs it)",
                    parliament.display()
                )
            });
        assert!(
            linted.status.success() && linted.stdout.is_empty(),
            "parliament: {}",
            text(&linted)
        );
    }
    let shipped: Value = serde_json::from_str(&deployer_policy).unwrap();
    // IAM: the functions' role and nothing else (never the deployer's own
    // roles, which share the stack's prefix); API Gateway's service-linked
    // role only through CreateServiceLinkedRole.
    for statement in shipped["Statement"].as_array().unwrap() {
        let sid = statement["Sid"].as_str().unwrap_or_default();
        if sid == "FunctionRole" || sid == "PassFunctionRole" {
            assert_eq!(
                statement["Resource"], "arn:aws:iam::123456789012:role/rust-lambda-api-lambda",
                "{statement}"
            );
        }
    }
    for statement in shipped["Statement"].as_array().unwrap() {
        let actions = match &statement["Action"] {
            Value::Array(actions) => actions.clone(),
            action => vec![action.clone()],
        };
        for action in actions {
            assert!(
                !action.as_str().unwrap().contains('*'),
                "a wildcard action: {action}"
            );
        }
    }
    let endpoint = aws.endpoint.clone();
    let deployer = Keys::from(&iam(
        &endpoint,
        Some(&admin),
        &["user", "deployer", &deployer_policy],
    ));
    let reader = Keys::from(&iam(
        &endpoint,
        Some(&admin),
        &["user", "reader", &readonly_policy],
    ));
    aws.keys = deployer.clone();
    let other = "another-teams-bucket";
    runtime
        .block_on(s3.create_bucket().bucket(other).send())
        .unwrap();
    let probed = iam(&endpoint, Some(&deployer), &["probe", other]);
    assert_eq!(probed["create_user"], "AccessDenied", "{probed}");
    assert_eq!(probed["other_bucket"], "AccessDenied", "{probed}");

    // The stack's state goes to the bucket, not to terraform/.
    aws.ok(&["apply", "--aws", "--yes"]);
    // With its custom domain: alias records for both stages' names.
    let records = iam(&aws.endpoint, Some(&admin), &["records", &zone]);
    for name in ["api.example.test.", "staging.api.example.test."] {
        assert!(
            records
                .as_array()
                .unwrap()
                .iter()
                .any(|record| record[0] == name && record[1] == "A"),
            "no alias record {name}: {records}"
        );
    }
    // The read-only user plans (taking no lock) and reads the status; its
    // apply is refused at the lock, saying what it lacks.
    let mut reading = aws.env_as(&reader);
    reading.push(("TF_CLI_ARGS_plan", "-lock=false"));
    let planned = aws.stack.xtask_with(&["plan", "--aws"], &reading);
    assert_eq!(planned.status.code(), Some(0), "{}", text(&planned));
    let status = aws.stack.xtask_with(&["status", "--aws"], &reading);
    assert!(status.status.success(), "{}", text(&status));
    let applied = aws
        .stack
        .xtask_with(&["apply", "--aws", "--yes"], &aws.env_as(&reader));
    assert!(!applied.status.success());
    assert!(
        text(&applied).contains("AWS refused these credentials an action"),
        "{}",
        text(&applied)
    );
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
        let mut command = aws.stack.command(&["apply", "--aws", "--yes"]);
        command
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

    // Expired session credentials (a CI token past its hour, say): said.
    let stale = iam(&aws.endpoint, Some(&admin), &["expired"]);
    let mut expired = aws.env_as(&aws.keys);
    expired
        .retain(|(key, _)| !key.starts_with("AWS_ACCESS_KEY_ID") && !key.starts_with("AWS_SECRET"));
    expired.extend([
        ("AWS_ACCESS_KEY_ID", stale["id"].as_str().unwrap()),
        ("AWS_SECRET_ACCESS_KEY", stale["secret"].as_str().unwrap()),
        ("AWS_SESSION_TOKEN", stale["token"].as_str().unwrap()),
    ]);
    let refused = aws.stack.xtask_with(&["status", "--aws"], &expired);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("Your AWS credentials have expired"),
        "{}",
        text(&refused)
    );

    release_on_aws(&aws, &admin, &runtime, &config);
}

/// The release flow on "AWS", the stack applied (status at 256 MB) and
/// nothing published yet.
fn release_on_aws(
    aws: &Aws,
    admin: &Keys,
    runtime: &tokio::runtime::Runtime,
    config: &aws_config::SdkConfig,
) {
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

    // Served as the admin: the local gateway and host stand in for API
    // Gateway and Lambda, which act with their own service credentials.
    let serve = Dev::launch(
        &aws.stack,
        &["serve", "--aws", "--port", "0"],
        &aws.env_as(admin),
    );
    let staging = format!("http://{}/staging", serve.address);
    serve.check("GET", "/prod/status", None, 500);
    // Without --url, verify would call staging at its custom domain: not
    // with an endpoint standing in for AWS (the key would go to the real
    // address).
    let unserved = aws.xtask(&["verify", "--aws"]);
    assert!(!unserved.status.success());
    assert!(
        text(&unserved).contains("verify would call https://staging.api.example.test"),
        "{}",
        text(&unserved)
    );
    // A URL that serves another stage than this stack's staging: refused,
    // no receipt.
    let elsewhere = format!("http://{}/prod", serve.address);
    let wrong = aws.xtask(&["verify", "--aws", "--url", &elsewhere]);
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("does not serve this stack's staging"),
        "{}",
        text(&wrong)
    );
    assert!(!receipt_path.exists(), "a refused verify wrote a receipt");
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
    let mut child = aws
        .stack
        .command(&["publish", "--aws"])
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
    // The custom domain's names, by Host header, without the stage in the
    // path; a path no mapping takes is API Gateway's 403.
    let by_host = |host: &str, path: &str| serve.call_with("GET", path, &[("Host", host)], None);
    let prod = by_host("api.example.test", "/status");
    assert_eq!(prod.status, 200, "{}", prod.body);
    assert_eq!(prod.body["alias"], "prod", "{}", prod.body);
    assert_eq!(prod.body["function_version"], "1", "{}", prod.body);
    let staging_by_host = by_host("staging.api.example.test", "/status");
    assert_eq!(
        staging_by_host.body["alias"], "staging",
        "{}",
        staging_by_host.body
    );
    assert_eq!(by_host("api.example.test", "/prod/status").status, 403);

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
