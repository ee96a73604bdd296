//! When each API key was last used, on the limits table: `k#{prefix}` with `last_used_at`
//! (Unix seconds) and the TTL `expires_at` (a year after the last use, so a key unused for a
//! year stops costing storage). The gateways write it with one conditional UpdateItem, only
//! when the recorded use is older than the interval; a key listing reads them with BatchGetItem.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::DynamoStore;
use super::codec::{EXPIRES_AT, Expr, PK, get_i64, get_s, key_pk, n};
use super::error;
use crate::domain::keys::KeyPrefix;
use crate::ports::store::{KeyUsage, StoreError};

/// How long a key's last use is kept after it.
const RETENTION_SECS: i64 = 366 * 86_400;

fn usage_pk(prefix: &KeyPrefix) -> String {
    format!("k#{prefix}")
}

#[async_trait]
impl KeyUsage for DynamoStore {
    async fn touch_key(
        &self,
        prefix: &KeyPrefix,
        now: DateTime<Utc>,
        every: Duration,
    ) -> Result<bool, StoreError> {
        let now = now.timestamp();
        let cutoff = now.saturating_sub(i64::try_from(every.as_secs()).unwrap_or(i64::MAX));
        let mut expr = Expr::default();
        let last = expr.name("last_used_at");
        let cutoff = expr.value(n(cutoff));
        expr.set("last_used_at", n(now))
            .set(EXPIRES_AT, n(now + RETENTION_SECS));
        self.trip();
        let result = self
            .client
            .update_item()
            .table_name(&self.names.limits)
            .set_key(Some(key_pk(usage_pk(prefix))))
            .update_expression(expr.update_expression())
            .condition_expression(format!(
                "attribute_not_exists({last}) OR {last} <= {cutoff}"
            ))
            .set_expression_attribute_names(expr.names_map())
            .set_expression_attribute_values(expr.values_map())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(error::sdk("UpdateItem", err)),
        }
    }

    async fn keys_last_used(
        &self,
        prefixes: &[KeyPrefix],
    ) -> Result<HashMap<KeyPrefix, DateTime<Utc>>, StoreError> {
        let mut by_pk: HashMap<String, &KeyPrefix> =
            prefixes.iter().map(|p| (usage_pk(p), p)).collect();
        let pks: Vec<&str> = by_pk.keys().map(String::as_str).collect();
        let items = self.batch_get_limits(&pks, false).await?;
        let mut out = HashMap::new();
        for item in &items {
            let Some(prefix) = by_pk.remove(get_s(item, PK)?) else {
                continue;
            };
            if let Some(at) = DateTime::from_timestamp(get_i64(item, "last_used_at")?, 0) {
                out.insert(prefix.clone(), at);
            }
        }
        Ok(out)
    }
}
