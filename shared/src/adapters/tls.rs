//! One TLS stack for every outbound connection: rustls on ring.
//!
//! Two clients leave the process: reqwest (providers, the embedder, and through
//! [`aws_http`](super::aws_http) DynamoDB, Secrets Manager and CloudWatch) and tonic (Qdrant).
//! tonic's rustls uses ring; the SDK's own client and reqwest's default would add aws-lc, a
//! second crypto library of about 1 MB in every Lambda bootstrap. So the SDK crates are built
//! without their `default-https-client` and get [`aws_http_client`], and reqwest, built without
//! a provider, gets ring from [`reqwest_builder`].
//!
//! Certificates are checked against the system's roots (`/etc/pki` on Lambda's
//! `provided.al2023`; `SSL_CERT_FILE` and `SSL_CERT_DIR` override them).

use std::sync::{Arc, LazyLock};

use aws_sdk_dynamodb::config::SharedHttpClient;
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

/// The HTTP client for every AWS SDK client: reqwest (see [`aws_http`](super::aws_http)) over
/// rustls on ring, trusting the system's roots. Built once per process, so all AWS clients
/// share its connection pool.
pub fn aws_http_client() -> SharedHttpClient {
    static CLIENT: LazyLock<SharedHttpClient> =
        LazyLock::new(|| super::aws_http::http_client(reqwest_builder));
    CLIENT.clone()
}

/// [`aws_http_client`] trusting only the given PEM certificates (a test's own CA).
pub fn aws_http_client_trusting(pem: &[u8]) -> Result<SharedHttpClient, reqwest::Error> {
    let roots = reqwest::Certificate::from_pem_bundle(pem)?;
    Ok(super::aws_http::http_client(move || {
        reqwest_builder().tls_certs_only(roots.clone())
    }))
}

/// ring's provider, for servers a test stands up (the same library the clients use).
pub fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
