//! `cargo xtask test`: everything CI checks, in one command that works on a
//! fresh machine: installs the AWS emulator (moto) where it is missing (in a
//! virtualenv of its own where the system Python refuses pip), runs the
//! lints (Rust and Terraform), then every test of the workspace.

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    pub no_lint: bool,
    /// Arguments for the test binaries after `--` (a test name filter, `--nocapture`, ...).
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    // The tests that start moto themselves use the Python found (or made) here.
    let python = crate::emulator::ensure_moto(sh)?;
    crate::terraform::require(sh)?;
    let cargo = crate::cargo();
    if !args.no_lint {
        eprintln!("==> cargo fmt --check");
        cmd!(sh, "{cargo} fmt --all -- --check")
            .run()
            .context("code is not formatted: run `cargo fmt --all`")?;
        eprintln!("==> cargo clippy");
        cmd!(
            sh,
            "{cargo} clippy --workspace --all-targets --locked -- -D warnings"
        )
        .run()
        .context("clippy found problems (above)")?;
        eprintln!("==> terraform fmt -check");
        cmd!(sh, "terraform fmt -check -recursive terraform")
            .run()
            .context(
                "Terraform files are not formatted: run `terraform fmt -recursive terraform`",
            )?;
    }
    eprintln!("==> cargo test");
    let extra = &args.cargo_test_args;
    cmd!(sh, "{cargo} test --workspace --locked -- {extra...}")
        .env("MOTO_PYTHON", python)
        .run()
        .context("tests failed (above)")?;
    Ok(())
}
