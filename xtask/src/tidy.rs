//! The project's own rules, as tests.

use crate::build::Workspace;
use crate::project_root;

fn sh() -> xshell::Shell {
    let sh = xshell::Shell::new().unwrap();
    sh.change_dir(project_root());
    sh
}

/// Every function has sample events, each with its expected response (the
/// loader the handler tests use checks the files).
#[test]
fn every_function_has_sample_events() {
    let workspace = Workspace::read(&sh()).unwrap();
    assert!(!workspace.functions.is_empty());
    for function in &workspace.functions {
        // Panics on a function without samples or a sample without its expectation.
        api::testing::samples(&function.name);
    }
}

/// Every function's `main` runs through `api::serve` and sets up the JSON
/// logs: one envelope, one error format, one log format for every function.
#[test]
fn every_function_serves_through_the_shared_runtime_glue() {
    for function in Workspace::read(&sh()).unwrap().functions {
        let main = project_root()
            .join("lambdas")
            .join(&function.name)
            .join("src/main.rs");
        let text = std::fs::read_to_string(&main).unwrap();
        assert!(
            text.contains("api::serve("),
            "{} does not call api::serve",
            main.display()
        );
        assert!(
            text.contains("api::init_logging()"),
            "{} does not set up JSON logs",
            main.display()
        );
    }
}

/// Every function serves a route of the route table (`terraform/api.tf`),
/// and every route is served by a function of the workspace.
#[test]
fn every_function_has_a_route_and_every_route_a_function() {
    let functions: Vec<String> = Workspace::read(&sh())
        .unwrap()
        .functions
        .into_iter()
        .map(|function| function.name)
        .collect();
    let table = crate::routes::Table::read(&project_root()).unwrap();
    for function in &functions {
        assert!(
            table.routes.values().any(|served_by| served_by == function),
            "`{function}` serves no route of {}",
            crate::routes::API_TF
        );
    }
    for (route, function) in &table.routes {
        assert!(
            functions.contains(function),
            "`{}` is served by `{function}`, which is not a crate under lambdas/",
            route.key()
        );
    }
}

/// The API Gateway resources whose arguments a deployment snapshots, and
/// those `local.api_revision` does not cover at all (none may exist).
const SNAPSHOTTED: [&str; 6] = [
    "aws_api_gateway_rest_api",
    "aws_api_gateway_resource",
    "aws_api_gateway_method",
    "aws_api_gateway_integration",
    "aws_api_gateway_method_response",
    "aws_api_gateway_integration_response",
];
const UNCOVERED: [&str; 7] = [
    "aws_api_gateway_gateway_response",
    "aws_api_gateway_rest_api_policy",
    "aws_api_gateway_authorizer",
    "aws_api_gateway_model",
    "aws_api_gateway_request_validator",
    "aws_api_gateway_documentation_part",
    "aws_api_gateway_documentation_version",
];

