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
//! * Tools: each function becomes a tool with its parameters as `input_schema`; `tool_choice`
//!   `auto`/`required`/a function/`none` becomes `auto`/`any`/`tool`/`none`, and
//!   `parallel_tool_calls: false` is `disable_parallel_tool_use`. An assistant message's
//!   `tool_calls` become `tool_use` blocks (arguments parsed into `input`), and consecutive
//!   `tool` messages become one user turn of `tool_result` blocks (a user message right after
//!   them joins that turn, after the results). Back, `tool_use` blocks are `tool_calls` (their
//!   `input` as the arguments' JSON text; streamed, `content_block_start` then
//!   `input_json_delta` fragments) and `stop_reason: tool_use` is `finish_reason: tool_calls`.
//! * Images (`image_url` parts of user messages) become `image` blocks in place, with a
//!   `base64` source (media type and data) or a `url` source; `detail` is dropped.
//! * Prompt-cache breakpoints the client marked (`cache_control` on a message, a part or a
//!   tool) go on that message's last block, that client system block, or that tool, after
//!   the gateway's own on the tenant prompt (at most three, checked on arrival).
//! * Tools with structured output: the output tool is offered beside the client's, and the
//!   model must call one of them (`any`; the output tool alone under `tool_choice: none`, the
//!   client's alone under `required`). A call to the output tool is the formatted answer; a
//!   call to the client's tools is a tool-calls reply, whose output-tool call (if the model
//!   made both) is dropped.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::http_provider::{
    Auth, CallLimits, ErrorDetail, Flow, HttpCore, ProviderSettings, ProviderSetupError,
    StreamTranslator, truncate,
};
use super::sse::SseEvent;
use super::tool_blocks::ToolBlocks;
use crate::domain::chat::{Completion, FinishReason, Message, Role};
use crate::domain::image::{ContentPart, ImageSource};
use crate::domain::structured::OutputTool;
use crate::domain::tenant::ProviderKind;
use crate::domain::tools::{ToolCall, ToolChoice as ClientChoice};
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
        let output = output_tool_name(request);
        let reply_blocks = read_blocks(reply.content, output);
        let finish_reason = finish_reason(
            reply.stop_reason.as_deref(),
            !reply_blocks.tool_calls.is_empty(),
        );
        Ok(Completion {
            content: reply_blocks.content,
            tool_calls: reply_blocks.tool_calls,
            finish_reason,
            usage: reply.usage.normalise(),
            served_model: reply.model,
        })
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError> {
        let translator = EventTranslator {
            blocks: ToolBlocks::new(output_tool_name(request).map(str::to_owned)),
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
    /// The client's tools, then the structured-output tool when the request has a format.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
}

#[derive(Debug, Serialize)]
struct Tool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: std::borrow::Cow<'a, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<CacheControl>,
}

/// How the model may use the tools: `auto`, `any`, `tool` (with its name) or `none`.
#[derive(Debug, Serialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
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
    content: TurnContent,
}

/// A turn's content: a string while it is only text, blocks once it holds tool use or
/// results (or once two kinds meet in one merged turn).
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum TurnContent {
    Text(String),
    Blocks(Vec<serde_json::Value>),
}

impl TurnContent {
    /// A message's content, with the client's cache breakpoint (if it marked one) on its last
    /// block.
    fn of(message: &Message) -> Self {
        let content = Self::unmarked(message);
        if !message.cache_breakpoint {
            return content;
        }
        let mut blocks = content.into_blocks();
        if let Some(last) = blocks.last_mut() {
            last["cache_control"] = serde_json::json!({"type": "ephemeral"});
        }
        Self::Blocks(blocks)
    }

