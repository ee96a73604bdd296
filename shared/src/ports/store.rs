//! Store ports: keys, tenant configuration, usage events, response cache, end-user profiles.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use chrono::{DateTime, Utc};

use crate::domain::chat::Completion;
use crate::domain::documents::{DocumentCursor, DocumentId, DocumentPage};
use crate::domain::ids::{RequestId, TenantId};
use crate::domain::keys::{KeyPrefix, StoredKey};
use crate::domain::limits::UpstreamQuota;
use crate::domain::pricing::PriceEntry;
use crate::domain::profile::{ProfileRecord, UserId};
use crate::domain::storage::{Claim, Removal, Settlement, StorageSlot};
use crate::domain::tenant::{ProviderKind, TenantConfig};
use crate::domain::usage::UsageEvent;
use crate::domain::usage::UsageRollup;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store failed or could not be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store rate limited the request.
    #[error("store throttled the request")]
    Throttled,
    /// An item was found but could not be decoded.
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
    /// The item the operation needs does not exist (e.g. revoking an unknown key).
    #[error("not found: {0}")]
    NotFound(String),
    /// A conditional write found the item other than expected (optimistic concurrency): it
    /// changed since it was read, or exists when it should not. `current` is its version now
    /// (`None`: it does not exist).
    #[error("conflict: the item is at version {}", current.map_or_else(|| "none (absent)".to_owned(), |v| v.to_string()))]
    Conflict {
        /// The stored version when the write was refused.
        current: Option<u64>,
    },
}

/// What a conditional configuration write expects to find stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Anything: the write is unconditional.
    Anything,
    /// Nothing: the write creates the item.
    Absent,
    /// The item at exactly this version (an `If-Match`).
    Version(u64),
}

/// Looks up API keys by their public prefix (invoke, ingest, usage-report).
#[async_trait]
pub trait ApiKeyLookup: Send + Sync {
    /// The key with this prefix, revoked or not; `None` when there is none.
    async fn find_key(&self, prefix: &KeyPrefix) -> Result<Option<StoredKey>, StoreError>;
}

/// Reads tenant configuration (invoke).
#[async_trait]
pub trait TenantConfigSource: Send + Sync {
    /// The tenant's current configuration; `None` for an unknown tenant.
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

/// The operator's price entries as one versioned set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceLayer {
    /// The entries, by provider and model.
    pub entries: Vec<PriceEntry>,
    /// Moves by one with every write.
    pub version: u64,
}

/// Operator-maintained catalog: price overrides and upstream quotas per provider model.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Operator price entries (merged over the bundled table by the service).
    async fn prices(&self) -> Result<Vec<PriceEntry>, StoreError> {
        Ok(self.price_layer().await?.entries)
    }
    /// The operator price entries with the version of the set (0 before the first write):
    /// what [`Catalog::put_price_if`] is conditional on.
    async fn price_layer(&self) -> Result<PriceLayer, StoreError>;
    /// Stores `entry` (replacing any for its provider and model) if the operator's entries are
    /// still at `version`, moving them to `version + 1`, in one atomic write; else
    /// [`StoreError::Conflict`] and nothing is written. A set checked against one version of
    /// the entries therefore lands on that version, however many are made at once.
    async fn put_price_if(&self, entry: &PriceEntry, version: u64) -> Result<(), StoreError>;
    /// Stores an operator price on whatever version is current (seeding, tests): retries
    /// [`Catalog::put_price_if`] while other writes move the version.
    async fn put_price(&self, entry: &PriceEntry) -> Result<(), StoreError> {
        for _ in 0..16 {
            let version = self.price_layer().await?.version;
            match self.put_price_if(entry, version).await {
                Err(StoreError::Conflict { .. }) => continue,
                other => return other,
            }
        }
        Err(StoreError::Throttled)
    }
    /// Tokens per minute the deployment may send to each provider model, shared by all tenants.
    async fn upstream_quotas(&self) -> Result<Vec<UpstreamQuota>, StoreError>;
    /// Stores an upstream quota, replacing any for the same provider and model.
    async fn put_upstream_quota(&self, quota: &UpstreamQuota) -> Result<(), StoreError>;
}

pub use crate::domain::documents::DocumentRecord;

