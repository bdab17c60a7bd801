//! `cargo xtask build` end to end: real release builds of every function,
//! real zips, the real manifest.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

const FUNCTIONS: [&str; 2] = ["status", "users"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn xtask(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// A build into `out_dir` (not the developer's `target/lambda`): the
/// manifest, stdout and stderr.
fn build(out_dir: &Path) -> (Value, String, String) {
    build_named(out_dir, &[])
}

/// A build of `functions` (every function when empty) into `out_dir`.
fn build_named(out_dir: &Path, functions: &[&str]) -> (Value, String, String) {
    let mut args = vec!["build", "--out-dir", out_dir.to_str().unwrap()];
    args.extend(functions);
    let output = xtask(&args);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "build failed: {stdout}");
    let manifest = std::fs::read_to_string(out_dir.join("manifest.json")).unwrap();
    (
        serde_json::from_str(&manifest).unwrap(),
        stdout,
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A fresh, empty directory under cargo's temporary directory for tests.
fn empty_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every entry describes its zip truthfully, and the zip is what Lambda runs.
fn check_manifest(out_dir: &Path, manifest: &Value) {
    assert_eq!(manifest["runtime"], "provided.al2023");
    assert_eq!(manifest["architecture"], "x86_64");
    for function in FUNCTIONS {
        let entry = &manifest["functions"][function];
        let path = entry["path"].as_str().unwrap();
        let zip = std::fs::read(out_dir.join(path)).unwrap();
        let digest = Sha256::digest(&zip);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(entry["sha256"], hex.as_str(), "{function}");
        assert_eq!(path, format!("{function}-{hex}.zip"));
        assert_eq!(
            entry["code_sha256"],
            base64::engine::general_purpose::STANDARD
                .encode(digest)
                .as_str()
        );
        assert_eq!(entry["zip_size"], zip.len() as u64);

        let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
        assert_eq!(archive.len(), 1);
        let mut bootstrap = archive.by_name("bootstrap").unwrap();
        assert_eq!(bootstrap.unix_mode().unwrap() & 0o777, 0o755);
        let mut binary = Vec::new();
        bootstrap.read_to_end(&mut binary).unwrap();
        assert_eq!(entry["binary_size"], binary.len() as u64);
        assert_eq!(&binary[..4], b"\x7fELF");
    }
}

/// Forces cargo to compile the crates of [`FUNCTIONS`] again: a rebuild
/// from the same source, not a no-op that copies the previous output. Fat
/// LTO generates all of a binary's code, its dependencies' included, again
/// at that link; the shared `api` crate is left alone, as touching it would
/// relink every function (minutes) to show nothing more.
fn touch_sources() {
    fn touch_rs(dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                touch_rs(&path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let file = std::fs::File::options().write(true).open(&path).unwrap();
                file.set_modified(SystemTime::now()).unwrap();
            }
        }
    }
    for function in FUNCTIONS {
        touch_rs(&root().join("lambdas").join(function));
    }
}

/// The "since last build" column of `function`'s row in the build table.
fn since_last_build<'a>(stdout: &'a str, function: &str) -> &'a str {
    let row = stdout
        .lines()
        .find(|line| line.starts_with(&format!("{function} ")))
        .unwrap_or_else(|| panic!("no row for {function} in:\n{stdout}"));
    row.split("  ")
        .filter(|cell| !cell.is_empty())
        .last()
        .unwrap()
        .trim()
}

#[test]
fn rebuilding_the_same_source_gives_the_same_artifacts() {
    let (first_dir, second_dir) = (empty_dir("first-build"), empty_dir("second-build"));
    let (first, stdout, _) = build(&first_dir);
    check_manifest(&first_dir, &first);
    assert!(stdout.starts_with("function  zip"), "{stdout}");
    for function in FUNCTIONS {
        assert_eq!(since_last_build(&stdout, function), "new");
    }

    // Compile again and package into an empty directory: nothing to reuse.
    touch_sources();
    let (second, _, stderr) = build(&second_dir);
    check_manifest(&second_dir, &second);
    for function in FUNCTIONS {
        assert!(
            stderr.contains(&format!("Compiling {function} ")),
            "{function} was not recompiled:\n{stderr}"
        );
    }
    assert_eq!(first, second, "same source, different artifacts");

    // Once more into the first directory: every function is unchanged.
    let (third, stdout, _) = build(&first_dir);
    assert_eq!(third, first);
    for function in FUNCTIONS {
        assert_eq!(since_last_build(&stdout, function), "unchanged");
    }

    // A function built alone is the same zip as built with the others
    // (cargo would unify its features with theirs if built together).
    for function in FUNCTIONS {
        let alone_dir = empty_dir(&format!("alone-{function}"));
        let (alone, _, _) = build_named(&alone_dir, &[function]);
        assert_eq!(
            alone["functions"][function], first["functions"][function],
            "{function} built alone is other bytes than built with the rest"
        );
    }
}

#[test]
fn unknown_functions_are_refused() {
    let output = xtask(&["build", "nosuch"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no function `nosuch`: the functions are chirps, files, status, users"),
        "{stderr}"
    );
}
