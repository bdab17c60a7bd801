//! `cargo xtask publish` and `cargo xtask rollback`: prod moves to a pin
//! (function -> published version, API revision) through one path:
//! candidate pin -> `terraform plan` with it -> refused unless the plan
//! touches only prod's aliases, their permissions and prod's deployment ->
//! the pin file written -> exactly that saved plan applied.
//!
//! Every step can be repeated: a version already published for the
//! verified code is reused, a pin already written is kept, an empty plan
//! applies nothing. So a publish interrupted anywhere converges when run
//! again.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use xshell::Shell;

use super::plan::{self, Plan};
use super::verify::Receipt;
use super::{
    History, Published, Release, Running, StageRuns, World, refuse, short_hash, short_revision,
};
use crate::LocalDir;
use crate::live::{aws_error, configuration_digest};
use crate::terraform::TargetArgs;

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Check everything and show the plan, but publish, pin and apply nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The release note kept in the pin and the history [default: the receipt's summary].
    #[arg(long, conflicts_with_all = ["promote", "abort"])]
    pub note: Option<String>,
    /// Release gradually: send PERCENT of prod's invocations of each changed
    /// function to its new version (a weighted prod alias), bake, then move
    /// prod wholly to it, or roll back if one of the canary's alarms fires.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=99))]
    pub canary: Option<u8>,
    /// How long a canary bakes before it is promoted (at least the alarms'
    /// period times their evaluation periods): `5m`, `90s`, `1h`.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration, requires = "canary")]
    pub bake: std::time::Duration,
    /// Finish a canary left in flight (its bake interrupted): move prod wholly to it.
    #[arg(long, conflicts_with_all = ["canary", "abort"])]
    pub promote: bool,
    /// Cancel a canary in flight: remove its weights, prod wholly on the release before it.
    #[arg(long, conflicts_with = "canary")]
    pub abort: bool,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The release to go back to [default: the one before the pinned release].
    #[arg(long, value_name = "RELEASE")]
    to: Option<u64>,
    /// Check everything and show the plan, but pin and apply nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `cargo xtask publish`.
pub fn publish(sh: &Shell, local: &LocalDir, args: PublishArgs) -> Result<()> {
    let runtime = super::runtime()?;
    let world = runtime.block_on(World::open(sh, local, &args.target))?;
    if args.promote || args.abort {
        return super::canary::finish(&runtime, sh, &world, args.promote, args.dry_run);
    }
    let pinned = Release::read(&world.pin_path())?;
    if let Some(canary) = &pinned.canary {
        bail!(
            "a canary of release {} is in flight (since {}: {}% of prod on {}), so nothing was \
             published: finish it first with `cargo xtask publish{flag} --promote` (all of prod \
             to it) or `cargo xtask publish{flag} --abort` (back to release {})",
            canary.release,
            canary.started_at,
            canary.percent,
            super::canary::versions(canary),
            pinned.release,
            flag = world.flag()
        );
    }
    let receipt = Receipt::read(&world)?;
    if !receipt.passed {
        bail!(
            "the last verify failed ({}, at {}): fix staging, then `cargo xtask verify{}` again",
            receipt.tally(),
            receipt.verified_at,
            world.flag()
        );
    }
    let target = if world.terraform.aws { "aws" } else { "local" };
    let staging = runtime.block_on(world.stage("staging"))?;
    refuse(
        &format!(
            "staging no longer runs what the receipt verified, so nothing was published \
             (run `cargo xtask verify{}` again)",
            world.flag()
        ),
        &receipt.mismatches(target, &world.applied.api_id, &staging),
    )?;

    let history = History::read(&world.history_path())?;
    if let Some(percent) = args.canary {
        // Before anything is published: a refusal moves nothing.
        let prod = runtime.block_on(world.stage("prod"))?;
        super::canary::check_start(
            world.applied.alarms.as_ref(),
            world.terraform.aws,
            &pinned,
            &receipt,
            &prod,
            args.bake,
        )
        .with_context(|| format!("no canary at {percent}%, nothing was published"))?;
    }
    let mut versions = BTreeMap::new();
    let mut moves = Vec::new();
    for (function, verified) in &receipt.functions {
        let name = world.applied.function_name(function)?;
        let version = runtime.block_on(version_for(&world, &name, verified, args.dry_run))?;
        moves.push(format!("{function}: {}", version.describe()));
        versions.insert(function.clone(), version.number().to_owned());
    }

    let note = args.note.clone().unwrap_or_else(|| {
        format!(
            "verified on staging at {}: {}",
            receipt.verified_at,
            receipt.tally()
        )
    });
    if let Some(percent) = args.canary {
        let start = super::canary::Start {
            pinned,
            release: history.next_release(&Release::read(&world.pin_path())?),
            note,
            percent,
            versions,
            bake: args.bake,
        };
        return super::canary::start(&runtime, sh, &world, start, args.dry_run);
    }
    let mut candidate = Release {
        release: history.next_release(&pinned),
        note,
        functions: versions,
        api_revision: receipt.api_revision.clone(),
        canary: None,
    };
    if candidate.same_pin(&pinned) {
        // Already pinned (a publish run again, or resumed): the same release.
        candidate = pinned.clone();
    }
    eprintln!(
        "==> release {}: {} at API revision {}",
        candidate.release,
        moves.join(", "),
        short_revision(&candidate.api_revision)
    );
    let published = Published {
        release: candidate.release,
        published_at: super::now(),
        note: candidate.note.clone(),
        functions: candidate.functions.clone(),
        code_sha256: receipt
            .functions
            .iter()
            .map(|(function, running)| (function.clone(), running.code_sha256.clone()))
            .collect(),
        api_revision: candidate.api_revision.clone(),
        canary: None,
    };
    let promotion = Promotion {
        pinned,
        candidate,
        release: Some(published),
        resume: format!("cargo xtask publish{}", world.flag()),
    };
    promote(&runtime, sh, &world, promotion, args.dry_run)
}

/// `cargo xtask rollback`.
pub fn rollback(sh: &Shell, local: &LocalDir, args: RollbackArgs) -> Result<()> {
    let runtime = super::runtime()?;
    let world = runtime.block_on(World::open(sh, local, &args.target))?;
    let pinned = Release::read(&world.pin_path())?;
    // During a canary, back is the release it started from (as `publish
    // --abort`), unless told where.
    if pinned.canary.is_some() && args.to.is_none() {
        return super::canary::finish(&runtime, sh, &world, false, args.dry_run);
    }
    let history = History::read(&world.history_path())?;
    let known = || {
        let releases: Vec<String> = history
            .releases
            .iter()
            .map(|r| r.release.to_string())
            .collect();
        if releases.is_empty() {
            "nothing has been published".to_owned()
        } else {
            format!("the releases are {}", releases.join(", "))
        }
    };
    let target = match args.to {
        Some(release) => history.get(release).with_context(|| {
            format!(
                "no release {release} in {}: {}",
                world.history_path().display(),
                known()
            )
        })?,
        None => history.before(&pinned).with_context(|| {
            format!(
                "prod is at release {}, and there is no earlier release to go back to ({})",
                pinned.release,
                known()
            )
        })?,
    };
    // Prod redeploys only when the pinned revision changes, and a deployment
    // snapshots the API as applied now: going back is safe to prod's current
    // revision (no redeployment) or to the applied one, to no other.
    if target.api_revision != pinned.api_revision
        && target.api_revision != world.applied.api_revision
    {
        bail!(
            "release {} was published at API revision {}; prod is at {} and the API is applied at \
             {}: deploying prod now would snapshot today's API configuration, not that one. Put \
             terraform/ back as it was (git revert), apply, verify and publish instead.",
            target.release,
            short_revision(&target.api_revision),
            short_revision(&pinned.api_revision),
            short_revision(&world.applied.api_revision)
        );
    }
    let mut problems = Vec::new();
    for (function, version) in &target.functions {
        let Ok(name) = world.applied.function_name(function) else {
            problems.push(format!("{function}: no longer deployed"));
            continue;
        };
        let code = runtime.block_on(world.aws.function_version(&name, version))?;
        let expected = target.code_sha256.get(function);
        match code {
            None => problems.push(format!("{function}: version {version} no longer exists")),
            Some(_) if expected.is_none() => problems.push(format!(
                "{function}: the history has no CodeSha256 for version {version}, so what it holds \
                 cannot be checked"
            )),
            Some(code) if expected.is_some_and(|hash| *hash != code.code_sha256) => {
                problems.push(format!(
                    "{function}: version {version} holds {}, the history says {}",
                    short_hash(&code.code_sha256),
                    short_hash(expected.expect("checked"))
                ))
            }
            Some(_) => {}
        }
    }
    refuse(
        &format!("cannot go back to release {}", target.release),
        &problems,
    )?;
    let note = format!(
        "rolled back from release {} to release {} at {}: {}",
        pinned.release,
        target.release,
        super::now(),
        target.note
    );
    if !target.served_prod() {
        bail!(
            "release {} was a canary that did not go on to all of prod ({}): publish what you \
             want in prod instead",
            target.release,
            target
                .canary
                .as_ref()
                .map(|canary| format!("{}: {}", canary.outcome, canary.reason))
                .unwrap_or_default()
        );
    }
    let mut candidate = target.pin(note);
    if candidate.same_pin(&pinned) {
        candidate = pinned.clone();
    }
    eprintln!(
        "==> rollback: release {} -> {}",
        pinned.release, target.release
    );
    let resume = format!(
        "cargo xtask rollback{} --to {}",
        world.flag(),
        target.release
    );
    // A canary it ends is recorded as rolled back.
    let release = match pinned.canary.is_some() {
        true => Some(super::canary::outcome_record(
            &runtime,
            &world,
            &pinned,
            "rolled back",
            &format!("`cargo xtask rollback --to {}`", target.release),
        )?),
        false => None,
    };
    let promotion = Promotion {
        pinned,
        candidate,
        release,
        resume,
    };
    promote(&runtime, sh, &world, promotion, args.dry_run)
}

/// The version `function` publishes for the verified `code_sha256`.
enum Version {
    Reused(String),
    Published(String),
    /// Dry run: what `PublishVersion` would most likely number it.
    WouldPublish(String),
}

impl Version {
    fn number(&self) -> &str {
        match self {
            Version::Reused(n) | Version::Published(n) | Version::WouldPublish(n) => n,
        }
    }

    fn describe(&self) -> String {
        match self {
            Version::Reused(n) => format!("version {n} (already published)"),
            Version::Published(n) => format!("version {n} (published now)"),
            Version::WouldPublish(n) => format!("version {n} (would be published)"),
        }
    }
}

/// Finds or publishes the version of `function` that snapshots what was
/// `verified`: its code and its configuration.
async fn version_for(
    world: &World,
    function: &str,
    verified: &Running,
    dry_run: bool,
) -> Result<Version> {
    pause(world, "checks", function).await?;
    let (latest, versions) = world.versions(function).await?;
    // AWS refuses PublishVersion on a CodeSha256 mismatch; the emulator does
    // not, so the check is ours too (and covers the configuration).
    let again = || format!("run `cargo xtask verify{}` again", world.flag());
    if latest.code_sha256() != Some(verified.code_sha256.as_str()) {
        bail!(
            "{function}: $LATEST holds {} now, not the verified {}: it moved since verify; {}",
            short_hash(latest.code_sha256().unwrap_or_default()),
            short_hash(&verified.code_sha256),
            again()
        );
    }
    if configuration_digest!(&latest) != verified.configuration {
        bail!(
            "{function}: the configuration of $LATEST changed since verify; {}",
            again()
        );
    }
    // ListVersionsByFunction leaves State and LastUpdateStatus out on AWS:
    // $LATEST's own configuration has them.
    let state = world
        .aws
        .function_version(function, "$LATEST")
        .await?
        .map(|latest| latest.state)
        .unwrap_or_else(|| "-/-".to_owned());
    if !crate::live::is_ready(&state) {
        bail!(
            "{function}: $LATEST is {state} (State/LastUpdateStatus), not Active/Successful: it \
             does not run what it reports yet; wait for the update to finish, then {}",
            again()
        );
    }
    let snapshots_it = |version: &aws_sdk_lambda::types::FunctionConfiguration| {
        version.code_sha256() == Some(verified.code_sha256.as_str())
            && configuration_digest!(version) == verified.configuration
    };
    if let Some(existing) = versions.iter().rev().find(|version| snapshots_it(version)) {
        let version = existing.version().unwrap_or_default().to_owned();
        if !dry_run {
            wait_until_active(world, function, &version).await?;
        }
        return Ok(Version::Reused(version));
    }
    if dry_run {
        let next = versions
            .iter()
            .map(|v| super::version_number(v.version().unwrap_or_default()))
            .max()
            .unwrap_or(0)
            + 1;
        return Ok(Version::WouldPublish(next.to_string()));
    }
    pause(world, "publish", function).await?;
    let published = world
        .aws
        .lambda
        .publish_version()
        .function_name(function)
        .code_sha256(&verified.code_sha256)
        .description(format!("verified CodeSha256 {}", verified.code_sha256))
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| {
            format!(
                "publishing {function} (AWS refuses when $LATEST no longer holds the verified code: \
                 verify again)"
            )
        })?;
    let version = published.version().unwrap_or_default().to_owned();
    if published.code_sha256() != Some(verified.code_sha256.as_str())
        || configuration_digest!(&published) != verified.configuration
    {
        bail!(
            "{function}: $LATEST changed while publishing: version {version} is not what was \
             verified, and it is not pinned. {}.",
            again()
        );
    }
    wait_until_active(world, function, &version).await?;
    Ok(Version::Published(version))
}

