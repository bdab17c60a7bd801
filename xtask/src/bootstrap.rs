//! `cargo xtask bootstrap --aws`: the S3 bucket that holds `terraform/`'s
//! state on AWS, made once per account from its own small Terraform root
//! (`terraform/bootstrap/`), and the backend settings file `terraform/` is
//! initialised with (`-backend-config=state.s3.tfbackend`).
//!
//! The state is locked with Terraform's own lock file beside it in the
//! bucket (`use_lockfile`, S3 conditional writes), so two applies at once
//! cannot both write it. The local stack keeps its local state.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xshell::{Shell, cmd};

/// The backend settings file, in `terraform/` (written here, read by
/// [`crate::terraform::Terraform::init`] on AWS).
pub const BACKEND_FILE: &str = "state.s3.tfbackend";

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Required: the state bucket is for AWS (the local stack keeps its state locally).
    #[arg(long)]
    aws: bool,
    /// The state bucket's name [default: the settings file's, else <name>-tfstate-<account id>].
    #[arg(long, value_name = "NAME")]
    bucket: Option<String>,
    /// The stack's name prefix (terraform/'s `name`); the state's key is `<name>/terraform.tfstate` [default: the settings file's, else rust-lambda-api].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The bucket's region [default: the settings file's, else $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1].
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// Show what would be created (`terraform plan`) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Create the bucket without asking for confirmation.
    #[arg(long)]
    yes: bool,
}

/// What a backend settings file says (its other lines aside).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    bucket: String,
    key: String,
    region: String,
}

impl Settings {
    /// `bucket`, `key` and `region` of a `.tfbackend` file (`name = "value"`
    /// lines), if it has all three.
    fn parse(text: &str) -> Option<Settings> {
        let value = |name: &str| {
            text.lines().find_map(|line| {
                let (key, value) = crate::terraform::without_comment(line).split_once('=')?;
                (key.trim() == name).then(|| value.trim().trim_matches('"').to_owned())
            })
        };
        Some(Settings {
            bucket: value("bucket")?,
            key: value("key")?,
            region: value("region")?,
        })
    }

    /// The `-backend-config` file for `terraform/`'s `backend "s3"`.
    fn file_text(&self) -> String {
        format!(
            "# Written by `cargo xtask bootstrap --aws`: where terraform/ keeps its state on AWS\n\
             # (terraform -chdir=terraform init -backend-config={BACKEND_FILE}).\n\
             bucket       = \"{}\"\n\
             key          = \"{}\"\n\
             region       = \"{}\"\n\
             encrypt      = true\n\
             use_lockfile = true\n",
            self.bucket, self.key, self.region
        )
    }
}

const DEFAULT_NAME: &str = "rust-lambda-api";
const STATE_KEY: &str = "terraform.tfstate";