/// The arguments of the API resources in the `.tf` file `name` (what a
/// deployment snapshots) that do not come from the locals
/// `local.api_revision` hashes: each must be exactly `each.value.FIELD` of
/// a hashed map, `local.api.FIELD`, or one of the references that tie the
/// resources together; such a resource lives in `api.tf` only, on lines of
/// its own, and none of the kinds the revision does not cover exists.
/// Anything else would change what a deployment serves without changing
/// the revision, so staging would not redeploy and `publish` would snapshot
/// it for prod unverified.
fn unhashed_api_arguments(name: &str, text: &str) -> Vec<String> {
    const URI: &str = r#"format(each.value.uri, trimsuffix(aws_lambda_function.this[each.value.function].invoke_arn, "/invocations"))"#;
    const FOR_EACH: [&str; 6] = [
        "local.paths_at[1]",
        "local.paths_at[2]",
        "local.paths_at[3]",
        "local.methods",
        "local.integrations",
        "local.route_responses",
    ];
    let field = |value: &str, prefix: &str| {
        value.strip_prefix(prefix).is_some_and(|field| {
            !field.is_empty() && field.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    };
    let mut found = Vec::new();
    let mut resource: Option<String> = None;
    let mut depth = 0usize;
    // The depth of a lifecycle block being skipped (its conditions are checks).
    let mut skipping: Option<usize> = None;
    for (number, line) in text.lines().enumerate() {
        let line = crate::terraform::without_comment(line).trim();
        let at = || format!("{name}:{}", number + 1);
        if depth == 0 {
            let kind = line
                .strip_prefix("resource")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('"'))
                .and_then(|rest| rest.split('"').next());
            resource = None;
            if let Some(kind) = kind {
                if UNCOVERED.contains(&kind) {
                    found.push(format!(
                        "{}: {kind}: not in the API revision (add its arguments to \
                         local.api_revision and to this check first)",
                        at()
                    ));
                } else if SNAPSHOTTED.contains(&kind) {
                    if name != "api.tf" {
                        found.push(format!("{}: {kind}: API resources live in api.tf", at()));
                    } else if !line.ends_with('{') {
                        found.push(format!(
                            "{}: {kind}: put its arguments on lines of their own",
                            at()
                        ));
                    }
                    resource = Some(kind.to_owned());
                }
            }
        }
        let opens = line.matches('{').count();
        let closes = line.matches('}').count();
        if let Some(kind) = &resource
            && depth >= 1
            && skipping.is_none()
        {
            if line.starts_with("lifecycle") {
                skipping = Some(depth);
            } else if let Some((key, value)) = line.split_once('=') {
                let (key, value) = (key.trim(), value.trim());
                let tied = match key {
                    "rest_api_id" => value == "aws_api_gateway_rest_api.this.id",
                    "parent_id" => {
                        value == "aws_api_gateway_rest_api.this.root_resource_id"
                            || (value.starts_with("aws_api_gateway_resource.depth")
                                && value.ends_with("[each.value.parent].id"))
                    }
                    "resource_id" => {
                        value == "local.resource_ids[each.value.path]"
                            || value == "aws_api_gateway_method.this[each.key].resource_id"
                            || value == "aws_api_gateway_method.this[each.value.route].resource_id"
                            || value
                                == "aws_api_gateway_integration.this[each.value.route].resource_id"
                    }
                    "http_method" => {
                        value == "aws_api_gateway_method.this[each.key].http_method"
                            || value == "aws_api_gateway_method.this[each.value.route].http_method"
                            || value
                                == "aws_api_gateway_integration.this[each.value.route].http_method"
                    }
                    "status_code" => {
                        value == "aws_api_gateway_method_response.this[each.key].status_code"
                    }
                    "for_each" => FOR_EACH.contains(&value),
                    "uri" => value == URI,
                    _ => false,
                };
                let allowed = tied || field(value, "each.value.") || field(value, "local.api.");
                if !allowed {
                    found.push(format!("{}: {kind}: {line}", at()));
                }
            } else if depth == 1 && opens > 0 && !line.starts_with("endpoint_configuration") {
                found.push(format!(
                    "{}: {kind}: block `{line}` is not in the revision",
                    at()
                ));
            }
        }
        depth = (depth + opens).saturating_sub(closes);
        if skipping.is_some_and(|at| depth <= at) {
            skipping = None;
        }
    }
    found
}

/// Every argument a deployment snapshots is in the API revision.
#[test]
fn every_snapshotted_api_argument_is_in_the_revision() {
    let dir = project_root().join("terraform");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "tf") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            found.extend(unhashed_api_arguments(
                &name,
                &std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    assert_eq!(found, Vec::<String>::new());

    // The check finds an argument set any other way, in any of them.
    let api_tf = std::fs::read_to_string(dir.join("api.tf")).unwrap();
    let check = |edited: String| {
        assert_ne!(edited, api_tf, "api.tf changed: update the test");
        unhashed_api_arguments("api.tf", &edited)
    };
    let passthrough = "  passthrough_behavior    = each.value.passthrough_behavior\n";
    let bad_edits = [
        api_tf.replacen(passthrough, "  passthrough_behavior    = \"WHEN_NO_MATCH\"\n", 1),
        api_tf.replacen(
            "  timeout_milliseconds    = each.value.timeout_milliseconds\n",
            "  timeout_milliseconds    = each.value.timeout_milliseconds - 20000\n",
            1,
        ),
        api_tf.replacen(
            "  api_key_required = each.value.api_key_required\n",
            "  api_key_required = each.value.api_key_required\n  authorizer_id    = \"abc\"\n",
            1,
        ),
        api_tf.replacen(
            "  for_each = local.integrations\n",
            "  for_each = local.unhashed\n",
            1,
        ),
        api_tf.replacen(
            passthrough,
            "  # }\n  passthrough_behavior    = \"WHEN_NO_MATCH\" # }\n",
            1,
        ),
        api_tf.replacen(
            passthrough,
            "  passthrough_behavior    = each.value.passthrough_behavior\n  dynamic \"tls_config\" {\n  }\n",
            1,
        ),
        api_tf.clone()
            + "\nresource \"aws_api_gateway_method\" \"x\" { authorization = \"AWS_IAM\" }\n",
        api_tf.clone() + "\nresource \"aws_api_gateway_gateway_response\" \"x\" {\n}\n",
    ];
    for edited in bad_edits {
        let found = check(edited);
        assert!(!found.is_empty(), "not found");
    }
    // An API resource in another file.
    let elsewhere = unhashed_api_arguments(
        "extra.tf",
        "resource \"aws_api_gateway_method\" \"x\" {\n  authorization = each.value.authorization\n}\n",
    );
    assert_eq!(elsewhere.len(), 1, "{elsewhere:?}");
}
