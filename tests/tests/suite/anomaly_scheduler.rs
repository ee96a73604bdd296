//! The anomaly scheduler end to end: synthetic usage histories written through the real
//! `UsageSink::record` (so rollups and the activity index are the real ones), the function's
//! handler driven by its EventBridge fixture, the records and the alerts it leaves. Every
//! scenario runs on the embedded store and on DynamoDB in moto; on moto the alerts also go to
//! CloudWatch (the same emulator) through the real adapter, and the metric is read back.
//!
//! Also here: the activity index's pagination contract, on both stores.
//!
//! Without `TOLLGATE_TEST_DYNAMODB_ENDPOINT` the moto variants skip and say so, except in CI
//! (`CI=true`), where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// A skipped DynamoDB test says so on stderr.
#![allow(clippy::print_stderr)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anomaly_scheduler::{ScheduledEvent, SchedulerState, SchedulerStore, handle};
use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate::adapters::alerts::MemoryAlerts;
use tollgate::adapters::cloudwatch::CloudWatchAlerts;
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::adapters::memory::MemoryStore;
use tollgate::domain::ids::TenantId;
use tollgate::domain::usage::{TokenUsage, UsageEvent};
use tollgate::error::ErrorKind;
use tollgate::ports::alerts::{AlertError, AnomalyAlerts};
use tollgate::ports::clock::SystemClock;
use tollgate::ports::store::{
    ActivePage, AnomalyRecord, AnomalyStore, Recorded, StoreError, UsageActivity, UsageSink,
};
use tollgate::service::anomaly::{RunSummary, SchedulerOptions};

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

const FIXTURE: &str = include_str!("../../../functions/anomaly-scheduler/events/scheduled.json");

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

/// The hour the fixture's event (16:05) checks.
fn hour() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap()
}

fn fixture() -> ScheduledEvent {
    serde_json::from_str(FIXTURE).unwrap()
}

/// The fixture, delivered at another time (a later schedule tick).
fn event_at(time: DateTime<Utc>) -> ScheduledEvent {
    let mut raw: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    raw["time"] = serde_json::json!(time.to_rfc3339());
    serde_json::from_value(raw).unwrap()
}

fn event(tenant_id: &str, model: &str, at: DateTime<Utc>, cost: Decimal) -> UsageEvent {
    UsageEvent {
        usage: TokenUsage {
            prompt_tokens: 1_000,
            completion_tokens: 100,
            cached_tokens: 0,
            cache_write_tokens: 0,
        },
        ..tollgate_tests::fixtures::ok_event(tenant_id, model, at, cost)
    }
}

fn failed(tenant_id: &str, at: DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        success: false,
        error_type: Some(ErrorKind::UpstreamError),
        usage: TokenUsage::default(),
        ..event(tenant_id, "gpt-4o", at, Decimal::ZERO)
    }
}

fn graded(tenant_id: &str, at: DateTime<Utc>, score: Decimal) -> UsageEvent {
    UsageEvent {
        quality_score: Some(score),
        ..event(tenant_id, "gpt-4o-mini", at, dec!(0.01))
    }
}

async fn record_all<S: UsageSink + ?Sized>(store: &S, events: &[UsageEvent]) {
    for event in events {
        assert_eq!(store.record(event, &[]).await.unwrap(), Recorded::Inserted);
    }
}

/// One day's hour `h` (0-23) of the week before `hour()`, `days_back` days earlier.
fn before(days_back: i64, minutes: i64) -> DateTime<Utc> {
    hour() - Duration::days(days_back) - Duration::hours(3) + Duration::minutes(minutes)
}

