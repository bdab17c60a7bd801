//! `cargo xtask logs FUNCTION`: a function's log lines from CloudWatch
//! Logs, on the local stack (where the local Lambda host writes them, as
//! Lambda does) and on AWS alike: `FilterLogEvents` on its group
//! (`/aws/lambda/NAME`), only the streams of the versions an alias runs
//! with `--alias` (a stream is one execution environment's,
//! `YYYY/MM/DD/[VERSION]ID`), polled every second with `--follow`. One
//! line each: time, version, request id, message.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use xshell::Shell;

use crate::LocalDir;
use crate::live::aws_error;
use crate::release::World;
use crate::terraform::TargetArgs;

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The function: its name in the build manifest (`status`) or its Lambda name.
    function: String,
    /// Only the versions this alias runs (`staging`: `$LATEST`; `prod`: its
    /// version, and a canary's new one) [default: every version].
    #[arg(long)]
    alias: Option<String>,
    /// How far back to start: `10m`, `2h`, `30s`.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    since: Duration,
    /// Keep printing lines as they arrive, until Ctrl-C.
    #[arg(long)]
    follow: bool,
    /// Only the lines CloudWatch Logs' filter pattern matches: terms (`ERROR
    /// timeout`), "a phrase", a request id, `?a ?b` (either), `-term`
    /// (without), `{ $.level = "ERROR" }` (JSON lines).
    #[arg(long, value_name = "PATTERN")]
    filter: Option<String>,
}

/// `cargo xtask logs`.
pub fn run(sh: &Shell, local: &LocalDir, args: LogsArgs) -> Result<()> {
    crate::release::runtime()?.block_on(async {
        let world = World::open(sh, local, &args.target).await?;
        let name = world.applied.function_name(&args.function)?;
        let group = format!("/aws/lambda/{name}");
        let first = SystemTime::now()
            .checked_sub(args.since)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut start = first;
        // Lines printed, by event id, while they are within the lookback.
        let mut seen: HashMap<String, SystemTime> = HashMap::new();
        let mut requests = BTreeMap::new();
        let mut streams: Option<(std::time::Instant, Vec<String>)> = None;
        loop {
            // An alias's streams, found anew every 10 s (new environments).
            if let Some(alias) = &args.alias
                && streams
                    .as_ref()
                    .is_none_or(|(at, _)| at.elapsed() > Duration::from_secs(10))
            {
                let found = alias_streams(&world, &name, &group, alias).await?;
                streams = Some((std::time::Instant::now(), found));
            }
            let names = streams.as_ref().map(|(_, names)| names.as_slice());
            let events = match names {
                // An alias whose versions have not logged yet.
                Some([]) => Vec::new(),
                _ => events(&world, &group, names, start, args.filter.as_deref()).await?,
            };
            let newest = events.iter().map(|event| event.at).max();
            for event in events {
                if seen.insert(event.id.clone(), event.at).is_none() {
                    println!("{}", line(&event, &mut requests));
                }
            }
            if !args.follow {
                return Ok(());
            }
            // Next from a while before the newest line: CloudWatch Logs
            // takes a line in late (another stream's, sent later; its
            // index is eventually consistent), and a line seen is not
            // printed twice.
            if let Some(newest) = newest {
                start = first.max(newest.checked_sub(LOOKBACK).unwrap_or(first));
                seen.retain(|_, at| *at >= start);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// How far before the newest line `--follow` asks again.
const LOOKBACK: Duration = Duration::from_secs(60);

/// One log event as `FilterLogEvents` returns it.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: String,
    at: SystemTime,
    stream: String,
    message: String,
}

/// The streams of the versions `alias` runs, newest first (at most 100:
/// `FilterLogEvents` takes no more).
async fn alias_streams(world: &World, name: &str, group: &str, alias: &str) -> Result<Vec<String>> {
    let versions: Vec<String> = if alias == "$LATEST" || alias.bytes().all(|b| b.is_ascii_digit()) {
        vec![alias.to_owned()]
    } else {
        let found = world
            .aws
            .alias(name, alias)
            .await?
            .with_context(|| format!("{name} has no alias `{alias}` on {}", world.name()))?;
        std::iter::once(found.version)
            .chain(found.additional.map(|(version, _)| version))
            .collect()
    };
    let mut streams = Vec::new();
    let mut pages = world
        .aws
        .logs
        .describe_log_streams()
        .log_group_name(group)
        .order_by(aws_sdk_cloudwatchlogs::types::OrderBy::LastEventTime)
        .descending(true)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(err) if err.code() == Some("ResourceNotFoundException") => {
                bail!("{}", no_group(group));
            }
            Err(err) => return Err(aws_error(err)).context("listing the log streams"),
        };
        for stream in page.log_streams() {
            let stream = stream.log_stream_name().unwrap_or_default();
            if stream_version(stream).is_some_and(|version| versions.iter().any(|v| v == version)) {
                streams.push(stream.to_owned());
            }
        }
        if streams.len() >= 100 {
            streams.truncate(100);
            break;
        }
    }
    Ok(streams)
}

fn no_group(group: &str) -> String {
    format!(
        "there is no log group {group}: the function has not logged yet (on the local stack, \
         the Lambda host writes it when a function runs under `cargo xtask dev`, `serve`, \
         `invoke` or `verify`)"
    )
}

/// The events of `group` (in `streams`, if given) from `start` on, that
/// `filter` matches, oldest first.
async fn events(
    world: &World,
    group: &str,
    streams: Option<&[String]>,
    start: SystemTime,
    filter: Option<&str>,
) -> Result<Vec<Event>> {
    let millis = |at: SystemTime| {
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64
    };
    let mut pages = world
        .aws
        .logs
        .filter_log_events()
        .log_group_name(group)
        .start_time(millis(start))
        .set_log_stream_names(streams.map(<[String]>::to_vec))
        .set_filter_pattern(filter.map(str::to_owned))
        .into_paginator()
        .send();
    let mut events = Vec::new();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(err) if err.code() == Some("ResourceNotFoundException") => {
                bail!("{}", no_group(group));
            }
            Err(err) => {
                return Err(aws_error(err)).with_context(|| format!("reading {group}"));
            }
        };
        for event in page.events() {
            events.push(Event {
                id: event.event_id().unwrap_or_default().to_owned(),
                at: SystemTime::UNIX_EPOCH
                    + Duration::from_millis(event.timestamp().unwrap_or_default().max(0) as u64),
                stream: event.log_stream_name().unwrap_or_default().to_owned(),
                message: event.message().unwrap_or_default().to_owned(),
            });
        }
    }
    events.sort_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)));
    Ok(events)
}

