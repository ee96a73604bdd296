//! The chat hot path, for a resolved caller (`service::caller`): route → price → render
//! prompt → (response cache) → admission → provider → meter → observe.

use std::sync::Arc;
use std::time::Instant;

use crate::adapters::retry::RetryPolicy;
use crate::domain::cache_key::response_cache_key;
use crate::domain::chat::{ChatRequest, Completion, Message};
use crate::domain::ids::TenantId;
use crate::domain::pricing::ModelPrice;
use crate::domain::prompt::BuiltIns;
use crate::domain::routing;
use crate::domain::tenant::{ProviderKind, Route, RouteKind, TenantConfig};
use crate::domain::usage::TokenUsage;
use crate::error::GatewayError;
use crate::ports::metrics::RequestMetrics;
use crate::ports::provider::{LlmProvider, ProviderRequest};
use crate::ports::store::ProfileStore;
use crate::ports::{ResponseCache, TenantConfigSource};
use crate::service::catalog::OperatorCatalog;
use crate::wire::request::parse_chat_request;

use super::call::CallStep;
use super::caller::{Caller, Refused};
use super::context::RequestContext;
use super::failover::{self, Breakers, Leg};
use super::limiter::{Demand, Limiter, Reservation, Scope};
use super::metering::{CallOutcome, CallRecord, Meter, elapsed_ms};
use super::prepared::Prepared;
use super::profiles::{ProfileService, PromptProfile, prompt_profile};
use super::reply::{CacheStatus, ChatReply, ReplyMeta};
use super::retrieval::Retriever;
use super::stream::{metered_events, replay_events};

/// The providers this deployment can reach, by API family.
#[derive(Clone, Default)]
pub struct Providers {
    openai: Option<Arc<dyn LlmProvider>>,
    anthropic: Option<Arc<dyn LlmProvider>>,
    bedrock: Option<Arc<dyn LlmProvider>>,
}

impl Providers {
    /// Adds `provider` for its API family, replacing the one there.
    pub fn with(mut self, provider: Arc<dyn LlmProvider>) -> Self {
        match provider.kind() {
            ProviderKind::Openai => self.openai = Some(provider),
            ProviderKind::Anthropic => self.anthropic = Some(provider),
            ProviderKind::Bedrock => self.bedrock = Some(provider),
        }
        self
    }

    /// The provider of `kind`; `None` when the deployment has none (its routes answer 503).
    pub fn get(&self, kind: ProviderKind) -> Option<&Arc<dyn LlmProvider>> {
        match kind {
            ProviderKind::Openai => self.openai.as_ref(),
            ProviderKind::Anthropic => self.anthropic.as_ref(),
            ProviderKind::Bedrock => self.bedrock.as_ref(),
        }
    }

    /// `route`'s price (the tenant's override, else the catalog's) and its provider: what a
    /// call needs before anything is reserved. `requested` is the client's model name, for the
    /// errors.
    pub(crate) async fn priced(
        &self,
        catalog: &OperatorCatalog,
        config: &TenantConfig,
        requested: &str,
        route: &Route,
    ) -> Result<(ModelPrice, Arc<dyn LlmProvider>), GatewayError> {
        let catalog = catalog.get().await?;
        let price = config
            .price_overrides
            .get(&route.model)
            .or_else(|| catalog.prices.lookup(route.provider, &route.model))
            .cloned()
            .ok_or_else(|| GatewayError::PriceMissing {
                model: requested.to_owned(),
                provider_model: route.model.clone(),
            })?;
        let provider =
            self.get(route.provider)
                .cloned()
                .ok_or_else(|| GatewayError::ProviderUnavailable {
                    model: requested.to_owned(),
                })?;
        Ok((price, provider))
    }
}

