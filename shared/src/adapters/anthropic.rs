//! The Anthropic Messages adapter (`POST {base_url}/v1/messages`).
//!
//! Translation from the OpenAI shape:
//!
//! * The tenant's system prompt becomes the first `system` block, marked for prompt caching
//!   when it is long enough to be cached; client system messages follow as uncached blocks
//!   (they change per request and would only break the cache).
//! * Consecutive messages of the same role are merged: Anthropic wants alternating turns.
//! * `max_tokens` is required, `stop` is `stop_sequences`; `seed` and the penalties have no
//!   Anthropic equivalent and are dropped.
//! * Usage is normalised to OpenAI's convention, where prompt tokens include cache reads and
//!   writes: Anthropic's `input_tokens` counts only the uncached remainder.
//! * Structured output (`response_format` `json_schema` or `json_object`) becomes Anthropic's
//!   tool use: one tool whose `input_schema` is the schema (`{"type": "object"}` for
//!   `json_object`), forced with `tool_choice: {"type": "tool", "name": ...}`. The `tool_use`
//!   block's `input`, as the model wrote it, is the reply's content (streamed: its
//!   `input_json_delta` fragments are the text deltas), and its `tool_use` stop reason is an
//!   ordinary `stop`. Text blocks around it are commentary, not the reply, and are dropped.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::http_provider::{
    Auth, CallLimits, ErrorDetail, Flow, HttpCore, ProviderSettings, ProviderSetupError,
    StreamTranslator, truncate,
};
use super::sse::SseEvent;
use crate::domain::chat::{Completion, FinishReason, Role};
use crate::domain::structured::OutputTool;
use crate::domain::tenant::ProviderKind;
use crate::domain::usage::TokenUsage;
use crate::ports::provider::{
    EventStream, LlmProvider, ProviderError, ProviderErrorKind, ProviderRequest, StreamEvent,
};
use crate::tokenizer::count_tokens;

const KIND: ProviderKind = ProviderKind::Anthropic;
const API_VERSION: &str = "2023-06-01";

/// Anthropic's Messages API (`POST {base_url}/v1/messages`) as an [`LlmProvider`].
#[derive(Debug)]
pub struct AnthropicProvider {
    http: HttpCore,
    cache_min_tokens: usize,
    default_max_tokens: u32,
}

impl AnthropicProvider {
    /// Builds the provider and its HTTP client. `settings.base_url` is the host, without `/v1`.
    pub fn new(settings: &ProviderSettings) -> Result<Self, ProviderSetupError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        Ok(Self {
            http: HttpCore::new(
                KIND,
                settings,
                "/v1/messages",
                Auth::header("x-api-key"),
                headers,
            )?,
            cache_min_tokens: settings.cache_min_tokens,
            default_max_tokens: settings.default_max_tokens,
        })
    }

    fn body<'a>(&self, request: &'a ProviderRequest, stream: bool) -> MessagesBody<'a> {
        MessagesBody::new(
            request,
            stream,
            self.cache_min_tokens,
            self.default_max_tokens,
        )
    }
}

#[async_trait]
impl LlmProvider for AnthropicProvider {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        let body = self
            .http
            .post_json(&self.body(request, false), CallLimits::of(request))
            .await?;
        let reply: MessageReply = serde_json::from_slice(&body).map_err(|e| {
            self.http
                .error(
                    ProviderErrorKind::Upstream,
                    format!("unreadable message: {e}"),
                )
                .after_send()
        })?;
        let structured = request.response_format.is_structured();
        Ok(Completion {
            content: reply_content(reply.content, structured),
            finish_reason: finish_reason(reply.stop_reason.as_deref(), structured),
            usage: reply.usage.normalise(),
            served_model: reply.model,
        })
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError> {
        let translator = EventTranslator {
            structured: request.response_format.is_structured(),
            ..EventTranslator::default()
        };
        self.http
            .post_stream(
                &self.body(request, true),
                translator,
                CallLimits::of(request),
            )
            .await
    }
}

// ---- Request ----

#[derive(Debug, Serialize)]
struct MessagesBody<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<SystemBlock<'a>>,
    messages: Vec<Turn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    /// One tool, for structured output only: Tollgate does not offer clients tool calling.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
}

#[derive(Debug, Serialize)]
struct Tool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: std::borrow::Cow<'a, serde_json::Value>,
}

