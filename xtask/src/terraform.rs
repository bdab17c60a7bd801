//! `cargo xtask apply` and `cargo xtask tf`: the one Terraform configuration
//! in `terraform/`, on the local stack (the default) or on AWS (`--aws`).
//!
//! AWS is `terraform/` itself: plain `terraform -chdir=terraform apply` and
//! `cargo xtask apply --aws` do the same thing with the user's credentials
//! and backend. The local stack is a working directory of its own
//! (`<local dir>/terraform`) holding links to every `terraform/*.tf`, plus
//! what only the local stack has: `local_override.tf` (emulator endpoints,
//! fake credentials, a local backend), its artifacts directory, its own prod
//! pin and its own state. Nothing of it can reach AWS, and nothing done to
//! AWS touches it.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use xshell::{Shell, cmd};

use crate::LocalDir;
use crate::emulator::Emulator;

/// Which world a command acts on.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Act on real AWS (terraform/ with your credentials, backend and prod pin) instead of the local stack.
    #[arg(long)]
    pub aws: bool,
    /// Directory of the build manifest the functions come from [default: target/lambda].
    #[arg(long, value_name = "DIR", env = "XTASK_ARTIFACTS_DIR")]
    pub artifacts_dir: Option<PathBuf>,
    /// How long to wait for another command's state lock (Terraform's `-lock-timeout`: 0s, 30s, 5m...).
    #[arg(long, value_name = "DURATION", env = "XTASK_LOCK_TIMEOUT", default_value = DEFAULT_LOCK_TIMEOUT, value_parser = parse_lock_timeout)]
    pub lock_timeout: String,
}

/// How long a command waits for another's state lock unless told.
const DEFAULT_LOCK_TIMEOUT: &str = "2m";

impl TargetArgs {
    /// The local stack, its functions from `artifacts_dir`, the default lock timeout.
    pub fn local(artifacts_dir: PathBuf) -> TargetArgs {
        let lock_timeout = std::env::var("XTASK_LOCK_TIMEOUT")
            .ok()
            .and_then(|text| parse_lock_timeout(&text).ok())
            .unwrap_or_else(|| DEFAULT_LOCK_TIMEOUT.to_owned());
        TargetArgs {
            aws: false,
            artifacts_dir: Some(artifacts_dir),
            lock_timeout,
        }
    }
}

/// A `-lock-timeout` Terraform takes: a Go duration, a sequence of numbers
/// with units (`0s`, `30s`, `1m30s`, `1.5h`, `500ms`), or `0`.
pub fn parse_lock_timeout(text: &str) -> Result<String, String> {
    let refused = || format!("`{text}` is not a duration such as 0s, 30s, 1m30s or 1h");
    if text == "0" {
        return Ok(text.to_owned());
    }
    let mut rest = text;
    let mut seconds = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(refused)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| refused())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(refused()),
        };
        seconds += number * scale;
        rest = &rest[unit_len..];
    }
    // Go's durations stop at about 290 years.
    if text.is_empty() || seconds > 9.2e9 {
        return Err(refused());
    }
    Ok(text.to_owned())
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Show what would change (`terraform plan`) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// On AWS, apply without asking for confirmation (the local stack never asks).
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, clap::Args)]
pub struct TfArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Terraform's own arguments, after `--` (e.g. `-- plan`, `-- output -json`, `-- state list`).
    #[arg(last = true, required = true, value_name = "TERRAFORM_ARGS")]
    args: Vec<OsString>,
}

/// `cargo xtask apply`: create or update everything the configuration
/// declares; prod only as its pin says ([`Terraform::checked_plan`]).
pub fn apply(sh: &Shell, local: &LocalDir, args: ApplyArgs) -> Result<()> {
    let terraform = Terraform::new(sh, local, &args.target)?;
    terraform.init(sh)?;
    let (file, _) = terraform.checked_plan(sh)?;
    terraform
        .command(sh)
        .args(["show"])
        .arg(file.as_os_str())
        .run()
        .context("terraform show failed (above)")?;
    if args.dry_run {
        println!("dry run: nothing was applied");
        return Ok(());
    }
    if terraform.aws && !args.yes {
        eprint!("Apply this plan to AWS? Only 'yes' will be accepted: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            bail!("not applied (answer `yes`, or pass --yes)");
        }
    }
    {
        terraform
            .command(sh)
            .args(["apply", "-input=false"])
            .arg(terraform.lock_timeout())
            .arg(file.as_os_str())
            .run()
            .context("terraform apply failed (above)")?;
        if !terraform.aws {
            // The emulator keeps no deployment snapshots; the local gateway
            // serves a stage left at this revision from this copy.
            if let Err(err) = crate::gateway::config::record_applied(local) {
                eprintln!("warning: the applied API configuration was not recorded: {err:#}");
            }
        }
    }
    Ok(())
}

