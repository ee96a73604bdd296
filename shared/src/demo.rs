//! Demo tenants for the embedded default (`tollgate serve`) and tests: two tenants whose
//! configurations differ in every way isolation must respect.
//!
//! - `acme`: support assistant, OpenAI and Anthropic routes, its own fine-tuned model, an
//!   embeddings route (`text-embedding-3-small`), the response cache on.
//! - `globex`: travel assistant with a long system prompt (prompt caching kicks in), a
//!   `gpt-4o-mini` name that routes to Claude instead, no response cache, and a deliberately
//!   bad route to acme's fine-tuned model that must be refused.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::domain::ids::TenantId;
use crate::domain::keys::{IssuedKey, issue_key};
use crate::domain::limits::{DegradationPolicy, LimitOverrides};
use crate::domain::pricing::ModelPrice;
use crate::domain::prompt::PromptTemplate;
use crate::domain::tenant::{
    ProviderKind, ResponseCachePolicy, Route, RouteKind, Target, TenantConfig, Tier,
};
use crate::ports::store::{StoreError, TenantAdmin};

/// The provider id of acme's fine-tuned OpenAI model; [`seed`] registers it to acme.
pub const ACME_FINE_TUNED: &str = "ft:gpt-4o-mini-2024-07-18:acme::sup01";

/// The Bedrock model acme's `claude-bedrock` route calls and `claude-failover` fails over to:
/// Claude Sonnet 4.5 through the US cross-region inference profile.
pub const DEMO_BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

fn route(provider: ProviderKind, model: &str) -> Route {
    Route {
        fallbacks: Vec::new(),
        provider,
        model: model.into(),
        fine_tuned: false,
        kind: RouteKind::Chat,
    }
}

