//! Gradual promotion rehearsed on a local stack of the test's own, through
//! the real `cargo xtask` binary, with `cargo xtask dev` serving both
//! stages: `publish --canary` splitting prod between two versions of a
//! function by the prod alias's weights, the canary's alarms (evaluated by
//! xtask: the emulator never evaluates one) deciding between promotion and
//! an automatic rollback, a canary interrupted and then aborted or
//! promoted, and the metrics and log lines the local stack records into
//! the emulator as Lambda and API Gateway would.
//!
//! The function released is the `prod-probe` fixture (`xtask/fixtures/`),
//! routed in as `GET /probe` with a smoke case of its own (in a scratch
//! copy of the workspace's sources: `verify` reads the suite from there):
//! it names the version that ran, and a package with a `BROKEN` file fails
//! on prod while it passes on staging. Its versions are its one release
//! build repackaged with a note (another `CodeSha256`). The alarms evaluate
//! 10 s periods, each once it has closed, so a bake of 20 s judges a
//! canary at least once. The plan is checked empty after a promotion, an
//! automatic rollback and at the end (each check is a refresh of the whole
//! stack: the slow part).

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Dev, Stack, copy_workspace, edit_manifest, emulator_sdk, with_routes};

const PROBE: &str = "rust-lambda-api-prod-probe";

/// Quick alarms (10 s periods, one evaluated, one breach fires), and a
/// stage throttle above the test's requests (1,000 as quick as they go).
const SETTINGS: &str = r#"{
  "alarms": {"period_seconds": 10, "evaluation_periods": 1, "datapoints_to_alarm": 1},
  "throttling_rate_limit": 100000,
  "throttling_burst_limit": 100000
}"#;

/// `cargo xtask ARGS` running in the background, its stderr in a file.
struct Background {
    child: Child,
    stderr: PathBuf,
}

