//! The release flow rehearsed on a local stack of the test's own, through
//! the real `cargo xtask` binary: plan, verify, publish, rollback and
//! status against what the real Terraform applied to the emulator, with
//! `cargo xtask dev` serving both stages over HTTP.
//!
//! Versions of `status`: v1 is the build; v2 and v3 are the same binary
//! packaged with a release note beside it, which gives the zip another
//! `CodeSha256` (all Lambda and the release flow see of a change) without a
//! second release build; the broken one is `users`' code deployed as
//! `status`, which answers its routes with 404s.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{Dev, Stack, edit_manifest, emulator_sdk};

/// `status` packaged again with a `RELEASE` file saying `note`; its
/// manifest entry.
fn repackage(artifacts: &Path, note: &str) -> Value {
    support::repackage(artifacts, "status", &[("RELEASE", note)])
}

/// Deploys `entry` as `status` (the manifest changes, then `cargo xtask apply`).
fn deploy_status(stack: &Stack, entry: &Value) {
    edit_manifest(&stack.artifacts, |manifest| {
        manifest["functions"]["status"] = entry.clone();
    });
    stack.ok(&["apply"]);
}

fn short(entry: &Value) -> String {
    entry["sha256"].as_str().unwrap()[..12].to_owned()
}

/// `cargo xtask plan`: its exit code and stdout.
fn plan(stack: &Stack) -> (i32, String) {
    let output = stack.xtask(&["plan"]);
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

/// The line of `text` that starts with `first` and a space.
#[track_caller]
fn row<'a>(text: &'a str, first: &str) -> &'a str {
    text.lines()
        .find(|line| line.starts_with(&format!("{first} ")))
        .unwrap_or_else(|| panic!("no `{first}` row in:\n{text}"))
}

#[track_caller]
fn assert_plan_empty(stack: &Stack) {
    let (code, stdout) = plan(stack);
    assert_eq!(code, 0, "the plan is not empty:\n{stdout}");
    assert!(stdout.starts_with("No changes"), "{stdout}");
}

