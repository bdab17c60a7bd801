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
