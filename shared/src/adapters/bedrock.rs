//! Amazon Bedrock's Converse API (`POST {endpoint}/model/{modelId}/converse` and
//! `/converse-stream`), signed with the deployment's IAM role.
//!
//! Not through `aws-sdk-bedrockruntime`: the smallest Converse + ConverseStream client on it
//! added 560 KB to the invoke bootstrap, past its 10 MiB budget (measured; README
//! "Bootstrap sizes"). This client is the same reqwest client and rustls stack as every other
//! provider ([`HttpCore`]), SigV4 from aws-sigv4 (the signer the SDK clients already link,
//! [`sigv4`](super::sigv4)), and a decoder for the event-stream framing
//! ([`event_stream`](super::event_stream)).
//!
//! Translation from the OpenAI shape, close to the Anthropic adapter's:
//!
//! * The tenant's system prompt is the first `system` block, followed by a `cachePoint` when
//!   it is long enough to be cached; client system messages follow (with a `cachePoint` where
//!   the client marked one).
//! * Consecutive messages of one role are merged (Converse wants alternating turns); tool
//!   results go back as `toolResult` blocks of a user turn, an assistant's calls as `toolUse`
//!   blocks (arguments parsed into `input`).
//! * `max_tokens` (the configured default when the client set none), `temperature` (clamped
//!   to [0, 1]), `top_p` and `stop` go in `inferenceConfig`; `seed` and the penalties have no
//!   Converse equivalent and are dropped.
//! * Images must be data: Converse takes `bytes`, not URLs, so a URL image is refused before
//!   the call (400) rather than fetched by the gateway.
//! * Tools are `toolConfig.tools[].toolSpec`; `tool_choice` `auto`/`required`/a function is
//!   `auto`/`any`/`tool`. Converse has no `none`: the tools are withheld, unless the
//!   conversation already holds tool turns (Converse then requires `toolConfig`), where they
//!   are offered under `auto`. `parallel_tool_calls` has no equivalent.
//! * Structured output is a forced tool, as for Anthropic: the tool's input is the reply.
//! * Usage: `inputTokens` counts what was neither read from nor written to the prompt cache;
//!   it is normalised to OpenAI's convention (prompt = input + cache reads + cache writes).
//! * A tenant's application inference profile ([`ProviderRequest::inference_profile`]) is
//!   the `modelId` of the call; the route's model id still names and prices it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::event_stream;
use super::http_provider::{
    CallLimits, Flow, HttpCore, ProviderSettings, ProviderSetupError, StreamTranslator, truncate,
};
use super::sigv4::AwsSigner;
use super::tool_blocks::ToolBlocks;
use crate::domain::chat::{Completion, FinishReason, Message, Role};
use crate::domain::image::{ContentPart, ImageSource};
use crate::domain::tenant::ProviderKind;
use crate::domain::tools::{ToolCall, ToolChoice as ClientChoice};
use crate::domain::usage::TokenUsage;
use crate::ports::provider::{
    EventStream, LlmProvider, ProviderError, ProviderErrorKind, ProviderRequest, StreamEvent,
};
use crate::tokenizer::count_tokens;

const KIND: ProviderKind = ProviderKind::Bedrock;
/// The name Bedrock's runtime signs requests under.
pub const SIGNING_NAME: &str = "bedrock";

