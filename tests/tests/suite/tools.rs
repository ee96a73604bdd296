#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Tool calling through the real invoke handler: OpenAI's `tools` in, passed through to OpenAI
//! and translated for Anthropic both ways (tools, `tool_choice`, `tool_use` ⇄ `tool_calls`,
//! tool results as one user turn of `tool_result` blocks), buffered and streamed (OpenAI's
//! tool-call deltas out of either provider), each step of a loop metered at its exact price,
//! tools in the cache key and in the reservation, and the simulated provider running a whole
//! loop locally.
//!
//! acme routes `gpt-4o-mini` to OpenAI and `claude-haiku` to Anthropic's `claude-haiku-4-5`;
//! its response cache is on.

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate::domain::usage::TokenUsage;
use tollgate_tests::harness::{Gateway, TestResponse};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn, StandIn};

const USAGE: TokenUsage = TokenUsage {
    prompt_tokens: 200,
    completion_tokens: 40,
    cached_tokens: 0,
    cache_write_tokens: 0,
};

#[derive(Clone, Copy, Debug)]
enum Via {
    /// acme `gpt-4o-mini` → OpenAI: 200 × $0.15 + 40 × $0.60 per 1M.
    OpenAi,
    /// acme `claude-haiku` → Anthropic `claude-haiku-4-5`: 200 × $1 + 40 × $5 per 1M.
    Anthropic,
}

impl Via {
    const BOTH: [Via; 2] = [Via::OpenAi, Via::Anthropic];

    fn model(self) -> &'static str {
        match self {
            Via::OpenAi => "gpt-4o-mini",
            Via::Anthropic => "claude-haiku",
        }
    }

    fn cost(self) -> Decimal {
        match self {
            Via::OpenAi => dec!(0.000054),
            Via::Anthropic => dec!(0.0004),
        }
    }

    fn standin<'a>(
        self,
        openai: &'a OpenAiStandIn,
        anthropic: &'a AnthropicStandIn,
    ) -> &'a StandIn {
        match self {
            Via::OpenAi => openai,
            Via::Anthropic => anthropic,
        }
    }

    /// The id the stand-in gives the reply's call `i`.
    fn call_id(self, i: usize) -> String {
        match self {
            Via::OpenAi => format!("call_standin{i}"),
            Via::Anthropic => format!("toolu_standin{i}"),
        }
    }
}

async fn gateway() -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    (openai, anthropic, gw)
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }})
}

fn time_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    }})
}

fn ask(model: &str, question: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "tools": [weather_tool(), time_tool()],
    })
}

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

/// The request that sends the model's calls back with their results.
fn answer(model: &str, question: &str, calls: &Value, results: &[&str]) -> Value {
    let mut messages = vec![
        json!({"role": "user", "content": question}),
        json!({"role": "assistant", "content": null, "tool_calls": calls}),
    ];
    for (call, result) in calls.as_array().unwrap().iter().zip(results) {
        messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": result}));
    }
    json!({"model": model, "messages": messages, "tools": [weather_tool(), time_tool()]})
}

