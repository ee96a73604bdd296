#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! `POST /v1/messages` (Anthropic's Messages API, inbound) through the real invoke handler:
//! the key in `x-api-key` or `Authorization`, routed through the tenant's routes to either
//! provider, Anthropic's reply, event and error shapes, metered exactly as a chat call.

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};
use tollgate::domain::usage::TokenUsage;
use tollgate_tests::harness::{Gateway, TestResponse, chat_body};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

async fn messages(gw: &Gateway, key: Option<&str>, body: Value) -> TestResponse {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01");
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    gw.send(req.body(Bytes::from(body.to_string())).unwrap())
        .await
}

fn body(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 300, "messages": [{"role": "user", "content": text}]})
}

/// `(event name, data)` of an Anthropic SSE body.
fn events(res: &TestResponse) -> Vec<(String, Value)> {
    res.text()
        .split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in frame.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            (name, data)
        })
        .collect()
}

async fn standins() -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    (openai, anthropic, gw)
}

fn usage(prompt: u64, completion: u64, read: u64, written: u64) -> TokenUsage {
    TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: read,
        cache_write_tokens: written,
    }
}

#[tokio::test]
async fn a_buffered_message_to_an_anthropic_route_has_anthropics_shape_and_usage() {
    let (_openai, anthropic, gw) = standins().await;
    anthropic.push(Behavior::reply("Rockets fly.", usage(1_500, 9, 1_024, 300)));
    let key = gw.key("acme").to_owned();
    let res = messages(&gw, Some(&key), body("claude-haiku", "What do you sell?")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let reply = res.json();
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["model"], "claude-haiku");
    assert_eq!(
        reply["content"],
        json!([{"type": "text", "text": "Rockets fly."}])
    );
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(
        reply["usage"],
        json!({"input_tokens": 176, "output_tokens": 9, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 1024})
    );
    // The tenant's system prompt went upstream, and the client's turn after it.
    let sent = anthropic.requests();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].body["system"].to_string().contains("Acme Rockets"));
    assert_eq!(sent[0].body["messages"][0]["content"], "What do you sell?");

    let events = gw.usage_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].model_requested, "claude-haiku");
    assert_eq!(events[0].usage, usage(1_500, 9, 1_024, 300));
    assert!(events[0].cost_usd > rust_decimal::Decimal::ZERO);
}

#[tokio::test]
async fn a_message_costs_what_the_same_chat_completion_costs() {
    let (openai, _anthropic, gw) = standins().await;
    openai.push(Behavior::reply("Same.", usage(40, 5, 0, 0)));
    openai.push(Behavior::reply("Same.", usage(40, 5, 0, 0)));
    // globex: no response cache, and `gpt-4o` is an OpenAI route (translated both ways).
    let key = gw.key("globex").to_owned();
    let via_messages = messages(&gw, Some(&key), body("gpt-4o", "q")).await;
    let via_chat = gw.chat("globex", chat_body("gpt-4o", "q")).await;
    assert_eq!(via_messages.status, 200, "{}", via_messages.text());
    assert_eq!(via_chat.status, 200);
    assert_eq!(via_messages.json()["content"][0]["text"], "Same.");
    assert_eq!(via_messages.json()["usage"]["input_tokens"], 40);
    let events = gw.usage_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].usage, events[1].usage);
    assert_eq!(events[0].cost_usd, events[1].cost_usd);
    assert_eq!(
        openai.requests()[0].body["messages"],
        openai.requests()[1].body["messages"]
    );
}