    /// A message's content: text, `tool_use` blocks for its calls, or its `tool_result`.
    fn unmarked(message: &Message) -> Self {
        if message.role == Role::Tool {
            let mut result = serde_json::json!({
                "type": "tool_result",
                "tool_use_id": message.tool_call_id.as_deref().unwrap_or_default(),
            });
            if !message.content.is_empty() {
                result["content"] = serde_json::Value::String(message.content.clone());
            }
            return Self::Blocks(vec![result]);
        }
        if !message.parts.is_empty() {
            return Self::Blocks(message.parts.iter().map(part_block).collect());
        }
        if message.tool_calls.is_empty() {
            return Self::Text(message.content.clone());
        }
        let text = (!message.content.is_empty())
            .then(|| serde_json::json!({"type": "text", "text": message.content}));
        let calls = message.tool_calls.iter().map(|call| {
            // Checked on arrival: empty or a JSON object.
            let input = serde_json::from_str::<serde_json::Value>(&call.arguments)
                .ok()
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| serde_json::json!({}));
            serde_json::json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
        });
        Self::Blocks(text.into_iter().chain(calls).collect())
    }

    fn into_blocks(self) -> Vec<serde_json::Value> {
        match self {
            Self::Text(text) if text.is_empty() => Vec::new(),
            Self::Text(text) => vec![serde_json::json!({"type": "text", "text": text})],
            Self::Blocks(blocks) => blocks,
        }
    }

    /// Appends a later message of the same role: texts join with a blank line, anything
    /// else as blocks in order.
    fn append(&mut self, later: Self) {
        match (&mut *self, later) {
            (Self::Text(text), Self::Text(more)) => {
                text.push_str("\n\n");
                text.push_str(&more);
            }
            (_, later) => {
                let mut blocks = std::mem::replace(self, Self::Blocks(Vec::new())).into_blocks();
                blocks.extend(later.into_blocks());
                *self = Self::Blocks(blocks);
            }
        }
    }
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
                cache_control: m
                    .cache_breakpoint
                    .then_some(CacheControl { kind: "ephemeral" }),
            });
        let mut messages: Vec<Turn> = Vec::with_capacity(request.messages.len());
        for message in &request.messages {
            let role = match message.role {
                Role::System => continue,
                // Tool results go back in a user turn.
                Role::User | Role::Tool => "user",
                Role::Assistant => "assistant",
            };
            let content = TurnContent::of(message);
            match messages.last_mut() {
                Some(last) if last.role == role => last.content.append(content),
                _ => messages.push(Turn { role, content }),
            }
        }
        // Anthropic takes temperature in [0, 1] where OpenAI takes [0, 2]; a request valid for
        // one should not fail on the other. Recent Claude models also refuse temperature and
        // top_p together: keep temperature, the one clients actually tune.
        let temperature = request.temperature.map(|t| t.clamp(0.0, 1.0));
        let top_p = request.top_p.filter(|_| temperature.is_none());
        let (tools, tool_choice) = tools_and_choice(request);
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

/// A text or image part as a content block: images by base64 source or URL (OpenAI's
/// `detail` has no Anthropic equivalent).
fn part_block(part: &ContentPart) -> serde_json::Value {
    match part {
        ContentPart::Text(text) => serde_json::json!({"type": "text", "text": text}),
        ContentPart::Image(image) => {
            let source = match &image.source {
                ImageSource::Data {
                    media_type, base64, ..
                } => {
                    serde_json::json!({"type": "base64", "media_type": media_type.as_str(), "data": base64})
                }
                ImageSource::Url(url) => serde_json::json!({"type": "url", "url": url}),
            };
            serde_json::json!({"type": "image", "source": source})
        }
    }
}

/// The tools offered and how the model may use them (see the module docs).
fn tools_and_choice(request: &ProviderRequest) -> (Vec<Tool<'_>>, Option<ToolChoice<'_>>) {
    let client = &request.tools;
    let output = request.response_format.as_tool();
    let choice = client.choice.as_ref();
    // `parallel_tool_calls: false`; structured output alone always calls its one tool once.
    let single = (client.parallel_calls == Some(false)).then_some(true);
    fn pick<'a>(kind: &'static str, name: Option<&'a str>, single: Option<bool>) -> ToolChoice<'a> {
        ToolChoice {
            kind,
            name,
            disable_parallel_tool_use: single,
        }
    }
    let mut tools: Vec<Tool<'_>> = Vec::new();
    let offer_client = !(output.is_some() && client.is_empty());
    if offer_client {
        tools.extend(client.definitions.iter().map(|d| {
            Tool {
                name: &d.name,
                description: d.description.as_deref(),
                input_schema: std::borrow::Cow::Borrowed(&d.parameters),
                cache_control: d
                    .cache_breakpoint
                    .then_some(CacheControl { kind: "ephemeral" }),
            }
        }));
    }
    let tool_choice = match (output, choice) {
        (None, _) if client.is_empty() => None,
        (None, None) => single.map(|s| pick("auto", None, Some(s))),
        (None, Some(ClientChoice::Auto)) => Some(pick("auto", None, single)),
        (None, Some(ClientChoice::Required)) => Some(pick("any", None, single)),
        (None, Some(ClientChoice::None)) => Some(pick("none", None, None)),
        (Some(_), Some(ClientChoice::Function(name)))
        | (None, Some(ClientChoice::Function(name))) => Some(pick("tool", Some(name), single)),
        // The client's tools must be used; the output tool is not offered.
        (Some(_), Some(ClientChoice::Required)) if !client.is_empty() => {
            Some(pick("any", None, single))
        }
        (Some(output), choice) => {
            let forced = client.is_empty() || choice == Some(&ClientChoice::None);
            let OutputTool {
                name,
                description,
                schema,
            } = output;
            tools.push(Tool {
                name,
                description: Some(description.unwrap_or(OUTPUT_TOOL_DESCRIPTION)),
                input_schema: schema,
                cache_control: None,
            });
            Some(if forced {
                pick("tool", Some(name), Some(true))
            } else {
                pick("any", None, single)
            })
        }
    };
    (tools, tool_choice)
}