impl Background {
    fn start(stack: &Stack, args: &[&str]) -> Background {
        let stderr = stack.local.parent().unwrap().join(format!(
            "{}-{}.log",
            args.join("-"),
            std::process::id()
        ));
        let child = stack
            .command(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Background { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until its stderr has a line containing `pattern`.
    fn wait_for(&mut self, pattern: &str) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !self.stderr().contains(pattern) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("it ended ({status}) before `{pattern}`:\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "no `{pattern}`:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its exit code, stdout and stderr, once it ends.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let stderr = self.stderr();
        eprintln!("$ cargo xtask (in the background): {status}\n{stderr}");
        (status.code(), stdout, stderr)
    }
}

/// `cargo xtask ARGS`, which must fail (exit 1, or clap's 2); its stderr.
#[track_caller]
fn refused(stack: &Stack, args: &[&str]) -> String {
    let output = stack.xtask(args);
    assert!(
        matches!(output.status.code(), Some(1 | 2)),
        "cargo xtask {} did not refuse:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

/// What a refusal must leave alone: the pin, the history, the probe's
/// aliases and versions.
fn world(stack: &Stack) -> Vec<String> {
    let dir = stack.local.join("terraform");
    let mut seen: Vec<String> = ["prod.auto.tfvars.json", "prod.releases.json"]
        .iter()
        .map(|name| std::fs::read_to_string(dir.join(name)).unwrap_or_default())
        .collect();
    let (runtime, config) = emulator_sdk(stack);
    runtime.block_on(async {
        let lambda = aws_sdk_lambda::Client::new(&config);
        let aliases = lambda
            .list_aliases()
            .function_name(PROBE)
            .send()
            .await
            .unwrap();
        let versions = lambda
            .list_versions_by_function()
            .function_name(PROBE)
            .send()
            .await
            .unwrap();
        seen.push(format!("{:?}", aliases.aliases()));
        seen.push(format!("{:?}", versions.versions().len()));
    });
    seen
}

/// The pin in force.
fn pin(stack: &Stack) -> Value {
    serde_json::from_slice(
        &std::fs::read(stack.local.join("terraform/prod.auto.tfvars.json")).unwrap(),
    )
    .unwrap()
}

/// The release history.
fn history(stack: &Stack) -> Value {
    serde_json::from_slice(
        &std::fs::read(stack.local.join("terraform/prod.releases.json")).unwrap(),
    )
    .unwrap()
}

/// The probe's code replaced with `entry` (a repackaged zip), applied,
/// and verified on staging.
fn stage_probe(stack: &Stack, entry: &Value) {
    edit_manifest(&stack.artifacts, |manifest| {
        manifest["functions"]["prod-probe"] = entry.clone();
    });
    stack.ok(&["apply"]);
    stack.ok(&["verify"]);
}

/// `GET /prod/probe`: its status and the version its body names.
fn probe(dev: &Dev) -> (u16, String) {
    let reply = dev.call("GET", "/prod/probe", None);
    let version = reply.body["function_version"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    (reply.status, version)
}

#[track_caller]
fn assert_plan_empty(stack: &Stack) {
    let output = stack.xtask(&["plan"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the plan is not empty:\n{stdout}"
    );
}

#[test]
fn a_canary_release_is_decided_by_its_alarms() {
    let mut stack = Stack::new("canary");
    let workspace = stack.local.parent().unwrap().join("workspace");
    copy_workspace(&workspace);
    add_probe_smoke_case(&workspace);
    stack
        .env
        .push(("XTASK_WORKSPACE".to_owned(), workspace.clone()));
    build_in_real_workspace(&stack);
    stack.ok(&["emulator", "start", "--port", "0"]);
    let dir = stack.local.join("terraform");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("test_probe_override.tf"),
        with_routes(&[("GET /probe", "prod-probe")]),
    )
    .unwrap();
    std::fs::write(dir.join("test_settings.auto.tfvars.json"), SETTINGS).unwrap();
    stack.ok(&["apply"]);
    let dev = Dev::start(&stack);

    // Nothing in prod yet: no canary, nothing moved.
    stack.ok(&["verify"]);
    let before = world(&stack);
    let err = refused(&stack, &["publish", "--canary", "10", "--bake", "20s"]);
    assert!(err.contains("prod serves nothing yet"), "{err}");
    assert_eq!(world(&stack), before);

    // Release 1, all at once.
    stack.ok(&["publish"]);
    assert_eq!(probe(&dev), (200, "1".to_owned()));

    // Bad input: each refused with what is wrong, nothing moved.
    let before = world(&stack);
    for (args, says) in [
        (&["publish", "--canary", "0"][..], "0 is not in 1..=99"),
        (&["publish", "--canary", "100"], "100 is not in 1..=99"),
        (&["publish", "--canary", "x"], "invalid digit"),
        (&["publish", "--bake", "1m"], "--canary <PERCENT>"),
        (
            &["publish", "--canary", "10", "--bake", "5s"],
            "--bake 5s is under the alarms' period (10 s, 1 period(s) evaluated, each once it has closed)",
        ),
        (
            &["publish", "--canary", "10", "--bake", "20s"],
            "prod already runs what staging verified",
        ),
        (&["publish", "--promote"], "no canary is in flight"),
        (&["publish", "--abort"], "no canary is in flight"),
        (&["publish", "--promote", "--abort"], "cannot be used with"),
    ] {
        let err = refused(&stack, args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(world(&stack), before, "a refusal moved something");

    // A healthy canary at 20%: the weights split prod's invocations, the
    // alarms stay OK, and the bake ends with the new version wholly in prod.
    let v2 = support::repackage(&stack.artifacts, "prod-probe", &[("RELEASE", "v2")]);
    stage_probe(&stack, &v2);
    let mut canary = Background::start(&stack, &["publish", "--canary", "20", "--bake", "20s"]);
    canary.wait_for("==> baking for 20s");
    let pinned = pin(&stack)["prod_release"].clone();
    assert_eq!(pinned["functions"]["prod-probe"], "1");
    assert_eq!(pinned["canary"]["versions"], json!({"prod-probe": "2"}));
    assert_eq!(pinned["canary"]["percent"], 20);
    let (code, preview) = {
        let output = stack.xtask(&["status"]);
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
        )
    };
    assert_eq!(code, Some(0));
    assert!(
        preview.contains("canary: release 2 in flight since")
            && preview.contains("20% of prod on prod-probe 2, the rest on release 1")
            && preview.contains(&format!("alarm {PROBE}-canary-errors: ")),
        "{preview}"
    );
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..1000 {
        let (status, version) = probe(&dev);
        assert_eq!(status, 200);
        *served.entry(version).or_default() += 1;
    }
    let new = served.get("2").copied().unwrap_or_default();
    assert!(
        (160..=240).contains(&new) && served.get("1").copied().unwrap_or_default() == 1000 - new,
        "20% of 1,000 requests should reach version 2: {served:?}"
    );
    check_alarms_and_metrics(&stack);
    let (code, stdout, stderr) = canary.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("with no alarm: promoting"), "{stderr}");
    assert!(stdout.contains("prod is at release 2"), "{stdout}");
    assert_eq!(probe(&dev), (200, "2".to_owned()));
    assert!(pin(&stack)["prod_release"].get("canary").is_none());
    assert_eq!(
        history(&stack)["releases"][1]["canary"]["outcome"],
        "promoted"
    );
    assert_plan_empty(&stack);
    check_logs(&stack, &dev);

    // A broken canary (it passes on staging, fails on prod): its error-rate
    // alarm fires and it is rolled back; the old version's share never
    // fails, and prod ends wholly on it.
    let v3 = support::repackage(
        &stack.artifacts,
        "prod-probe",
        &[("RELEASE", "v3"), ("BROKEN", "on prod")],
    );
    stage_probe(&stack, &v3);
    let mut canary = Background::start(&stack, &["publish", "--canary", "50", "--bake", "2m"]);
    canary.wait_for("==> baking");
    let mut answers: BTreeMap<(u16, String), usize> = BTreeMap::new();
    while canary.running() {
        *answers.entry(probe(&dev)).or_default() += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, _, stderr) = canary.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the canary of release 3 was rolled back: alarm {PROBE}-canary-errors fired"
        )) && stderr.contains("Prod is wholly on release 2 again"),
        "{stderr}"
    );
    for ((status, version), count) in &answers {
        match version.as_str() {
            "2" => assert_eq!(*status, 200, "the old version's share failed: {answers:?}"),
            "3" => assert_eq!(*status, 500, "{answers:?}"),
            _ => panic!("an answer from no version: {status} x{count}: {answers:?}"),
        }
    }
    assert!(answers.contains_key(&(500, "3".to_owned())), "{answers:?}");
    for _ in 0..50 {
        assert_eq!(probe(&dev), (200, "2".to_owned()));
    }
    let rolled = &history(&stack)["releases"][2];
    assert_eq!(rolled["release"], 3);
    assert_eq!(rolled["canary"]["outcome"], "rolled back");
    assert!(
        rolled["canary"]["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "alarm {PROBE}-canary-errors fired: Threshold Crossed"
            )),
        "{rolled}"
    );
    assert_plan_empty(&stack);

    // A release that never served all of prod is nowhere to go back to.
    let err = refused(&stack, &["rollback", "--to", "3"]);
    assert!(
        err.contains("release 3 was a canary that did not go on to all of prod"),
        "{err}"
    );

    // The broken version again, its bake interrupted: its alarm fires with
    // nobody baking (`dev` evaluates the alarms too), `--promote` refuses
    // while it is in ALARM, and `rollback` ends the canary (release 4).
    let mut canary = Background::start(&stack, &["publish", "--canary", "50", "--bake", "10m"]);
    canary.wait_for("==> baking");
    canary.child.kill().unwrap();
    canary.finish();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for _ in 0..50 {
            probe(&dev);
        }
        let status = stack.ok(&["status"]);
        if status.contains(&format!("alarm {PROBE}-canary-errors: ALARM")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alarm never fired:\n{status}"
        );
    }
    let err = refused(&stack, &["publish", "--promote"]);
    assert!(
        err.contains(&format!(
            "the canary's alarm {PROBE}-canary-errors is in ALARM"
        )) && err.contains("nothing was promoted"),
        "{err}"
    );
    assert_eq!(pin(&stack)["prod_release"]["canary"]["release"], 4);
    let ended = stack.ok(&["rollback"]);
    assert!(ended.contains("prod is at release 2"), "{ended}");
    assert_eq!(
        history(&stack)["releases"][3]["canary"]["outcome"],
        "aborted"
    );
    for _ in 0..20 {
        assert_eq!(probe(&dev), (200, "2".to_owned()));
    }

    // A canary nobody sends a request to: its alarms stay OK, but it
    // served nothing, so it is not promoted; it stays in flight, in the
    // pin; a publish refuses while it is; `--abort` takes it back.
    let v4 = support::repackage(&stack.artifacts, "prod-probe", &[("RELEASE", "v4")]);
    stage_probe(&stack, &v4);
    let canary = Background::start(&stack, &["publish", "--canary", "10", "--bake", "20s"]);
    let (code, _, stderr) = canary.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("prod-probe's new version served no request")
            && stderr.contains("so it was not promoted; it stays in flight"),
        "{stderr}"
    );
    assert_eq!(pin(&stack)["prod_release"]["canary"]["release"], 5);
    let err = refused(&stack, &["publish"]);
    assert!(
        err.contains("a canary of release 5 is in flight")
            && err.contains("`cargo xtask publish --promote`"),
        "{err}"
    );
    let err = refused(&stack, &["publish", "--canary", "10", "--bake", "20s"]);
    assert!(err.contains("a canary of release 5 is in flight"), "{err}");
    stack.ok(&["publish", "--abort"]);
    for _ in 0..20 {
        assert_eq!(probe(&dev), (200, "2".to_owned()));
    }
    assert!(pin(&stack)["prod_release"].get("canary").is_none());
    assert_eq!(
        history(&stack)["releases"][4]["canary"]["outcome"],
        "aborted"
    );

