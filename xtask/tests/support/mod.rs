//! What the xtask integration tests share: a local stack of the test's own,
//! driven through the real `cargo xtask` binary.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A local stack of the test's own: `cargo xtask` with its own local and
/// artifacts directories. Stops its emulator when dropped.
pub struct Stack {
    pub local: PathBuf,
    pub artifacts: PathBuf,
}

impl Stack {
    pub fn new(name: &str) -> Stack {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Stack {
            local: root.join("local"),
            artifacts: root.join("lambda"),
        }
    }

    pub fn xtask(&self, args: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("XTASK_LOCAL_DIR", &self.local)
            .env("XTASK_ARTIFACTS_DIR", &self.artifacts)
            .output()
            .unwrap();
        eprintln!(
            "$ cargo xtask {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// `cargo xtask ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.xtask(args);
        assert!(
            output.status.success(),
            "cargo xtask {} failed ({}):\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    pub fn terraform_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["tf", "--"];
        all.extend(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// What `terraform plan` would do: each changed resource's address and actions.
    pub fn plan(&self) -> BTreeSet<(String, String)> {
        let plan = self.local.join("test.tfplan");
        let plan = plan.to_str().unwrap();
        self.ok(&["tf", "--", "plan", "-input=false", &format!("-out={plan}")]);
        let plan = self.terraform_json(&["show", "-json", plan]);
        plan["resource_changes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|change| {
                let actions: Vec<&str> = change["change"]["actions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|action| action.as_str().unwrap())
                    .collect();
                (actions != ["no-op"] && actions != ["read"]).then(|| {
                    (
                        change["address"].as_str().unwrap().to_owned(),
                        actions.join(","),
                    )
                })
            })
            .collect()
    }

    /// The applied resources, by address.
    pub fn state(&self) -> Vec<Value> {
        let state = self.terraform_json(&["show", "-json"]);
        state["values"]["root_module"]["resources"]
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.xtask(&["emulator", "stop"]);
    }
}

pub fn edit_manifest(artifacts: &Path, edit: impl FnOnce(&mut Value)) {
    let path = artifacts.join("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

/// An override of `local.routes`: the table of `terraform/api.tf` plus `routes`.
pub fn with_routes(routes: &[(&str, &str)]) -> String {
    let api = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../terraform/api.tf"))
        .unwrap();
    let start = api
        .find("  routes = {\n")
        .expect("api.tf has a routes table");
    let end = start + api[start..].find("\n  }\n").expect("the routes table ends");
    let added: String = routes
        .iter()
        .map(|(route, function)| format!("\n    \"{route}\" = \"{function}\""))
        .collect();
    format!("locals {{\n{}{added}\n  }}\n}}\n", &api[start..end])
}
