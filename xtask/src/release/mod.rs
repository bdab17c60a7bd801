//! The release flow, on the local stack or (`--aws`) on AWS:
//!
//! - `plan` ([`plan`]): what applying `terraform/` would change, readably;
//! - `verify` ([`verify`]): the smoke suite ([`smoke`]) against the staging
//!   stage over HTTP, and a receipt binding the result to each function's
//!   `CodeSha256` and the API revision staging serves;
//! - `publish` and `rollback` ([`publish`]): a published version per
//!   function, the prod pin (the var file Terraform reads) and a Terraform
//!   plan that may touch only prod's aliases and deployment, applied exactly;
//! - `status` ([`status`]): what each stage runs, the pin, and drift.
//!
//! A [`World`] is one target: its Terraform, its applied outputs, its AWS
//! clients and its release files (pin, history, receipt).

pub mod apikey;
pub mod canary;
pub mod plan;
pub mod publish;
pub mod smoke;
pub mod status;
pub mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aws_sdk_lambda::error::ProvideErrorMetadata;
use aws_sdk_lambda::types::FunctionConfiguration;
use base64::Engine;
use serde::{Deserialize, Serialize};
use xshell::Shell;

use crate::LocalDir;
use crate::gateway::config::deployment_revision;
use crate::live::{Applied, Aws, aws_error};
use crate::terraform::{HISTORY_FILE, PIN_FILE, TargetArgs, Terraform};

/// One target of the release flow: the local stack or AWS.
pub struct World {
    pub terraform: Terraform,
    pub applied: Applied,
    pub aws: Aws,
    pub local: LocalDir,
}

impl World {
    /// The target `args` names, which must have been applied to.
    pub async fn open(sh: &Shell, local: &LocalDir, args: &TargetArgs) -> Result<World> {
        let terraform = Terraform::existing(sh, local, args)?;
        let (applied, aws) = if terraform.aws {
            terraform.init(sh)?;
            let output = terraform
                .command(sh)
                .args(["output", "-json"])
                .quiet()
                .read()
                .context("terraform output failed (above)")?;
            let outputs: serde_json::Value =
                serde_json::from_str(&output).context("reading `terraform output -json`")?;
            let applied = Applied::from_outputs(&outputs, PathBuf::new()).context(
                "nothing is applied to AWS yet: `cargo xtask apply --aws` (or terraform apply in \
                 terraform/) first",
            )?;
            let aws = Aws::in_region(&applied.region).await;
            (applied, aws)
        } else {
            let stack = crate::live::LocalStack::connect(local).await?;
            (stack.applied, stack.aws)
        };
        Ok(World {
            terraform,
            applied,
            aws,
            local: local.clone(),
        })
    }

