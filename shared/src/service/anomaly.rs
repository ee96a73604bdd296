//! The anomaly scheduler: every hour, the rules of `domain::anomaly` over every tenant active in
//! the last full hour.
//!
//! A run for hour `h`:
//!
//! 1. pages through the tenants active in `h` (the activity index, `page_size` at a time);
//! 2. for each, with at most `concurrency` in flight, reads its rollups for
//!    `[h − 7 days, h + 1 h)` (one `UsageQuery::rollups` call) and applies the cost rule;
//! 3. records each finding with `AnomalyStore::record_anomaly`, a conditional write: a retried
//!    or duplicated run gets `Duplicate` and neither logs an alert nor publishes one again;
//! 4. publishes the page's new anomalies through `AnomalyAlerts` (one call per page) and writes
//!    one structured log line per anomaly (tenant, kind, hour cost, baseline, ratio: figures
//!    only, never a prompt or a key).
//!
//! **Quality** is checked once per UTC day, on the run for its last hour (23:00): that run is the
//! first to see the whole day. It checks every tenant active at any hour of the day: those
//! active at 23:00 along with their cost check (the rollup window then starts 7 days before the
//! day, one read either way), then those active only earlier in the day (23 more index
//! listings). Idempotent like the cost check (the record's hour is the day's start). A missed
//! 23:00 run is caught up with `tollgate anomalies run --hour <day>T23`.
//!
//! One tenant's failed read or write does not stop the others: the run finishes, counts it in
//! `failed_tenants`, and the function reports the run as failed so it is retried (the
//! conditional writes make the retry alert only what is new). Alerts are at most once: an
//! anomaly is recorded before it is published, so if publishing fails the run reports it
//! (`alert_error`, and the log line is still written) but a retry will not publish it again.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use futures_util::stream::{self, StreamExt};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::domain::anomaly::{
    AnomalyKind, AnomalyRules, CostCheck, CostVerdict, QualityCheck, QualityVerdict, closes_day,
};
use crate::domain::ids::TenantId;
use crate::domain::usage::hour_start;
use crate::ports::Clock;
use crate::ports::alerts::AnomalyAlerts;
use crate::ports::store::{
    AnomalyRecord, AnomalyStore, Recorded, StoreError, UsageActivity, UsageQuery,
};

/// Errors listed one by one in a summary; the rest are only counted.
const LISTED_ERRORS: usize = 10;

/// How a run judges and paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// The cost-spike and quality-drop thresholds.
    pub rules: AnomalyRules,
    /// Tenants checked at once (rollup reads and anomaly writes in flight).
    pub concurrency: usize,
    /// Tenants per activity-index page.
    pub page_size: usize,
    /// Evaluate only: nothing is recorded or published (`tollgate anomalies run --dry-run`).
    pub dry_run: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            rules: AnomalyRules::default(),
            concurrency: 16,
            page_size: 1_000,
            dry_run: false,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// The hour checked for cost spikes.
    pub hour: DateTime<Utc>,
    /// The day checked for quality drops, on the run for a day's last hour.
    pub quality_day: Option<DateTime<Utc>>,
    /// Tenants active in the hour, each checked for a cost spike.
    pub tenants_checked: u64,
    /// Tenants checked for a quality drop (every tenant active during `quality_day`).
    pub quality_checked: u64,
    /// Anomalies recorded by this run (and published, unless `alert_error` says otherwise).
    pub anomalies_recorded: u64,
    /// Anomalies an earlier run had already recorded: neither recorded nor alerted again.
    pub duplicates: u64,
    /// Tenants with no baseline (no cost in the 7 days before): a new tenant, or free usage.
    pub no_baseline: u64,
    /// Hours at or above the spike ratio but under the absolute floor.
    pub below_floor: u64,
    /// Days with too few graded answers to judge quality.
    pub quality_too_few_graded: u64,
    /// Store reads made: activity-index pages plus rollup queries (one per tenant checked).
    pub store_reads: u64,
    /// Tenants whose check failed (a read or a write); the run should be retried.
    pub failed_tenants: u64,
    /// The first failures, as `tenant: error`.
    pub errors: Vec<String>,
    /// Publishing alerts failed (the anomalies are recorded; see the module docs).
    pub alert_error: Option<String>,
    /// The anomalies this run recorded (a dry run: would record), by tenant and kind.
    pub anomalies: Vec<AnomalyRecord>,
    /// The run was a dry run: `anomalies` were found but neither recorded nor published.
    pub dry_run: bool,
}

impl RunSummary {
    /// Whether the run should be reported as failed (and retried).
    pub fn failed(&self) -> bool {
        self.failed_tenants > 0 || self.alert_error.is_some()
    }
}

/// The scheduler over borrowed ports: build one per run (it is a handful of references).
pub struct AnomalyScheduler<'a> {
    /// The activity index: which tenants were active in an hour.
    pub activity: &'a dyn UsageActivity,
    /// The hourly rollups each check reads.
    pub usage: &'a dyn UsageQuery,
    /// Where findings are recorded, once each (conditional writes).
    pub anomalies: &'a dyn AnomalyStore,
    /// Where newly recorded anomalies are published.
    pub alerts: &'a dyn AnomalyAlerts,
    /// Stamps each record's `detected_at`.
    pub clock: &'a dyn Clock,
    /// Thresholds, concurrency, page size, dry run.
    pub options: SchedulerOptions,
}

