//! The admin API through its real handler (`admin::handle`), on the store the gateway serves
//! from: tenants and keys provisioned over HTTP work at the gateway at once; every request
//! needs an IAM principal in its context (API Gateway's `AWS_IAM` authorizer puts it there);
//! `If-Match` makes concurrent updates safe (one applies, the rest get 412); every change is in
//! the audit log under the caller's ARN, without key material.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.

use admin::AdminState;
use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Value, json};
use tollgate::lambda::PlatformPrincipal;
use tollgate_tests::harness::{Gateway, TestResponse, chat_body};

const OPERATOR: &str = "arn:aws:sts::123456789012:assumed-role/backoffice/provisioner";

fn admin_on(gw: &Gateway) -> AdminState {
    AdminState::build(&tollgate::bootstrap::Stores::embedded(gw.store.clone()))
}

fn request(
    method: Method,
    path: &str,
    body: Option<Value>,
    principal: Option<&str>,
) -> Request<Bytes> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Bytes::from(
            body.map(|b| serde_json::to_vec(&b).unwrap())
                .unwrap_or_default(),
        ))
        .unwrap();
    if let Some(arn) = principal {
        req.extensions_mut()
            .insert(PlatformPrincipal(arn.to_owned()));
    }
    req
}

async fn call(state: &AdminState, req: Request<Bytes>) -> TestResponse {
    let (parts, body) = admin::handle(state, req).await.into_parts();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await,
    }
}

async fn send(state: &AdminState, method: Method, path: &str, body: Option<Value>) -> TestResponse {
    call(state, request(method, path, body, Some(OPERATOR))).await
}

/// A new tenant's configuration, as `tollgate tenant show` prints one.
fn initech() -> Value {
    let mut config = serde_json::to_value(tollgate::demo::acme_config().unwrap()).unwrap();
    config["tenant_id"] = json!("initech");
    config["display_name"] = json!("Initech");
    config
}

#[tokio::test]
async fn a_tenant_and_a_key_provisioned_over_http_serve_at_the_gateway_at_once() {
    let gw = Gateway::simulated().await;
    let admin = admin_on(&gw);
    let created = send(
        &admin,
        Method::POST,
        "/prod/admin/v1/tenants",
        Some(initech()),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.json()["tenant"]["version"], 1);

    let issued = send(
        &admin,
        Method::POST,
        "/admin/v1/tenants/initech/keys",
        Some(json!({"name": "signup-flow", "scopes": ["chat", "usage:read"]})),
    )
    .await;
    assert_eq!(issued.status, 201, "{}", issued.text());
    assert_eq!(issued.header("cache-control"), Some("no-store"));
    let key = issued.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(
        issued.json()["details"]["scopes"],
        json!(["chat", "usage:read"])
    );
    assert_eq!(issued.json()["details"]["state"], "live");

    let chat = gw
        .chat_with_key(
            Some(&key),
            chat_body("gpt-4o-mini", "hello from initech").to_string(),
        )
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text());

    let listed = send(&admin, Method::GET, "/admin/v1/tenants/initech/keys", None).await;
    assert_eq!(listed.status, 200);
    let keys = listed.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert!(!listed.text().contains(&key), "a listing never shows a key");
    let stored = tollgate::ports::TenantAdmin::keys_for(
        gw.store.as_ref(),
        &tollgate::domain::ids::TenantId::parse("initech").unwrap(),
    )
    .await
    .unwrap();
    let hash = stored[0].hash.to_hex();
    assert!(!listed.text().contains(&hash), "nor its hash");
    assert!(
        !issued.text().contains(&hash),
        "nor does the issuing answer"
    );

    // The audit log has both changes, under the caller's ARN, and never the key.
    let audit = send(&admin, Method::GET, "/admin/v1/audit?tenant=initech", None).await;
    assert_eq!(audit.status, 200);
    let records = audit.json()["records"].as_array().unwrap().clone();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.create", "tenant.create"]);
    assert!(records.iter().all(|r| r["actor"] == OPERATOR));
    assert!(!audit.text().contains(&key));
    assert!(!audit.text().contains(key.rsplit('_').next().unwrap()));
}

