//! The stack's CloudWatch alarms (`terraform/alarms.tf`) as the release
//! flow reads them, and their evaluation where no CloudWatch evaluates
//! them: the emulator stores alarms and metrics but never evaluates an
//! alarm, so on the local stack xtask does, as CloudWatch would, and sets
//! each alarm's state in the emulator (`SetAlarmState`). A canary then reads
//! the states the same way on both sides.
//!
//! An alarm looks at its last `evaluation_periods` closed periods (aligned
//! to the period) and goes to `ALARM` when `datapoints_to_alarm` of them
//! breach its threshold; a period without data counts as its
//! `treat_missing_data` says. A metric-math alarm's expression (`100 *
//! errors / invocations`) is evaluated here over its metrics' datapoints:
//! numbers, metric ids, `+ - * /` and parentheses.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use aws_sdk_cloudwatch::types::{ComparisonOperator, MetricAlarm, StateValue};

use crate::live::{Aws, aws_error};

/// An alarm: its state and what it evaluates.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    pub name: String,
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub state: String,
    pub reason: String,
    pub definition: Definition,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub period: u64,
    pub evaluation_periods: usize,
    pub datapoints_to_alarm: usize,
    pub threshold: f64,
    pub comparison: Comparison,
    /// `notBreaching`, `breaching`, `ignore` or `missing`.
    pub missing: String,
    /// The metrics it reads, by id (`m` for a single-metric alarm).
    pub metrics: Vec<Query>,
    /// What it compares: one metric, or an expression over them.
    pub series: Series,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Series {
    Metric(String),
    Expression(Expr),
}

/// One metric an alarm reads, and its statistic (`Sum`, `Average`, `p99`).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub id: String,
    pub namespace: String,
    pub metric: String,
    pub dimensions: Vec<(String, String)>,
    pub stat: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl Comparison {
    fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Greater => value > threshold,
            Comparison::GreaterOrEqual => value >= threshold,
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Comparison::Greater => "greater than",
            Comparison::GreaterOrEqual => "greater than or equal to",
            Comparison::Less => "less than",
            Comparison::LessOrEqual => "less than or equal to",
        }
    }
}

/// The alarms named, as CloudWatch holds them (missing ones left out).
pub async fn read(aws: &Aws, names: &[String]) -> Result<Vec<Alarm>> {
    let mut alarms = Vec::new();
    for chunk in names.chunks(100) {
        let found = aws
            .cloudwatch
            .describe_alarms()
            .set_alarm_names(Some(chunk.to_vec()))
            .max_records(100)
            .send()
            .await
            .map_err(aws_error)
            .context("reading the alarms (DescribeAlarms)")?;
        for alarm in found.metric_alarms() {
            alarms.push(
                from_metric_alarm(alarm)
                    .with_context(|| format!("alarm {}", alarm.alarm_name().unwrap_or("?")))?,
            );
        }
    }
    alarms.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(alarms)
}

/// Every alarm whose name starts with `prefix`.
pub async fn read_prefix(aws: &Aws, prefix: &str) -> Result<Vec<Alarm>> {
    let mut alarms = Vec::new();
    let mut pages = aws
        .cloudwatch
        .describe_alarms()
        .alarm_name_prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page
            .map_err(aws_error)
            .context("reading the alarms (DescribeAlarms)")?;
        for alarm in page.metric_alarms() {
            alarms.push(
                from_metric_alarm(alarm)
                    .with_context(|| format!("alarm {}", alarm.alarm_name().unwrap_or("?")))?,
            );
        }
    }
    Ok(alarms)
}