fn tenant(id: &str) -> Result<TenantId, StoreError> {
    TenantId::parse(id).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn template(source: &str) -> Result<PromptTemplate, StoreError> {
    PromptTemplate::parse(source).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The `acme` demo tenant's configuration (see the module docs).
pub fn acme_config() -> Result<TenantConfig, StoreError> {
    Ok(TenantConfig {
        tenant_id: tenant("acme")?,
        display_name: "Acme Rockets".into(),
        tier: Tier::Pro,
        version: 0,
        system_prompt: template(
            "You are the support assistant for {{tenant_name}}, maker of {{product}}. \
             Answer in two sentences or fewer. Today is {{date}}.",
        )?,
        prompt_variables: BTreeMap::from([("product".into(), "reusable rockets".into())]),
        routes: BTreeMap::from([
            (
                "gpt-4o-mini".into(),
                route(ProviderKind::Openai, "gpt-4o-mini"),
            ),
            ("gpt-4o".into(), route(ProviderKind::Openai, "gpt-4o")),
            (
                "claude-haiku".into(),
                route(ProviderKind::Anthropic, "claude-haiku-4-5"),
            ),
            (
                "acme-support".into(),
                Route {
                    fallbacks: Vec::new(),
                    provider: ProviderKind::Openai,
                    model: ACME_FINE_TUNED.into(),
                    fine_tuned: true,
                    kind: RouteKind::Chat,
                },
            ),
            // Bedrock's Claude, and Anthropic's failing over to it (README "Bedrock").
            (
                "claude-bedrock".into(),
                route(ProviderKind::Bedrock, DEMO_BEDROCK_MODEL),
            ),
            (
                "claude-failover".into(),
                Route {
                    fallbacks: vec![Target {
                        provider: ProviderKind::Bedrock,
                        model: DEMO_BEDROCK_MODEL.into(),
                    }],
                    ..route(ProviderKind::Anthropic, "claude-sonnet-4-5")
                },
            ),
            (
                "text-embedding-3-small".into(),
                Route {
                    kind: RouteKind::Embeddings,
                    ..route(ProviderKind::Openai, "text-embedding-3-small")
                },
            ),
        ]),
        response_cache: ResponseCachePolicy {
            enabled: true,
            ttl_seconds: 600,
        },
        limits: LimitOverrides::default(),
        // Past 80 % of the daily budget, gpt-4o requests are served by gpt-4o-mini.
        degradation: Some(DegradationPolicy {
            threshold_percent: 80,
            routes: BTreeMap::from([("gpt-4o".into(), "gpt-4o-mini".into())]),
        }),
        disabled: false,
        retrieval: Default::default(),
        conversations: Default::default(),
        structured_output: Default::default(),
        end_users: Default::default(),
        bedrock_profiles: Default::default(),
        // Fine-tuned gpt-4o-mini list price: $0.30 in, $0.15 cached, $1.20 out per 1M.
        price_overrides: BTreeMap::from([(
            ACME_FINE_TUNED.into(),
            ModelPrice {
                input: Decimal::new(30, 2),
                output: Decimal::new(120, 2),
                cached_input: Some(Decimal::new(15, 2)),
                cache_write: None,
            },
        )]),
    })
}

/// The `globex` demo tenant's configuration (see the module docs).
pub fn globex_config() -> Result<TenantConfig, StoreError> {
    let policies = "Globex Travel policy: refunds within 24 hours of booking are free; \
                    later changes cost a fee that depends on the fare class. "
        .repeat(60);
    Ok(TenantConfig {
        tenant_id: tenant("globex")?,
        display_name: "Globex Travel".into(),
        tier: Tier::Free,
        version: 0,
        system_prompt: template(&format!(
            "You are {{{{tenant_name}}}}'s travel concierge. Be warm and precise.\n\n{policies}"
        ))?,
        prompt_variables: BTreeMap::new(),
        routes: BTreeMap::from([
            (
                "gpt-4o-mini".into(),
                route(ProviderKind::Anthropic, "claude-haiku-4-5"),
            ),
            (
                "claude-sonnet".into(),
                route(ProviderKind::Anthropic, "claude-sonnet-4-5"),
            ),
            ("gpt-4o".into(), route(ProviderKind::Openai, "gpt-4o")),
            // Misconfigured on purpose: acme's fine-tuned model. Requests are refused.
            (
                "acme-support".into(),
                Route {
                    fallbacks: Vec::new(),
                    provider: ProviderKind::Openai,
                    model: ACME_FINE_TUNED.into(),
                    fine_tuned: true,
                    kind: RouteKind::Chat,
                },
            ),
        ]),
        response_cache: ResponseCachePolicy::default(),
        price_overrides: BTreeMap::new(),
        limits: LimitOverrides::default(),
        degradation: None,
        disabled: false,
        retrieval: Default::default(),
        conversations: Default::default(),
        structured_output: Default::default(),
        end_users: Default::default(),
        bedrock_profiles: Default::default(),
    })
}

/// Limits no load test on one machine reaches, for measuring the gateway's own overhead: the
/// limiter still reads and writes its counters on every request, it just never refuses.
pub const UNLIMITED: LimitOverrides = LimitOverrides {
    tokens_per_minute: Some(crate::domain::limits::MAX_LIMIT),
    requests_per_minute: Some(crate::domain::limits::MAX_LIMIT),
    tokens_per_day: Some(crate::domain::limits::MAX_LIMIT),
    counter_shards: None,
    storage_chunks: None,
    budget_daily_usd: Some(crate::domain::budget::BudgetCap::Unlimited),
    budget_monthly_usd: Some(crate::domain::budget::BudgetCap::Unlimited),
    budget_alert_at_percent: None,
};

/// Stores both demo tenants, registers acme's fine-tuned model and issues one key each.
pub async fn seed(
    admin: &dyn TenantAdmin,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(TenantId, IssuedKey)>, StoreError> {
    seed_with_limits(admin, now, None).await
}

/// [`seed`], with both tenants' limits replaced by `limits` when given.
pub async fn seed_with_limits(
    admin: &dyn TenantAdmin,
    now: chrono::DateTime<chrono::Utc>,
    limits: Option<LimitOverrides>,
) -> Result<Vec<(TenantId, IssuedKey)>, StoreError> {
    let mut out = Vec::new();
    for mut config in [acme_config()?, globex_config()?] {
        if let Some(limits) = limits {
            config.limits = limits;
        }
        config
            .validate()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let id = config.tenant_id.clone();
        admin.put_tenant_config(config).await?;
        let key = issue_key(id.clone(), now);
        admin.put_key(key.record.clone()).await?;
        out.push((id, key));
    }
    admin
        .register_fine_tuned(ProviderKind::Openai, ACME_FINE_TUNED, &tenant("acme")?)
        .await?;
    Ok(out)
}
