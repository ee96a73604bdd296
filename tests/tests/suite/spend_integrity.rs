#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Spend integrity: every token a tenant causes goes through its limits before the call and
//! into the meter after it, at the edges where it used to escape: no `max_tokens`, timeouts,
//! the Lambda deadline, streams that fail after reporting part of their usage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};
use tollgate::domain::limits::LimitOverrides;
use tollgate::domain::usage::{TokenUsage, UsageSource};
use tollgate::lambda::PlatformDeadline;
use tollgate::ports::TenantAdmin;
use tollgate::ports::store::{CounterKey, LimiterStore};
use tollgate::tokenizer::count_tokens;
use tollgate_tests::harness::{Gateway, TestResponse, chat_body};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

async fn gateway() -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    (openai, anthropic, gw)
}

/// A chat body no response cache has seen.
fn fresh(model: &str) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    chat_body(model, &format!("spend question {n}"))
}

async fn set_globex_limits(gw: &Gateway, limits: LimitOverrides) {
    let mut config = tollgate::demo::globex_config().unwrap();
    config.limits = limits;
    gw.store.put_tenant_config(config).await.unwrap();
}

/// `POST /v1/chat/completions` as globex, inside a Lambda invocation that times out `left`
/// from now.
async fn chat_with_deadline(gw: &Gateway, body: Value, left: Duration) -> TestResponse {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", gw.key("globex")))
        .body(Bytes::from(body.to_string()))
        .unwrap();
    req.extensions_mut()
        .insert(PlatformDeadline(SystemTime::now() + left));
    gw.send(req).await
}

