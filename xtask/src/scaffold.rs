//! `cargo xtask new NAME --route "METHOD /path"...`: a new function, made
//! the way the others are: a crate under `lambdas/` serving through
//! `api::serve` with a typed handler and its unit tests, sample events with
//! their expectations (`events/NAME/`), its routes in the route table of
//! `terraform/api.tf` and smoke cases in `events/smoke.json`. It builds,
//! applies and passes `verify` as it is.
//!
//! Everything is checked before anything is written: an existing or invalid
//! name, an invalid route, or one that exists (or clashes with a sibling's
//! path parameter) changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use xshell::{Shell, cmd};

use crate::routes::{API_TF, Route, Table};

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The function's name: a crate `lambdas/NAME`, a Lambda function
    /// `<prefix>-NAME`; lowercase letters, digits and `-`.
    name: String,
    /// A route it serves, as the route table spells it: `--route "GET /hello/{name}"`. Repeatable.
    #[arg(long = "route", value_name = "METHOD /PATH", required = true)]
    routes: Vec<String>,
    /// Show what would be written, and write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// One file to write: where (relative to the root) and what.
struct File {
    path: PathBuf,
    text: String,
}

/// `cargo xtask new`.
pub fn run(sh: &Shell, args: NewArgs) -> Result<()> {
    let root = sh.current_dir();
    let name = args.name.as_str();
    check_name(&root, name)?;
    let table = Table::read(&root)?;
    let routes = check_routes(&table, &args.routes)?;

    let mut files = function_files(name, &routes);
    let added: Vec<(Route, String)> = routes
        .iter()
        .map(|r| (r.clone(), name.to_owned()))
        .collect();
    files.push(File {
        path: API_TF.into(),
        text: terraform_fmt(sh, &table.with(&added))?,
    });
    let smoke_path = root.join(crate::release::smoke::CASES_FILE);
    let smoke = std::fs::read_to_string(&smoke_path)
        .with_context(|| format!("reading {}", smoke_path.display()))?;
    let smoke = with_smoke_cases(&smoke, &smoke_cases(name, &routes))?;
    crate::release::smoke::parse(&smoke, "check")
        .context("the smoke suite with the new cases does not parse (a bug in `new`)")?;
    files.push(File {
        path: crate::release::smoke::CASES_FILE.into(),
        text: smoke,
    });

    let keys: Vec<String> = routes.iter().map(Route::key).collect();
    if args.dry_run {
        println!("would write (dry run; nothing was changed):");
        for file in &files {
            println!("  {}", file.path.display());
        }
        return Ok(());
    }
    write_all(sh, &root, name, &files)?;
    println!(
        "new function `{name}` serving {}: lambdas/{name}, events/{name}/, {API_TF}, {}",
        keys.join(", "),
        crate::release::smoke::CASES_FILE
    );
    println!(
        "next: `cargo xtask build {name} && cargo xtask apply && cargo xtask verify` (a running \
         `cargo xtask dev --watch` picks it up by itself)"
    );
    Ok(())
}

/// Writes `files` and adds the crate to Cargo.lock; on any failure, puts
/// back what was there, so a failed `new` leaves nothing behind.
fn write_all(sh: &Shell, root: &Path, name: &str, files: &[File]) -> Result<()> {
    let lock = root.join("Cargo.lock");
    let edited: Vec<(PathBuf, Option<Vec<u8>>)> = files
        .iter()
        .map(|file| root.join(&file.path))
        .chain([lock])
        .map(|path| {
            let before = std::fs::read(&path).ok();
            (path, before)
        })
        .collect();
    let written = (|| -> Result<()> {
        for file in files {
            let path = root.join(&file.path);
            std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
            std::fs::write(&path, &file.text)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", file.path.display());
        }
        // Formatted as `cargo fmt --check` wants it.
        let main = root.join(format!("lambdas/{name}/src/main.rs"));
        cmd!(sh, "rustfmt --edition 2024 {main}")
            .quiet()
            .run()
            .context("rustfmt failed on the new crate (above)")?;
        // The new member in Cargo.lock (its dependencies are there already).
        let cargo = crate::cargo();
        cmd!(sh, "{cargo} update --workspace --offline --quiet")
            .quiet()
            .run()
            .context("adding the crate to Cargo.lock failed (above)")?;
        Ok(())
    })();
    if let Err(err) = written {
        for (path, before) in &edited {
            let _ = match before {
                Some(bytes) => std::fs::write(path, bytes),
                None => std::fs::remove_file(path),
            };
        }
        for dir in [format!("lambdas/{name}"), format!("events/{name}")] {
            let _ = std::fs::remove_dir_all(root.join(dir));
        }
        return Err(err.context("nothing was changed"));
    }
    Ok(())
}

