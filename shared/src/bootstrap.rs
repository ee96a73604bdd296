//! Builds the chat service from settings: the one place adapters are chosen.

use std::sync::Arc;

use crate::adapters::memory::MemoryStore;
use crate::config::{ConfigError, Settings};
use crate::ports::MetricsSink;
use crate::ports::clock::SystemClock;
use crate::service::ChatService;
use crate::service::limiter::{Limiter, UpstreamQuotas};

/// The chat service on the embedded store, plus the store itself (for seeding and tests).
/// Returns the provider descriptions for the start-up banner.
pub fn embedded_chat_service(
    settings: &Settings,
    metrics: Arc<dyn MetricsSink>,
) -> Result<(ChatService, Arc<MemoryStore>, Vec<String>), ConfigError> {
    let store = Arc::new(MemoryStore::new());
    let (providers, described) = settings.providers()?;
    let service = ChatService {
        keys: store.clone(),
        tenants: store.clone(),
        usage: store.clone(),
        cache: store.clone(),
        providers,
        prices: Arc::new(settings.prices()?),
        metrics,
        clock: Arc::new(SystemClock),
        retry: settings.retry,
        limiter: Arc::new(Limiter::new(
            store.clone(),
            UpstreamQuotas::new(),
            settings.default_reserve_tokens,
        )),
    };
    Ok((service, store, described))
}
