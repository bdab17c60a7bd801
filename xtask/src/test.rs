//! `cargo xtask test`: everything CI checks, in one command that works on a
//! fresh machine: installs the AWS emulator (moto) where it is missing, runs
//! the lints, then every test of the workspace.

use anyhow::{Context, Result};
use xshell::{Shell, cmd};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    pub no_lint: bool,
    /// Arguments for `cargo test` after `--` (a test name filter, `--nocapture`, ...).
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// The emulator the tests talk to, as pip names it.
const MOTO: &str = "moto[server]";

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    ensure_moto(sh)?;
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
    }
    eprintln!("==> cargo test");
    let extra = &args.cargo_test_args;
    cmd!(sh, "{cargo} test --workspace --locked -- {extra...}")
        .run()
        .context("tests failed (above)")?;
    Ok(())
}

/// Makes sure python3 can import moto, installing it with pip if not.
fn ensure_moto(sh: &Shell) -> Result<()> {
    if moto_installed(sh) {
        return Ok(());
    }
    eprintln!("==> installing the AWS emulator: python3 -m pip install '{MOTO}'");
    cmd!(sh, "python3 -m pip install --quiet {MOTO}")
        .run()
        .context("installing moto failed: Python 3 with pip is required (e.g. `apt-get install python3-pip`)")?;
    anyhow::ensure!(
        moto_installed(sh),
        "moto was installed but python3 cannot import it: check `python3 -m pip show moto`"
    );
    Ok(())
}

fn moto_installed(sh: &Shell) -> bool {
    cmd!(sh, "python3 -c 'import moto.server'")
        .quiet()
        .ignore_stderr()
        .run()
        .is_ok()
}
