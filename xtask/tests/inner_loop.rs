//! The inner loop, on a scratch copy of this workspace (so the test may add
//! crates and edit sources) with a stack and a target directory of its own:
//!
//! - `cargo xtask new` refuses what it must, changing nothing, then
//!   scaffolds a function whose own tests pass, which builds, applies,
//!   passes `verify` and is published;
//! - `cargo xtask dev --watch` takes an edit to staging and not to prod,
//!   keeps the old code serving through an edit that does not compile,
//!   recovers with the next save, and picks up a second new function (a
//!   change to terraform/ too); `verify` refuses the watch builds, so
//!   `publish` cannot promote them.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{Dev, Stack, build_in_real_workspace, copy_workspace};

/// How long a watch cycle may take here: the first compiles the
/// dependencies in the watch profile.
const CYCLE: Duration = Duration::from_secs(300);

/// Every file under `root` (but `target/`) and its contents.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "target" {
                    todo.push(path);
                }
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// `cargo ARGS` in the scratch workspace, which must succeed. Its output
/// is kept (and shown on failure), so its test summary is not mistaken for
/// this binary's.
fn cargo(workspace: &Path, target: &Path, args: &[&str]) {
    let output = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Replaces `from` with `to` in a file of the scratch workspace.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no `{from}`", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn new_functions_and_watched_edits_reach_staging_not_prod() {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let workspace = scratch.join("inner-loop-workspace");
    let target = scratch.join("inner-loop-target");
    copy_workspace(&workspace);
    let mut stack = Stack::new("inner-loop");
    stack
        .env
        .push(("XTASK_WORKSPACE".to_owned(), workspace.clone()));
    stack
        .env
        .push(("CARGO_TARGET_DIR".to_owned(), target.clone()));

    // The functions that are not new, built in release by the real
    // workspace (their build is cached there).
    build_in_real_workspace(&stack);

    // Refused, changing nothing.
    let before = snapshot(&workspace);
    for (args, why) in [
        (
            &["new", "status", "--route", "GET /x"][..],
            "`status` exists already",
        ),
        (
            &["new", "Hello", "--route", "GET /x"],
            "invalid function name `Hello`",
        ),
        (
            &["new", "tokio", "--route", "GET /x"],
            "a package named `tokio` exists already",
        ),
        (
            &["new", "hello", "--route", "GET /status"],
            "route `GET /status` exists already",
        ),
        (
            &["new", "hello", "--route", "GET /user/{name}"],
            "so name it {id}",
        ),
        (
            &["new", "hello", "--route", "FETCH /hello"],
            "unknown method `FETCH`",
        ),
        (
            &["new", "hello", "--route", "GET /a/b/c/d"],
            "is 4 segments deep",
        ),
        (&["new", "hello"], "--route"),
    ] {
        let output = stack.xtask(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    let dry = stack.ok(&["new", "hello", "--route", "GET /hello/{name}", "--dry-run"]);
    assert!(dry.contains("lambdas/hello/src/main.rs"), "{dry}");
    assert!(
        snapshot(&workspace) == before,
        "a refused `new` changed files"
    );

    // Scaffolded: its own tests pass, it is formatted, and it is complete.
    let made = stack.ok(&[
        "new",
        "hello",
        "--route",
        "GET /hello/{name}",
        "--route",
        "POST /hello",
    ]);
    assert!(made.contains("new function `hello`"), "{made}");
    let api = std::fs::read_to_string(workspace.join("terraform/api.tf")).unwrap();
    assert!(
        api.lines().any(
            |line| line.trim_start().starts_with("\"GET /hello/{name}\" ")
                && line.ends_with(" = { function = \"hello\" }")
        ),
        "{api}"
    );
    let lock = std::fs::read_to_string(workspace.join("Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"hello\""));
    cargo(&workspace, &target, &["fmt", "--all", "--", "--check"]);
    cargo(&workspace, &target, &["test", "--locked", "-p", "hello"]);
    let again = stack.xtask(&["new", "hello", "--route", "GET /other"]);
    assert!(!again.status.success());

    // It builds, applies, passes verify and is published.
    stack.ok(&[
        "build",
        "hello",
        "--out-dir",
        stack.artifacts.to_str().unwrap(),
    ]);
    stack.ok(&["emulator", "start", "--port", "0"]);
    stack.ok(&["apply"]);
    let verified = stack.ok(&["verify"]);
    assert!(verified.contains("hello: GET /hello/{name}"), "{verified}");
    assert!(
        verified.contains("hello: POST /hello with invalid JSON"),
        "{verified}"
    );
    stack.ok(&["publish"]);

    let dev = Dev::start_with(&stack, &["--watch"]);
    let answer = |stage: &str| dev.check("GET", &format!("/{stage}/hello/ada"), None, 200);
    assert_eq!(
        answer("staging"),
        json!({"function": "hello", "route": "GET /hello/{name}", "stage": "staging", "path": {"name": "ada"}})
    );
    assert_eq!(answer("prod")["function"], "hello");
    let posted = dev.check("POST", "/staging/hello", Some(r#"{"n": 1}"#), 200);
    assert_eq!(posted["body"], json!({"n": 1}));
    dev.check("POST", "/staging/hello", Some("[1]"), 400);

    // A saved edit: staging serves it, prod keeps version 1.
    let main = workspace.join("lambdas/hello/src/main.rs");
    let cycles = "==> watch: ";
    edit(
        &main,
        "const FUNCTION: &str = \"hello\";",
        "const FUNCTION: &str = \"hello v2\";",
    );
    let line = dev.wait_for_line(cycles, 0, CYCLE);
    assert!(
        line.contains("lambdas/hello/src/main.rs: compiled hello in ")
            && line.contains("applied hello's code in ")
            && line.contains("staging serves hello "),
        "{line}"
    );
    assert_eq!(answer("staging")["function"], "hello v2");
    assert_eq!(answer("prod")["function"], "hello");
    let status = stack.ok(&["status"]);
    let row = status.lines().find(|l| l.starts_with("hello ")).unwrap();
    // function, $LATEST, staging (alias, code), prod (version, code), pin
    assert_eq!(
        row.split_whitespace().nth(4),
        Some("1"),
        "prod moved: {status}"
    );

    // An edit that does not compile: said so, and v2 keeps serving.
    let v2 = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{v2}\nfn broken( {{\n")).unwrap();
    let line = dev.wait_for_line(cycles, 1, CYCLE);
    assert!(
        line.contains("hello does not build") && line.contains("staging keeps serving"),
        "{line}"
    );
    assert_eq!(answer("staging")["function"], "hello v2");
    // The next good save recovers.
    std::fs::write(&main, v2.replace("\"hello v2\"", "\"hello v3\"")).unwrap();
    let line = dev.wait_for_line(cycles, 2, CYCLE);
    assert!(line.contains("staging serves hello "), "{line}");
    assert_eq!(answer("staging")["function"], "hello v3");
    assert_eq!(answer("prod")["function"], "hello");

    // An apply that fails (a broken file in the stack's Terraform directory)
    // leaves staging on v3; saving again, though the build is then the one
    // already packaged, applies it once the apply can succeed.
    let broken = stack.local.join("terraform/broken_override.tf");
    std::fs::write(&broken, "resource {\n").unwrap();
    let v4 = v2.replace("\"hello v2\"", "\"hello v4\"");
    std::fs::write(&main, &v4).unwrap();
    let line = dev.wait_for_line(cycles, 3, CYCLE);
    assert!(
        line.contains("not applied, or not served; the next change retries"),
        "{line}"
    );
    assert!(dev.log().contains("terraform apply failed"));
    assert_eq!(answer("staging")["function"], "hello v3");
    std::fs::remove_file(&broken).unwrap();
    std::fs::write(&main, &v4).unwrap();
    let line = dev.wait_for_line(cycles, 4, CYCLE);
    assert!(line.contains("applied hello's code"), "{line}");
    assert_eq!(answer("staging")["function"], "hello v4");
    // The function itself says it runs a watch build.
    let state = stack.state();
    let function = state
        .iter()
        .find(|resource| resource["address"] == "aws_lambda_function.this[\"hello\"]")
        .unwrap();
    assert_eq!(
        function["values"]["description"],
        "watch build (cargo xtask dev --watch): never published"
    );

    // A new function while watching (crate, and routes in terraform/):
    // applied whole, served on staging; prod's API revision has no route.
    stack.ok(&["new", "bye", "--route", "GET /bye"]);
    let line = dev.wait_for_line("staging serves bye ", 0, CYCLE);
    assert!(line.contains("applied everything"), "{line}");
    assert_eq!(
        dev.check("GET", "/staging/bye", None, 200)["function"],
        "bye"
    );
    dev.check("GET", "/prod/bye", None, 403);
    assert_eq!(answer("prod")["function"], "hello");

    // Watch builds are never vouched for: verify fails, publish refuses.
    let refused = stack.xtask(&["verify"]);
    assert!(!refused.status.success());
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(
        stdout.contains("a watch build (`cargo xtask dev --watch`)"),
        "{stdout}"
    );
    let publish = stack.xtask(&["publish"]);
    assert!(!publish.status.success());
    assert_eq!(answer("prod")["function"], "hello");
    drop(dev);

    // Everything the loop applied is what Terraform would: nothing to do.
    let plan = stack.xtask(&["tf", "--", "plan", "-input=false", "-detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0));
}
