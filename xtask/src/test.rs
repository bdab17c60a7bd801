//! `cargo xtask test`: everything CI checks, in one command that works on a
//! fresh machine: installs the AWS emulator (moto) where it is missing, runs
//! the lints, then every test of the workspace.

use std::path::PathBuf;

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
    let path = ensure_moto(sh)?;
    let _path = sh.push_env("PATH", path);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
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

/// Makes sure `moto_server` runs, installing it with pip if it does not;
/// returns the PATH under which it is found.
fn ensure_moto(sh: &Shell) -> Result<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    if moto_runs(sh) {
        return Ok(path);
    }
    eprintln!("==> installing the AWS emulator: python3 -m pip install '{MOTO}'");
    cmd!(sh, "python3 -m pip install --quiet {MOTO}")
        .run()
        .context("installing moto failed: Python 3 with pip is required (e.g. `apt-get install python3-pip`)")?;
    // pip puts scripts in the interpreter's scripts directory, which need not
    // be on PATH (user installs, pyenv before a rehash).
    let scripts = cmd!(
        sh,
        "python3 -c 'import sysconfig; print(sysconfig.get_path(\"scripts\"))'"
    )
    .quiet()
    .read()?;
    let path = std::env::join_paths(
        std::iter::once(PathBuf::from(scripts)).chain(std::env::split_paths(&path)),
    )?
    .to_string_lossy()
    .into_owned();
    let _path = sh.push_env("PATH", &path);
    anyhow::ensure!(
        moto_runs(sh),
        "moto was installed but `moto_server` does not run: check `python3 -m pip show moto`"
    );
    Ok(path)
}

fn moto_runs(sh: &Shell) -> bool {
    cmd!(sh, "moto_server --help")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}
