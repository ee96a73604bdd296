//! The built binary's AWS calls over TLS, as in production: the system trust store (here the
//! test CA through `SSL_CERT_FILE`, which rustls-native-certs reads as the system store) and
//! the one TLS stack, rustls on ring. moto sits behind a [`TlsProxy`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Output;

use tollgate_tests::tls_proxy::{OTHER_CA_PEM, TEST_CA_PEM, TlsProxy};

fn ca_file(name: &str, pem: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tollgate-{name}-{}.pem", std::process::id()));
    std::fs::write(&path, pem).unwrap();
    path
}

/// `tollgate <args>` reaching DynamoDB only at `endpoint`, trusting only the roots in
/// `ca_file` (a missing `SSL_CERT_DIR` keeps the machine's own roots out).
fn tollgate(endpoint: &str, ca_file: &PathBuf, prefix: &str, args: &[&str]) -> Output {
    crate::tollgate_at(endpoint)
        .env("SSL_CERT_DIR", "/nonexistent")
        .env("SSL_CERT_FILE", ca_file)
        .env("TOLLGATE_TABLE_PREFIX", prefix)
        .args(args)
        .output()
        .expect("the tollgate binary runs")
}

// Multi-threaded: the proxy's tasks run on the workers while this thread waits for the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_reach_dynamodb_over_tls_and_refuse_an_untrusted_certificate() {
    let Some(moto) = tollgate_tests::moto::endpoint("CLI TLS suite") else {
        return;
    };
    let proxy = TlsProxy::start(moto.trim_start_matches("http://").parse().unwrap()).await;
    let ca = ca_file("test-ca", TEST_CA_PEM);
    let other_ca = ca_file("other-ca", OTHER_CA_PEM);
    let prefix = format!(
        "clitls{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_subsec_nanos()
    );

    let refused = tollgate(
        &proxy.url(),
        &other_ca,
        &prefix,
        &["init", "--prefix", &prefix],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(proxy.failed_handshakes().await >= 1);

    let init = tollgate(&proxy.url(), &ca, &prefix, &["init", "--prefix", &prefix]);
    assert!(init.status.success(), "{init:?}");
    let created = tollgate(
        &proxy.url(),
        &ca,
        &prefix,
        &[
            "tenant",
            "create",
            "acme",
            "--name",
            "Acme",
            "--tier",
            "pro",
            "--route",
            "fast=openai:gpt-4o-mini",
        ],
    );
    assert!(created.status.success(), "{created:?}");
    assert_eq!(
        String::from_utf8_lossy(&created.stdout),
        "created tenant `acme` (version 1)\n"
    );
    assert!(proxy.handshakes() >= 2);
    let _ = std::fs::remove_file(ca);
    let _ = std::fs::remove_file(other_ca);
}
