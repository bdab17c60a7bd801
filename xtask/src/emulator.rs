//! `cargo xtask emulator`: the local AWS emulator (moto) on loopback.
//!
//! One emulator per local directory (`target/local` unless `XTASK_LOCAL_DIR`
//! says otherwise), started in the background and recorded in
//! `emulator.json` there. moto keeps everything in memory, so the local
//! Terraform state beside it describes this emulator and no other: starting a
//! new emulator starts an empty local world (the state and the local prod
//! pin are reset with it).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use xshell::{Shell, cmd};

/// The emulator as pip names it, at the version the project is tested with
/// (the launcher uses its `werkzeug_app` module to serve it serially).
const MOTO: &str = "moto[server]==5.2.5";
/// What the launcher imports.
const MOTO_IMPORT: &str = "import werkzeug.serving; from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app";
/// Serves moto one request at a time (the script says why).
const SERVE_MOTO: &str = include_str!("serve_moto.py");
/// The default address, the one AWS emulators customarily use.
const DEFAULT_PORT: u16 = 4566;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Start the emulator in the background (an empty one: local state is reset); no-op if it runs.
    Start {
        /// Loopback port to listen on (0: any free port).
        #[arg(long, default_value_t = DEFAULT_PORT)]
        port: u16,
    },
    /// Stop the emulator (everything in it is gone).
    Stop,
    /// Say whether the emulator runs, and where; exit code 1 if it does not.
    Status,
}

pub fn run(sh: &Shell, local: &crate::LocalDir, args: Args) -> Result<()> {
    match args.command {
        Action::Start { port } => {
            match Emulator::running(local)? {
                Some(emulator) => eprintln!(
                    "the emulator already runs at {} (pid {})",
                    emulator.endpoint, emulator.pid
                ),
                None => {
                    let emulator = Emulator::start(sh, local, port)?;
                    eprintln!(
                        "the emulator runs at {} (pid {}); log: {}",
                        emulator.endpoint,
                        emulator.pid,
                        local.emulator_log().display()
                    );
                }
            }
            Ok(())
        }
        Action::Stop => {
            match Emulator::running(local)? {
                Some(emulator) => {
                    emulator.stop(sh)?;
                    eprintln!("stopped the emulator at {}", emulator.endpoint);
                }
                None => eprintln!("the emulator is not running"),
            }
            Ok(())
        }
        Action::Status => match Emulator::running(local)? {
            Some(emulator) => {
                println!("running at {} (pid {})", emulator.endpoint, emulator.pid);
                Ok(())
            }
            None => {
                println!("not running: `cargo xtask emulator start` starts it");
                std::process::exit(1);
            }
        },
    }
}

/// A running emulator, as `emulator.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Emulator {
    pub pid: u32,
    pub endpoint: String,
}

impl Emulator {
    /// The emulator recorded in `local`, if it still runs.
    pub fn running(local: &crate::LocalDir) -> Result<Option<Emulator>> {
        let path = local.emulator_file();
        let Ok(text) = fs::read_to_string(&path) else {
            return Ok(None);
        };
        let emulator: Emulator =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        Ok(emulator.is_alive().then_some(emulator))
    }

    /// The running emulator, started (empty) if there is none.
    pub fn ensure(sh: &Shell, local: &crate::LocalDir) -> Result<Emulator> {
        match Emulator::running(local)? {
            Some(emulator) => Ok(emulator),
            None => {
                let emulator = Emulator::start(sh, local, DEFAULT_PORT)?;
                eprintln!(
                    "==> started the AWS emulator at {} (empty: the local stack starts from scratch)",
                    emulator.endpoint
                );
                Ok(emulator)
            }
        }
    }

    fn is_alive(&self) -> bool {
        // Our process (not a recycled pid) and still answering.
        let ours = fs::read(format!("/proc/{}/cmdline", self.pid))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("serve_moto"));
        ours && TcpStream::connect(self.address()).is_ok()
    }

    fn address(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }

    fn start(sh: &Shell, local: &crate::LocalDir, port: u16) -> Result<Emulator> {
        let python = ensure_moto(sh)?;
        let port = match port {
            0 => TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
            port => port,
        };
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            bail!(
                "127.0.0.1:{port} is already in use (by another program, or the emulator of \
                 another local directory): stop it, or pass `--port` to `cargo xtask emulator start`"
            );
        }
        local.reset()?;
        let log = local.emulator_log();
        let child = Command::new(&python)
            .args(["-c", SERVE_MOTO, "127.0.0.1", &port.to_string()])
            // The launcher's marker, so a recycled pid is never mistaken for it.
            .arg("serve_moto")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            // Its own process group: a Ctrl-C in this terminal leaves it running.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot run {python}: Python 3 is required"))?;
        let emulator = Emulator {
            pid: child.id(),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        wait_listening(child, port, &log)?;
        fs::write(
            local.emulator_file(),
            serde_json::to_string_pretty(&emulator)? + "\n",
        )?;
        Ok(emulator)
    }

    fn stop(&self, sh: &Shell) -> Result<()> {
        let pid = self.pid.to_string();
        cmd!(sh, "kill {pid}").quiet().run()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

fn wait_listening(mut child: std::process::Child, port: u16, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the emulator exited ({status}) before listening on 127.0.0.1:{port}. Its log ({}):\n{}",
                log.display(),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the emulator did not listen on 127.0.0.1:{port} within 60 s; its log: {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The Python that runs the emulator: `$MOTO_PYTHON` (a virtualenv's, say),
/// else `python3`.
fn python() -> String {
    std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Makes sure [`python`] can serve moto, installing it with pip if not.
pub fn ensure_moto(sh: &Shell) -> Result<String> {
    let python = python();
    let installed = || {
        cmd!(sh, "{python} -c {MOTO_IMPORT}")
            .quiet()
            .ignore_stderr()
            .run()
            .is_ok()
    };
    if installed() {
        return Ok(python);
    }
    eprintln!("==> installing the AWS emulator: {python} -m pip install '{MOTO}'");
    cmd!(sh, "{python} -m pip install --quiet {MOTO}")
        .run()
        .context(
            "installing moto failed. Python 3 with pip is required; where pip refuses to install \
         into the system Python (\"externally-managed-environment\"), use a virtualenv: \
         `python3 -m venv target/venv && export MOTO_PYTHON=$PWD/target/venv/bin/python`",
        )?;
    anyhow::ensure!(
        installed(),
        "moto was installed but {python} cannot import it: check `{python} -m pip show moto`"
    );
    Ok(python)
}

impl crate::LocalDir {
    fn emulator_file(&self) -> PathBuf {
        self.0.join("emulator.json")
    }

    fn emulator_log(&self) -> PathBuf {
        self.0.join("emulator.log")
    }
}