/// Everything the chat path needs, and nothing else: this is invoke's permission set.
#[derive(Clone)]
pub struct ChatService {
    /// Fine-tuned model ownership (the caller's own configuration comes with the caller).
    pub tenants: Arc<dyn TenantConfigSource>,
    /// The response cache: read before admission, written with a fresh reply.
    pub cache: Arc<dyn ResponseCache>,
    /// The providers routes call.
    pub providers: Providers,
    /// Prices (and, through the limiter, upstream quotas), read on first use.
    pub catalog: Arc<OperatorCatalog>,
    /// Retries of a failed provider call.
    pub retry: RetryPolicy,
    /// The circuit of every route target in this container (`service::failover`).
    pub breakers: Arc<Breakers>,
    /// Admission against the tenant's limits and upstream quotas; shared with retrieval.
    pub limiter: Arc<Limiter>,
    /// Retrieval over the tenant's documents; `None` where no index is configured.
    pub retriever: Option<Arc<Retriever>>,
    /// Records each call: usage events, metrics lines, conversation turns; and the clock.
    pub meter: Meter,
    /// End-user profiles: rendered into the system prompt (`{{user.<key>}}`,
    /// `{{user_profile}}`) and served by the `/v1/users/{user_id}/profile` routes.
    pub profiles: Option<Arc<dyn ProfileStore>>,
}

/// Retrieval for one request, decided before admission and done after it.
pub(crate) struct Grounding {
    query: String,
    /// What the query embedding reserves: the query as the gateway counts it, at the
    /// embedding model's price.
    query_demand: Demand,
    top_k: u8,
    /// The excerpts' budget: what they reserve.
    max_tokens: u32,
}

impl ChatService {
    /// Serves one chat-completions request. Exactly one metrics record is emitted per call,
    /// and one usage event per call that reached a provider (or the response cache).
    pub async fn chat(
        &self,
        ctx: &RequestContext,
        caller: &Caller,
        body: &[u8],
    ) -> Result<ChatReply, GatewayError> {
        self.serve(ctx, caller, parse_chat_request(body)).await
    }

    /// Serves one chat request already parsed from its inbound API (Chat Completions, or the
    /// Messages API through `wire::anthropic`); a parse failure is reported like any refusal.
    pub async fn serve(
        &self,
        ctx: &RequestContext,
        caller: &Caller,
        request: Result<ChatRequest, GatewayError>,
    ) -> Result<ChatReply, GatewayError> {
        // The trace goes into the call record once the request is admitted; from then on the
        // metering path (which survives a client disconnect) reports it. Until then, failures
        // are reported here.
        let mut trace = self.trace(ctx);
        match self.chat_inner(ctx, &mut trace, caller, request).await {
            Ok(reply) => Ok(reply),
            Err(Failure::Unrecorded(err)) => {
                self.report_failure(ctx, trace, &err);
                Err(err)
            }
            Err(Failure::Recorded(err)) => Err(err),
        }
    }

    /// The prompt tokens `request` would send on its route (the tenant's system prompt, the
    /// conversation, tools and images, counted by the gateway's tokenizer and the route's
    /// image formula): `POST /v1/messages/count_tokens`. Routes and checks the request like a
    /// call (404 for a model the tenant does not route, 403 for another tenant's fine-tuned
    /// model), but calls no provider, reserves nothing and records no usage.
    pub async fn count_prompt_tokens(
        &self,
        ctx: &RequestContext,
        caller: &Caller,
        request: ChatRequest,
    ) -> Result<u64, GatewayError> {
        let prepared = self
            .prepare(ctx, caller, request, PromptProfile::Unread)
            .await?;
        Ok(prepared.upstream.prompt_tokens(prepared.route.provider))
    }

    /// Records a chat request that had no caller (its key refused, its tenant disabled): its
    /// metrics record and log line, as for any request refused before admission.
    pub fn refused(&self, ctx: &RequestContext, refused: &Refused) {
        let mut trace = self.trace(ctx);
        trace.tenant_id = refused.tenant.as_ref().map(TenantId::to_string);
        self.report_failure(ctx, trace, &refused.error);
    }

    fn report_failure(&self, ctx: &RequestContext, mut trace: RequestMetrics, err: &GatewayError) {
        trace.status = err.status().as_u16();
        trace.error_type = Some(err.kind());
        trace.latency_ms = elapsed_ms(ctx.started);
        self.meter.metrics.request(&trace);
        log_failure(ctx, &trace, err);
    }

    fn trace(&self, ctx: &RequestContext) -> RequestMetrics {
        RequestMetrics {
            timestamp: self.meter.clock.now(),
            function: "invoke",
            request_id: ctx.request_id.to_string(),
            tenant_id: None,
            model: None,
            model_served: None,
            provider: None,
            status: 200,
            latency_ms: 0.0,
            provider_latency_ms: None,
            usage: TokenUsage::default(),
            usage_source: crate::domain::usage::UsageSource::None,
            cost_usd: rust_decimal::Decimal::ZERO,
            error_type: None,
            streamed: false,
            cache_hit: None,
            attempts: 0,
        }
    }

