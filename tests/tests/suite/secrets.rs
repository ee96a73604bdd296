//! Provider and Qdrant keys from Secrets Manager (moto): read on first use, cached, re-read
//! after the provider refuses a rotated key, and never printed.
//!
//! Needs moto: `TOLLGATE_TEST_DYNAMODB_ENDPOINT` (the same moto server serves Secrets Manager;
//! `infra/test.sh` starts it). Without it these tests skip locally and fail under `CI=true`.

// Test helpers outside #[test] functions panic on setup failures by design.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use secrecy::ExposeSecret;
use serde_json::json;
use tollgate::adapters::api_key::ApiKey;
use tollgate::adapters::qdrant::QdrantIndex;
use tollgate::adapters::secrets_manager::SecretsManagerSource;
use tollgate::domain::ids::TenantId;
use tollgate::ports::secrets::{SecretError, SecretSource};
use tollgate::ports::vector::{IndexError, VectorIndex};
use tollgate_tests::harness::{Gateway, chat_body, settings};
use tollgate_tests::qdrant_standin::QdrantStandIn;
use tollgate_tests::standins::{AnthropicStandIn, Behavior, OpenAiStandIn};

fn moto_endpoint() -> Option<String> {
    tollgate_tests::moto::endpoint("Secrets Manager tests")
}

fn admin_client(endpoint: &str) -> Client {
    Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(endpoint)
            .http_client(tollgate::adapters::tls::aws_http_client())
            .build(),
    )
}

/// A secret name of this test's own, so tests share one moto.
fn unique(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "tollgate-test/{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn create_secret(client: &Client, name: &str, value: &str) {
    client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("secret created in moto");
}

async fn put_secret(client: &Client, name: &str, value: &str) {
    client
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .expect("secret value updated in moto");
}

/// A gateway on the provider stand-ins whose keys come from the JSON secret `secret_id`.
async fn gateway_with_managed_keys(
    source: Arc<SecretsManagerSource>,
    secret_id: &str,
    openai: &OpenAiStandIn,
    anthropic: &AnthropicStandIn,
) -> Gateway {
    let mut s = settings(&[
        ("TOLLGATE_PROVIDERS", "real".into()),
        ("OPENAI_API_KEY", "placeholder-replaced-below".into()),
        ("OPENAI_BASE_URL", openai.base_url()),
        ("ANTHROPIC_API_KEY", "placeholder-replaced-below".into()),
        ("ANTHROPIC_BASE_URL", anthropic.base_url()),
    ]);
    s.retry.base_delay = Duration::from_millis(5);
    for (settings, field) in [
        (s.openai.as_mut(), "OPENAI_API_KEY"),
        (s.anthropic.as_mut(), "ANTHROPIC_API_KEY"),
    ] {
        settings.expect("provider configured").api_key = ApiKey::managed(
            source.clone(),
            secret_id,
            Some(field.to_owned()),
            Duration::from_secs(300),
        );
    }
    Gateway::build(s).await
}

#[tokio::test]
async fn secrets_manager_reads_a_secret_and_names_a_missing_one() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    let admin = admin_client(&endpoint);
    let name = unique("plain");
    create_secret(&admin, &name, "qdrant-key-0123456789").await;
    let source = SecretsManagerSource::emulator(&endpoint);
    assert_eq!(
        source.secret(&name).await.unwrap().expose_secret(),
        "qdrant-key-0123456789"
    );
    let missing = source.secret(&unique("never-created")).await.unwrap_err();
    assert!(matches!(missing, SecretError::Missing(_)), "{missing:?}");
    assert_eq!(source.reads(), 2);
}

#[tokio::test]
async fn chat_reads_provider_keys_from_secrets_manager_once_on_first_use() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    let admin = admin_client(&endpoint);
    let name = unique("providers");
    create_secret(
        &admin,
        &name,
        &json!({"OPENAI_API_KEY": "sk-from-secrets-manager-1", "ANTHROPIC_API_KEY": "sk-ant-from-secrets-manager-1"})
            .to_string(),
    )
    .await;
    let (openai, anthropic) = (
        OpenAiStandIn::start().await,
        AnthropicStandIn::start().await,
    );
    let source = Arc::new(SecretsManagerSource::emulator(&endpoint));
    let gateway = gateway_with_managed_keys(source.clone(), &name, &openai, &anthropic).await;
    assert_eq!(source.reads(), 0, "building the gateway reads no secret");

    for i in 0..5 {
        let response = gateway
            .chat("acme", chat_body("gpt-4o-mini", &format!("question {i}")))
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        let response = gateway
            .chat("acme", chat_body("claude-haiku", &format!("question {i}")))
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    // One read per provider key (each caches its own field), not one per request.
    assert_eq!(source.reads(), 2);
    assert!(
        openai
            .requests()
            .iter()
            .all(|r| { r.header("authorization") == Some("Bearer sk-from-secrets-manager-1") })
    );
    assert!(
        anthropic
            .requests()
            .iter()
            .all(|r| r.header("x-api-key") == Some("sk-ant-from-secrets-manager-1"))
    );
}

