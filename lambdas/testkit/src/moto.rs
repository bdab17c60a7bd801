//! The moto emulator, started once per test binary on a free loopback port
//! (xtask's `serve_moto.py`, with `$MOTO_PYTHON` or `python3`), and SDK
//! clients of it: DynamoDB, S3, and the SDK configuration a function would
//! load there (its endpoint as `AWS_ENDPOINT_URL`).
//!
//! Moto's S3 accepts any signature and ignores a presigned URL's expiry:
//! what a signature binds is shown against s3s-fs ([`crate::s3s_fs`]).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};

/// The moto emulator on loopback, shared by the tests of one binary.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _server: Child,
}

/// Serves moto one request at a time, as the local stack does (the script
/// says why), exiting when its stdin closes: when the test binary exits,
/// however it exits.
const SERVE_MOTO: &str = include_str!("../../../xtask/src/serve_moto.py");

/// The Python that has moto: `$MOTO_PYTHON` (a virtualenv's, say), else `python3`.
pub fn python() -> String {
    std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The emulator of this test binary, started by the first call. Panics
/// (failing the test) if it does not listen within 60 s, with its output.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let port = free_port();
        let log_path = std::env::temp_dir().join(format!("moto-{port}.log"));
        let mut server = Command::new(python())
            .args([
                "-c",
                SERVE_MOTO,
                "127.0.0.1",
                &port.to_string(),
                "--exit-with-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", python()));
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(status) = server.try_wait().unwrap() {
                panic!(
                    "moto exited ({status}) before listening. Is it installed for {}? \
                     The README's test command installs it. Its output:\n{}",
                    python(),
                    log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto did not listen on 127.0.0.1:{port} within 60 s:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _server: server,
        }
    })
}

/// A DynamoDB client configured as the functions' are (`api::sdk`'s HTTPS
/// client), for `endpoint`.
fn dynamodb_at(endpoint: &str, retry: RetryConfig) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .retry_config(retry)
        .http_client(api::sdk::http_client())
        .build();
    Client::from_conf(config)
}

/// A DynamoDB client of this binary's emulator (started if need be).
pub fn dynamodb() -> Client {
    dynamodb_at(&moto().endpoint, RetryConfig::standard())
}

/// A DynamoDB client of a loopback port nothing listens on, without
/// retries: every call fails at once, as a store that cannot reach
/// DynamoDB does.
pub fn unreachable_dynamodb() -> Client {
    dynamodb_at(
        &format!("http://127.0.0.1:{}", free_port()),
        RetryConfig::disabled(),
    )
}

/// The SDK configuration a function loads with `endpoint` as
/// `AWS_ENDPOINT_URL` (`api::sdk`'s HTTPS client, fake credentials,
/// us-east-1), as `api::sdk::config` would: what a function builds its
/// clients from.
pub fn sdk_config_at(endpoint: &str, credentials: Credentials, retry: RetryConfig) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .retry_config(retry)
        .http_client(api::sdk::http_client())
        .build()
}

/// The SDK configuration of a function on this binary's emulator.
pub fn sdk_config() -> SdkConfig {
    sdk_config_at(
        &moto().endpoint,
        test_credentials(),
        RetryConfig::standard(),
    )
}

/// The SDK configuration of a function whose endpoint is a loopback port
/// nothing listens on, without retries: every call fails at once.
pub fn unreachable_sdk_config() -> SdkConfig {
    sdk_config_at(
        &format!("http://127.0.0.1:{}", free_port()),
        test_credentials(),
        RetryConfig::disabled(),
    )
}

fn test_credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "tests")
}

/// An S3 client of `config`'s endpoint, addressing buckets by path (an
/// emulator on loopback has no per-bucket host names): for a test's own
/// set-up and look-ups, not the function's (its client is its own).
pub fn s3_of(config: &SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// An S3 client of this binary's emulator (started if need be).
pub fn s3() -> aws_sdk_s3::Client {
    s3_of(&sdk_config())
}
