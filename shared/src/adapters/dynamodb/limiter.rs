//! Limits table: one item per sliding-window bucket counter, `pk = {CounterKey}`, with
//! `tokens`, `requests` and the TTL attribute `expires_at`.
//!
//! An add is `ADD tokens :t, requests :r SET expires_at = :e` under the condition
//! `attribute_not_exists(tokens) OR tokens <= :cap` (cap = max − add: the counter *after* the
//! add stays within max), so the admission decision is made by DynamoDB on the item itself and
//! no number of concurrent Lambdas can push a counter past its cap. Several adds go in one
//! TransactWriteItems (all or nothing); a single add is one conditional UpdateItem, half the
//! write units of a one-item transaction.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{ConditionCheck, KeysAndAttributes, TransactWriteItem, Update};

use super::DynamoStore;
use super::codec::{EXPIRES_AT, Expr, Item, PK, get_i64, get_s, key_pk, n};
use super::error;
use crate::ports::store::{
    AddOutcome, Counter, CounterAdd, CounterGuard, CounterKey, LimiterStore, StoreError,
};

/// DynamoDB's limits per BatchGetItem and per TransactWriteItems.
const BATCH_GET_MAX: usize = 100;
pub(super) const TRANSACT_MAX: usize = 100;
/// Rounds of `UnprocessedKeys` (or of a conflicting transaction) before giving up as throttled.
const RETRIES: u32 = 5;

/// The update and (if the add is capped) condition expressions of one counter add.
pub(super) fn counter_update(table: &str, add: &CounterAdd) -> Result<Update, StoreError> {
    let mut expr = Expr::default();
    expr.add("tokens", n(add.tokens))
        .add("requests", n(add.requests))
        .set(EXPIRES_AT, n(add.expires_at));
    let mut conditions = Vec::new();
    for (attr, max, amount) in [
        ("tokens", add.max_tokens, add.tokens),
        ("requests", add.max_requests, add.requests),
    ] {
        if let Some(max) = max {
            // i128: `max - amount` cannot overflow, and DynamoDB numbers hold 38 digits.
            let cap = i128::from(max) - i128::from(amount);
            let name = expr.name(attr);
            let value = expr.value(n(cap));
            conditions.push(if cap >= 0 {
                // A missing counter is zero, which fits under any non-negative cap.
                format!("(attribute_not_exists({name}) OR {name} <= {value})")
            } else {
                // A negative cap: only a counter already below zero can take the add, exactly
                // as the embedded store decides (a missing attribute fails the comparison).
                format!("{name} <= {value}")
            });
        }
    }
    Update::builder()
        .table_name(table)
        .set_key(Some(key_pk(add.key.as_str())))
        .update_expression(expr.update_expression())
        .set_condition_expression((!conditions.is_empty()).then(|| conditions.join(" AND ")))
        .set_expression_attribute_names(expr.names_map())
        .set_expression_attribute_values(expr.values_map())
        .build()
        .map_err(error::build)
}

/// A guard as a ConditionCheck: the counter's tokens are still at most what was read (a
/// missing counter is zero).
fn counter_guard(table: &str, guard: &CounterGuard) -> Result<ConditionCheck, StoreError> {
    let mut expr = Expr::default();
    let mut conditions = Vec::new();
    for (attr, max) in [
        ("tokens", guard.max_tokens),
        ("requests", guard.max_requests),
    ] {
        let name = expr.name(attr);
        let value = expr.value(n(max));
        conditions.push(if max >= 0 {
            format!("(attribute_not_exists({name}) OR {name} <= {value})")
        } else {
            format!("{name} <= {value}")
        });
    }
    let condition = conditions.join(" AND ");
    ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key_pk(guard.key.as_str())))
        .condition_expression(condition)
        .set_expression_attribute_names(expr.names_map())
        .set_expression_attribute_values(expr.values_map())
        .build()
        .map_err(error::build)
}

/// DynamoDB refuses two operations on one item in a transaction (and duplicate keys in a
/// batch).
pub(super) fn reject_duplicate_keys(
    adds: &[CounterAdd],
    guards: &[CounterGuard],
) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    let keys = adds
        .iter()
        .map(|a| &a.key)
        .chain(guards.iter().map(|g| &g.key));
    for key in keys {
        if !seen.insert(key) {
            return Err(StoreError::Unavailable(format!(
                "counter {} appears twice in one atomic write; merge the adds first",
                key.as_str()
            )));
        }
    }
    Ok(())
}

