//! [`ObjectStore`] over S3: one bucket per stage, one object per file, at
//! its id ([`crate::store::object_key`]).
//!
//! The URLs are SigV4 presigned requests, signed with the function's own
//! credentials (so the role needs `s3:PutObject` and `s3:GetObject` on the
//! objects, and the client none at all): a `PutObject` with `Content-Type`
//! and `Content-Length` among the signed headers, so S3 refuses a PUT of
//! another type or size, and a `GetObject`. Only `HeadObject` (is it
//! uploaded?) and `DeleteObject` are sent by the function itself.
//!
//! [`client`] addresses buckets by path (`http://127.0.0.1:4566/<bucket>/<key>`)
//! when the SDK has an endpoint override (`AWS_ENDPOINT_URL`, the local
//! emulator), and by virtual host on AWS
//! (`https://<bucket>.s3.<region>.amazonaws.com/<key>`); presigned URLs
//! point where the client does, so they work against either.

use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};

use crate::store::{ObjectStore, StoreError, Validity};

/// The S3 client of a function with this SDK configuration: path-style
/// addressing exactly when an endpoint is configured (the emulator on
/// loopback has no per-bucket host names), and checksums only where S3
/// requires them (none for a presigned URL, whose body the function never
/// sees).
pub fn client(config: &SdkConfig) -> Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(config.endpoint_url().is_some())
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(s3)
}

/// The S3 store. Clone the store (its client is shared): make it once
/// per cold start.
#[derive(Debug, Clone)]
pub struct S3Objects {
    client: api::sdk::Lazy<Client>,
}

impl S3Objects {
    /// A store over `client`: one made already, or an [`api::sdk::Lazy`]
    /// one, made on the first request that needs it.
    pub fn new(client: impl Into<api::sdk::Lazy<Client>>) -> Self {
        S3Objects {
            client: client.into(),
        }
    }
}

fn backend(err: impl std::error::Error) -> StoreError {
    StoreError::Backend(aws_sdk_s3::error::DisplayErrorContext(&err).to_string())
}

fn presigning(validity: Validity) -> Result<PresigningConfig, StoreError> {
    PresigningConfig::builder()
        .start_time(validity.signed_at)
        .expires_in(validity.expires_in)
        .build()
        .map_err(backend)
}

