//! The activity index: which tenants have a rollup in an hour (anomaly-scheduler,
//! `tollgate usage top`), without scanning the usage table.
//!
//! Every rollup item carries `hour_pk = HOUR#{yyyy-mm-ddThh}` and `hour_sk = {tenant}#{model}`
//! (set by the rollup update in `usage`), the keys of the usage table's `by_hour` GSI
//! (KEYS_ONLY: its entries hold only those keys and the table's). One hour's tenants are one
//! Query on `hour_pk`, sorted by tenant then model, so a tenant's models are adjacent and
//! deduplicating is comparing with the previous entry.
//!
//! Pagination: the cursor is the last tenant returned; the next page's Query starts at
//! `hour_sk ≥ "{tenant}$"`. `$` is the character after `#`, and tenant ids use only
//! `[a-z0-9_-]` (all above `$`), so that bound sorts after every `{tenant}#{model}` of that
//! tenant and before every later tenant: a page never repeats a tenant, however many models
//! it used.
//!
//! Reads are eventually consistent (a GSI offers nothing else); the scheduler runs minutes
//! after the hour ends, long after index propagation (typically well under a second).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::DynamoStore;
use super::codec::s;
use super::error::{self, corrupt};
use super::tables::{HOUR_PK, HOUR_SK, USAGE_BY_HOUR};
use crate::domain::ids::TenantId;
use crate::domain::usage::hour_start;
use crate::ports::store::{ActivePage, StoreError, UsageActivity};

/// Index entries read per Query: enough for a page of tenants using a few models each, small
/// enough that a short page does not read (and pay for) far past itself.
const ENTRIES_PER_TENANT: usize = 2;
const MIN_ENTRIES: usize = 100;
const MAX_ENTRIES: usize = 5_000;

pub(super) fn hour_pk(hour: DateTime<Utc>) -> String {
    format!("HOUR#{}", hour.format("%Y-%m-%dT%H"))
}

pub(super) fn hour_sk(tenant: &TenantId, model: &str) -> String {
    format!("{tenant}#{model}")
}

/// The first `hour_sk` after every entry of `tenant` (see the module docs).
fn after_tenant(tenant: &TenantId) -> String {
    format!("{tenant}$")
}

fn tenant_of(entry: &super::codec::Item) -> Result<TenantId, StoreError> {
    let sk = super::codec::get_s(entry, HOUR_SK)?;
    let (tenant, _model) = sk
        .split_once('#')
        .ok_or_else(|| corrupt(format!("activity entry `{sk}` has no model")))?;
    TenantId::parse(tenant).map_err(corrupt)
}

#[async_trait]
impl UsageActivity for DynamoStore {
    async fn active_tenants(
        &self,
        hour: DateTime<Utc>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<ActivePage, StoreError> {
        let limit = limit.max(1);
        let after = cursor
            .as_deref()
            .map(ActivePage::decode_cursor)
            .transpose()?;
        let entries = (limit.saturating_add(1))
            .saturating_mul(ENTRIES_PER_TENANT)
            .clamp(MIN_ENTRIES, MAX_ENTRIES);
        let mut query = self
            .client
            .query()
            .table_name(&self.names.usage)
            .index_name(USAGE_BY_HOUR)
            .expression_attribute_names("#pk", HOUR_PK)
            .expression_attribute_values(":pk", s(hour_pk(hour_start(hour))))
            .limit(i32::try_from(entries).unwrap_or(i32::MAX));
        query = match &after {
            // An empty string cannot be a key condition value: without a cursor, no bound.
            None => query.key_condition_expression("#pk = :pk"),
            Some(tenant) => query
                .key_condition_expression("#pk = :pk AND #sk >= :after")
                .expression_attribute_names("#sk", HOUR_SK)
                .expression_attribute_values(":after", s(after_tenant(tenant))),
        };

        // One more tenant than asked tells whether another page exists, so the last page
        // says so (no empty page after it).
        let mut tenants: Vec<TenantId> = Vec::new();
        let mut start = None;
        loop {
            self.trip();
            let out = query
                .clone()
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| error::sdk("Query", e))?;
            let items = out.items.unwrap_or_default();
            self.count_read(&items, false);
            for entry in &items {
                let tenant = tenant_of(entry)?;
                if tenants.last() != Some(&tenant) {
                    tenants.push(tenant);
                }
            }
            if tenants.len() > limit {
                tenants.truncate(limit);
                let next = tenants.last().map(ActivePage::cursor_after);
                return Ok(ActivePage { tenants, next });
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => {
                    return Ok(ActivePage {
                        tenants,
                        next: None,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_after_a_tenant_skips_its_models_and_keeps_every_later_tenant() {
        let acme = TenantId::parse("acme").unwrap();
        let bound = after_tenant(&acme);
        for model in ["", "gpt-4o", "~~~", "\u{10FFFF}", "a#b"] {
            assert!(hour_sk(&acme, model) < bound, "{model}");
        }
        for later in ["acme-2", "acme_x", "acme0", "acmez", "b"] {
            let tenant = TenantId::parse(later).unwrap();
            assert!(hour_sk(&tenant, "gpt-4o") > bound, "{later}");
        }
    }

    #[test]
    fn hour_keys_name_the_utc_hour() {
        let t = DateTime::from_timestamp(1_773_500_400, 0).unwrap();
        assert_eq!(hour_pk(t), "HOUR#2026-03-14T15");
    }
}
