//! Usage table: events and hourly rollups.
//!
//! - `EVENT#{request_id}` / `EVENT`: the event as JSON (`event`), `gsi1pk = TENANT#{id}`,
//!   `gsi1sk = {created_at, ms}#{request_id}` (`by_tenant_time`: a tenant's events in order).
//! - `ROLLUP#{tenant}` / `HOUR#{yyyy-mm-ddThh}#MODEL#{model}`: top-level Numbers updated with
//!   `ADD` (`requests`, `errors`, `err_{kind}`, `prompt_tokens`, `completion_tokens`,
//!   `cached_tokens`, `cache_write_tokens`, `cost_usd`, `cache_hits`, `streamed`,
//!   `lat_00`…`lat_63`, `quality_sum`, `quality_count`, `estimated`), plus `tenant_id`, `hour`, `model`,
//!   and the activity index keys `hour_pk = HOUR#{yyyy-mm-ddThh}`, `hour_sk = {tenant}#{model}`
//!   (GSI `by_hour`, see `activity`).
//!
//! - `ROLLUP#{tenant}#USERS` / `DAY#{yyyy-mm-dd}#USER#{user}`: an end user's day (`requests`,
//!   `prompt_tokens`, `completion_tokens`, `cost_usd`, with `user` and `day`), for events that
//!   name a user.
//!
//! `record` is one TransactWriteItems: the event Put (condition: its request id is new), the
//! rollup Update, and one Update per limiter adjustment. A replayed request id fails item 0's
//! condition, which cancels the whole transaction: nothing is counted twice.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use chrono::{DateTime, SecondsFormat, Utc};

use super::DynamoStore;
use super::activity;
use super::codec::{
    self, Expr, GSI1PK, GSI1SK, Item, PK, SK, dec, get_dec, get_json, get_s, get_u64, key_pk_sk, n,
    s,
};
use super::error::{self, corrupt};
use super::limiter::{TRANSACT_MAX, counter_update, reject_duplicate_keys};
use super::tables::{HOUR_PK, HOUR_SK};
use crate::domain::ids::{RequestId, TenantId};
use crate::domain::profile::UserId;
use crate::domain::usage::{
    LATENCY_BUCKETS, UsageEvent, UsageRollup, UsageSource, UserDayRollup, UserRollups,
    latency_bucket,
};
use crate::ports::store::{CounterAdd, Recorded, StoreError, UsageQuery, UsageSink};

const EVENT_SK: &str = "EVENT";
const ERR_PREFIX: &str = "err_";

fn event_pk(request_id: &RequestId) -> String {
    format!("EVENT#{request_id}")
}

fn rollup_pk(tenant: &TenantId) -> String {
    format!("ROLLUP#{tenant}")
}

fn hour_sk(hour: DateTime<Utc>) -> String {
    format!("HOUR#{}", hour.format("%Y-%m-%dT%H"))
}

fn latency_attr(bucket: usize) -> String {
    format!("lat_{bucket:02}")
}

fn event_put(table: &str, event: &UsageEvent) -> Result<Put, StoreError> {
    let mut item = key_pk_sk(event_pk(&event.request_id), EVENT_SK);
    item.insert("event".into(), codec::json(event)?);
    item.insert("tenant_id".into(), s(event.tenant_id.as_str()));
    item.insert("cost_usd".into(), dec(event.cost_usd));
    item.insert(GSI1PK.into(), s(format!("TENANT#{}", event.tenant_id)));
    item.insert(
        GSI1SK.into(),
        s(format!(
            "{}#{}",
            event
                .created_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            event.request_id
        )),
    );
    Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#pk)")
        .expression_attribute_names("#pk", PK)
        .build()
        .map_err(error::build)
}

fn user_rollup_pk(tenant: &TenantId) -> String {
    format!("ROLLUP#{tenant}#USERS")
}

fn day_sk(day: chrono::NaiveDate) -> String {
    format!("DAY#{}", day.format("%Y-%m-%d"))
}

