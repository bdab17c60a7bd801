//! `cargo xtask dev --watch`: the inner loop. While `dev` serves, changes
//! under `lambdas/`, `terraform/` and to the workspace's `Cargo.toml` and
//! `Cargo.lock` (once they settle for 200 ms) start a cycle:
//!
//! 1. the functions the change affects (their crate, or a crate they build
//!    with, such as `api`) compile in the `watch` profile, each alone;
//! 2. they are packaged into the stack's artifacts directory (the manifest
//!    says `"profile": "watch"`);
//! 3. Terraform applies to the local stack: only those functions' code
//!    (`-target`, no refresh) when that is all that changed, everything when
//!    `terraform/` changed or a function is new;
//! 4. the gateway reloads, and the cycle checks staging serves the new code.
//!
//! Staging follows `$LATEST`, so it serves the new code; prod's aliases
//! point at published versions and do not move. A cycle that fails (a
//! compile error, a failed apply) leaves the previous code serving, and its
//! change is carried into the next cycle, so the next good save recovers.
//! Each cycle is one line of the log. The watch builds are never vouched
//! for by `verify` (see `release::verify`): a release is built for release.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use xshell::Shell;

use crate::LocalDir;
use crate::artifact::Profile;
use crate::build::{self, Workspace};
use crate::gateway::Gateway;
use crate::live::Applied;
use crate::release::short_hash;
use crate::terraform::{TargetArgs, Terraform};

/// How long file events settle before a cycle starts (an editor's save, a
/// formatter, `cargo xtask new` writing a dozen files).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Where a batch of file events landed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Change {
    /// Crate directories under `lambdas/` with a changed file.
    pub crates: BTreeSet<PathBuf>,
    /// A file of `terraform/` changed.
    pub terraform: bool,
    /// The workspace's `Cargo.toml` changed: every function builds with it.
    pub workspace: bool,
    /// `Cargo.lock` changed (which matters only if a dependency did).
    pub lock: bool,
    /// The changed files, relative to the root.
    pub files: BTreeSet<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn merge(&mut self, other: Change) {
        self.crates.extend(other.crates);
        self.terraform |= other.terraform;
        self.workspace |= other.workspace;
        self.lock |= other.lock;
        self.files.extend(other.files);
    }

    /// The files, for the cycle's line.
    fn describe(&self) -> String {
        let files: Vec<&str> = self.files.iter().map(String::as_str).collect();
        match files.len() {
            0..=3 => files.join(", "),
            n => format!("{} and {} more", files[..2].join(", "), n - 2),
        }
    }
}

/// What in `paths` (absolute, as file events name them) the loop cares
/// about. Editors' scratch files, hidden files and build output are not.
pub fn classify(root: &Path, paths: impl IntoIterator<Item = PathBuf>) -> Change {
    let mut change = Change::default();
    for path in paths {
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let parts: Vec<&str> = relative
            .components()
            .filter_map(|part| part.as_os_str().to_str())
            .collect();
        let Some(name) = parts.last() else { continue };
        let scratch = name.ends_with('~')
            || [".swp", ".swx", ".tmp"]
                .iter()
                .any(|ext| name.ends_with(ext))
            || *name == "4913" // vim's probe of a directory
            || (name.starts_with('#') && name.ends_with('#')) // emacs
            || name.contains("___jb_"); // JetBrains
        if scratch
            || parts
                .iter()
                .any(|part| part.starts_with('.') || *part == "target")
        {
            continue;
        }
        let noted = match parts.as_slice() {
            // A file of a crate, or a crate's directory itself (a crate
            // moved or copied in whole announces only its directory).
            ["lambdas", krate, _, ..] => {
                change.crates.insert(root.join("lambdas").join(krate));
                true
            }
            ["lambdas", krate] if path.is_dir() => {
                change.crates.insert(root.join("lambdas").join(krate));
                true
            }
            // What the local stack links: `terraform/*.tf` and its
            // directories (templates); not AWS's pin or state beside them.
            ["terraform", file] if file.ends_with(".tf") => {
                change.terraform = true;
                true
            }
            // The state bucket's root is AWS's alone: its plan and state
            // files are no change to the local stack.
            ["terraform", "bootstrap", ..] => false,
            ["terraform", _, _, ..] => {
                change.terraform = true;
                true
            }
            ["Cargo.toml"] => {
                change.workspace = true;
                true
            }
            ["Cargo.lock"] => {
                change.lock = true;
                true
            }
            _ => false,
        };
        if noted {
            change.files.insert(parts.join("/"));
        }
    }
    change
}

/// Whether an event is a change of content or of the tree: not a read, and
/// not a change of metadata alone (access times).
fn is_change(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) | EventKind::Other
    )
}

