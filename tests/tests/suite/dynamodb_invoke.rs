#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)] // Test code: a panic is a failure report; skips and measurements are printed.
//! The real invoke handler on DynamoDB (moto, started by infra/test.sh): concurrency against
//! the token limit, exactly-once metering with rollups, round trips per request, and failing
//! closed when the store goes away. `cargo test dynamodb` selects these.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use rust_decimal::Decimal;
use serde_json::json;
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::adapters::memory::MemoryMetrics;
use tollgate::domain::chat::Completion;
use tollgate::domain::limits::LimitOverrides;
use tollgate::domain::tenant::ProviderKind;
use tollgate::ports::provider::{EventStream, LlmProvider, ProviderError, ProviderRequest};
use tollgate::ports::{TenantAdmin, UsageQuery, UsageSink};
use tollgate::service::Providers;
use tollgate_tests::harness::{TestResponse, invoke_on, settings};

/// The moto endpoint, or `None` (skip) outside CI. In CI a missing emulator is a failure.
fn endpoint() -> Option<String> {
    tollgate_tests::moto::endpoint("DynamoDB invoke suite")
}

fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A provider that notes the store's round-trip count when it is called, to split round trips
/// into before and after the provider call.
struct Probe {
    inner: Arc<dyn LlmProvider>,
    store: DynamoStore,
    at_call: AtomicU64,
    calls: AtomicU64,
}

#[async_trait]
impl LlmProvider for Probe {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }
    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.at_call
            .store(self.store.round_trips(), Ordering::SeqCst);
        self.inner.complete(request).await
    }
    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.at_call
            .store(self.store.round_trips(), Ordering::SeqCst);
        self.inner.stream(request).await
    }
}

struct DynamoGateway {
    state: invoke::InvokeState,
    store: DynamoStore,
    metrics: Arc<MemoryMetrics>,
    keys: std::collections::HashMap<String, String>,
    probe: Arc<Probe>,
}

impl DynamoGateway {
    async fn start(endpoint: &str, name: &str) -> Self {
        Self::start_with_latency(endpoint, name, std::time::Duration::ZERO).await
    }

    /// `latency`: how long the (simulated) OpenAI provider takes to answer.
    async fn start_with_latency(endpoint: &str, name: &str, latency: std::time::Duration) -> Self {
        let store = DynamoStore::emulator(endpoint, TableNames::with_prefix(&unique_prefix(name)));
        store.create_tables().await.unwrap();
        let seeded = tollgate::demo::seed(&store, chrono::Utc::now())
            .await
            .unwrap();
        let metrics = Arc::new(MemoryMetrics::default());
        let s = settings(&[("TOLLGATE_PROVIDERS", "simulated".into())]);
        let mut state = invoke_on(&s, Arc::new(store.clone()), metrics.clone());
        // These tests count the request path's round trips; a key's last-use write runs in the
        // background at most once per key per 5 minutes (store_contract's `key_usage`), and
        // would land inside a count at random.
        state.callers.uses = None;
        let simulated = Arc::new(tollgate::adapters::simulated::SimulatedProvider::new(
            ProviderKind::Openai,
            tollgate::adapters::simulated::SimulatedLatency {
                first_token: latency,
                per_chunk: std::time::Duration::ZERO,
            },
        ));
        let probe = Arc::new(Probe {
            inner: simulated,
            store: store.clone(),
            at_call: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        });
        state.chat.providers = Providers::default().with(probe.clone()).with(Arc::new(
            tollgate::adapters::simulated::SimulatedProvider::new(
                ProviderKind::Anthropic,
                Default::default(),
            ),
        ));
        Self {
            state,
            store,
            metrics,
            keys: seeded
                .into_iter()
                .map(|(t, k)| (t.to_string(), k.expose().to_owned()))
                .collect(),
            probe,
        }
    }

    /// `tenant`'s rollups of the last two hours (and the next, for a clock at an hour's end).
    async fn recent_rollups(&self, tenant: &str) -> Vec<tollgate::domain::usage::UsageRollup> {
        let tenant = tollgate::domain::ids::TenantId::parse(tenant).unwrap();
        let now = chrono::Utc::now();
        self.store
            .rollups(
                &tenant,
                now - chrono::Duration::hours(2),
                now + chrono::Duration::hours(1),
            )
            .await
            .unwrap()
    }

