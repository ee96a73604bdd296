//! DynamoDB: every store port, on four tables (string keys `pk`/`sk`, on-demand billing).
//!
//! - **tenants** (`pk`, `sk`; GSI `by_tenant` on `gsi1pk`/`gsi1sk`): tenant configs
//!   `TENANT#{id}`/`CONFIG`, API keys `KEY#{prefix}`/`KEY`, the fine-tuned registry
//!   `FT#{provider}#{model}`/`OWNER`, the catalog `PRICE#{provider}`/`{model}` and
//!   `QUOTA#{provider}`/`{model}`, end-user profiles `PROFILE#{tenant}#{user}`/`PROFILE`, the
//!   document registry `DOCS#{tenant}`/`{document id}` with the tenant's storage counter
//!   `DOCS#{tenant}`/`#storage`, the audit log `AUDIT#{tenant}`/`{position}` (TTL `expires_at`,
//!   on audit records only).
//! - **usage** (`pk`, `sk`; GSI `by_tenant_time`): events `EVENT#{request_id}`/`EVENT`, hourly
//!   rollups `ROLLUP#{tenant}`/`HOUR#{yyyy-mm-ddThh}#MODEL#{model}`; a tenant's events newest
//!   first from `by_tenant_time` (`events`); rollups by hour from the KEYS_ONLY GSI `by_hour`
//!   (the activity index, `activity`); budget events `BUDGET#{day|month}#{period}`/`{event id}`
//!   (`budget_events`).
//! - **limits** (`pk` = the counter key; TTL `expires_at`): sliding-window bucket counters, and
//!   each API key's last use `k#{prefix}` (`key_usage`).
//! - **cache** (`pk` = the cache key; TTL `expires_at`): cached completions.
//!
//! Each submodule's header gives its items and access patterns. The table shapes live in
//! [`tables`] only; `tollgate init` and `template.yaml` are both generated from them. Only this
//! module names SDK types.

mod activity;
mod audit;
mod budget_events;
mod cache;
mod catalog;
mod codec;
mod documents;
mod error;
mod events;
mod key_usage;
mod limiter;
mod profiles;
mod records;
pub mod tables;
mod tenants;
mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

use crate::adapters::aws::AwsConfigSource;
use crate::adapters::tls;
use crate::ports::store::StoreError;

pub use tables::{TableDefinition, TableNames, TableReport};

/// Timeouts for every DynamoDB call. The SDK has none by default (only a connect timeout),
/// and a limiter that hangs is worse than one that fails closed with a 503.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
const EMULATOR_TIMEOUT: Duration = Duration::from_secs(60);

/// Retries of a transaction cancelled by a concurrent one on the same item.
const CONFLICT_RETRIES: u32 = 3;

/// The DynamoDB store. Cheap to clone (the SDK client is an `Arc` inside); build it once per
/// process.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    names: TableNames,
    round_trips: Arc<AtomicU64>,
    /// Estimated read capacity consumed, in half units (see [`DynamoStore::read_units`]).
    read_half_units: Arc<AtomicU64>,
    /// Write capacity units of counter and usage writes (see [`DynamoStore::write_units`]).
    write_units: Arc<AtomicU64>,
}

