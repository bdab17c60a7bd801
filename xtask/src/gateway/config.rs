//! The API as the emulator holds it, in the form the gateway serves it:
//! stages (with their variables and the function version each integration
//! reaches through them), resources, methods, integrations and integration
//! responses. Read from the emulator's API Gateway and Lambda APIs, never
//! from a route table of our own.
//!
//! Loading refuses what this gateway does not emulate faithfully (another
//! request template, integration type or authorization, a response template
//! outside [`mapping`]'s subset), naming the route.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::limits::{Grant, Period, Quota, Throttle};
use super::mapping::{SelectionPattern, Template};
use crate::LocalDir;
use crate::host::Routed;
use crate::live::{Applied, Aws, LocalStack, aws_error};

/// The request template whose envelope the gateway builds natively.
pub const REQUEST_TEMPLATE: &str = include_str!("../../../terraform/templates/request.vtl");

/// The whole API: each stage, by name.
#[derive(Debug)]
pub struct Api {
    pub id: String,
    /// The API's name (API Gateway's metrics are by `ApiName`).
    pub name: String,
    pub stages: BTreeMap<String, Stage>,
    /// Custom domain names of this API: host -> its base path mappings.
    pub domains: BTreeMap<String, Vec<BasePath>>,
}

/// One base path mapping of a custom domain name: requests for `path`
/// (`""`: the whole domain) go to `stage`, without the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePath {
    pub path: String,
    pub stage: String,
}

impl Api {
    /// The stage a request for `host` and `path` reaches through a custom
    /// domain, and the path within the stage; `None` when `host` is no
    /// domain name of this API (`Some(None)`: a domain of it whose mappings
    /// take no such path).
    pub fn by_domain(&self, host: &str, path: &str) -> Option<Option<(String, String)>> {
        let host = host.rsplit_once(':').map_or(host, |(name, _)| name);
        let mappings = self.domains.get(&host.to_ascii_lowercase())?;
        // The longest base path that the request's path starts with.
        let mut best: Option<(&BasePath, String)> = None;
        for mapping in mappings {
            let rest = if mapping.path.is_empty() {
                Some(path.to_owned())
            } else {
                let prefix = format!("/{}", mapping.path);
                match path.strip_prefix(&prefix) {
                    Some("") => Some("/".to_owned()),
                    Some(rest) if rest.starts_with('/') => Some(rest.to_owned()),
                    _ => None,
                }
            };
            if let Some(rest) = rest
                && best
                    .as_ref()
                    .is_none_or(|(b, _)| b.path.len() < mapping.path.len())
            {
                best = Some((mapping, rest));
            }
        }
        Some(best.map(|(mapping, rest)| (mapping.stage.clone(), rest)))
    }
}

#[derive(Debug)]
pub struct Stage {
    pub name: String,
    pub variables: BTreeMap<String, String>,
    /// The API revision the stage's deployment was made at.
    pub revision: String,
    /// The routes it serves, or why it cannot serve any.
    pub routes: Result<Arc<Routes>, String>,
    /// The function each integration URI reaches from this stage, or why
    /// it reaches none (an alias that does not exist yet).
    pub targets: BTreeMap<String, Result<Target, String>>,
    /// The stage's method throttling (its `*/*` method setting), each
    /// method's own bucket.
    pub throttle: Option<Throttle>,
    /// What each API key (by its value) of the stage's usage plans grants.
    pub keys: BTreeMap<String, Grant>,
    /// Where and how the stage writes its access log, if it does.
    pub access_log: Option<AccessLog>,
}

/// A stage's access log settings: the log group (from the destination ARN)
/// and the line format, with its `$context` variables.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLog {
    pub group: String,
    pub format: String,
}

impl AccessLog {
    /// From a stage's `accessLogSettings`: a CloudWatch Logs group ARN
    /// (`arn:aws:logs:REGION:ACCOUNT:log-group:NAME`, `:*` optional) and a
    /// format. Another destination (Kinesis Data Firehose) is not written.
    pub fn from_settings(destination: Option<&str>, format: Option<&str>) -> Option<AccessLog> {
        let (_, group) = destination?.split_once(":log-group:")?;
        let group = group.strip_suffix(":*").unwrap_or(group);
        Some(AccessLog {
            group: group.to_owned(),
            format: format?.to_owned(),
        })
    }
}

