//! A chat request after validation, and the completion a provider returns.
//!
//! Everything downstream of the HTTP edge works with these types, never with raw JSON, so a
//! request that reaches a provider is known to be well formed.

use serde::{Deserialize, Serialize};

use super::image::ContentPart;
use super::structured::ResponseFormat;
use super::tools::{ToolCall, Tools};
use super::usage::TokenUsage;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Client-supplied system (or `developer`) instructions. They follow the tenant's system
    /// prompt, which always comes first.
    System,
    /// The end user.
    User,
    /// The model (earlier replies, sent back as context).
    Assistant,
    /// The result of a tool call the model made (`tool_call_id` names the call).
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// The participant's name, as the client sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An assistant message's tool calls (its `content` may then be empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A user message with images: its text and images in order (`content` is then its text
    /// alone). Empty for text-only messages, which providers get as `content`.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<ContentPart>,
    /// The client marked a prompt-cache breakpoint at the end of this message
    /// (`cache_control`): Anthropic gets it on the message's last block; OpenAI caches by
    /// itself. Not part of the cache key: it does not change the answer.
    #[serde(skip)]
    pub cache_breakpoint: bool,
}

impl Message {
    /// A plain text message.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            parts: Vec::new(),
            cache_breakpoint: false,
        }
    }

    /// The message's images, in order.
    pub fn images(&self) -> impl Iterator<Item = &super::image::Image> {
        self.parts.iter().filter_map(ContentPart::image)
    }
}

/// A validated chat request. Field order and `skip` attributes matter: the serialized form is
/// the normalized body that response-cache keys hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    /// The model name the client asked for, resolved through the tenant's routes.
    pub model: String,
    /// The client's messages, in order.
    pub messages: Vec<Message>,
    /// Most tokens to generate; `None` leaves it to the provider's default.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling probability.
    pub top_p: Option<f64>,
    /// Sequences that end generation (empty: none).
    pub stop: Vec<String>,
    /// Seed for best-effort deterministic sampling.
    pub seed: Option<i64>,
    /// OpenAI's presence penalty.
    pub presence_penalty: Option<f64>,
    /// OpenAI's frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// Tollgate extension (`"retrieval": true` or `{"enabled": .., "top_k": ..}`, sent by the
    /// OpenAI SDKs as extra body): ground the answer in the tenant's documents.
    pub retrieval: Option<RetrievalRequest>,
    /// Tollgate extension: a conversation whose stored turns precede this request's messages,
    /// and which this exchange is appended to. Scoped to the tenant.
    pub conversation_id: Option<String>,
    /// `response_format`: the reply must be JSON (matching a schema). Part of the cache key;
    /// omitted from it when `text`, so plain requests keep the keys they always had.
    #[serde(skip_serializing_if = "ResponseFormat::is_text")]
    pub response_format: ResponseFormat,
    /// `tools`, `tool_choice` and `parallel_tool_calls`; omitted from the cache key when no
    /// tools are offered, so plain requests keep the keys they always had.
    #[serde(flatten, skip_serializing_if = "Tools::is_empty")]
    pub tools: Tools,
    /// Not part of the cache key: an identical question from another end user of the same
    /// tenant is the same question.
    #[serde(skip)]
    pub user: Option<crate::domain::profile::UserId>,
    /// Whether the client asked for a streamed (SSE) reply.
    #[serde(skip)]
    pub stream: bool,
    /// Whether the client asked for the final usage chunk (`stream_options.include_usage`).
    /// Tollgate always asks the provider for usage; this only decides what the client sees.
    #[serde(skip)]
    pub include_usage: bool,
}

/// A request's retrieval choice; unset fields fall back to the tenant's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetrievalRequest {
    /// Whether to retrieve; `None` follows the tenant's policy.
    pub enabled: Option<bool>,
    /// How many chunks to retrieve; `None` follows the tenant's policy.
    pub top_k: Option<u8>,
}

/// Why the model stopped generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The reply is complete (or hit a stop sequence).
    Stop,
    /// The reply hit the token limit.
    Length,
    /// The provider withheld or cut the reply (a filter or a refusal).
    ContentFilter,
    /// The model called a tool instead of answering.
    ToolCalls,
}

/// A finished completion, whatever provider produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The reply's text (may be empty when the model called tools).
    pub content: String,
    /// The tools the model called, in order (`finish_reason` is then `tool_calls`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Tokens the provider reported for the call.
    pub usage: TokenUsage,
    /// The model id the provider says it served.
    pub served_model: String,
}
