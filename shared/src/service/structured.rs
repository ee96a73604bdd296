//! Structured outputs on the buffered path: call the provider, check the reply against the
//! request's `response_format`, meter what happened, and retry once when the tenant asks.
//!
//! A reply that fails its format cost real tokens, so it is metered like a success (usage and
//! cost from the provider) but recorded as a `validation` error, both on the usage event and
//! in the metrics line, and it is never cached or appended to a conversation. With
//! `structured_output.retry_on_invalid` the provider is asked once more; that second call is
//! its own usage event (`{request id}-retry`, so the exactly-once key of the first is
//! untouched) and its own metrics line, admitted by a reservation of its own (the first
//! call's prompt and output cap, tokens only: the request counts once toward RPM) before it
//! is sent. A retry the tenant's limits cannot hold is not made: the client gets the first
//! reply's 422. Streams are validated in `service::stream` when they end and never retried:
//! the reply has been sent.
//!
//! Why the reply is checked *before* its usage event is recorded: the event records the
//! outcome (a `validation` error, not a success), and exactly-once metering writes it once.
//! Recording first would need a second write or a second event per call. What makes the order
//! safe is that the check is bounded (`domain::structured`, module `bounds`): patterns run in
//! linear time, a schema's size, pattern count and unfolded size are capped when it is parsed,
//! and a reply whose check would exceed a fixed budget fails as a validation error unchecked.
//! The worst check is a fraction of a second, inside the deadline margin that provider calls
//! leave for metering (`TOLLGATE_DEADLINE_MARGIN_MS`), and a panic inside the validator is a
//! failed check rather than a lost event.

use std::time::Instant;

use crate::domain::chat::Completion;
use crate::domain::structured::ValidationFailure;
use crate::error::GatewayError;

use super::call::CallStep;
use super::failover;
use super::limiter::{Demand, Reservation, Scope};
use super::metering::{CallOutcome, CallRecord};
use super::prepared::Prepared;

impl CallStep {
    /// The provider's reply to a buffered request, checked against its format; metered either
    /// way, retried once on a validation failure if the tenant's policy says so.
    pub(crate) async fn call_and_check(
        &self,
        record: &mut CallRecord,
        prepared: &Prepared,
    ) -> Result<(Completion, String), GatewayError> {
        let first = self.attempt(record, prepared).await;
        match first {
            Err(invalid @ GatewayError::ResponseValidation { .. })
                if prepared.config.structured_output.retry_on_invalid =>
            {
                let Some(reservation) = self.reserve_retry(record, prepared).await else {
                    return Err(invalid);
                };
                let mut retry = record.retry(self.meter.clock.now(), reservation);
                tracing::info!(request_id = %record.request_id, retry_request_id = %retry.request_id, tenant_id = %record.tenant_id, "structured output failed validation; retrying once per tenant policy");
                self.attempt(&mut retry, prepared).await
            }
            other => other,
        }
    }

    /// The retry's own reservation: what the first call reserved (its prompt as counted and
    /// its output cap at the dearest target of the route's chain, which the retry walks
    /// again), tokens only, on the route's own target. `None` when the tenant's
    /// limits cannot hold it or the limiter cannot decide: no retry is made then (it is an
    /// extra the tenant asked for, never worth going past a limit or failing closed for).
    async fn reserve_retry(&self, record: &CallRecord, prepared: &Prepared) -> Option<Reservation> {
        let route = (prepared.route.provider, prepared.route.model.as_str());
        let now = self.meter.clock.now().timestamp();
        let scope = Scope::of(
            &record.tenant_id,
            &prepared.config,
            prepared.request.user.as_ref(),
        );
        let demand = prepared
            .legs()
            .iter()
            .map(|leg| {
                Demand::worst_case(
                    &leg.price,
                    record.estimate.prompt_tokens,
                    record.estimate.completion_tokens,
                )
            })
            .fold(Demand::default(), |a, b| Demand {
                tokens: a.tokens.max(b.tokens),
                cost: a.cost.max(b.cost),
            });
        let decision = match self.limiter.snapshot(&scope, &[route], now).await {
            Ok(snapshot) => {
                self.limiter
                    .reserve_tokens(&scope, &snapshot, demand, route)
                    .await
            }
            Err(err) => Err(err),
        };
        match decision {
            Ok(Ok(reservation)) => Some(reservation),
            Ok(Err(refusal)) => {
                tracing::info!(request_id = %record.request_id, tenant_id = %record.tenant_id, reason = %refusal, "structured output failed validation; not retried: the tenant's limits cannot hold the retry");
                None
            }
            Err(err) => {
                tracing::warn!(request_id = %record.request_id, tenant_id = %record.tenant_id, error = %err, "structured output failed validation; not retried: the rate limiter could not decide");
                None
            }
        }
    }

    /// One metered provider call, along the route's chain (`service::failover`): a success,
    /// a provider failure, or a validation failure; with the target that answered.
    async fn attempt(
        &self,
        record: &mut CallRecord,
        prepared: &Prepared,
    ) -> Result<(Completion, String), GatewayError> {
        let provider_started = Instant::now();
        let (answer, attempts, fallback) = self
            .call_chain(record, prepared, failover::Ask::Complete)
            .await;
        let record = &*record;
        let served_by = fallback
            .map_or_else(|| prepared.route.target(), |leg| leg.route.target())
            .to_string();
        let completion = match answer.and_then(failover::Answer::completion) {
            Ok(completion) => completion,
            Err(err) => {
                let outcome = CallOutcome::failed(record, &err, attempts, provider_started);
                self.meter.record(record, outcome).await;
                return Err(GatewayError::from(err));
            }
        };
        // A reply that calls tools is a step of the loop, not the answer the format describes.
        let checked = if completion.tool_calls.is_empty() {
            prepared.request.response_format.check(&completion.content)
        } else {
            Ok(())
        };
        match checked {
            Ok(()) => {
                let outcome = CallOutcome::succeeded(&completion, attempts, provider_started);
                self.meter.record(record, outcome).await;
                Ok((completion, served_by))
            }
            Err(failure) => {
                let err = validation_error(record, failure);
                let outcome = CallOutcome::invalid(&completion, &err, attempts, provider_started);
                self.meter.record(record, outcome).await;
                Err(err)
            }
        }
    }
}

/// The client's error for a reply that failed its format, logged without any of the reply:
/// the schema path says which rule failed, and the usage event has the rest.
pub(crate) fn validation_error(record: &CallRecord, failure: ValidationFailure) -> GatewayError {
    tracing::info!(
        request_id = %record.request_id,
        tenant_id = %record.tenant_id,
        model = %record.model_requested,
        error_type = "validation",
        schema_path = %failure.schema_path,
        further_errors = failure.more,
        "model reply failed its response_format"
    );
    GatewayError::ResponseValidation {
        failure: Box::new(failure),
    }
}