    async fn chat(&self, tenant: &str, body: serde_json::Value) -> TestResponse {
        let req = http::Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("authorization", format!("Bearer {}", self.keys[tenant]))
            .body(Bytes::from(body.to_string()))
            .unwrap();
        let (parts, body) = invoke::handle(&self.state, req).await.into_parts();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await,
        }
    }
}

fn body(content: &str, max_tokens: u32) -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "messages": [{"role": "user", "content": content}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_fifty_concurrent_requests_never_admit_more_than_the_token_limit() {
    let Some(endpoint) = endpoint() else { return };
    // Calls take 20 s, so every admission decision happens while all admitted calls are still
    // in flight (none reconciled yet): the count admitted is then exactly what fits. (8 s was
    // once too short on a loaded 2-core machine: the first admitted calls finished while
    // single-threaded moto still worked through the decisions, and a second round got in.)
    let gw = Arc::new(
        DynamoGateway::start_with_latency(&endpoint, "conc", std::time::Duration::from_secs(20))
            .await,
    );
    let mut config = tollgate::demo::acme_config().unwrap();
    config.limits = LimitOverrides {
        tokens_per_minute: Some(10_000),
        requests_per_minute: Some(1_000),
        ..Default::default()
    };
    config.response_cache.enabled = false;
    gw.store.put_tenant_config(config).await.unwrap();

    let handles: Vec<_> = (0..50)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.chat("acme", body("the same question", 1_000)).await })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut refused = 0;
    for h in handles {
        let res = h.await.unwrap();
        match res.status.as_u16() {
            200 => admitted.push(res),
            429 => {
                refused += 1;
                assert!(res.header("retry-after").is_some());
                assert_eq!(res.header("x-ratelimit-limit-tokens"), Some("10000"));
                assert_eq!(res.json()["error"]["code"], "rate_limit_exceeded");
            }
            other => panic!("unexpected {other}: {}", res.text()),
        }
    }
    let prompt = admitted[0].json()["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap();
    let reservation = prompt + 1_000;
    let max_fit = 10_000 / reservation;
    // Zero over-admission, whatever the interleaving of 50 conditional writes. All requests
    // land within seconds, so under-admission (one bucket's span) cannot occur either.
    assert_eq!(
        admitted.len() as u64,
        max_fit,
        "admitted {} of 50, refused {refused}",
        admitted.len()
    );
    println!(
        "dynamodb concurrency: 50 requests, limit 10000 TPM, reservation {reservation}: admitted {}, refused {refused}, over-admission 0",
        admitted.len()
    );

    // Every admitted call was metered exactly once; the rollup equals the sum of the events.
    let rollups = gw.recent_rollups("acme").await;
    let requests: u64 = rollups.iter().map(|r| r.requests).sum();
    let rollup_cost: Decimal = rollups.iter().map(|r| r.cost_usd).sum();
    let metered_cost: Decimal = gw
        .metrics
        .requests()
        .iter()
        .filter(|m| m.status == 200)
        .map(|m| m.cost_usd)
        .sum();
    assert_eq!(requests, admitted.len() as u64);
    assert_eq!(rollup_cost, metered_cost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_a_burst_without_max_tokens_consumes_no_more_than_the_limit() {
    let Some(endpoint) = endpoint() else { return };
    let openai = tollgate_tests::OpenAiStandIn::start().await;
    let anthropic = tollgate_tests::AnthropicStandIn::start().await;
    let mut gw = DynamoGateway::start(&endpoint, "burst").await;
    let (providers, _) = tollgate_tests::harness::standin_settings(&openai, &anthropic)
        .providers()
        .unwrap();
    gw.state.chat.providers = providers;
    let gw = Arc::new(gw);
    const TPM: u64 = 20_000;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.limits = LimitOverrides {
        tokens_per_minute: Some(TPM),
        requests_per_minute: Some(1_000),
        tokens_per_day: Some(10_000_000),
        ..Default::default()
    };
    config.response_cache.enabled = false;
    gw.store.put_tenant_config(config).await.unwrap();
    for _ in 0..30 {
        openai.push(tollgate_tests::Behavior::WriteUntilCap);
    }
    // A provider that writes until its cap, and 30 requests that set none.
    let handles: Vec<_> = (0..30)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("burst {i}")}]});
                gw.chat("acme", body).await
            })
        })
        .collect();
    let mut admitted = 0_u64;
    for h in handles {
        let res = h.await.unwrap();
        match res.status.as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected {other}: {}", res.text()),
        }
    }
    let rollups = gw.recent_rollups("acme").await;
    let consumed: u64 = rollups
        .iter()
        .map(|r| r.prompt_tokens + r.completion_tokens)
        .sum();
    let completion: u64 = rollups.iter().map(|r| r.completion_tokens).sum();
    assert!(admitted > 0);
    assert_eq!(
        completion,
        admitted * 1024,
        "every reply stopped at the reserved cap"
    );
    // The prompt count's error: the stand-in counts a few tokens a message more or less.
    assert!(
        consumed <= TPM + 8 * admitted,
        "{admitted} admitted calls consumed {consumed} against {TPM}"
    );
    println!(
        "dynamodb burst without max_tokens: 30 requests, limit {TPM} TPM: admitted {admitted}, consumed {consumed} tokens"
    );
}

