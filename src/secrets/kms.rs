//! AWS KMS: encrypting (encpass) and decrypting (daemon) destination passwords.
//!
//! `dest_pass_enc` is the standard base64 of a KMS `CiphertextBlob`; the blob is opaque
//! (moto's differs from AWS's). Errors never carry plaintext (see `error.rs`).

use std::fmt;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::primitives::Blob;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub use super::error::SecretError;
use super::error::{describe, scrub};
use crate::config::AwsSettings;

/// KMS accepts at most 4096 bytes of plaintext per Encrypt call.
const MAX_PLAINTEXT: usize = 4096;
/// A ciphertext blob is at most 6144 bytes; its base64 is 8192 characters.
const MAX_CIPHERTEXT_B64: usize = 8192;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A KMS client built from `AWSSettings` (explicit keys, else the default AWS chain).
#[derive(Clone)]
pub struct Kms {
    /// `Err` holds why the settings are unusable, reported by every call (see [`Kms::new`]).
    client: Result<aws_sdk_kms::Client, &'static str>,
    region: Option<String>,
    endpoint: Option<String>,
    static_credentials: bool,
}

/// Shows where requests go and how they are signed, never the keys.
impl fmt::Debug for Kms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = match (&self.client, self.static_credentials) {
            (Err(reason), _) => reason,
            (Ok(_), true) => "static (AWSSettings)",
            (Ok(_), false) => "default chain",
        };
        f.debug_struct("Kms")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("credentials", &credentials)
            .finish()
    }
}

impl Kms {
    /// Builds the client. Explicit `AccessKeyId`/`SecretAccessKey` are used when set
    /// (both or neither), else the default AWS credential chain; `Region` and `Endpoint`
    /// override the defaults when non-empty. No request is made here.
    ///
    /// Unusable settings (one key without the other) fail here.
    pub async fn try_new(aws: &AwsSettings) -> Result<Self, SecretError> {
        let kms = Self::new(aws).await;
        match kms.client {
            Err(reason) => Err(SecretError::Settings(reason.into())),
            Ok(_) => Ok(kms),
        }
    }

    /// As [`Kms::try_new`], but unusable settings fail every later call instead.
    pub async fn new(aws: &AwsSettings) -> Self {
        let region = non_empty(&aws.region);
        let endpoint = non_empty(&aws.endpoint);
        let (id, secret) = (aws.access_key_id.trim(), aws.secret_access_key.trim());
        let credentials = match (id.is_empty(), secret.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Ok(Some(Credentials::new(
                id,
                secret,
                None,
                None,
                "perseus-AWSSettings",
            ))),
            (false, true) => Err("AccessKeyId is set but SecretAccessKey is empty"),
            (true, false) => Err("SecretAccessKey is set but AccessKeyId is empty"),
        };
        let static_credentials = matches!(credentials, Ok(Some(_)));
        let client = match credentials {
            Ok(credentials) => Ok(build_client(credentials, &region, &endpoint).await),
            Err(reason) => Err(reason),
        };
        Kms {
            client,
            region,
            endpoint,
            static_credentials,
        }
    }

    fn client(&self) -> Result<&aws_sdk_kms::Client, SecretError> {
        self.client
            .as_ref()
            .map_err(|reason| SecretError::Settings((*reason).into()))
    }