#[tokio::test]
async fn without_an_iam_principal_nothing_is_read_or_written() {
    let gw = Gateway::simulated().await;
    let admin = admin_on(&gw);
    for (method, path, body) in [
        (Method::GET, "/admin/v1/tenants", None),
        (Method::POST, "/admin/v1/tenants", Some(initech())),
        (Method::POST, "/admin/v1/tenants/acme/keys", Some(json!({}))),
        (Method::POST, "/admin/v1/tenants/acme/disable", None),
        (Method::GET, "/admin/v1/audit", None),
    ] {
        let res = call(&admin, request(method.clone(), path, body, None)).await;
        assert_eq!(res.status, 403, "{method} {path}");
        assert_eq!(res.json()["error"]["code"], "iam_identity_required");
    }
    // A tenant bearer key is not an admin credential either.
    let mut req = request(Method::GET, "/admin/v1/tenants", None, None);
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", gw.key("acme")).parse().unwrap(),
    );
    assert_eq!(call(&admin, req).await.status, 403);
    let unchanged = tollgate::ports::TenantConfigSource::tenant_config(
        gw.store.as_ref(),
        &tollgate::domain::ids::TenantId::parse("initech").unwrap(),
    )
    .await
    .unwrap();
    assert!(unchanged.is_none());
}

#[tokio::test]
async fn of_eight_concurrent_updates_from_one_version_one_applies_and_seven_get_412() {
    let gw = Gateway::simulated().await;
    let admin = admin_on(&gw);
    let got = send(&admin, Method::GET, "/admin/v1/tenants/acme", None).await;
    let etag = got.header("etag").unwrap().to_owned();
    let base = got.json()["tenant"].clone();
    let updates = (0..8).map(|i| {
        let mut body = base.clone();
        body["display_name"] = json!(format!("Acme by operator {i}"));
        let mut req = request(
            Method::PUT,
            "/admin/v1/tenants/acme",
            Some(body),
            Some(OPERATOR),
        );
        req.headers_mut().insert("if-match", etag.parse().unwrap());
        call(&admin, req)
    });
    let results = futures_util::future::join_all(updates).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        7,
        "{statuses:?}"
    );
    let refused = results.iter().find(|r| r.status == 412).unwrap();
    assert_eq!(refused.json()["error"]["code"], "version_mismatch");
    // The winner's ETag is the new version; an update without If-Match is refused (428).
    let now = send(&admin, Method::GET, "/admin/v1/tenants/acme", None).await;
    let version: u64 = now.json()["tenant"]["version"].as_u64().unwrap();
    assert_eq!(now.header("etag").unwrap(), format!("\"{version}\""));
    let blind = send(&admin, Method::PUT, "/admin/v1/tenants/acme", Some(base)).await;
    assert_eq!(blind.status, 428);
    // Exactly one update record in the audit log.
    let audit = send(&admin, Method::GET, "/admin/v1/audit?tenant=acme", None).await;
    let updates = audit.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "tenant.update")
        .count();
    assert_eq!(updates, 1);
}