#[tokio::test]
async fn dynamodb_a_retried_usage_event_is_recorded_once_and_rollups_do_not_move() {
    let Some(endpoint) = endpoint() else { return };
    let gw = DynamoGateway::start(&endpoint, "once").await;
    let res = gw
        .chat(
            "globex",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "once"}]}),
        )
        .await;
    assert_eq!(res.status, 200);
    let request_id =
        tollgate::domain::ids::RequestId::from_upstream(res.header("x-request-id").unwrap());
    let event = gw
        .store
        .usage_event(&request_id)
        .await
        .unwrap()
        .expect("event recorded");
    let tenant = event.tenant_id.clone();
    let now = chrono::Utc::now();
    let window = (
        now - chrono::Duration::hours(2),
        now + chrono::Duration::hours(1),
    );
    let before = gw.store.rollups(&tenant, window.0, window.1).await.unwrap();
    // A Lambda retry replays the same event.
    let again = gw.store.record(&event, &[]).await.unwrap();
    assert_eq!(again, tollgate::ports::store::Recorded::Duplicate);
    let after = gw.store.rollups(&tenant, window.0, window.1).await.unwrap();
    assert_eq!(before, after);
    assert_eq!(
        after.iter().map(|r| r.cost_usd).sum::<Decimal>(),
        event.cost_usd
    );
}

#[tokio::test]
async fn dynamodb_round_trips_per_request_on_a_warm_container() {
    let Some(endpoint) = endpoint() else { return };
    let gw = DynamoGateway::start(&endpoint, "trips").await;
    // Warm up: the first request fills the key/config cache and the closed-hour cache.
    let warm = gw
        .chat(
            "globex",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "warm"}]}),
        )
        .await;
    assert_eq!(warm.status, 200);
    let start = gw.store.round_trips();
    let res = gw
        .chat(
            "globex",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "count me"}]}),
        )
        .await;
    assert_eq!(res.status, 200);
    let end = gw.store.round_trips();
    let at_call = gw.probe.at_call.load(Ordering::SeqCst);
    let (before, after) = (at_call - start, end - at_call);
    println!(
        "dynamodb round trips per invoke request (warm, no response cache): {before} before the provider call, {after} after"
    );
    assert!(before <= 2, "{before} round trips before the provider call");
    assert!(after <= 1, "{after} round trips after the provider call");
}

