//! Tenant provisioning, as operators drive it: create a tenant, replace its configuration,
//! disable or enable it. The CLI (`tollgate tenant`, which builds a configuration from flags)
//! and the admin API (which takes it as JSON) both call these, so the validation, the
//! optimistic concurrency and the audit record cannot differ between them.
//!
//! Every write is conditional (`Expect`): a create only if the tenant does not exist, a
//! change only if the tenant is still at the version the caller read (the admin API's
//! `If-Match`). A change that changes nothing writes nothing and records nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::audit::AuditAction;
use crate::domain::ids::TenantId;
use crate::domain::pricing::PriceTable;
use crate::domain::tenant::TenantConfig;
use crate::ports::store::{Catalog, Expect, StoreError, TenantAdmin, TenantConfigSource};
use crate::service::audit::{Auditor, Unaudited};

/// Why a tenant change was refused.
#[derive(Debug, thiserror::Error)]
pub enum TenantAdminError {
    /// No such tenant.
    #[error("no tenant `{0}`")]
    NotFound(TenantId),
    /// The tenant exists already (a create).
    #[error("tenant `{0}` already exists")]
    Exists(TenantId),
    /// The configuration is not valid; the message names what and why.
    #[error("{0}")]
    Invalid(String),
    /// The tenant is not at the version the change was based on (`current`: its version now,
    /// `None` if it no longer exists). Nothing was written.
    #[error("tenant `{id}` is at version {}, not the version this change was based on", current.map_or_else(|| "none".to_owned(), |v| v.to_string()))]
    Conflict {
        /// The tenant.
        id: TenantId,
        /// Its version now.
        current: Option<u64>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change was made; its audit record was not written.
    #[error(transparent)]
    Unaudited(#[from] Unaudited),
}

/// A tenant as written (or found unchanged), with warnings about routes the gateway would
/// refuse at request time (no price, a fine-tuned model registered to someone else).
#[derive(Debug)]
pub struct Saved {
    /// The stored configuration, its version included.
    pub config: Arc<TenantConfig>,
    /// The version before the change (`None`: created).
    pub previous: Option<u64>,
    /// Whether anything was written.
    pub changed: bool,
    /// Warnings for the operator.
    pub warnings: Vec<String>,
}

/// The checks every stored configuration passes: the domain's validation and every price
/// override's.
pub fn check(config: &TenantConfig) -> Result<(), TenantAdminError> {
    let id = &config.tenant_id;
    config
        .validate()
        .map_err(|e| TenantAdminError::Invalid(format!("tenant `{id}` would be invalid: {e}")))?;
    for (model, price) in &config.price_overrides {
        price.validate().map_err(|reason| {
            TenantAdminError::Invalid(format!(
                "tenant `{id}`: price override for `{model}`: {reason}"
            ))
        })?;
    }
    Ok(())
}

/// Creates `config`'s tenant, which must not exist yet (version 1).
pub async fn create<S>(
    store: &S,
    audit: &Auditor<'_>,
    mut config: TenantConfig,
    now: DateTime<Utc>,
) -> Result<Saved, TenantAdminError>
where
    S: TenantAdmin + TenantConfigSource + Catalog + ?Sized,
{
    let id = config.tenant_id.clone();
    check(&config)?;
    let warnings = route_warnings(store, &config).await?;
    let version = match store
        .put_tenant_config_if(config.clone(), Expect::Absent)
        .await
    {
        Err(StoreError::Conflict { .. }) => return Err(TenantAdminError::Exists(id)),
        other => other?,
    };
    config.version = version;
    record(audit, AuditAction::TenantCreate, None, &config, now).await?;
    Ok(Saved {
        config: Arc::new(config),
        previous: None,
        changed: true,
        warnings,
    })
}

/// Replaces tenant `id`'s configuration with `config` if the tenant is as `expect` says
/// (`Expect::Version` from an `If-Match`; `Expect::Anything` takes the version read here).
pub async fn replace<S>(
    store: &S,
    audit: &Auditor<'_>,
    id: &TenantId,
    expect: Expect,
    config: TenantConfig,
    now: DateTime<Utc>,
) -> Result<Saved, TenantAdminError>
where
    S: TenantAdmin + TenantConfigSource + Catalog + ?Sized,
{
    if &config.tenant_id != id {
        return Err(TenantAdminError::Invalid(format!(
            "the configuration is for tenant `{}`, not `{id}`: a tenant's id cannot change",
            config.tenant_id
        )));
    }
    let current = current(store, id, expect).await?;
    check(&config)?;
    let warnings = route_warnings(store, &config).await?;
    write(
        store,
        audit,
        AuditAction::TenantUpdate,
        &current,
        config,
        now,
    )
    .await
    .map(|mut saved| {
        saved.warnings = warnings;
        saved
    })
}

/// Disables (or enables) tenant `id` if it is as `expect` says. Its keys are refused while
/// it is disabled.
pub async fn set_disabled<S>(
    store: &S,
    audit: &Auditor<'_>,
    id: &TenantId,
    disabled: bool,
    expect: Expect,
    now: DateTime<Utc>,
) -> Result<Saved, TenantAdminError>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    let action = if disabled {
        AuditAction::TenantDisable
    } else {
        AuditAction::TenantEnable
    };
    let edit = Edit { id, expect, action };
    update(store, audit, edit, now, |config| {
        config.disabled = disabled;
        Ok(())
    })
    .await
}

/// One change to part of a tenant's configuration: which tenant, the version it is based on,
/// and how the audit log names it.
pub struct Edit<'a> {
    /// The tenant.
    pub id: &'a TenantId,
    /// What the stored tenant must be for the change to apply.
    pub expect: Expect,
    /// The audit action.
    pub action: AuditAction,
}

