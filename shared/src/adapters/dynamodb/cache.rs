//! Cache table: `pk = {cache key}`, `completion` (JSON), TTL attribute `expires_at`.
//!
//! DynamoDB deletes expired items lazily (typically within days), so `get` also ignores an
//! item whose `expires_at` has passed.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::DynamoStore;
use super::codec::{EXPIRES_AT, get_i64, get_json, json, key_pk, n};
use super::error;
use crate::domain::chat::Completion;
use crate::ports::store::{ResponseCache, StoreError};

#[async_trait]
impl ResponseCache for DynamoStore {
    async fn get(&self, key: &str) -> Result<Option<Completion>, StoreError> {
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
        if expires_ms <= Utc::now().timestamp_millis() {
            return Ok(None);
        }
        get_json(&item, "completion").map(Some)
    }

    async fn put(&self, key: &str, value: &Completion, ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_ms = Utc::now().timestamp_millis().saturating_add(ttl_ms);
        let mut item = key_pk(key);
        item.insert("completion".into(), json(value)?);
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
