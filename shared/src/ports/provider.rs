//! The LLM provider port and the provider-neutral request/stream shapes.
//!
//! The canonical shape is OpenAI's (what clients send), with the tenant's system prompt kept
//! apart so each adapter can place it the way its API caches best: first message for OpenAI
//! (a stable prefix), a `cache_control` system block for Anthropic.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::Stream;

use crate::domain::chat::{Completion, FinishReason, Message};
use crate::domain::structured::ResponseFormat;
use crate::domain::tenant::ProviderKind;
use crate::domain::usage::TokenUsage;
use crate::error::GatewayError;

/// What the gateway asks a provider for.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRequest {
    /// The provider's model id.
    pub model: String,
    /// The tenant's rendered system prompt.
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Structured output: OpenAI gets it as `response_format`, Anthropic as a forced tool
    /// call whose input is the reply.
    pub response_format: ResponseFormat,
}

/// One event of a streamed completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Text to append to the reply.
    Delta(String),
    /// The model stopped; more events (usage) may follow.
    Finish(FinishReason),
    /// Final token counts for the call. Providers send it once, at the end.
    Usage(TokenUsage),
    /// The provider named the model it served.
    Model(String),
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// 429 from the provider.
    RateLimited { retry_after: Option<Duration> },
    /// No answer (or no next stream chunk) within the configured time.
    Timeout,
    /// 5xx, connection failure, or an answer we could not understand.
    Upstream,
    /// The provider refused the request as invalid (400, 404, 413, 422).
    Rejected,
    /// The provider refused our credentials (401, 403): an operator problem.
    Credentials,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider} {kind:?}: {message}")]
pub struct ProviderError {
    pub provider: ProviderKind,
    pub kind: ProviderErrorKind,
    /// Safe to log; for `Rejected`, safe to show the client (the provider's own words about the
    /// client's request). Never contains credentials.
    pub message: String,
}

impl ProviderError {
    pub fn new(
        provider: ProviderKind,
        kind: ProviderErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            provider,
            kind,
            message: message.into(),
        }
    }

    /// Retrying may help: rate limits, timeouts and 5xx. Never for rejections or credentials.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ProviderErrorKind::RateLimited { .. }
                | ProviderErrorKind::Timeout
                | ProviderErrorKind::Upstream
        )
    }
}

impl From<ProviderError> for GatewayError {
    fn from(err: ProviderError) -> Self {
        match err.kind {
            ProviderErrorKind::RateLimited { retry_after } => {
                GatewayError::UpstreamRateLimited { retry_after }
            }
            ProviderErrorKind::Timeout => GatewayError::UpstreamTimeout,
            ProviderErrorKind::Upstream => GatewayError::Upstream {
                detail: format!("{}: {}", err.provider, err.message),
            },
            ProviderErrorKind::Rejected => GatewayError::UpstreamRejected {
                message: err.message,
            },
            ProviderErrorKind::Credentials => GatewayError::Upstream {
                detail: format!("{} refused the gateway's credentials", err.provider),
            },
        }
    }
}

/// A chat-completion API: OpenAI, Anthropic, or the simulated one.
#[async_trait]
pub trait LlmProvider: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// A buffered completion.
    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError>;

    /// A streamed completion. Errors before the first event (bad status, connect failure) are
    /// returned here; errors after it arrive in the stream.
    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError>;
}