impl DynamoStore {
    /// A store over `client` as it is configured (timeouts included), on the tables `names`.
    pub fn new(client: Client, names: TableNames) -> Self {
        Self {
            client,
            names,
            round_trips: Arc::new(AtomicU64::new(0)),
            read_half_units: Arc::new(AtomicU64::new(0)),
            write_units: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A client configured from `aws` (region, credentials, `AWS_ENDPOINT_URL` /
    /// `AWS_ENDPOINT_URL_DYNAMODB` for an emulator).
    pub async fn from_env(aws: AwsConfigSource, names: TableNames) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let config = aws.load(timeouts, "DYNAMODB").await;
        Self::new(Client::new(&config), names)
    }

    /// A client for a local emulator (moto) at `endpoint`: region us-east-1 and static test
    /// credentials, whatever the environment says, so a test can never reach real AWS.
    ///
    /// Timeouts are generous: single-threaded moto queues concurrent requests (about 60–200
    /// writes/s on a busy 2-core machine), and an attempt timed out while queued may still be
    /// applied, so the SDK's retry would count it twice and tests would flake.
    pub fn emulator(endpoint: &str, names: TableNames) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(EMULATOR_TIMEOUT)
            .operation_timeout(EMULATOR_TIMEOUT)
            .build();
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "emulator"))
            .endpoint_url(endpoint)
            .http_client(tls::aws_http_client())
            .timeout_config(timeouts)
            .build();
        Self::new(Client::from_conf(config), names)
    }

    /// The tables this store reads and writes.
    pub fn names(&self) -> &TableNames {
        &self.names
    }

    /// DynamoDB API calls made so far by this store (and its clones): one per call, whatever
    /// the SDK retried underneath. The round-trip benchmark reads it before and after a request.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Write capacity units the limiter and usage writes of this store (and its clones) were
    /// billed so far, counting each item as at most 1 KB (counters, rollups and guards are far
    /// below; a usage event's item is ~1 KB): 2 per item of a TransactWriteItems (condition
    /// checks included, as DynamoDB bills them), 1 per single conditional UpdateItem. Every
    /// attempt counts, a cancelled transaction too (DynamoDB bills those).
    pub fn write_units(&self) -> u64 {
        self.write_units.load(Ordering::Relaxed)
    }

    /// Creates the four tables (existing ones are left alone) and enables TTL where the
    /// definitions ask for it. Idempotent.
    pub async fn create_tables(&self) -> Result<Vec<TableReport>, StoreError> {
        tables::create_tables(&self.client, &self.names).await
    }

    /// Read capacity units the Queries of this store (and its clones) consumed so far, as
    /// DynamoDB bills them: per request, the size of the items read rounded up to 4 KB, one
    /// unit per 4 KB strongly consistent, half eventually consistent (every GSI read). Sizes
    /// are computed from the items as DynamoDB sizes them (names + values), so the figure holds
    /// against an emulator too. Counted where the scheduler and reports read (rollup and
    /// activity-index Queries); GetItem/BatchGetItem are not included.
    pub fn read_units(&self) -> f64 {
        self.read_half_units.load(Ordering::Relaxed) as f64 / 2.0
    }

    /// Adds one read request's consumption to [`DynamoStore::read_units`].
    fn count_read(&self, items: &[codec::Item], consistent: bool) {
        let bytes: u64 = items.iter().map(codec::item_size).sum();
        let blocks = bytes.div_ceil(4096).max(1);
        let half_units = if consistent { 2 * blocks } else { blocks };
        self.read_half_units
            .fetch_add(half_units, Ordering::Relaxed);
    }

    /// Counts `units` write capacity units (see [`DynamoStore::write_units`]).
    fn wrote(&self, units: u64) {
        self.write_units.fetch_add(units, Ordering::Relaxed);
    }

    /// Counts one DynamoDB API call; called right before every `send()`.
    fn trip(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// One TransactWriteItems. `Ok(None)`: applied. `Ok(Some(indexes))`: cancelled because the
    /// conditions of the items at `indexes` failed (nothing applied). Cancellations caused by a
    /// concurrent transaction on the same item (`TransactionConflict`, which the SDK does not
    /// retry) are retried a few times with jittered backoff, then reported as throttling.
    ///
    /// `idempotent`: send a fresh ClientRequestToken per attempt, so the SDK's own retry of an
    /// attempt whose response was lost cannot apply the writes twice.
    async fn transact(
        &self,
        items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
        idempotent: bool,
    ) -> Result<Option<Vec<usize>>, StoreError> {
        for attempt in 0..=CONFLICT_RETRIES {
            if attempt > 0 {
                let base = 10_u64 << attempt;
                let jitter = rand::random_range(0..base);
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
            let mut request = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()));
            if idempotent {
                request = request.client_request_token(uuid::Uuid::new_v4().to_string());
            }
            self.trip();
            self.write_units
                .fetch_add(2 * items.len() as u64, Ordering::Relaxed);
            let err = match request.send().await {
                Ok(_) => return Ok(None),
                Err(err) => err,
            };
            let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                err.as_service_error()
            else {
                return Err(error::sdk("TransactWriteItems", err));
            };
            let codes: Vec<&str> = cancelled
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect();
            let failed: Vec<usize> = codes
                .iter()
                .enumerate()
                .filter(|(_, code)| **code == "ConditionalCheckFailed")
                .map(|(i, _)| i)
                .collect();
            if !failed.is_empty() {
                return Ok(Some(failed));
            }
            if codes.contains(&"TransactionConflict") {
                continue;
            }
            if codes
                .iter()
                .any(|c| error::is_throttling_code(c) || c.contains("Throughput"))
            {
                return Err(StoreError::Throttled);
            }
            return Err(StoreError::Unavailable(format!(
                "DynamoDB TransactWriteItems cancelled: {}",
                codes.join(", ")
            )));
        }
        Err(StoreError::Throttled)
    }

    /// An unconditional PutItem on the tenants table (configuration-like items).
    async fn put_tenants_item(&self, item: codec::Item) -> Result<(), StoreError> {
        self.trip();
        self.client
            .put_item()
            .table_name(&self.names.tenants)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| error::sdk("PutItem", e))?;
        Ok(())
    }

    /// Every item a Query matches, following `LastEvaluatedKey` (one round trip per page).
    /// [`DynamoStore::query_all`], stopping once `max` items were read: `(items, complete)`,
    /// `complete` false when the query had more.
    async fn query_up_to(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        max: usize,
    ) -> Result<(Vec<codec::Item>, bool), StoreError> {
        let consistent =
            query.get_consistent_read().unwrap_or(false) && query.get_index_name().is_none();
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let left = (max + 1 - items.len()).min(1_000) as i32;
            self.trip();
            let out = query
                .clone()
                .limit(left)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| error::sdk("Query", e))?;
            let page = out.items.unwrap_or_default();
            self.count_read(&page, consistent);
            items.extend(page);
            if items.len() > max {
                items.truncate(max);
                return Ok((items, false));
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok((items, true)),
            }
        }
    }

    /// Puts `item` into `table` unless an item with its key is there: `Duplicate` then, and
    /// nothing written. What makes a record once per key, whoever writes it first.
    async fn put_once(
        &self,
        table: &str,
        item: codec::Item,
    ) -> Result<crate::ports::store::Recorded, StoreError> {
        use crate::ports::store::Recorded;
        self.trip();
        let result = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", codec::PK)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Recorded::Inserted),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(Recorded::Duplicate)
            }
            Err(err) => Err(error::sdk("PutItem", err)),
        }
    }

    async fn query_all(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<codec::Item>, StoreError> {
        let consistent =
            query.get_consistent_read().unwrap_or(false) && query.get_index_name().is_none();
        let mut items = Vec::new();
        let mut start = None;
        loop {
            self.trip();
            let out = query
                .clone()
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| error::sdk("Query", e))?;
            let page = out.items.unwrap_or_default();
            self.count_read(&page, consistent);
            items.extend(page);
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}
