//! Builds the chat service from settings: the one place adapters are chosen.

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::cached::CachedDirectory;
use crate::adapters::memory::MemoryStore;
use crate::config::{ConfigError, Settings};
use crate::domain::pricing::PriceTable;
use crate::ports::clock::SystemClock;
use crate::ports::store::StoreError;
use crate::ports::{
    ApiKeyLookup, Catalog, LimiterStore, MetricsSink, ResponseCache, TenantConfigSource, UsageSink,
};
use crate::service::ChatService;
use crate::service::limiter::{Limiter, UpstreamQuotas};

/// Every port the chat path needs, from one store.
pub trait ChatStore:
    ApiKeyLookup + TenantConfigSource + UsageSink + ResponseCache + LimiterStore + Catalog + 'static
{
}

impl<S> ChatStore for S where
    S: ApiKeyLookup
        + TenantConfigSource
        + UsageSink
        + ResponseCache
        + LimiterStore
        + Catalog
        + 'static
{
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading the operator catalog (prices, quotas) failed: {0}")]
    Catalog(#[from] StoreError),
    #[error("an operator price entry is invalid: {0}")]
    Price(#[from] crate::domain::pricing::PriceTableError),
}

fn build<S: ChatStore>(
    settings: &Settings,
    metrics: Arc<dyn MetricsSink>,
    store: Arc<S>,
    prices: PriceTable,
    quotas: UpstreamQuotas,
    directory_ttl: Duration,
) -> Result<(ChatService, Vec<String>), BootError> {
    let (providers, described) = settings.providers()?;
    let directory = Arc::new(CachedDirectory::new(
        store.clone(),
        store.clone(),
        directory_ttl,
    ));
    let service = ChatService {
        keys: directory.clone(),
        tenants: directory,
        usage: store.clone(),
        cache: store.clone(),
        providers,
        prices: Arc::new(prices),
        metrics,
        clock: Arc::new(SystemClock),
        retry: settings.retry,
        limiter: Arc::new(Limiter::new(store, quotas, settings.default_reserve_tokens)),
    };
    Ok((service, described))
}

/// The chat service on any store: operator prices and upstream quotas are read from the store's
/// catalog once, at cold start; key and config lookups go through the short-lived cache.
pub async fn chat_service<S: ChatStore>(
    settings: &Settings,
    metrics: Arc<dyn MetricsSink>,
    store: Arc<S>,
) -> Result<(ChatService, Vec<String>), BootError> {
    let mut prices = settings.prices()?;
    prices.extend(store.prices().await?)?;
    let quotas = store
        .upstream_quotas()
        .await?
        .into_iter()
        .map(|q| ((q.provider, q.model), q.tokens_per_minute))
        .collect();
    build(
        settings,
        metrics,
        store,
        prices,
        quotas,
        settings.directory_cache_ttl,
    )
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
        settings.prices()?,
        UpstreamQuotas::new(),
        Duration::ZERO,
    )?;
    Ok((service, store, described))
}