    /// "the local stack" or "AWS", for messages.
    pub fn name(&self) -> &'static str {
        if self.terraform.aws {
            "AWS"
        } else {
            "the local stack"
        }
    }

    /// `--aws` when the command acts on AWS, for the commands it suggests.
    pub fn flag(&self) -> &'static str {
        if self.terraform.aws { " --aws" } else { "" }
    }

    /// The prod pin: `terraform/prod.auto.tfvars.json` (committed) on AWS,
    /// the local working directory's own on the local stack.
    pub fn pin_path(&self) -> PathBuf {
        self.terraform.dir.join(PIN_FILE)
    }

    /// The releases published so far, beside the pin.
    pub fn history_path(&self) -> PathBuf {
        self.terraform.dir.join(HISTORY_FILE)
    }

    /// The last verify's receipt (never committed: it describes one moment
    /// of one stage).
    pub fn receipt_path(&self) -> PathBuf {
        if self.terraform.aws {
            crate::project_root().join("target/aws/receipt.json")
        } else {
            self.local.0.join("release/receipt.json")
        }
    }

    /// Function (manifest name) -> what `stage`'s alias runs (`None`: no
    /// alias), and the API revision the stage's deployment was made at.
    pub async fn stage(&self, stage: &str) -> Result<StageRuns> {
        let mut functions = BTreeMap::new();
        for (function, name) in &self.applied.function_names {
            let running = self
                .aws
                .function_version(name, stage)
                .await?
                .map(|version| Running {
                    version: version.version,
                    code_sha256: version.code_sha256,
                    configuration: version.configuration,
                    description: version.description,
                    state: version.state,
                    additional: None,
                });
            // A weighted alias (a canary) sends a share elsewhere.
            let running = match running {
                Some(mut running) => {
                    running.additional = self
                        .aws
                        .alias(name, stage)
                        .await?
                        .and_then(|alias| alias.additional);
                    Some(running)
                }
                None => None,
            };
            functions.insert(function.clone(), running);
        }
        Ok(StageRuns {
            api_revision: self.stage_revision(stage).await?,
            functions,
        })
    }

    /// The API revision `stage`'s deployment was made at; `None` when the
    /// stage does not exist or its deployment names none.
    async fn stage_revision(&self, stage: &str) -> Result<Option<String>> {
        let api = &self.applied.api_id;
        let stage = match self
            .aws
            .apigateway
            .get_stage()
            .rest_api_id(api)
            .stage_name(stage)
            .send()
            .await
        {
            Ok(stage) => stage,
            Err(err) if err.code() == Some("NotFoundException") => return Ok(None),
            Err(err) => {
                return Err(aws_error(err)).with_context(|| format!("reading stage {stage}"));
            }
        };
        let Some(deployment) = stage.deployment_id() else {
            return Ok(None);
        };
        let deployment = self
            .aws
            .apigateway
            .get_deployment()
            .rest_api_id(api)
            .deployment_id(deployment)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading deployment {deployment}"))?;
        Ok(deployment.description().and_then(deployment_revision))
    }

    /// `$LATEST` of `function` (a Lambda name), and its published versions,
    /// oldest first.
    pub async fn versions(
        &self,
        function: &str,
    ) -> Result<(FunctionConfiguration, Vec<FunctionConfiguration>)> {
        let mut versions = Vec::new();
        let mut pages = self
            .aws
            .lambda
            .list_versions_by_function()
            .function_name(function)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(aws_error)
                .with_context(|| format!("listing the versions of {function}"))?;
            versions.extend(page.versions.unwrap_or_default());
        }
        let latest = versions
            .iter()
            .position(|version| version.version() == Some("$LATEST"))
            .map(|at| versions.remove(at))
            .with_context(|| format!("{function} has no $LATEST"))?;
        versions.sort_by_key(|version| version_number(version.version().unwrap_or_default()));
        Ok((latest, versions))
    }
}

/// What a stage runs.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRuns {
    pub api_revision: Option<String>,
    pub functions: BTreeMap<String, Option<Running>>,
}

/// The version an alias points at, and its code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Running {
    pub version: String,
    /// Lambda's `CodeSha256` (base64).
    pub code_sha256: String,
    /// The rest of what a version snapshots (`live::configuration_digest`).
    pub configuration: String,
    /// The version's description (a watch build says so there).
    #[serde(default)]
    pub description: String,
    /// Its `State` and `LastUpdateStatus` (`live::readiness`): whether it
    /// runs this code yet.
    #[serde(default)]
    pub state: String,
    /// A weighted alias's other version and its share (0 to 1): a canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional: Option<(String, f64)>,
}

impl Running {
    /// `1`, or `1 + 2 at 10%` while a share goes to another version.
    pub fn describe(&self) -> String {
        match &self.additional {
            Some((other, weight)) => format!(
                "{} + {other} at {}",
                self.version,
                crate::host::percent(*weight)
            ),
            None => self.version.clone(),
        }
    }
}

/// A version number as a number (`$LATEST` and anything else: 0).
pub fn version_number(version: &str) -> u64 {
    version.parse().unwrap_or(0)
}

/// The first 12 hex digits of a base64 `CodeSha256`: the digits `cargo xtask
/// build` prints and the zip's name carries.
pub fn short_hash(code_sha256: &str) -> String {
    match base64::engine::general_purpose::STANDARD.decode(code_sha256) {
        Ok(bytes) => bytes.iter().take(6).map(|b| format!("{b:02x}")).collect(),
        Err(_) => code_sha256.chars().take(12).collect(),
    }
}

