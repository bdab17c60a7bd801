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

/// The arguments of `terraform/api.tf`'s API resources (the API, its
/// resources, methods, integrations and responses: what a deployment
/// snapshots) that do not come from the locals `local.api_revision` hashes.
/// Each must be `each.value.*` of a hashed map, `local.api.*`, or one of the
/// references that tie the resources together; anything else would change
/// what a deployment serves without changing the revision, so staging would
/// not redeploy and `publish` would snapshot it for prod unverified.
fn unhashed_api_arguments(api_tf: &str) -> Vec<String> {
    const SNAPSHOTTED: [&str; 6] = [
        "aws_api_gateway_rest_api",
        "aws_api_gateway_resource",
        "aws_api_gateway_method",
        "aws_api_gateway_integration",
        "aws_api_gateway_method_response",
        "aws_api_gateway_integration_response",
    ];
    const URI: &str = r#"format(each.value.uri, trimsuffix(aws_lambda_function.this[each.value.function].invoke_arn, "/invocations"))"#;
    let mut found = Vec::new();
    let mut resource: Option<String> = None;
    let mut depth = 0usize;
    // The depth of a lifecycle block being skipped (its conditions are checks).
    let mut skipping: Option<usize> = None;
    for (number, line) in api_tf.lines().enumerate() {
        let line = line.trim();
        if depth == 0 {
            let kind = line
                .strip_prefix("resource \"")
                .and_then(|rest| rest.split('"').next());
            resource = kind
                .filter(|kind| SNAPSHOTTED.contains(kind))
                .map(str::to_owned);
        }
        let opens = line.matches('{').count();
        let closes = line.matches('}').count();
        if let Some(kind) = &resource
            && depth >= 1
            && skipping.is_none()
        {
            if line.starts_with("lifecycle") {
                skipping = Some(depth);
            } else if let Some((key, value)) = line.split_once(" = ").or(line.split_once("= ")) {
                let (key, value) = (key.trim(), value.trim());
                let tied = matches!(
                    key,
                    "rest_api_id" | "parent_id" | "resource_id" | "http_method" | "status_code"
                ) && (value.starts_with("aws_api_gateway_")
                    || value == "local.resource_ids[each.value.path]");
                let allowed = value.starts_with("each.value.")
                    || value.starts_with("local.api.")
                    || (key == "for_each" && value.starts_with("local."))
                    || (key == "depends_on")
                    || (key == "uri" && value == URI)
                    || tied;
                if !allowed {
                    found.push(format!("api.tf:{}: {kind}: {line}", number + 1));
                }
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
    let api_tf = std::fs::read_to_string(project_root().join("terraform/api.tf")).unwrap();
    assert_eq!(unhashed_api_arguments(&api_tf), Vec::<String>::new());
    // The check finds an argument set in place, in any of those resources.
    let edited = api_tf.replacen(
        "  passthrough_behavior    = each.value.passthrough_behavior\n",
        "  passthrough_behavior    = \"WHEN_NO_MATCH\"\n",
        1,
    );
    assert_ne!(
        edited, api_tf,
        "api.tf's integration changed: update the test"
    );
    let found = unhashed_api_arguments(&edited);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("aws_api_gateway_integration: passthrough_behavior"));
    let edited = api_tf.replacen(
        "  api_key_required = each.value.api_key_required\n",
        "  api_key_required = each.value.api_key_required\n  authorizer_id    = \"abc\"\n",
        1,
    );
    assert_eq!(unhashed_api_arguments(&edited).len(), 1);
}
