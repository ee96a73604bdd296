//! Upstream quotas per key of a provider's key pool, end to end: quotas set in the store as
//! `tollgate quota set … --key N` sets them, the real OpenAI adapter with a pool of two keys,
//! and the stand-in recording which key each call carried.
//!
//! The bound: a call is reserved on one key's quota and goes out on that key alone, so no
//! key is sent more than its quota admits, a 429 on it never moves the call onto another key
//! whose quota was not reserved, and when no key has room the client gets a 429 before any
//! provider call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use http::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tollgate::domain::limits::UpstreamQuota;
use tollgate::domain::tenant::ProviderKind;
use tollgate::domain::usage::TokenUsage;
use tollgate::ports::store::Catalog;
use tollgate_tests::harness::{Gateway, chat_body, standin_settings};
use tollgate_tests::standins::{DEFAULT_REPLY_TEXT, RecordedRequest};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

const KEYS: [&str; 2] = ["sk-quota-key-zero-0000", "sk-quota-key-one-11111"];

/// acme's `gpt-4o-mini` route.
const CHAT_MODEL: &str = "gpt-4o-mini";
const EMBEDDING_MODEL: &str = "text-embedding-3-small";

/// The stand-ins live as long as the returned handles.
async fn pooled_gateway(
    quotas: &[(&str, Option<u16>, u64)],
) -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let mut settings = standin_settings(&openai, &anthropic);
    settings.openai.as_mut().expect("openai configured").api_key =
        format!("{},{}", KEYS[0], KEYS[1]).into();
    let gw = Gateway::build(settings).await;
    for &(model, key, tpm) in quotas {
        gw.store
            .put_upstream_quota(&UpstreamQuota {
                provider: ProviderKind::Openai,
                model: model.into(),
                key,
                tokens_per_minute: tpm,
            })
            .await
            .unwrap();
    }
    (openai, anthropic, gw)
}

fn key_of(request: &RecordedRequest) -> &str {
    request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("a bearer key")
}

fn keys_sent(openai: &OpenAiStandIn) -> Vec<String> {
    openai
        .requests()
        .iter()
        .map(|r| key_of(r).to_owned())
        .collect()
}

fn capped(content: &str, max_tokens: u32) -> Value {
    let mut body = chat_body(CHAT_MODEL, content);
    body["max_tokens"] = json!(max_tokens);
    body
}

#[tokio::test]
async fn each_call_is_pinned_to_a_key_with_room_and_none_left_is_a_429_before_any_call() {
    // Room for one 1,000-token request per key, not two: each call reserves its prompt plus
    // its cap and is settled to the 1,400 tokens the provider reports.
    let (openai, _anthropic, gw) =
        pooled_gateway(&[(CHAT_MODEL, Some(0), 1_500), (CHAT_MODEL, Some(1), 1_500)]).await;
    let heavy = TokenUsage {
        prompt_tokens: 400,
        completion_tokens: 1_000,
        ..TokenUsage::default()
    };
    for _ in 0..2 {
        openai.push(Behavior::reply(DEFAULT_REPLY_TEXT, heavy));
    }
    let first = gw.chat("acme", capped("first", 1_000)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let streamed = gw
        .chat(
            "acme",
            json!({"model": CHAT_MODEL, "stream": true, "max_tokens": 1_000,
                   "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "second"}]}),
        )
        .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let mut sent = keys_sent(&openai);
    sent.sort();
    assert_eq!(sent, [KEYS[1], KEYS[0]], "one call on each key");

    // Neither key has room for 1,000 more tokens: refused before the provider is asked,
    // though the two keys together (200) would not fit it either, and a single key's quota
    // (1,500) is less than a 2,000-token request on an idle pool.
    let refused = gw.chat("acme", capped("third", 1_000)).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("every openai key"), "{message}");
    assert!(message.contains("not your own limit"), "{message}");
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=70).contains(&wait), "{wait}");
    assert_eq!(openai.requests().len(), 2);
    // A request small enough for what one key has left still goes out, on that key.
    let small = gw.chat("acme", capped("fourth", 50)).await;
    assert_eq!(small.status, 200, "{}", small.text());
    assert_eq!(openai.requests().len(), 3);
    for key in KEYS {
        assert!(!refused.text().contains(key));
    }
    // The three calls made are metered once each.
    let events = gw.wait_for_usage_events(3).await;
    assert_eq!(
        events.iter().map(|e| e.success).collect::<Vec<_>>(),
        [true; 3],
        "{events:?}"
    );
}