/// The first 12 characters of an API revision.
pub fn short_revision(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// What prod serves: the `prod_release` variable in the pin file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub release: u64,
    pub note: String,
    /// Function (manifest name) -> published version.
    pub functions: BTreeMap<String, String>,
    pub api_revision: String,
    /// A canary in flight: a share of prod's invocations go to new
    /// versions (`cargo xtask publish --canary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

/// A release in flight as a canary: for each function it changes, the new
/// version its prod alias sends `percent` of invocations to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The release it becomes when promoted.
    pub release: u64,
    /// Its release note.
    pub note: String,
    /// 1 to 99.
    pub percent: u8,
    /// Function -> the new version (only the functions that change).
    pub versions: BTreeMap<String, String>,
    /// When its weights were applied (RFC 3339).
    pub started_at: String,
    /// How long it bakes before it is promoted, in seconds.
    pub bake_seconds: u64,
}

impl Canary {
    /// The share of invocations the new versions get (0 to 1).
    pub fn weight(&self) -> f64 {
        f64::from(self.percent) / 100.0
    }
}

impl Release {
    /// Whether both pin the same versions, routing and API revision
    /// (notes, numbers and times aside).
    pub fn same_pin(&self, other: &Release) -> bool {
        let routing = |release: &Release| {
            release
                .canary
                .as_ref()
                .map(|canary| (canary.percent, canary.versions.clone()))
        };
        self.functions == other.functions
            && self.api_revision == other.api_revision
            && routing(self) == routing(other)
    }

    /// This pin without its canary (prod wholly on `functions`).
    pub fn without_canary(&self) -> Release {
        Release {
            canary: None,
            ..self.clone()
        }
    }

    /// The pin a canary becomes when promoted: its release, wholly on the
    /// new versions.
    pub fn promoted(&self) -> Option<Release> {
        let canary = self.canary.as_ref()?;
        let mut functions = self.functions.clone();
        functions.extend(canary.versions.clone());
        Some(Release {
            release: canary.release,
            note: canary.note.clone(),
            functions,
            api_revision: self.api_revision.clone(),
            canary: None,
        })
    }

    /// What prod runs of `function`: `1`, or `1 + 2 at 10%`.
    pub fn describe(&self, function: &str) -> String {
        let Some(version) = self.functions.get(function) else {
            return "none".to_owned();
        };
        match self
            .canary
            .as_ref()
            .and_then(|canary| Some((canary.versions.get(function)?, canary.percent)))
        {
            Some((new, percent)) => format!("{version} + {new} at {percent}%"),
            None => version.clone(),
        }
    }

    pub fn read(path: &Path) -> Result<Release> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            prod_release: Release,
        }
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading the prod pin {} (`cargo xtask apply` creates it)",
                path.display()
            )
        })?;
        let file: File =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        Ok(file.prod_release)
    }

    /// The var file's text.
    pub fn file_text(&self) -> String {
        #[derive(Serialize)]
        struct File<'a> {
            prod_release: &'a Release,
        }
        serde_json::to_string_pretty(&File { prod_release: self }).expect("JSON") + "\n"
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomically(path, self.file_text().as_bytes())
    }
}

/// One release `publish` made, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub release: u64,
    pub published_at: String,
    pub note: String,
    /// Function -> version.
    pub functions: BTreeMap<String, String>,
    /// Function -> `CodeSha256` of that version.
    pub code_sha256: BTreeMap<String, String>,
    pub api_revision: String,
    /// How it went as a canary, if it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryOutcome>,
}

/// A canary's course, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryOutcome {
    pub percent: u8,
    pub started_at: String,
    pub ended_at: String,
    /// `promoted` (all of prod moved to it), `rolled back` (an alarm fired)
    /// or `aborted` (by hand).
    pub outcome: String,
    /// Why it ended so: the alarm that fired, or who ended it.
    pub reason: String,
}

impl Published {
    pub fn pin(&self, note: String) -> Release {
        Release {
            release: self.release,
            note,
            functions: self.functions.clone(),
            api_revision: self.api_revision.clone(),
            canary: None,
        }
    }

    /// Whether all of prod ever ran it: not a canary rolled back or aborted.
    pub fn served_prod(&self) -> bool {
        self.canary
            .as_ref()
            .is_none_or(|canary| canary.outcome == "promoted")
    }
}

