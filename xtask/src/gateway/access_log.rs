//! A stage's access log line: its format (the stage's `accessLogSettings`)
//! with each `$context.NAME` replaced by the request's value, as API
//! Gateway writes it: as it is, unescaped, and `-` where the request has
//! no such value (or this gateway knows none).

use std::collections::BTreeMap;
use std::time::SystemTime;

/// `format` with every `$context.NAME` (letters, digits and dots) replaced
/// by `values[NAME]`, or `-`.
pub fn render(format: &str, values: &BTreeMap<&str, Option<String>>) -> String {
    let mut out = String::with_capacity(format.len());
    let mut rest = format;
    while let Some(at) = rest.find("$context.") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "$context.".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
            .unwrap_or(after.len());
        // A dot that ends the name is the text's ("$context.status.").
        let name = after[..end].trim_end_matches('.');
        if name.is_empty() {
            out.push_str("$context.");
            rest = after;
            continue;
        }
        match values.get(name) {
            Some(Some(value)) => out.push_str(value),
            _ => out.push('-'),
        }
        rest = &after[name.len()..];
    }
    out.push_str(rest);
    out
}

/// `$context.requestTime`: the Common Log Format's time, in UTC
/// (`03/Dec/2026:10:15:30 +0000`).
pub fn clf_time(at: SystemTime) -> String {
    // humantime: `2026-12-03T10:15:30Z`.
    let text = humantime::format_rfc3339_seconds(at).to_string();
    let month = match &text[5..7] {
        "01" => "Jan",
        "02" => "Feb",
        "03" => "Mar",
        "04" => "Apr",
        "05" => "May",
        "06" => "Jun",
        "07" => "Jul",
        "08" => "Aug",
        "09" => "Sep",
        "10" => "Oct",
        "11" => "Nov",
        _ => "Dec",
    };
    format!(
        "{}/{month}/{}:{} +0000",
        &text[8..10],
        &text[..4],
        &text[11..19]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_variables_are_replaced_and_unknown_ones_are_a_dash() {
        let values = BTreeMap::from([
            ("requestId", Some("r-1".to_owned())),
            ("identity.sourceIp", Some("127.0.0.1".to_owned())),
            ("status", Some("200".to_owned())),
            ("integrationLatency", None),
        ]);
        let format = r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","status":"$context.status","latency":"$context.integrationLatency","other":"$context.somethingElse"} $context.status. $$context. end"#;
        assert_eq!(
            render(format, &values),
            r#"{"requestId":"r-1","ip":"127.0.0.1","status":"200","latency":"-","other":"-"} 200. $$context. end"#
        );
        // The terraform/ format is JSON once rendered.
        let tf =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../terraform/logs.tf"))
                .unwrap();
        assert!(tf.contains("requestId          = \"$context.requestId\""));
    }

    #[test]
    fn request_times_read_as_the_common_log_format() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_756_930);
        assert_eq!(clf_time(at), "03/Dec/2025:10:15:30 +0000");
    }
}