/// The runtime endpoint of `region`.
pub fn endpoint(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

/// Bedrock's Converse API as an [`LlmProvider`].
#[derive(Debug)]
pub struct BedrockProvider {
    http: HttpCore,
    cache_min_tokens: usize,
    default_max_tokens: u32,
}

impl BedrockProvider {
    /// `settings.base_url` is the runtime endpoint ([`endpoint`], or a stand-in's);
    /// `settings.api_key` is not used: every request is signed by `signer`.
    pub fn new(settings: &ProviderSettings, signer: AwsSigner) -> Result<Self, ProviderSetupError> {
        Ok(Self {
            http: HttpCore::signed(KIND, settings, signer)?,
            cache_min_tokens: settings.cache_min_tokens,
            default_max_tokens: settings.default_max_tokens,
        })
    }

    fn url(&self, request: &ProviderRequest, operation: &str) -> reqwest::Url {
        let model = request
            .inference_profile
            .as_deref()
            .unwrap_or(&request.model);
        self.http
            .url(&format!("/model/{}/{operation}", encode_label(model)))
    }

    fn body<'a>(&self, request: &'a ProviderRequest) -> Result<ConverseBody<'a>, ProviderError> {
        ConverseBody::new(request, self.cache_min_tokens, self.default_max_tokens)
    }
}

#[async_trait]
impl LlmProvider for BedrockProvider {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        let body = self.body(request)?;
        let reply = self
            .http
            .post_json_to(
                &self.url(request, "converse"),
                &body,
                CallLimits::of(request),
            )
            .await?;
        let reply: ConverseReply = serde_json::from_slice(&reply).map_err(|e| {
            self.http
                .error(
                    ProviderErrorKind::Upstream,
                    format!("unreadable Converse reply: {e}"),
                )
                .after_send()
        })?;
        let output = output_tool_name(request);
        let mut text = String::new();
        let mut answer = None;
        let mut tool_calls = Vec::new();
        for block in reply.output.message.content {
            match (block.text, block.tool_use) {
                (Some(t), _) if output.is_none() => text.push_str(&t),
                (_, Some(call)) if output.is_some() && Some(call.name.as_str()) == output => {
                    answer = answer.or(Some(call.input.to_string()));
                }
                (_, Some(call)) => tool_calls.push(ToolCall {
                    id: call.tool_use_id,
                    name: call.name,
                    arguments: call.input.to_string(),
                }),
                _ => {}
            }
        }
        let content = match output {
            Some(_) if tool_calls.is_empty() => answer.unwrap_or_default(),
            Some(_) => String::new(),
            None => text,
        };
        Ok(Completion {
            content,
            finish_reason: finish_reason(&reply.stop_reason, !tool_calls.is_empty()),
            tool_calls,
            usage: reply.usage.normalise(),
            served_model: request.model.clone(),
        })
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError> {
        let body = self.body(request)?;
        let translator = EventTranslator {
            model: request.model.clone(),
            started: false,
            blocks: ToolBlocks::new(output_tool_name(request).map(str::to_owned)),
        };
        self.http
            .post_stream_to(
                &self.url(request, "converse-stream"),
                &body,
                translator,
                CallLimits::of(request),
            )
            .await
    }
}

/// A model id or ARN as one path segment: everything but RFC 3986's unreserved characters
/// percent-encoded (`:` and `/` of ARNs included), as the SDK sends it and signs it.
fn encode_label(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for byte in label.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---- Request ----

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseBody<'a> {
    messages: Vec<Turn>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Value>,
    inference_config: InferenceConfig<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig<'a> {
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
}

#[derive(Debug, Serialize)]
struct Turn {
    role: &'static str,
    content: Vec<Value>,
}

/// What the model is told the output tool is for, when the client's schema has no
/// description of its own.
const OUTPUT_TOOL_DESCRIPTION: &str = "Reply by calling this tool: its input is your whole answer, and it must match the input schema.";

fn cache_point() -> Value {
    json!({"cachePoint": {"type": "default"}})
}

/// Which prompt caching a model family supports on Bedrock: Claude caches system, messages
/// and tools; Nova system and messages; other families (Llama, Mistral...) none, and get no
/// `cachePoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Caching {
    prompt: bool,
    tools: bool,
}

impl Caching {
    fn of(model: &str) -> Self {
        let claude = model.contains("anthropic.claude");
        Self {
            prompt: claude || model.contains("amazon.nova"),
            tools: claude,
        }
    }
}