/// Applies to the local stack, printing Terraform's summary line only (all
/// of its output if it fails).
pub fn apply_quietly(sh: &Shell, local: &LocalDir, target: &TargetArgs) -> Result<()> {
    let terraform = Terraform::new(sh, local, target)?;
    terraform.init(sh)?;
    eprintln!(
        "==> terraform apply (local stack, {})",
        terraform.dir.display()
    );
    let summary = terraform.apply_local(sh, &[])?;
    eprintln!("{summary}");
    Ok(())
}

impl Terraform {
    /// `terraform apply -auto-approve ARGS` on the local stack; Terraform's
    /// summary line ("Apply complete! Resources: ..."), or all of its output
    /// in the error.
    ///
    /// A full apply (no `args`) applies the [`Terraform::checked_plan`]; a
    /// targeted one (`-target` a function's code) cannot reach prod.
    pub fn apply_local(&self, sh: &Shell, args: &[String]) -> Result<String> {
        assert!(!self.aws, "apply_local is for the local stack");
        let plan = match args.is_empty() {
            true => Some(self.checked_plan(sh)?.0),
            false => None,
        };
        let output = self
            .command(sh)
            // Another command applying here (a publish, a watch cycle) holds
            // the state lock: wait for it rather than fail.
            .args(["apply", "-input=false", "-no-color"])
            .arg(self.lock_timeout())
            .args(if plan.is_some() {
                None
            } else {
                Some("-auto-approve")
            })
            .args(args)
            // Borrowed: the plan file is removed when `plan` drops.
            .args(plan.as_deref().map(Path::as_os_str))
            .ignore_status()
            .quiet()
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "terraform apply failed:\n{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout
            .lines()
            .find(|line| line.starts_with("Apply complete!"))
            .unwrap_or("Apply complete!")
            .to_owned())
    }
}

/// `cargo xtask tf`: any Terraform command, in the target's working directory
/// with its settings; exits with Terraform's exit code.
pub fn tf(sh: &Shell, local: &LocalDir, args: TfArgs) -> Result<()> {
    let terraform = Terraform::new(sh, local, &args.target)?;
    terraform.init(sh)?;
    let mut command: std::process::Command = terraform.command(sh).args(&args.args).into();
    // The lock timeout for the commands that take the state lock, before
    // any of the user's own arguments (a `-lock-timeout` of theirs wins).
    for verb in ["plan", "apply", "destroy", "refresh", "import"] {
        let key = format!("TF_CLI_ARGS_{verb}");
        let theirs = std::env::var(&key).unwrap_or_default();
        command.env(
            key,
            format!("{} {theirs}", terraform.lock_timeout()).trim_end(),
        );
    }
    eprintln!("$ {command:?}");
    let status = command.status().context("cannot run terraform")?;
    std::process::exit(status.code().unwrap_or(1))
}

/// Fails with what to do when Terraform is not installed.
pub fn require(sh: &Shell) -> Result<()> {
    cmd!(sh, "terraform version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .context(
            "terraform is required: install Terraform 1.11 \
             (https://developer.hashicorp.com/terraform/install)",
        )
}

/// Terraform, set up for one target.
pub struct Terraform {
    /// The working directory (`-chdir`).
    pub dir: PathBuf,
    pub aws: bool,
    env: Vec<(&'static str, OsString)>,
    plugin_dir: Option<PathBuf>,
    /// `-lock-timeout` ([`TargetArgs::lock_timeout`]).
    lock_timeout: String,
    /// The emulator's endpoint (the local stack).
    endpoint: Option<String>,
}

impl Terraform {
    /// Terraform for the target `args` names: on the local stack, the
    /// emulator is started if need be and the working directory brought up
    /// to date with `terraform/`.
    pub fn new(sh: &Shell, local: &LocalDir, args: &TargetArgs) -> Result<Terraform> {
        Terraform::set_up(sh, local, args, true)
    }

    /// Terraform for a target that must exist already: on the local stack,
    /// a running emulator (a new one would be empty, and starting one
    /// resets the local state).
    pub fn existing(sh: &Shell, local: &LocalDir, args: &TargetArgs) -> Result<Terraform> {
        Terraform::set_up(sh, local, args, false)
    }

