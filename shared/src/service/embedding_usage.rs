//! Metering embedding calls (ingest and retrieval queries) like chat calls: one usage event
//! each, idempotent by its id, and a `MeteringFailure` if it cannot be stored.

use std::time::Instant;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::ids::{RequestId, TenantId};
use crate::domain::usage::{TokenUsage, UsageEvent};
use crate::ports::vector::Embeddings;
use crate::ports::{MetricsSink, UsageSink};

/// What is known about one embedding call when it returns.
pub(crate) struct EmbeddingCall<'a> {
    pub id: RequestId,
    pub tenant: &'a TenantId,
    pub provider: crate::domain::tenant::ProviderKind,
    pub embedded: &'a Embeddings,
    pub cost: Decimal,
    pub started: Instant,
    pub attempts: u32,
    pub at: DateTime<Utc>,
}

impl EmbeddingCall<'_> {
    pub fn usage(embedded: &Embeddings) -> TokenUsage {
        TokenUsage {
            prompt_tokens: embedded.prompt_tokens,
            ..TokenUsage::default()
        }
    }

    /// Records the call's usage event; a store failure is emitted whole for replay.
    pub async fn record(self, usage: &dyn UsageSink, metrics: &dyn MetricsSink) {
        self.record_reconciled(usage, metrics, &[]).await;
    }

    /// [`EmbeddingCall::record`], with the limiter adjustments that settle the call's
    /// reservation in the same atomic write.
    pub async fn record_reconciled(
        self,
        usage: &dyn UsageSink,
        metrics: &dyn MetricsSink,
        adjustments: &[crate::ports::store::CounterAdd],
    ) {
        let elapsed = self.started.elapsed().as_millis() as u64;
        let event = UsageEvent {
            request_id: self.id,
            tenant_id: self.tenant.clone(),
            created_at: self.at,
            model_requested: "embeddings".into(),
            model_served: self.embedded.model.clone(),
            provider: self.provider,
            usage: Self::usage(self.embedded),
            cost_usd: self.cost,
            latency_ms: elapsed,
            provider_latency_ms: Some(elapsed),
            success: true,
            error_type: None,
            streamed: false,
            cache_hit: false,
            attempts: self.attempts,
            client_disconnected: false,
            degraded_from: None,
            quality_score: None,
            usage_source: crate::domain::usage::UsageSource::Provider,
        };
        if let Err(err) = usage.record(&event, adjustments).await {
            tracing::error!(request_id = %event.request_id, tenant_id = %event.tenant_id, error = %err, "metering failure: embedding usage event not stored");
            metrics.metering_failure(&event, &err.to_string());
        }
    }
}
