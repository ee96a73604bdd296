#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // Test code: a panic is a failure report; skipped DynamoDB tests say so on stderr.
//! End-user profiles: the `ProfileStore` contract on the embedded store and DynamoDB (moto,
//! `TOLLGATE_TEST_DYNAMODB_ENDPOINT`; skipped locally without it, a failure under `CI=true`),
//! the `/v1/users/{user_id}/profile` routes through the real invoke handler (and an API Gateway
//! fixture), and profiles rendered into the tenant's system prompt on the chat path: only when
//! the template asks, never shared across users through the response cache, never an error
//! when missing. `cargo test -p tollgate-tests --test suite profiles::`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use http::{Method, Request};
use serde_json::{Value, json};
use tollgate::adapters::dynamodb::DynamoStore;
use tollgate::adapters::memory::{MemoryMetrics, MemoryStore};
use tollgate::domain::chat::Completion;
use tollgate::domain::ids::TenantId;
use tollgate::domain::profile::{
    MAX_BODY_BYTES, MAX_FIELDS, MAX_PROFILE_BYTES, MAX_STRING_BYTES, ProfileRecord, UserId,
    UserProfile,
};
use tollgate::domain::prompt::PromptTemplate;
use tollgate::domain::tenant::ProviderKind;
use tollgate::ports::TenantAdmin;
use tollgate::ports::provider::{EventStream, LlmProvider, ProviderError, ProviderRequest};
use tollgate::ports::store::{ProfileStore, StoreError};
use tollgate::service::Providers;
use tollgate_tests::harness::{Gateway, TestResponse, settings};
use tollgate_tests::{AnthropicStandIn, OpenAiStandIn};

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap()
}

fn record(tenant_id: &str, user_id: &str, profile: Value, at: DateTime<Utc>) -> ProfileRecord {
    ProfileRecord {
        tenant_id: tenant(tenant_id),
        user_id: user(user_id),
        profile: UserProfile::from_json(profile.to_string().as_bytes()).unwrap(),
        updated_at: at,
    }
}

// ---------------------------------------------------------------------------------------------
// The store contract
// ---------------------------------------------------------------------------------------------

mod contract {
    use super::*;

    pub async fn put_get_replace_delete<S: ProfileStore>(store: &S) {
        let (acme, ada) = (tenant("acme"), user("ada@example.com"));
        assert_eq!(store.profile(&acme, &ada).await.unwrap(), None);
        assert!(!store.delete_profile(&acme, &ada).await.unwrap());

        let first = record(
            "acme",
            "ada@example.com",
            json!({"name": "Ada", "plan": "free"}),
            t0(),
        );
        store.put_profile(&first).await.unwrap();
        assert_eq!(store.profile(&acme, &ada).await.unwrap(), Some(first));

        // A put replaces the whole profile; fields it leaves out are gone.
        let second = record(
            "acme",
            "ada@example.com",
            json!({"plan": "pro", "seats": 3}),
            t0() + Duration::hours(1),
        );
        store.put_profile(&second).await.unwrap();
        let read = store.profile(&acme, &ada).await.unwrap().unwrap();
        assert_eq!(read, second);
        assert!(read.profile.get("name").is_none());

        assert!(store.delete_profile(&acme, &ada).await.unwrap());
        assert_eq!(store.profile(&acme, &ada).await.unwrap(), None);
        assert!(!store.delete_profile(&acme, &ada).await.unwrap());
    }

