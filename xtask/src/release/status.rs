//! `cargo xtask status`: per function, the code `$LATEST` holds, what the
//! staging and prod aliases run, the version the pin names, and any drift
//! between the pin and what is live; then the stages' API revisions and
//! whether the last verify vouches for staging.

use anyhow::Result;
use xshell::Shell;

use super::verify::Receipt;
use super::{Release, StageRuns, World, short_hash, short_revision};
use crate::LocalDir;
use crate::terraform::TargetArgs;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: TargetArgs,
}

/// `cargo xtask status`.
pub fn run(sh: &Shell, local: &LocalDir, args: StatusArgs) -> Result<()> {
    super::runtime()?.block_on(async {
        let world = World::open(sh, local, &args.target).await?;
        let staging = world.stage("staging").await?;
        let prod = world.stage("prod").await?;
        let mut latest = Vec::new();
        for name in world.applied.function_names.values() {
            latest.push(world.aws.function_version(name, "$LATEST").await?);
        }
        let pin = Release::read(&world.pin_path())?;
        let receipt = Receipt::read(&world).ok();

        println!(
            "{}: API {}, applied at API revision {}",
            world.name(),
            world.applied.api_id,
            short_revision(&world.applied.api_revision)
        );
        let mut rows = Vec::new();
        for ((function, _), latest) in world.applied.function_names.iter().zip(&latest) {
            let runs = |stage: &StageRuns| match stage.functions.get(function) {
                Some(Some(running)) => {
                    format!("{} {}", running.describe(), short_hash(&running.code_sha256))
                }
                _ => "none".to_owned(),
            };
            rows.push(vec![
                function.clone(),
                latest
                    .as_ref()
                    .map(|latest| short_hash(&latest.code_sha256))
                    .unwrap_or_else(|| "none".to_owned()),
                runs(&staging),
                runs(&prod),
                pin.describe(function),
            ]);
        }
        print!(
            "{}",
            crate::build::table(&["function", "$LATEST", "staging", "prod", "pin"], &rows)
        );
        let revision = |revision: Option<&str>| match revision {
            None | Some("") => "none".to_owned(),
            Some(revision) => short_revision(revision).to_owned(),
        };
        println!(
            "stages: staging at API revision {}, prod at {} (release {} pins {})",
            revision(staging.api_revision.as_deref()),
            revision(prod.api_revision.as_deref()),
            pin.release,
            revision(Some(&pin.api_revision))
        );

        if let Some(canary) = &pin.canary {
            let since = humantime::parse_rfc3339(&canary.started_at).ok();
            let elapsed = since
                .and_then(|since| std::time::SystemTime::now().duration_since(since).ok())
                .map(|d| humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string())
                .unwrap_or_else(|| "?".to_owned());
            println!(
                "canary: release {} in flight since {} ({elapsed} ago, a bake of {}): {}% of prod on {}, the rest on release {}",
                canary.release,
                canary.started_at,
                humantime::format_duration(std::time::Duration::from_secs(canary.bake_seconds)),
                canary.percent,
                super::canary::versions(canary),
                pin.release
            );
            let names = super::canary::canary_alarms(&world, canary)?;
            if world.applied.alarms.is_some() {
                let alarms =
                    super::canary::alarm_states(&world, &names, std::time::SystemTime::now())
                        .await?;
                for alarm in alarms {
                    println!("  alarm {}: {}", alarm.name, alarm.state);
                }
            }
            println!(
                "  `cargo xtask publish{flag} --promote` moves all of prod to it, `--abort` takes it back",
                flag = world.flag()
            );
        }
        let drift = drift(&pin, &prod);
        if drift.is_empty() {
            println!("drift: none (prod runs what the pin says)");
        } else {
            for line in &drift {
                println!("drift: {line}");
            }
            println!(
                "  `cargo xtask plan{flag}` shows the way back to the pin, `cargo xtask apply{flag}` takes it",
                flag = world.flag()
            );
        }

        let target = if world.terraform.aws { "aws" } else { "local" };
        match receipt {
            None => println!(
                "verify: no receipt; `cargo xtask verify{}` checks staging",
                world.flag()
            ),
            Some(receipt) => {
                let mismatches = receipt.mismatches(target, &world.applied.api_id, &staging);
                let verdict = match (receipt.passed, mismatches.is_empty()) {
                    (true, true) => format!(
                        "it vouches for what staging runs: `cargo xtask publish{}` promotes it",
                        world.flag()
                    ),
                    (false, true) => "it failed, for what staging runs now".to_owned(),
                    (_, false) => format!(
                        "staging changed since ({}): verify again",
                        mismatches.join("; ")
                    ),
                };
                println!(
                    "verify: {} at {}; {verdict}",
                    receipt.tally(),
                    receipt.verified_at
                );
            }
        }
        Ok(())
    })
}

