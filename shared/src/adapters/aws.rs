//! Where AWS clients (DynamoDB, Secrets Manager, CloudWatch) take their region, credentials and
//! endpoint from.
//!
//! - [`AwsConfigSource::LAMBDA`], for the four functions: Lambda's own environment and nothing
//!   else. Lambda puts the execution role's credentials in `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, and the region in `AWS_REGION`, which is
//!   where the SDK's default chain finds them first too. Reading only those leaves the rest of
//!   the chain (profile files, SSO, web identity through STS, ECS, IMDS) out of the bootstraps
//!   (~0.4 MB each), and makes building a client pure: no file or network read.
//! - [`AwsConfigSource::DEFAULT_CHAIN`], for the `tollgate` CLI on an operator's machine: the
//!   SDK's full default chain, so profiles and SSO work.
//!
//! Both honour `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` (moto, `cargo lambda
//! watch`), and both use [`tls::aws_http_client`](super::tls::aws_http_client). Which source a
//! binary uses is chosen in its `main`, so the other one is never linked into it.

use std::future::Future;
use std::pin::Pin;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::SharedCredentialsProvider;

use super::tls;

type Load = fn(TimeoutConfig) -> Pin<Box<dyn Future<Output = SdkConfig> + Send>>;

/// How a binary's AWS clients are configured; see the module docs.
#[derive(Clone, Copy)]
pub struct AwsConfigSource {
    name: &'static str,
    load: Load,
}

impl AwsConfigSource {
    /// Lambda's environment variables only.
    pub const LAMBDA: Self = Self {
        name: "lambda-environment",
        load: |timeouts| Box::pin(async move { lambda_environment(timeouts) }),
    };

    /// The SDK's default chain (environment, profiles, SSO, web identity, ECS, IMDS).
    pub const DEFAULT_CHAIN: Self = Self {
        name: "default-chain",
        load: |timeouts| Box::pin(default_chain(timeouts)),
    };

    /// The shared configuration for a service whose endpoint variable is
    /// `AWS_ENDPOINT_URL_<service_env>` (for example `DYNAMODB`, `SECRETS_MANAGER`).
    pub async fn load(self, timeouts: TimeoutConfig, service_env: &str) -> SdkConfig {
        let config = (self.load)(timeouts).await;
        match endpoint_override(service_env, |name| std::env::var(name).ok()) {
            Some(url) => config.into_builder().endpoint_url(url).build(),
            None => config,
        }
    }
}

impl std::fmt::Debug for AwsConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn lambda_environment(timeouts: TimeoutConfig) -> SdkConfig {
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .map(Region::new);
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ))
        .retry_config(RetryConfig::standard())
        .timeout_config(timeouts)
        .http_client(tls::aws_http_client())
        .build()
}

async fn default_chain(timeouts: TimeoutConfig) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(tls::aws_http_client())
        .timeout_config(timeouts)
        .load()
        .await
}

/// `AWS_ENDPOINT_URL_<service>`, else `AWS_ENDPOINT_URL`, unless
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is `true` (the SDK's own rules for these variables).
pub(crate) fn endpoint_override(
    service_env: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    if get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    get(&format!("AWS_ENDPOINT_URL_{service_env}")).or_else(|| get("AWS_ENDPOINT_URL"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        let map: HashMap<_, _> = vars.iter().copied().collect();
        move |name| map.get(name).map(|v| (*v).to_owned())
    }

    #[test]
    fn the_service_endpoint_wins_over_the_generic_one() {
        let vars = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:2"),
        ];
        assert_eq!(
            endpoint_override("DYNAMODB", lookup(&vars)).as_deref(),
            Some("http://127.0.0.1:2")
        );
        assert_eq!(
            endpoint_override("SECRETS_MANAGER", lookup(&vars)).as_deref(),
            Some("http://127.0.0.1:1")
        );
    }

    #[test]
    fn no_variable_or_the_ignore_switch_means_the_real_endpoint() {
        assert_eq!(endpoint_override("DYNAMODB", lookup(&[])), None);
        assert_eq!(
            endpoint_override("DYNAMODB", lookup(&[("AWS_ENDPOINT_URL", " ")])),
            None
        );
        let ignored = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ];
        assert_eq!(endpoint_override("DYNAMODB", lookup(&ignored)), None);
    }
}
