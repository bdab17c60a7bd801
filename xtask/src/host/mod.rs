//! The local Lambda host: runs a function version's real `bootstrap` the
//! way Lambda does, for `cargo xtask invoke` and the local API gateway.
//!
//! - The code is the built zip whose SHA-256 is the version's `CodeSha256`
//!   (artifacts are content-addressed), unpacked once into a cache.
//! - Each function version (code and configuration) has a pool of execution
//!   environments: an invocation takes an idle one (warm) or starts a new
//!   process (a cold start, with its `Init Duration`); each environment
//!   serves one invocation at a time. Concurrent executions are limited as
//!   Lambda limits them: a function's reserved concurrency if it has one,
//!   else the local stack's concurrency shared by every other function
//!   ([`Limits`]). Past the limit the invocation is throttled (Lambda's 429
//!   `TooManyRequestsException`). An environment idle for
//!   [`Limits::idle_timeout`] is shut down.
//! - The process talks to the host through the Lambda Runtime API on its own
//!   loopback port ([`runtime_api`]), with the environment Lambda sets plus
//!   the function's configured variables.
//! - An invocation past the function's timeout kills the process and fails
//!   (`Sandbox.Timedout`); a process that exits fails its invocation
//!   (`Runtime.ExitError`). Either way the next invocation starts a new one.
//! - Every invocation is logged as Lambda logs it: `START`, the function's
//!   own output, `END` and a `REPORT` line with durations and memory.

mod runtime_api;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::artifact;
use crate::telemetry::Telemetry;
use runtime_api::{Event, FromRuntime, RuntimeApi};

/// Lambda's limit on a synchronous invocation's request payload ("Request
/// must be smaller than 6291456 bytes").
pub const REQUEST_PAYLOAD_LIMIT: usize = 6_291_456;

/// Lambda's limit on a synchronous invocation's response payload.
pub const PAYLOAD_LIMIT: usize = 6_291_556;

/// How long a new process may take to ask for its first invocation.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// One published version (or `$LATEST`) of a function, as Lambda's
/// `GetFunctionConfiguration` describes it. A change to any field is a new
/// execution environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionVersion {
    pub name: String,
    pub version: String,
    /// The unqualified function ARN.
    pub arn: String,
    /// Base64 SHA-256 of the deployment package.
    pub code_sha256: String,
    /// Digest of the rest of the version's configuration
    /// (`live::configuration_digest`).
    pub configuration: String,
    pub memory_mb: i32,
    pub timeout: Duration,
    pub environment: BTreeMap<String, String>,
    pub region: String,
    /// The version's description: a `dev --watch` build says so there.
    pub description: String,
    /// Its `State` and `LastUpdateStatus` (`live::readiness`).
    pub state: String,
    /// The function's reserved concurrency (`GetFunctionConcurrency`): at
    /// most this many executions of the function, all versions together,
    /// at once. `None`: it shares the unreserved concurrency.
    pub reserved_concurrency: Option<u32>,
}

/// What invoking an alias runs: its version, or, for a weighted alias
/// (Lambda's routing configuration, a canary), another version for a share
/// of the invocations, chosen per invocation as Lambda chooses.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub version: FunctionVersion,
    /// The other version and its share (0 to 1).
    pub additional: Option<(FunctionVersion, f64)>,
}

impl Routed {
    /// The version one invocation runs.
    pub fn pick(&self) -> &FunctionVersion {
        match &self.additional {
            Some((other, weight)) if fastrand::f64() < *weight => other,
            _ => &self.version,
        }
    }

    /// Every version it may run.
    pub fn versions(&self) -> impl Iterator<Item = &FunctionVersion> {
        std::iter::once(&self.version).chain(self.additional.iter().map(|(other, _)| other))
    }

    /// `name:1`, or `name:1 + 2 at 10%` for a weighted alias.
    pub fn describe(&self) -> String {
        let mut text = format!("{}:{}", self.version.name, self.version.version);
        if let Some((other, weight)) = &self.additional {
            text += &format!(" + {} at {}", other.version, percent(*weight));
        }
        text
    }
}

/// A share (0 to 1) as a percentage: `10%`, `12.5%`.
pub fn percent(share: f64) -> String {
    let percent = share * 100.0;
    if (percent - percent.round()).abs() < 1e-9 {
        format!("{}%", percent.round())
    } else {
        format!("{percent:.1}%")
    }
}

