#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Dollar budgets and end-user limits through the real invoke handler on the embedded store
//! (the DynamoDB burst is in `dynamodb_invoke`, the period boundaries in `limiter_contract`):
//! a burst never spends past a budget when the provider bills within the reservation, an
//! overrun is bounded by what the provider billed beyond it, every call kind is charged
//! exactly, and one end user's limits refuse that user alone.

use std::sync::Arc;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate::adapters::alerts::MemoryBudgetBus;
use tollgate::domain::budget::Period;
use tollgate::domain::budget::{BudgetCap, UserLimits, nanos_ceil};
use tollgate::domain::budget_event::BudgetEventKind;
use tollgate::domain::profile::UserId;
use tollgate::domain::tenant::TenantConfig;
use tollgate::domain::usage::{TokenUsage, UsageEvent};
use tollgate::ports::TenantAdmin;
use tollgate::ports::store::{BudgetEventStore, CounterKey, LimiterStore, StoredBudgetEvent};
use tollgate::service::budget_events::BudgetEventPublisher;
use tollgate_tests::harness::{Gateway, TestResponse, chat_body};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

const BURST: usize = 60;

async fn gateway() -> (OpenAiStandIn, AnthropicStandIn, Arc<Gateway>) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Arc::new(Gateway::with_standins(&openai, &anthropic).await);
    (openai, anthropic, gw)
}

/// acme with its response cache off (every request reaches the provider) and `edit` applied.
async fn acme(gw: &Gateway, edit: impl FnOnce(&mut TenantConfig)) {
    let mut config = tollgate::demo::acme_config().unwrap();
    config.response_cache.enabled = false;
    edit(&mut config);
    gw.store.put_tenant_config(config).await.unwrap();
}

fn ask(max_tokens: u32, user: Option<&str>) -> Value {
    let mut body = chat_body("gpt-4o-mini", "What is the capital of France?");
    body["max_tokens"] = json!(max_tokens);
    if let Some(user) = user {
        body["user"] = json!(user);
    }
    body
}

