//! The OpenAI Chat Completions adapter (`POST {base_url}/chat/completions`).
//!
//! The request is already in OpenAI's shape, so translation is small: the tenant's system
//! prompt goes first (a stable prefix is what OpenAI's automatic prompt caching reuses), and
//! streams always ask for the final usage chunk, which is how Tollgate bills streamed calls.
//! A structured-output `response_format` is passed on as OpenAI's own.

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde::Serialize;

use super::http_provider::{
    Auth, CallLimits, ErrorEnvelope, Flow, HttpCore, ProviderSettings, ProviderSetupError,
    StreamTranslator, truncate,
};
use super::sse::SseEvent;
use crate::domain::chat::{Completion, FinishReason, Role};
use crate::domain::structured::ResponseFormat;
use crate::domain::tenant::ProviderKind;
use crate::domain::tools::Tools;
use crate::domain::usage::TokenUsage;
use crate::ports::provider::{
    EmbeddingInput, EmbeddingRequest, EventStream, LlmProvider, ProviderError, ProviderErrorKind,
    ProviderRequest, StreamEvent,
};
use crate::ports::vector::Embeddings;
use crate::wire::openai::{ChatCompletion, ChatCompletionChunk};

const KIND: ProviderKind = ProviderKind::Openai;

/// OpenAI's Chat Completions API (`POST {base_url}/chat/completions`) as an [`LlmProvider`].
#[derive(Debug)]
pub struct OpenAiProvider {
    http: HttpCore,
    /// `POST {base_url}/embeddings`, on the same client.
    embeddings: HttpCore,
}

impl OpenAiProvider {
    /// Builds the provider and its HTTP client. `settings.base_url` includes `/v1`.
    pub fn new(settings: &ProviderSettings) -> Result<Self, ProviderSetupError> {
        Ok(Self {
            http: HttpCore::new(
                KIND,
                settings,
                "/chat/completions",
                Auth::bearer(),
                HeaderMap::new(),
            )?,
            embeddings: HttpCore::new(
                KIND,
                settings,
                "/embeddings",
                Auth::bearer(),
                HeaderMap::new(),
            )?,
        })
    }
}

/// An embeddings request body: texts or token arrays as the client sent them, always asking
/// for floats (the gateway encodes base64 itself when the client asks).
#[derive(Serialize)]
struct EmbeddingsBody<'a> {
    model: &'a str,
    input: EmbeddingsInputBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    encoding_format: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingsInputBody<'a> {
    Texts(&'a [String]),
    Tokens(&'a [Vec<u32>]),
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn embed(&self, request: &EmbeddingRequest) -> Result<Embeddings, ProviderError> {
        let input = match &request.input {
            EmbeddingInput::Texts(texts) => EmbeddingsInputBody::Texts(texts),
            EmbeddingInput::Tokens(tokens) => EmbeddingsInputBody::Tokens(tokens),
        };
        let body = self
            .embeddings
            .post_json(
                &EmbeddingsBody {
                    model: &request.model,
                    input,
                    dimensions: request.dimensions,
                    encoding_format: "float",
                },
                CallLimits::on_key(request.pool_key),
            )
            .await?;
        super::embeddings::read_embeddings(
            &self.embeddings,
            &body,
            request.input.len(),
            request.dimensions.map(|d| d as usize),
            &request.model,
        )
    }

    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        let body = self
            .http
            .post_json(&ChatBody::new(request, false), CallLimits::of(request))
            .await?;
        let reply: ChatCompletion = serde_json::from_slice(&body).map_err(|e| {
            self.http
                .error(
                    ProviderErrorKind::Upstream,
                    format!("unreadable chat completion: {e}"),
                )
                .after_send()
        })?;
        let usage = reply.usage.ok_or_else(|| {
            self.http
                .error(
                    ProviderErrorKind::Upstream,
                    "the chat completion carried no usage",
                )
                .after_send()
        })?;
        let choice = reply.choices.into_iter().next().ok_or_else(|| {
            self.http
                .error(
                    ProviderErrorKind::Upstream,
                    "the chat completion had no choices",
                )
                .after_send()
        })?;
        let message = choice.message;
        Ok(Completion {
            content: message.content.or(message.refusal).unwrap_or_default(),
            tool_calls: message
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            finish_reason: choice.finish_reason.unwrap_or(FinishReason::Stop),
            usage: usage.into(),
            served_model: reply.model,
        })
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError> {
        self.http
            .post_stream(
                &ChatBody::new(request, true),
                ChunkTranslator::default(),
                CallLimits::of(request),
            )
            .await
    }
}

/// The request body. Borrowed from the [`ProviderRequest`]; nothing is copied.
#[derive(Debug, Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    /// `max_tokens` is deprecated and refused by reasoning models.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    /// OpenAI refuses `stream_options` on a buffered call, so it is sent with streams only.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    /// Structured output, in OpenAI's own shape; `text` (the default) is not sent.
    #[serde(skip_serializing_if = "ResponseFormat::is_text")]
    response_format: &'a ResponseFormat,
    /// `tools`, `tool_choice`, `parallel_tool_calls`, as the client sent them.
    #[serde(flatten, skip_serializing_if = "Tools::is_empty")]
    tools: &'a Tools,
}