    fn set_up(sh: &Shell, local: &LocalDir, args: &TargetArgs, start: bool) -> Result<Terraform> {
        let source = sh.current_dir().join("terraform");
        let artifacts = match &args.artifacts_dir {
            Some(dir) => std::path::absolute(dir)?,
            None => sh.current_dir().join("target/lambda"),
        };
        if !artifacts.join("manifest.json").is_file() {
            bail!(
                "no build manifest in {}: run `cargo xtask build` first",
                artifacts.display()
            );
        }
        require(sh)?;
        let mirror = provider_mirror()?;
        if args.aws {
            let mut env = Vec::new();
            if args.artifacts_dir.is_some() {
                env.push(("TF_VAR_artifacts_dir", artifacts.into_os_string()));
            }
            return Ok(Terraform {
                dir: source,
                aws: true,
                env,
                plugin_dir: mirror,
                lock_timeout: args.lock_timeout.clone(),
                endpoint: None,
            });
        }
        let emulator = if start {
            Emulator::ensure(sh, local)?
        } else {
            Emulator::running(local)?.context(
                "the local stack is not running (no emulator): `cargo xtask dev` or `cargo xtask \
                 apply` starts it, or pass --aws for AWS",
            )?
        };
        let dir = local.terraform_dir();
        sync_working_dir(&source, &dir, &emulator.endpoint, &artifacts)?;
        let mut env = Vec::new();
        if let Some(mirror) = &mirror {
            // Only the mirror: the local stack never needs the registry.
            let config = dir.join("cli.tfrc");
            let mirror = mirror.display().to_string();
            fs::write(
                &config,
                format!(
                    "provider_installation {{\n  filesystem_mirror {{\n    path = {}\n  }}\n}}\n",
                    json!(mirror)
                ),
            )?;
            env.push(("TF_CLI_CONFIG_FILE", config.into_os_string()));
        }
        Ok(Terraform {
            dir,
            aws: false,
            env,
            plugin_dir: None,
            lock_timeout: args.lock_timeout.clone(),
            endpoint: Some(emulator.endpoint.clone()),
        })
    }

    /// `terraform -chdir=DIR` with the target's environment.
    pub fn command<'a>(&self, sh: &'a Shell) -> xshell::Cmd<'a> {
        let dir = &self.dir;
        let mut command = cmd!(sh, "terraform -chdir={dir}");
        if !self.aws {
            // Nothing of the developer's AWS set-up reaches the local stack's
            // Terraform: no profile, keys, endpoints or config files (every
            // provider gets the emulator and fake keys from the override).
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("AWS_") {
                    command = command.env_remove(key);
                }
            }
            // A service the override does not list goes to the emulator too.
            if let Some(endpoint) = &self.endpoint {
                command = command.env("AWS_ENDPOINT_URL", endpoint);
            }
            command = command
                .env("AWS_CONFIG_FILE", "/dev/null")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
                .env("AWS_EC2_METADATA_DISABLED", "true");
        }
        for (key, value) in &self.env {
            command = command.env(key, value);
        }
        command
    }

    /// `-lock-timeout=...`: how long a plan or apply waits for another
    /// command's state lock before it gives up, saying who holds it.
    pub fn lock_timeout(&self) -> String {
        format!("-lock-timeout={}", self.lock_timeout)
    }

    /// Where this target's plans are written: never in `terraform/`.
    pub fn scratch_dir(&self) -> Result<PathBuf> {
        let dir = if self.aws {
            crate::project_root().join("target/aws")
        } else {
            self.dir
                .parent()
                .context("the local working directory has a parent")?
                .join("release")
        };
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// A file of this process's own in [`Terraform::scratch_dir`], removed
    /// when dropped: two commands at once (two applies, say) never read or
    /// overwrite each other's plan.
    pub fn scratch_file(&self, name: &str) -> Result<ScratchFile> {
        ScratchFile::new(&self.scratch_dir()?, name)
    }

    /// `terraform plan` of everything, saved, refused if it moves prod
    /// anywhere but where the pin in the working directory says
    /// ([`crate::release::plan::Plan::prod_mismatches`]): an edit of a prod
    /// alias, deployment or stage in `terraform/` never reaches prod through
    /// an apply; prod moves only through `publish` and `rollback`, whose
    /// plans are held to the same rules for their candidate pin.
    pub fn checked_plan(&self, sh: &Shell) -> Result<(ScratchFile, crate::release::plan::Plan)> {
        use crate::release::plan::{self, ProdTarget};
        let file = self.scratch_file("apply.tfplan")?;
        let (_, planned) = plan::make(sh, self, &file, None)?;
        let pin = crate::release::Release::read(&self.dir.join(PIN_FILE))?;
        let api = planned
            .prior
            .get("aws_api_gateway_rest_api.this")
            .and_then(|api| api["id"].as_str());
        let region = planned.outputs.get("region").and_then(Value::as_str);
        let functions: std::collections::BTreeMap<String, String> = planned
            .outputs
            .get("function_names")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(function, name)| Some((function.clone(), name.as_str()?.to_owned())))
            .collect();
        let mismatches = planned.prod_mismatches(&ProdTarget {
            pin: &pin,
            functions: &functions,
            api: api.zip(region),
            stage_settings: true,
        });
        if !mismatches.is_empty() {
            bail!(
                "the plan would move prod somewhere its pin ({}) does not say, so nothing was \
                 applied:\n  {}\nProd moves only through `cargo xtask publish` and `rollback`: \
                 undo that change to terraform/ (the prod aliases, deployment and stage follow \
                 the pin).",
                self.dir.join(PIN_FILE).display(),
                mismatches.join("\n  ")
            );
        }
        Ok((file, planned))
    }

    /// The digest of what `terraform init` reads in the local working
    /// directory: its `.tf` files, the lock file, the CLI configuration.
    fn init_inputs(&self) -> Result<String> {
        let mut read = Vec::new();
        let mut names: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for path in names {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(".tf") || name == ".terraform.lock.hcl" || name == "cli.tfrc" {
                read.extend_from_slice(name.as_bytes());
                read.push(0);
                read.extend(fs::read(&path)?);
                read.push(0);
            }
        }
        Ok(crate::artifact::sha256(&read).hex)
    }

    /// `terraform init`, from the provider mirror when there is one; quiet
    /// unless it fails.
    pub fn init(&self, sh: &Shell) -> Result<()> {
        let plugin_dir = self
            .plugin_dir
            .as_ref()
            .map(|dir| format!("-plugin-dir={}", dir.display()));
        // On AWS the state lives in the bucket `bootstrap` made, locked by
        // a lock file beside it; the local stack's override declares a
        // local backend instead.
        let backend_config = match self.aws {
            true => {
                let local_state = self.dir.join("terraform.tfstate");
                if local_state.is_file() {
                    bail!(
                        "{} is a local state of terraform/ from before its state lived in S3: \
                         move it into the bucket once with `terraform -chdir=terraform init \
                         -migrate-state -backend-config={}` (answer yes), then delete the \
                         local file (and its .backup)",
                        local_state.display(),
                        crate::bootstrap::BACKEND_FILE
                    );
                }
                let file = crate::bootstrap::BACKEND_FILE;
                if !self.dir.join(file).is_file() {
                    bail!(
                        "no state backend for AWS ({}): run `cargo xtask bootstrap --aws` once \
                         (it creates the state bucket and writes that file), or write it \
                         yourself (bucket, key, region, use_lockfile = true)",
                        self.dir.join(file).display()
                    );
                }
                Some(format!("-backend-config={file}"))
            }
            false => None,
        };
        // On the local stack, what `terraform init` reads (the root's
        // `.tf` files, the lock file, the CLI configuration), as of its
        // last success: the same again needs no init (a second and more of
        // the provider's start, on every command). On AWS it always runs:
        // it checks the credentials and the state bucket first.
        let marker = self.dir.join(".terraform/xtask-init.sha256");
        let inputs = || match self.aws {
            true => Ok(None),
            false => self.init_inputs().map(Some),
        };
        if let Some(inputs) = inputs()?
            && fs::read_to_string(&marker).is_ok_and(|done| done == inputs)
        {
            return Ok(());
        }
        let output = self
            .command(sh)
            .args(["init", "-input=false", "-no-color"])
            .args(backend_config)
            .args(plugin_dir)
            .ignore_status()
            .output()?;
        if output.status.success()
            && let Some(inputs) = inputs()?
        {
            fs::write(&marker, inputs)?;
        }
        if !output.status.success() {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            let hint = init_hint(&said).unwrap_or_default();
            bail!(
                "terraform init failed in {}.{hint}\n{said}",
                self.dir.display()
            );
        }
        Ok(())
    }
}

