#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // Test code: a panic is a failure report; a skipped DynamoDB test says so on stderr.
//! The usage-report function: `GET /v1/usage`, `GET /v1/usage/events` and the dashboard.
//!
//! - The report against events generated through the real invoke handler (stand-in providers
//!   with scripted latencies and faults): totals equal the sum of the events exactly, in
//!   `Decimal`; latency percentiles are within the stated bound of the exact ones.
//! - Isolation: tenant A never reads tenant B's usage, whatever the query string, headers or
//!   cursors say.
//! - Bad parameters are 400s in the OpenAI error shape.
//! - The event listing (`UsageEvents`) as a contract run against the embedded store and DynamoDB
//!   in moto: newest first, filters, pagination, cursors bound to the caller's tenant.
//! - The report end to end on DynamoDB (moto). `cargo test -p tollgate-tests --test
//!   usage_report dynamodb` selects the DynamoDB tests; they skip without
//!   `TOLLGATE_TEST_DYNAMODB_ENDPOINT`, except with `CI=true`, where they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http::{Method, Request};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::Value;
use tollgate::adapters::dynamodb::DynamoStore;
use tollgate::adapters::memory::{MemoryMetrics, MemoryStore};
use tollgate::domain::ids::{RequestId, TenantId};
use tollgate::domain::usage::{TokenUsage, UsageEvent, UsageRollup, hour_start};
use tollgate::domain::usage_report::{EventCursor, EventFilter, EventStatus};
use tollgate::error::ErrorKind;
use tollgate::ports::UsageSink;
use tollgate::ports::store::UsageEvents;
use tollgate_tests::harness::{Gateway, TestResponse, chat_body, settings};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};
use usage_report::UsageReportState;

/// The bound every report states, and that percentiles are checked against.
const BOUND: f64 = 0.12;

/// acme's one document, which its grounded answers are scored against.
const LAUNCH_FACT: &str =
    "The next launch window for the Falcon Nine replica opens on Saturday at dawn.";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn get(state: &UsageReportState, key: Option<&str>, uri: &str) -> TestResponse {
    let mut req = Request::builder().method(Method::GET).uri(uri);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    send(state, req.body(Bytes::new()).unwrap()).await
}

async fn send(state: &UsageReportState, req: Request<Bytes>) -> TestResponse {
    let (parts, body) = usage_report::handle(state, req).await.into_parts();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await,
    }
}

fn decimal(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("not a decimal string: {v}")),
    )
    .unwrap()
}

/// A JSON number as the exact decimal its text spells.
fn number(v: &Value) -> Decimal {
    assert!(v.is_number(), "not a number: {v}");
    let text = v.to_string();
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .unwrap()
}

/// A rate the report states to 6 decimal places: within half a millionth of `exact`.
fn assert_rate(reported: &Value, exact: f64, what: &str) {
    let reported = reported
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {reported}"));
    assert!(
        (reported - exact).abs() <= 0.5e-6 + f64::EPSILON,
        "{what}: reported {reported}, exact {exact}"
    );
}

/// Nearest-rank percentile, the rule the histogram applies to its buckets.
fn exact_percentile(latencies: &[u64], p: f64) -> f64 {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank - 1] as f64
}

/// Within the stated relative bound (0.5 ms absolute below 1 ms), allowing for the report's
/// rounding to 0.1 ms.
fn assert_within_bound(reported: f64, exact: f64, what: &str) {
    let allowed = if exact < 1.0 { 0.5 } else { BOUND * exact } + 0.05;
    assert!(
        (reported - exact).abs() <= allowed,
        "{what}: reported {reported} ms, exact {exact} ms (allowed ± {allowed:.2})"
    );
}