/// Whether a claim was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The claim was applied to the entry and the counter.
    Claimed,
    /// The counter would have gone past the claim's `max`: nothing was written.
    QuotaExceeded,
    /// The entry is no longer the version read, or the counter was created meanwhile: nothing
    /// was written; read the slot again.
    Changed,
}

/// The registry of a tenant's documents and its storage charges (ingest). Every operation
/// names the tenant, and reads or writes only that tenant's items; the rules for what to write
/// are `domain::storage`'s.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// One document id's entry and the tenant's counter: one item each, however many documents
    /// the tenant has (a strongly consistent read).
    async fn storage_slot(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
    ) -> Result<StorageSlot, StoreError>;

    /// Applies `claim` to the entry and the counter atomically: all of it or nothing.
    async fn claim_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        claim: &Claim,
    ) -> Result<ClaimOutcome, StoreError>;

    /// Stores `record` as the committed version and settles the claim, atomically. `false`:
    /// the lease is no longer the claim's (it expired and another request took the id), and
    /// nothing was written.
    async fn commit_document(
        &self,
        record: &DocumentRecord,
        settlement: &Settlement,
    ) -> Result<bool, StoreError>;

    /// Settles a claim whose version was not committed (the record stays as it was).
    /// `false`: the lease is no longer the claim's, and nothing was written.
    async fn release_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        settlement: &Settlement,
    ) -> Result<bool, StoreError>;

    /// Deletes the entry and credits its charge, atomically. `false`: the entry changed since
    /// it was read, and nothing was written.
    async fn remove_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        removal: &Removal,
    ) -> Result<bool, StoreError>;

    /// At most `limit` (at least 1) committed documents of `tenant` by id, after `cursor` when
    /// one is given. `next` is `None` once the listing is exhausted. A page may hold fewer than
    /// `limit` documents with a `next` cursor when a store bounds the entries it examines per
    /// call (entries of ids whose first ingest has not committed are not listed).
    async fn documents_page(
        &self,
        tenant: &TenantId,
        cursor: Option<&DocumentCursor>,
        limit: usize,
    ) -> Result<DocumentPage, StoreError>;
}

/// One turn of a stored conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    /// Who spoke.
    pub role: crate::domain::chat::Role,
    /// What was said.
    pub content: String,
    /// Tokens of `content` (the tokenizer's count), for loading within a budget.
    pub tokens: u32,
    /// When the turn was stored.
    pub at: DateTime<Utc>,
}

/// Conversation history per tenant (invoke). The same conversation id under another tenant is
/// another, unrelated conversation: every key includes the tenant.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Appends turns after the existing ones.
    async fn append_turns(
        &self,
        tenant: &TenantId,
        conversation: &str,
        turns: &[Turn],
    ) -> Result<(), StoreError>;

    /// The newest `max_turns` turns, oldest first.
    async fn load_turns(
        &self,
        tenant: &TenantId,
        conversation: &str,
        max_turns: usize,
    ) -> Result<Vec<Turn>, StoreError>;
}

/// A detected anomaly (anomaly-scheduler): recorded at most once per tenant, hour and kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnomalyRecord {
    /// The tenant the anomaly is about.
    pub tenant_id: TenantId,
    /// The hour (or day, for quality) the anomaly is about.
    pub hour: DateTime<Utc>,
    /// `cost_spike` or `quality_drop`.
    pub kind: String,
    /// The hour's cost in USD (`cost_spike`), or the day's average quality score (`quality_drop`).
    pub observed: rust_decimal::Decimal,
    /// The 7-day average the observation was compared with, in the same unit as `observed`.
    pub baseline: rust_decimal::Decimal,
    /// When the scheduler detected it.
    pub detected_at: DateTime<Utc>,
}

/// Records detected anomalies, once each (anomaly-scheduler).
#[async_trait]
pub trait AnomalyStore: Send + Sync {
    /// Records the anomaly unless one for the same tenant, hour and kind exists (a retried or
    /// duplicated scheduled run): `Duplicate` then, and nothing written.
    async fn record_anomaly(&self, anomaly: &AnomalyRecord) -> Result<Recorded, StoreError>;

