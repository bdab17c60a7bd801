//! `cargo xtask`: the project's own build and release tool.
//!
//! Every command runs from the workspace root with one [`Shell`]; each lives
//! in its own module. `cargo xtask --help` lists them, `cargo xtask CMD
//! --help` explains one (the `///` docs below are that help text).

mod artifact;
mod build;
mod test;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use xshell::Shell;

/// Build, test and release the Rust Lambda functions of this workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Xtask {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the Lambda functions into content-hashed zips and write the manifest.
    Build(build::Args),
    /// Run every check and test (lints, unit, emulator and build tests), installing the emulator if missing.
    Test(test::Args),
}

fn main() -> Result<()> {
    let flags = Xtask::parse();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match flags.command {
        Command::Build(args) => build::run(&sh, args),
        Command::Test(args) => test::run(&sh, args),
    }
}

/// The cargo that runs us (so `cargo +toolchain xtask` is honoured).
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The workspace root (the parent of `xtask/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
