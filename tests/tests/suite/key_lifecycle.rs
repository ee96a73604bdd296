//! Key lifecycle through the gateway's real handlers: scopes (a request outside its key's
//! scopes is a 403 naming the scope, on every tenant route), expiry and revocation (the same
//! 401 as an unknown key), and rotation (old and new keys both work during the overlap; an
//! overlap of zero ends the old key at once). Keys are issued through
//! `tollgate::service::key_admin`, the code behind `tollgate key`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use http::{Method, Request};
use serde_json::{Value, json};
use tollgate::domain::ids::{RequestId, TenantId};
use tollgate::domain::keys::{KeyScope, KeySpec, issue_key_with};
use tollgate::ports::TenantAdmin;
use tollgate::routes::{Mounted, dispatch};
use tollgate::service::audit::Auditor;
use tollgate::service::key_admin;
use tollgate_tests::harness::{Gateway, TestResponse, chat_body};

fn auditor(gw: &Gateway) -> Auditor<'_> {
    Auditor::new(gw.store.as_ref(), "local:test", RequestId::generate())
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn key_with(gw: &Gateway, scopes: &[KeyScope]) -> String {
    let spec = KeySpec {
        name: Some("scoped".into()),
        scopes: Some(scopes.iter().copied().collect::<BTreeSet<_>>()),
        expires_at: None,
    };
    let issued = key_admin::create(gw.store.as_ref(), &auditor(gw), &acme(), spec, Utc::now())
        .await
        .unwrap();
    issued.expose().to_owned()
}

/// Sends through the three tenant-facing functions, routed by path as API Gateway routes
/// them (the harness's gateway has invoke and ingest; usage-report is built on its store).
async fn send(
    gw: &Gateway,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> TestResponse {
    let usage = usage_report::UsageReportState::build(&tollgate::bootstrap::Stores::embedded(
        gw.store.clone(),
    ));
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01");
    let bytes = match body {
        Some(body) => {
            req = req.header("content-type", "application/json");
            serde_json::to_vec(&body).unwrap()
        }
        None => Vec::new(),
    };
    let functions: [&dyn Mounted; 3] = [&gw.ingest, &usage, &gw.state];
    let response = dispatch(&functions, req.body(bytes.into()).unwrap()).await;
    let (parts, body) = response.into_parts();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await,
    }
}

/// Every tenant route with the scope it needs (`None`: any live key).
fn routes() -> Vec<(Method, &'static str, Option<Value>, Option<KeyScope>)> {
    vec![
        (
            Method::POST,
            "/v1/chat/completions",
            Some(chat_body("gpt-4o-mini", "hi")),
            Some(KeyScope::Chat),
        ),
        (
            Method::POST,
            "/v1/messages",
            Some(json!({"model": "claude-haiku", "max_tokens": 16,
                        "messages": [{"role": "user", "content": "hi"}]})),
            Some(KeyScope::Chat),
        ),
        (
            Method::POST,
            "/v1/messages/count_tokens",
            Some(json!({"model": "claude-haiku", "messages": [{"role": "user", "content": "hi"}]})),
            Some(KeyScope::Chat),
        ),
        (
            Method::POST,
            "/v1/embeddings",
            Some(json!({"model": "text-embedding-3-small", "input": "hi"})),
            Some(KeyScope::Embeddings),
        ),
        (
            Method::GET,
            "/v1/documents",
            None,
            Some(KeyScope::Documents),
        ),
        (
            Method::DELETE,
            "/v1/documents/faq",
            None,
            Some(KeyScope::Documents),
        ),
        (Method::GET, "/v1/usage", None, Some(KeyScope::UsageRead)),
        (
            Method::GET,
            "/v1/usage/events",
            None,
            Some(KeyScope::UsageRead),
        ),
        (
            Method::PUT,
            "/v1/users/u-1/profile",
            Some(json!({"attributes": {"plan": "pro"}})),
            Some(KeyScope::Profiles),
        ),
        (
            Method::GET,
            "/v1/users/u-1/profile",
            None,
            Some(KeyScope::Profiles),
        ),
        (Method::GET, "/v1/models", None, None),
        (Method::GET, "/v1/models/gpt-4o-mini", None, None),
    ]
}

/// The scope a 403 names, in either API's error shape.
fn refused_scope(res: &TestResponse) -> Option<String> {
    if res.status != 403 {
        return None;
    }
    let body = res.json();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    KeyScope::ALL
        .into_iter()
        .find(|s| message.contains(&format!("`{s}` scope")))
        .map(|s| s.to_string())
}