/// What to say when AWS refused these credentials an action (with a
/// leading space), if that is what `said` shows.
pub fn denied_hint(said: &str) -> Option<String> {
    (said.contains("AccessDenied") || said.contains("is not authorized to perform")).then(|| {
        " AWS refused these credentials an action (below: which, on what). Releasing needs the \
         deployer policy (`cargo xtask deployer --aws`, terraform/deployer); the read-only one \
         allows `plan` (with TF_CLI_ARGS_plan=-lock=false) and `status` only."
            .to_owned()
    })
}

/// What to do about a failed `terraform init`, from what it said (with a
/// leading space), where that is clear.
pub fn init_hint(said: &str) -> Option<String> {
    let backend = crate::bootstrap::BACKEND_FILE;
    let hint = if said.contains("No valid credential sources found") {
        "No AWS credentials: sign in (`aws sso login --profile P` and AWS_PROFILE=P, or \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or run where a role is assumed (CI's \
         OIDC role)."
            .to_owned()
    } else if said.contains("ExpiredToken") || said.contains("token has expired") {
        "Your AWS credentials have expired: sign in again (`aws sso login`, or assume the role \
         again)."
            .to_owned()
    } else if said.contains("InvalidClientTokenId") || said.contains("SignatureDoesNotMatch") {
        "AWS does not know these credentials: check AWS_PROFILE or the access key in use."
            .to_owned()
    } else if said.contains("NoSuchBucket")
        || said.contains("referenced S3 bucket must have been previously created")
    {
        format!(
            "The state bucket that terraform/{backend} names does not exist for these \
             credentials in its region: run `cargo xtask bootstrap --aws` (it creates it), or fix \
             bucket and region in that file."
        )
    } else if said.contains("AccessDenied")
        || (said.contains("S3") && (said.contains("Forbidden") || said.contains("StatusCode: 403")))
    {
        format!(
            "These credentials may not use the state bucket that terraform/{backend} names: the \
             deployer needs s3:ListBucket on it and s3:GetObject, s3:PutObject and \
             s3:DeleteObject on its objects (terraform/deployer)."
        )
    } else if said.contains(backend) {
        format!(
            "terraform/{backend} is not valid backend settings (bucket, key, region, \
             use_lockfile = true): fix it, or delete it and run `cargo xtask bootstrap --aws` to \
             write it again."
        )
    } else if said.contains("registry.terraform.io")
        || said.contains("Failed to query available provider packages")
        || said.contains("Failed to install provider")
    {
        "Without access to the Terraform registry, point TF_PROVIDER_MIRROR at a filesystem \
         mirror holding hashicorp/aws 5.100.0."
            .to_owned()
    } else {
        return None;
    };
    Some(format!(" {hint}"))
}