/// A name cargo, Lambda and Terraform all take, that nothing has yet.
fn check_name(root: &Path, name: &str) -> Result<()> {
    let valid = name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ensure!(
        valid,
        "invalid function name `{name}`: 1 to 32 lowercase letters, digits and single `-`s, \
         starting with a letter (it names a crate and the Lambda function `<prefix>-{name}`)"
    );
    for dir in [format!("lambdas/{name}"), format!("events/{name}")] {
        ensure!(
            !root.join(&dir).exists(),
            "`{name}` exists already ({dir}): choose another name"
        );
    }
    // Every package of the workspace and its dependencies: `--package NAME`
    // must stay unambiguous.
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let taken = lock
        .lines()
        .any(|line| line.trim() == format!("name = \"{name}\""));
    ensure!(
        !taken,
        "a package named `{name}` exists already (in the workspace or its dependencies, see \
         Cargo.lock): choose another name"
    );
    ensure!(
        !["api", "xtask", "test", "build", "std", "core", "alloc"].contains(&name),
        "`{name}` is reserved: choose another name"
    );
    Ok(())
}

/// The routes, parsed and checked against the table and each other.
fn check_routes(table: &Table, keys: &[String]) -> Result<Vec<Route>> {
    let mut table = table.clone();
    let mut routes = Vec::new();
    for key in keys {
        let route = Route::parse(key)?;
        // What the scaffold's handler and smoke cases are made for: ANY
        // reaches the handler as the request's own method, and HEAD and
        // OPTIONS answers have no JSON body to check.
        ensure!(
            ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&route.method.as_str()),
            "`new` makes GET, POST, PUT, PATCH and DELETE routes; add `{key}` to {API_TF} by \
             hand, with its handling and smoke case"
        );
        if let Some(conflict) = table.conflict(&route) {
            bail!("{conflict}");
        }
        table.routes.insert(route.clone(), String::new());
        routes.push(route);
    }
    Ok(routes)
}

/// `text` as `terraform fmt` writes it.
fn terraform_fmt(sh: &Shell, text: &str) -> Result<String> {
    crate::terraform::require(sh)?;
    cmd!(sh, "terraform fmt -no-color -")
        .stdin(text)
        .quiet()
        .ignore_stderr()
        .read()
        .map(|formatted| formatted + "\n")
        .context("terraform fmt refused the new route table (above)")
}

/// A route's name in files and cases: `get-hello-name` for `GET /hello/{name}`.
fn slug(route: &Route) -> String {
    let mut slug = route.method.to_ascii_lowercase();
    for segment in route.path.split('/').filter(|s| !s.is_empty()) {
        slug.push('-');
        slug.extend(
            segment
                .chars()
                .filter(|c| !"{}".contains(*c))
                .map(|c| match c {
                    '.' | '_' | '~' => '-',
                    c => c.to_ascii_lowercase(),
                }),
        );
    }
    slug
}