    async fn chat_inner(
        &self,
        ctx: &RequestContext,
        trace: &mut RequestMetrics,
        caller: &Caller,
        request: Result<ChatRequest, GatewayError>,
    ) -> Result<ChatReply, Failure> {
        let tenant = &caller.tenant;
        trace.tenant_id = Some(tenant.to_string());
        let request = request?;
        trace.streamed = request.stream;
        let mut prepared = self
            .prepare(ctx, caller, request, PromptProfile::Unread)
            .await?;
        // Only now, once it is known to be one of the tenant's routes: a model string the
        // client made up never becomes a metric dimension (`unknown` instead).
        trace.model = Some(prepared.request.model.clone());
        trace.provider = Some(prepared.route.provider.as_str());
        trace.model_served = Some(prepared.route.model.clone());
        self.recall(tenant, &mut prepared).await?;
        // Retrieval happens after admission: its query embedding is admitted (and its excerpts
        // budgeted) with the chat call, so a refused request costs no embedding. A grounded
        // answer is never cached: it depends on documents that can change.
        let grounding = self.grounding(&prepared).await?;
        if grounding.is_some() {
            prepared.cache_key = None;
        }

        let cache_status = match (&prepared.cache_key, ctx.bypass_cache) {
            (None, _) => None,
            (Some(_), true) => Some(CacheStatus::Bypass),
            (Some(key), false) => match self.cache.get(key).await {
                Ok(Some(hit)) => {
                    trace.cache_hit = Some(true);
                    let record = self.call_record(ctx, tenant, &prepared, trace, None, None);
                    return Ok(self.serve_cache_hit(&prepared, record, hit).await);
                }
                Ok(None) => Some(CacheStatus::Miss),
                Err(err) => {
                    // A cache outage degrades to a miss; it must not fail the request.
                    tracing::warn!(request_id = %ctx.request_id, error = %err, "response cache read failed");
                    Some(CacheStatus::Miss)
                }
            },
        };
        trace.cache_hit = (cache_status == Some(CacheStatus::Miss)).then_some(false);

        let (mut prepared, mut reservation, degraded_from) = self
            .admit(ctx, tenant, prepared, grounding.as_ref())
            .await?;
        if let Some(grounding) = grounding {
            let share = reservation.carve(grounding.query_demand);
            if let Err(err) = self
                .ground(ctx, tenant, &mut prepared, grounding, share)
                .await
            {
                self.limiter.release(&reservation).await;
                return Err(err.into());
            }
        }
        trace.model = Some(prepared.request.model.clone());
        trace.model_served = Some(prepared.route.model.clone());
        trace.provider = Some(prepared.route.provider.as_str());
        let meta = ReplyMeta {
            model: prepared.request.model.clone(),
            created: self.meter.clock.now().timestamp(),
            include_usage: prepared.request.include_usage,
            cache: cache_status,
            rate: Some(reservation.status),
            degraded_from: degraded_from.clone(),
            documents: prepared
                .context
                .as_ref()
                .map(|c| c.documents.clone())
                .unwrap_or_default(),
            served_by: Some(prepared.route.target().to_string()),
        };
        // A degraded reply is not cached: the cache would answer later, undegraded requests.
        let cache_key = prepared
            .cache_key
            .clone()
            .filter(|_| cache_status == Some(CacheStatus::Miss) && degraded_from.is_none());
        // From here on the metering path reports every outcome.
        let record = self.call_record(
            ctx,
            tenant,
            &prepared,
            trace,
            Some(reservation),
            degraded_from,
        );

        if prepared.request.stream {
            let provider_started = Instant::now();
            let (mut record, mut meta) = (record, meta);
            let (answer, attempts, fallback) = self
                .call_step()
                .call_chain(&mut record, &prepared, failover::Ask::Stream)
                .await;
            if let Some(leg) = &fallback {
                prepared.serve_with(leg);
                meta.served_by = Some(leg.route.target().to_string());
            }
            match answer.and_then(failover::Answer::stream) {
                Ok(events) => {
                    let events = metered_events(
                        self.call_step(),
                        record,
                        &prepared,
                        events,
                        provider_started,
                        attempts,
                        cache_key,
                    );
                    Ok(ChatReply::Stream { events, meta })
                }
                Err(err) => {
                    let outcome = CallOutcome::failed(&record, &err, attempts, provider_started);
                    self.meter.record_spawned(record, outcome).await;
                    Err(Failure::Recorded(GatewayError::from(err)))
                }
            }
        } else {
            let (completion, served_by) = self
                .complete_buffered(record, prepared, cache_key)
                .await
                .map_err(Failure::Recorded)?;
            let mut meta = meta;
            meta.served_by = Some(served_by);
            Ok(ChatReply::Completion { completion, meta })
        }
    }