/// `cargo xtask ARGS`, which must fail; its stderr.
#[track_caller]
fn refused(stack: &Stack, args: &[&str]) -> String {
    let output = stack.xtask(args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "cargo xtask {} did not refuse:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// The version `/prod/status` runs.
fn prod_runs(dev: &Dev) -> String {
    let status = dev.check("GET", "/prod/status", None, 200);
    assert_eq!(status["alias"], "prod");
    status["function_version"].as_str().unwrap().to_owned()
}

/// Everything a dry run must leave alone: the state, the pin, the history,
/// the receipt, and every alias and version in the emulator.
fn world(stack: &Stack) -> Vec<String> {
    let dir = stack.local.join("terraform");
    let mut seen: Vec<String> = [
        "terraform.tfstate",
        "prod.auto.tfvars.json",
        "prod.releases.json",
    ]
    .iter()
    .map(|name| std::fs::read_to_string(dir.join(name)).unwrap_or_default())
    .collect();
    seen.push(std::fs::read_to_string(stack.local.join("release/receipt.json")).unwrap());
    let (runtime, config) = emulator_sdk(stack);
    runtime.block_on(async {
        let lambda = aws_sdk_lambda::Client::new(&config);
        for function in ["status", "users"] {
            let name = format!("rust-lambda-api-{function}");
            let aliases = lambda
                .list_aliases()
                .function_name(&name)
                .send()
                .await
                .unwrap();
            let versions = lambda
                .list_versions_by_function()
                .function_name(&name)
                .send()
                .await
                .unwrap();
            seen.push(format!("{:?}", aliases.aliases()));
            seen.push(format!("{:?}", versions.versions()));
        }
    });
    seen
}

fn set_prod_alias(stack: &Stack, function: &str, version: &str) {
    let (runtime, config) = emulator_sdk(stack);
    runtime.block_on(async {
        aws_sdk_lambda::Client::new(&config)
            .update_alias()
            .function_name(format!("rust-lambda-api-{function}"))
            .name("prod")
            .function_version(version)
            .send()
            .await
            .unwrap();
    });
}

/// `cargo xtask publish`, paused at `step` for `status` (the test seam
/// `XTASK_TEST_PAUSE_DIR`: `checks`, before it reads `$LATEST` to check it;
/// `publish`, just before its PublishVersion) while `change` runs: so the
/// change lands after everything publish checked before that step. Its
/// exit code and stderr.
fn publish_while(stack: &Stack, step: &str, change: impl FnOnce()) -> (Option<i32>, String) {
    let pause = stack.local.join("pause");
    let _ = std::fs::remove_dir_all(&pause);
    std::fs::create_dir_all(&pause).unwrap();
    let mut child = stack
        .command(&["publish"])
        .env("XTASK_TEST_PAUSE_DIR", &pause)
        .env("XTASK_TEST_PAUSE_AT", step)
        .env("XTASK_TEST_PAUSE_FUNCTION", "rust-lambda-api-status")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !pause.join("rust-lambda-api-status.ready").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            panic!(
                "publish ended ({status}) before publishing status:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert!(std::time::Instant::now() < deadline, "publish never paused");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    change();
    std::fs::write(pause.join("rust-lambda-api-status.go"), b"").unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    eprintln!("$ cargo xtask publish (paused)\n{stderr}");
    (output.status.code(), stderr)
}

/// `status`'s code replaced with the zip of `entry`, behind Terraform's back.
fn upload_status(stack: &Stack, entry: &Value) {
    let zip = std::fs::read(stack.artifacts.join(entry["path"].as_str().unwrap())).unwrap();
    let (runtime, config) = emulator_sdk(stack);
    runtime.block_on(async {
        aws_sdk_lambda::Client::new(&config)
            .update_function_code()
            .function_name("rust-lambda-api-status")
            .zip_file(aws_sdk_lambda::primitives::Blob::new(zip))
            .send()
            .await
            .unwrap();
    });
}

/// `status`'s memory set behind Terraform's back.
fn set_status_memory(stack: &Stack, megabytes: i32) {
    let (runtime, config) = emulator_sdk(stack);
    runtime.block_on(async {
        aws_sdk_lambda::Client::new(&config)
            .update_function_configuration()
            .function_name("rust-lambda-api-status")
            .memory_size(megabytes)
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn a_release_is_rehearsed_on_the_local_stack() {
    let stack = Stack::new("release");
    let artifacts = stack.artifacts.to_str().unwrap().to_owned();
    stack.ok(&["build", "--out-dir", &artifacts]);
    stack.ok(&["emulator", "start", "--port", "0"]);
    stack.ok(&["apply"]);
    assert_plan_empty(&stack);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(stack.artifacts.join("manifest.json")).unwrap())
            .unwrap();
    let v1 = manifest["functions"]["status"].clone();
    let users = manifest["functions"]["users"].clone();
    let dev = Dev::start(&stack);
    dev.check("GET", "/prod/status", None, 500);

    // Nothing verified: publish refuses.
    let err = refused(&stack, &["publish"]);
    assert!(err.contains("no verify receipt"), "{err}");

    // v1: verify, a dry run that changes nothing, publish.
    let verified = stack.ok(&["verify"]);
    let suite: Value = serde_json::from_slice(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../events/smoke.json")).unwrap(),
    )
    .unwrap();
    let cases = suite["cases"].as_array().unwrap().len();
    assert!(
        verified.contains(&format!("verified: {cases}/{cases} smoke cases passed")),
        "{verified}"
    );
    assert!(
        verified.contains(&format!("status {}", short(&v1))),
        "{verified}"
    );
    let v1_receipt = std::fs::read(stack.local.join("release/receipt.json")).unwrap();
    let before = world(&stack);
    let dry = stack.ok(&["publish", "--dry-run"]);
    assert!(row(&dry, "status").contains("none -> 1  "), "{dry}");
    assert!(dry.contains("dry run: nothing was published"), "{dry}");
    assert_eq!(world(&stack), before, "the dry run changed something");
    let published = stack.ok(&["publish"]);
    assert!(
        row(&published, "status").contains("none -> 1  "),
        "{published}"
    );
    assert!(published.contains("prod is at release 1"), "{published}");
    assert_eq!(prod_runs(&dev), "1");
    assert_plan_empty(&stack);
    // Prod's key-required routes open to prod's key, and only to it.
    let prod_key = stack.ok(&["apikey", "--stage", "prod"]);
    let staging_key = stack.ok(&["apikey"]);
    let post = r#"{"name": "prod.txt", "content_type": "text/plain", "size": 4}"#;
    let created = dev.call_with(
        "POST",
        "/prod/files",
        &[("x-api-key", prod_key.trim())],
        Some(post),
    );
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(
        created.body["upload_url"]
            .as_str()
            .unwrap()
            .contains("-files-prod-"),
        "{}",
        created.body
    );
    for key in [staging_key.trim(), ""] {
        let refused = dev.call_with("POST", "/prod/files", &[("x-api-key", key)], Some(post));
        assert_eq!(refused.status, 403, "{key}: {}", refused.body);
    }
    // Again: nothing to do, the same release.
    let again = stack.ok(&["publish"]);
    assert!(again.contains("the plan is empty"), "{again}");
    assert!(again.contains("prod is at release 1"), "{again}");

    // v2 on staging: the plan shows the code change; prod keeps v1.
    let v2 = repackage(&stack.artifacts, "v2");
    edit_manifest(&stack.artifacts, |manifest| {
        manifest["functions"]["status"] = v2.clone();
    });
    let (code, preview) = plan(&stack);
    assert_eq!(code, 2, "{preview}");
    assert!(
        preview.contains("status  code ")
            && preview.contains(&format!("({} -> {})", short(&v1), short(&v2))),
        "{preview}"
    );
    assert!(
        !preview.contains("staging redeploys"),
        "code alone does not redeploy: {preview}"
    );
    stack.ok(&["apply"]);
    assert_plan_empty(&stack);
    let status = stack.ok(&["status"]);
    assert!(
        status.contains(&format!("$LATEST {}", short(&v2))),
        "{status}"
    );
    assert!(status.contains(&format!("1 {}", short(&v1))), "{status}");
    assert_eq!(
        dev.check("GET", "/staging/status", None, 200)["function_version"],
        "$LATEST"
    );
    assert_eq!(prod_runs(&dev), "1");

    // v2 broken: verify fails and publish refuses.
    deploy_status(&stack, &users);
    let output = stack.xtask(&["verify"]);
    assert_eq!(output.status.code(), Some(1));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("FAIL    status"), "{table}");
    assert!(table.contains("FAIL    health"), "{table}");
    let err = refused(&stack, &["publish"]);
    assert!(err.contains("the last verify failed"), "{err}");
    assert_eq!(prod_runs(&dev), "1");

    // Fixed: verify, publish -> prod serves v2.
    deploy_status(&stack, &v2);
    stack.ok(&["verify"]);
    let published = stack.ok(&["publish"]);
    assert!(
        row(&published, "status").contains("1 -> 2  "),
        "{published}"
    );
    assert!(
        row(&published, "users").ends_with("1 -> 1        unchanged"),
        "{published}"
    );
    assert_eq!(prod_runs(&dev), "2");
    assert_plan_empty(&stack);

    // Rollback -> prod serves v1 again; there is nothing before release 1.
    let rolled = stack.ok(&["rollback"]);
    assert!(row(&rolled, "status").contains("2 -> 1  "), "{rolled}");
    assert_eq!(prod_runs(&dev), "1");
    assert_plan_empty(&stack);
    let err = refused(&stack, &["rollback"]);
    assert!(err.contains("no earlier release"), "{err}");
    let status = stack.ok(&["status"]);
    assert!(status.contains(&format!("1 {}", short(&v1))), "{status}");
    assert!(status.contains("drift: none"), "{status}");
    let before = world(&stack);
    let forward = stack.ok(&["rollback", "--to", "2", "--dry-run"]);
    assert!(row(&forward, "status").contains("1 -> 2  "), "{forward}");
    assert_eq!(world(&stack), before, "the dry run changed something");

    // Guards. A receipt for other code (v1's, while staging runs v2).
    let receipt = stack.local.join("release/receipt.json");
    let v2_receipt = std::fs::read(&receipt).unwrap();
    std::fs::write(&receipt, &v1_receipt).unwrap();
    let err = refused(&stack, &["publish"]);
    assert!(
        err.contains(&format!(
            "status: staging runs {} now, the receipt verified {}",
            short(&v2),
            short(&v1)
        )),
        "{err}"
    );
    std::fs::write(&receipt, &v2_receipt).unwrap();

    // A pending change to something else: refused, named, nothing pinned.
    let extra = stack.local.join("terraform/extra.auto.tfvars.json");
    std::fs::write(&extra, r#"{"log_retention_days": 30}"#).unwrap();
    let pin = std::fs::read(stack.local.join("terraform/prod.auto.tfvars.json")).unwrap();
    let err = refused(&stack, &["publish"]);
    assert!(
        err.contains(r#"~ aws_cloudwatch_log_group.this["status"] (update)"#),
        "{err}"
    );
    assert_eq!(
        std::fs::read(stack.local.join("terraform/prod.auto.tfvars.json")).unwrap(),
        pin
    );
    assert_eq!(prod_runs(&dev), "1");
    std::fs::remove_file(&extra).unwrap();

    // $LATEST moved after verify (v3 applied): refused.
    let v3 = repackage(&stack.artifacts, "v3");
    deploy_status(&stack, &v3);
    let err = refused(&stack, &["publish"]);
    assert!(
        err.contains("staging no longer runs what the receipt verified"),
        "{err}"
    );
    assert!(
        err.contains(&format!("staging runs {} now", short(&v3))),
        "{err}"
    );
    assert_eq!(prod_runs(&dev), "1");

    // The configuration changed after verify (same code, more memory):
    // refused too, since a version snapshots both.
    stack.ok(&["verify"]);
    std::fs::write(&extra, r#"{"memory_size": 256}"#).unwrap();
    stack.ok(&["apply"]);
    let err = refused(&stack, &["publish"]);
    assert!(
        err.contains("status: its configuration (environment, memory, timeout, role, ...) changed since verify"),
        "{err}"
    );
    assert_eq!(prod_runs(&dev), "1");

    // Drift: the prod alias moved behind Terraform's back.
    set_prod_alias(&stack, "status", "2");
    let status = stack.ok(&["status"]);
    assert!(
        status.contains("drift: status: the prod alias is on version 2, the pin says 1"),
        "{status}"
    );
    let (code, preview) = plan(&stack);
    assert_eq!(code, 2);
    assert!(preview.contains("status  prod: 2 -> 1"), "{preview}");
    stack.ok(&["apply"]);
    assert_plan_empty(&stack);
    assert_eq!(prod_runs(&dev), "1");

    // The guards after the checks, reached: staging (v3, 256 MB) verified,
    // then publish paused just before its PublishVersion of status.
    stack.ok(&["verify"]);
    let pin_path = stack.local.join("terraform/prod.auto.tfvars.json");
    let pin = std::fs::read(&pin_path).unwrap();
    // The code moves after publish compared staging with the receipt, before
    // it reads $LATEST for the version: that read refuses it.
    let (code, err) = publish_while(&stack, "checks", || upload_status(&stack, &v2));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "$LATEST holds {} now, not the verified {}",
            short(&v2),
            short(&v3)
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(&pin_path).unwrap(), pin);
    upload_status(&stack, &v3);
    // The code moves just before PublishVersion: PublishVersion carries the verified
    // CodeSha256 and is refused (as AWS refuses it; the local stack's
    // emulator supplies that check). Nothing is pinned.
    let (code, err) = publish_while(&stack, "publish", || upload_status(&stack, &v2));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("is different from current CodeSHA256 in $LATEST"),
        "{err}"
    );
    assert_eq!(std::fs::read(&pin_path).unwrap(), pin);
    assert_eq!(prod_runs(&dev), "1");
    upload_status(&stack, &v3);
    assert_plan_empty(&stack);
    // The configuration moves at that moment (same code, so PublishVersion
    // succeeds): the version it made is not what was verified, and it is
    // not pinned.
    let (code, err) = publish_while(&stack, "publish", || set_status_memory(&stack, 512));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("$LATEST changed while publishing"), "{err}");
    assert_eq!(std::fs::read(&pin_path).unwrap(), pin);
    assert_eq!(prod_runs(&dev), "1");
    set_status_memory(&stack, 256);
    assert_plan_empty(&stack);

    // An edit in terraform/ to the prod alias, not applied (as an edit of
    // lambda.tf would be; here a file of the user's in the local working
    // directory): a promotion that rides along is refused and named, and
    // prod stays where it was; so is a plain apply.
    let edit = stack.local.join("terraform/prod_alias_override.tf");
    std::fs::write(
        &edit,
        "resource \"aws_lambda_alias\" \"prod\" {\n  function_version = \"$LATEST\"\n}\n",
    )
    .unwrap();
    let err = refused(&stack, &["publish"]);
    assert!(
        err.contains(
            r#"aws_lambda_alias.prod["status"]: function_version "$LATEST", prod's pin sets"#
        ),
        "{err}"
    );
    let err = refused(&stack, &["apply"]);
    assert!(
        err.contains("the plan would move prod somewhere its pin")
            && err.contains(r#"aws_lambda_alias.prod["status"]: function_version "$LATEST""#),
        "{err}"
    );
    assert_eq!(std::fs::read(&pin_path).unwrap(), pin);
    assert_eq!(prod_runs(&dev), "1");
    std::fs::remove_file(&edit).unwrap();

    // An edit to an integration argument other than the route table (its
    // timeout): the API revision moves, so the plan redeploys staging, and
    // a publish across it without a new verify is refused. (At plan level:
    // the emulator does not implement UpdateIntegration, so it cannot be
    // applied here.)
    let edit = stack.local.join("terraform/integration_override.tf");
    std::fs::write(&edit, integration_with_another_timeout()).unwrap();
    let (code, preview) = plan(&stack);
    assert_eq!(code, 2, "{preview}");
    assert!(
        preview.contains("staging redeploys: API revision"),
        "{preview}"
    );
    assert!(!preview.contains("prod redeploys"), "{preview}");
    let err = refused(&stack, &["publish"]);
    assert!(err.contains("aws_api_gateway_integration.this["), "{err}");
    assert!(err.contains("aws_api_gateway_deployment.staging"), "{err}");
    assert_eq!(std::fs::read(&pin_path).unwrap(), pin);
    assert_eq!(prod_runs(&dev), "1");
    std::fs::remove_file(&edit).unwrap();
    assert_plan_empty(&stack);
}

/// `local.integration` of `terraform/api.tf` (the block as it is there) with
/// a 5 s timeout, as an override file's `locals` block.
fn integration_with_another_timeout() -> String {
    let api_tf =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform/api.tf"))
            .unwrap();
    let start = api_tf
        .find("  integration = {\n")
        .expect("local.integration in api.tf");
    let end = start + api_tf[start..].find("\n  }\n").expect("its end") + "\n  }\n".len();
    let block = &api_tf[start..end];
    let edited = block.replace(
        "timeout_milliseconds = 29000",
        "timeout_milliseconds = 5000",
    );
    assert_ne!(
        edited, block,
        "local.integration has no 29 s timeout any more: update the test"
    );
    format!("locals {{\n{edited}}}\n")
}