#[tokio::test]
async fn refusals_are_clear_4xx_in_one_shape() {
    let gw = Gateway::simulated().await;
    let admin = admin_on(&gw);
    let cases = [
        (
            Method::GET,
            "/admin/v1/tenants/nobody",
            None,
            404,
            "tenant_not_found",
        ),
        (
            Method::POST,
            "/admin/v1/tenants/nobody/keys",
            Some(json!({})),
            404,
            "tenant_not_found",
        ),
        (
            Method::POST,
            "/admin/v1/keys/AAAAAAAAAAAA/revoke",
            None,
            404,
            "not_found",
        ),
        (
            Method::POST,
            "/admin/v1/keys/bad/rotate",
            None,
            404,
            "not_found",
        ),
        (
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"tenant_id": "x"})),
            400,
            "invalid_request",
        ),
        (
            Method::POST,
            "/admin/v1/tenants/acme/keys",
            Some(json!({"scopes": ["admin"]})),
            400,
            "invalid_request",
        ),
        (
            Method::POST,
            "/admin/v1/tenants/acme/keys",
            Some(json!({"expires_at": "2001-01-01T00:00:00Z"})),
            400,
            "invalid_request",
        ),
        (
            Method::GET,
            "/admin/v1/audit?limit=0",
            None,
            400,
            "invalid_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let res = send(&admin, method.clone(), path, body).await;
        assert_eq!(
            res.status.as_u16(),
            status,
            "{method} {path}: {}",
            res.text()
        );
        assert_eq!(res.json()["error"]["code"], code, "{method} {path}");
        assert!(
            res.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let again = send(
        &admin,
        Method::POST,
        "/admin/v1/tenants",
        Some({
            let mut acme = initech();
            acme["tenant_id"] = json!("acme");
            acme
        }),
    )
    .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"]["code"], "tenant_exists");
    // An invalid configuration names what is wrong, and nothing is stored.
    let mut bad = initech();
    bad["degradation"] = json!({"threshold_percent": 80, "routes": {"gpt-4o": "nope"}});
    let res = send(&admin, Method::POST, "/admin/v1/tenants", Some(bad)).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.text().contains("would be invalid"), "{}", res.text());
}