#[tokio::test]
async fn a_request_no_single_key_can_hold_is_refused_even_when_the_pool_could() {
    let (openai, _anthropic, gw) =
        pooled_gateway(&[(CHAT_MODEL, Some(0), 1_500), (CHAT_MODEL, Some(1), 1_500)]).await;
    let res = gw.chat("acme", capped("too big for a key", 2_000)).await;
    assert_eq!(res.status, 429, "{}", res.text());
    assert!(res.text().contains("every openai key"), "{}", res.text());
    assert!(openai.requests().is_empty());
}

#[tokio::test]
async fn a_429_on_the_pinned_key_is_retried_on_that_key_and_never_moved_to_another() {
    // Only key 0 has room for a request: every call is pinned to it.
    let (openai, _anthropic, gw) =
        pooled_gateway(&[(CHAT_MODEL, Some(0), 1_000_000), (CHAT_MODEL, Some(1), 10)]).await;
    openai.push(Behavior::rate_limited(Duration::from_millis(20)));
    let res = gw.chat("acme", capped("pinned", 100)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // An unpinned pool moves a 429 to the next key at once ([K0, K1]); pinned, the retry
    // policy tries the same key again.
    assert_eq!(keys_sent(&openai), [KEYS[0], KEYS[0]]);
    let events = gw.wait_for_usage_events(1).await;
    assert_eq!(events.len(), 1, "one event per request");
    assert_eq!(events[0].attempts, 2);
}

#[tokio::test]
async fn embeddings_go_out_on_the_key_their_reservation_holds() {
    let (openai, _anthropic, gw) = pooled_gateway(&[(EMBEDDING_MODEL, Some(1), 1_000_000)]).await;
    for text in ["Refunds within 30 days.", "Launch windows open at dawn."] {
        let res = gw
            .call(
                "acme",
                Method::POST,
                "/v1/embeddings",
                Some(json!({"model": EMBEDDING_MODEL, "input": [text]})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    // Taking turns would have sent [K0, K1].
    let keys: Vec<String> = openai
        .embedding_requests()
        .iter()
        .map(|r| key_of(r).to_owned())
        .collect();
    assert_eq!(keys, [KEYS[1], KEYS[1]]);
}

#[tokio::test]
async fn a_429_storm_on_the_pinned_key_moves_to_the_routes_fallback_never_to_another_key() {
    // Only key 0 has room; acme's route fails over to Claude Haiku. A storm on key 0 is
    // retried on key 0 alone, then served by the fallback (whose call no key pin binds).
    let (openai, anthropic, gw) =
        pooled_gateway(&[(CHAT_MODEL, Some(0), 1_000_000), (CHAT_MODEL, Some(1), 10)]).await;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.response_cache.enabled = false;
    config.routes.get_mut(CHAT_MODEL).unwrap().fallbacks = vec![tollgate::domain::tenant::Target {
        provider: ProviderKind::Anthropic,
        model: "claude-haiku-4-5".into(),
    }];
    tollgate::ports::TenantAdmin::put_tenant_config(gw.store.as_ref(), config)
        .await
        .unwrap();
    for _ in 0..3 {
        openai.push(Behavior::rate_limited(Duration::ZERO));
    }
    let res = gw.chat("acme", capped("storm", 100)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.header("x-tollgate-served-by"),
        Some("anthropic/claude-haiku-4-5")
    );
    assert_eq!(keys_sent(&openai), [KEYS[0], KEYS[0], KEYS[0]]);
    assert_eq!(anthropic.requests().len(), 1);
    let events = gw.wait_for_usage_events(1).await;
    assert_eq!(events.len(), 1, "one event per request");
    assert_eq!(events[0].provider, ProviderKind::Anthropic);
    assert_eq!(events[0].attempts, 4);
}
