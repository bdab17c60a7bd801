//! `cargo xtask build`: compile the functions in release for Lambda, check
//! each binary can run on `provided.al2023`, package it into
//! `target/lambda/<fn>-<sha256>.zip` and record it in
//! `target/lambda/manifest.json`, which Terraform reads.
//!
//! Each function is compiled by a cargo of its own: cargo unifies the
//! features of the packages it builds together, so a function built beside
//! another (whose dependencies want more of tokio, say) would be other bytes
//! than the same function built alone. Built alone, a function's zip depends
//! on its own source only, whichever functions a build names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xshell::{Shell, cmd};

use crate::artifact::{self, Artifact, Manifest, Profile, RUST_TARGET};
use crate::cargo;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Functions to build (crate names under `lambdas/`); every function when omitted.
    /// A test fixture (under `xtask/fixtures/`) is built only when named.
    pub functions: Vec<String>,
    /// Where to write the zips and `manifest.json`.
    #[arg(long, value_name = "DIR", default_value = OUT_DIR)]
    pub out_dir: PathBuf,
    /// `watch` is the quick profile of `cargo xtask dev --watch` (no LTO):
    /// the local stack runs it on staging, but verify never vouches for it
    /// and Terraform refuses it outside the local stack.
    #[arg(long, value_enum, default_value_t = Profile::Release)]
    pub profile: Profile,
}

/// A Lambda function crate: a package under `lambdas/` with a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub bin: String,
}

/// Where the manifest and the zips live by default, relative to the
/// workspace root; Terraform reads them there.
pub const OUT_DIR: &str = "target/lambda";

