//! Lambda artifacts: the checks a binary must pass to run on
//! `provided.al2023`, the reproducible zip, and the manifest Terraform reads.
//!
//! All of it is pure over bytes, so it is tested without building anything.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use object::elf;
use object::read::elf::{ElfFile64, FileHeader};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

/// The Lambda runtime every function runs on.
pub const RUNTIME: &str = "provided.al2023";
/// The Rust target the functions are built for.
pub const RUST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Lambda's name for that architecture.
pub const ARCHITECTURE: &str = "x86_64";
/// `provided.al2023` ships glibc 2.34: a binary needing a newer symbol
/// version fails to load there.
pub const MAX_GLIBC: GlibcVersion = GlibcVersion(2, 34);
/// The version of [`package`]'s output format. A zip is reused for an
/// unchanged binary only if it was made by the same packaging, so bump this
/// whenever `package` would write other bytes (the `packaging_is_stable`
/// test fails until you do).
pub const PACKAGING: u32 = 1;
/// The one file of the zip, the entry point of an OS-only runtime.
pub const ENTRY: &str = "bootstrap";
const ENTRY_MODE: u32 = 0o755;

/// A `GLIBC_x.y` symbol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlibcVersion(pub u32, pub u32);

impl GlibcVersion {
    /// `GLIBC_2.34` -> 2.34; `None` for other version names (`GLIBC_PRIVATE`, `GCC_3.0`).
    pub fn parse(name: &str) -> Option<Self> {
        let (major, minor) = name.strip_prefix("GLIBC_")?.split_once('.')?;
        // `GLIBC_2.2.5`: the third part does not matter at our precision.
        let minor = minor.split('.').next()?;
        Some(GlibcVersion(major.parse().ok()?, minor.parse().ok()?))
    }
}

impl std::fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// Checks that `binary` is a 64-bit x86_64 ELF whose glibc symbol versions
/// are all available on `provided.al2023`; returns the highest one it needs
/// (`None` for a static binary).
pub fn check_elf(binary: &[u8]) -> Result<Option<GlibcVersion>> {
    let file =
        ElfFile64::<object::Endianness>::parse(binary).context("not a 64-bit ELF executable")?;
    let endian = file.endian();
    let machine = file.elf_header().e_machine(endian);
    if machine != elf::EM_X86_64 {
        bail!(
            "built for the wrong machine: ELF e_machine {machine} ({}), expected {} ({ARCHITECTURE})",
            machine_name(machine),
            elf::EM_X86_64,
        );
    }
    let max = glibc_versions(&file, binary)?.into_iter().max();
    if let Some(max) = max {
        ensure!(
            max <= MAX_GLIBC,
            "needs glibc {max} (symbol version GLIBC_{max}), but {RUNTIME} has glibc {MAX_GLIBC}: \
             build on an older glibc (or for musl), or avoid the symbol that needs it \
             (`objdump -T bootstrap | grep GLIBC_{max}` names it)"
        );
    }
    Ok(max)
}

fn machine_name(machine: u16) -> &'static str {
    match machine {
        elf::EM_X86_64 => "x86_64",
        elf::EM_AARCH64 => "aarch64",
        elf::EM_386 => "i386",
        elf::EM_ARM => "arm",
        _ => "unknown",
    }
}

/// Every `GLIBC_*` version the binary requires (its `.gnu.version_r`).
fn glibc_versions(
    file: &ElfFile64<'_, object::Endianness>,
    data: &[u8],
) -> Result<Vec<GlibcVersion>> {
    let endian = file.endian();
    let sections = file.elf_section_table();
    let mut versions = Vec::new();
    if let Some((mut needs, link)) = sections.gnu_verneed(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        while let Some((_, mut auxes)) = needs.next()? {
            while let Some(aux) = auxes.next()? {
                let name = String::from_utf8_lossy(aux.name(endian, strings)?);
                versions.extend(GlibcVersion::parse(&name));
            }
        }
    }
    Ok(versions)
}

/// Checks the file mode has an execute bit; Lambda cannot start it otherwise.
pub fn check_executable(mode: u32) -> Result<()> {
    ensure!(
        mode & 0o111 != 0,
        "not executable (mode {:o}): Lambda could not start it as `{ENTRY}`",
        mode & 0o7777
    );
    Ok(())
}