pub fn run(sh: &Shell, args: BootstrapArgs) -> Result<()> {
    if !args.aws {
        bail!(
            "`bootstrap` creates the state bucket on AWS: pass --aws. The local stack needs none \
             (its state is a local file in its own directory, target/local/terraform)"
        );
    }
    crate::terraform::require(sh)?;
    let root = sh.current_dir();
    let dir = root.join("terraform/bootstrap");
    let backend_file = root.join("terraform").join(BACKEND_FILE);
    let existing = match fs::read_to_string(&backend_file) {
        Ok(text) => Some(Settings::parse(&text).with_context(|| {
            format!(
                "{} lacks a bucket, key or region: fix it, or delete it and bootstrap again",
                backend_file.display()
            )
        })?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).context(format!("reading {}", backend_file.display())),
    };

    // Unless told otherwise, the bucket the settings file names: running
    // bootstrap again is a no-op, whatever the shell's region.
    let name = args
        .name
        .clone()
        .or_else(|| {
            existing.as_ref().and_then(|s| {
                s.key
                    .strip_suffix(&format!("/{STATE_KEY}"))
                    .map(str::to_owned)
            })
        })
        .unwrap_or_else(|| DEFAULT_NAME.to_owned());
    let region = args
        .region
        .clone()
        .or_else(|| existing.as_ref().map(|s| s.region.clone()))
        .unwrap_or_else(shell_region);
    let bucket = args
        .bucket
        .clone()
        .or_else(|| existing.as_ref().map(|s| s.bucket.clone()));
    let refuse_other = |wanted: &Settings, existing: &Settings| -> Result<()> {
        if wanted != existing {
            bail!(
                "{} names other settings ({existing:?}) than asked for ({wanted:?}), and was \
                 left as it is, nothing created: it may hold where this stack's state lives now. \
                 To move the state, delete the file, bootstrap again, then `terraform \
                 -chdir=terraform init -migrate-state -backend-config={BACKEND_FILE}`.",
                backend_file.display()
            );
        }
        Ok(())
    };
    if let (Some(existing), Some(bucket)) = (&existing, &bucket) {
        let wanted = Settings {
            bucket: bucket.clone(),
            key: format!("{name}/{STATE_KEY}"),
            region: region.clone(),
        };
        refuse_other(&wanted, existing)?;
    }

    let small = SmallRoot::new(&dir);
    small.init(sh)?;
    let mut vars = vec![format!("-var=name={name}"), format!("-var=region={region}")];
    if let Some(bucket) = &bucket {
        vars.push(format!("-var=bucket={bucket}"));
    }
    let (plan, planned) = small.plan(sh, &root, "bootstrap", "the state bucket", &vars)?;
    let bucket = planned["planned_values"]["outputs"]["bucket"]["value"]
        .as_str()
        .context("the plan does not know the bucket's name")?
        .to_owned();
    let settings = Settings {
        bucket: bucket.clone(),
        key: format!("{name}/{STATE_KEY}"),
        region: region.clone(),
    };
    if let Some(existing) = &existing {
        refuse_other(&settings, existing)?;
    }
    let changes = SmallRoot::changes(&planned);
    if args.dry_run {
        println!("dry run: nothing was created ({changes} change(s) planned to bucket {bucket})");
        return Ok(());
    }
    if changes > 0 {
        if !args.yes {
            eprint!("Create the state bucket {bucket} on AWS? Only 'yes' will be accepted: ");
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if answer.trim() != "yes" {
                bail!("nothing was created (answer `yes`, or pass --yes)");
            }
        }
        small.apply(sh, &plan, "bootstrap")?;
    }

    match existing {
        Some(_) => println!("{} is up to date", backend_file.display()),
        None => {
            write_new(&backend_file, &settings.file_text())?;
            println!("wrote {}", backend_file.display());
        }
    }
    println!(
        "state bucket: {bucket} ({region}); `cargo xtask apply --aws` keeps terraform/'s state \
         there, locked by a lock file beside it"
    );
    Ok(())
}

/// The state bucket and key `terraform/state.s3.tfbackend` names, if it
/// exists.
pub fn backend_bucket_and_key(root: &Path) -> Result<Option<(String, String)>> {
    let path = root.join("terraform").join(BACKEND_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let settings = Settings::parse(&text).with_context(|| {
                format!("{} lacks a bucket, key or region: fix it", path.display())
            })?;
            Ok(Some((settings.bucket, settings.key)))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).context(format!("reading {}", path.display())),
    }
}

/// The shell's region: `$AWS_REGION`, else `$AWS_DEFAULT_REGION`, else
/// us-east-1.
pub fn shell_region() -> String {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|key| std::env::var(key).ok().filter(|region| !region.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_owned())
}

/// A small Terraform root of its own, applied once per account with an
/// administrator's credentials (`terraform/bootstrap`, `terraform/deployer`):
/// its state is local, in that directory.
pub struct SmallRoot {
    dir: std::path::PathBuf,
}

impl SmallRoot {
    pub fn new(dir: &Path) -> SmallRoot {
        SmallRoot {
            dir: dir.to_path_buf(),
        }
    }