impl<'a> ConverseBody<'a> {
    fn new(
        request: &'a ProviderRequest,
        cache_min_tokens: usize,
        default_max_tokens: u32,
    ) -> Result<Self, ProviderError> {
        let caching = Caching::of(&request.model);
        let mut system = Vec::new();
        if let Some(text) = request.system.as_deref() {
            system.push(json!({"text": text}));
            if caching.prompt && worth_caching(text, cache_min_tokens) {
                system.push(cache_point());
            }
        }
        for message in request.messages.iter().filter(|m| m.role == Role::System) {
            system.push(json!({"text": message.content}));
            if caching.prompt && message.cache_breakpoint {
                system.push(cache_point());
            }
        }
        let mut messages: Vec<Turn> = Vec::with_capacity(request.messages.len());
        let mut tool_turns = false;
        for message in &request.messages {
            let role = match message.role {
                Role::System => continue,
                Role::User | Role::Tool => "user",
                Role::Assistant => "assistant",
            };
            tool_turns |= message.role == Role::Tool || !message.tool_calls.is_empty();
            let content = blocks(message, caching.prompt)?;
            match messages.last_mut() {
                Some(last) if last.role == role => last.content.extend(content),
                _ => messages.push(Turn { role, content }),
            }
        }
        let temperature = request.temperature.map(|t| t.clamp(0.0, 1.0));
        Ok(Self {
            messages,
            system,
            inference_config: InferenceConfig {
                max_tokens: request.max_tokens.unwrap_or(default_max_tokens),
                temperature,
                // Claude on Bedrock refuses both at once, as on Anthropic: keep temperature.
                top_p: request.top_p.filter(|_| temperature.is_none()),
                stop_sequences: &request.stop,
            },
            tool_config: tool_config(request, tool_turns, caching.tools),
        })
    }
}

/// A message's content blocks: text and images, tool calls, or a tool result; then a
/// `cachePoint` where the client marked a breakpoint.
fn blocks(message: &Message, cache_points: bool) -> Result<Vec<Value>, ProviderError> {
    let mut out = Vec::new();
    if message.role == Role::Tool {
        // Converse requires a result's content and refuses blank text: an empty result (a
        // tool run for its side effect) goes as an empty JSON object.
        let content = if message.content.is_empty() {
            json!([{"json": {}}])
        } else {
            json!([{"text": message.content}])
        };
        out.push(json!({"toolResult": {
            "toolUseId": message.tool_call_id.as_deref().unwrap_or_default(),
            "content": content,
        }}));
    } else if !message.parts.is_empty() {
        for part in &message.parts {
            match part {
                ContentPart::Text(text) if text.is_empty() => {}
                ContentPart::Text(text) => out.push(json!({"text": text})),
                ContentPart::Image(image) => match &image.source {
                    ImageSource::Data {
                        media_type, base64, ..
                    } => out.push(json!({"image": {
                        "format": media_type.as_str().trim_start_matches("image/"),
                        "source": {"bytes": base64},
                    }})),
                    ImageSource::Url(_) => {
                        return Err(ProviderError::new(
                            KIND,
                            ProviderErrorKind::Rejected,
                            "Bedrock takes images as data, not URLs: send the image as a base64 `data:` URL",
                        ));
                    }
                },
            }
        }
    } else {
        // Converse refuses empty text blocks.
        if !message.content.is_empty() {
            out.push(json!({"text": message.content}));
        }
        for call in &message.tool_calls {
            // Checked on arrival: empty or a JSON object.
            let input = serde_json::from_str::<Value>(&call.arguments)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            out.push(json!({"toolUse": {"toolUseId": call.id, "name": call.name, "input": input}}));
        }
    }
    if cache_points && message.cache_breakpoint && !out.is_empty() {
        out.push(cache_point());
    }
    Ok(out)
}

