//! The caller: who a request is from, resolved once per request at the edge.
//!
//! The bearer key is the only source of tenant identity. [`Callers::resolve`] turns it into a
//! [`Caller`] (the tenant and its configuration, enabled) or a refusal; services take the
//! caller, never a key. `tollgate::routes` resolves it for every tenant route; the two metered
//! routes (chat, document upload) resolve it themselves so their refusals are metered too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::ids::TenantId;
use crate::domain::keys::{KeyPrefix, KeyScope, PresentedKey};
use crate::domain::tenant::TenantConfig;
use crate::error::GatewayError;
use crate::ports::TenantConfigSource;
use crate::ports::clock::Clock;
use crate::ports::store::{ApiKeyLookup, KeyUsage};

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
    /// Where each key's last use is recorded (`None`: it is not).
    pub uses: Option<Arc<KeyUses>>,
}

/// How often a key's last use is written: at most once per key per container per interval,
/// and at most once per interval in all (the write is conditional on the recorded use being
/// older). So a key in steady use costs each warm container one conditional write every
/// 5 minutes, whatever its request rate.
pub const KEY_USE_INTERVAL: Duration = Duration::from_secs(300);

/// Keys this container has tracked at once before it forgets them all (bounding its memory;
/// forgetting costs at most one extra write per key).
const TRACKED_KEYS: usize = 10_000;

/// Records key uses in the background, throttled per container (see [`KEY_USE_INTERVAL`]).
pub struct KeyUses {
    store: Arc<dyn KeyUsage>,
    every: Duration,
    noted: Mutex<HashMap<KeyPrefix, tokio::time::Instant>>,
}

impl KeyUses {
    /// Uses recorded in `store` every [`KEY_USE_INTERVAL`].
    pub fn new(store: Arc<dyn KeyUsage>) -> Self {
        Self::every(store, KEY_USE_INTERVAL)
    }

    /// Uses recorded in `store` at most once per key per `every`.
    pub fn every(store: Arc<dyn KeyUsage>, every: Duration) -> Self {
        Self {
            store,
            every,
            noted: Mutex::default(),
        }
    }

    /// Records that `prefix` was used at `now`, unless this container did so within the
    /// interval. The write runs in the background (a request never waits for it, and a
    /// failure is logged, never the request's); its handle is returned for tests.
    pub fn note(
        &self,
        prefix: &KeyPrefix,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        {
            let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
            let at = tokio::time::Instant::now();
            if noted
                .get(prefix)
                .is_some_and(|last| at.duration_since(*last) < self.every)
            {
                return None;
            }
            if noted.len() >= TRACKED_KEYS {
                noted.clear();
            }
            noted.insert(prefix.clone(), at);
        }
        let (store, prefix, every) = (self.store.clone(), prefix.clone(), self.every);
        Some(tokio::spawn(async move {
            if let Err(err) = store.touch_key(&prefix, now, every).await {
                tracing::warn!(key = %prefix, error = %err, "key last-use not recorded");
            }
        }))
    }
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
        if let Some(uses) = &self.uses {
            uses.note(&key.prefix, self.clock.now());
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::ports::store::StoreError;

    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl KeyUsage for Counting {
        async fn touch_key(
            &self,
            _: &KeyPrefix,
            _: chrono::DateTime<chrono::Utc>,
            _: Duration,
        ) -> Result<bool, StoreError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(true)
        }
        async fn keys_last_used(
            &self,
            _: &[KeyPrefix],
        ) -> Result<HashMap<KeyPrefix, chrono::DateTime<chrono::Utc>>, StoreError> {
            Ok(HashMap::new())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_writes_a_keys_use_at_most_once_per_interval() {
        let store = Arc::new(Counting::default());
        let uses = KeyUses::new(store.clone());
        let (a, b) = (
            KeyPrefix::parse("AAAAAAAAAAAA").unwrap(),
            KeyPrefix::parse("BBBBBBBBBBBB").unwrap(),
        );
        let now = chrono::Utc::now();
        let mut written = Vec::new();
        for _ in 0..1_000 {
            written.extend(uses.note(&a, now));
        }
        written.extend(uses.note(&b, now));
        for handle in written.drain(..) {
            handle.await.unwrap();
        }
        assert_eq!(store.0.load(Ordering::SeqCst), 2, "one write per key");
        tokio::time::advance(KEY_USE_INTERVAL - Duration::from_secs(1)).await;
        assert!(uses.note(&a, now).is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        uses.note(&a, now).unwrap().await.unwrap();
        assert_eq!(store.0.load(Ordering::SeqCst), 3);
    }
}