    /// `terraform init`, from the provider mirror when there is one.
    pub fn init(&self, sh: &Shell) -> Result<()> {
        let dir = &self.dir;
        let plugin_dir = crate::terraform::provider_mirror()?
            .map(|dir| format!("-plugin-dir={}", dir.display()));
        eprintln!("==> terraform init ({})", dir.display());
        let init = cmd!(sh, "terraform -chdir={dir} init -input=false -no-color")
            .args(plugin_dir)
            .ignore_status()
            .output()?;
        if !init.status.success() {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&init.stdout),
                String::from_utf8_lossy(&init.stderr)
            );
            let hint = crate::terraform::init_hint(&said).unwrap_or_default();
            bail!("terraform init failed in {}.{hint}\n{said}", dir.display());
        }
        Ok(())
    }

    /// `terraform plan` with `vars` into a scratch file under the
    /// workspace's `target/aws` (named for `command`), shown; the plan as
    /// `terraform show -json` prints it.
    pub fn plan(
        &self,
        sh: &Shell,
        workspace: &Path,
        command: &str,
        what: &str,
        vars: &[String],
    ) -> Result<(crate::terraform::ScratchFile, Value)> {
        let dir = &self.dir;
        // Never in terraform/: the scratch directory of the AWS target.
        let plan = crate::terraform::ScratchFile::new(
            &workspace.join("target/aws"),
            &format!("{command}.tfplan"),
        )?;
        let out = format!("-out={}", plan.display());
        eprintln!("==> terraform plan ({what})");
        cmd!(
            sh,
            "terraform -chdir={dir} plan -input=false -lock-timeout=60s {out} {vars...}"
        )
        .run()
        .context("terraform plan failed (above)")?;
        let plan_path = plan.as_os_str();
        let planned: Value = serde_json::from_str(
            &cmd!(sh, "terraform -chdir={dir} show -json {plan_path}")
                .quiet()
                .read()?,
        )?;
        Ok((plan, planned))
    }

    /// How many resources `planned` creates, changes or destroys.
    pub fn changes(planned: &Value) -> usize {
        planned["resource_changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|change| {
                change["change"]["actions"]
                    .as_array()
                    .is_some_and(|actions| actions.iter().any(|a| a != "no-op" && a != "read"))
            })
            .count()
    }

    /// Applies exactly the saved `plan`.
    pub fn apply(
        &self,
        sh: &Shell,
        plan: &crate::terraform::ScratchFile,
        command: &str,
    ) -> Result<()> {
        let dir = &self.dir;
        let plan_path = plan.as_os_str();
        cmd!(
            sh,
            "terraform -chdir={dir} apply -input=false -lock-timeout=60s {plan_path}"
        )
        .run()
        .with_context(|| {
            format!("terraform apply failed (above); run {command} again once it is fixed")
        })?;
        Ok(())
    }

    /// `terraform output -json`.
    pub fn outputs(&self, sh: &Shell) -> Result<Value> {
        let dir = &self.dir;
        Ok(serde_json::from_str(
            &cmd!(sh, "terraform -chdir={dir} output -json")
                .quiet()
                .read()?,
        )?)
    }
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file =
        fs::File::create_new(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_settings_lock_and_encrypt_the_state() {
        let settings = Settings {
            bucket: "state-bucket".to_owned(),
            key: "api/terraform.tfstate".to_owned(),
            region: "eu-west-1".to_owned(),
        };
        let text = settings.file_text();
        assert!(text.contains("bucket       = \"state-bucket\"\n"));
        assert!(text.contains("key          = \"api/terraform.tfstate\"\n"));
        assert!(text.contains("region       = \"eu-west-1\"\n"));
        assert!(text.contains("use_lockfile = true\n"));
        assert!(text.contains("encrypt      = true\n"));
        assert!(!text.contains("dynamodb"));
        // Read back, and from a file written by hand.
        assert_eq!(Settings::parse(&text), Some(settings.clone()));
        let by_hand = "region = \"eu-west-1\" # Ireland\nkey=\"api/terraform.tfstate\"\n\
                       bucket = \"state-bucket\"\nuse_lockfile = true\n";
        assert_eq!(Settings::parse(by_hand), Some(settings));
        assert_eq!(Settings::parse("bucket = \"b\"\nkey = \"k\"\n"), None);
    }
}
