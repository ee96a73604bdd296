//! `POST /v1/embeddings`: the tenant's embeddings route, limited, metered and observed like a
//! chat call.
//!
//! The model resolves through the tenant's routes, and only to an embeddings route (a chat
//! route is refused by name, as an embeddings route is on the chat endpoint). The inputs'
//! counted tokens are reserved in the limiter (tokens per minute and per day, requests per
//! minute, the route's upstream quota) in one conditional write; the provider's reported usage
//! is priced in `Decimal` and recorded as one usage event that settles the reservation in the
//! same write. A call the provider refused gives the reservation back; one that may have been
//! billed (a timeout after sending) is metered at the counted tokens. One metrics line per
//! request, refusals included.
//!
//! Tenants with the response cache on get embeddings from it too: the key hashes the tenant,
//! its configuration version, the route, `dimensions` and every input (not the encoding). A
//! hit makes no provider call, reserves nothing and is recorded as a cache hit at $0; a miss
//! stores the reply when it fits an entry ([`CachedEmbeddings::MAX_BYTES`]).

use std::sync::Arc;
use std::time::Instant;

use crate::adapters::retry::RetryPolicy;
use crate::domain::ids::TenantId;
use crate::domain::routing;
use crate::domain::tenant::RouteKind;
use crate::domain::usage::{TokenUsage, UsageSource};
use crate::error::GatewayError;
use crate::ports::ResponseCache;
use crate::ports::metrics::RequestMetrics;
use crate::ports::provider::{EmbeddingRequest, ProviderError};
use crate::ports::store::CachedEmbeddings;
use crate::ports::vector::Embeddings;
use crate::service::catalog::OperatorCatalog;
use crate::wire::embeddings::{
    EmbeddingDatum, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage,
    parse_embeddings_request,
};

use super::caller::{Caller, Refused};
use super::chat::Providers;
use super::context::RequestContext;
use super::embedding_usage::{EmbeddingCall, EmbeddingFailure};
use super::limiter::{Demand, Limiter, Scope, Spent};
use super::metering::Meter;
use super::reply::CacheStatus;

/// Serves `POST /v1/embeddings` (see the module docs).
#[derive(Clone)]
pub struct EmbeddingsService {
    /// The providers routes call.
    pub providers: Providers,
    /// Prices and upstream quotas.
    pub catalog: Arc<OperatorCatalog>,
    /// Retries of a failed provider call.
    pub retry: RetryPolicy,
    /// Admission against the tenant's limits and the route's upstream quota.
    pub limiter: Arc<Limiter>,
    /// Usage events, metrics lines and the clock.
    pub meter: Meter,
    /// The response cache, for tenants that turn it on.
    pub cache: Arc<dyn ResponseCache>,
}

impl EmbeddingsService {
    /// Serves one embeddings request; exactly one metrics line is emitted for it.
    pub async fn embeddings(
        &self,
        ctx: &RequestContext,
        caller: &Caller,
        body: &[u8],
    ) -> Result<(EmbeddingsResponse, Option<CacheStatus>), GatewayError> {
        let mut trace = self.trace(ctx, Some(&caller.tenant));
        let result = self.serve(ctx, caller, body, &mut trace).await;
        let error = result.as_ref().err();
        trace.status = error.map_or(200, |e| e.status().as_u16());
        trace.error_type = error.map(GatewayError::kind);
        trace.latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0;
        match error {
            Some(err) if err.status().is_server_error() => {
                let detail = err.detail().unwrap_or_default();
                tracing::error!(request_id = %ctx.request_id, tenant_id = %caller.tenant, error_type = err.kind().as_str(), status = trace.status, %err, detail, "embeddings request failed");
            }
            Some(err) => {
                tracing::info!(request_id = %ctx.request_id, tenant_id = %caller.tenant, error_type = err.kind().as_str(), status = trace.status, %err, "embeddings request refused");
            }
            None => {}
        }
        self.meter.metrics.request(&trace);
        result
    }

    /// Records an embeddings request whose key was refused: its one metrics line.
    pub fn refused(&self, ctx: &RequestContext, refused: &Refused) {
        let mut trace = self.trace(ctx, refused.tenant.as_ref());
        trace.status = refused.error.status().as_u16();
        trace.error_type = Some(refused.error.kind());
        trace.latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0;
        self.meter.metrics.request(&trace);
    }

    fn trace(&self, ctx: &RequestContext, tenant: Option<&TenantId>) -> RequestMetrics {
        RequestMetrics {
            timestamp: self.meter.clock.now(),
            function: "invoke",
            request_id: ctx.request_id.to_string(),
            tenant_id: tenant.map(TenantId::to_string),
            model: None,
            model_served: None,
            provider: None,
            status: 200,
            latency_ms: 0.0,
            provider_latency_ms: None,
            usage: TokenUsage::default(),
            usage_source: UsageSource::None,
            cost_usd: rust_decimal::Decimal::ZERO,
            error_type: None,
            streamed: false,
            cache_hit: None,
            attempts: 0,
        }
    }

