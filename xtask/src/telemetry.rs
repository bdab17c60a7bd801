//! What Lambda and API Gateway record of every invocation and request, as
//! the local stack records it into its emulator's CloudWatch: so the
//! alarms (`alarms`), `cargo xtask logs` and a canary's progress read the
//! same metrics and log lines on the local stack as on AWS.
//!
//! - Lambda's metrics (`AWS/Lambda`): `Invocations`, `Errors`, `Duration`
//!   and `Throttles`, by `FunctionName`, by `FunctionName` and `Resource`
//!   (`NAME:ALIAS`), and, for an invocation through an alias, by those and
//!   `ExecutedVersion` (the version that ran: a weighted alias runs two);
//! - API Gateway's (`AWS/ApiGateway`): `Count`, `4XXError`, `5XXError`,
//!   `Latency` and `IntegrationLatency`, by `ApiName`, and by `ApiName` and
//!   `Stage`;
//! - log lines: each execution environment's, in its function's log group
//!   and its own stream (`YYYY/MM/DD/[VERSION]ID`), and each stage's access
//!   log lines.
//!
//! Nothing is sent per request: values gather in memory and go out once a
//! second (`PutMetricData` with values and counts per second, so
//! percentiles stay computable; `PutLogEvents` per stream).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;

use crate::host::{FunctionVersion, Invocation, Outcome};

/// How often what gathered is sent.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// CloudWatch Logs' limits on one `PutLogEvents`: events, and bytes (each
/// event counts 26 more than its message).
const LOG_BATCH_EVENTS: usize = 10_000;
const LOG_BATCH_BYTES: usize = 1_048_576;

/// CloudWatch's limit on distinct values in one datum.
const DATUM_VALUES: usize = 150;

/// Records metrics and log lines into one CloudWatch (the emulator's).
/// Cheap to share: clone the `Arc`.
pub struct Telemetry {
    cloudwatch: aws_sdk_cloudwatch::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    pending: Mutex<Pending>,
    /// Log streams made already, by group and stream.
    streams: tokio::sync::Mutex<HashSet<(String, String)>>,
    /// One flush at a time (the periodic one and a final one).
    flushing: tokio::sync::Mutex<()>,
    /// Whether a failure was reported (once: the emulator may be gone).
    warned: AtomicBool,
}

#[derive(Default)]
struct Pending {
    metrics: BTreeMap<Series, Vec<f64>>,
    /// By log group and stream: each line with its time (ms since the epoch).
    logs: BTreeMap<(String, String), Vec<(i64, String)>>,
}

impl Pending {
    fn add(
        &mut self,
        namespace: &'static str,
        metric: &'static str,
        unit: Unit,
        dimensions: &[(&'static str, String)],
        second: i64,
        value: f64,
    ) {
        self.metrics
            .entry(Series {
                namespace,
                metric,
                unit,
                dimensions: dimensions.to_vec(),
                second,
            })
            .or_default()
            .push(value);
    }
}

/// One metric's values in one second.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    namespace: &'static str,
    metric: &'static str,
    unit: Unit,
    dimensions: Vec<(&'static str, String)>,
    second: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Unit {
    Count,
    Milliseconds,
}

impl Telemetry {
    /// Telemetry for the CloudWatch of `config`, flushed every second on
    /// the current tokio runtime for as long as it is referenced (and once
    /// more by [`Telemetry::flush`]).
    pub fn start(config: &aws_config::SdkConfig) -> Arc<Telemetry> {
        let telemetry = Arc::new(Telemetry {
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            pending: Mutex::new(Pending::default()),
            streams: tokio::sync::Mutex::new(HashSet::new()),
            flushing: tokio::sync::Mutex::new(()),
            warned: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&telemetry);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FLUSH_EVERY).await;
                let Some(telemetry) = weak.upgrade() else {
                    return;
                };
                telemetry.flush().await;
            }
        });
        telemetry
    }

    /// One invocation of `function` (the version that ran) through
    /// `invoked_arn` (the qualified ARN the caller named).
    pub fn invocation(
        &self,
        function: &FunctionVersion,
        invoked_arn: &str,
        invocation: &Invocation,
    ) {
        let mut sets = vec![vec![("FunctionName", function.name.clone())]];
        if let Some(qualifier) = qualifier(invoked_arn) {
            let resource = format!("{}:{qualifier}", function.name);
            sets.push(vec![
                ("FunctionName", function.name.clone()),
                ("Resource", resource.clone()),
            ]);
            let alias = qualifier != "$LATEST" && !qualifier.bytes().all(|b| b.is_ascii_digit());
            if alias {
                sets.push(vec![
                    ("FunctionName", function.name.clone()),
                    ("Resource", resource),
                    ("ExecutedVersion", function.version.clone()),
                ]);
            }
        }
        let second = unix_seconds(SystemTime::now());
        let mut pending = self.pending.lock().expect("telemetry lock");
        let mut record = |metric, unit, value, dimensions: &Vec<(&'static str, String)>| {
            pending.add("AWS/Lambda", metric, unit, dimensions, second, value);
        };
        match &invocation.outcome {
            Outcome::Throttled { .. } => {
                // No version ran: throttles are the function's and alias's.
                for dimensions in sets.iter().take(2) {
                    record("Throttles", Unit::Count, 1.0, dimensions);
                }
            }
            // Lambda did not run it at all (Invoke failed).
            Outcome::ServiceError(_) => {}
            outcome => {
                let failed = matches!(outcome, Outcome::FunctionError { .. });
                let duration = invocation
                    .report
                    .as_ref()
                    .map(|report| report.duration.as_secs_f64() * 1000.0);
                for dimensions in &sets {
                    record("Invocations", Unit::Count, 1.0, dimensions);
                    record(
                        "Errors",
                        Unit::Count,
                        f64::from(u8::from(failed)),
                        dimensions,
                    );
                    if let Some(ms) = duration {
                        record("Duration", Unit::Milliseconds, ms, dimensions);
                    }
                }
            }
        }
    }

