//! The operator's catalog as operators change it: model prices and upstream quotas. The CLI
//! (`tollgate price`, `tollgate quota`) and the admin API (`/admin/v1/prices`,
//! `/admin/v1/quotas`) both call these, so the checks and the audit record cannot differ.
//!
//! Gateways read the catalog once per container (`service::catalog`): a change reaches new
//! containers, not warm ones.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::audit::AuditAction;
use crate::domain::limits::{MAX_LIMIT, UpstreamQuota};
use crate::domain::pricing::{PriceEntry, PriceTable};
use crate::domain::tenant::ProviderKind;
use crate::ports::store::{Catalog, PriceLayer, StoreError};
use crate::service::audit::{Auditor, Unaudited};

/// Why a catalog change was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogAdminError {
    /// The entry is not valid; the message names what and why. Nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The deployment's own catalog is broken (the bundled table, or a stored entry); the
    /// message names it. Nothing was written.
    #[error("{0}")]
    Internal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change was made; its audit record was not written.
    #[error(transparent)]
    Unaudited(#[from] Unaudited),
}

/// Where a price in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// The table bundled with Tollgate.
    Bundled,
    /// The operator's entry, for a model the bundled table does not have.
    Operator,
    /// The operator's entry, replacing the bundled price.
    OperatorOverBundled,
}

impl PriceSource {
    /// How `tollgate price list` says it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Bundled => "bundled",
            Self::Operator => "operator",
            Self::OperatorOverBundled => "operator (overrides bundled)",
        }
    }
}

/// One price in force.
#[derive(Debug, Clone, Serialize)]
pub struct PriceInForce {
    /// The entry (USD per 1M tokens).
    #[serde(flatten)]
    pub entry: PriceEntry,
    /// Where it comes from.
    pub source: PriceSource,
}

/// The price table in force: the bundled prices with the operator's entries on top.
#[derive(Debug, Clone, Serialize)]
pub struct PricesInForce {
    /// Every price, by provider and model.
    pub prices: Vec<PriceInForce>,
    /// The date the bundled prices were taken, if the table says.
    pub bundled_as_of: Option<String>,
}

fn bundled() -> Result<PriceTable, CatalogAdminError> {
    PriceTable::bundled()
        .map_err(|e| CatalogAdminError::Internal(format!("the bundled price table: {e}")))
}

/// The prices in force and where each comes from.
pub async fn prices<S>(store: &S) -> Result<PricesInForce, CatalogAdminError>
where
    S: Catalog + ?Sized,
{
    let bundled = bundled()?;
    let bundled_keys: BTreeSet<(ProviderKind, String)> = bundled
        .entries()
        .into_iter()
        .map(|e| (e.provider, e.model))
        .collect();
    let operator = store.prices().await?;
    let operator_keys: BTreeSet<(ProviderKind, String)> = operator
        .iter()
        .map(|e| (e.provider, e.model.clone()))
        .collect();
    let as_of = bundled.as_of().map(str::to_owned);
    let mut merged = bundled;
    merged.extend(operator).map_err(|e| {
        CatalogAdminError::Internal(format!(
            "an operator price entry in the store is invalid: {e}"
        ))
    })?;
    let prices = merged
        .entries()
        .into_iter()
        .map(|entry| {
            let key = (entry.provider, entry.model.clone());
            let source = match (operator_keys.contains(&key), bundled_keys.contains(&key)) {
                (true, true) => PriceSource::OperatorOverBundled,
                (true, false) => PriceSource::Operator,
                _ => PriceSource::Bundled,
            };
            PriceInForce { entry, source }
        })
        .collect();
    Ok(PricesInForce {
        prices,
        bundled_as_of: as_of,
    })
}

