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
use crate::domain::tools::{ToolCallDelta, Tools};
use crate::domain::usage::TokenUsage;
use crate::ports::vector::Embeddings;

/// What the gateway asks a provider for.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRequest {
    /// The provider's model id.
    pub model: String,
    /// The tenant's rendered system prompt.
    pub system: Option<String>,
    /// The conversation in order: retrieved context and stored history first (when any), then the
    /// client's messages. Never the tenant's system prompt (that is `system`).
    pub messages: Vec<Message>,
    /// Most tokens to generate; `None` leaves it to the provider's default.
    pub max_tokens: Option<u32>,
    /// Sampling temperature, as the client sent it.
    pub temperature: Option<f64>,
    /// Nucleus sampling probability, as the client sent it.
    pub top_p: Option<f64>,
    /// Sequences that end generation (empty: none).
    pub stop: Vec<String>,
    /// Seed for best-effort deterministic sampling, where the provider supports it.
    pub seed: Option<i64>,
    /// OpenAI's presence penalty, as the client sent it.
    pub presence_penalty: Option<f64>,
    /// OpenAI's frequency penalty, as the client sent it.
    pub frequency_penalty: Option<f64>,
    /// Structured output: OpenAI gets it as `response_format`, Anthropic as a forced tool
    /// call whose input is the reply.
    pub response_format: ResponseFormat,
    /// The tools the model may call, as the client offered them. With a structured
    /// `response_format` too, a reply is either tool calls or the formatted answer.
    pub tools: Tools,
    /// Bedrock: the tenant's application inference profile (an ARN) for this model. The call
    /// goes through it so its spend is tagged in the AWS bill; `model` still names and prices
    /// it. Ignored by other providers.
    pub inference_profile: Option<String>,
    /// The provider key (its position in the provider's key pool) the limiter reserved this
    /// call on, when the model has per-key upstream quotas: the call goes out on that key and
    /// no other (a 429 does not move it to another key's quota). `None`: the pool takes turns.
    /// Ignored by providers without keys (Bedrock signs with the function's role).
    pub pool_key: Option<u16>,
    /// When the call must be over, whatever else: the function's own deadline less a margin
    /// for metering. A buffered call fails with a timeout then; a stream is cut. `None` where
    /// nothing imposes one (`tollgate serve`).
    pub deadline: Option<tokio::time::Instant>,
}

impl ProviderRequest {
    /// The prompt as the gateway counts it for `provider` (system, conversation, tool
    /// definitions, and images by the provider's formula): what the limiter reserves for it,
    /// and what a call the provider never reported is metered as.
    pub fn prompt_tokens(&self, provider: ProviderKind) -> u64 {
        let text = crate::tokenizer::count_chat_tokens(self.system.as_deref(), &self.messages)
            + crate::tokenizer::count_tools_tokens(&self.tools);
        let images: u64 = self
            .messages
            .iter()
            .flat_map(crate::domain::chat::Message::images)
            .map(|image| image.tokens(provider))
            .sum();
        text as u64 + images
    }
}

/// One event of a streamed completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Text to append to the reply.
    Delta(String),
    /// A piece of a tool call: the first of each call has its id and name.
    ToolCall(ToolCallDelta),
    /// The model stopped; more events (usage) may follow.
    Finish(FinishReason),
    /// Final token counts for the call. Providers send it once, at the end.
    Usage(TokenUsage),
    /// Counts the provider reported before the end (Anthropic's `message_start` and
    /// `message_delta`), each replacing the one before. Kept for metering when the stream
    /// fails before its final [`StreamEvent::Usage`].
    UsageSoFar(TokenUsage),
    /// The provider named the model it served.
    Model(String),
}

/// A provider's streamed completion: events in order, or the error that ended it.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// How a provider call failed; decides retries and the client-facing status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// 429 from the provider.
    RateLimited {
        /// How long the provider asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// No answer (or no next stream chunk) within the configured time, or the call's deadline.
    Timeout,
    /// 5xx, connection failure, or an answer we could not understand.
    Upstream,
    /// The provider refused the request as invalid (400, 404, 413, 422).
    Rejected,
    /// The provider refused our credentials (401, 403): an operator problem.
    Credentials,
}

/// A failed provider call, classified for retries and metering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider} {kind:?}: {message}")]
pub struct ProviderError {
    /// The provider that failed.
    pub provider: ProviderKind,
    /// What kind of failure it was.
    pub kind: ProviderErrorKind,
    /// Safe to log; for `Rejected`, safe to show the client (the provider's own words about the
    /// client's request). Never contains credentials.
    pub message: String,
    /// The request reached the provider and no refusal came back, so it may be generating, and
    /// billing, a reply: a timeout after the request was sent, a connection lost after it, a
    /// 2xx whose body could not be read. Such a call is never sent again, and it is metered
    /// with an estimate instead of zero.
    pub started: bool,
}

impl ProviderError {
    /// A failure before the request reached the provider (`started` false); chain
    /// [`ProviderError::after_send`] for one after it.
    pub fn new(
        provider: ProviderKind,
        kind: ProviderErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            provider,
            kind,
            message: message.into(),
            started: false,
        }
    }

    /// Marks the error as one after the request reached the provider (see `started`).
    pub fn after_send(mut self) -> Self {
        self.started = true;
        self
    }

    /// Retrying may help, and cannot bill twice: rate limits, 5xx and failures to connect,
    /// none of which started a generation. Never a call the provider may be working on
    /// (`started`), a rejection or a credentials error.
    pub fn is_retryable(&self) -> bool {
        !self.started
            && matches!(
                self.kind,
                ProviderErrorKind::RateLimited { .. }
                    | ProviderErrorKind::Timeout
                    | ProviderErrorKind::Upstream
            )
    }
}

/// A chat-completion API: OpenAI, Anthropic, or the simulated one.
#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// A buffered completion.
    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError>;

    /// A streamed completion. Errors before the first event (bad status, connect failure) are
    /// returned here; errors after it arrive in the stream.
    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError>;

    /// Embeddings for `request`'s inputs, one vector each in input order (one attempt: the
    /// caller retries). A provider without an embeddings API refuses without a call.
    async fn embed(&self, request: &EmbeddingRequest) -> Result<Embeddings, ProviderError> {
        let _ = request;
        Err(ProviderError::new(
            self.kind(),
            ProviderErrorKind::Rejected,
            format!("{} has no embeddings API", self.kind()),
        ))
    }
}

/// One `POST /v1/embeddings` call as a provider receives it: the route's model.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRequest {
    /// The provider's model id.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// Shorter vectors, for models that can shorten theirs (`text-embedding-3-*`).
    pub dimensions: Option<u32>,
    /// The provider key the limiter reserved this call on (see [`ProviderRequest::pool_key`]).
    pub pool_key: Option<u16>,
}

/// The inputs of an embeddings call, as the client sent them.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingInput {
    /// Texts.
    Texts(Vec<String>),
    /// Token ids in the model's own vocabulary (`cl100k_base` for OpenAI's embedding models),
    /// passed through untouched.
    Tokens(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    /// How many inputs there are (one vector each).
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Texts(texts) => texts.len(),
            EmbeddingInput::Tokens(tokens) => tokens.len(),
        }
    }

    /// Whether there is no input.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
