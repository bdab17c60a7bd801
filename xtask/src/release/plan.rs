//! `cargo xtask plan`: what applying `terraform/` would change, as a
//! release engineer reads it (code sizes and hashes, alias moves, routes,
//! redeployments), with Terraform's own plan underneath; and the check
//! `publish` and `rollback` put every plan through.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xshell::Shell;

use super::{Release, World, short_hash, short_revision};
use crate::LocalDir;
use crate::artifact::Manifest;
use crate::terraform::{TargetArgs, Terraform};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    target: TargetArgs,
}

/// `cargo xtask plan`: exits 0 when nothing would change, 2 when something
/// would (as `terraform plan -detailed-exitcode`), 1 on an error.
pub fn run(sh: &Shell, local: &LocalDir, args: PlanArgs) -> Result<ExitCode> {
    let terraform = Terraform::existing(sh, local, &args.target)?;
    terraform.init(sh)?;
    eprintln!(
        "==> terraform plan ({})",
        if terraform.aws { "AWS" } else { "local stack" }
    );
    let file = terraform.scratch_file("xtask.tfplan")?;
    let (_, plan) = make(sh, &terraform, &file, None)?;
    let manifest = read_manifest(&args.target)?;
    print!("{}", plan.render(manifest.as_ref()));
    Ok(if plan.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn read_manifest(target: &TargetArgs) -> Result<Option<Manifest>> {
    let dir = match &target.artifacts_dir {
        Some(dir) => dir.clone(),
        None => crate::project_root().join(crate::build::OUT_DIR),
    };
    let path = dir.join("manifest.json");
    Ok(match std::fs::read(&path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
        ),
        Err(_) => None,
    })
}

/// `terraform plan -out=FILE` (with `var_file` over the var files in the
/// working directory), quietly unless it fails; the plan, read back.
pub fn make(
    sh: &Shell,
    terraform: &Terraform,
    file: &Path,
    var_file: Option<&Path>,
) -> Result<(PathBuf, Plan)> {
    let var_file = var_file.map(|path| format!("-var-file={}", path.display()));
    make_with(sh, terraform, file, var_file.as_slice())
}

/// [`make`] with more of `terraform plan`'s arguments (`-destroy`, `-var=...`).
pub fn make_with(
    sh: &Shell,
    terraform: &Terraform,
    file: &Path,
    more: &[String],
) -> Result<(PathBuf, Plan)> {
    let out = format!("-out={}", file.display());
    let output = terraform
        .command(sh)
        .args([
            "plan",
            "-input=false",
            "-no-color",
            &terraform.lock_timeout(),
            &out,
        ])
        .args(more)
        .ignore_status()
        .quiet()
        .output()?;
    if !output.status.success() {
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let hint = crate::terraform::denied_hint(&said).unwrap_or_default();
        bail!("terraform plan failed.{hint}\n{said}");
    }
    let shown = terraform
        .command(sh)
        .args(["show", "-json"])
        .arg(file)
        .quiet()
        .read()
        .context("terraform show failed (above)")?;
    let shown: Value = serde_json::from_str(&shown).context("reading `terraform show -json`")?;
    Ok((file.to_owned(), Plan::from_json(&shown)?))
}

/// The resource changes of a Terraform plan (no-ops and reads left out).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Each output's planned value (`output_changes`' `after`).
    pub outputs: BTreeMap<String, Value>,
    /// The values of each root-module resource before the plan (`prior_state`), by address.
    pub prior: BTreeMap<String, Value>,
}

#[derive(Debug, Clone)]
pub struct Change {
    /// `aws_lambda_alias.prod["status"]`
    pub address: String,
    /// `aws_lambda_alias`
    pub kind: String,
    /// `prod`
    pub name: String,
    /// The `for_each` key, if any: `status`.
    pub key: Option<String>,
    /// Terraform's: `create`, `update`, `delete`, or a replacement's two.
    pub actions: Vec<String>,
    pub before: Value,
    pub after: Value,
    /// Which attributes of `after` are known only after the apply.
    pub after_unknown: Value,
}

impl Change {
    fn symbol(&self) -> &'static str {
        match self.actions.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["create"] => "+",
            ["delete"] => "-",
            ["update"] => "~",
            _ => "-/+",
        }
    }

    /// Whether this is `kind.name` of the root module (a module's
    /// resource of the same type and name is another resource).
    fn is(&self, kind: &str, name: &str) -> bool {
        self.kind == kind && self.name == name && !self.address.starts_with("module.")
    }

    fn text(value: &Value, field: &str) -> Option<String> {
        value[field].as_str().map(str::to_owned)
    }
}

