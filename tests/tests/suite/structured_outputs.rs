#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Structured outputs through the real invoke handler: `response_format` reaches OpenAI as
//! sent and Anthropic as one forced tool, replies are validated against the schema (buffered
//! and at the end of a stream), a failing reply is a 422 naming where it failed, metered as a
//! `validation` error with its exact cost and never cached, and the tenant's retry policy asks
//! once more, metering both calls.
//!
//! The demo tenants route `gpt-4o-mini` differently: acme to OpenAI (response cache on),
//! globex to Anthropic's `claude-haiku-4-5` (no response cache).

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate::domain::tenant::{ProviderKind, Target};
use tollgate::domain::usage::{TokenUsage, UsageEvent};
use tollgate::error::ErrorKind;
use tollgate::ports::TenantAdmin;
use tollgate_tests::harness::{Gateway, TestResponse};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn, StandIn};

const USAGE: TokenUsage = TokenUsage {
    prompt_tokens: 200,
    completion_tokens: 40,
    cached_tokens: 0,
    cache_write_tokens: 0,
};

const VALID: &str = r#"{"name": "Ann", "age": 31}"#;
/// `age` is a string: fails at `/age`, schema path `/properties/age/type`.
const WRONG_TYPE: &str = r#"{"name": "Ann", "age": "thirty-one"}"#;

/// The two routes of `gpt-4o-mini`, and what 200 prompt + 40 completion tokens cost on each.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// acme → OpenAI gpt-4o-mini: 200 × $0.15 + 40 × $0.60 per 1M.
    OpenAi,
    /// globex → Anthropic claude-haiku-4-5: 200 × $1.00 + 40 × $5.00 per 1M.
    Anthropic,
}

impl Via {
    const BOTH: [Via; 2] = [Via::OpenAi, Via::Anthropic];

    fn tenant(self) -> &'static str {
        match self {
            Via::OpenAi => "acme",
            Via::Anthropic => "globex",
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
}

async fn gateway() -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    (openai, anthropic, gw)
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0}
        },
        "required": ["name", "age"],
        "additionalProperties": false
    })
}

fn person_format() -> Value {
    json!({
        "type": "json_schema",
        "json_schema": {"name": "person", "strict": true, "schema": person_schema()}
    })
}

fn body(format: Value, stream: bool) -> Value {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Who is Ann? Answer in JSON."}],
        "response_format": format,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn event(gw: &Gateway, request_id: &str) -> UsageEvent {
    gw.usage_events()
        .into_iter()
        .find(|e| e.request_id.as_str() == request_id)
        .unwrap_or_else(|| panic!("no usage event {request_id}: {:?}", gw.usage_events()))
}

fn request_id(res: &TestResponse) -> String {
    res.header("x-request-id").unwrap().to_owned()
}

/// The parsed JSON of a buffered reply's content.
fn content(res: &TestResponse) -> Value {
    let text = res.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    serde_json::from_str(&text).unwrap()
}

fn assert_validation_event(gw: &Gateway, id: &str, via: Via, streamed: bool) {
    let e = event(gw, id);
    assert!(!e.success);
    assert_eq!(e.error_type, Some(ErrorKind::Validation));
    assert_eq!(e.usage, USAGE, "the tokens were spent: metered as reported");
    assert_eq!(e.cost_usd, via.cost());
    assert_eq!(e.streamed, streamed);
    let m = gw
        .request_metrics()
        .into_iter()
        .find(|m| m.request_id == id)
        .unwrap();
    assert_eq!(m.error_type, Some(ErrorKind::Validation));
    assert_eq!(m.cost_usd, via.cost());
    assert_eq!(m.usage, USAGE);
    // A stream failing after its 200 header keeps 200 in the trace.
    assert_eq!(m.status, if streamed { 200 } else { 422 });
}

// ---- Passing the format upstream, valid replies ----

#[tokio::test]
async fn openai_gets_the_response_format_as_sent_and_a_valid_reply_passes_through() {
    let (openai, _anthropic, gw) = gateway().await;
    openai.push(Behavior::reply(VALID, USAGE));
    let res = gw.chat("acme", body(person_format(), false)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(content(&res), json!({"name": "Ann", "age": 31}));
    assert_eq!(res.json()["choices"][0]["finish_reason"], "stop");

    let sent = openai.last_request().body;
    assert_eq!(sent["response_format"], person_format());
    assert!(sent.get("tools").is_none());

    let e = event(&gw, &request_id(&res));
    assert!(e.success && e.error_type.is_none());
    assert_eq!(e.cost_usd, Via::OpenAi.cost());
}

#[tokio::test]
async fn anthropic_gets_one_forced_tool_and_its_tool_use_input_is_the_reply() {
    let (_openai, anthropic, gw) = gateway().await;
    anthropic.push(Behavior::reply(VALID, USAGE));
    let res = gw.chat("globex", body(person_format(), false)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(content(&res), json!({"name": "Ann", "age": 31}));
    // The forced tool's `tool_use` stop is an ordinary end for the client.
    assert_eq!(res.json()["choices"][0]["finish_reason"], "stop");

    let sent = anthropic.last_request().body;
    assert_eq!(sent["tools"].as_array().unwrap().len(), 1);
    assert_eq!(sent["tools"][0]["name"], "person");
    assert_eq!(sent["tools"][0]["input_schema"], person_schema());
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "person", "disable_parallel_tool_use": true})
    );
    assert!(sent.get("response_format").is_none());
    assert_eq!(
        event(&gw, &request_id(&res)).cost_usd,
        Via::Anthropic.cost()
    );
}

