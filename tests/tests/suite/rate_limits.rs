#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Token and request limits through the real invoke handler on the embedded store: 429s with
//! clear messages and headers, reservations reconciled to actual usage, graceful degradation,
//! and the upstream quota shared by all tenants.

use std::sync::Arc;

use serde_json::{Value, json};
use tollgate::domain::limits::{LimitOverrides, UpstreamQuota, UpstreamQuotas};
use tollgate::domain::tenant::{ProviderKind, TenantConfig};
use tollgate::ports::TenantAdmin;
use tollgate::service::limiter::Limiter;
use tollgate_tests::harness::{Gateway, TestResponse, chat_body};

async fn set_limits(gw: &Gateway, mut config: TenantConfig, limits: LimitOverrides) {
    config.limits = limits;
    gw.store.put_tenant_config(config).await.unwrap();
}

/// A request with a unique prompt, so acme's response cache (which skips the limiter: hits
/// cost no provider tokens) never answers it.
fn with_max_tokens(model: &str, max_tokens: u32) -> Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut body = chat_body(model, &format!("question {n}"));
    body["max_tokens"] = json!(max_tokens);
    body
}

fn header_u64(res: &TestResponse, name: &str) -> u64 {
    res.header(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .parse()
        .unwrap()
}

/// A gateway on the provider stand-ins, whose replies report `completion` tokens each, so
/// reconciled usage (not just reservations) fills the windows.
async fn heavy_gateway(
    completion: u64,
) -> (
    tollgate_tests::OpenAiStandIn,
    tollgate_tests::AnthropicStandIn,
    Gateway,
) {
    let openai = tollgate_tests::OpenAiStandIn::start().await;
    let anthropic = tollgate_tests::AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    for _ in 0..20 {
        openai.push(tollgate_tests::Behavior::reply(
            "a long answer",
            tollgate::domain::usage::TokenUsage {
                prompt_tokens: 60,
                completion_tokens: completion,
                ..Default::default()
            },
        ));
    }
    (openai, anthropic, gw)
}

#[tokio::test]
async fn a_tenant_over_its_tokens_per_minute_gets_429_with_retry_after_and_ratelimit_headers() {
    let (_openai, _anthropic, gw) = heavy_gateway(800).await;
    let limits = LimitOverrides {
        tokens_per_minute: Some(3_000),
        ..Default::default()
    };
    set_limits(&gw, tollgate::demo::acme_config().unwrap(), limits).await;

    let mut admitted = 0;
    let refused = loop {
        let res = gw.chat("acme", with_max_tokens("gpt-4o-mini", 900)).await;
        if res.status != 200 {
            break res;
        }
        admitted += 1;
        assert_eq!(header_u64(&res, "x-ratelimit-limit-tokens"), 3_000);
        assert!(
            res.header("x-ratelimit-reset-tokens")
                .unwrap()
                .ends_with('s')
        );
        assert!(admitted < 10, "the limit was never enforced");
    };
    // Each call uses 860 tokens after reconciliation and reserves ~960 before it.
    assert_eq!(admitted, 3);
    assert_eq!(refused.status, 429);
    let err = refused.json();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    assert_eq!(err["error"]["type"], "rate_limit_error");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tokens per minute")
            && message.contains("3000")
            && message.contains("Try again in"),
        "{message}"
    );
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=70).contains(&retry_after), "{retry_after}");
    assert_eq!(header_u64(&refused, "x-ratelimit-limit-tokens"), 3_000);
    assert_eq!(
        header_u64(&refused, "x-ratelimit-remaining-tokens"),
        3_000 - 3 * 860
    );
    assert!(refused.header("x-ratelimit-limit-requests").is_some());
    // Only admitted calls reached the provider and were metered.
    assert_eq!(gw.usage_events().len(), admitted);
}

#[tokio::test]
async fn remaining_tokens_fall_by_actual_usage_once_reservations_are_reconciled() {
    let gw = Gateway::simulated().await;
    let limits = LimitOverrides {
        tokens_per_minute: Some(100_000),
        ..Default::default()
    };
    set_limits(&gw, tollgate::demo::acme_config().unwrap(), limits).await;
    let first = gw.chat("acme", with_max_tokens("gpt-4o-mini", 5_000)).await;
    assert_eq!(first.status, 200);
    // Right after admission the whole reservation (prompt + 5000) is counted.
    let reserved_view = header_u64(&first, "x-ratelimit-remaining-tokens");
    assert!(reserved_view <= 100_000 - 5_000);
    let used = first.json()["usage"]["total_tokens"].as_u64().unwrap();

    let second = gw.chat("acme", with_max_tokens("gpt-4o-mini", 1)).await;
    assert_eq!(second.status, 200);
    let reservation_2 = {
        let events = gw.usage_events();
        assert_eq!(events.len(), 2);
        // prompt of the second request + its max_tokens of 1
        events[1].usage.prompt_tokens + 1
    };
    // The first call was reconciled to what it used: its unused reservation was refunded.
    assert_eq!(
        header_u64(&second, "x-ratelimit-remaining-tokens"),
        100_000 - used - reservation_2
    );
}