    /// Anomalies whose hour is in `[from, to)`, every tenant's, oldest first.
    async fn anomalies(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AnomalyRecord>, StoreError>;
}

/// A recorded budget event and whether it was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBudgetEvent {
    /// The event.
    pub event: crate::domain::budget_event::BudgetEvent,
    /// Whether a publisher marked it sent.
    pub published: bool,
}

/// Where the limiter records budget events (invoke, ingest): the outbox's one write, apart
/// from [`BudgetEventStore`] so the functions that only record link nothing else of it.
#[async_trait]
pub trait BudgetEventRecorder: Send + Sync {
    /// Records `event` unless one with its id exists (another container, a retried request):
    /// `Duplicate` then, and nothing written.
    async fn record_budget_event(
        &self,
        event: &crate::domain::budget_event::BudgetEvent,
    ) -> Result<Recorded, StoreError>;
}

/// The budget events' outbox: each event recorded once (invoke's limiter), then published and
/// marked (anomaly-scheduler).
#[async_trait]
pub trait BudgetEventStore: BudgetEventRecorder {
    /// Every event recorded for the period of `period` that starts at `start`, every
    /// tenant's, in id order.
    async fn budget_events(
        &self,
        period: crate::domain::budget::Period,
        start: DateTime<Utc>,
    ) -> Result<Vec<StoredBudgetEvent>, StoreError>;

    /// Whether the event with `event`'s id is published: `None` if it is not recorded.
    async fn budget_event_published(
        &self,
        event: &crate::domain::budget_event::BudgetEvent,
    ) -> Result<Option<bool>, StoreError>;

    /// Marks the event with `event`'s id published; a no-op when it already is.
    async fn mark_budget_event_published(
        &self,
        event: &crate::domain::budget_event::BudgetEvent,
    ) -> Result<(), StoreError>;
}

/// Whether a usage event was new or a replay of one already recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written now.
    Inserted,
    /// Already recorded earlier; nothing was written.
    Duplicate,
}

/// Records usage events exactly once, keyed by request id (invoke, ingest).
///
/// A new event, its hourly rollup and the limiter `adjustments` (reconciling the reservation
/// to the actual usage) are written in one atomic step; a duplicate (a retried invocation)
/// writes nothing at all. So rollups always equal the sum of events, and a reservation is
/// reconciled exactly once. Adjustment keys must be distinct.
#[async_trait]
pub trait UsageSink: Send + Sync {
    /// Records `event` with its `adjustments`, or nothing if its request id was already recorded.
    async fn record(
        &self,
        event: &UsageEvent,
        adjustments: &[CounterAdd],
    ) -> Result<Recorded, StoreError>;
}

/// Reads hourly rollups (usage-report, anomaly-scheduler, tests).
#[async_trait]
pub trait UsageQuery: Send + Sync {
    /// Rollups of `tenant` whose hour starts in `[from, to)`, oldest first.
    async fn rollups(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRollup>, StoreError>;

    /// One recorded event, by request id.
    async fn usage_event(&self, request_id: &RequestId) -> Result<Option<UsageEvent>, StoreError>;

    /// `tenant`'s per-user day rollups for the UTC days in `[from, to)`: at most `max_rows`
    /// of them (`complete` is `false` when more exist).
    async fn user_rollups(
        &self,
        tenant: &TenantId,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
        max_rows: usize,
    ) -> Result<crate::domain::usage::UserRollups, StoreError>;
}

/// The key of one limiter counter (a bucket of a sliding window), built by
/// `service::limiter`. Stores treat it as opaque.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey(pub String);

impl CounterKey {
    /// The key as the store writes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A counter's value; a missing counter reads as zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Tokens counted in the bucket.
    pub tokens: i64,
    /// Requests counted in the bucket.
    pub requests: i64,
}

/// One conditional increment (negative amounts refund).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterAdd {
    /// The counter to change.
    pub key: CounterKey,
    /// Tokens to add (negative to refund).
    pub tokens: i64,
    /// Requests to add (negative to refund).
    pub requests: i64,
    /// Apply only if the counter's tokens *after* the add are at most this.
    pub max_tokens: Option<i64>,
    /// Apply only if the counter's requests *after* the add are at most this.
    pub max_requests: Option<i64>,
    /// Unix seconds after which the store may delete the counter (DynamoDB TTL).
    pub expires_at: i64,
}

