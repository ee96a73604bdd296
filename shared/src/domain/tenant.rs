//! Tenant configuration: tier, system prompt, model routes, cache policy, price overrides.
//!
//! Operators write it (through the CLI); invoke reads it on every request. `version` grows on
//! every change and is part of every response-cache key, so a config change can never serve a
//! response produced under the old configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::budget::{Budget, EndUserPolicy, MAX_USER_OVERRIDES};
use super::ids::TenantId;
use super::limits::{DegradationPolicy, LimitOverrides, Limits};
use super::pricing::ModelPrice;
use super::prompt::PromptTemplate;

/// A pricing tier; decides the default limits ([`Tier::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The lowest limits.
    Free,
    /// Middle limits.
    Pro,
    /// The highest limits.
    Enterprise,
}

impl Tier {
    /// The tier's name as configured (`free`, `pro`, `enterprise`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }
}

/// The upstream API family a route calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI (chat completions and embeddings).
    Openai,
    /// Anthropic's messages API.
    Anthropic,
    /// Amazon Bedrock's Converse API, in the deployment's own AWS account (IAM role, no key).
    Bedrock,
}

impl ProviderKind {
    /// Every provider, in a fixed order.
    pub const ALL: [ProviderKind; 3] = [Self::Openai, Self::Anthropic, Self::Bedrock];

    /// The provider's name in configs, metrics and logs (`openai`, `anthropic`, `bedrock`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Bedrock => "bedrock",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a logical model name goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The API family to call.
    pub provider: ProviderKind,
    /// The provider's model id, e.g. `gpt-4o-mini` or `ft:gpt-4o-mini-2024-07-18:acme::abc123`.
    pub model: String,
    /// Set for fine-tuned model versions; such routes are only served to the model's owner.
    #[serde(default)]
    pub fine_tuned: bool,
    /// Which API the route serves; chat when not stored (routes from before embeddings).
    #[serde(default, skip_serializing_if = "RouteKind::is_chat")]
    pub kind: RouteKind,
    /// Where a chat call goes, in order, when this route's provider has not started answering
    /// (a connect failure, a 429, a 5xx, an open circuit): `service::failover`. Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<Target>,
}

/// One provider model a route can be served by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The API family to call.
    pub provider: ProviderKind,
    /// The provider's model id.
    pub model: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// Most fallbacks a route may name.
pub const MAX_FALLBACKS: usize = 4;

/// The API a route serves: a chat model is not called for embeddings, nor the reverse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// `POST /v1/chat/completions` (and the Messages API).
    #[default]
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
}

impl RouteKind {
    /// Whether this is [`RouteKind::Chat`] (kept out of stored routes, as it always was).
    pub fn is_chat(&self) -> bool {
        *self == RouteKind::Chat
    }

    /// The endpoint a route of this kind serves, for error messages.
    pub fn endpoint(self) -> &'static str {
        match self {
            RouteKind::Chat => "POST /v1/chat/completions",
            RouteKind::Embeddings => "POST /v1/embeddings",
        }
    }
}

impl Route {
    /// Fine-tuned routes are checked against the fine-tuned model registry. OpenAI's `ft:` ids
    /// are treated as fine-tuned even when the operator forgot the flag: fail closed.
    pub fn is_fine_tuned(&self) -> bool {
        self.fine_tuned || self.model.starts_with("ft:")
    }

    /// The route's own provider model.
    pub fn target(&self) -> Target {
        Target {
            provider: self.provider,
            model: self.model.clone(),
        }
    }

    /// This route served by `fallback` instead: same kind, no fallbacks of its own.
    pub fn served_by(&self, fallback: &Target) -> Route {
        Route {
            provider: fallback.provider,
            model: fallback.model.clone(),
            fine_tuned: false,
            kind: self.kind,
            fallbacks: Vec::new(),
        }
    }

    /// Why the route's fallbacks cannot be used, if they cannot.
    fn fallback_problem(&self) -> Option<&'static str> {
        if self.fallbacks.is_empty() {
            return None;
        }
        if self.kind != RouteKind::Chat {
            return Some("only chat routes fail over");
        }
        if self.is_fine_tuned() {
            return Some("a fine-tuned route never fails over (its tenant's model is the answer)");
        }
        if self.fallbacks.len() > MAX_FALLBACKS {
            return Some("at most 4 fallbacks");
        }
        let mut seen = vec![self.target()];
        for target in &self.fallbacks {
            if target.model.trim().is_empty() {
                return Some("a fallback has an empty model");
            }
            if target.model.starts_with("ft:") {
                return Some("a fallback may not be a fine-tuned model");
            }
            if seen.contains(target) {
                return Some("a target appears twice");
            }
            seen.push(target.clone());
        }
        None
    }
}