/// Forces the one tool, once: its input is the reply.
#[derive(Debug, Serialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    disable_parallel_tool_use: bool,
}

/// What the model is told the output tool is for, when the client's schema has no
/// description of its own.
const OUTPUT_TOOL_DESCRIPTION: &str = "Reply by calling this tool: its input is your whole answer, and it must match the input schema.";

#[derive(Debug, Serialize)]
struct SystemBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheControl>,
}

#[derive(Debug, Serialize)]
struct CacheControl {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Debug, Serialize)]
struct Turn {
    role: &'static str,
    content: String,
}

impl<'a> MessagesBody<'a> {
    fn new(
        request: &'a ProviderRequest,
        stream: bool,
        cache_min_tokens: usize,
        default_max_tokens: u32,
    ) -> Self {
        let tenant = request.system.as_deref().map(|text| SystemBlock {
            kind: "text",
            text,
            cache_control: worth_caching(text, cache_min_tokens)
                .then_some(CacheControl { kind: "ephemeral" }),
        });
        let client = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| SystemBlock {
                kind: "text",
                text: &m.content,
                cache_control: None,
            });
        let mut messages: Vec<Turn> = Vec::with_capacity(request.messages.len());
        for message in &request.messages {
            let role = match message.role {
                Role::System => continue,
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            match messages.last_mut() {
                Some(last) if last.role == role => {
                    last.content.push_str("\n\n");
                    last.content.push_str(&message.content);
                }
                _ => messages.push(Turn {
                    role,
                    content: message.content.clone(),
                }),
            }
        }
        // Anthropic takes temperature in [0, 1] where OpenAI takes [0, 2]; a request valid for
        // one should not fail on the other. Recent Claude models also refuse temperature and
        // top_p together: keep temperature, the one clients actually tune.
        let temperature = request.temperature.map(|t| t.clamp(0.0, 1.0));
        let top_p = request.top_p.filter(|_| temperature.is_none());
        let output_tool = request.response_format.as_tool();
        let tool_choice = output_tool.as_ref().map(|tool| ToolChoice {
            kind: "tool",
            name: tool.name,
            disable_parallel_tool_use: true,
        });
        let tools = output_tool
            .into_iter()
            .map(
                |OutputTool {
                     name,
                     description,
                     schema,
                 }| Tool {
                    name,
                    description: description.unwrap_or(OUTPUT_TOOL_DESCRIPTION),
                    input_schema: schema,
                },
            )
            .collect();
        Self {
            model: &request.model,
            max_tokens: request.max_tokens.unwrap_or(default_max_tokens),
            system: tenant.into_iter().chain(client).collect(),
            messages,
            temperature,
            top_p,
            stop_sequences: &request.stop,
            stream,
            tools,
            tool_choice,
        }
    }
}

/// Whether `text` reaches `min_tokens` (estimated with OpenAI's tokenizer; Claude's differs a
/// little). Every token is at least one byte, so a shorter text is answered without loading
/// the tokenizer's tables.
fn worth_caching(text: &str, min_tokens: usize) -> bool {
    text.len() >= min_tokens && count_tokens(text) >= min_tokens
}

// ---- Response ----

#[derive(Debug, Deserialize)]
struct MessageReply {
    model: String,
    #[serde(default)]
    content: Vec<ContentBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    usage: AnthropicUsage,
}

/// A content block: `text`, `tool_use`, and whatever else Anthropic sends (thinking, and
/// types added later), which is not part of the reply. A struct rather than a tagged enum so
/// `input` can stay raw (serde cannot buffer a `RawValue` through an enum's tag).
#[derive(Debug, Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

/// The reply's content: the text blocks, or for structured output the output tool's input
/// exactly as the model wrote it (empty if the model wrote none, which then fails validation).
fn reply_content(blocks: Vec<ContentBlock>, structured: bool) -> String {
    let wanted = if structured { "tool_use" } else { "text" };
    let mut parts = blocks.into_iter().filter(|b| b.kind == wanted);
    if structured {
        // The tool is forced and parallel use disabled: one block.
        return parts
            .next()
            .and_then(|b| b.input)
            .map(|input| input.get().to_owned())
            .unwrap_or_default();
    }
    parts.filter_map(|b| b.text).collect()
}

