//! Integration responses: how API Gateway turns a Lambda result into an HTTP
//! response. A function error's `errorMessage` is matched against each
//! response's selection pattern (a Java regex, matched whole); the success
//! and any unmatched error take the default response (no pattern). The
//! chosen response's template then renders the body.
//!
//! Templates are Velocity (VTL) in API Gateway. This gateway evaluates the
//! part of it response templates here use, and refuses anything else when
//! it loads the configuration, rather than rendering it wrongly:
//! literal text, `$context.requestId|stage|httpMethod|resourcePath`,
//! `$stageVariables.NAME`, `$input.body`, `$input.path('$.a.b')` and
//! `$input.json('$.a.b')`, each optionally followed by `.substring(i)` or
//! `.substring(i, j)`.

use anyhow::{Result, bail};
use fancy_regex::Regex;
use serde_json::Value;

/// What a template can refer to about the request.
pub struct Context<'a> {
    pub request_id: &'a str,
    pub stage: &'a str,
    pub http_method: &'a str,
    pub resource_path: &'a str,
    pub stage_variables: &'a std::collections::BTreeMap<String, String>,
}

/// A parsed response template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Reference(Reference, Option<(usize, Option<usize>)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Reference {
    Context(ContextField),
    StageVariable(String),
    Body,
    Path(Vec<String>),
    Json(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ContextField {
    RequestId,
    Stage,
    HttpMethod,
    ResourcePath,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(at) = rest.find(['$', '#']) {
            text.push_str(&rest[..at]);
            let tail = &rest[at..];
            let is_reference = tail.starts_with('$')
                && tail[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '{' || c == '!');
            let is_directive = tail.starts_with('#')
                && tail[1..].starts_with(|c: char| {
                    c.is_ascii_alphabetic() || c == '#' || c == '*' || c == '{'
                });
            if is_directive {
                bail!("VTL directive at `{}`", excerpt(tail));
            }
            if !is_reference {
                text.push_str(&tail[..1]);
                rest = &tail[1..];
                continue;
            }
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            let (reference, after) = parse_reference(tail)?;
            let (substring, after) = parse_substring(after)?;
            parts.push(Part::Reference(reference, substring));
            rest = after;
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// The body for `input` (the Lambda result payload).
    pub fn render(&self, input: &[u8], context: &Context) -> Result<String> {
        let json = || serde_json::from_slice::<Value>(input);
        let mut out = String::new();
        for part in &self.parts {
            let (reference, substring) = match part {
                Part::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Reference(reference, substring) => (reference, substring),
            };
            let value = match reference {
                Reference::Context(field) => match field {
                    ContextField::RequestId => context.request_id.to_owned(),
                    ContextField::Stage => context.stage.to_owned(),
                    ContextField::HttpMethod => context.http_method.to_owned(),
                    ContextField::ResourcePath => context.resource_path.to_owned(),
                },
                Reference::StageVariable(name) => context
                    .stage_variables
                    .get(name)
                    .cloned()
                    .unwrap_or_default(),
                Reference::Body => String::from_utf8_lossy(input).into_owned(),
                Reference::Path(path) => match select(&json()?, path) {
                    Some(Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                },
                Reference::Json(path) => select(&json()?, path)
                    .map(Value::to_string)
                    .unwrap_or_else(|| "null".to_owned()),
            };
            match substring {
                None => out.push_str(&value),
                Some((begin, end)) => {
                    let chars: Vec<char> = value.chars().collect();
                    let end = end.unwrap_or(chars.len());
                    if *begin > end || end > chars.len() {
                        bail!(
                            "substring({begin}, {end}) of a {}-character value",
                            chars.len()
                        );
                    }
                    out.extend(&chars[*begin..end]);
                }
            }
        }
        Ok(out)
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(40).collect()
}

/// A reference at the start of `text` (which starts with `$`), and the rest.
fn parse_reference(text: &str) -> Result<(Reference, &str)> {
    let name_end = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let unsupported = || anyhow::anyhow!("unsupported reference `{}`", excerpt(text));
    let body = &text[1..];
    let root_end = name_end(body);
    let (root, after) = body.split_at(root_end);
    match root {
        "context" | "stageVariables" => {
            let field = after.strip_prefix('.').ok_or_else(unsupported)?;
            let end = name_end(field);
            let (name, after) = field.split_at(end);
            let reference = if root == "stageVariables" {
                Reference::StageVariable(name.to_owned())
            } else {
                Reference::Context(match name {
                    "requestId" => ContextField::RequestId,
                    "stage" => ContextField::Stage,
                    "httpMethod" => ContextField::HttpMethod,
                    "resourcePath" => ContextField::ResourcePath,
                    _ => return Err(unsupported()),
                })
            };
            Ok((reference, after))
        }
        "input" => {
            if let Some(after) = after.strip_prefix(".body")
                && !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            {
                return Ok((Reference::Body, after));
            }
            for (method, make) in [
                (".path(", Reference::Path as fn(Vec<String>) -> Reference),
                (".json(", Reference::Json),
            ] {
                if let Some(args) = after.strip_prefix(method) {
                    let close = args.find(')').ok_or_else(unsupported)?;
                    let argument = args[..close].trim();
                    let path = argument
                        .strip_prefix('\'')
                        .and_then(|a| a.strip_suffix('\''))
                        .or_else(|| argument.strip_prefix('"').and_then(|a| a.strip_suffix('"')))
                        .ok_or_else(unsupported)?;
                    return Ok((
                        make(json_path(path).ok_or_else(unsupported)?),
                        &args[close + 1..],
                    ));
                }
            }
            Err(unsupported())
        }
        _ => Err(unsupported()),
    }
}

/// `$` or `$.a.b` as its field names.
fn json_path(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('$')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    rest.strip_prefix('.')?
        .split('.')
        .map(|field| {
            (!field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| field.to_owned())
        })
        .collect()
}

fn select<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |value, field| value.get(field))
}

/// `.substring(i)` or `.substring(i, j)` at the start of `text`, if any.
#[allow(clippy::type_complexity)]
fn parse_substring(text: &str) -> Result<(Option<(usize, Option<usize>)>, &str)> {
    let Some(args) = text.strip_prefix(".substring(") else {
        if text.starts_with('.') && text[1..].starts_with(|c: char| c.is_ascii_alphabetic()) {
            bail!("unsupported method call `{}`", excerpt(text));
        }
        return Ok((None, text));
    };
    let close = args
        .find(')')
        .ok_or_else(|| anyhow::anyhow!("unclosed `.substring(`"))?;
    let numbers: Vec<&str> = args[..close].split(',').map(str::trim).collect();
    let number = |text: &str| {
        text.parse::<usize>()
            .map_err(|_| anyhow::anyhow!("`.substring` takes numbers, not `{text}`"))
    };
    let range = match numbers[..] {
        [begin] => (number(begin)?, None),
        [begin, end] => (number(begin)?, Some(number(end)?)),
        _ => bail!("`.substring` takes one or two numbers"),
    };
    Ok((Some(range), &args[close + 1..]))
}

/// A selection pattern: API Gateway matches it against the whole
/// `errorMessage`, as Java's `String.matches` does.
#[derive(Debug, Clone)]
pub struct SelectionPattern {
    regex: Regex,
}

impl SelectionPattern {
    pub fn new(source: &str) -> Result<SelectionPattern> {
        Ok(SelectionPattern {
            regex: Regex::new(&format!("^(?:{source})$"))?,
        })
    }

    pub fn matches(&self, message: &str) -> bool {
        // A pattern too costly to evaluate does not match.
        self.regex.is_match(message).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn render(template: &str, input: &str) -> Result<String> {
        let variables = BTreeMap::from([("stage".to_owned(), "prod".to_owned())]);
        let context = Context {
            request_id: "req-1",
            stage: "prod",
            http_method: "GET",
            resource_path: "/user/{id}",
            stage_variables: &variables,
        };
        Template::parse(template)?.render(input.as_bytes(), &context)
    }

    #[test]
    fn the_error_template_passes_the_json_after_the_status_through() {
        let error = r#"{"errorMessage":"404: {\"message\":\"no user \\\"bob\\\"\",\"request_id\":\"r\"}","errorType":"NotFound"}"#;
        assert_eq!(
            render("$input.path('$.errorMessage').substring(5)", error).unwrap(),
            r#"{"message":"no user \"bob\"","request_id":"r"}"#
        );
    }

    #[test]
    fn references_render() {
        let input = r#"{"a":{"b":[1,2]},"s":"x"}"#;
        let check = |template: &str, expected: &str| {
            assert_eq!(render(template, input).unwrap(), expected, "{template}");
        };
        check(
            r#"{"message": "failed", "request_id": "$context.requestId"}"#,
            r#"{"message": "failed", "request_id": "req-1"}"#,
        );
        check(
            "$stageVariables.stage $context.stage $context.httpMethod $context.resourcePath",
            "prod prod GET /user/{id}",
        );
        check("$input.json('$.a')", r#"{"b":[1,2]}"#);
        check("$input.path('$.s')", "x");
        check("$input.json('$.s')", r#""x""#);
        check("$input.path('$.missing')", "");
        check("$input.body", input);
        check("$input.path('$.s').substring(0, 1)!", "x!");
        check("cost: $5 # not a directive", "cost: $5 # not a directive");
    }

    #[test]
    fn anything_else_is_refused_when_parsed() {
        for template in [
            "#set($x = 1)",
            "#if($input.body)yes#end",
            "$util.escapeJavaScript($input.body)",
            "$input.params('id')",
            "$context.identity.sourceIp",
            "$input.path('$.a[0]')",
            "${context.requestId}",
            "$input.body.length()",
        ] {
            assert!(
                Template::parse(template).is_err(),
                "{template} was accepted"
            );
        }
        assert!(render("$input.path('$.s').substring(2)", r#"{"s":"x"}"#).is_err());
    }

    #[test]
    fn patterns_match_the_whole_message() {
        let prefixed = SelectionPattern::new("404: .*").unwrap();
        assert!(prefixed.matches(r#"404: {"message":"x"}"#));
        assert!(!prefixed.matches(r#"x404: {}"#));
        assert!(!prefixed.matches("404: first line\nsecond line"));
        // The configuration's catch-all: everything but the prefixed statuses.
        let others = SelectionPattern::new(r"(?!(?:400|403|404|409|500): )[\s\S]+").unwrap();
        assert!(others.matches("2026-01-01T00:00:00Z r Task timed out after 1.00 seconds"));
        assert!(
            others.matches("RequestId: r Error: Runtime exited with error: exit status 3\nmore")
        );
        assert!(others.matches("502: looks like a status, is not one of ours"));
        assert!(!others.matches(r#"409: {"message":"stale"}"#));
        assert!(!others.matches(""));
    }
}
