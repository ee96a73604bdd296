//! Anthropic's Messages API format: the buffered `message`, the SSE events of a stream
//! (`message_start`, `content_block_start`, `content_block_delta`s, `content_block_stop`,
//! `message_delta` with the stop reason and usage, `message_stop`; a failure after the start is
//! one `error` event instead of the end), and the error body.
//!
//! Usage is Anthropic's shape: `input_tokens` excludes the prompt tokens read from or written
//! to the provider's cache, which are `cache_read_input_tokens` and
//! `cache_creation_input_tokens`.

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::chat::{Completion, FinishReason};
use crate::domain::ids::RequestId;
use crate::domain::tools::{ToolCall, ToolCallDelta};
use crate::domain::usage::TokenUsage;
use crate::error::GatewayError;
use crate::http::ByteStream;
use crate::service::{ChatEvent, ChatEvents, ReplyMeta};

/// A buffered reply.
#[derive(Debug, Serialize)]
pub struct Message {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: String,
    content: Vec<Value>,
    stop_reason: &'static str,
    stop_sequence: Option<String>,
    usage: Usage,
}

/// `usage` in Anthropic's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

impl From<TokenUsage> for Usage {
    fn from(usage: TokenUsage) -> Self {
        Self {
            input_tokens: usage
                .prompt_tokens
                .saturating_sub(usage.cached_tokens)
                .saturating_sub(usage.cache_write_tokens),
            output_tokens: usage.completion_tokens,
            cache_creation_input_tokens: usage.cache_write_tokens,
            cache_read_input_tokens: usage.cached_tokens,
        }
    }
}

/// The buffered body for `completion`. Its model is the one the client named.
pub fn message(request_id: &RequestId, meta: &ReplyMeta, completion: Completion) -> Message {
    Message {
        id: message_id(request_id),
        kind: "message",
        role: "assistant",
        model: meta.model.clone(),
        content: content_blocks(completion.content, &completion.tool_calls),
        stop_reason: stop_reason(completion.finish_reason),
        stop_sequence: None,
        usage: completion.usage.into(),
    }
}

/// A reply's blocks: its text, then a `tool_use` block per call (the arguments parsed into
/// `input`; text that is not a JSON object, which no provider sends, becomes `{}`).
fn content_blocks(text: String, calls: &[ToolCall]) -> Vec<Value> {
    let text =
        (!text.is_empty() || calls.is_empty()).then(|| json!({"type": "text", "text": text}));
    text.into_iter()
        .chain(calls.iter().map(|call| {
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input_of(&call.arguments)})
        }))
        .collect()
}

fn input_of(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// Which content block a stream is writing: the text block (0) until the first tool call,
/// then block `1 + i` for call `i`.
#[derive(Default)]
struct Blocks {
    open: usize,
}

impl Blocks {
    /// A tool-call piece: the first of a call closes the open block and starts the call's.
    fn tool_call(&mut self, call: ToolCallDelta) -> Bytes {
        let mut out = Vec::new();
        let index = 1 + call.index as usize;
        if index != self.open {
            out.extend_from_slice(&stop(self.open));
            self.open = index;
            out.extend_from_slice(&event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use",
                    "id": call.id.unwrap_or_default(),
                    "name": call.name.unwrap_or_default(),
                    "input": {},
                }}),
            ));
        }
        if !call.arguments.is_empty() {
            out.extend_from_slice(&event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": call.arguments}}),
            ));
        }
        Bytes::from(out)
    }
}

fn stop(index: usize) -> Bytes {
    event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    )
}

/// The SSE body for a stream of `events`: the message and its text block start at once, then
/// an event per chat event (a tool call closes the block before it and opens its own).
/// Dropping the body drops `events` (which meters a disconnected stream).
pub fn sse(request_id: &RequestId, meta: &ReplyMeta, events: ChatEvents) -> ByteStream {
    let start = [
        event(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": message_id(request_id),
                    "type": "message",
                    "role": "assistant",
                    "model": meta.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": Usage::from(TokenUsage::default()),
                }
            }),
        ),
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    let mut blocks = Blocks::default();
    Box::pin(stream::iter(start).chain(events.map(move |event| match event {
        ChatEvent::Text(text) => self::event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": blocks.open, "delta": {"type": "text_delta", "text": text}}),
        ),
        ChatEvent::ToolCall(call) => blocks.tool_call(call),
        ChatEvent::End { finish, usage } => end(blocks.open, finish, usage),
        ChatEvent::Failed(err) => self::event("error", &error_body(&err)),
    })))
}

/// The open block's end, the stop reason and usage, and the message's end.
fn end(open: usize, finish: FinishReason, usage: TokenUsage) -> Bytes {
    let mut out = stop(open).to_vec();
    out.extend_from_slice(&event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(finish), "stop_sequence": null},
            "usage": Usage::from(usage),
        }),
    ));
    out.extend_from_slice(&event("message_stop", &json!({"type": "message_stop"})));
    Bytes::from(out)
}

/// Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`, the type from
/// the status as Anthropic's API uses them.
pub fn error_body(err: &GatewayError) -> Value {
    let kind = match err.status().as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 | 405 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": err.to_string()}})
}

fn stop_reason(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ContentFilter => "refusal",
        FinishReason::ToolCalls => "tool_use",
    }
}

fn message_id(request_id: &RequestId) -> String {
    format!("msg_{request_id}")
}

fn event(name: &str, data: &Value) -> Bytes {
    let json = serde_json::to_vec(data).unwrap_or_default();
    let mut out = Vec::with_capacity(json.len() + name.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_tokens_exclude_what_the_cache_read_or_wrote() {
        let usage = Usage::from(TokenUsage {
            prompt_tokens: 1_500,
            completion_tokens: 40,
            cached_tokens: 1_024,
            cache_write_tokens: 300,
        });
        assert_eq!(
            serde_json::to_value(usage).unwrap(),
            json!({"input_tokens": 176, "output_tokens": 40, "cache_creation_input_tokens": 300, "cache_read_input_tokens": 1024})
        );
    }

    #[test]
    fn errors_take_anthropics_types_by_status() {
        let body = error_body(&GatewayError::InvalidApiKey);
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
        let body = error_body(&GatewayError::invalid("bad", Some("model".to_owned())));
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["message"], "bad");
    }
}
