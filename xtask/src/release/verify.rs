//! `cargo xtask verify`: the smoke suite against the staging stage, and the
//! receipt `publish` requires: the result bound to what staging ran (each
//! function's `CodeSha256`, the API revision of its deployment), read
//! before and after the run so a change during it voids the receipt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use xshell::Shell;

use super::smoke::{self, Outcome};
use super::{Running, StageRuns, World, short_hash, short_revision};
use crate::LocalDir;
use crate::artifact::{Manifest, Profile};
use crate::gateway::{self, Gateway};
use crate::host::{Limits, Log};
use crate::terraform::TargetArgs;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The staging stage's base URL where something else serves it (`cargo
    /// xtask serve --aws`) [default on AWS: the custom domain's staging URL
    /// if there is one, else its invoke URL; on the local stack, a gateway
    /// of verify's own].
    #[arg(long, value_name = "BASE", value_parser = parse_base_url)]
    url: Option<String>,
}

/// That `url` serves this stack's staging, not another stage or stack
/// (whose passing cases would vouch for code staging does not run): its
/// `/status` says so, with this stack's status function.
async fn served_by_this_staging(url: &str, world: &World) -> Result<()> {
    let Some(function) = world.applied.function_names.get("status") else {
        eprintln!("==> verify: no status function to ask which stage {url} serves");
        return Ok(());
    };
    let (status, body) = smoke::get(url, "/status")
        .await
        .with_context(|| format!("asking {url}/status which stage it serves"))?;
    let says = |field: &str| body[field].as_str().unwrap_or("none").to_owned();
    if status != 200 || says("stage") != "staging" || says("function") != *function {
        bail!(
            "{url} does not serve this stack's staging: its /status answered {status} with stage \
             {} of function {} (this stack's is {function}); nothing was verified",
            says("stage"),
            says("function")
        );
    }
    Ok(())
}

/// An `http(s)://` base URL, without its trailing slash.
fn parse_base_url(text: &str) -> Result<String, String> {
    let base = text.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.contains(['?', '#', ' ']) => Ok(base.to_owned()),
        _ => Err(format!(
            "`{text}` is not a base URL: give http(s)://HOST[:PORT][/PATH], e.g. \
             http://127.0.0.1:3000/staging"
        )),
    }
}

/// What one verify found, kept for `publish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    /// `local` or `aws`.
    pub target: String,
    pub api_id: String,
    /// The API revision staging's deployment was made at.
    pub api_revision: String,
    /// Function (manifest name) -> what staging's alias ran.
    pub functions: BTreeMap<String, Running>,
    pub url: String,
    pub verified_at: String,
    pub passed: bool,
    /// Routes staging serves that no case requests (each fails the run).
    pub uncovered: Vec<String>,
    pub cases: Vec<Outcome>,
}

impl Receipt {
    pub fn read(world: &World) -> Result<Receipt> {
        let path = world.receipt_path();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no verify receipt ({}): run `cargo xtask verify{}` first",
                path.display(),
                world.flag()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// `passed of total`, for messages.
    pub fn tally(&self) -> String {
        let passed = self.cases.iter().filter(|case| case.passed).count();
        format!("{passed}/{} smoke cases passed", self.cases.len())
    }

    /// Why this receipt does not vouch for what `staging` runs now (empty:
    /// it does). Compares the API, its revision and every function's code.
    pub fn mismatches(&self, target: &str, api_id: &str, staging: &StageRuns) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.target != target || self.api_id != api_id {
            reasons.push(format!(
                "the receipt is for API {} on {}, not API {api_id} on {target}",
                self.api_id, self.target
            ));
            return reasons;
        }
        let revision = staging.api_revision.as_deref().unwrap_or("none");
        if revision != self.api_revision {
            reasons.push(format!(
                "staging is deployed at API revision {}, the receipt verified {}",
                short_revision(revision),
                short_revision(&self.api_revision)
            ));
        }
        for (function, running) in &staging.functions {
            match (running, self.functions.get(function)) {
                (Some(now), Some(verified)) if now.code_sha256 != verified.code_sha256 => reasons
                    .push(format!(
                        "{function}: staging runs {} now, the receipt verified {}",
                        short_hash(&now.code_sha256),
                        short_hash(&verified.code_sha256)
                    )),
                (Some(now), Some(verified)) if now.configuration != verified.configuration => {
                    reasons.push(format!(
                        "{function}: its configuration (environment, memory, timeout, role, ...) \
                         changed since verify"
                    ))
                }
                (Some(_), Some(_)) => {}
                (Some(_), None) => reasons.push(format!("{function}: not in the receipt")),
                (None, _) => reasons.push(format!("{function}: staging has no alias for it")),
            }
        }
        for function in self.functions.keys() {
            if !staging.functions.contains_key(function) {
                reasons.push(format!("{function}: verified, but no longer deployed"));
            }
        }
        reasons
    }
}

