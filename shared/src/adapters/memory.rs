//! The embedded store: every store port in memory. Used by `tollgate serve` and fast tests,
//! and held to the same contract suite as the DynamoDB adapter.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::budget::Period;
use crate::domain::budget_event::BudgetEvent;
use crate::domain::chat::Completion;
use crate::domain::documents::{DocumentCursor, DocumentId, DocumentPage};
use crate::domain::ids::{RequestId, TenantId};
use crate::domain::keys::{KeyPrefix, StoredKey};
use crate::domain::limits::UpstreamQuota;
use crate::domain::pricing::PriceEntry;
use crate::domain::profile::{ProfileRecord, UserId};
use crate::domain::storage::{
    Claim, CounterWrite, DocumentEntry, Removal, Settlement, StorageSlot,
};
use crate::domain::tenant::{ProviderKind, TenantConfig};
use crate::domain::usage::{UsageEvent, UsageRollup, UserDayRollup, UserRollups, hour_start};
use crate::ports::metrics::{MetricsSink, RequestMetrics};
use crate::ports::store::{
    ActivePage, AddOutcome, AnomalyRecord, AnomalyStore, ApiKeyLookup, BudgetEventRecorder,
    BudgetEventStore, CachedEmbeddings, Catalog, ClaimOutcome, ConversationStore, Counter,
    CounterAdd, CounterGuard, CounterKey, DocumentRecord, DocumentStore, LimiterStore, PriceLayer,
    ProfileStore, Recorded, ResponseCache, StoreError, StoredBudgetEvent, TenantAdmin,
    TenantConfigSource, Turn, UsageActivity, UsageQuery, UsageSink,
};

/// Entries the response cache keeps before evicting; bounded so a busy local server cannot
/// grow without limit.
const CACHE_CAPACITY: usize = 10_000;

/// Hour, tenant, kind: at most one anomaly each, ordered by hour.
type AnomalyKey = (DateTime<Utc>, TenantId, String);

/// Provider, model, key position (`None`: the model's quota across its keys).
type QuotaId = (ProviderKind, String, Option<u16>);

/// Operator price entries by provider and model.
type PriceEntries = BTreeMap<(ProviderKind, String), PriceEntry>;

/// Every store port in memory (see the module docs).
#[derive(Default)]
pub struct MemoryStore {
    keys: RwLock<HashMap<KeyPrefix, StoredKey>>,
    configs: RwLock<HashMap<TenantId, Arc<TenantConfig>>>,
    fine_tuned: RwLock<HashMap<(ProviderKind, String), TenantId>>,
    /// Usage events, rollups and limiter counters share one lock: recording an event, its
    /// rollup and its limiter adjustments is one atomic step, as in DynamoDB's transaction.
    ledger: Mutex<Ledger>,
    cache: Mutex<HashMap<String, (Cached, Instant)>>,
    /// The operator price entries and their version.
    prices: RwLock<(u64, PriceEntries)>,
    /// Document entries and storage counters share one lock: a claim checks and writes both in
    /// one step, as DynamoDB's transaction does.
    documents: Mutex<DocumentLedger>,
    conversations: RwLock<HashMap<(TenantId, String), Vec<Turn>>>,
    anomalies: RwLock<BTreeMap<AnomalyKey, AnomalyRecord>>,
    /// Budget events by id, and whether each is published.
    budget_events: RwLock<BTreeMap<String, StoredBudgetEvent>>,
    quotas: RwLock<BTreeMap<QuotaId, UpstreamQuota>>,
    /// End-user profiles, keyed by tenant and user: another tenant's user is another key.
    profiles: RwLock<HashMap<(TenantId, UserId), ProfileRecord>>,
    /// When each key was last used, to the second (`KeyUsage`).
    key_uses: RwLock<HashMap<KeyPrefix, DateTime<Utc>>>,
    /// Audit logs: by log (tenant id or the operator scope), then position.
    audit: RwLock<BTreeMap<(String, String), crate::domain::audit::AuditRecord>>,
}

/// Usage events the embedded store keeps (the newest); older ones are dropped, their rollups
/// stay. A local gateway under a load test would otherwise grow without bound.
const EVENT_CAPACITY: usize = 100_000;