/// The release history: every release `publish` made, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub releases: Vec<Published>,
}

impl History {
    pub fn read(path: &Path) -> Result<History> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(History::default()),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("JSON") + "\n";
        write_atomically(path, text.as_bytes())
    }

    pub fn get(&self, release: u64) -> Option<&Published> {
        self.releases.iter().find(|r| r.release == release)
    }

    /// The number the next release gets: above every release made and the
    /// pinned one.
    pub fn next_release(&self, pinned: &Release) -> u64 {
        let made = self.releases.iter().map(|r| r.release).max().unwrap_or(0);
        made.max(pinned.release) + 1
    }

    /// Where `rollback` goes without `--to`: the highest release below the
    /// pinned one that pins something else (a release published again
    /// after a rollback pins what it rolled away from) and once served all
    /// of prod (not a canary rolled back or aborted).
    pub fn before(&self, pinned: &Release) -> Option<&Published> {
        let pinned = pinned.without_canary();
        self.releases
            .iter()
            .filter(|r| {
                r.release < pinned.release
                    && r.served_prod()
                    && !r.pin(String::new()).same_pin(&pinned)
            })
            .max_by_key(|r| r.release)
    }

    /// Records `release`, or, if it is recorded already with the same
    /// versions and outcome (a command resumed), keeps that record; one
    /// that says otherwise is refused.
    pub fn record(path: &Path, release: Published) -> Result<()> {
        let mut history = History::read(path)?;
        match history.get(release.release) {
            None => {
                history.releases.push(release);
                history.write(path)
            }
            Some(recorded)
                if recorded.functions == release.functions
                    && recorded.canary.as_ref().map(|c| &c.outcome)
                        == release.canary.as_ref().map(|c| &c.outcome) =>
            {
                Ok(())
            }
            Some(recorded) => bail!(
                "{} already records release {} otherwise ({}): it was ended another way \
                 meanwhile; `cargo xtask status` shows where prod is",
                path.display(),
                release.release,
                recorded
                    .canary
                    .as_ref()
                    .map_or("published".to_owned(), |canary| canary.outcome.clone())
            ),
        }
    }
}