/// Checks a summary object of the report against the events it covers.
fn assert_summary_matches(summary: &Value, events: &[&UsageEvent], what: &str) {
    assert_eq!(summary["requests"], events.len() as u64, "{what} requests");
    let cost: Decimal = events.iter().map(|e| e.cost_usd).sum();
    assert_eq!(decimal(&summary["cost_usd"]), cost, "{what} cost");
    let sum = |f: fn(&UsageEvent) -> u64| events.iter().map(|e| f(e)).sum::<u64>();
    assert_eq!(
        summary["prompt_tokens"],
        sum(|e| e.usage.prompt_tokens),
        "{what}"
    );
    assert_eq!(
        summary["completion_tokens"],
        sum(|e| e.usage.completion_tokens),
        "{what}"
    );
    assert_eq!(
        summary["cached_tokens"],
        sum(|e| e.usage.cached_tokens),
        "{what}"
    );
    assert_eq!(
        summary["cache_write_tokens"],
        sum(|e| e.usage.cache_write_tokens),
        "{what}"
    );
    assert_eq!(
        summary["cache_hits"],
        sum(|e| u64::from(e.cache_hit)),
        "{what}"
    );
    let errors = events.iter().filter(|e| e.error_type.is_some()).count() as u64;
    assert_eq!(summary["errors"], errors, "{what} errors");
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for e in events {
        if let Some(kind) = e.error_type {
            *by_type.entry(kind.as_str().to_owned()).or_default() += 1;
        }
    }
    let reported: BTreeMap<String, u64> =
        serde_json::from_value(summary["errors_by_type"].clone()).unwrap();
    assert_eq!(reported, by_type, "{what} errors by type");
    let share = |n: u64| {
        if events.is_empty() {
            0.0
        } else {
            n as f64 / events.len() as f64
        }
    };
    assert_rate(
        &summary["error_rate"],
        share(errors),
        &format!("{what} error rate"),
    );
    assert_rate(
        &summary["cache_hit_rate"],
        share(sum(|e| u64::from(e.cache_hit))),
        &format!("{what} cache hit rate"),
    );
    // Quality: the mean of the graded events' scores, in `Decimal` (rounded to 4 places as
    // the report rounds it); ungraded events do not count, and none graded is `null`.
    let scores: Vec<Decimal> = events.iter().filter_map(|e| e.quality_score).collect();
    assert_eq!(
        summary["quality_scored"],
        scores.len() as u64,
        "{what} graded"
    );
    if scores.is_empty() {
        assert!(summary["quality_score_avg"].is_null(), "{what}: {summary}");
    } else {
        let mean = scores.iter().sum::<Decimal>() / Decimal::from(scores.len());
        assert_eq!(
            number(&summary["quality_score_avg"]),
            mean.round_dp(4),
            "{what} quality average"
        );
    }
    if events.is_empty() {
        assert!(summary["latency_ms"].is_null(), "{what}");
        return;
    }
    let latencies: Vec<u64> = events.iter().map(|e| e.latency_ms).collect();
    for p in ["p50", "p95", "p99"] {
        let pct: f64 = p[1..].parse().unwrap();
        assert_within_bound(
            summary["latency_ms"][p].as_f64().unwrap(),
            exact_percentile(&latencies, pct),
            &format!("{what} {p}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The embedded gateway: real invoke handler, stand-in providers
// ---------------------------------------------------------------------------------------------

struct Env {
    openai: OpenAiStandIn,
    anthropic: AnthropicStandIn,
    gw: Gateway,
    usage: UsageReportState,
}

impl Env {
    async fn start() -> Self {
        let openai = OpenAiStandIn::start().await;
        let anthropic = AnthropicStandIn::start().await;
        let gw = Gateway::with_standins(&openai, &anthropic).await;
        let usage =
            UsageReportState::build(&tollgate::bootstrap::Stores::embedded(gw.store.clone()));
        Self {
            openai,
            anthropic,
            gw,
            usage,
        }
    }

    async fn get(&self, tenant: &str, uri: &str) -> TestResponse {
        get(&self.usage, Some(self.gw.key(tenant)), uri).await
    }

    /// One chat call whose provider answers after `delay_ms`; returns the request id.
    async fn call(&self, tenant: &str, model: &str, prompt: &str, delay_ms: u64) -> String {
        let provider: &tollgate_tests::StandIn = match (tenant, model) {
            ("acme", "claude-haiku") | ("globex", "gpt-4o-mini" | "claude-sonnet") => {
                &self.anthropic
            }
            _ => &self.openai,
        };
        provider.push(Behavior::Delay(Duration::from_millis(delay_ms)));
        let res = self.gw.chat(tenant, chat_body(model, prompt)).await;
        assert_eq!(res.status, 200, "{}", res.text());
        res.header("x-request-id").unwrap().to_owned()
    }

    /// A call the provider keeps failing with `status` (every retry too).
    async fn failing_call(&self, tenant: &str, model: &str, status: u16) -> String {
        for _ in 0..3 {
            self.openai.push(Behavior::status(status));
        }
        let res = self
            .gw
            .chat(tenant, chat_body(model, &format!("fail {status}")))
            .await;
        assert!(res.status.as_u16() >= 400, "{}", res.text());
        res.header("x-request-id").unwrap().to_owned()
    }

    /// Grounded answers (retrieval over a document of acme's), each scored for groundedness
    /// against the excerpt: scores of 1, 0 and 1/3 on gpt-4o, 3/4 and 4/5 on gpt-4o-mini.
    async fn grounded_calls(&self) {
        let doc = serde_json::json!({
            "id": "launch-schedule",
            "title": "Launch schedule",
            "text": LAUNCH_FACT,
        });
        let res = self
            .gw
            .call("acme", Method::POST, "/v1/documents", Some(doc))
            .await;
        assert_eq!(res.json()["stored"], 1, "{}", res.text());
        for (i, (model, answer)) in [
            ("gpt-4o", "The launch window opens on Saturday at dawn."),
            ("gpt-4o", "Bananas contain potassium."),
            ("gpt-4o", "Launch windows? Bananas!"),
            ("gpt-4o-mini", "The launch window opens, bananas."),
            ("gpt-4o-mini", "Falcon Nine replica launches Saturday."),
        ]
        .into_iter()
        .enumerate()
        {
            self.openai.push(Behavior::reply(
                answer,
                tollgate_tests::standins::DEFAULT_USAGE,
            ));
            let mut body = chat_body(model, &format!("When is launch window {i}?"));
            body["retrieval"] = serde_json::json!({"top_k": 3});
            let res = self.gw.chat("acme", body).await;
            assert_eq!(res.status, 200, "{}", res.text());
            assert_eq!(res.header("x-tollgate-documents"), Some("launch-schedule"));
        }
    }

    /// Varied traffic for both tenants: several models, latencies from 0 to ~150 ms, response
    /// cache hits, upstream errors and timeouts, and graded (grounded) answers.
    async fn traffic(&self) {
        let acme_models = ["gpt-4o-mini", "gpt-4o", "claude-haiku"];
        for i in 0..30_u64 {
            let model = acme_models[(i % 3) as usize];
            // A spread of latencies over many histogram buckets.
            let delay = (i * 37) % 150;
            self.call("acme", model, &format!("acme question {i}"), delay)
                .await;
        }
        // acme's response cache: the same question again is a hit (no provider call).
        let res = self
            .gw
            .chat("acme", chat_body("gpt-4o-mini", "acme question 0"))
            .await;
        assert_eq!(res.header("x-tollgate-cache"), Some("hit"));
        self.failing_call("acme", "gpt-4o", 500).await;
        self.failing_call("acme", "gpt-4o", 503).await;
        let res = self.gw.chat("acme", chat_body("gpt-4o", "slow")).await;
        assert_eq!(res.status, 200);
        self.grounded_calls().await;
        for i in 0..8_u64 {
            let model = ["gpt-4o-mini", "claude-sonnet"][(i % 2) as usize];
            self.call("globex", model, &format!("globex question {i}"), i * 11)
                .await;
        }
        self.failing_call("globex", "gpt-4o", 500).await;
    }

    fn events_of(&self, tenant: &str) -> Vec<UsageEvent> {
        self.gw
            .usage_events()
            .into_iter()
            .filter(|e| e.tenant_id.as_str() == tenant)
            .collect()
    }
}

/// Every page of `GET /v1/usage/events?{query}` for `tenant`, following `next_cursor`.
async fn all_pages(env: &Env, tenant: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let mut uri = format!("/v1/usage/events?{query}");
        if let Some(c) = &cursor {
            uri.push_str(&format!("&cursor={c}"));
        }
        let res = env.get(tenant, &uri).await;
        assert_eq!(res.status, 200, "{uri}: {}", res.text());
        let page = res.json();
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(page["has_more"], true);
                cursor = Some(next.to_owned());
            }
            None => {
                assert_eq!(page["has_more"], false);
                return out;
            }
        }
    }
    panic!("pagination did not end");
}

/// Request ids newest first, as the listing must order them.
fn newest_first(events: &[UsageEvent]) -> Vec<String> {
    let mut sorted: Vec<_> = events.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(EventCursor::of(e)));
    sorted
        .iter()
        .map(|e| e.request_id.as_str().to_owned())
        .collect()
}