/// The tool calls of an SSE reply, assembled from OpenAI's deltas, and its finish reason.
fn streamed_calls(res: &TestResponse) -> (Value, String) {
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = String::new();
    for event in res.sse_events() {
        let choice = &event["choices"][0];
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = reason.to_owned();
        }
        for piece in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = piece["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                assert!(
                    piece["id"].is_string(),
                    "a call's first piece has its id: {piece}"
                );
                assert_eq!(piece["type"], "function");
                calls.push(json!({"id": piece["id"], "type": "function",
                    "function": {"name": piece["function"]["name"], "arguments": ""}}));
            }
            let call = &mut calls[index]["function"]["arguments"];
            let so_far = call.as_str().unwrap().to_owned();
            *call = json!(so_far + piece["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    (Value::Array(calls), finish)
}

fn cost_of(gw: &Gateway, res: &TestResponse) -> Decimal {
    let id = res.header("x-request-id").unwrap();
    gw.usage_events()
        .into_iter()
        .find(|e| e.request_id.as_str() == id)
        .unwrap_or_else(|| panic!("no usage event for {id}"))
        .cost_usd
}

#[tokio::test]
async fn a_buffered_tool_loop_runs_on_either_provider_and_meters_each_step() {
    for via in Via::BOTH {
        let (openai, anthropic, gw) = gateway().await;
        let standin = via.standin(&openai, &anthropic);
        let question = format!("Weather and time in Paris? ({via:?})");
        standin.push(Behavior::call_tools(
            vec![
                ("get_weather", json!({"city": "Paris"})),
                ("get_time", json!({"zone": "Europe/Paris"})),
            ],
            USAGE,
        ));
        let res = gw.chat("acme", ask(via.model(), &question)).await;
        assert_eq!(res.status, 200, "{via:?}: {}", res.text());
        let body = res.json();
        let message = &body["choices"][0]["message"];
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{via:?}");
        assert!(message["content"].is_null(), "{via:?}: {message}");
        let calls = message["tool_calls"].clone();
        assert_eq!(calls.as_array().unwrap().len(), 2, "{via:?}");
        assert_eq!(calls[0]["id"], via.call_id(0));
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": "Paris"}), "{via:?}");
        assert_eq!(calls[1]["function"]["name"], "get_time");
        assert_eq!(
            cost_of(&gw, &res),
            via.cost(),
            "{via:?}: the call step is metered"
        );

        // What went upstream: the provider's own shape of the tools and the choice.
        let sent = standin.last_request().body;
        match via {
            Via::OpenAi => {
                assert_eq!(sent["tools"], json!([weather_tool(), time_tool()]));
                assert!(sent.get("tool_choice").is_none());
            }
            Via::Anthropic => {
                assert_eq!(
                    sent["tools"][0],
                    json!({"name": "get_weather", "description": "The current weather in a city",
                        "input_schema": weather_tool()["function"]["parameters"]})
                );
                assert_eq!(sent["tools"][1]["name"], "get_time");
                assert!(sent["tools"][1].get("description").is_none());
                assert!(
                    sent.get("tool_choice").is_none(),
                    "auto is Anthropic's default"
                );
            }
        }

        // The results go back; the model answers in text.
        standin.push(Behavior::reply("It is 18°C and 14:05 in Paris.", USAGE));
        let res = gw
            .chat(
                "acme",
                answer(via.model(), &question, &calls, &["18°C, sunny", "14:05"]),
            )
            .await;
        assert_eq!(res.status, 200, "{via:?}: {}", res.text());
        assert_eq!(
            res.json()["choices"][0]["message"]["content"],
            "It is 18°C and 14:05 in Paris."
        );
        assert_eq!(res.json()["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            cost_of(&gw, &res),
            via.cost(),
            "{via:?}: the answer step too"
        );
        assert_eq!(gw.usage_events().len(), 2);

        let sent = standin.last_request().body;
        match via {
            Via::OpenAi => {
                let messages = sent["messages"].as_array().unwrap();
                let assistant = &messages[messages.len() - 3];
                assert_eq!(assistant["tool_calls"], calls);
                assert!(assistant["content"].is_null());
                assert_eq!(messages[messages.len() - 2]["role"], "tool");
                assert_eq!(messages[messages.len() - 2]["tool_call_id"], via.call_id(0));
                assert_eq!(messages[messages.len() - 1]["content"], "14:05");
            }
            Via::Anthropic => {
                // user, assistant (tool_use × 2), user (tool_result × 2): alternating turns.
                let messages = sent["messages"].as_array().unwrap();
                assert_eq!(messages.len(), 3, "{sent}");
                assert_eq!(messages[1]["role"], "assistant");
                assert_eq!(
                    messages[1]["content"][0],
                    json!({"type": "tool_use", "id": via.call_id(0), "name": "get_weather",
                        "input": {"city": "Paris"}})
                );
                assert_eq!(messages[2]["role"], "user");
                assert_eq!(
                    messages[2]["content"],
                    json!([
                        {"type": "tool_result", "tool_use_id": via.call_id(0), "content": "18°C, sunny"},
                        {"type": "tool_result", "tool_use_id": via.call_id(1), "content": "14:05"},
                    ])
                );
            }
        }
    }
}

#[tokio::test]
async fn a_streamed_tool_loop_sends_openais_tool_call_deltas_from_either_provider() {
    for via in Via::BOTH {
        let (openai, anthropic, gw) = gateway().await;
        let standin = via.standin(&openai, &anthropic);
        let question = format!("Weather in Oslo and the time? ({via:?}, streamed)");
        standin.push(Behavior::CallTools {
            text: "Let me check.".into(),
            calls: vec![
                (
                    "get_weather".into(),
                    json!({"city": "Oslo", "units": "metric"}),
                ),
                ("get_time".into(), json!({"zone": "Europe/Oslo"})),
            ],
            usage: USAGE,
        });
        let res = gw.chat("acme", streamed(ask(via.model(), &question))).await;
        assert_eq!(res.status, 200, "{via:?}: {}", res.text());
        let (calls, finish) = streamed_calls(&res);
        assert_eq!(finish, "tool_calls", "{via:?}");
        assert_eq!(res.sse_text(), "Let me check.", "{via:?}");
        assert_eq!(calls.as_array().unwrap().len(), 2, "{via:?}: {calls}");
        assert_eq!(calls[0]["id"], via.call_id(0));
        assert_eq!(calls[1]["function"]["name"], "get_time");
        let arguments: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(
            arguments,
            json!({"city": "Oslo", "units": "metric"}),
            "{via:?}"
        );
        let usage = res.sse_events().last().unwrap()["usage"].clone();
        assert_eq!(usage["completion_tokens"], 40, "{via:?}");
        assert_eq!(cost_of(&gw, &res), via.cost(), "{via:?}");

        standin.push(Behavior::reply("Cold and early.", USAGE));
        let res = gw
            .chat(
                "acme",
                streamed(answer(via.model(), &question, &calls, &["-3°C", "07:10"])),
            )
            .await;
        assert_eq!(res.status, 200, "{via:?}: {}", res.text());
        assert_eq!(res.sse_text(), "Cold and early.");
        assert_eq!(cost_of(&gw, &res), via.cost(), "{via:?}");
        assert_eq!(gw.usage_events().len(), 2);
    }
}

#[tokio::test]
async fn tool_choice_and_parallel_calls_reach_anthropic_in_its_terms() {
    let (_openai, anthropic, gw) = gateway().await;
    let cases = [
        (
            json!("auto"),
            json!(false),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        ),
        (json!("required"), Value::Null, json!({"type": "any"})),
        (json!("none"), Value::Null, json!({"type": "none"})),
        (
            json!({"type": "function", "function": {"name": "get_time"}}),
            Value::Null,
            json!({"type": "tool", "name": "get_time"}),
        ),
    ];
    for (i, (choice, parallel, expected)) in cases.into_iter().enumerate() {
        let mut body = ask("claude-haiku", &format!("case {i}"));
        body["tool_choice"] = choice;
        if !parallel.is_null() {
            body["parallel_tool_calls"] = parallel;
        }
        let res = gw.chat("acme", body).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(
            anthropic.last_request().body["tool_choice"],
            expected,
            "case {i}"
        );
    }
}

#[tokio::test]
async fn tools_with_a_response_format_on_anthropic_offer_both_and_the_output_tool_is_the_answer() {
    let (_openai, anthropic, gw) = gateway().await;
    let mut body = ask("claude-haiku", "Weather report as JSON");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "report",
        "schema": {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}}});
    // The model answers with the output tool: that is the reply, finish `stop`.
    anthropic.push(Behavior::call_tools(
        vec![("report", json!({"summary": "Sunny"}))],
        USAGE,
    ));
    let res = gw.chat("acme", body.clone()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = anthropic.last_request().body;
    let names: Vec<&str> = sent["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get_weather", "get_time", "report"]);
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));
    let reply = res.json();
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        r#"{"summary":"Sunny"}"#
    );
    assert!(reply["choices"][0]["message"].get("tool_calls").is_none());

    // Or it calls the client's tool: a tool-calls reply, not checked against the format.
    body["messages"][0]["content"] = json!("Weather report as JSON, again");
    anthropic.push(Behavior::call_tools(
        vec![("get_weather", json!({"city": "Rome"}))],
        USAGE,
    ));
    let res = gw.chat("acme", body).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        res.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn tools_are_part_of_the_cache_key_and_a_hit_replays_the_calls() {
    let (openai, _anthropic, gw) = gateway().await;
    openai.push(Behavior::call_tools(
        vec![("get_weather", json!({"city": "Lyon"}))],
        USAGE,
    ));
    let first = gw
        .chat("acme", ask("gpt-4o-mini", "Weather in Lyon?"))
        .await;
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));

    let hit = gw
        .chat("acme", ask("gpt-4o-mini", "Weather in Lyon?"))
        .await;
    assert_eq!(hit.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(
        hit.json()["choices"][0]["message"]["tool_calls"],
        first.json()["choices"][0]["message"]["tool_calls"]
    );
    assert_eq!(hit.json()["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(cost_of(&gw, &hit), Decimal::ZERO);

    // The same hit streamed: the calls come back as deltas.
    let replay = gw
        .chat("acme", streamed(ask("gpt-4o-mini", "Weather in Lyon?")))
        .await;
    assert_eq!(replay.header("x-tollgate-cache"), Some("hit"));
    let (calls, finish) = streamed_calls(&replay);
    assert_eq!(finish, "tool_calls");
    assert_eq!(calls, first.json()["choices"][0]["message"]["tool_calls"]);

    // Other tools, or another choice, are another question.
    let mut fewer = ask("gpt-4o-mini", "Weather in Lyon?");
    fewer["tools"] = json!([weather_tool()]);
    assert_eq!(
        gw.chat("acme", fewer).await.header("x-tollgate-cache"),
        Some("miss")
    );
    let mut forced = ask("gpt-4o-mini", "Weather in Lyon?");
    forced["tool_choice"] = json!("required");
    assert_eq!(
        gw.chat("acme", forced).await.header("x-tollgate-cache"),
        Some("miss")
    );
    assert_eq!(openai.requests().len(), 3);
}

#[tokio::test]
async fn tool_definitions_count_toward_the_tokens_reserved() {
    let (_openai, _anthropic, gw) = gateway().await;
    // A big schema: its description alone is thousands of tokens.
    let mut big = weather_tool();
    big["function"]["description"] = json!("Looks up the weather. ".repeat(350));
    let mut with_tools = ask("gpt-4o-mini", "hi");
    with_tools["tools"] = json!([big]);
    with_tools["max_tokens"] = json!(10);
    let mut without = chat_without_tools("hi");
    without["max_tokens"] = json!(10);

    let plain = gw.chat("acme", without).await;
    let tooled = gw.chat("acme", with_tools).await;
    assert_eq!(plain.status, 200);
    assert_eq!(tooled.status, 200, "{}", tooled.text());
    let remaining = |res: &TestResponse| -> u64 {
        res.header("x-ratelimit-remaining-tokens")
            .unwrap()
            .parse()
            .unwrap()
    };
    // Each reservation is the request's prompt count plus its cap (both ~10 tokens of
    // question and 10 of cap): the tools' ~1,400 tokens are what separates the two.
    let drop = remaining(&plain) - remaining(&tooled);
    assert!(
        drop > 1_000,
        "the tool definitions were not reserved: {drop} tokens"
    );
}

fn chat_without_tools(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn the_simulated_provider_runs_a_whole_tool_loop_locally() {
    let gw = Gateway::simulated().await;
    for stream in [false, true] {
        let question = format!("Weather in Paris? (stream: {stream})");
        let mut first = ask("claude-haiku", &question);
        first["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
        let first = if stream { streamed(first) } else { first };
        let res = gw.chat("acme", first).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let calls = if stream {
            let (calls, finish) = streamed_calls(&res);
            assert_eq!(finish, "tool_calls");
            calls
        } else {
            assert_eq!(res.json()["choices"][0]["finish_reason"], "tool_calls");
            res.json()["choices"][0]["message"]["tool_calls"].clone()
        };
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(
            arguments["city"].is_string(),
            "arguments follow the schema: {arguments}"
        );

        let res = gw
            .chat(
                "acme",
                answer("claude-haiku", &question, &calls, &["21°C and clear"]),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let text = res.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(text.contains("21°C and clear"), "{text}");
    }
    assert_eq!(gw.usage_events().len(), 4);
    assert!(gw.usage_events().iter().all(|e| e.cost_usd > Decimal::ZERO));
}