#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `null` on an assistant message that only calls tools; parts when it has images.
    content: Option<WireContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Parts(&'a [crate::domain::image::ContentPart]),
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl<'a> ChatBody<'a> {
    fn new(request: &'a ProviderRequest, stream: bool) -> Self {
        let tenant_system = request.system.as_deref().map(|content| WireMessage {
            role: "system",
            content: Some(WireContent::Text(content)),
            name: None,
            tool_calls: None,
            tool_call_id: None,
        });
        let client_messages = request.messages.iter().map(|m| WireMessage {
            role: match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            },
            content: if !m.parts.is_empty() {
                Some(WireContent::Parts(&m.parts))
            } else {
                (!m.content.is_empty() || m.tool_calls.is_empty())
                    .then_some(WireContent::Text(&m.content))
            },
            name: m.name.as_deref(),
            tool_calls: (!m.tool_calls.is_empty())
                .then(|| crate::domain::tools::wire_tool_calls(&m.tool_calls)),
            tool_call_id: m.tool_call_id.as_deref(),
        });
        Self {
            model: &request.model,
            messages: tenant_system.into_iter().chain(client_messages).collect(),
            max_completion_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop: &request.stop,
            seed: request.seed,
            presence_penalty: request.presence_penalty,
            frequency_penalty: request.frequency_penalty,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            response_format: &request.response_format,
            tools: &request.tools,
        }
    }
}

/// Chat-completion chunks to [`StreamEvent`]s. OpenAI sends the finish reason on the last
/// content chunk, then (because we ask) one chunk with no choices and the usage, then `[DONE]`.
#[derive(Debug, Default)]
struct ChunkTranslator {
    model_sent: bool,
    finished: bool,
    usage_sent: bool,
}

impl StreamTranslator for ChunkTranslator {
    type Framing = super::sse::SseParser;

    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<Flow, ProviderError> {
        if event.data.trim() == "[DONE]" {
            self.on_end(out)?;
            return Ok(Flow::Done);
        }
        let chunk: ChatCompletionChunk = match serde_json::from_str(&event.data) {
            Ok(chunk) => chunk,
            Err(err) => return Err(stream_error(&event.data, &err)),
        };
        if !self.model_sent && !chunk.model.is_empty() {
            self.model_sent = true;
            out.push(StreamEvent::Model(chunk.model));
        }
        // Tollgate asks for one choice; others (n > 1) are not part of the contract.
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Delta(text));
            }
            for call in choice.delta.tool_calls.into_iter().flatten() {
                out.push(StreamEvent::ToolCall(call.into()));
            }
            if let Some(reason) = choice.finish_reason {
                self.finished = true;
                out.push(StreamEvent::Finish(reason));
            }
        }
        if let Some(usage) = chunk.usage.filter(|_| !self.usage_sent) {
            self.usage_sent = true;
            out.push(StreamEvent::Usage(TokenUsage::from(usage)));
        }
        Ok(Flow::Continue)
    }

    /// Some OpenAI-compatible servers close without `[DONE]`; a stream that finished and
    /// reported usage is complete either way.
    fn on_end(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let missing = match (self.finished, self.usage_sent) {
            (true, true) => return Ok(()),
            (false, _) => "the stream ended before the model finished",
            (true, false) => "the stream ended without a usage chunk",
        };
        Err(ProviderError::new(
            KIND,
            ProviderErrorKind::Upstream,
            missing,
        ))
    }
}

