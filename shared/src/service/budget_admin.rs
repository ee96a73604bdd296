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
use crate::ports::store::{Expect, LimiterStore, TenantAdmin, TenantConfigSource};
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
    /// USD charged to the period: the reconciled cost of finished calls and the worst-case
    /// reservation of calls still in flight, as the limiter counts it.
    pub spent_usd: Decimal,
    /// The budget (`null`: none).
    pub budget_usd: Option<Decimal>,
    /// What is left of it, never below zero (`null`: no budget).
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
    let in_force = config.budget();
    let at = now.timestamp();
    let keys: Vec<_> = Period::ALL
        .iter()
        .map(|&period| spend_counter(id, None, period, at))
        .collect();
    let counters = store.read_counters(&keys).await?;
    let spend = |i: usize, period: Period| {
        let spent = usd_of_nanos(counters.get(i).map_or(0, |c| c.tokens).max(0));
        let budget = in_force.cap(period);
        PeriodSpend {
            started_at: DateTime::from_timestamp(period.starts_at(at), 0).unwrap_or(now),
            spent_usd: spent,
            budget_usd: budget,
            remaining_usd: budget.map(|b| (b - spent).max(Decimal::ZERO).normalize()),
        }
    };
    Ok(BudgetStatus {
        tenant_id: id.clone(),
        version: config.version,
        overrides: config.limits.budget_overrides(),
        in_force,
        day: spend(0, Period::Day),
        month: spend(1, Period::Month),
    })
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