/// A file [`Terraform::scratch_file`] made, removed when dropped. Not
/// `AsRef<OsStr>`, so it cannot be handed to a command by value (and
/// removed before the command runs): pass `file.as_os_str()`.
pub struct ScratchFile(PathBuf);

impl ScratchFile {
    /// `<pid>-name` in `dir` (made if missing).
    pub fn new(dir: &Path, name: &str) -> Result<ScratchFile> {
        fs::create_dir_all(dir)?;
        Ok(ScratchFile(
            dir.join(format!("{}-{name}", std::process::id())),
        ))
    }
}

impl std::ops::Deref for ScratchFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchFile {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Makes the local working directory `dir` the configuration of `source`
/// pointed at the emulator: links every `.tf` file and the templates, writes
/// the override and the artifacts directory. The local prod pin, the state
/// and any other file of the user's stay as they are.
fn sync_working_dir(source: &Path, dir: &Path, endpoint: &str, artifacts: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    // Only what differs changes, so a command that syncs while another
    // (a watch cycle's apply, say) runs Terraform here pulls nothing from
    // under it.
    let mut links = std::collections::BTreeMap::new();
    for entry in fs::read_dir(source).with_context(|| format!("reading {}", source.display()))? {
        let path = entry?.path();
        let name = path.file_name().expect("a directory entry has a name");
        let hidden = name.to_string_lossy().starts_with('.');
        if !hidden && (path.extension().is_some_and(|ext| ext == "tf") || path.is_dir()) {
            links.insert(name.to_owned(), path);
        }
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().expect("a directory entry has a name");
        if path.is_symlink() && fs::read_link(&path).ok().as_ref() != links.get(name) {
            fs::remove_file(&path)?;
        }
    }
    for (name, target) in &links {
        let link = dir.join(name);
        if !link.is_symlink() {
            std::os::unix::fs::symlink(target, link)?;
        }
    }
    let aliases = aws_provider_aliases(dir)?;
    let mut text = local_override(endpoint, &aliases);
    text += &without_lifecycle_rules(dir)?;
    write_if_changed(&dir.join("local_override.tf"), &text)?;
    // Only the local stack runs `dev --watch`'s quick builds.
    let vars = json!({ "artifacts_dir": artifacts, "accept_watch_builds": true });
    write_if_changed(
        &dir.join("local.auto.tfvars.json"),
        &(serde_json::to_string_pretty(&vars)? + "\n"),
    )?;
    let pin = dir.join(PIN_FILE);
    if !pin.exists() {
        fs::write(&pin, UNPUBLISHED_PIN)?;
    }
    Ok(())
}

fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The prod pin's file name, in `terraform/` for AWS and in the local
/// working directory for the local stack.
pub const PIN_FILE: &str = "prod.auto.tfvars.json";

/// The releases `publish` made (what `rollback` goes back to), beside the pin.
pub const HISTORY_FILE: &str = "prod.releases.json";

/// The prod pin before the first publish.
const UNPUBLISHED_PIN: &str = r#"{
  "prod_release": {
    "release": 0,
    "note": "Nothing is published yet: prod has no function aliases, so /prod answers 500 until the first `cargo xtask publish`.",
    "functions": {},
    "api_revision": ""
  }
}
"#;

/// The aliases of the `aws` provider configurations in the `.tf` files of
/// `dir` (the override aside), so the override can point every one at the
/// emulator; refuses a provider of another AWS family (`awscc`), which it
/// cannot.
fn aws_provider_aliases(dir: &Path) -> Result<Vec<String>> {
    // A module's own provider configuration is out of the root override's
    // reach: refused (pass the module the root's providers instead).
    for module in tf_files_below(dir)? {
        let text = fs::read_to_string(&module)?;
        if provider_blocks(&text)
            .iter()
            .any(|(provider, _)| provider.starts_with("aws"))
        {
            bail!(
                "{}: a provider configuration inside a module, which the local stack cannot \
                 point at the emulator: declare providers in the root configuration and pass \
                 them to the module (`providers = {{ aws = aws.NAME }}`)",
                module.display()
            );
        }
    }
    let mut aliases = Vec::new();
    let names = root_tf_files(dir)?;
    for path in names {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for (provider, alias) in provider_blocks(&text) {
            if provider == "aws" {
                aliases.extend(alias);
            } else if provider.starts_with("aws") {
                bail!(
                    "{}: the local stack points only hashicorp/aws at the emulator, not the \
                     `{provider}` provider, which would reach AWS itself: use `aws` for the \
                     resources the local stack runs",
                    path.display()
                );
            }
        }
    }
    aliases.sort();
    aliases.dedup();
    Ok(aliases)
}

