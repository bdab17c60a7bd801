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
    /// Arguments for the test binaries after `--` (a test name filter, `--nocapture`, ...).
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// The emulator the tests talk to, as pip names it, at the version they were
/// written against (they use its `werkzeug_app` module to serve it serially).
const MOTO: &str = "moto[server]==5.2.5";
/// What the tests import to serve it.
const MOTO_IMPORT: &str = "import werkzeug.serving; from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app";

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

/// Makes sure the tests' Python (`$MOTO_PYTHON`, else `python3`) can serve
/// moto, installing it with pip if not.
fn ensure_moto(sh: &Shell) -> Result<()> {
    let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let installed = || {
        cmd!(sh, "{python} -c {MOTO_IMPORT}")
            .quiet()
            .ignore_stderr()
            .run()
            .is_ok()
    };
    if installed() {
        return Ok(());
    }
    eprintln!("==> installing the AWS emulator: {python} -m pip install '{MOTO}'");
    cmd!(sh, "{python} -m pip install --quiet {MOTO}")
        .run()
        .context(
            "installing moto failed. Python 3 with pip is required; where pip refuses to install \
         into the system Python (\"externally-managed-environment\"), use a virtualenv: \
         `python3 -m venv target/venv && export MOTO_PYTHON=$PWD/target/venv/bin/python`",
        )?;
    anyhow::ensure!(
        installed(),
        "moto was installed but {python} cannot import it: check `{python} -m pip show moto`"
    );
    Ok(())
}
