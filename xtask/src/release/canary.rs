//! Gradual promotion: `cargo xtask publish --canary PERCENT --bake
//! DURATION`, `--promote` and `--abort`.
//!
//! A canary is a pin too: the prod pin keeps the versions prod runs and
//! gains a `canary` (the new version of each function that changes, and
//! its share), which Terraform applies as the prod aliases' routing
//! configuration (and the canary's own alarms), through the same checked
//! plan as any promotion. Then it bakes: every few seconds it reads the
//! canary's alarms (on the local stack, after evaluating them: the
//! emulator does not) and what each version served, and either ends the
//! canary when the bake is over (the pin moves wholly to the new versions:
//! the release is recorded) or, as soon as one of its alarms is in `ALARM`,
//! rolls it back (the weights removed: recorded as rolled back, with the
//! alarm) and fails. Interrupted, the canary stays in flight, in the pin:
//! `--promote` or `--abort` ends it, each another checked pin change.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use xshell::Shell;

use super::publish::{Promotion, promote};
use super::verify::Receipt;
use super::{Canary, CanaryOutcome, History, Published, Release, StageRuns, World};
use crate::alarms;
use crate::live::{Applied, aws_error};

/// What a canary starts from.
pub struct Start {
    pub pinned: Release,
    /// The release number it becomes.
    pub release: u64,
    pub note: String,
    pub percent: u8,
    /// Function -> the version `publish` found or published for it.
    pub versions: BTreeMap<String, String>,
    pub bake: Duration,
}

