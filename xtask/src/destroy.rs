//! `cargo xtask destroy`: tear the stack down, on the local stack or AWS.
//!
//! It shows what will be destroyed (Terraform's destroy plan, readable),
//! refuses while a table holds items, a bucket holds objects or a table has
//! deletion protection (prod's, `var.prod_deletion_protection`) unless
//! `--delete-data` says to delete them too, and on AWS asks for the stack's
//! name unless `--yes`. With `--delete-data` it empties the buckets and
//! lifts the tables' deletion protection (a targeted apply of the tables
//! alone), plans the destroy again, and applies it only if it destroys what
//! was shown. A local destroy leaves the emulator with nothing of the stack
//! and forgets the local pin, history and receipt, as a new emulator does.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xshell::Shell;

use crate::LocalDir;
use crate::live::Aws;
use crate::terraform::{PIN_FILE, TargetArgs, Terraform};

#[derive(Debug, clap::Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Show what would be destroyed, and whether it holds data, and destroy nothing.
    #[arg(long)]
    dry_run: bool,
    /// On AWS, destroy without asking to type the stack's name (the local stack never asks).
    #[arg(long)]
    yes: bool,
    /// Delete the data too: empty the buckets, lift prod's deletion protection, drop tables that hold items.
    #[arg(long)]
    delete_data: bool,
}

/// What the state holds that destroying would lose.
#[derive(Debug, Default, PartialEq)]
struct Data {
    /// Tables that hold at least one item.
    tables_with_items: Vec<String>,
    /// Buckets that hold at least one object.
    buckets_with_objects: Vec<String>,
    /// Addresses of the tables with deletion protection on.
    protected: Vec<String>,
}

impl Data {
    fn is_empty(&self) -> bool {
        self.tables_with_items.is_empty()
            && self.buckets_with_objects.is_empty()
            && self.protected.is_empty()
    }

    fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for table in &self.tables_with_items {
            lines.push(format!("table {table} holds items"));
        }
        for bucket in &self.buckets_with_objects {
            lines.push(format!("bucket {bucket} holds objects"));
        }
        for address in &self.protected {
            lines.push(format!("{address} has deletion protection on"));
        }
        lines
    }
}

/// The stack's resources in Terraform's state (`terraform show -json`).
struct State {
    resources: Vec<Value>,
    region: Option<String>,
}

impl State {
    fn read(sh: &Shell, terraform: &Terraform) -> Result<State> {
        let shown = terraform
            .command(sh)
            .args(["show", "-json"])
            .quiet()
            .read()
            .context("terraform show failed (above)")?;
        let shown: Value =
            serde_json::from_str(&shown).context("reading `terraform show -json`")?;
        let values = &shown["values"];
        Ok(State {
            resources: values["root_module"]["resources"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|resource| resource["mode"] == "managed")
                .collect(),
            region: values["outputs"]["region"]["value"]
                .as_str()
                .map(str::to_owned),
        })
    }

    fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.resources
            .iter()
            .filter(move |resource| resource["type"] == kind)
    }

    /// The stack's name: its REST API's (`var.name`).
    fn stack_name(&self) -> Option<&str> {
        self.of_type("aws_api_gateway_rest_api")
            .find_map(|api| api["values"]["name"].as_str())
    }
}

