//! A chat request after validation, and the completion a provider returns.
//!
//! Everything downstream of the HTTP edge works with these types, never with raw JSON, so a
//! request that reaches a provider is known to be well formed.

use serde::{Deserialize, Serialize};

use super::structured::ResponseFormat;
use super::usage::TokenUsage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Client-supplied system (or `developer`) instructions. They follow the tenant's system
    /// prompt, which always comes first.
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A validated chat request. Field order and `skip` attributes matter: the serialized form is
/// the normalized body that response-cache keys hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
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
    /// Not part of the cache key: an identical question from another end user of the same
    /// tenant is the same question.
    #[serde(skip)]
    pub user: Option<String>,
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
    pub enabled: Option<bool>,
    pub top_k: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ContentFilter,
    ToolCalls,
}

/// A finished completion, whatever provider produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub content: String,
    pub finish_reason: FinishReason,
    pub usage: TokenUsage,
    /// The model id the provider says it served.
    pub served_model: String,
}
