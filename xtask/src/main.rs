//! `cargo xtask`: the project's own build and release tool.
//!
//! Every command runs from the workspace root with one [`Shell`]; each lives
//! in its own module. `cargo xtask --help` lists them, `cargo xtask CMD
//! --help` explains one (the `///` docs below are that help text).

mod alarms;
mod artifact;
mod bench;
mod bootstrap;
mod build;
mod deployer;
mod destroy;
mod dev;
mod emulator;
mod gateway;
mod host;
mod live;
mod logs;
mod release;
mod routes;
mod scaffold;
mod telemetry;
mod terraform;
mod test;
#[cfg(test)]
mod tidy;
mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use xshell::Shell;

/// Build, test and release the Rust Lambda functions of this workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Xtask {
    /// Where the local stack keeps its emulator record and Terraform state.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "XTASK_LOCAL_DIR",
        default_value = "target/local"
    )]
    local_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the Lambda functions into content-hashed zips and write the manifest.
    Build(build::Args),
    /// Run every check and test (lints, unit, emulator, Terraform and build tests), installing the emulator if missing.
    Test(test::Args),
    /// Start, stop or query the local AWS emulator (moto on 127.0.0.1:4566).
    Emulator(emulator::Args),
    /// Create the S3 bucket for terraform/'s state on AWS (once per account) and write terraform/state.s3.tfbackend.
    Bootstrap(bootstrap::BootstrapArgs),
    /// Create the deployer's least-privilege IAM policy, its read-only variant and the GitHub OIDC roles on AWS (terraform/deployer/), once per account.
    Deployer(deployer::DeployerArgs),
    /// Apply terraform/ to the local stack (starting the emulator if need be), or to AWS with `--aws`.
    Apply(terraform::ApplyArgs),
    /// Run any terraform command on the local stack (or on AWS with `--aws`): `cargo xtask tf -- plan`.
    Tf(terraform::TfArgs),
    /// Destroy the stack (local, or AWS with `--aws`): shows what goes, refuses to delete data without `--delete-data`.
    Destroy(destroy::DestroyArgs),
    /// Build, start the emulator, apply, and serve the API's stages on 127.0.0.1:3000 until Ctrl-C.
    Dev(dev::DevArgs),
    /// Serve the applied stack's stages on 127.0.0.1:3000 (no build, no apply), or with `--aws` those of an AWS-compatible endpoint standing in for AWS.
    Serve(dev::ServeArgs),
    /// Invoke one function of the local stack with one event, on the local Lambda host.
    Invoke(dev::InvokeArgs),
    /// Add a function: its crate, sample events, routes in terraform/api.tf and smoke cases.
    New(scaffold::NewArgs),
    /// Time the inner loop: from saving an edit to status or users to staging serving it (`dev --watch`).
    Bench(bench::BenchArgs),
    /// Preview what applying would change: code sizes and hashes, alias moves, routes, redeployments (exit 2: changes pending).
    Plan(release::plan::PlanArgs),
    /// Run the smoke suite (events/smoke.json) against the staging stage and write the receipt `publish` requires.
    Verify(release::verify::VerifyArgs),
    /// Promote exactly what `verify` passed to prod: publish versions, write the prod pin, apply a prod-only plan (`--canary PERCENT` gradually, decided by alarms).
    Publish(release::publish::PublishArgs),
    /// Move prod back to the previous release (or `--to` a named one), through the same checks as publish.
    Rollback(release::publish::RollbackArgs),
    /// Show per function the code of $LATEST, what staging and prod run, the pin, and any drift.
    Status(release::status::StatusArgs),
    /// Print a consumer's API key to a stage, for the routes that need one (`x-api-key`).
    Apikey(release::apikey::ApikeyArgs),
    /// Print a function's log lines from CloudWatch Logs (time, version, request id), on the local stack or `--aws`.
    Logs(logs::LogsArgs),
}

/// The local stack's own directory (see `--local-dir`).
#[derive(Debug, Clone)]
pub struct LocalDir(pub PathBuf);

fn main() -> ExitCode {
    match run(Xtask::parse()) {
        Ok(code) => code,
        Err(err) => {
            // The chain of causes, without a backtrace: these are for users.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: Xtask) -> Result<ExitCode> {
    // Relative to where the user stands, before moving to the root.
    let local = LocalDir(std::path::absolute(&flags.local_dir)?);
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    let done = match flags.command {
        Command::Plan(args) => return release::plan::run(&sh, &local, args),
        Command::Verify(args) => release::verify::run(&sh, &local, args),
        Command::Publish(args) => release::publish::publish(&sh, &local, args),
        Command::Rollback(args) => release::publish::rollback(&sh, &local, args),
        Command::Status(args) => release::status::run(&sh, &local, args),
        Command::Apikey(args) => release::apikey::run(&sh, &local, args),
        Command::Logs(args) => logs::run(&sh, &local, args),
        Command::Build(args) => build::run(&sh, args),
        Command::Test(args) => test::run(&sh, args),
        Command::Emulator(args) => emulator::run(&sh, &local, args),
        Command::Bootstrap(args) => bootstrap::run(&sh, args),
        Command::Deployer(args) => deployer::run(&sh, args),
        Command::Apply(args) => terraform::apply(&sh, &local, args),
        Command::Destroy(args) => destroy::run(&sh, &local, args),
        Command::Tf(args) => terraform::tf(&sh, &local, args),
        Command::Dev(args) => dev::dev(&sh, &local, args),
        Command::Serve(args) => dev::serve_applied(&sh, &local, args),
        Command::Invoke(args) => dev::invoke(&sh, &local, args),
        Command::New(args) => scaffold::run(&sh, args),
        Command::Bench(args) => bench::run(&sh, args),
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// The cargo that runs us (so `cargo +toolchain xtask` is honoured).
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The workspace root: the parent of `xtask/`, or `$XTASK_WORKSPACE` (a
/// copy of this workspace elsewhere, as the inner-loop tests use).
pub fn project_root() -> PathBuf {
    match std::env::var_os("XTASK_WORKSPACE") {
        Some(root) => std::path::absolute(root).expect("the current directory exists"),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the workspace root")
            .to_path_buf(),
    }
}