#[tokio::test]
async fn json_object_reaches_openai_as_such_and_anthropic_as_an_object_tool() {
    let (openai, anthropic, gw) = gateway().await;
    for via in Via::BOTH {
        via.standin(&openai, &anthropic)
            .push(Behavior::reply(r#"{"anything": [1, 2]}"#, USAGE));
        let res = gw
            .chat(via.tenant(), body(json!({"type": "json_object"}), false))
            .await;
        assert_eq!(res.status, 200, "{via:?}: {}", res.text());
        assert_eq!(content(&res), json!({"anything": [1, 2]}));
    }
    assert_eq!(
        openai.last_request().body["response_format"],
        json!({"type": "json_object"})
    );
    let sent = anthropic.last_request().body;
    assert_eq!(sent["tools"][0]["name"], "json_object");
    assert_eq!(sent["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(sent["tool_choice"]["name"], "json_object");
}

#[tokio::test]
async fn a_valid_streamed_reply_streams_and_ends_normally_on_both_providers() {
    let (openai, anthropic, gw) = gateway().await;
    for via in Via::BOTH {
        let standin = via.standin(&openai, &anthropic);
        standin.push(Behavior::reply(VALID, USAGE));
        let res = gw.chat(via.tenant(), body(person_format(), true)).await;
        assert_eq!(res.status, 200, "{via:?}: {}", res.text());
        assert!(res.text().ends_with("data: [DONE]\n\n"), "{via:?}");
        let text = res.sse_text();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"name": "Ann", "age": 31}),
            "{via:?}"
        );
        // The reply came in several deltas (Anthropic: `input_json_delta` fragments).
        let deltas = res
            .sse_events()
            .iter()
            .filter(|e| {
                e["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            })
            .count();
        assert!(deltas > 1, "{via:?}: {deltas} deltas");
        let e = event(&gw, &request_id(&res));
        assert!(e.success && e.streamed, "{via:?}");
        assert_eq!(e.cost_usd, via.cost());
        assert!(standin.last_request().is_stream());
    }
}

// ---- Invalid replies ----

#[tokio::test]
async fn an_invalid_reply_is_a_422_naming_instance_and_schema_paths_metered_as_validation() {
    let (openai, anthropic, gw) = gateway().await;
    for via in Via::BOTH {
        via.standin(&openai, &anthropic)
            .push(Behavior::reply(WRONG_TYPE, USAGE));
        let res = gw.chat(via.tenant(), body(person_format(), false)).await;
        assert_eq!(res.status, 422, "{via:?}: {}", res.text());
        let error = &res.json()["error"];
        assert_eq!(error["code"], "response_validation_failed");
        assert_eq!(error["param"], "response_format");
        assert_eq!(error["instance_path"], "/age");
        assert_eq!(error["schema_path"], "/properties/age/type");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("`person`"), "{message}");
        assert!(message.contains("instance path `/age`"), "{message}");
        assert!(
            message.contains("schema path `/properties/age/type`"),
            "{message}"
        );
        assert!(!res.text().contains("thirty-one"), "the reply is withheld");
        assert_validation_event(&gw, &request_id(&res), via, false);
    }
}

#[tokio::test]
async fn an_invalid_reply_is_never_cached() {
    let (openai, _anthropic, gw) = gateway().await;
    openai.push(Behavior::reply(WRONG_TYPE, USAGE));
    let first = gw.chat("acme", body(person_format(), false)).await;
    assert_eq!(first.status, 422);
    openai.push(Behavior::reply(VALID, USAGE));
    let second = gw.chat("acme", body(person_format(), false)).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(
        openai.requests().len(),
        2,
        "the second request reached OpenAI"
    );
    // The valid reply was cached, under a key that includes the format.
    let third = gw.chat("acme", body(person_format(), false)).await;
    assert_eq!(third.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(content(&third), json!({"name": "Ann", "age": 31}));
    openai.push(Behavior::reply(VALID, USAGE));
    let other_format = gw
        .chat("acme", body(json!({"type": "json_object"}), false))
        .await;
    assert_eq!(other_format.status, 200, "{}", other_format.text());
    assert_eq!(other_format.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(openai.requests().len(), 3);
}

#[tokio::test]
async fn a_reply_that_is_not_json_is_a_validation_error_quoting_only_its_start() {
    let (openai, anthropic, gw) = gateway().await;
    let prose = format!("Sure! Ann is thirty-one. {}", "More words. ".repeat(40));
    for via in Via::BOTH {
        // Anthropic: a model that answered in text instead of calling the tool.
        via.standin(&openai, &anthropic)
            .push(Behavior::reply(prose.clone(), USAGE));
        let res = gw
            .chat(via.tenant(), body(json!({"type": "json_object"}), false))
            .await;
        assert_eq!(res.status, 422, "{via:?}: {}", res.text());
        let message = res.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("JSON"), "{via:?}: {message}");
        if let Via::OpenAi = via {
            assert!(message.contains("Sure! Ann is"), "{message}");
        }
        assert!(!message.contains(&"More words. ".repeat(3)), "{message}");
        assert_validation_event(&gw, &request_id(&res), via, false);
    }
}

#[tokio::test]
async fn a_streamed_invalid_reply_ends_with_one_error_event_and_no_done() {
    let (openai, anthropic, gw) = gateway().await;
    for via in Via::BOTH {
        let standin = via.standin(&openai, &anthropic);
        standin.push(Behavior::reply(WRONG_TYPE, USAGE));
        let res = gw.chat(via.tenant(), body(person_format(), true)).await;
        assert_eq!(res.status, 200, "the stream had started: {via:?}");
        assert!(!res.text().contains("[DONE]"), "{via:?}: {}", res.text());
        let events = res.sse_events();
        let last = events.last().unwrap();
        assert_eq!(
            last["error"]["code"], "response_validation_failed",
            "{via:?}"
        );
        assert_eq!(last["error"]["param"], "response_format");
        assert_eq!(last["error"]["schema_path"], "/properties/age/type");
        let message = last["error"]["message"].as_str().unwrap();
        assert!(message.contains("instance path `/age`"), "{message}");
        // Exactly one error event, and no finish or usage chunk.
        assert_eq!(
            events.iter().filter(|e| e.get("error").is_some()).count(),
            1
        );
        assert!(
            !events
                .iter()
                .any(|e| !e["choices"][0]["finish_reason"].is_null() || !e["usage"].is_null()),
            "{via:?}: {events:?}"
        );
        assert_validation_event(&gw, &request_id(&res), via, true);
    }
    // acme caches: the failed stream was not stored, so the next request reaches OpenAI.
    openai.push(Behavior::reply(VALID, USAGE));
    let again = gw.chat("acme", body(person_format(), true)).await;
    assert_eq!(again.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(openai.requests().len(), 2);
}

// ---- The retry policy ----

async fn with_retry_policy(gw: &Gateway, tenant: &str) {
    let mut config = match tenant {
        "acme" => tollgate::demo::acme_config().unwrap(),
        _ => tollgate::demo::globex_config().unwrap(),
    };
    config.structured_output.retry_on_invalid = true;
    gw.store.put_tenant_config(config).await.unwrap();
}

#[tokio::test]
async fn the_retry_policy_asks_once_more_and_meters_both_calls() {
    let (openai, anthropic, gw) = gateway().await;
    for via in Via::BOTH {
        with_retry_policy(&gw, via.tenant()).await;
        let standin = via.standin(&openai, &anthropic);
        standin.push(Behavior::reply(WRONG_TYPE, USAGE));
        standin.push(Behavior::reply(VALID, USAGE));
        let before = standin.requests().len();
        let res = gw.chat(via.tenant(), body(person_format(), false)).await;
        assert_eq!(res.status, 200, "{via:?}: {}", res.text());
        assert_eq!(content(&res), json!({"name": "Ann", "age": 31}));

        let sent = &standin.requests()[before..];
        assert_eq!(sent.len(), 2, "{via:?}: one call and one retry");
        assert_eq!(
            sent[0].body, sent[1].body,
            "the retry asks the same question"
        );

        let id = request_id(&res);
        let retry_id = format!("{id}-retry");
        assert_validation_event(&gw, &id, via, false);
        let retried = event(&gw, &retry_id);
        assert!(retried.success, "{via:?}");
        assert_eq!(retried.usage, USAGE);
        assert_eq!(retried.cost_usd, via.cost());
        let metrics = gw.request_metrics();
        let line = metrics.iter().find(|m| m.request_id == retry_id).unwrap();
        assert_eq!((line.status, line.error_type), (200, None));
    }
    // Each request: its own event and its retry's, nothing else.
    assert_eq!(gw.usage_events().len(), 4);
}

#[tokio::test]
async fn a_retry_that_fails_again_returns_its_failure_and_both_calls_are_metered() {
    let (_openai, anthropic, gw) = gateway().await;
    with_retry_policy(&gw, "globex").await;
    anthropic.push(Behavior::reply(WRONG_TYPE, USAGE));
    anthropic.push(Behavior::reply(r#"{"name": "Ann"}"#, USAGE));
    let res = gw.chat("globex", body(person_format(), false)).await;
    assert_eq!(res.status, 422, "{}", res.text());
    // The client sees the retry's failure: a missing property, at the root.
    assert_eq!(res.json()["error"]["schema_path"], "/required");
    assert_eq!(res.json()["error"]["instance_path"], "");
    let id = request_id(&res);
    assert_validation_event(&gw, &id, Via::Anthropic, false);
    assert_validation_event(&gw, &format!("{id}-retry"), Via::Anthropic, false);
    assert_eq!(anthropic.requests().len(), 2);
}

#[tokio::test]
async fn without_the_policy_an_invalid_reply_is_not_retried_and_streams_never_are() {
    let (openai, _anthropic, gw) = gateway().await;
    openai.push(Behavior::reply(WRONG_TYPE, USAGE));
    let res = gw.chat("acme", body(person_format(), false)).await;
    assert_eq!(res.status, 422);
    assert_eq!(openai.requests().len(), 1);

    with_retry_policy(&gw, "acme").await;
    openai.push(Behavior::reply(WRONG_TYPE, USAGE));
    let res = gw.chat("acme", body(person_format(), true)).await;
    assert!(res.text().contains("response_validation_failed"));
    assert_eq!(
        openai.requests().len(),
        2,
        "a sent stream is not asked for again"
    );
    assert_eq!(gw.usage_events().len(), 2);
}

#[tokio::test]
async fn the_retrys_tokens_are_charged_to_the_tenants_limits() {
    // Two gateways see the same traffic; only one retries. The next request's remaining
    // tokens differ by exactly the retry's tokens.
    let mut remaining = Vec::new();
    for retry in [false, true] {
        let (openai, _anthropic, gw) = gateway().await;
        if retry {
            with_retry_policy(&gw, "acme").await;
        }
        openai.push(Behavior::reply(WRONG_TYPE, USAGE));
        openai.push(Behavior::reply(VALID, USAGE));
        gw.chat("acme", body(person_format(), false)).await;
        openai.push(Behavior::reply(VALID, USAGE));
        let mut next = body(person_format(), false);
        next["max_tokens"] = json!(100);
        next["messages"][0]["content"] = json!("Who is Bob? JSON, please.");
        let res = gw.chat("acme", next).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let left: u64 = res
            .header("x-ratelimit-remaining-tokens")
            .unwrap()
            .parse()
            .unwrap();
        remaining.push(left);
    }
    assert_eq!(remaining[0] - remaining[1], USAGE.total());
}

/// acme under the retry policy and TPM 1,200, asked once with `max_tokens`: the first reply
/// fails its format, a second would pass.
async fn retried_under_tpm_1200(max_tokens: u32) -> (OpenAiStandIn, Gateway, TestResponse) {
    let (openai, _anthropic, gw) = gateway().await;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.structured_output.retry_on_invalid = true;
    config.limits.tokens_per_minute = Some(1_200);
    gw.store.put_tenant_config(config).await.unwrap();
    openai.push(Behavior::reply(WRONG_TYPE, USAGE));
    openai.push(Behavior::reply(VALID, USAGE));
    let mut request = body(person_format(), false);
    request["max_tokens"] = json!(max_tokens);
    let res = gw.chat("acme", request).await;
    (openai, gw, res)
}

#[tokio::test]
async fn a_retry_the_tenants_limits_cannot_hold_is_not_made() {
    // max_tokens 1,000: the first call (prompt + 1,000 reserved) is admitted and uses 240; the
    // retry would reserve the same again (1,240 in the minute): it is not sent, and the client
    // gets the first reply's 422.
    let (openai, gw, res) = retried_under_tpm_1200(1_000).await;
    assert_eq!(res.status, 422, "{}", res.text());
    assert_eq!(res.json()["error"]["schema_path"], "/properties/age/type");
    assert_eq!(openai.requests().len(), 1, "no retry was sent");
    let events = gw.usage_events();
    assert_eq!(events.len(), 1, "only the first call is metered");
    assert_eq!(events[0].usage, USAGE);

    // With room for it (max_tokens 400: 2 × (prompt + 400) < 1,200 once the first call has
    // settled at 240), the retry is reserved and made.
    let (openai, gw, res) = retried_under_tpm_1200(400).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(openai.requests().len(), 2);
    assert_eq!(gw.usage_events().len(), 2);
}

// ---- Refused formats, and the embedded default ----

#[tokio::test]
async fn bad_formats_are_400s_naming_response_format_and_reach_no_provider() {
    let (openai, anthropic, gw) = gateway().await;
    let big: serde_json::Map<String, Value> = (0..3_000)
        .map(|i| (format!("field_{i:05}"), json!({"type": "string"})))
        .collect();
    let cases = [
        (json!({"type": "xml"}), "response_format.type"),
        (
            json!({"type": "json_schema"}),
            "response_format.json_schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"schema": person_schema()}}),
            "response_format.json_schema.name",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "properties": {"a": {"type": 5}}}}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "properties": big}}}),
            "response_format.json_schema.schema",
        ),
    ];
    for (format, param) in cases {
        for tenant in ["acme", "globex"] {
            let res = gw.chat(tenant, body(format.clone(), false)).await;
            assert_eq!(res.status, 400, "{format}: {}", res.text());
            assert_eq!(res.json()["error"]["param"], param, "{}", res.text());
            assert!(res.json()["error"]["code"].is_null());
        }
    }
    assert!(openai.requests().is_empty() && anthropic.requests().is_empty());
    assert!(gw.usage_events().is_empty());
}

#[tokio::test]
async fn formats_whose_check_cannot_be_bounded_are_400s_naming_response_format() {
    let (openai, anthropic, gw) = gateway().await;
    let format = |schema: Value| json!({"type": "json_schema", "json_schema": {"name": "p", "schema": schema}});
    let patterns: serde_json::Map<String, Value> = (0..101)
        .map(|i| {
            (
                format!("p{i}"),
                json!({"type": "string", "pattern": format!("^{i}-")}),
            )
        })
        .collect();
    // 1.4 KB whose validation runs 2^22 subschemas for one value.
    let mut chain = serde_json::Map::new();
    for i in 0..22 {
        let next = format!("#/$defs/d{}", i + 1);
        chain.insert(
            format!("d{i}"),
            json!({"anyOf": [{"$ref": next}, {"$ref": next}]}),
        );
    }
    chain.insert("d22".into(), json!({"type": "integer"}));
    let cases = [
        (
            json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a|aa)+\\1$"}}}),
            "linear time",
        ),
        (
            json!({"type": "object", "properties": patterns}),
            "the limit is 100",
        ),
        (
            json!({"type": "object", "$defs": chain, "properties": {"a": {"$ref": "#/$defs/d0"}}}),
            "unfolds to more than",
        ),
        (
            json!({"type": "object", "unevaluatedProperties": false}),
            "unevaluatedProperties",
        ),
    ];
    for (schema, needle) in cases {
        for tenant in ["acme", "globex"] {
            let res = gw.chat(tenant, body(format(schema.clone()), false)).await;
            assert_eq!(res.status, 400, "{needle}: {}", res.text());
            let error = &res.json()["error"];
            assert_eq!(error["param"], "response_format.json_schema.schema");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(needle), "{message}");
        }
    }
    assert!(openai.requests().is_empty() && anthropic.requests().is_empty());
    assert!(gw.usage_events().is_empty());
}