/// The path a request for `route` uses, each parameter `value`.
fn concrete_path(route: &Route, value: &str) -> String {
    route
        .path
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                value
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The crate and its sample events.
fn function_files(name: &str, routes: &[Route]) -> Vec<File> {
    let keys: Vec<String> = routes.iter().map(Route::key).collect();
    let mut files = vec![
        File {
            path: format!("lambdas/{name}/Cargo.toml").into(),
            text: cargo_toml(name, &keys),
        },
        File {
            path: format!("lambdas/{name}/src/main.rs").into(),
            text: main_rs(name, routes),
        },
    ];
    let sample = |slug: &str, envelope: Value, expected: Value| {
        [
            File {
                path: format!("events/{name}/{slug}.json").into(),
                text: serde_json::to_string_pretty(&envelope).expect("JSON") + "\n",
            },
            File {
                path: format!("events/{name}/{slug}.expected.json").into(),
                text: serde_json::to_string_pretty(&expected).expect("JSON") + "\n",
            },
        ]
    };
    let envelope =
        |method: &str, resource: &str, path: &Value, body: &str, stage: &str, id: &str| {
            json!({
                "method": method,
                "resource": resource,
                "path": path,
                "query": {},
                "body": body,
                "stage": stage,
                "request_id": format!("sample-{name}-{id}"),
            })
        };
    for route in routes {
        let slug = slug(route);
        let path: BTreeMap<&str, &str> =
            route.params().into_iter().map(|p| (p, "example")).collect();
        let path = json!(path);
        let body = if route.takes_body() {
            r#"{"note": "hi"}"#
        } else {
            ""
        };
        let mut answer =
            json!({ "function": name, "route": route.key(), "stage": "staging", "path": path });
        if route.takes_body() {
            answer["body"] = json!({"note": "hi"});
        }
        files.extend(sample(
            &slug,
            envelope(&route.method, &route.path, &path, body, "staging", &slug),
            json!({ "status": 200, "body": answer }),
        ));
        if route.takes_body() {
            let bad = format!("{slug}-invalid-json");
            files.extend(sample(
                &bad,
                envelope(
                    &route.method,
                    &route.path,
                    &path,
                    "{\"note\": ",
                    "staging",
                    &bad,
                ),
                json!({ "status": 400, "body": { "request_id": format!("sample-{name}-{bad}") } }),
            ));
        }
    }
    let first = &routes[0];
    let first_path = json!(
        first
            .params()
            .into_iter()
            .map(|p| (p, "example"))
            .collect::<BTreeMap<_, _>>()
    );
    files.extend(sample(
        "unknown-route",
        envelope("DELETE", "/nowhere", &json!({}), "", "staging", "unknown-route"),
        json!({ "status": 404, "body": { "message": format!("no route `DELETE /nowhere` in {name}") } }),
    ));
    files.extend(sample(
        "unknown-stage",
        envelope(&first.method, &first.path, &first_path, "", "qa", "unknown-stage"),
        json!({ "status": 400, "body": { "message": "unknown stage `qa`: expected staging or prod" } }),
    ));
    files
}

fn cargo_toml(name: &str, keys: &[String]) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
description = "{}."
edition.workspace = true
rust-version.workspace = true
license.workspace = true
publish.workspace = true

[dependencies]
api.workspace = true
lambda_runtime.workspace = true
tokio.workspace = true
serde.workspace = true
serde_json.workspace = true
"#,
        keys.join(", ")
    )
}

fn main_rs(name: &str, routes: &[Route]) -> String {
    let keys: Vec<String> = routes.iter().map(Route::key).collect();
    let arms: String = routes
        .iter()
        .map(|route| {
            let body = if route.takes_body() {
                "Some(json_object(&envelope.body)?)"
            } else {
                "None"
            };
            format!("        \"{}\" => {body},\n", route.key())
        })
        .collect();
    let first = &routes[0];
    let params: String = first
        .params()
        .iter()
        .map(|param| format!("\"{param}\": \"example\", "))
        .collect();
    let test_body = if first.takes_body() {
        r#"{\"a\": 1}"#
    } else {
        ""
    };
    let expected_body = if first.takes_body() {
        r#"
        assert_eq!(body["body"], json!({"a": 1}));"#
    } else {
        ""
    };
    format!(
        r##"//! `{name}`: {routes}.
//!
//! Made by `cargo xtask new`: every route answers what it received (its
//! route, stage, path parameters and JSON body), so it builds, deploys and
//! passes the smoke suite as it is. Replace the answers with yours, and the
//! samples in `events/{name}/` and the cases in `events/smoke.json` with them.

use std::collections::BTreeMap;

use api::{{ApiError, Request, Stage}};
use serde::Serialize;
use serde_json::Value;

/// This function's name in the answers.
const FUNCTION: &str = "{name}";

/// What a route answers.
#[derive(Debug, Serialize)]
struct Answer {{
    function: &'static str,
    /// The route as `terraform/api.tf` spells it: `"GET /items/{{id}}"`.
    route: String,
    stage: Stage,
    /// The path parameters the route declares.
    path: BTreeMap<String, String>,
    /// The request's JSON body, on routes that take one.
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Value>,
}}

async fn handle(request: Request) -> Result<Value, ApiError> {{
    let envelope = request.envelope;
    let stage = envelope.stage()?;
    let route = envelope.route();
    let body = match route.as_str() {{
{arms}        other => return Err(ApiError::not_found(format!("no route `{{other}}` in {{FUNCTION}}"))),
    }};
    let answer = Answer {{
        function: FUNCTION,
        route,
        stage,
        path: envelope.path,
        body,
    }};
    Ok(serde_json::to_value(answer).expect("an Answer always serializes"))
}}

{json_object}
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {{
    api::init_logging();
    api::serve(handle).await
}}

#[cfg(test)]
mod tests {{
    use super::*;
    use lambda_runtime::{{Context, LambdaEvent}};
    use serde_json::json;

    async fn call(event: Value) -> (u16, Value) {{
        api::testing::response(api::invoke(&handle, LambdaEvent::new(event, Context::default())).await)
    }}

    #[tokio::test]
    async fn every_sample_event() {{
        for sample in api::testing::samples(FUNCTION) {{
            sample.check(call(sample.event.clone()).await);
        }}
    }}

    #[tokio::test]
    async fn a_route_answers_what_it_received() {{
        let event = json!({{
            "method": "{method}", "resource": "{resource}", "path": {{ {params}}},
            "body": "{test_body}", "stage": "prod", "request_id": "r1"
        }});
        let (status, body) = call(event).await;
        assert_eq!(status, 200, "{{body}}");
        assert_eq!(body["route"], "{key}");
        assert_eq!(body["stage"], "prod");{expected_body}
    }}
}}
"##,
        routes = keys.join(", "),
        json_object = if routes.iter().any(Route::takes_body) {
            JSON_OBJECT
        } else {
            ""
        },
        method = first.method,
        resource = first.path,
        key = first.key(),
    )
}