/// `BURST` requests at once; the responses in order.
async fn burst(gw: &Arc<Gateway>, tenant: &'static str, body: Value) -> Vec<TestResponse> {
    let calls: Vec<_> = (0..BURST)
        .map(|_| {
            let (gw, body) = (gw.clone(), body.clone());
            tokio::spawn(async move { gw.chat(tenant, body).await })
        })
        .collect();
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

fn spend(events: &[UsageEvent]) -> Decimal {
    events.iter().map(|e| e.cost_usd).sum()
}

/// What the budget counters must hold for these events: each cost rounded up to the
/// nano-dollar (`domain::budget`).
fn nanos(events: &[UsageEvent]) -> i64 {
    events.iter().map(|e| nanos_ceil(e.cost_usd)).sum()
}

/// A daily spend counter (`t#{tenant}#usd#d#{day}{suffix}`), today's and yesterday's summed so
/// a test running across midnight UTC still sees all of it.
async fn day_counter(gw: &Gateway, tenant: &str, suffix: &str) -> i64 {
    let today = chrono::Utc::now().timestamp().div_euclid(86_400);
    let keys: Vec<CounterKey> = [today - 1, today]
        .iter()
        .map(|day| CounterKey(format!("t#{tenant}#usd#d#{day}{suffix}")))
        .collect();
    let counters = gw.store.read_counters(&keys).await.unwrap();
    counters.iter().map(|c| c.tokens).sum()
}

/// Every budget event recorded today and this month (and the day and month before, so a
/// test running across midnight UTC still sees all of them), by id.
async fn budget_events(gw: &Gateway) -> Vec<StoredBudgetEvent> {
    let now = chrono::Utc::now().timestamp();
    let mut all = Vec::new();
    for period in Period::ALL {
        let current = period.starts_at(now);
        for start in [period.starts_at(current - 1), current] {
            let start = chrono::DateTime::from_timestamp(start, 0).unwrap();
            all.extend(gw.store.budget_events(period, start).await.unwrap());
        }
    }
    all
}

fn ids(events: &[StoredBudgetEvent]) -> Vec<String> {
    events.iter().map(|s| s.event.id()).collect()
}

fn with_kind(events: &[StoredBudgetEvent], subject: &str, kind: BudgetEventKind) -> usize {
    events
        .iter()
        .filter(|s| s.event.subject() == subject && s.event.kind == kind)
        .count()
}

fn assert_budget_refusal(res: &TestResponse, names: &str) {
    assert_eq!(res.status, 429, "{}", res.text());
    let error = &res.json()["error"];
    assert_eq!(error["code"], "insufficient_quota", "{error}");
    assert_eq!(error["type"], "insufficient_quota", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(names), "{message}");
    assert!(message.contains("resets at"), "{message}");
    let retry: u64 = res.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    // The OpenAI SDKs would otherwise retry a 429 that cannot succeed before midnight.
    assert_eq!(res.header("x-should-retry"), Some("false"));
}

/// The provider reports 10 prompt tokens (fewer than the gateway counts) and writes its whole
/// cap of 1,000: every call costs nearly its reservation.
fn near_reservation() -> Behavior {
    Behavior::reply(
        "a long answer",
        TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 1_000,
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_concurrent_requests_never_spend_past_a_tenants_daily_budget() {
    let (openai, _anthropic, gw) = gateway().await;
    acme(&gw, |c| {
        c.limits.budget_daily_usd = Some(BudgetCap::Usd(dec!(0.01)));
    })
    .await;
    for _ in 0..BURST {
        openai.push(near_reservation());
    }
    let responses = burst(&gw, "acme", ask(1_000, None)).await;
    let admitted = responses.iter().filter(|r| r.status == 200).count();
    for refused in responses.iter().filter(|r| r.status != 200) {
        assert_budget_refusal(refused, "daily budget of tenant `acme`");
    }
    let events = gw.wait_for_usage_events(admitted).await;
    assert_eq!(events.len(), admitted, "one event per admitted call");
    let spent = spend(&events);
    // gpt-4o-mini at $0.15 / $0.60 per 1M: each call bills $0.0006015 against a reservation a
    // little above it, so at most 16 fit in $0.01, whatever the interleaving.
    assert!(spent <= dec!(0.01), "spent {spent} of a $0.01 budget");
    assert!((10..=16).contains(&admitted), "admitted {admitted}");
    assert_eq!(
        openai.requests().len(),
        admitted,
        "no refused call reached the provider"
    );
    // Every reservation was reconciled to its event's exact cost.
    assert_eq!(day_counter(&gw, "acme", "").await, nanos(&events));
    println!(
        "budget burst (embedded store): {BURST} requests, {admitted} admitted, spent ${spent} of $0.01 (over-spend 0)"
    );

    // The hard cap refused many times, in concurrent requests: one `exhausted` record.
    let recorded = budget_events(&gw).await;
    assert_eq!(
        with_kind(&recorded, "acme", BudgetEventKind::Exhausted),
        1,
        "{:?}",
        ids(&recorded)
    );
    assert!(with_kind(&recorded, "acme", BudgetEventKind::Threshold) <= 1);
    let exhausted = recorded
        .iter()
        .find(|s| s.event.kind == BudgetEventKind::Exhausted)
        .unwrap();
    assert_eq!(exhausted.event.budget_usd, dec!(0.01));
    assert!(exhausted.event.spend_usd <= dec!(0.01));
    assert!(!exhausted.published);

    // Published once, however often the publisher runs or a stream batch is replayed.
    let bus = MemoryBudgetBus::default();
    let publisher = BudgetEventPublisher {
        outbox: gw.store.as_ref(),
        counters: gw.store.as_ref(),
        bus: &bus,
    };
    let now = chrono::Utc::now();
    let first = publisher
        .hourly_sweeping_after(now, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.sent as usize, recorded.len());
    publisher
        .hourly_sweeping_after(now, std::time::Duration::ZERO)
        .await
        .unwrap();
    let replay: Vec<_> = recorded.iter().map(|s| s.event.clone()).collect();
    let again = publisher.publish(&replay).await.unwrap();
    assert_eq!((again.sent, again.skipped), (0, replay.len() as u64));
    let sent: Vec<String> = bus.published().iter().map(|e| e.id()).collect();
    assert_eq!(sent, ids(&recorded), "each recorded event sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_billing_past_the_reservation_overruns_by_at_most_what_it_billed_beyond_it() {
    let (openai, _anthropic, gw) = gateway().await;
    acme(&gw, |c| {
        c.limits.budget_daily_usd = Some(BudgetCap::Usd(dec!(0.01)));
    })
    .await;
    // 600 prompt tokens billed for a prompt the gateway counts at a few dozen: each call
    // costs more than its reservation, which only the reconciliation learns.
    let billed = TokenUsage {
        prompt_tokens: 600,
        completion_tokens: 1_000,
        ..Default::default()
    };
    for _ in 0..BURST {
        openai.push(Behavior::reply("a long answer", billed));
    }
    let responses = burst(&gw, "acme", ask(1_000, None)).await;
    let admitted = responses.iter().filter(|r| r.status == 200).count();
    let events = gw.wait_for_usage_events(admitted).await;
    // The stated bound: spend <= budget + the sum, over admitted calls, of the prompt tokens
    // billed beyond the gateway's count, at the prompt price (here at most all 600 of them).
    let beyond = Decimal::from(billed.prompt_tokens);
    let bound = dec!(0.01) + Decimal::from(admitted as u64) * beyond * dec!(0.15) / dec!(1000000);
    let spent = spend(&events);
    assert!(spent <= bound, "spent {spent}, bound {bound}");
    // The overrun is on the counter, so the budget now refuses.
    assert_eq!(day_counter(&gw, "acme", "").await, nanos(&events));
    let res = gw.chat("acme", ask(1_000, None)).await;
    assert_budget_refusal(&res, "daily budget of tenant `acme`");
    println!(
        "budget burst, provider billing beyond the reservation: {admitted} admitted, spent ${spent} of $0.01 (over-spend ${}, bound ${})",
        (spent - dec!(0.01)).max(Decimal::ZERO),
        bound - dec!(0.01)
    );
}

fn user_budget(usd: Decimal) -> UserLimits {
    UserLimits {
        usd_per_day: Some(BudgetCap::Usd(usd)),
        ..UserLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_users_daily_budget_refuses_that_user_alone_under_that_tenant_alone() {
    let (openai, anthropic, gw) = gateway().await;
    acme(&gw, |c| c.end_users.defaults = user_budget(dec!(0.01))).await;
    let mut globex = tollgate::demo::globex_config().unwrap();
    globex.end_users.defaults = user_budget(dec!(0.01));
    gw.store.put_tenant_config(globex).await.unwrap();
    for _ in 0..BURST {
        openai.push(near_reservation());
    }
    let responses = burst(&gw, "acme", ask(1_000, Some("alice"))).await;
    let admitted = responses.iter().filter(|r| r.status == 200).count();
    for refused in responses.iter().filter(|r| r.status != 200) {
        assert_budget_refusal(refused, "daily budget of end user `alice` (tenant `acme`)");
    }
    let events = gw.wait_for_usage_events(admitted).await;
    let spent = spend(&events);
    assert!(spent <= dec!(0.01), "alice spent {spent} of $0.01");
    assert!((10..=16).contains(&admitted), "admitted {admitted}");
    assert!(
        events
            .iter()
            .all(|e| e.user.as_ref().map(UserId::as_str) == Some("alice"))
    );
    assert_eq!(day_counter(&gw, "acme", "#u#alice").await, nanos(&events));
    println!(
        "end-user budget burst (embedded store): {BURST} requests, {admitted} admitted, alice spent ${spent} of $0.01"
    );

    // Another user of acme, a request without a user, and alice under globex: all served.
    openai.push(near_reservation());
    assert_eq!(gw.chat("acme", ask(1_000, Some("bob"))).await.status, 200);
    openai.push(near_reservation());
    assert_eq!(gw.chat("acme", ask(1_000, None)).await.status, 200);
    anthropic.push(near_reservation());
    let res = gw.chat("globex", ask(1_000, Some("alice"))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // And acme's alice is still refused.
    assert_budget_refusal(
        &gw.chat("acme", ask(1_000, Some("alice"))).await,
        "end user `alice`",
    );
    // One `exhausted` event for acme's alice; none for globex's alice, nor for acme itself.
    let recorded = budget_events(&gw).await;
    assert_eq!(
        with_kind(&recorded, "acme/u/alice", BudgetEventKind::Exhausted),
        1,
        "{:?}",
        ids(&recorded)
    );
    assert!(
        recorded
            .iter()
            .all(|s| s.event.subject() == "acme/u/alice" && s.event.user.is_some()),
        "{:?}",
        ids(&recorded)
    );
}

#[tokio::test]
async fn an_end_users_tokens_per_minute_and_override_name_the_end_user() {
    let (openai, _anthropic, gw) = gateway().await;
    acme(&gw, |c| {
        c.end_users.defaults = UserLimits {
            tokens_per_minute: Some(2_500),
            ..UserLimits::default()
        };
        // A per-user override replaces the default for that user only.
        c.end_users.overrides.insert(
            UserId::parse("vip").unwrap(),
            UserLimits {
                tokens_per_minute: Some(1_000_000),
                ..UserLimits::default()
            },
        );
    })
    .await;
    // Each reply bills about its reservation (1,010 tokens): two fit in 2,500, a third not.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        openai.push(near_reservation());
        statuses.push(gw.chat("acme", ask(1_000, Some("carol"))).await);
    }
    assert_eq!(statuses[0].status, 200);
    assert_eq!(statuses[1].status, 200);
    let refused = &statuses[2];
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("end user `carol`"), "{message}");
    assert!(message.contains("tokens per minute"), "{message}");
    // The override lifts carol's limit for vip; another user has the default to himself.
    for _ in 0..3 {
        assert_eq!(gw.chat("acme", ask(1_000, Some("vip"))).await.status, 200);
    }
    assert_eq!(gw.chat("acme", ask(1_000, Some("dave"))).await.status, 200);
    // A request that alone exceeds the user's limit is too large, not rate limited.
    let res = gw.chat("acme", ask(4_000, Some("erin"))).await;
    assert_eq!(res.status, 400, "{}", res.text());
    let message = res.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("end user `erin`"), "{message}");
}

#[tokio::test]
async fn a_request_whose_worst_case_alone_exceeds_the_budget_is_a_400() {
    let (openai, _anthropic, gw) = gateway().await;
    acme(&gw, |c| {
        c.limits.budget_daily_usd = Some(BudgetCap::Usd(dec!(0.001)));
    })
    .await;
    // 4,000 output tokens at $0.60 per 1M may cost $0.0024: more than the whole budget.
    let res = gw.chat("acme", ask(4_000, None)).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(res.json()["error"]["param"], "max_tokens");
    let message = res.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("daily budget of 0.001 USD"), "{message}");
    assert!(openai.requests().is_empty());
}

#[tokio::test]
async fn streams_structured_retries_and_embeddings_are_charged_to_the_budget_exactly() {
    let (openai, _anthropic, gw) = gateway().await;
    acme(&gw, |c| {
        c.limits.budget_daily_usd = Some(BudgetCap::Usd(dec!(1)));
        c.structured_output.retry_on_invalid = true;
        c.end_users.defaults = user_budget(dec!(1));
    })
    .await;
    let usage = TokenUsage {
        prompt_tokens: 12,
        completion_tokens: 40,
        ..Default::default()
    };
    // A stream.
    openai.push(Behavior::reply("streamed words here", usage));
    let mut body = ask(200, Some("frank"));
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let res = gw.chat("acme", body).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // A structured output whose first reply fails its schema: the retry is its own event.
    openai.push(Behavior::reply(r#"{"age": "old"}"#, usage));
    openai.push(Behavior::reply(r#"{"age": 31}"#, usage));
    let mut body = ask(200, Some("frank"));
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "p", "strict": true,
        "schema": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"], "additionalProperties": false}}});
    let res = gw.chat("acme", body).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // Embeddings.
    let res = gw
        .call(
            "acme",
            http::Method::POST,
            "/v1/embeddings",
            Some(json!({"model": "text-embedding-3-small", "input": ["one", "two"], "user": "frank"})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());

    let events = gw.wait_for_usage_events(4).await;
    assert_eq!(events.len(), 4, "stream, call, retry, embeddings");
    assert!(
        events.iter().all(|e| e.cost_usd > Decimal::ZERO),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.streamed));
    assert!(
        events
            .iter()
            .any(|e| e.request_id.to_string().ends_with("-retry"))
    );
    assert!(
        events
            .iter()
            .all(|e| e.user.as_ref().map(UserId::as_str) == Some("frank"))
    );
    // The tenant's and the user's spend counters each equal the events, call for call.
    assert_eq!(day_counter(&gw, "acme", "").await, nanos(&events));
    assert_eq!(day_counter(&gw, "acme", "#u#frank").await, nanos(&events));
}

#[tokio::test]
async fn the_messages_api_records_metadata_user_id_as_the_end_user() {
    let (_openai, anthropic, gw) = gateway().await;
    anthropic.push(Behavior::default_reply());
    let res = gw
        .call(
            "globex",
            http::Method::POST,
            "/v1/messages",
            Some(json!({"model": "claude-sonnet", "max_tokens": 100,
                "metadata": {"user_id": "grace"},
                "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let events = gw.wait_for_usage_events(1).await;
    assert_eq!(events[0].user.as_ref().map(UserId::as_str), Some("grace"));
    // An id that could not key a user is refused, naming Anthropic's field.
    let res = gw
        .call(
            "globex",
            http::Method::POST,
            "/v1/messages",
            Some(json!({"model": "claude-sonnet", "max_tokens": 100,
                "metadata": {"user_id": "no spaces allowed"},
                "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.text().contains("metadata.user_id"), "{}", res.text());
}

#[tokio::test]
async fn past_a_budgets_soft_threshold_the_degradation_policy_serves_the_cheaper_model() {
    let (openai, _anthropic, gw) = gateway().await;
    // acme degrades gpt-4o to gpt-4o-mini; its token threshold is far away, its dollar one
    // (50 % of $0.001) is crossed by one call of $0.0006.
    acme(&gw, |c| {
        c.limits.budget_daily_usd = Some(BudgetCap::Usd(dec!(0.001)));
        c.limits.budget_alert_at_percent = Some(50);
    })
    .await;
    openai.push(near_reservation());
    let res = gw.chat("acme", ask(1_000, None)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let mut body = ask(100, None);
    body["model"] = json!("gpt-4o");
    let res = gw.chat("acme", body).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let events = gw.wait_for_usage_events(2).await;
    let degraded = events.iter().find(|e| e.degraded_from.is_some());
    assert_eq!(
        degraded.and_then(|e| e.degraded_from.as_deref()),
        Some("gpt-4o"),
        "{events:?}"
    );
    // The request that degraded recorded the threshold event, with the spend it saw.
    let recorded = budget_events(&gw).await;
    assert_eq!(ids(&recorded).len(), 1, "{:?}", ids(&recorded));
    let threshold = &recorded[0].event;
    assert_eq!(threshold.kind, BudgetEventKind::Threshold);
    assert_eq!(
        (threshold.budget_usd, threshold.alert_at_percent),
        (dec!(0.001), 50)
    );
    assert!(threshold.spend_usd >= dec!(0.0005), "{threshold:?}");
}

async fn usage_get(
    usage: &usage_report::UsageReportState,
    gw: &Gateway,
    tenant: &str,
    uri: &str,
) -> TestResponse {
    let req = http::Request::builder()
        .method(http::Method::GET)
        .uri(uri)
        .header("authorization", format!("Bearer {}", gw.key(tenant)))
        .body(bytes::Bytes::new())
        .unwrap();
    let (parts, body) = usage_report::handle(usage, req).await.into_parts();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await,
    }
}

#[tokio::test]
async fn the_usage_api_ranks_end_users_by_cost_and_lists_one_users_events() {
    let (openai, anthropic, gw) = gateway().await;
    acme(&gw, |_| {}).await;
    let usage = usage_report::UsageReportState::build(&tollgate::bootstrap::Stores::embedded(
        gw.store.clone(),
    ));
    // alice: three calls; bob: one dearer call; one call without a user; alice under globex.
    for (tenant, user, completion) in [
        ("acme", Some("alice"), 100),
        ("acme", Some("alice"), 100),
        ("acme", Some("alice"), 100),
        ("acme", Some("bob"), 1_000),
        ("acme", None, 5_000),
        ("globex", Some("alice"), 10),
    ] {
        let usage = TokenUsage {
            prompt_tokens: 10,
            completion_tokens: completion,
            ..Default::default()
        };
        let standin_reply = Behavior::reply("an answer", usage);
        match tenant {
            "acme" => openai.push(standin_reply),
            _ => anthropic.push(standin_reply),
        }
        let res = gw.chat(tenant, ask(5_000, user)).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let events = gw.wait_for_usage_events(6).await;
    let cost_of = |tenant: &str, user: &str| -> Decimal {
        events
            .iter()
            .filter(|e| {
                e.tenant_id.as_str() == tenant && e.user.as_ref().map(UserId::as_str) == Some(user)
            })
            .map(|e| e.cost_usd)
            .sum()
    };

    let res = usage_get(&usage, &gw, "acme", "/v1/usage?group_by=user").await;
    assert_eq!(res.status, 200, "{}", res.text());
    let report = res.json();
    assert_eq!(report["object"], "usage.users");
    assert_eq!(report["complete"], true);
    let users: Vec<(&str, &str, u64)> = report["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap(),
                u["cost_usd"].as_str().unwrap(),
                u["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    let (bob, alice) = (
        cost_of("acme", "bob").to_string(),
        cost_of("acme", "alice").to_string(),
    );
    assert_eq!(
        users,
        [("bob", bob.as_str(), 1), ("alice", alice.as_str(), 3)]
    );

    // One user per page, then the next.
    let first = usage_get(&usage, &gw, "acme", "/v1/usage?group_by=user&limit=1")
        .await
        .json();
    assert_eq!(first["data"][0]["user"], "bob");
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = usage_get(
        &usage,
        &gw,
        "acme",
        &format!("/v1/usage?group_by=user&limit=1&cursor={cursor}"),
    )
    .await
    .json();
    assert_eq!(second["data"][0]["user"], "alice");
    assert_eq!(second["has_more"], false);

    // globex sees its own alice only.
    let globex = usage_get(&usage, &gw, "globex", "/v1/usage?group_by=user")
        .await
        .json();
    assert_eq!(globex["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        globex["data"][0]["cost_usd"],
        cost_of("globex", "alice").to_string()
    );

    // One user's events.
    let listed = usage_get(&usage, &gw, "acme", "/v1/usage/events?user=alice")
        .await
        .json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);
    // Parameters that do not fit are 400s naming them.
    for (uri, param) in [
        ("/v1/usage?group_by=user&granularity=hour", "granularity"),
        ("/v1/usage?limit=5", "limit"),
        ("/v1/usage?group_by=user&cursor=nope", "cursor"),
        ("/v1/usage/events?user=not%20valid", "user"),
    ] {
        let res = usage_get(&usage, &gw, "acme", uri).await;
        assert_eq!(res.status, 400, "{uri}: {}", res.text());
        assert_eq!(res.json()["error"]["param"], param, "{uri}");
    }
}
