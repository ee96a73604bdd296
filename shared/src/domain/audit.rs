//! The audit log: one record per operator change (a key issued, rotated or revoked; a tenant
//! created, updated, disabled or enabled; a price or an upstream quota set), saying who made
//! it, what it changed (before and after, never key material), when, and under which request
//! id. Records are kept per tenant (deployment-wide changes, prices and quotas, under
//! [`OPERATOR_SCOPE`]) for [`DEFAULT_RETENTION_DAYS`] by default, then the store's TTL drops
//! them.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{RequestId, TenantId};
use super::keys::{KeyPrefix, KeyScope, StoredKey};

/// Where deployment-wide changes (prices, upstream quotas) are filed.
pub const OPERATOR_SCOPE: &str = "_operator";

/// How long records are kept unless configured otherwise: about 13 months, so a year's
/// changes can always be compared with the month before.
pub const DEFAULT_RETENTION_DAYS: i64 = 400;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    /// A tenant was created.
    #[serde(rename = "tenant.create")]
    TenantCreate,
    /// A tenant's configuration was changed.
    #[serde(rename = "tenant.update")]
    TenantUpdate,
    /// A tenant was disabled.
    #[serde(rename = "tenant.disable")]
    TenantDisable,
    /// A tenant was enabled again.
    #[serde(rename = "tenant.enable")]
    TenantEnable,
    /// A key was issued.
    #[serde(rename = "key.create")]
    KeyCreate,
    /// A key was rotated: `before` is the old key, `after` the old key with its new expiry and
    /// the successor.
    #[serde(rename = "key.rotate")]
    KeyRotate,
    /// A key was revoked.
    #[serde(rename = "key.revoke")]
    KeyRevoke,
    /// A model price was set.
    #[serde(rename = "price.set")]
    PriceSet,
    /// An upstream quota was set.
    #[serde(rename = "quota.set")]
    QuotaSet,
    /// A fine-tuned model was registered to a tenant (or moved to it).
    #[serde(rename = "fine_tuned.register")]
    FineTunedRegister,
}

impl AuditAction {
    /// The action's name as records carry it (`key.rotate`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantCreate => "tenant.create",
            Self::TenantUpdate => "tenant.update",
            Self::TenantDisable => "tenant.disable",
            Self::TenantEnable => "tenant.enable",
            Self::KeyCreate => "key.create",
            Self::KeyRotate => "key.rotate",
            Self::KeyRevoke => "key.revoke",
            Self::PriceSet => "price.set",
            Self::QuotaSet => "quota.set",
            Self::FineTunedRegister => "fine_tuned.register",
        }
    }
}

/// One operator change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The tenant the change concerns; `None` for deployment-wide changes.
    pub tenant: Option<TenantId>,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// Who made it: an IAM principal's ARN (admin API), or `local:{user}` (the CLI).
    pub actor: String,
    /// What was done.
    pub action: AuditAction,
    /// What it was done to: `tenant/acme`, `key/Ab12Cd34Ef56`, `price/openai/gpt-4o`.
    pub resource: String,
    /// The resource before the change (`None`: it did not exist).
    pub before: Option<serde_json::Value>,
    /// The resource after it.
    pub after: Option<serde_json::Value>,
    /// The request that made it.
    pub request_id: RequestId,
    /// When the store may drop the record.
    pub retain_until: DateTime<Utc>,
}

impl AuditRecord {
    /// Where the record sits in its tenant's log: `{at}#{request_id}#{action}`, `at` in
    /// fixed-width RFC 3339 (UTC, nanoseconds), so positions sort as the records were made.
    /// A page's cursor is the position of its last record.
    pub fn position(&self) -> String {
        format!(
            "{}#{}#{}",
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            self.request_id,
            self.action.as_str()
        )
    }

    /// The log the record belongs to: its tenant's id, or [`OPERATOR_SCOPE`].
    pub fn scope(&self) -> &str {
        self.tenant
            .as_ref()
            .map_or(OPERATOR_SCOPE, TenantId::as_str)
    }
}

/// A key as the audit log shows it: everything but its hash (which, with the prefix, would
/// let anyone test guesses offline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    /// The key's public prefix.
    pub prefix: KeyPrefix,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its name.
    pub name: Option<String>,
    /// Its scopes; `None`: every scope.
    pub scopes: Option<BTreeSet<KeyScope>>,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&StoredKey> for KeyView {
    fn from(key: &StoredKey) -> Self {
        Self {
            prefix: key.prefix.clone(),
            tenant_id: key.tenant_id.clone(),
            name: key.name.clone(),
            scopes: key.scopes.clone(),
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// `key` as an audit record's before or after.
pub fn key_state(key: &StoredKey) -> serde_json::Value {
    serde_json::to_value(KeyView::from(key)).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::issue_key;

    #[test]
    fn a_keys_audit_view_holds_neither_the_key_nor_its_hash() {
        let issued = issue_key(TenantId::parse("acme").unwrap(), Utc::now());
        let view = key_state(&issued.record).to_string();
        assert!(!view.contains(issued.expose()));
        assert!(!view.contains(&issued.record.hash.to_hex()));
        assert!(view.contains(issued.record.prefix.as_str()));
    }

    #[test]
    fn actions_serialize_as_their_names() {
        for action in [
            AuditAction::KeyRotate,
            AuditAction::TenantCreate,
            AuditAction::QuotaSet,
        ] {
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                serde_json::json!(action.as_str())
            );
        }
    }
}
