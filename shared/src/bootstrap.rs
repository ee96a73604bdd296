//! The composition root: the one place adapters are chosen from settings and services are
//! built from them.
//!
//! [`Stores::open`] holds the workspace's one match on [`StoreKind`]; everything after it
//! works on the [`Backend`] trait object. Each function's state is built by one constructor in
//! its crate (`InvokeState::build`, `IngestState::build`, `UsageReportState::build`,
//! `SchedulerState::build`) from [`Stores`] and the services built here, and every Lambda
//! `main`, `tollgate serve`, the test harness and the benches call those constructors. A
//! service keeps only the ports it needs, as trait objects (ingest never holds the response
//! cache, conversations or profiles; usage-report only reads).

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::aws::AwsConfigSource;
use crate::adapters::cached::CachedDirectory;
use crate::adapters::dynamodb::{DynamoStore, TableNames};
use crate::adapters::memory::MemoryStore;
use crate::adapters::qdrant::QdrantIndex;
use crate::adapters::vector_memory::MemoryVectorIndex;
use crate::config::{ConfigError, Settings, StoreKind};
use crate::ports::clock::SystemClock;
use crate::ports::store::{
    AnomalyStore, BudgetEventRecorder, BudgetEventStore, ConversationStore, DocumentStore,
    ProfileStore, TenantAdmin, UsageActivity, UsageEvents,
};
use crate::ports::vector::{IndexReadiness, VectorIndex};
use crate::ports::{
    ApiKeyLookup, AuditLog, Catalog, KeyUsage, LimiterStore, MetricsSink, ResponseCache,
    TenantConfigSource, UsageQuery, UsageSink,
};
use crate::service::caller::{Callers, KeyUses};
use crate::service::catalog::OperatorCatalog;
use crate::service::ingest::{IngestLimits, IngestService};
use crate::service::limiter::Limiter;
use crate::service::metering::Meter;
use crate::service::retrieval::Retriever;
use crate::service::usage_report::UsageReportService;
use crate::service::{ChatService, EmbeddingsService};

/// Every port of one store (DynamoDB's tables, or the embedded store): what [`Stores`] holds,
/// and what the operator commands work on. Services take the narrower ports it upcasts to.
pub trait Backend:
    ApiKeyLookup
    + AuditLog
    + KeyUsage
    + TenantConfigSource
    + TenantAdmin
    + UsageSink
    + UsageQuery
    + UsageEvents
    + UsageActivity
    + ResponseCache
    + LimiterStore
    + Catalog
    + ConversationStore
    + ProfileStore
    + DocumentStore
    + AnomalyStore
    + BudgetEventStore
    + SchedulerStore
    + 'static
{
}

impl<S> Backend for S where
    S: ApiKeyLookup
        + AuditLog
        + KeyUsage
        + TenantConfigSource
        + TenantAdmin
        + UsageSink
        + UsageQuery
        + UsageEvents
        + UsageActivity
        + ResponseCache
        + LimiterStore
        + Catalog
        + ConversationStore
        + ProfileStore
        + DocumentStore
        + AnomalyStore
        + BudgetEventStore
        + 'static
{
}

/// The ports the anomaly scheduler needs: the usage table's activity index and rollups (read),
/// its anomaly records, the budget events' outbox, and the limiter's spend counters (read, for
/// a budget reset's final spend).
pub trait SchedulerStore:
    UsageActivity + UsageQuery + AnomalyStore + BudgetEventStore + LimiterStore + 'static
{
}

impl<S> SchedulerStore for S where
    S: UsageActivity + UsageQuery + AnomalyStore + BudgetEventStore + LimiterStore + 'static
{
}

/// Why a function's state cannot be built; the process should not start.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The settings cannot be used (a price file, a provider client).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The vector index cannot be configured (a Qdrant URL that does not parse), or, for
    /// [`init_vector_index`], its collection cannot be made ready.
    #[error("the vector index cannot be configured: {0}")]
    Index(crate::ports::vector::IndexError),
    /// The embedded store could not be seeded with the demo tenants.
    #[error("the demo tenants cannot be seeded: {0}")]
    Seed(#[from] crate::ports::store::StoreError),
}

/// An opened store. Services get each port as its own trait object ([`Stores`]' accessors),
/// so a function's binary links only the ports its services use: a `dyn Backend` would pull
/// every port of both stores (the operator commands, documents, usage queries) into every
/// bootstrap.
#[derive(Clone)]
pub enum Store {
    /// The DynamoDB tables.
    Dynamodb(Arc<DynamoStore>),
    /// The embedded store.
    Memory(Arc<MemoryStore>),
}

impl From<Arc<DynamoStore>> for Store {
    fn from(store: Arc<DynamoStore>) -> Self {
        Self::Dynamodb(store)
    }
}

impl From<Arc<MemoryStore>> for Store {
    fn from(store: Arc<MemoryStore>) -> Self {
        Self::Memory(store)
    }
}

