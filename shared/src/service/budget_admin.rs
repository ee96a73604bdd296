//! A tenant's dollar budgets as operators read and set them: the overrides it has, the budgets
//! in force (its tier's with those), and what it has spent in the current UTC day and month.
//! The admin API's `/admin/v1/tenants/{id}/budget` serves these; `tollgate tenant update
//! --budget-*` writes the same fields through the same tenant write.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::domain::audit::AuditAction;
use crate::domain::budget::{Budget, BudgetOverrides, Period, usd_of_nanos};
use crate::domain::ids::TenantId;
use crate::domain::tenant::TenantConfig;
use crate::ports::store::{Expect, LimiterStore, StoreError, TenantAdmin, TenantConfigSource};
use crate::service::audit::Auditor;
use crate::service::limiter::spend_counter;
use crate::service::tenant_admin::{self, Edit, Saved, TenantAdminError};

/// A tenant's budgets and spend.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetStatus {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The configuration version read (the `ETag` a change is based on).
    pub version: u64,
    /// The tenant's own budgets (`null`: its tier's).
    pub overrides: BudgetOverrides,
    /// The budgets in force.
    pub in_force: Budget,
    /// The current UTC day.
    pub day: PeriodSpend,
    /// The current UTC calendar month.
    pub month: PeriodSpend,
}

/// Spend in one budget period.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodSpend {
    /// When the period started (00:00 UTC).
    pub started_at: DateTime<Utc>,
    /// The budget (`null`: none).
    pub budget_usd: Option<Decimal>,
    /// USD charged to the period: the reconciled cost of finished calls and the worst-case
    /// reservation of calls still in flight, as the limiter counts it. The limiter counts a
    /// period only while it has a budget, so this is `null` without one (the usage API has
    /// every call's cost), and a budget set in the middle of a period counts from then on.
    pub spent_usd: Option<Decimal>,
    /// What is left of the budget, never below zero (`null`: no budget, or spend unknown).
    pub remaining_usd: Option<Decimal>,
}

/// Tenant `id`'s budgets and its spend in the periods containing `now`.
pub async fn status<S>(
    store: &S,
    id: &TenantId,
    now: DateTime<Utc>,
) -> Result<BudgetStatus, TenantAdminError>
where
    S: TenantConfigSource + LimiterStore + ?Sized,
{
    let config = store
        .tenant_config(id)
        .await?
        .ok_or_else(|| TenantAdminError::NotFound(id.clone()))?;
    Ok(status_of(store, &config, now).await?)
}

/// `config`'s budgets and the spend of its budgeted periods containing `now` (one read of
/// their counters; none when no period has a budget).
pub async fn status_of<S>(
    store: &S,
    config: &TenantConfig,
    now: DateTime<Utc>,
) -> Result<BudgetStatus, StoreError>
where
    S: LimiterStore + ?Sized,
{
    let budget = config.budget();
    let at = now.timestamp();
    let counted: Vec<Period> = Period::ALL
        .into_iter()
        .filter(|p| budget.cap(*p).is_some())
        .collect();
    let keys: Vec<_> = counted
        .iter()
        .map(|&period| spend_counter(&config.tenant_id, None, period, at))
        .collect();
    let counters = if keys.is_empty() {
        Vec::new()
    } else {
        store.read_counters(&keys).await?
    };
    let spent = |period: Period| {
        let i = counted.iter().position(|p| *p == period)?;
        Some(usd_of_nanos(counters.get(i).map_or(0, |c| c.tokens).max(0)))
    };
    Ok(unread(config, now).with_spend(spent(Period::Day), spent(Period::Month)))
}

/// `config`'s budgets with their spend unknown (the read after a change failed).
pub fn unread(config: &TenantConfig, now: DateTime<Utc>) -> BudgetStatus {
    let in_force = config.budget();
    let at = now.timestamp();
    let period = |period: Period| PeriodSpend {
        started_at: DateTime::from_timestamp(period.starts_at(at), 0).unwrap_or(now),
        budget_usd: in_force.cap(period),
        spent_usd: None,
        remaining_usd: None,
    };
    BudgetStatus {
        tenant_id: config.tenant_id.clone(),
        version: config.version,
        overrides: config.limits.budget_overrides(),
        in_force,
        day: period(Period::Day),
        month: period(Period::Month),
    }
}

impl BudgetStatus {
    fn with_spend(mut self, day: Option<Decimal>, month: Option<Decimal>) -> Self {
        for (period, spent) in [(&mut self.day, day), (&mut self.month, month)] {
            period.spent_usd = spent;
            period.remaining_usd = period
                .budget_usd
                .zip(spent)
                .map(|(b, s)| (b - s).max(Decimal::ZERO).normalize());
        }
        self
    }
}

/// Replaces tenant `id`'s budget overrides with `budget` if the tenant is as `expect` says;
/// recorded as a `tenant.update`, as `tollgate tenant update --budget-*` records it.
pub async fn set<S>(
    store: &S,
    audit: &Auditor<'_>,
    id: &TenantId,
    budget: BudgetOverrides,
    expect: Expect,
    now: DateTime<Utc>,
) -> Result<Saved, TenantAdminError>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    let edit = Edit {
        id,
        expect,
        action: AuditAction::TenantUpdate,
    };
    tenant_admin::update(store, audit, edit, now, |config| {
        config.limits.set_budget_overrides(budget);
        tenant_admin::check(config)
    })
    .await
}
