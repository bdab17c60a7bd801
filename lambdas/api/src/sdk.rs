//! The one way a function builds its AWS SDK clients (feature `sdk`): the
//! SDK's configuration with an HTTPS client (rustls on ring) that trusts
//! Mozilla's CA roots, compiled in, and builds its TLS configuration once,
//! on first use.
//!
//! The SDK's default HTTPS client builds its TLS configuration when an SDK
//! client is made, at init, on every cold start: it reads the system's CA
//! bundle and then every file of the certificate directory (about a
//! thousand system calls), and parses every root. Compiled-in roots cost no
//! I/O; building them on the first request keeps the parsing out of init
//! too (`cargo xtask bench --cold-starts` measures it). The roots are the
//! ones `webpki-root-certs` ships, which track Mozilla's list; a function
//! that must trust a private CA adds it with its own trust store.

use std::sync::{Arc, OnceLock};

use aws_config::SdkConfig;
use aws_smithy_http_client::Builder;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use base64::Engine;

/// Mozilla's CA roots (`webpki-root-certs`) as one PEM bundle, the form
/// the SDK's trust store takes.
fn compiled_in_roots() -> Vec<u8> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let mut pem = String::with_capacity(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() * 2_200);
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = base64.encode(cert.as_ref());
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

/// The HTTPS client every SDK client of a function uses: rustls on ring,
/// the compiled-in roots, no system trust store, built on the first
/// request rather than when an SDK client is made.
pub fn http_client() -> SharedHttpClient {
    SharedHttpClient::new(OnFirstUse::default())
}

/// An [`HttpClient`] that makes [`https`] on the first request. The SDK
/// asks every client to prepare itself when an SDK client is made
/// (`validate_base_client_config`, which the default client uses to build
/// its TLS configuration); this one does nothing then.
#[derive(Debug, Clone, Default)]
struct OnFirstUse(Arc<OnceLock<SharedHttpClient>>);

impl HttpClient for OnFirstUse {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0
            .get_or_init(https)
            .http_connector(settings, components)
    }
}

/// The HTTPS client itself.
fn https() -> SharedHttpClient {
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(compiled_in_roots());
    let tls = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("a trust store of PEM certificates is a valid TLS context");
    Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_https()
}

/// The SDK's configuration from the environment (region, credentials, and
/// `AWS_ENDPOINT_URL` on the local stack), with [`http_client`]: build it
/// once per cold start, and every client from it.
///
/// Lambda gives a function its region (`AWS_REGION`) and its execution
/// role's credentials (`AWS_ACCESS_KEY_ID`, ...) in the environment: where
/// they are, they are read from there alone, without building the default
/// chains' other providers (profile files, web identity, ECS, IMDS), which
/// a cold start would otherwise pay for and never use.
pub async fn config() -> SdkConfig {
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client());
    if let Some(region) = std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()) {
        loader = loader.region(aws_config::Region::new(region));
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    loader.load().await
}

/// An SDK client made on its first use, not when the function starts.
///
/// Making an SDK client parses the service's endpoint partitions (a JSON
/// document of every AWS partition) and compiles each partition's region
/// pattern: about a million instructions per service, paid by every cold
/// start in its Init Duration (`cargo xtask bench --cold-starts` measures
/// it). Made on first use, that cost moves to the first request that needs
/// the client, and a request that needs none (a bad request, an unknown
/// route) never pays it.
///
/// ```ignore
/// let config = api::sdk::config().await;
/// let dynamodb = api::sdk::Lazy::new(move || aws_sdk_dynamodb::Client::new(&config));
/// dynamodb.get_item(); // the client is made here, once
/// ```
pub struct Lazy<C>(Arc<LazyInner<C>>);

struct LazyInner<C> {
    client: OnceLock<C>,
    make: Box<dyn Fn() -> C + Send + Sync>,
}

impl<C> Lazy<C> {
    /// A client that `make` makes on first use.
    pub fn new(make: impl Fn() -> C + Send + Sync + 'static) -> Self {
        Lazy(Arc::new(LazyInner {
            client: OnceLock::new(),
            make: Box::new(make),
        }))
    }

    /// Whether the client has been made yet.
    pub fn is_made(&self) -> bool {
        self.0.client.get().is_some()
    }
}

/// A client made already (tests, or a caller that wants it at init).
impl<C: Send + Sync + 'static> From<C> for Lazy<C> {
    fn from(client: C) -> Self {
        let lazy = Lazy::new(|| unreachable!("the client was made already"));
        let _ = lazy.0.client.set(client);
        lazy
    }
}

impl<C> std::ops::Deref for Lazy<C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.0.client.get_or_init(|| (self.0.make)())
    }
}

impl<C> Clone for Lazy<C> {
    fn clone(&self) -> Self {
        Lazy(Arc::clone(&self.0))
    }
}

impl<C: std::fmt::Debug> std::fmt::Debug for Lazy<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.client.get() {
            Some(client) => f.debug_tuple("Lazy").field(client).finish(),
            None => f.write_str("Lazy(not made yet)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_roots_are_a_pem_bundle_of_every_root() {
        let pem = String::from_utf8(compiled_in_roots()).unwrap();
        let count = pem.matches("-----BEGIN CERTIFICATE-----").count();
        assert_eq!(count, webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(count > 100, "{count} roots");
        assert!(pem.lines().all(|line| line.len() <= 64));
        // The client builds with them (the trust store parses the bundle).
        let _client = http_client();
    }

    #[test]
    fn a_lazy_client_is_made_once_on_first_use_and_shared_by_its_clones() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&made);
        let lazy = Lazy::new(move || counter.fetch_add(1, Ordering::SeqCst) + 100);
        let clone = lazy.clone();
        assert!(!lazy.is_made());
        assert_eq!(made.load(Ordering::SeqCst), 0, "made before first use");
        assert_eq!(*clone, 100);
        assert_eq!(*lazy, 100);
        assert!(lazy.is_made());
        assert_eq!(made.load(Ordering::SeqCst), 1);
        let ready = Lazy::from(7);
        assert!(ready.is_made());
        assert_eq!(*ready, 7);
    }
}