/// Whether replies are cached for identical requests, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseCachePolicy {
    /// Whether the response cache is used for this tenant.
    pub enabled: bool,
    /// How long a cached reply is served, in seconds (default 3600).
    #[serde(default = "default_cache_ttl")]
    pub ttl_seconds: u32,
}

fn default_cache_ttl() -> u32 {
    3600
}

impl Default for ResponseCachePolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl_seconds: default_cache_ttl(),
        }
    }
}

/// Everything invoke needs to know about a tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant this configuration belongs to.
    pub tenant_id: TenantId,
    /// The tenant's name, for `{{tenant_name}}` and operators.
    pub display_name: String,
    /// The tier whose limits apply (before overrides).
    pub tier: Tier,
    /// Grows on every change; part of response-cache keys.
    pub version: u64,
    /// The system prompt template, rendered per request; it precedes every message.
    pub system_prompt: PromptTemplate,
    /// The tenant's own template variables (name → value); they shadow built-ins.
    #[serde(default)]
    pub prompt_variables: BTreeMap<String, String>,
    /// Logical model name (what clients send as `model`) → route.
    pub routes: BTreeMap<String, Route>,
    /// Response-cache policy (off by default).
    #[serde(default)]
    pub response_cache: ResponseCachePolicy,
    /// Provider model id → price, replacing the global price table for this tenant
    /// (negotiated rates, fine-tuned models).
    #[serde(default)]
    pub price_overrides: BTreeMap<String, ModelPrice>,
    /// Overrides of the tier's limits.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Serve cheaper models once daily usage passes a threshold; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degradation: Option<DegradationPolicy>,
    /// A disabled tenant's keys are refused (401) until it is enabled again.
    #[serde(default)]
    pub disabled: bool,
    /// Whether answers are grounded in the tenant's documents by default.
    #[serde(default)]
    pub retrieval: RetrievalPolicy,
    /// How much stored history a conversation carries.
    #[serde(default)]
    pub conversations: ConversationPolicy,
    /// What to do when a structured reply fails its format.
    #[serde(default)]
    pub structured_output: StructuredOutputPolicy,
    /// Limits on the tenant's own end users (the `user` of its requests).
    #[serde(default, skip_serializing_if = "EndUserPolicy::is_empty")]
    pub end_users: EndUserPolicy,
    /// Bedrock model id → the tenant's application inference profile ARN for it. Calls of
    /// that model go through the profile, so the tenant's spend carries the profile's cost
    /// allocation tags in the AWS bill; the model id still prices them (README "Bedrock").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bedrock_profiles: BTreeMap<String, String>,
}

impl TenantConfig {
    /// The application inference profile a call of `target` goes through, if the tenant has
    /// one for it (Bedrock only).
    pub fn inference_profile(&self, target: &Route) -> Option<String> {
        (target.provider == ProviderKind::Bedrock)
            .then(|| self.bedrock_profiles.get(&target.model).cloned())
            .flatten()
    }
}

/// Whether `arn` is an application inference profile's ARN:
/// `arn:<partition>:bedrock:<region>:<account>:application-inference-profile/<id>`.
pub fn is_inference_profile_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return false;
    };
    let id = resource.strip_prefix("application-inference-profile/");
    prefix == "arn"
        && partition.starts_with("aws")
        && service == "bedrock"
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && id.is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// What happens when a structured-output reply fails validation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredOutputPolicy {
    /// Ask the provider once more (buffered requests only; a stream has already been sent).
    /// The retry is metered as its own usage event.
    #[serde(default)]
    pub retry_on_invalid: bool,
}

/// How much stored history a request with a `conversation_id` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationPolicy {
    /// Tokens of history at most; the oldest turns are dropped first.
    pub max_tokens: u32,
    /// Turns read from the store at most.
    pub max_turns: u16,
}

impl Default for ConversationPolicy {
    fn default() -> Self {
        Self {
            max_tokens: 2_000,
            max_turns: 40,
        }
    }
}