/// A deployment's store, and the per-container cache of keys and tenant configurations in
/// front of it that every function shares.
#[derive(Clone)]
pub struct Stores {
    /// The store.
    pub store: Store,
    /// Key and configuration lookups, cached for the settings' `directory_cache_ttl`.
    pub directory: Arc<CachedDirectory>,
}

/// One accessor per port: the store as that port's trait object.
macro_rules! port_accessors {
    ($($(#[$doc:meta])* $name:ident: $port:path;)*) => {
        impl Stores {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Arc<dyn $port> {
                    match &self.store {
                        Store::Dynamodb(store) => store.clone(),
                        Store::Memory(store) => store.clone(),
                    }
                }
            )*
        }
    };
}

port_accessors! {
    /// Every port (the operator commands).
    backend: Backend;
    /// Usage events and rollups (write).
    usage: UsageSink;
    /// Rollups (read).
    rollups: UsageQuery;
    /// The usage event listing.
    events: UsageEvents;
    /// The response cache.
    cache: ResponseCache;
    /// The limiter's counters.
    limits: LimiterStore;
    /// Operator prices and upstream quotas.
    catalog_source: Catalog;
    /// Conversation turns.
    conversations: ConversationStore;
    /// End-user profiles.
    profiles: ProfileStore;
    /// The document registry.
    documents: DocumentStore;
    /// The anomaly scheduler's ports.
    scheduler: SchedulerStore;
    /// Where the limiter records budget events.
    budget_events: BudgetEventRecorder;
    /// Each API key's last use.
    key_usage: KeyUsage;
}

impl Stores {
    /// Opens the store `kind` names: DynamoDB tables `{table_prefix}-*` at the endpoint `aws`
    /// selects, or an empty embedded store. Makes no network call.
    pub async fn open(
        kind: StoreKind,
        aws: AwsConfigSource,
        table_prefix: &str,
        directory_ttl: Duration,
    ) -> Self {
        match kind {
            StoreKind::Dynamodb => {
                let names = TableNames::with_prefix(table_prefix);
                let store = Arc::new(DynamoStore::from_env(aws, names).await);
                Self::on(store, directory_ttl)
            }
            StoreKind::Memory => Self::embedded(Arc::new(MemoryStore::new())),
        }
    }

    /// The store the settings name, for a Lambda function: DynamoDB unless `TOLLGATE_STORE`
    /// says `memory` (for `cargo lambda watch` without AWS), where the demo tenants are seeded
    /// (`tollgate serve` prints their keys). Makes no network call on DynamoDB.
    pub async fn from_settings(settings: &Settings) -> Result<Self, BootError> {
        let stores = Self::open(
            settings.store.kind.unwrap_or(StoreKind::Dynamodb),
            settings.aws,
            &settings.store.table_prefix,
            settings.store.directory_cache_ttl,
        )
        .await;
        if let Store::Memory(memory) = &stores.store {
            let seeded = crate::demo::seed(memory.as_ref(), chrono::Utc::now()).await?;
            tracing::warn!(
                tenants = seeded.len(),
                "embedded store: demo tenants seeded; use `tollgate serve` to see their keys"
            );
        }
        Ok(stores)
    }

    /// `store` with its lookups cached for `directory_ttl` (zero turns the cache off).
    pub fn on(store: impl Into<Store>, directory_ttl: Duration) -> Self {
        let store = store.into();
        let (keys, tenants): (Arc<dyn ApiKeyLookup>, Arc<dyn TenantConfigSource>) = match &store {
            Store::Dynamodb(s) => (s.clone(), s.clone()),
            Store::Memory(s) => (s.clone(), s.clone()),
        };
        Self {
            store,
            directory: Arc::new(CachedDirectory::new(keys, tenants, directory_ttl)),
        }
    }

    /// The embedded store. Nothing is cached in front of it: in memory a lookup costs less
    /// than a cache would, and a change is seen by the next request.
    pub fn embedded(store: Arc<MemoryStore>) -> Self {
        Self::on(store, Duration::ZERO)
    }

    /// What the store is.
    pub fn kind(&self) -> StoreKind {
        match self.store {
            Store::Dynamodb(_) => StoreKind::Dynamodb,
            Store::Memory(_) => StoreKind::Memory,
        }
    }

    /// The caller extractor over the cached keys and configurations.
    pub fn callers(&self) -> Callers {
        Callers {
            keys: self.directory.clone(),
            tenants: self.directory.clone(),
            clock: Arc::new(SystemClock),
            uses: Some(Arc::new(KeyUses::new(self.key_usage()))),
        }
    }

    /// Prices (the settings' table with the store's operator entries on top) and upstream
    /// quotas, read by the first request that needs them (never during init).
    fn catalog(&self, settings: &Settings) -> Result<Arc<OperatorCatalog>, BootError> {
        Ok(Arc::new(OperatorCatalog::from_store(
            settings.prices()?,
            self.catalog_source(),
        )))
    }

    fn limiter(&self, settings: &Settings, catalog: Arc<OperatorCatalog>) -> Arc<Limiter> {
        Arc::new(
            Limiter::with_catalog(self.limits(), catalog, settings.default_reserve_tokens)
                .with_budget_events(self.budget_events()),
        )
    }
}

/// The chat service, and a line per configured provider. Retrieval runs over `index` when one
/// is given. Makes no network call.
pub fn chat_service(
    settings: &Settings,
    stores: &Stores,
    metrics: Arc<dyn MetricsSink>,
    index: Option<Arc<dyn VectorIndex>>,
) -> Result<(ChatService, Vec<String>), BootError> {
    let (providers, described) = settings.providers()?;
    let catalog = stores.catalog(settings)?;
    let mut service = ChatService {
        tenants: stores.directory.clone(),
        cache: stores.cache(),
        providers,
        catalog: catalog.clone(),
        retry: settings.retry,
        breakers: Arc::new(
            crate::service::failover::Breakers::default().with_metrics(metrics.clone()),
        ),
        limiter: stores.limiter(settings, catalog),
        retriever: None,
        meter: Meter {
            usage: stores.usage(),
            metrics,
            conversations: Some(stores.conversations()),
            clock: Arc::new(SystemClock),
        },
        profiles: Some(stores.profiles()),
    };
    if let Some(index) = index {
        service.retriever = Some(retriever(settings, &service, index)?);
    }
    Ok((service, described))
}

/// `POST /v1/embeddings` beside `chat`: the same providers, catalog, limiter and meter, so an
/// embeddings call shares the tenant's windows and quotas with its chat calls.
pub fn embeddings_service(chat: &ChatService) -> EmbeddingsService {
    EmbeddingsService {
        providers: chat.providers.clone(),
        catalog: chat.catalog.clone(),
        retry: chat.retry,
        limiter: chat.limiter.clone(),
        meter: chat.meter.clone(),
        cache: chat.cache.clone(),
    }
}

/// Retrieval for the chat path over `index`, with the settings' embedder; the query
/// embeddings are limited by `chat`'s limiter, metered by its meter and priced from its
/// catalog.
pub fn retriever(
    settings: &Settings,
    chat: &ChatService,
    index: Arc<dyn VectorIndex>,
) -> Result<Arc<Retriever>, BootError> {
    let (embedder, _) = settings.embedder()?;
    Ok(Arc::new(Retriever {
        index,
        embedder,
        usage: chat.meter.usage.clone(),
        catalog: chat.catalog.clone(),
        metrics: chat.meter.metrics.clone(),
        clock: chat.meter.clock.clone(),
        retry: chat.retry,
        ready: IndexReadiness::default(),
        limiter: chat.limiter.clone(),
    }))
}

/// The ingest service over `index`: documents, usage, the limiter's counters (embedding
/// tokens are reserved on the ones chat uses) and the catalog. Makes no network call.
pub fn ingest_service(
    settings: &Settings,
    stores: &Stores,
    metrics: Arc<dyn MetricsSink>,
    index: Arc<dyn VectorIndex>,
) -> Result<IngestService, BootError> {
    let catalog = stores.catalog(settings)?;
    let (embedder, _) = settings.embedder()?;
    Ok(IngestService {
        documents: stores.documents(),
        index,
        embedder,
        usage: stores.usage(),
        limiter: stores.limiter(settings, catalog.clone()),
        catalog,
        metrics,
        clock: Arc::new(SystemClock),
        retry: settings.retry,
        limits: IngestLimits::default(),
        ready: IndexReadiness::default(),
    })
}

/// The usage report: rollups and events, read only.
pub fn usage_report_service(stores: &Stores) -> UsageReportService {
    UsageReportService {
        usage: stores.rollups(),
        events: stores.events(),
        clock: Arc::new(SystemClock),
    }
}

/// The vector index the settings name: Qdrant when `TOLLGATE_QDRANT_URL` is set, otherwise
/// the embedded exact index.
pub fn vector_index(settings: &Settings) -> Result<Arc<dyn VectorIndex>, BootError> {
    Ok(match &settings.retrieval.qdrant_url {
        Some(url) => Arc::new(
            QdrantIndex::new(
                url,
                settings.retrieval.qdrant_api_key.clone(),
                settings.retrieval.qdrant_collection.clone(),
            )
            .map_err(BootError::Index)?,
        ),
        None => Arc::new(MemoryVectorIndex::new()),
    })
}

/// Creates the settings' Qdrant collection (vectors of `TOLLGATE_EMBEDDING_DIMENSIONS`, cosine)
/// and its payload indexes (`tenant_id` with `is_tenant`), or checks an existing one; for
/// `tollgate init`. Idempotent. Returns what was set up, or `None` without `TOLLGATE_QDRANT_URL`.
pub async fn init_vector_index(settings: &Settings) -> Result<Option<String>, BootError> {
    let Some(url) = &settings.retrieval.qdrant_url else {
        return Ok(None);
    };
    let index = vector_index(settings)?;
    index
        .ensure_ready(settings.retrieval.embedding_dimensions)
        .await
        .map_err(BootError::Index)?;
    Ok(Some(format!(
        "Qdrant collection `{}` at {url}: ready ({} dimensions, cosine, tenant_id index with is_tenant)",
        settings.retrieval.qdrant_collection, settings.retrieval.embedding_dimensions
    )))
}
