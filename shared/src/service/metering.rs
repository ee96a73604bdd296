//! Metering: turning a finished (or failed) provider call into exactly one usage event and
//! exactly one metrics record.
//!
//! [`Meter`] is the part of the pipeline that records (usage sink, metrics sink, conversation
//! store, clock). The stream and structured-output steps depend on it, not on the whole chat
//! service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::chat::Completion;
use crate::domain::ids::{RequestId, TenantId};
use crate::domain::pricing::ModelPrice;
use crate::domain::tenant::Route;
use crate::domain::usage::{TokenUsage, UsageEvent, UsageSource};
use crate::error::{ErrorKind, GatewayError};
use crate::ports::metrics::RequestMetrics;
use crate::ports::provider::ProviderError;
use crate::ports::store::{ConversationStore, CounterAdd, Recorded};
use crate::ports::{Clock, MetricsSink, UsageSink};

use super::limiter::{Reservation, Spent};
use crate::domain::quality::groundedness;

/// Milliseconds since `since`, for latency fields.
pub(crate) fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Records calls: one usage event (with the limiter's reconciliation, atomically), one metrics
/// line, and the exchange appended to its conversation.
#[derive(Clone)]
pub struct Meter {
    /// Where usage events go, each with its limiter adjustments in the same write.
    pub usage: Arc<dyn UsageSink>,
    /// Where each call's metrics line, and a usage event that could not be stored, go.
    pub metrics: Arc<dyn MetricsSink>,
    /// Stored conversations (`conversation_id`): read by chat, appended to here.
    /// `None`: exchanges are not stored.
    pub conversations: Option<Arc<dyn ConversationStore>>,
    /// The chat path's one clock: stored turns, metrics timestamps, the limiter's windows, a
    /// template's `date`.
    pub clock: Arc<dyn Clock>,
}

/// What is known about a call once it is admitted, before the provider answers.
pub(crate) struct CallRecord {
    pub request_id: RequestId,
    pub tenant_id: TenantId,
    pub model_requested: String,
    pub route: Route,
    pub price: ModelPrice,
    pub streamed: bool,
    pub started: Instant,
    pub created_at: DateTime<Utc>,
    /// The request's metrics record, completed from the outcome.
    pub trace: RequestMetrics,
    /// The limiter's reservation, reconciled when the call is metered (none for cache hits).
    pub reservation: Option<Reservation>,
    pub degraded_from: Option<String>,
    /// The retrieved chunks' texts, when the answer was grounded in the tenant's documents.
    pub sources: Option<std::sync::Arc<Vec<String>>>,
    /// The conversation this exchange is appended to, and the user turn to append.
    pub conversation: Option<(String, crate::domain::chat::Message)>,
    /// The reservation's token estimate (prompt as counted, reply as its cap): what a call
    /// that may have generated unreported tokens is metered as.
    pub estimate: TokenUsage,
    /// The end user the call was made for, when the request named one.
    pub user: Option<crate::domain::profile::UserId>,
}

impl CallRecord {
    /// The call was answered by `leg`, a fallback of the route: it is metered at that
    /// target's price, under its provider and model.
    pub fn served_by(&mut self, leg: &super::failover::Leg) {
        self.route = leg.route.clone();
        self.price = leg.price.clone();
        self.trace.provider = Some(leg.route.provider.as_str());
        self.trace.model_served = Some(leg.route.model.clone());
    }

    /// The record of a second provider call for the same client request (a structured-output
    /// retry): its own usage event under `{request id}-retry`, its own trace line, timed from
    /// now, reconciled against its own `reservation`.
    pub fn retry(&self, now: DateTime<Utc>, reservation: Reservation) -> Self {
        let request_id = RequestId::from_upstream(&format!("{}-retry", self.request_id));
        let mut trace = self.trace.clone();
        trace.request_id = request_id.to_string();
        trace.timestamp = now;
        Self {
            request_id,
            tenant_id: self.tenant_id.clone(),
            model_requested: self.model_requested.clone(),
            route: self.route.clone(),
            price: self.price.clone(),
            streamed: self.streamed,
            started: Instant::now(),
            created_at: now,
            trace,
            reservation: Some(reservation),
            degraded_from: self.degraded_from.clone(),
            sources: self.sources.clone(),
            conversation: self.conversation.clone(),
            estimate: self.estimate,
            user: self.user.clone(),
        }
    }
}

/// How the call ended.
pub(crate) struct CallOutcome {
    pub usage: TokenUsage,
    pub usage_source: UsageSource,
    pub served_model: Option<String>,
    pub error: Option<(ErrorKind, u16)>,
    pub attempts: u32,
    pub cache_hit: bool,
    pub provider_latency: Option<Duration>,
    pub client_disconnected: bool,
    /// The answer's text, for the quality score of retrieval-augmented calls.
    pub answer: Option<String>,
}

impl CallOutcome {
    pub fn succeeded(completion: &Completion, attempts: u32, provider_started: Instant) -> Self {
        Self {
            usage: completion.usage,
            usage_source: UsageSource::Provider,
            served_model: Some(completion.served_model.clone()),
            error: None,
            attempts,
            cache_hit: false,
            provider_latency: Some(provider_started.elapsed()),
            client_disconnected: false,
            answer: Some(completion.content.clone()),
        }
    }

    /// A call the provider refused or failed. A refusal carries no tokens: providers do not
    /// bill 429s, 5xx or rejected requests. A call that may have generated (`started`: a
    /// timeout after sending, a lost connection, an unreadable 2xx) is metered as the
    /// reservation's estimate, the most it can have cost, so its reservation is not refunded.
    pub fn failed(
        record: &CallRecord,
        err: &ProviderError,
        attempts: u32,
        provider_started: Instant,
    ) -> Self {
        let (usage, usage_source) = if err.started {
            (record.estimate, UsageSource::Estimated)
        } else {
            (TokenUsage::default(), UsageSource::None)
        };
        let err = GatewayError::from(err.clone());
        Self {
            usage,
            usage_source,
            served_model: None,
            error: Some((err.kind(), err.status().as_u16())),
            attempts,
            cache_hit: false,
            provider_latency: Some(provider_started.elapsed()),
            client_disconnected: false,
            answer: None,
        }
    }

    /// The provider answered, but the reply failed the request's `response_format`: the
    /// tokens were spent and are billed, the call counts as a `validation` error, and the
    /// reply is neither scored nor appended to a conversation.
    pub fn invalid(
        completion: &Completion,
        err: &GatewayError,
        attempts: u32,
        provider_started: Instant,
    ) -> Self {
        Self {
            usage: completion.usage,
            usage_source: UsageSource::Provider,
            served_model: Some(completion.served_model.clone()),
            error: Some((err.kind(), err.status().as_u16())),
            attempts,
            cache_hit: false,
            provider_latency: Some(provider_started.elapsed()),
            client_disconnected: false,
            answer: None,
        }
    }

    /// Served from the response cache: no provider tokens, no cost.
    pub fn cache_hit(completion: &Completion) -> Self {
        Self {
            usage: TokenUsage::default(),
            usage_source: UsageSource::None,
            served_model: Some(completion.served_model.clone()),
            error: None,
            attempts: 0,
            cache_hit: true,
            provider_latency: None,
            client_disconnected: false,
            answer: None,
        }
    }
}

impl Meter {
    /// Records the usage event and emits the request's metrics. A usage event that cannot be
    /// stored is emitted whole as a `MeteringFailure` so it can be replayed; it is never
    /// silently lost.
    pub(crate) async fn record(&self, record: &CallRecord, outcome: CallOutcome) -> UsageEvent {
        let cost = if outcome.cache_hit {
            Decimal::ZERO
        } else {
            record.price.cost(&outcome.usage)
        };
        let latency_ms = elapsed_ms(record.started);
        let event = UsageEvent {
            request_id: record.request_id.clone(),
            tenant_id: record.tenant_id.clone(),
            created_at: record.created_at,
            model_requested: record.model_requested.clone(),
            model_served: outcome
                .served_model
                .clone()
                .unwrap_or_else(|| record.route.model.clone()),
            provider: record.route.provider,
            usage: outcome.usage,
            cost_usd: cost,
            latency_ms: latency_ms.round() as u64,
            provider_latency_ms: outcome.provider_latency.map(|d| d.as_millis() as u64),
            success: outcome.error.is_none(),
            error_type: outcome.error.map(|(kind, _)| kind),
            streamed: record.streamed,
            cache_hit: outcome.cache_hit,
            attempts: outcome.attempts,
            client_disconnected: outcome.client_disconnected,
            degraded_from: record.degraded_from.clone(),
            quality_score: match (&record.sources, &outcome.answer, outcome.error) {
                (Some(sources), Some(answer), None) => {
                    groundedness(answer, sources.iter().map(String::as_str))
                }
                _ => None,
            },
            usage_source: outcome.usage_source,
            user: record.user.clone(),
        };
        let adjustments = record
            .reservation
            .as_ref()
            .map(|r| {
                r.reconcile(Spent {
                    tokens: outcome.usage.total(),
                    cost,
                })
            })
            .unwrap_or_default();
        self.record_with_retries(&event, &adjustments).await;
        if let (Some((id, user)), Some(answer), None) =
            (&record.conversation, &outcome.answer, outcome.error)
        {
            self.append_exchange(record, id, user, answer).await;
        }

        let mut trace = record.trace.clone();
        trace.latency_ms = latency_ms;
        trace.provider_latency_ms = outcome.provider_latency.map(|d| d.as_secs_f64() * 1000.0);
        trace.usage = outcome.usage;
        trace.usage_source = outcome.usage_source;
        trace.cost_usd = cost;
        trace.attempts = outcome.attempts;
        if outcome.cache_hit {
            trace.cache_hit = Some(true);
        }
        if let Some(served) = &outcome.served_model {
            trace.model_served = Some(served.clone());
        }
        if let Some((kind, status)) = outcome.error {
            trace.error_type = Some(kind);
            // A stream that fails after its 200 header keeps status 200 in the trace.
            if !(record.streamed && outcome.usage.total() > 0) {
                trace.status = status;
            }
        }
        self.metrics.request(&trace);
        event
    }

    /// Appends the user turn and the answer to the conversation. A failure loses history, not
    /// money: it is logged, and the reply stands.
    async fn append_exchange(
        &self,
        record: &CallRecord,
        id: &str,
        user: &crate::domain::chat::Message,
        answer: &str,
    ) {
        let Some(store) = &self.conversations else {
            return;
        };
        let now = self.clock.now();
        let turn = |role, content: &str| crate::ports::store::Turn {
            role,
            content: content.to_owned(),
            tokens: crate::tokenizer::count_tokens(content) as u32,
            at: now,
        };
        let turns = [
            turn(crate::domain::chat::Role::User, &user.content),
            turn(crate::domain::chat::Role::Assistant, answer),
        ];
        if let Err(err) = store.append_turns(&record.tenant_id, id, &turns).await {
            tracing::error!(request_id = %record.request_id, tenant_id = %record.tenant_id, error = %err, "conversation turn not stored");
        }
    }

    /// Stores the event (and its limiter adjustments, atomically). A failed write is retried;
    /// if it still fails, the whole event goes out as a `MeteringFailure` for replay.
    async fn record_with_retries(&self, event: &UsageEvent, adjustments: &[CounterAdd]) {
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            match self.usage.record(event, adjustments).await {
                Ok(Recorded::Inserted) => return,
                Ok(Recorded::Duplicate) => {
                    tracing::info!(request_id = %event.request_id, "usage event already recorded; replay ignored");
                    return;
                }
                Err(err) if attempt < ATTEMPTS => {
                    tracing::warn!(request_id = %event.request_id, attempt, error = %err, "usage write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                Err(err) => {
                    tracing::error!(request_id = %event.request_id, tenant_id = %event.tenant_id, error = %err, "metering failure: usage event not stored");
                    self.metrics.metering_failure(event, &err.to_string());
                }
            }
        }
    }

    /// Meters in a task of its own, so that dropping the caller (client disconnect) cannot
    /// cancel the write halfway.
    pub(crate) async fn record_spawned(&self, record: CallRecord, outcome: CallOutcome) {
        let meter = self.clone();
        let task = tokio::spawn(async move {
            meter.record(&record, outcome).await;
        });
        if let Err(err) = task.await {
            tracing::error!(error = %err, "metering task failed");
        }
    }
}
