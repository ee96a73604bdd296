//! Store ports: keys, tenant configuration, usage events, response cache.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::chat::Completion;
use crate::domain::ids::TenantId;
use crate::domain::keys::{KeyPrefix, StoredKey};
use crate::domain::tenant::{ProviderKind, TenantConfig};
use crate::domain::usage::UsageEvent;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store throttled the request")]
    Throttled,
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
    #[error("not found: {0}")]
    NotFound(String),
}

/// Looks up API keys by their public prefix (invoke, ingest, usage-report).
#[async_trait]
pub trait ApiKeyLookup: Send + Sync {
    async fn find_key(&self, prefix: &KeyPrefix) -> Result<Option<StoredKey>, StoreError>;
}

/// Reads tenant configuration (invoke).
#[async_trait]
pub trait TenantConfigSource: Send + Sync {
    async fn tenant_config(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Arc<TenantConfig>>, StoreError>;

    /// Who owns a fine-tuned provider model, per the operator's registry.
    async fn fine_tuned_owner(
        &self,
        provider: ProviderKind,
        model: &str,
    ) -> Result<Option<TenantId>, StoreError>;
}

/// Whether a usage event was new or a replay of one already recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Inserted,
    Duplicate,
}

/// Records usage events exactly once, keyed by request id (invoke, ingest).
#[async_trait]
pub trait UsageSink: Send + Sync {
    async fn record(&self, event: &UsageEvent) -> Result<Recorded, StoreError>;
}

/// The application-level response cache. Keys are built by `domain::cache_key` and always
/// include the tenant.
#[async_trait]
pub trait ResponseCache: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Completion>, StoreError>;
    async fn put(&self, key: &str, value: &Completion, ttl: Duration) -> Result<(), StoreError>;
}

/// Operator writes: tenants, keys, fine-tuned model registry (the CLI).
#[async_trait]
pub trait TenantAdmin: Send + Sync {
    /// Stores a validated configuration. The store assigns `version` (previous + 1).
    async fn put_tenant_config(&self, config: TenantConfig) -> Result<u64, StoreError>;
    async fn put_key(&self, key: StoredKey) -> Result<(), StoreError>;
    async fn revoke_key(&self, prefix: &KeyPrefix) -> Result<(), StoreError>;
    async fn register_fine_tuned(
        &self,
        provider: ProviderKind,
        model: &str,
        owner: &TenantId,
    ) -> Result<(), StoreError>;
}