pub fn run(sh: &Shell, args: Args) -> Result<()> {
    let started = Instant::now();
    let workspace = Workspace::read(sh)?;
    let selected = workspace.select(&args.functions)?;
    check_target_installed(sh)?;

    let names: Vec<&str> = selected.iter().map(|f| f.name.as_str()).collect();
    eprintln!(
        "==> compiling {} ({}, {RUST_TARGET})",
        names.join(", "),
        args.profile.as_str()
    );
    for function in &selected {
        compile(sh, function, args.profile)?;
    }

    let out_dir = sh.current_dir().join(&args.out_dir);
    let packaged = package(&workspace, &selected, args.profile, &out_dir)?;
    let rows: Vec<Vec<String>> = packaged
        .iter()
        .map(|(function, artifact, change)| {
            vec![
                function.clone(),
                human_size(artifact.zip_size),
                short(&artifact.sha256).to_owned(),
                change.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["function", "zip", "sha256", "since last build"], &rows)
    );
    let root = sh.current_dir();
    println!(
        "manifest: {} ({:.1} s)",
        out_dir
            .strip_prefix(&root)
            .unwrap_or(&out_dir)
            .join("manifest.json")
            .display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Checks and packages the compiled `functions` into `out_dir` and records
/// them in its manifest: per function, its artifact and how it differs from
/// the manifest's previous one ("new", "unchanged", "changed (was ...)").
pub fn package(
    workspace: &Workspace,
    functions: &[Function],
    profile: Profile,
    out_dir: &Path,
) -> Result<Vec<(String, Artifact, String)>> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let manifest_path = out_dir.join("manifest.json");
    let previous = read_manifest(&manifest_path)?;

    // The manifest changes only once every binary passed the checks: a
    // refusal leaves it as it was (zips are content-addressed, so one written
    // for a function that passed is harmless).
    let mut manifest = previous.clone();
    let mut packaged = Vec::new();
    for function in functions {
        let binary_path = workspace.binary(&function.bin, profile);
        eprintln!("==> checking and packaging {}", function.name);
        let old = previous.functions.get(&function.name);
        let reusable = old.filter(|_| previous.packaging == artifact::PACKAGING);
        let artifact = package_binary(out_dir, function, profile, &binary_path, reusable)
            .with_context(|| {
                format!(
                    "refusing to ship `{}` ({})",
                    function.name,
                    binary_path.display()
                )
            })?;
        let change = match old {
            None => "new".to_owned(),
            Some(old) if old.sha256 == artifact.sha256 => "unchanged".to_owned(),
            Some(old) => format!("changed (was {})", short(&old.sha256)),
        };
        manifest
            .functions
            .insert(function.name.clone(), artifact.clone());
        packaged.push((function.name.clone(), artifact, change));
    }
    write_atomically(
        &manifest_path,
        format!("{}\n", serde_json::to_string_pretty(&manifest)?).as_bytes(),
    )?;
    Ok(packaged)
}

/// What `cargo metadata` says about the workspace.
pub struct Workspace {
    /// The functions the API is made of: `lambdas/*` with a binary.
    pub functions: Vec<Function>,
    /// Functions only tests deploy: `xtask/fixtures/*` with a binary.
    pub fixtures: Vec<Function>,
    target_dir: PathBuf,
    /// Every member: its directory, and the members it builds with (its
    /// path dependencies, dev-dependencies aside).
    members: BTreeMap<String, (PathBuf, Vec<String>)>,
}

impl Workspace {
    pub fn read(sh: &Shell) -> Result<Self> {
        let cargo = cargo();
        let json = cmd!(sh, "{cargo} metadata --format-version 1 --no-deps")
            .quiet()
            .read()
            .context("`cargo metadata` failed")?;
        Self::from_metadata(&serde_json::from_str(&json)?, &sh.current_dir())
    }

    fn from_metadata(metadata: &Value, root: &Path) -> Result<Self> {
        let lambdas = root.join("lambdas");
        let fixtures_dir = root.join("xtask/fixtures");
        let mut functions = Vec::new();
        let mut fixtures = Vec::new();
        let mut members = BTreeMap::new();
        for package in metadata["packages"]
            .as_array()
            .context("metadata has no packages")?
        {
            let manifest = Path::new(package["manifest_path"].as_str().unwrap_or_default());
            let path_deps = package["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|dep| dep["path"].is_string() && dep["kind"] != "dev")
                .filter_map(|dep| dep["name"].as_str().map(str::to_owned))
                .collect();
            if let (Some(name), Some(dir)) = (package["name"].as_str(), manifest.parent()) {
                members.insert(name.to_owned(), (dir.to_path_buf(), path_deps));
            }
            let list = if manifest.starts_with(&lambdas) {
                &mut functions
            } else if manifest.starts_with(&fixtures_dir) {
                &mut fixtures
            } else {
                continue;
            };
            let bins: Vec<&str> = package["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|target| {
                    target["kind"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
                })
                .filter_map(|target| target["name"].as_str())
                .collect();
            let name = package["name"].as_str().context("package without a name")?;
            match bins[..] {
                [] => {} // a library shared by the functions
                [bin] => list.push(Function {
                    name: name.to_owned(),
                    bin: bin.to_owned(),
                }),
                _ => bail!(
                    "`{name}` has several binaries ({bins:?}): a function crate has exactly one"
                ),
            }
        }
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        fixtures.sort_by(|a, b| a.name.cmp(&b.name));
        let target_dir = PathBuf::from(
            metadata["target_directory"]
                .as_str()
                .context("no target_directory")?,
        );
        Ok(Workspace {
            functions,
            fixtures,
            target_dir,
            members,
        })
    }

    /// The functions (under `lambdas/`) built from a directory in `dirs`:
    /// their own crate's, or that of a member they build with, however
    /// indirectly (a change to `lambdas/api` affects every function).
    pub fn affected(&self, dirs: &BTreeSet<PathBuf>) -> Vec<Function> {
        let touches = |name: &str| {
            let mut seen = BTreeSet::new();
            let mut todo = vec![name.to_owned()];
            while let Some(member) = todo.pop() {
                if !seen.insert(member.clone()) {
                    continue;
                }
                if let Some((dir, deps)) = self.members.get(&member) {
                    if dirs.contains(dir) {
                        return true;
                    }
                    todo.extend(deps.iter().cloned());
                }
            }
            false
        };
        self.functions
            .iter()
            .filter(|function| touches(&function.name))
            .cloned()
            .collect()
    }

    /// The named functions (or fixtures), or every function; an unknown
    /// name is an error that lists the known functions.
    pub fn select(&self, names: &[String]) -> Result<Vec<Function>> {
        if names.is_empty() {
            return Ok(self.functions.clone());
        }
        names
            .iter()
            .map(|name| {
                self.functions
                    .iter()
                    .chain(&self.fixtures)
                    .find(|f| &f.name == name)
                    .cloned()
                    .with_context(|| {
                        let known: Vec<&str> =
                            self.functions.iter().map(|f| f.name.as_str()).collect();
                        format!(
                            "no function `{name}`: the functions are {}",
                            known.join(", ")
                        )
                    })
            })
            .collect()
    }

    fn binary(&self, bin: &str, profile: Profile) -> PathBuf {
        self.target_dir
            .join(RUST_TARGET)
            .join(profile.as_str())
            .join(bin)
    }
}

fn check_target_installed(sh: &Shell) -> Result<()> {
    let sysroot = cmd!(sh, "rustc --print sysroot")
        .quiet()
        .read()
        .context("rustc is required: install Rust with rustup (https://rustup.rs)")?;
    let lib = Path::new(&sysroot).join("lib/rustlib").join(RUST_TARGET);
    if !lib.exists() {
        bail!(
            "the Rust target {RUST_TARGET} is not installed: run `rustup target add {RUST_TARGET}`"
        );
    }
    Ok(())
}

/// Compiles one function, alone (the module's doc says why).
pub fn compile(sh: &Shell, function: &Function, profile: Profile) -> Result<()> {
    let cargo = cargo();
    let (package, profile) = (&function.name, profile.as_str());
    let mut build = cmd!(
        sh,
        "{cargo} build --profile {profile} --locked --target {RUST_TARGET} --package {package}"
    )
    .env("CARGO_ENCODED_RUSTFLAGS", rustflags(sh));
    // Nor a profile override of the user's (`CARGO_PROFILE_RELEASE_LTO`...):
    // a build is what its profile in Cargo.toml says.
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|name| is_set_by_cargo_for_us(name) || name.starts_with("CARGO_PROFILE_"))
        {
            build = build.env_remove(name);
        }
    }
    build
        .run()
        .with_context(|| format!("cargo build of `{package}` failed (its errors are above)"))?;
    Ok(())
}

/// Variables cargo sets for the process it runs (`cargo xtask`, a test).
/// Build scripts that watch one of them (`rerun-if-env-changed`, as `ring`
/// does for `CARGO_MANIFEST_DIR`) would run again whenever builds alternate
/// between a shell, xtask and a test, so the nested build does not inherit them.
fn is_set_by_cargo_for_us(name: &str) -> bool {
    const EXACT: [&str; 7] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    EXACT.contains(&name) || name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_BIN_")
}

/// The user's RUSTFLAGS plus path remapping, so no absolute path of this
/// machine (checkout, cargo home) ends up in a binary: the artifact's bytes
/// then do not depend on where the workspace was checked out.
fn rustflags(sh: &Shell) -> String {
    let mut flags: Vec<String> = std::env::var("RUSTFLAGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    flags.push(format!(
        "--remap-path-prefix={}=/workspace",
        sh.current_dir().display()
    ));
    if let Some(cargo_home) = cargo_home() {
        flags.push(format!(
            "--remap-path-prefix={}=/cargo",
            cargo_home.display()
        ));
    }
    flags.join("\x1f")
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
}