    // Interrupted again, then promoted by hand: a release of its own (6).
    let mut canary = Background::start(&stack, &["publish", "--canary", "10", "--bake", "10m"]);
    canary.wait_for("==> baking");
    canary.child.kill().unwrap();
    canary.finish();
    let promoted = stack.ok(&["publish", "--promote"]);
    assert!(promoted.contains("prod is at release 6"), "{promoted}");
    assert_eq!(probe(&dev), (200, "4".to_owned()));
    // Back: past the rolled back and the aborted canaries, to release 2.
    let rolled = stack.ok(&["rollback"]);
    assert!(rolled.contains("prod is at release 2"), "{rolled}");
    assert_eq!(probe(&dev), (200, "2".to_owned()));
    assert_plan_empty(&stack);
}

/// The fixture's smoke case, in the scratch workspace's suite.
fn add_probe_smoke_case(workspace: &Path) {
    let path = workspace.join("events/smoke.json");
    let mut suite: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    suite["cases"].as_array_mut().unwrap().push(json!({
        "name": "probe",
        "request": "GET /probe",
        "expect": { "status": 200, "body": { "fixture": "prod-probe", "stage": "staging" } }
    }));
    std::fs::write(&path, serde_json::to_vec_pretty(&suite).unwrap()).unwrap();
}

