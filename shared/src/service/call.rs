//! The provider call step: what sending an admitted call needs (the retry policy, the limiter
//! for a structured-output retry's own reservation, the meter, the response cache), apart from
//! the chat service, so the buffered path (`service::structured`) and the stream
//! (`service::stream`) depend on this and not on the whole service.

use std::sync::Arc;

use crate::adapters::retry::RetryPolicy;
use crate::domain::chat::Completion;
use crate::domain::tenant::TenantConfig;
use crate::ports::ResponseCache;
use crate::ports::provider::ProviderError;

use super::failover::{self, Answer, Ask, Breakers, Leg};
use super::limiter::Limiter;
use super::metering::{CallRecord, Meter};
use super::prepared::Prepared;

#[derive(Clone)]
pub(crate) struct CallStep {
    pub retry: RetryPolicy,
    pub limiter: Arc<Limiter>,
    pub meter: Meter,
    pub cache: Arc<dyn ResponseCache>,
    pub breakers: Arc<Breakers>,
}

impl CallStep {
    /// Calls `prepared`'s chain for `ask` (`service::failover`): its answer, the attempts over
    /// every target, and the fallback that answered (or failed last); `None`: the route's own
    /// target. `record` is set to the target that answered either way (a structured-output
    /// retry's record, copied from a first call a fallback served, may be answered by the
    /// route's own target).
    pub async fn call_chain(
        &self,
        record: &mut CallRecord,
        prepared: &Prepared,
        ask: Ask,
    ) -> (Result<Answer, ProviderError>, u32, Option<Leg>) {
        let legs = prepared.legs();
        // The key the record's reservation holds a key quota on (if any) carries the call
        // on the route's own target.
        let pool_key = record.reservation.as_ref().and_then(|r| r.pool_key);
        let upstream = &prepared.upstream;
        let chained =
            failover::call(&self.retry, &self.breakers, &legs, upstream, pool_key, ask).await;
        record.served_by(&legs[chained.leg]);
        let fallback = (chained.leg != 0).then(|| legs[chained.leg].clone());
        (chained.result, chained.attempts, fallback)
    }

    /// Stores a complete, valid reply for the tenant's cache TTL. A failed write costs a
    /// later cache miss, never the reply: it is logged.
    pub async fn cache_put(&self, key: &str, completion: &Completion, config: &TenantConfig) {
        let ttl = std::time::Duration::from_secs(u64::from(config.response_cache.ttl_seconds));
        if let Err(err) = self.cache.put(key, completion, ttl).await {
            tracing::warn!(error = %err, "response cache write failed");
        }
    }
}