/// The root configuration's `.tf` files in `dir`, but the generated
/// override, in order.
fn root_tf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "tf")
                && path
                    .file_name()
                    .is_some_and(|name| name != "local_override.tf")
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The `.tf` files of the local modules the root configuration in `dir`
/// calls (`source = "./..."`), and of the modules they call.
fn tf_files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let tf_files = |dir: &Path| -> Result<Vec<PathBuf>> {
        Ok(fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "tf"))
            .collect())
    };
    let sources = |file: &Path| -> Result<Vec<PathBuf>> {
        let text = fs::read_to_string(file)?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let (key, value) = without_comment(line).split_once('=')?;
                let value = value.trim().trim_matches('"');
                (key.trim() == "source" && (value.starts_with("./") || value.starts_with("../")))
                    .then(|| file.parent().unwrap_or(Path::new(".")).join(value))
            })
            .collect())
    };
    let mut modules: Vec<PathBuf> = Vec::new();
    for file in tf_files(dir)? {
        modules.extend(sources(&file)?);
    }
    let mut found = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(module) = modules.pop() {
        if !seen.insert(module.clone()) || seen.len() > 100 {
            continue;
        }
        for file in tf_files(&module)? {
            modules.extend(sources(&file)?);
            found.push(file);
        }
    }
    Ok(found)
}

/// `line` of a `.tf` file without its comment (`#` or `//` outside a
/// string).
pub fn without_comment(line: &str) -> &str {
    let mut quoted = false;
    let bytes = line.as_bytes();
    for (at, byte) in bytes.iter().enumerate() {
        match byte {
            b'"' if at == 0 || bytes[at - 1] != b'\\' => quoted = !quoted,
            b'#' if !quoted => return &line[..at],
            b'/' if !quoted && bytes.get(at + 1) == Some(&b'/') => return &line[..at],
            _ => {}
        }
    }
    line
}

/// Each top-level `provider "NAME" { ... }` block of a `.tf` file: its name
/// and its `alias`, if any (a block on one line included).
fn provider_blocks(text: &str) -> Vec<(String, Option<String>)> {
    let mut blocks = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<(String, Option<String>)> = None;
    let alias_in = |text: &str| {
        let (_, rest) = text.split_once("alias")?;
        let rest = rest
            .trim_start()
            .strip_prefix('=')?
            .trim_start()
            .strip_prefix('"')?;
        Some(rest.split('"').next()?.to_owned())
    };
    for line in text.lines() {
        let line = without_comment(line).trim();
        if depth == 0
            && let Some(name) = line
                .strip_prefix("provider")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('"'))
                .and_then(|rest| rest.split('"').next())
        {
            let inline = line
                .split_once('{')
                .map(|(_, rest)| rest)
                .unwrap_or_default();
            current = Some((name.to_owned(), alias_in(inline)));
        } else if depth == 1
            && let Some((_, alias)) = current.as_mut()
            && line.starts_with("alias")
        {
            *alias = alias_in(line);
        }
        depth = (depth + line.matches('{').count()).saturating_sub(line.matches('}').count());
        if depth == 0
            && let Some(block) = current.take()
        {
            blocks.push(block);
        }
    }
    blocks
}

/// What the local stack changes in the configuration: every `aws`
/// provider configuration (the default one and each of `aliases`) on the
/// emulator with fake keys and no profile. Generated, never committed: the
/// configuration in `terraform/` knows nothing of emulators.
fn local_override(endpoint: &str, aliases: &[String]) -> String {
    let services = [
        "acm",
        "apigateway",
        "cloudwatch",
        "dynamodb",
        "iam",
        "lambda",
        "logs",
        "route53",
        "s3",
        "sns",
        "sts",
    ];
    let endpoints: String = services
        .iter()
        .map(|service| format!("    {service:<10} = \"{endpoint}\"\n"))
        .collect();
    let provider = |alias: Option<&str>| {
        let alias = alias
            .map(|alias| format!("  alias                       = \"{alias}\"\n"))
            .unwrap_or_default();
        format!(
            r#"provider "aws" {{
{alias}  access_key                  = "local"
  secret_key                  = "local"
  profile                     = null
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  # The emulator's buckets are paths of its one host name.
  s3_use_path_style = true

  endpoints {{
{endpoints}  }}
}}
"#
        )
    };
    let mut providers = provider(None);
    for alias in aliases {
        providers += "\n";
        providers += &provider(Some(alias));
    }
    format!(
        r#"# Generated by `cargo xtask`: the local stack's differences from terraform/.
# Edits are overwritten; files of your own in this directory are kept.

# Local state only, whatever backend terraform/ declares.
terraform {{
  backend "local" {{
    path = "terraform.tfstate"
  }}
}}

# Every service the configuration uses, on the emulator, with fake
# credentials: the default provider and every alias of it.
{providers}"#
    )
}

