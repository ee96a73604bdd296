//! [`SecretSource`] over AWS Secrets Manager (`GetSecretValue`).
//!
//! The client is built on first use, not at construction: a Lambda cold start reads no AWS
//! configuration and makes no call for secrets. Caching lives in [`super::api_key::ApiKey`],
//! so this adapter reads the secret every time it is asked.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{Credentials, Region};
use secrecy::SecretString;
use tokio::sync::OnceCell;

use crate::adapters::aws::AwsConfigSource;
use crate::adapters::tls;
use crate::ports::secrets::{SecretError, SecretSource};

/// One attempt; the SDK's standard retry runs inside the operation limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads secrets from AWS Secrets Manager, one `GetSecretValue` per call (no caching).
pub struct SecretsManagerSource {
    client: OnceCell<Client>,
    /// Where the client's configuration comes from, when it is first needed.
    aws: AwsConfigSource,
    /// Set for an emulator: the client is built from it instead of the environment.
    emulator_endpoint: Option<String>,
    reads: AtomicU64,
}

impl fmt::Debug for SecretsManagerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsManagerSource")
            .field("aws", &self.aws)
            .field("emulator_endpoint", &self.emulator_endpoint)
            .field("reads", &self.reads())
            .finish_non_exhaustive()
    }
}

impl SecretsManagerSource {
    /// Configured from `aws` (region, credentials, `AWS_ENDPOINT_URL_SECRETS_MANAGER` for an
    /// emulator) when first used.
    pub fn from_env(aws: AwsConfigSource) -> Self {
        Self {
            client: OnceCell::new(),
            aws,
            emulator_endpoint: None,
            reads: AtomicU64::new(0),
        }
    }

    /// A local emulator (moto) at `endpoint`, with region us-east-1 and static test
    /// credentials whatever the environment says, so a test can never reach real AWS.
    pub fn emulator(endpoint: impl Into<String>) -> Self {
        Self {
            emulator_endpoint: Some(endpoint.into()),
            ..Self::from_env(AwsConfigSource::LAMBDA)
        }
    }

    /// `GetSecretValue` calls made so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build();
                match &self.emulator_endpoint {
                    Some(endpoint) => Client::from_conf(
                        aws_sdk_secretsmanager::Config::builder()
                            .behavior_version(BehaviorVersion::latest())
                            .region(Region::new("us-east-1"))
                            .credentials_provider(Credentials::new(
                                "test", "test", None, None, "emulator",
                            ))
                            .endpoint_url(endpoint)
                            .http_client(tls::aws_http_client())
                            .timeout_config(timeouts)
                            .build(),
                    ),
                    None => Client::new(&self.aws.load(timeouts, "SECRETS_MANAGER").await),
                }
            })
            .await
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    async fn secret(&self, name: &str) -> Result<SecretString, SecretError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let output = self
            .client()
            .await
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .map_err(|error| {
                let service = error.as_service_error();
                if service.is_some_and(|e| e.is_resource_not_found_exception()) {
                    SecretError::Missing(name.to_owned())
                } else {
                    // The SDK's display of the error names the operation and the service's
                    // code and message, which never include the secret's value.
                    let detail = match service {
                        Some(e) => e.to_string(),
                        None => error.to_string(),
                    };
                    SecretError::Unavailable(format!("reading secret `{name}`: {detail}"))
                }
            })?;
        match output.secret_string() {
            Some(value) => Ok(SecretString::from(value.to_owned())),
            None => Err(SecretError::Malformed(format!(
                "secret `{name}` has no string value (binary secrets are not supported)"
            ))),
        }
    }
}
