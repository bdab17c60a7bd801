//! s3s-fs: an S3 server over a directory that checks SigV4 signatures,
//! presigned URLs included (their expiry too), where moto accepts any. A
//! test starts one of its own on a free loopback port, with known keys and
//! a fresh directory; it is killed when the [`S3sFs`] drops.
//!
//! The binary is not a dependency (it is a program, installed once):
//! `$S3S_FS`, else `target/tools/bin/s3s-fs` of the workspace, put there by
//! [`INSTALL`]. Without it, [`S3sFs::start`] fails the test saying so.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::config::retry::RetryConfig;

use crate::moto::{free_port, sdk_config_at};

/// How to install the binary where [`binary`] looks (0.14.1: the newest
/// release whose `rust-version` the workspace's toolchain meets; the
/// binary is behind the crate's `binary` feature).
pub const INSTALL: &str =
    "cargo install s3s-fs --version 0.14.1 --locked --features binary --root target/tools";

/// The access key every test server takes (with [`SECRET_KEY`]).
pub const ACCESS_KEY: &str = "AKIAS3SFSTEST";
pub const SECRET_KEY: &str = "s3s-fs-test-secret-key";

/// The workspace's `target/tools/bin/s3s-fs`.
fn installed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/s3s-fs")
}

/// The s3s-fs binary: `$S3S_FS`, else the workspace's installed one.
/// Panics (failing the test) when there is none, saying how to install it.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(installed);
    assert!(
        path.is_file(),
        "no s3s-fs at {} (set $S3S_FS to one, or install it from the workspace root with `{INSTALL}`)",
        path.display()
    );
    path
}

/// A running s3s-fs, killed (and its directory removed) on drop.
pub struct S3sFs {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Where it keeps the buckets (one directory each).
    pub root: PathBuf,
    server: Child,
}

impl S3sFs {
    /// Starts s3s-fs on a free loopback port over a fresh directory, with
    /// [`ACCESS_KEY`] and [`SECRET_KEY`]. Panics if it does not listen
    /// within 30 s, with its output.
    pub fn start() -> S3sFs {
        let binary = binary();
        let port = free_port();
        let root = std::env::temp_dir().join(format!("s3s-fs-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let log_path = root.with_extension("log");
        let mut server = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log_path).unwrap())
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(&log_path)
                    .unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(status) = server.try_wait().unwrap() {
                panic!("s3s-fs exited ({status}) before listening:\n{}", log());
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on 127.0.0.1:{port} within 30 s:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        S3sFs {
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
            server,
        }
    }

    /// The SDK configuration of a function whose endpoint is this server,
    /// with its keys.
    pub fn sdk_config(&self) -> SdkConfig {
        let credentials = Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "s3s-fs");
        sdk_config_at(&self.endpoint, credentials, RetryConfig::disabled())
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_file(self.root.with_extension("log"));
    }
}