/// 60 concurrent requests against a $0.01 daily budget (the tenant's, then one end user's),
/// on DynamoDB: the spend never passes the budget (the simulated provider bills within its
/// reservation), the refusals are `insufficient_quota`, and the spend counter equals the
/// events, each rounded up to the nano-dollar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_sixty_concurrent_requests_never_spend_past_a_dollar_budget() {
    use tollgate::domain::budget::{BudgetCap, UserLimits, nanos_ceil};
    let Some(endpoint) = endpoint() else { return };
    // Calls take 8 s, so the decisions are made while the admitted calls are in flight.
    let gw = Arc::new(
        DynamoGateway::start_with_latency(&endpoint, "budget", std::time::Duration::from_secs(8))
            .await,
    );
    let budget = Decimal::new(1, 2);
    let mut config = tollgate::demo::acme_config().unwrap();
    config.response_cache.enabled = false;
    config.limits.budget_daily_usd = Some(BudgetCap::Usd(budget));
    // A second scope in the same run: end user `ann`'s own $0.01 a day (the tenant's budget
    // is far away for her requests, which are counted against it too).
    let mut globex = tollgate::demo::globex_config().unwrap();
    globex.limits.budget_daily_usd = Some(BudgetCap::Unlimited);
    globex.end_users.defaults = UserLimits {
        usd_per_day: Some(BudgetCap::Usd(budget)),
        ..UserLimits::default()
    };
    gw.store.put_tenant_config(config).await.unwrap();
    gw.store.put_tenant_config(globex).await.unwrap();
    for (tenant, user, suffix) in [("acme", None, ""), ("globex", Some("ann"), "#u#ann")] {
        let handles: Vec<_> = (0..60)
            .map(|i| {
                let gw = gw.clone();
                // globex routes gpt-4o-mini to Claude Haiku ($1 / $5 per 1M): a smaller cap
                // keeps a dozen calls within the budget there too.
                let cap = if user.is_some() { 150 } else { 1_000 };
                let mut body = body(&format!("question {i}"), cap);
                if let Some(user) = user {
                    body["user"] = json!(user);
                }
                tokio::spawn(async move { gw.chat(tenant, body).await })
            })
            .collect();
        let mut admitted = Vec::new();
        for h in handles {
            let res = h.await.unwrap();
            match res.status.as_u16() {
                200 => admitted.push(res),
                429 => assert_eq!(res.json()["error"]["code"], "insufficient_quota"),
                other => panic!("unexpected {other}: {}", res.text()),
            }
        }
        let mut spent = Decimal::ZERO;
        let mut nanos = 0;
        for res in &admitted {
            let id = tollgate::domain::ids::RequestId::from_upstream(
                res.header("x-request-id").unwrap(),
            );
            let event = gw.store.usage_event(&id).await.unwrap().expect("metered");
            spent += event.cost_usd;
            nanos += nanos_ceil(event.cost_usd);
        }
        assert!(spent <= budget, "{tenant}: spent {spent} of {budget}");
        assert!(!admitted.is_empty());
        let day = chrono::Utc::now().timestamp().div_euclid(86_400);
        let keys: Vec<_> = [day - 1, day]
            .iter()
            .map(|d| tollgate::ports::store::CounterKey(format!("t#{tenant}#usd#d#{d}{suffix}")))
            .collect();
        let counted: i64 = tollgate::ports::LimiterStore::read_counters(&gw.store, &keys)
            .await
            .unwrap()
            .iter()
            .map(|c| c.tokens)
            .sum();
        assert_eq!(counted, nanos, "{tenant}: the counter equals the events");
        println!(
            "dynamodb budget burst ({tenant}{}): 60 requests, {} admitted, spent ${spent} of ${budget} (over-spend 0)",
            user.map(|u| format!(", end user {u}")).unwrap_or_default(),
            admitted.len()
        );
    }
}

/// The DynamoDB cost of one request per limit configuration, measured on a warm container:
/// round trips and write units (2 per transaction item, condition checks included). Dollar
/// budgets and end-user limits ride in the same two transactions (reservation, usage), so
/// they add items, never round trips.
#[tokio::test]
async fn dynamodb_cost_per_request_with_budgets_and_end_user_limits() {
    let Some(endpoint) = endpoint() else { return };
    let gw = DynamoGateway::start(&endpoint, "cost").await;
    // acme: no dollar budget (enterprise-like); globex: its tier's daily and monthly budgets,
    // and every end user limited by tokens per minute, tokens per day and dollars per day.
    let mut acme = tollgate::demo::acme_config().unwrap();
    acme.response_cache.enabled = false;
    acme.limits.budget_daily_usd = Some(tollgate::domain::budget::BudgetCap::Unlimited);
    acme.limits.budget_monthly_usd = Some(tollgate::domain::budget::BudgetCap::Unlimited);
    gw.store.put_tenant_config(acme).await.unwrap();
    let mut globex = tollgate::demo::globex_config().unwrap();
    globex.end_users.defaults = tollgate::domain::budget::UserLimits {
        tokens_per_minute: Some(100_000),
        tokens_per_day: Some(1_000_000),
        usd_per_day: Some(tollgate::domain::budget::BudgetCap::Usd(Decimal::ONE)),
    };
    gw.store.put_tenant_config(globex).await.unwrap();
    let asked = AtomicU64::new(0);
    let ask = |user: Option<&str>| {
        let n = asked.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({"model": "gpt-4o-mini", "max_tokens": 50,
            "messages": [{"role": "user", "content": format!("count me {n}")}]});
        if let Some(user) = user {
            body["user"] = json!(user);
        }
        body
    };
    let mut lines = Vec::new();
    for (label, tenant, user) in [
        ("token limits only", "acme", None),
        ("+ daily and monthly budgets", "globex", None),
        ("+ end-user TPM, tokens/day, USD/day", "globex", Some("u-1")),
    ] {
        // Warm: keys, configuration, closed hours.
        assert_eq!(gw.chat(tenant, ask(user)).await.status, 200);
        let (trips, units) = (gw.store.round_trips(), gw.store.write_units());
        let res = gw.chat(tenant, ask(user)).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let trips = gw.store.round_trips() - trips;
        let units = gw.store.write_units() - units;
        lines.push(format!("{label}: {trips} round trips, {units} write units"));
        assert!(trips <= 3, "{label}: {trips} round trips");
    }
    println!(
        "dynamodb cost per request (warm):\n  {}",
        lines.join("\n  ")
    );
}