pub fn run(sh: &Shell, local: &LocalDir, args: DestroyArgs) -> Result<()> {
    let terraform = Terraform::existing(sh, local, &args.target)?;
    terraform.init(sh)?;
    let where_ = if terraform.aws {
        "AWS"
    } else {
        "the local stack"
    };
    let state = State::read(sh, &terraform)?;
    if state.resources.is_empty() {
        println!("nothing to destroy on {where_}: its Terraform state holds no resource");
        return Ok(());
    }
    let runtime = crate::release::runtime()?;
    let aws = runtime.block_on(clients(local, &terraform, &state))?;
    let data = runtime.block_on(data_held(&aws, &state))?;

    let (plan, shown) = destroy_plan(sh, &terraform, args.delete_data)?;
    println!("Destroying on {where_}: {} resources", shown.len());
    for line in summary(&state, &shown) {
        println!("  - {line}");
    }
    if !data.is_empty() {
        println!("\nData that destroying would delete:");
        for line in data.lines() {
            println!("  {line}");
        }
    }
    if args.dry_run {
        if !data.is_empty() && !args.delete_data {
            println!("(without --delete-data, a destroy refuses to delete it)");
        }
        println!("dry run: nothing was destroyed");
        return Ok(());
    }
    if !data.is_empty() && !args.delete_data {
        bail!(
            "refused: {} (above); nothing was destroyed. Pass --delete-data to delete the data \
             with the stack, or move it out first.",
            data.lines().join(", ")
        );
    }
    if terraform.aws && !args.yes {
        let name = state.stack_name().unwrap_or("rust-lambda-api");
        eprint!("Destroy this stack on AWS? Type its name ({name}) to confirm: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != name {
            bail!("not destroyed (type the stack's name, {name}, or pass --yes)");
        }
    }

    let plan = if args.delete_data && !data.is_empty() {
        runtime.block_on(empty_buckets(&aws, &data.buckets_with_objects))?;
        lift_protection(sh, &terraform, &data.protected)?;
        // The state changed (the tables' protection): plan again, and apply
        // only a plan that destroys what was shown.
        let (again, shown_again) = destroy_plan(sh, &terraform, true)?;
        if shown_again != shown {
            let gone: Vec<&String> = shown.symmetric_difference(&shown_again).collect();
            bail!(
                "refused: the stack changed while it was being destroyed (the resources to \
                 destroy differ now: {gone:?}); the buckets were emptied and prod's tables lost \
                 their deletion protection, nothing else was destroyed. Run `cargo xtask \
                 destroy{}` again to see the new plan.",
                if terraform.aws { " --aws" } else { "" }
            );
        }
        again
    } else {
        plan
    };
    eprintln!("==> terraform apply (destroy, {where_})");
    terraform
        .command(sh)
        .args(["apply", "-input=false"])
        .arg(terraform.lock_timeout())
        .arg(plan.as_os_str())
        .run()
        .context("terraform apply (destroy) failed (above)")?;

    if terraform.aws {
        let receipt = crate::project_root().join("target/aws/receipt.json");
        let _ = std::fs::remove_file(receipt);
        let pin = crate::release::Release::read(&terraform.dir.join(PIN_FILE))?;
        if !pin.functions.is_empty() {
            println!(
                "note: {} still pins release {} of the destroyed stack; before the next `cargo \
                 xtask apply --aws`, set it back to nothing published (release 0, no \
                 functions, as in a fresh checkout) and commit that",
                terraform.dir.join(PIN_FILE).display(),
                pin.release
            );
        }
    } else {
        local.reset()?;
    }
    println!("destroyed: nothing of the stack remains on {where_}");
    Ok(())
}

/// One line per resource type that `destroyed` holds: how many, and the
/// names of the ones that matter to a reader (functions, tables, buckets,
/// the API, roles, log groups).
fn summary(state: &State, destroyed: &BTreeSet<String>) -> Vec<String> {
    let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for resource in &state.resources {
        let (Some(address), Some(kind)) = (resource["address"].as_str(), resource["type"].as_str())
        else {
            continue;
        };
        if !destroyed.contains(address) {
            continue;
        }
        let values = &resource["values"];
        let name = match kind {
            "aws_lambda_function" => values["function_name"].as_str(),
            "aws_dynamodb_table"
            | "aws_api_gateway_rest_api"
            | "aws_iam_role"
            | "aws_cloudwatch_log_group" => values["name"].as_str(),
            "aws_s3_bucket" => values["bucket"].as_str(),
            _ => None,
        };
        let names = by_type.entry(kind).or_default();
        names.extend(name);
        if name.is_none() {
            names.push("");
        }
    }
    by_type
        .into_iter()
        .map(|(kind, names)| {
            let shown: Vec<&str> = names.iter().copied().filter(|n| !n.is_empty()).collect();
            match shown.is_empty() {
                true => format!("{} {kind}", names.len()),
                false => format!("{} {kind}: {}", names.len(), shown.join(", ")),
            }
        })
        .collect()
}

/// The target's SDK clients: the emulator's on the local stack, the
/// default credentials' on AWS.
async fn clients(local: &LocalDir, terraform: &Terraform, state: &State) -> Result<Aws> {
    let region = state
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_owned());
    if terraform.aws {
        return Ok(Aws::in_region(&region).await);
    }
    let emulator = crate::emulator::Emulator::running(local)?
        .context("the local stack is not running (no emulator): there is nothing to destroy")?;
    Ok(Aws::at(&emulator.endpoint, &region).await)
}