/// Anthropic's usage block. The cache fields are absent or `null` when caching did not apply.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Fields present in `later` replace ours: `message_delta` counts are cumulative.
    fn update(&mut self, later: AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    fn normalise(self) -> TokenUsage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        TokenUsage {
            prompt_tokens: self.input_tokens.unwrap_or(0) + read + written,
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: read,
            cache_write_tokens: written,
        }
    }
}

/// `tool_use` is the normal end of a structured-output reply (the forced tool was called).
fn finish_reason(stop_reason: Option<&str>, structured: bool) -> FinishReason {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
        Some("tool_use") if structured => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        // end_turn, stop_sequence, pause_turn, and anything new: the model stopped.
        _ => FinishReason::Stop,
    }
}

// ---- Streaming ----

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamPayload {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockDelta {
        delta: BlockDelta,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    Error {
        error: ErrorDetail,
    },
    /// `ping`, `content_block_start`, `content_block_stop`, and event types Anthropic adds
    /// later (its versioning policy says clients must ignore unknown ones).
    #[serde(other)]
    Ignored,
}

#[derive(Debug, Deserialize)]
struct StartedMessage {
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: AnthropicUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    /// A fragment of a tool_use block's input JSON.
    InputJsonDelta {
        partial_json: String,
    },
    /// Thinking, signatures, citations.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Messages events to [`StreamEvent`]s. Usage is spread over `message_start` (input) and
/// `message_delta` (cumulative output), so it is emitted whole once, at `message_stop`, and as
/// it grows ([`StreamEvent::UsageSoFar`]) so a stream that fails keeps the exact part.
#[derive(Debug, Default)]
struct EventTranslator {
    started: bool,
    usage: AnthropicUsage,
    /// Structured output: the tool input is the reply, text deltas are not.
    structured: bool,
}

impl StreamTranslator for EventTranslator {
    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<Flow, ProviderError> {
        let payload: StreamPayload = serde_json::from_str(&event.data).map_err(|e| {
            ProviderError::new(
                KIND,
                ProviderErrorKind::Upstream,
                format!("unreadable stream event: {e}"),
            )
        })?;
        match payload {
            StreamPayload::MessageStart { message } => {
                self.started = true;
                self.usage = message.usage;
                if !message.model.is_empty() {
                    out.push(StreamEvent::Model(message.model));
                }
                // Exact input and cache counts, kept in case the stream fails before the end.
                out.push(StreamEvent::UsageSoFar(self.usage.normalise()));
            }
            StreamPayload::ContentBlockDelta {
                delta: BlockDelta::TextDelta { text },
            } if !text.is_empty() && !self.structured => out.push(StreamEvent::Delta(text)),
            StreamPayload::ContentBlockDelta {
                delta: BlockDelta::InputJsonDelta { partial_json },
            } if !partial_json.is_empty() && self.structured => {
                out.push(StreamEvent::Delta(partial_json));
            }
            StreamPayload::MessageDelta { delta, usage } => {
                if let Some(usage) = usage {
                    self.usage.update(usage);
                    out.push(StreamEvent::UsageSoFar(self.usage.normalise()));
                }
                if let Some(reason) = delta.stop_reason {
                    out.push(StreamEvent::Finish(finish_reason(
                        Some(&reason),
                        self.structured,
                    )));
                }
            }
            StreamPayload::MessageStop => {
                out.push(StreamEvent::Usage(self.usage.normalise()));
                return Ok(Flow::Done);
            }
            StreamPayload::Error { error } => return Err(stream_error(&error)),
            StreamPayload::ContentBlockDelta { .. } | StreamPayload::Ignored => {}
        }
        Ok(Flow::Continue)
    }

    fn on_end(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let message = if self.started {
            "the stream ended before message_stop"
        } else {
            "the stream ended before message_start"
        };
        Err(ProviderError::new(
            KIND,
            ProviderErrorKind::Upstream,
            message,
        ))
    }
}

/// A mid-stream `error` event, classified like the HTTP status it stands for.
fn stream_error(error: &ErrorDetail) -> ProviderError {
    let kind = match error.kind.as_deref() {
        Some("rate_limit_error") => ProviderErrorKind::RateLimited { retry_after: None },
        Some("invalid_request_error" | "request_too_large" | "not_found_error") => {
            ProviderErrorKind::Rejected
        }
        Some("authentication_error" | "permission_error") => ProviderErrorKind::Credentials,
        Some("timeout_error") => ProviderErrorKind::Timeout,
        // overloaded_error, api_error, and unknown types.
        _ => ProviderErrorKind::Upstream,
    };
    let message = match error.kind.as_deref() {
        Some(kind) => format!("{kind}: {}", truncate(&error.message)),
        None => truncate(&error.message),
    };
    ProviderError::new(KIND, kind, message)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::chat::Message;

    fn message(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
            name: None,
        }
    }

    fn request(system: Option<String>, messages: Vec<Message>) -> ProviderRequest {
        ProviderRequest {
            model: "claude-sonnet-4-5".into(),
            system,
            messages,
            max_tokens: None,
            temperature: None,
            top_p: None,
            stop: vec![],
            seed: None,
            presence_penalty: None,
            frequency_penalty: None,
            response_format: Default::default(),
            deadline: None,
        }
    }

    fn body(request: &ProviderRequest) -> Value {
        serde_json::to_value(MessagesBody::new(request, false, 1024, 4096)).unwrap()
    }

    #[test]
    fn a_long_tenant_prompt_is_a_cached_system_block_and_client_system_messages_follow() {
        let long = "You are a meticulous support agent for Acme. ".repeat(200);
        let request = request(
            Some(long.clone()),
            vec![
                message(Role::System, "Be brief."),
                message(Role::User, "Hi"),
            ],
        );
        let body = body(&request);
        assert_eq!(
            body["system"],
            json!([
                {"type": "text", "text": long, "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be brief."},
            ])
        );
        assert_eq!(body["messages"], json!([{"role": "user", "content": "Hi"}]));
    }

    #[test]
    fn a_short_tenant_prompt_is_not_marked_for_caching() {
        let request = request(Some("Be nice.".into()), vec![message(Role::User, "Hi")]);
        assert_eq!(
            body(&request)["system"],
            json!([{"type": "text", "text": "Be nice."}])
        );
    }

    #[test]
    fn the_caching_threshold_counts_tokens_not_bytes() {
        // 1500 bytes but far fewer tokens: not worth a cache breakpoint.
        assert!(!worth_caching(&"aaaa ".repeat(300), 1024));
        assert!(!worth_caching("short", 1024));
        assert!(worth_caching(
            &"The quick brown fox jumps. ".repeat(200),
            1024
        ));
        assert!(worth_caching("", 0));
    }

    #[test]
    fn no_system_prompt_means_no_system_field() {
        let request = request(None, vec![message(Role::User, "Hi")]);
        assert!(body(&request).get("system").is_none());
    }

    #[test]
    fn consecutive_messages_of_one_role_are_merged() {
        let request = request(
            None,
            vec![
                message(Role::User, "one"),
                message(Role::System, "ignored here"),
                message(Role::User, "two"),
                message(Role::Assistant, "three"),
                message(Role::Assistant, "four"),
                message(Role::User, "five"),
            ],
        );
        assert_eq!(
            body(&request)["messages"],
            json!([
                {"role": "user", "content": "one\n\ntwo"},
                {"role": "assistant", "content": "three\n\nfour"},
                {"role": "user", "content": "five"},
            ])
        );
    }

    #[test]
    fn max_tokens_defaults_and_stop_becomes_stop_sequences() {
        let mut req = request(None, vec![message(Role::User, "Hi")]);
        req.stop = vec!["END".into()];
        req.seed = Some(1);
        req.presence_penalty = Some(0.5);
        let body = body(&req);
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        for absent in [
            "stop",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "stream",
        ] {
            assert!(body.get(absent).is_none(), "{absent}");
        }
        req.max_tokens = Some(12);
        assert_eq!(self::body(&req)["max_tokens"], 12);
    }

    #[test]
    fn temperature_is_clamped_to_anthropics_range_and_wins_over_top_p() {
        let mut req = request(None, vec![message(Role::User, "Hi")]);
        req.temperature = Some(1.7);
        req.top_p = Some(0.9);
        let body = body(&req);
        assert_eq!(body["temperature"], 1.0);
        assert!(body.get("top_p").is_none());
        req.temperature = None;
        assert_eq!(self::body(&req)["top_p"], 0.9);
    }

    #[test]
    fn usage_is_normalised_to_the_openai_convention() {
        let usage: AnthropicUsage = serde_json::from_value(json!({
            "input_tokens": 12, "output_tokens": 30,
            "cache_creation_input_tokens": 200, "cache_read_input_tokens": 1800
        }))
        .unwrap();
        assert_eq!(
            usage.normalise(),
            TokenUsage {
                prompt_tokens: 2012,
                completion_tokens: 30,
                cached_tokens: 1800,
                cache_write_tokens: 200,
            }
        );
        let usage: AnthropicUsage = serde_json::from_value(json!({
            "input_tokens": 5, "output_tokens": 1,
            "cache_creation_input_tokens": null, "cache_read_input_tokens": null
        }))
        .unwrap();
        assert_eq!(usage.normalise().prompt_tokens, 5);
    }

    #[test]
    fn stop_reasons_map_to_openai_finish_reasons() {
        assert_eq!(finish_reason(Some("end_turn"), false), FinishReason::Stop);
        assert_eq!(
            finish_reason(Some("stop_sequence"), false),
            FinishReason::Stop
        );
        assert_eq!(
            finish_reason(Some("max_tokens"), false),
            FinishReason::Length
        );
        assert_eq!(
            finish_reason(Some("tool_use"), false),
            FinishReason::ToolCalls
        );
        assert_eq!(
            finish_reason(Some("refusal"), false),
            FinishReason::ContentFilter
        );
        assert_eq!(finish_reason(None, false), FinishReason::Stop);
        // The forced output tool being called is how a structured reply ends.
        assert_eq!(finish_reason(Some("tool_use"), true), FinishReason::Stop);
        assert_eq!(
            finish_reason(Some("max_tokens"), true),
            FinishReason::Length
        );
    }

    /// A reply body with every kind of block, as the real API can send them.
    const MIXED_REPLY: &str = r#"{
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "toolu_1", "name": "person", "input": {"name": "Ann", "age": 31}},
            {"type": "text", "text": " world"}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 3, "output_tokens": 2}
    }"#;

    #[test]
    fn a_reply_keeps_only_text_blocks() {
        let reply: MessageReply = serde_json::from_str(MIXED_REPLY).unwrap();
        assert_eq!(reply_content(reply.content, false), "Hello world");
    }

    #[test]
    fn a_structured_reply_is_the_tool_input_as_the_model_wrote_it() {
        let reply: MessageReply = serde_json::from_str(MIXED_REPLY).unwrap();
        assert_eq!(
            reply_content(reply.content, true),
            r#"{"name": "Ann", "age": 31}"#
        );
        let reply: MessageReply = serde_json::from_value(json!({
            "model": "m", "content": [{"type": "text", "text": "no tool"}],
            "usage": {"input_tokens": 1, "output_tokens": 1}
        }))
        .unwrap();
        assert_eq!(reply_content(reply.content, true), "");
    }

    #[test]
    fn a_json_schema_format_becomes_one_forced_tool() {
        use crate::domain::structured::ResponseFormat;
        let mut req = request(None, vec![message(Role::User, "Who?")]);
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
        req.response_format = ResponseFormat::parse(&json!({
            "type": "json_schema",
            "json_schema": {"name": "person", "description": "A person.", "schema": schema, "strict": true}
        }))
        .unwrap();
        let body = body(&req);
        assert_eq!(
            body["tools"],
            json!([{"name": "person", "description": "A person.", "input_schema": schema}])
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "tool", "name": "person", "disable_parallel_tool_use": true})
        );
        assert!(body.get("response_format").is_none());

        req.response_format = ResponseFormat::JsonObject;
        let body = self::body(&req);
        assert_eq!(body["tools"][0]["name"], "json_object");
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(body["tools"][0]["description"], OUTPUT_TOOL_DESCRIPTION);
        assert_eq!(body["tool_choice"]["name"], "json_object");

        req.response_format = ResponseFormat::Text;
        let body = self::body(&req);
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    }

    #[test]
    fn a_structured_stream_forwards_the_tool_input_json_and_ends_with_stop() {
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "person", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"name\": "}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "\"Ann\"}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        let mut translator = EventTranslator {
            structured: true,
            ..EventTranslator::default()
        };
        let mut out = Vec::new();
        for (name, data) in &events {
            let event = SseEvent {
                event: Some((*name).to_owned()),
                data: data.to_string(),
            };
            translator.on_event(event, &mut out).unwrap();
        }
        assert_eq!(
            out,
            vec![
                StreamEvent::Model("claude-x".into()),
                StreamEvent::UsageSoFar(TokenUsage {
                    prompt_tokens: 10,
                    completion_tokens: 1,
                    ..TokenUsage::default()
                }),
                StreamEvent::Delta("{\"name\": ".into()),
                StreamEvent::Delta("\"Ann\"}".into()),
                StreamEvent::UsageSoFar(TokenUsage {
                    prompt_tokens: 10,
                    completion_tokens: 9,
                    ..TokenUsage::default()
                }),
                StreamEvent::Finish(FinishReason::Stop),
                StreamEvent::Usage(TokenUsage {
                    prompt_tokens: 10,
                    completion_tokens: 9,
                    cached_tokens: 0,
                    cache_write_tokens: 0,
                }),
            ]
        );
    }

    fn translate(events: &[(&str, Value)]) -> (Vec<StreamEvent>, Result<(), ProviderError>) {
        let mut translator = EventTranslator::default();
        let mut out = Vec::new();
        for (name, data) in events {
            let event = SseEvent {
                event: Some((*name).to_owned()),
                data: data.to_string(),
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
    fn stream_events_become_model_deltas_finish_and_one_usage() {
        let (events, end) = translate(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-x", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2000, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null}, "usage": {"output_tokens": 15}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]);
        end.unwrap();
        assert_eq!(
            events,
            vec![
                StreamEvent::Model("claude-x".into()),
                StreamEvent::UsageSoFar(TokenUsage {
                    prompt_tokens: 2010,
                    completion_tokens: 1,
                    cached_tokens: 2000,
                    cache_write_tokens: 0,
                }),
                StreamEvent::Delta("Hel".into()),
                StreamEvent::Delta("lo".into()),
                StreamEvent::UsageSoFar(TokenUsage {
                    prompt_tokens: 2010,
                    completion_tokens: 15,
                    cached_tokens: 2000,
                    cache_write_tokens: 0,
                }),
                StreamEvent::Finish(FinishReason::Length),
                StreamEvent::Usage(TokenUsage {
                    prompt_tokens: 2010,
                    completion_tokens: 15,
                    cached_tokens: 2000,
                    cache_write_tokens: 0,
                }),
            ]
        );
    }

    #[test]
    fn cumulative_input_counts_in_message_delta_replace_the_start_counts() {
        let (events, _) = translate(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"input_tokens": 12, "cache_read_input_tokens": 100, "output_tokens": 20}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]);
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Usage(TokenUsage {
                prompt_tokens: 112,
                completion_tokens: 20,
                cached_tokens: 100,
                cache_write_tokens: 0,
            }))
        );
    }

    #[test]
    fn an_error_after_message_start_keeps_the_exact_input_and_cache_counts_before_it() {
        let (events, end) = translate(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 12, "cache_read_input_tokens": 9000, "cache_creation_input_tokens": 300, "output_tokens": 1}}}),
            ),
            (
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
        ]);
        assert!(end.is_err());
        assert_eq!(
            events.last(),
            Some(&StreamEvent::UsageSoFar(TokenUsage {
                prompt_tokens: 9312,
                completion_tokens: 1,
                cached_tokens: 9000,
                cache_write_tokens: 300,
            }))
        );
    }

    #[test]
    fn an_error_event_becomes_a_classified_provider_error() {
        let (_, end) = translate(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"model": "m", "usage": {}}}),
            ),
            (
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
        ]);
        let err = end.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Upstream);
        assert!(err.message.contains("Overloaded"));
        let (_, end) = translate(&[(
            "error",
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
        )]);
        assert_eq!(
            end.unwrap_err().kind,
            ProviderErrorKind::RateLimited { retry_after: None }
        );
    }

    #[test]
    fn a_stream_cut_before_message_stop_is_an_upstream_error() {
        let (_, end) = translate(&[(
            "message_start",
            json!({"type": "message_start", "message": {"model": "m", "usage": {}}}),
        )]);
        assert_eq!(end.unwrap_err().kind, ProviderErrorKind::Upstream);
    }

    #[test]
    fn the_provider_debug_output_never_shows_the_api_key() {
        let settings = ProviderSettings::new("https://api.anthropic.com", "sk-ant-very-secret");
        let provider = AnthropicProvider::new(&settings).unwrap();
        let debug = format!("{provider:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(debug.contains("api.anthropic.com/v1/messages"));
    }
}
