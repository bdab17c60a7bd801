//! `cargo xtask dev` (the whole local stack, serving the API) and `cargo
//! xtask invoke` (one function, one event): the local Lambda host and API
//! gateway in front of what Terraform applied to the emulator.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use xshell::Shell;

use crate::LocalDir;
use crate::gateway::{self, Gateway};
use crate::host::{Limits, Log, Outcome};
use crate::live::{Applied, LocalStack};
use crate::{build, terraform};

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Port of the API on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Skip `cargo xtask build`: apply and serve the artifacts already built.
    #[arg(long)]
    no_build: bool,
    /// Watch lambdas/, terraform/ and Cargo.toml while serving: a change
    /// rebuilds the functions it affects (the quick `watch` profile, which
    /// verify never vouches for) and applies them to the local stack, so
    /// staging serves them; prod does not move.
    #[arg(long)]
    watch: bool,
    /// Directory of the build manifest [default: target/lambda].
    #[arg(long, value_name = "DIR", env = "XTASK_ARTIFACTS_DIR")]
    artifacts_dir: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// The local Lambda host's limits (see `host::Limits`).
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Concurrent executions of the functions without reserved concurrency,
    /// together (each execution environment is a process); past it an
    /// invocation is throttled, as Lambda throttles past the account's.
    #[arg(long, value_name = "N", env = "XTASK_CONCURRENCY", default_value_t = Limits::default().concurrency,
          value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// How long an idle execution environment is kept before it is shut
    /// down (the next invocation is a cold start): `300s`, `5m`.
    #[arg(long, value_name = "DURATION", env = "XTASK_IDLE_TIMEOUT", default_value = "5m",
          value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            concurrency: self.concurrency,
            idle_timeout: self.idle_timeout,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Port of the API on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Serve the stack applied with `--aws` instead, from an AWS-compatible
    /// endpoint standing in for AWS (`AWS_ENDPOINT_URL`: the emulator in a
    /// rehearsal, whose API Gateway has no invoke URL to call). On AWS
    /// itself API Gateway serves the stages, and this refuses.
    #[arg(long)]
    aws: bool,
    /// Directory of the build manifest the functions' code is found in [default: target/lambda].
    #[arg(long, value_name = "DIR", env = "XTASK_ARTIFACTS_DIR")]
    artifacts_dir: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    /// The function: its name in the build manifest (`status`) or its Lambda name.
    function: String,
    /// The event: a JSON file, or a sample's name in `events/<function>/` (`--event get`). Read from stdin when omitted.
    #[arg(long, value_name = "FILE|SAMPLE")]
    event: Option<String>,
    /// The alias (or version number, or `$LATEST`) to invoke.
    #[arg(long, default_value = "staging")]
    alias: String,
    /// Invoke this many times on one warm process and summarise the durations.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
}

/// `cargo xtask dev`: build, start the emulator, apply, serve until Ctrl-C.
pub fn dev(sh: &Shell, local: &LocalDir, args: DevArgs) -> Result<()> {
    // A directory the user names is relative to where they stand; the
    // default, to the workspace root.
    let out_dir = match &args.artifacts_dir {
        Some(dir) => std::path::absolute(dir)?,
        None => sh.current_dir().join(build::OUT_DIR),
    };
    if !args.no_build {
        build::run(
            sh,
            build::Args {
                functions: Vec::new(),
                out_dir: out_dir.clone(),
                profile: crate::artifact::Profile::Release,
            },
        )?;
    }
    let target = terraform::TargetArgs::local(out_dir.clone());
    terraform::apply_quietly(sh, local, &target)?;
    let watch = args.watch.then_some(out_dir);
    runtime()?.block_on(async {
        let gateway = local_gateway(local, &args.limits).await?;
        serve(local, gateway, args.port, "the local stack's", watch).await
    })
}

/// The local stack's gateway and host, recording into its emulator, with
/// its alarms evaluated in the background while it serves (the emulator
/// stores them and never evaluates them).
async fn local_gateway(local: &LocalDir, limits: &LimitArgs) -> Result<std::sync::Arc<Gateway>> {
    let stack = LocalStack::connect(local).await?;
    let host = stack.host(local, Log::stderr(), limits.limits(), stack.telemetry());
    let applied = local.clone();
    tokio::spawn(crate::alarms::keep_evaluating(
        stack.aws.clone(),
        move || alarm_settings(&Applied::read(&applied).ok()?),
        Log::stderr(),
    ));
    Gateway::new(local, stack.aws, host)
        .await
        .context("the local gateway refuses to serve this API")
}