/// An S3 client: path-style on the emulator (its one host name), as S3
/// addresses buckets elsewhere.
fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(config.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// Which tables hold items, which buckets objects, which tables refuse
/// deletion.
async fn data_held(aws: &Aws, state: &State) -> Result<Data> {
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws.config);
    let s3 = s3_client(&aws.config);
    let mut data = Data::default();
    for table in state.of_type("aws_dynamodb_table") {
        let name = table["values"]["name"]
            .as_str()
            .context("a table without a name in the state")?;
        if table["values"]["deletion_protection_enabled"] == true {
            data.protected
                .push(table["address"].as_str().unwrap_or(name).to_owned());
        }
        let scanned = dynamodb
            .scan()
            .table_name(name)
            .limit(1)
            .send()
            .await
            .map_err(crate::live::aws_error)
            .with_context(|| format!("cannot read table {name}"))?;
        if scanned.count() > 0 {
            data.tables_with_items.push(name.to_owned());
        }
    }
    for bucket in state.of_type("aws_s3_bucket") {
        let name = bucket["values"]["bucket"]
            .as_str()
            .context("a bucket without a name in the state")?;
        let listed = s3
            .list_objects_v2()
            .bucket(name)
            .max_keys(1)
            .send()
            .await
            .map_err(crate::live::aws_error)
            .with_context(|| format!("cannot list bucket {name}"))?;
        if !listed.contents().is_empty() {
            data.buckets_with_objects.push(name.to_owned());
        }
    }
    Ok(data)
}

/// `terraform plan -destroy` into a scratch file; the addresses it destroys.
fn destroy_plan(
    sh: &Shell,
    terraform: &Terraform,
    lifted: bool,
) -> Result<(crate::terraform::ScratchFile, BTreeSet<String>)> {
    let file = terraform.scratch_file("destroy.tfplan")?;
    let mut more = vec!["-destroy".to_owned()];
    more.extend(lifted.then(|| "-var=prod_deletion_protection=false".to_owned()));
    let (_, plan) = crate::release::plan::make_with(sh, terraform, &file, &more)?;
    let destroyed = plan
        .changes
        .iter()
        .filter(|change| change.actions.iter().any(|action| action == "delete"))
        .map(|change| change.address.clone())
        .collect();
    Ok((file, destroyed))
}

/// Deletes every object of `buckets` (the files buckets are unversioned).
async fn empty_buckets(aws: &Aws, buckets: &[String]) -> Result<()> {
    let s3 = s3_client(&aws.config);
    for bucket in buckets {
        let mut deleted = 0;
        loop {
            let listed = s3
                .list_objects_v2()
                .bucket(bucket)
                .send()
                .await
                .map_err(crate::live::aws_error)
                .with_context(|| format!("cannot list bucket {bucket}"))?;
            if listed.contents().is_empty() {
                break;
            }
            for object in listed.contents() {
                let key = object.key().context("an object without a key")?;
                s3.delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(crate::live::aws_error)
                    .with_context(|| format!("cannot delete s3://{bucket}/{key}"))?;
                deleted += 1;
            }
        }
        eprintln!("==> emptied bucket {bucket} (objects deleted: {deleted})");
    }
    Ok(())
}

/// Turns deletion protection off on the tables at `addresses` (a targeted
/// apply of those tables alone).
fn lift_protection(sh: &Shell, terraform: &Terraform, addresses: &[String]) -> Result<()> {
    if addresses.is_empty() {
        return Ok(());
    }
    eprintln!("==> lifting deletion protection: {}", addresses.join(", "));
    let output = terraform
        .command(sh)
        .args(["apply", "-input=false", "-auto-approve", "-no-color"])
        .arg(terraform.lock_timeout())
        .arg("-var=prod_deletion_protection=false")
        .args(addresses.iter().map(|address| format!("-target={address}")))
        .ignore_status()
        .quiet()
        .output()?;
    if !output.status.success() {
        bail!(
            "lifting deletion protection failed, nothing was destroyed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_held_is_said_line_by_line() {
        let data = Data {
            tables_with_items: vec!["app-users-staging".to_owned()],
            buckets_with_objects: vec!["app-files-prod".to_owned()],
            protected: vec!["aws_dynamodb_table.users[\"prod\"]".to_owned()],
        };
        assert!(!data.is_empty());
        assert_eq!(
            data.lines(),
            [
                "table app-users-staging holds items",
                "bucket app-files-prod holds objects",
                "aws_dynamodb_table.users[\"prod\"] has deletion protection on",
            ]
        );
        assert!(Data::default().is_empty());
    }
}