/// The end user's day rollup: exactly `UserDayRollup::apply`, as DynamoDB `ADD`s.
fn user_rollup_update(
    table: &str,
    event: &UsageEvent,
    user: &UserId,
) -> Result<Update, StoreError> {
    let day = event.created_at.date_naive();
    let mut expr = Expr::default();
    expr.add("requests", n(1))
        .add("prompt_tokens", n(event.usage.prompt_tokens))
        .add("completion_tokens", n(event.usage.completion_tokens))
        .add("cost_usd", dec(event.cost_usd))
        .set("user", s(user.as_str()))
        .set("day", s(day.format("%Y-%m-%d").to_string()));
    let sk = format!("{}#USER#{user}", day_sk(day));
    Update::builder()
        .table_name(table)
        .set_key(Some(key_pk_sk(user_rollup_pk(&event.tenant_id), sk)))
        .update_expression(expr.update_expression())
        .set_expression_attribute_names(expr.names_map())
        .set_expression_attribute_values(expr.values_map())
        .build()
        .map_err(error::build)
}

fn decode_user_rollup(item: &Item) -> Result<UserDayRollup, StoreError> {
    let user = UserId::parse(get_s(item, "user")?).map_err(corrupt)?;
    let day =
        chrono::NaiveDate::parse_from_str(get_s(item, "day")?, "%Y-%m-%d").map_err(corrupt)?;
    let mut rollup = UserDayRollup::empty(user, day);
    rollup.requests = get_u64(item, "requests")?;
    rollup.prompt_tokens = get_u64(item, "prompt_tokens")?;
    rollup.completion_tokens = get_u64(item, "completion_tokens")?;
    rollup.cost_usd = get_dec(item, "cost_usd")?;
    Ok(rollup)
}

/// The rollup update: exactly `UsageRollup::apply`, as DynamoDB `ADD`s.
fn rollup_update(table: &str, event: &UsageEvent) -> Result<Update, StoreError> {
    let hour = UsageRollup::hour_of(event);
    let mut expr = Expr::default();
    expr.add("requests", n(1))
        .add("prompt_tokens", n(event.usage.prompt_tokens))
        .add("completion_tokens", n(event.usage.completion_tokens))
        .add("cached_tokens", n(event.usage.cached_tokens))
        .add("cache_write_tokens", n(event.usage.cache_write_tokens))
        .add("cost_usd", dec(event.cost_usd))
        .add("cache_hits", n(u64::from(event.cache_hit)))
        .add("streamed", n(u64::from(event.streamed)))
        .add(
            "estimated",
            n(u64::from(event.usage_source == UsageSource::Estimated)),
        )
        .add(&latency_attr(latency_bucket(event.latency_ms)), n(1))
        .set("tenant_id", s(event.tenant_id.as_str()))
        .set("hour", s(codec::time_key(hour)))
        .set("model", s(&event.model_requested))
        // The activity index (GSI `by_hour`, KEYS_ONLY). Set on every update, but the values
        // never change after the rollup's first write, and DynamoDB writes a GSI entry only when
        // its keys change: one index write per tenant, model and hour, not one per request.
        .set(HOUR_PK, s(activity::hour_pk(hour)))
        .set(
            HOUR_SK,
            s(activity::hour_sk(&event.tenant_id, &event.model_requested)),
        );
    if let Some(score) = event.quality_score {
        expr.add("quality_sum", dec(score))
            .add("quality_count", n(1));
    }
    if let Some(kind) = event.error_type {
        expr.add("errors", n(1))
            .add(&format!("{ERR_PREFIX}{}", kind.as_str()), n(1));
    }
    let sk = format!("{}#MODEL#{}", hour_sk(hour), event.model_requested);
    Update::builder()
        .table_name(table)
        .set_key(Some(key_pk_sk(rollup_pk(&event.tenant_id), sk)))
        .update_expression(expr.update_expression())
        .set_expression_attribute_names(expr.names_map())
        .set_expression_attribute_values(expr.values_map())
        .build()
        .map_err(error::build)
}

fn decode_rollup(item: &Item) -> Result<UsageRollup, StoreError> {
    let tenant = TenantId::parse(get_s(item, "tenant_id")?).map_err(corrupt)?;
    let hour = codec::get_time(item, "hour")?;
    let mut rollup = UsageRollup::empty(tenant, hour, get_s(item, "model")?.to_owned());
    rollup.requests = get_u64(item, "requests")?;
    rollup.errors = get_u64(item, "errors")?;
    for name in item.keys().filter(|k| k.starts_with(ERR_PREFIX)) {
        let kind = name.trim_start_matches(ERR_PREFIX).to_owned();
        rollup.errors_by_type.insert(kind, get_u64(item, name)?);
    }
    rollup.prompt_tokens = get_u64(item, "prompt_tokens")?;
    rollup.completion_tokens = get_u64(item, "completion_tokens")?;
    rollup.cached_tokens = get_u64(item, "cached_tokens")?;
    rollup.cache_write_tokens = get_u64(item, "cache_write_tokens")?;
    rollup.cost_usd = get_dec(item, "cost_usd")?;
    rollup.cache_hits = get_u64(item, "cache_hits")?;
    rollup.streamed = get_u64(item, "streamed")?;
    rollup.latency_histogram = (0..LATENCY_BUCKETS)
        .map(|bucket| get_u64(item, &latency_attr(bucket)))
        .collect::<Result<_, _>>()?;
    rollup.quality_score_sum = get_dec(item, "quality_sum")?;
    rollup.quality_score_count = get_u64(item, "quality_count")?;
    // Absent (0) on rollups written before usage provenance: none of theirs were estimated.
    rollup.estimated = get_u64(item, "estimated")?;
    Ok(rollup)
}

