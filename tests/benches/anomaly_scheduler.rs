#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! One anomaly-scheduler run over 10,000 tenants: wall time, store reads and (on DynamoDB) read
//! units, on the embedded store and, when `TOLLGATE_TEST_DYNAMODB_ENDPOINT` (or
//! `TOLLGATE_BENCH_DYNAMODB_ENDPOINT`) names one, on DynamoDB in moto.
//!
//! Every tenant is active in the checked hour; a subset (`TOLLGATE_BENCH_HISTORY_TENANTS`,
//! 1,000 by default) has a full week of hourly history, 1 % of those spike. The embedded store
//! is seeded through `UsageSink::record` (one event per rollup); DynamoDB through
//! `DynamoStore::seed_rollups` (BatchWriteItem, the test-only `seed-rollups` feature), since
//! single-threaded moto takes one transaction per event at a few hundred a second.
//!
//! moto answers a Query by walking every item of the table in Python and deep-copying each
//! result (about 80 ms for a one-item Query on a 5,000-item table, 0.85 s for 169 rollups), so
//! 10,000 tenants with a week of history would take hours there: the DynamoDB run takes its
//! own, smaller shape (`TOLLGATE_BENCH_DYNAMODB_TENANTS`, `..._HISTORY_TENANTS`), and its
//! requests and read units scale linearly with the tenants (one Query each, plus one index
//! page per 1,000). Its wall time says nothing about DynamoDB's.
//!
//! By hand only, not in `infra/test.sh`:
//! `TOLLGATE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:PORT cargo bench -p tollgate-tests --bench anomaly_scheduler`
//! (`TOLLGATE_BENCH_TENANTS`, `TOLLGATE_BENCH_HISTORY_TENANTS` and
//! `TOLLGATE_BENCH_CONCURRENCY` change the embedded shape).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use tollgate::adapters::alerts::MemoryAlerts;
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::adapters::memory::MemoryStore;
use tollgate::domain::ids::{RequestId, TenantId};
use tollgate::domain::tenant::ProviderKind;
use tollgate::domain::usage::{TokenUsage, UsageEvent, UsageRollup};
use tollgate::ports::clock::SystemClock;
use tollgate::ports::store::{AnomalyStore, UsageActivity, UsageQuery, UsageSink};
use tollgate::service::anomaly::{AnomalyScheduler, RunSummary, SchedulerOptions};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Shape {
    tenants: usize,
    history: usize,
    concurrency: usize,
}

fn hour() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap()
}

fn tenant(i: usize) -> TenantId {
    TenantId::parse(format!("tenant-{i:05}")).unwrap()
}

/// Tenant `i`'s cost in an hour of its history, and in the checked hour.
fn costs(i: usize, shape: &Shape) -> (Decimal, Decimal) {
    let base = Decimal::new(10 + (i % 90) as i64, 2); // $0.10 - $0.99 an hour
    let spikes = i < shape.history && i % 100 == 7;
    let now = if spikes {
        base * Decimal::from(5)
    } else {
        base * Decimal::new(11, 1)
    };
    (base, now)
}

fn rollup(i: usize, at: DateTime<Utc>, cost: Decimal) -> UsageRollup {
    let mut r = UsageRollup::empty(tenant(i), at, "gpt-4o-mini".into());
    r.requests = 10;
    r.prompt_tokens = 12_000;
    r.completion_tokens = 2_400;
    r.cost_usd = cost;
    r.latency_histogram[30] = 7;
    r.latency_histogram[31] = 3;
    r
}

fn rollups(shape: &Shape) -> Vec<UsageRollup> {
    let mut all = Vec::new();
    for i in 0..shape.tenants {
        let (base, now) = costs(i, shape);
        all.push(rollup(i, hour(), now));
        if i < shape.history {
            for h in 1..=168 {
                all.push(rollup(i, hour() - Duration::hours(h), base));
            }
        }
    }
    all
}