/// A smoke case, in the order the suite writes its fields.
struct SmokeCase {
    name: String,
    request: String,
    body: Option<Value>,
    status: u16,
    expect_body: Option<Value>,
}

impl SmokeCase {
    /// The case as the suite writes them: a field per line, `expect` on one.
    fn text(&self) -> String {
        let mut fields = vec![
            format!("\"name\": {}", json!(self.name)),
            format!("\"request\": {}", json!(self.request)),
        ];
        if let Some(body) = &self.body {
            fields.push(format!("\"body\": {}", inline(body)));
        }
        let expect = match &self.expect_body {
            Some(body) => format!(
                "{{ \"status\": {}, \"body\": {} }}",
                self.status,
                inline(body)
            ),
            None => format!("{{ \"status\": {} }}", self.status),
        };
        fields.push(format!("\"expect\": {expect}"));
        let fields: Vec<String> = fields
            .iter()
            .map(|field| format!("      {field}"))
            .collect();
        format!("    {{\n{}\n    }}", fields.join(",\n"))
    }
}

/// The parser of the routes that take a body.
const JSON_OBJECT: &str = r#"/// The request body as a JSON object; anything else is a 400.
fn json_object(body: &str) -> Result<Value, ApiError> {
    match serde_json::from_str(body) {
        Ok(object @ Value::Object(_)) => Ok(object),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(err) => Err(ApiError::bad_request(format!("the body is not JSON: {err}"))),
    }
}
"#;

/// One smoke case per route (and an invalid body where there is one).
fn smoke_cases(name: &str, routes: &[Route]) -> Vec<SmokeCase> {
    let mut cases = Vec::new();
    for route in routes {
        let path = concrete_path(route, "smoke{run}");
        let params: BTreeMap<&str, &str> = route
            .params()
            .into_iter()
            .map(|p| (p, "smoke{run}"))
            .collect();
        let request = format!("{} {path}", route.method);
        cases.push(SmokeCase {
            name: format!("{name}: {}", route.key()),
            request: request.clone(),
            body: route.takes_body().then(|| json!({})),
            status: 200,
            expect_body: Some(json!({
                "function": name, "route": route.key(), "stage": "staging", "path": params,
            })),
        });
        if route.takes_body() {
            cases.push(SmokeCase {
                name: format!("{name}: {} with invalid JSON", route.key()),
                request,
                body: Some(json!("{\"x\": ")),
                status: 400,
                expect_body: None,
            });
        }
    }
    cases
}