fn ids(data: &[Value]) -> Vec<String> {
    data.iter()
        .map(|e| e["request_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn report_totals_equal_the_sum_of_events_and_percentiles_are_within_the_bound() {
    let env = Env::start().await;
    env.traffic().await;
    let events = env.events_of("acme");
    assert!(events.len() >= 33, "{} acme events", events.len());
    assert!(events.iter().any(|e| e.cache_hit));
    assert!(events.iter().any(|e| e.error_type.is_some()));
    // Graded answers on two models (so per-model averages differ from the total's), and
    // models with no graded answer (a `null` average).
    let graded: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.quality_score.is_some())
        .map(|e| e.model_requested.as_str())
        .collect();
    assert_eq!(graded, BTreeSet::from(["gpt-4o", "gpt-4o-mini"]));
    assert!(events.iter().any(|e| e.model_requested == "claude-haiku"));

    let res = env.get("acme", "/v1/usage?group_by=model").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("cache-control"), Some("no-store"));
    let report = res.json();
    assert_eq!(report["object"], "usage.report");
    assert_eq!(report["tenant_id"], "acme");
    assert_eq!(report["granularity"], "hour");
    assert_eq!(report["latency_error_bound"], BOUND);
    let all: Vec<&UsageEvent> = events.iter().collect();
    assert_summary_matches(&report["totals"], &all, "totals");

    // Per model, over the whole range.
    let models: BTreeSet<&str> = events.iter().map(|e| e.model_requested.as_str()).collect();
    let reported: Vec<&Value> = report["models"].as_array().unwrap().iter().collect();
    assert_eq!(reported.len(), models.len());
    for m in reported {
        let name = m["model"].as_str().unwrap();
        let of_model: Vec<&UsageEvent> = events
            .iter()
            .filter(|e| e.model_requested == name)
            .collect();
        assert_summary_matches(m, &of_model, name);
    }

    // Buckets: each hour's events, per model too; together they are the totals.
    let mut bucketed = 0;
    for bucket in report["buckets"].as_array().unwrap() {
        let start: DateTime<Utc> = serde_json::from_value(bucket["start"].clone()).unwrap();
        let end: DateTime<Utc> = serde_json::from_value(bucket["end"].clone()).unwrap();
        let inside: Vec<&UsageEvent> = events
            .iter()
            .filter(|e| e.created_at >= start && e.created_at < end)
            .collect();
        assert_summary_matches(bucket, &inside, &format!("bucket {start}"));
        for m in bucket["models"].as_array().unwrap() {
            let name = m["model"].as_str().unwrap();
            let of_model: Vec<&UsageEvent> = inside
                .iter()
                .copied()
                .filter(|e| e.model_requested == name)
                .collect();
            assert_summary_matches(m, &of_model, &format!("bucket {start} {name}"));
        }
        bucketed += inside.len();
    }
    assert_eq!(bucketed, events.len());

    // By day, the same totals.
    let by_day = env.get("acme", "/v1/usage?granularity=day").await.json();
    assert_eq!(by_day["totals"], report["totals"]);
    assert!(by_day["buckets"][0].get("models").is_none());
}