/// The API's functions and the probe, built with the real workspace (where
/// the release build is cached) into the stack's artifacts.
fn build_in_real_workspace(stack: &Stack) {
    let built = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["build", "--out-dir", stack.artifacts.to_str().unwrap()])
        .args(["chirps", "files", "status", "users", "prod-probe"])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// During the healthy canary: the alarms Terraform applied (per alias,
/// per stage, the canary's own on its new version) are in the emulator,
/// and so are the metrics the host and gateway recorded as Lambda and API
/// Gateway would, by version.
fn check_alarms_and_metrics(stack: &Stack) {
    let (runtime, config) = emulator_sdk(stack);
    runtime.block_on(async {
        let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
        let alarms = cloudwatch
            .describe_alarms()
            .alarm_name_prefix(PROBE)
            .send()
            .await
            .unwrap();
        let names: Vec<&str> = alarms
            .metric_alarms()
            .iter()
            .filter_map(|alarm| alarm.alarm_name())
            .collect();
        for suffix in [
            "canary-duration",
            "canary-errors",
            "prod-duration",
            "prod-errors",
            "prod-throttles",
            "staging-duration",
            "staging-errors",
            "staging-throttles",
        ] {
            assert!(
                names.contains(&format!("{PROBE}-{suffix}").as_str()),
                "{names:?}"
            );
        }
        let canary = alarms
            .metric_alarms()
            .iter()
            .find(|alarm| alarm.alarm_name() == Some(&format!("{PROBE}-canary-duration")))
            .unwrap();
        let dimensions: BTreeMap<&str, &str> = canary
            .dimensions()
            .iter()
            .map(|d| (d.name().unwrap(), d.value().unwrap()))
            .collect();
        assert_eq!(
            dimensions,
            BTreeMap::from([
                ("ExecutedVersion", "2"),
                ("FunctionName", PROBE),
                ("Resource", &*format!("{PROBE}:prod")),
            ])
        );
        assert_eq!(canary.extended_statistic(), Some("p99"));
        let stages = cloudwatch
            .describe_alarms()
            .alarm_names("rust-lambda-api-prod-5xx")
            .alarm_names("rust-lambda-api-prod-latency")
            .send()
            .await
            .unwrap();
        assert_eq!(stages.metric_alarms().len(), 2);

        // Each version's invocations through prod, by ExecutedVersion.
        let metrics = cloudwatch
            .list_metrics()
            .namespace("AWS/Lambda")
            .metric_name("Invocations")
            .send()
            .await
            .unwrap();
        let executed: Vec<&str> = metrics
            .metrics()
            .iter()
            .filter(|metric| {
                metric
                    .dimensions()
                    .iter()
                    .any(|d| d.value() == Some(&format!("{PROBE}:prod")))
            })
            .flat_map(|metric| metric.dimensions())
            .filter(|d| d.name() == Some("ExecutedVersion"))
            .filter_map(|d| d.value())
            .collect();
        assert!(
            executed.contains(&"1") && executed.contains(&"2"),
            "{executed:?}"
        );
        let api = cloudwatch
            .list_metrics()
            .namespace("AWS/ApiGateway")
            .metric_name("Count")
            .send()
            .await
            .unwrap();
        assert!(
            api.metrics().iter().any(|metric| metric
                .dimensions()
                .iter()
                .any(|d| d.name() == Some("Stage") && d.value() == Some("prod"))),
            "{api:?}"
        );
    });
}