/// The packages of `Cargo.lock` that come from a registry or git: when only
/// the workspace's own entries change (a new crate), no dependency did.
fn locked_dependencies(lock: &str) -> BTreeSet<String> {
    lock.split("[[package]]")
        .filter(|block| block.contains("\nsource = "))
        .map(|block| block.trim().to_owned())
        .collect()
}

/// The loop's state between cycles.
pub struct Watch {
    root: PathBuf,
    local: LocalDir,
    artifacts: PathBuf,
    gateway: Arc<Gateway>,
    runtime: tokio::runtime::Handle,
    /// The registry and git packages of `Cargo.lock` the functions were
    /// last built with, and those of the cycle under way.
    dependencies: BTreeSet<String>,
    built_dependencies: Option<BTreeSet<String>>,
}

impl Watch {
    pub fn new(
        root: PathBuf,
        local: LocalDir,
        artifacts: PathBuf,
        gateway: Arc<Gateway>,
        runtime: tokio::runtime::Handle,
    ) -> Watch {
        let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
        Watch {
            dependencies: locked_dependencies(&lock),
            built_dependencies: None,
            root,
            local,
            artifacts,
            gateway,
            runtime,
        }
    }

    fn log(&self, line: std::fmt::Arguments) {
        self.gateway.host.log.line(line);
    }

    /// Starts watching, here and now (a change saved once this returns is
    /// seen), and runs the loop on a thread of its own until the process
    /// ends; the thread logs why if watching fails.
    pub fn start(self) -> Result<()> {
        let (events, received) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(events).context("cannot watch files")?;
        for dir in ["lambdas", "terraform"] {
            watcher
                .watch(&self.root.join(dir), RecursiveMode::Recursive)
                .with_context(|| format!("cannot watch {dir}/"))?;
        }
        // The root itself (not its tree), for Cargo.toml and Cargo.lock:
        // editors replace a file rather than write it, which a watch on the
        // file itself would lose.
        watcher
            .watch(&self.root, RecursiveMode::NonRecursive)
            .context("cannot watch the workspace root")?;
        std::thread::spawn(move || {
            // The watcher lives as long as the loop.
            let _watcher = watcher;
            let log = self.gateway.host.log.clone();
            if let Err(err) = self.run(&received) {
                log.line(format_args!("==> watch stopped: {err:#}"));
            }
        });
        Ok(())
    }

    fn run(mut self, received: &mpsc::Receiver<notify::Result<notify::Event>>) -> Result<()> {
        let sh = Shell::new()?;
        sh.change_dir(&self.root);
        let mut pending = Change::default();
        loop {
            let paths = self.next_batch(received)?;
            pending.merge(classify(&self.root, paths));
            if pending.is_empty() {
                continue;
            }
            let what = pending.describe();
            // A failed cycle's change stays pending: the next one retries it.
            let done = self.cycle(&sh, &pending);
            let built = self.built_dependencies.take();
            match done {
                Ok(line) => {
                    if let Some(line) = line {
                        self.log(format_args!("==> watch: {what}: {line}"));
                    }
                    if let Some(built) = built {
                        self.dependencies = built;
                    }
                    pending = Change::default();
                }
                Err(Failed::Build(err)) => self.log(format_args!(
                    "==> watch: {what}: {err:#}; staging keeps serving the previous code"
                )),
                // The verdict first, Terraform's many lines after it.
                Err(Failed::Applied(err)) => self.log(format_args!(
                    "==> watch: {what}: not applied, or not served; the next change retries \
                     (`cargo xtask status` shows what staging runs):\n{err:#}"
                )),
            }
        }
    }