/// Applies `change` to tenant `edit.id`'s configuration if it is as `edit.expect` says, and
/// writes and records the result (nothing when nothing changed). `change` refuses what it
/// cannot apply; it checks what it changes (a disable must work on any stored tenant).
pub async fn update<S>(
    store: &S,
    audit: &Auditor<'_>,
    edit: Edit<'_>,
    now: DateTime<Utc>,
    change: impl FnOnce(&mut TenantConfig) -> Result<(), TenantAdminError>,
) -> Result<Saved, TenantAdminError>
where
    S: TenantAdmin + TenantConfigSource + ?Sized,
{
    let current = current(store, edit.id, edit.expect).await?;
    let mut config = (*current).clone();
    change(&mut config)?;
    write(store, audit, edit.action, &current, config, now).await
}

/// Tenant `id` as stored, checked against `expect` before anything else is done.
async fn current<S>(
    store: &S,
    id: &TenantId,
    expect: Expect,
) -> Result<Arc<TenantConfig>, TenantAdminError>
where
    S: TenantConfigSource + ?Sized,
{
    let current = store.tenant_config(id).await?;
    match (current, expect) {
        (None, _) => Err(TenantAdminError::NotFound(id.clone())),
        (Some(c), Expect::Version(v)) if c.version != v => Err(TenantAdminError::Conflict {
            id: id.clone(),
            current: Some(c.version),
        }),
        (Some(c), Expect::Absent) => Err(TenantAdminError::Exists(c.tenant_id.clone())),
        (Some(c), _) => Ok(c),
    }
}

/// Writes `config` over `current` if the stored tenant is still at `current`'s version, and
/// records it; writes and records nothing when nothing changed.
async fn write<S>(
    store: &S,
    audit: &Auditor<'_>,
    action: AuditAction,
    current: &Arc<TenantConfig>,
    mut config: TenantConfig,
    now: DateTime<Utc>,
) -> Result<Saved, TenantAdminError>
where
    S: TenantAdmin + ?Sized,
{
    config.version = current.version;
    if same(&config, current) {
        return Ok(Saved {
            config: current.clone(),
            previous: Some(current.version),
            changed: false,
            warnings: Vec::new(),
        });
    }
    let id = config.tenant_id.clone();
    let version = match store
        .put_tenant_config_if(config.clone(), Expect::Version(current.version))
        .await
    {
        Err(StoreError::Conflict { current }) => {
            return Err(TenantAdminError::Conflict { id, current });
        }
        other => other?,
    };
    config.version = version;
    record(audit, action, Some(current), &config, now).await?;
    Ok(Saved {
        config: Arc::new(config),
        previous: Some(current.version),
        changed: true,
        warnings: Vec::new(),
    })
}

/// Whether two configurations are the same, versions aside.
fn same(a: &TenantConfig, b: &TenantConfig) -> bool {
    let json = |c: &TenantConfig| {
        let mut v = serde_json::to_value(c).unwrap_or(serde_json::Value::Null);
        if let Some(map) = v.as_object_mut() {
            map.remove("version");
        }
        v
    };
    json(a) == json(b)
}

async fn record(
    audit: &Auditor<'_>,
    action: AuditAction,
    before: Option<&TenantConfig>,
    after: &TenantConfig,
    now: DateTime<Utc>,
) -> Result<(), Unaudited> {
    let id = &after.tenant_id;
    audit
        .record_values(
            Some(id),
            action,
            format!("tenant/{id}"),
            (before, after),
            now,
        )
        .await
}

/// Routes the gateway would refuse at request time, said now: fine-tuned models not
/// registered to this tenant, and models with no price.
pub async fn route_warnings<S>(
    store: &S,
    config: &TenantConfig,
) -> Result<Vec<String>, TenantAdminError>
where
    S: TenantConfigSource + Catalog + ?Sized,
{
    let id = &config.tenant_id;
    let mut prices = PriceTable::bundled()
        .map_err(|e| TenantAdminError::Invalid(format!("the bundled price table: {e}")))?;
    prices
        .extend(store.prices().await?)
        .map_err(|e| TenantAdminError::Invalid(format!("the operator price entries: {e}")))?;
    let mut warnings = Vec::new();
    for (name, route) in &config.routes {
        let (provider, model) = (route.provider, &route.model);
        if route.is_fine_tuned() {
            let owner = store.fine_tuned_owner(provider, model).await?;
            if owner.as_ref() != Some(id) {
                let whose = owner.map_or("no tenant".to_owned(), |o| format!("tenant `{o}`"));
                warnings.push(format!(
                    "warning: route `{name}` uses fine-tuned {provider} model `{model}`, which is \
                     registered to {whose}: requests for it get 403 until \
                     `tollgate tenant register-fine-tuned {id} --provider {provider} --model {model}`"
                ));
            }
        }
        let priced =
            config.price_overrides.contains_key(model) || prices.lookup(provider, model).is_some();
        if !priced {
            warnings.push(format!(
                "warning: route `{name}`: no price for {provider} model `{model}`; requests for \
                 it are refused until you add --price-override {model}=INPUT,OUTPUT or \
                 `tollgate price set {provider} {model} ...`"
            ));
        }
    }
    Ok(warnings)
}