/// The five synthetic histories of the issue, around `hour()`:
///
/// - `spiky`: $2.40 a day for 7 days (a baseline of $0.10 an hour), then $5 in the hour: 50×.
/// - `growing`: every hour of the week, cost growing linearly from $1 to $10, then $10.05.
/// - `newbie`: $20 in the hour and nothing before: no baseline.
/// - `freebie`: a week of failed (free) calls, then $10: a zero baseline.
/// - `tiny`: $0.024 a day ($0.001 an hour), then $0.004: 4× but under the $0.50 floor.
fn histories() -> Vec<UsageEvent> {
    let mut all = Vec::new();
    for day in 0..7 {
        all.push(event("spiky", "gpt-4o", before(day, 0), dec!(2.40)));
        all.push(failed("freebie", before(day, 5)));
        all.push(event("tiny", "gpt-4o-mini", before(day, 10), dec!(0.024)));
    }
    all.push(event(
        "spiky",
        "gpt-4o",
        hour() + Duration::minutes(10),
        dec!(4),
    ));
    all.push(event(
        "spiky",
        "claude-haiku",
        hour() + Duration::minutes(11),
        dec!(1),
    ));
    for i in 1..=168_i64 {
        let cost = dec!(10) - Decimal::from(i - 1) * dec!(9) / dec!(167);
        let at = hour() - Duration::hours(i) + Duration::minutes(20);
        all.push(event("growing", "gpt-4o", at, cost.round_dp(8)));
    }
    all.push(event(
        "growing",
        "gpt-4o",
        hour() + Duration::minutes(20),
        dec!(10.05),
    ));
    all.push(event(
        "newbie",
        "gpt-4o",
        hour() + Duration::minutes(30),
        dec!(20),
    ));
    all.push(event(
        "freebie",
        "gpt-4o",
        hour() + Duration::minutes(40),
        dec!(10),
    ));
    all.push(event(
        "tiny",
        "gpt-4o-mini",
        hour() + Duration::minutes(50),
        dec!(0.004),
    ));
    // Outside the checked hour: the next hour's big spend is not this run's business.
    all.push(event(
        "newbie",
        "gpt-4o",
        hour() + Duration::minutes(70),
        dec!(900),
    ));
    all
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// Keeps every published anomaly and, on moto, also publishes it to CloudWatch through the
/// real adapter.
#[derive(Default)]
struct Alerts {
    kept: MemoryAlerts,
    cloudwatch: Option<CloudWatchAlerts>,
}

#[async_trait]
impl AnomalyAlerts for Alerts {
    async fn publish(&self, anomalies: &[AnomalyRecord]) -> Result<(), AlertError> {
        if let Some(cloudwatch) = &self.cloudwatch {
            cloudwatch.publish(anomalies).await?;
        }
        self.kept.publish(anomalies).await
    }
}

trait TestStore: SchedulerStore + UsageSink {}
impl<S: SchedulerStore + UsageSink> TestStore for S {}

struct Backend {
    store: Arc<dyn TestStore>,
    alerts: Arc<Alerts>,
    /// The moto endpoint and the deployment (table prefix) the metrics carry.
    cloudwatch: Option<(String, String)>,
}

impl tollgate_tests::contracts::Backend for Backend {}

impl Backend {
    fn state(&self) -> SchedulerState {
        SchedulerState {
            store: self.store.clone(),
            alerts: self.alerts.clone(),
            clock: Arc::new(SystemClock),
            options: SchedulerOptions {
                // Small pages, so the runs here cross page boundaries.
                page_size: 2,
                concurrency: 4,
                ..SchedulerOptions::default()
            },
            budget_bus: Arc::new(tollgate::adapters::alerts::MemoryBudgetBus::default()),
            sweep_after: std::time::Duration::ZERO,
        }
    }
}

async fn memory() -> Option<Backend> {
    Some(Backend {
        store: Arc::new(MemoryStore::new()),
        alerts: Arc::new(Alerts::default()),
        cloudwatch: None,
    })
}

fn dynamodb_endpoint() -> Option<String> {
    tollgate_tests::moto::endpoint("anomaly scheduler")
}

fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!(
        "an{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn dynamodb_store() -> Option<(DynamoStore, String, String)> {
    let endpoint = dynamodb_endpoint()?;
    let prefix = unique_prefix();
    let store = DynamoStore::emulator(&endpoint, TableNames::with_prefix(&prefix));
    store.create_tables().await.expect("tables created in moto");
    Some((store, endpoint, prefix))
}

async fn dynamodb() -> Option<Backend> {
    let (store, endpoint, prefix) = dynamodb_store().await?;
    Some(Backend {
        store: Arc::new(store),
        alerts: Arc::new(Alerts {
            kept: MemoryAlerts::default(),
            cloudwatch: Some(CloudWatchAlerts::emulator(&endpoint, prefix.clone())),
        }),
        cloudwatch: Some((endpoint, prefix)),
    })
}

fn cloudwatch_client(endpoint: &str) -> aws_sdk_cloudwatch::Client {
    use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .http_client(tollgate::adapters::tls::aws_http_client())
        .build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}

/// The sum of `metric` for `deployment` and `tenant` in moto's CloudWatch over the last hour
/// (GetMetricStatistics).
async fn tenant_sum(endpoint: &str, deployment: &str, metric: &str, tenant: &str) -> f64 {
    use aws_sdk_cloudwatch::primitives::DateTime as AwsDateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Statistic};
    let now = Utc::now();
    let stats = cloudwatch_client(endpoint)
        .get_metric_statistics()
        .namespace("Tollgate")
        .metric_name(metric)
        .dimensions(
            Dimension::builder()
                .name("Deployment")
                .value(deployment)
                .build(),
        )
        .dimensions(Dimension::builder().name("TenantId").value(tenant).build())
        .start_time(AwsDateTime::from_secs(
            (now - Duration::hours(1)).timestamp(),
        ))
        .end_time(AwsDateTime::from_secs(
            (now + Duration::minutes(5)).timestamp(),
        ))
        .period(3600)
        .statistics(Statistic::Sum)
        .send()
        .await
        .expect("GetMetricStatistics");
    stats.datapoints().iter().filter_map(|d| d.sum()).sum()
}

