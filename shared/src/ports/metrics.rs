//! The metrics port: one record per request, rendered as CloudWatch EMF in production.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::usage::TokenUsage;
use crate::error::ErrorKind;

/// Everything observable about one request; also the per-request trace.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMetrics {
    pub timestamp: DateTime<Utc>,
    pub function: &'static str,
    pub request_id: String,
    /// None when the request failed before authentication.
    pub tenant_id: Option<String>,
    /// The logical model requested, when known.
    pub model: Option<String>,
    pub model_served: Option<String>,
    pub provider: Option<&'static str>,
    pub status: u16,
    pub latency_ms: f64,
    pub provider_latency_ms: Option<f64>,
    pub usage: TokenUsage,
    /// Whether `usage` is the provider's report or the gateway's estimate.
    pub usage_source: crate::domain::usage::UsageSource,
    pub cost_usd: Decimal,
    pub error_type: Option<ErrorKind>,
    pub streamed: bool,
    /// Some(true/false) when the response cache was consulted.
    pub cache_hit: Option<bool>,
    pub attempts: u32,
}

pub trait MetricsSink: Send + Sync {
    fn request(&self, metrics: &RequestMetrics);

    /// A usage event could not be recorded. The event is carried whole so it can be replayed.
    fn metering_failure(&self, event: &crate::domain::usage::UsageEvent, error: &str);

    /// A store or index returned another tenant's data to `tenant`'s request (and the request
    /// was refused). Alarmed on: it should never happen.
    fn isolation_violation(&self, function: &'static str, tenant: &str);
}
