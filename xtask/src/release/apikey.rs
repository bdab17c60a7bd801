//! `cargo xtask apikey`: the value of a consumer's API key to a stage, so
//! a user (or `verify`) can call the routes that need one. The keys are
//! Terraform's (`terraform/usage.tf`, one per consumer and stage); their
//! values are read from API Gateway, never kept in a file of ours.

use anyhow::{Context, Result, bail};
use xshell::Shell;

use super::World;
use crate::LocalDir;
use crate::live::aws_error;
use crate::terraform::TargetArgs;

#[derive(Debug, clap::Args)]
pub struct ApikeyArgs {
    /// The consumer (one of the `api_key_consumers` variable) [default: the only one].
    consumer: Option<String>,
    /// The stage the key opens.
    #[arg(long, default_value = "staging", value_parser = ["staging", "prod"])]
    stage: String,
    #[command(flatten)]
    target: TargetArgs,
}

/// `cargo xtask apikey`: prints the key's value alone on stdout
/// (`curl -H "x-api-key: $(cargo xtask apikey)" ...`), and whose it is on
/// stderr.
pub fn run(sh: &Shell, local: &LocalDir, args: ApikeyArgs) -> Result<()> {
    super::runtime()?.block_on(async {
        let world = World::open(sh, local, &args.target).await?;
        let consumers = world.applied.consumers(&args.stage);
        let consumer = match (&args.consumer, consumers.as_slice()) {
            (_, []) => bail!(
                "{} has no API keys to {}: set the `api_key_consumers` variable and apply \
                 (`cargo xtask apply{}`)",
                world.name(),
                args.stage,
                world.flag()
            ),
            (Some(consumer), _) if consumers.contains(&consumer.as_str()) => consumer.clone(),
            (Some(consumer), _) => bail!(
                "no consumer `{consumer}` has a key to {}: the consumers are {}",
                args.stage,
                consumers.join(", ")
            ),
            (None, [only]) => (*only).to_owned(),
            (None, several) => bail!(
                "several consumers have keys to {}: name one of {}",
                args.stage,
                several.join(", ")
            ),
        };
        let (id, value) = key(&world, &consumer, &args.stage).await?;
        eprintln!(
            "{consumer}'s API key to {} on {} (id {id}): send it as the `x-api-key` header",
            args.stage,
            world.name()
        );
        println!("{value}");
        Ok(())
    })
}

/// The id and value of `consumer`'s key to `stage`.
pub async fn key(world: &World, consumer: &str, stage: &str) -> Result<(String, String)> {
    let id = world
        .applied
        .api_keys
        .get(&format!("{consumer}/{stage}"))
        .with_context(|| format!("{consumer} has no API key to {stage}"))?;
    let key = world
        .aws
        .apigateway
        .get_api_key()
        .api_key(id)
        .include_value(true)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading API key {id}"))?;
    let value = key
        .value()
        .with_context(|| format!("API key {id} has no value (not allowed to read it?)"))?;
    Ok((id.clone(), value.to_owned()))
}

/// The key `verify` calls `stage` with: the first consumer's, if any.
pub async fn any_key(world: &World, stage: &str) -> Result<Option<(String, String)>> {
    match world.applied.consumers(stage).first() {
        Some(consumer) => {
            let (_, value) = key(world, consumer, stage).await?;
            Ok(Some(((*consumer).to_owned(), value)))
        }
        None => Ok(None),
    }
}
