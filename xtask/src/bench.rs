//! `cargo xtask bench`: the inner loop, timed. On a local stack of its own
//! (`target/bench/`), `cargo xtask dev --watch` serves; the bench saves an
//! edit to a function's source and times until staging answers with it,
//! for `status` and for `users`, and reads the watch cycle's own line for
//! where the time went (compile, package, apply). The files it edits are put
//! back as they were, however it ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use xshell::{Shell, cmd};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Timed saves per function (after one untimed save that warms the watch profile up).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Instead: each function's cold start on the local host (the release
    /// build's Init Duration, median of this many cold starts).
    #[arg(long, value_name = "RUNS", value_parser = clap::value_parser!(u32).range(1..=100))]
    cold_starts: Option<u32>,
}

/// An edit the bench saves, and how staging shows it is served.
struct Edit {
    function: &'static str,
    file: &'static str,
    /// Text of the file the edit replaces.
    anchor: &'static str,
    /// What replaces it; `{n}` is the save's number.
    replacement: &'static str,
    /// The request that shows the edit: `GET` this path on staging.
    probe: &'static str,
    /// The text the answer contains once the edit is served.
    served: &'static str,
    /// How long the loop may take, the goal the README states.
    goal: Duration,
}

const EDITS: [Edit; 2] = [
    Edit {
        function: "status",
        file: "lambdas/status/src/main.rs",
        anchor: r#""GET /health" => Ok(json!({ "status": "ok" })),"#,
        replacement: r#""GET /health" => Ok(json!({ "status": "ok", "bench": {n} })),"#,
        probe: "/health",
        served: r#""bench":{n}"#,
        goal: Duration::from_secs(15),
    },
    Edit {
        function: "users",
        file: "lambdas/users/src/lib.rs",
        anchor: r#"format!("user `{id}` not found")"#,
        replacement: r#"format!("user `{id}` not found (bench {n})")"#,
        probe: "/user/bench0001",
        served: "(bench {n})",
        goal: Duration::from_secs(20),
    },
];

/// The files as they were, written back when dropped.
struct Restore(Arc<Mutex<Vec<(PathBuf, String)>>>);

