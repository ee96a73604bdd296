//! Usage events for tests that write history straight into a store: one successful OpenAI
//! call, which each suite adjusts with struct-update syntax (`UsageEvent { usage, ..ok(..) }`);
//! and one provider request, for suites that call an adapter directly.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tollgate::domain::chat::{Message, Role};
use tollgate::domain::ids::{RequestId, TenantId};
use tollgate::domain::tenant::ProviderKind;
use tollgate::domain::usage::{TokenUsage, UsageEvent};
use tollgate::ports::provider::ProviderRequest;

/// A successful, unstreamed, uncached call of `tenant` on `model`: 100 prompt and 20
/// completion tokens, 300 ms (280 ms at the provider), costing `cost`. Panics on an invalid
/// tenant id (test input).
#[allow(clippy::expect_used)]
pub fn ok_event(tenant: &str, model: &str, at: DateTime<Utc>, cost: Decimal) -> UsageEvent {
    UsageEvent {
        request_id: RequestId::generate(),
        tenant_id: TenantId::parse(tenant).expect("a valid tenant id"),
        created_at: at,
        model_requested: model.into(),
        model_served: model.into(),
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
        usage_source: Default::default(),
        user: None,
    }
}

/// One message.
pub fn message(role: Role, content: &str) -> Message {
    Message::new(role, content)
}

/// "Say hello." to `model`, with a system prompt and at most 64 tokens; nothing else set.
pub fn provider_request(model: &str) -> ProviderRequest {
    ProviderRequest {
        model: model.into(),
        system: Some("You are a test assistant.".into()),
        messages: vec![message(Role::User, "Say hello.")],
        max_tokens: Some(64),
        temperature: None,
        top_p: None,
        stop: vec![],
        seed: None,
        presence_penalty: None,
        frequency_penalty: None,
        response_format: Default::default(),
        tools: Default::default(),
        inference_profile: None,
        pool_key: None,
        deadline: None,
    }
}