/// Sets the operator's price for `entry`'s model (adding the model, or replacing the bundled
/// price), after checking that the operator's entries together with it still load: the
/// gateway refuses every request when they do not. The write is conditional on the entries'
/// version that was checked, so concurrent sets cannot each pass the check and together break
/// it: a set that loses the race checks again on what won. Returns the operator's entry it
/// replaced.
pub async fn set_price<S>(
    store: &S,
    audit: &Auditor<'_>,
    entry: PriceEntry,
    now: DateTime<Utc>,
) -> Result<Option<PriceEntry>, CatalogAdminError>
where
    S: Catalog + ?Sized,
{
    check_model(&entry.model)?;
    let same = |e: &PriceEntry| (e.provider, &e.model) == (entry.provider, &entry.model);
    for _ in 0..SET_ATTEMPTS {
        let PriceLayer {
            entries: mut layer,
            version,
        } = store.price_layer().await?;
        let before = layer.iter().find(|e| same(e)).cloned();
        layer.retain(|e| !same(e));
        layer.push(entry.clone());
        bundled()?
            .extend(layer)
            .map_err(|e| CatalogAdminError::Invalid(e.to_string()))?;
        match store.put_price_if(&entry, version).await {
            Err(StoreError::Conflict { .. }) => continue,
            other => other?,
        }
        let resource = format!("price/{}/{}", entry.provider, entry.model);
        audit
            .record_values(
                None,
                AuditAction::PriceSet,
                resource,
                (before.as_ref(), &entry),
                now,
            )
            .await?;
        return Ok(before);
    }
    Err(StoreError::Throttled.into())
}

/// How many times a price set checks again after losing a race before giving up (503).
const SET_ATTEMPTS: usize = 8;

/// The upstream quotas, by provider, model and key (the model-wide one first).
pub async fn quotas<S>(store: &S) -> Result<Vec<UpstreamQuota>, CatalogAdminError>
where
    S: Catalog + ?Sized,
{
    let mut quotas = store.upstream_quotas().await?;
    quotas.sort_by(|a, b| (a.provider, &a.model, a.key).cmp(&(b.provider, &b.model, b.key)));
    Ok(quotas)
}

/// Sets an upstream quota (the model's across the provider's keys, or one key's). Returns the
/// quota it replaced.
pub async fn set_quota<S>(
    store: &S,
    audit: &Auditor<'_>,
    quota: UpstreamQuota,
    now: DateTime<Utc>,
) -> Result<Option<UpstreamQuota>, CatalogAdminError>
where
    S: Catalog + ?Sized,
{
    check_model(&quota.model)?;
    if quota.key.is_some() && quota.provider == ProviderKind::Bedrock {
        return Err(CatalogAdminError::Invalid(
            "bedrock has no key pool: its calls are signed with the function's role; set a \
             quota for the model without a key"
                .into(),
        ));
    }
    if !(1..=MAX_LIMIT).contains(&quota.tokens_per_minute) {
        return Err(CatalogAdminError::Invalid(format!(
            "tokens_per_minute must be from 1 to {MAX_LIMIT} (10^15), got {}",
            quota.tokens_per_minute
        )));
    }
    let before = store
        .upstream_quotas()
        .await?
        .into_iter()
        .find(|q| (q.provider, &q.model, q.key) == (quota.provider, &quota.model, quota.key));
    store.put_upstream_quota(&quota).await?;
    let key = quota.key.map_or_else(String::new, |k| format!("/key{k}"));
    let resource = format!("quota/{}/{}{key}", quota.provider, quota.model);
    audit
        .record_values(
            None,
            AuditAction::QuotaSet,
            resource,
            (before.as_ref(), &quota),
            now,
        )
        .await?;
    Ok(before)
}

/// A provider model id as prices and quotas name it: not empty, no whitespace.
fn check_model(model: &str) -> Result<(), CatalogAdminError> {
    if model.trim().is_empty() || model.chars().any(char::is_whitespace) {
        return Err(CatalogAdminError::Invalid(format!(
            "model `{model}` is not a provider model id (empty or with whitespace)"
        )));
    }
    Ok(())
}