#[tokio::test]
async fn a_tenant_never_reads_another_tenants_usage_whatever_the_request_says() {
    let env = Env::start().await;
    env.traffic().await;
    let acme: Vec<UsageEvent> = env.events_of("acme");
    let globex: Vec<UsageEvent> = env.events_of("globex");
    let acme_ids: BTreeSet<String> = acme.iter().map(|e| e.request_id.to_string()).collect();
    let globex_ids: BTreeSet<String> = globex.iter().map(|e| e.request_id.to_string()).collect();
    assert!(!globex_ids.is_empty());

    // The report is the key's tenant's, and only theirs.
    let report = env.get("globex", "/v1/usage").await.json();
    assert_eq!(report["tenant_id"], "globex");
    let refs: Vec<&UsageEvent> = globex.iter().collect();
    assert_summary_matches(&report["totals"], &refs, "globex totals");

    // Naming another tenant in the query string is refused, never honoured.
    for uri in [
        "/v1/usage?tenant_id=globex",
        "/v1/usage?tenant_id=acme",
        "/v1/usage?group_by=model&tenant_id=globex",
        "/v1/usage?tenant_id%3Dglobex",
        "/v1/usage/events?tenant_id=globex",
        "/v1/usage?tenant=globex",
        "/v1/usage/events?tenant=globex",
    ] {
        let res = env.get("acme", uri).await;
        assert_eq!(res.status, 400, "{uri}: {}", res.text());
        assert!(!res.text().contains("globex question"), "{uri}");
    }
    // Nor does a header.
    let req = Request::builder()
        .uri("/v1/usage/events?limit=100")
        .header("authorization", format!("Bearer {}", env.gw.key("acme")))
        .header("x-tenant-id", "globex")
        .header("tenant_id", "globex")
        .body(Bytes::new())
        .unwrap();
    let listed = send(&env.usage, req).await.json();
    let listed: BTreeSet<String> = ids(listed["data"].as_array().unwrap())
        .into_iter()
        .collect();
    assert_eq!(listed, acme_ids);

    // A cursor issued to globex only positions acme's own listing.
    let page = env.get("globex", "/v1/usage/events?limit=1").await.json();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let first_globex = page["data"][0]["request_id"].as_str().unwrap().to_owned();
    assert!(globex_ids.contains(&first_globex));
    let res = env
        .get(
            "acme",
            &format!("/v1/usage/events?limit=100&cursor={cursor}"),
        )
        .await;
    assert_eq!(res.status, 200);
    for id in ids(res.json()["data"].as_array().unwrap()) {
        assert!(acme_ids.contains(&id), "acme saw {id}");
    }
    // And the full listings are disjoint and complete.
    let acme_listed: BTreeSet<String> = ids(&all_pages(&env, "acme", "limit=7").await)
        .into_iter()
        .collect();
    let globex_listed: BTreeSet<String> = ids(&all_pages(&env, "globex", "limit=7").await)
        .into_iter()
        .collect();
    assert_eq!(acme_listed, acme_ids);
    assert_eq!(globex_listed, globex_ids);
}

#[tokio::test]
async fn events_are_listed_newest_first_paginated_and_filtered() {
    let env = Env::start().await;
    env.traffic().await;
    let acme = env.events_of("acme");

    // Every page size gives the same listing, newest first, with no duplicates.
    let expected = newest_first(&acme);
    for limit in [1, 4, 20, 100] {
        let listed = all_pages(&env, "acme", &format!("limit={limit}")).await;
        assert_eq!(ids(&listed), expected, "limit={limit}");
    }
    let first = env.get("acme", "/v1/usage/events").await.json();
    assert_eq!(first["object"], "list");
    assert_eq!(first["data"].as_array().unwrap().len(), 20);
    let e = &first["data"][0];
    let newest = acme
        .iter()
        .find(|x| x.request_id.as_str() == e["request_id"])
        .unwrap();
    assert_eq!(e["model"], newest.model_requested.as_str());
    assert_eq!(decimal(&e["cost_usd"]), newest.cost_usd);
    assert_eq!(e["latency_ms"], newest.latency_ms);
    assert!(e.get("tenant_id").is_none());

    let filtered = |f: &dyn Fn(&UsageEvent) -> bool| -> Vec<String> {
        let kept: Vec<UsageEvent> = acme.iter().filter(|e| f(e)).cloned().collect();
        newest_first(&kept)
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("status=error", filtered(&|e| !e.success)),
        ("status=ok", filtered(&|e| e.success)),
        (
            "error_type=upstream_error",
            filtered(&|e| e.error_type == Some(ErrorKind::UpstreamError)),
        ),
        ("model=gpt-4o", filtered(&|e| e.model_requested == "gpt-4o")),
        (
            "model=gpt-4o&status=ok",
            filtered(&|e| e.model_requested == "gpt-4o" && e.success),
        ),
        ("model=no-such-model", Vec::new()),
        ("error_type=timeout", Vec::new()),
    ];
    for (query, want) in cases {
        for limit in [1, 3, 100] {
            let got = all_pages(&env, "acme", &format!("{query}&limit={limit}")).await;
            assert_eq!(ids(&got), want, "{query} limit={limit}");
        }
    }
    assert_eq!(
        filtered(&|e| e.error_type == Some(ErrorKind::UpstreamError)).len(),
        2
    );
    for e in all_pages(&env, "acme", "status=error").await {
        assert_eq!(e["status"], "error");
        assert_eq!(e["error_type"], "upstream_error");
    }

    // Time bounds: `to` is exclusive, `from` inclusive (millisecond precision).
    let mid = &acme[acme.len() / 2];
    let at = mid
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        .replace('+', "%2B");
    let before = all_pages(&env, "acme", &format!("to={at}")).await;
    let cut = EventCursor::at(mid.created_at, &RequestId::from_upstream("0"));
    let want = filtered(&|e| EventCursor::at(e.created_at, &RequestId::from_upstream("0")) < cut);
    assert_eq!(ids(&before), want);
    let after = all_pages(&env, "acme", &format!("from={at}&limit=5")).await;
    assert_eq!(after.len() + before.len(), acme.len());
}