    async fn serve(
        &self,
        ctx: &RequestContext,
        caller: &Caller,
        body: &[u8],
        trace: &mut RequestMetrics,
    ) -> Result<(EmbeddingsResponse, Option<CacheStatus>), GatewayError> {
        let request = parse_embeddings_request(body)?;
        let tenant = &caller.tenant;
        let config = &caller.config;
        let route = routing::resolve(config, &request.model, RouteKind::Embeddings)?;
        // Only a model the tenant routes becomes a metric dimension.
        trace.model = Some(request.model.clone());
        trace.provider = Some(route.provider.as_str());
        if route.is_fine_tuned() {
            return Err(GatewayError::invalid(
                format!(
                    "the model `{}` is routed to a fine-tuned model, which embeddings do not support",
                    request.model
                ),
                Some("model".to_owned()),
            ));
        }
        let (price, provider) = self
            .providers
            .priced(&self.catalog, config, &request.model, route)
            .await?;

        let cache_key = config
            .response_cache
            .enabled
            .then(|| cache_key(caller, route, &request));
        let cache_status = match (&cache_key, ctx.bypass_cache) {
            (None, _) => None,
            (Some(_), true) => Some(CacheStatus::Bypass),
            (Some(key), false) => match self.cache.get_embeddings(key).await {
                Ok(Some(hit)) => match hit.embeddings() {
                    Some(embedded) if embedded.vectors.len() == request.input.len() => {
                        trace.cache_hit = Some(true);
                        trace.model_served = Some(embedded.model.clone());
                        self.record_hit(
                            ctx,
                            caller,
                            &request.model,
                            route.provider,
                            &embedded,
                            request.user.as_ref(),
                        )
                        .await;
                        return Ok((response(request, embedded), Some(CacheStatus::Hit)));
                    }
                    _ => Some(CacheStatus::Miss),
                },
                Ok(None) => Some(CacheStatus::Miss),
                Err(err) => {
                    // A cache outage degrades to a miss; it must not fail the request.
                    tracing::warn!(request_id = %ctx.request_id, error = %err, "response cache read failed");
                    Some(CacheStatus::Miss)
                }
            },
        };
        trace.cache_hit = (cache_status == Some(CacheStatus::Miss)).then_some(false);

        let now = self.meter.clock.now().timestamp();
        let quota_model = [(route.provider, route.model.as_str())];
        let unavailable = |err: crate::ports::store::StoreError| {
            tracing::error!(request_id = %ctx.request_id, error = %err, "rate limiter unavailable; failing closed");
            GatewayError::LimiterUnavailable
        };
        let scope = Scope::of(tenant, config, request.user.as_ref());
        let snapshot = self
            .limiter
            .snapshot(&scope, &quota_model, now)
            .await
            .map_err(unavailable)?;
        let reservation = self
            .limiter
            .reserve(
                &scope,
                &snapshot,
                Demand::worst_case(&price, request.total_tokens(), 0),
                quota_model[0],
            )
            .await
            .map_err(unavailable)??;

        let upstream = EmbeddingRequest {
            model: route.model.clone(),
            input: request.input.clone(),
            dimensions: request.dimensions,
            pool_key: reservation.pool_key,
        };
        let started = Instant::now();
        let (result, attempts) = match ctx.deadline {
            Some(at) => tokio::time::timeout_at(at, self.retry.run(|| provider.embed(&upstream)))
                .await
                .unwrap_or_else(|_| (Err(deadline_error(route.provider)), 1)),
            None => self.retry.run(|| provider.embed(&upstream)).await,
        };
        trace.attempts = attempts;
        trace.provider_latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let (embedded, failure) = match result {
            Ok(embedded) if embedded.vectors.len() == request.input.len() => (embedded, None),
            Ok(embedded) => {
                let err = ProviderError::new(
                    route.provider,
                    crate::ports::provider::ProviderErrorKind::Upstream,
                    format!(
                        "expected {} embeddings, got {}",
                        request.input.len(),
                        embedded.vectors.len()
                    ),
                )
                .after_send();
                (embedded, Some(err))
            }
            Err(err) => (nothing(&route.model), Some(err)),
        };
        let mut failure = failure.map(|err| {
            let metered = EmbeddingFailure {
                error: GatewayError::from(err.clone()).kind(),
                // Billed but unreported: the counted inputs. A reply with the wrong number
                // of vectors reported its own usage, which is what is metered.
                estimated_tokens: if err.started && embedded.prompt_tokens == 0 {
                    request.total_tokens()
                } else {
                    0
                },
            };
            (GatewayError::from(err), metered)
        });
        let billed = embedded.prompt_tokens;
        if let Some((err, _)) =
            failure.take_if(|(_, metered)| metered.estimated_tokens == 0 && billed == 0)
        {
            // Refused before anything was made: nothing to meter, every token back.
            self.limiter.release(&reservation).await;
            return Err(err);
        }
        let metered = failure.as_ref().map(|(_, f)| *f);
        let usage = EmbeddingCall::metered(&embedded, metered.as_ref());
        let cost = price.cost(&usage);
        let call = EmbeddingCall {
            id: ctx.request_id.clone(),
            tenant,
            requested: &request.model,
            provider: route.provider,
            embedded: &embedded,
            cost,
            started,
            attempts,
            at: self.meter.clock.now(),
            failure: metered,
            cache_hit: false,
            user: request.user.as_ref(),
        };
        trace.usage_source = call.usage_source();
        call.record_reconciled(
            self.meter.usage.as_ref(),
            self.meter.metrics.as_ref(),
            &reservation.reconcile(Spent {
                tokens: usage.total(),
                cost,
            }),
        )
        .await;
        trace.usage = usage;
        trace.cost_usd = cost;
        trace.model_served = Some(embedded.model.clone());
        if let Some((err, _)) = failure {
            return Err(err);
        }
        if let (Some(key), Some(CacheStatus::Miss)) = (&cache_key, cache_status)
            && let Some(entry) = CachedEmbeddings::of(&embedded)
        {
            let ttl = std::time::Duration::from_secs(u64::from(config.response_cache.ttl_seconds));
            if let Err(err) = self.cache.put_embeddings(key, &entry, ttl).await {
                tracing::warn!(request_id = %ctx.request_id, error = %err, "response cache write failed");
            }
        }
        Ok((response(request, embedded), cache_status))
    }