    /// One request API Gateway answered on `stage` of the API `api_name`.
    pub fn request(
        &self,
        api_name: &str,
        stage: &str,
        status: u16,
        latency: Duration,
        integration_latency: Option<Duration>,
    ) {
        let sets = [
            vec![("ApiName", api_name.to_owned())],
            vec![
                ("ApiName", api_name.to_owned()),
                ("Stage", stage.to_owned()),
            ],
        ];
        let second = unix_seconds(SystemTime::now());
        let mut pending = self.pending.lock().expect("telemetry lock");
        for dimensions in sets {
            let mut record = |metric, unit, value| {
                pending.add("AWS/ApiGateway", metric, unit, &dimensions, second, value);
            };
            record("Count", Unit::Count, 1.0);
            record(
                "4XXError",
                Unit::Count,
                f64::from(u8::from((400..500).contains(&status))),
            );
            record("5XXError", Unit::Count, f64::from(u8::from(status >= 500)));
            record(
                "Latency",
                Unit::Milliseconds,
                latency.as_secs_f64() * 1000.0,
            );
            if let Some(latency) = integration_latency {
                record(
                    "IntegrationLatency",
                    Unit::Milliseconds,
                    latency.as_secs_f64() * 1000.0,
                );
            }
        }
    }

    /// A log line for `stream` of `group`, at the time now.
    pub fn log(&self, group: &str, stream: &str, line: &str) {
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        self.pending
            .lock()
            .expect("telemetry lock")
            .logs
            .entry((group.to_owned(), stream.to_owned()))
            .or_default()
            .push((at, line.to_owned()));
    }

    /// Sends everything gathered so far.
    pub async fn flush(&self) {
        let _one = self.flushing.lock().await;
        let pending = std::mem::take(&mut *self.pending.lock().expect("telemetry lock"));
        let mut failed = false;
        if let Err(err) = self.put_metrics(pending.metrics).await {
            failed = true;
            self.warn("metrics", &err);
        }
        for ((group, stream), events) in pending.logs {
            if let Err(err) = self.put_logs(&group, &stream, events).await {
                failed = true;
                self.warn(&format!("log lines of {group}"), &err);
            }
        }
        // Warned once per run of failures: the next one after a success
        // is said again.
        if !failed {
            self.warned.store(false, Ordering::Relaxed);
        }
    }

