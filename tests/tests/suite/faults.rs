#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Provider faults through the whole invoke path: each has a designed behaviour, and every
//! call that reached a provider is metered.

use std::time::Duration;

use rust_decimal_macros::dec;
use tollgate::domain::tenant::{ProviderKind, Route, RouteKind};
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
            fallbacks: Vec::new(),
            provider: tollgate::domain::tenant::ProviderKind::Openai,
            model: "gpt-unpriced".into(),
            fine_tuned: false,
            kind: RouteKind::Chat,
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

/// globex with extra routes `logical → (provider, provider model)`.
async fn with_routes(gw: &Gateway, routes: &[(&str, ProviderKind, &str)]) {
    let mut config = tollgate::demo::globex_config().unwrap();
    for (logical, provider, model) in routes {
        config.routes.insert(
            (*logical).into(),
            Route {
                fallbacks: Vec::new(),
                provider: *provider,
                model: (*model).into(),
                fine_tuned: false,
                kind: RouteKind::Chat,
            },
        );
    }
    tollgate::ports::TenantAdmin::put_tenant_config(gw.store.as_ref(), config)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dated_snapshot_is_billed_at_its_own_price_and_an_unlisted_one_is_refused() {
    let (openai, _a, gw) = gateway().await;
    with_routes(
        &gw,
        &[
            ("may", ProviderKind::Openai, "gpt-4o-2024-05-13"),
            ("august", ProviderKind::Openai, "gpt-4o-2024-08-06"),
            ("unlisted", ProviderKind::Openai, "gpt-4.1-2025-04-14"),
        ],
    )
    .await;

    // 20 prompt and 6 completion tokens (the stand-in's default usage).
    let res = gw.chat("globex", chat_body("may", "q")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = gw.chat("globex", chat_body("august", "q")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let events = gw.wait_for_usage_events(2).await;
    let cost = |model: &str| {
        events
            .iter()
            .find(|e| e.model_requested == model)
            .unwrap()
            .cost_usd
    };
    // $5 / $15 per 1M, not gpt-4o's $2.50 / $10 (which would be 0.00011).
    assert_eq!(cost("may"), dec!(0.00019));
    // Listed as an alias of gpt-4o: gpt-4o's price.
    assert_eq!(cost("august"), dec!(0.00011));

    let res = gw.chat("globex", chat_body("unlisted", "q")).await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.json()["error"]["code"], "model_price_missing");
    let message = res.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("gpt-4.1-2025-04-14"), "{message}");
    assert_eq!(
        openai.requests().len(),
        2,
        "the unpriced call reached the provider"
    );
}

#[tokio::test]
async fn a_non_ascii_provider_model_is_refused_as_unpriced_not_a_panic() {
    let (openai, anthropic, gw) = gateway().await;
    // Names whose trailing bytes start inside a multi-byte character.
    let names = [
        "claude-ß-2025100é",
        "日本語モデル",
        "😀😀😀",
        "modèle-2024-08-0é",
    ];
    let routes: Vec<(String, ProviderKind, &str)> = names
        .iter()
        .enumerate()
        .flat_map(|(i, name)| {
            [
                (format!("o{i}"), ProviderKind::Openai, *name),
                (format!("a{i}"), ProviderKind::Anthropic, *name),
            ]
        })
        .collect();
    let borrowed: Vec<(&str, ProviderKind, &str)> = routes
        .iter()
        .map(|(l, p, m)| (l.as_str(), *p, *m))
        .collect();
    with_routes(&gw, &borrowed).await;
    for (logical, _, model) in &borrowed {
        let res = gw.chat("globex", chat_body(logical, "q")).await;
        assert_eq!(res.status, 503, "{logical}: {}", res.text());
        assert_eq!(res.json()["error"]["code"], "model_price_missing");
        assert!(res.text().contains(model), "{}", res.text());
    }
    assert!(openai.requests().is_empty() && anthropic.requests().is_empty());
}

const CANARY: &str = "canary-5xx-7d1e: upstream-db-17.internal said no";

#[tokio::test]
async fn a_providers_5xx_text_never_reaches_the_client_of_a_buffered_call() {
    let (openai, anthropic, gw) = gateway().await;
    for _ in 0..3 {
        openai.push(Behavior::error(502, CANARY));
        anthropic.push(Behavior::error(500, CANARY));
    }
    for model in ["gpt-4o", "claude-sonnet"] {
        let res = gw.chat("globex", chat_body(model, "q")).await;
        assert_eq!(res.status, 502, "{}", res.text());
        assert!(
            !res.text().contains("canary-5xx"),
            "{model}: {}",
            res.text()
        );
        assert_eq!(res.json()["error"]["code"], "upstream_error");
    }
    assert_eq!(openai.requests().len(), 3, "5xx are retried");
}

#[tokio::test]
async fn a_providers_5xx_text_never_reaches_the_client_of_a_stream() {
    let (openai, anthropic, gw) = gateway().await;
    // Refused before the first byte: retried, then an error response.
    for _ in 0..3 {
        openai.push(Behavior::error(503, CANARY));
    }
    // Failed mid-way: the deltas, then one error event.
    anthropic.push(Behavior::StreamThenErrorSaying {
        text: "Partial answer".into(),
        usage: tollgate_tests::standins::DEFAULT_USAGE,
        message: CANARY.into(),
    });
    openai.push(Behavior::StreamThenErrorSaying {
        text: "Partial answer".into(),
        usage: tollgate_tests::standins::DEFAULT_USAGE,
        message: CANARY.into(),
    });
    let stream = |model: &str| {
        let mut body = chat_body(model, "q");
        body["stream"] = serde_json::json!(true);
        body
    };

    let res = gw.chat("globex", stream("gpt-4o")).await;
    assert!(!res.text().contains("canary-5xx"), "{}", res.text());
    assert!(res.text().contains("upstream_error"), "{}", res.text());

    for model in ["claude-sonnet", "gpt-4o"] {
        let res = gw.chat("globex", stream(model)).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.sse_text(), "Partial answer");
        assert!(
            !res.text().contains("canary-5xx"),
            "{model}: {}",
            res.text()
        );
        let last = res.sse_events().pop().unwrap();
        assert_eq!(last["error"]["code"], "upstream_error", "{model}: {last}");
    }
    let events = gw.wait_for_usage_events(3).await;
    assert!(events.iter().all(|e| !e.success));
}