#[tokio::test]
async fn a_streamed_message_sends_anthropics_events_in_order_and_is_metered() {
    let (_openai, anthropic, gw) = standins().await;
    anthropic.push(Behavior::reply("One two three.", usage(1_200, 4, 0, 1_100)));
    let key = gw.key("acme").to_owned();
    let mut request = body("claude-haiku", "Count.");
    request["stream"] = json!(true);
    let res = messages(&gw, Some(&key), request).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let events = events(&res);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names[1], "content_block_start");
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    for (name, data) in &events {
        assert_eq!(
            data["type"],
            name.as_str(),
            "each event's data names its type"
        );
    }
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "One two three.");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 100, "output_tokens": 4, "cache_creation_input_tokens": 1100, "cache_read_input_tokens": 0})
    );
    let recorded = gw.wait_for_usage_events(1).await;
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].streamed);
    assert_eq!(recorded[0].usage, usage(1_200, 4, 0, 1_100));
}

#[tokio::test]
async fn the_key_may_come_as_x_api_key_or_bearer_and_a_bad_one_is_anthropics_401() {
    let gw = Gateway::simulated().await;
    let key = gw.key("acme").to_owned();
    assert_eq!(
        messages(&gw, Some(&key), body("gpt-4o", "hi")).await.status,
        200
    );
    let bearer = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages")
        .header("authorization", format!("Bearer {key}"))
        .body(Bytes::from(body("gpt-4o", "hi").to_string()))
        .unwrap();
    assert_eq!(gw.send(bearer).await.status, 200);

    let refused = messages(&gw, Some("tg_live_nope"), body("gpt-4o", "hi")).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["type"], "error");
    assert_eq!(refused.json()["error"]["type"], "authentication_error");
    let missing = messages(&gw, None, body("gpt-4o", "hi")).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.json()["error"]["type"], "authentication_error");
    // Every request has its metrics line, the refusals included.
    assert_eq!(gw.request_metrics().len(), 4);
}

#[tokio::test]
async fn bad_bodies_and_unknown_models_get_anthropics_error_shape() {
    let gw = Gateway::simulated().await;
    let key = gw.key("acme").to_owned();
    let no_cap = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]});
    let tools = json!({"model": "gpt-4o", "max_tokens": 5, "tools": [{"type": "bash_20250124", "name": "bash"}], "messages": [{"role": "user", "content": "x"}]});
    for bad in [no_cap, tools] {
        let res = messages(&gw, Some(&key), bad.clone()).await;
        assert_eq!(res.status, 400, "{bad}");
        assert_eq!(
            res.json()["error"]["type"],
            "invalid_request_error",
            "{bad}"
        );
        assert!(res.json()["error"]["message"].as_str().unwrap().len() > 5);
    }
    let unknown = messages(&gw, Some(&key), body("made-up", "x")).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["type"], "not_found_error");
    // An embeddings model is not a chat model on this endpoint either.
    let embed = messages(&gw, Some(&key), body("text-embedding-3-small", "x")).await;
    assert_eq!(embed.status, 400);
    assert!(gw.usage_events().is_empty());
}

#[tokio::test]
async fn a_rate_limited_message_is_anthropics_429_with_retry_after() {
    let gw = Gateway::simulated().await;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.limits = tollgate::domain::limits::LimitOverrides {
        tokens_per_minute: Some(500),
        ..Default::default()
    };
    tollgate::ports::TenantAdmin::put_tenant_config(gw.store.as_ref(), config)
        .await
        .unwrap();
    let key = gw.key("acme").to_owned();
    let mut big = body("gpt-4o", "unique question one");
    big["max_tokens"] = json!(400);
    assert_eq!(messages(&gw, Some(&key), big.clone()).await.status, 200);
    big["messages"][0]["content"] = json!("unique question two");
    let refused = messages(&gw, Some(&key), big).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["error"]["type"], "rate_limit_error");
    assert!(refused.header("retry-after").is_some());
}