/// How much the host may run at once, and how long it keeps an idle
/// execution environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent executions of every function without reserved
    /// concurrency, together: Lambda's account concurrency (1,000 by
    /// default on AWS; lower here, where each environment is a process).
    pub concurrency: u32,
    /// How long an environment may sit idle before it is shut down (Lambda
    /// does not document its own; environments are seen kept for minutes).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            concurrency: 32,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// What an invocation produced, as Lambda's `Invoke` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function's response payload.
    Response(Vec<u8>),
    /// A function error (`X-Amz-Function-Error`): its `errorType` and `errorMessage`.
    FunctionError { error_type: String, message: String },
    /// `Invoke` was refused with 429 `TooManyRequestsException`: every
    /// execution the function may run at once is running. `reason` is
    /// Lambda's (`ReservedFunctionConcurrentInvocationLimitExceeded`, or
    /// `ConcurrentInvocationLimitExceeded` for the shared concurrency).
    Throttled { reason: String },
    /// Lambda could not run the function at all (the `Invoke` call failed).
    ServiceError(String),
}

impl Outcome {
    fn function_error(error_type: &str, message: impl Into<String>) -> Outcome {
        Outcome::FunctionError {
            error_type: error_type.to_owned(),
            message: message.into(),
        }
    }

    /// The payload `Invoke` returns: the response, or the error document.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Outcome::Response(body) => body.clone(),
            Outcome::FunctionError {
                error_type,
                message,
            } => serde_json::to_vec(&serde_json::json!({
                "errorMessage": message,
                "errorType": error_type,
            }))
            .expect("JSON of strings"),
            // The body of Lambda's 429.
            Outcome::Throttled { reason } => serde_json::to_vec(&serde_json::json!({
                "Reason": reason,
                "Type": "User",
                "message": "Rate Exceeded.",
            }))
            .expect("JSON of strings"),
            Outcome::ServiceError(message) => message.clone().into_bytes(),
        }
    }
}

/// One invocation's result and its `REPORT`.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub outcome: Outcome,
    /// `None` when no process ran (a service error).
    pub report: Option<Report>,
}

/// What Lambda's `REPORT` line says about an invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub request_id: String,
    pub duration: Duration,
    /// Set on a cold start: how long the process took to ask for work.
    pub init_duration: Option<Duration>,
    pub memory_size_mb: i32,
    /// Peak resident memory of the process (`VmHWM`), when it could be read.
    pub max_memory_used_mb: Option<u64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let billed = ms(self.duration + self.init_duration.unwrap_or_default()).ceil();
        write!(
            f,
            "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {billed:.0} ms\t\
             Memory Size: {} MB\tMax Memory Used: ",
            self.request_id,
            ms(self.duration),
            self.memory_size_mb,
        )?;
        match self.max_memory_used_mb {
            Some(mb) => write!(f, "{mb} MB")?,
            None => f.write_str("? MB")?,
        }
        if let Some(init) = self.init_duration {
            write!(f, "\tInit Duration: {:.2} ms", ms(init))?;
        }
        Ok(())
    }
}

/// Runs function versions. Cheap to share: clone the `Arc`.
pub struct Host {
    code: CodeStore,
    /// Where the functions' log lines and the host's own go.
    pub log: Log,
    /// Variables the local stack adds to Lambda's (the emulator's endpoint,
    /// fake credentials), under the function's own.
    extra_env: Vec<(String, String)>,
    limits: Limits,
    /// Where invocations are recorded as Lambda records them (metrics, and
    /// the functions' log streams), if anywhere.
    telemetry: Option<Arc<Telemetry>>,
    pools: Mutex<HashMap<FunctionVersion, Arc<Pool>>>,
    /// Executions under way, for the concurrency limits.
    busy: Mutex<Busy>,
    reaper: Once,
}

/// Executions under way: per function with reserved concurrency, and of
/// all the others together.
#[derive(Debug, Default)]
struct Busy {
    unreserved: u32,
    reserved: HashMap<String, u32>,
}

/// The idle execution environments of one function version, the most
/// recently used last (and taken first, so a light load keeps few warm).
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<(Process, Instant)>>,
}

impl Pool {
    fn take(&self) -> Option<Process> {
        self.idle
            .lock()
            .expect("pool lock")
            .pop()
            .map(|(process, _)| process)
    }

    fn put(&self, process: Process) {
        self.idle
            .lock()
            .expect("pool lock")
            .push((process, Instant::now()));
    }

    /// Shuts down the environments idle for longer than `idle_timeout`
    /// (dropping a process kills it); how many.
    fn reap(&self, idle_timeout: Duration) -> usize {
        let mut idle = self.idle.lock().expect("pool lock");
        let before = idle.len();
        idle.retain(|(_, since)| since.elapsed() < idle_timeout);
        before - idle.len()
    }
}

