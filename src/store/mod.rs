//! Off-host storage: every bundle uploaded to S3-compatible object storage while it is written, checked by the
//! store part by part (`x-amz-checksum-sha256`), never overwriting what is there (`If-None-Match: *`), under Object
//! Lock when configured, and read back before it is called stored. The official AWS SDK signs and retries the
//! requests; credentials come from its standard chain (environment, shared config and profile, web identity,
//! instance metadata) and are never written anywhere by preserve.

pub mod record;
pub mod remote;
pub mod upload;

use std::{sync::Arc, time::Duration};

use aws_sdk_s3::{
    Client,
    config::{Region, http::HttpResponse, retry::RetryConfig, timeout::TimeoutConfig},
    error::{ProvideErrorMetadata, SdkError},
};
use base64::Engine;

use crate::{bundle::bounds::printable, config::StoreSettings};

/// Names of a bundle's side files that go to the store after its archive, in this order.
pub fn side_file_names(bundle_id: &str, encrypted: bool) -> Vec<String> {
    let archive = crate::bundle::archive_name(bundle_id, encrypted);
    let mut names = vec![format!("{archive}.sha256"), format!("{bundle_id}.manifest.json")];
    let [sig, tsr, custody, _seal] = crate::bundle::writer::seal_file_names(bundle_id, encrypted);
    names.extend([sig, tsr, custody]);
    names
}

/// A connected store: the SDK client and the settings it was made from.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    pub settings: Arc<StoreSettings>,
}

impl Store {
    /// Builds the client. Credentials are not looked up here but on the first request, so a snapshot never waits
    /// for the chain (instance metadata may take seconds to answer, or never).
    pub async fn connect(settings: Arc<StoreSettings>) -> Self {
        use aws_smithy_http_client::tls;
        // rustls with ring, as the rest of preserve: no second TLS stack (the SDK's default is aws-lc).
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
        if let Some(p) = &settings.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &settings.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(60))
                    .build(),
            )
            // preserve sends the SHA-256 of every part itself; the SDK adds no CRC of its own.
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired);
        if shared.region().is_none() {
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(e) = &settings.endpoint {
            b = b.endpoint_url(e);
        }
        Self { client: Client::from_conf(b.build()), settings }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.settings.location.bucket
    }
}

/// What went wrong with a request to the store, in words an operator can act on.
#[derive(Debug, Clone, serde::Serialize, thiserror::Error)]
#[error("{op} {target}: {why}")]
pub struct StoreError {
    /// What preserve was doing (`upload part 3 of`, `read back`).
    pub op: String,
    /// The `s3://` URL of the object or bucket.
    pub target: String,
    pub why: String,
    /// The store's error code, when it gave one (`NoSuchBucket`, `PreconditionFailed`).
    pub code: Option<String>,
}

impl StoreError {
    pub fn new(op: impl Into<String>, target: impl Into<String>, why: impl Into<String>) -> Self {
        Self { op: op.into(), target: target.into(), why: why.into(), code: None }
    }

    /// Explains an SDK error. The store's own words are hostile input as much as the evidence: cut and escaped.
    pub fn from_sdk<E>(op: impl Into<String>, target: impl Into<String>, e: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let target = target.into();
        let (code, why) = match e {
            SdkError::ServiceError(se) => {
                let err = se.err();
                // The store's words, its code included, are hostile input: cut and escaped like the rest.
                let code = err.code().map(|c| cut(c, 64));
                let message = err.message().map(|m| cut(m, 300)).unwrap_or_default();
                let status = se.raw().status().as_u16();
                // No code: the answer could not be read as S3's (the SDK says why).
                let message = if message.is_empty() && code.is_none() { cut(&chain(err), 300) } else { message };
                (code.clone(), format!("{} (HTTP {status})", explain(code.as_deref(), &message)))
            }
            SdkError::TimeoutError(_) => (None, "the store did not answer in time".to_string()),
            SdkError::DispatchFailure(d) => {
                let why = if d.is_io() {
                    "cannot reach the store (connection refused or lost)"
                } else if d.is_timeout() {
                    "the store did not answer in time"
                } else {
                    "cannot send the request"
                };
                (None, format!("{why}: {}", cut(&chain(e), 300)))
            }
            SdkError::ResponseError(_) => (None, format!("unreadable answer: {}", cut(&chain(e), 300))),
            _ => {
                let text = chain(e);
                let why = if text.contains("credentials") {
                    format!(
                        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, web identity \
                         (IRSA) or an instance role ({})",
                        cut(&text, 200)
                    )
                } else {
                    cut(&text, 300)
                };
                (None, why)
            }
        };
        Self { op: op.into(), target, why, code }
    }

