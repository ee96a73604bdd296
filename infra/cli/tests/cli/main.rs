//! The built `tollgate` binary, as operators and tenants run it: one test binary, a module per
//! command family (`cargo test -p tollgate-cli --test cli operator_cli::`).

#![allow(clippy::unwrap_used)]

mod ingest_cmd;
mod operator_cli;
mod usage_cli;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tollgate::domain::ids::{RequestId, TenantId};
use tollgate::domain::tenant::ProviderKind;
use tollgate::domain::usage::{TokenUsage, UsageEvent};

/// A successful 100 + 20 token call of `tenant` on `gpt-4o-mini` (alias `fast`).
fn usage_event(
    request_id: RequestId,
    tenant: &str,
    at: DateTime<Utc>,
    cost: Decimal,
) -> UsageEvent {
    UsageEvent {
        request_id,
        tenant_id: TenantId::parse(tenant).unwrap(),
        created_at: at,
        model_requested: "fast".into(),
        model_served: "gpt-4o-mini".into(),
        provider: ProviderKind::Openai,
        usage: TokenUsage {
            prompt_tokens: 100,
            completion_tokens: 20,
            cached_tokens: 0,
            cache_write_tokens: 0,
        },
        cost_usd: cost,
        latency_ms: 300,
        provider_latency_ms: Some(280),
        success: true,
        error_type: None,
        streamed: false,
        cache_hit: false,
        attempts: 1,
        client_disconnected: false,
        degraded_from: None,
        quality_score: None,
    }
}