/// What an integration invokes from a stage.
#[derive(Debug, Clone)]
pub struct Target {
    /// The alias's version, and a weighted alias's other version.
    pub routed: Routed,
    /// The ARN as the URI names it (`...:function:NAME:prod`).
    pub invoked_arn: String,
}

#[derive(Debug, Default)]
pub struct Routes {
    pub resources: Vec<Resource>,
}

#[derive(Debug)]
pub struct Resource {
    /// `/user/{id}`
    pub path: String,
    segments: Vec<Segment>,
    /// By HTTP method (`ANY` included).
    pub methods: BTreeMap<String, Integration>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    // Declared in order of precedence: a literal beats a parameter.
    Literal(String),
    Param(String),
    Greedy(String),
}

#[derive(Debug)]
pub struct Integration {
    /// Whether a caller needs an API key of the stage's usage plans.
    pub api_key_required: bool,
    /// The Lambda invocation URI, stage variables unresolved.
    pub uri: String,
    pub timeout: Duration,
    /// Content types with a request template (all of them [`REQUEST_TEMPLATE`]).
    pub content_types: Vec<String>,
    /// `NEVER`, `WHEN_NO_MATCH` or `WHEN_NO_TEMPLATES`.
    pub passthrough: String,
    /// Responses with a selection pattern, by status.
    pub responses: Vec<IntegrationResponse>,
    /// The response with no pattern: success, and errors nothing else matched.
    pub default: Option<IntegrationResponse>,
}

#[derive(Debug)]
pub struct IntegrationResponse {
    pub status: u16,
    pub pattern: Option<SelectionPattern>,
    pub template: Option<Template>,
}

impl Routes {
    /// The resource `path` falls on, with its path parameters as the
    /// request wrote them: API Gateway neither splits on an escaped slash
    /// (`%2F`) nor decodes a path parameter (`a%2Fb` and `a%20b` reach the
    /// function so; AWS's recorded proxy events and aws-sam-cli#3524 show it).
    pub fn find(&self, path: &str) -> Option<(&Resource, BTreeMap<String, String>)> {
        let parts: Vec<&str> = match path.trim_start_matches('/') {
            "" => Vec::new(),
            rest => rest.split('/').collect(),
        };
        self.resources
            .iter()
            .filter_map(|resource| Some((resource, resource.matches(&parts)?)))
            .min_by(|(a, _), (b, _)| a.segments.cmp(&b.segments))
    }
}