/// Two schemas and replies a validator without bounds would take hours or more to check: a
/// tree whose every level is either of two references to the root (2^60 visits for this
/// reply), and a backtracking-prone pattern against long strings that almost match.
fn hostile_checks() -> [(Value, String); 2] {
    let tree = json!({"type": "json_schema", "json_schema": {"name": "tree", "schema": {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "child": {"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}
        }
    }}});
    let mut deep = json!({"label": 1});
    for _ in 0..60 {
        deep = json!({"label": "n", "child": deep});
    }
    let words = json!({"type": "json_schema", "json_schema": {"name": "words", "schema": {
        "type": "object",
        "properties": {"w": {"type": "array", "items": {"type": "string", "pattern": "^(a+)+$"}}}
    }}});
    let almost = json!({"w": vec![format!("{}!", "a".repeat(5_000)); 50]});
    [(tree, deep.to_string()), (words, almost.to_string())]
}

#[tokio::test]
async fn a_reply_whose_check_would_run_away_fails_cleanly_and_its_call_is_metered() {
    let (openai, anthropic, gw) = gateway().await;
    for via in Via::BOTH {
        for (format, reply) in hostile_checks() {
            for stream in [false, true] {
                via.standin(&openai, &anthropic)
                    .push(Behavior::reply(reply.clone(), USAGE));
                let res = gw.chat(via.tenant(), body(format.clone(), stream)).await;
                let error = if stream {
                    assert_eq!(res.status, 200, "{via:?}: {}", res.text());
                    res.sse_events().last().unwrap()["error"].clone()
                } else {
                    assert_eq!(res.status, 422, "{via:?}: {}", res.text());
                    res.json()["error"].clone()
                };
                assert_eq!(error["code"], "response_validation_failed", "{via:?}");
                assert_validation_event(&gw, &request_id(&res), via, stream);
            }
        }
    }
    assert_eq!(gw.usage_events().len(), 8, "one event per provider call");
}

