//! `tollgate serve --admin`: the admin API on the local server, acting as the local operator
//! (there is no IAM authorizer locally), and only on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::{Value, json};

use crate::ingest_cmd::Gateway;

async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let client = tollgate::adapters::tls::reqwest_builder().build().unwrap();
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[test]
fn the_admin_api_serves_locally_as_the_operator_and_its_keys_work_at_once() {
    let gateway = Gateway::start_with(&["--admin"], &[("TOLLGATE_ACTOR", "local:serve-test")]);
    assert!(
        gateway
            .banner
            .iter()
            .any(|l| l.contains("/admin/v1") && l.contains("local:serve-test")),
        "{:?}",
        gateway.banner
    );
    let base = format!("{}/admin/v1", gateway.url);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (status, issued) = call(
            reqwest::Method::POST,
            &format!("{base}/tenants/acme/keys"),
            Some(json!({"name": "local", "scopes": ["chat"]})),
        )
        .await;
        assert_eq!(status, 201, "{issued}");
        let key = issued["key"].as_str().unwrap().to_owned();
        let chat = tollgate::adapters::tls::reqwest_builder()
            .build()
            .unwrap()
            .post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini",
                          "messages": [{"role": "user", "content": "from a local admin key"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(chat.status(), 200);
        let (status, audit) = call(
            reqwest::Method::GET,
            &format!("{base}/audit?tenant=acme"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{audit}");
        assert_eq!(audit["records"][0]["action"], "key.create");
        assert_eq!(audit["records"][0]["actor"], "local:serve-test");
    });
}

#[test]
fn without_admin_the_local_server_has_no_admin_api() {
    let gateway = Gateway::start_with(&[], &[]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (status, _) = call(
            reqwest::Method::GET,
            &format!("{}/admin/v1/tenants", gateway.url),
            None,
        )
        .await;
        assert_eq!(status, 404);
    });
}

#[test]
fn admin_refuses_to_serve_beyond_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--admin", "--host", "0.0.0.0", "--port", "0"])
        .env("TOLLGATE_PROVIDERS", "simulated")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}