/// One execution's share of the concurrency, given back when dropped.
struct Slot {
    host: Arc<Host>,
    function: String,
    reserved: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self.host.busy.lock().expect("busy lock");
        if self.reserved {
            if let Some(running) = busy.reserved.get_mut(&self.function) {
                *running -= 1;
            }
        } else {
            busy.unreserved -= 1;
        }
    }
}

impl Host {
    /// A host running code from the zips in `artifacts`, unpacked under
    /// `cache`; with `telemetry`, every invocation's metrics and log lines
    /// are recorded there too.
    pub fn new(
        artifacts: PathBuf,
        cache: PathBuf,
        extra_env: Vec<(String, String)>,
        log: Log,
        limits: Limits,
        telemetry: Option<Arc<Telemetry>>,
    ) -> Arc<Host> {
        Arc::new(Host {
            code: CodeStore { artifacts, cache },
            log,
            extra_env,
            limits,
            telemetry,
            pools: Mutex::new(HashMap::new()),
            busy: Mutex::new(Busy::default()),
            reaper: Once::new(),
        })
    }

    /// Invokes `function` with `payload`, as `invoked_arn` (the qualified
    /// ARN the caller named), in an idle execution environment or a new one.
    /// Runs to its end even if the caller stops waiting, as Lambda does when
    /// an API Gateway integration times out.
    pub async fn invoke(
        self: &Arc<Self>,
        function: &FunctionVersion,
        invoked_arn: String,
        payload: Vec<u8>,
    ) -> Invocation {
        let request_id = new_request_id();
        if payload.len() > REQUEST_PAYLOAD_LIMIT {
            return Invocation {
                outcome: Outcome::ServiceError(format!(
                    "RequestEntityTooLargeException: request payload of {} bytes exceeds \
                     the maximum of {REQUEST_PAYLOAD_LIMIT} bytes",
                    payload.len()
                )),
                report: None,
            };
        }
        self.start_reaper();
        let slot = match self.admit(function) {
            Ok(slot) => slot,
            Err(reason) => {
                let invocation = Invocation {
                    outcome: Outcome::Throttled { reason },
                    report: None,
                };
                if let Some(telemetry) = &self.telemetry {
                    telemetry.invocation(function, &invoked_arn, &invocation);
                }
                return invocation;
            }
        };
        let pool = self
            .pools
            .lock()
            .expect("pools lock")
            .entry(function.clone())
            .or_default()
            .clone();
        let host = self.clone();
        let function = function.clone();
        // The task runs to its end, and records it, even if the caller
        // stops waiting (an integration's timeout): Lambda still counts it.
        let task = tokio::spawn(async move {
            let _slot = slot;
            let (invocation, process) = host
                .run(
                    &function,
                    pool.take(),
                    request_id,
                    invoked_arn.clone(),
                    payload,
                )
                .await;
            if let Some(process) = process {
                pool.put(process);
            }
            if let Some(telemetry) = &host.telemetry {
                telemetry.invocation(&function, &invoked_arn, &invocation);
            }
            invocation
        });
        task.await.expect("an invocation task never panics")
    }

    /// The telemetry this host records into, if any.
    pub fn telemetry(&self) -> Option<&Arc<Telemetry>> {
        self.telemetry.as_ref()
    }

    /// A share of the concurrency for one execution of `function`, or
    /// Lambda's reason for throttling it.
    fn admit(self: &Arc<Self>, function: &FunctionVersion) -> Result<Slot, String> {
        let mut busy = self.busy.lock().expect("busy lock");
        let reserved = match function.reserved_concurrency {
            Some(limit) => {
                let running = busy.reserved.entry(function.name.clone()).or_default();
                if *running >= limit {
                    return Err("ReservedFunctionConcurrentInvocationLimitExceeded".to_owned());
                }
                *running += 1;
                true
            }
            None => {
                if busy.unreserved >= self.limits.concurrency {
                    return Err("ConcurrentInvocationLimitExceeded".to_owned());
                }
                busy.unreserved += 1;
                false
            }
        };
        Ok(Slot {
            host: self.clone(),
            function: function.name.clone(),
            reserved,
        })
    }

    /// Stops the processes of every function version `keep` rejects (a
    /// version no stage serves any more).
    pub fn retain(&self, keep: impl Fn(&FunctionVersion) -> bool) {
        self.pools
            .lock()
            .expect("pools lock")
            .retain(|function, _| keep(function));
    }