#[derive(Default)]
struct Ledger {
    events: HashMap<RequestId, UsageEvent>,
    order: VecDeque<RequestId>,
    rollups: BTreeMap<(TenantId, DateTime<Utc>, String), UsageRollup>,
    /// Per tenant, UTC day and end user.
    user_rollups: BTreeMap<(TenantId, chrono::NaiveDate, UserId), UserDayRollup>,
    /// The activity index: tenants with a rollup, per hour (DynamoDB's `by_hour` GSI).
    active: BTreeMap<DateTime<Utc>, BTreeSet<TenantId>>,
    /// Counter and the Unix second after which it may be dropped (as DynamoDB's TTL would).
    counters: HashMap<CounterKey, (Counter, i64)>,
}

/// The document registry and each tenant's storage counter (chunks charged).
#[derive(Default)]
struct DocumentLedger {
    entries: BTreeMap<(TenantId, DocumentId), DocumentEntry>,
    counters: HashMap<TenantId, u64>,
}

impl DocumentLedger {
    /// Ends the claim holding `key` (commits `record` when given); `false` when the lease is not
    /// the settlement's.
    fn settle(
        &mut self,
        key: (TenantId, DocumentId),
        settlement: &Settlement,
        record: Option<&DocumentRecord>,
    ) -> Result<bool, StoreError> {
        let Some(entry) = self.entries.get_mut(&key) else {
            return Ok(false);
        };
        if entry.lease.as_ref().map(|l| l.token.as_str()) != Some(settlement.lease_token.as_str()) {
            return Ok(false);
        }
        if settlement.drop_entry && record.is_none() {
            self.entries.remove(&key);
        } else {
            if let Some(record) = record {
                entry.record = Some(record.clone());
            }
            entry.charged = settlement.charge;
            entry.lease = None;
            entry.version += 1;
        }
        if let Some(counter) = self.counters.get_mut(&key.0) {
            *counter = counter.saturating_add_signed(settlement.counter_delta());
        }
        Ok(true)
    }
}

/// Past this many counters, expired ones are dropped on the next write.
const COUNTER_PURGE_AT: usize = 4_096;

impl Ledger {
    /// Checks every condition first, then applies every add: all or nothing.
    fn add_counters(&mut self, adds: &[CounterAdd]) -> AddOutcome {
        self.add_counters_guarded(adds, &[])
    }

    fn add_counters_guarded(&mut self, adds: &[CounterAdd], guards: &[CounterGuard]) -> AddOutcome {
        for (index, add) in adds.iter().enumerate() {
            let current = self.counter(&add.key);
            let tokens_ok = add
                .max_tokens
                .is_none_or(|max| current.tokens + add.tokens <= max);
            let requests_ok = add
                .max_requests
                .is_none_or(|max| current.requests + add.requests <= max);
            if !(tokens_ok && requests_ok) {
                return AddOutcome::Refused { index };
            }
        }
        if guards.iter().any(|guard| {
            let seen = self.counter(&guard.key);
            seen.tokens > guard.max_tokens || seen.requests > guard.max_requests
        }) {
            return AddOutcome::Stale;
        }
        if self.counters.len() >= COUNTER_PURGE_AT {
            let now = chrono::Utc::now().timestamp();
            self.counters.retain(|_, (_, expires_at)| *expires_at > now);
        }
        for add in adds {
            let (counter, expires_at) = self.counters.entry(add.key.clone()).or_default();
            counter.tokens += add.tokens;
            counter.requests += add.requests;
            *expires_at = (*expires_at).max(add.expires_at);
        }
        AddOutcome::Applied
    }

