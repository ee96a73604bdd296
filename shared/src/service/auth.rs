//! Authentication: the bearer key is the only source of tenant identity.

use crate::domain::ids::TenantId;
use crate::domain::keys::PresentedKey;
use crate::error::GatewayError;
use crate::ports::store::ApiKeyLookup;

/// Resolves a bearer token to its tenant. Malformed, unknown and revoked keys all get the same
/// 401, so the response says nothing about which keys exist.
pub async fn authenticate(
    keys: &dyn ApiKeyLookup,
    bearer: Option<&str>,
) -> Result<TenantId, GatewayError> {
    let raw = bearer.ok_or(GatewayError::MissingApiKey)?;
    let presented = PresentedKey::parse(raw).ok_or(GatewayError::InvalidApiKey)?;
    let stored = keys
        .find_key(presented.prefix())
        .await?
        .ok_or(GatewayError::InvalidApiKey)?;
    if stored.admits(&presented) {
        Ok(stored.tenant_id)
    } else {
        Err(GatewayError::InvalidApiKey)
    }
}
