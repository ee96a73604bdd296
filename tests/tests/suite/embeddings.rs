#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! `POST /v1/embeddings` through the real invoke handler: routed through the tenant's
//! embeddings routes only, sent through the real OpenAI adapter to its stand-in, priced
//! exactly, metered once, limited with the tenant's windows, observed with one metrics line.

use base64::Engine;
use http::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tollgate::domain::limits::LimitOverrides;
use tollgate::domain::tenant::{ProviderKind, Route, RouteKind};
use tollgate::ports::TenantAdmin;
use tollgate::tokenizer::count_tokens;
use tollgate_tests::harness::{Gateway, TestResponse, chat_body};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

const MODEL: &str = "text-embedding-3-small";

async fn embed(gw: &Gateway, tenant: &str, body: Value) -> TestResponse {
    gw.call(tenant, Method::POST, "/v1/embeddings", Some(body))
        .await
}

async fn standin_gateway() -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    (openai, anthropic, gw)
}

/// text-embedding-3-small's bundled price: $0.02 per 1M input tokens.
fn cost(tokens: u64) -> Decimal {
    Decimal::from(tokens) * Decimal::new(2, 2) / Decimal::from(1_000_000)
}

#[tokio::test]
async fn an_embeddings_call_is_sent_upstream_priced_exactly_metered_once_and_observed() {
    let (openai, _anthropic, gw) = standin_gateway().await;
    let texts = ["Refunds within 30 days.", "Launch windows open at dawn."];
    let res = embed(
        &gw,
        "acme",
        json!({"model": MODEL, "input": texts, "dimensions": 64, "user": "u-1"}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    let tokens: u64 = texts.iter().map(|t| count_tokens(t) as u64).sum();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], MODEL);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": tokens, "total_tokens": tokens})
    );
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, datum) in data.iter().enumerate() {
        assert_eq!(datum["object"], "embedding");
        assert_eq!(datum["index"], i);
        assert_eq!(datum["embedding"].as_array().unwrap().len(), 64);
    }

    // Upstream: the route's model, the inputs, the length asked for, floats, the key.
    let sent = openai.embedding_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["model"], MODEL);
    assert_eq!(sent[0].body["input"], json!(texts));
    assert_eq!(sent[0].body["dimensions"], 64);
    assert_eq!(sent[0].body["encoding_format"], "float");
    assert!(sent[0].headers.contains_key("authorization"));

    let events = gw.usage_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.model_requested, MODEL);
    assert_eq!(event.model_served, MODEL);
    assert_eq!(event.provider, ProviderKind::Openai);
    assert_eq!(event.usage.prompt_tokens, tokens);
    assert_eq!(event.usage.completion_tokens, 0);
    assert_eq!(event.cost_usd, cost(tokens));
    assert!(event.success);
    assert_eq!(
        event.request_id.to_string(),
        res.header("x-request-id").unwrap()
    );

    let metrics = gw.request_metrics();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].model.as_deref(), Some(MODEL));
    assert_eq!(metrics[0].status, 200);
    assert_eq!(metrics[0].cost_usd, cost(tokens));
    assert_eq!(metrics[0].usage.prompt_tokens, tokens);
}

