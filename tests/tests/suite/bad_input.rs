#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Bad input gets a clear 4xx in the OpenAI error shape: never a panic, never a 500, and never
//! a provider call. A refusal names the field and what it must be, never the value sent: the
//! message is the request's log line as well as the response.

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};
use tollgate_tests::capture::Captured;
use tollgate_tests::harness::{Gateway, TestResponse};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use usage_report::UsageReportState;

async fn assert_400(gw: &Gateway, body: String, param: Option<&str>) {
    let key = gw.key("acme").to_owned();
    let res = gw.chat_with_key(Some(&key), body.clone()).await;
    assert_eq!(res.status, 400, "{body} → {}", res.text());
    let err = res.json();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    if let Some(param) = param {
        assert_eq!(err["error"]["param"], param, "{body}");
    }
}

#[tokio::test]
async fn malformed_and_invalid_bodies_are_400s_that_name_the_problem() {
    let gw = Gateway::simulated().await;
    let cases: Vec<(String, Option<&str>)> = vec![
        ("{not json".into(), None),
        ("".into(), None),
        ("[]".into(), None),
        (json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(), Some("model")),
        (json!({"model": "gpt-4o-mini", "messages": []}).to_string(), Some("messages")),
        (json!({"model": "gpt-4o-mini", "messages": "hi"}).to_string(), Some("messages")),
        (json!({"model": "gpt-4o-mini", "messages": [{"role": "robot", "content": "hi"}]}).to_string(), Some("messages[0].role")),
        (json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": 5}]}).to_string(), Some("messages[0].content")),
        (json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}).to_string(), Some("max_tokens")),
        (json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10_000_000}).to_string(), Some("max_tokens")),
        (json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5}).to_string(), Some("max_tokens")),
        (json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}).to_string(), Some("temperature")),
        (json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}).to_string(), Some("stream")),
    ];
    for (body, param) in cases {
        assert_400(&gw, body, param).await;
    }
    assert!(gw.usage_events().is_empty());
}

#[tokio::test]
async fn a_model_the_tenant_may_not_use_is_a_404_naming_it() {
    let gw = Gateway::simulated().await;
    let res = gw
        .chat(
            "globex",
            tollgate_tests::harness::chat_body("claude-haiku", "hi"),
        )
        .await;
    assert_eq!(res.status, 404);
    let err = res.json();
    assert_eq!(err["error"]["code"], "model_not_found");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude-haiku")
    );
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let mut settings =
        tollgate_tests::harness::settings(&[("TOLLGATE_PROVIDERS", "simulated".into())]);
    settings.edge.max_body_bytes = 1024;
    let gw = Gateway::build(settings).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let res = gw.chat("acme", body).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.json()["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn missing_and_malformed_authorization_are_401s() {
    let gw = Gateway::simulated().await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let res = gw.chat_with_key(None, body.clone()).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["error"]["code"], "missing_api_key");
    let res = gw.chat_with_key(Some("sk-not-ours"), body).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn a_disabled_tenants_keys_are_refused() {
    let gw = Gateway::simulated().await;
    let mut config = tollgate::demo::globex_config().unwrap();
    config.disabled = true;
    tollgate::ports::TenantAdmin::put_tenant_config(gw.store.as_ref(), config)
        .await
        .unwrap();
    let res = gw
        .chat("globex", tollgate_tests::harness::chat_body("gpt-4o", "hi"))
        .await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["error"]["code"], "tenant_disabled");
    assert!(gw.usage_events().is_empty());
    // Other tenants are unaffected.
    assert_eq!(
        gw.chat("acme", tollgate_tests::harness::chat_body("gpt-4o", "hi"))
            .await
            .status,
        200
    );
}

/// A chat body for acme with `field` set to `value`.
fn chat_with(field: &str, value: Value) -> Value {
    let mut body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    body[field] = value;
    body
}

fn schema_format(schema: Value) -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
}