/// The zip Lambda receives: one entry, `bootstrap`, mode 0755, a fixed
/// timestamp and fixed compression, so its bytes depend only on `binary`.
pub fn package(binary: &[u8]) -> Result<Vec<u8>> {
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9))
        .last_modified_time(zip::DateTime::DEFAULT)
        .unix_permissions(ENTRY_MODE);
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file(ENTRY, options)?;
    zip.write_all(binary)?;
    Ok(zip.finish()?.into_inner())
}

/// Reads a zip back and checks it is what Lambda needs; returns the binary.
pub fn check_zip(zip_bytes: &[u8]) -> Result<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip_bytes))?;
    let names = archive.file_names().collect::<Result<Vec<_>, _>>()?;
    ensure!(
        names.len() == 1 && names[0] == ENTRY,
        "the zip must hold exactly `{ENTRY}`, it holds {names:?}"
    );
    let mut entry = archive.by_name(ENTRY)?;
    let mode = entry
        .unix_mode()
        .context("`bootstrap` has no unix mode in the zip")?;
    check_executable(mode).context("`bootstrap` in the zip")?;
    let mut binary = Vec::new();
    entry.read_to_end(&mut binary)?;
    Ok(binary)
}

/// SHA-256 of some bytes, as hex (file names, humans) and as base64 (Lambda's
/// `CodeSha256`, Terraform's `source_code_hash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Digest {
    pub hex: String,
    pub base64: String,
}

pub fn sha256(bytes: &[u8]) -> Sha256Digest {
    let digest = Sha256::digest(bytes);
    Sha256Digest {
        hex: digest.iter().map(|byte| format!("{byte:02x}")).collect(),
        base64: base64::engine::general_purpose::STANDARD.encode(digest),
    }
}

/// `target/lambda/manifest.json`: what the last builds produced, per function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub runtime: String,
    pub architecture: String,
    /// The [`PACKAGING`] that made the zips.
    pub packaging: u32,
    pub functions: BTreeMap<String, Artifact>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            runtime: RUNTIME.to_owned(),
            architecture: ARCHITECTURE.to_owned(),
            packaging: PACKAGING,
            functions: BTreeMap::new(),
        }
    }
}

/// The manifest at `path`, if there is one.
pub fn read_manifest(path: &std::path::Path) -> Result<Option<Manifest>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// One function's zip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The zip, relative to the manifest's directory: `<fn>-<sha256>.zip`.
    pub path: String,
    pub zip_size: u64,
    /// SHA-256 of the zip, hex.
    pub sha256: String,
    /// SHA-256 of the zip, base64: Lambda's `CodeSha256`.
    pub code_sha256: String,
    pub binary_size: u64,
    /// SHA-256 of `bootstrap`, hex: a rebuild with the same binary reuses the zip.
    pub binary_sha256: String,
    /// The highest glibc the binary needs, `none` for a static one.
    pub max_glibc: String,
    /// The cargo profile the binary was built with: `release` (what may be
    /// verified and published) or `watch` (`cargo xtask dev --watch`'s quick
    /// builds, which the local stack alone accepts).
    #[serde(default)]
    pub profile: Profile,
}

/// The cargo profile of a function build.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Small and quick to start (`opt-level = "z"`, fat LTO, one codegen
    /// unit): the only builds `verify` vouches for and `publish` promotes.
    #[default]
    Release,
    /// Quick to compile (no LTO, incremental): `cargo xtask dev --watch`'s
    /// builds, for staging on the local stack only.
    Watch,
}

impl Profile {
    /// Cargo's name for it, which is also its output directory's.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Watch => "watch",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real x86_64 ELF: this test binary.
    fn this_binary() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn glibc_versions_parse_and_order() {
        assert_eq!(GlibcVersion::parse("GLIBC_2.2.5"), Some(GlibcVersion(2, 2)));
        assert_eq!(GlibcVersion::parse("GLIBC_2.34"), Some(GlibcVersion(2, 34)));
        assert_eq!(GlibcVersion::parse("GLIBC_PRIVATE"), None);
        assert_eq!(GlibcVersion::parse("GCC_3.0"), None);
        assert!(GlibcVersion(2, 35) > MAX_GLIBC && GlibcVersion(2, 9) < MAX_GLIBC);
    }

