//! The metrics port: one record per request, rendered as CloudWatch EMF in production.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::usage::TokenUsage;
use crate::error::ErrorKind;

/// Everything observable about one request; also the per-request trace.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMetrics {
    /// When the request was handled, by the gateway's clock.
    pub timestamp: DateTime<Utc>,
    /// The function that served the request (`invoke`, `ingest`).
    pub function: &'static str,
    /// The request's id (the `x-request-id` the client sees).
    pub request_id: String,
    /// None when the request failed before authentication.
    pub tenant_id: Option<String>,
    /// The logical model requested, when known.
    pub model: Option<String>,
    /// The model id the provider says it served, when a provider answered.
    pub model_served: Option<String>,
    /// The provider called (`openai`, `anthropic`, ...), when known.
    pub provider: Option<&'static str>,
    /// The HTTP status sent to the client (a stream failing after its header keeps 200).
    pub status: u16,
    /// Wall-clock time of the whole request, in milliseconds.
    pub latency_ms: f64,
    /// Time spent waiting on the provider, in milliseconds; `None` when not measured.
    pub provider_latency_ms: Option<f64>,
    /// Tokens the request consumed (see `usage_source`).
    pub usage: TokenUsage,
    /// Whether `usage` is the provider's report or the gateway's estimate.
    pub usage_source: crate::domain::usage::UsageSource,
    /// What the request cost the tenant, in USD (zero for cache hits and refusals).
    pub cost_usd: Decimal,
    /// Why the request failed; `None` on success.
    pub error_type: Option<ErrorKind>,
    /// Whether the reply was streamed (SSE).
    pub streamed: bool,
    /// Some(true/false) when the response cache was consulted.
    pub cache_hit: Option<bool>,
    /// Provider calls made for the request, retries included.
    pub attempts: u32,
}

/// Where per-request metrics and metering alarms go (EMF lines in production).
pub trait MetricsSink: Send + Sync {
    /// Emits one request's metrics (an EMF line in production).
    fn request(&self, metrics: &RequestMetrics);

    /// A usage event could not be recorded. The event is carried whole so it can be replayed.
    fn metering_failure(&self, event: &crate::domain::usage::UsageEvent, error: &str);

    /// A store or index returned another tenant's data to `tenant`'s request (and the request
    /// was refused). Alarmed on: it should never happen.
    fn isolation_violation(&self, function: &'static str, tenant: &str);

    /// The circuit of a route target (`{provider}/{model}`) opened (`open`) or closed again
    /// (`service::failover`). Sinks that do not report it ignore it.
    fn circuit(&self, target: &str, open: bool) {
        let _ = (target, open);
    }
}