/// The suite's text with `cases` appended to its `cases` list.
fn with_smoke_cases(text: &str, cases: &[SmokeCase]) -> Result<String> {
    let end = text
        .rfind("\n  ]\n}")
        .context("events/smoke.json does not end its `cases` list with `  ]` and `}`")?;
    let rendered: String = cases
        .iter()
        .map(|case| format!(",\n{}", case.text()))
        .collect();
    Ok(format!("{}{rendered}{}", &text[..end], &text[end..]))
}

/// JSON on one line, with spaces inside braces and after colons.
fn inline(value: &Value) -> String {
    match value {
        Value::Object(object) if object.is_empty() => "{}".to_owned(),
        Value::Object(object) => {
            let fields: Vec<String> = object
                .iter()
                .map(|(key, value)| format!("{}: {}", json!(key), inline(value)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(key: &str) -> Route {
        Route::parse(key).unwrap()
    }

    #[test]
    fn slugs_and_paths() {
        assert_eq!(slug(&route("GET /hello/{name}")), "get-hello-name");
        assert_eq!(slug(&route("PUT /a.b/c_d")), "put-a-b-c-d");
        assert_eq!(concrete_path(&route("GET /a/{x}/b"), "v"), "/a/v/b");
    }

    #[test]
    fn smoke_cases_join_the_suite_in_its_style() {
        let suite = "{\n  \"cases\": [\n    {\n      \"name\": \"a\", \"request\": \"GET /a\", \"expect\": { \"status\": 200 }\n    }\n  ]\n}\n";
        let cases = smoke_cases("hello", &[route("POST /hello/{name}")]);
        let text = with_smoke_cases(suite, &cases).unwrap();
        assert!(
            text.contains(
                "    {\n      \"name\": \"hello: POST /hello/{name}\",\n      \"request\": \"POST /hello/smoke{run}\",\n      \"body\": {},\n"
            ),
            "{text}"
        );
        let parsed = crate::release::smoke::parse(&text, "r1").unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[1].request, "POST /hello/smoker1");
        assert_eq!(parsed[2].expect.status, 400);
        // The committed suite has the ending `new` appends before.
        let committed =
            std::fs::read_to_string(crate::project_root().join(crate::release::smoke::CASES_FILE))
                .unwrap();
        assert!(with_smoke_cases(&committed, &cases).is_ok());
    }

    #[test]
    fn routes_are_checked_against_the_table_and_each_other() {
        let table = Table::read(&crate::project_root()).unwrap();
        let ok = check_routes(&table, &["GET /hello/{name}".into(), "POST /hello".into()]).unwrap();
        assert_eq!(ok.len(), 2);
        let twice = check_routes(&table, &["GET /a".into(), "GET /a".into()]).unwrap_err();
        assert!(twice.to_string().contains("exists already"), "{twice}");
        let clash = check_routes(&table, &["GET /b/{x}".into(), "POST /b/{y}".into()]).unwrap_err();
        assert!(clash.to_string().contains("so name it {x}"), "{clash}");
        assert!(check_routes(&table, &["GET /status".into()]).is_err());
        for method in ["ANY", "HEAD", "OPTIONS"] {
            let refused = check_routes(&table, &[format!("{method} /a")]).unwrap_err();
            assert!(refused.to_string().contains("by hand"), "{refused}");
        }
    }

    #[test]
    fn samples_cover_every_route_an_unknown_route_and_stage() {
        let files = function_files("hello", &[route("GET /hello/{name}"), route("POST /hello")]);
        let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
        for expected in [
            "lambdas/hello/Cargo.toml",
            "lambdas/hello/src/main.rs",
            "events/hello/get-hello-name.json",
            "events/hello/get-hello-name.expected.json",
            "events/hello/post-hello.json",
            "events/hello/post-hello-invalid-json.expected.json",
            "events/hello/unknown-route.json",
            "events/hello/unknown-stage.expected.json",
        ] {
            assert!(
                names.iter().any(|name| name == expected),
                "{expected} in {names:?}"
            );
        }
        let main = &files[1].text;
        assert!(main.contains("\"GET /hello/{name}\" => None,"), "{main}");
        assert!(
            main.contains("\"POST /hello\" => Some(json_object(&envelope.body)?),"),
            "{main}"
        );
        assert!(main.contains("api::serve(handle)"));
    }
}
