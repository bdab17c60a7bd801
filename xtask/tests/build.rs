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

fn build() -> (Value, String, String) {
    let output = xtask(&["build"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "build failed: {stdout}");
    let manifest = std::fs::read_to_string(root().join("target/lambda/manifest.json")).unwrap();
    (
        serde_json::from_str(&manifest).unwrap(),
        stdout,
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Every entry describes its zip truthfully, and the zip is what Lambda runs.
fn check_manifest(manifest: &Value) {
    assert_eq!(manifest["runtime"], "provided.al2023");
    assert_eq!(manifest["architecture"], "x86_64");
    for function in FUNCTIONS {
        let entry = &manifest["functions"][function];
        let path = entry["path"].as_str().unwrap();
        let zip = std::fs::read(root().join(path)).unwrap();
        let digest = Sha256::digest(&zip);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(entry["sha256"], hex.as_str(), "{function}");
        assert_eq!(path, format!("target/lambda/{function}-{hex}.zip"));
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

/// Forces cargo to compile the function crates again: a rebuild from the
/// same source, not a no-op that copies the previous output.
fn touch_sources() {
    for function in FUNCTIONS {
        let main = root().join("lambdas").join(function).join("src/main.rs");
        std::fs::File::options()
            .write(true)
            .open(main)
            .unwrap()
            .set_modified(SystemTime::now())
            .unwrap();
    }
}

#[test]
fn rebuilding_the_same_source_gives_the_same_artifacts() {
    let (first, stdout, _) = build();
    check_manifest(&first);
    assert!(stdout.starts_with("function  zip"), "{stdout}");

    // Recompile from the same source, and package again: without the zips
    // there is nothing to reuse.
    touch_sources();
    for function in FUNCTIONS {
        std::fs::remove_file(root().join(first["functions"][function]["path"].as_str().unwrap()))
            .unwrap();
    }
    let (second, stdout, stderr) = build();
    check_manifest(&second);
    for function in FUNCTIONS {
        assert!(
            stderr.contains(&format!("Compiling {function} ")),
            "{function} was not recompiled:\n{stderr}"
        );
        let row = stdout
            .lines()
            .find(|line| line.starts_with(function))
            .unwrap();
        assert!(row.ends_with("unchanged"), "{row}");
    }
    assert_eq!(first, second, "same source, different artifacts");
}

#[test]
fn unknown_functions_are_refused() {
    let output = xtask(&["build", "nosuch"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no function `nosuch`: the functions are status, users"),
        "{stderr}"
    );
}
