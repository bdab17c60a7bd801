//! `cargo xtask test`: everything CI checks, in one command that works on a
//! fresh machine: installs the AWS emulator (moto) where it is missing (in a
//! virtualenv of its own where the system Python refuses pip) and the S3
//! server that checks presigned URLs' signatures (s3s-fs, which moto does
//! not), runs the lints (Rust and Terraform), then every test of the
//! workspace.

use std::path::PathBuf;

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
    let s3s_fs = ensure_s3s_fs(sh)?;
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
        .env("S3S_FS", s3s_fs)
        .run()
        .context("tests failed (above)")?;
    Ok(())
}

/// The s3s-fs release the files tests run (the newest that builds with the
/// workspace's toolchain), and where it is installed.
const S3S_FS_VERSION: &str = "0.14.1";
const TOOLS_DIR: &str = "target/tools";

/// `$S3S_FS`, or s3s-fs under `target/tools`, installed there with cargo
/// the first time (about 2 minutes).
fn ensure_s3s_fs(sh: &Shell) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("S3S_FS") {
        return Ok(PathBuf::from(path));
    }
    let root = crate::project_root().join(TOOLS_DIR);
    let binary = root.join("bin/s3s-fs");
    if !binary.exists() {
        eprintln!(
            "==> installing s3s-fs {S3S_FS_VERSION} into {TOOLS_DIR} (once; about 2 minutes)"
        );
        let cargo = crate::cargo();
        cmd!(
            sh,
            "{cargo} install s3s-fs --version {S3S_FS_VERSION} --locked --features binary --root {root}"
        )
        .run()
        .context("installing s3s-fs failed (above); the files tests need it")?;
    }
    Ok(binary)
}