    pub async fn the_same_user_id_under_another_tenant_is_another_user<S: ProfileStore>(store: &S) {
        for t in ["acme", "acme-eu", "globex"] {
            let r = record(t, "user-1", json!({"note": format!("{t}-secret")}), t0());
            store.put_profile(&r).await.unwrap();
        }
        for t in ["acme", "acme-eu", "globex"] {
            let read = store
                .profile(&tenant(t), &user("user-1"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(read.tenant_id, tenant(t));
            assert_eq!(
                read.profile.get("note").unwrap().render(),
                format!("{t}-secret")
            );
        }
        // Neither a tenant without that user, nor a user id that extends another, reads it.
        assert_eq!(
            store
                .profile(&tenant("initech"), &user("user-1"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .profile(&tenant("acme"), &user("user-10"))
                .await
                .unwrap(),
            None
        );
        // Deleting one tenant's user leaves the others'.
        assert!(
            store
                .delete_profile(&tenant("acme"), &user("user-1"))
                .await
                .unwrap()
        );
        assert!(
            !store
                .delete_profile(&tenant("initech"), &user("user-1"))
                .await
                .unwrap()
        );
        for t in ["acme-eu", "globex"] {
            assert!(
                store
                    .profile(&tenant(t), &user("user-1"))
                    .await
                    .unwrap()
                    .is_some()
            );
        }
    }

    pub async fn the_largest_profile_and_longest_ids_round_trip_exactly<S: ProfileStore>(
        store: &S,
    ) {
        let long_tenant = "t".repeat(64);
        let specials = "ada.lovelace+x=y|auth0~1:2@example-co_uk";
        let long_user = format!("{specials}{}", "u".repeat(256 - specials.len()));
        let mut fields = serde_json::Map::new();
        for i in 0..3 {
            fields.insert(format!("bio{i}"), json!("é".repeat(MAX_STRING_BYTES / 2)));
        }
        fields.insert("ratio".into(), json!(1.5));
        fields.insert("debt".into(), json!(-3));
        fields.insert("big".into(), json!(u64::MAX));
        fields.insert("tiny".into(), json!(1e-7));
        fields.insert("vip".into(), json!(true));
        fields.insert("churned".into(), json!(false));
        fields.insert(
            "emoji".into(),
            json!("🌍 \"quoted\" \n newline {{not_a_var}}"),
        );
        for i in fields.len()..MAX_FIELDS {
            fields.insert(format!("f{i:02}"), json!(format!("v{i}")));
        }
        let r = record(&long_tenant, &long_user, Value::Object(fields), t0());
        assert_eq!(r.profile.len(), MAX_FIELDS);
        assert!(r.profile.to_json().len() > MAX_PROFILE_BYTES * 3 / 4);
        store.put_profile(&r).await.unwrap();
        let read = store
            .profile(&tenant(&long_tenant), &user(&long_user))
            .await
            .unwrap();
        assert_eq!(read, Some(r));
    }
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

async fn memory() -> Option<MemoryStore> {
    Some(MemoryStore::new())
}

/// A store on fresh tables of its own, so tests run in parallel on one emulator.
async fn dynamodb() -> Option<DynamoStore> {
    tollgate_tests::moto::fresh_store("DynamoDB profile tests", "p").await
}

tollgate_tests::contract_suite! {
    backends: [memory, dynamodb],
    cases: {
        profiles_are_put_read_replaced_and_deleted => contract::put_get_replace_delete,
        the_same_user_id_under_another_tenant_is_another_user => contract::the_same_user_id_under_another_tenant_is_another_user,
        the_largest_profile_and_longest_ids_round_trip_exactly => contract::the_largest_profile_and_longest_ids_round_trip_exactly,
    },
}

#[tokio::test]
async fn dynamodb_each_profile_operation_is_one_round_trip() {
    let Some(store) = dynamodb().await else {
        return;
    };
    let r = record("acme", "ada", json!({"name": "Ada"}), t0());
    let before = store.round_trips();
    store.put_profile(&r).await.unwrap();
    assert_eq!(store.round_trips() - before, 1, "one PutItem");
    let before = store.round_trips();
    store.profile(&tenant("acme"), &user("ada")).await.unwrap();
    assert_eq!(store.round_trips() - before, 1, "one GetItem");
    let before = store.round_trips();
    store
        .delete_profile(&tenant("acme"), &user("ada"))
        .await
        .unwrap();
    assert_eq!(store.round_trips() - before, 1, "one DeleteItem");
}

// ---------------------------------------------------------------------------------------------
// The routes
// ---------------------------------------------------------------------------------------------

fn profile_path(user_segment: &str) -> String {
    format!("/v1/users/{user_segment}/profile")
}

/// A request with a raw body (not necessarily JSON) and an optional key.
async fn raw(
    gw: &Gateway,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: impl Into<Bytes>,
) -> TestResponse {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    gw.send(req.body(body.into()).unwrap()).await
}

async fn put(gw: &Gateway, tenant: &str, user_segment: &str, profile: Value) -> TestResponse {
    gw.call(
        tenant,
        Method::PUT,
        &profile_path(user_segment),
        Some(profile),
    )
    .await
}

fn assert_error(res: &TestResponse, status: u16, param: Option<&str>, code: Option<&str>) {
    assert_eq!(res.status, status, "{}", res.text());
    let error = &res.json()["error"];
    assert_eq!(error["param"].as_str(), param, "{error}");
    assert_eq!(error["code"].as_str(), code, "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(res.header("x-request-id").is_some());
}

#[tokio::test]
async fn a_profile_is_stored_read_replaced_and_deleted_through_the_routes() {
    let gw = Gateway::simulated().await;
    let res = put(
        &gw,
        "acme",
        "ada",
        json!({"name": "Ada", "seats": 12, "beta": true}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["object"], "user.profile");
    assert_eq!(body["user_id"], "ada");
    assert_eq!(
        body["profile"],
        json!({"name": "Ada", "seats": 12, "beta": true})
    );
    assert!(body["updated_at"].as_str().is_some());

    let res = gw
        .call("acme", Method::GET, &profile_path("ada"), None)
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["profile"]["name"], "Ada");

    put(&gw, "acme", "ada", json!({"name": "Ada L."})).await;
    let res = gw
        .call("acme", Method::GET, &profile_path("ada"), None)
        .await;
    assert_eq!(res.json()["profile"], json!({"name": "Ada L."}));

    let res = gw
        .call("acme", Method::DELETE, &profile_path("ada"), None)
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json(),
        json!({"object": "user.profile", "user_id": "ada", "deleted": true})
    );
    let res = gw
        .call("acme", Method::GET, &profile_path("ada"), None)
        .await;
    assert_error(&res, 404, Some("user_id"), Some("profile_not_found"));
    let res = gw
        .call("acme", Method::DELETE, &profile_path("ada"), None)
        .await;
    assert_error(&res, 404, Some("user_id"), Some("profile_not_found"));
}

#[tokio::test]
async fn another_tenants_routes_never_see_or_change_a_users_profile() {
    let gw = Gateway::simulated().await;
    put(&gw, "acme", "user-1", json!({"note": "acme-only"})).await;
    let res = gw
        .call("globex", Method::GET, &profile_path("user-1"), None)
        .await;
    assert_error(&res, 404, Some("user_id"), Some("profile_not_found"));
    assert!(!res.text().contains("acme-only"));
    let res = gw
        .call("globex", Method::DELETE, &profile_path("user-1"), None)
        .await;
    assert_eq!(res.status, 404);
    put(&gw, "globex", "user-1", json!({"note": "globex-only"})).await;
    // A tenant id in the body is just a field of globex's profile; identity is the key's.
    put(
        &gw,
        "globex",
        "user-1",
        json!({"note": "globex-only", "tenant_id": "acme"}),
    )
    .await;
    let acme = gw
        .call("acme", Method::GET, &profile_path("user-1"), None)
        .await;
    assert_eq!(acme.json()["profile"], json!({"note": "acme-only"}));
    let globex = gw
        .call("globex", Method::GET, &profile_path("user-1"), None)
        .await;
    assert_eq!(globex.json()["profile"]["note"], "globex-only");
}

#[tokio::test]
async fn bad_user_ids_and_profiles_are_400s_naming_the_param() {
    let gw = Gateway::simulated().await;
    let key = gw.key("acme").to_owned();
    let cases: Vec<(String, String, &str)> = vec![
        (profile_path("has%20space"), "{}".into(), "user_id"),
        (profile_path("a%2Fb"), "{}".into(), "user_id"),
        (profile_path("a%ZZ"), "{}".into(), "user_id"),
        (profile_path(""), "{}".into(), "user_id"),
        ("/v1/users/a/b/profile".into(), "{}".into(), "user_id"),
        (profile_path(&"x".repeat(257)), "{}".into(), "user_id"),
        (profile_path("ada"), "not json".into(), "profile"),
        (profile_path("ada"), "".into(), "profile"),
        (profile_path("ada"), "[1]".into(), "profile"),
        (profile_path("ada"), r#""Ada""#.into(), "profile"),
        (
            profile_path("ada"),
            r#"{"first name":"Ada"}"#.into(),
            "profile",
        ),
        (
            profile_path("ada"),
            r#"{"tags":["a","b"]}"#.into(),
            "profile.tags",
        ),
        (
            profile_path("ada"),
            r#"{"address":{"city":"Paris"}}"#.into(),
            "profile.address",
        ),
        (
            profile_path("ada"),
            r#"{"name":null}"#.into(),
            "profile.name",
        ),
        (
            profile_path("ada"),
            json!({"bio": "x".repeat(MAX_STRING_BYTES + 1)}).to_string(),
            "profile.bio",
        ),
        (
            profile_path("ada"),
            Value::Object(
                (0..=MAX_FIELDS)
                    .map(|i| (format!("k{i}"), json!(i)))
                    .collect(),
            )
            .to_string(),
            "profile",
        ),
        (
            profile_path("ada"),
            Value::Object(
                (0..5)
                    .map(|i| (format!("k{i}"), json!("x".repeat(900))))
                    .collect(),
            )
            .to_string(),
            "profile",
        ),
    ];
    for (path, body, param) in cases {
        let res = raw(&gw, Some(&key), Method::PUT, &path, body.clone()).await;
        assert_error(&res, 400, Some(param), None);
        assert_eq!(res.json()["error"]["type"], "invalid_request_error");
    }
    // GET and DELETE validate the id the same way.
    for method in [Method::GET, Method::DELETE] {
        let res = raw(&gw, Some(&key), method, &profile_path("a%2Fb"), "").await;
        assert_error(&res, 400, Some("user_id"), None);
    }
    assert!(
        gw.store
            .profile(&tenant("acme"), &user("ada"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_profile_body_over_the_bound_is_a_413_before_it_is_parsed() {
    let gw = Gateway::simulated().await;
    let key = gw.key("acme").to_owned();
    let body = format!("{{\"a\": 1{}}}", " ".repeat(MAX_BODY_BYTES));
    let res = raw(&gw, Some(&key), Method::PUT, &profile_path("ada"), body).await;
    assert_error(&res, 413, None, Some("payload_too_large"));
    // Whitespace under the body bound is fine: the profile bound is on compact JSON.
    let body = format!("{{\"a\": 1{}}}", " ".repeat(MAX_BODY_BYTES - 100));
    let res = raw(&gw, Some(&key), Method::PUT, &profile_path("ada"), body).await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test]
async fn the_routes_need_the_tenants_key_and_the_right_method() {
    let gw = Gateway::simulated().await;
    let path = profile_path("ada");
    let res = raw(&gw, None, Method::GET, &path, "").await;
    assert_error(&res, 401, None, Some("missing_api_key"));
    let bogus = format!("tg_{}_{}", "Z".repeat(12), "q".repeat(40));
    let res = raw(&gw, Some(&bogus), Method::PUT, &path, r#"{"a":1}"#).await;
    assert_error(&res, 401, None, Some("invalid_api_key"));
    // Authentication comes before validation: an anonymous bad request learns nothing.
    let res = raw(&gw, None, Method::PUT, &profile_path("a%2Fb"), "[]").await;
    assert_eq!(res.status, 401);
    for method in [Method::POST, Method::PATCH] {
        let res = gw.call("acme", method, &path, Some(json!({}))).await;
        assert_error(&res, 405, None, Some("method_not_allowed"));
    }
    let mut config = tollgate::demo::acme_config().unwrap();
    config.disabled = true;
    gw.store.put_tenant_config(config).await.unwrap();
    let res = put(&gw, "acme", "ada", json!({"a": 1})).await;
    assert_error(&res, 401, None, Some("tenant_disabled"));
}

fn fixture(name: &str, key: &str) -> lambda_http::Request {
    let path = format!(
        "{}/../functions/invoke/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&raw.replace("__TENANT_KEY__", key))
        .expect("valid API Gateway event")
}

#[tokio::test]
async fn a_rest_api_event_with_a_stage_prefix_stores_a_profile() {
    let gw = Gateway::simulated().await;
    let req = tollgate::lambda::from_lambda(fixture("profile-put-rest-stage.json", gw.key("acme")));
    let res = gw.send(req).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.header("x-request-id"),
        Some("5b4e6f3a-7b61-11e6-9a41-93e8deadbeef")
    );
    assert_eq!(res.json()["user_id"], "auth0|42");
    let stored = gw
        .store
        .profile(&tenant("acme"), &user("auth0|42"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.profile.get("seats").unwrap().render(), "12");
    // The same user, percent-encoded as clients send it, is the same profile.
    let res = gw
        .call("acme", Method::GET, &profile_path("auth0%7C42"), None)
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["profile"]["name"], "Ada");
}

// ---------------------------------------------------------------------------------------------
// Profiles in the system prompt
// ---------------------------------------------------------------------------------------------

/// Counts profile reads; optionally fails every call, as an unreachable store would.
struct Counting {
    inner: Arc<MemoryStore>,
    reads: AtomicUsize,
    fail: bool,
}

impl Counting {
    fn new(inner: Arc<MemoryStore>, fail: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            reads: AtomicUsize::new(0),
            fail,
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.fail {
            Err(StoreError::Unavailable("profile store is down".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl ProfileStore for Counting {
    async fn put_profile(&self, record: &ProfileRecord) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_profile(record).await
    }
    async fn profile(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        self.inner.profile(tenant, user).await
    }
    async fn delete_profile(&self, tenant: &TenantId, user: &UserId) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete_profile(tenant, user).await
    }
}

const TEMPLATE: &str = "You help {{tenant_name}} customers. Customer: {{user.name}} \
                        (plan {{user.plan}}, vip={{user.vip}}). Profile: {{user_profile}}.";

/// Acme (OpenAI for `gpt-4o-mini`, response cache on) with `template` as its system prompt.
async fn acme_with_template(gw: &Gateway, template: &str) {
    let mut config = tollgate::demo::acme_config().unwrap();
    config.system_prompt = PromptTemplate::parse(template).unwrap();
    config.validate().unwrap();
    gw.store.put_tenant_config(config).await.unwrap();
}

async fn standins() -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    (openai, anthropic, gw)
}

fn ask(question: &str, user: Option<&str>) -> Value {
    let mut body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}]});
    if let Some(user) = user {
        body["user"] = json!(user);
    }
    body
}

/// The system prompt of the provider's last request (OpenAI: the first message).
fn upstream_system(openai: &OpenAiStandIn) -> String {
    let body = openai.last_request().body;
    assert_eq!(body["messages"][0]["role"], "system");
    body["messages"][0]["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_chat_naming_a_user_gets_their_profile_in_the_system_prompt() {
    let (openai, _anthropic, gw) = standins().await;
    acme_with_template(&gw, TEMPLATE).await;
    put(
        &gw,
        "acme",
        "ada",
        json!({"name": "Ada", "plan": "pro", "vip": true, "seats": 3}),
    )
    .await;
    let res = gw.chat("acme", ask("Hello", Some("ada"))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        upstream_system(&openai),
        "You help Acme Rockets customers. Customer: Ada (plan pro, vip=true). \
         Profile: {\"name\":\"Ada\",\"plan\":\"pro\",\"seats\":3,\"vip\":true}."
    );
    // The profile is rendered into the prompt, never echoed to the client.
    assert!(!res.text().contains("\"plan\""));
}

#[tokio::test]
async fn no_user_an_unknown_user_or_a_missing_field_renders_empty_never_an_error() {
    let (openai, _anthropic, gw) = standins().await;
    acme_with_template(&gw, TEMPLATE).await;
    put(&gw, "acme", "bob", json!({"name": "Bob"})).await;
    let empty = "You help Acme Rockets customers. Customer:  (plan , vip=). Profile: .";
    for user in [None, Some("nobody")] {
        let res = gw.chat("acme", ask("Hi", user)).await;
        assert_eq!(res.status, 200, "{user:?}: {}", res.text());
        assert_eq!(upstream_system(&openai), empty, "{user:?}");
    }
    // `user` keys the end user's limits and usage, so it is validated as a profile's id is:
    // one that could not be is a 400 naming the field, before anything is spent.
    let calls = openai.requests().len();
    let res = gw
        .chat("acme", ask("Hi", Some("not a valid id / at all")))
        .await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(res.json()["error"]["param"], "user");
    assert_eq!(openai.requests().len(), calls);
    gw.chat("acme", ask("Hi", Some("bob"))).await;
    assert_eq!(
        upstream_system(&openai),
        "You help Acme Rockets customers. Customer: Bob (plan , vip=). Profile: {\"name\":\"Bob\"}."
    );
}

#[tokio::test]
async fn a_profile_change_is_seen_by_the_very_next_request() {
    let (openai, _anthropic, gw) = standins().await;
    acme_with_template(&gw, "Customer {{user.name}}.").await;
    for name in ["Ada", "Ada Lovelace", "Countess"] {
        put(&gw, "acme", "ada", json!({"name": name})).await;
        gw.chat("acme", ask(&format!("Hi from {name}"), Some("ada")))
            .await;
        assert_eq!(upstream_system(&openai), format!("Customer {name}."));
    }
    gw.call("acme", Method::DELETE, &profile_path("ada"), None)
        .await;
    gw.chat("acme", ask("Hi again", Some("ada"))).await;
    assert_eq!(upstream_system(&openai), "Customer .");
}

#[tokio::test]
async fn users_whose_profiles_differ_never_share_a_cached_response() {
    let (openai, _anthropic, gw) = standins().await;
    acme_with_template(&gw, "Customer {{user.name}}.").await;
    put(&gw, "acme", "ada", json!({"name": "Ada"})).await;
    put(&gw, "acme", "bob", json!({"name": "Bob"})).await;
    let cache = |res: &TestResponse| res.header("x-tollgate-cache").unwrap().to_owned();

    let res = gw.chat("acme", ask("What is my plan?", Some("ada"))).await;
    assert_eq!(cache(&res), "miss");
    let res = gw.chat("acme", ask("What is my plan?", Some("bob"))).await;
    assert_eq!(cache(&res), "miss", "bob's prompt differs, so does his key");
    assert_eq!(upstream_system(&openai), "Customer Bob.");
    let res = gw.chat("acme", ask("What is my plan?", Some("ada"))).await;
    assert_eq!(cache(&res), "hit", "ada's own answer");
    // Two users without profiles render the same prompt: the same question is the same answer.
    let res = gw
        .chat("acme", ask("What is my plan?", Some("carol")))
        .await;
    assert_eq!(cache(&res), "miss");
    let res = gw.chat("acme", ask("What is my plan?", Some("dave"))).await;
    assert_eq!(cache(&res), "hit");
    assert_eq!(openai.requests().len(), 3);
}

#[tokio::test]
async fn a_profile_is_read_only_when_the_template_uses_one_and_the_request_names_a_user() {
    let mut gw = Gateway::simulated().await;
    let counting = Counting::new(gw.store.clone(), false);
    gw.state.chat.profiles = Some(counting.clone());
    put(&gw, "acme", "ada", json!({"name": "Ada"})).await;

    // The demo template has no profile variables: no read, whoever asks.
    gw.chat("acme", ask("one", Some("ada"))).await;
    gw.chat("acme", ask("two", None)).await;
    assert_eq!(counting.reads.load(Ordering::SeqCst), 0);

    acme_with_template(&gw, "Customer {{user.name}}.").await;
    gw.chat("acme", ask("three", None)).await;
    assert_eq!(counting.reads.load(Ordering::SeqCst), 0, "no user, no read");
    gw.chat("acme", ask("four", Some("not a user id"))).await;
    assert_eq!(
        counting.reads.load(Ordering::SeqCst),
        0,
        "not a valid id, no read"
    );
    let res = gw.chat("acme", ask("five", Some("ada"))).await;
    assert_eq!(res.status, 200);
    assert_eq!(counting.reads.load(Ordering::SeqCst), 1, "exactly one read");

    // A tenant variable named `user_profile` shadows the built-in: nothing to read.
    let mut config = tollgate::demo::acme_config().unwrap();
    config.system_prompt = PromptTemplate::parse("About: {{user_profile}}").unwrap();
    config
        .prompt_variables
        .insert("user_profile".into(), "static text".into());
    gw.store.put_tenant_config(config).await.unwrap();
    gw.chat("acme", ask("six", Some("ada"))).await;
    assert_eq!(counting.reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unreachable_profile_store_renders_the_prompt_without_the_profile() {
    let (openai, _anthropic, mut gw) = standins().await;
    acme_with_template(&gw, "Customer {{user.name}}.").await;
    put(&gw, "acme", "ada", json!({"name": "Ada"})).await;
    let failing = Counting::new(gw.store.clone(), true);
    gw.state.chat.profiles = Some(failing.clone());

    let res = gw.chat("acme", ask("Hello", Some("ada"))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(upstream_system(&openai), "Customer .");
    assert_eq!(failing.reads.load(Ordering::SeqCst), 1);
    // The routes themselves fail closed, in the usual shape.
    let res = put(&gw, "acme", "ada", json!({"name": "Ada"})).await;
    assert_error(&res, 503, None, Some("store_unavailable"));
    assert_eq!(res.header("retry-after"), Some("1"));
    let res = gw
        .call("acme", Method::GET, &profile_path("ada"), None)
        .await;
    assert_error(&res, 503, None, Some("store_unavailable"));
}

#[tokio::test]
async fn a_percent_encoded_user_id_is_the_same_user_as_the_chat_user_field() {
    let (openai, _anthropic, gw) = standins().await;
    acme_with_template(&gw, "Customer {{user.name}}.").await;
    let res = put(&gw, "acme", "auth0%7C42", json!({"name": "Ada"})).await;
    assert_eq!(res.json()["user_id"], "auth0|42");
    gw.chat("acme", ask("Hello", Some("auth0|42"))).await;
    assert_eq!(upstream_system(&openai), "Customer Ada.");
}

// ---------------------------------------------------------------------------------------------
// On DynamoDB, end to end
// ---------------------------------------------------------------------------------------------

/// Keeps the system prompt of every provider call.
struct Capture {
    inner: tollgate::adapters::simulated::SimulatedProvider,
    systems: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl LlmProvider for Capture {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }
    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        self.systems
            .lock()
            .unwrap()
            .push(request.system.clone().unwrap_or_default());
        self.inner.complete(request).await
    }
    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError> {
        self.systems
            .lock()
            .unwrap()
            .push(request.system.clone().unwrap_or_default());
        self.inner.stream(request).await
    }
}

#[tokio::test]
async fn dynamodb_profiles_through_the_handler_cost_one_read_only_when_rendered() {
    let Some(store) = dynamodb().await else {
        return;
    };
    let seeded = tollgate::demo::seed(&store, Utc::now()).await.unwrap();
    let key = |t: &str| {
        seeded
            .iter()
            .find(|(id, _)| id.as_str() == t)
            .map(|(_, k)| k.expose().to_owned())
            .unwrap()
    };
    let mut config = tollgate::demo::acme_config().unwrap();
    config.system_prompt = PromptTemplate::parse("Customer {{user.name}}.").unwrap();
    store.put_tenant_config(config).await.unwrap();
    let s = settings(&[("TOLLGATE_PROVIDERS", "simulated".into())]);
    let metrics = Arc::new(MemoryMetrics::default());
    let mut state = tollgate_tests::harness::invoke_on(&s, Arc::new(store.clone()), metrics);
    let capture = Arc::new(Capture {
        inner: tollgate::adapters::simulated::SimulatedProvider::new(
            ProviderKind::Openai,
            Default::default(),
        ),
        systems: Default::default(),
    });
    state.chat.providers = Providers::default().with(capture.clone());
    let send = |tenant: &str, method: Method, path: &str, body: Value| {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", key(tenant)))
            .body(Bytes::from(body.to_string()))
            .unwrap();
        let state = &state;
        async move {
            let (parts, body) = invoke::handle(state, req).await.into_parts();
            TestResponse {
                status: parts.status,
                headers: parts.headers,
                body: body.collect().await,
            }
        }
    };

    let res = send(
        "acme",
        Method::PUT,
        &profile_path("user-1"),
        json!({"name": "Ada"}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let res = send("globex", Method::GET, &profile_path("user-1"), Value::Null).await;
    assert_eq!(res.status, 404, "another tenant's user");
    let res = send("acme", Method::GET, &profile_path("user-1"), Value::Null).await;
    assert_eq!(res.json()["profile"]["name"], "Ada");

    // Warm the directory cache, then compare round trips with and without a user.
    send(
        "acme",
        Method::POST,
        "/v1/chat/completions",
        ask("warm up", None),
    )
    .await;
    let before = store.round_trips();
    let res = send(
        "acme",
        Method::POST,
        "/v1/chat/completions",
        ask("first", None),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let without = store.round_trips() - before;
    let before = store.round_trips();
    send(
        "acme",
        Method::POST,
        "/v1/chat/completions",
        ask("second", Some("user-1")),
    )
    .await;
    let with = store.round_trips() - before;
    assert_eq!(with, without + 1, "one GetItem for the profile");
    assert_eq!(
        capture.systems.lock().unwrap().last().unwrap(),
        "Customer Ada."
    );

    let res = send("acme", Method::DELETE, &profile_path("user-1"), Value::Null).await;
    assert_eq!(res.status, 200);
    send(
        "acme",
        Method::POST,
        "/v1/chat/completions",
        ask("third", Some("user-1")),
    )
    .await;
    assert_eq!(
        capture.systems.lock().unwrap().last().unwrap(),
        "Customer ."
    );
}
