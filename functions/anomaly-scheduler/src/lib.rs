//! The anomaly-scheduler function: an EventBridge schedule invokes it every hour; it checks the
//! last full hour before the event's `time` (`service::anomaly`).
//!
//! Keying the hour on the event's `time`, not on the clock, makes a retried or duplicated
//! delivery of the same event check the same hour, and the scheduler's conditional writes then
//! record and alert nothing twice. The handler parses the event, runs the scheduler once and
//! returns its summary (the function's result, and one log line carrying the Lambda request id
//! as `request_id`, which the saved `request-id` query reads); a run with failed tenants or
//! unpublished alerts returns an error so Lambda's retry runs it again.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tollgate::adapters::alerts::EmfAlerts;
use tollgate::adapters::cloudwatch::CloudWatchAlerts;
use tollgate::bootstrap::Stores;
use tollgate::config::Settings;
use tollgate::config::anomaly::{AlertsKind, AnomalySettings};
use tollgate::domain::ids::RequestId;
use tollgate::ports::Clock;
use tollgate::ports::alerts::AnomalyAlerts;
use tollgate::ports::clock::SystemClock;
use tollgate::service::anomaly::{AnomalyScheduler, RunSummary, SchedulerOptions, last_full_hour};

/// What a failed run reports to Lambda (for tests that check the error type).
pub use lambda_runtime::Diagnostic;
/// An invocation as the runtime delivers it (for tests that drive [`handle_invocation`]).
pub use lambda_runtime::{Context, LambdaEvent};

/// The fields of EventBridge's "Scheduled Event" the function uses (the rest is ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct ScheduledEvent {
    pub id: String,
    pub time: DateTime<Utc>,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
}

/// Every port the scheduler needs, from one store.
pub use tollgate::bootstrap::SchedulerStore;

/// What the function may touch: the usage table's rollups and activity index (read), its
/// anomaly records (conditional put), and the alerts.
#[derive(Clone)]
pub struct SchedulerState {
    pub store: Arc<dyn SchedulerStore>,
    pub alerts: Arc<dyn AnomalyAlerts>,
    pub clock: Arc<dyn Clock>,
    pub options: SchedulerOptions,
}

impl SchedulerState {
    /// The scheduler's state from settings: the one constructor `main` uses. Alerts go to
    /// CloudWatch alarms' metrics or out as EMF lines, as `anomaly.alerts` says; the
    /// deployment (the table prefix, which is the stack name) is the alarm's dimension, so dev
    /// and prod never mix. Makes no network call.
    pub async fn build(settings: &Settings, anomaly: &AnomalySettings, stores: &Stores) -> Self {
        let deployment = settings.store.table_prefix.clone();
        let alerts: Arc<dyn AnomalyAlerts> = match anomaly.alerts {
            AlertsKind::Cloudwatch => {
                Arc::new(CloudWatchAlerts::from_env(settings.aws, deployment).await)
            }
            AlertsKind::Emf => Arc::new(EmfAlerts::stdout(deployment)),
        };
        Self {
            store: stores.scheduler(),
            alerts,
            clock: Arc::new(SystemClock),
            options: anomaly.options(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("the activity index could not be read: {0}")]
    Store(#[from] tollgate::ports::store::StoreError),
    #[error(
        "hour {hour}: {failed} tenant check(s) failed, alert publishing: {alert}; first errors: {errors}"
    )]
    Incomplete {
        hour: String,
        failed: u64,
        alert: String,
        errors: String,
    },
}

impl From<HandlerError> for Diagnostic {
    fn from(err: HandlerError) -> Self {
        let error_type = match err {
            HandlerError::Store(_) => "StoreUnavailable",
            HandlerError::Incomplete { .. } => "AnomalyRunIncomplete",
        };
        Self {
            error_type: error_type.to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// One Lambda invocation: [`handle`] under the invocation's request id, so the run's log lines
/// carry it as `request_id`, the field invoke, ingest and usage-report log theirs under.
pub async fn handle_invocation(
    state: &SchedulerState,
    invocation: LambdaEvent<ScheduledEvent>,
) -> Result<RunSummary, HandlerError> {
    let request_id = RequestId::from_upstream(&invocation.context.request_id);
    run(state, invocation.payload, &request_id).await
}

/// Runs the scheduler for the hour the event names; outside Lambda (no invocation context)
/// its log lines carry a fresh request id, as the HTTP functions do without API Gateway's.
pub async fn handle(
    state: &SchedulerState,
    event: ScheduledEvent,
) -> Result<RunSummary, HandlerError> {
    run(state, event, &RequestId::generate()).await
}

async fn run(
    state: &SchedulerState,
    event: ScheduledEvent,
    request_id: &RequestId,
) -> Result<RunSummary, HandlerError> {
    let hour = last_full_hour(event.time);
    let scheduler = AnomalyScheduler {
        activity: state.store.as_ref(),
        usage: state.store.as_ref(),
        anomalies: state.store.as_ref(),
        alerts: state.alerts.as_ref(),
        clock: state.clock.as_ref(),
        options: state.options.clone(),
    };
    let summary = match scheduler.run(hour).await {
        Ok(summary) => summary,
        Err(err) => {
            tracing::error!(
                request_id = %request_id,
                event_id = %event.id,
                hour = %hour.to_rfc3339(),
                error = %err,
                "anomaly run failed: the activity index could not be read"
            );
            return Err(err.into());
        }
    };
    tracing::info!(
        request_id = %request_id,
        event_id = %event.id,
        detail_type = %event.detail_type,
        hour = %summary.hour.to_rfc3339(),
        tenants_checked = summary.tenants_checked,
        quality_checked = summary.quality_checked,
        anomalies_recorded = summary.anomalies_recorded,
        duplicates = summary.duplicates,
        no_baseline = summary.no_baseline,
        below_floor = summary.below_floor,
        store_reads = summary.store_reads,
        failed_tenants = summary.failed_tenants,
        "anomaly run finished"
    );
    if summary.failed() {
        return Err(HandlerError::Incomplete {
            hour: summary.hour.to_rfc3339(),
            failed: summary.failed_tenants,
            alert: summary.alert_error.clone().unwrap_or_else(|| "ok".into()),
            errors: summary.errors.join("; "),
        });
    }
    Ok(summary)
}