/// The dimension sets ListMetrics knows for `metric` in `deployment`, as `Name=Value` lists.
async fn listed(endpoint: &str, deployment: &str, metric: &str) -> BTreeSet<Vec<String>> {
    use aws_sdk_cloudwatch::types::DimensionFilter;
    let out = cloudwatch_client(endpoint)
        .list_metrics()
        .namespace("Tollgate")
        .metric_name(metric)
        .dimensions(
            DimensionFilter::builder()
                .name("Deployment")
                .value(deployment)
                .build(),
        )
        .send()
        .await
        .expect("ListMetrics");
    out.metrics()
        .iter()
        .map(|m| {
            m.dimensions()
                .iter()
                .map(|d| format!("{}={}", d.name().unwrap_or(""), d.value().unwrap_or("")))
                .collect()
        })
        .collect()
}

/// The metric the alarm watches exists with exactly `[Deployment]`, and each tenant's with
/// `[Deployment, TenantId]`. (moto matches a GetMetricStatistics dimension filter as a subset,
/// so the `[Deployment]`-only sum is not checked there: it would count the per-tenant points
/// too, where CloudWatch matches the set exactly.)
async fn assert_alarm_metric(endpoint: &str, deployment: &str, metric: &str, tenants: &[&str]) {
    let sets = listed(endpoint, deployment, metric).await;
    let mut expected = BTreeSet::from([vec![format!("Deployment={deployment}")]]);
    for tenant in tenants {
        expected.insert(vec![
            format!("Deployment={deployment}"),
            format!("TenantId={tenant}"),
        ]);
    }
    assert_eq!(sets, expected, "{metric}");
}

// ---------------------------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------------------------

mod scenario {
    use super::*;

