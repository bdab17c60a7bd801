//! The route table: `local.routes` in `terraform/api.tf`, the one place the
//! API's routes are declared (`"METHOD /path" = { function = "NAME" }`, with
//! `api_key = true` where a caller needs an API key). Read here for
//! `cargo xtask new`, which validates routes against it and adds entries to
//! it, and for the tests that hold the smoke suite and the functions to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, ensure};

/// The file, relative to the workspace root.
pub const API_TF: &str = "terraform/api.tf";

/// How deep a route may go: `terraform/api.tf` declares resources up to
/// three path segments (`/a/b/c`).
const MAX_DEPTH: usize = 3;

/// Methods a route may name (API Gateway's, `ANY` included).
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY",
];

/// One route: a method and a resource path with `{param}` segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub method: String,
    pub path: String,
}

impl Route {
    /// `"GET /user/{id}"`, checked: a method API Gateway knows, a path of
    /// one to three segments, each a name or a `{parameter}`.
    pub fn parse(key: &str) -> Result<Route> {
        let (method, path) = key
            .split_once(' ')
            .with_context(|| format!("route `{key}` is not `METHOD /path`"))?;
        ensure!(
            METHODS.contains(&method),
            "route `{key}`: unknown method `{method}` (one of {})",
            METHODS.join(", ")
        );
        let segments = path
            .strip_prefix('/')
            .with_context(|| format!("route `{key}`: the path must start with /"))?;
        ensure!(
            !segments.is_empty(),
            "route `{key}`: the root path is not supported; name a resource (`/items`)"
        );
        let segments: Vec<&str> = segments.split('/').collect();
        ensure!(
            segments.len() <= MAX_DEPTH,
            "route `{key}` is {} segments deep; {API_TF} declares resources up to {MAX_DEPTH}",
            segments.len()
        );
        for segment in &segments {
            let valid = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) => {
                    param.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && param.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                }
                None => {
                    !segment.is_empty()
                        && segment
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
                }
            };
            ensure!(
                valid,
                "route `{key}`: `{segment}` is neither a path segment (letters, digits, `-._~`) \
                 nor a parameter (`{{name}}`)"
            );
        }
        let route = Route {
            method: method.to_owned(),
            path: path.to_owned(),
        };
        let params = route.params();
        if let Some(twice) = params
            .iter()
            .find(|param| params.iter().filter(|other| other == param).count() > 1)
        {
            anyhow::bail!("route `{key}` names the path parameter {{{twice}}} twice");
        }
        Ok(route)
    }

    /// The table's key: `"GET /user/{id}"`.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The names of its path parameters, in order.
    pub fn params(&self) -> Vec<&str> {
        self.path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect()
    }

    /// Whether the method carries a body (the envelope's `body`).
    pub fn takes_body(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH")
    }
}

/// `"text"` without its quotes.
fn unquote(text: &str) -> Option<String> {
    text.trim()
        .strip_prefix('"')
        .and_then(|text| text.strip_suffix('"'))
        .map(str::to_owned)
}

/// The route table of one `api.tf` text.
#[derive(Debug, Clone)]
pub struct Table {
    text: String,
    /// Byte offset of the table's closing `  }` line.
    end: usize,
    /// Route -> the function that serves it.
    pub routes: BTreeMap<Route, String>,
    /// The routes that need an API key (read by the test that holds the
    /// smoke suite to them).
    #[cfg_attr(not(test), allow(dead_code))]
    pub api_key: BTreeSet<Route>,
}

