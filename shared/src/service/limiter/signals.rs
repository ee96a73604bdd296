//! The limiter's budget events: the first request a container sees past a budget's soft
//! threshold records a `threshold` event, the first refusal by a hard cap an `exhausted` one
//! (`domain::budget_event`). The store's conditional write records each id once across every
//! container; this container remembers the ids it has seen recorded, so a tenant past its
//! threshold costs one write per container and period, not one per request. A write that
//! fails (or takes longer than [`WRITE_TIMEOUT`]) is not tried again by this container for
//! [`RETRY_AFTER`]: while the table is throttled, requests past a threshold must not each
//! wait on it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};

use crate::domain::budget::{Period, usd_of_nanos};
use crate::domain::budget_event::{BudgetEvent, BudgetEventKind};
use crate::ports::store::{BudgetEventRecorder, Recorded};

use super::Scope;

/// Ids remembered before the set is dropped (older periods' ids are dead weight; forgetting
/// one costs a conditional write that finds it recorded).
const REMEMBERED: usize = 10_000;

/// Longest a request waits on recording an event.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a failed write is left alone before a request tries it again.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Records budget events once per id (see the module docs).
pub(super) struct Signals {
    store: Arc<dyn BudgetEventRecorder>,
    recorded: Mutex<HashSet<String>>,
    /// Ids whose last write failed, and when.
    failed: Mutex<HashMap<String, Instant>>,
}

/// One budget, its spend as counted and whose it is, at one moment.
pub(super) struct Reading {
    pub user: bool,
    pub period: Period,
    pub spent_nanos: i64,
    pub budget: rust_decimal::Decimal,
}

impl Signals {
    pub(super) fn new(store: Arc<dyn BudgetEventRecorder>) -> Self {
        Self {
            store,
            recorded: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    /// Records `kind` for the budget `reading` describes, unless this container has seen it
    /// recorded. A failed write is logged and retried by the next request that sees the same
    /// state: the request itself is decided either way.
    pub(super) async fn note(
        &self,
        scope: &Scope,
        kind: BudgetEventKind,
        reading: Reading,
        now: i64,
    ) {
        let user = if reading.user {
            match &scope.user {
                Some((user, _)) => Some(user.clone()),
                None => return,
            }
        } else {
            None
        };
        let at = DateTime::<Utc>::from_timestamp(now, 0).unwrap_or_default();
        let event = BudgetEvent {
            tenant_id: scope.tenant.clone(),
            user,
            period: reading.period,
            period_start: DateTime::from_timestamp(reading.period.starts_at(now), 0)
                .unwrap_or_default(),
            kind,
            spend_usd: usd_of_nanos(reading.spent_nanos.max(0)),
            budget_usd: reading.budget,
            alert_at_percent: scope.budget.alert_at_percent,
            occurred_at: at,
        };
        let id = event.id();
        if self.seen(&id) || self.failed_recently(&id) {
            return;
        }
        let write = tokio::time::timeout(WRITE_TIMEOUT, self.store.record_budget_event(&event));
        let written = write.await.unwrap_or_else(|_| {
            Err(crate::ports::store::StoreError::Unavailable(
                "timed out".into(),
            ))
        });
        match written {
            Ok(recorded) => {
                if recorded == Recorded::Inserted {
                    tracing::info!(
                        tenant_id = %scope.tenant,
                        budget_event = %id,
                        spend_usd = %event.spend_usd,
                        budget_usd = %event.budget_usd,
                        "budget event recorded"
                    );
                }
                self.remember(id);
            }
            Err(err) => {
                tracing::warn!(tenant_id = %scope.tenant, budget_event = %id, error = %err, "budget event not recorded; a request will try again in 30 s");
                let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                if failed.len() >= REMEMBERED {
                    failed.clear();
                }
                failed.insert(id, Instant::now());
            }
        }
    }

    fn failed_recently(&self, id: &str) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER)
    }

    fn seen(&self, id: &str) -> bool {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn remember(&self, id: String) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if recorded.len() >= REMEMBERED {
            recorded.clear();
        }
        recorded.insert(id);
    }
}