/// `cargo xtask verify`.
pub fn run(sh: &Shell, local: &LocalDir, args: VerifyArgs) -> Result<()> {
    super::runtime()?.block_on(verify(sh, local, args))
}

async fn verify(sh: &Shell, local: &LocalDir, args: VerifyArgs) -> Result<()> {
    // On the local stack, the manifest its last apply used (opening the
    // world re-syncs the working directory, with this command's settings).
    let applied_artifacts = match args.target.aws {
        false => Some(crate::live::Applied::read(local)?.artifacts_dir),
        true => None,
    };
    let world = World::open(sh, local, &args.target).await?;
    let run = smoke::run_id();
    let cases = smoke::load(&run)?;
    // A function whose update is still in progress reports the new code and
    // runs the old: wait (bounded) until every one runs what it reports.
    let before = wait_ready(|| world.stage("staging"), READY_BOUND, READY_POLL).await?;
    let staged: BTreeMap<String, Running> = before
        .functions
        .iter()
        .filter_map(|(function, running)| Some((function.clone(), running.clone()?)))
        .collect();
    let Some(revision) = before.api_revision.clone() else {
        bail!(
            "{} has no staging deployment: apply first (`cargo xtask apply{}`)",
            world.name(),
            world.flag()
        );
    };
    let routes = routes(&world).await?;
    let uncovered = smoke::uncovered(&routes, &cases);

    // The local stack's staging is served by a gateway of our own, on a free
    // port, for the length of the run; the functions' logs go to a file.
    let log_path = world.terraform.scratch_dir()?.join("verify.log");
    let (url, server) = if let Some(url) = args.url.clone() {
        (url, None)
    } else if world.terraform.aws {
        // The custom domain's staging URL when there is one (what clients
        // call), else the stage's invoke URL.
        let url = match world.applied.custom_urls.get("staging") {
            Some(url) => url.clone(),
            None => world
                .applied
                .invoke_urls
                .get("staging")
                .context("the invoke_urls output has no staging stage")?
                .clone(),
        };
        // A rehearsal's stack is not at AWS's addresses: never send its
        // staging key there.
        if let Some(endpoint) = crate::live::emulated_endpoint() {
            bail!(
                "verify would call {url}, an address on AWS, while AWS_ENDPOINT_URL ({endpoint}) \
                 stands in for it: serve staging with `cargo xtask serve --aws` and pass its URL \
                 with --url"
            );
        }
        (url, None)
    } else {
        let _ = std::fs::remove_file(&log_path);
        let stack = crate::live::LocalStack::connect(local).await?;
        let host = stack.host(
            local,
            Log::file(&log_path)?,
            Limits::default(),
            stack.telemetry(),
        );
        let gateway = Gateway::new(local, stack.aws, host)
            .await
            .context("the local gateway refuses to serve this API")?;
        let (listener, address) = gateway::bind(0).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Arc::clone(&gateway).serve(listener, async {
            let _ = stopped.await;
        }));
        (format!("http://{address}/staging"), Some((stop, task)))
    };
    if args.url.is_some() {
        served_by_this_staging(&url, &world).await?;
    }
    eprintln!(
        "==> verify: {} smoke cases against {url} ({} functions, API revision {})",
        cases.len(),
        staged.len(),
        short_revision(&revision)
    );
    let api_key = super::apikey::any_key(&world, "staging").await?;
    match &api_key {
        Some((consumer, _)) => eprintln!("==> verify: with {consumer}'s API key to staging"),
        None => eprintln!(
            "==> verify: no API key to staging (the `api_key_consumers` variable is empty): \
             the routes that need one will answer 403"
        ),
    }
    let outcomes = smoke::run(&url, &cases, api_key.as_ref().map(|(_, key)| key.as_str())).await;
    if let Some((stop, task)) = server {
        let _ = stop.send(());
        let _ = task.await;
    }
    let outcomes = outcomes?;
    let after = world.stage("staging").await?;

    let mut problems: Vec<String> = uncovered
        .iter()
        .map(|route| format!("no smoke case requests {route} ({})", smoke::CASES_FILE))
        .collect();
    let manifest_dir = match (applied_artifacts, &args.target.artifacts_dir) {
        (Some(applied), _) => applied,
        (None, Some(dir)) => dir.clone(),
        (None, None) => crate::project_root().join(crate::build::OUT_DIR),
    };
    let manifest = crate::artifact::read_manifest(&manifest_dir.join("manifest.json"))?;
    problems.extend(unreleased(&staged, manifest.as_ref(), !world.terraform.aws));
    problems.extend(
        not_ready(&after)
            .into_iter()
            .map(|function| format!("{function} after the cases ran: verify again")),
    );
    if after != before {
        problems.push("staging changed while the cases ran (an apply?): verify again".to_owned());
    }
    let failed = outcomes.iter().filter(|outcome| !outcome.passed).count();
    let receipt = Receipt {
        target: if world.terraform.aws { "aws" } else { "local" }.to_owned(),
        api_id: world.applied.api_id.clone(),
        api_revision: revision,
        functions: staged,
        url,
        verified_at: super::now(),
        passed: failed == 0 && problems.is_empty(),
        uncovered,
        cases: outcomes,
    };
    let path = world.receipt_path();
    super::write_atomically(&path, &serde_json::to_vec_pretty(&receipt)?)?;

    print!("{}", table(&receipt));
    let code: Vec<String> = receipt
        .functions
        .iter()
        .map(|(function, running)| format!("{function} {}", short_hash(&running.code_sha256)))
        .collect();
    println!(
        "staging: {}, API revision {}",
        code.join(", "),
        short_revision(&receipt.api_revision)
    );
    for problem in &problems {
        println!("FAIL {problem}");
    }
    if !world.terraform.aws {
        eprintln!("the functions' logs: {}", log_path.display());
    }
    if !receipt.passed {
        bail!(
            "staging is not verified ({}{}); the receipt {} says so, and publish refuses it",
            receipt.tally(),
            if problems.is_empty() {
                ""
            } else {
                ", and see FAIL above"
            },
            path.display()
        );
    }
    println!(
        "verified: {}. Receipt: {}. Next: `cargo xtask publish{}`",
        receipt.tally(),
        path.display(),
        world.flag()
    );
    Ok(())
}