/// Writes through a temporary file, so a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The current time, RFC 3339 in seconds.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A tokio runtime for a command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Refuses with `reasons`, one per line, under `headline`.
pub fn refuse(headline: &str, reasons: &[String]) -> Result<()> {
    if reasons.is_empty() {
        return Ok(());
    }
    bail!("{headline}:\n  {}", reasons.join("\n  "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(release: u64) -> Published {
        Published {
            release,
            published_at: String::new(),
            note: String::new(),
            functions: BTreeMap::from([("status".to_owned(), release.to_string())]),
            code_sha256: BTreeMap::new(),
            api_revision: "r".to_owned(),
            canary: None,
        }
    }

    #[test]
    fn releases_are_numbered_above_all_made_and_rollback_walks_down() {
        let history = History {
            releases: vec![published(1), published(2), published(3)],
        };
        let pinned = published(2).pin(String::new());
        assert_eq!(history.next_release(&pinned), 4);
        assert_eq!(history.before(&pinned).unwrap().release, 1);
        let third = published(3).pin(String::new());
        assert_eq!(history.before(&third).unwrap().release, 2);
        assert!(history.before(&published(1).pin(String::new())).is_none());
        // Release 3 published what 2 had (after a rollback to 1): back is 1.
        let mut again = history.clone();
        again.releases[2].functions = again.releases[1].functions.clone();
        let third = again.releases[2].pin(String::new());
        assert_eq!(again.before(&third).unwrap().release, 1);
        let unpublished = Release {
            release: 0,
            note: String::new(),
            functions: BTreeMap::new(),
            api_revision: String::new(),
            canary: None,
        };
        assert_eq!(History::default().next_release(&unpublished), 1);
        // A canary rolled back never served all of prod: rollback passes it.
        let mut failed = history.clone();
        failed.releases[1].canary = Some(CanaryOutcome {
            percent: 10,
            started_at: String::new(),
            ended_at: String::new(),
            outcome: "rolled back".to_owned(),
            reason: "alarm x".to_owned(),
        });
        let third = failed.releases[2].pin(String::new());
        assert_eq!(failed.before(&third).unwrap().release, 1);
        failed.releases[1].canary.as_mut().unwrap().outcome = "promoted".to_owned();
        assert_eq!(failed.before(&third).unwrap().release, 2);
    }

    #[test]
    fn a_release_is_recorded_once_and_never_recorded_otherwise() {
        let dir = std::env::temp_dir().join(format!("xtask-history-{}", std::process::id()));
        let path = dir.join(HISTORY_FILE);
        let ended = |outcome: &str| {
            let mut release = published(4);
            release.canary = Some(CanaryOutcome {
                percent: 10,
                started_at: String::new(),
                ended_at: String::new(),
                outcome: outcome.to_owned(),
                reason: String::new(),
            });
            release
        };
        History::record(&path, ended("aborted")).unwrap();
        // Resumed: the same record again is kept as it was.
        History::record(&path, ended("aborted")).unwrap();
        assert_eq!(History::read(&path).unwrap().releases.len(), 1);
        // Ended another way by a command that did not know: refused.
        let err = History::record(&path, ended("promoted")).unwrap_err();
        assert!(
            err.to_string()
                .contains("already records release 4 otherwise (aborted)"),
            "{err}"
        );
        let mut other = ended("aborted");
        other.functions.insert("status".to_owned(), "9".to_owned());
        assert!(History::record(&path, other).is_err());
        assert_eq!(History::read(&path).unwrap().releases, [ended("aborted")]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_canary_pin_promotes_to_its_release_and_describes_its_weights() {
        let pinned = Release {
            release: 2,
            note: "two".to_owned(),
            functions: BTreeMap::from([
                ("status".to_owned(), "2".to_owned()),
                ("users".to_owned(), "1".to_owned()),
            ]),
            api_revision: "r".to_owned(),
            canary: Some(Canary {
                release: 3,
                note: "three".to_owned(),
                percent: 10,
                versions: BTreeMap::from([("status".to_owned(), "3".to_owned())]),
                started_at: String::new(),
                bake_seconds: 300,
            }),
        };
        assert_eq!(pinned.describe("status"), "2 + 3 at 10%");
        assert_eq!(pinned.describe("users"), "1");
        assert_eq!(pinned.describe("chirps"), "none");
        let promoted = pinned.promoted().unwrap();
        assert_eq!(promoted.release, 3);
        assert_eq!(promoted.note, "three");
        assert_eq!(promoted.functions["status"], "3");
        assert_eq!(promoted.functions["users"], "1");
        assert!(promoted.canary.is_none() && promoted.promoted().is_none());
        assert!(!pinned.same_pin(&pinned.without_canary()));
        let mut other_weight = pinned.clone();
        other_weight.canary.as_mut().unwrap().percent = 20;
        assert!(!pinned.same_pin(&other_weight));
        other_weight.canary.as_mut().unwrap().percent = 10;
        other_weight.canary.as_mut().unwrap().started_at = "later".to_owned();
        assert!(pinned.same_pin(&other_weight));
        // The pin file keeps it, and a pin without one has no such field.
        let dir = std::env::temp_dir().join(format!("xtask-canary-pin-{}", std::process::id()));
        let path = dir.join(PIN_FILE);
        pinned.write(&path).unwrap();
        assert_eq!(Release::read(&path).unwrap(), pinned);
        assert!(!pinned.without_canary().file_text().contains("canary"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_pin_file_round_trips_and_refuses_unknown_fields() {
        let dir = std::env::temp_dir().join(format!("xtask-pin-{}", std::process::id()));
        let path = dir.join(PIN_FILE);
        let pin = published(7).pin("a note".to_owned());
        pin.write(&path).unwrap();
        assert_eq!(Release::read(&path).unwrap(), pin);
        std::fs::write(&path, r#"{"prod_release": {"release": 1, "oops": 2}}"#).unwrap();
        assert!(Release::read(&path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hashes_are_shown_as_the_zips_hex_prefix() {
        let digest = crate::artifact::sha256(b"zip bytes");
        assert_eq!(short_hash(&digest.base64), digest.hex[..12]);
    }
}