#[tokio::test]
async fn a_burst_without_max_tokens_consumes_no_more_than_the_limit_and_the_prompt_count_error() {
    let (openai, _anthropic, gw) = gateway().await;
    const TPM: u64 = 20_000;
    set_globex_limits(
        &gw,
        LimitOverrides {
            tokens_per_minute: Some(TPM),
            requests_per_minute: Some(1_000),
            tokens_per_day: Some(10_000_000),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..30 {
        openai.push(Behavior::WriteUntilCap);
    }
    let requests = (0..30).map(|_| gw.chat("globex", fresh("gpt-4o")));
    let responses = futures_util::future::join_all(requests).await;
    let admitted = responses.iter().filter(|r| r.status == 200).count();
    assert!(admitted > 0);
    assert!(responses.iter().all(|r| r.status == 200 || r.status == 429));

    // Every call went upstream with the reservation's cap (the default reserve, 1,024), so the
    // provider could not write past what the limiter admitted.
    let upstream = openai.requests();
    assert_eq!(upstream.len(), admitted);
    assert!(
        upstream
            .iter()
            .all(|r| r.body["max_completion_tokens"] == json!(1024)),
        "{:?}",
        upstream
            .iter()
            .map(|r| &r.body["max_completion_tokens"])
            .collect::<Vec<_>>()
    );
    let events = gw.usage_events();
    let consumed: u64 = events.iter().map(|e| e.usage.total()).sum();
    // The only way past the limit is the prompt count's error: what the provider reports for
    // a prompt against what the gateway counted when it reserved. The stand-in counts with the
    // gateway's tokenizer and its own per-message overhead, a few tokens a call at most.
    const PROMPT_COUNT_ERROR_PER_CALL: u64 = 8;
    assert!(
        consumed <= TPM + PROMPT_COUNT_ERROR_PER_CALL * admitted as u64,
        "{admitted} admitted calls consumed {consumed} tokens against a limit of {TPM}"
    );
    assert!(events.iter().all(|e| e.usage.completion_tokens == 1024));
    assert!(
        events
            .iter()
            .all(|e| e.usage_source == UsageSource::Provider)
    );
}

#[tokio::test]
async fn a_completion_that_times_out_is_sent_once_and_metered_as_its_reservation() {
    let (openai, _anthropic, gw) = gateway().await;
    set_globex_limits(
        &gw,
        LimitOverrides {
            tokens_per_minute: Some(100_000),
            ..Default::default()
        },
    )
    .await;
    // The provider answers after 6 s; the gateway gives up after 2 s (the harness timeout).
    openai.push(Behavior::Delay(Duration::from_secs(6)));
    let mut body = fresh("gpt-4o");
    body["max_tokens"] = json!(300);
    let started = Instant::now();
    let res = gw.chat("globex", body).await;
    assert_eq!(res.status, 504, "{}", res.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(res.json()["error"]["code"], "upstream_timeout");
    // Sent once: the provider had it, and may be generating (and billing) it.
    assert_eq!(openai.requests().len(), 1);

    let events = gw.usage_events();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert!(!event.success);
    assert_eq!(event.attempts, 1);
    assert_eq!(event.error_type.map(|k| k.as_str()), Some("timeout"));
    assert_eq!(event.usage_source, UsageSource::Estimated);
    assert_eq!(event.usage.completion_tokens, 300);
    assert!(event.usage.prompt_tokens > 1_000, "{:?}", event.usage);
    assert!(event.cost_usd > rust_decimal::Decimal::ZERO);

    // Not refunded: the next request sees the whole estimate still counted.
    let mut next = fresh("gpt-4o");
    next["max_tokens"] = json!(1);
    let res = gw.chat("globex", next).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let remaining: u64 = res
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    // The second reservation is its prompt (the same system prompt and a question of the same
    // shape: the first's prompt count, give or take a token) plus its max_tokens of 1.
    let expected = 100_000 - event.usage.total() - (event.usage.prompt_tokens + 1);
    assert!(
        remaining.abs_diff(expected) <= 2,
        "{remaining} vs {expected}"
    );
    let metrics = gw.request_metrics();
    assert_eq!(metrics[0].usage_source, UsageSource::Estimated);
}

#[tokio::test]
async fn a_stream_still_running_at_the_deadline_is_cut_with_an_error_event_and_metered() {
    let (openai, _anthropic, mut gw) = gateway().await;
    gw.state.deadline_margin = Duration::from_millis(1_000);
    openai.push(Behavior::Trickle {
        every: Duration::from_millis(50),
    });
    let mut body = fresh("gpt-4o");
    body["stream"] = json!(true);
    let started = Instant::now();
    // The invocation times out in 2.5 s; provider calls must end 1 s before.
    let res = chat_with_deadline(&gw, body, Duration::from_millis(2_500)).await;
    let elapsed = started.elapsed();
    assert_eq!(res.status, 200);
    assert!(
        elapsed >= Duration::from_millis(1_300) && elapsed < Duration::from_millis(2_400),
        "{elapsed:?}"
    );
    let events = res.sse_events();
    let last = events.last().unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout", "{last}");
    assert!(!res.text().contains("[DONE]"));
    let received = res.sse_text();
    assert!(received.contains(" word"), "{received}");

    let usage = gw.wait_for_usage_events(1).await;
    assert_eq!(usage.len(), 1);
    let event = &usage[0];
    assert!(!event.success);
    assert!(event.streamed);
    assert_eq!(event.error_type.map(|k| k.as_str()), Some("timeout"));
    assert_eq!(event.usage_source, UsageSource::Estimated);
    assert_eq!(
        event.usage.completion_tokens,
        count_tokens(&received) as u64
    );
    assert!(event.usage.prompt_tokens > 1_000, "{:?}", event.usage);
    assert!(event.cost_usd > rust_decimal::Decimal::ZERO);
}

#[tokio::test]
async fn a_buffered_call_still_running_at_the_deadline_fails_then_and_is_metered() {
    let (openai, _anthropic, mut gw) = gateway().await;
    gw.state.deadline_margin = Duration::from_millis(1_000);
    openai.push(Behavior::Delay(Duration::from_secs(6)));
    let mut body = fresh("gpt-4o");
    body["max_tokens"] = json!(50);
    let started = Instant::now();
    // The harness's own provider timeout is 2 s: the deadline (1.5 s from now) comes first.
    let res = chat_with_deadline(&gw, body, Duration::from_millis(2_500)).await;
    assert_eq!(res.status, 504, "{}", res.text());
    assert!(started.elapsed() < Duration::from_millis(2_000));
    assert_eq!(openai.requests().len(), 1);
    let event = &gw.usage_events()[0];
    assert_eq!(event.usage_source, UsageSource::Estimated);
    assert_eq!(event.usage.completion_tokens, 50);
}

#[tokio::test]
async fn a_request_arriving_after_its_deadline_margin_never_reaches_the_provider() {
    let (openai, _anthropic, mut gw) = gateway().await;
    gw.state.deadline_margin = Duration::from_millis(1_000);
    let res = chat_with_deadline(&gw, fresh("gpt-4o"), Duration::from_millis(500)).await;
    assert_eq!(res.status, 504, "{}", res.text());
    assert_eq!(openai.requests().len(), 0);
    let event = &gw.usage_events()[0];
    assert_eq!(event.usage_source, UsageSource::None);
    assert_eq!(event.usage.total(), 0);
}

#[tokio::test]
async fn an_anthropic_stream_that_fails_keeps_the_exact_input_and_cache_counts() {
    let (_openai, anthropic, gw) = gateway().await;
    let reported = TokenUsage {
        prompt_tokens: 9_312,
        completion_tokens: 40,
        cached_tokens: 9_000,
        cache_write_tokens: 300,
    };
    anthropic.push(Behavior::StreamThenError {
        text: "The fare rules say refunds are free within a day".into(),
        usage: reported,
    });
    let mut body = fresh("claude-sonnet");
    body["stream"] = json!(true);
    let res = gw.chat("globex", body).await;
    assert_eq!(res.status, 200);
    let received = res.sse_text();
    assert!(received.starts_with("The fare rules"), "{received}");
    assert!(res.sse_events().last().unwrap()["error"].is_object());

    let event = &gw.wait_for_usage_events(1).await[0];
    assert!(!event.success);
    assert_eq!(event.usage_source, UsageSource::Estimated);
    // message_start's counts, exactly: not a full-rate tokenizer estimate of the prompt.
    assert_eq!(event.usage.prompt_tokens, 9_312);
    assert_eq!(event.usage.cached_tokens, 9_000);
    assert_eq!(event.usage.cache_write_tokens, 300);
    // The output so far: at least what was received.
    assert!(event.usage.completion_tokens >= count_tokens(&received) as u64);
    assert!(event.usage.completion_tokens > 1);
}

#[tokio::test]
async fn a_made_up_model_name_never_becomes_a_metric_dimension() {
    let gw = Gateway::simulated().await;
    let res = gw
        .chat("globex", chat_body("canary-model-7f3a9e", "hello"))
        .await;
    assert_eq!(res.status, 404, "{}", res.text());
    let metrics = gw.request_metrics();
    let line = metrics.last().unwrap();
    assert_eq!(line.model, None);
    let doc = tollgate::adapters::emf::render(line).to_string();
    assert!(!doc.contains("canary-model-7f3a9e"), "{doc}");
    assert!(doc.contains("\"Model\":\"unknown\""), "{doc}");
}

/// A gateway whose acme tenant has one document and the given limits.
async fn grounded_gateway(limits: LimitOverrides) -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let (openai, anthropic, gw) = gateway().await;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.limits = limits;
    gw.store.put_tenant_config(config).await.unwrap();
    let doc = json!({"id": "fares", "title": "Fares", "text": "Refunds are free within a day."});
    let res = gw
        .call("acme", Method::POST, "/v1/documents", Some(doc))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    (openai, anthropic, gw)
}

fn grounded(content: &str) -> Value {
    json!({"model": "gpt-4o", "retrieval": {"top_k": 3}, "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn a_grounded_request_refused_by_its_limit_makes_no_embedding() {
    let (openai, _anthropic, gw) = grounded_gateway(LimitOverrides {
        tokens_per_minute: Some(1_100),
        ..Default::default()
    })
    .await;
    let before = gw.usage_events().len();
    // The prompt, the excerpts' budget and the reply's cap do not fit 1,100 tokens.
    let res = gw.chat("acme", grounded("When are refunds free?")).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(res.json()["error"]["code"], "request_too_large");
    assert_eq!(
        gw.usage_events().len(),
        before,
        "nothing was embedded or called"
    );
    assert!(openai.requests().is_empty());
}

#[tokio::test]
async fn a_grounded_requests_embedding_counts_against_the_tenants_tokens_per_minute() {
    let (openai, _anthropic, gw) = grounded_gateway(LimitOverrides {
        tokens_per_minute: Some(100_000),
        ..Default::default()
    })
    .await;
    openai.push(Behavior::reply(
        "Within a day.",
        TokenUsage {
            prompt_tokens: 300,
            completion_tokens: 5,
            ..TokenUsage::default()
        },
    ));
    let res = gw.chat("acme", grounded("When are refunds free?")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let events = gw.usage_events();
    let embedding = events
        .iter()
        .find(|e| e.request_id.as_str().ends_with("-retrieval"))
        .unwrap();
    let chat = events
        .iter()
        .find(|e| e.model_requested == "gpt-4o")
        .unwrap();
    // Each reconciled to what it used (the document's embedding at ingest too): the tenant's
    // minute counters hold exactly their sum.
    let counted = minute_tokens(&gw, "acme").await;
    let ingest = events
        .iter()
        .find(|e| e.request_id.as_str().ends_with("-doc0"))
        .unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(embedding.usage.prompt_tokens > 0);
    assert_eq!(
        counted,
        (ingest.usage.total() + embedding.usage.total() + chat.usage.total()) as i64
    );
}

/// The tokens `tenant`'s minute counters hold, over every bucket a reservation can have
/// written.
async fn minute_tokens(gw: &Gateway, tenant: &str) -> i64 {
    let minute = chrono::Utc::now().timestamp().div_euclid(10);
    let keys: Vec<CounterKey> = (minute - 7..=minute + 1)
        .map(|i| CounterKey(format!("t#{tenant}#m#{i}")))
        .collect();
    gw.store
        .read_counters(&keys)
        .await
        .unwrap()
        .iter()
        .map(|c| c.tokens)
        .sum()
}

#[tokio::test]
async fn a_retrieval_embedding_the_provider_may_have_billed_is_metered_at_its_estimate() {
    let (openai, _anthropic, gw) = grounded_gateway(LimitOverrides {
        tokens_per_minute: Some(100_000),
        ..Default::default()
    })
    .await;
    let query = "When are refunds free?";
    let ingest = gw.usage_events()[0].usage.total() as i64;
    // A 2xx that cannot be read: the request reached the provider and may have been billed.
    openai.push_embeddings(Behavior::Malformed);
    let res = gw.chat("acme", grounded(query)).await;
    assert_eq!(res.status, 502, "{}", res.text());
    assert!(openai.requests().is_empty(), "no chat call");
    let events = gw.usage_events();
    let embedding = events
        .iter()
        .find(|e| e.request_id.as_str().ends_with("-retrieval"))
        .expect("the query's embedding is metered");
    assert_eq!(embedding.usage_source, UsageSource::Estimated);
    assert_eq!(embedding.usage.prompt_tokens, count_tokens(query) as u64);
    assert!(!embedding.success);
    assert!(embedding.cost_usd > rust_decimal::Decimal::ZERO);
    // The chat's reservation came back; the embedding's estimate stays charged.
    let charged = ingest + embedding.usage.total() as i64;
    assert_eq!(minute_tokens(&gw, "acme").await, charged);

    // Refused outright: nothing was made, nothing is metered, every token comes back.
    openai.push_embeddings(Behavior::error(400, "input is invalid"));
    let res = gw.chat("acme", grounded(query)).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(gw.usage_events().len(), events.len());
    assert_eq!(minute_tokens(&gw, "acme").await, charged);
}