/// Checks one binary and packages it into `out_dir`. When the binary is the
/// one `reusable` was made from (by this packaging) and that zip is intact,
/// the zip is reused rather than compressed again: the bytes would be the same.
fn package_binary(
    out_dir: &Path,
    function: &Function,
    profile: Profile,
    binary_path: &Path,
    reusable: Option<&Artifact>,
) -> Result<Artifact> {
    let name = &function.name;
    use std::os::unix::fs::PermissionsExt;
    let metadata =
        std::fs::metadata(binary_path).context("the binary is missing after the build")?;
    artifact::check_executable(metadata.permissions().mode())?;
    let binary = std::fs::read(binary_path)?;
    let max_glibc = artifact::check_elf(&binary)?;
    let binary_sha256 = artifact::sha256(&binary).hex;

    if let Some(previous) =
        reusable.filter(|p| p.binary_sha256 == binary_sha256 && p.profile == profile)
    {
        let intact = std::fs::read(out_dir.join(&previous.path))
            .is_ok_and(|zip| artifact::sha256(&zip).hex == previous.sha256);
        if intact {
            return Ok(previous.clone());
        }
    }

    let zip = artifact::package(&binary)?;
    anyhow::ensure!(
        artifact::check_zip(&zip)? == binary,
        "the zip does not hold the binary unchanged"
    );
    let digest = artifact::sha256(&zip);
    let artifact = Artifact {
        path: format!("{name}-{}.zip", digest.hex),
        zip_size: zip.len() as u64,
        sha256: digest.hex,
        code_sha256: digest.base64,
        binary_size: binary.len() as u64,
        binary_sha256,
        max_glibc: max_glibc.map_or_else(|| "none".to_owned(), |v| v.to_string()),
        profile,
    };
    let path = out_dir.join(&artifact.path);
    if !path.exists() {
        write_atomically(&path, &zip)?;
    }
    Ok(artifact)
}