/// Override blocks that leave the configuration's S3 lifecycle rules out of
/// the local stack: after every change of a bucket's lifecycle rules the
/// provider waits 55 s (ten matching reads 5 s apart, for AWS's eventual
/// consistency: terraform-provider-aws's `waitLifecycleConfigEquals`),
/// and the emulator never applies lifecycle rules anyway. Empty when there
/// are none.
fn without_lifecycle_rules(dir: &Path) -> Result<String> {
    let kind = "aws_s3_bucket_lifecycle_configuration";
    let names = root_tf_files(dir)?;
    let mut out = String::new();
    for path in names {
        let text = fs::read_to_string(&path)?;
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            let line = without_comment(line).trim();
            let Some(rest) = line.strip_prefix(&format!("resource \"{kind}\" \"")) else {
                continue;
            };
            let name = rest.split('"').next().unwrap_or_default().to_owned();
            // Its own meta-argument, at the block's top level, decides the form.
            let (open, close) = braces(line);
            let mut depth = open.saturating_sub(close);
            let mut counted = "for_each = {}";
            while depth > 0 {
                let Some(inner) = lines.next() else { break };
                let inner = without_comment(inner).trim();
                if depth == 1 && inner.starts_with("count") {
                    counted = "count = 0";
                }
                let (open, close) = braces(inner);
                depth = (depth + open).saturating_sub(close);
            }
            out += &format!(
                "\n# The emulator applies no lifecycle rules, and the provider waits 55 s after \
                 each change of them\n# (for AWS's eventual consistency): left out of the local \
                 stack.\nresource \"{kind}\" \"{name}\" {{\n  {counted}\n}}\n"
            );
        }
    }
    Ok(out)
}

/// The `{` and `}` of a `.tf` line outside its strings.
fn braces(line: &str) -> (usize, usize) {
    let (mut open, mut close, mut quoted) = (0, 0, false);
    let bytes = line.as_bytes();
    for (at, byte) in bytes.iter().enumerate() {
        match byte {
            b'"' if at == 0 || bytes[at - 1] != b'\\' => quoted = !quoted,
            b'{' if !quoted => open += 1,
            b'}' if !quoted => close += 1,
            _ => {}
        }
    }
    (open, close)
}