    /// Says (once until a flush succeeds again) that something was lost.
    fn warn(&self, what: &str, err: &anyhow::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            eprintln!(
                "warning: recording {what} in the emulator's CloudWatch failed (what was \
                 gathered is dropped): {err:#}"
            );
        }
    }

    async fn put_metrics(&self, metrics: BTreeMap<Series, Vec<f64>>) -> anyhow::Result<()> {
        let mut by_namespace: BTreeMap<&str, Vec<MetricDatum>> = BTreeMap::new();
        for (series, values) in metrics {
            for datum in datums(&series, &values) {
                by_namespace
                    .entry(series.namespace)
                    .or_default()
                    .push(datum);
            }
        }
        for (namespace, datums) in by_namespace {
            for chunk in datums.chunks(500) {
                self.cloudwatch
                    .put_metric_data()
                    .namespace(namespace)
                    .set_metric_data(Some(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(crate::live::aws_error)?;
            }
        }
        Ok(())
    }

    async fn put_logs(
        &self,
        group: &str,
        stream: &str,
        mut events: Vec<(i64, String)>,
    ) -> anyhow::Result<()> {
        self.ensure_stream(group, stream).await?;
        events.sort_by_key(|(at, _)| *at);
        let mut batch: Vec<InputLogEvent> = Vec::new();
        let mut bytes = 0;
        for (at, mut message) in events {
            // CloudWatch Logs' limit on one event (256 KiB, less its overhead).
            if message.len() > 262_118 {
                let mut end = 262_118;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
            }
            if batch.len() == LOG_BATCH_EVENTS || bytes + message.len() + 26 > LOG_BATCH_BYTES {
                self.send_logs(group, stream, std::mem::take(&mut batch))
                    .await?;
                bytes = 0;
            }
            bytes += message.len() + 26;
            batch.push(
                InputLogEvent::builder()
                    .timestamp(at)
                    .message(message)
                    .build()
                    .expect("timestamp and message are set"),
            );
        }
        if !batch.is_empty() {
            self.send_logs(group, stream, batch).await?;
        }
        Ok(())
    }

    async fn send_logs(
        &self,
        group: &str,
        stream: &str,
        events: Vec<InputLogEvent>,
    ) -> anyhow::Result<()> {
        self.logs
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_log_events(Some(events))
            .send()
            .await
            .map_err(crate::live::aws_error)?;
        Ok(())
    }

    /// Makes the stream (and, as Lambda does for a function whose group is
    /// gone, the group) the first time.
    async fn ensure_stream(&self, group: &str, stream: &str) -> anyhow::Result<()> {
        let key = (group.to_owned(), stream.to_owned());
        let mut made = self.streams.lock().await;
        if made.contains(&key) {
            return Ok(());
        }
        let create = || {
            self.logs
                .create_log_stream()
                .log_group_name(group)
                .log_stream_name(stream)
                .send()
        };
        match create().await {
            Ok(_) => {}
            Err(err) if err.code() == Some("ResourceAlreadyExistsException") => {}
            Err(err) if err.code() == Some("ResourceNotFoundException") => {
                match self
                    .logs
                    .create_log_group()
                    .log_group_name(group)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(err) if err.code() == Some("ResourceAlreadyExistsException") => {}
                    Err(err) => return Err(crate::live::aws_error(err)),
                }
                create().await.map_err(crate::live::aws_error)?;
            }
            Err(err) => return Err(crate::live::aws_error(err)),
        }
        made.insert(key);
        Ok(())
    }
}

/// The qualifier of a qualified function ARN (`...:function:NAME:prod`).
fn qualifier(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts[..] {
        ["arn", _, "lambda", _, _, "function", _, qualifier] if !qualifier.is_empty() => {
            Some(qualifier)
        }
        _ => None,
    }
}

fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

/// One second's values of a series as datums: each distinct value (to a
/// hundredth) once with its count, at most [`DATUM_VALUES`] per datum.
fn datums(series: &Series, values: &[f64]) -> Vec<MetricDatum> {
    let mut counts: BTreeMap<i64, u32> = BTreeMap::new();
    for value in values {
        *counts.entry((value * 100.0).round() as i64).or_default() += 1;
    }
    let counts: Vec<(i64, u32)> = counts.into_iter().collect();
    let dimensions: Vec<Dimension> = series
        .dimensions
        .iter()
        .map(|(name, value)| Dimension::builder().name(*name).value(value).build())
        .collect();
    counts
        .chunks(DATUM_VALUES)
        .map(|chunk| {
            MetricDatum::builder()
                .metric_name(series.metric)
                .set_dimensions(Some(dimensions.clone()))
                .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    series.second,
                ))
                .unit(match series.unit {
                    Unit::Count => StandardUnit::Count,
                    Unit::Milliseconds => StandardUnit::Milliseconds,
                })
                .set_values(Some(chunk.iter().map(|(v, _)| *v as f64 / 100.0).collect()))
                .set_counts(Some(chunk.iter().map(|(_, n)| f64::from(*n)).collect()))
                .build()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seconds_values_go_out_as_distinct_values_and_their_counts() {
        let series = Series {
            namespace: "AWS/Lambda",
            metric: "Duration",
            unit: Unit::Milliseconds,
            dimensions: vec![("FunctionName", "f".to_owned())],
            second: 1_700_000_000,
        };
        let datums = datums(&series, &[1.234, 1.231, 2.0, 1.229]);
        assert_eq!(datums.len(), 1);
        assert_eq!(datums[0].values(), [1.23, 2.0]);
        assert_eq!(datums[0].counts(), [3.0, 1.0]);
        assert_eq!(datums[0].unit(), Some(&StandardUnit::Milliseconds));
        // Many distinct values: 150 per datum.
        let many: Vec<f64> = (0..400).map(f64::from).collect();
        let datums = super::datums(&series, &many);
        assert_eq!(
            datums.iter().map(|d| d.values().len()).collect::<Vec<_>>(),
            [150, 150, 100]
        );
        let total: f64 = datums.iter().flat_map(|d| d.counts()).sum();
        assert_eq!(total, 400.0);
    }

    #[test]
    fn the_qualifier_is_the_invoked_arns_last_part() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:app-status";
        assert_eq!(qualifier(arn), None);
        assert_eq!(qualifier(&format!("{arn}:prod")), Some("prod"));
        assert_eq!(qualifier(&format!("{arn}:$LATEST")), Some("$LATEST"));
        assert_eq!(qualifier("not an arn"), None);
    }
}
