//! That a function's cold start makes no SDK client ([`api::sdk::Lazy`]).
//!
//! Making an SDK client builds its service's endpoint partitions, and the
//! SDK reads them from the file `SMITHY_CLIENT_SDK_CUSTOM_PARTITION` names
//! when that variable is set, panicking when the file is missing. With it
//! naming no file, a function whose init made a client dies in its init;
//! one that defers them reaches its first Runtime API call, which fails
//! here (nothing listens), and exits saying so.

use std::process::Command;

/// Starts `bootstrap` as Lambda would (its variables, and `env`), with the
/// Runtime API on a port where nothing listens; asserts that it got as far
/// as calling it, with no SDK client made.
pub fn assert_init_makes_no_sdk_client(bootstrap: &str, env: &[(&str, &str)]) {
    let output = Command::new(bootstrap)
        .env_clear()
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9"),
            ("AWS_LAMBDA_FUNCTION_NAME", "init-test"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "init-test"),
            ("AWS_SECRET_ACCESS_KEY", "init-test"),
            (
                "SMITHY_CLIENT_SDK_CUSTOM_PARTITION",
                "/nonexistent/partitions.json",
            ),
        ])
        .envs(env.iter().copied())
        .output()
        .expect("the bootstrap runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("custom partition") && !stderr.contains("panicked"),
        "{bootstrap} made an SDK client at init:\n{stderr}"
    );
    assert!(
        stderr.contains("127.0.0.1:9"),
        "{bootstrap} did not reach its first Runtime API call ({}):\n{stderr}",
        output.status
    );
}