#[tokio::test]
async fn base64_vectors_are_the_float_vectors_and_token_arrays_are_passed_through() {
    let (openai, _anthropic, gw) = standin_gateway().await;
    let floats = embed(&gw, "acme", json!({"model": MODEL, "input": "rockets"})).await;
    let encoded = embed(
        &gw,
        "acme",
        json!({"model": MODEL, "input": "rockets", "encoding_format": "base64"}),
    )
    .await;
    let expected: Vec<f32> =
        serde_json::from_value(floats.json()["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(
        expected.len(),
        1536,
        "the model's own length when none is asked"
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.json()["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, expected);

    let ids = embed(
        &gw,
        "acme",
        json!({"model": MODEL, "input": [[101, 202, 303], [404, 505]]}),
    )
    .await;
    assert_eq!(ids.status, 200, "{}", ids.text());
    assert_eq!(ids.json()["usage"]["prompt_tokens"], 5);
    let sent = openai.embedding_requests();
    // The base64 request was served from acme's response cache (the same vectors).
    assert_eq!(sent.len(), 2);
    assert_eq!(encoded.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(sent[1].body["input"], json!([[101, 202, 303], [404, 505]]));
    assert_eq!(gw.usage_events().len(), 3);
}

#[tokio::test]
async fn a_route_serves_only_its_own_endpoint_and_unknown_models_are_not_found() {
    let (openai, _anthropic, gw) = standin_gateway().await;
    let chat_on_embeddings = gw.chat("acme", chat_body(MODEL, "hello")).await;
    assert_eq!(chat_on_embeddings.status, 400);
    assert_eq!(chat_on_embeddings.json()["error"]["param"], "model");
    assert!(
        chat_on_embeddings.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST /v1/embeddings")
    );
    let embeddings_on_chat = embed(&gw, "acme", json!({"model": "gpt-4o", "input": "x"})).await;
    assert_eq!(embeddings_on_chat.status, 400);
    assert_eq!(embeddings_on_chat.json()["error"]["param"], "model");
    // globex routes no embeddings model: acme's route is not globex's.
    let foreign = embed(&gw, "globex", json!({"model": MODEL, "input": "x"})).await;
    assert_eq!(foreign.status, 404);
    let unknown = embed(&gw, "acme", json!({"model": "made-up", "input": "x"})).await;
    assert_eq!(unknown.status, 404);

    assert!(openai.embedding_requests().is_empty());
    assert!(openai.requests().is_empty());
    assert!(gw.usage_events().is_empty());
    // Every request has its metrics line; a model the tenant does not route is never a
    // dimension.
    let metrics = gw.request_metrics();
    assert_eq!(metrics.len(), 4);
    assert!(
        metrics
            .iter()
            .all(|m| m.model.as_deref() != Some("made-up"))
    );
}

#[tokio::test]
async fn bad_bodies_and_bad_keys_are_refused_before_any_call() {
    let (openai, _anthropic, gw) = standin_gateway().await;
    for (body, param) in [
        (json!({"model": MODEL}), Value::from("input")),
        (json!({"model": MODEL, "input": []}), Value::from("input")),
        (
            json!({"model": MODEL, "input": ["ok", ""]}),
            Value::from("input"),
        ),
        (
            json!({"model": MODEL, "input": "x", "dimensions": 0}),
            Value::from("dimensions"),
        ),
        (
            json!({"model": MODEL, "input": "x", "encoding_format": "int8"}),
            Value::from("encoding_format"),
        ),
    ] {
        let res = embed(&gw, "acme", body.clone()).await;
        assert_eq!(res.status, 400, "{body}");
        assert_eq!(res.json()["error"]["param"], param, "{body}");
        assert_eq!(res.json()["error"]["type"], "invalid_request_error");
    }
    let req = http::Request::builder()
        .method(Method::POST)
        .uri("/v1/embeddings")
        .header("authorization", "Bearer tg_live_not-a-key")
        .body(bytes::Bytes::from(
            json!({"model": MODEL, "input": "x"}).to_string(),
        ))
        .unwrap();
    assert_eq!(gw.send(req).await.status, 401);
    assert!(openai.embedding_requests().is_empty());
    assert!(gw.usage_events().is_empty());
    assert_eq!(gw.request_metrics().len(), 6);
}

#[tokio::test]
async fn embeddings_count_against_the_tenants_tokens_per_minute() {
    let (openai, _anthropic, gw) = standin_gateway().await;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.limits = LimitOverrides {
        tokens_per_minute: Some(100),
        ..Default::default()
    };
    gw.store.put_tenant_config(config).await.unwrap();
    // 60 tokens each: the first fits, the second would pass 100.
    let input = vec![7u32; 60];
    let first = embed(&gw, "acme", json!({"model": MODEL, "input": [input]})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    // Other inputs (the same ones would be a cache hit, which reserves nothing).
    let other = vec![8u32; 60];
    let second = embed(&gw, "acme", json!({"model": MODEL, "input": [other]})).await;
    assert_eq!(second.status, 429, "{}", second.text());
    assert!(second.header("retry-after").is_some());
    assert_eq!(openai.embedding_requests().len(), 1);
    assert_eq!(gw.usage_events().len(), 1);
}

#[tokio::test]
async fn a_refused_call_costs_nothing_and_gives_its_tokens_back() {
    let (openai, _anthropic, gw) = standin_gateway().await;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.limits = LimitOverrides {
        tokens_per_minute: Some(100),
        ..Default::default()
    };
    gw.store.put_tenant_config(config).await.unwrap();
    let input = json!({"model": MODEL, "input": [vec![7u32; 60]]});
    openai.push_embeddings(Behavior::Error {
        status: 400,
        message: "bad input".into(),
    });
    let refused = embed(&gw, "acme", input.clone()).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(gw.usage_events().is_empty());
    // Its 60 tokens were given back: the next call of 60 still fits under 100.
    let next = embed(&gw, "acme", input).await;
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(gw.usage_events().len(), 1);
    assert_eq!(openai.embedding_requests().len(), 2);
}

#[tokio::test]
async fn an_embeddings_route_to_anthropic_is_refused_without_a_call() {
    let (openai, anthropic, gw) = standin_gateway().await;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.routes.insert(
        "claude-embed".into(),
        Route {
            fallbacks: Vec::new(),
            provider: ProviderKind::Anthropic,
            model: "claude-haiku-4-5".into(),
            fine_tuned: false,
            kind: RouteKind::Embeddings,
        },
    );
    gw.store.put_tenant_config(config).await.unwrap();
    let res = embed(&gw, "acme", json!({"model": "claude-embed", "input": "x"})).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.text().contains("no embeddings API"), "{}", res.text());
    assert!(anthropic.requests().is_empty());
    assert!(openai.embedding_requests().is_empty());
    assert!(gw.usage_events().is_empty());
}

#[tokio::test]
async fn the_simulated_provider_answers_deterministically() {
    let gw = Gateway::simulated().await;
    let body =
        json!({"model": MODEL, "input": ["same words here", "other text"], "dimensions": 32});
    let a = embed(&gw, "acme", body.clone()).await.json();
    let b = embed(&gw, "acme", body).await.json();
    assert_eq!(a["data"], b["data"]);
    assert_eq!(a["data"][0]["embedding"].as_array().unwrap().len(), 32);
    let short = embed(
        &gw,
        "acme",
        json!({"model": MODEL, "input": "x y", "dimensions": 3}),
    )
    .await;
    assert_eq!(
        short.json()["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let events = gw.usage_events();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0].cost_usd,
        cost(events[0].usage.prompt_tokens),
        "priced like the real provider"
    );
}

/// acme's response cache serves repeated embeddings: the same vectors without a provider call,
/// recorded as a $0 cache hit; a change of inputs, `dimensions` or tenant misses; `no-cache`
/// bypasses; the encoding format shares the entry.
#[tokio::test]
async fn the_response_cache_serves_repeated_embeddings_per_tenant() {
    let (openai, _anthropic, gw) = standin_gateway().await;
    let body = json!({"model": MODEL, "input": ["Refunds within 30 days."], "dimensions": 16});
    let first = embed(&gw, "acme", body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    let hit = embed(&gw, "acme", body.clone()).await;
    assert_eq!(hit.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(
        hit.json()["data"],
        first.json()["data"],
        "the same vectors, bit for bit"
    );
    assert_eq!(hit.json()["usage"], first.json()["usage"]);
    assert_eq!(
        openai.embedding_requests().len(),
        1,
        "no provider call for the hit"
    );
    let events = gw.usage_events();
    let hit_id = hit.header("x-request-id").unwrap();
    let event = events
        .iter()
        .find(|e| e.request_id.as_str() == hit_id)
        .unwrap();
    assert!(event.cache_hit);
    assert_eq!(event.cost_usd, Decimal::ZERO);
    assert_eq!(event.usage.prompt_tokens, 0);

    // base64 is the same vectors: the same entry.
    let mut b64 = body.clone();
    b64["encoding_format"] = json!("base64");
    let encoded = embed(&gw, "acme", b64).await;
    assert_eq!(encoded.header("x-tollgate-cache"), Some("hit"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.json()["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let first_float = f32::from_le_bytes(bytes[..4].try_into().unwrap());
    assert_eq!(
        Value::from(first_float),
        first.json()["data"][0]["embedding"][0]
    );

    let mut other_dims = body.clone();
    other_dims["dimensions"] = json!(32);
    assert_eq!(
        embed(&gw, "acme", other_dims)
            .await
            .header("x-tollgate-cache"),
        Some("miss")
    );
    let mut other_text = body.clone();
    other_text["input"] = json!(["Refunds within 31 days."]);
    assert_eq!(
        embed(&gw, "acme", other_text)
            .await
            .header("x-tollgate-cache"),
        Some("miss")
    );
    let bypass = gw
        .send(
            http::Request::builder()
                .method(Method::POST)
                .uri("/v1/embeddings")
                .header("authorization", format!("Bearer {}", gw.key("acme")))
                .header("cache-control", "no-cache")
                .body(bytes::Bytes::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(bypass.header("x-tollgate-cache"), Some("bypass"));
    assert_eq!(openai.embedding_requests().len(), 4);
}