/// `status 3, users 2`: the canary's new versions.
pub fn versions(canary: &Canary) -> String {
    canary
        .versions
        .iter()
        .map(|(function, version)| format!("{function} {version}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why no canary can start from `pinned` with what `receipt` verified
/// (checked before anything is published): prod must run something to
/// split with, at the same API revision; the bake must outlast the alarms'
/// evaluation; and staging must hold something prod does not run.
pub fn check_start(
    world: &World,
    pinned: &Release,
    receipt: &Receipt,
    prod: &StageRuns,
    bake: Duration,
) -> Result<()> {
    if pinned.functions.is_empty() {
        bail!(
            "prod serves nothing yet: a canary splits prod's invocations between the versions it \
             runs and new ones; publish the first release without --canary"
        );
    }
    if receipt.api_revision != pinned.api_revision {
        bail!(
            "staging was verified at API revision {}, prod is at {}: a canary cannot span a \
             change of the API (the prod stage would change for all of its traffic at once); \
             publish this release without --canary",
            super::short_revision(&receipt.api_revision),
            super::short_revision(&pinned.api_revision)
        );
    }
    let Some(settings) = &world.applied.alarms else {
        bail!(
            "{} has no alarms applied, and a canary is decided by them: apply terraform/ first \
             (`cargo xtask apply{}`)",
            world.name(),
            world.flag()
        );
    };
    let least = Duration::from_secs(settings.period_seconds * settings.evaluation_periods.max(1));
    if bake < least {
        bail!(
            "--bake {} is under the alarms' period ({} s, {} period(s) evaluated): they could \
             not judge the canary even once; bake at least {}",
            humantime::format_duration(bake),
            settings.period_seconds,
            settings.evaluation_periods,
            humantime::format_duration(least)
        );
    }
    let mut new = Vec::new();
    for (function, verified) in &receipt.functions {
        if !pinned.functions.contains_key(function) {
            bail!(
                "{function} has no prod version yet, so there is nothing to split its invocations \
                 with: publish it without --canary"
            );
        }
        let runs_it = matches!(
            prod.functions.get(function),
            Some(Some(running)) if running.code_sha256 == verified.code_sha256
                && running.configuration == verified.configuration
        );
        if !runs_it {
            new.push(function.as_str());
        }
    }
    if new.is_empty() {
        bail!(
            "prod already runs what staging verified (every function's code and configuration): \
             there is nothing new to send a share of prod to"
        );
    }
    Ok(())
}

/// Starts a canary: the pin with `start`'s new versions at its share,
/// applied through the checked plan; then the bake.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    sh: &Shell,
    world: &World,
    start: Start,
    dry_run: bool,
) -> Result<()> {
    let changed: BTreeMap<String, String> = start
        .versions
        .into_iter()
        .filter(|(function, version)| start.pinned.functions.get(function) != Some(version))
        .collect();
    if changed.is_empty() {
        bail!(
            "the versions staging's code publishes to are the ones prod runs: there is nothing \
             new to send a share of prod to"
        );
    }
    let canary = Canary {
        release: start.release,
        note: start.note,
        percent: start.percent,
        versions: changed,
        started_at: super::now(),
        bake_seconds: start.bake.as_secs(),
    };
    eprintln!(
        "==> canary of release {}: {} on {}% of prod, the rest on release {}",
        canary.release,
        versions(&canary),
        canary.percent,
        start.pinned.release
    );
    let candidate = Release {
        canary: Some(canary),
        ..start.pinned.clone()
    };
    let promotion = Promotion {
        pinned: start.pinned,
        candidate: candidate.clone(),
        release: None,
        resume: format!("cargo xtask publish{} --abort", world.flag()),
    };
    promote(runtime, sh, world, promotion, dry_run)?;
    if dry_run {
        return Ok(());
    }
    bake(runtime, sh, world, &candidate)
}

/// How often the bake looks at the alarms: twice a period, at least every
/// 15 s.
fn tick(period_seconds: u64) -> Duration {
    Duration::from_secs((period_seconds / 2).clamp(1, 15))
}

/// Bakes the canary `pin` holds: until its bake is over (then promoted) or
/// one of its alarms fires (then rolled back, and an error).
fn bake(runtime: &tokio::runtime::Runtime, sh: &Shell, world: &World, pin: &Release) -> Result<()> {
    let canary = pin.canary.as_ref().expect("a canary pin");
    let outputs = outputs(sh, world)?;
    let names = canary_alarms(&outputs, canary)?;
    let settings = outputs.alarms.clone().unwrap_or_default();
    // The bake counts from now, when the weights are applied (the pin's
    // `started_at` is when it was written, before the apply).
    let started = SystemTime::now();
    let bake = Duration::from_secs(canary.bake_seconds);
    eprintln!(
        "==> baking for {} (until {}), watching {}; Ctrl-C leaves the canary in flight: `cargo \
         xtask publish{flag} --promote` or `--abort` ends it",
        humantime::format_duration(bake),
        humantime::format_rfc3339_seconds(started + bake),
        names.join(", "),
        flag = world.flag()
    );
    loop {
        let now = SystemTime::now();
        let alarms = runtime.block_on(alarm_states(world, &names, now))?;
        let elapsed = now.duration_since(started).unwrap_or_default();
        let served = runtime.block_on(served(world, pin, started))?;
        eprintln!(
            "canary {} of {}: {} | {}",
            clock(elapsed),
            clock(bake),
            served,
            alarms
                .iter()
                .map(|alarm| format!("{} {}", alarm.name, alarm.state))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(fired) = alarms.iter().find(|alarm| alarm.state == "ALARM") {
            let reason = format!("alarm {} fired: {}", fired.name, fired.reason);
            eprintln!("==> {reason}: rolling back");
            end(runtime, sh, world, pin, "rolled back", &reason, false)?;
            bail!(
                "the canary of release {} was rolled back: {reason}. Prod is wholly on release {} \
                 again",
                canary.release,
                pin.release
            );
        }
        if elapsed >= bake {
            let reason = format!(
                "baked {} with no alarm",
                humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
            );
            eprintln!("==> {reason}: promoting");
            return end(runtime, sh, world, pin, "promoted", &reason, false);
        }
        std::thread::sleep(tick(settings.period_seconds).min(bake - elapsed));
    }
}

/// `m:ss`.
fn clock(duration: Duration) -> String {
    let seconds = duration.as_secs();
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

/// `publish --promote` and `--abort` (and `rollback` during a canary):
/// ends the canary in flight.
pub fn finish(
    runtime: &tokio::runtime::Runtime,
    sh: &Shell,
    world: &World,
    promote: bool,
    dry_run: bool,
) -> Result<()> {
    let pinned = Release::read(&world.pin_path())?;
    let Some(canary) = &pinned.canary else {
        bail!(
            "no canary is in flight (prod is at release {}): there is nothing to {}",
            pinned.release,
            if promote { "promote" } else { "abort" }
        );
    };
    if promote {
        let outputs = outputs(sh, world)?;
        let names = canary_alarms(&outputs, canary)?;
        let alarms = runtime.block_on(alarm_states(world, &names, SystemTime::now()))?;
        if let Some(fired) = alarms.iter().find(|alarm| alarm.state == "ALARM") {
            bail!(
                "the canary's alarm {} is in ALARM ({}): nothing was promoted; `cargo xtask \
                 publish{} --abort` takes it back",
                fired.name,
                fired.reason,
                world.flag()
            );
        }
        end(
            runtime,
            sh,
            world,
            &pinned,
            "promoted",
            "promoted by hand (`publish --promote`)",
            dry_run,
        )
    } else {
        eprintln!(
            "==> aborting the canary of release {} ({}% on {})",
            canary.release,
            canary.percent,
            versions(canary)
        );
        end(
            runtime,
            sh,
            world,
            &pinned,
            "aborted",
            "aborted by hand",
            dry_run,
        )
    }
}

/// Ends the canary `pin` holds: prod wholly on its new versions
/// (`promoted`) or on the ones before (`rolled back`, `aborted`), through
/// the checked plan; the outcome recorded.
fn end(
    runtime: &tokio::runtime::Runtime,
    sh: &Shell,
    world: &World,
    pin: &Release,
    outcome: &str,
    reason: &str,
    dry_run: bool,
) -> Result<()> {
    let candidate = match outcome {
        "promoted" => pin.promoted().expect("a canary pin"),
        _ => pin.without_canary(),
    };
    let resume = format!(
        "cargo xtask publish{} {}",
        world.flag(),
        if outcome == "promoted" {
            "--promote"
        } else {
            "--abort"
        }
    );
    let promotion = Promotion {
        pinned: pin.clone(),
        candidate,
        release: None,
        resume,
    };
    promote(runtime, sh, world, promotion, dry_run)?;
    if !dry_run {
        record(runtime, world, pin, outcome, reason)?;
    }
    Ok(())
}

/// Records the canary `pin` holds as ended with `outcome`, in the release
/// history (with each version's `CodeSha256`, read from Lambda).
pub fn record(
    runtime: &tokio::runtime::Runtime,
    world: &World,
    pin: &Release,
    outcome: &str,
    reason: &str,
) -> Result<()> {
    let canary = pin.canary.as_ref().expect("a canary pin");
    let promoted = pin.promoted().expect("a canary pin");
    let mut code_sha256 = BTreeMap::new();
    for (function, version) in &promoted.functions {
        let name = world.applied.function_name(function)?;
        if let Some(found) = runtime.block_on(world.aws.function_version(&name, version))? {
            code_sha256.insert(function.clone(), found.code_sha256);
        }
    }
    let now = super::now();
    History::record(
        &world.history_path(),
        Published {
            release: canary.release,
            published_at: now.clone(),
            note: canary.note.clone(),
            functions: promoted.functions,
            code_sha256,
            api_revision: promoted.api_revision,
            canary: Some(CanaryOutcome {
                percent: canary.percent,
                started_at: canary.started_at.clone(),
                ended_at: now,
                outcome: outcome.to_owned(),
                reason: reason.to_owned(),
            }),
        },
    )
}

/// Terraform's outputs now (the pin's apply changed the canary's alarms).
fn outputs(sh: &Shell, world: &World) -> Result<Applied> {
    if !world.terraform.aws {
        return Applied::read(&world.local);
    }
    let output = world
        .terraform
        .command(sh)
        .args(["output", "-json"])
        .quiet()
        .read()
        .context("terraform output failed (above)")?;
    let outputs: serde_json::Value =
        serde_json::from_str(&output).context("reading `terraform output -json`")?;
    Applied::from_outputs(&outputs, world.applied.artifacts_dir.clone())
}

/// The canary's own alarms, as applied.
fn canary_alarms(outputs: &Applied, canary: &Canary) -> Result<Vec<String>> {
    let applied = outputs
        .alarms
        .as_ref()
        .map(|alarms| alarms.canary.clone())
        .unwrap_or_default();
    let mut names = Vec::new();
    for function in canary.versions.keys() {
        match applied.get(function) {
            Some(alarms) if !alarms.is_empty() => names.extend(alarms.iter().cloned()),
            _ => bail!(
                "the canary of {function} has no alarms applied (the `alarms` output names \
                 none): terraform/alarms.tf makes them from the pin; apply, then \
                 `cargo xtask publish --abort`"
            ),
        }
    }
    Ok(names)
}

/// The alarms `names`, their states as of `now`: on AWS as CloudWatch
/// says; on the local stack, evaluated first (the emulator never does).
pub async fn alarm_states(
    world: &World,
    names: &[String],
    now: SystemTime,
) -> Result<Vec<alarms::Alarm>> {
    let found = alarms::read(&world.aws, names).await?;
    if found.len() != names.len() {
        let missing: Vec<&String> = names
            .iter()
            .filter(|name| !found.iter().any(|alarm| &alarm.name == *name))
            .collect();
        bail!("CloudWatch has no alarm {missing:?}");
    }
    if world.terraform.aws {
        return Ok(found);
    }
    alarms::evaluate(&world.aws, found, now).await
}

/// What each version of the canary's functions served through prod since
/// `since`: `status 2: 81 invocations, 0 errors; 3: 19 invocations, 1 error`.
async fn served(world: &World, pin: &Release, since: SystemTime) -> Result<String> {
    let canary = pin.canary.as_ref().expect("a canary pin");
    let mut parts = Vec::new();
    for (function, new) in &canary.versions {
        let name = world.applied.function_name(function)?;
        let mut versions = Vec::new();
        for version in [pin.functions.get(function), Some(new)]
            .into_iter()
            .flatten()
        {
            let (invocations, errors) = invocations(world, &name, version, since).await?;
            versions.push(format!(
                "{version}: {invocations} invocations, {errors} error{}",
                if errors == 1 { "" } else { "s" }
            ));
        }
        parts.push(format!("{function} {}", versions.join("; ")));
    }
    Ok(parts.join(" | "))
}

/// Invocations and errors of `version` of `name` through its prod alias
/// since `since` (CloudWatch's `AWS/Lambda` by `ExecutedVersion`).
pub async fn invocations(
    world: &World,
    name: &str,
    version: &str,
    since: SystemTime,
) -> Result<(u64, u64)> {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
    let seconds = |at: SystemTime| {
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64
    };
    let start = seconds(since) - seconds(since).rem_euclid(60);
    let end = seconds(SystemTime::now()) + 60;
    let query = |id: &str, metric: &str| {
        let dimensions = [
            ("FunctionName", name.to_owned()),
            ("Resource", format!("{name}:prod")),
            ("ExecutedVersion", version.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| Dimension::builder().name(name).value(value).build())
        .collect();
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(
                MetricStat::builder()
                    .metric(
                        Metric::builder()
                            .namespace("AWS/Lambda")
                            .metric_name(metric)
                            .set_dimensions(Some(dimensions))
                            .build(),
                    )
                    .period(60)
                    .stat("Sum")
                    .build(),
            )
            .build()
    };
    let found = world
        .aws
        .cloudwatch
        .get_metric_data()
        .metric_data_queries(query("invocations", "Invocations"))
        .metric_data_queries(query("errors", "Errors"))
        .start_time(DateTime::from_secs(start))
        .end_time(DateTime::from_secs(end))
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading the metrics of {name}:{version}"))?;
    let total = |id: &str| -> u64 {
        found
            .metric_data_results()
            .iter()
            .filter(|result| result.id() == Some(id))
            .flat_map(|result| result.values())
            .sum::<f64>()
            .round() as u64
    };
    Ok((total("invocations"), total("errors")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bake_looks_twice_a_period_and_at_least_every_15_s() {
        assert_eq!(tick(10), Duration::from_secs(5));
        assert_eq!(tick(60), Duration::from_secs(15));
        assert_eq!(tick(1), Duration::from_secs(1));
        assert_eq!(clock(Duration::from_secs(330)), "5:30");
    }
}