    /// The synthetic histories, checked by one scheduled run, then the same event
    /// delivered again.
    pub async fn histories_then_a_duplicated_event(backend: &Backend) {
        record_all(backend.store.as_ref(), &histories()).await;
        let state = backend.state();

        let first = handle(&state, fixture()).await.unwrap();
        assert_eq!(first.hour, hour());
        assert_eq!(first.quality_day, None, "15:00 does not close a day");
        assert_eq!(first.tenants_checked, 5, "{first:?}");
        assert_eq!(first.anomalies_recorded, 1, "{first:?}");
        assert_eq!(first.duplicates, 0);
        // newbie (nothing before) and freebie (a week of free calls).
        assert_eq!(first.no_baseline, 2, "{first:?}");
        // tiny: 4× its baseline, under the floor.
        assert_eq!(first.below_floor, 1, "{first:?}");
        assert_eq!(first.failed_tenants, 0, "{:?}", first.errors);
        // Three index pages of at most 2 tenants, one rollup query per tenant.
        assert_eq!(first.store_reads, 3 + 5);

        let spike = &first.anomalies[0];
        assert_eq!(spike.tenant_id, tenant("spiky"));
        assert_eq!(spike.kind, "cost_spike");
        assert_eq!(spike.hour, hour());
        assert_eq!(spike.observed, dec!(5), "both models of the hour count");
        assert_eq!(spike.baseline, dec!(0.1));
        assert_eq!(backend.alerts.kept.published(), first.anomalies);

        let recorded = backend
            .store
            .anomalies(hour(), hour() + Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(recorded, first.anomalies);

        // EventBridge delivers the same event again (or Lambda retries it): the same hour is
        // checked, nothing new is recorded, nothing is alerted twice.
        let second = handle(&state, fixture()).await.unwrap();
        assert_eq!(second.hour, hour());
        assert_eq!(second.tenants_checked, 5);
        assert_eq!(second.anomalies_recorded, 0);
        assert_eq!(second.duplicates, 1);
        assert!(second.anomalies.is_empty());
        assert_eq!(backend.alerts.kept.published().len(), 1, "one alert in all");
        let recorded = backend
            .store
            .anomalies(hour() - Duration::days(1), hour() + Duration::days(1))
            .await
            .unwrap();
        assert_eq!(recorded.len(), 1);

        // A later tick with the event's own retry: a different hour, its own check.
        let later = handle(&state, event_at(hour() + Duration::minutes(125)))
            .await
            .unwrap();
        assert_eq!(later.hour, hour() + Duration::hours(1));
        assert_eq!(later.tenants_checked, 1, "only newbie was active at 16:00");
        assert_eq!(later.no_baseline, 0, "newbie has a baseline now");
        assert_eq!(later.anomalies_recorded, 1, "$900 against $20/168 an hour");

        if let Some((endpoint, deployment)) = &backend.cloudwatch {
            assert_alarm_metric(endpoint, deployment, "CostAnomaly", &["newbie", "spiky"]).await;
            // One data point per recorded anomaly, none for the duplicate.
            for tenant in ["spiky", "newbie"] {
                let sum = tenant_sum(endpoint, deployment, "CostAnomaly", tenant).await;
                assert_eq!(sum, 1.0, "{tenant}");
            }
        }
    }

    /// The run for 23:00 checks the day's quality for every tenant active that day, including
    /// one that was not active in the last hour.
    pub async fn a_quality_drop_is_found_on_the_day_closing_run(backend: &Backend) {
        let day = Utc.with_ymd_and_hms(2026, 3, 14, 0, 0, 0).unwrap();
        let mut all = Vec::new();
        for d in 1..=7 {
            for h in [8, 13, 18] {
                let at = day - Duration::days(d) + Duration::hours(h);
                all.push(graded("dropping", at, dec!(0.9)));
                all.push(graded("steady", at, dec!(0.9)));
            }
        }
        for i in 0..20 {
            // dropping: graded all day long, but never in the last hour.
            let at = day + Duration::hours(i) + Duration::minutes(15);
            all.push(graded("dropping", at, dec!(0.5)));
            let at = day + Duration::hours(4 + i) + Duration::minutes(15);
            all.push(graded("steady", at, dec!(0.85)));
        }
        record_all(backend.store.as_ref(), &all).await;
        let state = backend.state();
        let run = handle(
            &state,
            event_at(day + Duration::hours(24) + Duration::minutes(5)),
        )
        .await
        .unwrap();
        assert_eq!(run.hour, day + Duration::hours(23));
        assert_eq!(run.quality_day, Some(day));
        assert_eq!(run.tenants_checked, 1, "only steady was active at 23:00");
        assert_eq!(run.quality_checked, 2, "{run:?}");
        assert_eq!(run.anomalies_recorded, 1, "{run:?}");
        let drop = &run.anomalies[0];
        assert_eq!(drop.tenant_id, tenant("dropping"));
        assert_eq!(drop.kind, "quality_drop");
        assert_eq!(drop.hour, day, "a quality anomaly is about the day");
        assert_eq!(drop.observed, dec!(0.5));
        assert_eq!(drop.baseline, dec!(0.9));
        // 23 more index listings for the day's other hours.
        assert_eq!(run.store_reads, 1 + 23 + 2);

        let again = handle(
            &state,
            event_at(day + Duration::hours(24) + Duration::minutes(20)),
        )
        .await
        .unwrap();
        assert_eq!(again.anomalies_recorded, 0);
        assert_eq!(again.duplicates, 1);
        assert_eq!(backend.alerts.kept.published().len(), 1);
    }

    /// Pages of the activity index: every active tenant once, in order, whatever its models.
    /// Active tenants are paged once each, in order.
    pub async fn active_tenants_in_order(backend: &Backend) {
        active_tenants_page_through_an_hour(backend.store.as_ref()).await;
    }

    pub async fn active_tenants_page_through_an_hour<S: UsageSink + UsageActivity + ?Sized>(
        store: &S,
    ) {
        let mut all = Vec::new();
        let mut expected = BTreeSet::new();
        // 40 tenants × 3 models: 120 index entries, more than one DynamoDB Query reads for a
        // small page.
        for t in 0..40 {
            let id = format!("tenant-{t:02}");
            for (m, model) in ["gpt-4o", "gpt-4o-mini", "claude-haiku"].iter().enumerate() {
                let at = hour() + Duration::minutes((t + m * 7) as i64 % 60);
                all.push(event(&id, model, at, dec!(0.01)));
            }
            expected.insert(tenant(&id));
        }
        // Active in other hours only.
        all.push(event(
            "earlier",
            "gpt-4o",
            hour() - Duration::seconds(1),
            dec!(1),
        ));
        all.push(event(
            "later",
            "gpt-4o",
            hour() + Duration::hours(1),
            dec!(1),
        ));
        // A tenant id that is a prefix of another: `tenant-0` sorts right before `tenant-00`.
        all.push(event("tenant-0", "m#with#hashes", hour(), dec!(1)));
        expected.insert(tenant("tenant-0"));
        record_all(store, &all).await;

        for limit in [1, 7, 41, 50, 1_000] {
            let mut seen = Vec::new();
            let mut cursor = None;
            let mut pages = 0;
            loop {
                // Any instant inside the hour names it.
                let page = store
                    .active_tenants(hour() + Duration::minutes(59), cursor, limit)
                    .await
                    .unwrap();
                pages += 1;
                assert!(page.tenants.len() <= limit);
                assert!(!page.tenants.is_empty(), "no empty page (limit {limit})");
                seen.extend(page.tenants);
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let sorted: Vec<TenantId> = expected.iter().cloned().collect();
            assert_eq!(seen, sorted, "limit {limit}: each tenant once, in order");
            assert_eq!(pages, expected.len().div_ceil(limit), "limit {limit}");
        }

        let quiet = store
            .active_tenants(hour() - Duration::days(30), None, 10)
            .await
            .unwrap();
        assert_eq!(quiet, ActivePage::default());
        let bogus = store
            .active_tenants(hour(), Some("not-a-cursor".into()), 10)
            .await;
        assert!(matches!(bogus, Err(StoreError::NotFound(_))), "{bogus:?}");
        // A cursor past the last tenant is an empty last page.
        let past = ActivePage::cursor_after(&tenant("zzz"));
        let end = store.active_tenants(hour(), Some(past), 10).await.unwrap();
        assert_eq!(end, ActivePage::default());
    }
}

tollgate_tests::contract_suite! {
    backends: [memory, dynamodb],
    cases: {
        spike_growth_new_zero_tiny_and_a_duplicated_event_alert_exactly_once => scenario::histories_then_a_duplicated_event,
        a_days_quality_drop_is_recorded_once_by_its_last_hours_run => scenario::a_quality_drop_is_found_on_the_day_closing_run,
        active_tenants_are_paged_once_each_in_order => scenario::active_tenants_in_order,
    },
}

// ---------------------------------------------------------------------------------------------
// The function's edges
// ---------------------------------------------------------------------------------------------

#[test]
fn the_fixture_is_an_eventbridge_scheduled_event_for_the_hour_before() {
    let event = fixture();
    assert_eq!(event.detail_type, "Scheduled Event");
    assert!(!event.id.is_empty());
    assert_eq!(
        tollgate::service::anomaly::last_full_hour(event.time),
        hour()
    );
}

#[tokio::test]
async fn a_run_with_no_active_tenant_checks_nobody_and_succeeds() {
    let backend = memory().await.unwrap();
    let summary: RunSummary = handle(&backend.state(), fixture()).await.unwrap();
    assert_eq!(summary.tenants_checked, 0);
    assert_eq!(summary.store_reads, 1);
    assert!(backend.alerts.kept.published().is_empty());
}

/// The alert's structured log line, in the functions' own JSON format
/// (`telemetry::json_layer`): one line for the spike with the tenant, the hour, the hour's
/// cost, the baseline and the ratio as top-level fields, and none for the duplicated event. The
/// subscriber is scoped to this thread, on a current-thread runtime, so other tests' logs never
/// reach it.
#[test]
fn a_recorded_spike_logs_one_structured_line_with_the_hours_cost_baseline_and_ratio() {
    use tracing_subscriber::layer::SubscriberExt;

    tollgate_tests::capture::pin_interest();
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tollgate::telemetry::json_layer(move || writer.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (first, second) = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let backend = memory().await.unwrap();
            record_all(backend.store.as_ref(), &histories()).await;
            let state = backend.state();
            let first = handle(&state, fixture()).await.unwrap();
            let second = handle(&state, fixture()).await.unwrap();
            (first, second)
        })
    });
    assert_eq!((first.anomalies_recorded, second.duplicates), (1, 1));

    let lines = logs.lines();
    let with_message = |message: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["message"] == message).collect()
    };
    let alerts = with_message("anomaly recorded");
    assert_eq!(alerts.len(), 1, "one line for one anomaly: {lines:?}");
    let line = alerts[0];
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["tenant"], "spiky");
    assert_eq!(line["kind"], "cost_spike");
    assert_eq!(line["hour"], hour().to_rfc3339());
    // $4 + $1 in the hour against $2.40 a day ($0.10 an hour): 50x. The figures are exact
    // decimal strings, the record's own.
    let figure = |field: &str| -> Decimal {
        let text = line[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {line}"));
        text.parse().unwrap()
    };
    assert_eq!(figure("hour_cost_usd"), dec!(5));
    assert_eq!(figure("baseline_usd"), dec!(0.1));
    assert_eq!(figure("ratio"), dec!(50));
    let spike = &first.anomalies[0];
    assert_eq!(line["hour_cost_usd"], spike.observed.to_string());
    assert_eq!(line["baseline_usd"], spike.baseline.to_string());
    // The duplicated event says so instead, once, and does not repeat the alert line.
    let repeats = with_message("anomaly already recorded by an earlier run: not alerting again");
    assert_eq!(repeats.len(), 1, "{lines:?}");
    assert_eq!(repeats[0]["tenant"], "spiky");
}

