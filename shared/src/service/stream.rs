//! Streaming: provider events → the reply's [`ChatEvent`]s, metered exactly like a buffered
//! call. The edge renders them (`tollgate::render`: OpenAI's SSE chunks).
//!
//! The stream owns the call's meter. When the provider finishes, the usage event is recorded
//! *before* the `End` event is yielded (so before `data: [DONE]` is sent), so a Lambda cannot
//! freeze with metering outstanding. When
//! the client goes away mid-stream, the body is dropped; `Drop` then drains the provider's
//! stream in a task to get the exact usage and records it (flagged `client_disconnected`).
//!
//! A request with a structured-output `response_format` has its assembled reply checked when
//! the provider finishes. A reply that fails it ends the stream with a `Failed` event (rendered
//! as one `data: {"error": ...}` event, the same body a buffered request gets,
//! `response_validation_failed`) instead of `End`; it is metered as a `validation` error with its real usage and
//! not cached. The deltas before it have been sent, so a stream is never retried.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{StreamExt, stream};

use crate::domain::chat::{Completion, FinishReason};
use crate::domain::structured::ResponseFormat;
use crate::domain::tenant::TenantConfig;
use crate::domain::tools::{ToolCallAssembler, deltas_of};
use crate::domain::usage::{TokenUsage, UsageSource};
use crate::error::{ErrorKind, GatewayError};
use crate::ports::provider::{EventStream, ProviderRequest, StreamEvent};
use crate::tokenizer::count_tokens;

use super::call::CallStep;
use super::metering::{CallOutcome, CallRecord};
use super::prepared::Prepared;
use super::reply::{ChatEvent, ChatEvents};
use super::structured::validation_error;

/// What the provider has sent so far.
#[derive(Default)]
struct Accumulated {
    text: String,
    tool_calls: ToolCallAssembler,
    finish: Option<FinishReason>,
    usage: Option<TokenUsage>,
    /// The provider's counts so far, for a stream that fails before its final usage.
    usage_so_far: Option<TokenUsage>,
    served_model: Option<String>,
}

impl Accumulated {
    /// Applies an event; returns what to forward to the client, if anything.
    fn apply(&mut self, event: StreamEvent) -> Option<ChatEvent> {
        match event {
            StreamEvent::Delta(text) => {
                self.text.push_str(&text);
                (!text.is_empty()).then_some(ChatEvent::Text(text))
            }
            StreamEvent::ToolCall(delta) => {
                self.tool_calls.push(&delta);
                Some(ChatEvent::ToolCall(delta))
            }
            StreamEvent::Finish(reason) => {
                self.finish = Some(reason);
                None
            }
            StreamEvent::Usage(usage) => {
                self.usage = Some(usage);
                None
            }
            StreamEvent::UsageSoFar(usage) => {
                self.usage_so_far = Some(usage);
                None
            }
            StreamEvent::Model(model) => {
                self.served_model = Some(model);
                None
            }
        }
    }
}

/// Everything needed to meter the call once, whichever way the stream ends.
struct StreamMeter {
    step: CallStep,
    record: CallRecord,
    config: Arc<TenantConfig>,
    response_format: ResponseFormat,
    upstream_request: ProviderRequest,
    provider_started: Instant,
    attempts: u32,
    cache_key: Option<String>,
}

impl StreamMeter {
    /// The validation error of a finished reply that does not match the request's format.
    /// Runs before the call is metered, which its bounded cost makes safe (see
    /// `service::structured`). A reply that calls tools is not the answer and is not checked.
    fn check(&self, acc: &Accumulated) -> Option<GatewayError> {
        if !acc.tool_calls.is_empty() {
            return None;
        }
        self.response_format
            .check(&acc.text)
            .err()
            .map(|failure| validation_error(&self.record, failure))
    }

    /// Meters in its own task and waits for it; the task finishes even if this future is
    /// dropped.
    async fn finish(self, acc: Accumulated, error: Option<&GatewayError>, disconnected: bool) {
        let error = error.map(|e| (e.kind(), e.status().as_u16()));
        let task = tokio::spawn(self.run(acc, error, disconnected));
        if let Err(err) = task.await {
            tracing::error!(error = %err, "stream metering task failed");
        }
    }

    /// The usage of a stream that ended without the provider's final count (it failed, stalled
    /// or was cut at the deadline): the provider's partial counts where it sent them (exact
    /// input and cache figures), our own tokenizer's count of the prompt otherwise, and the
    /// larger of the provider's output count so far and the text received. A stream that
    /// failed before producing anything, other than by running out of time, spent nothing.
    fn unreported(
        &self,
        acc: &Accumulated,
        error: Option<(ErrorKind, u16)>,
    ) -> (TokenUsage, UsageSource) {
        let timed_out = error.is_some_and(|(kind, _)| kind == ErrorKind::Timeout);
        let spent = error.is_none()
            || timed_out
            || !acc.text.is_empty()
            || !acc.tool_calls.is_empty()
            || acc.usage_so_far.is_some();
        if !spent {
            return (TokenUsage::default(), UsageSource::None);
        }
        tracing::warn!(request_id = %self.record.request_id, partial = acc.usage_so_far.is_some(), "stream ended without usage; metering estimated tokens");
        let received = (count_tokens(&acc.text)
            + acc
                .tool_calls
                .calls()
                .iter()
                .map(|c| count_tokens(&c.name) + count_tokens(&c.arguments))
                .sum::<usize>()) as u64;
        let usage = match acc.usage_so_far {
            Some(partial) => TokenUsage {
                completion_tokens: partial.completion_tokens.max(received),
                ..partial
            },
            None => TokenUsage {
                prompt_tokens: self
                    .upstream_request
                    .prompt_tokens(self.record.route.provider),
                completion_tokens: received,
                ..TokenUsage::default()
            },
        };
        (usage, UsageSource::Estimated)
    }