    #[test]
    fn a_host_binary_passes_and_reports_its_glibc() {
        let max = check_elf(&this_binary())
            .unwrap()
            .expect("dynamically linked");
        assert!(max >= GlibcVersion(2, 2));
    }

    #[test]
    fn refuses_another_machine() {
        let mut binary = this_binary();
        // e_machine is the u16 at offset 18 of the ELF header.
        binary[18..20].copy_from_slice(&elf::EM_AARCH64.to_le_bytes());
        let err = check_elf(&binary).unwrap_err().to_string();
        assert!(
            err.contains("wrong machine") && err.contains("aarch64"),
            "{err}"
        );
    }

    #[test]
    fn refuses_what_is_not_an_elf() {
        for bytes in [&b"#!/bin/sh\necho hi\n"[..], &[], &b"\x7fELF"[..]] {
            assert!(check_elf(bytes).is_err());
        }
    }

    /// This binary, made to require glibc 9.x: every `GLIBC_2.` version name
    /// in its string table renamed to `GLIBC_9.` (same length, so every offset
    /// stays valid), as a binary built against a too-new glibc would be.
    #[test]
    fn refuses_a_binary_needing_a_newer_glibc() {
        let mut binary = this_binary();
        let mut renamed = 0;
        for at in 0..binary.len() - 8 {
            if &binary[at..at + 8] == b"GLIBC_2." {
                binary[at + 6] = b'9';
                renamed += 1;
            }
        }
        assert!(renamed > 0, "this test binary names no glibc version");
        let err = check_elf(&binary).unwrap_err().to_string();
        assert!(
            err.contains("needs glibc 9.") && err.contains("has glibc 2.34"),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_file_without_exec_bit() {
        assert!(check_executable(0o755).is_ok());
        assert!(check_executable(0o100).is_ok());
        let err = check_executable(0o644).unwrap_err().to_string();
        assert!(err.contains("not executable (mode 644)"), "{err}");
    }

    #[test]
    fn zips_depend_only_on_the_binary() {
        let binary = b"\x7fELF pretend".repeat(1000);
        let first = package(&binary).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(
            package(&binary).unwrap(),
            first,
            "same input, same bytes, at any time"
        );
        assert_ne!(package(b"other").unwrap(), first);
        assert_eq!(check_zip(&first).unwrap(), binary);
    }

    #[test]
    fn zip_entry_is_bootstrap_0755_at_1980() {
        let bytes = package(b"binary").unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        let entry = archive.by_index(0).unwrap();
        assert_eq!(entry.name().unwrap(), ENTRY);
        assert_eq!(entry.unix_mode().unwrap() & 0o777, 0o755);
        assert_eq!(entry.last_modified(), Some(zip::DateTime::DEFAULT));
    }

    #[test]
    fn check_zip_refuses_a_wrong_zip() {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().unix_permissions(0o644);
        zip.start_file(ENTRY, options).unwrap();
        zip.write_all(b"x").unwrap();
        let not_executable = zip.finish().unwrap().into_inner();
        let err = format!("{:#}", check_zip(&not_executable).unwrap_err());
        assert!(err.contains("not executable"), "{err}");

        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("main", SimpleFileOptions::default())
            .unwrap();
        let wrong_name = zip.finish().unwrap().into_inner();
        assert!(
            check_zip(&wrong_name)
                .unwrap_err()
                .to_string()
                .contains("exactly `bootstrap`")
        );
    }

    /// Guards [`PACKAGING`]: if this fails, `package` now writes other bytes
    /// for the same binary (a code change, a zip or deflate upgrade). Bump
    /// `PACKAGING`, then update the hash here.
    #[test]
    fn packaging_is_stable() {
        let zip = package(&b"\x7fELF a pretend binary\n".repeat(100)).unwrap();
        assert_eq!(
            (PACKAGING, sha256(&zip).hex.as_str()),
            (
                1,
                "b5ef7860152cce6bf4a8faf3b523aef240bbd52c0f5e7d46da318baca1870352"
            ),
            "package() output changed: bump PACKAGING and update this test"
        );
    }

    #[test]
    fn sha256_matches_known_values() {
        let digest = sha256(b"abc");
        assert_eq!(
            digest.hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest.base64,
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
