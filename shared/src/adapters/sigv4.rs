//! SigV4 request signing for the one AWS API Tollgate calls without an SDK client: Bedrock's
//! Converse (see [`bedrock`](super::bedrock) for why). aws-sigv4 is the signer the SDK
//! clients already link, so this adds no crypto and no second copy of the algorithm.
//!
//! Credentials come from an SDK credentials provider: the Lambda role's, from the
//! environment, in the functions ([`AwsConfigSource::LAMBDA`]); the default chain for the CLI
//! and `tollgate serve`. They are cached until five minutes before they expire, so a
//! provider that makes a network call (SSO, IMDS) is asked once per session, not per request.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::OnceCell;

use super::aws::AwsConfigSource;

/// Credentials this close to their expiry are fetched again before signing.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Where the signer's credentials come from.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    /// A provider given at construction (tests, or an SDK config already loaded).
    Provider(SharedCredentialsProvider),
    /// The provider of `AwsConfigSource`, loaded on the first signed request.
    Config(AwsConfigSource),
}

/// Signs requests for one service in one region (see the module docs).
pub struct AwsSigner {
    service: &'static str,
    region: String,
    source: CredentialSource,
    provider: OnceCell<SharedCredentialsProvider>,
    cached: Mutex<Option<Credentials>>,
}

impl fmt::Debug for AwsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSigner")
            .field("service", &self.service)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl AwsSigner {
    /// A signer for `service` (the signing name, `bedrock` for Bedrock's runtime) in `region`.
    pub fn new(service: &'static str, region: impl Into<String>, source: CredentialSource) -> Self {
        Self {
            service,
            region: region.into(),
            source,
            provider: OnceCell::new(),
            cached: Mutex::new(None),
        }
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The headers that sign a request of `method` to `url` with these `headers` (already
    /// on the request, each signed) and `body`: `x-amz-date`, `authorization` and, with
    /// temporary credentials, `x-amz-security-token`, each marked sensitive.
    pub async fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let identity: Identity = self.credentials().await?.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("could not sign the request: {e}"))?
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| format!("could not sign the request: {e}"))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| format!("could not sign the request: {e}"))?
            .into_parts();
        let (signed, _) = instructions.into_parts();
        signed
            .iter()
            .map(|header| {
                let mut value = HeaderValue::from_str(header.value())
                    .map_err(|_| "a signing header is not a valid header value".to_owned())?;
                value.set_sensitive(true);
                Ok((HeaderName::from_static(header.name()), value))
            })
            .collect()
    }

    /// AWS refused the request's credentials (expired, or rotated): the next request asks the
    /// provider again instead of signing with the cached ones.
    pub fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The cached credentials, or fresh ones when there are none or they expire soon.
    async fn credentials(&self) -> Result<Credentials, String> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
        };
        if let Some(credentials) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|c| fresh(c))
        {
            return Ok(credentials.clone());
        }
        let provider = self
            .provider
            .get_or_init(|| async {
                match &self.source {
                    CredentialSource::Provider(provider) => provider.clone(),
                    CredentialSource::Config(aws) => aws
                        .load(
                            aws_config::timeout::TimeoutConfig::disabled(),
                            "BEDROCK_RUNTIME",
                        )
                        .await
                        .credentials_provider()
                        .unwrap_or_else(|| {
                            SharedCredentialsProvider::new(
                                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
                            )
                        }),
                }
            })
            .await;
        // The provider's error says where it looked (no secret); it reaches logs only (a
        // credentials error is a 502 to the client, without it).
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| format!("no AWS credentials to sign with: {e}"))?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(credentials.clone());
        Ok(credentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(token: Option<&str>) -> AwsSigner {
        AwsSigner::new(
            "bedrock",
            "us-east-1",
            CredentialSource::Provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDSIGNERTEST",
                "signer-secret-never-shown",
                token.map(str::to_owned),
                None,
                "test",
            ))),
        )
    }

    #[tokio::test]
    async fn a_request_gets_a_date_and_an_authorization_for_the_service_and_region() {
        let headers = signer(None)
            .sign(
                "POST",
                "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse",
                &[("content-type", "application/json")],
                b"{}",
            )
            .await
            .unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"x-amz-date"), "{names:?}");
        assert!(!names.contains(&"x-amz-security-token"), "{names:?}");
        let (_, authorization) = headers.iter().find(|(n, _)| n == "authorization").unwrap();
        assert!(authorization.is_sensitive());
        let authorization = authorization.to_str().unwrap();
        assert!(
            authorization.contains("/us-east-1/bedrock/aws4_request"),
            "{authorization}"
        );
        assert!(
            authorization.contains("SignedHeaders=content-type;host;x-amz-date"),
            "{authorization}"
        );
        assert!(!authorization.contains("signer-secret"));
    }

    /// Counts how often it is asked for credentials.
    #[derive(Debug, Default)]
    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                "AKID", "secret", None, None, "counting",
            )))
        }
    }

    #[tokio::test]
    async fn credentials_are_cached_until_aws_refuses_them() {
        let counting = Counting::default();
        let count = counting.0.clone();
        let signer = AwsSigner::new(
            "bedrock",
            "us-east-1",
            CredentialSource::Provider(SharedCredentialsProvider::new(counting)),
        );
        let asked = || count.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            signer
                .sign("POST", "https://h.example/m", &[], b"")
                .await
                .unwrap();
        }
        assert_eq!(asked(), 1);
        signer.invalidate();
        signer
            .sign("POST", "https://h.example/m", &[], b"")
            .await
            .unwrap();
        assert_eq!(asked(), 2);
    }

    #[tokio::test]
    async fn temporary_credentials_send_their_session_token() {
        let headers = signer(Some("session-token-value"))
            .sign("POST", "https://h.example/model/m/converse", &[], b"")
            .await
            .unwrap();
        let token = headers
            .iter()
            .find(|(n, _)| n == "x-amz-security-token")
            .map(|(_, v)| v);
        assert_eq!(token.unwrap().to_str().unwrap(), "session-token-value");
        assert!(format!("{:?}", signer(Some("session-token-value"))).contains("us-east-1"));
        assert!(!format!("{:?}", signer(Some("session-token-value"))).contains("session-token"));
    }
}