/// How long verify waits for staging's functions to finish an update.
const READY_BOUND: Duration = Duration::from_secs(120);
const READY_POLL: Duration = Duration::from_secs(2);

/// The functions of `stage` that do not run what they report yet
/// (`live::is_ready`), each with its state.
fn not_ready(stage: &StageRuns) -> Vec<String> {
    stage
        .functions
        .iter()
        .filter_map(|(function, running)| {
            let running = running.as_ref()?;
            (!crate::live::is_ready(&running.state)).then(|| {
                format!(
                    "{function}: State/LastUpdateStatus {}, not Active/Successful",
                    running.state
                )
            })
        })
        .collect()
}

/// Reads the stage with `read` until every function is ready, for at most
/// `bound` (polling every `every`); refuses after that.
async fn wait_ready<F, Fut>(mut read: F, bound: Duration, every: Duration) -> Result<StageRuns>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<StageRuns>>,
{
    let deadline = std::time::Instant::now() + bound;
    let mut said = false;
    loop {
        let stage = read().await?;
        let waiting = not_ready(&stage);
        if waiting.is_empty() {
            return Ok(stage);
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "staging does not run what it reports yet, after {}s of waiting, so nothing was \
                 verified:\n  {}\nAn update still in progress: verify again later; one that \
                 failed (its LastUpdateStatusReason says why): fix it and apply again.",
                bound.as_secs(),
                waiting.join("\n  ")
            );
        }
        if !said {
            eprintln!(
                "==> waiting for staging to finish updating: {}",
                waiting.join("; ")
            );
            said = true;
        }
        tokio::time::sleep(every).await;
    }
}