/// What the alarms of what is applied start with (the API's name), and
/// their period; `None` before the stack had alarms.
fn alarm_settings(applied: &Applied) -> Option<(String, u64)> {
    Some((
        format!("{}-", applied.api_name.clone()?),
        applied.alarms.as_ref()?.period_seconds,
    ))
}

/// `cargo xtask serve`: the stages of what is applied, served until Ctrl-C
/// (no build, no apply).
pub fn serve_applied(sh: &Shell, local: &LocalDir, args: ServeArgs) -> Result<()> {
    runtime()?.block_on(async {
        if !args.aws {
            let gateway = local_gateway(local, &args.limits).await?;
            return serve(local, gateway, args.port, "the local stack's", None).await;
        }
        let Some(endpoint) = crate::live::emulated_endpoint() else {
            bail!(
                "on AWS, API Gateway serves the stages (`terraform output invoke_urls`): `serve \
                 --aws` is for an AWS-compatible endpoint on this machine standing in for AWS, \
                 named by AWS_ENDPOINT_URL (a loopback address; the functions get your keys)"
            );
        };
        let target = terraform::TargetArgs {
            aws: true,
            artifacts_dir: args.artifacts_dir.clone(),
            lock_timeout: "0s".to_owned(),
        };
        let world = crate::release::World::open(sh, local, &target).await?;
        let mut applied = world.applied.clone();
        applied.artifacts_dir = match &args.artifacts_dir {
            Some(dir) => std::path::absolute(dir)?,
            None => crate::project_root().join(build::OUT_DIR),
        };
        // The functions call the same endpoint, as the caller (on AWS they
        // would have their role's credentials).
        let mut env = vec![("AWS_ENDPOINT_URL".to_owned(), endpoint.clone())];
        for key in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            if let Ok(value) = std::env::var(key) {
                env.push((key.to_owned(), value));
            }
        }
        let records = LocalDir(crate::project_root().join("target/aws/serve"));
        // What Lambda and API Gateway would record, into what stands in for
        // their CloudWatch.
        let telemetry = crate::telemetry::Telemetry::start(&world.aws.config);
        let host = crate::host::Host::new(
            applied.artifacts_dir.clone(),
            records.0.join("lambda"),
            env.into_iter().collect(),
            Log::stderr(),
            args.limits.limits(),
            Some(telemetry),
        );
        // What stands in for AWS does not evaluate alarms either.
        let alarms = alarm_settings(&applied);
        tokio::spawn(crate::alarms::keep_evaluating(
            world.aws.clone(),
            move || alarms.clone(),
            Log::stderr(),
        ));
        let gateway = Gateway::remote(applied, records.clone(), world.aws.clone(), host)
            .await
            .with_context(|| format!("the local gateway refuses to serve the API at {endpoint}"))?;
        serve(local, gateway, args.port, &format!("{endpoint}'s"), None).await
    })
}

/// Serves `gateway` until Ctrl-C; with `watch` (the artifacts directory),
/// the inner loop runs beside it.
async fn serve(
    local: &LocalDir,
    gateway: std::sync::Arc<Gateway>,
    port: u16,
    whose: &str,
    watch: Option<PathBuf>,
) -> Result<()> {
    let (listener, address) = gateway::bind(port).await?;
    let api = gateway.api().await.map_err(anyhow::Error::msg)?;

    let base = format!("http://{address}");
    let mut rows = Vec::new();
    for stage in api.stages.values() {
        let revision = match stage.revision.get(..12) {
            Some(short) => short.to_owned(),
            None => "none".to_owned(),
        };
        rows.push(vec![
            stage.name.clone(),
            format!("{base}/{}", stage.name),
            revision,
            gateway::serves(stage),
        ]);
    }
    let mut routes: Vec<String> = Vec::new();
    let mut sample = None;
    let healthy = |stage: &&gateway::config::Stage| {
        stage.routes.is_ok() && stage.targets.values().all(Result::is_ok)
    };
    if let Some(stage) = api.stages.values().find(healthy) {
        for resource in &stage.routes.as_ref().expect("found").resources {
            for method in resource.methods.keys() {
                routes.push(format!("{method} {}", resource.path));
                if sample.is_none() && method == "GET" && !resource.path.contains('{') {
                    sample = Some(format!("curl -s {base}/{}{}", stage.name, resource.path));
                }
            }
        }
    }
    println!("serving {whose} API on {base} (Ctrl-C stops; the emulator keeps running)");
    print!(
        "{}",
        build::table(&["stage", "url", "API revision", "runs"], &rows)
    );
    println!("routes: {}", routes.join(", "));
    if let Some(sample) = sample {
        println!("try: {sample}");
    }
    if let Some(artifacts) = watch {
        crate::watch::Watch::new(
            crate::project_root(),
            local.clone(),
            artifacts,
            gateway.clone(),
            tokio::runtime::Handle::current(),
        )
        .start()?;
        // Printed once watching: a change saved after this line is seen.
        println!(
            "watching lambdas/, terraform/ and Cargo.toml: a change rebuilds what it affects \
             (watch profile) and applies it; staging serves it, prod stays"
        );
    }
    eprintln!("==> request log, and each function's log with its REPORT lines, below");

    gateway
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    eprintln!("==> stopped (the emulator still runs: `cargo xtask emulator stop` stops it)");
    Ok(())
}

