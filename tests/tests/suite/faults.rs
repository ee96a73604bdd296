#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Provider faults through the whole invoke path: each has a designed behaviour, and every
//! call that reached a provider is metered.

use std::time::Duration;

use tollgate_tests::harness::{Gateway, chat_body};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

async fn gateway() -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    (openai, anthropic, gw)
}

#[tokio::test]
async fn an_upstream_429_is_retried_and_the_call_succeeds() {
    let (openai, _a, gw) = gateway().await;
    openai.push(Behavior::rate_limited(Duration::from_millis(10)));
    let res = gw.chat("globex", chat_body("gpt-4o", "q")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(openai.requests().len(), 2);
    let event = &gw.usage_events()[0];
    assert_eq!(event.attempts, 2);
    assert!(event.success);
}

#[tokio::test]
async fn a_persistent_upstream_429_is_a_429_with_retry_after_and_a_failed_event() {
    let (openai, _a, gw) = gateway().await;
    for _ in 0..3 {
        openai.push(Behavior::rate_limited(Duration::from_secs(1)));
    }
    let res = gw.chat("globex", chat_body("gpt-4o", "q")).await;
    assert_eq!(res.status, 429, "{}", res.text());
    assert_eq!(res.json()["error"]["code"], "upstream_rate_limited");
    assert!(res.header("retry-after").is_some());
    let event = &gw.usage_events()[0];
    assert!(!event.success);
    assert_eq!(
        event.error_type.map(|k| k.as_str()),
        Some("upstream_rate_limited")
    );
    assert_eq!(event.usage.total(), 0);
    assert!(event.cost_usd.is_zero());
}

#[tokio::test]
async fn upstream_5xx_are_retried_then_reported_as_502() {
    let (_o, anthropic, gw) = gateway().await;
    for _ in 0..3 {
        anthropic.push(Behavior::status(529));
    }
    let res = gw.chat("globex", chat_body("claude-sonnet", "q")).await;
    assert_eq!(res.status, 502, "{}", res.text());
    assert_eq!(res.json()["error"]["type"], "server_error");
    assert_eq!(anthropic.requests().len(), 3);
    let event = &gw.usage_events()[0];
    assert_eq!(event.attempts, 3);
    assert_eq!(event.error_type.map(|k| k.as_str()), Some("upstream_error"));
}

#[tokio::test]
async fn a_slow_provider_is_a_504_timeout() {
    let (openai, _a, gw) = gateway().await;
    for _ in 0..3 {
        openai.push(Behavior::Delay(Duration::from_secs(5)));
    }
    let res = gw.chat("globex", chat_body("gpt-4o", "q")).await;
    assert_eq!(res.status, 504, "{}", res.text());
    assert_eq!(
        gw.usage_events()[0].error_type.map(|k| k.as_str()),
        Some("timeout")
    );
}

#[tokio::test]
async fn an_upstream_rejection_is_a_400_and_not_retried() {
    let (openai, _a, gw) = gateway().await;
    openai.push(Behavior::error(
        400,
        "This model's maximum context length is 128000 tokens.",
    ));
    let res = gw.chat("globex", chat_body("gpt-4o", "q")).await;
    assert_eq!(res.status, 400);
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length")
    );
    assert_eq!(openai.requests().len(), 1);
}

#[tokio::test]
async fn a_model_without_a_price_is_refused_before_the_call() {
    let (openai, _a, gw) = gateway().await;
    let mut config = tollgate::demo::globex_config().unwrap();
    config.routes.insert(
        "mystery".into(),
        tollgate::domain::tenant::Route {
            provider: tollgate::domain::tenant::ProviderKind::Openai,
            model: "gpt-unpriced".into(),
            fine_tuned: false,
        },
    );
    tollgate::ports::TenantAdmin::put_tenant_config(gw.store.as_ref(), config)
        .await
        .unwrap();
    let res = gw.chat("globex", chat_body("mystery", "q")).await;
    assert_eq!(res.status, 503);
    assert_eq!(res.json()["error"]["code"], "model_price_missing");
    assert!(
        openai.requests().is_empty(),
        "an unpriced call reached the provider"
    );
    assert!(gw.usage_events().is_empty());
}

#[tokio::test]
async fn provider_credentials_never_reach_the_client() {
    let (openai, _a, gw) = gateway().await;
    openai.push(Behavior::status(401));
    let res = gw.chat("globex", chat_body("gpt-4o", "q")).await;
    assert_eq!(res.status, 502);
    assert!(
        !res.text()
            .contains(tollgate_tests::harness::OPENAI_TEST_KEY)
    );
    assert_eq!(
        openai.last_request().header("authorization"),
        Some(format!("Bearer {}", tollgate_tests::harness::OPENAI_TEST_KEY).as_str())
    );
}