/// One event standing for a rollup (the embedded store is seeded through the real path).
fn event_for(r: &UsageRollup) -> UsageEvent {
    UsageEvent {
        request_id: RequestId::generate(),
        tenant_id: r.tenant_id.clone(),
        created_at: r.hour + Duration::minutes(7),
        model_requested: r.model.clone(),
        model_served: r.model.clone(),
        provider: ProviderKind::Openai,
        usage: TokenUsage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cached_tokens: 0,
            cache_write_tokens: 0,
        },
        cost_usd: r.cost_usd,
        latency_ms: 300,
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

async fn run<S>(store: &S, shape: &Shape) -> (RunSummary, f64)
where
    S: UsageActivity + UsageQuery + AnomalyStore,
{
    let alerts = MemoryAlerts::default();
    let scheduler = AnomalyScheduler {
        activity: store,
        usage: store,
        anomalies: store,
        alerts: &alerts,
        clock: &SystemClock,
        options: SchedulerOptions {
            concurrency: shape.concurrency,
            ..SchedulerOptions::default()
        },
    };
    let started = Instant::now();
    let summary = scheduler.run(hour()).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(summary.tenants_checked as usize, shape.tenants);
    assert_eq!(summary.failed_tenants, 0, "{:?}", summary.errors);
    assert_eq!(alerts.published().len() as u64, summary.anomalies_recorded);
    (summary, secs)
}

fn report(label: &str, summary: &RunSummary, secs: f64) {
    println!(
        "{label}: one run over {} tenants in {secs:.2} s ({:.0} tenants/s): {} anomalies \
         recorded, {} no baseline, {} store reads ({} index pages + {} rollup queries)",
        summary.tenants_checked,
        summary.tenants_checked as f64 / secs,
        summary.anomalies_recorded,
        summary.no_baseline,
        summary.store_reads,
        summary.store_reads - summary.tenants_checked,
        summary.tenants_checked,
    );
}

#[tokio::main]
async fn main() {
    let shape = Shape {
        tenants: env_usize("TOLLGATE_BENCH_TENANTS", 10_000),
        history: env_usize("TOLLGATE_BENCH_HISTORY_TENANTS", 1_000),
        concurrency: env_usize("TOLLGATE_BENCH_CONCURRENCY", 16),
    };
    println!(
        "machine: {} cores; {} tenants active in the hour, {} with 7 days of hourly history, \
         concurrency {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        shape.tenants,
        shape.history,
        shape.concurrency
    );
    let all = rollups(&shape);

    let memory = Arc::new(MemoryStore::new());
    let started = Instant::now();
    for r in &all {
        memory.record(&event_for(r), &[]).await.unwrap();
    }
    println!(
        "embedded: seeded {} rollups in {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    let (summary, secs) = run(memory.as_ref(), &shape).await;
    report("embedded", &summary, secs);
    let (again, secs) = run(memory.as_ref(), &shape).await;
    println!(
        "embedded: the same hour again in {secs:.2} s: {} recorded, {} duplicates",
        again.anomalies_recorded, again.duplicates
    );

    let endpoint = std::env::var("TOLLGATE_BENCH_DYNAMODB_ENDPOINT")
        .or_else(|_| std::env::var("TOLLGATE_TEST_DYNAMODB_ENDPOINT"))
        .ok()
        .filter(|e| !e.is_empty());
    let Some(endpoint) = endpoint else {
        println!("dynamodb: skipped (set TOLLGATE_TEST_DYNAMODB_ENDPOINT to a moto endpoint)");
        return;
    };
    let shape = Shape {
        tenants: env_usize("TOLLGATE_BENCH_DYNAMODB_TENANTS", 2_000),
        history: env_usize("TOLLGATE_BENCH_DYNAMODB_HISTORY_TENANTS", 100),
        concurrency: shape.concurrency,
    };
    let all = rollups(&shape);
    println!(
        "dynamodb (moto): {} tenants active in the hour, {} with 7 days of hourly history",
        shape.tenants, shape.history
    );
    let prefix = format!("bench-anomaly-{}", std::process::id());
    let store = DynamoStore::emulator(&endpoint, TableNames::with_prefix(&prefix));
    store.create_tables().await.unwrap();
    let started = Instant::now();
    store.seed_rollups(&all).await.unwrap();
    println!(
        "dynamodb (moto): seeded {} rollups in {:.1} s ({} BatchWriteItem)",
        all.len(),
        started.elapsed().as_secs_f64(),
        store.round_trips()
    );
    let (trips, units) = (store.round_trips(), store.read_units());
    let (summary, secs) = run(&store, &shape).await;
    report("dynamodb (moto)", &summary, secs);
    let requests = store.round_trips() - trips;
    let read_units = store.read_units() - units;
    println!(
        "dynamodb (moto): {requests} requests ({} Query, {} PutItem); {read_units:.0} read \
         units estimated from item sizes ({:.2} per tenant): {:.0} for the activity index \
         (eventually consistent), the rest for rollups (strongly consistent)",
        requests - summary.anomalies_recorded,
        summary.anomalies_recorded,
        read_units / summary.tenants_checked as f64,
        index_units(&store).await,
    );
}

/// The read units of listing the hour's tenants alone.
async fn index_units(store: &DynamoStore) -> f64 {
    let before = store.read_units();
    let mut cursor = None;
    loop {
        let page = store.active_tenants(hour(), cursor, 1_000).await.unwrap();
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    store.read_units() - before
}
