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
                content: Some(completion.content),
                refusal: None,
            },
            finish_reason: Some(completion.finish_reason),
        }],
        usage: Some(completion.usage.into()),
    }
}

/// The SSE body for a stream of `events`: the role chunk at once, then a frame per event.
/// Dropping the body drops `events` (which meters a disconnected stream).
pub fn sse(request_id: &RequestId, meta: &ReplyMeta, events: ChatEvents) -> ByteStream {
    let framer = Framer {
        id: completion_id(request_id),
        created: meta.created,
        model: meta.model.clone(),
        include_usage: meta.include_usage,
    };
    let role = framer.chunk(
        Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
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
}

impl Framer {
    fn event(&self, event: ChatEvent) -> Bytes {
        match event {
            ChatEvent::Text(text) => self.chunk(
                Delta {
                    role: None,
                    content: Some(text),
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