#[tokio::test]
async fn requests_per_minute_are_limited_too() {
    let gw = Gateway::simulated().await;
    let limits = LimitOverrides {
        requests_per_minute: Some(3),
        ..Default::default()
    };
    set_limits(&gw, tollgate::demo::globex_config().unwrap(), limits).await;
    for i in 0..3 {
        let res = gw.chat("globex", chat_body("gpt-4o", "hi")).await;
        assert_eq!(res.status, 200);
        assert_eq!(header_u64(&res, "x-ratelimit-remaining-requests"), 2 - i);
    }
    let refused = gw.chat("globex", chat_body("gpt-4o", "hi")).await;
    assert_eq!(refused.status, 429);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests per minute")
    );
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
}

#[tokio::test]
async fn a_request_larger_than_the_limit_itself_is_a_400_not_a_429() {
    let gw = Gateway::simulated().await;
    let limits = LimitOverrides {
        tokens_per_minute: Some(1_000),
        ..Default::default()
    };
    set_limits(&gw, tollgate::demo::acme_config().unwrap(), limits).await;
    let res = gw.chat("acme", with_max_tokens("gpt-4o-mini", 5_000)).await;
    assert_eq!(res.status, 400);
    let err = res.json();
    assert_eq!(err["error"]["code"], "request_too_large");
    assert_eq!(err["error"]["param"], "max_tokens");
}

#[tokio::test]
async fn a_daily_budget_is_enforced_across_minutes() {
    let (_openai, _anthropic, gw) = heavy_gateway(1_000).await;
    let limits = LimitOverrides {
        tokens_per_day: Some(2_500),
        ..Default::default()
    };
    set_limits(&gw, tollgate::demo::acme_config().unwrap(), limits).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            gw.chat("acme", with_max_tokens("gpt-4o-mini", 1_100))
                .await
                .status
                .as_u16(),
        );
    }
    // 1,060 tokens each after reconciliation: the third no longer fits 2,500.
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    let refused = gw.chat("acme", with_max_tokens("gpt-4o-mini", 1_000)).await;
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daily budget")
    );
}

