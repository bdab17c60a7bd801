//! What is applied to the local stack: Terraform's outputs (from its state)
//! and, through the AWS APIs of the emulator, the live configuration of the
//! functions, their aliases and versions, and the REST API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_lambda::error::ProvideErrorMetadata;
use serde_json::Value;

use crate::LocalDir;
use crate::host::{FunctionVersion, Host, Limits, Log, Routed};
use crate::telemetry::Telemetry;

/// SHA-256 (hex) of what a Lambda version snapshots besides its code:
/// runtime, handler, role, memory, timeout, architectures, environment,
/// layers, VPC, ephemeral storage, SnapStart, tracing, dead-letter target,
/// KMS key, file systems, image configuration, logging and package type
/// (not the description, which a version sets for itself, nor what only
/// says how far along it is: state, SnapStart's optimisation status). A
/// macro because the SDK has a type per operation with the same accessors
/// (`GetFunctionConfigurationOutput`, `FunctionConfiguration`,
/// `PublishVersionOutput`).
macro_rules! configuration_digest {
    ($config:expr) => {{
        let config = $config;
        let environment: std::collections::BTreeMap<&String, &String> = config
            .environment()
            .and_then(|environment| environment.variables())
            .map(|variables| variables.iter().collect())
            .unwrap_or_default();
        let key = format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} \
             {:?}",
            config.runtime(),
            config.handler(),
            config.role(),
            config.memory_size(),
            config.timeout(),
            config.architectures(),
            environment,
            config.layers(),
            config.vpc_config(),
            config.ephemeral_storage(),
            config.snap_start().map(|snap_start| snap_start.apply_on()),
            config.tracing_config(),
            config.dead_letter_config(),
            config.kms_key_arn(),
            config.file_system_configs(),
            config.image_config_response(),
            config.logging_config(),
            config.package_type(),
        );
        crate::artifact::sha256(key.as_bytes()).hex
    }};
}
pub(crate) use configuration_digest;

/// A function's `State` and `LastUpdateStatus`, as `Active/Successful`
/// (`-` for one not reported).
pub fn readiness(
    state: Option<&aws_sdk_lambda::types::State>,
    last_update: Option<&aws_sdk_lambda::types::LastUpdateStatus>,
) -> String {
    format!(
        "{}/{}",
        state.map(|state| state.as_str()).unwrap_or("-"),
        last_update.map(|status| status.as_str()).unwrap_or("-")
    )
}

/// Whether a function in `readiness` runs the code and configuration it
/// reports: `Active`, and its last update (if any since its creation)
/// `Successful`. While an update is `InProgress`, `GetFunctionConfiguration`
/// already reports the new `CodeSha256` and invocations still run the old.
pub fn is_ready(readiness: &str) -> bool {
    matches!(readiness, "Active/Successful" | "Active/-")
}

/// Terraform's outputs for the local stack, and where its artifacts are.
#[derive(Debug, Clone)]
pub struct Applied {
    pub api_id: String,
    /// The API revision of the applied configuration (what staging serves).
    pub api_revision: String,
    pub region: String,
    /// Function (manifest name) -> Lambda function name.
    pub function_names: BTreeMap<String, String>,
    /// Stage -> its base URL.
    pub invoke_urls: BTreeMap<String, String>,
    /// Stage -> its base URL at the custom domain (none without one).
    pub custom_urls: BTreeMap<String, String>,
    /// `"consumer/stage"` -> the id of that consumer's API key to that stage.
    pub api_keys: BTreeMap<String, String>,
    /// The alarms' settings and names (none before the stack had alarms).
    pub alarms: Option<AlarmsOutput>,
    /// The REST API's name, which every alarm's name starts with (none
    /// before the stack had alarms).
    pub api_name: Option<String>,
    /// The build directory the functions' zips came from.
    pub artifacts_dir: PathBuf,
}