    /// A cache hit's usage event: no tokens, no cost, the cached reply's model.
    async fn record_hit(
        &self,
        ctx: &RequestContext,
        caller: &Caller,
        requested: &str,
        provider: crate::domain::tenant::ProviderKind,
        embedded: &Embeddings,
        user: Option<&crate::domain::profile::UserId>,
    ) {
        let none = Embeddings {
            vectors: Vec::new(),
            prompt_tokens: 0,
            model: embedded.model.clone(),
        };
        let call = EmbeddingCall {
            id: ctx.request_id.clone(),
            tenant: &caller.tenant,
            requested,
            provider,
            embedded: &none,
            cost: rust_decimal::Decimal::ZERO,
            started: Instant::now(),
            attempts: 0,
            at: self.meter.clock.now(),
            failure: None,
            cache_hit: true,
            user,
        };
        call.record_reconciled(self.meter.usage.as_ref(), self.meter.metrics.as_ref(), &[])
            .await;
    }
}

/// The request's response-cache key (see the module docs).
fn cache_key(
    caller: &Caller,
    route: &crate::domain::tenant::Route,
    request: &EmbeddingsRequest,
) -> String {
    use crate::domain::cache_key::embeddings_cache_key;
    use crate::ports::provider::EmbeddingInput;
    let (tenant, version) = (&caller.tenant, caller.config.version);
    match &request.input {
        EmbeddingInput::Texts(texts) => {
            embeddings_cache_key(tenant, version, route, request.dimensions, "texts", texts)
        }
        EmbeddingInput::Tokens(arrays) => embeddings_cache_key(
            tenant,
            version,
            route,
            request.dimensions,
            "tokens",
            arrays.iter().map(|ids| {
                ids.iter()
                    .flat_map(|id| id.to_le_bytes())
                    .collect::<Vec<u8>>()
            }),
        ),
    }
}

/// What a failed call returned: nothing.
fn nothing(model: &str) -> Embeddings {
    Embeddings {
        vectors: Vec::new(),
        prompt_tokens: 0,
        model: model.to_owned(),
    }
}

/// The call was still running at the invocation's deadline: it may have been billed.
fn deadline_error(provider: crate::domain::tenant::ProviderKind) -> ProviderError {
    ProviderError::new(
        provider,
        crate::ports::provider::ProviderErrorKind::Timeout,
        "the embeddings call was cut at the invocation's deadline",
    )
    .after_send()
}

fn response(request: EmbeddingsRequest, embedded: Embeddings) -> EmbeddingsResponse {
    let data = embedded
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingDatum {
            object: "embedding".into(),
            index,
            embedding: EmbeddingVector::encode(vector, request.encoding),
        })
        .collect();
    EmbeddingsResponse {
        object: "list".into(),
        data,
        model: request.model,
        usage: EmbeddingsUsage {
            prompt_tokens: embedded.prompt_tokens,
            total_tokens: embedded.prompt_tokens,
        },
    }
}