    /// The rate limiter's decision, with graceful degradation: one snapshot read, then one
    /// conditional write. A limiter that cannot decide fails closed (503), so no provider call
    /// ever happens without a reservation.
    async fn admit(
        &self,
        ctx: &RequestContext,
        tenant: &TenantId,
        prepared: Prepared,
        grounding: Option<&Grounding>,
    ) -> Result<(Prepared, Reservation, Option<String>), GatewayError> {
        let scope = Scope::of(tenant, &prepared.config, prepared.request.user.as_ref());
        let requested = prepared.request.model.clone();
        let fallback = prepared
            .config
            .degradation
            .as_ref()
            .and_then(|policy| policy.routes.get(&requested))
            .and_then(|target| {
                prepared
                    .config
                    .routes
                    .get(target)
                    .map(|r| (target.clone(), r.clone()))
            });
        let mut models = vec![(prepared.route.provider, prepared.route.model.as_str())];
        if let Some((_, route)) = &fallback {
            models.push((route.provider, route.model.as_str()));
        }
        let now = self.meter.clock.now().timestamp();
        let snapshot = self
            .limiter
            .snapshot(&scope, &models, now)
            .await
            .map_err(|err| limiter_unavailable(ctx, &err))?;

        // Past the degradation threshold of the daily token budget, or past the soft
        // threshold of a dollar budget, a mapped model is served by its cheaper one.
        let degrade_to = prepared.config.degradation.as_ref().and_then(|policy| {
            let past_budget_alert = snapshot.past_budget_alert(&scope.budget);
            policy
                .degrade(
                    &requested,
                    snapshot.day_tokens(),
                    scope.limits.tokens_per_day,
                )
                .or_else(|| {
                    past_budget_alert
                        .then(|| policy.routes.get(&requested))
                        .flatten()
                        .map(String::as_str)
                })
        });
        let (mut prepared, degraded_from) = match degrade_to {
            Some(target) if fallback.is_some() => {
                let mut request = prepared.request.clone();
                request.model = target.to_owned();
                tracing::info!(request_id = %ctx.request_id, tenant_id = %tenant, from = %requested, to = %target, "daily usage past the degradation threshold; serving a cheaper model");
                // The profile read for the original request renders the degraded one too.
                let profile = PromptProfile::Read(prepared.profile.clone());
                let caller = Caller {
                    tenant: tenant.clone(),
                    config: prepared.config.clone(),
                };
                let mut degraded = self.prepare(ctx, &caller, request, profile).await?;
                degraded.carry_over(prepared);
                (degraded, Some(requested))
            }
            _ => (prepared, None),
        };

        let prompt_tokens = prepared.upstream.prompt_tokens(prepared.route.provider);
        // The reply's cap is what the limiter reserves for it, and it goes upstream as the
        // provider's own cap, so a request without `max_tokens` cannot write past its
        // reservation: reconciliation can then only exceed it by the prompt count's error.
        let output_cap = self.limiter.output_cap(prepared.request.max_tokens);
        prepared.upstream.max_tokens = Some(output_cap);
        // A grounded request also reserves its excerpts' budget and its query embedding.
        let excerpts = grounding.map_or(0, |g| u64::from(g.max_tokens));
        prepared.estimate = TokenUsage {
            prompt_tokens: prompt_tokens + excerpts,
            completion_tokens: u64::from(output_cap),
            ..TokenUsage::default()
        };
        let mut demand = Demand::worst_case(
            &prepared.price,
            prepared.estimate.prompt_tokens,
            prepared.estimate.completion_tokens,
        );
        // One reservation whatever the chain does: the dearest of its targets' worst cases.
        for leg in &prepared.fallbacks {
            let prompt = prepared.upstream.prompt_tokens(leg.route.provider) + excerpts;
            let worst = Demand::worst_case(&leg.price, prompt, u64::from(output_cap));
            demand.tokens = demand.tokens.max(worst.tokens);
            demand.cost = demand.cost.max(worst.cost);
        }
        if let Some(g) = grounding {
            demand.tokens += g.query_demand.tokens;
            demand.cost += g.query_demand.cost;
        }
        let decision = self
            .limiter
            .reserve(
                &scope,
                &snapshot,
                demand,
                (prepared.route.provider, prepared.route.model.as_str()),
            )
            .await
            .map_err(|err| limiter_unavailable(ctx, &err))?;
        Ok((prepared, decision?, degraded_from))
    }

