#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Bad input gets a clear 4xx in the OpenAI error shape: never a panic, never a 500, and never
//! a provider call.

use serde_json::json;
use tollgate_tests::harness::Gateway;

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
    settings.max_body_bytes = 1024;
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