    /// Returns the standard base64 of the ciphertext blob.
    pub async fn encrypt(&self, key_arn: &str, plaintext: &[u8]) -> Result<String, SecretError> {
        let key_arn = key_arn.trim();
        if key_arn.is_empty() {
            return Err(SecretError::Invalid(
                "no KMS key ARN (or key id) given".into(),
            ));
        }
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(SecretError::Invalid(format!(
                "plaintext must be 1 to {MAX_PLAINTEXT} bytes, got {}",
                plaintext.len()
            )));
        }
        let output = self
            .client()?
            .encrypt()
            .key_id(key_arn)
            .plaintext(Blob::new(plaintext))
            .send()
            .await
            .map_err(|e| SecretError::Kms(scrub(describe("Encrypt", e), plaintext)))?;
        let blob = output
            .ciphertext_blob()
            .ok_or_else(|| SecretError::Kms("Encrypt returned no CiphertextBlob".into()))?;
        Ok(STANDARD.encode(blob.as_ref()))
    }

    /// Takes the standard base64 of a ciphertext blob, returns the plaintext.
    pub async fn decrypt(&self, ciphertext_b64: &str) -> Result<String, SecretError> {
        let text = ciphertext_b64.trim();
        if text.is_empty() || text.len() > MAX_CIPHERTEXT_B64 {
            return Err(SecretError::Invalid(format!(
                "ciphertext must be 1 to {MAX_CIPHERTEXT_B64} base64 characters, got {}",
                text.len()
            )));
        }
        let blob = STANDARD
            .decode(text)
            .map_err(|e| SecretError::Base64(e.to_string()))?;
        let output = self
            .client()?
            .decrypt()
            .ciphertext_blob(Blob::new(blob))
            .send()
            .await
            .map_err(|e| SecretError::Kms(describe("Decrypt", e)))?;
        let plaintext = output
            .plaintext
            .ok_or_else(|| SecretError::Kms("Decrypt returned no Plaintext".into()))?;
        String::from_utf8(plaintext.into_inner()).map_err(|_| SecretError::NotUtf8)
    }
}

async fn build_client(
    credentials: Option<Credentials>,
    region: &Option<String>,
    endpoint: &Option<String>,
) -> aws_sdk_kms::Client {
    // Without an explicit HTTP client the lean SDK build has none and fails every call.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    if let Some(region) = region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint.clone());
    }
    aws_sdk_kms::Client::new(&loader.load().await)
}

fn non_empty(value: &str) -> Option<String> {
    Some(value.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(id: &str, secret: &str) -> AwsSettings {
        AwsSettings {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
            region: "eu-west-1".into(),
            endpoint: "http://127.0.0.1:9".into(),
            kms_key_arn: String::new(),
        }
    }

    #[tokio::test]
    async fn debug_shows_no_keys() {
        let kms = Kms::try_new(&settings("AKIDEXAMPLE", "wJalrXUtnFEMIsecretKEY"))
            .await
            .unwrap();
        let shown = format!("{kms:?}");
        assert!(
            shown.contains("eu-west-1") && shown.contains("static"),
            "{shown}"
        );
        assert!(
            !shown.contains("AKIDEXAMPLE") && !shown.contains("secretKEY"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn half_given_keys_are_refused() {
        for (id, secret) in [("AKID", ""), ("", "secret")] {
            let err = Kms::try_new(&settings(id, secret)).await.unwrap_err();
            assert!(matches!(err, SecretError::Settings(_)), "{err}");
            let deferred = Kms::new(&settings(id, secret)).await;
            let err = deferred.decrypt("AAAA").await.unwrap_err();
            assert!(matches!(err, SecretError::Settings(_)), "{err}");
            assert!(!format!("{deferred:?}").contains("AKID"));
        }
    }

    #[tokio::test]
    async fn bad_input_fails_before_any_request() {
        // The endpoint is a closed port: reaching it would be a different error.
        let kms = Kms::new(&settings("AKID", "secret")).await;
        let cases = [
            kms.encrypt("", b"pw").await,
            kms.encrypt("arn:key", b"").await,
            kms.encrypt("arn:key", &[b'a'; MAX_PLAINTEXT + 1]).await,
            kms.decrypt("").await,
            kms.decrypt(&"A".repeat(MAX_CIPHERTEXT_B64 + 4)).await,
        ];
        for result in cases {
            assert!(matches!(result, Err(SecretError::Invalid(_))), "{result:?}");
        }
        assert!(matches!(
            kms.decrypt("not base64!").await,
            Err(SecretError::Base64(_))
        ));
    }

    #[tokio::test]
    async fn transport_errors_do_not_show_the_plaintext() {
        let kms = Kms::new(&settings("AKID", "secret")).await;
        let err = kms.encrypt("arn:key", b"plain-hunter2").await.unwrap_err();
        assert!(matches!(err, SecretError::Kms(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
