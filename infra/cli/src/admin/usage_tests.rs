//! `tollgate usage` and `tollgate anomalies run` against the embedded store, through the same
//! argument parser the binary uses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use clap::Parser;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate::adapters::memory::MemoryStore;
use tollgate::domain::ids::{RequestId, TenantId};
use tollgate::domain::tenant::ProviderKind;
use tollgate::domain::usage::{TokenUsage, UsageEvent};
use tollgate::ports::store::{AnomalyStore, UsageSink};

use super::usage::parse_time;
use super::{AdminCommand, Output, UsageError, execute};

#[derive(Parser)]
struct TestCli {
    #[command(subcommand)]
    command: AdminCommand,
}

async fn run(store: &MemoryStore, args: &[&str]) -> anyhow::Result<Output> {
    let command = TestCli::try_parse_from(std::iter::once("tollgate").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?} did not parse: {e}"))
        .command;
    execute(store, command).await
}

async fn ok(store: &MemoryStore, args: &[&str]) -> Output {
    run(store, args)
        .await
        .unwrap_or_else(|e| panic!("{args:?} failed: {e:#}"))
}

fn hour() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap()
}

fn event(tenant: &str, at: DateTime<Utc>, cost: Decimal) -> UsageEvent {
    UsageEvent {
        request_id: RequestId::generate(),
        tenant_id: TenantId::parse(tenant).unwrap(),
        created_at: at,
        model_requested: "gpt-4o".into(),
        model_served: "gpt-4o".into(),
        provider: ProviderKind::Openai,
        usage: TokenUsage {
            prompt_tokens: 100,
            completion_tokens: 10,
            cached_tokens: 0,
            cache_write_tokens: 0,
        },
        cost_usd: cost,
        latency_ms: 200,
        provider_latency_ms: None,
        success: true,
        error_type: None,
        streamed: false,
        cache_hit: false,
        attempts: 1,
        client_disconnected: false,
        degraded_from: None,
        quality_score: None,
        usage_source: Default::default(),
        user: None,
    }
}

/// acme: $1 a day for a week, then $9 in `hour()` (a spike); globex: $2 in `hour()` and
/// nothing before; initech: $0.50 two days later (outside a one-day range).
async fn seeded() -> MemoryStore {
    let store = MemoryStore::new();
    let mut events = vec![
        event("acme", hour() + Duration::minutes(5), dec!(9)),
        event("globex", hour() + Duration::minutes(6), dec!(1.5)),
        event("globex", hour() + Duration::minutes(66), dec!(0.5)),
        event("initech", hour() + Duration::days(2), dec!(0.5)),
    ];
    for day in 1..=7 {
        events.push(event("acme", hour() - Duration::days(day), dec!(1)));
    }
    for e in &events {
        store.record(e, &[]).await.unwrap();
    }
    store
}

#[tokio::test]
async fn top_ranks_tenants_by_cost_over_whole_hours_in_the_range() {
    let store = seeded().await;
    let out = ok(
        &store,
        &[
            "usage",
            "top",
            "--from",
            "2026-03-14T15",
            "--to",
            "2026-03-15",
            "--store",
            "memory",
        ],
    )
    .await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["RANK", "TENANT", "COST_USD", "REQUESTS", "ERRORS", "TOKENS"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["1", "acme", "9", "1", "0", "110"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["2", "globex", "2", "2", "0", "220"]
    );
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        out.stderr[0].starts_with("2 tenants active"),
        "{:?}",
        out.stderr
    );
    assert!(out.stderr[0].contains("9 activity-index pages and 2 rollup queries"));

    // --limit and --json; a range starting mid-hour skips that hour.
    let out = ok(
        &store,
        &[
            "usage",
            "top",
            "--from",
            "2026-03-14T15:30:00Z",
            "--to",
            "2026-03-14T17",
            "--limit",
            "1",
            "--json",
        ],
    )
    .await;
    let row: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(row["tenant"], "globex");
    assert_eq!(row["cost_usd"], "0.5");
}