#[tokio::test]
async fn past_the_threshold_a_tenant_is_degraded_to_a_cheaper_model_and_told_so() {
    let gw = Gateway::simulated().await;
    // acme degrades gpt-4o → gpt-4o-mini past 80 % of its daily budget.
    let limits = LimitOverrides {
        tokens_per_day: Some(10_000),
        ..Default::default()
    };
    set_limits(&gw, tollgate::demo::acme_config().unwrap(), limits).await;
    let first = gw.chat("acme", with_max_tokens("gpt-4o", 8_000)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-tollgate-degraded-from"), None);
    assert_eq!(first.json()["model"], "gpt-4o");
    // The first reservation is refunded to its real usage; burn the budget with real usage.
    let mut degraded = None;
    for _ in 0..200 {
        let res = gw.chat("acme", with_max_tokens("gpt-4o", 60)).await;
        if res.header("x-tollgate-degraded-from").is_some() {
            degraded = Some(res);
            break;
        }
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let degraded = degraded.expect("never degraded");
    assert_eq!(degraded.status, 200);
    assert_eq!(degraded.header("x-tollgate-degraded-from"), Some("gpt-4o"));
    assert_eq!(degraded.json()["model"], "gpt-4o-mini");
    let event = gw.usage_events().into_iter().last().unwrap();
    assert_eq!(event.degraded_from.as_deref(), Some("gpt-4o"));
    assert_eq!(event.model_served, "gpt-4o-mini");
    // A model without a degradation route is never swapped.
    let other = gw.chat("acme", with_max_tokens("claude-haiku", 10)).await;
    assert_eq!(other.header("x-tollgate-degraded-from"), None);
}

#[tokio::test]
async fn the_upstream_quota_is_shared_by_all_tenants_and_says_so_when_exhausted() {
    let mut gw = Gateway::simulated().await;
    let quotas = UpstreamQuotas::from_iter([UpstreamQuota {
        provider: ProviderKind::Openai,
        model: "gpt-4o".into(),
        key: None,
        tokens_per_minute: 3_000,
    }]);
    gw.state.chat.limiter = Arc::new(Limiter::new(gw.store.clone(), quotas, 1024));
    let a = gw.chat("acme", with_max_tokens("gpt-4o", 1_000)).await;
    let g = gw.chat("globex", with_max_tokens("gpt-4o", 1_000)).await;
    assert_eq!(
        (a.status.as_u16(), g.status.as_u16()),
        (200, 200),
        "{}",
        g.text()
    );
    // Reconciled, the two calls count their real usage: globex's long prompt (~1,650 tokens)
    // and acme's short one. acme's own limits are far away, but the shared quota is not.
    let refused = gw.chat("acme", with_max_tokens("gpt-4o", 1_500)).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("upstream quota") && message.contains("not your own limit"),
        "{message}"
    );
    assert!(refused.header("retry-after").is_some());
    // A model without a quota is unaffected.
    assert_eq!(
        gw.chat("acme", with_max_tokens("gpt-4o-mini", 1_000))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_failed_provider_call_refunds_its_tokens_but_counts_the_request() {
    let openai = tollgate_tests::OpenAiStandIn::start().await;
    let anthropic = tollgate_tests::AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    let limits = LimitOverrides {
        tokens_per_minute: Some(50_000),
        ..Default::default()
    };
    set_limits(&gw, tollgate::demo::globex_config().unwrap(), limits).await;
    openai.push(tollgate_tests::Behavior::error(400, "bad request upstream"));
    let failed = gw.chat("globex", with_max_tokens("gpt-4o", 2_000)).await;
    assert_eq!(failed.status, 400);
    let next = gw.chat("globex", with_max_tokens("gpt-4o", 10)).await;
    assert_eq!(next.status, 200);
    // With P the prompt estimate, the failed call reserved P + 2000 and the next one P + 10.
    // Refunded, only P + 10 is counted; not refunded, 2P + 2010 would be (P < 2000 here).
    let used = 50_000 - header_u64(&next, "x-ratelimit-remaining-tokens");
    assert!(
        used < 2_010,
        "the failed call's tokens were not refunded: {used} counted"
    );
    assert_eq!(
        header_u64(&next, "x-ratelimit-remaining-requests"),
        tollgate::domain::tenant::Tier::Free
            .limits()
            .requests_per_minute
            - 2
    );
}

/// Simulated providers that take 300 ms, so every concurrent request is admitted (or refused)
/// while the others are still in flight, before any reservation is reconciled.
async fn slow_gateway() -> Gateway {
    Gateway::build(tollgate_tests::harness::settings(&[
        ("TOLLGATE_PROVIDERS", "simulated".into()),
        ("TOLLGATE_SIMULATED_LATENCY_MS", "300".into()),
    ]))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_never_admit_more_than_the_limit() {
    let gw = Arc::new(slow_gateway().await);
    let limits = LimitOverrides {
        tokens_per_minute: Some(10_000),
        requests_per_minute: Some(1_000),
        ..Default::default()
    };
    set_limits(&gw, tollgate::demo::acme_config().unwrap(), limits).await;
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let mut body = with_max_tokens("gpt-4o-mini", 1_000);
                body["messages"][0]["content"] = json!("same prompt for everyone");
                let res = gw.chat("acme", body).await;
                (
                    res.status.as_u16(),
                    res.header("retry-after").map(str::to_owned),
                )
            })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for h in handles {
        match h.await.unwrap() {
            (200, _) => ok += 1,
            (429, Some(_)) => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let reservation = gw.usage_events()[0].usage.prompt_tokens + 1_000;
    // All requests are identical, so exactly floor(limit / reservation) fit: no over-admission
    // and, within one window, no under-admission either.
    assert_eq!(
        ok as u64,
        10_000 / reservation,
        "admitted {ok}, refused {limited}"
    );
    assert_eq!(ok + limited, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_tenant_never_exceeds_its_limit_and_uses_most_of_it() {
    let gw = Arc::new(slow_gateway().await);
    let limits = LimitOverrides {
        tokens_per_minute: Some(40_000),
        requests_per_minute: Some(10_000),
        counter_shards: Some(4),
        ..Default::default()
    };
    set_limits(&gw, tollgate::demo::acme_config().unwrap(), limits).await;
    let handles: Vec<_> = (0..80)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let mut body = with_max_tokens("gpt-4o-mini", 1_000);
                body["messages"][0]["content"] = json!("same prompt for everyone");
                gw.chat("acme", body).await.status.as_u16()
            })
        })
        .collect();
    let mut ok = 0_u64;
    for h in handles {
        match h.await.unwrap() {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    let reservation = gw.usage_events()[0].usage.prompt_tokens + 1_000;
    let exact = 40_000 / reservation;
    // Never more than the limit; with 4 shards of 10,000 each, at most 4 × ⌊10,000 / r⌋ fit
    // (a little under ⌊40,000 / r⌋), and trying a second shard keeps uneven placement from
    // wasting much more.
    let per_shard = 4 * (10_000 / reservation);
    assert!(ok <= exact, "over-admission: {ok} > {exact}");
    assert!(
        ok + 4 >= per_shard,
        "under-admission: {ok} admitted, {per_shard} fit"
    );
}