/// Alerts that always fail: the run records the anomaly, reports the failure (so Lambda
/// retries), and the retry neither records nor publishes it again (at most once).
struct Broken;

#[async_trait]
impl AnomalyAlerts for Broken {
    async fn publish(&self, _: &[AnomalyRecord]) -> Result<(), AlertError> {
        Err(AlertError::Unavailable("CloudWatch is down".into()))
    }
}

#[tokio::test]
async fn failed_alert_publishing_fails_the_run_but_keeps_the_record() {
    let store = Arc::new(MemoryStore::new());
    record_all(store.as_ref(), &histories()).await;
    let state = SchedulerState {
        store: store.clone(),
        alerts: Arc::new(Broken),
        clock: Arc::new(SystemClock),
        options: SchedulerOptions::default(),
        budget_bus: Arc::new(tollgate::adapters::alerts::MemoryBudgetBus::default()),
        sweep_after: std::time::Duration::ZERO,
    };
    let err = handle(&state, fixture()).await.unwrap_err();
    assert!(err.to_string().contains("CloudWatch is down"), "{err}");
    let diagnostic: anomaly_scheduler::Diagnostic = err.into();
    assert_eq!(diagnostic.error_type, "AnomalyRunIncomplete");
    let recorded = store
        .anomalies(hour(), hour() + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    let retry = handle(&state, fixture()).await.unwrap();
    assert_eq!(retry.duplicates, 1);
}

#[tokio::test]
async fn cloudwatch_publish_is_visible_to_list_metrics_and_statistics_on_moto() {
    let Some(endpoint) = dynamodb_endpoint() else {
        return;
    };
    let deployment = unique_prefix();
    let alerts = CloudWatchAlerts::emulator(&endpoint, deployment.clone());
    let anomaly = |tenant_id: &str, kind: &str| AnomalyRecord {
        tenant_id: tenant(tenant_id),
        hour: hour(),
        kind: kind.into(),
        observed: dec!(12),
        baseline: dec!(1),
        detected_at: Utc::now(),
    };
    alerts
        .publish(&[
            anomaly("acme", "cost_spike"),
            anomaly("globex", "cost_spike"),
            anomaly("acme", "quality_drop"),
        ])
        .await
        .unwrap();
    alerts.publish(&[]).await.unwrap();
    assert_alarm_metric(&endpoint, &deployment, "CostAnomaly", &["acme", "globex"]).await;
    assert_alarm_metric(&endpoint, &deployment, "QualityAnomaly", &["acme"]).await;
    for (metric, tenant, expected) in [
        ("CostAnomaly", "acme", 1.0),
        ("CostAnomaly", "globex", 1.0),
        ("QualityAnomaly", "acme", 1.0),
        ("QualityAnomaly", "globex", 0.0),
    ] {
        let sum = tenant_sum(&endpoint, &deployment, metric, tenant).await;
        assert_eq!(sum, expected, "{metric} {tenant}");
    }
}
use tollgate_tests::capture::Captured;