    fn counter(&self, key: &CounterKey) -> Counter {
        self.counters.get(key).map(|(c, _)| *c).unwrap_or_default()
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Unavailable("in-memory store lock poisoned".into())
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every usage event recorded so far, in order.
    pub fn usage_events(&self) -> Vec<UsageEvent> {
        self.ledger
            .lock()
            .map(|log| {
                log.order
                    .iter()
                    .filter_map(|id| log.events.get(id).cloned())
                    .collect()
            })
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
    async fn record(
        &self,
        event: &UsageEvent,
        adjustments: &[CounterAdd],
    ) -> Result<Recorded, StoreError> {
        let mut ledger = self.ledger.lock().map_err(poisoned)?;
        if ledger.events.contains_key(&event.request_id) {
            return Ok(Recorded::Duplicate);
        }
        // Adjustments are unconditional reconciliations; a refused one would be a bug upstream.
        if let AddOutcome::Refused { index } = ledger.add_counters(adjustments) {
            return Err(StoreError::Corrupt(format!(
                "usage adjustment {index} carries a condition; reconciliations must be unconditional"
            )));
        }
        if ledger.order.len() >= EVENT_CAPACITY
            && let Some(oldest) = ledger.order.pop_front()
        {
            ledger.events.remove(&oldest);
        }
        ledger.order.push_back(event.request_id.clone());
        ledger
            .events
            .insert(event.request_id.clone(), event.clone());
        let hour = UsageRollup::hour_of(event);
        ledger
            .rollups
            .entry((event.tenant_id.clone(), hour, event.model_requested.clone()))
            .or_insert_with(|| {
                UsageRollup::empty(event.tenant_id.clone(), hour, event.model_requested.clone())
            })
            .apply(event);
        ledger
            .active
            .entry(hour)
            .or_default()
            .insert(event.tenant_id.clone());
        if let Some(user) = &event.user {
            let day = event.created_at.date_naive();
            ledger
                .user_rollups
                .entry((event.tenant_id.clone(), day, user.clone()))
                .or_insert_with(|| UserDayRollup::empty(user.clone(), day))
                .apply(event);
        }
        Ok(Recorded::Inserted)
    }
}

#[async_trait]
impl UsageQuery for MemoryStore {
    async fn rollups(
        &self,
        tenant: &TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRollup>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let ledger = self.ledger.lock().map_err(poisoned)?;
        // Keys sort by tenant, hour, model, and "" sorts before every model: one range is the
        // tenant's hours in [from, to), without walking other tenants' rollups.
        let range = (tenant.clone(), from, String::new())..(tenant.clone(), to, String::new());
        Ok(ledger
            .rollups
            .range(range)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn usage_event(&self, request_id: &RequestId) -> Result<Option<UsageEvent>, StoreError> {
        let ledger = self.ledger.lock().map_err(poisoned)?;
        Ok(ledger.events.get(request_id).cloned())
    }

    async fn user_rollups(
        &self,
        tenant: &TenantId,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
        max_rows: usize,
    ) -> Result<UserRollups, StoreError> {
        let ledger = self.ledger.lock().map_err(poisoned)?;
        let mut rows = ledger
            .user_rollups
            .iter()
            .filter(|((t, day, _), _)| t == tenant && *day >= from && *day < to)
            .map(|(_, r)| r.clone());
        let taken: Vec<UserDayRollup> = rows.by_ref().take(max_rows).collect();
        Ok(UserRollups {
            rows: taken,
            complete: rows.next().is_none(),
        })
    }
}

/// Scans the tenant's events (at most `EVENT_CAPACITY`) and sorts them by the same sort key
/// as DynamoDB's `by_tenant_time` index, so both stores page identically.
#[async_trait]
impl crate::ports::store::UsageEvents for MemoryStore {
    async fn events_page(
        &self,
        tenant: &TenantId,
        filter: &crate::domain::usage_report::EventFilter,
        cursor: Option<&crate::domain::usage_report::EventCursor>,
        limit: usize,
    ) -> Result<crate::domain::usage_report::EventPage, StoreError> {
        use crate::domain::usage_report::{EventCursor, EventPage};
        let range = filter.key_range(cursor);
        let ledger = self.ledger.lock().map_err(poisoned)?;
        let mut matching: Vec<(EventCursor, &UsageEvent)> = ledger
            .events
            .values()
            .filter(|e| &e.tenant_id == tenant && filter.matches(e))
            .map(|e| (EventCursor::of(e), e))
            .filter(|(position, _)| range.contains(&position.sort_key()))
            .collect();
        matching.sort_by(|a, b| b.0.cmp(&a.0));
        let more = matching.len() > limit;
        matching.truncate(limit);
        Ok(EventPage {
            next: more
                .then(|| matching.last().map(|(position, _)| position.clone()))
                .flatten(),
            events: matching.into_iter().map(|(_, e)| e.clone()).collect(),
        })
    }
}

#[async_trait]
impl LimiterStore for MemoryStore {
    async fn read_counters(&self, keys: &[CounterKey]) -> Result<Vec<Counter>, StoreError> {
        let ledger = self.ledger.lock().map_err(poisoned)?;
        Ok(keys.iter().map(|k| ledger.counter(k)).collect())
    }

    async fn add_counters_guarded(
        &self,
        adds: &[CounterAdd],
        guards: &[CounterGuard],
    ) -> Result<AddOutcome, StoreError> {
        Ok(self
            .ledger
            .lock()
            .map_err(poisoned)?
            .add_counters_guarded(adds, guards))
    }
}

#[async_trait]
impl ConversationStore for MemoryStore {
    async fn append_turns(
        &self,
        tenant: &TenantId,
        conversation: &str,
        turns: &[Turn],
    ) -> Result<(), StoreError> {
        self.conversations
            .write()
            .map_err(poisoned)?
            .entry((tenant.clone(), conversation.to_owned()))
            .or_default()
            .extend_from_slice(turns);
        Ok(())
    }

    async fn load_turns(
        &self,
        tenant: &TenantId,
        conversation: &str,
        max_turns: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        let all = self.conversations.read().map_err(poisoned)?;
        let turns = all
            .get(&(tenant.clone(), conversation.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(turns[turns.len().saturating_sub(max_turns)..].to_vec())
    }
}

#[async_trait]
impl AnomalyStore for MemoryStore {
    async fn record_anomaly(&self, anomaly: &AnomalyRecord) -> Result<Recorded, StoreError> {
        let mut all = self.anomalies.write().map_err(poisoned)?;
        let key = (
            anomaly.hour,
            anomaly.tenant_id.clone(),
            anomaly.kind.clone(),
        );
        if all.contains_key(&key) {
            return Ok(Recorded::Duplicate);
        }
        all.insert(key, anomaly.clone());
        Ok(Recorded::Inserted)
    }

    async fn anomalies(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AnomalyRecord>, StoreError> {
        Ok(self
            .anomalies
            .read()
            .map_err(poisoned)?
            .values()
            .filter(|a| a.hour >= from && a.hour < to)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl BudgetEventRecorder for MemoryStore {
    async fn record_budget_event(&self, event: &BudgetEvent) -> Result<Recorded, StoreError> {
        let mut all = self.budget_events.write().map_err(poisoned)?;
        match all.entry(event.id()) {
            std::collections::btree_map::Entry::Occupied(_) => Ok(Recorded::Duplicate),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(StoredBudgetEvent {
                    event: event.clone(),
                    published: false,
                });
                Ok(Recorded::Inserted)
            }
        }
    }
}

#[async_trait]
impl BudgetEventStore for MemoryStore {
    async fn budget_events(
        &self,
        period: Period,
        start: DateTime<Utc>,
    ) -> Result<Vec<StoredBudgetEvent>, StoreError> {
        Ok(self
            .budget_events
            .read()
            .map_err(poisoned)?
            .values()
            .filter(|s| s.event.period == period && s.event.period_start == start)
            .cloned()
            .collect())
    }

    async fn budget_event_published(
        &self,
        event: &BudgetEvent,
    ) -> Result<Option<bool>, StoreError> {
        Ok(self
            .budget_events
            .read()
            .map_err(poisoned)?
            .get(&event.id())
            .map(|s| s.published))
    }

    async fn mark_budget_event_published(&self, event: &BudgetEvent) -> Result<(), StoreError> {
        if let Some(stored) = self
            .budget_events
            .write()
            .map_err(poisoned)?
            .get_mut(&event.id())
        {
            stored.published = true;
        }
        Ok(())
    }
}

#[async_trait]
impl UsageActivity for MemoryStore {
    async fn active_tenants(
        &self,
        hour: DateTime<Utc>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<ActivePage, StoreError> {
        use std::ops::Bound;
        let after = cursor
            .as_deref()
            .map(ActivePage::decode_cursor)
            .transpose()?;
        let limit = limit.max(1);
        let ledger = self.ledger.lock().map_err(poisoned)?;
        let Some(active) = ledger.active.get(&hour_start(hour)) else {
            return Ok(ActivePage::default());
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut tenants: Vec<TenantId> = active
            .range((start, Bound::Unbounded))
            .take(limit + 1)
            .cloned()
            .collect();
        let more = tenants.len() > limit;
        tenants.truncate(limit);
        Ok(ActivePage {
            next: more
                .then(|| tenants.last().map(ActivePage::cursor_after))
                .flatten(),
            tenants,
        })
    }
}

#[async_trait]
impl DocumentStore for MemoryStore {
    async fn storage_slot(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
    ) -> Result<StorageSlot, StoreError> {
        let ledger = self.documents.lock().map_err(poisoned)?;
        Ok(StorageSlot {
            entry: ledger
                .entries
                .get(&(tenant.clone(), document.clone()))
                .cloned()
                .unwrap_or_default(),
            counter: ledger.counters.get(tenant).copied(),
        })
    }

    async fn claim_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        claim: &Claim,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut ledger = self.documents.lock().map_err(poisoned)?;
        let key = (tenant.clone(), document.clone());
        // The entry first, as DynamoDB's transaction reports it first.
        if ledger.entries.get(&key).map_or(0, |e| e.version) != claim.version {
            return Ok(ClaimOutcome::Changed);
        }
        let counter = ledger.counters.get(tenant).copied();
        match (claim.counter, counter) {
            (Some(CounterWrite::Create { .. }), Some(_))
            | (Some(CounterWrite::Add { .. }) | None, None) => return Ok(ClaimOutcome::Changed),
            (Some(CounterWrite::Add { add, max }), Some(current))
                if current.saturating_add(add) > max =>
            {
                return Ok(ClaimOutcome::QuotaExceeded);
            }
            _ => {}
        }
        match claim.counter {
            Some(CounterWrite::Create { value }) => {
                ledger.counters.insert(tenant.clone(), value);
            }
            Some(CounterWrite::Add { add, .. }) => {
                *ledger.counters.entry(tenant.clone()).or_default() += add;
            }
            None => {}
        }
        let entry = ledger.entries.entry(key).or_default();
        entry.charged = claim.charge;
        entry.lease = Some(claim.lease.clone());
        entry.version = claim.version + 1;
        Ok(ClaimOutcome::Claimed)
    }

    async fn commit_document(
        &self,
        record: &DocumentRecord,
        settlement: &Settlement,
    ) -> Result<bool, StoreError> {
        let key = (record.tenant_id.clone(), record.document_id.clone());
        self.documents
            .lock()
            .map_err(poisoned)?
            .settle(key, settlement, Some(record))
    }

    async fn release_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        settlement: &Settlement,
    ) -> Result<bool, StoreError> {
        let key = (tenant.clone(), document.clone());
        self.documents
            .lock()
            .map_err(poisoned)?
            .settle(key, settlement, None)
    }

    async fn remove_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        removal: &Removal,
    ) -> Result<bool, StoreError> {
        let mut ledger = self.documents.lock().map_err(poisoned)?;
        let key = (tenant.clone(), document.clone());
        if ledger.entries.get(&key).map(|e| e.version) != Some(removal.version) {
            return Ok(false);
        }
        ledger.entries.remove(&key);
        if removal.credit
            && let Some(counter) = ledger.counters.get_mut(tenant)
        {
            *counter = counter.saturating_sub(removal.charge);
        }
        Ok(true)
    }

    async fn documents_page(
        &self,
        tenant: &TenantId,
        cursor: Option<&DocumentCursor>,
        limit: usize,
    ) -> Result<DocumentPage, StoreError> {
        use std::ops::Bound;
        let limit = limit.max(1);
        let ledger = self.documents.lock().map_err(poisoned)?;
        let start = match cursor {
            Some(c) => Bound::Excluded((tenant.clone(), c.id().clone())),
            None => Bound::Unbounded,
        };
        let mut documents: Vec<DocumentRecord> = ledger
            .entries
            .range((start, Bound::Unbounded))
            .skip_while(|((t, _), _)| t < tenant)
            .take_while(|((t, _), _)| t == tenant)
            .filter_map(|(_, e)| e.record.clone())
            .take(limit + 1)
            .collect();
        let more = documents.len() > limit;
        documents.truncate(limit);
        Ok(DocumentPage {
            next: more
                .then(|| {
                    documents
                        .last()
                        .map(|d| DocumentCursor::after(d.document_id.clone()))
                })
                .flatten(),
            documents,
        })
    }
}

#[async_trait]
impl ProfileStore for MemoryStore {
    async fn put_profile(&self, record: &ProfileRecord) -> Result<(), StoreError> {
        self.profiles.write().map_err(poisoned)?.insert(
            (record.tenant_id.clone(), record.user_id.clone()),
            record.clone(),
        );
        Ok(())
    }

    async fn profile(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        Ok(self
            .profiles
            .read()
            .map_err(poisoned)?
            .get(&(tenant.clone(), user.clone()))
            .cloned())
    }

    async fn delete_profile(&self, tenant: &TenantId, user: &UserId) -> Result<bool, StoreError> {
        Ok(self
            .profiles
            .write()
            .map_err(poisoned)?
            .remove(&(tenant.clone(), user.clone()))
            .is_some())
    }
}

#[async_trait]
impl Catalog for MemoryStore {
    async fn price_layer(&self) -> Result<PriceLayer, StoreError> {
        let prices = self.prices.read().map_err(poisoned)?;
        Ok(PriceLayer {
            entries: prices.1.values().cloned().collect(),
            version: prices.0,
        })
    }

    async fn put_price_if(&self, entry: &PriceEntry, version: u64) -> Result<(), StoreError> {
        let mut prices = self.prices.write().map_err(poisoned)?;
        if prices.0 != version {
            return Err(StoreError::Conflict {
                current: Some(prices.0),
            });
        }
        prices.0 += 1;
        prices
            .1
            .insert((entry.provider, entry.model.clone()), entry.clone());
        Ok(())
    }

    async fn upstream_quotas(&self) -> Result<Vec<UpstreamQuota>, StoreError> {
        Ok(self
            .quotas
            .read()
            .map_err(poisoned)?
            .values()
            .cloned()
            .collect())
    }

    async fn put_upstream_quota(&self, quota: &UpstreamQuota) -> Result<(), StoreError> {
        self.quotas.write().map_err(poisoned)?.insert(
            (quota.provider, quota.model.clone(), quota.key),
            quota.clone(),
        );
        Ok(())
    }
}

/// A response-cache entry.
#[derive(Debug, Clone)]
enum Cached {
    Completion(Completion),
    Embeddings(CachedEmbeddings),
}

impl MemoryStore {
    fn cached(&self, key: &str) -> Result<Option<Cached>, StoreError> {
        let cache = self.cache.lock().map_err(poisoned)?;
        Ok(cache
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(value, _)| value.clone()))
    }

    fn cache_put(&self, key: &str, value: Cached, ttl: Duration) -> Result<(), StoreError> {
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
        cache.insert(key.to_owned(), (value, now + ttl));
        Ok(())
    }
}

#[async_trait]
impl ResponseCache for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Completion>, StoreError> {
        Ok(match self.cached(key)? {
            Some(Cached::Completion(c)) => Some(c),
            _ => None,
        })
    }

    async fn put(&self, key: &str, value: &Completion, ttl: Duration) -> Result<(), StoreError> {
        self.cache_put(key, Cached::Completion(value.clone()), ttl)
    }

    async fn get_embeddings(&self, key: &str) -> Result<Option<CachedEmbeddings>, StoreError> {
        Ok(match self.cached(key)? {
            Some(Cached::Embeddings(e)) => Some(e),
            _ => None,
        })
    }

    async fn put_embeddings(
        &self,
        key: &str,
        value: &CachedEmbeddings,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.cache_put(key, Cached::Embeddings(value.clone()), ttl)
    }
}

#[async_trait]
impl crate::ports::store::KeyUsage for MemoryStore {
    async fn touch_key(
        &self,
        prefix: &KeyPrefix,
        now: DateTime<Utc>,
        every: Duration,
    ) -> Result<bool, StoreError> {
        // Seconds, as DynamoDB keeps them.
        let now = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
        let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        let mut uses = self.key_uses.write().map_err(poisoned)?;
        match uses.get(prefix) {
            Some(last) if *last > now - every => Ok(false),
            _ => {
                uses.insert(prefix.clone(), now);
                Ok(true)
            }
        }
    }

    async fn keys_last_used(
        &self,
        prefixes: &[KeyPrefix],
    ) -> Result<HashMap<KeyPrefix, DateTime<Utc>>, StoreError> {
        let uses = self.key_uses.read().map_err(poisoned)?;
        Ok(prefixes
            .iter()
            .filter_map(|p| uses.get(p).map(|at| (p.clone(), *at)))
            .collect())
    }
}

#[async_trait]
impl crate::ports::store::AuditLog for MemoryStore {
    async fn append(&self, record: &crate::domain::audit::AuditRecord) -> Result<(), StoreError> {
        self.audit.write().map_err(poisoned)?.insert(
            (record.scope().to_owned(), record.position()),
            record.clone(),
        );
        Ok(())
    }

    async fn audit_page(
        &self,
        tenant: Option<&TenantId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<crate::ports::store::AuditPage, StoreError> {
        let scope = tenant.map_or(crate::domain::audit::OPERATOR_SCOPE, TenantId::as_str);
        let log = self.audit.read().map_err(poisoned)?;
        let start = (scope.to_owned(), String::new());
        let end = (
            scope.to_owned(),
            cursor.map_or_else(|| "\u{10ffff}".to_owned(), str::to_owned),
        );
        let records: Vec<_> = log
            .range(start..end)
            .rev()
            .take(limit.max(1))
            .map(|(_, r)| r.clone())
            .collect();
        let next = (records.len() == limit.max(1))
            .then(|| records.last().map(|r| r.position()))
            .flatten();
        Ok(crate::ports::store::AuditPage { records, next })
    }
}

#[async_trait]
impl TenantAdmin for MemoryStore {
    async fn put_tenant_config_if(
        &self,
        mut config: TenantConfig,
        expect: crate::ports::store::Expect,
    ) -> Result<u64, StoreError> {
        use crate::ports::store::Expect;
        let mut configs = self.configs.write().map_err(poisoned)?;
        let current = configs.get(&config.tenant_id).map(|old| old.version);
        let holds = match expect {
            Expect::Anything => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current == Some(v),
        };
        if !holds {
            return Err(StoreError::Conflict { current });
        }
        let version = current.map_or(1, |v| v + 1);
        config.version = version;
        configs.insert(config.tenant_id.clone(), Arc::new(config));
        Ok(version)
    }

    async fn tenant_configs(&self) -> Result<Vec<Arc<TenantConfig>>, StoreError> {
        let mut all: Vec<_> = self
            .configs
            .read()
            .map_err(poisoned)?
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        Ok(all)
    }

    async fn keys_for(&self, tenant: &TenantId) -> Result<Vec<StoredKey>, StoreError> {
        let mut keys: Vec<_> = self
            .keys
            .read()
            .map_err(poisoned)?
            .values()
            .filter(|k| &k.tenant_id == tenant)
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
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

    async fn expire_key(
        &self,
        prefix: &KeyPrefix,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let mut keys = self.keys.write().map_err(poisoned)?;
        let key = keys
            .get_mut(prefix)
            .ok_or_else(|| StoreError::NotFound(format!("key {prefix}")))?;
        key.expires_at = Some(key.expires_at.map_or(at, |t| t.min(at)));
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
    violations: Mutex<Vec<String>>,
    circuits: Mutex<Vec<(String, bool)>>,
}

impl MemoryMetrics {
    /// Every request record received, in order.
    pub fn requests(&self) -> Vec<RequestMetrics> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Tenants whose requests hit an isolation violation.
    pub fn isolation_violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Every circuit change reported (target, open), in order.
    pub fn circuits(&self) -> Vec<(String, bool)> {
        self.circuits.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Every usage event reported as a metering failure, in order.
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

    fn isolation_violation(&self, _function: &'static str, tenant: &str) {
        if let Ok(mut r) = self.violations.lock() {
            r.push(tenant.to_owned());
        }
    }

    fn circuit(&self, target: &str, open: bool) {
        if let Ok(mut r) = self.circuits.lock() {
            r.push((target.to_owned(), open));
        }
    }
}