    /// Shuts down idle environments from time to time, for as long as the
    /// host lives.
    fn start_reaper(self: &Arc<Self>) {
        self.reaper.call_once(|| {
            let host = Arc::downgrade(self);
            let every = (self.limits.idle_timeout / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(10));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(host) = host.upgrade() else { return };
                    host.reap();
                }
            });
        });
    }

    fn reap(&self) {
        let pools: Vec<(FunctionVersion, Arc<Pool>)> = self
            .pools
            .lock()
            .expect("pools lock")
            .iter()
            .map(|(function, pool)| (function.clone(), pool.clone()))
            .collect();
        for (function, pool) in pools {
            let reaped = pool.reap(self.limits.idle_timeout);
            if reaped > 0 {
                self.log.line(format_args!(
                    "[{}:{}] shut down {reaped} execution environment(s) idle for {} s",
                    function.name,
                    function.version,
                    self.limits.idle_timeout.as_secs()
                ));
            }
        }
    }

    /// One invocation in `warm` (an idle environment) or, if there is none
    /// or it died, a new one; the environment back if it lives on.
    async fn run(
        &self,
        function: &FunctionVersion,
        warm: Option<Process>,
        request_id: String,
        invoked_arn: String,
        payload: Vec<u8>,
    ) -> (Invocation, Option<Process>) {
        let label = format!("[{}:{}]", function.name, function.version);
        let mut init_duration = None;
        // One that died while idle is replaced.
        let warm = warm.and_then(|mut process| (!process.exited()).then_some(process));
        let mut process = match warm {
            Some(process) => process,
            None => {
                let mut process = match self.spawn(function, &label).await {
                    Ok(process) => process,
                    Err(err) => {
                        self.log.line(format_args!("{label} cannot start: {err:#}"));
                        let invocation = Invocation {
                            outcome: Outcome::ServiceError(format!("{err:#}")),
                            report: None,
                        };
                        return (invocation, None);
                    }
                };
                let ready = process.wait_ready(&request_id).await;
                init_duration = Some(process.spawned_at.elapsed());
                if let Err(outcome) = ready {
                    let report = Report {
                        request_id: request_id.clone(),
                        duration: Duration::ZERO,
                        init_duration,
                        memory_size_mb: function.memory_mb,
                        max_memory_used_mb: process.max_memory_used_mb(),
                    };
                    let why = match &outcome {
                        Outcome::FunctionError {
                            error_type,
                            message,
                        } => format!("{message} {error_type}"),
                        other => format!("{other:?}"),
                    };
                    process.lines.line(&format!("INIT failed: {why}"));
                    process.lines.line(&report.to_string());
                    let invocation = Invocation {
                        outcome,
                        report: Some(report),
                    };
                    return (invocation, None);
                }
                process
            }
        };

        let lines = process.lines.clone();
        lines.line(&format!(
            "START RequestId: {request_id} Version: {}",
            function.version
        ));
        let started = Instant::now();
        let deadline = SystemTime::now() + function.timeout;
        let event = Event {
            request_id: request_id.clone(),
            payload,
            deadline_ms: deadline
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            invoked_arn,
        };
        let (outcome, alive) = process
            .invoke(event, started + function.timeout, function.timeout)
            .await;
        let report = Report {
            request_id: request_id.clone(),
            duration: started.elapsed(),
            init_duration,
            memory_size_mb: function.memory_mb,
            max_memory_used_mb: process.max_memory_used_mb(),
        };
        // Lambda logs the failures it causes itself (a timeout, an exit),
        // not the errors the runtime reports.
        if let Outcome::FunctionError {
            error_type,
            message,
        } = &outcome
            && ["Sandbox.", "Runtime.", "Function."]
                .iter()
                .any(|prefix| error_type.starts_with(prefix))
        {
            lines.line(&format!("{message} {error_type}"));
        }
        lines.line(&format!("END RequestId: {request_id}"));
        lines.line(&report.to_string());
        let invocation = Invocation {
            outcome,
            report: Some(report),
        };
        // Killed or exited: the next invocation starts a new process.
        (invocation, alive.then_some(process))
    }

    async fn spawn(&self, function: &FunctionVersion, label: &str) -> Result<Process> {
        let stream = log_stream_name(&function.version);
        let lines = Lines {
            label: label.to_owned(),
            log: self.log.clone(),
            sink: self.telemetry.as_ref().map(|telemetry| {
                (
                    telemetry.clone(),
                    format!("/aws/lambda/{}", function.name),
                    stream.clone(),
                )
            }),
        };
        let code = self.code.clone();
        let sha = function.code_sha256.clone();
        let task_root = tokio::task::spawn_blocking(move || code.unpacked(&sha))
            .await
            .expect("unpacking never panics")?;
        let (api, runtime) = RuntimeApi::start().await?;
        let env = lambda_environment(function, &api.address, &task_root, &stream, &self.extra_env);
        let spawned_at = Instant::now();
        let mut child = Command::new(task_root.join(artifact::ENTRY))
            .current_dir(&task_root)
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", task_root.join(artifact::ENTRY).display()))?;
        forward_lines(child.stdout.take(), &lines);
        forward_lines(child.stderr.take(), &lines);
        Ok(Process {
            spawned_at,
            lines,
            pid: child.id(),
            child,
            api,
            runtime,
            max_memory_used_mb: None,
        })
    }
}