/// A `data:` payload that is not a chunk: OpenAI reports mid-stream failures as
/// `{"error": {...}}`.
fn stream_error(data: &str, parse_error: &serde_json::Error) -> ProviderError {
    match serde_json::from_str::<ErrorEnvelope>(data) {
        Ok(envelope) => {
            let kind = match envelope.error.kind.as_deref() {
                Some("rate_limit_exceeded" | "requests" | "tokens") => {
                    ProviderErrorKind::RateLimited { retry_after: None }
                }
                _ => ProviderErrorKind::Upstream,
            };
            ProviderError::new(KIND, kind, truncate(&envelope.error.message))
        }
        Err(_) => ProviderError::new(
            KIND,
            ProviderErrorKind::Upstream,
            format!("unreadable stream chunk: {parse_error}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::chat::Message;

    fn request() -> ProviderRequest {
        ProviderRequest {
            model: "gpt-4o-mini".into(),
            system: Some("You are Acme's assistant.".into()),
            messages: vec![
                Message {
                    role: Role::System,
                    content: "Answer in French.".into(),
                    name: None,
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                    parts: Vec::new(),
                    cache_breakpoint: false,
                },
                Message {
                    role: Role::User,
                    content: "Hi".into(),
                    name: Some("ann".into()),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                    parts: Vec::new(),
                    cache_breakpoint: false,
                },
            ],
            max_tokens: Some(50),
            temperature: Some(0.2),
            top_p: None,
            stop: vec!["END".into()],
            seed: Some(7),
            presence_penalty: None,
            frequency_penalty: None,
            response_format: Default::default(),
            tools: Default::default(),
            inference_profile: None,
            pool_key: None,
            deadline: None,
        }
    }

    fn body(request: &ProviderRequest, stream: bool) -> Value {
        serde_json::to_value(ChatBody::new(request, stream)).unwrap()
    }

    #[test]
    fn the_tenant_system_prompt_comes_first_then_the_client_messages() {
        let body = body(&request(), false);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "You are Acme's assistant."},
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Hi", "name": "ann"},
            ])
        );
    }

    #[test]
    fn parameters_are_sent_and_unset_ones_omitted() {
        let body = body(&request(), false);
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["max_completion_tokens"], 50);
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["stop"], json!(["END"]));
        assert_eq!(body["seed"], 7);
        for absent in [
            "top_p",
            "presence_penalty",
            "frequency_penalty",
            "stream",
            "stream_options",
            "max_tokens",
        ] {
            assert!(body.get(absent).is_none(), "{absent} should be omitted");
        }
    }

    #[test]
    fn a_response_format_is_sent_as_received_and_text_is_omitted() {
        let raw = json!({"type": "json_schema", "json_schema": {
            "name": "answer", "strict": true,
            "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
        }});
        let mut request = request();
        request.response_format = ResponseFormat::parse(&raw).unwrap();
        assert_eq!(body(&request, false)["response_format"], raw);
        request.response_format = ResponseFormat::JsonObject;
        assert_eq!(
            body(&request, true)["response_format"],
            json!({"type": "json_object"})
        );
        request.response_format = ResponseFormat::Text;
        assert!(body(&request, false).get("response_format").is_none());
    }

    #[test]
    fn streams_always_ask_for_usage() {
        let body = body(&request(), true);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn no_tenant_prompt_means_no_extra_system_message() {
        let mut request = request();
        request.system = None;
        request.stop.clear();
        let body = body(&request, false);
        assert_eq!(body["messages"][0]["content"], "Answer in French.");
        assert!(body.get("stop").is_none());
    }

    fn translate(chunks: &[&str]) -> (Vec<StreamEvent>, Result<(), ProviderError>) {
        let mut translator = ChunkTranslator::default();
        let mut out = Vec::new();
        for data in chunks {
            let event = SseEvent {
                event: None,
                data: (*data).to_owned(),
            };
            match translator.on_event(event, &mut out) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Done) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
        let end = translator.on_end(&mut out);
        (out, end)
    }

    #[test]
    fn chunks_become_model_deltas_finish_and_usage() {
        let (events, end) = translate(&[
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"usage":null}"#,
            r#"{"id":"c","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":null}"#,
            r#"{"id":"c","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":2,"total_tokens":1202,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#,
            "[DONE]",
        ]);
        end.unwrap();
        assert_eq!(
            events,
            vec![
                StreamEvent::Model("gpt-4o-mini-2024-07-18".into()),
                StreamEvent::Delta("Hel".into()),
                StreamEvent::Delta("lo".into()),
                StreamEvent::Finish(FinishReason::Length),
                StreamEvent::Usage(TokenUsage {
                    prompt_tokens: 1200,
                    completion_tokens: 2,
                    cached_tokens: 1024,
                    cache_write_tokens: 0,
                }),
            ]
        );
    }

    #[test]
    fn a_stream_without_usage_is_an_upstream_error() {
        let (_, end) = translate(&[
            r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(end.unwrap_err().kind, ProviderErrorKind::Upstream);
    }

    #[test]
    fn a_stream_cut_before_the_finish_is_an_upstream_error() {
        let (events, end) = translate(&[
            r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"x"}}]}"#,
        ]);
        assert_eq!(events.len(), 2);
        assert_eq!(end.unwrap_err().kind, ProviderErrorKind::Upstream);
    }

    #[test]
    fn a_mid_stream_error_payload_becomes_a_provider_error() {
        let (_, end) = translate(&[
            r#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
        ]);
        let err = end.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Upstream);
        assert_eq!(err.message, "The server had an error");
        let (_, end) = translate(&["not json"]);
        assert_eq!(end.unwrap_err().kind, ProviderErrorKind::Upstream);
    }

    #[test]
    fn the_provider_debug_output_never_shows_the_api_key() {
        let settings = ProviderSettings::new("https://api.openai.com/v1", "sk-live-very-secret");
        let provider = OpenAiProvider::new(&settings).unwrap();
        let debug = format!("{provider:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(debug.contains("api.openai.com/v1/chat/completions"));
    }
}