/// How a function says it runs a watch build: its description, as
/// `terraform/lambda.tf` writes it for one.
pub const WATCH_MARK: &str = "(cargo xtask dev --watch)";

/// Why the code `staged` runs may not be vouched for: a `dev --watch` build
/// (the function's description says so, or the manifest does) is never
/// published; and on the local stack (`applied`: the manifest is the one
/// applied) code other than the manifest's release build of that function
/// came from elsewhere (an earlier watch, say).
fn unreleased(
    staged: &BTreeMap<String, Running>,
    manifest: Option<&Manifest>,
    applied: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (function, running) in staged {
        let code = short_hash(&running.code_sha256);
        let built = manifest
            .and_then(|manifest| manifest.functions.get(function))
            .filter(|artifact| artifact.code_sha256 == running.code_sha256);
        let watched = running.description.contains(WATCH_MARK)
            || built.is_some_and(|artifact| artifact.profile != Profile::Release);
        if watched {
            problems.push(format!(
                "{function}: staging runs {code}, a watch build (`cargo xtask dev --watch`), which \
                 is never published: `cargo xtask build && cargo xtask apply`, then verify"
            ));
        } else if built.is_none() && applied {
            problems.push(format!(
                "{function}: staging runs {code}, which is not the build manifest's {function} \
                 (a watch build, or a build since replaced): `cargo xtask build && cargo xtask \
                 apply`, then verify"
            ));
        }
    }
    problems
}

/// Every route (method, resource path) of the applied API.
async fn routes(world: &World) -> Result<Vec<(String, String)>> {
    let snapshot =
        crate::gateway::config::Snapshot::read(&world.aws, &world.applied.api_id).await?;
    Ok(snapshot
        .resources
        .iter()
        .flat_map(|resource| {
            resource
                .methods
                .keys()
                .map(|method| (method.clone(), resource.path.clone()))
        })
        .collect())
}