/// The last full hour before `t`: what a run triggered at `t` checks. A run at 14:05 and its
/// retry at 14:20 both check 13:00-14:00.
pub fn last_full_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    hour_start(t) - Duration::hours(1)
}

/// What to check for one tenant.
#[derive(Debug, Clone, Copy)]
struct Checks {
    cost: bool,
    quality_day: Option<DateTime<Utc>>,
}

/// One tenant's findings.
#[derive(Default)]
struct TenantOutcome {
    reads: u64,
    no_baseline: bool,
    below_floor: bool,
    too_few_graded: bool,
    inserted: Vec<AnomalyRecord>,
    duplicates: u64,
    error: Option<String>,
}

impl AnomalyScheduler<'_> {
    /// Checks `hour` (truncated to its start) for every active tenant.
    pub async fn run(&self, hour: DateTime<Utc>) -> Result<RunSummary, StoreError> {
        let hour = hour_start(hour);
        let quality_day = closes_day(hour);
        let mut summary = RunSummary {
            hour,
            quality_day,
            dry_run: self.options.dry_run,
            ..RunSummary::default()
        };
        let mut seen: HashSet<TenantId> = HashSet::new();
        let both = Checks {
            cost: true,
            quality_day,
        };
        self.each_page(hour, &mut summary, |tenants| {
            if quality_day.is_some() {
                seen.extend(tenants.iter().cloned());
            }
            (tenants, both)
        })
        .await?;
        if let Some(day) = quality_day {
            let quality_only = Checks {
                cost: false,
                quality_day,
            };
            let mut earlier = day;
            while earlier < hour {
                self.each_page(earlier, &mut summary, |tenants| {
                    let new: Vec<TenantId> = tenants
                        .into_iter()
                        .filter(|t| seen.insert(t.clone()))
                        .collect();
                    (new, quality_only)
                })
                .await?;
                earlier += Duration::hours(1);
            }
        }
        summary
            .anomalies
            .sort_by(|a, b| (&a.tenant_id, &a.kind).cmp(&(&b.tenant_id, &b.kind)));
        Ok(summary)
    }

    /// Pages through the tenants active in `hour`; `select` picks which of a page to check and
    /// how. A failed index read fails the run (there is no tenant to blame it on).
    async fn each_page(
        &self,
        hour: DateTime<Utc>,
        summary: &mut RunSummary,
        mut select: impl FnMut(Vec<TenantId>) -> (Vec<TenantId>, Checks),
    ) -> Result<(), StoreError> {
        let mut cursor = None;
        loop {
            let page = self
                .activity
                .active_tenants(hour, cursor, self.options.page_size)
                .await?;
            summary.store_reads += 1;
            let (tenants, checks) = select(page.tenants);
            self.check_page(summary.hour, tenants, checks, summary)
                .await;
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }

    async fn check_page(
        &self,
        hour: DateTime<Utc>,
        tenants: Vec<TenantId>,
        checks: Checks,
        summary: &mut RunSummary,
    ) {
        let outcomes: Vec<(TenantId, TenantOutcome)> = stream::iter(tenants)
            .map(|tenant| async move {
                let outcome = self.check_tenant(&tenant, hour, checks).await;
                (tenant, outcome)
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        let mut fresh = Vec::new();
        for (tenant, outcome) in outcomes {
            summary.tenants_checked += u64::from(checks.cost);
            summary.quality_checked += u64::from(checks.quality_day.is_some());
            summary.store_reads += outcome.reads;
            summary.no_baseline += u64::from(outcome.no_baseline);
            summary.below_floor += u64::from(outcome.below_floor);
            summary.quality_too_few_graded += u64::from(outcome.too_few_graded);
            summary.duplicates += outcome.duplicates;
            summary.anomalies_recorded += outcome.inserted.len() as u64;
            if let Some(error) = outcome.error {
                summary.failed_tenants += 1;
                if summary.errors.len() < LISTED_ERRORS {
                    summary.errors.push(format!("{tenant}: {error}"));
                }
            }
            fresh.extend(outcome.inserted);
        }
        if !fresh.is_empty()
            && !self.options.dry_run
            && let Err(err) = self.alerts.publish(&fresh).await
        {
            let tenants: Vec<&str> = fresh.iter().map(|a| a.tenant_id.as_str()).collect();
            tracing::error!(
                error = %err,
                tenants = ?tenants,
                "anomalies recorded but their alerts could not be published"
            );
            summary.alert_error.get_or_insert_with(|| err.to_string());
        }
        summary.anomalies.extend(fresh);
    }

    async fn check_tenant(
        &self,
        tenant: &TenantId,
        hour: DateTime<Utc>,
        checks: Checks,
    ) -> TenantOutcome {
        let mut outcome = TenantOutcome::default();
        let (from, to) = match checks.quality_day {
            Some(_) => AnomalyRules::window(hour),
            None => (
                hour - Duration::hours(crate::domain::anomaly::BASELINE_HOURS),
                hour + Duration::hours(1),
            ),
        };
        outcome.reads += 1;
        let rollups = match self.usage.rollups(tenant, from, to).await {
            Ok(rollups) => rollups,
            Err(err) => {
                tracing::warn!(tenant = %tenant, error = %err, "anomaly check: reading rollups failed");
                outcome.error = Some(err.to_string());
                return outcome;
            }
        };
        let rules = &self.options.rules;
        let mut found = Vec::new();
        if checks.cost {
            let check = rules.check_cost(hour, &rollups);
            match check.verdict {
                CostVerdict::Spike => found.push(self.cost_record(tenant, hour, &check)),
                CostVerdict::NoBaseline => outcome.no_baseline = true,
                CostVerdict::BelowFloor => outcome.below_floor = true,
                CostVerdict::Normal => {}
            }
        }
        if let Some(day) = checks.quality_day {
            let check = rules.check_quality(day, &rollups);
            match check.verdict {
                QualityVerdict::Drop => found.push(self.quality_record(tenant, day, &check)),
                QualityVerdict::TooFewGraded => outcome.too_few_graded = true,
                QualityVerdict::Normal => {}
            }
        }
        for (record, ratio) in found {
            if self.options.dry_run {
                log_anomaly(&record, ratio, "anomaly detected (dry run: not recorded)");
                outcome.inserted.push(record);
                continue;
            }
            match self.anomalies.record_anomaly(&record).await {
                Ok(Recorded::Inserted) => {
                    log_anomaly(&record, ratio, "anomaly recorded");
                    outcome.inserted.push(record);
                }
                Ok(Recorded::Duplicate) => {
                    tracing::info!(
                        tenant = %record.tenant_id,
                        kind = %record.kind,
                        hour = %record.hour,
                        "anomaly already recorded by an earlier run: not alerting again"
                    );
                    outcome.duplicates += 1;
                }
                Err(err) => {
                    tracing::warn!(tenant = %tenant, error = %err, "anomaly check: recording failed");
                    outcome.error = Some(err.to_string());
                }
            }
        }
        outcome
    }

    fn cost_record(
        &self,
        tenant: &TenantId,
        hour: DateTime<Utc>,
        check: &CostCheck,
    ) -> (AnomalyRecord, Option<Decimal>) {
        let record = AnomalyRecord {
            tenant_id: tenant.clone(),
            hour,
            kind: AnomalyKind::CostSpike.as_str().to_owned(),
            observed: check.observed,
            baseline: check.baseline.round_dp(6),
            detected_at: self.clock.now(),
        };
        (record, check.ratio)
    }

    fn quality_record(
        &self,
        tenant: &TenantId,
        day: DateTime<Utc>,
        check: &QualityCheck,
    ) -> (AnomalyRecord, Option<Decimal>) {
        let observed = check.observed.unwrap_or_default();
        let baseline = check.baseline.unwrap_or_default();
        let ratio = observed.checked_div(baseline).map(|r| r.round_dp(2));
        let record = AnomalyRecord {
            tenant_id: tenant.clone(),
            hour: day,
            kind: AnomalyKind::QualityDrop.as_str().to_owned(),
            observed,
            baseline,
            detected_at: self.clock.now(),
        };
        (record, ratio)
    }
}

/// The one structured line per anomaly: figures only.
fn log_anomaly(record: &AnomalyRecord, ratio: Option<Decimal>, message: &'static str) {
    let ratio = ratio.map_or_else(|| "n/a".to_owned(), |r| r.to_string());
    let hour = record.hour.to_rfc3339();
    match AnomalyKind::parse(&record.kind) {
        Some(AnomalyKind::CostSpike) => tracing::warn!(
            tenant = %record.tenant_id,
            kind = %record.kind,
            hour = %hour,
            hour_cost_usd = %record.observed,
            baseline_usd = %record.baseline,
            ratio = %ratio,
            "{message}"
        ),
        _ => tracing::warn!(
            tenant = %record.tenant_id,
            kind = %record.kind,
            day = %hour,
            day_quality = %record.observed,
            baseline_quality = %record.baseline,
            ratio = %ratio,
            "{message}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_run_checks_the_last_full_hour_before_its_trigger() {
        let at = |h, m, s| Utc.with_ymd_and_hms(2026, 3, 14, h, m, s).unwrap();
        assert_eq!(last_full_hour(at(14, 5, 0)), at(13, 0, 0));
        assert_eq!(last_full_hour(at(14, 59, 59)), at(13, 0, 0));
        assert_eq!(last_full_hour(at(14, 0, 0)), at(13, 0, 0));
        let midnight = Utc.with_ymd_and_hms(2026, 3, 15, 0, 1, 0).unwrap();
        assert_eq!(last_full_hour(midnight), at(23, 0, 0));
    }
}
