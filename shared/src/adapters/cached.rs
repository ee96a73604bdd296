//! A short-lived, per-container cache in front of the key and tenant-config lookups.
//!
//! Invoke reads a key and a config on every request; on a warm Lambda they rarely change, so
//! caching them for a few seconds removes two DynamoDB round trips from the hot path. The
//! price is staleness: a revoked key, a disabled tenant or a config change takes effect within
//! `ttl` (default 30 s, `TOLLGATE_DIRECTORY_CACHE_SECS`; 0 turns the cache off). Misses (unknown
//! key prefixes) are cached for a shorter time so that floods of bad keys do not each cost a
//! read, while a newly issued key starts working within seconds.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::ids::TenantId;
use crate::domain::keys::{KeyPrefix, StoredKey};
use crate::domain::tenant::{ProviderKind, TenantConfig};
use crate::ports::store::{ApiKeyLookup, StoreError, TenantConfigSource};

const CAPACITY: usize = 10_000;
const MISS_TTL: Duration = Duration::from_secs(5);

struct TtlMap<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlMap<K, V> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        let (value, expires) = entries.get(key)?;
        (*expires > Instant::now()).then(|| value.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                let now = Instant::now();
                entries.retain(|_, (_, expires)| *expires > now);
                if entries.len() >= CAPACITY {
                    entries.clear();
                }
            }
            entries.insert(key, (value, Instant::now() + ttl.min(self.ttl)));
        }
    }
}

/// [`ApiKeyLookup`] and [`TenantConfigSource`] with a per-container TTL cache in front.
pub struct CachedDirectory {
    keys_source: Arc<dyn ApiKeyLookup>,
    configs_source: Arc<dyn TenantConfigSource>,
    keys: TtlMap<KeyPrefix, Option<StoredKey>>,
    configs: TtlMap<TenantId, Option<Arc<TenantConfig>>>,
    owners: TtlMap<(ProviderKind, String), Option<TenantId>>,
}

impl CachedDirectory {
    /// Caches lookups from `keys` and `configs` for `ttl` (misses for at most 5 s); a zero `ttl`
    /// caches nothing.
    pub fn new(
        keys: Arc<dyn ApiKeyLookup>,
        configs: Arc<dyn TenantConfigSource>,
        ttl: Duration,
    ) -> Self {
        Self {
            keys_source: keys,
            configs_source: configs,
            keys: TtlMap::new(ttl),
            configs: TtlMap::new(ttl),
            owners: TtlMap::new(ttl),
        }
    }
}

#[async_trait]
impl ApiKeyLookup for CachedDirectory {
    async fn find_key(&self, prefix: &KeyPrefix) -> Result<Option<StoredKey>, StoreError> {
        if let Some(hit) = self.keys.get(prefix) {
            return Ok(hit);
        }
        let found = self.keys_source.find_key(prefix).await?;
        let ttl = if found.is_some() {
            self.keys.ttl
        } else {
            MISS_TTL
        };
        self.keys.put(prefix.clone(), found.clone(), ttl);
        Ok(found)
    }
}

#[async_trait]
impl TenantConfigSource for CachedDirectory {
    async fn tenant_config(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Arc<TenantConfig>>, StoreError> {
        if let Some(hit) = self.configs.get(tenant) {
            return Ok(hit);
        }
        let found = self.configs_source.tenant_config(tenant).await?;
        self.configs
            .put(tenant.clone(), found.clone(), self.configs.ttl);
        Ok(found)
    }

    async fn fine_tuned_owner(
        &self,
        provider: ProviderKind,
        model: &str,
    ) -> Result<Option<TenantId>, StoreError> {
        let key = (provider, model.to_owned());
        if let Some(hit) = self.owners.get(&key) {
            return Ok(hit);
        }
        let found = self
            .configs_source
            .fine_tuned_owner(provider, model)
            .await?;
        self.owners.put(key, found.clone(), self.owners.ttl);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Default)]
    struct Counting {
        reads: AtomicU32,
    }

    #[async_trait]
    impl ApiKeyLookup for Counting {
        async fn find_key(&self, _: &KeyPrefix) -> Result<Option<StoredKey>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        }
    }

    #[async_trait]
    impl TenantConfigSource for Counting {
        async fn tenant_config(
            &self,
            _: &TenantId,
        ) -> Result<Option<Arc<TenantConfig>>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        }
        async fn fine_tuned_owner(
            &self,
            _: ProviderKind,
            _: &str,
        ) -> Result<Option<TenantId>, StoreError> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn repeated_lookups_within_the_ttl_read_the_store_once() {
        let inner = Arc::new(Counting::default());
        let cached = CachedDirectory::new(inner.clone(), inner.clone(), Duration::from_secs(30));
        let tenant = TenantId::parse("acme").unwrap();
        for _ in 0..5 {
            cached.tenant_config(&tenant).await.unwrap();
        }
        assert_eq!(inner.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_zero_ttl_disables_caching() {
        let inner = Arc::new(Counting::default());
        let cached = CachedDirectory::new(inner.clone(), inner.clone(), Duration::ZERO);
        let tenant = TenantId::parse("acme").unwrap();
        cached.tenant_config(&tenant).await.unwrap();
        cached.tenant_config(&tenant).await.unwrap();
        assert_eq!(inner.reads.load(Ordering::SeqCst), 2);
    }
}