fn weather_tools() -> Value {
    json!([{"name": "get_weather", "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
}

/// An Anthropic SDK tool loop through `/v1/messages`, on a route to each provider: the
/// model's `tool_use` blocks come back in Anthropic's shape (buffered and as
/// `content_block_start` + `input_json_delta` events), the results go back as `tool_result`
/// blocks, and each step is metered.
#[tokio::test]
async fn a_tool_loop_through_the_messages_api_works_on_either_provider() {
    let (openai, anthropic, gw) = standins().await;
    let key = gw.key("acme").to_owned();
    for (model, via_openai) in [("claude-haiku", false), ("gpt-4o-mini", true)] {
        for stream in [false, true] {
            let calls = vec![("get_weather", json!({"city": "Paris"}))];
            let pushed = Behavior::call_tools(calls, usage(100, 20, 0, 0));
            if via_openai {
                openai.push(pushed);
            } else {
                anthropic.push(pushed);
            }
            let question = format!("Weather in Paris? ({model}, stream {stream})");
            let mut first = json!({"model": model, "max_tokens": 200, "tools": weather_tools(),
                "messages": [{"role": "user", "content": question}]});
            first["stream"] = json!(stream);
            let res = messages(&gw, Some(&key), first).await;
            assert_eq!(res.status, 200, "{}", res.text());
            let (id, input) = if stream {
                let events = events(&res);
                let start = events
                    .iter()
                    .find(|(name, data)| {
                        name == "content_block_start" && data["content_block"]["type"] == "tool_use"
                    })
                    .unwrap_or_else(|| panic!("no tool_use block: {events:?}"));
                let index = start.1["index"].clone();
                let json: String = events
                    .iter()
                    .filter(|(_, d)| {
                        d["index"] == index && d["delta"]["type"] == "input_json_delta"
                    })
                    .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_owned())
                    .collect();
                let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
                assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
                let stops = events
                    .iter()
                    .filter(|(n, _)| n == "content_block_stop")
                    .count();
                let starts = events
                    .iter()
                    .filter(|(n, _)| n == "content_block_start")
                    .count();
                assert_eq!(starts, stops, "every block started is stopped: {events:?}");
                (
                    start.1["content_block"]["id"].as_str().unwrap().to_owned(),
                    serde_json::from_str::<Value>(&json).unwrap(),
                )
            } else {
                let reply = res.json();
                assert_eq!(reply["stop_reason"], "tool_use");
                let block = reply["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|b| b["type"] == "tool_use")
                    .unwrap()
                    .clone();
                assert_eq!(block["name"], "get_weather");
                (
                    block["id"].as_str().unwrap().to_owned(),
                    block["input"].clone(),
                )
            };
            assert_eq!(input, json!({"city": "Paris"}));

            let answer = json!({"model": model, "max_tokens": 200, "tools": weather_tools(),
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "get_weather", "input": input}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "18C"}]}
            ]});
            let res = messages(&gw, Some(&key), answer).await;
            assert_eq!(res.status, 200, "{}", res.text());
            // What the provider got: the result in its own shape.
            if via_openai {
                let sent = openai.last_request().body;
                let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
                assert_eq!(
                    last,
                    json!({"role": "tool", "tool_call_id": id, "content": "18C"})
                );
            } else {
                let sent = anthropic.last_request().body;
                assert_eq!(
                    sent["messages"][2]["content"],
                    json!([{"type": "tool_result", "tool_use_id": id, "content": "18C"}])
                );
                assert_eq!(
                    sent["tools"][0]["input_schema"],
                    weather_tools()[0]["input_schema"]
                );
            }
        }
    }
    assert_eq!(gw.usage_events().len(), 8, "every step metered once");
}

async fn count_tokens(gw: &Gateway, key: Option<&str>, body: Value) -> TestResponse {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/v1/messages/count_tokens")
        .header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    gw.send(req.body(Bytes::from(body.to_string())).unwrap())
        .await
}

