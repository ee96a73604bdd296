//! The one TLS stack (`tollgate::adapters::tls`: rustls on ring) against a real TLS server on
//! loopback: a [`TlsProxy`] with a test CA in front of the provider stand-in and moto.
//!
//! Each client completes a handshake and a request when told to trust the test CA, and refuses
//! the same server when it only has the system's roots, so certificate checks are on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use serde_json::Value;
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::adapters::http_provider::ProviderSettings;
use tollgate::adapters::openai::OpenAiProvider;
use tollgate::adapters::tls;
use tollgate::ports::provider::{LlmProvider, ProviderErrorKind};
use tollgate_tests::OpenAiStandIn;
use tollgate_tests::fixtures::provider_request;
use tollgate_tests::harness::chat_body;
use tollgate_tests::tls_proxy::{TEST_CA_PEM, TlsProxy};

fn dynamodb(endpoint: &str, http: SharedHttpClient) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(endpoint)
            .http_client(http)
            .build(),
    )
}

#[tokio::test]
async fn reqwest_on_ring_completes_a_request_to_a_server_it_trusts() {
    let openai = OpenAiStandIn::start().await;
    let proxy = TlsProxy::start(openai.addr()).await;
    let client = tls::reqwest_builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(TEST_CA_PEM).unwrap()])
        .build()
        .unwrap();

    let reply: Value = client
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .bearer_auth("sk-test")
        .json(&chat_body("gpt-4o-mini", "Say hello over TLS."))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(reply["object"], "chat.completion", "{reply}");
    assert!(proxy.handshakes() >= 1);
    assert_eq!(openai.requests().len(), 1);
}

#[tokio::test]
async fn the_provider_adapter_refuses_a_certificate_the_system_does_not_trust() {
    let openai = OpenAiStandIn::start().await;
    let proxy = TlsProxy::start(openai.addr()).await;
    let provider = OpenAiProvider::new(&ProviderSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        ..ProviderSettings::new(format!("{}/v1", proxy.url()), "sk-test")
    })
    .unwrap();
    let request = provider_request("gpt-4o-mini");

    let err = provider.complete(&request).await.unwrap_err();

    assert_eq!(err.kind, ProviderErrorKind::Upstream, "{err:?}");
    assert!(proxy.failed_handshakes().await >= 1);
    assert!(
        openai.requests().is_empty(),
        "nothing crossed an untrusted link"
    );
}

#[tokio::test]
async fn the_aws_client_on_ring_calls_dynamodb_over_tls() {
    let Some(moto) = tollgate_tests::moto::endpoint("TLS suite") else {
        return;
    };
    let upstream = moto.trim_start_matches("http://").parse().unwrap();
    let proxy = TlsProxy::start(upstream).await;
    let client = dynamodb(
        &proxy.url(),
        tls::aws_http_client_trusting(TEST_CA_PEM).unwrap(),
    );

    let prefix = format!(
        "tls{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_subsec_nanos()
    );
    let names = TableNames::with_prefix(&prefix);
    let over_tls = DynamoStore::new(client, names.clone());

    let created = over_tls.create_tables().await.unwrap();

    assert!(created.iter().all(|table| table.created), "{created:?}");
    assert!(proxy.handshakes() >= 1);
    // They are really there: moto, asked directly over plain HTTP, finds every one.
    let again = DynamoStore::emulator(&moto, names)
        .create_tables()
        .await
        .unwrap();
    assert_eq!(again.len(), created.len());
    assert!(again.iter().all(|table| !table.created), "{again:?}");
}

#[tokio::test]
async fn the_aws_client_refuses_a_certificate_the_system_does_not_trust() {
    let openai = OpenAiStandIn::start().await;
    let proxy = TlsProxy::start(openai.addr()).await;
    let client = dynamodb(&proxy.url(), tls::aws_http_client());

    let err = client.list_tables().send().await.unwrap_err();

    assert!(
        matches!(err, aws_sdk_dynamodb::error::SdkError::DispatchFailure(_)),
        "{err:?}"
    );
    assert!(proxy.failed_handshakes().await >= 1);
    assert!(openai.requests().is_empty());
}
