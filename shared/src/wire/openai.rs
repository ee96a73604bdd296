//! OpenAI Chat Completions response shapes. They derive both directions: Tollgate serializes
//! them to clients and the OpenAI adapter deserializes them from the provider.

use serde::{Deserialize, Serialize};

use crate::domain::chat::FinishReason;
use crate::domain::tools::{ToolCall, ToolCallDelta};
use crate::domain::usage::TokenUsage;

/// A buffered chat completion (`object: chat.completion`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-{request id}` from Tollgate; the provider's id when read from one.
    pub id: String,
    /// Always `chat.completion`.
    #[serde(default = "object_completion")]
    pub object: String,
    /// Unix seconds when the completion was created.
    #[serde(default)]
    pub created: i64,
    /// Tollgate answers with the model the client asked for; a provider, with what it served.
    pub model: String,
    /// The replies; Tollgate sends exactly one.
    pub choices: Vec<Choice>,
    /// Token counts, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}

fn object_completion() -> String {
    "chat.completion".to_owned()
}

/// One reply of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The reply's position (0 for Tollgate's one reply).
    #[serde(default)]
    pub index: u32,
    /// The reply.
    pub message: AssistantMessage,
    /// Why generation stopped, when known.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

/// The assistant's message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    /// The reply's text.
    #[serde(default)]
    pub content: Option<String>,
    /// Present (null) so strict clients find the field they expect.
    #[serde(default)]
    pub refusal: Option<String>,
    /// The tools the model called (absent when it called none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
}

/// One tool call of an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireToolCall {
    /// The call's id.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function and its arguments.
    pub function: WireFunction,
}

fn function_type() -> String {
    "function".to_owned()
}

/// The function a tool call names, and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFunction {
    /// The function's name.
    pub name: String,
    /// Its arguments, as the model wrote them.
    #[serde(default)]
    pub arguments: String,
}

impl From<ToolCall> for WireToolCall {
    fn from(call: ToolCall) -> Self {
        Self {
            id: call.id,
            kind: function_type(),
            function: WireFunction {
                name: call.name,
                arguments: call.arguments,
            },
        }
    }
}

impl From<WireToolCall> for ToolCall {
    fn from(call: WireToolCall) -> Self {
        Self {
            id: call.id,
            name: call.function.name,
            arguments: call.function.arguments,
        }
    }
}

/// A piece of a streamed tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaToolCall {
    /// Which call of the reply the piece belongs to.
    pub index: u32,
    /// The call's id, on its first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, on its first piece.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The name (first piece) and an arguments fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<DeltaFunction>,
}

/// The function part of a tool-call piece.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeltaFunction {
    /// The function's name, on the call's first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The next fragment of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

impl From<ToolCallDelta> for DeltaToolCall {
    fn from(delta: ToolCallDelta) -> Self {
        Self {
            index: delta.index,
            kind: delta.id.is_some().then(function_type),
            id: delta.id,
            function: Some(DeltaFunction {
                name: delta.name,
                arguments: Some(delta.arguments),
            }),
        }
    }
}

impl From<DeltaToolCall> for ToolCallDelta {
    fn from(delta: DeltaToolCall) -> Self {
        let function = delta.function.unwrap_or_default();
        Self {
            index: delta.index,
            id: delta.id,
            name: function.name,
            arguments: function.arguments.unwrap_or_default(),
        }
    }
}

/// Token counts in OpenAI's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBody {
    /// Input tokens, cache reads and writes included.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Prompt plus completion tokens.
    pub total_tokens: u64,
    /// The prompt-cache part of `prompt_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// How much of the prompt went through the provider's prompt cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens read from the cache.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Tollgate extension: prompt-cache writes (Anthropic), so clients see what they pay for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<TokenUsage> for UsageBody {
    fn from(u: TokenUsage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: u.cached_tokens,
                cache_write_tokens: u.cache_write_tokens,
            }),
        }
    }
}

impl From<UsageBody> for TokenUsage {
    fn from(u: UsageBody) -> Self {
        let details = u.prompt_tokens_details.unwrap_or_default();
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: details.cached_tokens,
            cache_write_tokens: details.cache_write_tokens,
        }
    }
}

/// One `data:` payload of a streamed completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The completion's id (the same in every chunk).
    pub id: String,
    /// Always `chat.completion.chunk`.
    #[serde(default = "object_chunk")]
    pub object: String,
    /// Unix seconds when the completion was created.
    #[serde(default)]
    pub created: i64,
    /// As in [`ChatCompletion::model`].
    #[serde(default)]
    pub model: String,
    /// The chunk's deltas (none on a usage-only chunk).
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Present only on the final chunk when usage was requested; `null` elsewhere.
    #[serde(default)]
    pub usage: Option<UsageBody>,
}

fn object_chunk() -> String {
    "chat.completion.chunk".to_owned()
}

/// One reply's part of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// The reply's position.
    #[serde(default)]
    pub index: u32,
    /// Text (and, first, the role) to append.
    #[serde(default)]
    pub delta: Delta,
    /// Set on the chunk that ends the reply.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

/// What a chunk adds to a reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, on the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text to append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Pieces of tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<DeltaToolCall>>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelObject>,
}

/// One model a tenant may request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelObject {
    /// The logical model name to send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds when the model was created (0 from Tollgate).
    pub created: i64,
    /// Who owns the model (the tenant, from Tollgate).
    pub owned_by: String,
}