/// `cargo xtask invoke`: one function, one event, on the local host.
pub fn invoke(sh: &Shell, local: &LocalDir, args: InvokeArgs) -> Result<()> {
    let applied = Applied::read(local)?;
    let function = applied.function_name(&args.function)?;
    let short = applied
        .function_names
        .iter()
        .find(|(_, name)| **name == function)
        .map(|(short, _)| short.clone())
        .unwrap_or_else(|| function.clone());
    let payload = read_event(&sh.current_dir(), &short, args.event.as_deref())?;
    runtime()?.block_on(async {
        let stack = LocalStack::connect(local).await?;
        let routed = stack
            .aws
            .function_to_run(&function, &args.alias)
            .await?
            .with_context(|| {
                format!(
                    "{function} has no `{}` (alias or version) on the local stack",
                    args.alias
                )
            })?;
        let telemetry = stack.telemetry();
        let host = stack.host(local, Log::stderr(), Limits::default(), telemetry.clone());
        let invoked_arn = format!("{}:{}", routed.version.arn, args.alias);
        let mut invocations = Vec::new();
        for _ in 0..args.repeat {
            // A weighted alias runs its other version for its share.
            let invocation = host
                .invoke(routed.pick(), invoked_arn.clone(), payload.clone())
                .await;
            invocations.push(invocation);
        }
        telemetry.flush().await;
        let last = invocations.last().expect("at least one invocation");
        println!("{}", gateway::pretty(&last.outcome.payload()));
        if args.repeat > 1 {
            eprintln!("{}", summarise(&invocations));
        }
        match &last.outcome {
            Outcome::Response(_) => Ok(()),
            Outcome::FunctionError { error_type, .. } => {
                bail!(
                    "{function}:{} failed: {error_type} (its error document is above)",
                    args.alias
                )
            }
            Outcome::Throttled { reason } => {
                bail!(
                    "Lambda throttled {function}:{}: TooManyRequestsException ({reason})",
                    args.alias
                )
            }
            Outcome::ServiceError(message) => {
                bail!("Lambda could not invoke {function}: {message}")
            }
        }
    })
}

/// The event `choice` names: a file, a sample of `function`, or stdin.
fn read_event(root: &Path, function: &str, choice: Option<&str>) -> Result<Vec<u8>> {
    let bytes = match choice {
        None | Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading the event from stdin")?;
            bytes
        }
        Some(choice) => {
            let sample = root
                .join("events")
                .join(function)
                .join(format!("{choice}.json"));
            let path = if Path::new(choice).is_file() {
                PathBuf::from(choice)
            } else if sample.is_file() {
                sample
            } else {
                bail!(
                    "no event `{choice}`: neither a file nor a sample ({})",
                    sample.display()
                );
            };
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
        }
    };
    serde_json::from_slice::<serde_json::Value>(&bytes).context("the event is not JSON")?;
    Ok(bytes)
}

fn summarise(invocations: &[crate::host::Invocation]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let reports: Vec<_> = invocations
        .iter()
        .filter_map(|i| i.report.as_ref())
        .collect();
    let cold: Vec<_> = reports.iter().filter_map(|r| r.init_duration).collect();
    let mut warm: Vec<f64> = reports
        .iter()
        .filter(|r| r.init_duration.is_none())
        .map(|r| ms(r.duration))
        .collect();
    warm.sort_by(f64::total_cmp);
    let at = |q: f64| warm[((warm.len() - 1) as f64 * q).round() as usize];
    let mut out = format!(
        "{} invocations: {} cold (init {})",
        invocations.len(),
        cold.len(),
        cold.iter()
            .map(|d| format!("{:.2} ms", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !warm.is_empty() {
        out += &format!(
            "; {} warm: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            warm.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    if let Some(peak) = reports.iter().filter_map(|r| r.max_memory_used_mb).max() {
        out += &format!("; max memory used {peak} MB");
    }
    out
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