    /// The paths of the next batch of changes: from the first change until
    /// none came for [`DEBOUNCE`]. Reads are not changes: cargo opening
    /// every `Cargo.toml` would otherwise start a cycle after each cycle.
    fn next_batch(
        &self,
        received: &mpsc::Receiver<notify::Result<notify::Event>>,
    ) -> Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        let mut next = received.recv().context("the file watcher stopped")?;
        loop {
            match next {
                // The kernel's queue overflowed: events were lost, so
                // everything may have changed.
                Ok(event) if event.need_rescan() => {
                    self.log(format_args!(
                        "==> watch: file events were lost; rebuilding and applying everything"
                    ));
                    paths.extend(["Cargo.toml", "terraform/api.tf"].map(|p| self.root.join(p)));
                }
                Ok(event) if is_change(&event.kind) => paths.extend(event.paths),
                Ok(_) => {}
                Err(err) => self.log(format_args!("==> watch: {err}")),
            }
            next = if paths.is_empty() {
                received.recv().context("the file watcher stopped")?
            } else {
                match received.recv_timeout(DEBOUNCE) {
                    Ok(next) => next,
                    Err(mpsc::RecvTimeoutError::Timeout) => return Ok(paths),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        anyhow::bail!("the file watcher stopped")
                    }
                }
            };
        }
    }

    /// One cycle: build what `change` affects, apply, reload; its line, or
    /// `None` when nothing needed doing.
    fn cycle(&mut self, sh: &Shell, change: &Change) -> Result<Option<String>, Failed> {
        let started = Instant::now();
        let workspace = Workspace::read(sh).map_err(Failed::Build)?;
        // The dependencies are taken as built only once a cycle succeeds
        // (see `run`), so a failed one rebuilds everything again next time.
        let mut dependencies_changed = false;
        if change.lock {
            let lock = std::fs::read_to_string(self.root.join("Cargo.lock"))
                .map_err(|err| Failed::Build(err.into()))?;
            let now = locked_dependencies(&lock);
            dependencies_changed = now != self.dependencies;
            self.built_dependencies = Some(now);
        }
        let mut functions = if change.workspace || dependencies_changed {
            workspace.functions.clone()
        } else {
            workspace.affected(&change.crates)
        };
        // A function never built here (a crate that appeared whole: made by
        // `new`, copied, checked out) is built too, or its routes would name
        // a function Terraform does not have.
        let manifest = crate::artifact::read_manifest(&self.artifacts.join("manifest.json"))
            .map_err(Failed::Build)?
            .unwrap_or_default();
        for function in &workspace.functions {
            if !manifest.functions.contains_key(&function.name) && !functions.contains(function) {
                functions.push(function.clone());
            }
        }
        if functions.is_empty() && !change.terraform {
            return Ok(None);
        }

        let timer = Instant::now();
        for function in &functions {
            build::compile(sh, function, Profile::Watch).map_err(|_| {
                Failed::Build(anyhow!(
                    "{} does not build (cargo's errors are above)",
                    function.name
                ))
            })?;
        }
        let compiled = timer.elapsed();
        let timer = Instant::now();
        let packaged = build::package(&workspace, &functions, Profile::Watch, &self.artifacts)
            .map_err(Failed::Build)?;
        let package = timer.elapsed();

        // What needs applying: code staging does not serve yet (not what
        // the manifest held before, which a failed apply leaves ahead of
        // staging), everything for a change to terraform/ or a new function.
        let applied = Applied::read(&self.local).map_err(Failed::Applied)?;
        let serving = self.staging_code();
        let mut everything = change.terraform || serving.is_none();
        let mut new_code = Vec::new();
        for (name, artifact, _) in &packaged {
            match applied.function_names.get(name) {
                None => everything = true,
                Some(lambda) => {
                    let served = serving.as_ref().and_then(|serving| serving.get(lambda));
                    if served != Some(&artifact.code_sha256) {
                        new_code.push(name.as_str());
                    }
                }
            }
        }
        if new_code.is_empty() && !everything {
            return Ok(Some(format!(
                "{} compiled to the code staging runs ({:.1} s): nothing to apply",
                names(&functions),
                started.elapsed().as_secs_f64()
            )));
        }
        let timer = Instant::now();
        let target = TargetArgs::local(self.artifacts.clone());
        let apply = || -> Result<String> {
            let terraform = Terraform::existing(sh, &self.local, &target)?;
            let args: Vec<String> = if everything {
                terraform.init(sh)?;
                Vec::new()
            } else {
                std::iter::once("-refresh=false".to_owned())
                    .chain(
                        new_code
                            .iter()
                            .map(|name| format!("-target=aws_lambda_function.this[\"{name}\"]")),
                    )
                    .collect()
            };
            terraform.apply_local(sh, &args)
        };
        let summary = apply().map_err(Failed::Applied)?;
        let apply = timer.elapsed();

        // What staging serves now, read back as the gateway reloads it.
        let applied = Applied::read(&self.local).map_err(Failed::Applied)?;
        let serving = self.staging_code().ok_or_else(|| {
            Failed::Applied(anyhow!(
                "applied, but the gateway cannot serve it (every request answers 500; the \
                 log above says why)"
            ))
        })?;
        let mut served = Vec::new();
        for (name, artifact, _) in &packaged {
            let lambda = applied.function_name(name).map_err(Failed::Applied)?;
            if serving.get(&lambda) != Some(&artifact.code_sha256) {
                return Err(Failed::Applied(anyhow!(
                    "applied, but staging does not serve {name} {} (see the log above)",
                    short_hash(&artifact.code_sha256)
                )));
            }
            served.push(format!("{name} {}", short_hash(&artifact.code_sha256)));
        }
        let applied_what = if everything {
            "everything".to_owned()
        } else {
            format!("{}'s code", new_code.join(", "))
        };
        Ok(Some(format!(
            "compiled {} in {:.1} s, packaged in {:.1} s, applied {applied_what} in {:.1} s ({}); \
             staging serves {} after {:.1} s",
            names(&functions),
            compiled.as_secs_f64(),
            package.as_secs_f64(),
            apply.as_secs_f64(),
            summary.trim_end_matches('.'),
            if served.is_empty() {
                "the new configuration".to_owned()
            } else {
                served.join(", ")
            },
            started.elapsed().as_secs_f64()
        )))
    }

    /// Lambda function name -> the code staging's integrations reach, as
    /// the gateway serves it now (reloaded if Terraform changed the state);
    /// `None` if the gateway cannot serve what is applied.
    fn staging_code(&self) -> Option<BTreeMap<String, String>> {
        let api = self.runtime.block_on(self.gateway.current()).ok()?;
        let staging = api.stages.get("staging")?;
        Some(
            staging
                .targets
                .values()
                .flatten()
                .map(|target| {
                    (
                        target.routed.version.name.clone(),
                        target.routed.version.code_sha256.clone(),
                    )
                })
                .collect(),
        )
    }
}