/// A running `bootstrap` and its Runtime API.
struct Process {
    /// When the process was started: its init phase runs from here to its first `/next`.
    spawned_at: Instant,
    /// Where its log lines go.
    lines: Lines,
    child: Child,
    pid: Option<u32>,
    api: runtime_api::Handle,
    runtime: mpsc::UnboundedReceiver<FromRuntime>,
    max_memory_used_mb: Option<u64>,
}

impl Process {
    /// Waits for the first `/next`: the end of the init phase. On failure,
    /// the invocation's outcome (the process is gone or will be dropped).
    async fn wait_ready(&mut self, request_id: &str) -> Result<(), Outcome> {
        let timeout = tokio::time::sleep(INIT_TIMEOUT);
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                message = self.runtime.recv() => match message {
                    Some(FromRuntime::Next) => return Ok(()),
                    Some(FromRuntime::InitError { error_type, message }) => {
                        self.kill().await;
                        return Err(Outcome::FunctionError { error_type, message });
                    }
                    Some(_) => {}
                    None => return Err(Outcome::ServiceError("the Runtime API stopped".into())),
                },
                status = self.child.wait() => {
                    return Err(Outcome::function_error(
                        "Runtime.ExitError",
                        format!("RequestId: {request_id} Error: Runtime exited with error: {}", exit_text(status)),
                    ));
                }
                _ = &mut timeout => {
                    self.kill().await;
                    return Err(Outcome::function_error(
                        "Runtime.InitTimeout",
                        format!("RequestId: {request_id} Error: the runtime did not ask for an invocation within {} s", INIT_TIMEOUT.as_secs()),
                    ));
                }
            }
        }
    }

    /// Hands `event` to the runtime and waits for its answer, the process's
    /// exit or the deadline. Also says whether the process survived.
    async fn invoke(
        &mut self,
        event: Event,
        deadline: Instant,
        timeout: Duration,
    ) -> (Outcome, bool) {
        let request_id = event.request_id.clone();
        // Whatever the runtime said between invocations (its `/next`) is done with.
        while self.runtime.try_recv().is_ok() {}
        self.api.deliver(event);
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                message = self.runtime.recv() => match message {
                    Some(FromRuntime::Response { request_id: id, body }) if id == request_id => {
                        self.sample_memory();
                        return (Outcome::Response(body), true);
                    }
                    Some(FromRuntime::Error { request_id: id, error_type, message }) if id == request_id => {
                        self.sample_memory();
                        return (Outcome::FunctionError { error_type, message }, true);
                    }
                    Some(FromRuntime::InitError { error_type, message }) => {
                        self.kill().await;
                        return (Outcome::FunctionError { error_type, message }, false);
                    }
                    Some(_) => {}
                    None => return (Outcome::ServiceError("the Runtime API stopped".into()), false),
                },
                status = self.child.wait() => {
                    return (Outcome::function_error(
                        "Runtime.ExitError",
                        format!("RequestId: {request_id} Error: Runtime exited with error: {}", exit_text(status)),
                    ), false);
                }
                _ = &mut sleep => {
                    self.sample_memory();
                    self.kill().await;
                    let now = humantime::format_rfc3339_millis(SystemTime::now());
                    return (Outcome::function_error(
                        "Sandbox.Timedout",
                        format!("{now} {request_id} Task timed out after {:.2} seconds", timeout.as_secs_f64()),
                    ), false);
                }
            }
        }
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn sample_memory(&mut self) {
        if let Some(mb) = self.pid.and_then(peak_rss_mb) {
            self.max_memory_used_mb = Some(mb);
        }
    }

    fn max_memory_used_mb(&mut self) -> Option<u64> {
        self.sample_memory();
        self.max_memory_used_mb
    }

    async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

