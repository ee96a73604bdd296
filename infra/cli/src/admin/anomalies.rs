//! `tollgate anomalies run`: the anomaly scheduler by hand, for one hour: to catch up an hour
//! the schedule missed, or to see what the rules find (`--dry-run`). The same service, rules
//! and conditional writes as the `anomaly-scheduler` function, so an hour already checked
//! records and alerts nothing twice.

use chrono::{DateTime, Utc};
use tollgate::config::anomaly::AnomalySettings;
use tollgate::ports::alerts::AnomalyAlerts;
use tollgate::ports::clock::SystemClock;
use tollgate::service::anomaly::{AnomalyScheduler, RunSummary, last_full_hour};

use super::usage::{parse_time, ratio};
use super::{AdminStore, Output, StoreArgs, table};

#[derive(clap::Args, Debug)]
pub struct AnomaliesArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: AnomaliesCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum AnomaliesCommand {
    /// Check one hour for cost spikes (and, for a day's 23:00 hour, the day for quality drops),
    /// record what is found and publish the alerts to CloudWatch (namespace `Tollgate`,
    /// dimension `Deployment` = the table prefix), exactly as the scheduled function does.
    /// Thresholds come from the same TOLLGATE_ANOMALY_* variables.
    #[command(after_help = "Examples:\n  \
        tollgate anomalies run                       # the last full hour\n  \
        tollgate anomalies run --hour 2026-03-14T23  # that hour, and the day for quality\n  \
        tollgate anomalies run --hour 2026-03-14T15 --dry-run")]
    Run {
        /// The hour to check (its start, UTC: `2026-03-14T15` or RFC 3339); defaults to the
        /// last full hour.
        #[arg(long, value_name = "HOUR", value_parser = parse_time)]
        hour: Option<DateTime<Utc>>,
        /// Evaluate only: record nothing, publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs the scheduler for the hour the command names, against `store` and `alerts`.
pub async fn execute(
    store: &dyn AdminStore,
    alerts: &dyn AnomalyAlerts,
    settings: &AnomalySettings,
    command: AnomaliesCommand,
) -> anyhow::Result<Output> {
    let AnomaliesCommand::Run { hour, dry_run } = command;
    let hour = hour.unwrap_or_else(|| last_full_hour(Utc::now()));
    let mut options = settings.options();
    options.dry_run = dry_run;
    let scheduler = AnomalyScheduler {
        activity: store,
        usage: store,
        anomalies: store,
        alerts,
        clock: &SystemClock,
        options,
    };
    let summary = scheduler.run(hour).await?;
    Ok(render(&summary))
}

pub fn render(summary: &RunSummary) -> Output {
    let mut out = String::new();
    let mode = if summary.dry_run { " (dry run)" } else { "" };
    out.push_str(&format!(
        "anomaly run for {}{mode}\n",
        summary.hour.format("%Y-%m-%dT%H:00Z")
    ));
    if let Some(day) = summary.quality_day {
        out.push_str(&format!(
            "quality checked for {}: {} tenants ({} with too few graded answers)\n",
            day.format("%Y-%m-%d"),
            summary.quality_checked,
            summary.quality_too_few_graded
        ));
    }
    out.push_str(&format!(
        "tenants checked {}, anomalies {} {}, already recorded {}, no baseline {}, \
         under the floor {}, store reads {}, failed {}\n",
        summary.tenants_checked,
        if summary.dry_run { "found" } else { "recorded" },
        summary.anomalies_recorded,
        summary.duplicates,
        summary.no_baseline,
        summary.below_floor,
        summary.store_reads,
        summary.failed_tenants
    ));
    if !summary.anomalies.is_empty() {
        let rows: Vec<Vec<String>> = summary
            .anomalies
            .iter()
            .map(|a| {
                vec![
                    a.tenant_id.to_string(),
                    a.kind.clone(),
                    a.observed.normalize().to_string(),
                    a.baseline.normalize().to_string(),
                    ratio(a),
                ]
            })
            .collect();
        out.push_str(&table(
            &["TENANT", "KIND", "OBSERVED", "BASELINE", "RATIO"],
            &rows,
        ));
    }
    let mut output = Output::stdout(out);
    for error in &summary.errors {
        output = output.note(format!("failed: {error}"));
    }
    if let Some(error) = &summary.alert_error {
        output = output.note(format!(
            "alerts not published: {error} (the anomalies are recorded; see `tollgate usage anomalies`)"
        ));
    }
    output.complete = !summary.failed();
    output
}