/// The previous manifest; an unreadable one (an older format) is ignored
/// with a warning, since every entry can be rebuilt.
fn read_manifest(path: &Path) -> Result<Manifest> {
    if !path.exists() {
        return Ok(Manifest::default());
    }
    Ok(artifact::read_manifest(path)
        .unwrap_or_else(|err| {
            eprintln!("warning: ignoring {err:#}: it is rebuilt from scratch");
            None
        })
        .unwrap_or_default())
}

/// Writes through a temporary file and a rename, so a reader (Terraform, a
/// concurrent build) never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn short(hex: &str) -> &str {
    &hex[..12.min(hex.len())]
}

fn human_size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.2} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn functions_are_the_lambdas_packages_with_a_binary_fixtures_only_by_name() {
        let root = Path::new("/ws");
        let package = |name: &str, dir: &str, kinds: &[&str]| {
            json!({
                "name": name,
                "manifest_path": format!("/ws/{dir}/Cargo.toml"),
                "targets": kinds.iter().map(|k| json!({"name": name, "kind": [k]})).collect::<Vec<_>>(),
            })
        };
        let metadata = json!({
            "target_directory": "/ws/target",
            "packages": [
                package("users", "lambdas/users", &["lib", "bin"]),
                package("api", "lambdas/api", &["lib"]),
                package("xtask", "xtask", &["bin"]),
                package("status", "lambdas/status", &["bin"]),
                package("faulty", "xtask/fixtures/faulty", &["bin"]),
            ],
        });
        let workspace = Workspace::from_metadata(&metadata, root).unwrap();
        let names: Vec<&str> = workspace
            .functions
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["status", "users"]);
        assert_eq!(
            workspace.binary("users", Profile::Release),
            Path::new("/ws/target/x86_64-unknown-linux-gnu/release/users")
        );

        assert_eq!(workspace.select(&[]).unwrap().len(), 2);
        assert_eq!(
            workspace.select(&["users".into()]).unwrap()[0].name,
            "users"
        );
        // A fixture is never built unless named.
        assert_eq!(
            workspace.select(&["faulty".into()]).unwrap()[0].name,
            "faulty"
        );
        let err = workspace.select(&["api".into()]).unwrap_err().to_string();
        assert_eq!(err, "no function `api`: the functions are status, users");
    }

    #[test]
    fn a_change_affects_the_functions_built_from_it() {
        let package = |name: &str, dir: &str, kinds: &[&str], deps: &[(&str, &str)]| {
            json!({
                "name": name,
                "manifest_path": format!("/ws/{dir}/Cargo.toml"),
                "targets": kinds.iter().map(|k| json!({"name": name, "kind": [k]})).collect::<Vec<_>>(),
                "dependencies": deps.iter().map(|(dep, kind)| json!({
                    "name": dep, "path": format!("/ws/lambdas/{dep}"),
                    "kind": if kind.is_empty() { Value::Null } else { json!(kind) },
                })).chain([json!({"name": "serde", "kind": null})]).collect::<Vec<_>>(),
            })
        };
        let metadata = json!({
            "target_directory": "/ws/target",
            "packages": [
                package("api", "lambdas/api", &["lib"], &[]),
                package("store", "lambdas/store", &["lib"], &[("api", "")]),
                package("users", "lambdas/users", &["bin"], &[("store", "")]),
                package("status", "lambdas/status", &["bin"], &[("api", ""), ("testkit", "dev")]),
                package("testkit", "lambdas/testkit", &["lib"], &[]),
            ],
        });
        let workspace = Workspace::from_metadata(&metadata, Path::new("/ws")).unwrap();
        let affected = |dirs: &[&str]| -> Vec<String> {
            let dirs = dirs
                .iter()
                .map(|dir| PathBuf::from(format!("/ws/lambdas/{dir}")))
                .collect();
            workspace
                .affected(&dirs)
                .into_iter()
                .map(|f| f.name)
                .collect()
        };
        assert_eq!(affected(&["status"]), ["status"]);
        assert_eq!(affected(&["store"]), ["users"]);
        assert_eq!(affected(&["api"]), ["status", "users"]);
        // A dev-dependency is not in the binary.
        assert!(affected(&["testkit"]).is_empty());
        assert!(affected(&["elsewhere"]).is_empty());
    }

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["users".to_owned(), "2.10 MiB".to_owned()],
            vec!["s".to_owned(), "1 B".to_owned()],
        ];
        assert_eq!(
            table(&["function", "zip"], &rows),
            "function  zip\nusers     2.10 MiB\ns         1 B\n"
        );
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(2048), "2.0 KiB");
        assert_eq!(human_size(2_621_440), "2.50 MiB");
    }
}