fn exit_text(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            _ => status.to_string(),
        },
        Err(err) => err.to_string(),
    }
}

/// The peak resident set size of `pid` in MB, Lambda's "Max Memory Used".
fn peak_rss_mb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb.div_ceil(1024))
}

/// Copies a process's output to its log lines (Lambda sends both streams
/// to the function's log).
fn forward_lines(stream: Option<impl AsyncRead + Unpin + Send + 'static>, lines: &Lines) {
    let Some(stream) = stream else { return };
    let lines = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.line(&line);
        }
    });
}

/// Where one execution environment's log lines go: the host's [`Log`],
/// labelled with the function version, and, with telemetry, the
/// environment's log stream in the function's log group, as Lambda writes
/// them (`/aws/lambda/NAME`, `YYYY/MM/DD/[VERSION]ID`).
#[derive(Clone)]
struct Lines {
    label: String,
    log: Log,
    sink: Option<(Arc<Telemetry>, String, String)>,
}

impl Lines {
    fn line(&self, text: &str) {
        self.log.line(format_args!("{} {text}", self.label));
        if let Some((telemetry, group, stream)) = &self.sink {
            telemetry.log(group, stream, text);
        }
    }
}

/// Where log lines go: stderr (`cargo xtask dev`), or a file (`cargo xtask
/// verify`, whose own output is its table).
#[derive(Clone, Default)]
pub struct Log(Option<Arc<Mutex<std::fs::File>>>);

impl Log {
    pub fn stderr() -> Log {
        Log(None)
    }

    /// Appends to `path`, creating it.
    pub fn file(path: &std::path::Path) -> Result<Log> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Log(Some(Arc::new(Mutex::new(file)))))
    }

    /// Writes `line` whole, in one write: formatted straight into an
    /// unbuffered stderr or file, each of its pieces would be a write of
    /// its own, and whoever reads the log meanwhile (a test waiting for a
    /// line, `tail -f`) could read half a line.
    pub fn line(&self, line: fmt::Arguments) {
        use std::io::Write;
        let line = format!("{line}\n");
        let _ = match &self.0 {
            None => std::io::stderr().lock().write_all(line.as_bytes()),
            Some(file) => file.lock().expect("log lock").write_all(line.as_bytes()),
        };
    }
}

