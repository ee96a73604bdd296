//! The anomaly-scheduler function: an EventBridge schedule invokes it every hour; it checks the
//! last full hour before the event's `time` (`service::anomaly`), records budget resets and
//! sweeps unpublished budget events (`service::budget_events`). The usage table's stream
//! invokes it too, with the budget events invoke's limiter records (the template filters the
//! stream to `BUDGET#` items), which it publishes to the budget event bus.
//!
//! Keying the hour on the event's `time`, not on the clock, makes a retried or duplicated
//! delivery of the same event check the same hour, and the scheduler's conditional writes then
//! record and alert nothing twice. The handler parses the event, runs the scheduler once and
//! returns its summary (the function's result, and one log line carrying the Lambda request id
//! as `request_id`, which the saved `request-id` query reads); a run with failed tenants or
//! unpublished alerts returns an error so Lambda's retry runs it again.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tollgate::adapters::alerts::{EmfAlerts, LineBudgetBus};
use tollgate::adapters::cloudwatch::CloudWatchAlerts;
use tollgate::adapters::eventbridge::EventBridgeBus;
use tollgate::bootstrap::{Store, Stores};
use tollgate::config::Settings;
use tollgate::config::anomaly::{AlertsKind, AnomalySettings};
use tollgate::domain::budget_event::BudgetEvent;
use tollgate::domain::ids::RequestId;
use tollgate::ports::Clock;
use tollgate::ports::alerts::{AnomalyAlerts, BudgetEventBus};
use tollgate::ports::clock::SystemClock;
use tollgate::service::anomaly::{AnomalyScheduler, RunSummary, SchedulerOptions, last_full_hour};
use tollgate::service::budget_events::{BudgetEventPublisher, PublishSummary, SWEEP_AFTER};

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

/// A DynamoDB stream batch (the usage table's, filtered to budget events by the template).
#[derive(Debug, Clone, Deserialize)]
pub struct StreamBatch {
    #[serde(rename = "Records")]
    pub records: Vec<StreamRecord>,
}

/// One stream record: the fields the publisher reads.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventName", default)]
    pub event_name: String,
    #[serde(default)]
    pub dynamodb: StreamImage,
}

/// A stream record's item images, in DynamoDB's JSON.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamImage {
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<serde_json::Value>,
}

impl StreamBatch {
    /// The budget events the batch inserted (records of anything else are ignored; an item
    /// whose `event` does not parse is an error, so the batch is retried and then reported).
    pub fn budget_events(&self) -> Result<Vec<BudgetEvent>, HandlerError> {
        self.records
            .iter()
            .filter(|r| r.event_name == "INSERT")
            .filter_map(|r| r.dynamodb.new_image.as_ref())
            .filter_map(|image| image.get("event")?.get("S")?.as_str())
            .map(|raw| {
                serde_json::from_str(raw).map_err(|e| {
                    HandlerError::Budget(format!(
                        "a stream record's budget event does not parse: {e}"
                    ))
                })
            })
            .collect()
    }
}

/// What invokes the function: the hourly schedule or the table's stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SchedulerEvent {
    /// Budget events inserted into the outbox.
    Stream(StreamBatch),
    /// The hourly run.
    Scheduled(ScheduledEvent),
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
    /// Where budget events go.
    pub budget_bus: Arc<dyn BudgetEventBus>,
    /// How old an unpublished budget event must be before the hourly run sends it: the stream
    /// sends it first on DynamoDB ([`SWEEP_AFTER`]); the embedded store has no stream (zero).
    pub sweep_after: Duration,
}

impl SchedulerState {
    /// The scheduler's state from settings: the one constructor `main` uses. Alerts go to
    /// CloudWatch alarms' metrics or out as EMF lines, as `anomaly.alerts` says, and budget
    /// events to the EventBridge bus `anomaly.budget_event_bus` names (JSON lines on stdout
    /// without one); the
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
        let budget_bus: Arc<dyn BudgetEventBus> = match &anomaly.budget_event_bus {
            Some(bus) => Arc::new(EventBridgeBus::from_env(settings.aws, bus.clone()).await),
            None => Arc::new(LineBudgetBus::stdout()),
        };
        let sweep_after = match stores.store {
            Store::Dynamodb(_) => SWEEP_AFTER,
            Store::Memory(_) => Duration::ZERO,
        };
        Self {
            store: stores.scheduler(),
            alerts,
            clock: Arc::new(SystemClock),
            options: anomaly.options(),
            budget_bus,
            sweep_after,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("the activity index could not be read: {0}")]
    Store(#[from] tollgate::ports::store::StoreError),
    #[error("budget events: {0}")]
    Budget(String),
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
            HandlerError::Budget(_) => "BudgetEventsIncomplete",
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
    // Budget resets and the sweep first: they run whatever the anomaly checks find, even
    // when the activity index cannot be read.
    let budget = publisher(state)
        .hourly_sweeping_after(event.time, state.sweep_after)
        .await;
    match &budget {
        Ok(done) => tracing::info!(
            request_id = %request_id,
            event_id = %event.id,
            budget_events_sent = done.sent,
            budget_resets_recorded = done.resets_recorded,
            "budget events swept"
        ),
        Err(err) => {
            tracing::error!(request_id = %request_id, event_id = %event.id, error = %err, "budget events not swept")
        }
    }
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
    budget.map_err(|e| HandlerError::Budget(e.to_string()))?;
    Ok(summary)
}

fn publisher(state: &SchedulerState) -> BudgetEventPublisher<'_> {
    BudgetEventPublisher {
        outbox: state.store.as_ref(),
        counters: state.store.as_ref(),
        bus: state.budget_bus.as_ref(),
    }
}

/// Publishes the budget events of one stream batch; an error fails the batch, which Lambda
/// retries (events it already sent are marked, so the retry skips them).
pub async fn handle_stream(
    state: &SchedulerState,
    batch: StreamBatch,
    request_id: &RequestId,
) -> Result<PublishSummary, HandlerError> {
    let events = batch.budget_events()?;
    let summary = publisher(state).publish(&events).await.map_err(|e| {
        tracing::error!(request_id = %request_id, error = %e, "budget events not published");
        HandlerError::Budget(e.to_string())
    })?;
    tracing::info!(
        request_id = %request_id,
        records = batch.records.len(),
        sent = summary.sent,
        skipped = summary.skipped,
        "budget events published"
    );
    Ok(summary)
}

/// One Lambda invocation of either kind; the result as JSON (the run's summary).
pub async fn handle_any(
    state: &SchedulerState,
    invocation: LambdaEvent<SchedulerEvent>,
) -> Result<serde_json::Value, HandlerError> {
    let (event, context) = invocation.into_parts();
    match event {
        SchedulerEvent::Scheduled(event) => {
            let summary = handle_invocation(state, LambdaEvent::new(event, context)).await?;
            Ok(serde_json::to_value(summary).unwrap_or_default())
        }
        SchedulerEvent::Stream(batch) => {
            let request_id = RequestId::from_upstream(&context.request_id);
            let summary = handle_stream(state, batch, &request_id).await?;
            Ok(serde_json::to_value(summary).unwrap_or_default())
        }
    }
}