/// A condition on a counter the write does not change: its tokens and requests must still be
/// at most these (what the snapshot the decision was made on saw; a missing counter is zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterGuard {
    /// The counter the condition is on.
    pub key: CounterKey,
    /// Most tokens the counter may hold for the write to apply.
    pub max_tokens: i64,
    /// Most requests the counter may hold for the write to apply.
    pub max_requests: i64,
}

/// The result of [`LimiterStore::add_counters_guarded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// Every add was applied.
    Applied,
    /// Nothing was applied: the add at `index` would have broken its condition.
    Refused {
        /// Position in the `adds` slice of the add that would have broken its condition.
        index: usize,
    },
    /// Nothing was applied: a guarded counter grew since it was read, so the decision must be
    /// made again on a fresh read.
    Stale,
}

/// The limiter's storage: sliding-window bucket counters with atomic conditional increments.
#[async_trait]
pub trait LimiterStore: Send + Sync {
    /// Reads counters in one round trip, in the order of `keys`.
    async fn read_counters(&self, keys: &[CounterKey]) -> Result<Vec<Counter>, StoreError>;

    /// Applies every add or none (one atomic write): the admission decision. The keys must be
    /// distinct (one DynamoDB transaction cannot write an item twice).
    async fn add_counters(&self, adds: &[CounterAdd]) -> Result<AddOutcome, StoreError> {
        self.add_counters_guarded(adds, &[]).await
    }

    /// [`LimiterStore::add_counters`], applied only if every guard still holds, in the same
    /// atomic write ([`AddOutcome::Stale`] when one does not). Guard keys are distinct from
    /// each other and from the adds' keys. A failed add is reported before a failed guard.
    async fn add_counters_guarded(
        &self,
        adds: &[CounterAdd],
        guards: &[CounterGuard],
    ) -> Result<AddOutcome, StoreError>;
}

/// The application-level response cache. Keys are built by `domain::cache_key` and always
/// include the tenant; chat and embeddings keys are hashed apart, so one kind is never read as
/// the other.
#[async_trait]
pub trait ResponseCache: Send + Sync {
    /// The cached completion under `key`; `None` when absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Completion>, StoreError>;
    /// Caches `value` under `key` for `ttl`, replacing any entry there.
    async fn put(&self, key: &str, value: &Completion, ttl: Duration) -> Result<(), StoreError>;
    /// The cached embeddings reply under `key`; `None` when absent, expired, or not one.
    async fn get_embeddings(&self, key: &str) -> Result<Option<CachedEmbeddings>, StoreError>;
    /// Caches an embeddings reply under `key` for `ttl`, replacing any entry there.
    async fn put_embeddings(
        &self,
        key: &str,
        value: &CachedEmbeddings,
        ttl: Duration,
    ) -> Result<(), StoreError>;
}

/// An embeddings reply as the response cache keeps it: each vector as base64 of its
/// little-endian `f32`s (exact, and a quarter of the JSON size of the floats), what the
/// provider billed, and the model it named.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedEmbeddings {
    /// One vector per input, in input order.
    pub vectors: Vec<String>,
    /// The tokens the provider billed for the call that filled the entry.
    pub prompt_tokens: u64,
    /// The model the provider named.
    pub model: String,
}

impl CachedEmbeddings {
    /// The largest entry kept (its JSON): DynamoDB items are at most 400 KB.
    pub const MAX_BYTES: usize = 256 * 1024;

    /// `embedded` as a cache entry, or `None` when it would be larger than [`Self::MAX_BYTES`].
    pub fn of(embedded: &crate::ports::vector::Embeddings) -> Option<Self> {
        use base64::Engine;
        let floats: usize = embedded.vectors.iter().map(Vec::len).sum();
        // 4 bytes a float, 4/3 for base64, plus framing per vector.
        if floats * 16 / 3 + embedded.vectors.len() * 8 > Self::MAX_BYTES {
            return None;
        }
        let vectors = embedded
            .vectors
            .iter()
            .map(|v| {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                base64::engine::general_purpose::STANDARD.encode(bytes)
            })
            .collect();
        Some(Self {
            vectors,
            prompt_tokens: embedded.prompt_tokens,
            model: embedded.model.clone(),
        })
    }