    /// The store already holds an object at this key (`If-None-Match: *` refused).
    pub fn exists(&self) -> bool {
        matches!(self.code.as_deref(), Some("PreconditionFailed" | "ConditionalRequestConflict"))
    }

    /// The upload id is no longer known to the store (aborted, or expired by a lifecycle rule).
    pub fn upload_gone(&self) -> bool {
        matches!(self.code.as_deref(), Some("NoSuchUpload"))
    }
}

/// The store's code and message, with what it means for evidence.
fn explain(code: Option<&str>, message: &str) -> String {
    let plain = match code {
        Some("NoSuchBucket") => Some("the bucket does not exist (or is not visible to these credentials)"),
        Some("InvalidAccessKeyId") => Some("the store does not know this access key: check the AWS credentials"),
        Some("SignatureDoesNotMatch") => Some("the store refused the signature: the secret key is wrong"),
        Some("AccessDenied") => Some("access denied: the credentials lack the permission for this request"),
        Some("PreconditionFailed" | "ConditionalRequestConflict") => {
            Some("an object already exists at this key: the store refused to overwrite it (If-None-Match)")
        }
        Some("InvalidDigest" | "BadDigest" | "XAmzContentChecksumMismatch") => {
            Some("the store computed another SHA-256 than preserve sent: the bytes were damaged on the way")
        }
        Some("InvalidRequest") if message.contains("ObjectLock") || message.contains("Object Lock") => Some(
            "the bucket has no Object Lock: the store refused the lock, and preserve does not store evidence \
             unlocked when [store] asks for a lock; enable Object Lock on the bucket (it is chosen when a bucket is \
             created) or remove lock_mode",
        ),
        _ => None,
    };
    let code = code.map(|c| format!("{c}: ")).unwrap_or_default();
    match plain {
        Some(p) if message.is_empty() => format!("{p} ({code})").replace(": )", ")"),
        Some(p) => format!("{p} ({code}{message})"),
        None if message.is_empty() && code.is_empty() => "the store refused the request".to_string(),
        None => format!("{code}{message}").trim_end_matches(": ").to_string(),
    }
}

/// An error and its sources, each in its own words (the SDK's own rendering adds its debug form).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut at = e.source();
    while let Some(s) = at {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        at = s.source();
    }
    parts.join(": ")
}

fn cut(s: &str, max: usize) -> String {
    let s = printable(s);
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// Base64 of a SHA-256, as `x-amz-checksum-sha256` carries it.
pub fn b64(digest: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// S3's checksum of a multipart object: the SHA-256 of the parts' SHA-256s, and the number of parts.
pub fn composite(part_digests: &[[u8; 32]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for d in part_digests {
        h.update(d);
    }
    format!("{}-{}", b64(&h.finalize()), part_digests.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_is_the_hash_of_the_part_hashes() {
        use sha2::{Digest, Sha256};
        let (a, b): ([u8; 32], [u8; 32]) = (Sha256::digest(b"one").into(), Sha256::digest(b"two").into());
        let mut joined = a.to_vec();
        joined.extend_from_slice(&b);
        assert_eq!(composite(&[a, b]), format!("{}-2", b64(&Sha256::digest(&joined))));
    }

    #[test]
    fn store_words_are_explained_and_cut() {
        let e = explain(Some("NoSuchBucket"), "The specified bucket does not exist");
        assert!(e.starts_with("the bucket does not exist") && e.contains("NoSuchBucket"), "{e}");
        let lock = explain(Some("InvalidRequest"), "Bucket is missing ObjectLockConfiguration");
        assert!(lock.contains("no Object Lock") && lock.contains("remove lock_mode"), "{lock}");
        let long = cut(&"\u{1b}[31mx".repeat(500), 50);
        assert!(!long.contains('\u{1b}') && long.ends_with("..."), "{long}");
    }
}