fn backoff(attempt: u32) -> Duration {
    let base = 10_u64 << attempt.min(6);
    Duration::from_millis(base + rand::random_range(0..base))
}

fn decode_counter(item: &Item) -> Result<Counter, StoreError> {
    Ok(Counter {
        tokens: get_i64(item, "tokens")?,
        requests: get_i64(item, "requests")?,
    })
}

impl DynamoStore {
    /// One conditional UpdateItem; `false` when the condition refused it.
    async fn add_one(&self, add: &CounterAdd) -> Result<bool, StoreError> {
        let update = counter_update(&self.names.limits, add)?;
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            self.trip();
            self.wrote(1);
            let result = self
                .client
                .update_item()
                .table_name(update.table_name())
                .set_key(Some(update.key().clone()))
                .update_expression(update.update_expression())
                .set_condition_expression(update.condition_expression().map(str::to_owned))
                .set_expression_attribute_names(update.expression_attribute_names().cloned())
                .set_expression_attribute_values(update.expression_attribute_values().cloned())
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(true),
                Err(err) => err,
            };
            match err.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => return Ok(false),
                // The counter is in a concurrent transaction (a usage record reconciling it).
                Some(e) if e.is_transaction_conflict_exception() => continue,
                _ => return Err(error::sdk("UpdateItem", err)),
            }
        }
        Err(StoreError::Throttled)
    }

    /// The limits table's items with these distinct partition keys (absent ones are left out):
    /// one BatchGetItem per 100 keys, following `UnprocessedKeys`.
    pub(super) async fn batch_get_limits(
        &self,
        pks: &[&str],
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(pks.len());
        for chunk in pks.chunks(BATCH_GET_MAX) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.iter().map(|pk| key_pk(*pk)).collect()))
                    .consistent_read(consistent)
                    .build()
                    .map_err(error::build)?,
            );
            for attempt in 0..=RETRIES {
                let Some(request) = pending.take() else {
                    break;
                };
                if attempt > 0 {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                self.trip();
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.names.limits, request)
                    .send()
                    .await
                    .map_err(|e| error::sdk("BatchGetItem", e))?;
                found.extend(
                    out.responses
                        .and_then(|mut r| r.remove(&self.names.limits))
                        .unwrap_or_default(),
                );
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.names.limits))
                    .filter(|k| !k.keys().is_empty());
            }
            if pending.is_some() {
                return Err(StoreError::Throttled);
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl LimiterStore for DynamoStore {
    async fn read_counters(&self, keys: &[CounterKey]) -> Result<Vec<Counter>, StoreError> {
        // BatchGetItem rejects duplicate keys: ask for each key once, answer in `keys` order.
        let mut distinct: Vec<&str> = keys.iter().map(CounterKey::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut found = HashMap::new();
        for item in &self.batch_get_limits(&distinct, true).await? {
            found.insert(get_s(item, PK)?.to_owned(), decode_counter(item)?);
        }
        Ok(keys
            .iter()
            .map(|k| found.get(k.as_str()).copied().unwrap_or_default())
            .collect())
    }

    async fn add_counters_guarded(
        &self,
        adds: &[CounterAdd],
        guards: &[CounterGuard],
    ) -> Result<AddOutcome, StoreError> {
        match (adds, guards) {
            ([], []) => Ok(AddOutcome::Applied),
            ([add], []) => Ok(if self.add_one(add).await? {
                AddOutcome::Applied
            } else {
                AddOutcome::Refused { index: 0 }
            }),
            _ => {
                if adds.len() + guards.len() > TRANSACT_MAX {
                    return Err(StoreError::Unavailable(format!(
                        "{} counter adds and guards exceed DynamoDB's {TRANSACT_MAX} items per transaction",
                        adds.len() + guards.len()
                    )));
                }
                reject_duplicate_keys(adds, guards)?;
                let mut items = adds
                    .iter()
                    .map(|add| {
                        counter_update(&self.names.limits, add)
                            .map(|u| TransactWriteItem::builder().update(u).build())
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                for guard in guards {
                    items.push(
                        TransactWriteItem::builder()
                            .condition_check(counter_guard(&self.names.limits, guard)?)
                            .build(),
                    );
                }
                Ok(match self.transact(items, true).await? {
                    None => AddOutcome::Applied,
                    // Reasons come in request order, so the first failure is the lowest index,
                    // as the embedded store reports it; adds come before guards.
                    Some(failed) => match failed.first().copied().unwrap_or(0) {
                        index if index < adds.len() => AddOutcome::Refused { index },
                        _ => AddOutcome::Stale,
                    },
                })
            }
        }
    }
}