#[tokio::test]
async fn bad_requests_are_openai_shaped_errors() {
    let env = Env::start().await;
    for (uri, param) in [
        ("/v1/usage?from=yesterday", "from"),
        ("/v1/usage?to=2026-02-30", "to"),
        ("/v1/usage?from=2026-03-14&to=2026-03-01", "from"),
        ("/v1/usage?from=2025-01-01&to=2025-12-31", "from"),
        (
            "/v1/usage?from=2026-01-01&to=2026-03-01&granularity=hour",
            "granularity",
        ),
        ("/v1/usage?granularity=week", "granularity"),
        ("/v1/usage?group_by=tenant", "group_by"),
        ("/v1/usage?from=", "from"),
        ("/v1/usage?from=2026-03-01&from=2026-03-02", "from"),
        ("/v1/usage?foo=bar", "foo"),
        ("/v1/usage/events?limit=0", "limit"),
        ("/v1/usage/events?limit=101", "limit"),
        ("/v1/usage/events?limit=-1", "limit"),
        ("/v1/usage/events?status=failed", "status"),
        ("/v1/usage/events?error_type=kaboom", "error_type"),
        ("/v1/usage/events?cursor=not-a-cursor", "cursor"),
        ("/v1/usage/events?cursor=e1zz", "cursor"),
        ("/v1/usage/events?from=2026-03-14&to=2026-03-13", "from"),
    ] {
        let res = env.get("acme", uri).await;
        assert_eq!(res.status, 400, "{uri}: {}", res.text());
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert!(res.header("x-request-id").is_some());
        let body = res.json();
        let error = &body["error"];
        assert_eq!(error["type"], "invalid_request_error", "{uri}");
        assert_eq!(error["param"], param, "{uri}");
        assert!(error["code"].is_null(), "{uri}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    // Authentication, exactly as invoke: missing, malformed and unknown keys are 401s.
    for key in [
        None,
        Some("nope"),
        Some("tg_AAAAAAAAAAAA_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
    ] {
        for uri in ["/v1/usage", "/v1/usage/events"] {
            let res = get(&env.usage, key, uri).await;
            assert_eq!(res.status, 401, "{uri} {key:?}");
            assert_eq!(res.json()["error"]["type"], "authentication_error");
        }
    }
    let res = get(&env.usage, None, "/v1/usage?tenant_id=globex").await;
    assert_eq!(res.status, 401, "authentication comes before parameters");
    // A revoked key is refused.
    let prefix = tollgate::domain::keys::PresentedKey::parse(env.gw.key("acme"))
        .unwrap()
        .prefix()
        .clone();
    tollgate::ports::TenantAdmin::revoke_key(env.gw.store.as_ref(), &prefix)
        .await
        .unwrap();
    assert_eq!(env.get("acme", "/v1/usage").await.status, 401);

    let post = Request::builder()
        .method(Method::POST)
        .uri("/v1/usage")
        .body(Bytes::new())
        .unwrap();
    let res = send(&env.usage, post).await;
    assert_eq!(res.status, 405);
    assert_eq!(res.json()["error"]["code"], "method_not_allowed");
    let res = env.get("globex", "/v1/usage/nope").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.json()["error"]["code"], "unknown_url");
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_content_security_policy() {
    let env = Env::start().await;
    let res = get(&env.usage, None, "/dashboard").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = res.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("form-action 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(res.header("referrer-policy"), Some("no-referrer"));
    let html = res.text();
    assert!(html.contains("<script src=\"dashboard/app.js\" defer></script>"));
    // The key input has no name, so even a scriptless submit could not carry it in a URL.
    assert!(html.contains("<input id=\"api-key\" type=\"password\""));

    for (uri, content_type) in [
        ("/dashboard/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/app.css", "text/css; charset=utf-8"),
        ("/prod/dashboard/app.js", "text/javascript; charset=utf-8"),
    ] {
        let res = get(&env.usage, None, uri).await;
        assert_eq!(res.status, 200, "{uri}");
        assert_eq!(res.header("content-type"), Some(content_type), "{uri}");
        assert!(res.header("content-security-policy").is_some());
    }
    let js = get(&env.usage, None, "/dashboard/app.js").await.text();
    assert!(js.contains("textContent") && !js.contains("innerHTML"));
    assert!(js.contains("Authorization: 'Bearer '"));

    let res = get(&env.usage, None, "/dashboard/").await;
    assert_eq!(res.status, 308);
    assert_eq!(res.header("location"), Some("../dashboard"));
    assert_eq!(get(&env.usage, None, "/dashboard/x.js").await.status, 404);
    assert_eq!(get(&env.usage, None, "/healthz").await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// API Gateway fixtures (functions/usage-report/events)
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str, key: &str) -> Request<Bytes> {
    let path = format!(
        "{}/../functions/usage-report/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let req = lambda_http::request::from_str(&raw.replace("__TENANT_KEY__", key))
        .expect("valid API Gateway event");
    tollgate::lambda::from_lambda(req)
}

#[tokio::test]
async fn api_gateway_events_reach_the_routes_with_their_query_strings() {
    let env = Env::start().await;
    env.call("acme", "gpt-4o-mini", "one", 5).await;
    env.call("acme", "gpt-4o", "two", 5).await;
    env.call("acme", "gpt-4o", "three", 5).await;

    let res = send(&env.usage, fixture("usage-report.json", env.gw.key("acme"))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-request-id"), Some("Ux1vQhZ3oAMEVxw="));
    let report = res.json();
    assert_eq!(report["granularity"], "day");
    assert_eq!(report["group_by"], "model");
    assert_eq!(report["totals"]["requests"], 3);

    let res = send(
        &env.usage,
        fixture("usage-tenant-id.json", env.gw.key("acme")),
    )
    .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"]["param"], "tenant_id");

    let res = send(
        &env.usage,
        fixture("usage-events-rest-stage.json", env.gw.key("acme")),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let page = res.json();
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);

    let res = send(&env.usage, fixture("dashboard-rest-stage.json", "")).await;
    assert_eq!(res.status, 200);
    assert!(res.text().contains("Tollgate usage"));
}

// ---------------------------------------------------------------------------------------------
// The `UsageEvents` contract, on every store
// ---------------------------------------------------------------------------------------------

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap()
}

fn event(tenant: &str, model: &str, at: DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        latency_ms: 42,
        provider_latency_ms: Some(40),
        ..tollgate_tests::fixtures::ok_event(tenant, model, at, dec!(0.000027))
    }
}

fn failed(mut e: UsageEvent, kind: ErrorKind) -> UsageEvent {
    e.success = false;
    e.error_type = Some(kind);
    e.usage = TokenUsage::default();
    e.cost_usd = Decimal::ZERO;
    e
}

mod contract {
    use super::*;

    /// Every page of a listing; checks page sizes and that `next` appears exactly when more
    /// remain.
    pub async fn pages<S: UsageEvents>(
        store: &S,
        tenant: &TenantId,
        filter: &EventFilter,
        limit: usize,
        start: Option<EventCursor>,
    ) -> Vec<UsageEvent> {
        let mut out = Vec::new();
        let mut cursor = start;
        loop {
            let page = store
                .events_page(tenant, filter, cursor.as_ref(), limit)
                .await
                .unwrap();
            assert!(page.events.len() <= limit);
            out.extend(page.events.iter().cloned());
            match page.next {
                Some(next) => {
                    assert_eq!(page.events.len(), limit, "a short page with a cursor");
                    assert_eq!(
                        Some(&next),
                        page.events.last().map(EventCursor::of).as_ref()
                    );
                    cursor = Some(next);
                }
                None => return out,
            }
        }
    }

    fn ids(events: &[UsageEvent]) -> Vec<String> {
        events.iter().map(|e| e.request_id.to_string()).collect()
    }

    pub async fn events<S: UsageSink + UsageEvents>(store: &S) {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        let mut recorded = Vec::new();
        for i in 0..23_i64 {
            let at = t0() + chrono::Duration::minutes(i * 7);
            let model = if i % 3 == 0 { "gpt-4o" } else { "gpt-4o-mini" };
            let mut e = event("acme", model, at);
            if i % 5 == 1 {
                e = failed(e, ErrorKind::Timeout);
            } else if i % 5 == 3 {
                e = failed(e, ErrorKind::UpstreamError);
            }
            recorded.push(e);
            // globex's events interleave in time with acme's.
            if i % 4 == 0 {
                recorded.push(event(
                    "globex",
                    "gpt-4o",
                    at + chrono::Duration::seconds(30),
                ));
            }
        }
        // Three events in the same millisecond: ordered by request id.
        let same = t0() + chrono::Duration::hours(1) + chrono::Duration::microseconds(1_500);
        for _ in 0..3 {
            recorded.push(event("acme", "gpt-4o-mini", same));
        }
        for e in &recorded {
            store.record(e, &[]).await.unwrap();
        }
        let of = |tenant: &TenantId, f: &dyn Fn(&UsageEvent) -> bool| -> Vec<String> {
            let kept: Vec<UsageEvent> = recorded
                .iter()
                .filter(|e| &e.tenant_id == tenant && f(e))
                .cloned()
                .collect();
            newest_first(&kept)
        };
        let everything = EventFilter::default();

        // The whole listing, newest first, whatever the page size.
        let want = of(&acme, &|_| true);
        assert_eq!(want.len(), 26);
        for limit in [1, 2, 5, 13, 26, 100] {
            let got = pages(store, &acme, &everything, limit, None).await;
            assert_eq!(ids(&got), want, "limit {limit}");
        }
        let globex_all = pages(store, &globex, &everything, 100, None).await;
        assert_eq!(ids(&globex_all), of(&globex, &|_| true));
        assert_eq!(globex_all.len(), 6);

        // Filters, alone and together, across pages.
        let cases: Vec<(EventFilter, Vec<String>)> = vec![
            (
                EventFilter {
                    status: Some(EventStatus::Error),
                    ..Default::default()
                },
                of(&acme, &|e| !e.success),
            ),
            (
                EventFilter {
                    status: Some(EventStatus::Ok),
                    ..Default::default()
                },
                of(&acme, &|e| e.success),
            ),
            (
                EventFilter {
                    error_type: Some(ErrorKind::Timeout),
                    ..Default::default()
                },
                of(&acme, &|e| e.error_type == Some(ErrorKind::Timeout)),
            ),
            (
                EventFilter {
                    model: Some("gpt-4o".into()),
                    status: Some(EventStatus::Ok),
                    ..Default::default()
                },
                of(&acme, &|e| e.model_requested == "gpt-4o" && e.success),
            ),
            (
                EventFilter {
                    model: Some("unknown".into()),
                    ..Default::default()
                },
                Vec::new(),
            ),
            (
                EventFilter {
                    from: Some(t0() + chrono::Duration::minutes(35)),
                    to: Some(t0() + chrono::Duration::minutes(100)),
                    ..Default::default()
                },
                of(&acme, &|e| {
                    e.created_at >= t0() + chrono::Duration::minutes(35)
                        && e.created_at < t0() + chrono::Duration::minutes(100)
                }),
            ),
            (
                EventFilter {
                    to: Some(t0() + chrono::Duration::minutes(70)),
                    status: Some(EventStatus::Error),
                    ..Default::default()
                },
                of(&acme, &|e| {
                    e.created_at < t0() + chrono::Duration::minutes(70) && !e.success
                }),
            ),
            (
                EventFilter {
                    from: Some(t0() + chrono::Duration::minutes(140)),
                    ..Default::default()
                },
                of(&acme, &|e| {
                    e.created_at >= t0() + chrono::Duration::minutes(140)
                }),
            ),
        ];
        for (filter, want) in &cases {
            assert!(!want.is_empty() || filter.model.is_some(), "{filter:?}");
            for limit in [1, 3, 100] {
                let got = pages(store, &acme, filter, limit, None).await;
                assert_eq!(&ids(&got), want, "{filter:?} limit {limit}");
            }
        }

        // A cursor from globex's listing: acme's own events older than that position, nothing
        // of globex's.
        let globex_page = store
            .events_page(&globex, &everything, None, 2)
            .await
            .unwrap();
        let foreign = globex_page.next.unwrap();
        let got = pages(store, &acme, &everything, 4, Some(foreign.clone())).await;
        assert!(got.iter().all(|e| e.tenant_id == acme));
        let older: Vec<String> = of(&acme, &|e| EventCursor::of(e) < foreign);
        assert_eq!(ids(&got), older);

        // A tenant with no events, and a zero limit.
        let nobody = TenantId::parse("nobody").unwrap();
        let page = store
            .events_page(&nobody, &everything, None, 10)
            .await
            .unwrap();
        assert!(page.events.is_empty() && page.next.is_none());
        let page = store
            .events_page(&acme, &everything, None, 0)
            .await
            .unwrap();
        assert!(page.events.is_empty() && page.next.is_none());
    }
}

async fn memory() -> Option<MemoryStore> {
    Some(MemoryStore::new())
}

/// A store on fresh tables of its own, so tests run in parallel on one emulator.
async fn dynamodb() -> Option<DynamoStore> {
    tollgate_tests::moto::fresh_store("usage-report DynamoDB tests", "ur").await
}

mod memory {
    #[tokio::test]
    async fn events_are_listed_newest_first_filtered_and_paged_per_tenant() {
        let Some(store) = super::memory().await else {
            return;
        };
        super::contract::events(&store).await;
    }
}

mod dynamodb {
    use super::*;

    #[tokio::test]
    async fn dynamodb_events_are_listed_newest_first_filtered_and_paged_per_tenant() {
        let Some(store) = super::dynamodb().await else {
            return;
        };
        super::contract::events(&store).await;
    }

    /// `GET {uri}` as `key`: the report, and the DynamoDB round trips it cost.
    async fn counted(
        store: &DynamoStore,
        usage: &UsageReportState,
        key: &str,
        uri: &str,
    ) -> (Value, u64) {
        let before = store.round_trips();
        let res = get(usage, Some(key), uri).await;
        let trips = store.round_trips() - before;
        assert_eq!(res.status, 200, "{uri}: {}", res.text());
        (res.json(), trips)
    }

    /// The real invoke handler on DynamoDB, then the report and the listing from the same
    /// tables: totals equal the stored events exactly (graded answers, cache hits and errors
    /// included), and each tenant sees only its own. Reports read rollups, not events: a month
    /// of hourly buckets costs the same few round trips whatever the number of events, and an
    /// hour whose rollup has no event behind it is reported from the rollup.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dynamodb_report_equals_the_stored_events_and_stays_per_tenant() {
        let Some(store) = super::dynamodb().await else {
            return;
        };
        let seeded = tollgate::demo::seed(&store, Utc::now()).await.unwrap();
        let keys: BTreeMap<String, String> = seeded
            .into_iter()
            .map(|(t, k)| (t.to_string(), k.expose().to_owned()))
            .collect();
        let s = settings(&[
            ("TOLLGATE_PROVIDERS", "simulated".into()),
            ("TOLLGATE_SIMULATED_LATENCY_MS", "3".into()),
        ]);
        let invoke = tollgate_tests::harness::invoke_on(
            &s,
            Arc::new(store.clone()),
            Arc::new(MemoryMetrics::default()),
        );
        let mut usage = UsageReportState::build(&tollgate::bootstrap::Stores::on(
            Arc::new(store.clone()),
            Duration::ZERO,
        ));
        // Round trips are counted below; the key's background last-use write is not the
        // request's (see store_contract's `key_usage`).
        usage.callers.uses = None;

        let mut sent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (i, (tenant, model)) in [
            ("acme", "gpt-4o-mini"),
            ("acme", "gpt-4o"),
            ("globex", "gpt-4o-mini"),
            ("acme", "claude-haiku"),
            ("globex", "claude-sonnet"),
            ("acme", "gpt-4o-mini"),
            ("acme", "gpt-4o"),
            ("globex", "gpt-4o"),
        ]
        .into_iter()
        .enumerate()
        {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/v1/chat/completions")
                .header("authorization", format!("Bearer {}", keys[tenant]))
                .header("cache-control", "no-cache")
                .body(Bytes::from(chat_body(model, &format!("q{i}")).to_string()))
                .unwrap();
            let res = invoke::handle(&invoke, req).await;
            assert_eq!(res.status(), 200);
            let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            sent.entry(tenant).or_default().push(id);
        }
        let mut stored: BTreeMap<&str, Vec<UsageEvent>> = BTreeMap::new();
        for (tenant, request_ids) in &sent {
            for id in request_ids {
                let e =
                    tollgate::ports::UsageQuery::usage_event(&store, &RequestId::from_upstream(id))
                        .await
                        .unwrap()
                        .unwrap();
                stored.entry(tenant).or_default().push(e);
            }
        }

        // An hour ten days ago whose rollup was written with no event behind it (the test-only
        // `seed_rollups`): only a report that reads rollups can show it.
        let ghost_hour = hour_start(Utc::now() - chrono::Duration::days(10));
        let ghost = UsageEvent {
            quality_score: Some(dec!(0.625)),
            ..event("acme", "gpt-4o", ghost_hour + chrono::Duration::minutes(7))
        };
        let mut rollup = UsageRollup::empty(ghost.tenant_id.clone(), ghost_hour, "gpt-4o".into());
        rollup.apply(&ghost);
        store.seed_rollups(&[rollup]).await.unwrap();
        let no_event = tollgate::ports::UsageQuery::usage_event(&store, &ghost.request_id).await;
        assert_eq!(no_event.unwrap(), None);

        // A month of hourly buckets (744), by model.
        let today = Utc::now().date_naive();
        let month = format!(
            "/v1/usage?from={}&to={today}&granularity=hour&group_by=model",
            today - chrono::Days::new(30)
        );
        let month_matches = |report: &Value, events: &[UsageEvent]| {
            assert_eq!(report["buckets"].as_array().unwrap().len(), 31 * 24);
            let mut all: Vec<&UsageEvent> = events.iter().collect();
            all.push(&ghost);
            assert_summary_matches(&report["totals"], &all, "month totals");
            let bucket = report["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["start"] == serde_json::json!(ghost_hour))
                .unwrap();
            assert_summary_matches(bucket, &[&ghost], "the seeded hour");
            assert_summary_matches(&bucket["models"][0], &[&ghost], "the seeded hour, gpt-4o");
        };
        let (report, trips) = counted(&store, &usage, &keys["acme"], &month).await;
        month_matches(&report, &stored["acme"]);

        // Many more events, graded, cache hits and errors among them, recorded as the invoke
        // handler records them.
        let now = Utc::now();
        for i in 0..24_i64 {
            let model = ["gpt-4o-mini", "gpt-4o", "claude-haiku"][(i % 3) as usize];
            let mut e = UsageEvent {
                latency_ms: 5 + 13 * i as u64,
                ..event(
                    "acme",
                    model,
                    now - chrono::Duration::milliseconds(10 * i + 10),
                )
            };
            match i % 4 {
                0 => e.quality_score = Some(Decimal::new(1_000 - 37 * i, 3)),
                1 => {
                    e.cache_hit = true;
                    e.cost_usd = Decimal::ZERO;
                }
                2 if i % 8 == 2 => e = failed(e, ErrorKind::UpstreamError),
                2 => e = failed(e, ErrorKind::Timeout),
                _ => {}
            }
            assert_eq!(
                store.record(&e, &[]).await.unwrap(),
                tollgate::ports::store::Recorded::Inserted
            );
            stored.get_mut("acme").unwrap().push(e);
        }
        let (report, trips_after) = counted(&store, &usage, &keys["acme"], &month).await;
        month_matches(&report, &stored["acme"]);
        assert_eq!(
            trips_after, trips,
            "a month's report costs the same round trips with 4x the events"
        );
        // The key, the tenant's configuration, and one Query page of the month's rollups.
        assert!(
            trips <= 3,
            "a month-long hourly report took {trips} round trips"
        );

        for (tenant, events) in &stored {
            let res = get(&usage, Some(&keys[*tenant]), "/v1/usage?group_by=model").await;
            assert_eq!(res.status, 200, "{}", res.text());
            let report = res.json();
            assert_eq!(report["tenant_id"], *tenant);
            let refs: Vec<&UsageEvent> = events.iter().collect();
            assert_summary_matches(&report["totals"], &refs, tenant);
            for m in report["models"].as_array().unwrap() {
                let name = m["model"].as_str().unwrap();
                let of_model: Vec<&UsageEvent> = events
                    .iter()
                    .filter(|e| e.model_requested == name)
                    .collect();
                assert_summary_matches(m, &of_model, &format!("{tenant} {name}"));
            }

            // The listing: exactly this tenant's requests, newest first, across pages.
            let mut listed = Vec::new();
            let mut uri = "/v1/usage/events?limit=2".to_owned();
            loop {
                let page = get(&usage, Some(&keys[*tenant]), &uri).await.json();
                listed.extend(ids(page["data"].as_array().unwrap()));
                match page["next_cursor"].as_str() {
                    Some(c) => uri = format!("/v1/usage/events?limit=2&cursor={c}"),
                    None => break,
                }
            }
            assert_eq!(listed, newest_first(events), "{tenant}");
            let res = get(&usage, Some(&keys[*tenant]), "/v1/usage?tenant_id=acme").await;
            assert_eq!(res.status, 400);
        }
        let acme = &stored["acme"];
        assert!(acme.iter().any(|e| e.cache_hit));
        assert!(acme.iter().any(|e| e.error_type.is_some()));
        assert!(acme.iter().filter(|e| e.quality_score.is_some()).count() >= 2);
    }
}