/// The pass/fail table.
fn table(receipt: &Receipt) -> String {
    let rows: Vec<Vec<String>> = receipt
        .cases
        .iter()
        .map(|case| {
            vec![
                if case.passed { "ok" } else { "FAIL" }.to_owned(),
                case.name.clone(),
                case.request.clone(),
                format!(
                    "{} ({})",
                    case.status
                        .map(|status| status.to_string())
                        .unwrap_or_else(|| "-".to_owned()),
                    case.expected_status
                ),
                format!("{:.0} ms", case.millis),
                case.failure.clone().unwrap_or_default(),
            ]
        })
        .collect();
    crate::build::table(
        &[
            "result",
            "case",
            "request",
            "status (expected)",
            "time",
            "why",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_is_http_or_https_with_a_host() {
        assert_eq!(
            parse_base_url("http://127.0.0.1:3000/staging/").unwrap(),
            "http://127.0.0.1:3000/staging"
        );
        assert_eq!(
            parse_base_url("https://staging.api.example.com").unwrap(),
            "https://staging.api.example.com"
        );
        for bad in [
            "127.0.0.1:3000",
            "ftp://host",
            "http://",
            "https://h/s?x=1",
            "",
        ] {
            let err = parse_base_url(bad).unwrap_err();
            assert!(err.contains("is not a base URL"), "{bad}: {err}");
        }
    }

    fn running(version: &str, hash: &str) -> Running {
        Running {
            version: version.to_owned(),
            code_sha256: hash.to_owned(),
            configuration: "config".to_owned(),
            description: String::new(),
            state: "Active/Successful".to_owned(),
            additional: None,
        }
    }

    fn receipt() -> Receipt {
        Receipt {
            target: "local".to_owned(),
            api_id: "api".to_owned(),
            api_revision: "rev1".to_owned(),
            functions: BTreeMap::from([
                ("status".to_owned(), running("$LATEST", "aaaa")),
                ("users".to_owned(), running("$LATEST", "bbbb")),
            ]),
            url: String::new(),
            verified_at: String::new(),
            passed: true,
            uncovered: Vec::new(),
            cases: Vec::new(),
        }
    }

    fn staging(status: Option<&str>, revision: &str) -> StageRuns {
        StageRuns {
            api_revision: Some(revision.to_owned()),
            functions: BTreeMap::from([
                (
                    "status".to_owned(),
                    status.map(|hash| running("$LATEST", hash)),
                ),
                ("users".to_owned(), Some(running("$LATEST", "bbbb"))),
            ]),
        }
    }

    #[test]
    fn only_release_builds_are_vouched_for() {
        let digest = |bytes: &[u8]| crate::artifact::sha256(bytes);
        let (status, users, watch, other) = (
            digest(b"status release"),
            digest(b"users release"),
            digest(b"users watch"),
            digest(b"someone else's"),
        );
        let artifact =
            |digest: &crate::artifact::Sha256Digest, profile| crate::artifact::Artifact {
                path: format!("f-{}.zip", digest.hex),
                zip_size: 1,
                sha256: digest.hex.clone(),
                code_sha256: digest.base64.clone(),
                binary_size: 1,
                binary_sha256: String::new(),
                max_glibc: "none".to_owned(),
                profile,
            };
        let manifest = |users_profile| {
            let mut manifest = Manifest::default();
            manifest
                .functions
                .insert("status".to_owned(), artifact(&status, Profile::Release));
            let users_zip = if users_profile == Profile::Release {
                &users
            } else {
                &watch
            };
            manifest
                .functions
                .insert("users".to_owned(), artifact(users_zip, users_profile));
            manifest
        };
        let staged = |status: &str, users: &str| {
            BTreeMap::from([
                ("status".to_owned(), running("$LATEST", status)),
                ("users".to_owned(), running("$LATEST", users)),
            ])
        };
        let released = manifest(Profile::Release);
        let watched = manifest(Profile::Watch);

        // The manifest's release builds, each under its own name: vouched for.
        assert!(
            unreleased(
                &staged(&status.base64, &users.base64),
                Some(&released),
                true
            )
            .is_empty()
        );
        // A watch build the manifest knows, locally and on AWS alike.
        for applied in [true, false] {
            let problems = unreleased(
                &staged(&status.base64, &watch.base64),
                Some(&watched),
                applied,
            );
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].starts_with("users: ") && problems[0].contains("a watch build"));
        }
        // Another function's zip, or code from elsewhere: refused where the
        // manifest is the applied one; on AWS it cannot be told.
        let swapped = unreleased(
            &staged(&status.base64, &status.base64),
            Some(&released),
            true,
        );
        assert_eq!(swapped.len(), 1);
        assert!(
            swapped[0].contains("is not the build manifest's users"),
            "{swapped:?}"
        );
        assert!(
            unreleased(
                &staged(&status.base64, &status.base64),
                Some(&released),
                false
            )
            .is_empty()
        );
        assert_eq!(
            unreleased(&staged(&other.base64, &other.base64), None, true).len(),
            2
        );
        // A function that says it runs a watch build is refused, manifest or none.
        let mut marked = staged(&status.base64, &other.base64);
        marked.get_mut("users").unwrap().description =
            format!("watch build {WATCH_MARK}: never published");
        let problems = unreleased(&marked, None, false);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("a watch build"), "{problems:?}");
    }

    #[tokio::test]
    async fn verify_waits_for_an_update_in_progress_and_refuses_one_that_never_ends() {
        let at = |state: &str| {
            let mut stage = staging(Some("aaaa"), "rev1");
            if let Some(Some(status)) = stage.functions.get_mut("status") {
                status.state = state.to_owned();
            }
            stage
        };
        // Ready at once, or once the update is done.
        for ready in ["Active/Successful", "Active/-"] {
            let stage = wait_ready(|| async { Ok(at(ready)) }, Duration::ZERO, Duration::ZERO)
                .await
                .unwrap();
            assert!(not_ready(&stage).is_empty());
        }
        let mut states = vec!["Active/Successful", "Active/InProgress", "Pending/-"];
        let stage = wait_ready(
            || {
                let state = states.pop().unwrap();
                async move { Ok(at(state)) }
            },
            Duration::from_secs(60),
            Duration::from_millis(1),
        )
        .await
        .unwrap();
        assert_eq!(stage, at("Active/Successful"));
        assert!(states.is_empty(), "it read until ready, and no more");
        // Never ready (in progress, failed, inactive): refused, naming it.
        for never in [
            "Active/InProgress",
            "Active/Failed",
            "Inactive/Successful",
            "Pending/-",
        ] {
            let err = wait_ready(
                || async { Ok(at(never)) },
                Duration::from_millis(20),
                Duration::from_millis(1),
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&format!(
                    "status: State/LastUpdateStatus {never}, not Active/Successful"
                )),
                "{err}"
            );
            assert!(err.contains("nothing was verified"), "{err}");
        }
    }

    #[test]
    fn a_receipt_vouches_only_for_the_code_and_revision_it_verified() {
        let receipt = receipt();
        assert!(
            receipt
                .mismatches("local", "api", &staging(Some("aaaa"), "rev1"))
                .is_empty()
        );

        let moved = receipt.mismatches("local", "api", &staging(Some("cccc"), "rev1"));
        assert_eq!(moved.len(), 1);
        assert!(moved[0].starts_with("status: staging runs"), "{moved:?}");

        let mut reconfigured = staging(Some("aaaa"), "rev1");
        if let Some(Some(status)) = reconfigured.functions.get_mut("status") {
            status.configuration = "more memory".to_owned();
        }
        let changed = receipt.mismatches("local", "api", &reconfigured);
        assert_eq!(
            changed,
            [
                "status: its configuration (environment, memory, timeout, role, ...) changed since verify"
            ]
        );

        let redeployed = receipt.mismatches("local", "api", &staging(Some("aaaa"), "rev2"));
        assert!(
            redeployed[0].contains("API revision rev2"),
            "{redeployed:?}"
        );

        assert!(
            !receipt
                .mismatches("aws", "api", &staging(Some("aaaa"), "rev1"))
                .is_empty()
        );
        assert!(
            !receipt
                .mismatches("local", "other", &staging(Some("aaaa"), "rev1"))
                .is_empty()
        );
        assert!(
            !receipt
                .mismatches("local", "api", &staging(None, "rev1"))
                .is_empty()
        );

        let mut fewer = staging(Some("aaaa"), "rev1");
        fewer.functions.remove("users");
        let gone = receipt.mismatches("local", "api", &fewer);
        assert_eq!(gone, ["users: verified, but no longer deployed"]);
    }
}