#[tokio::test]
async fn rotation_and_revocation_over_http_take_effect_at_the_gateway() {
    let gw = Gateway::simulated().await;
    let admin = admin_on(&gw);
    let issued = send(
        &admin,
        Method::POST,
        "/admin/v1/tenants/acme/keys",
        Some(json!({})),
    )
    .await;
    let old = issued.json()["key"].as_str().unwrap().to_owned();
    let prefix = issued.json()["details"]["prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = send(
        &admin,
        Method::POST,
        &format!("/admin/v1/keys/{prefix}/rotate"),
        Some(json!({"overlap_seconds": 3600})),
    )
    .await;
    assert_eq!(rotated.status, 201, "{}", rotated.text());
    let new = rotated.json()["key"].as_str().unwrap().to_owned();
    let body = chat_body("gpt-4o-mini", "rotate").to_string();
    assert_eq!(gw.chat_with_key(Some(&new), body.clone()).await.status, 200);
    assert_eq!(
        gw.chat_with_key(Some(&old), body.clone()).await.status,
        200,
        "in the overlap"
    );
    let revoked = send(
        &admin,
        Method::POST,
        &format!("/admin/v1/keys/{prefix}/revoke"),
        None,
    )
    .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(revoked.json()["key"]["state"], "revoked");
    // The gateway's directory cache holds the key for up to its TTL; the harness's store is
    // read through it, so the revocation shows once the entry refreshes. The stored record
    // is revoked now.
    let stored = tollgate::ports::store::ApiKeyLookup::find_key(
        gw.store.as_ref(),
        &tollgate::domain::keys::KeyPrefix::parse(&prefix).unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(stored.revoked_at.is_some());
}

fn fixture(name: &str) -> lambda_http::Request {
    let path = format!(
        "{}/../functions/admin/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&raw).expect("valid API Gateway event")
}

/// API Gateway's REST events as its `AWS_IAM` authorizer passes them on: the principal comes
/// from `requestContext.identity.userArn`, never from a header.
#[tokio::test]
async fn the_principal_is_read_from_the_rest_events_iam_identity() {
    let gw = Gateway::simulated().await;
    let admin = admin_on(&gw);
    let created = call(
        &admin,
        tollgate::lambda::from_lambda(fixture("create-tenant-rest-stage.json")),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        created.header("x-request-id"),
        Some("c6af9ac6-7b61-11e6-9a41-93e8deadbeef")
    );
    let issued = call(
        &admin,
        tollgate::lambda::from_lambda(fixture("create-key-rest-stage.json")),
    )
    .await;
    assert_eq!(issued.status, 201, "{}", issued.text());
    let key = issued.json()["key"].as_str().unwrap().to_owned();
    let chat = gw
        .chat_with_key(Some(&key), chat_body("gpt-4o-mini", "hi").to_string())
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let audit = send(
        &admin,
        Method::GET,
        "/admin/v1/audit?tenant=lambda-admin",
        None,
    )
    .await;
    let actors: Vec<String> = audit.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["actor"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actors,
        ["arn:aws:sts::123456789012:assumed-role/backoffice/provisioner"; 2]
    );
    // The same event without the identity (the function reached some other way): refused.
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/../functions/admin/events/create-tenant-rest-stage.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    event["requestContext"]["identity"] = json!({"sourceIp": "203.0.113.20"});
    event["headers"]["X-Amz-User-Arn"] = json!("arn:aws:iam::123456789012:root");
    let req = lambda_http::request::from_str(&event.to_string()).unwrap();
    let refused = call(&admin, tollgate::lambda::from_lambda(req)).await;
    assert_eq!(refused.status, 403);
}

/// A tenant's dollar budgets over HTTP: the tier's in force until set, the day's and month's
/// spend as the limiter counts it (at least the metered cost, by less than a nano-dollar per
/// call), a change based on a stale ETag refused, bad amounts refused with nothing written.
#[tokio::test]
async fn budgets_are_read_with_their_spend_and_set_with_optimistic_concurrency() {
    let gw = Gateway::simulated().await;
    let admin = admin_on(&gw);
    let path = "/admin/v1/tenants/acme/budget";
    let before = send(&admin, Method::GET, path, None).await;
    assert_eq!(before.status, 200, "{}", before.text());
    let status = before.json();
    // acme is on the pro tier: $250 a day and $5,000 a month until it sets its own.
    assert_eq!(status["overrides"]["daily_usd"], Value::Null);
    assert_eq!(decimal(&status["in_force"]["daily_usd"]), dec("250"));
    assert_eq!(decimal(&status["in_force"]["monthly_usd"]), dec("5000"));
    assert_eq!(decimal(&status["day"]["spent_usd"]), dec("0"));
    let etag = before.header("etag").unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", status["version"]));

    let chat = gw
        .chat("acme", chat_body("gpt-4o-mini", "spend a little"))
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let cost: rust_decimal::Decimal = gw
        .wait_for_usage_events(1)
        .await
        .iter()
        .map(|e| e.cost_usd)
        .sum();
    assert!(cost > rust_decimal::Decimal::ZERO);
    let after = send(&admin, Method::GET, path, None).await.json();
    for period in ["day", "month"] {
        let spent = decimal(&after[period]["spent_usd"]);
        assert!(
            spent >= cost && spent - cost < dec("0.000000001"),
            "{period}: spent {spent}, metered {cost}"
        );
        assert_eq!(
            decimal(&after[period]["remaining_usd"]),
            decimal(&after[period]["budget_usd"]) - spent
        );
    }

    // Set the tenant's own daily budget and threshold, based on the version read.
    let mut req = request(
        Method::PUT,
        path,
        Some(json!({"daily_usd": "12.50", "monthly_usd": "unlimited", "alert_at_percent": 90})),
        Some(OPERATOR),
    );
    req.headers_mut().insert("if-match", etag.parse().unwrap());
    let set = call(&admin, req).await;
    assert_eq!(set.status, 200, "{}", set.text());
    let set = set.json();
    assert_eq!(set["changed"], true);
    assert_eq!(decimal(&set["in_force"]["daily_usd"]), dec("12.5"));
    assert_eq!(set["in_force"]["monthly_usd"], Value::Null, "unlimited");
    assert_eq!(set["in_force"]["alert_at_percent"], 90);
    // The day is still counted; a month without a budget is not (the limiter keeps no count).
    assert_eq!(
        decimal(&set["day"]["spent_usd"]),
        decimal(&after["day"]["spent_usd"])
    );
    assert_eq!(
        decimal(&set["day"]["remaining_usd"]),
        dec("12.5") - decimal(&after["day"]["spent_usd"])
    );
    assert_eq!(set["month"]["spent_usd"], Value::Null);
    assert_eq!(set["month"]["remaining_usd"], Value::Null);
    let stored = send(&admin, Method::GET, "/admin/v1/tenants/acme", None).await;
    let limits = &stored.json()["tenant"]["limits"];
    assert_eq!(limits["budget_daily_usd"], "12.5", "stored normalized");
    assert_eq!(limits["budget_monthly_usd"], "unlimited");
    assert_eq!(limits["budget_alert_at_percent"], 90);

    // The same ETag again is stale now: 412, nothing written.
    let mut stale = request(
        Method::PUT,
        path,
        Some(json!({"daily_usd": 1})),
        Some(OPERATOR),
    );
    stale
        .headers_mut()
        .insert("if-match", etag.parse().unwrap());
    let stale = call(&admin, stale).await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    // An empty body would reset every budget: refused, not read as {}.
    let empty = call(&admin, request(Method::PUT, path, None, Some(OPERATOR))).await;
    assert_eq!(empty.status, 400, "{}", empty.text());
    for bad in [
        json!({"daily_usd": "-1"}),
        json!({"daily_usd": "lots"}),
        json!({"alert_at_percent": 0}),
        json!({"alert_at_percent": 101}),
        json!({"weekly_usd": 5}),
    ] {
        let res = send(&admin, Method::PUT, path, Some(bad.clone())).await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text());
        assert_eq!(res.json()["error"]["code"], "invalid_request");
    }
    let unchanged = send(&admin, Method::GET, path, None).await.json();
    assert_eq!(decimal(&unchanged["in_force"]["daily_usd"]), dec("12.5"));

    // Nulls give the tier's budgets back.
    let reset = send(&admin, Method::PUT, path, Some(json!({})))
        .await
        .json();
    assert_eq!(decimal(&reset["in_force"]["daily_usd"]), dec("250"));
    assert_eq!(decimal(&reset["in_force"]["monthly_usd"]), dec("5000"));
    // Both changes are tenant updates under the caller's ARN; the refusals left no record.
    let audit = send(&admin, Method::GET, "/admin/v1/audit?tenant=acme", None).await;
    let records = audit.json()["records"].as_array().unwrap().clone();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r["action"] == "tenant.update" && r["actor"] == OPERATOR)
    );
    let unknown = send(&admin, Method::GET, "/admin/v1/tenants/nobody/budget", None).await;
    assert_eq!(unknown.status, 404);
}