/// A rollup as a whole item: what the `ADD`s of its events would have built.
#[cfg(feature = "seed-rollups")]
fn encode_rollup(r: &UsageRollup) -> Item {
    let sk = format!("{}#MODEL#{}", hour_sk(r.hour), r.model);
    let mut item = key_pk_sk(rollup_pk(&r.tenant_id), sk);
    let numbers = [
        ("requests", r.requests),
        ("errors", r.errors),
        ("prompt_tokens", r.prompt_tokens),
        ("completion_tokens", r.completion_tokens),
        ("cached_tokens", r.cached_tokens),
        ("cache_write_tokens", r.cache_write_tokens),
        ("cache_hits", r.cache_hits),
        ("streamed", r.streamed),
        ("quality_count", r.quality_score_count),
        ("estimated", r.estimated),
    ];
    for (name, value) in numbers {
        item.insert(name.into(), n(value));
    }
    item.insert("cost_usd".into(), dec(r.cost_usd));
    item.insert("quality_sum".into(), dec(r.quality_score_sum));
    for (kind, count) in &r.errors_by_type {
        item.insert(format!("{ERR_PREFIX}{kind}"), n(count));
    }
    for (bucket, count) in r.latency_histogram.iter().enumerate() {
        if *count > 0 {
            item.insert(latency_attr(bucket), n(count));
        }
    }
    item.insert("tenant_id".into(), s(r.tenant_id.as_str()));
    item.insert("hour".into(), s(codec::time_key(r.hour)));
    item.insert("model".into(), s(&r.model));
    item.insert(HOUR_PK.into(), s(activity::hour_pk(r.hour)));
    item.insert(HOUR_SK.into(), s(activity::hour_sk(&r.tenant_id, &r.model)));
    item
}

#[cfg(feature = "seed-rollups")]
impl DynamoStore {
    /// Writes rollups as whole items (BatchWriteItem, 25 a request), replacing any with the
    /// same tenant, hour and model, with no events behind them: benches seed months of history
    /// this way in minutes instead of one transaction per event. Breaks "rollups equal the sum
    /// of events" on purpose, so it exists only with the test-only `seed-rollups` feature.
    pub async fn seed_rollups(&self, rollups: &[UsageRollup]) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        for chunk in rollups.chunks(25) {
            let mut requests = chunk
                .iter()
                .map(|r| {
                    PutRequest::builder()
                        .set_item(Some(encode_rollup(r)))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(error::build)
                })
                .collect::<Result<Vec<_>, _>>()?;
            for attempt in 0..10_u64 {
                if requests.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
                }
                self.trip();
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.names.usage, requests)
                    .send()
                    .await
                    .map_err(|e| error::sdk("BatchWriteItem", e))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut left| left.remove(&self.names.usage))
                    .unwrap_or_default();
            }
            if !requests.is_empty() {
                return Err(StoreError::Throttled);
            }
        }
        Ok(())
    }
}

/// The first hour start at or after `t`.
fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp();
    let floor = secs - secs.rem_euclid(3600);
    let aligned = floor == secs && t.timestamp_subsec_nanos() == 0;
    let start = if aligned { floor } else { floor + 3600 };
    DateTime::from_timestamp(start, 0).unwrap_or(t)
}

