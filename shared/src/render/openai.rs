//! OpenAI's Chat Completions format: the buffered body, and the SSE chunks of a stream
//! (`data: {chunk}` frames, a role chunk first, the finish chunk, the usage chunk when the
//! client asked for it, then `data: [DONE]`; a failure after the start is one
//! `data: {"error": ...}` frame instead of the end).

use bytes::Bytes;
use futures_util::{StreamExt, stream};

use crate::domain::chat::{Completion, FinishReason};
use crate::domain::ids::RequestId;
use crate::domain::usage::TokenUsage;
use crate::error::GatewayError;
use crate::http::ByteStream;
use crate::service::ReplyMeta;
use crate::service::{ChatEvent, ChatEvents};
use crate::wire::openai::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, Delta, UsageBody,
    WireToolCall,
};

/// The buffered body for `completion`. Its model is the one the client named.
pub fn completion(
    request_id: &RequestId,
    meta: &ReplyMeta,
    completion: Completion,
) -> ChatCompletion {
    ChatCompletion {
        id: completion_id(request_id),
        object: "chat.completion".into(),
        created: meta.created,
        model: meta.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".into(),
                // OpenAI's shape: a reply that only calls tools has `content: null`.
                content: (!completion.content.is_empty() || completion.tool_calls.is_empty())
                    .then_some(completion.content),
                refusal: None,
                tool_calls: (!completion.tool_calls.is_empty()).then(|| {
                    completion
                        .tool_calls
                        .into_iter()
                        .map(WireToolCall::from)
                        .collect()
                }),
            },
            finish_reason: Some(completion.finish_reason),
        }],
        usage: Some(completion.usage.into()),
    }
}

/// The SSE body for a stream of `events`: the role chunk at once, then a frame per event.
/// Dropping the body drops `events` (which meters a disconnected stream).
pub fn sse(request_id: &RequestId, meta: &ReplyMeta, events: ChatEvents) -> ByteStream {
    let framer = Framer::new(completion_id(request_id), meta);
    let role = framer.chunk(
        Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
            tool_calls: None,
        },
        None,
    );
    Box::pin(stream::iter([role]).chain(events.map(move |event| framer.event(event))))
}

fn completion_id(request_id: &RequestId) -> String {
    format!("chatcmpl-{request_id}")
}

/// Chunk framing for one stream.
struct Framer {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    /// A text chunk's frame up to its content string, and after it: every text chunk of the
    /// stream is the same bytes around its text, so only the text is serialized per chunk
    /// (`text_chunks_are_framed_as_their_serialized_chunk` holds this to the serde output).
    text_head: Vec<u8>,
    text_tail: &'static [u8],
}

impl Framer {
    fn new(id: String, meta: &ReplyMeta) -> Self {
        let mut framer = Self {
            id,
            created: meta.created,
            model: meta.model.clone(),
            include_usage: meta.include_usage,
            text_head: Vec::new(),
            text_tail: br#"},"finish_reason":null}],"usage":null}"#,
        };
        // The serialized chunk with an empty text, cut where the text goes.
        let empty = framer.chunk(
            Delta {
                role: None,
                content: Some(String::new()),
                tool_calls: None,
            },
            None,
        );
        let cut = empty.len() - b"\"\"".len() - framer.text_tail.len() - b"\n\n".len();
        framer.text_head = empty[..cut].to_vec();
        framer
    }

    fn text(&self, text: &str) -> Bytes {
        let mut out = Vec::with_capacity(self.text_head.len() + text.len() + 48);
        out.extend_from_slice(&self.text_head);
        // A `str` always serializes.
        let _ = serde_json::to_writer(&mut out, text);
        out.extend_from_slice(self.text_tail);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    fn event(&self, event: ChatEvent) -> Bytes {
        match event {
            ChatEvent::Text(text) => self.text(&text),
            ChatEvent::ToolCall(call) => self.chunk(
                Delta {
                    role: None,
                    content: None,
                    tool_calls: Some(vec![call.into()]),
                },
                None,
            ),
            ChatEvent::End { finish, usage } => self.end(finish, usage),
            ChatEvent::Failed(err) => error(&err),
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<FinishReason>) -> Bytes {
        self.data(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
            }],
            usage: None,
        })
    }

    /// The finish chunk, the usage chunk when asked for, and `[DONE]`.
    fn end(&self, finish: FinishReason, usage: TokenUsage) -> Bytes {
        let mut out = self.chunk(Delta::default(), Some(finish)).to_vec();
        if self.include_usage {
            out.extend_from_slice(&self.data(&ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![],
                usage: Some(UsageBody::from(usage)),
            }));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }

    fn data<T: serde::Serialize>(&self, value: &T) -> Bytes {
        frame(&serde_json::to_vec(value).unwrap_or_default())
    }
}

/// The error frame: the same body a buffered request's error gets.
fn error(err: &GatewayError) -> Bytes {
    frame(&serde_json::to_vec(&err.to_body()).unwrap_or_default())
}

fn frame(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_chunks_are_framed_as_their_serialized_chunk() {
        let meta = ReplyMeta {
            model: "gpt-4o \"mini\"\u{e9}".into(),
            created: 1_765_000_000,
            include_usage: false,
            cache: None,
            rate: None,
            degraded_from: None,
            served_by: None,
            documents: Vec::new(),
        };
        let framer = Framer::new("chatcmpl-\\id".into(), &meta);
        for text in [
            "",
            "hello ",
            "quote \" back\\slash\n\t\u{1}",
            "東京 🚀",
            "</script>",
        ] {
            let expected = framer.chunk(
                Delta {
                    role: None,
                    content: Some(text.to_owned()),
                    tool_calls: None,
                },
                None,
            );
            assert_eq!(framer.text(text), expected, "{text:?}");
        }
    }
}