/// Where prod differs from the pin: an alias on another version, missing
/// or unpinned, or the stage at another API revision.
pub fn drift(pin: &Release, prod: &StageRuns) -> Vec<String> {
    let mut lines = Vec::new();
    for (function, running) in &prod.functions {
        match (pin.functions.get(function), running) {
            (Some(_), Some(running)) if pin.describe(function) == running.describe() => {}
            (Some(pinned), Some(running)) if *pinned == running.version => lines.push(format!(
                "{function}: the prod alias runs {}, the pin says {}",
                running.describe(),
                pin.describe(function)
            )),
            (Some(pinned), Some(running)) => lines.push(format!(
                "{function}: the prod alias is on version {}, the pin says {pinned}",
                running.version
            )),
            (Some(pinned), None) => lines.push(format!(
                "{function}: the pin says version {pinned}, but there is no prod alias"
            )),
            (None, Some(running)) => lines.push(format!(
                "{function}: a prod alias on version {} that the pin does not name",
                running.version
            )),
            (None, None) => {}
        }
    }
    let live = prod.api_revision.as_deref().unwrap_or_default();
    if live != pin.api_revision {
        lines.push(format!(
            "the prod stage is deployed at API revision {}, the pin says {}",
            if live.is_empty() {
                "none"
            } else {
                short_revision(live)
            },
            if pin.api_revision.is_empty() {
                "none"
            } else {
                short_revision(&pin.api_revision)
            }
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::Running;
    use std::collections::BTreeMap;

    #[test]
    fn drift_names_each_difference_between_pin_and_prod() {
        let pin = Release {
            release: 2,
            note: String::new(),
            functions: BTreeMap::from([
                ("status".to_owned(), "2".to_owned()),
                ("users".to_owned(), "1".to_owned()),
            ]),
            api_revision: "rev".to_owned(),
            canary: None,
        };
        let on = |version: &str| {
            Some(Running {
                version: version.to_owned(),
                code_sha256: String::new(),
                configuration: String::new(),
                description: String::new(),
                state: "Active/Successful".to_owned(),
                additional: None,
            })
        };
        let mut prod = StageRuns {
            api_revision: Some("rev".to_owned()),
            functions: BTreeMap::from([
                ("status".to_owned(), on("2")),
                ("users".to_owned(), on("1")),
            ]),
        };
        assert!(drift(&pin, &prod).is_empty());
        // A canary's weights are part of the pin.
        let mut weighted = pin.clone();
        weighted.canary = Some(crate::release::Canary {
            release: 3,
            note: String::new(),
            percent: 10,
            versions: BTreeMap::from([("status".to_owned(), "3".to_owned())]),
            started_at: String::new(),
            bake_seconds: 60,
        });
        assert_eq!(
            drift(&weighted, &prod),
            ["status: the prod alias runs 2, the pin says 2 + 3 at 10%"]
        );
        let mut canary_prod = prod.clone();
        if let Some(Some(running)) = canary_prod.functions.get_mut("status") {
            running.additional = Some(("3".to_owned(), 0.1));
        }
        assert!(drift(&weighted, &canary_prod).is_empty());
        assert_eq!(
            drift(&pin, &canary_prod),
            ["status: the prod alias runs 2 + 3 at 10%, the pin says 2"]
        );
        prod.functions.insert("status".to_owned(), on("3"));
        prod.functions.insert("users".to_owned(), None);
        prod.functions.insert("extra".to_owned(), on("1"));
        prod.api_revision = None;
        assert_eq!(
            drift(&pin, &prod),
            [
                "extra: a prod alias on version 1 that the pin does not name",
                "status: the prod alias is on version 3, the pin says 2",
                "users: the pin says version 1, but there is no prod alias",
                "the prod stage is deployed at API revision none, the pin says rev",
            ]
        );
    }
}
