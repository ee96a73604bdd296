#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Metering: one usage event per provider call, priced server-side, identical for streamed and
//! buffered calls, and kept even when the client disconnects mid-stream.

use std::time::Duration;

use futures_util::StreamExt;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate::domain::ids::RequestId;
use tollgate::domain::usage::TokenUsage;
use tollgate::service::{ChatEvent, ChatEvents, ChatReply, RequestContext};
use tollgate_tests::harness::{Gateway, chat_body};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

fn usage() -> TokenUsage {
    TokenUsage {
        prompt_tokens: 1200,
        completion_tokens: 300,
        cached_tokens: 1024,
        cache_write_tokens: 0,
    }
}

#[tokio::test]
async fn a_streamed_call_and_a_buffered_call_with_the_same_usage_produce_equal_events() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    let text = "The same answer, either way.";
    openai.push(Behavior::reply(text, usage()));
    openai.push(Behavior::reply(text, usage()));
    // globex has no response cache, so both calls reach the provider.
    let buffered = gw.chat("globex", chat_body("gpt-4o", "q")).await;
    let mut streamed_body = chat_body("gpt-4o", "q");
    streamed_body["stream"] = json!(true);
    streamed_body["stream_options"] = json!({"include_usage": true});
    let streamed = gw.chat("globex", streamed_body).await;
    assert_eq!(buffered.status, 200);
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    assert_eq!(streamed.sse_text(), text);
    assert_eq!(buffered.json()["choices"][0]["message"]["content"], text);
    assert!(streamed.text().ends_with("data: [DONE]\n\n"));
    let usage_chunk = streamed.sse_events().into_iter().last().unwrap();
    assert_eq!(
        usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"],
        1024
    );
    assert_eq!(usage_chunk["usage"], buffered.json()["usage"]);

    let events = gw.usage_events();
    assert_eq!(events.len(), 2);
    let (b, s) = (&events[0], &events[1]);
    assert!(!b.streamed && s.streamed);
    assert_eq!(b.usage, s.usage);
    assert_eq!(b.cost_usd, s.cost_usd);
    assert_eq!(b.model_served, s.model_served);
    assert_eq!((b.success, s.success), (true, true));
    // gpt-4o: 176 uncached × $2.50 + 1024 cached × $1.25 + 300 × $10.00, per 1M.
    assert_eq!(b.cost_usd, dec!(0.00472));
}

#[tokio::test]
async fn every_call_emits_one_metrics_record_with_tokens_and_cost() {
    let gw = Gateway::simulated().await;
    let res = gw.chat("globex", chat_body("claude-sonnet", "hello")).await;
    assert_eq!(res.status, 200);
    let metrics = gw.request_metrics();
    assert_eq!(metrics.len(), 1);
    let event = &gw.usage_events()[0];
    let m = &metrics[0];
    assert_eq!(m.usage, event.usage);
    assert_eq!(m.cost_usd, event.cost_usd);
    assert!(m.cost_usd > dec!(0));
    assert_eq!(m.tenant_id.as_deref(), Some("globex"));
    assert_eq!(m.model.as_deref(), Some("claude-sonnet"));
    assert_eq!(m.model_served.as_deref(), Some("claude-sonnet-4-5"));
    // globex's system prompt is long: the simulated Anthropic writes it to the prompt cache.
    assert!(event.usage.cache_write_tokens >= 1024);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_is_still_metered_exactly_once() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    let long_text = "word ".repeat(200);
    anthropic.push(Behavior::reply(long_text.trim(), usage()));
    let mut body = chat_body("claude-sonnet", "tell me a long story");
    body["stream"] = json!(true);
    let mut events = stream_events(&gw, "globex", &body).await;
    // Read two chunks, then hang up.
    events.next().await.unwrap();
    events.next().await.unwrap();
    drop(events);

    let recorded = gw.wait_for_usage_events(1).await;
    assert_eq!(recorded.len(), 1);
    let event = &recorded[0];
    assert!(event.client_disconnected);
    assert_eq!(
        event.usage,
        usage(),
        "the drained stream's exact usage is metered"
    );
    assert!(event.success);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(gw.usage_events().len(), 1, "metered twice");
    assert_eq!(gw.request_metrics().len(), 1);
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_error_event_and_a_timeout_usage_event() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    openai.push(Behavior::StallStream);
    let mut body = chat_body("gpt-4o", "q");
    body["stream"] = json!(true);
    let res = gw.chat("globex", body).await;
    assert_eq!(res.status, 200, "headers were sent before the stall");
    let last = res.sse_events().into_iter().last().unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout", "{}", res.text());
    assert!(!res.text().contains("[DONE]"));
    let events = gw.usage_events();
    assert_eq!(events.len(), 1);
    assert!(!events[0].success);
    assert_eq!(events[0].error_type.map(|k| k.as_str()), Some("timeout"));
}

#[tokio::test]
async fn replaying_a_usage_event_does_not_double_count() {
    let gw = Gateway::simulated().await;
    let res = gw.chat("globex", chat_body("gpt-4o", "once")).await;
    assert_eq!(res.status, 200);
    let event = gw.usage_events()[0].clone();
    let again = tollgate::ports::UsageSink::record(gw.store.as_ref(), &event, &[])
        .await
        .unwrap();
    assert_eq!(again, tollgate::ports::store::Recorded::Duplicate);
    assert_eq!(gw.usage_events().len(), 1);
}

#[tokio::test]
async fn a_streams_end_event_comes_only_after_its_usage_event_is_stored() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    openai.push(Behavior::reply("Metered before the end.", usage()));
    let mut body = chat_body("gpt-4o", "q");
    body["stream"] = json!(true);
    let mut events = stream_events(&gw, "globex", &body).await;
    let mut ended = false;
    while let Some(event) = events.next().await {
        match event {
            ChatEvent::Text(_) | ChatEvent::ToolCall(_) => {
                assert!(gw.usage_events().is_empty(), "metered mid-stream")
            }
            ChatEvent::End {
                usage: reported, ..
            } => {
                let stored = gw.usage_events();
                assert_eq!(stored.len(), 1, "the End event came before the usage event");
                assert_eq!(stored[0].usage, reported);
                ended = true;
            }
            ChatEvent::Failed(err) => panic!("the stream failed: {err}"),
        }
    }
    assert!(ended);
}

/// A streamed chat's events, straight from the chat service (no HTTP body in between).
async fn stream_events(gw: &Gateway, tenant: &str, body: &Value) -> ChatEvents {
    let ctx = RequestContext::new(RequestId::generate());
    let caller = gw
        .state
        .callers
        .resolve(
            Some(gw.key(tenant)),
            Some(tollgate::domain::keys::KeyScope::Chat),
        )
        .await
        .unwrap();
    let reply = gw
        .state
        .chat
        .chat(&ctx, &caller, body.to_string().as_bytes())
        .await
        .unwrap();
    let ChatReply::Stream { events, .. } = reply else {
        panic!("expected a stream")
    };
    events
}