/// The names in `X-Amz-SignedHeaders` of a presigned URL (lowercase,
/// `;`-separated, percent-encoded as `%3B`).
pub fn signed_headers(url: &str) -> Vec<String> {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("X-Amz-SignedHeaders="))
        .map(|names| {
            names
                .replace("%3B", ";")
                .replace("%3b", ";")
                .split(';')
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The URL of `presigned`, refused unless it signs every one of `bound`:
/// an SDK that stopped signing a header would otherwise hand out URLs that
/// take any body.
fn bound_url(presigned: PresignedRequest, bound: &[&str]) -> Result<String, StoreError> {
    let url = presigned.uri().to_owned();
    let signed = signed_headers(&url);
    match bound.iter().find(|name| !signed.iter().any(|s| s == *name)) {
        None => Ok(url),
        Some(missing) => Err(StoreError::Backend(format!(
            "the presigned {} does not sign `{missing}` (signed: {signed:?})",
            presigned.method()
        ))),
    }
}

impl ObjectStore for S3Objects {
    async fn upload_url(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        size: u64,
        validity: Validity,
    ) -> Result<String, StoreError> {
        let presigned = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(size).map_err(backend)?)
            .presigned(presigning(validity)?)
            .await
            .map_err(backend)?;
        bound_url(presigned, &["content-length", "content-type", "host"])
    }

    async fn download_url(
        &self,
        bucket: &str,
        key: &str,
        validity: Validity,
    ) -> Result<String, StoreError> {
        let presigned = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(presigning(validity)?)
            .await
            .map_err(backend)?;
        bound_url(presigned, &["host"])
    }

    /// `HeadObject`: 404 is "not uploaded". Without `s3:ListBucket` on the
    /// bucket S3 answers a missing key with 403, not 404: that is an error
    /// here (a 500), never taken for "not uploaded".
    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                Some(HeadObjectError::NotFound(_)) => Ok(false),
                _ => Err(backend(err)),
            },
        }
    }

    /// `DeleteObject`, which S3 answers 204 whether or not the key exists.
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_s3::config::{Credentials, SharedCredentialsProvider};

    use super::*;
    use crate::samples::query_params;

    /// An SDK configuration as `api::sdk::config` loads it, with `endpoint`
    /// as `AWS_ENDPOINT_URL` (or none, as on AWS). Presigning sends nothing.
    fn config(endpoint: Option<&str>) -> SdkConfig {
        let mut config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "tests",
            )))
            .http_client(api::sdk::http_client());
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        config.build()
    }

    /// Signed at 2026-01-01T00:00:00Z, for 15 minutes.
    fn validity() -> Validity {
        Validity {
            signed_at: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            expires_in: Duration::from_secs(900),
        }
    }
    const KEY: &str = "0123456789abcdef0123456789abcdef";

    async fn upload_url(endpoint: Option<&str>) -> String {
        S3Objects::new(client(&config(endpoint)))
            .upload_url("files-staging", KEY, "application/pdf", 1234, validity())
            .await
            .unwrap()
    }

    /// On AWS the bucket is the host name; on the emulator it is the first
    /// path segment of the configured endpoint.
    #[tokio::test]
    async fn urls_are_virtual_hosted_on_aws_and_path_style_on_an_endpoint() {
        let aws = upload_url(None).await;
        assert!(
            aws.starts_with(&format!(
                "https://files-staging.s3.eu-west-1.amazonaws.com/{KEY}?"
            )),
            "{aws}"
        );
        let local = upload_url(Some("http://127.0.0.1:4566")).await;
        assert!(
            local.starts_with(&format!("http://127.0.0.1:4566/files-staging/{KEY}?")),
            "{local}"
        );
    }

    /// The SDK signs `Content-Length` (and `Content-Type`) of a presigned
    /// PutObject when the request sets it: both are in
    /// `X-Amz-SignedHeaders`. No checksum is added to a presigned URL (the
    /// client's body is unknown when signing).
    #[tokio::test]
    async fn an_upload_url_signs_the_type_and_size_and_expires_as_configured() {
        let url = upload_url(None).await;
        let params = query_params(&url);
        assert_eq!(
            params["X-Amz-SignedHeaders"], "content-length;content-type;host",
            "{url}"
        );
        assert_eq!(params["X-Amz-Expires"], "900");
        assert_eq!(params["X-Amz-Date"], "20260101T000000Z");
        assert_eq!(params["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(
            params["X-Amz-Credential"],
            "AKIDEXAMPLE/20260101/eu-west-1/s3/aws4_request"
        );
        assert!(
            !params.keys().any(|name| name.contains("checksum")),
            "{url}"
        );
        assert_eq!(
            params.get("x-id").map(String::as_str),
            Some("PutObject"),
            "{url}"
        );
    }

    #[tokio::test]
    async fn a_download_url_signs_the_host_only() {
        let url = S3Objects::new(client(&config(None)))
            .download_url("files-prod", KEY, validity())
            .await
            .unwrap();
        assert!(
            url.starts_with(&format!(
                "https://files-prod.s3.eu-west-1.amazonaws.com/{KEY}?"
            )),
            "{url}"
        );
        let params = query_params(&url);
        assert_eq!(params["X-Amz-SignedHeaders"], "host");
        assert_eq!(params["X-Amz-Expires"], "900");
    }

    #[test]
    fn signed_headers_are_read_from_the_query() {
        assert_eq!(
            signed_headers("https://h/k?a=1&X-Amz-SignedHeaders=content-length%3Bhost&b=2"),
            ["content-length", "host"]
        );
        assert!(signed_headers("https://h/k").is_empty());
    }
}
