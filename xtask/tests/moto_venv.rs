//! The first run on a stock Debian or Ubuntu, whose `python3` refuses pip
//! ("externally-managed-environment", PEP 668): xtask makes a virtualenv of
//! its own, installs the pinned moto there, serves the emulator from it, and
//! reuses it the next time. Against the distribution's own Python (Debian's
//! `python3` package), with the real pip and PyPI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A Python whose pip is externally managed and that has no moto.
fn externally_managed_python() -> String {
    let marked = "import os, sys, sysconfig; \
                  sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')) else 1)";
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", marked])
                .status()
                .is_ok_and(|status| status.success())
        })
        .expect(
            "no externally managed Python (PEP 668) to test with: on Debian or Ubuntu, \
             `apt-get install python3 python3-pip python3-venv` (.ci/run does)",
        );
    assert!(
        !has_moto(python),
        "{python} has moto already, so it cannot show a first run"
    );
    python.to_owned()
}

fn has_moto(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import moto"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

struct Run {
    root: PathBuf,
    python: String,
}

impl Run {
    fn xtask(&self, args: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("XTASK_LOCAL_DIR", self.root.join("local"))
            .env("XTASK_MOTO_VENV", self.venv())
            .env("MOTO_PYTHON", &self.python)
            .output()
            .unwrap();
        eprintln!(
            "$ cargo xtask {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn venv(&self) -> PathBuf {
        self.root.join("venv")
    }

    /// The interpreter of the running emulator's process.
    fn emulator_python(&self) -> PathBuf {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.root.join("local/emulator.json")).unwrap())
                .unwrap();
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", record["pid"])).unwrap();
        let first = cmdline.split(|&byte| byte == 0).next().unwrap();
        PathBuf::from(String::from_utf8_lossy(first).into_owned())
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.xtask(&["emulator", "stop"]);
    }
}

#[test]
fn an_externally_managed_python_gets_a_virtualenv_of_our_own() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("moto-venv");
    let _ = std::fs::remove_dir_all(&root);
    let run = Run {
        root,
        python: externally_managed_python(),
    };

    let first = run.xtask(&["emulator", "start", "--port", "0"]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(
        stderr.contains("is externally managed (PEP 668): installing moto into a virtualenv"),
        "{stderr}"
    );
    let venv_python = run.venv().join("bin/python");
    assert!(has_moto(venv_python.to_str().unwrap()));
    assert_eq!(run.emulator_python(), venv_python);
    let status = run.xtask(&["emulator", "status"]);
    assert!(String::from_utf8_lossy(&status.stdout).starts_with("running at http://127.0.0.1:"));
    // Nothing was forced into the distribution's Python.
    assert!(!has_moto(&run.python));
    run.xtask(&["emulator", "stop"]);

    // The next run reuses the virtualenv: nothing is installed again.
    let second = run.xtask(&["emulator", "start", "--port", "0"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(!stderr.contains("installing"), "{stderr}");
    assert_eq!(run.emulator_python(), venv_python);
}
