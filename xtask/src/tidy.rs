//! The project's own rules, as tests.

use std::path::Path;

use crate::build::Workspace;
use crate::project_root;

fn sh() -> xshell::Shell {
    let sh = xshell::Shell::new().unwrap();
    sh.change_dir(project_root());
    sh
}

/// Every function has sample events, and every sample its expected response.
#[test]
fn every_function_has_sample_events() {
    let workspace = Workspace::read(&sh()).unwrap();
    assert!(!workspace.functions.is_empty());
    for function in &workspace.functions {
        let dir = project_root().join("events").join(&function.name);
        let events: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|_| panic!("function `{}` has no {}", function.name, dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        let samples: Vec<&Path> = events
            .iter()
            .map(|p| p.as_path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && !p.to_string_lossy().ends_with(".expected.json")
            })
            .collect();
        assert!(!samples.is_empty(), "no sample events in {}", dir.display());
        for sample in samples {
            let expected = sample.with_extension("expected.json");
            assert!(
                expected.exists(),
                "{} has no {}",
                sample.display(),
                expected.display()
            );
        }
        for path in &events {
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(
                name.ends_with(".json"),
                "{}: only .json files belong in events/",
                path.display()
            );
            if let Some(stem) = name.strip_suffix(".expected.json") {
                assert!(
                    path.with_file_name(format!("{stem}.json")).exists(),
                    "{} expects a missing sample",
                    path.display()
                );
            }
        }
    }
}

/// Every function crate is a workspace member built by the same profile and
/// its `main` builds the runtime from `api::serve`: one envelope, one error
/// format for every function.
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
