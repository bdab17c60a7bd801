//! `cargo xtask deployer --aws`: who may release the stack, made once per
//! account from its own small Terraform root (`terraform/deployer/`) with an
//! administrator's credentials: the least-privilege deployer policy, its
//! read-only variant, and (given `--repository`) GitHub's OIDC provider and
//! the two roles the workflows assume.

use anyhow::{Result, bail};
use xshell::Shell;

use crate::bootstrap::SmallRoot;

#[derive(Debug, clap::Args)]
pub struct DeployerArgs {
    /// Required: the deployer is an AWS account's (the local stack has no IAM to speak of).
    #[arg(long)]
    aws: bool,
    /// The GitHub repository (OWNER/REPO) whose workflows may assume the roles; without it, the policies only.
    #[arg(long, value_name = "OWNER/REPO")]
    repository: Option<String>,
    /// The GitHub environment (with required reviewers) whose jobs publish and roll back.
    #[arg(long, value_name = "NAME", default_value = "production")]
    environment: String,
    /// The account already has GitHub's OIDC provider (one per URL): use it instead of creating it.
    #[arg(long)]
    existing_oidc_provider: bool,
    /// The Route 53 hosted zone of terraform/'s `domain` (a custom domain): the deployer may manage its records, the certificate and the API's domain names.
    #[arg(long, value_name = "ZONE_ID")]
    hosted_zone_id: Option<String>,
    /// The stack's name prefix (terraform/'s `name`).
    #[arg(long, value_name = "NAME", default_value = "rust-lambda-api")]
    name: String,
    /// The stack's region: terraform/'s `region`, whatever the shell's (the policy is scoped to it).
    #[arg(long, value_name = "REGION", default_value = "us-east-1")]
    region: String,
    /// Show what would be created (`terraform plan`) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Apply without asking for confirmation.
    #[arg(long)]
    yes: bool,
}

pub fn run(sh: &Shell, args: DeployerArgs) -> Result<()> {
    if !args.aws {
        bail!(
            "`deployer` makes IAM policies and roles on AWS: pass --aws. The local stack needs \
             none"
        );
    }
    crate::terraform::require(sh)?;
    let root = sh.current_dir();
    let small = SmallRoot::new(&root.join("terraform/deployer"));
    small.init(sh)?;
    let region = &args.region;
    let mut vars = vec![
        format!("-var=name={}", args.name),
        format!("-var=region={region}"),
        format!("-var=production_environment={}", args.environment),
        format!("-var=create_oidc_provider={}", !args.existing_oidc_provider),
    ];
    if let Some(repository) = &args.repository {
        vars.push(format!("-var=github_repository={repository}"));
    }
    if let Some(zone) = &args.hosted_zone_id {
        vars.push(format!("-var=hosted_zone_id={zone}"));
    }
    // The state where terraform/ keeps it (bootstrap's settings file).
    match crate::bootstrap::backend_bucket_and_key(&root)? {
        Some((bucket, key)) => {
            vars.push(format!("-var=state_bucket={bucket}"));
            vars.push(format!("-var=state_key={key}"));
        }
        None => bail!(
            "no terraform/{}: run `cargo xtask bootstrap --aws` first (the deployer may use \
             the state bucket it makes, and only that)",
            crate::bootstrap::BACKEND_FILE
        ),
    }
    let (plan, planned) = small.plan(sh, &root, "deployer", "the deployer", &vars)?;
    let changes = SmallRoot::changes(&planned);
    if args.dry_run {
        println!("dry run: nothing was created ({changes} change(s) planned)");
        return Ok(());
    }
    if changes > 0 {
        if !args.yes {
            eprint!(
                "Create or change the deployer's policies and roles on AWS ({changes} \
                 change(s))? Only 'yes' will be accepted: "
            );
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if answer.trim() != "yes" {
                bail!("nothing was changed (answer `yes`, or pass --yes)");
            }
        }
        small.apply(sh, &plan, "deployer")?;
    }
    let outputs = small.outputs(sh)?;
    let value = |name: &str| outputs[name]["value"].as_str().unwrap_or("-").to_owned();
    println!("deployer policy: {}", value("deployer_policy_arn"));
    match args.repository {
        Some(repository) => {
            println!(
                "roles for {repository}'s workflows (repository variables):\n  \
                 AWS_DEPLOYER_ROLE_ARN = {}\n  AWS_READONLY_ROLE_ARN = {}",
                value("deployer_role_arn"),
                value("readonly_role_arn")
            );
        }
        None => println!(
            "no roles (no --repository): attach the policy to whoever releases, or run again \
             with --repository OWNER/REPO for the workflows' roles"
        ),
    }
    Ok(())
}
