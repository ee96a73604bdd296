//! Publishing budget events (anomaly-scheduler): the outbox invoke's limiter writes
//! (`ports::store::BudgetEventStore`) out to the bus (`ports::alerts::BudgetEventBus`).
//!
//! - [`BudgetEventPublisher::publish`] takes events as the table's stream delivers them (in
//!   AWS, within seconds of the limiter recording them): each still unpublished one is sent,
//!   then marked published. A replayed stream batch finds them marked and sends nothing.
//! - [`BudgetEventPublisher::hourly`] (the hourly schedule) records a `reset` for every
//!   subject with a `threshold` or `exhausted` event in the day or month that just ended, with
//!   the period's final spend, and sends whatever is still unpublished after
//!   [`SWEEP_AFTER`] (a stream delivery that failed for good; and on the embedded store, which
//!   has no stream, everything).
//!
//! Delivery is at least once: a publisher that dies after `PutEvents` succeeded and before
//! its mark landed leaves the event unpublished, and the next stream retry or sweep sends it
//! again, with the same `detail.id`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::budget::{Period, usd_of_nanos};
use crate::domain::budget_event::{BudgetEvent, BudgetEventKind};
use crate::ports::alerts::{AlertError, BudgetEventBus, MAX_EVENTS_PER_PUT};
use crate::ports::store::{
    BudgetEventStore, LimiterStore, Recorded, StoreError, StoredBudgetEvent,
};
use crate::service::limiter::spend_counter;

/// How old an unpublished event must be before the hourly sweep sends it: long enough that
/// the stream delivery racing it has landed (so the two do not both send it).
pub const SWEEP_AFTER: Duration = Duration::from_secs(10 * 60);

/// Why budget events could not all be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The outbox could not be read or written.
    #[error("budget event outbox: {0}")]
    Store(#[from] StoreError),
    /// The bus refused or could not be reached.
    #[error("budget event bus: {0}")]
    Bus(#[from] AlertError),
}

/// What one publishing pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PublishSummary {
    /// Events sent to the bus (and marked).
    pub sent: u64,
    /// Events found already published (a replayed stream batch), or not recorded.
    pub skipped: u64,
    /// Resets recorded (hourly only).
    pub resets_recorded: u64,
}

/// Publishes budget events (see the module docs).
pub struct BudgetEventPublisher<'a> {
    /// The outbox.
    pub outbox: &'a dyn BudgetEventStore,
    /// The limiter's counters (a reset's final spend).
    pub counters: &'a dyn LimiterStore,
    /// Where events go.
    pub bus: &'a dyn BudgetEventBus,
}

impl BudgetEventPublisher<'_> {
    /// Sends each of `events` not yet published, then marks it (stream batches).
    pub async fn publish(&self, events: &[BudgetEvent]) -> Result<PublishSummary, PublishError> {
        let mut pending = Vec::with_capacity(events.len());
        let mut summary = PublishSummary::default();
        for event in events {
            match self.outbox.budget_event_published(event).await? {
                Some(false) => pending.push(event.clone()),
                Some(true) | None => summary.skipped += 1,
            }
        }
        summary.sent = self.send(&pending).await?;
        Ok(summary)
    }

    /// The hourly pass at `now`: resets for the periods that ended, then the sweep of events
    /// unpublished for [`SWEEP_AFTER`] or longer in the current and previous periods.
    pub async fn hourly(&self, now: DateTime<Utc>) -> Result<PublishSummary, PublishError> {
        self.hourly_sweeping_after(now, SWEEP_AFTER).await
    }

    /// [`BudgetEventPublisher::hourly`] with the sweep's age `after` (zero on the embedded
    /// store, which has no stream to race).
    pub async fn hourly_sweeping_after(
        &self,
        now: DateTime<Utc>,
        after: Duration,
    ) -> Result<PublishSummary, PublishError> {
        let mut summary = PublishSummary::default();
        let cutoff = now - chrono::Duration::from_std(after).unwrap_or_default();
        for period in Period::ALL {
            let current = start_of(period, now.timestamp());
            let previous = start_of(period, current.timestamp() - 1);
            let ended = self.outbox.budget_events(period, previous).await?;
            summary.resets_recorded += self.record_resets(&ended, now).await?;
            for start in [previous, current] {
                let pending: Vec<BudgetEvent> = self
                    .outbox
                    .budget_events(period, start)
                    .await?
                    .into_iter()
                    .filter(|s| !s.published && s.event.occurred_at <= cutoff)
                    .map(|s| s.event)
                    .collect();
                summary.sent += self.send(&pending).await?;
            }
        }
        Ok(summary)
    }

    /// Records a `reset` for each subject of `ended` (one period's events) with a threshold or
    /// exhausted event and no reset yet, carrying the period's final spend.
    async fn record_resets(
        &self,
        ended: &[StoredBudgetEvent],
        now: DateTime<Utc>,
    ) -> Result<u64, PublishError> {
        let reset: BTreeSet<String> = ended
            .iter()
            .filter(|s| s.event.kind == BudgetEventKind::Reset)
            .map(|s| s.event.subject())
            .collect();
        // The latest event per subject: its budget is the one in force at the end.
        let mut latest: BTreeMap<String, &BudgetEvent> = BTreeMap::new();
        for stored in ended
            .iter()
            .filter(|s| s.event.kind != BudgetEventKind::Reset)
        {
            let subject = stored.event.subject();
            if reset.contains(&subject) {
                continue;
            }
            let entry = latest.entry(subject).or_insert(&stored.event);
            if stored.event.occurred_at > entry.occurred_at {
                *entry = &stored.event;
            }
        }
        let mut recorded = 0;
        for event in latest.values() {
            let key = spend_counter(
                &event.tenant_id,
                event.user.as_ref(),
                event.period,
                event.period_start.timestamp(),
            );
            let spent = self
                .counters
                .read_counters(std::slice::from_ref(&key))
                .await?
                .first()
                .map_or(0, |c| c.tokens);
            let reset = event.reset(usd_of_nanos(spent.max(0)), now);
            if self.outbox.record_budget_event(&reset).await? == Recorded::Inserted {
                recorded += 1;
            }
        }
        Ok(recorded)
    }

    /// Puts `events` on the bus in batches, marking each batch published once it is accepted.
    async fn send(&self, events: &[BudgetEvent]) -> Result<u64, PublishError> {
        let mut sent = 0;
        for batch in events.chunks(MAX_EVENTS_PER_PUT) {
            self.bus.put(batch).await?;
            for event in batch {
                self.outbox.mark_budget_event_published(event).await?;
                tracing::info!(
                    tenant_id = %event.tenant_id,
                    budget_event = %event.id(),
                    "budget event published"
                );
            }
            sent += batch.len() as u64;
        }
        Ok(sent)
    }
}

fn start_of(period: Period, now: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(period.starts_at(now), 0).unwrap_or_default()
}
