//! The alerting port (anomaly-scheduler): anomalies out to whatever pages an operator.
//! Production publishes CloudWatch metrics that an alarm watches (`adapters::cloudwatch`);
//! the embedded default writes EMF lines or keeps them in memory (`adapters::alerts`).

use async_trait::async_trait;

use crate::ports::store::AnomalyRecord;

/// Why anomalies could not be published.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The alerting backend failed or could not be reached.
    #[error("alerting unavailable: {0}")]
    Unavailable(String),
    /// The alerting backend rate limited the call.
    #[error("alerting throttled the request")]
    Throttled,
}

/// Publishes anomalies to whatever pages an operator.
#[async_trait]
pub trait AnomalyAlerts: Send + Sync {
    /// Publishes newly recorded anomalies (never a duplicate: the scheduler only passes
    /// anomalies its conditional write just inserted). An empty slice is a no-op.
    async fn publish(&self, anomalies: &[AnomalyRecord]) -> Result<(), AlertError>;
}

/// Publishes budget events (anomaly-scheduler's publisher): EventBridge in production
/// (`adapters::eventbridge`), JSON lines or memory in the embedded default.
#[async_trait]
pub trait BudgetEventBus: Send + Sync {
    /// Publishes `events` (at most [`MAX_EVENTS_PER_PUT`]); `Err` unless every one was
    /// accepted. An empty slice is a no-op.
    async fn put(
        &self,
        events: &[crate::domain::budget_event::BudgetEvent],
    ) -> Result<(), AlertError>;
}

/// Most events one [`BudgetEventBus::put`] takes (EventBridge's PutEvents limit).
pub const MAX_EVENTS_PER_PUT: usize = 10;