/// Whether answers are grounded in the tenant's documents by default, and how much of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalPolicy {
    /// Retrieve for requests that do not say (a request's `retrieval` overrides it).
    pub enabled: bool,
    /// Chunks to retrieve (default 4).
    #[serde(default = "default_top_k")]
    pub top_k: u8,
    /// Tokens of excerpts at most added to a prompt.
    #[serde(default = "default_context_tokens")]
    pub max_context_tokens: u32,
}

fn default_top_k() -> u8 {
    4
}

fn default_context_tokens() -> u32 {
    1_500
}

impl Default for RetrievalPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            top_k: default_top_k(),
            max_context_tokens: default_context_tokens(),
        }
    }
}

/// Why a tenant configuration was refused on write.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration has no model routes.
    #[error("tenant `{0}` has no model routes; add at least one")]
    NoRoutes(TenantId),
    /// The system prompt names a variable that is neither defined nor built in.
    #[error("system prompt uses `{{{{{0}}}}}`, which is neither a prompt variable nor a built-in")]
    UnknownPromptVariable(String),
    /// A route's provider model is empty (carries the route name).
    #[error("route `{0}` has an empty provider model")]
    EmptyRouteModel(String),
    /// A route's fallbacks cannot be used: (route, why).
    #[error("route `{0}`: {1}")]
    BadFallbacks(String, &'static str),
    /// A degradation entry names a model that is not a route: (from, to, the unknown one).
    #[error("degradation maps `{0}` to `{1}`, but `{2}` is not one of the tenant's models")]
    UnknownDegradationModel(String, String, String),
    /// The degradation threshold is not 1-100 percent.
    #[error("degradation threshold must be between 1 and 100 percent, got {0}")]
    BadDegradationThreshold(u8),
    /// A limit override is above [`MAX_LIMIT`](super::limits::MAX_LIMIT).
    #[error("limit `{field}` is {value}, above the maximum of {max} (10^15)", max = super::limits::MAX_LIMIT)]
    LimitAboveMax {
        /// The override at fault.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The budget alert threshold is not 1-100 percent.
    #[error("budget alert threshold must be between 1 and 100 percent, got {0}")]
    BadBudgetAlert(u8),
    /// More per-user overrides than a configuration may carry.
    #[error(
        "{0} end-user overrides, above the maximum of {MAX_USER_OVERRIDES}; raise the defaults instead"
    )]
    TooManyUserOverrides(usize),
    /// A Bedrock inference profile that is not an application inference profile's ARN.
    #[error(
        "the Bedrock profile for `{0}` is not an application inference profile ARN (arn:aws:bedrock:<region>:<account>:application-inference-profile/<id>)"
    )]
    BadInferenceProfile(String),
}