/// The environment Lambda gives a function's process: its reserved
/// variables, the function's configured variables (which cannot override
/// them) and the local stack's `extra` ones (the function's take precedence).
pub fn lambda_environment(
    function: &FunctionVersion,
    runtime_api: &str,
    task_root: &Path,
    log_stream: &str,
    extra: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = extra.iter().cloned().collect();
    env.extend(function.environment.clone());
    let stream = log_stream.to_owned();
    let task_root = task_root.display().to_string();
    let reserved = [
        ("AWS_LAMBDA_FUNCTION_NAME", function.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", function.version.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            function.memory_mb.to_string(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", function.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", stream),
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", function.region.clone()),
        ("AWS_DEFAULT_REGION", function.region.clone()),
        ("LAMBDA_TASK_ROOT", task_root.clone()),
        ("LAMBDA_RUNTIME_DIR", task_root),
        ("_HANDLER", artifact::ENTRY.to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".to_owned()),
    ];
    for (key, value) in reserved {
        env.insert(key.to_owned(), value);
    }
    env
}

/// A new execution environment's log stream, as Lambda names it:
/// `YYYY/MM/DD/[VERSION]` and 32 hex digits.
pub fn log_stream_name(version: &str) -> String {
    let today = humantime::format_rfc3339(SystemTime::now()).to_string();
    format!(
        "{}/[{version}]{}",
        today[..10].replace('-', "/"),
        new_request_id().replace('-', "")
    )
}

/// A request id in Lambda's format (a random UUID).
pub fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Two independently keyed SipHashes of a counter and the clock: unique
    // and unpredictable enough for ids, without a UUID crate.
    let mut halves = [0u64; 2];
    for half in &mut halves {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        *half = hasher.finish();
    }
    let bits = (u128::from(halves[0]) << 64 | u128::from(halves[1])) & !(0xf000 << 64 | 0xc << 60)
        | (0x4000 << 64 | 0x8 << 60);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Deployment packages by `CodeSha256`: the zips `cargo xtask build` wrote
/// (`<fn>-<sha256 hex>.zip`), unpacked once each under the cache.
#[derive(Debug, Clone)]
pub struct CodeStore {
    pub artifacts: PathBuf,
    pub cache: PathBuf,
}

impl CodeStore {
    /// The directory holding the unpacked package whose SHA-256 is
    /// `code_sha256` (base64, as Lambda reports it).
    pub fn unpacked(&self, code_sha256: &str) -> Result<PathBuf> {
        use base64::Engine;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(code_sha256)
            .ok()
            .filter(|digest| digest.len() == 32)
            .with_context(|| format!("`{code_sha256}` is not a base64 SHA-256"))?;
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        let dir = self.cache.join(&hex);
        if dir.join(artifact::ENTRY).is_file() {
            return Ok(dir);
        }
        let suffix = format!("-{hex}.zip");
        let zip = std::fs::read_dir(&self.artifacts)
            .with_context(|| format!("reading {}", self.artifacts.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .find(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().ends_with(&suffix))
            })
            .with_context(|| {
                format!(
                    "no zip with CodeSha256 {code_sha256} in {}: this code was not built here \
                     (`cargo xtask build` the source it came from)",
                    self.artifacts.display()
                )
            })?;
        let bytes = std::fs::read(&zip)?;
        if artifact::sha256(&bytes).base64 != code_sha256 {
            bail!(
                "{} does not hash to its name's SHA-256: rebuild it",
                zip.display()
            );
        }
        // Unpacked aside, in a directory of this call's own, then moved into
        // place in one rename: concurrent cold starts of the same code (in
        // this process or another) never see, share or remove each other's
        // half-written files.
        static UNPACKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = UNPACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staging = self
            .cache
            .join(format!(".{hex}.{}.{call}", std::process::id()));
        std::fs::create_dir_all(&staging)?;
        zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .and_then(|mut archive| archive.extract(&staging))
            .with_context(|| format!("unpacking {}", zip.display()))
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&staging);
            })?;
        match std::fs::rename(&staging, &dir) {
            Ok(()) => {}
            // Another unpack of the same package moved in first.
            Err(_) if dir.join(artifact::ENTRY).is_file() => {
                let _ = std::fs::remove_dir_all(&staging);
            }
            Err(err) => return Err(err).context(format!("moving into {}", dir.display())),
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function() -> FunctionVersion {
        FunctionVersion {
            name: "app-status".into(),
            version: "3".into(),
            arn: "arn:aws:lambda:eu-west-1:123456789012:function:app-status".into(),
            code_sha256: String::new(),
            configuration: String::new(),
            memory_mb: 256,
            timeout: Duration::from_secs(3),
            environment: BTreeMap::from([
                ("TABLE".to_owned(), "t".to_owned()),
                ("AWS_REGION".to_owned(), "us-west-2".to_owned()),
            ]),
            region: "eu-west-1".into(),
            description: String::new(),
            state: "Active/Successful".into(),
            reserved_concurrency: None,
        }
    }

    #[test]
    fn executions_are_limited_by_reserved_or_shared_concurrency() {
        let host = Host::new(
            PathBuf::new(),
            PathBuf::new(),
            Vec::new(),
            Log::stderr(),
            Limits {
                concurrency: 2,
                idle_timeout: Duration::from_secs(60),
            },
            None,
        );
        let named = |name: &str, reserved| FunctionVersion {
            name: name.into(),
            reserved_concurrency: reserved,
            ..function()
        };
        let (a, b, c) = (named("a", None), named("b", None), named("c", Some(1)));
        // The shared concurrency counts every unreserved function together.
        let first = host.admit(&a).unwrap();
        let _second = host.admit(&b).unwrap();
        assert_eq!(
            host.admit(&a).err().as_deref(),
            Some("ConcurrentInvocationLimitExceeded")
        );
        // A reservation is the function's own: it neither takes from nor
        // waits for the shared concurrency, across versions.
        let reserved = host.admit(&c).unwrap();
        let other_version = FunctionVersion {
            version: "9".into(),
            ..c.clone()
        };
        assert_eq!(
            host.admit(&other_version).err().as_deref(),
            Some("ReservedFunctionConcurrentInvocationLimitExceeded")
        );
        // An execution that ends gives its share back.
        drop(first);
        let _again = host.admit(&a).unwrap();
        drop(reserved);
        let _c = host.admit(&c).unwrap();
        // Reserved concurrency 0 throttles every invocation, as on Lambda.
        assert!(host.admit(&named("d", Some(0))).is_err());
    }

    #[test]
    fn the_environment_is_lambdas_and_the_functions_own() {
        let extra = [
            (
                "AWS_ENDPOINT_URL".to_owned(),
                "http://127.0.0.1:4566".to_owned(),
            ),
            ("TABLE".to_owned(), "overridden".to_owned()),
        ];
        let stream = log_stream_name("3");
        let env = lambda_environment(
            &function(),
            "127.0.0.1:9001",
            Path::new("/code"),
            &stream,
            &extra,
        );
        assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "app-status");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "3");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
        assert_eq!(env["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert_eq!(env["LAMBDA_TASK_ROOT"], "/code");
        assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/app-status");
        assert_eq!(env["AWS_LAMBDA_LOG_STREAM_NAME"], stream);
        let (date, rest) = stream.split_at(10);
        assert!(date.chars().filter(|c| *c == '/').count() == 2, "{stream}");
        let id = rest.strip_prefix("/[3]").expect("the version in brackets");
        assert!(
            id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{stream}"
        );
        // The function's variables, which cannot override Lambda's, and
        // which win over the local stack's.
        assert_eq!(env["TABLE"], "t");
        assert_eq!(env["AWS_REGION"], "eu-west-1");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:4566");
    }

    #[test]
    fn reports_read_like_lambdas() {
        let mut report = Report {
            request_id: "r-1".into(),
            duration: Duration::from_micros(1_234),
            init_duration: None,
            memory_size_mb: 128,
            max_memory_used_mb: Some(14),
        };
        assert_eq!(
            report.to_string(),
            "REPORT RequestId: r-1\tDuration: 1.23 ms\tBilled Duration: 2 ms\t\
             Memory Size: 128 MB\tMax Memory Used: 14 MB"
        );
        report.init_duration = Some(Duration::from_micros(8_500));
        assert!(report.to_string().ends_with(
            "Billed Duration: 10 ms\tMemory Size: 128 MB\tMax Memory Used: 14 MB\tInit Duration: 8.50 ms"
        ));
    }

    #[test]
    fn request_ids_are_distinct_uuids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4", "version 4: {a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn code_is_found_by_its_sha256_and_checked() {
        let root = std::env::temp_dir().join(format!("xtask-code-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("artifacts")).unwrap();
        let zip = artifact::package(b"#!/bin/sh\necho hi\n").unwrap();
        let digest = artifact::sha256(&zip);
        std::fs::write(root.join(format!("artifacts/f-{}.zip", digest.hex)), &zip).unwrap();
        let store = CodeStore {
            artifacts: root.join("artifacts"),
            cache: root.join("cache"),
        };
        let dir = store.unpacked(&digest.base64).unwrap();
        let bootstrap = dir.join(artifact::ENTRY);
        assert_eq!(std::fs::read(&bootstrap).unwrap(), b"#!/bin/sh\necho hi\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&bootstrap).unwrap().permissions().mode() & 0o777,
            0o755
        );

        let other = artifact::sha256(b"other").base64;
        let err = store.unpacked(&other).unwrap_err().to_string();
        assert!(err.contains("was not built here"), "{err}");
        assert!(store.unpacked("not base64!").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Two versions with the same code cold-starting at once (staging's
    /// `$LATEST` and prod's new version right after a publish) unpack the
    /// same package together: each gets the whole of it.
    #[test]
    fn concurrent_unpacks_of_one_package_each_get_all_of_it() {
        let root = std::env::temp_dir().join(format!("xtask-unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("artifacts")).unwrap();
        // Big enough that an unpack takes a while.
        let binary: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let zip = artifact::package(&binary).unwrap();
        let digest = artifact::sha256(&zip);
        std::fs::write(root.join(format!("artifacts/f-{}.zip", digest.hex)), &zip).unwrap();
        for round in 0..10 {
            let store = CodeStore {
                artifacts: root.join("artifacts"),
                cache: root.join(format!("cache-{round}")),
            };
            let dirs: Vec<Result<PathBuf>> = std::thread::scope(|scope| {
                let unpacks: Vec<_> = (0..6)
                    .map(|_| scope.spawn(|| store.unpacked(&digest.base64)))
                    .collect();
                unpacks.into_iter().map(|t| t.join().unwrap()).collect()
            });
            for dir in dirs {
                let dir = dir.unwrap_or_else(|err| panic!("round {round}: {err:#}"));
                let bytes = std::fs::read(dir.join(artifact::ENTRY)).unwrap();
                assert!(bytes == binary, "round {round}: a partial bootstrap");
            }
            let left: Vec<_> = std::fs::read_dir(&store.cache)
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            assert_eq!(
                left,
                [std::ffi::OsString::from(&digest.hex)],
                "scratch left behind"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
