//! What the xtask integration tests share: a local stack of the test's own,
//! driven through the real `cargo xtask` binary.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// A local stack of the test's own: `cargo xtask` with its own local and
/// artifacts directories. Stops its emulator when dropped.
pub struct Stack {
    pub local: PathBuf,
    pub artifacts: PathBuf,
    /// More environment for every command (`XTASK_WORKSPACE`, say).
    pub env: Vec<(String, PathBuf)>,
}

impl Stack {
    pub fn new(name: &str) -> Stack {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Stack {
            local: root.join("local"),
            artifacts: root.join("lambda"),
            env: Vec::new(),
        }
    }

    pub fn xtask(&self, args: &[&str]) -> Output {
        self.xtask_with(args, &[])
    }

    /// `cargo xtask ARGS`, to run: with the stack's directories and
    /// environment, and none of the developer's own AWS or Terraform
    /// settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        for key in foreign_env() {
            command.env_remove(key);
        }
        command
            .args(args)
            .env("XTASK_LOCAL_DIR", &self.local)
            .env("XTASK_ARTIFACTS_DIR", &self.artifacts)
            .envs(self.env.iter().cloned());
        command
    }

    /// `cargo xtask ARGS` with `env` besides the stack's own.
    pub fn xtask_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let output = self
            .command(args)
            .envs(env.iter().copied())
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
        self.ok_with(args, &[])
    }

    /// [`Stack::ok`] with `env` besides the stack's own.
    pub fn ok_with(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let output = self.xtask_with(args, env);
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

/// Builds every function into the stack's artifacts directory with the
/// real workspace (not a scratch copy the stack may point at), where the
/// release build is cached.
pub fn build_in_real_workspace(stack: &Stack) {
    let built = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["build", "--out-dir", stack.artifacts.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// The variables of the developer's own set-up that would steer a test's
/// commands (AWS profiles and endpoints, Terraform's extra arguments, the
/// lock timeout): removed from every command the tests run.
pub fn foreign_env() -> impl Iterator<Item = std::ffi::OsString> {
    std::env::vars_os().map(|(key, _)| key).filter(|key| {
        let key = key.to_string_lossy();
        key.starts_with("AWS_") || key.starts_with("TF_CLI_ARGS") || key == "XTASK_LOCK_TIMEOUT"
    })
}

/// A copy of the workspace's sources (not its target dir, nor Terraform's
/// working files) at `to`.
pub fn copy_workspace(to: &Path) {
    fn copy(from: &Path, to: &Path) {
        if from.is_dir() {
            let name = from.file_name().unwrap().to_string_lossy();
            if name == "target" || name.starts_with(".terraform") {
                return;
            }
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                copy(&entry.path(), &to.join(entry.file_name()));
            }
        } else if !from.to_string_lossy().contains(".tfstate")
            && from.extension().is_none_or(|ext| ext != "tfbackend")
        {
            std::fs::copy(from, to).unwrap();
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
        "lambdas",
        "events",
        "terraform",
        "xtask",
    ] {
        copy(&root.join(entry), &to.join(entry));
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.xtask(&["emulator", "stop"]);
    }
}

/// `function`'s built bootstrap packaged again with `files` (name,
/// contents) beside it, which gives the zip another `CodeSha256` (all
/// Lambda and the release flow see of a change) without another release
/// build; the zip is written beside the others, and its manifest entry
/// returned (the manifest itself is left as it is).
pub fn repackage(artifacts: &Path, function: &str, files: &[(&str, &str)]) -> Value {
    use std::io::{Read, Write};
    use zip::write::SimpleFileOptions;
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(artifacts.join("manifest.json")).unwrap()).unwrap();
    let mut entry = manifest["functions"][function].clone();
    let original = std::fs::read(artifacts.join(entry["path"].as_str().unwrap())).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(original)).unwrap();
    let mut bootstrap = Vec::new();
    archive
        .by_name("bootstrap")
        .unwrap()
        .read_to_end(&mut bootstrap)
        .unwrap();
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut bytes);
    let options = SimpleFileOptions::default().unix_permissions(0o755);
    zip.start_file("bootstrap", options).unwrap();
    zip.write_all(&bootstrap).unwrap();
    for (name, contents) in files {
        zip.start_file(*name, options.unix_permissions(0o644))
            .unwrap();
        zip.write_all(contents.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
    let bytes = bytes.into_inner();
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let path = format!("{function}-{hex}.zip");
    std::fs::write(artifacts.join(&path), &bytes).unwrap();
    use base64::Engine;
    entry["path"] = serde_json::json!(path);
    entry["zip_size"] = serde_json::json!(bytes.len());
    entry["sha256"] = serde_json::json!(hex);
    entry["code_sha256"] =
        serde_json::json!(base64::engine::general_purpose::STANDARD.encode(digest));
    entry
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
        .map(|(route, function)| format!("\n    \"{route}\" = {{ function = \"{function}\" }}"))
        .collect();
    format!("locals {{\n{}{added}\n  }}\n}}\n", &api[start..end])
}

/// `cargo xtask dev` running in the background; interrupted when dropped.
pub struct Dev {
    child: Child,
    /// `127.0.0.1:PORT`
    pub address: String,
    log: std::path::PathBuf,
}

impl Dev {
    pub fn start(stack: &Stack) -> Dev {
        Dev::start_with(stack, &[])
    }

    /// `cargo xtask dev --no-build --port 0 ARGS`.
    pub fn start_with(stack: &Stack, args: &[&str]) -> Dev {
        let mut command = vec!["dev", "--no-build", "--port", "0"];
        command.extend_from_slice(args);
        Dev::launch(stack, &command, &[])
    }

    /// `cargo xtask ARGS` (a command that serves the API and prints where),
    /// with `env` besides the stack's.
    pub fn launch(stack: &Stack, args: &[&str], env: &[(&str, &str)]) -> Dev {
        let log = stack
            .local
            .parent()
            .unwrap()
            .join(format!("{}.log", args[0]));
        let mut child = stack
            .command(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!(
                    "cargo xtask {} stopped before serving:\n{}",
                    args[0],
                    std::fs::read_to_string(&log).unwrap()
                );
            };
            println!("{}: {line}", args[0]);
            if let Some(rest) = line.split("API on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // With --watch, until it watches: a change saved after that is seen.
        if args.contains(&"--watch") {
            let watching = lines.by_ref().map_while(Result::ok).any(|line| {
                println!("dev: {line}");
                line.starts_with("watching ")
            });
            assert!(watching, "cargo xtask dev --watch stopped before watching");
        }
        // Keep reading what it prints, so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Dev {
            child,
            address,
            log,
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.call_with(method, path, &[], body)
    }

    /// [`Dev::call`] with more headers (a `Host` among them replaces the
    /// server's address).
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let body = body.unwrap_or_default();
        let host = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map_or(self.address.as_str(), |(_, value)| value);
        let headers: String = headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.raw(request.as_bytes())
    }

    pub fn raw(&self, request: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Reply {
            status,
            head: head.to_ascii_lowercase(),
            body: serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
        }
    }

    /// `count` requests for `path` at once; their replies.
    pub fn concurrently(&self, count: usize, path: &str) -> Vec<Reply> {
        std::thread::scope(|scope| {
            let calls: Vec<_> = (0..count)
                .map(|_| scope.spawn(|| self.call("GET", path, None)))
                .collect();
            calls.into_iter().map(|call| call.join().unwrap()).collect()
        })
    }

    /// The lines of its log containing `pattern`.
    pub fn lines(&self, pattern: &str) -> Vec<String> {
        self.log()
            .split_inclusive('\n')
            // Whole lines only: the last may be being written.
            .filter_map(|line| line.strip_suffix('\n'))
            .filter(|line| line.contains(pattern))
            .map(str::to_owned)
            .collect()
    }

    /// Waits (up to `timeout`) for a line containing `pattern` beyond the
    /// first `seen` such lines; that line.
    pub fn wait_for_line(
        &self,
        pattern: &str,
        seen: usize,
        timeout: std::time::Duration,
    ) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines(pattern).get(seen) {
                return line.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no new line with `{pattern}` within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// What it has written to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `METHOD path` must answer `status`; its JSON body.
    #[track_caller]
    pub fn check(&self, method: &str, path: &str, body: Option<&str>, status: u16) -> Value {
        let reply = self.call(method, path, body);
        assert_eq!(
            reply.status, status,
            "{method} {path} answered {}: {}",
            reply.status, reply.body
        );
        assert!(reply.head.contains("content-type: application/json"));
        assert!(reply.head.contains("x-amzn-requestid: "));
        reply.body
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // Interrupted as a user would (Ctrl-C), so it stops its functions.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        eprintln!(
            "--- cargo xtask's log ({}) ---\n{}",
            self.log.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Value,
}

/// A runtime and an SDK configuration for the stack's emulator.
pub fn emulator_sdk(stack: &Stack) -> (tokio::runtime::Runtime, aws_config::SdkConfig) {
    emulator_sdk_as(stack, "local", "local")
}

/// [`emulator_sdk`] with an access key of the emulator's IAM.
pub fn emulator_sdk_as(
    stack: &Stack,
    key: &str,
    secret: &str,
) -> (tokio::runtime::Runtime, aws_config::SdkConfig) {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let record: Value =
        serde_json::from_slice(&std::fs::read(stack.local.join("emulator.json")).unwrap()).unwrap();
    let endpoint = record["endpoint"].as_str().unwrap().to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = runtime.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_lambda::config::Credentials::new(
                key, secret, None, None, "test",
            ))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(Provider::Rustls(CryptoMode::Ring))
                    .build_https(),
            )
            .load(),
    );
    (runtime, config)
}
