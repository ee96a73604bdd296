//! Recording operator changes in the audit log (`domain::audit`): who is acting, under which
//! request id, and how long records are kept. Every front end that changes tenants, keys,
//! prices or quotas (the CLI, the admin API) records through an [`Auditor`].
//!
//! A change is recorded after it is made: a record never describes a change that did not
//! happen. If the record cannot be written the change stands and the caller is told so
//! ([`Unaudited`]), so an operator never believes a change was logged when it was not.

use chrono::{DateTime, Duration, Utc};

use crate::domain::audit::{AuditAction, AuditRecord, DEFAULT_RETENTION_DAYS};
use crate::domain::ids::{RequestId, TenantId};
use crate::ports::store::{AuditLog, StoreError};

/// Who is making changes, and where they are recorded.
pub struct Auditor<'a> {
    log: &'a dyn AuditLog,
    actor: String,
    request_id: RequestId,
    retention: Duration,
}

/// A change was made but its audit record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{action} {resource} was applied, but its audit record could not be written: {error}")]
pub struct Unaudited {
    /// What was done.
    pub action: &'static str,
    /// To what.
    pub resource: String,
    /// Why the record failed.
    pub error: StoreError,
}

/// One change to record.
pub struct Change<'c> {
    /// The tenant it concerns; `None` for deployment-wide changes.
    pub tenant: Option<&'c TenantId>,
    /// What was done.
    pub action: AuditAction,
    /// To what (`key/Ab12Cd34Ef56`).
    pub resource: String,
    /// Before (`None`: it did not exist).
    pub before: Option<serde_json::Value>,
    /// After.
    pub after: Option<serde_json::Value>,
    /// When.
    pub at: DateTime<Utc>,
}

impl<'a> Auditor<'a> {
    /// Records `actor`'s changes under `request_id` in `log`, kept for the default retention.
    pub fn new(log: &'a dyn AuditLog, actor: impl Into<String>, request_id: RequestId) -> Self {
        Self {
            log,
            actor: actor.into(),
            request_id,
            retention: Duration::days(DEFAULT_RETENTION_DAYS),
        }
    }

    /// This auditor, keeping records for `retention` instead.
    pub fn retained_for(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Who is acting.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// Appends the record of `action` on `resource`, from `before` (`None`: it did not exist)
    /// to `after`, each as its JSON.
    pub async fn record_values<T: serde::Serialize>(
        &self,
        tenant: Option<&TenantId>,
        action: AuditAction,
        resource: String,
        (before, after): (Option<&T>, &T),
        at: DateTime<Utc>,
    ) -> Result<(), Unaudited> {
        let json = |v: &T| serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
        self.record(Change {
            tenant,
            action,
            resource,
            before: before.map(json),
            after: Some(json(after)),
            at,
        })
        .await
    }

    /// Appends `change`'s record.
    pub async fn record(&self, change: Change<'_>) -> Result<(), Unaudited> {
        let record = AuditRecord {
            tenant: change.tenant.cloned(),
            at: change.at,
            actor: self.actor.clone(),
            action: change.action,
            resource: change.resource.clone(),
            before: change.before,
            after: change.after,
            request_id: self.request_id.clone(),
            retain_until: change.at + self.retention,
        };
        self.log.append(&record).await.map_err(|error| {
            tracing::error!(action = change.action.as_str(), resource = %change.resource, request_id = %self.request_id, error = %error, "audit record not written for an applied change");
            Unaudited {
                action: change.action.as_str(),
                resource: change.resource,
                error,
            }
        })
    }
}
