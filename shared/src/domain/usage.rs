//! The usage event: one per provider call, the source of truth for billing, limits and
//! analytics.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::ids::{RequestId, TenantId};
use super::tenant::ProviderKind;
use crate::error::ErrorKind;

/// Token counts in OpenAI's convention: `prompt_tokens` includes cache reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic).
    pub cache_write_tokens: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// One record per request that reached (or would have reached) a provider.
///
/// `request_id` is the idempotency key: stores insert it at most once, so a retried Lambda or a
/// replayed event never double-counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub request_id: RequestId,
    pub tenant_id: TenantId,
    pub created_at: DateTime<Utc>,
    pub model_requested: String,
    pub model_served: String,
    pub provider: ProviderKind,
    pub usage: TokenUsage,
    pub cost_usd: Decimal,
    pub latency_ms: u64,
    pub provider_latency_ms: Option<u64>,
    pub success: bool,
    pub error_type: Option<ErrorKind>,
    pub streamed: bool,
    pub cache_hit: bool,
    /// Provider attempts made (retries on 429/5xx included). Failed attempts carry no tokens.
    pub attempts: u32,
    /// The client went away before a streamed response finished; the stream was drained so the
    /// usage is still exact.
    pub client_disconnected: bool,
}