/// Waits (up to a minute) for a published version to be `Active`: one that
/// is still `Pending` cannot serve prod yet.
async fn wait_until_active(world: &World, function: &str, version: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let state = world
            .aws
            .function_version(function, version)
            .await?
            .map(|version| version.state)
            .with_context(|| format!("{function}: version {version} is gone"))?;
        if crate::live::is_ready(&state) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "{function}: version {version} is {state} (State/LastUpdateStatus) after a minute, \
                 not Active: nothing was pinned; publish again once it is"
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// A test seam of the release flow: with `XTASK_TEST_PAUSE_DIR` naming a
/// directory, `XTASK_TEST_PAUSE_AT` a step (`checks`: before publish reads
/// `$LATEST` to check it against the receipt; `publish`: just before its
/// PublishVersion; `apply`: after the pin is written, before the apply)
/// and `XTASK_TEST_PAUSE_FUNCTION` the Lambda function (`prod` for
/// `apply`), the command writes `<dir>/<function>.ready` at that step and
/// waits (up to two minutes) for `<dir>/<function>.go`, so a test can change
/// the function (or stop the command) at exactly that step. Unset, and on
/// AWS itself (no loopback `AWS_ENDPOINT_URL`: `live::emulated_endpoint`),
/// nothing waits.
async fn pause(world: &World, step: &str, function: &str) -> Result<()> {
    let Some(dir) = std::env::var_os("XTASK_TEST_PAUSE_DIR") else {
        return Ok(());
    };
    let emulated = crate::live::emulated_endpoint().is_some();
    if (world.terraform.aws && !emulated)
        || std::env::var("XTASK_TEST_PAUSE_AT").as_deref() != Ok(step)
        || std::env::var("XTASK_TEST_PAUSE_FUNCTION").as_deref() != Ok(function)
    {
        return Ok(());
    }
    let dir = std::path::PathBuf::from(dir);
    std::fs::write(dir.join(format!("{function}.ready")), b"")?;
    let go = dir.join(format!("{function}.go"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !go.exists() {
        if std::time::Instant::now() > deadline {
            bail!("XTASK_TEST_PAUSE_DIR: no {} within 120 s", go.display());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A move of prod: from the pinned release to the candidate.
pub(super) struct Promotion {
    pub pinned: Release,
    pub candidate: Release,
    /// What the history gains (a publish; a rollback adds nothing).
    pub release: Option<Published>,
    /// The command that resumes it if the apply fails.
    pub resume: String,
}

/// Moves prod to `candidate`: plan with it, refuse anything beyond prod,
/// write the pin, apply the saved plan, record the release.
pub(super) fn promote(
    runtime: &tokio::runtime::Runtime,
    sh: &Shell,
    world: &World,
    promotion: Promotion,
    dry_run: bool,
) -> Result<()> {
    let Promotion {
        pinned,
        candidate,
        release,
        resume,
    } = promotion;
    let candidate = &candidate;
    let candidate_file = world.terraform.scratch_file("candidate.tfvars.json")?;
    std::fs::write(&candidate_file, candidate.file_text())?;
    world.terraform.init(sh)?;
    eprintln!("==> terraform plan with the candidate pin");
    let plan_file = world.terraform.scratch_file("promote.tfplan")?;
    let (_, plan) = plan::make(sh, &world.terraform, &plan_file, Some(&candidate_file))?;
    plan::check_promotion(&plan, world, candidate)?;
    // On the runtime the world's SDK clients were made on.
    let prod = runtime.block_on(world.stage("prod"))?;
    print!("{}", summary(&plan, &prod, &pinned, candidate));
    if dry_run {
        println!(
            "dry run: nothing was published, pinned or applied ({} unchanged)",
            world.pin_path().display()
        );
        return Ok(());
    }

    // The pin this promotion started from must still be the one in force:
    // another publish, rollback or canary's end since (a second terminal, a
    // runner thought lost) is refused here, not overwritten.
    let now = Release::read(&world.pin_path()).ok();
    if now.as_ref() != Some(candidate) {
        if now.as_ref() != Some(&pinned) {
            bail!(
                "the prod pin {} changed while this command ran (another publish, rollback or \
                 canary ended meanwhile?), so nothing was pinned or applied: it is at release {}; \
                 `cargo xtask status{}` shows where prod is",
                world.pin_path().display(),
                now.map_or_else(|| "?".to_owned(), |pin| pin.release.to_string()),
                world.flag()
            );
        }
        candidate.write(&world.pin_path())?;
        eprintln!("==> wrote the prod pin {}", world.pin_path().display());
    }
    // What the pin now says is decided: recorded with it, so an apply that
    // fails (and is resumed) leaves no release unrecorded.
    if let Some(release) = release {
        History::record(&world.history_path(), release)?;
    }
    runtime.block_on(pause(world, "apply", "prod"))?;
    if !plan.is_empty() {
        eprintln!("==> terraform apply (the saved plan)");
        let output = world
            .terraform
            .command(sh)
            .args(["apply", "-input=false", "-no-color"])
            .arg(world.terraform.lock_timeout())
            .arg(plan_file.as_os_str())
            .ignore_status()
            .quiet()
            .output()?;
        if !output.status.success() {
            bail!(
                "terraform apply failed; the pin {} is written, and `{resume}` resumes:\n{}{}",
                world.pin_path().display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if !world.terraform.aws
            && let Err(err) = crate::gateway::config::record_applied(&world.local)
        {
            eprintln!("warning: the applied API configuration was not recorded: {err:#}");
        }
    }
    let canary = match &candidate.canary {
        Some(canary) => format!(
            ", release {} on {}% of it (a canary: {})",
            canary.release,
            canary.percent,
            super::canary::versions(canary)
        ),
        None => String::new(),
    };
    println!(
        "prod is at release {}{canary}{}",
        candidate.release,
        if world.terraform.aws {
            format!(
                ": commit {} and {} (the release log)",
                world.pin_path().display(),
                world.history_path().display()
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Per function, the version prod runs now -> the candidate's, and the
/// API revision.
fn summary(plan: &Plan, prod: &StageRuns, pinned: &Release, candidate: &Release) -> String {
    let mut rows = Vec::new();
    let functions: std::collections::BTreeSet<&String> = prod
        .functions
        .keys()
        .chain(candidate.functions.keys())
        .collect();
    for function in functions {
        let old = match prod.functions.get(function) {
            Some(Some(running)) => running.describe(),
            _ => "none".to_owned(),
        };
        let new = candidate.describe(function);
        rows.push(vec![
            function.clone(),
            format!("{old} -> {new}"),
            if old == new { "unchanged" } else { "moves" }.to_owned(),
        ]);
    }
    let revision = |revision: Option<&str>| match revision {
        None | Some("") => "none".to_owned(),
        Some(revision) => short_revision(revision).to_owned(),
    };
    let release = |release: &Release| match &release.canary {
        Some(canary) => format!(
            "{} with release {} on {}% (canary)",
            release.release, canary.release, canary.percent
        ),
        None => release.release.to_string(),
    };
    let mut out = format!(
        "prod: release {} -> {}\n",
        release(pinned),
        release(candidate)
    );
    out += &crate::build::table(&["function", "prod version", ""], &rows);
    out += &format!(
        "API revision {} -> {}\n",
        revision(prod.api_revision.as_deref()),
        revision(Some(&candidate.api_revision))
    );
    if plan.is_empty() {
        out += "the plan is empty: prod already runs this\n";
    } else {
        let (add, change, destroy) = plan.counts();
        out +=
            &format!("plan (prod only): {add} to add, {change} to change, {destroy} to destroy\n");
    }
    out
}
