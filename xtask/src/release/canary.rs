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
use super::{Canary, CanaryOutcome, Published, Release, StageRuns, World};
use crate::alarms;
use crate::live::{AlarmsOutput, aws_error};

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
/// split with, at the same API revision; the alarms (`alarms`, as applied:
/// none before a stack had any) must be able to judge it within the bake,
/// on AWS at Lambda's per-minute resolution (`on_aws`); and staging must
/// hold something prod does not run.
pub fn check_start(
    alarms: Option<&AlarmsOutput>,
    on_aws: bool,
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
    let Some(settings) = alarms else {
        bail!(
            "no alarms are applied, and a canary is decided by them: apply terraform/ first \
             (`cargo xtask apply`)"
        );
    };
    if on_aws && settings.period_seconds < 60 {
        bail!(
            "the alarms evaluate {} s periods, and Lambda publishes its metrics per minute: on \
             AWS they would judge nothing; set `alarms.period_seconds` to 60 or more and apply",
            settings.period_seconds
        );
    }
    let least = least_bake(settings);
    if bake < least {
        bail!(
            "--bake {} is under the alarms' period ({} s, {} period(s) evaluated, each once it \
             has closed): they could not judge the canary even once; bake at least {}",
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

/// The shortest bake the alarms can judge: their evaluated periods, and
/// one more (a period is judged once it has closed).
fn least_bake(settings: &AlarmsOutput) -> Duration {
    Duration::from_secs(settings.period_seconds * (settings.evaluation_periods.max(1) + 1))
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

/// Bakes the canary `pin` holds: until its bake is over (then promoted,
/// once its alarms have judged it and its new versions have served
/// something) or one of its alarms fires (then rolled back, and an error).
/// It stops if the pin changes under it (the canary ended elsewhere).
fn bake(runtime: &tokio::runtime::Runtime, sh: &Shell, world: &World, pin: &Release) -> Result<()> {
    let canary = pin.canary.as_ref().expect("a canary pin");
    let names = canary_alarms(world, canary)?;
    let period = world
        .applied
        .alarms
        .as_ref()
        .map_or(60, |alarms| alarms.period_seconds);
    // The bake counts from now, when the weights are applied (the pin's
    // `started_at` is when it was written, before the apply).
    let started = std::time::Instant::now();
    let bake = Duration::from_secs(canary.bake_seconds);
    // After the bake, how long to wait for a judgement still missing.
    let grace = Duration::from_secs(3 * period);
    eprintln!(
        "==> baking for {} (until {}), watching {}; Ctrl-C leaves the canary in flight: `cargo \
         xtask publish{flag} --promote` or `--abort` ends it",
        humantime::format_duration(bake),
        humantime::format_rfc3339_seconds(SystemTime::now() + bake),
        names.join(", "),
        flag = world.flag()
    );
    // Where no CloudWatch evaluates the alarms: the local stack, or an
    // emulator standing in for AWS.
    let emulated = !world.terraform.aws || crate::live::emulated_endpoint().is_some();
    // What to do about a canary this bake leaves live.
    let still_live = || match Release::read(&world.pin_path()) {
        Ok(now) if now == *pin => format!(
            "the canary of release {} still sends {}% of prod to {}: `cargo xtask publish{flag} \
             --abort` takes it back, `--promote` finishes it",
            canary.release,
            canary.percent,
            versions(canary),
            flag = world.flag()
        ),
        // The pin that ends it is written, not applied yet.
        _ => format!(
            "prod's aliases may still send {}% of prod to {}: `cargo xtask apply{}` applies the \
             pin",
            canary.percent,
            versions(canary),
            world.flag()
        ),
    };
    // When the bake's end is judged: once the alarm period holding it has
    // closed (and, on AWS, a period more for CloudWatch to have its
    // metrics and evaluate): a request in the bake's last seconds is
    // judged before anything is promoted.
    let mut settles: Option<SystemTime> = None;
    let mut waiting = false;
    let mut failures = 0;
    loop {
        let now = Release::read(&world.pin_path())?;
        if now != *pin {
            bail!(
                "the canary of release {} was ended elsewhere meanwhile (the pin is at release {}{}): \
                 this bake stops; `cargo xtask status{}` shows where prod is",
                canary.release,
                now.release,
                if now.canary.is_some() {
                    ", with a canary"
                } else {
                    ""
                },
                world.flag()
            );
        }
        let at = SystemTime::now();
        let read = runtime.block_on(async {
            let alarms = alarm_states(world, &names, at).await?;
            let served = served(world, pin, canary_start(canary)).await?;
            anyhow::Ok((alarms, served))
        });
        let (alarms, (served, idle)) = match read {
            Ok(read) => {
                failures = 0;
                read
            }
            // CloudWatch throttling a call, say: the next tick tries again.
            Err(err) if failures < 3 => {
                failures += 1;
                eprintln!(
                    "warning: reading the canary's alarms and metrics failed ({failures} of 4 tries): {err:#}"
                );
                std::thread::sleep(tick(period));
                continue;
            }
            Err(err) => {
                return Err(err.context(format!(
                    "the bake could not read the canary's alarms and metrics 4 times running, \
                     so it stops; {}",
                    still_live()
                )));
            }
        };
        check_watches(&alarms, world, canary).with_context(still_live)?;
        let elapsed = started.elapsed();
        eprintln!(
            "canary {} of {}: {served} | {}",
            clock(elapsed),
            clock(bake),
            alarms
                .iter()
                .map(|alarm| format!("{} {}", alarm.name, alarm.state))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(fired) = alarms.iter().find(|alarm| alarm.state == "ALARM") {
            let reason = format!("alarm {} fired: {}", fired.name, fired.reason);
            eprintln!("==> {reason}: rolling back");
            end(runtime, sh, world, pin, "rolled back", &reason, false).with_context(|| {
                format!(
                    "{reason}, but rolling the canary back failed (below); until it is, {}",
                    still_live()
                )
            })?;
            bail!(
                "the canary of release {} was rolled back: {reason}. Prod is wholly on release {} \
                 again",
                canary.release,
                pin.release
            );
        }
        if elapsed >= bake {
            let settles = *settles.get_or_insert_with(|| {
                let seconds = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let closes = seconds - seconds % period + period;
                // Locally, the host's metrics reach the emulator within its
                // flush; on AWS, CloudWatch's own delay.
                let delay = if emulated { 2 } else { period };
                SystemTime::UNIX_EPOCH + Duration::from_secs(closes + delay)
            });
            let unjudged: Vec<String> = alarms
                .iter()
                .filter(|alarm| alarm.state != "OK")
                .map(|alarm| format!("alarm {} is {}", alarm.name, alarm.state))
                .chain(
                    idle.iter()
                        .map(|function| format!("{function}'s new version served no request")),
                )
                .chain((at < settles).then(|| {
                    format!(
                        "the alarm period holding the bake's end is judged at {}",
                        humantime::format_rfc3339_seconds(settles)
                    )
                }))
                .collect();
            if unjudged.is_empty() {
                let reason = format!(
                    "baked {} with no alarm",
                    humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
                );
                eprintln!("==> {reason}: promoting");
                return end(runtime, sh, world, pin, "promoted", &reason, false).with_context(
                    || format!("promoting failed (below); until it does, {}", still_live()),
                );
            }
            if elapsed >= bake + grace {
                bail!(
                    "the bake is over, but nothing judged the canary of release {} ({}), so it \
                     was not promoted; it stays in flight: send prod traffic, then `cargo xtask \
                     publish{flag} --promote`, or `--abort`",
                    canary.release,
                    unjudged.join("; "),
                    flag = world.flag()
                );
            }
            if !waiting {
                waiting = true;
                eprintln!(
                    "==> the bake is over; waiting up to {} for a judgement ({})",
                    humantime::format_duration(grace),
                    unjudged.join("; ")
                );
            }
        }
        std::thread::sleep(tick(period));
    }
}

/// When the canary's weights were written (its invocations are counted
/// from the minute before).
fn canary_start(canary: &Canary) -> SystemTime {
    humantime::parse_rfc3339(&canary.started_at).unwrap_or_else(|_| SystemTime::now())
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
        let names = canary_alarms(world, canary)?;
        let alarms = runtime.block_on(alarm_states(world, &names, SystemTime::now()))?;
        check_watches(&alarms, world, canary)?;
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
    let promotion = Promotion {
        pinned: pin.clone(),
        candidate,
        // Recorded with the pin that ends it, before the apply.
        release: Some(outcome_record(runtime, world, pin, outcome, reason)?),
        // The pin no longer names a canary once written: applying it is
        // what is left to do.
        resume: format!("cargo xtask apply{}", world.flag()),
    };
    promote(runtime, sh, world, promotion, dry_run)
}

/// The history's record of the canary `pin` holds, ended with `outcome`
/// (with each version's `CodeSha256`, read from Lambda).
pub fn outcome_record(
    runtime: &tokio::runtime::Runtime,
    world: &World,
    pin: &Release,
    outcome: &str,
    reason: &str,
) -> Result<Published> {
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
    Ok(Published {
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
    })
}

/// The canary's own alarms: `terraform/alarms.tf` names them after each
/// function that changes (`NAME-canary-errors`, `NAME-canary-duration`).
pub fn canary_alarms(world: &World, canary: &Canary) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for function in canary.versions.keys() {
        let name = world.applied.function_name(function)?;
        for kind in ["errors", "duration"] {
            names.push(format!("{name}-canary-{kind}"));
        }
    }
    Ok(names)
}

/// That every alarm watches the canary's new version through prod (its
/// function, `Resource` `NAME:prod` and `ExecutedVersion`), and nothing
/// else: an alarm on another version would judge nothing of it.
fn check_watches(alarms: &[alarms::Alarm], world: &World, canary: &Canary) -> Result<()> {
    for (function, version) in &canary.versions {
        let name = world.applied.function_name(function)?;
        let wanted = [
            ("ExecutedVersion".to_owned(), version.clone()),
            ("FunctionName".to_owned(), name.clone()),
            ("Resource".to_owned(), format!("{name}:prod")),
        ];
        for alarm in alarms
            .iter()
            .filter(|alarm| alarm.name.starts_with(&format!("{name}-canary-")))
        {
            for query in &alarm.definition.metrics {
                let mut dimensions = query.dimensions.clone();
                dimensions.sort();
                if dimensions != wanted {
                    bail!(
                        "alarm {} watches {:?}, not the canary's version {version} of {name} \
                         through prod: it cannot judge the canary (apply terraform/ as it is)",
                        alarm.name,
                        query.dimensions
                    );
                }
            }
        }
    }
    Ok(())
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
    // Only where no CloudWatch evaluates them: the local stack, or an
    // emulator standing in for AWS (`--aws` with a loopback endpoint).
    if world.terraform.aws && crate::live::emulated_endpoint().is_none() {
        return Ok(found);
    }
    alarms::evaluate(&world.aws, found, now).await
}

/// What each version of the canary's functions served through prod since
/// `since` (`status 2: 81 invocations, 0 errors; 3: 19 invocations, 1
/// error`), and the functions whose new version served nothing.
async fn served(world: &World, pin: &Release, since: SystemTime) -> Result<(String, Vec<String>)> {
    let canary = pin.canary.as_ref().expect("a canary pin");
    let mut parts = Vec::new();
    let mut idle = Vec::new();
    for (function, new) in &canary.versions {
        let name = world.applied.function_name(function)?;
        let mut versions = Vec::new();
        for version in [pin.functions.get(function), Some(new)]
            .into_iter()
            .flatten()
        {
            let (invocations, errors) = invocations(world, &name, version, since).await?;
            if version == new && invocations == 0 {
                idle.push(function.clone());
            }
            versions.push(format!(
                "{version}: {invocations} invocations, {errors} error{}",
                if errors == 1 { "" } else { "s" }
            ));
        }
        parts.push(format!("{function} {}", versions.join("; ")));
    }
    Ok((parts.join(" | "), idle))
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
    use crate::release::Running;

    fn running(version: &str, code: &str) -> Running {
        Running {
            version: version.to_owned(),
            code_sha256: code.to_owned(),
            configuration: "config".to_owned(),
            description: String::new(),
            state: "Active/Successful".to_owned(),
            additional: None,
        }
    }

    /// An edit of what a canary starts from: the pin, the receipt, the
    /// alarms' settings, whether it is on AWS, the bake.
    type Edit =
        Box<dyn FnOnce(&mut Release, &mut Receipt, &mut AlarmsOutput, &mut bool, &mut Duration)>;

    /// What `check_start` says of a canary of status's code `new` over a
    /// prod that runs status 1 (code `old`), with `edit` applied first.
    fn check(
        edit: impl FnOnce(&mut Release, &mut Receipt, &mut AlarmsOutput, &mut bool, &mut Duration),
    ) -> Result<()> {
        let mut pinned = Release {
            release: 1,
            note: String::new(),
            functions: BTreeMap::from([("status".to_owned(), "1".to_owned())]),
            api_revision: "rev".to_owned(),
            canary: None,
        };
        let mut receipt = Receipt {
            target: "local".to_owned(),
            api_id: "api".to_owned(),
            api_revision: "rev".to_owned(),
            functions: BTreeMap::from([("status".to_owned(), running("$LATEST", "new"))]),
            url: String::new(),
            verified_at: String::new(),
            passed: true,
            uncovered: Vec::new(),
            cases: Vec::new(),
        };
        let mut alarms = AlarmsOutput {
            period_seconds: 60,
            evaluation_periods: 2,
        };
        let (mut aws, mut bake) = (false, Duration::from_secs(180));
        edit(&mut pinned, &mut receipt, &mut alarms, &mut aws, &mut bake);
        let prod = StageRuns {
            api_revision: Some(pinned.api_revision.clone()),
            functions: BTreeMap::from([("status".to_owned(), Some(running("1", "old")))]),
        };
        check_start(Some(&alarms), aws, &pinned, &receipt, &prod, bake)
    }

    #[test]
    fn a_canary_starts_only_where_its_alarms_can_judge_something_new() {
        check(|_, _, _, _, _| {}).unwrap();
        let refused = |edit: Edit, says: &str| {
            let err = format!("{:#}", check(edit).unwrap_err());
            assert!(err.contains(says), "{says}: {err}");
        };
        refused(
            Box::new(|pinned, _, _, _, _| pinned.functions.clear()),
            "prod serves nothing yet",
        );
        refused(
            Box::new(|_, receipt, _, _, _| receipt.api_revision = "other".to_owned()),
            "a canary cannot span a change of the API",
        );
        // Two periods evaluated, each once closed: three periods at least.
        refused(
            Box::new(|_, _, _, _, bake| *bake = Duration::from_secs(179)),
            "--bake 2m 59s is under the alarms' period (60 s, 2 period(s) evaluated",
        );
        refused(
            Box::new(|_, _, alarms, aws, _| {
                alarms.period_seconds = 10;
                *aws = true;
            }),
            "on AWS they would judge nothing",
        );
        check(|_, _, alarms, _, bake| {
            alarms.period_seconds = 10;
            *bake = Duration::from_secs(30);
        })
        .unwrap();
        refused(
            Box::new(|_, receipt, _, _, _| {
                receipt
                    .functions
                    .insert("status".to_owned(), running("$LATEST", "old"));
            }),
            "prod already runs what staging verified",
        );
        refused(
            Box::new(|_, receipt, _, _, _| {
                receipt
                    .functions
                    .insert("users".to_owned(), running("$LATEST", "u"));
            }),
            "users has no prod version yet",
        );
        let prod = StageRuns {
            api_revision: None,
            functions: BTreeMap::new(),
        };
        let pinned = Release {
            release: 1,
            note: String::new(),
            functions: BTreeMap::from([("status".to_owned(), "1".to_owned())]),
            api_revision: String::new(),
            canary: None,
        };
        let receipt = Receipt {
            target: String::new(),
            api_id: String::new(),
            api_revision: String::new(),
            functions: BTreeMap::new(),
            url: String::new(),
            verified_at: String::new(),
            passed: true,
            uncovered: Vec::new(),
            cases: Vec::new(),
        };
        let err = check_start(
            None,
            false,
            &pinned,
            &receipt,
            &prod,
            Duration::from_secs(600),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no alarms are applied"), "{err}");
    }

    #[test]
    fn the_bake_looks_twice_a_period_and_at_least_every_15_s() {
        assert_eq!(tick(10), Duration::from_secs(5));
        assert_eq!(tick(60), Duration::from_secs(15));
        assert_eq!(tick(1), Duration::from_secs(1));
        assert_eq!(clock(Duration::from_secs(330)), "5:30");
    }
}
