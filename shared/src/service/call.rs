//! The provider call step: what sending an admitted call needs (the retry policy, the limiter
//! for a structured-output retry's own reservation, the meter, the response cache), apart from
//! the chat service, so the buffered path (`service::structured`) and the stream
//! (`service::stream`) depend on this and not on the whole service.

use std::sync::Arc;

use crate::adapters::retry::RetryPolicy;
use crate::domain::chat::Completion;
use crate::domain::tenant::TenantConfig;
use crate::ports::ResponseCache;

use super::failover::Breakers;
use super::limiter::Limiter;
use super::metering::Meter;

#[derive(Clone)]
pub(crate) struct CallStep {
    pub retry: RetryPolicy,
    pub limiter: Arc<Limiter>,
    pub meter: Meter,
    pub cache: Arc<dyn ResponseCache>,
    pub breakers: Arc<Breakers>,
}

impl CallStep {
    /// Stores a complete, valid reply for the tenant's cache TTL. A failed write costs a
    /// later cache miss, never the reply: it is logged.
    pub async fn cache_put(&self, key: &str, completion: &Completion, config: &TenantConfig) {
        let ttl = std::time::Duration::from_secs(u64::from(config.response_cache.ttl_seconds));
        if let Err(err) = self.cache.put(key, completion, ttl).await {
            tracing::warn!(error = %err, "response cache write failed");
        }
    }
}