#[tokio::test]
async fn the_simulated_provider_answers_structured_requests_end_to_end() {
    let gw = Gateway::simulated().await;
    let order = json!({
        "type": "json_schema",
        "json_schema": {"name": "order", "schema": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "status": {"enum": ["open", "closed"]},
                "count": {"type": "integer", "minimum": 1},
                "total": {"type": "number"},
                "gift": {"type": "boolean"},
                "lines": {"type": "array", "items": {"type": "object",
                    "properties": {"sku": {"type": "string"}}, "required": ["sku"]}}
            },
            "required": ["id", "status", "count", "total", "gift", "lines"],
            "additionalProperties": false
        }}
    });
    for tenant in ["acme", "globex"] {
        for stream in [false, true] {
            let res = gw.chat(tenant, body(order.clone(), stream)).await;
            assert_eq!(res.status, 200, "{tenant} {stream}: {}", res.text());
            let text = if stream {
                assert!(res.text().ends_with("data: [DONE]\n\n"));
                res.sse_text()
            } else {
                res.json()["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(reply["status"], "open");
            assert!(reply["count"].as_i64().unwrap() >= 1);
            assert!(reply["lines"][0]["sku"].is_string());
        }
    }
    assert!(gw.usage_events().iter().all(|e| e.success));
}

/// A first call served by the route's fallback fails its format; the retry walks the chain
/// again and the route's own target answers: each call is metered at the price of the target
/// that served it (the retry's record is not left on the fallback's).
#[tokio::test]
async fn a_retry_after_a_failover_is_metered_at_the_target_that_served_it() {
    let (openai, anthropic, gw) = gateway().await;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.structured_output.retry_on_invalid = true;
    config.routes.get_mut("gpt-4o-mini").unwrap().fallbacks = vec![Target {
        provider: ProviderKind::Anthropic,
        model: "claude-haiku-4-5".into(),
    }];
    gw.store.put_tenant_config(config).await.unwrap();
    for _ in 0..3 {
        openai.push(Behavior::status(503));
    }
    anthropic.push(Behavior::reply(WRONG_TYPE, USAGE));
    openai.push(Behavior::reply(VALID, USAGE));
    let res = gw.chat("acme", body(person_format(), false)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.header("x-tollgate-served-by"),
        Some("openai/gpt-4o-mini")
    );
    let id = request_id(&res);
    let first = event(&gw, &id);
    assert_eq!(first.provider, ProviderKind::Anthropic);
    assert_eq!(first.cost_usd, Via::Anthropic.cost());
    let retried = event(&gw, &format!("{id}-retry"));
    assert_eq!(retried.provider, ProviderKind::Openai);
    assert_eq!(retried.cost_usd, Via::OpenAi.cost());
}
