//! One TLS stack for every outbound connection: rustls on ring.
//!
//! Three clients leave the process: reqwest (providers, embeddings), the AWS SDK's hyper client
//! (DynamoDB, Secrets Manager, CloudWatch) and tonic (Qdrant). tonic's rustls uses ring; the
//! SDK's and reqwest's defaults would add aws-lc, a second crypto library of about 1 MB in every
//! Lambda bootstrap. So the SDK crates are built without their `default-https-client` and get
//! [`aws_http_client`] instead, and reqwest without a provider gets ring from [`reqwest_builder`].
//!
//! Certificates are checked against the system's roots, as before (`/etc/pki` on Lambda's
//! `provided.al2023`). The AWS client does not read `HTTPS_PROXY`; Lambda has no proxy.

use std::sync::{Arc, LazyLock};

use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, HttpClientError};
use rustls::crypto::CryptoProvider;

/// A reqwest client builder whose TLS runs on ring.
///
/// reqwest built with `rustls-no-provider` takes rustls' process-wide default provider; this
/// installs ring as that default once (a default someone installed earlier is kept).
pub fn reqwest_builder() -> reqwest::ClientBuilder {
    static INSTALLED: LazyLock<()> = LazyLock::new(|| {
        // Err only when a default is already installed, which is what we want either way.
        let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    });
    LazyLock::force(&INSTALLED);
    reqwest::Client::builder()
}

/// The HTTP client for every AWS SDK client: hyper over rustls on ring, trusting the system's
/// roots. Built once per process, so all AWS clients share its connection pools.
pub fn aws_http_client() -> SharedHttpClient {
    static CLIENT: LazyLock<SharedHttpClient> = LazyLock::new(|| https(TlsContext::default()));
    CLIENT.clone()
}

/// [`aws_http_client`] trusting only the given PEM certificates (a test's own CA).
pub fn aws_http_client_trusting(pem: &[u8]) -> Result<SharedHttpClient, HttpClientError> {
    let store = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(pem.to_vec());
    Ok(https(
        TlsContext::builder().with_trust_store(store).build()?,
    ))
}

fn https(context: TlsContext) -> SharedHttpClient {
    Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(context)
        .build_https()
}

/// ring's provider, for servers a test stands up (the same library the clients use).
pub fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