/// The structured-output tool's name, when the request has a format.
fn output_tool_name(request: &ProviderRequest) -> Option<&str> {
    request.response_format.as_tool().map(|tool| tool.name)
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
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

/// A reply's content read from its blocks.
struct ReplyBlocks {
    content: String,
    tool_calls: Vec<ToolCall>,
}

/// The reply: its text blocks, or with structured output (`output` names the output tool)
/// that tool's input exactly as the model wrote it (empty if the model wrote none, which
/// then fails validation); and the calls of the client's tools, inputs as written. A reply
/// that calls the client's tools is that, whatever else it holds.
fn read_blocks(blocks: Vec<ContentBlock>, output: Option<&str>) -> ReplyBlocks {
    let mut text = String::new();
    let mut answer = None;
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.kind.as_str() {
            "text" if output.is_none() => text.push_str(block.text.as_deref().unwrap_or_default()),
            "tool_use" if output.is_some() && block.name.as_deref() == output => {
                // Forced or chosen once: the first is the answer.
                answer = answer.or(block.input.map(|input| input.get().to_owned()));
            }
            "tool_use" => tool_calls.push(ToolCall {
                id: block.id.unwrap_or_default(),
                name: block.name.unwrap_or_default(),
                arguments: block
                    .input
                    .map_or_else(|| "{}".to_owned(), |input| input.get().to_owned()),
            }),
            _ => {}
        }
    }
    let content = match (output, tool_calls.is_empty()) {
        (Some(_), true) => answer.unwrap_or_default(),
        (Some(_), false) => String::new(),
        (None, _) => text,
    };
    ReplyBlocks {
        content,
        tool_calls,
    }
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

/// `tool_use` is `tool_calls` when the model called the client's tools, and the normal end of
/// a structured-output reply (the output tool was called) otherwise.
fn finish_reason(stop_reason: Option<&str>, called_tools: bool) -> FinishReason {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
        Some("tool_use") if called_tools => FinishReason::ToolCalls,
        Some("tool_use") => FinishReason::Stop,
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
    ContentBlockStart {
        #[serde(default)]
        index: usize,
        content_block: StartedBlock,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: usize,
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
    /// `ping`, `content_block_stop`, and event types Anthropic adds later (its versioning
    /// policy says clients must ignore unknown ones).
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

/// The block a `content_block_start` opens: its type, and a tool call's id and name.
#[derive(Debug, Deserialize)]
struct StartedBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
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
    /// What each content block carries (the output tool's input, a tool call, other).
    blocks: ToolBlocks,
}

impl StreamTranslator for EventTranslator {
    type Framing = super::sse::SseParser;

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
            StreamPayload::ContentBlockStart {
                index,
                content_block,
            } => {
                let tool = (content_block.kind == "tool_use").then(|| {
                    (
                        content_block.id.unwrap_or_default(),
                        content_block.name.unwrap_or_default(),
                    )
                });
                self.blocks.start(index, tool, out);
            }
            StreamPayload::ContentBlockDelta {
                delta: BlockDelta::TextDelta { text },
                ..
            } if !text.is_empty() && !self.blocks.structured() => {
                out.push(StreamEvent::Delta(text));
            }
            StreamPayload::ContentBlockDelta {
                index,
                delta: BlockDelta::InputJsonDelta { partial_json },
            } => self.blocks.input(index, partial_json, out),
            StreamPayload::MessageDelta { delta, usage } => {
                if let Some(usage) = usage {
                    self.usage.update(usage);
                    out.push(StreamEvent::UsageSoFar(self.usage.normalise()));
                }
                if let Some(reason) = delta.stop_reason {
                    out.push(StreamEvent::Finish(finish_reason(
                        Some(&reason),
                        self.blocks.called_tools(),
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
        Message::new(role, content)
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
            tools: Default::default(),
            inference_profile: None,
            pool_key: None,
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
            finish_reason(Some("tool_use"), true),
            FinishReason::ToolCalls
        );
        // Only the structured-output tool was called: the answer, not a tool call.
        assert_eq!(finish_reason(Some("tool_use"), false), FinishReason::Stop);
        assert_eq!(
            finish_reason(Some("refusal"), false),
            FinishReason::ContentFilter
        );
        assert_eq!(finish_reason(None, false), FinishReason::Stop);
        // The forced output tool being called is how a structured reply ends.
        assert_eq!(finish_reason(Some("tool_use"), false), FinishReason::Stop);
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
        let blocks = read_blocks(reply.content, None);
        assert_eq!(blocks.content, "Hello world");
        // Without a format, a tool_use block is a call of the client's tools.
        assert_eq!(blocks.tool_calls.len(), 1);
        assert_eq!(
            blocks.tool_calls[0].arguments,
            r#"{"name": "Ann", "age": 31}"#
        );
    }

    #[test]
    fn a_structured_reply_is_the_tool_input_as_the_model_wrote_it() {
        let reply: MessageReply = serde_json::from_str(MIXED_REPLY).unwrap();
        let blocks = read_blocks(reply.content, Some("person"));
        assert_eq!(blocks.content, r#"{"name": "Ann", "age": 31}"#);
        assert!(blocks.tool_calls.is_empty());
        let reply: MessageReply = serde_json::from_value(json!({
            "model": "m", "content": [{"type": "text", "text": "no tool"}],
            "usage": {"input_tokens": 1, "output_tokens": 1}
        }))
        .unwrap();
        assert_eq!(read_blocks(reply.content, Some("person")).content, "");
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
            blocks: ToolBlocks::new(Some("person".into())),
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
    fn a_tool_loop_becomes_alternating_turns_with_results_first() {
        let call = |id: &str, arguments: &str| ToolCall {
            id: id.into(),
            name: "lookup".into(),
            arguments: arguments.into(),
        };
        let result = |id: &str, text: &str| Message {
            tool_call_id: Some(id.into()),
            ..message(Role::Tool, text)
        };
        let request = request(
            None,
            vec![
                message(Role::User, "Find both."),
                Message {
                    tool_calls: vec![call("t1", r#"{"q":"a"}"#), call("t2", "")],
                    ..message(Role::Assistant, "Looking.")
                },
                result("t1", "A"),
                result("t2", ""),
                message(Role::User, "Thanks; and now?"),
            ],
        );
        let body = body(&request);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "Find both."},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "a"}},
                    {"type": "tool_use", "id": "t2", "name": "lookup", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "A"},
                    {"type": "tool_result", "tool_use_id": "t2"},
                    {"type": "text", "text": "Thanks; and now?"},
                ]},
            ])
        );
    }

    #[test]
    fn streamed_tool_use_blocks_become_tool_call_pieces_beside_the_text() {
        let (events, end) = translate(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 5}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "lookup", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"q\":"}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "other", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]);
        end.unwrap();
        let mut calls = crate::domain::tools::ToolCallAssembler::default();
        let mut text = String::new();
        for event in &events {
            match event {
                StreamEvent::ToolCall(piece) => calls.push(piece),
                StreamEvent::Delta(t) => text.push_str(t),
                _ => {}
            }
        }
        assert_eq!(text, "Checking.");
        let calls = calls.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].arguments.as_str()),
            ("toolu_a", "{\"q\":1}")
        );
        assert_eq!(
            (calls[1].name.as_str(), calls[1].arguments.as_str()),
            ("other", "")
        );
        assert!(events.contains(&StreamEvent::Finish(FinishReason::ToolCalls)));
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