impl Plan {
    pub fn from_json(shown: &Value) -> Result<Plan> {
        let mut changes = Vec::new();
        for change in shown["resource_changes"].as_array().into_iter().flatten() {
            let actions: Vec<String> = change["change"]["actions"]
                .as_array()
                .context("a resource change without actions")?
                .iter()
                .filter_map(|action| action.as_str().map(str::to_owned))
                .collect();
            if actions == ["no-op"] || actions == ["read"] {
                continue;
            }
            let key = match &change["index"] {
                Value::String(key) => Some(key.clone()),
                Value::Number(index) => Some(index.to_string()),
                _ => None,
            };
            changes.push(Change {
                address: change["address"].as_str().unwrap_or_default().to_owned(),
                kind: change["type"].as_str().unwrap_or_default().to_owned(),
                name: change["name"].as_str().unwrap_or_default().to_owned(),
                key,
                actions,
                before: change["change"]["before"].clone(),
                after: change["change"]["after"].clone(),
                after_unknown: change["change"]["after_unknown"].clone(),
            });
        }
        let outputs = shown["output_changes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, change)| (name.clone(), change["after"].clone()))
            .collect();
        let prior = shown["prior_state"]["values"]["root_module"]["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|resource| {
                Some((
                    resource["address"].as_str()?.to_owned(),
                    resource["values"].clone(),
                ))
            })
            .collect();
        Ok(Plan {
            changes,
            outputs,
            prior,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes a promotion may not make: anything but the prod aliases,
    /// their invoke permissions, and the prod stage's deployment (a new
    /// deployment, the stage updated to it; never the stage replaced or
    /// destroyed).
    pub fn outside_prod(&self) -> Vec<&Change> {
        self.changes
            .iter()
            .filter(|change| {
                let key = change.key.as_deref().unwrap_or_default();
                let allowed = change.is("aws_lambda_alias", "prod")
                    || is_canary_alarm(change)
                    || (change.is("aws_lambda_permission", "this") && key.ends_with(":prod"))
                    || change.is("aws_api_gateway_deployment", "prod")
                    || (change.is("aws_api_gateway_stage", "this")
                        && key == "prod"
                        && change.actions == ["update"]);
                !allowed
            })
            .collect()
    }

    /// Resources to add, change and destroy, as Terraform counts them.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for change in &self.changes {
            for action in &change.actions {
                match action.as_str() {
                    "create" => counts.0 += 1,
                    "update" => counts.1 += 1,
                    "delete" => counts.2 += 1,
                    _ => {}
                }
            }
        }
        counts
    }

    /// Per function, what changes: its code (size and hash, old -> new)
    /// and its aliases.
    pub fn functions(&self, manifest: Option<&Manifest>) -> BTreeMap<String, Vec<String>> {
        let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for change in &self.changes {
            let Some(function) = change.key.clone() else {
                continue;
            };
            if change.is("aws_lambda_function", "this") {
                let size_after = manifest
                    .and_then(|manifest| manifest.functions.get(&function))
                    .map(|artifact| artifact.zip_size);
                let hash = |value: &Value| {
                    Change::text(value, "source_code_hash")
                        .map(|hash| short_hash(&hash))
                        .unwrap_or_else(|| "none".to_owned())
                };
                let size = |value: &Value, known: Option<u64>| {
                    value["source_code_size"]
                        .as_u64()
                        .or(known)
                        .map(human_size)
                        .unwrap_or_else(|| "none".to_owned())
                };
                let line = match change.symbol() {
                    "+" => format!(
                        "new function: code {} ({})",
                        size(&Value::Null, size_after),
                        hash(&change.after)
                    ),
                    "-" => "removed".to_owned(),
                    _ if change.before["source_code_hash"] != change.after["source_code_hash"] => {
                        format!(
                            "code {} -> {} ({} -> {})",
                            size(&change.before, None),
                            size(&Value::Null, size_after),
                            hash(&change.before),
                            hash(&change.after)
                        )
                    }
                    _ => "configuration changes (code unchanged)".to_owned(),
                };
                lines.entry(function).or_default().push(line);
            } else if change.kind == "aws_lambda_alias" {
                lines.entry(function).or_default().push(format!(
                    "{}: {} -> {}",
                    change.name,
                    alias_target(&change.before),
                    alias_target(&change.after)
                ));
            }
        }
        lines
    }

    /// Routes added (`+`), removed (`-`) and changed (`~`), by route key.
    pub fn routes(&self) -> BTreeMap<String, &'static str> {
        let mut routes = BTreeMap::new();
        for change in &self.changes {
            let Some(key) = &change.key else { continue };
            let route = match change.kind.as_str() {
                "aws_api_gateway_method" | "aws_api_gateway_integration" => key.clone(),
                // Keyed "GET /user/{id} 404": the route, then the status.
                "aws_api_gateway_method_response" | "aws_api_gateway_integration_response" => {
                    match key.rsplit_once(' ') {
                        Some((route, _)) => route.to_owned(),
                        None => continue,
                    }
                }
                _ => continue,
            };
            let symbol = match (change.kind.as_str(), change.symbol()) {
                ("aws_api_gateway_method", "+") => "+",
                ("aws_api_gateway_method", "-") => "-",
                _ => "~",
            };
            let entry = routes.entry(route).or_insert(symbol);
            // A method added or removed says more than its parts changing.
            if symbol != "~" {
                *entry = symbol;
            }
        }
        routes
    }

    /// The stages that redeploy, with the API revision they move between.
    pub fn deployments(&self) -> Vec<String> {
        self.changes
            .iter()
            .filter(|change| change.kind == "aws_api_gateway_deployment")
            .filter(|change| change.actions.iter().any(|action| action == "create"))
            .map(|change| {
                let revision = |value: &Value| match value["triggers"]["revision"].as_str() {
                    Some(revision) if !revision.is_empty() => short_revision(revision).to_owned(),
                    _ => "none".to_owned(),
                };
                format!(
                    "{} redeploys: API revision {} -> {}",
                    change.name,
                    revision(&change.before),
                    revision(&change.after)
                )
            })
            .collect()
    }

    /// Everything the sections above do not describe.
    fn others(&self) -> Vec<&Change> {
        self.changes
            .iter()
            .filter(|change| {
                let described = matches!(
                    change.kind.as_str(),
                    "aws_lambda_function"
                        | "aws_lambda_alias"
                        | "aws_api_gateway_method"
                        | "aws_api_gateway_integration"
                        | "aws_api_gateway_method_response"
                        | "aws_api_gateway_integration_response"
                        | "aws_api_gateway_deployment"
                );
                // A stage's update is its deployment's move, shown above.
                let stage_moves = change.kind == "aws_api_gateway_stage" && change.symbol() == "~";
                !described && !stage_moves
            })
            .collect()
    }

    /// The readable preview.
    pub fn render(&self, manifest: Option<&Manifest>) -> String {
        if self.is_empty() {
            return "No changes: what is applied matches terraform/, the manifest and the prod pin.\n"
                .to_owned();
        }
        let mut out = String::new();
        let functions = self.functions(manifest);
        if !functions.is_empty() {
            out += "functions\n";
            let width = functions.keys().map(String::len).max().unwrap_or(0);
            for (function, lines) in &functions {
                out += &format!("  {function:<width$}  {}\n", lines.join("; "));
            }
        }
        let routes = self.routes();
        if !routes.is_empty() {
            out += "routes\n";
            for (route, symbol) in &routes {
                out += &format!("  {symbol} {route}\n");
            }
        }
        let deployments = self.deployments();
        if !deployments.is_empty() {
            out += "stages\n";
            for line in deployments {
                out += &format!("  {line}\n");
            }
        }
        let others = self.others();
        if !others.is_empty() {
            out += "other\n";
            for change in others {
                out += &format!("  {} {}\n", change.symbol(), change.address);
            }
        }
        let (add, change, destroy) = self.counts();
        out += &format!("Plan: {add} to add, {change} to change, {destroy} to destroy.\n");
        out
    }
}

/// What an alias planned as `value` runs: `1`, or `1 + 2 at 10%` with a
/// routing configuration (`none` when there is no alias).
fn alias_target(value: &Value) -> String {
    let Some(version) = Change::text(value, "function_version") else {
        return "none".to_owned();
    };
    match routed_to(value) {
        Some((other, weight)) => {
            format!("{version} + {other} at {}", crate::host::percent(weight))
        }
        None => version,
    }
}

/// The version and weight of an alias's routing configuration, if it
/// routes any share elsewhere.
fn routed_to(alias: &Value) -> Option<(String, f64)> {
    alias["routing_config"]
        .as_array()?
        .iter()
        .flat_map(|config| config["additional_version_weights"].as_object())
        .flatten()
        .find_map(|(version, weight)| Some((version.clone(), weight.as_f64()?)))
}

/// A canary's own alarm (`aws_cloudwatch_metric_alarm.errors["status:canary"]`,
/// or `.duration[...]`), which only a promotion makes and removes.
fn is_canary_alarm(change: &Change) -> bool {
    (change.is("aws_cloudwatch_metric_alarm", "errors")
        || change.is("aws_cloudwatch_metric_alarm", "duration"))
        && change
            .key
            .as_deref()
            .is_some_and(|key| key.ends_with(":canary"))
}