    /// The record the metering path reports the call from, with the request's trace so far.
    fn call_record(
        &self,
        ctx: &RequestContext,
        tenant: &TenantId,
        prepared: &Prepared,
        trace: &RequestMetrics,
        reservation: Option<Reservation>,
        degraded_from: Option<String>,
    ) -> CallRecord {
        CallRecord {
            request_id: ctx.request_id.clone(),
            tenant_id: tenant.clone(),
            model_requested: prepared.request.model.clone(),
            route: prepared.route.clone(),
            price: prepared.price.clone(),
            streamed: prepared.request.stream,
            started: ctx.started,
            created_at: trace.timestamp,
            trace: trace.clone(),
            reservation,
            degraded_from,
            sources: prepared.context.as_ref().map(|c| c.sources.clone()),
            estimate: prepared.estimate,
            user: prepared.request.user.clone(),
            conversation: prepared.request.conversation_id.clone().and_then(|id| {
                let last_user = prepared
                    .request
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == crate::domain::chat::Role::User)?;
                Some((id, last_user.clone()))
            }),
        }
    }

    /// Loads the request's conversation (newest turns within the tenant's token budget).
    async fn recall(&self, tenant: &TenantId, prepared: &mut Prepared) -> Result<(), GatewayError> {
        let Some(id) = prepared.request.conversation_id.clone() else {
            return Ok(());
        };
        let Some(store) = &self.meter.conversations else {
            return Err(GatewayError::invalid(
                "conversations are not available in this deployment",
                Some("conversation_id".to_owned()),
            ));
        };
        let policy = prepared.config.conversations;
        let turns = store
            .load_turns(tenant, &id, usize::from(policy.max_turns))
            .await?;
        let mut budget = policy.max_tokens as usize;
        let mut kept: Vec<Message> = Vec::new();
        for turn in turns.into_iter().rev() {
            let cost = turn.tokens as usize;
            if cost > budget {
                break;
            }
            budget -= cost;
            kept.push(Message::new(turn.role, turn.content));
        }
        kept.reverse();
        prepared.recall(kept);
        Ok(())
    }

    /// What retrieval will do for this request, when the request or the tenant's policy asks
    /// for it; a request for retrieval where none is configured is refused here, before
    /// admission.
    async fn grounding(&self, prepared: &Prepared) -> Result<Option<Grounding>, GatewayError> {
        let policy = prepared.config.retrieval;
        let asked = prepared.request.retrieval;
        let enabled = asked.and_then(|r| r.enabled).unwrap_or(policy.enabled);
        if !enabled {
            return Ok(None);
        }
        let Some(retriever) = &self.retriever else {
            return Err(GatewayError::invalid(
                "retrieval is not available in this deployment (no vector index is configured)",
                Some("retrieval".to_owned()),
            ));
        };
        let query = prepared
            .request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == crate::domain::chat::Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        Ok(Some(Grounding {
            query_demand: Demand::worst_case(
                &retriever.query_price().await?,
                crate::tokenizer::count_tokens(&query) as u64,
                0,
            ),
            query,
            top_k: asked.and_then(|r| r.top_k).unwrap_or(policy.top_k),
            max_tokens: policy.max_context_tokens,
        }))
    }

    /// Retrieval: the excerpts go before the conversation, and the call's estimate counts the
    /// prompt they make. `share` is the reservation admitted for the query embedding.
    async fn ground(
        &self,
        ctx: &RequestContext,
        tenant: &TenantId,
        prepared: &mut Prepared,
        grounding: Grounding,
        share: Reservation,
    ) -> Result<(), GatewayError> {
        let Some(retriever) = &self.retriever else {
            self.limiter.release(&share).await;
            return Err(GatewayError::internal("retriever missing after admission"));
        };
        let context = retriever
            .retrieve(
                super::retrieval::Asker {
                    request_id: &ctx.request_id,
                    tenant,
                    user: prepared.request.user.as_ref(),
                },
                &grounding.query,
                usize::from(grounding.top_k),
                grounding.max_tokens as usize,
                share,
            )
            .await?;
        prepared.attach(context);
        prepared.estimate.prompt_tokens = prepared.upstream.prompt_tokens(prepared.route.provider);
        Ok(())
    }

    /// Everything that can refuse a request before it costs money, and the rendered prompt.
    async fn prepare(
        &self,
        ctx: &RequestContext,
        caller: &Caller,
        request: ChatRequest,
        profile: PromptProfile,
    ) -> Result<Prepared, GatewayError> {
        let (tenant, config) = (&caller.tenant, caller.config.clone());
        let route = routing::resolve(&config, &request.model, RouteKind::Chat)?.clone();
        if route.is_fine_tuned() {
            let owner = self
                .tenants
                .fine_tuned_owner(route.provider, &route.model)
                .await?;
            if let Err(err) =
                routing::check_fine_tuned_owner(tenant, &request.model, &route, owner.as_ref())
            {
                tracing::error!(
                    request_id = %ctx.request_id,
                    tenant_id = %tenant,
                    model = %request.model,
                    provider_model = %route.model,
                    owner = ?owner.as_ref().map(TenantId::as_str),
                    "security: route points at a fine-tuned model this tenant does not own; refused"
                );
                return Err(err.into());
            }
        }
        let (price, provider) = self
            .providers
            .priced(&self.catalog, &config, &request.model, &route)
            .await?;
        let mut fallbacks = Vec::with_capacity(route.fallbacks.len());
        for target in &route.fallbacks {
            let served = route.served_by(target);
            match self
                .providers
                .priced(&self.catalog, &config, &request.model, &served)
                .await
            {
                Ok((price, provider)) => fallbacks.push(Leg {
                    inference_profile: config.inference_profile(&served),
                    route: served,
                    price,
                    provider,
                }),
                // A fallback this deployment cannot call or price is left out of the chain;
                // the route's own target still serves.
                Err(err) => {
                    tracing::warn!(request_id = %ctx.request_id, tenant_id = %tenant, fallback = %target, error = %err, "route fallback skipped");
                }
            }
        }

        let date = self.meter.clock.now().format("%Y-%m-%d").to_string();
        // Read only when the template uses profile variables and the request names a user.
        let profile = prompt_profile(
            self.profiles.as_ref(),
            &ctx.request_id,
            tenant,
            &config,
            request.user.as_ref(),
            profile,
        )
        .await;
        let system = config
            .system_prompt
            .render(
                &config.prompt_variables,
                &BuiltIns {
                    tenant_id: tenant.as_str(),
                    tenant_name: &config.display_name,
                    date: &date,
                    profile: profile.as_deref(),
                },
            )
            .map_err(|var| {
                GatewayError::internal(format!(
                    "tenant {tenant}: system prompt variable `{var}` has no value"
                ))
            })?;
        let system = (!system.trim().is_empty()).then_some(system);
        // The key hashes the rendered prompt, so two users whose profiles render differently
        // never share a cached response.
        let cache_key = config.response_cache.enabled.then(|| {
            response_cache_key(tenant, config.version, &route, system.as_deref(), &request)
        });
        let upstream = ProviderRequest {
            model: route.model.clone(),
            system,
            messages: request.messages.clone(),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop: request.stop.clone(),
            seed: request.seed,
            presence_penalty: request.presence_penalty,
            frequency_penalty: request.frequency_penalty,
            response_format: request.response_format.clone(),
            tools: request.tools.clone(),
            inference_profile: config.inference_profile(&route),
            pool_key: None,
            deadline: ctx.deadline,
        };
        Ok(Prepared {
            config,
            request,
            route,
            price,
            provider,
            fallbacks,
            upstream,
            cache_key,
            context: None,
            history: Vec::new(),
            profile,
            estimate: TokenUsage::default(),
        })
    }

    /// The buffered call runs in its own task: if the client disconnects and the handler is
    /// dropped, the provider call still completes and is still metered. A reply that fails
    /// the request's `response_format` is metered as a `validation` error, never cached, and
    /// asked for once more when the tenant's policy says so (`service::structured`).
    async fn complete_buffered(
        &self,
        record: CallRecord,
        prepared: Prepared,
        cache_key: Option<String>,
    ) -> Result<(Completion, String), GatewayError> {
        let step = self.call_step();
        let task = tokio::spawn(async move {
            let mut record = record;
            let (completion, served_by) = step.call_and_check(&mut record, &prepared).await?;
            // A reply from a fallback is cached too: it answers the request the key names.
            if let Some(key) = cache_key {
                step.cache_put(&key, &completion, &prepared.config).await;
            }
            Ok((completion, served_by))
        });
        task.await
            .map_err(|e| GatewayError::internal(format!("provider task failed: {e}")))?
    }

    /// The `/v1/users/{user_id}/profile` routes, on this service's profile store and clock.
    pub fn profile_service(&self) -> ProfileService {
        ProfileService {
            profiles: self.profiles.clone(),
            clock: self.meter.clock.clone(),
        }
    }

    /// The provider call step, sharing this service's retry policy, limiter, meter and cache.
    fn call_step(&self) -> CallStep {
        CallStep {
            retry: self.retry,
            limiter: self.limiter.clone(),
            meter: self.meter.clone(),
            cache: self.cache.clone(),
            breakers: self.breakers.clone(),
        }
    }

    async fn serve_cache_hit(
        &self,
        prepared: &Prepared,
        record: CallRecord,
        hit: Completion,
    ) -> ChatReply {
        let meta = ReplyMeta {
            model: prepared.request.model.clone(),
            created: self.meter.clock.now().timestamp(),
            include_usage: prepared.request.include_usage,
            cache: Some(CacheStatus::Hit),
            rate: None,
            degraded_from: None,
            documents: Vec::new(),
            served_by: None,
        };
        self.meter
            .record_spawned(record, CallOutcome::cache_hit(&hit))
            .await;
        if prepared.request.stream {
            ChatReply::Stream {
                events: replay_events(hit),
                meta,
            }
        } else {
            ChatReply::Completion {
                completion: hit,
                meta,
            }
        }
    }
}