/// Prices and upstream quotas over HTTP: the listing says where each price comes from, a set
/// returns what it replaced, an invalid entry is refused with nothing written, and every set
/// is in the deployment-wide audit log.
#[tokio::test]
async fn prices_and_quotas_are_listed_and_set_over_http() {
    let gw = Gateway::simulated().await;
    let admin = admin_on(&gw);
    let listed = send(&admin, Method::GET, "/admin/v1/prices", None).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let prices = listed.json()["prices"].as_array().unwrap().clone();
    let mini = prices
        .iter()
        .find(|p| p["provider"] == "openai" && p["model"] == "gpt-4o-mini")
        .expect("the bundled table prices gpt-4o-mini")
        .clone();
    assert_eq!(mini["source"], "bundled");

    // Override a bundled price with exactly what the listing shows (its `source` and all),
    // but cheaper.
    let mut entry = mini.clone();
    entry["input"] = json!("0.05");
    let set = send(&admin, Method::PUT, "/admin/v1/prices", Some(entry.clone())).await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(
        set.json()["previous"],
        Value::Null,
        "no operator entry before"
    );
    let again = send(&admin, Method::PUT, "/admin/v1/prices", Some(entry.clone())).await;
    assert_eq!(decimal(&again.json()["previous"]["input"]), dec("0.05"));
    let relisted = send(&admin, Method::GET, "/admin/v1/prices", None)
        .await
        .json();
    let now = relisted["prices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider"] == "openai" && p["model"] == "gpt-4o-mini")
        .unwrap()
        .clone();
    assert_eq!(now["source"], "operator_over_bundled");
    assert_eq!(decimal(&now["input"]), dec("0.05"));

    for bad in [
        json!({"provider": "openai", "model": "m", "input": "-1", "output": "1"}),
        json!({"provider": "openai", "model": "has space", "input": "1", "output": "1"}),
        json!({"provider": "openai", "model": "m", "input": "1", "output": "1", "alias": ["x"]}),
        json!({"provider": "nope", "model": "m", "input": "1", "output": "1"}),
        json!({"provider": "openai", "model": "m"}),
    ] {
        let res = send(&admin, Method::PUT, "/admin/v1/prices", Some(bad.clone())).await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text());
        assert_eq!(res.json()["error"]["code"], "invalid_request");
    }

    let quotas = send(&admin, Method::GET, "/admin/v1/quotas", None).await;
    assert_eq!(quotas.json()["quotas"], json!([]));
    let quota = json!({"provider": "openai", "model": "gpt-4o", "tokens_per_minute": 800000});
    let set = send(&admin, Method::PUT, "/admin/v1/quotas", Some(quota.clone())).await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(set.json()["previous"], Value::Null);
    let keyed =
        json!({"provider": "openai", "model": "gpt-4o", "key": 1, "tokens_per_minute": 30000});
    assert_eq!(
        send(&admin, Method::PUT, "/admin/v1/quotas", Some(keyed.clone()))
            .await
            .status,
        200
    );
    for bad in [
        json!({"provider": "bedrock", "model": "m", "key": 0, "tokens_per_minute": 1}),
        json!({"provider": "openai", "model": "m", "tokens_per_minute": 0}),
        json!({"provider": "openai", "model": "m", "tokens_per_minute": 1_000_000_000_000_001_u64}),
        json!({"provider": "openai", "model": "m", "tpm": 5}),
    ] {
        let res = send(&admin, Method::PUT, "/admin/v1/quotas", Some(bad.clone())).await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text());
    }
    let listed = send(&admin, Method::GET, "/admin/v1/quotas", None).await;
    assert_eq!(listed.json()["quotas"], json!([quota, keyed]));

    let audit = send(&admin, Method::GET, "/admin/v1/audit", None).await;
    let records = audit.json()["records"].as_array().unwrap().clone();
    let trail: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["resource"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            ("quota.set", "quota/openai/gpt-4o/key1"),
            ("quota.set", "quota/openai/gpt-4o"),
            ("price.set", "price/openai/gpt-4o-mini"),
            ("price.set", "price/openai/gpt-4o-mini"),
        ]
    );
    assert!(records.iter().all(|r| r["actor"] == OPERATOR));
}

fn dec(raw: &str) -> rust_decimal::Decimal {
    raw.parse().unwrap()
}

/// A money amount as the API writes it (a JSON string or number).
fn decimal(value: &Value) -> rust_decimal::Decimal {
    match value {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.to_string().parse().unwrap(),
        other => panic!("not an amount: {other}"),
    }
}

#[tokio::test]
async fn the_tenant_list_is_paged_by_cursor() {
    let gw = Gateway::simulated().await;
    let admin = admin_on(&gw);
    let all = send(&admin, Method::GET, "/admin/v1/tenants", None)
        .await
        .json();
    let ids = |page: &Value| -> Vec<String> {
        page["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tenant_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let everyone = ids(&all);
    assert!(everyone.len() >= 2, "{everyone:?}");
    assert_eq!(all["next_cursor"], Value::Null);
    let (mut seen, mut path) = (Vec::new(), "/admin/v1/tenants?limit=1".to_owned());
    loop {
        let page = send(&admin, Method::GET, &path, None).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        assert!(ids(&page).len() <= 1);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/admin/v1/tenants?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, everyone);
    let bad = send(&admin, Method::GET, "/admin/v1/tenants?cursor=%20", None).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["error"]["param"], "cursor");
}
