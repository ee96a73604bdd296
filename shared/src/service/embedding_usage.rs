//! Metering embedding calls (ingest and retrieval queries) like chat calls: one usage event
//! each, idempotent by its id, and a `MeteringFailure` if it cannot be stored.

use std::time::Instant;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::ids::{RequestId, TenantId};
use crate::domain::usage::{TokenUsage, UsageEvent, UsageSource};
use crate::error::{ErrorKind, GatewayError};
use crate::ports::provider::ProviderError;
use crate::ports::vector::Embeddings;
use crate::ports::{MetricsSink, UsageSink};
use crate::tokenizer::count_tokens;

/// What is known about one embedding call when it returns.
pub(crate) struct EmbeddingCall<'a> {
    pub id: RequestId,
    pub tenant: &'a TenantId,
    /// The model the event names as requested: the logical model of a `/v1/embeddings` call,
    /// `embeddings` for ingest's and retrieval's own calls.
    pub requested: &'a str,
    pub provider: crate::domain::tenant::ProviderKind,
    /// What the provider returned: for a call that failed part-way, the requests before the
    /// failure (their tokens were billed).
    pub embedded: &'a Embeddings,
    /// Priced on [`EmbeddingCall::metered`].
    pub cost: Decimal,
    pub started: Instant,
    pub attempts: u32,
    pub at: DateTime<Utc>,
    /// Set when the call failed after `embedded` was returned.
    pub failure: Option<EmbeddingFailure>,
    /// Answered from the response cache: no provider call, nothing metered (`embedded` has
    /// no tokens, the cost is zero).
    pub cache_hit: bool,
    /// The end user the call was made for, when the request named one.
    pub user: Option<&'a crate::domain::profile::UserId>,
}

/// How an embedding call failed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EmbeddingFailure {
    pub error: ErrorKind,
    /// Tokens of the failed request that the provider may have billed: one that reached it
    /// with no refusal back (a timeout after sending, an unreadable 2xx). Metered as Tollgate's
    /// count of its inputs, as chat meters such a call at its estimate; 0 for a refusal.
    pub estimated_tokens: u64,
}

impl EmbeddingFailure {
    /// How a request embedding `texts` failed with `err`: its inputs' tokens are estimated as
    /// billed when the request reached the provider with no refusal back.
    pub fn of(err: &ProviderError, texts: &[String]) -> Self {
        Self {
            error: GatewayError::from(err.clone()).kind(),
            estimated_tokens: if err.started {
                texts.iter().map(|t| count_tokens(t) as u64).sum()
            } else {
                0
            },
        }
    }
}

impl EmbeddingCall<'_> {
    pub fn usage(embedded: &Embeddings) -> TokenUsage {
        TokenUsage {
            prompt_tokens: embedded.prompt_tokens,
            ..TokenUsage::default()
        }
    }

    /// The tokens the event meters: the provider's report for what succeeded, plus the
    /// estimate of a failed request that may have been billed.
    pub fn metered(embedded: &Embeddings, failure: Option<&EmbeddingFailure>) -> TokenUsage {
        let mut usage = Self::usage(embedded);
        usage.prompt_tokens += failure.map_or(0, |f| f.estimated_tokens);
        usage
    }

    /// Where the event's token counts come from.
    pub fn usage_source(&self) -> UsageSource {
        match &self.failure {
            _ if self.cache_hit => UsageSource::None,
            Some(f) if f.estimated_tokens > 0 => UsageSource::Estimated,
            Some(_) if self.embedded.prompt_tokens == 0 => UsageSource::None,
            _ => UsageSource::Provider,
        }
    }

    /// Records the call's usage event with the limiter adjustments that settle its
    /// reservation, in one atomic write; a store failure is emitted whole for replay (every
    /// embedding call is made under a reservation, so there is no unreconciled variant).
    pub async fn record_reconciled(
        self,
        usage: &dyn UsageSink,
        metrics: &dyn MetricsSink,
        adjustments: &[crate::ports::store::CounterAdd],
    ) {
        let elapsed = self.started.elapsed().as_millis() as u64;
        let event = UsageEvent {
            request_id: self.id.clone(),
            tenant_id: self.tenant.clone(),
            created_at: self.at,
            model_requested: self.requested.to_owned(),
            model_served: self.embedded.model.clone(),
            provider: self.provider,
            usage: Self::metered(self.embedded, self.failure.as_ref()),
            cost_usd: self.cost,
            latency_ms: elapsed,
            provider_latency_ms: Some(elapsed),
            success: self.failure.is_none(),
            error_type: self.failure.map(|f| f.error),
            streamed: false,
            cache_hit: self.cache_hit,
            attempts: self.attempts,
            client_disconnected: false,
            degraded_from: None,
            quality_score: None,
            usage_source: self.usage_source(),
            user: self.user.cloned(),
        };
        if let Err(err) = usage.record(&event, adjustments).await {
            tracing::error!(request_id = %event.request_id, tenant_id = %event.tenant_id, error = %err, "metering failure: embedding usage event not stored");
            metrics.metering_failure(&event, &err.to_string());
        }
    }
}
