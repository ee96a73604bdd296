//! Builds the chat service from settings: the one place adapters are chosen.

use std::sync::Arc;

use crate::adapters::memory::MemoryStore;
use crate::config::{ConfigError, Settings};
use crate::ports::MetricsSink;
use crate::ports::clock::SystemClock;
use crate::service::ChatService;

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
    };
    Ok((service, store, described))
}
