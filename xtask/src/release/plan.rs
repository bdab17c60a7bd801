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
    let scratch = scratch_dir(local, &terraform)?;
    let (_, plan) = make(sh, &terraform, &scratch.join("xtask.tfplan"), None)?;
    let manifest = read_manifest(&args.target)?;
    print!("{}", plan.render(manifest.as_ref()));
    Ok(if plan.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Where plans and candidate pins are written: never in `terraform/`.
pub fn scratch_dir(local: &LocalDir, terraform: &Terraform) -> Result<PathBuf> {
    let dir = if terraform.aws {
        crate::project_root().join("target/aws")
    } else {
        local.0.join("release")
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
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
    let out = format!("-out={}", file.display());
    let var_file = var_file.map(|path| format!("-var-file={}", path.display()));
    let output = terraform
        .command(sh)
        .args([
            "plan",
            "-input=false",
            "-no-color",
            "-lock-timeout=60s",
            &out,
        ])
        .args(var_file)
        .ignore_status()
        .quiet()
        .output()?;
    if !output.status.success() {
        bail!(
            "terraform plan failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
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

    fn is(&self, kind: &str, name: &str) -> bool {
        self.kind == kind && self.name == name
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
        Ok(Plan { changes, outputs })
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
                let version = |value: &Value| {
                    Change::text(value, "function_version").unwrap_or_else(|| "none".to_owned())
                };
                lines.entry(function).or_default().push(format!(
                    "{}: {} -> {}",
                    change.name,
                    version(&change.before),
                    version(&change.after)
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

fn human_size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.2} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// The plan of a new pin, refused unless it only moves prod, and only to
/// `candidate`: what it changes (addresses, [`Plan::outside_prod`]) and
/// the values it sets ([`Plan::promotion_mismatches`]); `World` supplies
/// the names applied and the flag for messages.
pub fn check_promotion(plan: &Plan, world: &World, candidate: &Release) -> Result<()> {
    let mismatches = plan.promotion_mismatches(
        candidate,
        &world.applied.function_names,
        &world.applied.api_id,
    );
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

impl Plan {
    /// Where the changes a promotion may make (prod's aliases, their
    /// permissions, prod's deployment and stage) do something other than
    /// move prod to `candidate` (empty: they do exactly that).
    /// `functions` maps manifest names to the Lambda names applied.
    ///
    /// - Each prod alias is set to the candidate's version of its function,
    ///   with no routing configuration, or removed when the candidate pins
    ///   none.
    /// - A permission lets API Gateway invoke the prod alias, nothing else.
    /// - A new prod deployment is of the candidate's API revision, and the
    ///   API as this plan leaves it (the `api_revision` output, computed
    ///   from the configuration) is at that revision too: a deployment
    ///   snapshots the API as it is when it is made.
    /// - The prod stage's update changes its deployment and nothing else.
    pub fn promotion_mismatches(
        &self,
        candidate: &Release,
        functions: &BTreeMap<String, String>,
        api_id: &str,
    ) -> Vec<String> {
        let mut found = Vec::new();
        let text = |value: &Value| match value {
            Value::String(text) => format!("{text:?}"),
            Value::Null => "none".to_owned(),
            other => other.to_string(),
        };
        let creates = |change: &Change| change.actions.iter().any(|action| action == "create");
        for change in &self.changes {
            let key = change.key.as_deref().unwrap_or_default();
            let after = &change.after;
            let expect = |found: &mut Vec<String>, field: &str, wanted: &Value| {
                if &after[field] != wanted {
                    found.push(format!(
                        "{}: {field} {}, the promotion sets {}",
                        change.address,
                        text(&after[field]),
                        text(wanted)
                    ));
                }
            };
            if change.is("aws_lambda_alias", "prod") {
                match candidate.functions.get(key) {
                    Some(version) if creates(change) || change.actions == ["update"] => {
                        expect(
                            &mut found,
                            "function_version",
                            &Value::from(version.as_str()),
                        );
                        expect(&mut found, "name", &Value::from("prod"));
                        let name = functions.get(key).map(String::as_str).unwrap_or(key);
                        expect(&mut found, "function_name", &Value::from(name));
                        let routing = &after["routing_config"];
                        let unrouted = routing.is_null()
                            || routing.as_array().is_some_and(|configs| {
                                configs.iter().all(|config| {
                                    config["additional_version_weights"]
                                        .as_object()
                                        .is_none_or(|weights| weights.is_empty())
                                })
                            });
                        if !unrouted {
                            found.push(format!(
                                "{}: routing_config {routing}, the promotion routes all of prod \
                                 to version {version}",
                                change.address
                            ));
                        }
                    }
                    Some(version) => found.push(format!(
                        "{}: {}, but the candidate pins version {version}",
                        change.address,
                        change.actions.join(", ")
                    )),
                    None if change.actions == ["delete"] => {}
                    None => found.push(format!(
                        "{}: {}, but the candidate pins no version of {key}",
                        change.address,
                        change.actions.join(", ")
                    )),
                }
            } else if change.is("aws_lambda_permission", "this") && key.ends_with(":prod") {
                let function = key.trim_end_matches(":prod");
                if !creates(change) && change.actions != ["update"] {
                    if candidate.functions.contains_key(function) {
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
                let name = functions.get(function).map(String::as_str);
                expect(
                    &mut found,
                    "function_name",
                    &Value::from(name.unwrap_or(function)),
                );
                let source = after["source_arn"].as_str().unwrap_or_default();
                if !source.ends_with("/prod/*/*") {
                    found.push(format!(
                        "{}: source_arn {source:?}, the promotion lets only the prod stage invoke",
                        change.address
                    ));
                }
            } else if change.is("aws_api_gateway_deployment", "prod") {
                if !creates(change) {
                    found.push(format!(
                        "{}: {} (prod must keep a deployment)",
                        change.address,
                        change.actions.join(", ")
                    ));
                    continue;
                }
                let revision = &after["triggers"]["revision"];
                if revision.as_str() != Some(candidate.api_revision.as_str()) {
                    found.push(format!(
                        "{}: deploys API revision {}, the candidate pins {}",
                        change.address,
                        text(revision),
                        text(&Value::from(candidate.api_revision.as_str()))
                    ));
                }
                expect(&mut found, "rest_api_id", &Value::from(api_id));
                let applied = self.outputs.get("api_revision").unwrap_or(&Value::Null);
                if applied.as_str() != Some(candidate.api_revision.as_str()) {
                    found.push(format!(
                        "{}: snapshots the API at revision {} (what terraform/ configures now), \
                         but the candidate pins {}: the API changed since verify",
                        change.address,
                        applied
                            .as_str()
                            .map(|revision| short_revision(revision).to_owned())
                            .unwrap_or_else(|| text(applied)),
                        short_revision(&candidate.api_revision)
                    ));
                }
            } else if change.is("aws_api_gateway_stage", "this")
                && key == "prod"
                && change.actions == ["update"]
            {
                let fields: std::collections::BTreeSet<&String> = change
                    .before
                    .as_object()
                    .into_iter()
                    .flatten()
                    .chain(after.as_object().into_iter().flatten())
                    .map(|(field, _)| field)
                    .collect();
                for field in fields {
                    let unknown = change.after_unknown[field] == Value::Bool(true);
                    let differs = unknown || change.before[field] != after[field];
                    if differs && field != "deployment_id" {
                        found.push(format!(
                            "{}: {field} {} -> {}, the promotion changes only its deployment",
                            change.address,
                            text(&change.before[field]),
                            if unknown {
                                "(known after apply)".to_owned()
                            } else {
                                text(&after[field])
                            }
                        ));
                    }
                }
            }
        }
        found
    }
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
                              "source_arn": "arn:aws:execute-api:us-east-1:1:api/prod/*/*"})),
                change("aws_api_gateway_deployment.prod", &["create", "delete"],
                       json!({"triggers": {"revision": "rev1"}, "rest_api_id": "api"}),
                       json!({"triggers": {"revision": "rev2"}, "rest_api_id": "api"})),
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
        };
        let functions = ["status", "users"]
            .map(|f| (f.to_owned(), format!("rust-lambda-api-{f}")))
            .into();
        let plan = Plan::from_json(&shown).unwrap();
        assert!(plan.outside_prod().is_empty());
        plan.promotion_mismatches(&candidate, &functions, "api")
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
                r#"aws_lambda_alias.prod["status"]: function_version "$LATEST", the promotion sets "2""#,
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
                r#"aws_lambda_alias.prod["users"]: delete, but the candidate pins version 1"#,
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
                r#"aws_api_gateway_deployment.prod: deploys API revision "rev3", the candidate pins "rev2""#,
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
        ];
        for (edit, expected) in cases {
            let found = mismatches(edit);
            assert_eq!(found.len(), 1, "{expected}: {found:?}");
            assert!(found[0].starts_with(expected), "{expected}: {found:?}");
        }
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
            "functions\n  status  code 1.00 MiB -> 2.00 MiB ({} -> {})\n  users   prod: none -> 4\n\
             routes\n  + GET /version\n  ~ POST /user/{{id}}\n\
             stages\n  staging redeploys: API revision aaaaaaaaaaaa -> bbbbbbbbbbbb\n\
             other\n  ~ aws_cloudwatch_log_group.this[\"status\"]\n\
             Plan: 4 to add, 3 to change, 1 to destroy.\n",
            &old.hex[..12],
            &new.hex[..12]
        );
        assert_eq!(text, expected);
        assert!(Plan::default().render(None).starts_with("No changes"));
    }
}