/// `cargo xtask logs`: a request's lines by its request id, with the
/// version that ran it; an unknown function is refused; and the stage's
/// access log has the request too.
fn check_logs(stack: &Stack, dev: &Dev) {
    let reply = dev.call("GET", "/prod/probe", None);
    let id = reply.body["request_id"].as_str().unwrap().to_owned();
    let gateway_id = reply
        .head
        .lines()
        .find_map(|line| line.strip_prefix("x-amzn-requestid: "))
        .unwrap()
        .to_owned();
    // The host sends its lines once a second.
    std::thread::sleep(Duration::from_secs(3));
    let lines = stack.ok(&[
        "logs",
        "prod-probe",
        "--alias",
        "prod",
        "--filter",
        &format!("\"{id}\""),
    ]);
    let kinds: Vec<&str> = lines
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields[1], "2", "{line}");
            assert_eq!(fields[2], id, "{line}");
            fields[3]
        })
        .collect();
    assert_eq!(kinds, ["START", "END", "REPORT"], "{lines}");
    // Staging's streams hold no prod request, and do hold staging's (the
    // verify runs').
    let quoted = format!("\"{id}\"");
    let staging = stack.ok(&[
        "logs",
        "prod-probe",
        "--alias",
        "staging",
        "--filter",
        &quoted,
    ]);
    assert_eq!(staging, "");
    let staging = stack.ok(&["logs", "prod-probe", "--alias", "staging", "--since", "1h"]);
    assert!(
        staging
            .lines()
            .any(|line| line.split_whitespace().nth(1) == Some("$LATEST")),
        "{staging}"
    );
    let err = refused(stack, &["logs", "nonesuch"]);
    assert!(
        err.contains("no function `nonesuch` is applied: the functions are"),
        "{err}"
    );
    let err = refused(stack, &["logs", "prod-probe", "--since", "yesterday"]);
    assert!(err.contains("--since"), "{err}");

    let (runtime, config) = emulator_sdk(stack);
    runtime.block_on(async {
        let events = aws_sdk_cloudwatchlogs::Client::new(&config)
            .filter_log_events()
            .log_group_name("/aws/apigateway/rust-lambda-api/prod/access")
            .filter_pattern(format!("\"{gateway_id}\""))
            .send()
            .await
            .unwrap();
        assert_eq!(events.events().len(), 1, "{events:?}");
        let line: Value = serde_json::from_str(events.events()[0].message().unwrap()).unwrap();
        assert_eq!(line["requestId"], gateway_id);
        assert_eq!(line["status"], "200");
        assert_eq!(line["httpMethod"], "GET");
        assert_eq!(line["resourcePath"], "/probe");
        assert_eq!(line["path"], "/prod/probe");
        assert_eq!(line["integrationStatus"], "200");

        // Filter patterns as CloudWatch Logs reads them (the emulator's are
        // supplied by serve_moto.py): JSON selectors, exclusions, any-of.
        let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
        let matching = |pattern: String| {
            let logs = logs.clone();
            async move {
                logs.filter_log_events()
                    .log_group_name("/aws/apigateway/rust-lambda-api/prod/access")
                    .filter_pattern(pattern)
                    .send()
                    .await
                    .map(|found| found.events().len())
            }
        };
        let json = format!("{{ $.requestId = \"{gateway_id}\" && $.status = 200 }}");
        assert_eq!(matching(json).await.unwrap(), 1);
        let json = format!("{{ $.requestId = \"{gateway_id}\" && $.status != 200 }}");
        assert_eq!(matching(json).await.unwrap(), 0);
        assert_eq!(matching(format!("\"{gateway_id}\" -GET")).await.unwrap(), 0);
        assert_eq!(
            matching(format!("?nowhere ?\"{gateway_id}\""))
                .await
                .unwrap(),
            1
        );
        let refused = matching("[ip, id, user]".to_owned()).await.unwrap_err();
        assert!(
            format!("{refused:?}").contains("InvalidParameterException"),
            "{refused:?}"
        );
    });
}