/// `toolConfig`: the client's tools and the structured-output tool, and how the model may
/// use them (see the module docs). `tool_turns`: the conversation holds tool use or results.
fn tool_config(request: &ProviderRequest, tool_turns: bool, cache_points: bool) -> Option<Value> {
    let client = &request.tools;
    let output = request.response_format.as_tool();
    let spec = |name: &str, description: Option<&str>, schema: &Value| {
        let mut spec = json!({"name": name, "inputSchema": {"json": schema}});
        // Converse refuses an empty description.
        if let Some(description) = description.filter(|d| !d.is_empty()) {
            spec["description"] = json!(description);
        }
        json!({"toolSpec": spec})
    };
    let mut tools = Vec::new();
    let withheld = client.choice == Some(ClientChoice::None) && output.is_none() && !tool_turns;
    if !withheld {
        for definition in &client.definitions {
            tools.push(spec(
                &definition.name,
                definition.description.as_deref(),
                &definition.parameters,
            ));
            if cache_points && definition.cache_breakpoint {
                tools.push(cache_point());
            }
        }
    }
    let choice = match (&output, client.choice.as_ref()) {
        (_, Some(ClientChoice::Function(name))) => Some(json!({"tool": {"name": name}})),
        (Some(_), Some(ClientChoice::Required)) if !client.is_empty() => Some(json!({"any": {}})),
        (Some(tool), choice) => {
            let forced = client.is_empty() || choice == Some(&ClientChoice::None);
            tools.push(spec(
                tool.name,
                Some(tool.description.unwrap_or(OUTPUT_TOOL_DESCRIPTION)),
                &tool.schema,
            ));
            Some(if forced {
                json!({"tool": {"name": tool.name}})
            } else {
                json!({"any": {}})
            })
        }
        (None, Some(ClientChoice::Required)) => Some(json!({"any": {}})),
        (None, Some(ClientChoice::Auto)) => Some(json!({"auto": {}})),
        (None, _) => None,
    };
    if tools.is_empty() {
        return None;
    }
    let mut config = json!({"tools": tools});
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Some(config)
}

/// The structured-output tool's name, when the request has a format.
fn output_tool_name(request: &ProviderRequest) -> Option<&str> {
    request.response_format.as_tool().map(|tool| tool.name)
}

/// Whether `text` reaches `min_tokens` (estimated with OpenAI's tokenizer).
fn worth_caching(text: &str, min_tokens: usize) -> bool {
    text.len() >= min_tokens && count_tokens(text) >= min_tokens
}

// ---- Response ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseReply {
    output: ReplyOutput,
    #[serde(default)]
    stop_reason: String,
    usage: BedrockUsage,
}

#[derive(Debug, Deserialize)]
struct ReplyOutput {
    message: ReplyMessage,
}

#[derive(Debug, Deserialize)]
struct ReplyMessage {
    #[serde(default)]
    content: Vec<ReplyBlock>,
}

/// A content block: `text`, `toolUse`, or another kind (reasoning, citations) that is not
/// part of the reply.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplyBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUse>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

/// Converse's usage. The cache fields are absent when caching did not apply.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl BedrockUsage {
    fn normalise(self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.input_tokens
                + self.cache_read_input_tokens
                + self.cache_write_input_tokens,
            completion_tokens: self.output_tokens,
            cached_tokens: self.cache_read_input_tokens,
            cache_write_tokens: self.cache_write_input_tokens,
        }
    }
}

fn finish_reason(stop_reason: &str, called_tools: bool) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" if called_tools => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        // end_turn, stop_sequence, a forced output tool's tool_use, and anything new.
        _ => FinishReason::Stop,
    }
}

