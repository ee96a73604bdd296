//! Budget events: a tenant's (or end user's) spend crossing a budget's soft threshold, hitting
//! its hard cap, and the period resetting after either. Each is recorded at most once per
//! subject, period and kind (its [`BudgetEvent::id`] is the record's key), then published to
//! EventBridge with that id in its detail, so a consumer that sees an id twice (a publisher
//! that died between sending and marking the record sent) can drop the copy.
//!
//! The published event is `source` [`EVENT_SOURCE`], `detail-type` one of
//! [`BudgetEventKind::detail_type`], and `detail` [`BudgetEvent::detail`]; the README lists the
//! fields.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::budget::Period;
use super::ids::TenantId;
use super::profile::UserId;

/// The EventBridge `source` of every budget event.
pub const EVENT_SOURCE: &str = "tollgate.budget";

/// Which budget event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetEventKind {
    /// Spend reached the budget's soft threshold (`alert_at_percent`): the degradation policy
    /// applies from the request that saw it.
    Threshold,
    /// The hard cap refused a request.
    Exhausted,
    /// The period in which a threshold or exhausted event was recorded has ended: the budget
    /// is whole again.
    Reset,
}

impl BudgetEventKind {
    /// Every kind.
    pub const ALL: [BudgetEventKind; 3] = [Self::Threshold, Self::Exhausted, Self::Reset];

    /// `threshold`, `exhausted`, `reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Threshold => "threshold",
            Self::Exhausted => "exhausted",
            Self::Reset => "reset",
        }
    }

    /// The kind named `raw`, if any.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The EventBridge `detail-type` (what rules match on).
    pub fn detail_type(self) -> &'static str {
        match self {
            Self::Threshold => "Tollgate budget threshold crossed",
            Self::Exhausted => "Tollgate budget exhausted",
            Self::Reset => "Tollgate budget reset",
        }
    }
}

/// One budget event of one tenant, or of one of its end users, in one budget period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetEvent {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The end user, for an end user's budget; `None` for the tenant's own.
    pub user: Option<UserId>,
    /// Which budget: daily or monthly (an end user's budget is daily).
    pub period: Period,
    /// When the period started (00:00 UTC of the day, or of the 1st of the month).
    pub period_start: DateTime<Utc>,
    /// What happened.
    pub kind: BudgetEventKind,
    /// Spend in the period as the limiter counted it when the event was recorded (for a
    /// reset: the period's final spend), in USD.
    pub spend_usd: Decimal,
    /// The budget in force, in USD.
    pub budget_usd: Decimal,
    /// The soft threshold, in percent of the budget.
    pub alert_at_percent: u8,
    /// When the event was recorded.
    pub occurred_at: DateTime<Utc>,
}

impl BudgetEvent {
    /// The period, as people write it: `2026-12-06`, `2026-12`.
    pub fn period_label(&self) -> String {
        self.period.label(self.period_start.timestamp())
    }

    /// When the period ends (and the budget resets).
    pub fn period_end(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.period.ends_at(self.period_start.timestamp()), 0)
            .unwrap_or(self.period_start)
    }

    /// Whose budget, as ids: `acme` or `acme/u/alice`. A user id has no `/`.
    pub fn subject(&self) -> String {
        match &self.user {
            None => self.tenant_id.to_string(),
            Some(user) => format!("{}/u/{user}", self.tenant_id),
        }
    }

    /// The event's identity: one record, and one published event, per id.
    /// `{subject}/{day|month}/{period label}/{kind}`, e.g. `acme/u/alice/day/2026-12-06/exhausted`.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.subject(),
            self.period.noun(),
            self.period_label(),
            self.kind.as_str()
        )
    }

    /// The reset that follows this event's period, recorded `at` with the period's final
    /// `spend_usd`.
    pub fn reset(&self, spend_usd: Decimal, at: DateTime<Utc>) -> BudgetEvent {
        BudgetEvent {
            kind: BudgetEventKind::Reset,
            spend_usd,
            occurred_at: at,
            ..self.clone()
        }
    }

    /// The EventBridge `detail`: a flat object of the event's fields (the README's schema).
    pub fn detail(&self) -> Value {
        json!({
            "version": 1,
            "id": self.id(),
            "kind": self.kind.as_str(),
            "tenant_id": self.tenant_id.as_str(),
            "user": self.user.as_ref().map(UserId::as_str),
            "period": self.period.noun(),
            "period_label": self.period_label(),
            "period_start": rfc3339(self.period_start),
            "period_end": rfc3339(self.period_end()),
            "spend_usd": self.spend_usd.normalize().to_string(),
            "budget_usd": self.budget_usd.normalize().to_string(),
            "alert_at_percent": self.alert_at_percent,
            "occurred_at": rfc3339(self.occurred_at),
        })
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: Option<&str>) -> BudgetEvent {
        BudgetEvent {
            tenant_id: TenantId::parse("acme").unwrap(),
            user: user.map(|u| UserId::parse(u).unwrap()),
            period: Period::Day,
            period_start: DateTime::from_timestamp(1_796_515_200, 0).unwrap(),
            kind: BudgetEventKind::Exhausted,
            spend_usd: Decimal::new(9_950, 6),
            budget_usd: Decimal::new(1, 2),
            alert_at_percent: 80,
            occurred_at: DateTime::from_timestamp(1_796_550_000, 0).unwrap(),
        }
    }

    #[test]
    fn ids_name_subject_period_and_kind() {
        assert_eq!(event(None).id(), "acme/day/2026-12-06/exhausted");
        assert_eq!(
            event(Some("alice@x.io")).id(),
            "acme/u/alice@x.io/day/2026-12-06/exhausted"
        );
        let month = BudgetEvent {
            period: Period::Month,
            period_start: DateTime::from_timestamp(1_796_083_200, 0).unwrap(),
            ..event(None)
        };
        assert_eq!(month.id(), "acme/month/2026-12/exhausted");
        assert_eq!(month.period_end().to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }

    #[test]
    fn detail_is_the_documented_schema() {
        let detail = event(Some("alice")).detail();
        assert_eq!(
            detail,
            json!({
                "version": 1,
                "id": "acme/u/alice/day/2026-12-06/exhausted",
                "kind": "exhausted",
                "tenant_id": "acme",
                "user": "alice",
                "period": "day",
                "period_label": "2026-12-06",
                "period_start": "2026-12-06T00:00:00Z",
                "period_end": "2026-12-07T00:00:00Z",
                "spend_usd": "0.00995",
                "budget_usd": "0.01",
                "alert_at_percent": 80,
                "occurred_at": "2026-12-06T09:40:00Z",
            })
        );
        assert_eq!(event(None).detail()["user"], Value::Null);
    }

    #[test]
    fn a_reset_keeps_the_subject_and_period() {
        let original = event(None);
        let at = DateTime::from_timestamp(1_796_601_900, 0).unwrap();
        let reset = original.reset(Decimal::new(1, 2), at);
        assert_eq!(reset.id(), "acme/day/2026-12-06/reset");
        assert_eq!(reset.occurred_at, at);
        assert_eq!(
            BudgetEventKind::parse("reset"),
            Some(BudgetEventKind::Reset)
        );
        assert_eq!(BudgetEventKind::parse("other"), None);
    }
}