fn from_metric_alarm(alarm: &MetricAlarm) -> Result<Alarm> {
    let comparison = match alarm.comparison_operator() {
        Some(ComparisonOperator::GreaterThanThreshold) => Comparison::Greater,
        Some(ComparisonOperator::GreaterThanOrEqualToThreshold) => Comparison::GreaterOrEqual,
        Some(ComparisonOperator::LessThanThreshold) => Comparison::Less,
        Some(ComparisonOperator::LessThanOrEqualToThreshold) => Comparison::LessOrEqual,
        other => bail!("comparison {other:?} is not evaluated here (anomaly bands are not)"),
    };
    let dimensions = |dims: &[aws_sdk_cloudwatch::types::Dimension]| {
        dims.iter()
            .map(|d| {
                (
                    d.name().unwrap_or_default().to_owned(),
                    d.value().unwrap_or_default().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut period = alarm.period().map(|p| p as u64);
    let (metrics, series) = if alarm.metrics().is_empty() {
        let stat = alarm
            .extended_statistic()
            .map(str::to_owned)
            .or_else(|| alarm.statistic().map(|s| s.as_str().to_owned()))
            .context("neither a statistic nor an extended statistic")?;
        let query = Query {
            id: "m".to_owned(),
            namespace: alarm.namespace().unwrap_or_default().to_owned(),
            metric: alarm.metric_name().unwrap_or_default().to_owned(),
            dimensions: dimensions(alarm.dimensions()),
            stat,
        };
        (vec![query], Series::Metric("m".to_owned()))
    } else {
        let mut metrics = Vec::new();
        let mut series = None;
        for query in alarm.metrics() {
            let id = query.id().unwrap_or_default().to_owned();
            if let Some(stat) = query.metric_stat() {
                let metric = stat.metric().context("a metric query without its metric")?;
                period = period.or(stat.period().map(|p| p as u64));
                metrics.push(Query {
                    id: id.clone(),
                    namespace: metric.namespace().unwrap_or_default().to_owned(),
                    metric: metric.metric_name().unwrap_or_default().to_owned(),
                    dimensions: dimensions(metric.dimensions()),
                    stat: stat.stat().unwrap_or("Sum").to_owned(),
                });
            }
            if query.return_data().unwrap_or(true) {
                series = Some(match query.expression() {
                    Some(expression) => Series::Expression(Expr::parse(expression)?),
                    None => Series::Metric(id),
                });
            }
        }
        (metrics, series.context("no metric query returns data")?)
    };
    let evaluation_periods = alarm.evaluation_periods().unwrap_or(1).max(1) as usize;
    Ok(Alarm {
        name: alarm.alarm_name().unwrap_or_default().to_owned(),
        state: alarm
            .state_value()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "INSUFFICIENT_DATA".to_owned()),
        reason: alarm.state_reason().unwrap_or_default().to_owned(),
        definition: Definition {
            period: period.context("no period")?.max(1),
            evaluation_periods,
            datapoints_to_alarm: alarm
                .datapoints_to_alarm()
                .map(|n| n.max(1) as usize)
                .unwrap_or(evaluation_periods),
            threshold: alarm.threshold().context("no threshold")?,
            comparison,
            missing: alarm.treat_missing_data().unwrap_or("missing").to_owned(),
            metrics,
            series,
        },
    })
}

/// Evaluates `alarms` at `now` from the metrics `aws` holds, as CloudWatch
/// would, and sets the state of each that moved (`SetAlarmState`); the
/// alarms with their new states.
pub async fn evaluate(aws: &Aws, alarms: Vec<Alarm>, now: SystemTime) -> Result<Vec<Alarm>> {
    let mut evaluated = Vec::new();
    for mut alarm in alarms {
        let points = datapoints(aws, &alarm.definition, now)
            .await
            .with_context(|| format!("reading the metrics of alarm {}", alarm.name))?;
        let (state, reason) = decide(&alarm.definition, &points, &alarm.state);
        if state != alarm.state {
            aws.cloudwatch
                .set_alarm_state()
                .alarm_name(&alarm.name)
                .state_value(StateValue::from(state.as_str()))
                .state_reason(&reason)
                .send()
                .await
                .map_err(aws_error)
                .with_context(|| format!("setting the state of alarm {}", alarm.name))?;
            alarm.state = state;
            alarm.reason = reason;
        }
        evaluated.push(alarm);
    }
    Ok(evaluated)
}

/// Evaluates the stack's alarms as CloudWatch would, twice a period, for
/// as long as the task runs: the local stack's CloudWatch, while `cargo
/// xtask dev` or `serve` serves. `settings` says anew each round what
/// every alarm's name starts with and their period (an apply, a canary may
/// change them); each change of state is logged.
pub async fn keep_evaluating(
    aws: Aws,
    settings: impl Fn() -> Option<(String, u64)>,
    log: crate::host::Log,
) {
    let mut warned = false;
    loop {
        let current = settings();
        let period = current.as_ref().map_or(60, |(_, period)| *period);
        if let Some((prefix, _)) = current {
            let evaluated = async {
                let before = read_prefix(&aws, &prefix).await?;
                let states: BTreeMap<String, String> = before
                    .iter()
                    .map(|alarm| (alarm.name.clone(), alarm.state.clone()))
                    .collect();
                let after = evaluate(&aws, before, SystemTime::now()).await?;
                anyhow::Ok((states, after))
            }
            .await;
            match evaluated {
                Ok((states, after)) => {
                    warned = false;
                    for alarm in after {
                        if states.get(&alarm.name) != Some(&alarm.state) {
                            log.line(format_args!(
                                "==> alarm {}: {} -> {} ({})",
                                alarm.name,
                                states.get(&alarm.name).map_or("?", String::as_str),
                                alarm.state,
                                alarm.reason
                            ));
                        }
                    }
                }
                Err(err) if !warned => {
                    warned = true;
                    log.line(format_args!(
                        "==> the alarms could not be evaluated: {err:#}"
                    ));
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs((period / 2).clamp(1, 15))).await;
    }
}

/// The start (Unix seconds) of each period an alarm evaluates at `now`,
/// oldest first: the last `evaluation_periods` that have closed (a period
/// still open would be judged on part of its data).
pub fn periods(definition: &Definition, now: SystemTime) -> Vec<i64> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let period = definition.period as i64;
    let current = now - now.rem_euclid(period);
    (1..=definition.evaluation_periods as i64)
        .rev()
        .map(|back| current - back * period)
        .collect()
}

/// Each evaluated period's datapoint (`None`: no data).
async fn datapoints(
    aws: &Aws,
    definition: &Definition,
    now: SystemTime,
) -> Result<Vec<Option<f64>>> {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
    let starts = periods(definition, now);
    let period = definition.period as i64;
    let first = *starts.first().expect("at least one period");
    let end = starts.last().expect("at least one period") + period;
    let queries: Vec<MetricDataQuery> = definition
        .metrics
        .iter()
        .map(|query| {
            let metric = Metric::builder()
                .namespace(&query.namespace)
                .metric_name(&query.metric)
                .set_dimensions(Some(
                    query
                        .dimensions
                        .iter()
                        .map(|(name, value)| Dimension::builder().name(name).value(value).build())
                        .collect(),
                ))
                .build();
            MetricDataQuery::builder()
                .id(&query.id)
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(definition.period as i32)
                        .stat(&query.stat)
                        .build(),
                )
                .return_data(true)
                .build()
        })
        .collect();
    let found = aws
        .cloudwatch
        .get_metric_data()
        .set_metric_data_queries(Some(queries))
        .start_time(DateTime::from_secs(first))
        .end_time(DateTime::from_secs(end))
        .send()
        .await
        .map_err(aws_error)?;
    let mut series: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for result in found.metric_data_results() {
        let points = series
            .entry(result.id().unwrap_or_default().to_owned())
            .or_default();
        for (at, value) in result.timestamps().iter().zip(result.values()) {
            points.insert(at.secs(), *value);
        }
    }
    Ok(starts
        .iter()
        .map(|start| match &definition.series {
            Series::Metric(id) => series.get(id).and_then(|points| points.get(start)).copied(),
            Series::Expression(expr) => {
                expr.evaluate(&|id| series.get(id).and_then(|points| points.get(start)).copied())
            }
        })
        .collect())
}

/// The state `datapoints` (one per evaluated period, oldest first) put an
/// alarm in, from `current`, and CloudWatch's kind of reason.
pub fn decide(
    definition: &Definition,
    datapoints: &[Option<f64>],
    current: &str,
) -> (String, String) {
    let threshold = definition.threshold;
    let shown: Vec<String> = datapoints
        .iter()
        .flatten()
        .map(|value| format!("{value}"))
        .collect();
    let present = shown.len();
    let breaching = datapoints
        .iter()
        .flatten()
        .filter(|value| definition.comparison.breaches(**value, threshold))
        .count();
    let missing = datapoints.len() - present;
    let counted = match definition.missing.as_str() {
        "breaching" => breaching + missing,
        _ => breaching,
    };
    if counted >= definition.datapoints_to_alarm {
        let reason = format!(
            "Threshold Crossed: {counted} out of the last {} datapoints [{}] {} {} the threshold ({threshold}) (evaluated by cargo xtask)",
            datapoints.len(),
            shown.join(", "),
            if counted == 1 { "was" } else { "were" },
            definition.comparison.words()
        );
        return ("ALARM".to_owned(), reason);
    }
    if present == 0 {
        match definition.missing.as_str() {
            "missing" => {
                return (
                    "INSUFFICIENT_DATA".to_owned(),
                    format!(
                        "Insufficient Data: {} datapoints were unknown (evaluated by cargo xtask)",
                        datapoints.len()
                    ),
                );
            }
            "ignore" => {
                return (
                    current.to_owned(),
                    "No data: the state is kept (evaluated by cargo xtask)".to_owned(),
                );
            }
            _ => {}
        }
    }
    (
        "OK".to_owned(),
        format!(
            "Threshold Crossed: {breaching} out of the last {} datapoints [{}] {} {} the threshold ({threshold}), fewer than {} (evaluated by cargo xtask)",
            datapoints.len(),
            shown.join(", "),
            if breaching == 1 { "was" } else { "were" },
            definition.comparison.words(),
            definition.datapoints_to_alarm
        ),
    )
}

/// A metric-math expression: numbers, metric ids, `+ - * /`, parentheses.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Id(String),
    Negate(Box<Expr>),
    Binary(Box<Expr>, char, Box<Expr>),
}

impl Expr {
    pub fn parse(text: &str) -> Result<Expr> {
        let tokens = tokens(text)?;
        let mut at = 0;
        let expr = sum(&tokens, &mut at)?;
        if at != tokens.len() {
            bail!("`{text}`: unexpected {:?}", tokens[at]);
        }
        Ok(expr)
    }

    /// Its value, given each id's (`None` where an id has no value, or a
    /// division by zero: no datapoint, as in CloudWatch).
    pub fn evaluate(&self, value: &dyn Fn(&str) -> Option<f64>) -> Option<f64> {
        match self {
            Expr::Number(number) => Some(*number),
            Expr::Id(id) => value(id),
            Expr::Negate(inner) => inner.evaluate(value).map(|v| -v),
            Expr::Binary(left, op, right) => {
                let (left, right) = (left.evaluate(value)?, right.evaluate(value)?);
                match op {
                    '+' => Some(left + right),
                    '-' => Some(left - right),
                    '*' => Some(left * right),
                    _ if right == 0.0 => None,
                    _ => Some(left / right),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Id(String),
    Symbol(char),
}

fn tokens(text: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            ' ' | '\t' => {}
            '+' | '-' | '*' | '/' | '(' | ')' => tokens.push(Token::Symbol(c)),
            '0'..='9' | '.' => {
                let mut end = at + c.len_utf8();
                while let Some((next, c)) = chars.peek() {
                    if c.is_ascii_digit() || *c == '.' {
                        end = next + c.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let number = text[at..end]
                    .parse()
                    .with_context(|| format!("`{text}`: `{}` is not a number", &text[at..end]))?;
                tokens.push(Token::Number(number));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut end = at + 1;
                while let Some((next, c)) = chars.peek() {
                    if c.is_ascii_alphanumeric() || *c == '_' {
                        end = next + 1;
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Id(text[at..end].to_owned()));
            }
            other => bail!(
                "`{text}`: `{other}` is not evaluated here (only numbers, metric ids, + - * / and \
                 parentheses: no metric math functions)"
            ),
        }
    }
    Ok(tokens)
}

fn sum(tokens: &[Token], at: &mut usize) -> Result<Expr> {
    let mut expr = product(tokens, at)?;
    while let Some(Token::Symbol(op @ ('+' | '-'))) = tokens.get(*at) {
        *at += 1;
        expr = Expr::Binary(Box::new(expr), *op, Box::new(product(tokens, at)?));
    }
    Ok(expr)
}

fn product(tokens: &[Token], at: &mut usize) -> Result<Expr> {
    let mut expr = factor(tokens, at)?;
    while let Some(Token::Symbol(op @ ('*' | '/'))) = tokens.get(*at) {
        *at += 1;
        expr = Expr::Binary(Box::new(expr), *op, Box::new(factor(tokens, at)?));
    }
    Ok(expr)
}

fn factor(tokens: &[Token], at: &mut usize) -> Result<Expr> {
    let token = tokens.get(*at).cloned();
    *at += 1;
    match token {
        Some(Token::Number(number)) => Ok(Expr::Number(number)),
        Some(Token::Id(id)) => {
            if tokens.get(*at) == Some(&Token::Symbol('(')) {
                bail!("metric math function {id}() is not evaluated here");
            }
            Ok(Expr::Id(id))
        }
        Some(Token::Symbol('-')) => Ok(Expr::Negate(Box::new(factor(tokens, at)?))),
        Some(Token::Symbol('(')) => {
            let inner = sum(tokens, at)?;
            if tokens.get(*at) != Some(&Token::Symbol(')')) {
                bail!("a `(` without its `)`");
            }
            *at += 1;
            Ok(inner)
        }
        other => bail!("expected a number, a metric id or `(`, found {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(
        evaluation_periods: usize,
        datapoints_to_alarm: usize,
        missing: &str,
    ) -> Definition {
        Definition {
            period: 60,
            evaluation_periods,
            datapoints_to_alarm,
            threshold: 5.0,
            comparison: Comparison::Greater,
            missing: missing.to_owned(),
            metrics: Vec::new(),
            series: Series::Metric("m".to_owned()),
        }
    }

    fn state(definition: &Definition, points: &[Option<f64>], current: &str) -> String {
        decide(definition, points, current).0
    }

    #[test]
    fn an_alarm_fires_when_enough_periods_breach() {
        let one = definition(1, 1, "notBreaching");
        assert_eq!(state(&one, &[Some(5.1)], "OK"), "ALARM");
        assert_eq!(state(&one, &[Some(5.0)], "ALARM"), "OK");
        assert_eq!(state(&one, &[None], "ALARM"), "OK");
        let (_, reason) = decide(&one, &[Some(50.0)], "OK");
        assert!(
            reason.starts_with("Threshold Crossed: 1 out of the last 1 datapoints [50] was greater than the threshold (5)"),
            "{reason}"
        );
        // Two of three.
        let two = definition(3, 2, "notBreaching");
        assert_eq!(
            state(&two, &[Some(9.0), Some(1.0), Some(9.0)], "OK"),
            "ALARM"
        );
        assert_eq!(state(&two, &[Some(9.0), None, Some(1.0)], "OK"), "OK");
        // Missing data as the alarm says.
        let breaching = definition(3, 2, "breaching");
        assert_eq!(
            state(&breaching, &[Some(9.0), None, Some(1.0)], "OK"),
            "ALARM"
        );
        let missing = definition(2, 1, "missing");
        assert_eq!(state(&missing, &[None, None], "OK"), "INSUFFICIENT_DATA");
        assert_eq!(state(&missing, &[None, Some(1.0)], "ALARM"), "OK");
        let ignore = definition(2, 1, "ignore");
        assert_eq!(state(&ignore, &[None, None], "ALARM"), "ALARM");
        // Other comparisons.
        let mut low = definition(1, 1, "notBreaching");
        low.comparison = Comparison::LessOrEqual;
        assert_eq!(state(&low, &[Some(5.0)], "OK"), "ALARM");
        low.comparison = Comparison::GreaterOrEqual;
        assert_eq!(state(&low, &[Some(5.0)], "OK"), "ALARM");
        low.comparison = Comparison::Less;
        assert_eq!(state(&low, &[Some(5.0)], "ALARM"), "OK");
    }

    #[test]
    fn periods_are_aligned_and_end_with_the_last_closed_one() {
        let mut three = definition(3, 1, "notBreaching");
        three.period = 10;
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_007);
        assert_eq!(periods(&three, now), [999_970, 999_980, 999_990]);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        assert_eq!(periods(&three, now), [999_970, 999_980, 999_990]);
    }

    #[test]
    fn metric_math_is_evaluated_over_the_ids() {
        let expr = Expr::parse("100 * errors / invocations").unwrap();
        let values = |errors: Option<f64>, invocations: Option<f64>| {
            move |id: &str| match id {
                "errors" => errors,
                "invocations" => invocations,
                _ => None,
            }
        };
        assert_eq!(expr.evaluate(&values(Some(3.0), Some(12.0))), Some(25.0));
        // No invocations, or none recorded: no datapoint.
        assert_eq!(expr.evaluate(&values(Some(0.0), Some(0.0))), None);
        assert_eq!(expr.evaluate(&values(None, Some(4.0))), None);
        let expr = Expr::parse("-(a + 2) * 3 - b / 4").unwrap();
        let value = |id: &str| match id {
            "a" => Some(1.0),
            "b" => Some(8.0),
            _ => None,
        };
        assert_eq!(expr.evaluate(&value), Some(-11.0));
        for bad in ["FILL(errors, 0)", "a +", "(a", "a b", "a % b", ""] {
            assert!(Expr::parse(bad).is_err(), "{bad}");
        }
    }
}