    /// The reply back, bit for bit; `None` if an entry is damaged.
    pub fn embeddings(&self) -> Option<crate::ports::vector::Embeddings> {
        use base64::Engine;
        let vectors = self
            .vectors
            .iter()
            .map(|v| {
                let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
                (bytes.len() % 4 == 0).then(|| {
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                })
            })
            .collect::<Option<Vec<Vec<f32>>>>()?;
        Some(crate::ports::vector::Embeddings {
            vectors,
            prompt_tokens: self.prompt_tokens,
            model: self.model.clone(),
        })
    }
}

/// When each API key was last used: written by the gateways at most once per key per
/// interval ([`KeyUsage::touch_key`]), read by the key listings.
#[async_trait]
pub trait KeyUsage: Send + Sync {
    /// Records that `prefix` was used at `now`, unless a use later than `now - every` is
    /// already recorded (one conditional write). Returns whether it wrote.
    async fn touch_key(
        &self,
        prefix: &KeyPrefix,
        now: DateTime<Utc>,
        every: Duration,
    ) -> Result<bool, StoreError>;
    /// The last recorded use of each of `prefixes` that has one (to the second).
    async fn keys_last_used(
        &self,
        prefixes: &[KeyPrefix],
    ) -> Result<std::collections::HashMap<KeyPrefix, DateTime<Utc>>, StoreError>;
}

/// Operator reads and writes: tenants, keys, fine-tuned model registry (the CLI).
#[async_trait]
pub trait TenantAdmin: Send + Sync {
    /// Stores a validated configuration, unconditionally. The store assigns `version`
    /// (previous + 1).
    async fn put_tenant_config(&self, config: TenantConfig) -> Result<u64, StoreError> {
        self.put_tenant_config_if(config, Expect::Anything).await
    }
    /// Stores a validated configuration if the stored one is as `expect` says, else
    /// [`StoreError::Conflict`] and nothing is written (one atomic check and write). The store
    /// assigns `version` (previous + 1).
    async fn put_tenant_config_if(
        &self,
        config: TenantConfig,
        expect: Expect,
    ) -> Result<u64, StoreError>;
    /// Every tenant's configuration, ordered by tenant id.
    async fn tenant_configs(&self) -> Result<Vec<Arc<TenantConfig>>, StoreError>;
    /// At most `limit` (at least 1) tenants' configurations, ordered by tenant id, strictly
    /// after `after`; `next` is the id to continue after when more may follow (a full page
    /// may be followed by an empty one).
    async fn tenant_config_page(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> Result<TenantPage, StoreError> {
        let rest: Vec<Arc<TenantConfig>> = self
            .tenant_configs()
            .await?
            .into_iter()
            .filter(|c| after.is_none_or(|a| c.tenant_id > *a))
            .collect();
        let more = rest.len() > limit;
        let configs: Vec<Arc<TenantConfig>> = rest.into_iter().take(limit).collect();
        let next = more
            .then(|| configs.last().map(|c| c.tenant_id.clone()))
            .flatten();
        Ok(TenantPage { configs, next })
    }
    /// Stores a key, replacing any with the same prefix.
    async fn put_key(&self, key: StoredKey) -> Result<(), StoreError>;
    /// The keys of one tenant (hashes and prefixes; never a plaintext), oldest first.
    async fn keys_for(&self, tenant: &TenantId) -> Result<Vec<StoredKey>, StoreError>;
    /// Marks the key revoked (a second revocation keeps the first time); `NotFound` if no such key.
    async fn revoke_key(&self, prefix: &KeyPrefix) -> Result<(), StoreError>;
    /// Makes the key expire at `at`, unless it already expires earlier (rotation's overlap);
    /// `NotFound` if no such key.
    async fn expire_key(
        &self,
        prefix: &KeyPrefix,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError>;
    /// Records `owner` as the tenant that owns fine-tuned `model` at `provider`, replacing any
    /// previous owner.
    async fn register_fine_tuned(
        &self,
        provider: ProviderKind,
        model: &str,
        owner: &TenantId,
    ) -> Result<(), StoreError>;
}

/// One page of tenants, by id.
#[derive(Debug, Clone, Default)]
pub struct TenantPage {
    /// The configurations, by tenant id.
    pub configs: Vec<Arc<TenantConfig>>,
    /// The id to continue after; `None` on the last page.
    pub next: Option<TenantId>,
}

/// One page of an audit log, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    /// The records, newest first.
    pub records: Vec<crate::domain::audit::AuditRecord>,
    /// The cursor of the next page (the last record's position); `None` on the last page.
    pub next: Option<String>,
}

/// The audit log (`domain::audit`): appended by every operator change, read per tenant.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `record` (a record at the same position replaces it: the same request doing
    /// the same thing twice at the same instant is one change).
    async fn append(&self, record: &crate::domain::audit::AuditRecord) -> Result<(), StoreError>;
    /// At most `limit` records of `tenant`'s log (`None`: the deployment-wide log), newest
    /// first, strictly older than `cursor` when one is given. The cursor is only a position
    /// inside that log: it cannot reach another tenant's.
    async fn audit_page(
        &self,
        tenant: Option<&TenantId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, StoreError>;
}

/// Lists a tenant's usage events, newest first (usage-report's `GET /v1/usage/events`).
///
/// Always reads `tenant`'s own events: the cursor is only a position (a sort key) inside that
/// tenant's listing, never a way to name another tenant.
#[async_trait]
pub trait UsageEvents: Send + Sync {
    /// At most `limit` events matching `filter`, strictly older than `cursor` when one is
    /// given. `next` is `None` once the listing is exhausted. A page may hold fewer than
    /// `limit` events (even none) with a `next` cursor when a store bounds the items it
    /// examines per call; callers keep paging until `next` is `None`.
    async fn events_page(
        &self,
        tenant: &TenantId,
        filter: &crate::domain::usage_report::EventFilter,
        cursor: Option<&crate::domain::usage_report::EventCursor>,
        limit: usize,
    ) -> Result<crate::domain::usage_report::EventPage, StoreError>;
}

/// One page of the tenants active in an hour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivePage {
    /// In tenant id order, each once.
    pub tenants: Vec<TenantId>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<String>,
}

