//! Cache table: `pk = {cache key}`, the entry as JSON in `completion` (chat) or `embeddings`
//! (an embeddings reply), TTL attribute `expires_at`.
//!
//! DynamoDB deletes expired items lazily (typically within days), so `get` also ignores an
//! item whose `expires_at` has passed.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::DynamoStore;
use super::codec::{EXPIRES_AT, get_i64, get_json, json, key_pk, n};
use super::error;
use crate::domain::chat::Completion;
use crate::ports::store::{CachedEmbeddings, ResponseCache, StoreError};

/// The attribute a chat completion is stored in.
const COMPLETION: &str = "completion";
/// The attribute an embeddings reply is stored in.
const EMBEDDINGS: &str = "embeddings";

impl DynamoStore {
    /// The live item under `key`, if it holds `attribute`.
    async fn cached<T: DeserializeOwned>(
        &self,
        key: &str,
        attribute: &str,
    ) -> Result<Option<T>, StoreError> {
        self.trip();
        let out = self
            .client
            .get_item()
            .table_name(&self.names.cache)
            .set_key(Some(key_pk(key)))
            .send()
            .await
            .map_err(|e| error::sdk("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        // Millisecond expiry in `expires_ms` (TTL itself only has seconds); fall back to
        // the TTL attribute for items written without it.
        let expires_ms = match get_i64(&item, "expires_ms")? {
            0 => get_i64(&item, EXPIRES_AT)?.saturating_mul(1000),
            ms => ms,
        };
        if expires_ms <= Utc::now().timestamp_millis() || !item.contains_key(attribute) {
            return Ok(None);
        }
        get_json(&item, attribute).map(Some)
    }

    async fn cache_put<T: Serialize + Sync>(
        &self,
        key: &str,
        attribute: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_ms = Utc::now().timestamp_millis().saturating_add(ttl_ms);
        let mut item = key_pk(key);
        item.insert(attribute.into(), json(value)?);
        item.insert("expires_ms".into(), n(expires_ms));
        // TTL wants whole seconds; round up so the item is never deleted before it expires.
        item.insert(EXPIRES_AT.into(), n(expires_ms.div_euclid(1000) + 1));
        self.trip();
        self.client
            .put_item()
            .table_name(&self.names.cache)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| error::sdk("PutItem", e))?;
        Ok(())
    }
}

#[async_trait]
impl ResponseCache for DynamoStore {
    async fn get(&self, key: &str) -> Result<Option<Completion>, StoreError> {
        self.cached(key, COMPLETION).await
    }

    async fn put(&self, key: &str, value: &Completion, ttl: Duration) -> Result<(), StoreError> {
        self.cache_put(key, COMPLETION, value, ttl).await
    }

    async fn get_embeddings(&self, key: &str) -> Result<Option<CachedEmbeddings>, StoreError> {
        self.cached(key, EMBEDDINGS).await
    }

    async fn put_embeddings(
        &self,
        key: &str,
        value: &CachedEmbeddings,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.cache_put(key, EMBEDDINGS, value, ttl).await
    }
}