/// The version a Lambda log stream is of (`2026/12/03/[3]ab12...`: `3`).
fn stream_version(stream: &str) -> Option<&str> {
    let (_, rest) = stream.split_once('[')?;
    let (version, _) = rest.split_once(']')?;
    Some(version)
}

/// `time  version  request id  message`: the request id the line names
/// (`RequestId: ...`, a runtime's JSON `requestId`, or any UUID in it),
/// else the one its stream's last `START` opened (`requests`, by stream).
fn line(event: &Event, requests: &mut BTreeMap<String, String>) -> String {
    let named = request_id(&event.message);
    if event.message.starts_with("START ")
        && let Some(id) = &named
    {
        requests.insert(event.stream.clone(), id.clone());
    }
    let id = named
        .or_else(|| requests.get(&event.stream).cloned())
        .unwrap_or_else(|| "-".to_owned());
    if event.message.starts_with("REPORT ") {
        requests.remove(&event.stream);
    }
    format!(
        "{}  {:<7}  {id}  {}",
        humantime::format_rfc3339_millis(event.at),
        stream_version(&event.stream).unwrap_or("-"),
        event.message.trim_end()
    )
}

/// The request id a log line names, if any.
fn request_id(message: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(message) {
        for found in [&json["span"]["requestId"], &json["requestId"]] {
            if let Some(id) = found.as_str() {
                return Some(id.to_owned());
            }
        }
    }
    if let Some((_, rest)) = message.split_once("RequestId: ") {
        let id: String = rest
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
            .collect();
        if !id.is_empty() {
            return Some(id);
        }
    }
    message
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .find(|word| is_uuid(word))
        .map(str::to_owned)
}

fn is_uuid(word: &str) -> bool {
    let groups: Vec<&str> = word.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stream: &str, message: &str) -> Event {
        Event {
            id: "1".into(),
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_756_930_123),
            stream: stream.into(),
            message: message.into(),
        }
    }

    #[test]
    fn each_line_names_its_time_version_and_request() {
        let id = "f79df5be-04e9-498b-bbc9-bcdfc57197bd";
        let stream = "2025/12/03/[3]0123456789abcdef0123456789abcdef";
        let mut requests = BTreeMap::new();
        let start = line(
            &event(stream, &format!("START RequestId: {id} Version: 3")),
            &mut requests,
        );
        assert_eq!(
            start,
            format!("2025-12-03T10:15:30.123Z  3        {id}  START RequestId: {id} Version: 3")
        );
        // A line that names no request is the open one's.
        let own = line(
            &event(stream, "plain text from the function"),
            &mut requests,
        );
        assert!(own.contains(&format!("  {id}  plain text")), "{own}");
        let json = format!(
            r#"{{"level":"INFO","fields":{{"message":"hi"}},"span":{{"requestId":"{id}","name":"Lambda runtime invoke"}}}}"#
        );
        assert!(line(&event("x", &json), &mut BTreeMap::new()).contains(id));
        let timeout = format!("2025-12-03T10:15:30.123Z {id} Task timed out after 1.00 seconds");
        assert!(line(&event("x", &timeout), &mut BTreeMap::new()).contains(&format!("  {id}  ")));
        let report = line(
            &event(
                stream,
                &format!("REPORT RequestId: {id}\tDuration: 1.00 ms"),
            ),
            &mut requests,
        );
        assert!(report.contains(id));
        // After the REPORT, no request is open.
        let after = line(&event(stream, "between requests"), &mut requests);
        assert!(after.contains("  -  between"), "{after}");
        assert_eq!(stream_version(stream), Some("3"));
        assert_eq!(stream_version("2025/12/03/[$LATEST]ab"), Some("$LATEST"));
        assert_eq!(stream_version("access"), None);
    }
}