/// Why a cycle stopped, which tells what staging serves.
enum Failed {
    /// Nothing was applied: staging serves the previous code.
    Build(anyhow::Error),
    /// Terraform failed (perhaps part way), or the gateway cannot serve what
    /// it applied.
    Applied(anyhow::Error),
}

fn names(functions: &[build::Function]) -> String {
    if functions.is_empty() {
        return "nothing".to_owned();
    }
    functions
        .iter()
        .map(|function| function.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(paths: &[&str]) -> Change {
        classify(
            Path::new("/ws"),
            paths.iter().map(|path| Path::new("/ws").join(path)),
        )
    }

    #[test]
    fn events_are_sorted_into_crates_terraform_and_the_workspace() {
        let edit = change(&["lambdas/status/src/main.rs", "lambdas/api/src/lib.rs"]);
        assert_eq!(
            edit.crates,
            BTreeSet::from([
                PathBuf::from("/ws/lambdas/status"),
                PathBuf::from("/ws/lambdas/api")
            ])
        );
        assert!(!edit.terraform && !edit.workspace && !edit.lock);
        assert_eq!(
            edit.describe(),
            "lambdas/api/src/lib.rs, lambdas/status/src/main.rs"
        );

        let tf = change(&["terraform/api.tf", "terraform/templates/request.vtl"]);
        assert!(tf.terraform && tf.crates.is_empty());
        assert!(change(&["Cargo.toml"]).workspace);
        assert!(change(&["Cargo.lock"]).lock);
    }

    #[test]
    fn scratch_files_and_build_output_are_not_changes() {
        for path in [
            "lambdas/status/src/.main.rs.swp",
            "lambdas/status/src/main.rs~",
            "lambdas/status/src/4913",
            "lambdas/status/src/#main.rs#",
            "lambdas/status/src/main.rs___jb_tmp___",
            "lambdas/status/target/release/status",
            "terraform/.terraform/providers/x",
            "terraform/terraform.tfstate",
            "terraform/terraform.tfstate.backup",
            "terraform/prod.auto.tfvars.json",
            "target/lambda/manifest.json",
            "events/status/health.json",
            "README.md",
            "lambdas/README.md",
            "/elsewhere/lambdas/status/src/main.rs",
        ] {
            let change = change(&[path]);
            assert!(change.is_empty(), "{path}: {change:?}");
        }
    }

    #[test]
    fn a_crate_that_appears_whole_is_a_change_to_it() {
        let root = std::env::temp_dir().join(format!("xtask-watch-{}", std::process::id()));
        std::fs::create_dir_all(root.join("lambdas/copied/src")).unwrap();
        let change = classify(&root, [root.join("lambdas/copied")]);
        assert_eq!(change.crates, BTreeSet::from([root.join("lambdas/copied")]));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn many_files_are_summed_up() {
        let many = change(&[
            "lambdas/hello/Cargo.toml",
            "lambdas/hello/src/main.rs",
            "terraform/api.tf",
            "Cargo.lock",
        ]);
        assert_eq!(
            many.describe(),
            "Cargo.lock, lambdas/hello/Cargo.toml and 2 more"
        );
    }

    #[test]
    fn a_new_member_in_the_lock_is_not_a_dependency_change() {
        let lock = "version = 4\n\n[[package]]\nname = \"api\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n";
        let with_member = lock.replace(
            "[[package]]\nname = \"serde\"",
            "[[package]]\nname = \"hello\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"serde\"",
        );
        assert_eq!(locked_dependencies(lock), locked_dependencies(&with_member));
        let bumped = lock.replace("1.0.0", "1.0.1");
        assert_ne!(locked_dependencies(lock), locked_dependencies(&bumped));
    }
}