fn post(key: &str) -> http::Request<Bytes> {
    http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .body(Bytes::from(body("hi", 10).to_string()))
        .unwrap()
}

async fn error_code(res: http::Response<tollgate::http::Body>) -> (u16, bool, String) {
    let status = res.status().as_u16();
    let retry_after = res.headers().get("retry-after").is_some();
    let body: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await).unwrap();
    (
        status,
        retry_after,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn dynamodb_unreachable_fails_closed_with_503_and_no_provider_call() {
    let Some(endpoint) = endpoint() else { return };
    let gw = DynamoGateway::start(&endpoint, "down").await;
    // Same tables, but a store that points at a port nothing listens on.
    let dead = Arc::new(DynamoStore::emulator(
        "http://127.0.0.1:9",
        gw.store.names().clone(),
    ));
    let s = settings(&[("TOLLGATE_PROVIDERS", "simulated".into())]);
    // A cold start makes no store call (`chat_service` is not even async), so it starts
    // against a dead store; the first request that needs the operator catalog fails closed.
    let mut cold = invoke_on(&s, dead.clone(), Arc::new(MemoryMetrics::default())).chat;
    assert!(!cold.catalog.is_loaded());
    cold.tenants = gw.state.chat.tenants.clone();
    cold.providers = gw.state.chat.providers.clone();
    let catalog_down = invoke::InvokeState {
        chat: cold.clone(),
        ..gw.state.clone()
    };
    let (status, retry_after, code) =
        error_code(invoke::handle(&catalog_down, post(&gw.keys["acme"])).await).await;
    assert_eq!(
        (status, retry_after, code.as_str()),
        (503, true, "store_unavailable")
    );
    assert!(!cold.catalog.is_loaded(), "a failed read is not kept");

    // Warm container, keys and configs cached, then the limiter's table becomes unreachable.
    let mut chat = gw.state.chat.clone();
    chat.meter.usage = dead.clone();
    chat.limiter = Arc::new(tollgate::service::limiter::Limiter::new(
        dead.clone(),
        Default::default(),
        1024,
    ));
    let limiter_down = invoke::InvokeState {
        chat: chat.clone(),
        ..gw.state.clone()
    };
    let (status, retry_after, code) =
        error_code(invoke::handle(&limiter_down, post(&gw.keys["acme"])).await).await;
    assert_eq!(
        (status, retry_after, code.as_str()),
        (503, true, "rate_limiter_unavailable")
    );

    // Everything unreachable: the key lookup itself fails, also as a retryable 503.
    chat.tenants = dead.clone();
    let all_down = invoke::InvokeState {
        chat,
        callers: tollgate::service::Callers {
            keys: dead.clone(),
            tenants: dead,
            clock: std::sync::Arc::new(tollgate::ports::clock::SystemClock),
            uses: None,
        },
        ..gw.state.clone()
    };
    let (status, retry_after, code) =
        error_code(invoke::handle(&all_down, post(&gw.keys["acme"])).await).await;
    assert_eq!(
        (status, retry_after, code.as_str()),
        (503, true, "store_unavailable")
    );
    assert_eq!(
        gw.probe.calls.load(Ordering::SeqCst),
        0,
        "a provider was called without a reservation"
    );
}

#[tokio::test]
async fn dynamodb_a_usage_write_that_fails_after_the_call_is_kept_for_replay_not_lost() {
    let Some(endpoint) = endpoint() else { return };
    let gw = DynamoGateway::start(&endpoint, "replay").await;
    let dead = Arc::new(DynamoStore::emulator(
        "http://127.0.0.1:9",
        gw.store.names().clone(),
    ));
    // Admission works; the store goes away before the usage write.
    let mut chat = gw.state.chat.clone();
    chat.meter.usage = dead;
    let state = invoke::InvokeState {
        chat,
        ..gw.state.clone()
    };
    let res = invoke::handle(&state, post(&gw.keys["globex"])).await;
    assert_eq!(
        res.status(),
        200,
        "the call was made, so its answer is delivered"
    );
    let failures = gw.metrics.metering_failures();
    assert_eq!(
        failures.len(),
        1,
        "the event must be emitted whole as a MeteringFailure"
    );
    let event = &failures[0];
    assert!(event.success && event.usage.total() > 0);
    // `tollgate replay` records it later, idempotently.
    assert_eq!(
        gw.store.record(event, &[]).await.unwrap(),
        tollgate::ports::store::Recorded::Inserted
    );
    assert_eq!(
        gw.store.record(event, &[]).await.unwrap(),
        tollgate::ports::store::Recorded::Duplicate
    );
    assert_eq!(
        gw.store
            .usage_event(&event.request_id)
            .await
            .unwrap()
            .as_ref(),
        Some(event)
    );
}

/// A private moto for a test that stops it: `TOLLGATE_TEST_MOTO_PYTHON` is the Python that has
/// moto (infra/test.sh sets it to its venv). Skips outside CI when unset; fails in CI.
struct PrivateMoto {
    child: std::process::Child,
    url: String,
}

impl PrivateMoto {
    fn start() -> Option<Self> {
        let python = match std::env::var("TOLLGATE_TEST_MOTO_PYTHON") {
            Ok(p) if !p.is_empty() => p,
            _ if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("CI=true but TOLLGATE_TEST_MOTO_PYTHON is unset: run infra/test.sh")
            }
            _ => {
                eprintln!("skipped: TOLLGATE_TEST_MOTO_PYTHON is unset (infra/test.sh sets it)");
                return None;
            }
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = format!("{}/../infra/moto_server.py", env!("CARGO_MANIFEST_DIR"));
        let child = std::process::Command::new(python)
            .args([script, port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto starts");
        // Owned by the guard from here on: its Drop kills and waits.
        let mut moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        moto.stop();
        panic!("private moto did not start");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn dynamodb_stopped_mid_run_gives_503s_no_provider_calls_and_keeps_in_flight_events() {
    let Some(mut moto) = PrivateMoto::start() else {
        return;
    };
    let gw = DynamoGateway::start(&moto.url, "stop").await;
    // Every request must reach the provider: no response cache.
    let mut config = tollgate::demo::acme_config().unwrap();
    config.response_cache.enabled = false;
    gw.store.put_tenant_config(config).await.unwrap();
    // A slow provider, so a call is in flight when the emulator stops.
    let slow = Arc::new(Probe {
        inner: Arc::new(tollgate::adapters::simulated::SimulatedProvider::new(
            ProviderKind::Openai,
            tollgate::adapters::simulated::SimulatedLatency {
                first_token: std::time::Duration::from_millis(1500),
                per_chunk: std::time::Duration::ZERO,
            },
        )),
        store: gw.store.clone(),
        at_call: AtomicU64::new(0),
        calls: AtomicU64::new(0),
    });
    let mut chat = gw.state.chat.clone();
    chat.providers = Providers::default().with(slow.clone());
    let state = Arc::new(invoke::InvokeState {
        chat,
        ..gw.state.clone()
    });

    // Before the stop: normal service.
    let (status, _, _) = error_code(invoke::handle(&state, post(&gw.keys["acme"])).await).await;
    assert_eq!(status, 200);

    // A call is admitted, the emulator stops while the provider works.
    let in_flight = {
        let (state, key) = (state.clone(), gw.keys["acme"].clone());
        tokio::spawn(async move { invoke::handle(&state, post(&key)).await.status().as_u16() })
    };
    while slow.calls.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    moto.stop();
    assert_eq!(
        in_flight.await.unwrap(),
        200,
        "an admitted call still answers"
    );
    let kept = gw.metrics.metering_failures();
    assert_eq!(
        kept.len(),
        1,
        "the in-flight call's event must be kept for replay"
    );
    assert!(kept[0].success && kept[0].usage.total() > 0);

    // After the stop: every request fails closed, and no provider is called.
    let calls_before = slow.calls.load(Ordering::SeqCst);
    for _ in 0..3 {
        let (status, retry_after, code) =
            error_code(invoke::handle(&state, post(&gw.keys["acme"])).await).await;
        assert_eq!(status, 503, "{code}");
        assert!(retry_after);
    }
    assert_eq!(
        slow.calls.load(Ordering::SeqCst),
        calls_before,
        "a provider was called without a reservation"
    );
}
