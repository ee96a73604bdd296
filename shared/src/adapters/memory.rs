//! The embedded store: every store port in memory. Used by `tollgate serve` and fast tests,
//! and held to the same contract suite as the DynamoDB adapter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::chat::Completion;
use crate::domain::ids::{RequestId, TenantId};
use crate::domain::keys::{KeyPrefix, StoredKey};
use crate::domain::tenant::{ProviderKind, TenantConfig};
use crate::domain::usage::UsageEvent;
use crate::ports::metrics::{MetricsSink, RequestMetrics};
use crate::ports::store::{
    ApiKeyLookup, Recorded, ResponseCache, StoreError, TenantAdmin, TenantConfigSource, UsageSink,
};

/// Entries the response cache keeps before evicting; bounded so a busy local server cannot
/// grow without limit.
const CACHE_CAPACITY: usize = 10_000;

#[derive(Default)]
pub struct MemoryStore {
    keys: RwLock<HashMap<KeyPrefix, StoredKey>>,
    configs: RwLock<HashMap<TenantId, Arc<TenantConfig>>>,
    fine_tuned: RwLock<HashMap<(ProviderKind, String), TenantId>>,
    usage: Mutex<UsageLog>,
    cache: Mutex<HashMap<String, (Completion, Instant)>>,
}

#[derive(Default)]
struct UsageLog {
    seen: HashMap<RequestId, usize>,
    events: Vec<UsageEvent>,
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Unavailable("in-memory store lock poisoned".into())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every usage event recorded so far, in order.
    pub fn usage_events(&self) -> Vec<UsageEvent> {
        self.usage
            .lock()
            .map(|log| log.events.clone())
            .unwrap_or_default()
    }
}

#[async_trait]
impl ApiKeyLookup for MemoryStore {
    async fn find_key(&self, prefix: &KeyPrefix) -> Result<Option<StoredKey>, StoreError> {
        Ok(self.keys.read().map_err(poisoned)?.get(prefix).cloned())
    }
}

#[async_trait]
impl TenantConfigSource for MemoryStore {
    async fn tenant_config(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Arc<TenantConfig>>, StoreError> {
        Ok(self.configs.read().map_err(poisoned)?.get(tenant).cloned())
    }

    async fn fine_tuned_owner(
        &self,
        provider: ProviderKind,
        model: &str,
    ) -> Result<Option<TenantId>, StoreError> {
        Ok(self
            .fine_tuned
            .read()
            .map_err(poisoned)?
            .get(&(provider, model.to_owned()))
            .cloned())
    }
}

#[async_trait]
impl UsageSink for MemoryStore {
    async fn record(&self, event: &UsageEvent) -> Result<Recorded, StoreError> {
        let mut log = self.usage.lock().map_err(poisoned)?;
        if log.seen.contains_key(&event.request_id) {
            return Ok(Recorded::Duplicate);
        }
        let index = log.events.len();
        log.seen.insert(event.request_id.clone(), index);
        log.events.push(event.clone());
        Ok(Recorded::Inserted)
    }
}

#[async_trait]
impl ResponseCache for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Completion>, StoreError> {
        let cache = self.cache.lock().map_err(poisoned)?;
        Ok(cache
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(value, _)| value.clone()))
    }

    async fn put(&self, key: &str, value: &Completion, ttl: Duration) -> Result<(), StoreError> {
        let mut cache = self.cache.lock().map_err(poisoned)?;
        let now = Instant::now();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, (_, expires)| *expires > now);
        }
        if cache.len() >= CACHE_CAPACITY {
            // Still full of live entries: drop the one closest to expiry.
            if let Some(victim) = cache
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(k, _)| k.clone())
            {
                cache.remove(&victim);
            }
        }
        cache.insert(key.to_owned(), (value.clone(), now + ttl));
        Ok(())
    }
}

#[async_trait]
impl TenantAdmin for MemoryStore {
    async fn put_tenant_config(&self, mut config: TenantConfig) -> Result<u64, StoreError> {
        let mut configs = self.configs.write().map_err(poisoned)?;
        let version = configs
            .get(&config.tenant_id)
            .map_or(1, |old| old.version + 1);
        config.version = version;
        configs.insert(config.tenant_id.clone(), Arc::new(config));
        Ok(version)
    }

    async fn put_key(&self, key: StoredKey) -> Result<(), StoreError> {
        self.keys
            .write()
            .map_err(poisoned)?
            .insert(key.prefix.clone(), key);
        Ok(())
    }

    async fn revoke_key(&self, prefix: &KeyPrefix) -> Result<(), StoreError> {
        let mut keys = self.keys.write().map_err(poisoned)?;
        let key = keys
            .get_mut(prefix)
            .ok_or_else(|| StoreError::NotFound(format!("key {prefix}")))?;
        key.revoked_at.get_or_insert_with(chrono::Utc::now);
        Ok(())
    }

    async fn register_fine_tuned(
        &self,
        provider: ProviderKind,
        model: &str,
        owner: &TenantId,
    ) -> Result<(), StoreError> {
        self.fine_tuned
            .write()
            .map_err(poisoned)?
            .insert((provider, model.to_owned()), owner.clone());
        Ok(())
    }
}

/// A metrics sink that keeps what it is given, for tests and the bench.
#[derive(Default)]
pub struct MemoryMetrics {
    requests: Mutex<Vec<RequestMetrics>>,
    failures: Mutex<Vec<UsageEvent>>,
}

impl MemoryMetrics {
    pub fn requests(&self) -> Vec<RequestMetrics> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn metering_failures(&self) -> Vec<UsageEvent> {
        self.failures.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl MetricsSink for MemoryMetrics {
    fn request(&self, metrics: &RequestMetrics) {
        if let Ok(mut r) = self.requests.lock() {
            r.push(metrics.clone());
        }
    }

    fn metering_failure(&self, event: &UsageEvent, _error: &str) {
        if let Ok(mut r) = self.failures.lock() {
            r.push(event.clone());
        }
    }
}