/// What an alarm's decision rests on: all of it but what names it or
/// says what it watches (its name, description, dimensions, tags, ARN):
/// its comparison, threshold, periods, statistics, units, metrics and
/// metric math, actions, and whatever the provider adds next. Unset and
/// empty read alike (the state's "", 0 or false where a plan has null: a
/// metric-math alarm's `period`); a threshold of 0 is one.
fn alarm_judgement(alarm: &Value) -> Value {
    const NAMING: &[&str] = &[
        "alarm_name",
        "alarm_description",
        "dimensions",
        "tags",
        "tags_all",
        "arn",
        "id",
    ];
    fn normalized(value: &Value, field: &str) -> Option<Value> {
        let value = match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    // The alarm's naming fields; its queries' metrics'
                    // dimensions.
                    .filter(|(name, _)| match field {
                        "" => !NAMING.contains(&name.as_str()),
                        _ => name.as_str() != "dimensions",
                    })
                    .filter_map(|(name, value)| Some((name.clone(), normalized(value, name)?)))
                    .collect(),
            ),
            Value::Array(items) => {
                let mut items: Vec<Value> = items
                    .iter()
                    .filter_map(|item| normalized(item, field))
                    .collect();
                // `metric_query` is a set: its order is the plan's or the
                // state's own.
                items.sort_by_key(|item| item.to_string());
                Value::Array(items)
            }
            other => other.clone(),
        };
        let empty = value.is_null()
            || value.as_str() == Some("")
            || value.as_bool() == Some(false)
            || value.as_array().is_some_and(Vec::is_empty)
            || value.as_object().is_some_and(|map| map.is_empty())
            || (field != "threshold" && value.as_f64() == Some(0.0));
        (!empty).then_some(value)
    }
    normalized(alarm, "").unwrap_or(Value::Null)
}

fn human_size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.2} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// The plan of a new pin, refused unless it only moves prod, and only to
/// `candidate`: what it changes (addresses, [`Plan::outside_prod`]) and
/// the values it sets ([`Plan::prod_mismatches`]); `World` supplies
/// the names applied and the flag for messages.
pub fn check_promotion(plan: &Plan, world: &World, candidate: &Release) -> Result<()> {
    let mismatches = plan.prod_mismatches(&ProdTarget {
        pin: candidate,
        functions: &world.applied.function_names,
        api: Some((&world.applied.api_id, &world.applied.region)),
        stage_settings: false,
    });
    if !mismatches.is_empty() {
        bail!(
            "the plan would not move prod to exactly the candidate pin, so nothing was pinned or \
             applied:\n  {}\nThat is a change to terraform/ not applied yet, or a change since \
             verify: `cargo xtask plan{flag}` shows it. Apply it (`cargo xtask apply{flag}`), \
             verify staging (`cargo xtask verify{flag}`), then publish.",
            mismatches.join("\n  "),
            flag = world.flag()
        );
    }
    let outside: Vec<String> = plan
        .outside_prod()
        .iter()
        .map(|change| {
            format!(
                "{} {} ({})",
                change.symbol(),
                change.address,
                change.actions.join(", ")
            )
        })
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    bail!(
        "the plan would change more than prod's aliases and deployment, so nothing was pinned or \
         applied. Besides the promotion it would:\n  {}\nThat is a change to terraform/, a var \
         file or the build not applied yet, or drift of what is applied: \
         `cargo xtask plan{flag}` shows it. Apply it (`cargo xtask apply{flag}`), verify staging \
         (`cargo xtask verify{flag}`), then publish.",
        outside.join("\n  "),
        flag = world.flag()
    )
}

/// What the prod changes of a plan must do: move prod to `pin`, as the
/// functions and API named are applied.
pub struct ProdTarget<'a> {
    pub pin: &'a Release,
    /// Manifest name -> Lambda name, as applied (empty before a first apply).
    pub functions: &'a BTreeMap<String, String>,
    /// The applied API's id and region (`None` before a first apply).
    pub api: Option<(&'a str, &'a str)>,
    /// Whether the prod stage's settings that are not part of a deployment
    /// (its access log, tracing, tags) may change: in an apply, which
    /// changes them on both stages; never in a promotion.
    pub stage_settings: bool,
}

/// The fields of each kind of prod change that a plan may leave unknown,
/// each whole: what AWS computes, and what [`Plan::prod_mismatches`]
/// checks as unknown itself (an alias's `routing_config`, refused; a new
/// stage deployment's id, the prod deployment this plan makes; the API's
/// ARN and id before the first apply).
const KNOWN_AFTER_APPLY: &[(&str, &[&str])] = &[
    (
        "aws_lambda_alias",
        &[
            "arn",
            "invoke_arn",
            "id",
            "function_version",
            "name",
            "function_name",
            "routing_config",
        ],
    ),
    (
        "aws_lambda_permission",
        &["id", "statement_id", "statement_id_prefix", "source_arn"],
    ),
    (
        "aws_api_gateway_deployment",
        &[
            "id",
            "created_date",
            "execution_arn",
            "invoke_url",
            "rest_api_id",
        ],
    ),
    (
        "aws_api_gateway_stage",
        &[
            "id",
            "arn",
            "execution_arn",
            "invoke_url",
            "web_acl_arn",
            "tags_all",
            "deployment_id",
        ],
    ),
    (
        "aws_cloudwatch_metric_alarm",
        &[
            "id",
            "arn",
            "tags_all",
            "evaluate_low_sample_count_percentiles",
        ],
    ),
];