// ---- Streaming ----

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamPayload {
    #[serde(default)]
    content_block_index: usize,
    #[serde(default)]
    start: Option<BlockStart>,
    #[serde(default)]
    delta: Option<BlockDelta>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<BedrockUsage>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    tool_use: Option<StartedToolUse>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartedToolUse {
    tool_use_id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolInputDelta>,
}

#[derive(Debug, Deserialize)]
struct ToolInputDelta {
    #[serde(default)]
    input: String,
}

/// ConverseStream events to [`StreamEvent`]s. Usage comes once, in the last event
/// (`metadata`), after `messageStop`.
#[derive(Debug, Default)]
struct EventTranslator {
    /// The route's model id: Converse names none in its replies.
    model: String,
    started: bool,
    blocks: ToolBlocks,
}

impl StreamTranslator for EventTranslator {
    type Framing = event_stream::Decoder;

    fn on_event(
        &mut self,
        event: event_stream::Message,
        out: &mut Vec<StreamEvent>,
    ) -> Result<Flow, ProviderError> {
        let message_type = event.header(":message-type");
        if !matches!(message_type, Some("event" | "exception")) {
            // An `error` frame says what failed in its headers; its payload is usually empty.
            let kind = event.header(":error-code").unwrap_or("error");
            let message = event.header(":error-message").unwrap_or("");
            return Err(stream_error(kind, message));
        }
        let payload: StreamPayload = if event.payload.is_empty() {
            StreamPayload::default()
        } else {
            serde_json::from_slice(&event.payload).map_err(|e| {
                ProviderError::new(
                    KIND,
                    ProviderErrorKind::Upstream,
                    format!("unreadable stream event: {e}"),
                )
            })?
        };
        if message_type == Some("exception") {
            let kind = event.header(":exception-type").unwrap_or("exception");
            return Err(stream_error(kind, payload.message.as_deref().unwrap_or("")));
        }
        match event.header(":event-type").unwrap_or_default() {
            "messageStart" => {
                self.started = true;
                out.push(StreamEvent::Model(self.model.clone()));
            }
            "contentBlockStart" => {
                let tool = payload
                    .start
                    .and_then(|s| s.tool_use)
                    .map(|t| (t.tool_use_id, t.name));
                self.blocks.start(payload.content_block_index, tool, out);
            }
            "contentBlockDelta" => match payload.delta {
                Some(BlockDelta {
                    text: Some(text), ..
                }) if !text.is_empty() && !self.blocks.structured() => {
                    out.push(StreamEvent::Delta(text));
                }
                Some(BlockDelta {
                    tool_use: Some(ToolInputDelta { input }),
                    ..
                }) => self.blocks.input(payload.content_block_index, input, out),
                _ => {}
            },
            "messageStop" => out.push(StreamEvent::Finish(finish_reason(
                payload.stop_reason.as_deref().unwrap_or_default(),
                self.blocks.called_tools(),
            ))),
            "metadata" => {
                out.push(StreamEvent::Usage(
                    payload.usage.unwrap_or_default().normalise(),
                ));
                return Ok(Flow::Done);
            }
            // contentBlockStop, and event types added later.
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn on_end(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let message = if self.started {
            "the stream ended before its metadata (usage)"
        } else {
            "the stream ended before messageStart"
        };
        Err(ProviderError::new(
            KIND,
            ProviderErrorKind::Upstream,
            message,
        ))
    }
}

/// A mid-stream exception, classified like the HTTP status it stands for.
fn stream_error(exception: &str, message: &str) -> ProviderError {
    let kind = match exception {
        "throttlingException" | "modelNotReadyException" | "serviceQuotaExceededException" => {
            ProviderErrorKind::RateLimited { retry_after: None }
        }
        "validationException" | "resourceNotFoundException" => ProviderErrorKind::Rejected,
        "accessDeniedException" => ProviderErrorKind::Credentials,
        "modelTimeoutException" => ProviderErrorKind::Timeout,
        // internalServerException, modelStreamErrorException, serviceUnavailableException, and
        // anything new.
        _ => ProviderErrorKind::Upstream,
    };
    ProviderError::new(KIND, kind, format!("{exception}: {}", truncate(message)))
}

#[cfg(test)]
mod tests;