/// `count_tokens` is the prompt a call would reserve: the tenant's system prompt, the turns and
/// the tools, on the tenant's route, with no provider call and no usage.
#[tokio::test]
async fn count_tokens_counts_what_the_call_would_send_and_calls_nothing() {
    let (openai, anthropic, gw) = standins().await;
    let key = gw.key("acme").to_owned();
    let plain = json!({"model": "claude-haiku", "messages": [{"role": "user", "content": "How long is this?"}]});
    let res = count_tokens(&gw, Some(&key), plain.clone()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let counted = res.json()["input_tokens"].as_u64().unwrap();

    // The same request made for real reserves exactly that prompt: metered at the estimate
    // when the provider's answer cannot be read.
    anthropic.push(Behavior::Malformed);
    let mut call = plain.clone();
    call["max_tokens"] = json!(5);
    let made = messages(&gw, Some(&key), call).await;
    assert_eq!(made.status, 502, "{}", made.text());
    let events = gw.usage_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].usage.prompt_tokens, counted);

    let mut with_tools = plain.clone();
    with_tools["tools"] = json!([{"name": "lookup", "description": "Looks things up in the catalog",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]);
    let more = count_tokens(&gw, Some(&key), with_tools).await.json()["input_tokens"]
        .as_u64()
        .unwrap();
    assert!(more > counted + 300, "tools counted: {more} vs {counted}");

    let unknown = count_tokens(
        &gw,
        Some(&key),
        json!({"model": "made-up", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["type"], "not_found_error");
    let refused = count_tokens(&gw, Some("tg_live_nope"), plain).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["type"], "authentication_error");
    assert_eq!(
        anthropic.requests().len(),
        1,
        "only the real call reached the provider"
    );
    assert!(openai.requests().is_empty());
    assert_eq!(gw.usage_events().len(), 1);
}

/// `cache_control` breakpoints the client marks are kept: an Anthropic route gets them on the
/// same system block, message and tool, after the gateway's own on the tenant prompt; a fourth
/// one of the client's is refused, as is the one-hour TTL.
#[tokio::test]
async fn cache_control_breakpoints_are_kept_for_anthropic() {
    let (_openai, anthropic, gw) = standins().await;
    let key = gw.key("globex").to_owned(); // globex's long prompt gets the gateway's breakpoint
    let ephemeral = json!({"type": "ephemeral"});
    let body = json!({"model": "claude-sonnet", "max_tokens": 50,
    "system": [{"type": "text", "text": "Client rules.", "cache_control": ephemeral}],
    "tools": [{"name": "lookup", "input_schema": {"type": "object"}, "cache_control": ephemeral}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "A long document...", "cache_control": ephemeral},
            {"type": "text", "text": "Question?"}
        ]},
    ]});
    let res = messages(&gw, Some(&key), body.clone()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = anthropic.last_request().body;
    assert_eq!(
        sent["system"][0]["cache_control"], ephemeral,
        "the tenant prompt's own"
    );
    assert_eq!(sent["system"][1]["text"], "Client rules.");
    assert_eq!(sent["system"][1]["cache_control"], ephemeral);
    assert_eq!(sent["tools"][0]["cache_control"], ephemeral);
    // The message's breakpoint is on its last block (Anthropic caches the prefix up to it).
    let content = sent["messages"][0]["content"].as_array().unwrap();
    assert_eq!(
        content.last().unwrap()["cache_control"],
        ephemeral,
        "{sent}"
    );
    let marked = sent.to_string().matches("\"cache_control\"").count();
    assert_eq!(marked, 4, "Anthropic's limit: {sent}");

    let mut too_many = body.clone();
    too_many["messages"] = json!([
        {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": ephemeral}]},
        {"role": "assistant", "content": [{"type": "text", "text": "b", "cache_control": ephemeral}]},
        {"role": "user", "content": "c"},
    ]);
    let res = messages(&gw, Some(&key), too_many).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cache_control")
    );

    let mut hour = body;
    hour["system"][0]["cache_control"] = json!({"type": "ephemeral", "ttl": "1h"});
    let res = messages(&gw, Some(&key), hour).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("5m")
    );
}