#[async_trait]
impl UsageSink for DynamoStore {
    async fn record(
        &self,
        event: &UsageEvent,
        adjustments: &[CounterAdd],
    ) -> Result<Recorded, StoreError> {
        if adjustments.len() + 3 > TRANSACT_MAX {
            return Err(StoreError::Unavailable(format!(
                "{} usage adjustments exceed one DynamoDB transaction",
                adjustments.len()
            )));
        }
        reject_duplicate_keys(adjustments, &[])?;
        let mut items = vec![
            TransactWriteItem::builder()
                .put(event_put(&self.names.usage, event)?)
                .build(),
            TransactWriteItem::builder()
                .update(rollup_update(&self.names.usage, event)?)
                .build(),
        ];
        if let Some(user) = &event.user {
            items.push(
                TransactWriteItem::builder()
                    .update(user_rollup_update(&self.names.usage, event, user)?)
                    .build(),
            );
        }
        let first_adjustment = items.len();
        for add in adjustments {
            items.push(
                TransactWriteItem::builder()
                    .update(counter_update(&self.names.limits, add)?)
                    .build(),
            );
        }
        // No ClientRequestToken: a replay of the same request id must answer Duplicate, not
        // the first call's Inserted.
        match self.transact(items, false).await? {
            None => Ok(Recorded::Inserted),
            Some(failed) if failed.first() == Some(&0) => Ok(Recorded::Duplicate),
            Some(failed) => Err(StoreError::Corrupt(format!(
                "usage adjustment {} carries a condition; reconciliations must be unconditional",
                failed
                    .first()
                    .map_or(0, |i| i.saturating_sub(first_adjustment))
            ))),
        }
    }
}

#[async_trait]
impl UsageQuery for DynamoStore {
    async fn rollups(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRollup>, StoreError> {
        let (first, end) = (ceil_hour(from), ceil_hour(to));
        if first >= end {
            return Ok(Vec::new());
        }
        // Sort keys `HOUR#{h}#MODEL#{m}` with first ≤ h < end: `HOUR#{end}` sorts before every
        // key of hour `end` and after every key of the hours before it.
        let query = self
            .client
            .query()
            .table_name(&self.names.usage)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(rollup_pk(tenant)))
            .expression_attribute_values(":lo", s(hour_sk(first)))
            .expression_attribute_values(":hi", s(hour_sk(end)))
            .consistent_read(true);
        self.query_all(query)
            .await?
            .iter()
            .map(decode_rollup)
            .filter(|r| r.as_ref().map_or(true, |r| r.hour >= from && r.hour < to))
            .collect()
    }

    async fn usage_event(&self, request_id: &RequestId) -> Result<Option<UsageEvent>, StoreError> {
        self.trip();
        let out = self
            .client
            .get_item()
            .table_name(&self.names.usage)
            .set_key(Some(key_pk_sk(event_pk(request_id), EVENT_SK)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error::sdk("GetItem", e))?;
        out.item.map(|item| get_json(&item, "event")).transpose()
    }

    async fn user_rollups(
        &self,
        tenant: &TenantId,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
        max_rows: usize,
    ) -> Result<UserRollups, StoreError> {
        if from >= to {
            return Ok(UserRollups {
                rows: Vec::new(),
                complete: true,
            });
        }
        // `DAY#{to}` sorts before every key of day `to` and after every key of the days before.
        let query = self
            .client
            .query()
            .table_name(&self.names.usage)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(user_rollup_pk(tenant)))
            .expression_attribute_values(":lo", s(day_sk(from)))
            .expression_attribute_values(":hi", s(day_sk(to)))
            .consistent_read(true);
        let (items, complete) = self.query_up_to(query, max_rows).await?;
        let rows = items
            .iter()
            .map(decode_user_rollup)
            .filter(|r| r.as_ref().map_or(true, |r| r.day >= from && r.day < to))
            .collect::<Result<_, _>>()?;
        Ok(UserRollups { rows, complete })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_round_up_unless_already_on_the_hour() {
        let on = DateTime::from_timestamp(3600 * 10, 0).unwrap();
        assert_eq!(ceil_hour(on), on);
        let past = DateTime::from_timestamp(3600 * 10 + 1, 0).unwrap();
        assert_eq!(ceil_hour(past).timestamp(), 3600 * 11);
        let nanos = DateTime::from_timestamp(3600 * 10, 1).unwrap();
        assert_eq!(ceil_hour(nanos).timestamp(), 3600 * 11);
    }

    #[test]
    fn rollup_sort_keys_order_by_hour_then_model() {
        let h = DateTime::from_timestamp(1_700_000_000 / 3600 * 3600, 0).unwrap();
        let next = h + chrono::Duration::hours(1);
        let a = format!("{}#MODEL#zeta", hour_sk(h));
        assert!(hour_sk(h) < a && a < hour_sk(next));
    }
}
