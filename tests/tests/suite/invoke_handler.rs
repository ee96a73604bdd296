#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! The invoke handler driven by API Gateway event fixtures, the way Lambda delivers them.

use serde_json::Value;
use tollgate_tests::harness::{Gateway, TestResponse};

fn fixture(name: &str, key: &str) -> lambda_http::Request {
    let path = format!(
        "{}/../functions/invoke/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&raw.replace("__TENANT_KEY__", key))
        .expect("valid API Gateway event")
}

async fn invoke(gw: &Gateway, req: lambda_http::Request) -> TestResponse {
    gw.send(tollgate::lambda::from_lambda(req)).await
}

#[tokio::test]
async fn an_http_api_event_gets_a_completion_tagged_with_the_api_gateway_request_id() {
    let gw = Gateway::simulated().await;
    let res = invoke(&gw, fixture("chat-completion.json", gw.key("acme"))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-request-id"), Some("Kx1vQhZ3oAMEVxw="));
    let body = res.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let events = gw.usage_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].request_id.as_str(), "Kx1vQhZ3oAMEVxw=");
    // The body said `tenant_id: globex`; identity comes from the key alone.
    assert_eq!(events[0].tenant_id.as_str(), "acme");
}

#[tokio::test]
async fn a_base64_encoded_body_is_decoded() {
    let gw = Gateway::simulated().await;
    let res = invoke(
        &gw,
        fixture("chat-completion-base64.json", gw.key("globex")),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        res.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Hi")
    );
}

#[tokio::test]
async fn a_rest_api_event_with_a_stage_prefix_lists_the_tenants_models() {
    let gw = Gateway::simulated().await;
    let res = invoke(&gw, fixture("models-rest-stage.json", gw.key("globex"))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let ids: Vec<String> = res.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.contains(&"claude-sonnet".to_owned()));
    assert!(
        !ids.contains(&"claude-haiku".to_owned()),
        "acme's models leaked: {ids:?}"
    );
}

#[tokio::test]
async fn a_malformed_body_in_an_event_is_a_400_in_the_openai_shape() {
    let gw = Gateway::simulated().await;
    let res = invoke(
        &gw,
        fixture("chat-completion-malformed.json", gw.key("acme")),
    )
    .await;
    assert_eq!(res.status, 400);
    let body = res.json();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert!(
        gw.usage_events().is_empty(),
        "a refused request reached a provider"
    );
}

#[tokio::test]
async fn an_unknown_key_in_an_event_is_a_401() {
    let gw = Gateway::simulated().await;
    let bogus = "tg_AAAAAAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    let res = invoke(&gw, fixture("chat-completion.json", bogus)).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.json()["error"]["code"], "invalid_api_key");
    let metrics = gw.request_metrics();
    assert_eq!(metrics.len(), 1);
    assert_eq!(
        metrics[0].error_type.map(|k| k.as_str()),
        Some("authentication")
    );
    assert_eq!(metrics[0].tenant_id, None);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_openai_shaped_errors() {
    let gw = Gateway::simulated().await;
    let get = http::Request::builder()
        .method("GET")
        .uri("/v1/chat/completions")
        .body(bytes::Bytes::new())
        .unwrap();
    let res = gw.send(get).await;
    assert_eq!(res.status, 405);
    // An OpenAI route Tollgate does not serve (`/v1/embeddings` is served since issue 14).
    let missing = http::Request::builder()
        .uri("/v1/audio/speech")
        .method("POST")
        .body(bytes::Bytes::new())
        .unwrap();
    let res = gw.send(missing).await;
    assert_eq!(res.status, 404);
    let body: Value = res.json();
    assert_eq!(body["error"]["code"], "unknown_url");
    assert!(res.header("x-request-id").is_some());
}
