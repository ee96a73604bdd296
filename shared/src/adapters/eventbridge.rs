//! Budget events to an EventBridge bus through `PutEvents` (anomaly-scheduler's publisher).
//!
//! Each event is `source` `tollgate.budget`, `detail-type` the kind's
//! (`domain::budget_event::BudgetEventKind::detail_type`), `detail` the documented schema with
//! the event's stable `id`, and `time` when it was recorded. The template's rule forwards the
//! `exhausted` ones to the operator's alarm topic; tenants' own consumers add rules of their own.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_eventbridge::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_eventbridge::primitives::DateTime as AwsDateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::adapters::aws::AwsConfigSource;
use crate::adapters::tls;
use crate::domain::budget_event::{BudgetEvent, EVENT_SOURCE};
use crate::ports::alerts::{AlertError, BudgetEventBus};

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Publishes budget events to one bus (see the module docs).
pub struct EventBridgeBus {
    client: Client,
    bus: String,
}

impl EventBridgeBus {
    /// Publishes through `client` to the bus named (or ARN'd) `bus`.
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }

    /// A client configured from `aws` (endpoint override `AWS_ENDPOINT_URL_EVENTBRIDGE`). Makes
    /// no network call.
    pub async fn from_env(aws: AwsConfigSource, bus: impl Into<String>) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let config = aws.load(timeouts, "EVENTBRIDGE").await;
        Self::new(Client::new(&config), bus)
    }

    /// A client for a local emulator (moto) at `endpoint`, with static test credentials, so a
    /// test can never reach real AWS.
    pub fn emulator(endpoint: &str, bus: impl Into<String>) -> Self {
        let config = aws_sdk_eventbridge::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
            .endpoint_url(endpoint)
            .http_client(tls::aws_http_client())
            .build();
        Self::new(Client::from_conf(config), bus)
    }
}

/// One event's PutEvents entry.
pub fn entry(event: &BudgetEvent, bus: &str) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(EVENT_SOURCE)
        .detail_type(event.kind.detail_type())
        .detail(event.detail().to_string())
        .time(AwsDateTime::from_secs(event.occurred_at.timestamp()))
        .build()
}

fn bus_error<E, R>(err: SdkError<E, R>) -> AlertError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("UnknownError");
            if matches!(code, "ThrottlingException" | "LimitExceededException") {
                return AlertError::Throttled;
            }
            AlertError::Unavailable(format!(
                "EventBridge PutEvents: {code}: {}",
                e.message().unwrap_or("no message")
            ))
        }
        SdkError::TimeoutError(_) => {
            AlertError::Unavailable("EventBridge PutEvents: timed out".into())
        }
        // Display only: Debug would dump request internals.
        other => AlertError::Unavailable(format!("EventBridge PutEvents: {other}")),
    }
}

#[async_trait]
impl BudgetEventBus for EventBridgeBus {
    async fn put(&self, events: &[BudgetEvent]) -> Result<(), AlertError> {
        if events.is_empty() {
            return Ok(());
        }
        let out = self
            .client
            .put_events()
            .set_entries(Some(events.iter().map(|e| entry(e, &self.bus)).collect()))
            .send()
            .await
            .map_err(bus_error)?;
        // PutEvents answers 200 with per-entry failures: any is a failed put (the publisher
        // retries the whole batch; consumers drop the copies by `detail.id`).
        if out.failed_entry_count() > 0 {
            let first = out
                .entries()
                .iter()
                .find_map(|e| e.error_code().map(|c| (c, e.error_message().unwrap_or(""))));
            return Err(AlertError::Unavailable(format!(
                "EventBridge PutEvents: {} of {} entries failed{}",
                out.failed_entry_count(),
                events.len(),
                first.map_or_else(String::new, |(c, m)| format!(" (first: {c}: {m})"))
            )));
        }
        Ok(())
    }
}