    /// `error`: the failure's kind and status, if the call failed.
    async fn run(self, acc: Accumulated, error: Option<(ErrorKind, u16)>, disconnected: bool) {
        let (usage, usage_source) = match acc.usage {
            Some(usage) => (usage, UsageSource::Provider),
            None => self.unreported(&acc, error),
        };
        let complete = error.is_none() && !disconnected;
        let outcome = CallOutcome {
            usage,
            usage_source,
            served_model: acc.served_model.clone(),
            error,
            attempts: self.attempts,
            cache_hit: false,
            provider_latency: Some(self.provider_started.elapsed()),
            client_disconnected: disconnected,
            answer: Some(acc.text.clone()),
        };
        self.step.meter.record(&self.record, outcome).await;
        if let (true, Some(key)) = (complete, &self.cache_key) {
            let completion = Completion {
                content: acc.text,
                tool_calls: acc.tool_calls.finish(),
                finish_reason: acc.finish.unwrap_or(FinishReason::Stop),
                usage,
                served_model: acc
                    .served_model
                    .unwrap_or_else(|| self.record.route.model.clone()),
            };
            self.step.cache_put(key, &completion, &self.config).await;
        }
    }
}

struct Live {
    upstream: EventStream,
    meter: Option<StreamMeter>,
    acc: Accumulated,
    done: bool,
}

impl Live {
    async fn next_event(&mut self) -> Option<ChatEvent> {
        if self.done {
            return None;
        }
        loop {
            match self.upstream.next().await {
                Some(Ok(event)) => {
                    if let Some(forward) = self.acc.apply(event) {
                        return Some(forward);
                    }
                }
                Some(Err(err)) => {
                    let err = GatewayError::from(err);
                    // The client gets the generic error event; the provider's words (already
                    // scrubbed of our key) go to the log only.
                    if let Some(meter) = &self.meter {
                        tracing::error!(request_id = %meter.record.request_id, tenant_id = %meter.record.tenant_id, error_type = err.kind().as_str(), %err, detail = err.detail().unwrap_or_default(), "stream failed after it started");
                    }
                    self.done = true;
                    if let Some(meter) = self.meter.take() {
                        let acc = std::mem::take(&mut self.acc);
                        meter.finish(acc, Some(&err), false).await;
                    }
                    return Some(ChatEvent::Failed(err));
                }
                None => {
                    self.done = true;
                    let finish = self.acc.finish.unwrap_or(FinishReason::Stop);
                    let usage = self.acc.usage.unwrap_or_default();
                    let Some(meter) = self.meter.take() else {
                        return Some(ChatEvent::End { finish, usage });
                    };
                    let invalid = meter.check(&self.acc);
                    meter
                        .finish(std::mem::take(&mut self.acc), invalid.as_ref(), false)
                        .await;
                    return Some(match invalid {
                        Some(err) => ChatEvent::Failed(err),
                        None => ChatEvent::End { finish, usage },
                    });
                }
            }
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let Some(meter) = self.meter.take() else {
            return;
        };
        // The client went away before the end: drain the provider for the exact usage, then
        // meter. The provider keeps generating either way; this way the bill matches it.
        let mut upstream: EventStream =
            std::mem::replace(&mut self.upstream, Box::pin(stream::empty()));
        let mut acc = std::mem::take(&mut self.acc);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let mut error = None;
                    while let Some(event) = upstream.next().await {
                        match event {
                            Ok(event) => {
                                acc.apply(event);
                            }
                            Err(err) => {
                                error = Some(GatewayError::from(err));
                                break;
                            }
                        }
                    }
                    // The client never saw the end, but the record says what the reply was.
                    let error = error.or_else(|| meter.check(&acc));
                    let error = error.map(|e| (e.kind(), e.status().as_u16()));
                    meter.run(acc, error, true).await;
                });
            }
            Err(_) => {
                tracing::error!(request_id = %meter.record.request_id, "metering failure: stream dropped outside a runtime");
            }
        }
    }
}

pub(crate) fn metered_events(
    step: CallStep,
    record: CallRecord,
    prepared: &Prepared,
    upstream: EventStream,
    provider_started: Instant,
    attempts: u32,
    cache_key: Option<String>,
) -> ChatEvents {
    let live = Live {
        upstream,
        meter: Some(StreamMeter {
            step,
            record,
            config: prepared.config.clone(),
            response_format: prepared.request.response_format.clone(),
            upstream_request: prepared.upstream.clone(),
            provider_started,
            attempts,
            cache_key,
        }),
        acc: Accumulated::default(),
        done: false,
    };
    Box::pin(stream::unfold(live, |mut live| async move {
        let event = live.next_event().await?;
        Some((event, live))
    }))
}

/// Replays a cached completion as a stream: the events a live stream would produce.
pub(crate) fn replay_events(completion: Completion) -> ChatEvents {
    let mut events = Vec::with_capacity(2 + completion.tool_calls.len());
    if !completion.content.is_empty() {
        events.push(ChatEvent::Text(completion.content));
    }
    events.extend(deltas_of(&completion.tool_calls).map(ChatEvent::ToolCall));
    events.push(ChatEvent::End {
        finish: completion.finish_reason,
        usage: completion.usage,
    });
    Box::pin(stream::iter(events))
}
