//! Builds the chat service from settings: the one place adapters are chosen.

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::cached::CachedDirectory;

use crate::adapters::dynamodb::{DynamoStore, TableNames};
use crate::adapters::memory::MemoryStore;
use crate::adapters::qdrant::QdrantIndex;
use crate::adapters::vector_memory::MemoryVectorIndex;
use crate::config::{ConfigError, Settings, StoreKind};
use crate::domain::limits::UpstreamQuotas;
use crate::ports::clock::SystemClock;
use crate::ports::store::{ConversationStore, DocumentStore, ProfileStore};
use crate::ports::vector::{IndexReadiness, VectorIndex};
use crate::ports::{
    ApiKeyLookup, Catalog, LimiterStore, MetricsSink, ResponseCache, TenantConfigSource, UsageSink,
};
use crate::service::ChatService;
use crate::service::catalog::OperatorCatalog;
use crate::service::ingest::{IngestLimits, IngestService};
use crate::service::limiter::Limiter;
use crate::service::metering::Meter;
use crate::service::retrieval::Retriever;

/// Every port the chat path needs, from one store.
pub trait ChatStore:
    ApiKeyLookup
    + TenantConfigSource
    + UsageSink
    + ResponseCache
    + LimiterStore
    + Catalog
    + ConversationStore
    + ProfileStore
    + 'static
{
}

impl<S> ChatStore for S where
    S: ApiKeyLookup
        + TenantConfigSource
        + UsageSink
        + ResponseCache
        + LimiterStore
        + Catalog
        + ConversationStore
        + ProfileStore
        + 'static
{
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the vector index cannot be configured: {0}")]
    Index(crate::ports::vector::IndexError),
    #[error(transparent)]
    Provider(#[from] crate::adapters::http_provider::ProviderSetupError),
}

fn build<S: ChatStore>(
    settings: &Settings,
    metrics: Arc<dyn MetricsSink>,
    store: Arc<S>,
    catalog: OperatorCatalog,
    directory_ttl: Duration,
) -> Result<(ChatService, Vec<String>), BootError> {
    let (providers, described) = settings.providers()?;
    let directory = Arc::new(CachedDirectory::new(
        store.clone(),
        store.clone(),
        directory_ttl,
    ));
    let catalog = Arc::new(catalog);
    let service = ChatService {
        keys: directory.clone(),
        tenants: directory,
        cache: store.clone(),
        providers,
        catalog: catalog.clone(),
        retry: settings.retry,
        limiter: Arc::new(Limiter::with_catalog(
            store.clone(),
            catalog,
            settings.default_reserve_tokens,
        )),
        retriever: None,
        meter: Meter {
            usage: store.clone(),
            metrics,
            conversations: Some(store.clone()),
            clock: Arc::new(SystemClock),
        },
        profiles: Some(store),
    };
    Ok((service, described))
}

/// The chat service on any store: operator prices and upstream quotas are read from the store's
/// catalog by the first request that needs them (never during init, see `service::catalog`);
/// key and config lookups go through the short-lived cache. Makes no network call.
pub fn chat_service<S: ChatStore>(
    settings: &Settings,
    metrics: Arc<dyn MetricsSink>,
    store: Arc<S>,
) -> Result<(ChatService, Vec<String>), BootError> {
    let catalog = OperatorCatalog::from_store(settings.prices()?, store.clone());
    build(
        settings,
        metrics,
        store,
        catalog,
        settings.directory_cache_ttl,
    )
}

/// Retrieval for the chat path over `index`, with the settings' embedder; the query
/// embeddings are metered into `usage` and priced from `prices`.
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

/// The vector index the settings name: Qdrant when `TOLLGATE_QDRANT_URL` is set, otherwise
/// the embedded exact index.
pub fn vector_index(settings: &Settings) -> Result<Arc<dyn VectorIndex>, BootError> {
    Ok(match &settings.qdrant_url {
        Some(url) => Arc::new(
            QdrantIndex::new(
                url,
                settings.qdrant_api_key.clone(),
                settings.qdrant_collection.clone(),
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
    let Some(url) = &settings.qdrant_url else {
        return Ok(None);
    };
    let index = vector_index(settings)?;
    index
        .ensure_ready(settings.embedding_dimensions)
        .await
        .map_err(BootError::Index)?;
    Ok(Some(format!(
        "Qdrant collection `{}` at {url}: ready ({} dimensions, cosine, tenant_id index with is_tenant)",
        settings.qdrant_collection, settings.embedding_dimensions
    )))
}

/// The ingest service on `store` and `index`. Prices and upstream quotas come from the bundled
/// table and the store's catalog (read on first use), as for chat; embedding tokens are
/// reserved on the store's limiter counters, the ones chat uses. Makes no network call.
pub fn ingest_service_on<S: ChatStore + DocumentStore>(
    settings: &Settings,
    metrics: Arc<dyn MetricsSink>,
    store: Arc<S>,
    index: Arc<dyn VectorIndex>,
) -> Result<IngestService, BootError> {
    let catalog = Arc::new(OperatorCatalog::from_store(
        settings.prices()?,
        store.clone(),
    ));
    let (embedder, _) = settings.embedder()?;
    let directory = Arc::new(CachedDirectory::new(
        store.clone(),
        store.clone(),
        settings.directory_cache_ttl,
    ));
    let limiter = Arc::new(Limiter::with_catalog(
        store.clone(),
        catalog.clone(),
        settings.default_reserve_tokens,
    ));
    Ok(IngestService {
        keys: directory.clone(),
        tenants: directory,
        documents: store.clone(),
        index,
        embedder,
        usage: store,
        catalog,
        metrics,
        clock: Arc::new(SystemClock),
        retry: settings.retry,
        limits: IngestLimits::default(),
        ready: IndexReadiness::default(),
        limiter,
    })
}

/// The ingest Lambda's service: DynamoDB (or the embedded store) and Qdrant (or the embedded
/// index), as the settings say.
pub async fn ingest_service(
    settings: &Settings,
    metrics: Arc<dyn MetricsSink>,
) -> Result<IngestService, BootError> {
    let index = vector_index(settings)?;
    match settings.store.unwrap_or(StoreKind::Dynamodb) {
        StoreKind::Dynamodb => {
            let names = TableNames::with_prefix(&settings.table_prefix);
            let store = Arc::new(DynamoStore::from_env(settings.aws, names).await);
            ingest_service_on(settings, metrics, store, index)
        }
        StoreKind::Memory => {
            ingest_service_on(settings, metrics, Arc::new(MemoryStore::new()), index)
        }
    }
}

/// The chat service on the embedded store, plus the store itself (for seeding and tests).
/// Nothing is cached in front of it: in memory, a lookup costs less than a cache would.
pub fn embedded_chat_service(
    settings: &Settings,
    metrics: Arc<dyn MetricsSink>,
) -> Result<(ChatService, Arc<MemoryStore>, Vec<String>), BootError> {
    let store = Arc::new(MemoryStore::new());
    let (service, described) = build(
        settings,
        metrics,
        store.clone(),
        OperatorCatalog::fixed(settings.prices()?, UpstreamQuotas::new()),
        Duration::ZERO,
    )?;
    Ok((service, store, described))
}