impl Restore {
    fn now(&self) {
        for (path, text) in self.0.lock().expect("restore lock").drain(..) {
            let _ = std::fs::write(path, text);
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        self.now();
    }
}

/// One timed save.
struct Sample {
    function: &'static str,
    served_after: Duration,
    /// compile, package, apply, as the cycle's line says.
    phases: [f64; 3],
}

pub fn run(sh: &Shell, args: BenchArgs) -> Result<()> {
    if let Some(runs) = args.cold_starts {
        return cold_starts(sh, runs);
    }
    let root = sh.current_dir();
    for edit in &EDITS {
        let file = edit.file;
        let clean = cmd!(sh, "git diff --quiet HEAD -- {file}")
            .quiet()
            .run()
            .is_ok();
        ensure!(
            clean,
            "{file} has changes: the bench edits it and puts it back, so commit or stash them first"
        );
    }
    let bench = root.join("target/bench");
    let xtask = std::env::current_exe()?;
    let env = [
        ("XTASK_LOCAL_DIR", bench.join("local")),
        ("XTASK_ARTIFACTS_DIR", bench.join("lambda")),
    ];
    let xtask_cmd = |args: &[&str]| -> Result<()> {
        let status = Command::new(&xtask)
            .args(args)
            .envs(env.iter().cloned())
            .status()?;
        ensure!(status.success(), "cargo xtask {} failed", args.join(" "));
        Ok(())
    };
    let out_dir = bench.join("lambda").display().to_string();
    xtask_cmd(&["build", "--out-dir", &out_dir])?;
    xtask_cmd(&["emulator", "start", "--port", "0"])?;

    let originals = Arc::new(Mutex::new(Vec::new()));
    let restore = Restore(originals.clone());
    {
        // Ctrl-C: put the files back and stop the bench's emulator.
        let originals = Restore(originals.clone());
        let xtask = xtask.clone();
        let env = env.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            originals.now();
            let _ = Command::new(&xtask)
                .args(["emulator", "stop"])
                .envs(env.iter().cloned())
                .status();
            std::process::exit(130);
        });
    }
    let log_path = bench.join("dev.log");
    let mut dev = Command::new(&xtask)
        .args(["dev", "--watch", "--no-build", "--port", "0"])
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let measured = (|| {
        let address = wait_serving(&mut dev, &log_path)?;
        let mut samples = Vec::new();
        for edit in &EDITS {
            let path = root.join(edit.file);
            let original = std::fs::read_to_string(&path)?;
            ensure!(
                original.contains(edit.anchor),
                "{} no longer has `{}`: update the bench's edit",
                edit.file,
                edit.anchor
            );
            originals
                .lock()
                .expect("restore lock")
                .push((path.clone(), original.clone()));
            for save in 0..=args.runs {
                let n = format!("{}", 100 + save);
                let edited = original.replace(edit.anchor, &edit.replacement.replace("{n}", &n));
                let cycles = cycle_lines(&log_path).len();
                std::fs::write(&path, edited)?;
                let saved = Instant::now();
                let served = edit.served.replace("{n}", &n);
                loop {
                    let body = get(&address, &format!("/staging{}", edit.probe))?;
                    if body.contains(&served) {
                        break;
                    }
                    if saved.elapsed() > Duration::from_secs(300) {
                        bail!(
                            "staging did not serve the edit to {} within 5 minutes; see {}",
                            edit.function,
                            log_path.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let served_after = saved.elapsed();
                let line = wait_line(&log_path, cycles)?;
                eprintln!(
                    "{} save {save}{}: served after {:.1} s ({line})",
                    edit.function,
                    if save == 0 { " (warm-up, untimed)" } else { "" },
                    served_after.as_secs_f64()
                );
                if save > 0 {
                    samples.push(Sample {
                        function: edit.function,
                        served_after,
                        phases: phases(&line),
                    });
                }
            }
        }
        Ok(samples)
    })();
    let _ = Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status();
    let _ = dev.wait();
    drop(restore);
    let _ = xtask_cmd(&["emulator", "stop"]);
    let samples = measured?;
    print_table(&samples, args.runs);
    Ok(())
}

fn wait_serving(dev: &mut Child, log: &Path) -> Result<String> {
    let stdout = dev.stdout.take().context("dev's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut address = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.split("API on http://").nth(1) {
            address = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.starts_with("watching") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    address.with_context(|| {
        format!(
            "cargo xtask dev stopped before serving: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

fn cycle_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with("==> watch: "))
        .map(str::to_owned)
        .collect()
}

/// The first watch cycle's line after the first `seen`.
fn wait_line(log: &Path, seen: usize) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(line) = cycle_lines(log).get(seen) {
            return Ok(line.clone());
        }
        ensure!(
            Instant::now() < deadline,
            "no watch cycle line in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Seconds of compile, package and apply in a cycle's line.
fn phases(line: &str) -> [f64; 3] {
    let after = |marker: &str| -> f64 {
        line.split(marker)
            .nth(1)
            .and_then(|rest| rest.split(" in ").nth(1))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let packaged = line
        .split("packaged in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(f64::NAN);
    [after("compiled "), packaged, after("applied ")]
}

/// `GET path` on the gateway: the answer's body.
fn get(address: &str, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(address)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

fn print_table(samples: &[Sample], runs: u32) {
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let mut rows = Vec::new();
    for edit in &EDITS {
        let mine: Vec<&Sample> = samples
            .iter()
            .filter(|sample| sample.function == edit.function)
            .collect();
        let served: Vec<f64> = mine
            .iter()
            .map(|sample| sample.served_after.as_secs_f64())
            .collect();
        let phase = |index: usize| median(mine.iter().map(|s| s.phases[index]).collect());
        let (min, max) = served
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        rows.push(vec![
            edit.function.to_owned(),
            format!("{:.1} s", median(served.clone())),
            format!("{min:.1} to {max:.1} s"),
            format!("{:.1} s", phase(0)),
            format!("{:.1} s", phase(1)),
            format!("{:.1} s", phase(2)),
            format!("<= {} s", edit.goal.as_secs()),
        ]);
    }
    println!("saved edit -> staging serves it, {runs} saves per function (median; watch profile):");
    print!(
        "{}",
        crate::build::table(
            &[
                "function", "median", "range", "compile", "package", "apply", "goal"
            ],
            &rows
        )
    );
}

/// `cargo xtask bench --cold-starts RUNS`: builds for release, then cold-
/// starts every function `runs` times on the local host (a new execution
/// environment each time, as Lambda makes one), and prints each one's
/// median Init Duration beside `status`'s. No emulator: init needs none
/// (an invocation that reaches for DynamoDB fails fast, after init).
fn cold_starts(sh: &Shell, runs: u32) -> Result<()> {
    use crate::host::{FunctionVersion, Host, Limits, Log};
    let root = sh.current_dir();
    let xtask = std::env::current_exe()?;
    let status = Command::new(&xtask).arg("build").status()?;
    ensure!(status.success(), "cargo xtask build failed");
    let artifacts = root.join(crate::build::OUT_DIR);
    let manifest = crate::artifact::read_manifest(&artifacts.join("manifest.json"))?
        .context("no build manifest")?;
    let scratch = root.join("target/bench/cold");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let log = Log::file(&scratch.join("functions.log"))?;
    // Nothing answers here, and the SDK does not retry: a call to AWS
    // fails at once, after init. (With retries, users' sample sat about a
    // second in backoff before each next cold start, and a start after an
    // idle second is slower on this machine for any binary: that, not
    // users' init, was its gap to chirps.)
    let nowhere = vec![
        ("AWS_MAX_ATTEMPTS".to_owned(), "1".to_owned()),
        (
            "AWS_ENDPOINT_URL".to_owned(),
            "http://127.0.0.1:9".to_owned(),
        ),
        ("AWS_ACCESS_KEY_ID".to_owned(), "bench".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "bench".to_owned()),
    ];
    let runtime = crate::release::runtime()?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // Per function: Init Duration's median, min and max, and the median of
    // init plus the first invocation's Duration (what a client of a cold
    // start waits for: work a function defers to its first request, such
    // as making an SDK client, shows there).
    let mut medians: Vec<(String, f64, f64, f64, f64)> = Vec::new();
    // Every function's sample and configuration first; then the cold starts
    // in rounds, one of each function per round, so that the machine's drift
    // (it is slower some minutes than others) weighs on all alike and the
    // ratios to `status` compare starts made side by side.
    let mut functions = Vec::new();
    for (name, artifact) in &manifest.functions {
        let event_dir = root.join("events").join(name);
        let event = ["health.json", "get-missing.json"]
            .iter()
            .map(|file| event_dir.join(file))
            .find(|path| path.is_file())
            .or_else(|| {
                let mut samples: Vec<PathBuf> = std::fs::read_dir(&event_dir)
                    .ok()?
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|path| !path.to_string_lossy().ends_with(".expected.json"))
                    .collect();
                samples.sort();
                samples.into_iter().next()
            })
            .with_context(|| format!("{name} has no sample event in {}", event_dir.display()))?;
        let payload = std::fs::read(&event)?;
        let function = FunctionVersion {
            name: format!("bench-{name}"),
            version: "$LATEST".to_owned(),
            arn: format!("arn:aws:lambda:us-east-1:123456789012:function:bench-{name}"),
            code_sha256: artifact.code_sha256.clone(),
            configuration: String::new(),
            memory_mb: 128,
            timeout: Duration::from_secs(10),
            environment: [
                ("USERS_TABLE_STAGING", "bench-staging"),
                ("USERS_TABLE_PROD", "bench-prod"),
                ("CHIRPS_TABLE_STAGING", "bench-staging"),
                ("CHIRPS_TABLE_PROD", "bench-prod"),
                ("FILES_TABLE_STAGING", "bench-staging"),
                ("FILES_TABLE_PROD", "bench-prod"),
                ("FILES_BUCKET_STAGING", "bench-staging"),
                ("FILES_BUCKET_PROD", "bench-prod"),
                ("FILES_URL_EXPIRY_SECONDS", "900"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            region: "us-east-1".to_owned(),
            description: String::new(),
            state: "Active/Successful".to_owned(),
            reserved_concurrency: None,
        };
        functions.push((name.clone(), function, payload));
    }
    let mut inits = vec![Vec::new(); functions.len()];
    let mut firsts = vec![Vec::new(); functions.len()];
    for _ in 0..runs {
        for (index, (name, function, payload)) in functions.iter().enumerate() {
            let init = runtime.block_on(async {
                let host = Host::new(
                    artifacts.clone(),
                    scratch.join("code"),
                    nowhere.clone(),
                    log.clone(),
                    Limits::default(),
                    None,
                );
                let invocation = host
                    .invoke(function, function.arn.clone(), payload.clone())
                    .await;
                host.retain(|_| false);
                (
                    invocation.outcome,
                    invocation
                        .report
                        .and_then(|report| Some((report.init_duration?, report.duration))),
                )
            });
            // An init that failed (a missing variable, say: the process
            // exits) is no cold start.
            if let crate::host::Outcome::FunctionError { error_type, .. } = &init.0
                && (error_type.starts_with("Runtime.Init") || error_type == "Runtime.ExitError")
            {
                bail!(
                    "{name}: its init failed ({error_type}): see {}",
                    scratch.join("functions.log").display()
                );
            }
            let (init, first) = init
                .1
                .with_context(|| format!("{name}: no cold start reported"))?;
            inits[index].push(ms(init));
            firsts[index].push(ms(init + first));
        }
    }
    for (((name, ..), mut inits), mut firsts) in functions.iter().zip(inits).zip(firsts) {
        inits.sort_by(f64::total_cmp);
        firsts.sort_by(f64::total_cmp);
        let median = inits[inits.len() / 2];
        medians.push((
            name.clone(),
            median,
            inits[0],
            inits[inits.len() - 1],
            firsts[firsts.len() / 2],
        ));
    }
    let status = medians
        .iter()
        .find(|(name, ..)| name == "status")
        .map(|(_, median, ..)| *median);
    let rows: Vec<Vec<String>> = medians
        .iter()
        .map(|(name, median, min, max, first)| {
            vec![
                name.clone(),
                format!("{median:.2} ms"),
                format!("{min:.2} .. {max:.2} ms"),
                status
                    .map(|status| format!("{:.2}x", median / status))
                    .unwrap_or_default(),
                format!("{first:.2} ms"),
            ]
        })
        .collect();
    println!(
        "Init Duration, {runs} cold starts each (release builds, local host), and init plus \
         the first invocation's Duration (its AWS calls fail at once: nothing listens):"
    );
    print!(
        "{}",
        crate::build::table(
            &["function", "median", "range", "of status", "init + first"],
            &rows
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_line_gives_its_phases() {
        let line = "==> watch: lambdas/status/src/main.rs: compiled status in 0.8 s, packaged in \
                    0.1 s, applied status's code in 11.7 s (Apply complete! ...); staging serves \
                    status 6124d9712137 after 12.6 s";
        assert_eq!(phases(line), [0.8, 0.1, 11.7]);
    }

    #[test]
    fn the_edits_still_find_their_anchors() {
        for edit in &EDITS {
            let text = std::fs::read_to_string(crate::project_root().join(edit.file)).unwrap();
            assert!(text.contains(edit.anchor), "{}: {}", edit.file, edit.anchor);
        }
    }
}