impl Table {
    pub fn read(root: &Path) -> Result<Table> {
        let path = root.join(API_TF);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Table::parse(&text)
            .with_context(|| format!("reading the route table of {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Table> {
        let opening = "\n  routes = {\n";
        let start = text
            .find(opening)
            .context("no `routes = {` table at the top of a locals block")?
            + opening.len();
        let end = start
            + text[start..]
                .find("\n  }\n")
                .context("the routes table does not end with `  }`")?
            + 1;
        let mut routes = BTreeMap::new();
        let mut api_key = BTreeSet::new();
        for line in text[start..end].lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let form = || format!("`{line}` is not `\"METHOD /path\" = {{ function = \"NAME\" }}`");
            let (key, entry) = line.split_once('=').with_context(form)?;
            let route = Route::parse(&unquote(key).with_context(form)?)?;
            let fields = entry
                .trim()
                .strip_prefix('{')
                .and_then(|entry| entry.strip_suffix('}'))
                .with_context(form)?;
            let mut function = None;
            for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                match field.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                    Some(("function", value)) => {
                        function = Some(unquote(value).with_context(form)?)
                    }
                    Some(("api_key", "true")) => {
                        api_key.insert(route.clone());
                    }
                    Some(("api_key", "false")) => {}
                    _ => anyhow::bail!(
                        "`{line}`: `{field}` is neither `function = \"NAME\"` nor `api_key = true|false`"
                    ),
                }
            }
            routes.insert(route, function.with_context(form)?);
        }
        Ok(Table {
            text: text.to_owned(),
            end,
            routes,
            api_key,
        })
    }

    /// Why `route` cannot join the table: it is there already, or it names
    /// a path parameter where a sibling resource has another one (API
    /// Gateway allows one parameter per level: `/user/{id}` and
    /// `/user/{name}` cannot both exist).
    pub fn conflict(&self, route: &Route) -> Option<String> {
        if let Some(function) = self.routes.get(route) {
            return Some(format!(
                "route `{}` exists already (served by {function})",
                route.key()
            ));
        }
        let new: Vec<&str> = route.path.split('/').collect();
        for existing in self.routes.keys() {
            let old: Vec<&str> = existing.path.split('/').collect();
            for (a, b) in new.iter().zip(&old) {
                if a == b {
                    continue;
                }
                if a.starts_with('{') && b.starts_with('{') {
                    return Some(format!(
                        "`{}` puts the parameter {a} where `{}` has {b}: API Gateway allows one \
                         parameter per path level, so name it {b}",
                        route.key(),
                        existing.key()
                    ));
                }
                break;
            }
        }
        None
    }

    /// The text with `added` (route -> function) appended to the table, in
    /// the order given; formatting is left to `terraform fmt`.
    pub fn with(&self, added: &[(Route, String)]) -> String {
        let lines: String = added
            .iter()
            .map(|(route, function)| {
                format!(
                    "    \"{}\" = {{ function = \"{function}\" }}\n",
                    route.key()
                )
            })
            .collect();
        format!(
            "{}{lines}{}",
            &self.text[..self.end],
            &self.text[self.end..]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "locals {\n  # a comment\n  routes = {\n    \"GET /status\"    = { function = \"status\" }\n    \"GET /user/{id}\" = { function = \"users\", api_key = false }\n\n    # more\n    \"POST /user/{id}\" = { function = \"users\", api_key = true }\n  }\n\n  other = {\n    a = 1\n  }\n}\n";

    fn route(key: &str) -> Route {
        Route::parse(key).unwrap()
    }

    #[test]
    fn the_table_is_read_from_api_tf() {
        let table = Table::parse(API).unwrap();
        let keys: Vec<(String, &str)> = table
            .routes
            .iter()
            .map(|(route, function)| (route.key(), function.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("GET /status".to_owned(), "status"),
                ("GET /user/{id}".to_owned(), "users"),
                ("POST /user/{id}".to_owned(), "users"),
            ]
        );
        assert_eq!(
            table.api_key.iter().map(Route::key).collect::<Vec<_>>(),
            ["POST /user/{id}"]
        );
        for bad in [
            "\"GET /x\" = \"x\"",
            "\"GET /x\" = { api_key = true }",
            "\"GET /x\" = { function = x }",
            "\"GET /x\" = { function = \"x\", api_key = yes }",
            "\"GET /x\" = { function = \"x\", memory = 1 }",
        ] {
            let text = API.replace("\"GET /status\"    = { function = \"status\" }", bad);
            assert!(Table::parse(&text).is_err(), "{bad} was accepted");
        }
        // The committed one, too.
        let committed = Table::read(&crate::project_root()).unwrap();
        assert!(committed.routes.contains_key(&route("GET /status")));
        assert!(Table::parse("locals {\n}\n").is_err());
    }

    #[test]
    fn routes_are_validated() {
        let ok = route("GET /files/{id}/parts");
        assert_eq!(ok.params(), ["id"]);
        assert!(!ok.takes_body());
        assert!(route("PUT /a.b/c-d_e/{x_1}").takes_body());
        for bad in [
            "GET",
            "FETCH /x",
            "get /x",
            "GET x",
            "GET /",
            "GET /a/",
            "GET /a//b",
            "GET /a/b/c/d",
            "GET /{1x}",
            "GET /{proxy+}",
            "GET /a b",
            "GET /ü",
            "GET /a/{x}/{x}",
        ] {
            assert!(Route::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn conflicts_are_named() {
        let table = Table::parse(API).unwrap();
        let exists = table.conflict(&route("GET /user/{id}")).unwrap();
        assert!(
            exists.contains("exists already (served by users)"),
            "{exists}"
        );
        let param = table.conflict(&route("DELETE /user/{name}/x")).unwrap();
        assert!(param.contains("so name it {id}"), "{param}");
        assert_eq!(table.conflict(&route("DELETE /user/{id}")), None);
        assert_eq!(table.conflict(&route("GET /users/{name}")), None);
        assert_eq!(table.conflict(&route("GET /status/{x}")), None);
    }

    #[test]
    fn routes_are_appended_to_the_table_only() {
        let table = Table::parse(API).unwrap();
        let text = table.with(&[(route("GET /hello/{name}"), "hello".to_owned())]);
        assert!(
            text.contains(
                "    \"POST /user/{id}\" = { function = \"users\", api_key = true }\n    \"GET /hello/{name}\" = { function = \"hello\" }\n  }\n\n  other"
            ),
            "{text}"
        );
        let again = Table::parse(&text).unwrap();
        assert_eq!(again.routes.len(), 4);
        assert_eq!(again.routes[&route("GET /hello/{name}")], "hello");
    }
}