impl TenantConfig {
    /// Checks what serde cannot: every template variable resolves, every route names a model.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.routes.is_empty() {
            return Err(ConfigError::NoRoutes(self.tenant_id.clone()));
        }
        for (name, route) in &self.routes {
            if route.model.trim().is_empty() {
                return Err(ConfigError::EmptyRouteModel(name.clone()));
            }
            if let Some(why) = route.fallback_problem() {
                return Err(ConfigError::BadFallbacks(name.clone(), why));
            }
        }
        if let Some((model, _)) = self
            .bedrock_profiles
            .iter()
            .find(|(_, arn)| !is_inference_profile_arn(arn))
        {
            return Err(ConfigError::BadInferenceProfile(model.clone()));
        }
        for var in self.system_prompt.variables() {
            let known =
                self.prompt_variables.contains_key(var) || super::prompt::BUILT_INS.contains(&var);
            if !known {
                return Err(ConfigError::UnknownPromptVariable(var.to_owned()));
            }
        }
        if let Some((field, value)) = self.limits.above_max() {
            return Err(ConfigError::LimitAboveMax { field, value });
        }
        if let Some(percent) = self.limits.budget_alert_at_percent
            && !(1..=100).contains(&percent)
        {
            return Err(ConfigError::BadBudgetAlert(percent));
        }
        let users = &self.end_users;
        if users.overrides.len() > MAX_USER_OVERRIDES {
            return Err(ConfigError::TooManyUserOverrides(users.overrides.len()));
        }
        let user_limits = std::iter::once(&users.defaults).chain(users.overrides.values());
        if let Some((field, value)) = user_limits.filter_map(|l| l.above_max()).next() {
            return Err(ConfigError::LimitAboveMax { field, value });
        }
        if let Some(policy) = &self.degradation {
            if !(1..=100).contains(&policy.threshold_percent) {
                return Err(ConfigError::BadDegradationThreshold(
                    policy.threshold_percent,
                ));
            }
            for (from, to) in &policy.routes {
                for name in [from, to] {
                    if !self.routes.contains_key(name) {
                        return Err(ConfigError::UnknownDegradationModel(
                            from.clone(),
                            to.clone(),
                            name.clone(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The limits in force: the tier's, with this tenant's overrides.
    pub fn effective_limits(&self) -> Limits {
        self.limits.apply(self.tier.limits())
    }

    /// The dollar budgets in force: the tier's, with this tenant's overrides.
    pub fn budget(&self) -> Budget {
        self.limits.budget(self.tier.budget())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::MAX_LIMIT;

    fn with_limits(limits: serde_json::Value) -> Result<TenantConfig, serde_json::Error> {
        let mut raw = serde_json::to_value(crate::demo::globex_config().unwrap()).unwrap();
        raw["limits"] = limits;
        serde_json::from_value(raw)
    }

    #[test]
    fn a_stored_limit_above_the_maximum_is_refused_naming_its_field() {
        // 2^63 would be i64::MIN once the limiter converts it; 10^15 + 1 is just over.
        for (field, value) in [
            ("tokens_per_minute", 1_u64 << 63),
            ("requests_per_minute", u64::MAX),
            ("tokens_per_day", MAX_LIMIT + 1),
            ("storage_chunks", u64::MAX),
        ] {
            let err = with_limits(serde_json::json!({ field: value })).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(field) && message.contains(&value.to_string()),
                "{message}"
            );
        }
        let at_max = with_limits(serde_json::json!({
            "tokens_per_minute": MAX_LIMIT,
            "requests_per_minute": MAX_LIMIT,
            "tokens_per_day": MAX_LIMIT,
            "storage_chunks": MAX_LIMIT,
        }))
        .unwrap();
        assert_eq!(at_max.effective_limits().tokens_per_day, MAX_LIMIT);
        assert_eq!(
            with_limits(serde_json::json!({})).unwrap().limits,
            LimitOverrides::default()
        );
    }

    #[test]
    fn a_limit_above_the_maximum_built_in_code_fails_validation() {
        let mut config = crate::demo::globex_config().unwrap();
        config.limits.tokens_per_day = Some(u64::MAX);
        let err = config.validate().unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::LimitAboveMax {
                    field: "tokens_per_day",
                    ..
                }
            ),
            "{err}"
        );
        config.limits = crate::demo::UNLIMITED;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn fallbacks_are_stored_only_when_set_and_read_back_strictly() {
        let plain: Route =
            serde_json::from_str(r#"{"provider":"openai","model":"gpt-4o-mini"}"#).unwrap();
        assert!(plain.fallbacks.is_empty());
        assert!(!serde_json::to_string(&plain).unwrap().contains("fallbacks"));
        let chained: Route = serde_json::from_str(
            r#"{"provider":"openai","model":"gpt-4o-mini","fallbacks":[{"provider":"anthropic","model":"claude-haiku-4-5"}]}"#,
        )
        .unwrap();
        assert_eq!(
            chained.fallbacks[0].to_string(),
            "anthropic/claude-haiku-4-5"
        );
        assert_eq!(
            chained.served_by(&chained.fallbacks[0]).target(),
            chained.fallbacks[0]
        );
        let typo = serde_json::from_str::<Route>(
            r#"{"provider":"openai","model":"m","fallbacks":[{"provider":"anthropic","modle":"x"}]}"#,
        );
        assert!(typo.is_err());
    }

    #[test]
    fn a_chain_may_not_repeat_a_target_nor_grow_past_four() {
        let mut config = crate::demo::acme_config().unwrap();
        let route = config.routes.get_mut("gpt-4o").unwrap();
        route.fallbacks = vec![route.target()];
        assert_eq!(
            config.validate(),
            Err(ConfigError::BadFallbacks(
                "gpt-4o".into(),
                "a target appears twice"
            ))
        );
        let route = config.routes.get_mut("gpt-4o").unwrap();
        route.fallbacks = (0..5)
            .map(|i| Target {
                provider: ProviderKind::Anthropic,
                model: format!("claude-{i}"),
            })
            .collect();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::BadFallbacks(_, "at most 4 fallbacks"))
        ));
    }
}