async fn usage_query(state: &UsageReportState, key: &str, query: &str) -> TestResponse {
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("/v1/usage/events?{query}"))
        .header("authorization", format!("Bearer {key}"))
        .body(Bytes::new())
        .unwrap();
    let (parts, body) = usage_report::handle(state, req).await.into_parts();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await,
    }
}

#[tokio::test(flavor = "current_thread")] // The log capture is this thread's.
async fn refusals_name_the_field_and_expected_type_and_never_echo_or_log_the_value() {
    // The Lambdas' JSON log layer at debug, scoped to this thread: spawned tasks run on it too.
    tollgate_tests::capture::pin_interest();
    let logs = Captured::default();
    let writer = logs.clone();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(LevelFilter::DEBUG)
            .with(tollgate::telemetry::json_layer(move || writer.clone())),
    );
    let gw = Gateway::simulated().await;
    let canary = |n: usize| format!("canarybadinput{n}x");
    // Numbers sent where text is expected, or out of range, are content too.
    let number = 918_273_645_127_i64;
    let user = |content: Value| json!([{"role": "user", "content": content}]);

    let chats: Vec<(Value, &str, &str)> = vec![
        (
            chat_with("messages", canary(1).into()),
            "messages",
            "`messages`: expected an array, got a string",
        ),
        (
            chat_with("max_tokens", canary(2).into()),
            "max_tokens",
            "`max_tokens`: expected an integer, got a string",
        ),
        (
            chat_with("model", number.into()),
            "model",
            "`model`: expected a string, got an integer",
        ),
        (
            chat_with("messages", user(number.into())),
            "messages[0].content",
            "expected a string or an array of content parts, got an integer",
        ),
        (
            chat_with(
                "messages",
                user(json!([{"type": "text", "text": {"t": canary(3)}}])),
            ),
            "messages[0].content",
            "expected a string or an array of content parts, got an array",
        ),
        (
            chat_with("messages", user(json!([{"type": canary(4), "text": "x"}]))),
            "messages[0].content[0].type",
            "only `text` and `image_url` content parts",
        ),
        (
            chat_with("messages", json!([{"role": canary(5), "content": "hi"}])),
            "messages[0].role",
            "expected one of system, developer, user, assistant",
        ),
        (
            chat_with("messages", json!([canary(6)])),
            "messages[0]",
            "`messages[0]`: expected an object, got a string",
        ),
        (
            chat_with(
                "messages",
                json!([{"role": "user", "content": "hi", "name": number}]),
            ),
            "messages[0].name",
            "expected a string, got an integer",
        ),
        (
            chat_with("temperature", canary(7).into()),
            "temperature",
            "expected a number, got a string",
        ),
        (
            chat_with("temperature", (number as f64).into()),
            "temperature",
            "must be between 0 and 2",
        ),
        (
            chat_with("max_tokens", number.into()),
            "max_tokens",
            "must be between 1 and",
        ),
        (
            chat_with("stop", json!({"k": canary(8)})),
            "stop",
            "expected a string or an array of strings, got an object",
        ),
        (
            chat_with("stream", canary(9).into()),
            "stream",
            "expected a boolean, got a string",
        ),
        (
            chat_with("user", number.into()),
            "user",
            "expected a string, got an integer",
        ),
        (
            chat_with("retrieval", canary(10).into()),
            "retrieval",
            "expected a boolean or an object, got a string",
        ),
        (
            chat_with("retrieval", json!({"top_k": number})),
            "retrieval.top_k",
            "must be between 1 and 20",
        ),
        (
            chat_with("conversation_id", number.into()),
            "conversation_id",
            "expected a string, got an integer",
        ),
        (
            chat_with("response_format", json!({"type": canary(11)})),
            "response_format.type",
            "must be one of",
        ),
        (
            chat_with(
                "response_format",
                schema_format(json!({"type": "object", "properties": {"a": {"type": canary(12)}}})),
            ),
            "response_format.json_schema.schema",
            "not a valid JSON Schema (at `/properties/a/type`)",
        ),
        (
            chat_with(
                "response_format",
                schema_format(
                    json!({"type": "object", "properties": {"a": {"pattern": format!("{}(?=x)", canary(13))}}}),
                ),
            ),
            "response_format.json_schema.schema",
            "linear time",
        ),
        (
            chat_with(
                "response_format",
                schema_format(
                    json!({"type": "object", "properties": {"a": {"$ref": format!("https://{}.example/s.json", canary(14))}}}),
                ),
            ),
            "response_format.json_schema.schema",
            "`/properties/a/$ref`",
        ),
        (
            chat_with(
                "tools",
                json!([{"type": "function", "function": {"name": format!("{} x", canary(20))}}]),
            ),
            "tools[0].function.name",
            "1-64 characters",
        ),
        (
            chat_with(
                "tools",
                json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": canary(21)}}}}}]),
            ),
            "tools[0].function.parameters",
            "not a valid JSON Schema (at `/properties/a/type`)",
        ),
        (
            {
                let mut body = chat_with(
                    "tools",
                    json!([{"type": "function", "function": {"name": "f"}}]),
                );
                body["tool_choice"] = json!(canary(22));
                body
            },
            "tool_choice",
            "must be `none`, `auto`, `required`",
        ),
        (
            chat_with(
                "messages",
                json!([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": canary(23), "content": "x"}]),
            ),
            "messages[1].tool_call_id",
            "answers no call",
        ),
        (
            chat_with(
                "messages",
                json!([{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": format!("[\"{}\"]", canary(24))}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "x"}]),
            ),
            "messages[1].tool_calls[0].function.arguments",
            "must be a JSON object",
        ),
    ];
    let mut responses = Vec::new();
    for (body, param, needle) in chats {
        let res = gw.chat("acme", body.clone()).await;
        assert_eq!(res.status, 400, "{body}: {}", res.text());
        let error = &res.json()["error"];
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], param, "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
        responses.push(res.text());
    }

    let profile =
        |body: Value| gw.call("acme", Method::PUT, "/v1/users/user-1/profile", Some(body));
    for (body, param) in [
        (
            json!({format!("{} has spaces", canary(15)): "x"}),
            "profile",
        ),
        (json!({"note": [canary(16)]}), "profile.note"),
    ] {
        let res = profile(body).await;
        assert_eq!(res.status, 400, "{}", res.text());
        assert_eq!(res.json()["error"]["param"], param);
        responses.push(res.text());
    }

    let usage = UsageReportState::build(&tollgate::bootstrap::Stores::embedded(gw.store.clone()));
    for (query, param) in [
        (format!("limit={}", canary(17)), "limit"),
        (format!("from={}", canary(18)), "from"),
        (format!("error_type={}", canary(19)), "error_type"),
    ] {
        let res = usage_query(&usage, gw.key("acme"), &query).await;
        assert_eq!(res.status, 400, "{query}: {}", res.text());
        assert_eq!(res.json()["error"]["param"], param);
        responses.push(res.text());
    }
    assert!(gw.usage_events().is_empty(), "nothing reached a provider");

    let lines = logs.lines();
    let refused = lines
        .iter()
        .filter(|l| l["message"] == "request refused")
        .count();
    assert!(
        refused >= 25,
        "the capture holds every refusal's line: {refused}"
    );
    let canaries: Vec<String> = (1..=24).map(canary).chain([number.to_string()]).collect();
    for line in &lines {
        let line = line.to_string();
        for c in &canaries {
            assert!(!line.contains(c.as_str()), "a log line holds `{c}`: {line}");
        }
    }
    for text in &responses {
        for c in &canaries {
            assert!(!text.contains(c.as_str()), "a response holds `{c}`: {text}");
        }
    }
}