/// Each `true` of a plan's `after_unknown` under `value`: its top-level
/// field and its path (`routing_config[0].additional_version_weights.5`).
fn unknown_paths(value: &Value, path: String, found: &mut Vec<(String, String)>) {
    let field = |path: &str| path.split(['.', '[']).next().unwrap_or_default().to_owned();
    match value {
        Value::Bool(true) => found.push((field(&path), path)),
        Value::Object(map) => {
            for (name, value) in map {
                let path = match path.is_empty() {
                    true => name.clone(),
                    false => format!("{path}.{name}"),
                };
                unknown_paths(value, path, found);
            }
        }
        Value::Array(items) => {
            for (index, value) in items.iter().enumerate() {
                unknown_paths(value, format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

/// The prod stage's arguments a deployment does not snapshot, and that
/// route nothing: what an apply may change on it besides its deployment.
const STAGE_SETTINGS: &[&str] = &[
    "access_log_settings",
    "xray_tracing_enabled",
    "tags",
    "tags_all",
];

impl Plan {
    /// What a change to prod leaves to be known only after apply, where
    /// no check below can judge it: a plan shows an unknown map value or
    /// list element by leaving it out of `after` (a routing weight of
    /// `timestamp()`'s would read as no weight). Each prod change may leave
    /// unknown only what AWS computes and the fields checked as unknown on
    /// their own ([`KNOWN_AFTER_APPLY`]).
    fn unknown_in_prod(&self, change: &Change, target: &ProdTarget) -> Vec<String> {
        let key = change.key.as_deref().unwrap_or_default();
        let scope = if change.is("aws_lambda_alias", "prod") || is_canary_alarm(change) {
            change.kind.as_str()
        } else if change.is("aws_lambda_permission", "this") && key.ends_with(":prod") {
            "aws_lambda_permission"
        } else if change.is("aws_api_gateway_deployment", "prod") {
            "aws_api_gateway_deployment"
        } else if change.is("aws_api_gateway_stage", "this") && key == "prod" {
            // Made by the first apply, before anything is pinned (its API
            // and deployment made with it), and checked only once made.
            if change.before.is_null() {
                return Vec::new();
            }
            "aws_api_gateway_stage"
        } else {
            return Vec::new();
        };
        let allowed = KNOWN_AFTER_APPLY
            .iter()
            .find(|(kind, _)| *kind == scope)
            .map_or(&[][..], |(_, fields)| *fields);
        let mut paths = Vec::new();
        unknown_paths(&change.after_unknown, String::new(), &mut paths);
        paths
            .into_iter()
            .filter(|(field, path)| {
                let settings = scope == "aws_api_gateway_stage"
                    && target.stage_settings
                    && STAGE_SETTINGS.contains(&field.as_str());
                let whole_and_allowed = allowed.contains(&field.as_str()) && path == field;
                !settings && !whole_and_allowed
            })
            .map(|(_, path)| {
                format!(
                    "{}: {path} is known only after apply; what prod is set to must be known \
                     when its plan is checked",
                    change.address
                )
            })
            .collect()
    }

    /// Where the changes to prod (its aliases, their permissions, prod's
    /// deployment and stage) do something other than move prod to the
    /// target's pin (empty: they do exactly that). A promotion's plan is
    /// held to it, and so is every apply's, so prod moves only through
    /// `publish` and `rollback`.
    ///
    /// - Each prod alias is set to the pin's version of its function, with
    ///   no routing configuration, or removed when the pin names none.
    /// - A permission lets this API's prod stage invoke the prod alias,
    ///   nothing else.
    /// - A new prod deployment is of the pin's API revision and sets nothing
    ///   but its API, description and trigger (no stage, canary or
    ///   variables of its own), and the API as this plan leaves it (the
    ///   `api_revision` output, computed from the configuration) is at that
    ///   revision too: a deployment snapshots the API as it is when made.
    /// - The prod stage's update changes only its deployment, to the prod
    ///   deployment this plan makes.
    /// - Nothing of these is left to be known only after apply but what
    ///   AWS computes ([`Plan::unknown_in_prod`]).
    pub fn prod_mismatches(&self, target: &ProdTarget) -> Vec<String> {
        let pin = target.pin;
        let mut found = Vec::new();
        let text = |value: &Value| match value {
            Value::String(text) => format!("{text:?}"),
            Value::Null => "none".to_owned(),
            other => other.to_string(),
        };
        let creates = |change: &Change| change.actions.iter().any(|action| action == "create");
        let prod_deployment_made = self
            .changes
            .iter()
            .any(|change| change.is("aws_api_gateway_deployment", "prod") && creates(change));
        for change in &self.changes {
            let key = change.key.as_deref().unwrap_or_default();
            let after = &change.after;
            let unknown = |field: &str| change.after_unknown[field] == Value::Bool(true);
            found.extend(self.unknown_in_prod(change, target));
            let expect = |found: &mut Vec<String>, field: &str, wanted: &Value| {
                if &after[field] != wanted {
                    found.push(format!(
                        "{}: {field} {}, prod's pin sets {}",
                        change.address,
                        if unknown(field) {
                            "(known after apply)".to_owned()
                        } else {
                            text(&after[field])
                        },
                        text(wanted)
                    ));
                }
            };
            if change.is("aws_lambda_alias", "prod") {
                match pin.functions.get(key) {
                    Some(version) if creates(change) || change.actions == ["update"] => {
                        expect(
                            &mut found,
                            "function_version",
                            &Value::from(version.as_str()),
                        );
                        expect(&mut found, "name", &Value::from("prod"));
                        if let Some(name) = target.functions.get(key) {
                            expect(&mut found, "function_name", &Value::from(name.as_str()));
                        }
                        let routing = &after["routing_config"];
                        let canary = pin.canary.as_ref().and_then(|canary| {
                            Some((canary.versions.get(key)?.clone(), canary.weight()))
                        });
                        let weights: Vec<(String, f64)> = routing
                            .as_array()
                            .into_iter()
                            .flatten()
                            .flat_map(|config| config["additional_version_weights"].as_object())
                            .flatten()
                            .map(|(v, w)| (v.clone(), w.as_f64().unwrap_or(f64::NAN)))
                            .collect();
                        let as_pinned = !unknown("routing_config")
                            && match &canary {
                                None => weights.is_empty(),
                                Some((new, weight)) => {
                                    weights.len() == 1
                                        && weights[0].0 == *new
                                        && (weights[0].1 - weight).abs() < 1e-9
                                }
                            };
                        if !as_pinned {
                            found.push(match &canary {
                                None => format!(
                                    "{}: routing_config {routing}, the pin routes all of prod \
                                     to version {version}",
                                    change.address
                                ),
                                Some((new, weight)) => format!(
                                    "{}: routing_config {routing}, the pin routes {} of prod \
                                     to version {new}, the rest to {version}",
                                    change.address,
                                    crate::host::percent(*weight)
                                ),
                            });
                        }
                    }
                    Some(version) => found.push(format!(
                        "{}: {}, but the pin names version {version}",
                        change.address,
                        change.actions.join(", ")
                    )),
                    None if change.actions == ["delete"] => {}
                    None => found.push(format!(
                        "{}: {}, but the pin names no version of {key}",
                        change.address,
                        change.actions.join(", ")
                    )),
                }
            } else if is_canary_alarm(change) {
                let key = key.trim_end_matches(":canary");
                let version = pin
                    .canary
                    .as_ref()
                    .and_then(|canary| canary.versions.get(key));
                match version {
                    None if change.actions == ["delete"] => {}
                    None => found.push(format!(
                        "{}: {}, but the pin has no canary of {key}",
                        change.address,
                        change.actions.join(", ")
                    )),
                    Some(_) if !creates(change) && change.actions != ["update"] => {
                        found.push(format!(
                            "{}: {}, but the pin's canary of {key} is watched by it",
                            change.address,
                            change.actions.join(", ")
                        ))
                    }
                    Some(version) => {
                        let name = target
                            .functions
                            .get(key)
                            .cloned()
                            .unwrap_or_else(|| key.to_owned());
                        let wanted = serde_json::json!({
                            "FunctionName": name,
                            "Resource": format!("{name}:prod"),
                            "ExecutedVersion": version,
                        });
                        // Its metrics: the alarm's own, or its queries'.
                        let mut dimensions: Vec<&Value> = Vec::new();
                        if !after["dimensions"].is_null() {
                            dimensions.push(&after["dimensions"]);
                        }
                        for query in after["metric_query"].as_array().into_iter().flatten() {
                            for metric in query["metric"].as_array().into_iter().flatten() {
                                dimensions.push(&metric["dimensions"]);
                            }
                        }
                        if dimensions.is_empty() || dimensions.iter().any(|d| **d != wanted) {
                            found.push(format!(
                                "{}: watches {}, the pin's canary is {wanted}",
                                change.address,
                                dimensions
                                    .iter()
                                    .map(|d| d.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                        // Named as the canary looks for it, and judging as
                        // the prod alias's alarm of its kind, as applied:
                        // what decides a canary is never a change riding
                        // along with it, as it exists during canaries only.
                        let kind = change.name.as_str();
                        expect(
                            &mut found,
                            "alarm_name",
                            &Value::from(format!("{name}-canary-{kind}")),
                        );
                        let prod = format!("aws_cloudwatch_metric_alarm.{kind}[\"{key}:prod\"]");
                        match self.prior.get(&prod) {
                            None => found.push(format!(
                                "{}: no {prod} is applied to judge it by: apply terraform/ first",
                                change.address
                            )),
                            Some(applied) => {
                                let differs = alarm_judgement(after) != alarm_judgement(applied);
                                if differs {
                                    found.push(format!(
                                        "{}: judges otherwise than {prod} (all but its \
                                         name, description, dimensions and tags): {} against \
                                         {}",
                                        change.address,
                                        alarm_judgement(after),
                                        alarm_judgement(applied)
                                    ));
                                }
                            }
                        }
                    }
                }
            } else if change.is("aws_lambda_permission", "this") && key.ends_with(":prod") {
                let function = key.trim_end_matches(":prod");
                if !creates(change) && change.actions != ["update"] {
                    if pin.functions.contains_key(function) {
                        found.push(format!(
                            "{}: {}, but prod serves {function}",
                            change.address,
                            change.actions.join(", ")
                        ));
                    }
                    continue;
                }
                expect(&mut found, "qualifier", &Value::from("prod"));
                expect(&mut found, "action", &Value::from("lambda:InvokeFunction"));
                expect(
                    &mut found,
                    "principal",
                    &Value::from("apigateway.amazonaws.com"),
                );
                if let Some(name) = target.functions.get(function) {
                    expect(&mut found, "function_name", &Value::from(name.as_str()));
                }
                let source = after["source_arn"].as_str();
                let allowed = match (source, target.api) {
                    (Some(source), Some((api_id, region))) => {
                        prod_source_arn(source).is_some_and(|(r, id)| r == region && id == api_id)
                    }
                    (Some(source), None) => prod_source_arn(source).is_some(),
                    // Before a first apply the API's ARN is not known yet.
                    (None, api) => api.is_none() && unknown("source_arn"),
                };
                if !allowed {
                    found.push(format!(
                        "{}: source_arn {}, where only this API's prod stage may invoke \
                         (arn:aws:execute-api:REGION:ACCOUNT:API/prod/*/*)",
                        change.address,
                        source
                            .map(|s| format!("{s:?}"))
                            .unwrap_or_else(|| "unknown".into())
                    ));
                }
            } else if change.is("aws_api_gateway_deployment", "prod") {
                if !creates(change) {
                    found.push(format!(
                        "{}: {} (prod must keep a deployment, and a deployment is made, never \
                         changed)",
                        change.address,
                        change.actions.join(", ")
                    ));
                    continue;
                }
                let revision = &after["triggers"]["revision"];
                if revision.as_str() != Some(pin.api_revision.as_str())
                    || after["triggers"].as_object().is_none_or(|t| t.len() != 1)
                {
                    found.push(format!(
                        "{}: triggers {}, the pin deploys API revision {}",
                        change.address,
                        after["triggers"],
                        text(&Value::from(pin.api_revision.as_str()))
                    ));
                }
                if let Some((api_id, _)) = target.api {
                    expect(&mut found, "rest_api_id", &Value::from(api_id));
                }
                expect(
                    &mut found,
                    "description",
                    &Value::from(format!("prod at API revision {}", pin.api_revision)),
                );
                for (field, value) in after.as_object().into_iter().flatten() {
                    let empty = value.is_null()
                        || value.as_array().is_some_and(Vec::is_empty)
                        || value.as_object().is_some_and(|map| map.is_empty());
                    if !empty
                        && !matches!(field.as_str(), "rest_api_id" | "description" | "triggers")
                    {
                        found.push(format!(
                            "{}: sets {field} {value}: a prod deployment sets only its API, \
                             description and revision",
                            change.address
                        ));
                    }
                }
                let planned = self.outputs.get("api_revision").unwrap_or(&Value::Null);
                if !pin.api_revision.is_empty()
                    && planned.as_str() != Some(pin.api_revision.as_str())
                {
                    found.push(format!(
                        "{}: snapshots the API at revision {} (what terraform/ configures now), \
                         but the pin deploys {}: the API changed since it was verified",
                        change.address,
                        planned
                            .as_str()
                            .map(|revision| short_revision(revision).to_owned())
                            .unwrap_or_else(|| text(planned)),
                        short_revision(&pin.api_revision)
                    ));
                }
            } else if change.is("aws_api_gateway_stage", "this") && key == "prod" {
                if change.actions != ["update"] {
                    if !change.before.is_null() {
                        found.push(format!(
                            "{}: {} (prod's stage is updated, never replaced or destroyed)",
                            change.address,
                            change.actions.join(", ")
                        ));
                    }
                    continue;
                }
                let fields: std::collections::BTreeSet<&String> = change
                    .before
                    .as_object()
                    .into_iter()
                    .flatten()
                    .chain(after.as_object().into_iter().flatten())
                    .chain(change.after_unknown.as_object().into_iter().flatten())
                    .map(|(field, _)| field)
                    .collect();
                for field in fields {
                    let moved = unknown(field) || change.before[field] != after[field];
                    if !moved {
                        continue;
                    }
                    if target.stage_settings && STAGE_SETTINGS.contains(&field.as_str()) {
                        continue;
                    }
                    if field == "deployment_id" {
                        // To the deployment this plan makes, and no other.
                        if !(unknown(field) && prod_deployment_made) {
                            found.push(format!(
                                "{}: deployment_id {} -> {}, not the prod deployment this plan \
                                 makes",
                                change.address,
                                text(&change.before[field]),
                                text(&after[field])
                            ));
                        }
                        continue;
                    }
                    found.push(format!(
                        "{}: {field} {} -> {}, prod's stage changes only its deployment",
                        change.address,
                        text(&change.before[field]),
                        if unknown(field) {
                            "(known after apply)".to_owned()
                        } else {
                            text(&after[field])
                        }
                    ));
                }
            }
        }
        found
    }
}

/// The region and API id of `arn:PARTITION:execute-api:REGION:ACCOUNT:API/prod/*/*`,
/// if `source` is exactly that.
fn prod_source_arn(source: &str) -> Option<(&str, &str)> {
    let rest = source.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(':')?;
    let rest = rest.strip_prefix("execute-api:")?;
    let (region, rest) = rest.split_once(':')?;
    let (account, rest) = rest.split_once(':')?;
    let api = rest.strip_suffix("/prod/*/*")?;
    let word = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    (partition.starts_with("aws")
        && word(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && word(api))
    .then_some((region, api))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(address: &str, actions: &[&str], before: Value, after: Value) -> Value {
        let (resource, index) = match address.split_once('[') {
            Some((resource, index)) => (
                resource,
                serde_json::from_str::<Value>(index.trim_end_matches(']')).unwrap(),
            ),
            None => (address, Value::Null),
        };
        let (kind, name) = resource.split_once('.').unwrap();
        json!({
            "address": address, "type": kind, "name": name, "index": index,
            "change": { "actions": actions, "before": before, "after": after },
        })
    }

    /// A change whose attributes do not matter.
    fn bare(address: &str, actions: &[&str]) -> Value {
        change(address, actions, json!({}), json!({}))
    }

    fn plan(changes: Vec<Value>) -> Plan {
        Plan::from_json(&json!({ "resource_changes": changes })).unwrap()
    }

    #[test]
    fn a_promotion_may_touch_only_prod() {
        let promotion = plan(vec![
            change(
                r#"aws_lambda_alias.prod["status"]"#,
                &["update"],
                json!({"function_version": "1"}),
                json!({"function_version": "2"}),
            ),
            change(
                r#"aws_lambda_permission.this["users:prod"]"#,
                &["create"],
                Value::Null,
                json!({}),
            ),
            bare("aws_api_gateway_deployment.prod", &["create", "delete"]),
            change(
                r#"aws_api_gateway_stage.this["prod"]"#,
                &["update"],
                json!({}),
                json!({}),
            ),
            change(
                r#"aws_lambda_alias.staging["status"]"#,
                &["no-op"],
                json!({}),
                json!({}),
            ),
        ]);
        assert!(promotion.outside_prod().is_empty());
        assert_eq!(promotion.counts(), (2, 2, 1));

        let more = plan(vec![
            change(
                r#"aws_lambda_permission.this["users:staging"]"#,
                &["update"],
                json!({}),
                json!({}),
            ),
            change(
                r#"aws_api_gateway_stage.this["staging"]"#,
                &["update"],
                json!({}),
                json!({}),
            ),
            bare("aws_api_gateway_deployment.staging", &["create", "delete"]),
            change(
                r#"aws_cloudwatch_log_group.this["status"]"#,
                &["update"],
                json!({}),
                json!({}),
            ),
            change(
                r#"aws_lambda_function.this["status"]"#,
                &["update"],
                json!({}),
                json!({}),
            ),
            bare(
                r#"aws_api_gateway_stage.this["prod"]"#,
                &["delete", "create"],
            ),
        ]);
        let outside: Vec<&str> = more
            .outside_prod()
            .iter()
            .map(|c| c.address.as_str())
            .collect();
        assert_eq!(outside.len(), 6, "{outside:?}");
    }

    /// A promotion to `{status: 2, users: 1}` at revision `rev2`, with
    /// `edit` applied to its plan JSON first; what the check finds.
    fn mismatches(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let alias = |function: &str, version: &str| {
            json!({"name": "prod", "function_name": format!("rust-lambda-api-{function}"),
                   "function_version": version, "routing_config": []})
        };
        let mut shown = json!({
            "resource_changes": [
                change(r#"aws_lambda_alias.prod["status"]"#, &["update"],
                       alias("status", "1"), alias("status", "2")),
                change(r#"aws_lambda_alias.prod["users"]"#, &["create"], Value::Null,
                       alias("users", "1")),
                change(r#"aws_lambda_permission.this["users:prod"]"#, &["create"], Value::Null,
                       json!({"qualifier": "prod", "action": "lambda:InvokeFunction",
                              "principal": "apigateway.amazonaws.com",
                              "function_name": "rust-lambda-api-users",
                              "source_arn": "arn:aws:execute-api:us-east-1:123456789012:api/prod/*/*"})),
                change("aws_api_gateway_deployment.prod", &["create", "delete"],
                       json!({"triggers": {"revision": "rev1"}, "rest_api_id": "api"}),
                       json!({"triggers": {"revision": "rev2"}, "rest_api_id": "api",
                              "description": "prod at API revision rev2", "stage_name": null,
                              "canary_settings": [], "variables": null})),
                change(r#"aws_api_gateway_stage.this["prod"]"#, &["update"],
                       json!({"deployment_id": "d1", "variables": {"stage": "prod"}}),
                       json!({"variables": {"stage": "prod"}})),
            ],
            "output_changes": {"api_revision": {"actions": ["no-op"], "after": "rev2"}},
        });
        shown["resource_changes"][4]["change"]["after_unknown"] = json!({"deployment_id": true});
        edit(&mut shown);
        let candidate = Release {
            release: 2,
            note: String::new(),
            functions: BTreeMap::from([
                ("status".to_owned(), "2".to_owned()),
                ("users".to_owned(), "1".to_owned()),
            ]),
            api_revision: "rev2".to_owned(),
            canary: None,
        };
        let functions = ["status", "users"]
            .map(|f| (f.to_owned(), format!("rust-lambda-api-{f}")))
            .into();
        let plan = Plan::from_json(&shown).unwrap();
        plan.prod_mismatches(&ProdTarget {
            pin: &candidate,
            functions: &functions,
            api: Some(("api", "us-east-1")),
            stage_settings: false,
        })
    }

    #[test]
    fn a_promotion_sets_exactly_the_candidate_pin() {
        assert_eq!(mismatches(|_| {}), Vec::<String>::new());
        fn after(at: usize) -> String {
            format!("/resource_changes/{at}/change/after")
        }
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(0)).unwrap()["function_version"] = json!("$LATEST")
                }),
                r#"aws_lambda_alias.prod["status"]: function_version "$LATEST", prod's pin sets "2""#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(0)).unwrap()["routing_config"] =
                        json!([{"additional_version_weights": {"1": 0.5}}])
                }),
                r#"aws_lambda_alias.prod["status"]: routing_config"#,
            ),
            (
                Box::new(|shown| {
                    shown["resource_changes"][1]["change"]["actions"] = json!(["delete"]);
                }),
                r#"aws_lambda_alias.prod["users"]: delete, but the pin names version 1"#,
            ),
            (
                Box::new(|shown| shown.pointer_mut(&after(2)).unwrap()["principal"] = json!("*")),
                r#"aws_lambda_permission.this["users:prod"]: principal "*""#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(2)).unwrap()["source_arn"] =
                        json!("arn:aws:execute-api:us-east-1:1:api/*/*/*")
                }),
                r#"aws_lambda_permission.this["users:prod"]: source_arn"#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(3)).unwrap()["triggers"]["revision"] = json!("rev3")
                }),
                r#"aws_api_gateway_deployment.prod: triggers {"revision":"rev3"}, the pin deploys API revision "rev2""#,
            ),
            (
                Box::new(|shown| shown["output_changes"]["api_revision"]["after"] = json!("rev3")),
                "aws_api_gateway_deployment.prod: snapshots the API at revision rev3",
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(4)).unwrap()["variables"] = json!({"stage": "staging"})
                }),
                r#"aws_api_gateway_stage.this["prod"]: variables {"stage":"prod"} -> {"stage":"staging"}"#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(2)).unwrap()["source_arn"] =
                        json!("arn:aws:execute-api:*:*:*/prod/*/*")
                }),
                r#"aws_lambda_permission.this["users:prod"]: source_arn"#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(2)).unwrap()["source_arn"] =
                        json!("arn:aws:execute-api:us-east-1:123456789012:other/prod/*/*")
                }),
                r#"aws_lambda_permission.this["users:prod"]: source_arn"#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(3)).unwrap()["canary_settings"] =
                        json!([{"percent_traffic": 100}]);
                }),
                "aws_api_gateway_deployment.prod: sets canary_settings",
            ),
            (
                Box::new(|shown| {
                    shown["resource_changes"][3]["change"]["actions"] = json!(["update"]);
                }),
                "aws_api_gateway_deployment.prod: update (prod must keep a deployment",
            ),
            (
                // The stage moved to another deployment (staging's, say).
                Box::new(|shown| {
                    shown.pointer_mut(&after(4)).unwrap()["deployment_id"] = json!("staging-d");
                    shown["resource_changes"][4]["change"]["after_unknown"] = json!({});
                }),
                r#"aws_api_gateway_stage.this["prod"]: deployment_id "d1" -> "staging-d""#,
            ),
            (
                Box::new(|shown| {
                    shown["resource_changes"][4]["change"]["actions"] = json!(["delete", "create"]);
                }),
                r#"aws_api_gateway_stage.this["prod"]: delete, create"#,
            ),
            // What a plan leaves unknown reads as unset in `after`: a
            // variable or stage the deployment sets only at apply.
            (
                Box::new(|shown| {
                    shown["resource_changes"][3]["change"]["after_unknown"] =
                        json!({"variables": {"lambdaAlias": true}});
                }),
                "aws_api_gateway_deployment.prod: variables.lambdaAlias is known only after apply",
            ),
            (
                Box::new(|shown| {
                    shown["resource_changes"][3]["change"]["after_unknown"] =
                        json!({"stage_name": true, "id": true});
                }),
                "aws_api_gateway_deployment.prod: stage_name is known only after apply",
            ),
        ];
        for (edit, expected) in cases {
            // Refused, and the first reason is the edit (a deployment
            // updated in place also leaves the stage without its new one).
            let found = mismatches(edit);
            assert!(
                !found.is_empty() && found.len() <= 2,
                "{expected}: {found:?}"
            );
            assert!(found[0].starts_with(expected), "{expected}: {found:?}");
        }
    }

    /// A canary of `status` 3 at 10% over prod's 2 (users unchanged), with
    /// `edit` applied to its plan JSON first; what the check finds.
    fn canary_mismatches(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let alias = |routing: Value| {
            json!({"name": "prod", "function_name": "rust-lambda-api-status",
                   "function_version": "2", "routing_config": routing})
        };
        let dimensions = json!({"FunctionName": "rust-lambda-api-status",
                                "Resource": "rust-lambda-api-status:prod", "ExecutedVersion": "3"});
        let prod = json!({"FunctionName": "rust-lambda-api-status",
                          "Resource": "rust-lambda-api-status:prod"});
        let metric = |name: &str, dimensions: &Value| {
            json!({"id": name.to_lowercase(), "expression": "", "return_data": false,
                   "metric": [{"namespace": "AWS/Lambda", "metric_name": name,
                               "dimensions": dimensions.clone(), "period": 10, "stat": "Sum"}]})
        };
        let errors = |name: &str, dimensions: &Value| {
            json!({"alarm_name": name, "comparison_operator": "GreaterThanThreshold",
                   "threshold": 5, "evaluation_periods": 1, "treat_missing_data": "notBreaching",
                   "alarm_actions": ["arn:topic"], "dimensions": null,
                   "metric_query": [metric("Errors", dimensions), metric("Invocations", dimensions),
                                    {"id": "rate", "expression": "100 * errors / invocations",
                                     "return_data": true, "metric": []}]})
        };
        let duration = |name: &str, dimensions: &Value| {
            json!({"alarm_name": name, "comparison_operator": "GreaterThanThreshold",
                   "threshold": 8000, "evaluation_periods": 1, "extended_statistic": "p99",
                   "metric_name": "Duration", "namespace": "AWS/Lambda", "period": 10,
                   "treat_missing_data": "notBreaching", "alarm_actions": ["arn:topic"],
                   "dimensions": dimensions.clone(), "metric_query": []})
        };
        let mut prior_errors = errors("rust-lambda-api-status-prod-errors", &prod);
        prior_errors["period"] = json!(0);
        let mut prior_duration = duration("rust-lambda-api-status-prod-duration", &prod);
        prior_duration["statistic"] = json!("");
        prior_duration["unit"] = json!("");
        let mut shown = json!({
            "resource_changes": [
                change(r#"aws_lambda_alias.prod["status"]"#, &["update"], alias(json!([])),
                       alias(json!([{"additional_version_weights": {"3": 0.1}}]))),
                change(r#"aws_cloudwatch_metric_alarm.errors["status:canary"]"#, &["create"],
                       Value::Null, errors("rust-lambda-api-status-canary-errors", &dimensions)),
                change(r#"aws_cloudwatch_metric_alarm.duration["status:canary"]"#, &["create"],
                       Value::Null, duration("rust-lambda-api-status-canary-duration", &dimensions)),
            ],
            // The prod alias's alarms as applied (the state reads "" where
            // the plan has null).
            "prior_state": {"values": {"root_module": {"resources": [
                {"address": r#"aws_cloudwatch_metric_alarm.errors["status:prod"]"#,
                 "values": prior_errors},
                {"address": r#"aws_cloudwatch_metric_alarm.duration["status:prod"]"#,
                 "values": prior_duration},
            ]}}},
        });
        edit(&mut shown);
        let candidate = Release {
            release: 2,
            note: String::new(),
            functions: BTreeMap::from([
                ("status".to_owned(), "2".to_owned()),
                ("users".to_owned(), "1".to_owned()),
            ]),
            api_revision: "rev2".to_owned(),
            canary: Some(crate::release::Canary {
                release: 3,
                note: String::new(),
                percent: 10,
                versions: BTreeMap::from([("status".to_owned(), "3".to_owned())]),
                started_at: String::new(),
                bake_seconds: 60,
            }),
        };
        let functions = ["status", "users"]
            .map(|f| (f.to_owned(), format!("rust-lambda-api-{f}")))
            .into();
        let plan = Plan::from_json(&shown).unwrap();
        assert!(plan.outside_prod().is_empty(), "{:?}", plan.outside_prod());
        plan.prod_mismatches(&ProdTarget {
            pin: &candidate,
            functions: &functions,
            api: Some(("api", "us-east-1")),
            stage_settings: false,
        })
    }

    #[test]
    fn a_canary_sets_exactly_the_pins_weights_and_watches_its_version() {
        assert_eq!(canary_mismatches(|_| {}), Vec::<String>::new());
        fn after(at: usize) -> String {
            format!("/resource_changes/{at}/change/after")
        }
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(0)).unwrap()["routing_config"] =
                        json!([{"additional_version_weights": {"3": 0.5}}])
                }),
                r#"aws_lambda_alias.prod["status"]: routing_config"#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(0)).unwrap()["routing_config"] =
                        json!([{"additional_version_weights": {"4": 0.1}}])
                }),
                "the pin routes 10% of prod to version 3",
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(0)).unwrap()["routing_config"] = json!([])
                }),
                "the pin routes 10% of prod to version 3, the rest to 2",
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(2)).unwrap()["dimensions"]["ExecutedVersion"] =
                        json!("2")
                }),
                r#"aws_cloudwatch_metric_alarm.duration["status:canary"]: watches"#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(1)).unwrap()["metric_query"][1]["metric"][0]["dimensions"]
                        ["Resource"] = json!("rust-lambda-api-status:staging")
                }),
                r#"aws_cloudwatch_metric_alarm.errors["status:canary"]: watches"#,
            ),
            (
                // An alarm for a function the canary does not change.
                Box::new(|shown| {
                    shown["resource_changes"][2]["address"] =
                        json!(r#"aws_cloudwatch_metric_alarm.duration["users:canary"]"#);
                    shown["resource_changes"][2]["index"] = json!("users:canary");
                }),
                "the pin has no canary of users",
            ),
            (
                Box::new(|shown| {
                    shown["resource_changes"][1]["change"]["actions"] = json!(["delete"]);
                }),
                "but the pin's canary of status is watched by it",
            ),
            // Judging otherwise than the prod alias's alarm: a pending edit
            // of the canary's alarms would first apply with the canary.
            (
                Box::new(|shown| shown.pointer_mut(&after(2)).unwrap()["threshold"] = json!(1e9)),
                r#"aws_cloudwatch_metric_alarm.duration["status:canary"]: judges otherwise"#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(1)).unwrap()["comparison_operator"] =
                        json!("LessThanThreshold")
                }),
                r#"aws_cloudwatch_metric_alarm.errors["status:canary"]: judges otherwise"#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(1)).unwrap()["metric_query"][2]["expression"] =
                        json!("0 * errors")
                }),
                "judges otherwise",
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(2)).unwrap()["treat_missing_data"] = json!("ignore")
                }),
                "judges otherwise",
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(1)).unwrap()["alarm_name"] =
                        json!("rust-lambda-api-status-prod-errors")
                }),
                r#"alarm_name "rust-lambda-api-status-prod-errors", prod's pin sets "rust-lambda-api-status-canary-errors""#,
            ),
            (
                Box::new(|shown| {
                    shown["prior_state"]["values"]["root_module"]["resources"] = json!([]);
                }),
                "is applied to judge it by",
            ),
            (
                Box::new(|shown| shown.pointer_mut(&after(2)).unwrap()["unit"] = json!("Seconds")),
                r#"aws_cloudwatch_metric_alarm.duration["status:canary"]: judges otherwise"#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(1)).unwrap()["metric_query"][0]["metric"][0]["unit"] =
                        json!("Seconds")
                }),
                r#"aws_cloudwatch_metric_alarm.errors["status:canary"]: judges otherwise"#,
            ),
            (
                Box::new(|shown| {
                    shown.pointer_mut(&after(1)).unwrap()["metric_query"][1]["account_id"] =
                        json!("210987654321")
                }),
                "judges otherwise",
            ),
            // A weight known only at apply is left out of `after`: the
            // plan shows the pin's weight alone.
            (
                Box::new(|shown| {
                    shown["resource_changes"][0]["change"]["after_unknown"] =
                        json!({"routing_config": [{"additional_version_weights": {"5": true}}]});
                }),
                r#"aws_lambda_alias.prod["status"]: routing_config[0].additional_version_weights.5 is known only after apply"#,
            ),
            (
                Box::new(|shown| {
                    shown["resource_changes"][1]["change"]["after_unknown"] =
                        json!({"metric_query": [{"metric": [{"stat": true}]}], "arn": true});
                }),
                r#"aws_cloudwatch_metric_alarm.errors["status:canary"]: metric_query[0].metric[0].stat is known only after apply"#,
            ),
        ];
        for (edit, expected) in cases {
            let found = canary_mismatches(edit);
            assert!(
                !found.is_empty() && found.len() <= 2 && found[0].contains(expected),
                "{expected}: {found:?}"
            );
        }
    }

    #[test]
    fn an_apply_may_change_the_prod_stages_settings_a_promotion_may_not() {
        let shown = json!({"resource_changes": [change(
            r#"aws_api_gateway_stage.this["prod"]"#,
            &["update"],
            json!({"deployment_id": "d1", "xray_tracing_enabled": false, "access_log_settings": []}),
            json!({"deployment_id": "d1", "xray_tracing_enabled": true,
                   "access_log_settings": [{"destination_arn": "arn:x", "format": "{}"}]}),
        )]});
        let plan = Plan::from_json(&shown).unwrap();
        let pin = Release {
            release: 0,
            note: String::new(),
            functions: BTreeMap::new(),
            api_revision: String::new(),
            canary: None,
        };
        let functions = BTreeMap::new();
        let target = |stage_settings| ProdTarget {
            pin: &pin,
            functions: &functions,
            api: None,
            stage_settings,
        };
        assert_eq!(plan.prod_mismatches(&target(true)), Vec::<String>::new());
        let refused = plan.prod_mismatches(&target(false));
        assert_eq!(refused.len(), 2, "{refused:?}");
        // Never its variables, which pick the alias.
        let mut variables = shown.clone();
        variables["resource_changes"][0]["change"]["after"]["variables"] =
            json!({"stage": "staging"});
        let plan = Plan::from_json(&variables).unwrap();
        assert_eq!(plan.prod_mismatches(&target(true)).len(), 1);
    }

    #[test]
    fn the_preview_names_code_alias_route_and_deployment_changes() {
        let old = crate::artifact::sha256(b"old zip");
        let new = crate::artifact::sha256(b"new zip");
        let mut manifest = Manifest::default();
        manifest.functions.insert(
            "status".to_owned(),
            crate::artifact::Artifact {
                path: String::new(),
                zip_size: 2 * 1024 * 1024,
                sha256: new.hex.clone(),
                code_sha256: new.base64.clone(),
                binary_size: 0,
                binary_sha256: String::new(),
                max_glibc: String::new(),
                profile: Default::default(),
            },
        );
        let plan = plan(vec![
            change(
                r#"aws_lambda_function.this["status"]"#,
                &["update"],
                json!({"source_code_hash": old.base64, "source_code_size": 1024 * 1024}),
                json!({"source_code_hash": new.base64}),
            ),
            change(
                r#"aws_lambda_alias.prod["users"]"#,
                &["create"],
                Value::Null,
                json!({"function_version": "4"}),
            ),
            change(
                r#"aws_lambda_alias.prod["chirps"]"#,
                &["update"],
                json!({"function_version": "1", "routing_config": []}),
                json!({"function_version": "1",
                       "routing_config": [{"additional_version_weights": {"2": 0.1}}]}),
            ),
            change(
                r#"aws_api_gateway_method.this["GET /version"]"#,
                &["create"],
                Value::Null,
                json!({}),
            ),
            change(
                r#"aws_api_gateway_integration_response.this["GET /version 200"]"#,
                &["create"],
                Value::Null,
                json!({}),
            ),
            change(
                r#"aws_api_gateway_integration_response.this["POST /user/{id} 409"]"#,
                &["update"],
                json!({}),
                json!({}),
            ),
            change(
                "aws_api_gateway_deployment.staging",
                &["create", "delete"],
                json!({"triggers": {"revision": "aaaaaaaaaaaaaaaa"}}),
                json!({"triggers": {"revision": "bbbbbbbbbbbbbbbb"}}),
            ),
            change(
                r#"aws_cloudwatch_log_group.this["status"]"#,
                &["update"],
                json!({}),
                json!({}),
            ),
        ]);
        let text = plan.render(Some(&manifest));
        let expected = format!(
            "functions\n  chirps  prod: 1 -> 1 + 2 at 10%\n  status  code 1.00 MiB -> 2.00 MiB ({} -> {})\n  users   prod: none -> 4\n\
             routes\n  + GET /version\n  ~ POST /user/{{id}}\n\
             stages\n  staging redeploys: API revision aaaaaaaaaaaa -> bbbbbbbbbbbb\n\
             other\n  ~ aws_cloudwatch_log_group.this[\"status\"]\n\
             Plan: 4 to add, 4 to change, 1 to destroy.\n",
            &old.hex[..12],
            &new.hex[..12]
        );
        assert_eq!(text, expected);
        assert!(Plan::default().render(None).starts_with("No changes"));
    }
}