#[tokio::test]
async fn bad_ranges_are_usage_errors() {
    let store = MemoryStore::new();
    for args in [
        ["usage", "top", "--from", "2026-03-15", "--to", "2026-03-14"],
        ["usage", "top", "--from", "2026-01-01", "--to", "2026-06-01"],
        [
            "usage",
            "anomalies",
            "--from",
            "2026-03-15",
            "--to",
            "2026-03-15",
        ],
    ] {
        let err = run(&store, &args).await.unwrap_err();
        assert!(
            err.downcast_ref::<UsageError>().is_some(),
            "{args:?}: {err}"
        );
    }
    assert!(TestCli::try_parse_from(["tollgate", "usage", "top", "--from", "yesterday"]).is_err());
}

#[test]
fn times_are_days_hours_or_rfc3339_in_utc() {
    assert_eq!(parse_time("2026-03-14T15").unwrap(), hour());
    assert_eq!(parse_time("2026-03-14T15:00").unwrap(), hour());
    assert_eq!(parse_time("2026-03-14T16:00:00+01:00").unwrap(), hour());
    assert_eq!(
        parse_time("2026-03-14").unwrap(),
        Utc.with_ymd_and_hms(2026, 3, 14, 0, 0, 0).unwrap()
    );
    assert!(parse_time("14/03/2026").unwrap_err().contains("RFC 3339"));
}

#[tokio::test]
async fn anomalies_run_records_once_and_usage_anomalies_lists_it() {
    let store = seeded().await;
    let dry = ok(
        &store,
        &[
            "anomalies",
            "run",
            "--hour",
            "2026-03-14T15",
            "--dry-run",
            "--store",
            "memory",
        ],
    )
    .await;
    assert!(dry.stdout.contains("(dry run)"), "{}", dry.stdout);
    assert!(dry.stdout.contains("anomalies found 1"), "{}", dry.stdout);
    assert!(
        store
            .anomalies(hour(), hour() + Duration::hours(1))
            .await
            .unwrap()
            .is_empty(),
        "a dry run records nothing"
    );

    let first = ok(
        &store,
        &[
            "anomalies",
            "run",
            "--hour",
            "2026-03-14T15",
            "--store",
            "memory",
        ],
    )
    .await;
    assert!(first.complete);
    assert!(
        first
            .stdout
            .contains("tenants checked 2, anomalies recorded 1, already recorded 0, no baseline 1"),
        "{}",
        first.stdout
    );
    let row = first
        .stdout
        .lines()
        .find(|l| l.starts_with("acme"))
        .unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["acme", "cost_spike", "9", "0.041667", "216"]
    );

    let again = ok(
        &store,
        &[
            "anomalies",
            "run",
            "--hour",
            "2026-03-14T15",
            "--store",
            "memory",
        ],
    )
    .await;
    assert!(
        again
            .stdout
            .contains("anomalies recorded 0, already recorded 1"),
        "{}",
        again.stdout
    );

    let listed = ok(
        &store,
        &[
            "usage",
            "anomalies",
            "--from",
            "2026-03-14",
            "--to",
            "2026-03-15",
            "--store",
            "memory",
        ],
    )
    .await;
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", listed.stdout);
    assert_eq!(
        lines[1].split_whitespace().take(6).collect::<Vec<_>>(),
        [
            "2026-03-14T15:00Z",
            "acme",
            "cost_spike",
            "9",
            "0.041667",
            "216"
        ]
    );

    let none = ok(
        &store,
        &[
            "usage",
            "anomalies",
            "--from",
            "2026-03-10",
            "--to",
            "2026-03-11",
        ],
    )
    .await;
    assert_eq!(none.stdout, "");
    assert_eq!(none.stderr, ["no anomalies recorded in this range"]);
}