impl Applied {
    /// The local stack's: its state's outputs, and the artifacts directory
    /// its last apply used.
    pub fn read(local: &LocalDir) -> Result<Applied> {
        let dir = local.terraform_dir();
        let state = dir.join("terraform.tfstate");
        let nothing = || {
            format!(
                "nothing is applied to the local stack ({} has no outputs): run `cargo xtask apply` \
                 (or `cargo xtask dev`)",
                state.display()
            )
        };
        let text = std::fs::read_to_string(&state).with_context(nothing)?;
        let state: Value = serde_json::from_str(&text).context("reading the Terraform state")?;
        let vars = dir.join("local.auto.tfvars.json");
        let vars: Value = serde_json::from_slice(
            &std::fs::read(&vars).with_context(|| format!("reading {}", vars.display()))?,
        )?;
        let artifacts_dir = PathBuf::from(
            vars["artifacts_dir"]
                .as_str()
                .context("local.auto.tfvars.json has no artifacts_dir")?,
        );
        Applied::from_outputs(&state["outputs"], artifacts_dir).with_context(nothing)
    }

    /// From Terraform's outputs as the state holds them, or as `terraform
    /// output -json` prints them (both `{"name": {"value": ...}}`).
    pub fn from_outputs(outputs: &Value, artifacts_dir: PathBuf) -> Result<Applied> {
        let output = |name: &str| -> Result<Value> {
            match &outputs[name]["value"] {
                Value::Null => bail!("the output `{name}` is missing"),
                value => Ok(value.clone()),
            }
        };
        let text = |name: &str| -> Result<String> {
            output(name)?
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("the output `{name}` is not a string"))
        };
        Ok(Applied {
            api_id: text("api_id")?,
            api_revision: text("api_revision")?,
            region: text("region")?,
            function_names: serde_json::from_value(output("function_names")?)
                .context("the function_names output")?,
            invoke_urls: serde_json::from_value(output("invoke_urls")?)
                .context("the invoke_urls output")?,
            // Stacks applied before custom domains existed have no such output.
            custom_urls: match output("custom_urls") {
                Ok(urls) => serde_json::from_value(urls).context("the custom_urls output")?,
                Err(_) => BTreeMap::new(),
            },
            // Stacks applied before API keys existed have no such output.
            api_keys: match output("api_keys") {
                Ok(keys) => serde_json::from_value(keys).context("the api_keys output")?,
                Err(_) => BTreeMap::new(),
            },
            // Nor those applied before alarms.
            alarms: match output("alarms") {
                Ok(alarms) => Some(serde_json::from_value(alarms).context("the alarms output")?),
                Err(_) => None,
            },
            api_name: text("api_name").ok(),
            artifacts_dir,
        })
    }

    /// The consumers with an API key to `stage`.
    pub fn consumers(&self, stage: &str) -> Vec<&str> {
        self.api_keys
            .keys()
            .filter_map(|key| key.strip_suffix(&format!("/{stage}")))
            .collect()
    }

    /// The Lambda name of `function`, a manifest name (`status`) or already
    /// a Lambda name.
    pub fn function_name(&self, function: &str) -> Result<String> {
        if let Some(name) = self.function_names.get(function) {
            return Ok(name.clone());
        }
        if self.function_names.values().any(|name| name == function) {
            return Ok(function.to_owned());
        }
        let known: Vec<&str> = self.function_names.keys().map(String::as_str).collect();
        bail!(
            "no function `{function}` is applied: the functions are {}",
            known.join(", ")
        )
    }
}

/// The `alarms` output: how the alarms evaluate.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AlarmsOutput {
    pub period_seconds: u64,
    pub evaluation_periods: u64,
}

/// The local state file, whose changes mean Terraform changed something.
pub fn state_file(local: &LocalDir) -> PathBuf {
    local.terraform_dir().join("terraform.tfstate")
}

/// Whether a Terraform operation holds the local state (an apply under way).
pub fn state_locked(local: &LocalDir) -> bool {
    local
        .terraform_dir()
        .join(".terraform.tfstate.lock.info")
        .exists()
}