impl Resource {
    fn matches(&self, parts: &[&str]) -> Option<BTreeMap<String, String>> {
        let mut params = BTreeMap::new();
        for (index, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Greedy(name) => {
                    let rest = parts.get(index..).filter(|rest| !rest.is_empty())?;
                    params.insert(name.clone(), rest.join("/"));
                    return Some(params);
                }
                Segment::Literal(literal) => {
                    if parts.get(index) != Some(&literal.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let part = parts.get(index).filter(|part| !part.is_empty())?;
                    params.insert(name.clone(), (*part).to_owned());
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }

    /// The integration for `method`, or the resource's `ANY` one.
    pub fn method(&self, method: &str) -> Option<&Integration> {
        self.methods.get(method).or_else(|| self.methods.get("ANY"))
    }
}

fn segments(path: &str) -> Vec<Segment> {
    path.split('/')
        .filter(|part| !part.is_empty())
        .map(
            |part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => match name.strip_suffix('+') {
                    Some(name) => Segment::Greedy(name.to_owned()),
                    None => Segment::Param(name.to_owned()),
                },
                None => Segment::Literal(part.to_owned()),
            },
        )
        .collect()
}

/// Whether `path` (`/user/ada00001`) falls on the resource `template`
/// (`/user/{id}`).
pub fn path_matches(template: &str, path: &str) -> bool {
    let resource = Resource {
        path: template.to_owned(),
        segments: segments(template),
        methods: BTreeMap::new(),
    };
    Routes {
        resources: vec![resource],
    }
    .find(path)
    .is_some()
}

/// The API revision a deployment was made at, from its description
/// (`"staging at API revision R"`, as `terraform/api.tf` writes it).
pub fn deployment_revision(description: &str) -> Option<String> {
    let (_, revision) = description.split_once("at API revision ")?;
    Some(revision.trim().to_owned()).filter(|revision| !revision.is_empty())
}

/// `%XX` escapes decoded (invalid ones kept as they are); `+` stays `+`.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[index], hex(index + 1), hex(index + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                index += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `uri` with every `${stageVariables.NAME}` replaced by the stage's value.
pub fn resolve_stage_variables(uri: &str, variables: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = uri;
    while let Some(start) = rest.find("${stageVariables.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "${stageVariables.".len()..];
        let end = after
            .find('}')
            .context("an unclosed ${stageVariables. in the URI")?;
        let name = &after[..end];
        let value = variables
            .get(name)
            .with_context(|| format!("the stage has no variable `{name}`"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The Lambda function ARN and qualifier a Lambda integration URI invokes:
/// `arn:aws:apigateway:REGION:lambda:path/2015-03-31/functions/ARN/invocations`.
pub fn lambda_target(uri: &str) -> Result<(String, String)> {
    let function_arn = uri
        .split_once(":lambda:path/2015-03-31/functions/")
        .and_then(|(_, rest)| rest.strip_suffix("/invocations"))
        .with_context(|| format!("`{uri}` is not a Lambda invocation URI"))?;
    let parts: Vec<&str> = function_arn.split(':').collect();
    match parts[..] {
        ["arn", _, "lambda", _, _, "function", _] => {
            Ok((function_arn.to_owned(), "$LATEST".to_owned()))
        }
        ["arn", _, "lambda", _, _, "function", _, qualifier] if !qualifier.is_empty() => {
            Ok((parts[..7].join(":"), qualifier.to_owned()))
        }
        _ => bail!("`{function_arn}` is not a Lambda function ARN"),
    }
}

/// The API configuration a deployment snapshots: every resource with its
/// methods, integrations and integration responses, as API Gateway reports
/// them. The emulator keeps only the current one, so the gateway keeps a
/// copy per API revision ([`record`]) to serve a stage deployed at an older
/// revision, as API Gateway serves a deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub resources: Vec<SnapshotResource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotResource {
    pub path: String,
    pub methods: BTreeMap<String, SnapshotMethod>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMethod {
    pub authorization: String,
    pub api_key_required: bool,
    pub integration_type: Option<String>,
    pub uri: Option<String>,
    pub request_templates: BTreeMap<String, String>,
    pub passthrough: Option<String>,
    pub timeout_ms: i32,
    /// By status: selection pattern and (`application/json`) template.
    pub responses: BTreeMap<String, (Option<String>, Option<String>)>,
}

impl Snapshot {
    /// The API configuration the emulator holds now.
    pub async fn read(aws: &Aws, api_id: &str) -> Result<Snapshot> {
        let resources = aws
            .apigateway
            .get_resources()
            .rest_api_id(api_id)
            .embed("methods")
            .limit(500)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading the resources of REST API {api_id}"))?;
        let mut snapshot = Snapshot::default();
        for resource in resources.items.unwrap_or_default() {
            let methods = resource
                .resource_methods
                .unwrap_or_default()
                .into_iter()
                .map(|(http_method, method)| (http_method, SnapshotMethod::from(&method)))
                .collect();
            snapshot.resources.push(SnapshotResource {
                path: resource.path.unwrap_or_default(),
                methods,
            });
        }
        snapshot.resources.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(snapshot)
    }

    /// The routes it describes; an error names a route this gateway does
    /// not emulate.
    pub fn routes(&self) -> Result<Routes> {
        let mut routes = Routes::default();
        for resource in &self.resources {
            let mut methods = BTreeMap::new();
            for (http_method, method) in &resource.methods {
                let integration = integration(method).with_context(|| {
                    format!(
                        "the local gateway cannot serve `{http_method} {}`",
                        resource.path
                    )
                })?;
                methods.insert(http_method.clone(), integration);
            }
            routes.resources.push(Resource {
                segments: segments(&resource.path),
                path: resource.path.clone(),
                methods,
            });
        }
        Ok(routes)
    }

    fn path(local: &LocalDir, revision: &str) -> PathBuf {
        local
            .0
            .join("gateway/revisions")
            .join(format!("{revision}.json"))
    }

    /// Keeps this configuration as the one of API `revision`.
    pub fn record(&self, local: &LocalDir, revision: &str) -> Result<()> {
        let path = Snapshot::path(local, revision);
        std::fs::create_dir_all(path.parent().expect("a revision file has a directory"))?;
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&temporary, &path)?;
        Ok(())
    }

    /// The configuration recorded for API `revision`, if any.
    pub fn recorded(local: &LocalDir, revision: &str) -> Result<Option<Snapshot>> {
        match std::fs::read(Snapshot::path(local, revision)) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

impl From<&aws_sdk_apigateway::types::Method> for SnapshotMethod {
    fn from(method: &aws_sdk_apigateway::types::Method) -> SnapshotMethod {
        let integration = method.method_integration();
        SnapshotMethod {
            authorization: method.authorization_type().unwrap_or("NONE").to_owned(),
            api_key_required: method.api_key_required().unwrap_or(false),
            integration_type: integration
                .and_then(|i| i.r#type())
                .map(|t| t.as_str().to_owned()),
            uri: integration.and_then(|i| i.uri()).map(str::to_owned),
            request_templates: integration
                .and_then(|i| i.request_templates())
                .map(|templates| templates.clone().into_iter().collect())
                .unwrap_or_default(),
            passthrough: integration
                .and_then(|i| i.passthrough_behavior())
                .map(str::to_owned),
            timeout_ms: integration.map_or(29_000, |i| i.timeout_in_millis()),
            responses: integration
                .and_then(|i| i.integration_responses())
                .into_iter()
                .flatten()
                .map(|(status, response)| {
                    let template = response.response_templates().and_then(|templates| {
                        templates
                            .get("application/json")
                            .or_else(|| templates.values().next())
                            .cloned()
                    });
                    (
                        status.clone(),
                        (response.selection_pattern().map(str::to_owned), template),
                    )
                })
                .collect(),
        }
    }
}

/// Reads the applied API from the emulator, and records its configuration
/// as the applied revision's.
pub async fn load(aws: &Aws, applied: &Applied, local: &LocalDir) -> Result<Api> {
    load_recording(aws, applied, local, true).await
}

/// [`load`], recording the configuration as the applied revision's only
/// if `record` (a gateway of a stack applied elsewhere records it once, at
/// start: later, the live API may be of another revision than the outputs
/// it read then).
pub async fn load_recording(
    aws: &Aws,
    applied: &Applied,
    local: &LocalDir,
    record: bool,
) -> Result<Api> {
    let api_id = &applied.api_id;
    let current = Snapshot::read(aws, api_id).await?;
    let routes = Arc::new(current.routes()?);
    if record {
        current
            .record(local, &applied.api_revision)
            .context("recording the API configuration")?;
    }

    let deployments = aws
        .apigateway
        .get_deployments()
        .rest_api_id(api_id)
        .limit(500)
        .send()
        .await
        .map_err(aws_error)
        .context("reading the API's deployments")?;
    let revision_of = |deployment_id: &str| {
        deployments
            .items()
            .iter()
            .find(|deployment| deployment.id() == Some(deployment_id))
            .and_then(|deployment| deployment.description())
            .and_then(deployment_revision)
            .unwrap_or_default()
    };
    let stages = aws
        .apigateway
        .get_stages()
        .rest_api_id(api_id)
        .send()
        .await
        .map_err(aws_error)
        .context("reading the API's stages")?;

    let grants = grants(aws, api_id).await?;

    let name = aws
        .apigateway
        .get_rest_api()
        .rest_api_id(api_id)
        .send()
        .await
        .map_err(aws_error)
        .context("reading the REST API")?
        .name
        .unwrap_or_default();
    let mut api = Api {
        id: api_id.clone(),
        name,
        stages: BTreeMap::new(),
        domains: domains(aws, api_id).await?,
    };
    for stage in stages.item.unwrap_or_default() {
        let name = stage.stage_name.clone().unwrap_or_default();
        let throttle = stage_throttle(&name, stage.method_settings.as_ref())?;
        let access_log = stage.access_log_settings().and_then(|settings| {
            AccessLog::from_settings(settings.destination_arn(), settings.format())
        });
        let revision = revision_of(stage.deployment_id().unwrap_or_default());
        let variables: BTreeMap<String, String> =
            stage.variables.unwrap_or_default().into_iter().collect();
        // A stage serves its deployment's revision: the applied one (or,
        // before prod's first publish, no revision: the applied routes,
        // whose aliases do not exist yet), else the recorded copy.
        let served = if revision == applied.api_revision || revision.is_empty() {
            Ok(routes.clone())
        } else {
            match Snapshot::recorded(local, &revision)? {
                Some(snapshot) => snapshot
                    .routes()
                    .map(Arc::new)
                    .map_err(|err| format!("{err:#}")),
                None => Err(format!(
                    "stage `{name}` is deployed at API revision {revision}, whose configuration \
                     this local stack never recorded (it records the applied revision at every \
                     local apply): publish the current revision to this stage"
                )),
            }
        };
        let mut targets = BTreeMap::new();
        for resource in served.iter().flat_map(|routes| &routes.resources) {
            for integration in resource.methods.values() {
                if !targets.contains_key(&integration.uri) {
                    let target = resolve_target(aws, &integration.uri, &variables).await?;
                    targets.insert(integration.uri.clone(), target);
                }
            }
        }
        api.stages.insert(
            name.clone(),
            Stage {
                keys: grants.get(&name).cloned().unwrap_or_default(),
                name,
                variables,
                revision,
                routes: served,
                targets,
                throttle,
                access_log,
            },
        );
    }
    Ok(api)
}

/// The API's custom domain names: each with its base path mappings to
/// this API's stages (none: not this API's).
async fn domains(aws: &Aws, api_id: &str) -> Result<BTreeMap<String, Vec<BasePath>>> {
    let names = aws
        .apigateway
        .get_domain_names()
        .limit(500)
        .send()
        .await
        .map_err(aws_error)
        .context("reading the custom domain names")?;
    let mut domains = BTreeMap::new();
    for name in names
        .items()
        .iter()
        .filter_map(|domain| domain.domain_name())
    {
        let mappings = aws
            .apigateway
            .get_base_path_mappings()
            .domain_name(name)
            .limit(500)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading the base path mappings of {name}"))?;
        let ours: Vec<BasePath> = mappings
            .items()
            .iter()
            .filter(|mapping| mapping.rest_api_id() == Some(api_id))
            .map(|mapping| BasePath {
                path: match mapping.base_path().unwrap_or_default() {
                    "(none)" => String::new(),
                    path => path.trim_matches('/').to_owned(),
                },
                stage: mapping.stage().unwrap_or_default().to_owned(),
            })
            .collect();
        if !ours.is_empty() {
            domains.insert(name.to_ascii_lowercase(), ours);
        }
    }
    Ok(domains)
}

/// A stage's method throttle: its `*/*` method setting (what
/// `terraform/api.tf` declares). A setting for one method is refused, as
/// the gateway would not enforce it.
fn stage_throttle(
    stage: &str,
    settings: Option<&std::collections::HashMap<String, aws_sdk_apigateway::types::MethodSetting>>,
) -> Result<Option<Throttle>> {
    let mut throttle = None;
    for (path, setting) in settings.into_iter().flatten() {
        if path != "*/*" {
            bail!(
                "stage `{stage}` has method settings for `{path}`; the local gateway enforces \
                 the stage-wide `*/*` throttle only"
            );
        }
        throttle = throttle_of(
            setting.throttling_rate_limit(),
            setting.throttling_burst_limit(),
        );
    }
    Ok(throttle)
}

/// A throttle's rate and burst as API Gateway reads them: a negative one
/// (-1, what an unset limit reads as) is no limit.
fn throttle_of(rate: f64, burst: i32) -> Option<Throttle> {
    (rate >= 0.0 && burst >= 0).then(|| Throttle {
        rate,
        burst: f64::from(burst),
    })
}

/// Every API key of the usage plans of API `api_id`'s stages, by stage and
/// key value.
async fn grants(aws: &Aws, api_id: &str) -> Result<BTreeMap<String, BTreeMap<String, Grant>>> {
    let keys = aws
        .apigateway
        .get_api_keys()
        .include_values(true)
        .limit(500)
        .send()
        .await
        .map_err(aws_error)
        .context("reading the API keys")?;
    let enabled: BTreeMap<&str, bool> = keys
        .items()
        .iter()
        .filter_map(|key| Some((key.id()?, key.enabled())))
        .collect();
    let plans = aws
        .apigateway
        .get_usage_plans()
        .limit(500)
        .send()
        .await
        .map_err(aws_error)
        .context("reading the usage plans")?;
    let mut grants: BTreeMap<String, BTreeMap<String, Grant>> = BTreeMap::new();
    for plan in plans.items() {
        let stages: Vec<&str> = plan
            .api_stages()
            .iter()
            .filter(|stage| stage.api_id() == Some(api_id))
            .filter_map(|stage| stage.stage())
            .collect();
        if stages.is_empty() {
            continue;
        }
        let plan_id = plan.id().unwrap_or_default();
        let throttle = plan
            .throttle()
            .and_then(|throttle| throttle_of(throttle.rate_limit(), throttle.burst_limit()));
        let quota = match plan.quota() {
            Some(quota) => {
                let period = quota
                    .period()
                    .map(|period| period.as_str())
                    .unwrap_or("DAY");
                Some(Quota {
                    limit: quota.limit().max(0) as u64,
                    period: Period::parse(period).with_context(|| {
                        format!("usage plan {plan_id}: quota period `{period}`")
                    })?,
                })
            }
            None => None,
        };
        let plan_keys = aws
            .apigateway
            .get_usage_plan_keys()
            .usage_plan_id(plan_id)
            .limit(500)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading the keys of usage plan {plan_id}"))?;
        for key in plan_keys.items() {
            let (Some(key_id), Some(value)) = (key.id(), key.value()) else {
                continue;
            };
            for stage in &stages {
                grants.entry((*stage).to_owned()).or_default().insert(
                    value.to_owned(),
                    Grant {
                        key_id: key_id.to_owned(),
                        plan_id: plan_id.to_owned(),
                        enabled: enabled.get(key_id).copied().unwrap_or(false),
                        throttle,
                        quota,
                    },
                );
            }
        }
    }
    Ok(grants)
}

/// After a local apply: record the applied API configuration under its
/// revision, so the gateway can serve a stage later left at it.
pub fn record_applied(local: &LocalDir) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let stack = LocalStack::connect(local).await?;
            Snapshot::read(&stack.aws, &stack.applied.api_id)
                .await?
                .record(local, &stack.applied.api_revision)
        })
}

/// The function version an integration reaches from a stage; `Err` with the
/// reason when there is none (not a failure to load: the stage answers 500).
async fn resolve_target(
    aws: &Aws,
    uri: &str,
    variables: &BTreeMap<String, String>,
) -> Result<Result<Target, String>> {
    let resolved = match resolve_stage_variables(uri, variables) {
        Ok(resolved) => resolved,
        Err(err) => return Ok(Err(format!("{err:#}"))),
    };
    let (function_arn, qualifier) = lambda_target(&resolved)?;
    let name = function_arn.rsplit(':').next().unwrap_or_default();
    Ok(match aws.function_to_run(name, &qualifier).await? {
        Some(routed) => Ok(Target {
            routed,
            invoked_arn: format!("{function_arn}:{qualifier}"),
        }),
        None => Err(format!(
            "{name}:{qualifier} does not exist (nothing published yet?)"
        )),
    })
}

fn integration(method: &SnapshotMethod) -> Result<Integration> {
    if method.authorization != "NONE" {
        bail!(
            "its authorization is {}; only NONE is emulated",
            method.authorization
        );
    }
    let Some(kind) = &method.integration_type else {
        bail!("the method has no integration");
    };
    if kind != "AWS" {
        bail!(
            "its integration type is {kind}; only AWS (non-proxy Lambda) integrations are emulated"
        );
    }
    // The URI is checked per stage, once its stage variables are resolved.
    let uri = method
        .uri
        .as_deref()
        .context("the integration has no URI")?;
    for (content_type, template) in &method.request_templates {
        if template != REQUEST_TEMPLATE {
            bail!(
                "its request template for {content_type} is not the one this gateway builds \
                 natively (terraform/templates/request.vtl, as this xtask was built with it)"
            );
        }
    }
    let mut responses = Vec::new();
    let mut default = None;
    for (status, (pattern, template)) in &method.responses {
        let code: u16 = status
            .parse()
            .with_context(|| format!("integration response status `{status}`"))?;
        let template = template
            .as_deref()
            .filter(|template| !template.is_empty())
            .map(Template::parse)
            .transpose()
            .with_context(|| format!("the {status} response template"))?;
        let pattern = pattern
            .as_deref()
            .filter(|pattern| !pattern.is_empty())
            .map(SelectionPattern::new)
            .transpose()
            .with_context(|| format!("the {status} selection pattern"))?;
        let response = IntegrationResponse {
            status: code,
            pattern,
            template,
        };
        if response.pattern.is_some() {
            responses.push(response);
        } else if default.replace(response).is_some() {
            bail!("two integration responses have no selection pattern");
        }
    }
    Ok(Integration {
        api_key_required: method.api_key_required,
        uri: uri.to_owned(),
        timeout: Duration::from_millis(method.timeout_ms.max(50) as u64),
        content_types: method
            .request_templates
            .keys()
            .map(|t| t.to_ascii_lowercase())
            .collect(),
        passthrough: method
            .passthrough
            .clone()
            .unwrap_or_else(|| "WHEN_NO_MATCH".to_owned()),
        responses,
        default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_domain_maps_its_base_paths_to_stages() {
        let api = Api {
            id: String::new(),
            name: String::new(),
            stages: BTreeMap::new(),
            domains: BTreeMap::from([
                (
                    "api.example.test".to_owned(),
                    vec![BasePath {
                        path: String::new(),
                        stage: "prod".to_owned(),
                    }],
                ),
                (
                    "both.example.test".to_owned(),
                    vec![
                        BasePath {
                            path: "v1".to_owned(),
                            stage: "prod".to_owned(),
                        },
                        BasePath {
                            path: "v1/beta".to_owned(),
                            stage: "staging".to_owned(),
                        },
                    ],
                ),
            ]),
        };
        let route = |host: &str, path: &str| api.by_domain(host, path);
        let reached = |stage: &str, path: &str| Some(Some((stage.to_owned(), path.to_owned())));
        assert_eq!(
            route("api.example.test", "/status"),
            reached("prod", "/status")
        );
        assert_eq!(
            route("API.example.test:3000", "/user/1"),
            reached("prod", "/user/1")
        );
        assert_eq!(
            route("both.example.test", "/v1/status"),
            reached("prod", "/status")
        );
        assert_eq!(route("both.example.test", "/v1"), reached("prod", "/"));
        assert_eq!(
            route("both.example.test", "/v1/beta/status"),
            reached("staging", "/status")
        );
        assert_eq!(route("both.example.test", "/v1beta/status"), Some(None));
        assert_eq!(route("both.example.test", "/status"), Some(None));
        assert_eq!(route("127.0.0.1:3000", "/prod/status"), None);
    }

    fn routes(paths: &[&str]) -> Routes {
        Routes {
            resources: paths
                .iter()
                .map(|path| Resource {
                    path: path.to_string(),
                    segments: segments(path),
                    methods: BTreeMap::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn paths_find_their_resource() {
        let routes = routes(&["/", "/user", "/user/{id}", "/user/me", "/files/{path+}"]);
        let find = |path: &str| {
            routes
                .find(path)
                .map(|(resource, params)| (resource.path.clone(), params))
        };
        let params = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(find("/"), Some(("/".into(), params(&[]))));
        assert_eq!(find("/user"), Some(("/user".into(), params(&[]))));
        assert_eq!(
            find("/user/a%20b%22"),
            Some(("/user/{id}".into(), params(&[("id", "a%20b%22")])))
        );
        // An escaped slash is no separator, and stays escaped.
        assert_eq!(
            find("/user/a%2Fb"),
            Some(("/user/{id}".into(), params(&[("id", "a%2Fb")])))
        );
        assert_eq!(
            find("/files/a%2Fb/c%20d"),
            Some(("/files/{path+}".into(), params(&[("path", "a%2Fb/c%20d")])))
        );
        // A literal beats a parameter.
        assert_eq!(find("/user/me"), Some(("/user/me".into(), params(&[]))));
        assert_eq!(
            find("/files/a/b.txt"),
            Some(("/files/{path+}".into(), params(&[("path", "a/b.txt")])))
        );
        assert_eq!(find("/user/a/b"), None);
        assert_eq!(find("/user/"), None);
        assert_eq!(find("/files"), None);
        assert_eq!(find("/nope"), None);
    }

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("a%2Fb+c%zz%"), "a/b+c%zz%");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    fn method(template: &str) -> SnapshotMethod {
        SnapshotMethod {
            authorization: "NONE".into(),
            integration_type: Some("AWS".into()),
            uri: Some("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:1:function:f:${stageVariables.stage}/invocations".into()),
            request_templates: [("application/json".to_owned(), template.to_owned())].into(),
            passthrough: Some("NEVER".into()),
            timeout_ms: 1000,
            responses: [
                ("200".to_owned(), (None, None)),
                (
                    "404".to_owned(),
                    (
                        Some("404: .*".to_owned()),
                        Some("$input.path('$.errorMessage').substring(5)".to_owned()),
                    ),
                ),
            ]
            .into(),
            ..SnapshotMethod::default()
        }
    }

    #[test]
    fn integrations_load_only_as_this_gateway_emulates_them() {
        let loaded = integration(&method(REQUEST_TEMPLATE)).unwrap();
        assert_eq!(loaded.timeout, Duration::from_secs(1));
        assert_eq!(loaded.content_types, ["application/json"]);
        assert_eq!(loaded.default.as_ref().unwrap().status, 200);
        assert_eq!(loaded.responses.len(), 1);
        assert_eq!(loaded.responses[0].status, 404);

        let other = integration(&method(r#"{"method": "$context.httpMethod"}"#)).unwrap_err();
        assert!(
            format!("{other:#}").contains(
                "request template for application/json is not the one this gateway builds"
            ),
            "{other:#}"
        );
        let mut iam = method(REQUEST_TEMPLATE);
        iam.authorization = "AWS_IAM".into();
        assert!(integration(&iam).is_err());
        let mut proxy = method(REQUEST_TEMPLATE);
        proxy.integration_type = Some("AWS_PROXY".into());
        assert!(integration(&proxy).is_err());
    }

    #[test]
    fn uris_name_a_function_and_a_qualifier() {
        let variables = BTreeMap::from([("stage".to_owned(), "prod".to_owned())]);
        // An unset throttle (-1) is no throttle, not one that admits nothing.
        assert_eq!(throttle_of(-1.0, -1), None);
        assert_eq!(throttle_of(10.0, -1), None);
        assert_eq!(
            throttle_of(10.0, 20),
            Some(Throttle {
                rate: 10.0,
                burst: 20.0
            })
        );
        let uri = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/\
                   arn:aws:lambda:us-east-1:123456789012:function:app-users:${stageVariables.stage}/invocations";
        let resolved = resolve_stage_variables(uri, &variables).unwrap();
        assert_eq!(
            lambda_target(&resolved).unwrap(),
            (
                "arn:aws:lambda:us-east-1:123456789012:function:app-users".to_owned(),
                "prod".to_owned()
            )
        );
        let unqualified = resolved.replace(":prod/", "/");
        assert_eq!(lambda_target(&unqualified).unwrap().1, "$LATEST");
        assert!(resolve_stage_variables(uri, &BTreeMap::new()).is_err());
        assert!(lambda_target("arn:aws:apigateway:us-east-1:s3:path/bucket/key").is_err());
    }
}