#[tokio::test]
async fn a_rotated_provider_key_is_read_again_after_the_provider_refuses_the_old_one() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    let admin = admin_client(&endpoint);
    let name = unique("rotation");
    create_secret(
        &admin,
        &name,
        &json!({"OPENAI_API_KEY": "sk-old-0123456789", "ANTHROPIC_API_KEY": "sk-ant-x-0123456789"})
            .to_string(),
    )
    .await;
    let (openai, anthropic) = (
        OpenAiStandIn::start().await,
        AnthropicStandIn::start().await,
    );
    let source = Arc::new(SecretsManagerSource::emulator(&endpoint));
    let gateway = gateway_with_managed_keys(source.clone(), &name, &openai, &anthropic).await;

    let first = gateway
        .chat("acme", chat_body("gpt-4o-mini", "before rotation"))
        .await;
    assert_eq!(first.status, 200, "{}", first.text());

    // The operator rotates the key; the provider now refuses the old one.
    put_secret(
        &admin,
        &name,
        &json!({"OPENAI_API_KEY": "sk-new-0123456789", "ANTHROPIC_API_KEY": "sk-ant-x-0123456789"})
            .to_string(),
    )
    .await;
    openai.push(Behavior::status(401));
    let refused = gateway
        .chat("acme", chat_body("gpt-4o-mini", "during rotation"))
        .await;
    assert!(refused.status.is_server_error(), "{}", refused.text());
    assert!(!refused.text().contains("sk-old") && !refused.text().contains("sk-new"));

    let after = gateway
        .chat("acme", chat_body("gpt-4o-mini", "after rotation"))
        .await;
    assert_eq!(after.status, 200, "{}", after.text());
    let last = openai.last_request();
    assert_eq!(
        last.header("authorization"),
        Some("Bearer sk-new-0123456789")
    );
    assert_eq!(source.reads(), 2, "one read, then one after the refusal");
}

#[tokio::test]
async fn a_secret_without_the_providers_field_fails_that_provider_only_and_quotes_nothing() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    let admin = admin_client(&endpoint);
    let name = unique("openai-only");
    create_secret(
        &admin,
        &name,
        &json!({"OPENAI_API_KEY": "sk-only-openai-0123456789"}).to_string(),
    )
    .await;
    let (openai, anthropic) = (
        OpenAiStandIn::start().await,
        AnthropicStandIn::start().await,
    );
    let source = Arc::new(SecretsManagerSource::emulator(&endpoint));
    let gateway = gateway_with_managed_keys(source, &name, &openai, &anthropic).await;

    let ok = gateway.chat("acme", chat_body("gpt-4o-mini", "hi")).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let failed = gateway.chat("acme", chat_body("claude-haiku", "hi")).await;
    assert!(failed.status.is_server_error(), "{}", failed.text());
    // The tenant learns the provider's credentials failed, not where they are kept.
    let message = failed.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("credentials"), "{message}");
    assert!(!message.contains(&name), "{message}");
    assert!(!failed.text().contains("sk-only-openai"));
    assert!(anthropic.requests().is_empty(), "no call without a key");
}

#[tokio::test]
async fn qdrant_reads_its_api_key_from_secrets_manager_when_it_first_connects() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    let admin = admin_client(&endpoint);
    let name = unique("qdrant");
    create_secret(&admin, &name, "qdrant-cloud-key-1").await;
    let qdrant = QdrantStandIn::start().await;
    qdrant.require_api_key("qdrant-cloud-key-1");
    let source = Arc::new(SecretsManagerSource::emulator(&endpoint));
    let key = ApiKey::managed(source.clone(), &name, None, Duration::from_secs(300));
    let index = QdrantIndex::new(&qdrant.url(), Some(key), "chunks").unwrap();
    assert_eq!(source.reads(), 0, "construction reads no secret");

    let tenant = TenantId::parse("acme").unwrap();
    index.ensure_ready(8).await.unwrap();
    assert_eq!(index.count(&tenant).await.unwrap(), 0);
    assert_eq!(source.reads(), 1);

    // Rotation: Qdrant refuses the old key once; the index re-reads and reconnects.
    put_secret(&admin, &name, "qdrant-cloud-key-2").await;
    qdrant.require_api_key("qdrant-cloud-key-2");
    assert!(matches!(
        index.count(&tenant).await,
        Err(IndexError::Unavailable(_))
    ));
    assert_eq!(index.count(&tenant).await.unwrap(), 0);
    assert_eq!(source.reads(), 2);
    let seen = qdrant.api_keys_seen();
    assert_eq!(
        seen.last().cloned().flatten().as_deref(),
        Some("qdrant-cloud-key-2")
    );
    assert!(
        !format!("{index:?}").contains("qdrant-cloud-key"),
        "Debug never shows the key"
    );
}