impl ActivePage {
    /// The cursor that continues after `tenant`. Opaque to callers; every store issues the same
    /// shape, so a page boundary means the same thing on each.
    pub fn cursor_after(tenant: &TenantId) -> String {
        format!("t1.{}", hex::encode(tenant.as_str()))
    }

    /// The tenant a cursor continues after. A cursor no store issued is refused as
    /// `NotFound` (there is no such page).
    pub fn decode_cursor(cursor: &str) -> Result<TenantId, StoreError> {
        cursor
            .strip_prefix("t1.")
            .and_then(|raw| hex::decode(raw).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|id| TenantId::parse(id).ok())
            .ok_or_else(|| StoreError::NotFound(format!("activity page {cursor:?}")))
    }
}

/// The activity index (anomaly-scheduler, `tollgate usage top`): which tenants have a rollup
/// in an hour, without scanning the usage table.
#[async_trait]
pub trait UsageActivity: Send + Sync {
    /// Tenants with a rollup for the hour containing `hour`, each once however many models
    /// they used, in tenant id order: at most `limit` (at least 1) per page, starting after
    /// `cursor` (a previous page's `next`).
    async fn active_tenants(
        &self,
        hour: DateTime<Utc>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<ActivePage, StoreError>;
}

/// End-user profiles (invoke: the `/v1/users/{user_id}/profile` routes, and the chat path when
/// a tenant's template uses profile variables). Every key includes the tenant: the same user id
/// under another tenant is another user, and no call can name a tenant other than its own.
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// Stores `record`, replacing the user's previous profile.
    async fn put_profile(&self, record: &ProfileRecord) -> Result<(), StoreError>;

    /// The user's profile, reading the latest write (a PUT is seen by the next request).
    async fn profile(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> Result<Option<ProfileRecord>, StoreError>;

    /// Returns whether a profile existed.
    async fn delete_profile(&self, tenant: &TenantId, user: &UserId) -> Result<bool, StoreError>;
}