fn limiter_unavailable(
    ctx: &RequestContext,
    err: &crate::ports::store::StoreError,
) -> GatewayError {
    tracing::error!(request_id = %ctx.request_id, error = %err, "rate limiter unavailable; failing closed");
    GatewayError::LimiterUnavailable
}

/// How a chat request failed, and so who reports it.
enum Failure {
    /// Before its call record existed: `chat` reports it from the request's trace.
    Unrecorded(GatewayError),
    /// After: the metering path has recorded the call (and its metrics line).
    Recorded(GatewayError),
}

impl From<GatewayError> for Failure {
    fn from(err: GatewayError) -> Self {
        Self::Unrecorded(err)
    }
}

fn log_failure(ctx: &RequestContext, trace: &RequestMetrics, err: &GatewayError) {
    let detail = err.detail().unwrap_or_default();
    if err.status().is_server_error() {
        tracing::error!(request_id = %ctx.request_id, tenant_id = trace.tenant_id.as_deref(), error_type = err.kind().as_str(), status = trace.status, %err, detail, "request failed");
    } else {
        tracing::info!(request_id = %ctx.request_id, tenant_id = trace.tenant_id.as_deref(), error_type = err.kind().as_str(), status = trace.status, %err, "request refused");
    }
}

/// `GET /v1/models`: the logical models the caller may request (its routes).
pub fn models(caller: &Caller) -> crate::wire::openai::ModelList {
    let data = caller
        .config
        .routes
        .keys()
        .map(|id| crate::wire::openai::ModelObject {
            id: id.clone(),
            object: "model".into(),
            created: 0,
            owned_by: caller.tenant.to_string(),
        })
        .collect();
    crate::wire::openai::ModelList {
        object: "list".into(),
        data,
    }
}