#[tokio::test]
async fn a_key_is_served_inside_its_scopes_and_refused_with_a_403_naming_the_scope_outside() {
    let gw = Gateway::simulated().await;
    for scope in KeyScope::ALL {
        let key = key_with(&gw, &[scope]).await;
        for (method, path, body, needs) in routes() {
            let res = send(&gw, &key, method.clone(), path, body).await;
            match needs {
                Some(needed) if needed != scope => {
                    assert_eq!(
                        refused_scope(&res).as_deref(),
                        Some(needed.as_str()),
                        "{scope} key on {method} {path}: {} {}",
                        res.status,
                        res.text()
                    );
                }
                _ => assert!(
                    res.status != 401 && res.status != 403,
                    "{scope} key on {method} {path}: {} {}",
                    res.status,
                    res.text()
                ),
            }
        }
    }
    // The OpenAI shape for OpenAI routes, Anthropic's for the Messages API.
    let usage_only = key_with(&gw, &[KeyScope::UsageRead]).await;
    let chat = send(
        &gw,
        &usage_only,
        Method::POST,
        "/v1/chat/completions",
        Some(chat_body("gpt-4o-mini", "hi")),
    )
    .await;
    assert_eq!(chat.json()["error"]["code"], "insufficient_scope");
    assert_eq!(chat.json()["error"]["type"], "permission_error");
    let messages = send(
        &gw,
        &usage_only,
        Method::POST,
        "/v1/messages",
        Some(json!({"model": "claude-haiku", "max_tokens": 16,
                    "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(messages.status, 403);
    assert_eq!(messages.json()["type"], "error");
    assert_eq!(messages.json()["error"]["type"], "permission_error");
    // A key without scopes (every key issued before scopes existed) may do everything.
    let all = gw.key("acme").to_owned();
    for (method, path, body, _) in routes() {
        let res = send(&gw, &all, method.clone(), path, body).await;
        assert!(
            res.status != 401 && res.status != 403,
            "{method} {path}: {}",
            res.text()
        );
    }
}

#[tokio::test]
async fn expired_and_revoked_keys_get_exactly_the_401_an_unknown_key_gets() {
    let gw = Gateway::simulated().await;
    let now = Utc::now();
    // A key whose expiry has passed, as the store holds it.
    let expired = issue_key_with(
        acme(),
        KeySpec {
            expires_at: Some(now - Duration::seconds(1)),
            ..KeySpec::default()
        },
        now - Duration::hours(1),
    );
    gw.store.put_key(expired.record.clone()).await.unwrap();
    let revoked = key_with(&gw, &[KeyScope::Chat]).await;
    let prefix =
        tollgate::domain::keys::KeyPrefix::parse(revoked.split('_').nth(1).unwrap()).unwrap();
    key_admin::revoke(gw.store.as_ref(), &auditor(&gw), &prefix, now)
        .await
        .unwrap();
    let unknown = issue_key_with(acme(), KeySpec::default(), now);

    let body = Some(chat_body("gpt-4o-mini", "hi"));
    let unknown = send(
        &gw,
        unknown.expose(),
        Method::POST,
        "/v1/chat/completions",
        body.clone(),
    )
    .await;
    assert_eq!(unknown.status, 401);
    for key in [expired.expose(), revoked.as_str()] {
        let res = send(&gw, key, Method::POST, "/v1/chat/completions", body.clone()).await;
        assert_eq!(res.status, 401);
        assert_eq!(
            res.json(),
            unknown.json(),
            "indistinguishable from an unknown key"
        );
    }
}

#[tokio::test]
async fn a_rotated_key_and_its_successor_both_work_during_the_overlap_and_a_zero_overlap_ends_it() {
    let gw = Gateway::simulated().await;
    let body = Some(chat_body("gpt-4o-mini", "rotate"));
    for (overlap, old_works) in [(Duration::hours(1), true), (Duration::zero(), false)] {
        let old = key_with(&gw, &[KeyScope::Chat]).await;
        let prefix =
            tollgate::domain::keys::KeyPrefix::parse(old.split('_').nth(1).unwrap()).unwrap();
        let rotated = key_admin::rotate(
            gw.store.as_ref(),
            &auditor(&gw),
            &prefix,
            overlap,
            Utc::now(),
        )
        .await
        .unwrap();
        let new = send(
            &gw,
            rotated.key.expose(),
            Method::POST,
            "/v1/chat/completions",
            body.clone(),
        )
        .await;
        assert_eq!(new.status, 200, "{}", new.text());
        let old_res = send(
            &gw,
            &old,
            Method::POST,
            "/v1/chat/completions",
            body.clone(),
        )
        .await;
        assert_eq!(
            old_res.status == 200,
            old_works,
            "{overlap}: {}",
            old_res.text()
        );
        // The successor keeps the old key's scopes.
        let usage = send(&gw, rotated.key.expose(), Method::GET, "/v1/usage", None).await;
        assert_eq!(refused_scope(&usage).as_deref(), Some("usage:read"));
    }
}

#[tokio::test]
async fn a_keys_last_use_is_recorded_once_however_many_requests_use_it() {
    let gw = Gateway::simulated().await;
    let key = key_with(&gw, &[KeyScope::Chat]).await;
    let prefix = tollgate::domain::keys::KeyPrefix::parse(key.split('_').nth(1).unwrap()).unwrap();
    let before = Utc::now();
    for i in 0..5 {
        let res = send(
            &gw,
            &key,
            Method::POST,
            "/v1/chat/completions",
            Some(chat_body("gpt-4o-mini", &format!("use {i}"))),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    // The write runs in the background: wait for it (a bounded poll, not a timing claim).
    let mut used = None;
    for _ in 0..200 {
        used = tollgate::ports::KeyUsage::keys_last_used(
            gw.store.as_ref(),
            std::slice::from_ref(&prefix),
        )
        .await
        .unwrap()
        .remove(&prefix);
        if used.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let used = used.expect("the key's use is recorded");
    assert!(used.timestamp() >= before.timestamp() && used <= Utc::now());
}
