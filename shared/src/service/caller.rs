//! The caller: who a request is from, resolved once per request at the edge.
//!
//! The bearer key is the only source of tenant identity. [`Callers::resolve`] turns it into a
//! [`Caller`] (the tenant and its configuration, enabled) or a refusal; services take the
//! caller, never a key. `tollgate::routes` resolves it for every tenant route; the two metered
//! routes (chat, document upload) resolve it themselves so their refusals are metered too.

use std::sync::Arc;

use crate::domain::ids::TenantId;
use crate::domain::keys::{KeyScope, PresentedKey};
use crate::domain::tenant::TenantConfig;
use crate::error::GatewayError;
use crate::ports::TenantConfigSource;
use crate::ports::clock::Clock;
use crate::ports::store::ApiKeyLookup;

/// An authenticated, configured and enabled tenant: what services act for.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant the key belongs to.
    pub tenant: TenantId,
    /// Its configuration, as read for this request.
    pub config: Arc<TenantConfig>,
}

/// Why a request has no caller, and whose key it was if that much is known (a disabled
/// tenant's): for the refused request's metrics record.
#[derive(Debug)]
pub struct Refused {
    /// The key's tenant, when the key was valid.
    pub tenant: Option<TenantId>,
    /// The error the client gets: 401, or 403 `tenant_disabled`, or a store failure.
    pub error: GatewayError,
}

impl From<GatewayError> for Refused {
    fn from(error: GatewayError) -> Self {
        Self {
            tenant: None,
            error,
        }
    }
}

/// The extractor: keys and tenant configurations (behind the per-container cache).
#[derive(Clone)]
pub struct Callers {
    /// API keys by prefix.
    pub keys: Arc<dyn ApiKeyLookup>,
    /// Tenant configurations.
    pub tenants: Arc<dyn TenantConfigSource>,
    /// What "now" is for a key's expiry.
    pub clock: Arc<dyn Clock>,
}

impl Callers {
    /// The caller a request's bearer token identifies: its tenant, configured and enabled,
    /// with a key live now that allows `scope` (`None`: any live key, e.g. listing models).
    pub async fn resolve(
        &self,
        bearer: Option<&str>,
        scope: Option<KeyScope>,
    ) -> Result<Caller, Refused> {
        let (tenant, key) = authenticate(self.keys.as_ref(), bearer, self.clock.now()).await?;
        let known = |error: GatewayError| Refused {
            tenant: Some(tenant.clone()),
            error,
        };
        if let Some(scope) = scope
            && !key.allows(scope)
        {
            return Err(known(GatewayError::InsufficientScope { scope }));
        }
        let config = self
            .tenants
            .tenant_config(&tenant)
            .await
            .map_err(|err| known(err.into()))?
            .ok_or_else(|| {
                known(GatewayError::internal(format!(
                    "tenant {tenant} has a key but no configuration"
                )))
            })?;
        if config.disabled {
            return Err(known(GatewayError::TenantDisabled));
        }
        Ok(Caller { tenant, config })
    }
}

/// Resolves a bearer token to its tenant and key. Malformed, unknown, revoked and expired
/// keys all get the same 401, so the response says nothing about which keys exist.
pub async fn authenticate(
    keys: &dyn ApiKeyLookup,
    bearer: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(TenantId, crate::domain::keys::StoredKey), GatewayError> {
    let raw = bearer.ok_or(GatewayError::MissingApiKey)?;
    let presented = PresentedKey::parse(raw).ok_or(GatewayError::InvalidApiKey)?;
    let stored = keys
        .find_key(presented.prefix())
        .await?
        .ok_or(GatewayError::InvalidApiKey)?;
    if stored.admits(&presented, now) {
        Ok((stored.tenant_id.clone(), stored))
    } else {
        Err(GatewayError::InvalidApiKey)
    }
}