/// The directory of a Terraform provider filesystem mirror holding
/// hashicorp/aws, for machines without access to the registry:
/// `$TF_PROVIDER_MIRROR`, else one found under `/opt` (Terraform already
/// searches its own implied mirror directories), else none.
pub fn provider_mirror() -> Result<Option<PathBuf>> {
    let holds_aws = |dir: &Path| dir.join("registry.terraform.io/hashicorp/aws").is_dir();
    if let Some(dir) = std::env::var_os("TF_PROVIDER_MIRROR") {
        let dir = PathBuf::from(dir);
        if !holds_aws(&dir) {
            bail!(
                "TF_PROVIDER_MIRROR={} holds no registry.terraform.io/hashicorp/aws",
                dir.display()
            );
        }
        return Ok(Some(dir));
    }
    let Ok(entries) = fs::read_dir("/opt") else {
        return Ok(None);
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .flat_map(|dir| [dir.join("plugins"), dir])
        .filter(|dir| holds_aws(dir))
        .collect();
    found.sort();
    Ok(found.into_iter().next())
}

impl LocalDir {
    /// The local stack's Terraform working directory.
    pub fn terraform_dir(&self) -> PathBuf {
        self.0.join("terraform")
    }

    /// Forgets the local stack's infrastructure (its state, prod pin, release
    /// history, recorded API configurations and verify receipt), for a new,
    /// empty emulator.
    pub fn reset(&self) -> Result<()> {
        fs::create_dir_all(&self.0)?;
        let dir = self.terraform_dir();
        for name in [
            "terraform.tfstate",
            "terraform.tfstate.backup",
            PIN_FILE,
            HISTORY_FILE,
        ] {
            match fs::remove_file(dir.join(name)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
                _ => {}
            }
        }
        // The API configurations the gateway recorded, and the verify
        // receipt, were this world's.
        for name in ["gateway", "release"] {
            match fs::remove_dir_all(self.0.join(name)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Terraform's own words (1.11, the S3 backend) for each failure.
    #[test]
    fn a_failed_init_says_what_to_do() {
        let cases = [
            (
                "Error: No valid credential sources found",
                "No AWS credentials",
            ),
            (
                "operation error STS: GetCallerIdentity, api error ExpiredToken: The security \
                 token included in the request is expired",
                "have expired",
            ),
            (
                "api error InvalidClientTokenId: The security token included in the request is \
                 invalid",
                "does not know these credentials",
            ),
            (
                "The referenced S3 bucket must have been previously created.\nError: operation \
                 error S3: ListObjectsV2, https response error StatusCode: 404, NoSuchBucket:",
                "run `cargo xtask bootstrap --aws`",
            ),
            (
                "operation error S3: ListObjectsV2, StatusCode: 403, api error AccessDenied",
                "s3:ListBucket",
            ),
            (
                "Error: Unsupported argument\n  on state.s3.tfbackend line 2:\n   2: foo = 1",
                "is not valid backend settings",
            ),
        ];
        for (said, hint) in cases {
            let got = init_hint(said).unwrap_or_default();
            assert!(got.contains(hint), "{said:?} -> {got:?}");
        }
        assert_eq!(init_hint("Error: something else entirely"), None);
        // Not a registry problem, though it names the provider.
        assert_eq!(
            init_hint("Error: validating provider credentials: api error UnknownError"),
            None
        );
    }

    #[test]
    fn lock_timeouts_are_go_durations() {
        for good in [
            "0", "0s", "30s", "2m", "1m30s", "1.5h", "500ms", "250us", "10ns",
        ] {
            assert_eq!(parse_lock_timeout(good).as_deref(), Ok(good), "{good}");
        }
        for bad in [
            "",
            "5",
            "5 m",
            "ms",
            "5S",
            "-1s",
            "1d",
            "s5",
            "99999999999999999999h",
        ] {
            assert!(parse_lock_timeout(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn each_process_plans_into_a_file_of_its_own() {
        let dir = std::env::temp_dir().join(format!("xtask-scratch-{}", std::process::id()));
        let terraform = Terraform {
            dir: dir.join("terraform"),
            aws: false,
            env: Vec::new(),
            plugin_dir: None,
            lock_timeout: DEFAULT_LOCK_TIMEOUT.to_owned(),
            endpoint: None,
        };
        let file = terraform.scratch_file("apply.tfplan").unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name, format!("{}-apply.tfplan", std::process::id()));
        assert_eq!(file.parent(), Some(dir.join("release").as_path()));
        fs::write(&*file, "plan").unwrap();
        let path = file.to_path_buf();
        drop(file);
        assert!(!path.exists(), "a scratch file outlived its guard");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn the_local_stack_leaves_the_lifecycle_rules_out() {
        let dir = std::env::temp_dir().join(format!("xtask-lifecycle-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("files.tf"),
            r#"
resource "aws_s3_bucket_lifecycle_configuration" "files" { # per stage
  for_each = aws_s3_bucket.files
  bucket   = each.value.id
  rule {
    id     = "a } in a string {"
    filter {}
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  count  = var.keep ? 1 : 0
  bucket = "b"
  rule {
    id = "x"
  }
  # count = 5 in a comment, and a for_each inside a block below
  dynamic "rule" {
    for_each = []
    content {}
  }
}
"#,
        )
        .unwrap();
        fs::write(
            dir.join("local_override.tf"),
            "resource \"aws_s3_bucket_lifecycle_configuration\" \"stale\" {}\n",
        )
        .unwrap();
        let text = without_lifecycle_rules(&dir).unwrap();
        assert!(
            text.contains(
                "resource \"aws_s3_bucket_lifecycle_configuration\" \"files\" {\n  for_each = {}\n}"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "resource \"aws_s3_bucket_lifecycle_configuration\" \"logs\" {\n  count = 0\n}"
            ),
            "{text}"
        );
        assert!(!text.contains("stale"), "{text}");
        assert_eq!(text.matches("resource ").count(), 2, "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_aws_provider_configuration_is_pointed_at_the_emulator() {
        let text = r#"
provider "aws" {
  region = var.region
  default_tags {
    tags = { project = var.name }
  }
}

provider "aws" { # certificates
  alias  = "us_east_1"
  region = "us-east-1"
}

provider "random" {}
// provider "aws" { alias = "commented" } {
provider "aws" { alias = "east" }
resource "x" "y" {
  provider = aws.us_east_1
}
"#;
        assert_eq!(
            provider_blocks(text),
            [
                ("aws".to_owned(), None),
                ("aws".to_owned(), Some("us_east_1".to_owned())),
                ("random".to_owned(), None),
                ("aws".to_owned(), Some("east".to_owned())),
            ]
        );
        let generated = local_override("http://127.0.0.1:1", &["us_east_1".to_owned()]);
        assert_eq!(generated.matches("provider \"aws\" {").count(), 2);
        assert_eq!(
            generated
                .matches("profile                     = null")
                .count(),
            2
        );
        assert!(generated.contains("  alias                       = \"us_east_1\"\n"));
        assert_eq!(
            generated
                .matches("lambda     = \"http://127.0.0.1:1\"")
                .count(),
            2
        );
    }
}