/// The AWS-compatible endpoint on this machine that stands in for AWS
/// (`AWS_ENDPOINT_URL` naming a loopback address, and not ignored through
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`); `None` on AWS itself. What the
/// rehearsal-only paths (`serve --aws`, the publish test seam) require.
pub fn emulated_endpoint() -> Option<String> {
    emulated_in(std::env::vars())
}

/// [`emulated_endpoint`] in the environment `vars`: also `None` when a
/// service's own variable (`AWS_ENDPOINT_URL_CLOUDWATCH`, which the SDKs
/// prefer to the global one) sends that service anywhere else, to AWS
/// itself say.
fn emulated_in(vars: impl Iterator<Item = (String, String)>) -> Option<String> {
    let vars: BTreeMap<String, String> = vars
        .filter(|(name, _)| name.starts_with("AWS_ENDPOINT_URL") || name.starts_with("AWS_IGNORE"))
        .collect();
    let url = vars.get("AWS_ENDPOINT_URL")?;
    let ignore = vars
        .get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .map(String::as_str);
    let all_stand_in = vars
        .iter()
        .filter(|(name, _)| name.starts_with("AWS_ENDPOINT_URL"))
        .all(|(_, url)| stands_in(url, ignore));
    all_stand_in.then(|| url.clone())
}

/// Whether endpoint `url` (with `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` as
/// `ignore`) is a loopback one the SDKs use.
fn stands_in(url: &str, ignore: Option<&str>) -> bool {
    if ignore.is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return false;
    }
    let Some(host) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .and_then(|rest| rest.split('/').next())
    else {
        return false;
    };
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(host, "localhost" | "[::1]")
        || (host.starts_with("127.") && host.split('.').all(|part| part.parse::<u8>().is_ok()))
}

/// Clients of the emulator's AWS APIs.
#[derive(Clone)]
pub struct Aws {
    pub lambda: aws_sdk_lambda::Client,
    pub apigateway: aws_sdk_apigateway::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// The configuration they were made from, for clients of other services.
    pub config: aws_config::SdkConfig,
}

impl Aws {
    /// The emulator's, at `endpoint`, with fake credentials.
    pub async fn at(endpoint: &str, region: &str) -> Aws {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()))
            .endpoint_url(endpoint)
            // Whatever the developer's environment says: the emulator has
            // neither.
            .use_fips(false)
            .use_dual_stack(false)
            .credentials_provider(aws_sdk_lambda::config::Credentials::new(
                "local",
                "local",
                None,
                None,
                "local stack",
            ))
            .http_client(http_client())
            .load()
            .await;
        Aws::from_config(&config)
    }

    /// Real AWS in `region`, with the credentials the SDK finds (the
    /// environment, `~/.aws`, SSO, an instance role...).
    pub async fn in_region(region: &str) -> Aws {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_owned()))
            .http_client(http_client())
            .load()
            .await;
        Aws::from_config(&config)
    }

    fn from_config(config: &aws_config::SdkConfig) -> Aws {
        Aws {
            lambda: aws_sdk_lambda::Client::new(config),
            apigateway: aws_sdk_apigateway::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            config: config.clone(),
        }
    }

    /// The version alias `name` of `function` points at, and the version
    /// it sends a share of invocations to, if weighted; `None` if there is
    /// no such alias.
    pub async fn alias(&self, function: &str, name: &str) -> Result<Option<Alias>> {
        match self
            .lambda
            .get_alias()
            .function_name(function)
            .name(name)
            .send()
            .await
        {
            Ok(alias) => Ok(Some(Alias {
                version: alias
                    .function_version
                    .clone()
                    .context("an alias without a version")?,
                additional: alias
                    .routing_config()
                    .and_then(|routing| routing.additional_version_weights())
                    .and_then(|weights| weights.iter().next())
                    .map(|(version, weight)| (version.clone(), *weight)),
            })),
            Err(err) if err.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(err) => {
                Err(aws_error(err)).with_context(|| format!("reading alias {function}:{name}"))
            }
        }
    }

    /// The version `qualifier` (an alias, a version or `$LATEST`) of
    /// `function` names, with its configuration; `None` if there is no such
    /// alias or version.
    pub async fn function_version(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<FunctionVersion>> {
        let is_version = qualifier == "$LATEST" || qualifier.bytes().all(|b| b.is_ascii_digit());
        let version = if is_version {
            qualifier.to_owned()
        } else {
            match self.alias(function, qualifier).await? {
                Some(alias) => alias.version,
                None => return Ok(None),
            }
        };
        let config = match self
            .lambda
            .get_function_configuration()
            .function_name(function)
            .qualifier(&version)
            .send()
            .await
        {
            Ok(config) => config,
            Err(err) if err.code() == Some("ResourceNotFoundException") => return Ok(None),
            Err(err) => {
                return Err(aws_error(err))
                    .with_context(|| format!("reading {function}:{version}"));
            }
        };
        let arn = config.function_arn.clone().unwrap_or_default();
        // The configuration's ARN is qualified for a published version.
        let arn = match arn.rsplit_once(':') {
            Some((unqualified, last)) if arn.matches(':').count() == 7 && last == version => {
                unqualified.to_owned()
            }
            _ => arn,
        };
        let region = arn.split(':').nth(3).unwrap_or_default().to_owned();
        let state = readiness(config.state(), config.last_update_status());
        Ok(Some(FunctionVersion {
            name: config
                .function_name
                .clone()
                .unwrap_or_else(|| function.to_owned()),
            version: config.version.clone().unwrap_or(version),
            arn,
            code_sha256: config.code_sha256.clone().unwrap_or_default(),
            configuration: configuration_digest!(&config),
            memory_mb: config.memory_size.unwrap_or(128),
            timeout: Duration::from_secs(config.timeout.unwrap_or(3).max(1) as u64),
            environment: config
                .environment
                .and_then(|environment| environment.variables)
                .map(|variables| variables.into_iter().collect())
                .unwrap_or_default(),
            region,
            description: config.description.clone().unwrap_or_default(),
            state,
            reserved_concurrency: None,
        }))
    }

    /// What invoking `qualifier` (an alias, a version or `$LATEST`) of
    /// `function` runs, with what the local host needs besides
    /// [`Aws::function_version`]: a weighted alias's other version, and the
    /// function's reserved concurrency (`GetFunctionConcurrency`; only the
    /// local stack asks, so the release flow on AWS needs no such grant).
    pub async fn function_to_run(&self, function: &str, qualifier: &str) -> Result<Option<Routed>> {
        let Some(mut version) = self.function_version(function, qualifier).await? else {
            return Ok(None);
        };
        // Reserved concurrency is the function's, whatever version runs.
        version.reserved_concurrency = self
            .lambda
            .get_function_concurrency()
            .function_name(function)
            .send()
            .await
            .map_err(aws_error)
            .with_context(|| format!("reading the reserved concurrency of {function}"))?
            .reserved_concurrent_executions
            .map(|reserved| reserved.max(0) as u32);
        let is_version = qualifier == "$LATEST" || qualifier.bytes().all(|b| b.is_ascii_digit());
        let additional = match is_version {
            true => None,
            false => match self
                .alias(function, qualifier)
                .await?
                .and_then(|alias| alias.additional)
            {
                Some((other, weight)) => {
                    let mut other_version = self
                        .function_version(function, &other)
                        .await?
                        .with_context(|| {
                            format!("{function}:{qualifier} routes to version {other}, which does not exist")
                        })?;
                    other_version.reserved_concurrency = version.reserved_concurrency;
                    Some((other_version, weight))
                }
                None => None,
            },
        };
        Ok(Some(Routed {
            version,
            additional,
        }))
    }
}

/// An alias: its version, and (a weighted alias) the other version it
/// sends a share of invocations to, with that share (0 to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    pub version: String,
    pub additional: Option<(String, f64)>,
}

/// The SDK's HTTP client: rustls on ring, as the functions use.
fn http_client() -> aws_sdk_lambda::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// An SDK error with the service's code and message, not just "service error".
pub fn aws_error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    err: E,
) -> anyhow::Error {
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => anyhow::anyhow!("{code}: {message}"),
        (Some(code), None) => anyhow::anyhow!("{code}"),
        _ => anyhow::Error::new(err),
    }
}

/// The local stack as applied: Terraform's outputs and the running
/// emulator's AWS clients.
pub struct LocalStack {
    pub applied: Applied,
    pub endpoint: String,
    pub aws: Aws,
}

impl LocalStack {
    pub async fn connect(local: &LocalDir) -> Result<LocalStack> {
        let applied = Applied::read(local)?;
        let emulator = crate::emulator::Emulator::running(local)?
            .context("the AWS emulator is not running: `cargo xtask dev` starts the local stack")?;
        let aws = Aws::at(&emulator.endpoint, &applied.region).await;
        Ok(LocalStack {
            applied,
            endpoint: emulator.endpoint,
            aws,
        })
    }

    /// A Lambda host for its functions: code from the applied artifacts
    /// directory, unpacked under `<local dir>/lambda`, the emulator's
    /// endpoint and fake credentials in every function's environment, and
    /// each invocation's metrics and log lines recorded into the emulator,
    /// as Lambda records them (`telemetry`, one per process: see
    /// [`LocalStack::telemetry`]).
    pub fn host(
        &self,
        local: &LocalDir,
        log: Log,
        limits: Limits,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Host> {
        let env = [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            ("AWS_SESSION_TOKEN", "local"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        Host::new(
            self.applied.artifacts_dir.clone(),
            local.0.join("lambda"),
            env,
            log,
            limits,
            Some(telemetry),
        )
    }

    /// What records the local stack's metrics and logs into its emulator
    /// (started on the current tokio runtime).
    pub fn telemetry(&self) -> Arc<Telemetry> {
        Telemetry::start(&self.aws.config)
    }
}

#[cfg(test)]
mod endpoint_tests {
    /// Only a loopback endpoint, not ignored, stands in for AWS.
    #[test]
    fn an_emulated_endpoint_is_on_loopback() {
        let cases = [
            ("http://127.0.0.1:4566", None, true),
            ("http://localhost:4566/", None, true),
            ("http://[::1]:4566", None, true),
            ("http://127.0.0.1:4566", Some("true"), false),
            ("http://127.0.0.1:4566", Some("false"), true),
            ("https://emulator.example.com", None, false),
            ("http://127.0.0.1.example.com", None, false),
            ("127.0.0.1:4566", None, false),
            ("", None, false),
        ];
        for (url, ignore, emulated) in cases {
            assert_eq!(
                super::stands_in(url, ignore),
                emulated,
                "{url:?} {ignore:?}"
            );
        }
    }

    /// A service's own endpoint variable elsewhere than loopback (AWS's
    /// CloudWatch, say) means no emulator stands in for all of AWS.
    #[test]
    fn a_service_endpoint_elsewhere_is_not_emulated() {
        let env = |vars: &[(&str, &str)]| {
            super::emulated_in(
                vars.iter()
                    .map(|(name, value)| (name.to_string(), value.to_string())),
            )
        };
        let local = ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566");
        assert_eq!(env(&[local]).as_deref(), Some(local.1));
        assert_eq!(
            env(&[
                local,
                ("AWS_ENDPOINT_URL_DYNAMODB", "http://localhost:8000")
            ])
            .as_deref(),
            Some(local.1)
        );
        assert_eq!(
            env(&[
                local,
                (
                    "AWS_ENDPOINT_URL_CLOUDWATCH",
                    "https://monitoring.us-east-1.amazonaws.com"
                )
            ]),
            None
        );
        assert_eq!(
            env(&[local, ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")]),
            None
        );
        assert_eq!(
            env(&[("AWS_ENDPOINT_URL_LAMBDA", "http://127.0.0.1:4566")]),
            None
        );
    }
}

#[cfg(test)]
mod digest_tests {
    use aws_sdk_lambda::types::{
        DeadLetterConfig, EnvironmentResponse, EphemeralStorage, FileSystemConfig,
        FunctionConfiguration, Layer, LoggingConfig, PackageType, Runtime, SnapStartApplyOn,
        SnapStartResponse, TracingConfigResponse, TracingMode, VpcConfigResponse,
    };

    /// Every field a published version snapshots moves the digest; what a
    /// version sets for itself or only reports does not.
    #[test]
    fn the_configuration_digest_covers_what_a_version_snapshots() {
        let base = || {
            FunctionConfiguration::builder()
                .runtime(Runtime::Providedal2023)
                .handler("bootstrap")
                .role("arn:aws:iam::1:role/r")
                .memory_size(128)
                .timeout(10)
        };
        let digest = |config: FunctionConfiguration| configuration_digest!(&config);
        let reference = digest(base().build());
        let changed: Vec<(&str, FunctionConfiguration)> = vec![
            ("runtime", base().runtime(Runtime::Providedal2).build()),
            ("handler", base().handler("other").build()),
            ("role", base().role("arn:aws:iam::1:role/other").build()),
            ("memory", base().memory_size(256).build()),
            ("timeout", base().timeout(11).build()),
            (
                "architectures",
                base()
                    .architectures(aws_sdk_lambda::types::Architecture::Arm64)
                    .build(),
            ),
            (
                "environment",
                base()
                    .environment(EnvironmentResponse::builder().variables("A", "1").build())
                    .build(),
            ),
            (
                "layers",
                base()
                    .layers(Layer::builder().arn("arn:aws:lambda:l:1").build())
                    .build(),
            ),
            (
                "vpc",
                base()
                    .vpc_config(VpcConfigResponse::builder().subnet_ids("s-1").build())
                    .build(),
            ),
            (
                "ephemeral storage",
                base()
                    .ephemeral_storage(EphemeralStorage::builder().size(1024).build().unwrap())
                    .build(),
            ),
            (
                "snapstart",
                base()
                    .snap_start(
                        SnapStartResponse::builder()
                            .apply_on(SnapStartApplyOn::PublishedVersions)
                            .build(),
                    )
                    .build(),
            ),
            (
                "tracing",
                base()
                    .tracing_config(
                        TracingConfigResponse::builder()
                            .mode(TracingMode::Active)
                            .build(),
                    )
                    .build(),
            ),
            (
                "dead letters",
                base()
                    .dead_letter_config(DeadLetterConfig::builder().target_arn("arn:q").build())
                    .build(),
            ),
            ("kms", base().kms_key_arn("arn:k").build()),
            (
                "file systems",
                base()
                    .file_system_configs(
                        FileSystemConfig::builder()
                            .arn("arn:fs")
                            .local_mount_path("/mnt/x")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            ),
            (
                "logging",
                base()
                    .logging_config(LoggingConfig::builder().log_group("g").build())
                    .build(),
            ),
            (
                "package type",
                base().package_type(PackageType::Image).build(),
            ),
        ];
        let mut seen = std::collections::BTreeSet::from([reference.clone()]);
        for (field, config) in changed {
            assert!(
                seen.insert(digest(config)),
                "{field} does not move the digest"
            );
        }
        // A version's own description and its progress are not configuration.
        let own = base()
            .description("verified CodeSha256 x")
            .version("3")
            .state(aws_sdk_lambda::types::State::Pending)
            .last_update_status(aws_sdk_lambda::types::LastUpdateStatus::InProgress)
            .build();
        assert_eq!(digest(own), reference);
    }
}
