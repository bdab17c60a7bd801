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
/// (the launcher uses its `werkzeug_app` module to serve it one request at a
/// time).
const MOTO: &str = "moto[server]==5.2.5";
/// Its version, which our own virtualenv must hold (a Python of the user's
/// may hold any moto that serves).
const MOTO_VERSION: &str = "5.2.5";
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

/// The Python to run the emulator with: `$MOTO_PYTHON` (a virtualenv's,
/// say), else `python3`.
fn base_python() -> String {
    std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// The virtualenv xtask makes for moto where pip refuses to install into
/// the base Python (PEP 668's "externally-managed-environment", as on
/// Debian and Ubuntu): `target/moto-venv` [`$XTASK_MOTO_VENV`].
fn venv_dir() -> PathBuf {
    std::env::var_os("XTASK_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::project_root().join("target/moto-venv"))
}

/// A Python that can serve moto: the base Python if it has moto, else our
/// virtualenv if it has, else the base Python once pip installed moto into
/// it, else (pip refusing an externally managed Python) our virtualenv once
/// made and moto installed there. `cargo xtask test` hands the answer to
/// the tests as `$MOTO_PYTHON`.
pub fn ensure_moto(sh: &Shell) -> Result<String> {
    let base = base_python();
    let venv = venv_dir();
    let venv_python = venv.join("bin/python").display().to_string();
    let has_moto = |python: &str| {
        cmd!(sh, "{python} -c {MOTO_IMPORT}")
            .quiet()
            .ignore_stderr()
            .run()
            .is_ok()
    };
    let pinned = format!("import moto, sys; sys.exit(moto.__version__ != {MOTO_VERSION:?})");
    let has_pinned_moto =
        |python: &str| has_moto(python) && cmd!(sh, "{python} -c {pinned}").quiet().run().is_ok();
    if has_moto(&base) {
        return Ok(base);
    }
    if has_pinned_moto(&venv_python) {
        return Ok(venv_python);
    }
    eprintln!("==> installing the AWS emulator: {base} -m pip install '{MOTO}'");
    let output = cmd!(sh, "{base} -m pip install --quiet {MOTO}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("cannot run {base}: Python 3 with pip is required"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        anyhow::ensure!(
            has_moto(&base),
            "moto was installed but {base} cannot import it: check `{base} -m pip show moto`"
        );
        return Ok(base);
    }
    if !stderr.contains("externally-managed-environment") {
        bail!(
            "installing moto failed ({base} -m pip install '{MOTO}'). Python 3 with pip is \
             required; set MOTO_PYTHON to use another Python.\n{stderr}"
        );
    }
    eprintln!(
        "==> {base} is externally managed (PEP 668): installing moto into a virtualenv of \
         our own, {}",
        venv.display()
    );
    // Made aside and moved into place, so two commands at once (or one
    // interrupted) never leave or use half a virtualenv.
    let aside = venv.with_extension(format!("new{}", std::process::id()));
    let aside_dir = aside.display().to_string();
    let aside_python = format!("{aside_dir}/bin/python");
    make_venv(sh, &base, &aside_dir)?;
    cmd!(sh, "{aside_python} -m pip install --quiet {MOTO}")
        .run()
        .with_context(|| {
            format!("installing moto into the virtualenv {aside_dir} failed (above)")
        })?;
    if has_pinned_moto(&venv_python) {
        // Another command made it meanwhile.
        let _ = std::fs::remove_dir_all(&aside);
    } else {
        let _ = std::fs::remove_dir_all(&venv);
        std::fs::rename(&aside, &venv)
            .with_context(|| format!("moving {aside_dir} to {}", venv.display()))?;
    }
    anyhow::ensure!(
        has_pinned_moto(&venv_python),
        "moto was installed but {venv_python} cannot import it: check `{venv_python} -m pip show moto`"
    );
    Ok(venv_python)
}

/// `base -m venv dir`, with pip in it; where the distribution leaves
/// `ensurepip` out (Debian without `python3-venv`), a virtualenv without
/// pip that the base Python's pip installs into (`pip --python`).
pub fn make_venv(sh: &Shell, base: &str, dir: &str) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    if cmd!(sh, "{base} -m venv {dir}").quiet().run().is_ok() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    cmd!(sh, "{base} -m venv --without-pip {dir}")
        .quiet()
        .run()
        .with_context(|| {
            format!(
                "{base} cannot make a virtualenv: install its venv module (Debian and Ubuntu: \
                 `apt-get install python3-venv`), or set MOTO_PYTHON to a Python with moto"
            )
        })?;
    // pip itself, into the virtualenv, by the base Python's pip.
    let python = format!("{dir}/bin/python");
    cmd!(sh, "{base} -m pip --python {python} install --quiet pip")
        .run()
        .with_context(|| {
            format!(
                "{base}'s pip cannot install into the virtualenv {dir} (pip 22.3 or newer is \
                 needed): install python3-venv, or set MOTO_PYTHON to a Python with moto"
            )
        })?;
    Ok(())
}

impl crate::LocalDir {
    fn emulator_file(&self) -> PathBuf {
        self.0.join("emulator.json")
    }

    fn emulator_log(&self) -> PathBuf {
        self.0.join("emulator.log")
    }
}
