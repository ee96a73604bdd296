//! A simulated provider for the embedded default: deterministic replies, token counts from a
//! real tokenizer, configurable latency, and prompt caching that behaves like the real thing
//! (OpenAI: cached reads in 128-token steps past 1,024 tokens; Anthropic: a cache write on
//! first use of a long system prompt, reads for five minutes after).
//!
//! With a structured-output `response_format` the reply is deterministic JSON built from the
//! schema ([`example_instance`]): every property, with the first `enum`/`const` value or a
//! placeholder of the declared type within simple bounds. That satisfies the schemas clients
//! usually send (objects of strings, numbers, integers, booleans, arrays, nested objects and
//! enums, local `$ref`s); patterns and formats beyond a few common ones are not attempted.
//!
//! With tools, the simulated model calls one, deterministically, so a whole tool loop runs
//! locally: the function `tool_choice` names, else the first tool; when the conversation ends
//! with a user message (and on every turn under `tool_choice: required`). Its arguments are
//! built from the tool's parameters like a structured reply, and its id is a hash of the
//! conversation. Once the conversation ends with tool results, it answers in text, quoting the
//! last result. Streamed, a call arrives as its id and name, then its arguments in pieces.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream;
use serde_json::Value;

use super::embeddings::LocalEmbedder;
use crate::domain::chat::{Completion, FinishReason, Role};
use crate::domain::structured::ResponseFormat;
use crate::domain::tenant::ProviderKind;
use crate::domain::tools::{ToolCall, ToolCallDelta, ToolChoice};
use crate::domain::usage::TokenUsage;
use crate::ports::provider::{
    EmbeddingInput, EmbeddingRequest, EventStream, LlmProvider, ProviderError, ProviderRequest,
    StreamEvent,
};
use crate::ports::vector::Embeddings;
use crate::tokenizer::{count_tokens, count_tokens_memo};

const CACHE_MIN_TOKENS: usize = 1024;
const CACHE_TTL: Duration = Duration::from_secs(300);

/// How slow the simulated provider answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatedLatency {
    /// Before the reply (or the first stream chunk).
    pub first_token: Duration,
    /// Between stream chunks.
    pub per_chunk: Duration,
}

/// A provider that answers without a network (see the module docs).
pub struct SimulatedProvider {
    kind: ProviderKind,
    latency: SimulatedLatency,
    /// Hash of (model, system prompt) → when it was last cached.
    prompt_cache: Mutex<HashMap<u64, Instant>>,
}

impl SimulatedProvider {
    /// A simulated `kind` provider answering with `latency`.
    pub fn new(kind: ProviderKind, latency: SimulatedLatency) -> Self {
        Self {
            kind,
            latency,
            prompt_cache: Mutex::new(HashMap::new()),
        }
    }

    /// The deterministic reply: it quotes the start of the last user turn so a person trying
    /// the gateway can see their message went through. Structured output gets JSON instead.
    fn reply_text(request: &ProviderRequest) -> String {
        match &request.response_format {
            ResponseFormat::Text => Self::prose(request),
            ResponseFormat::JsonObject => {
                serde_json::json!({ "reply": Self::prose(request) }).to_string()
            }
            ResponseFormat::JsonSchema(format) => {
                example_instance(&format.schema, &format.schema, 0).to_string()
            }
        }
    }

    fn prose(request: &ProviderRequest) -> String {
        if let Some(result) = request.messages.last().filter(|m| m.role == Role::Tool) {
            let quoted: String = result.content.chars().take(80).collect();
            return format!(
                "This is a simulated reply from {}. The tool returned: \"{quoted}\".",
                request.model
            );
        }
        let last = request.messages.iter().rev().find(|m| m.role == Role::User);
        let last_user = last.map_or("", |m| m.content.as_str());
        let images = last.map_or(0, |m| m.images().count());
        let seen = match images {
            0 => String::new(),
            1 => " You sent 1 image.".to_owned(),
            n => format!(" You sent {n} images."),
        };
        let quoted: String = last_user.chars().take(80).collect();
        let ellipsis = if last_user.chars().count() > 80 {
            "…"
        } else {
            ""
        };
        format!(
            "This is a simulated reply from {}. You said: \"{quoted}{ellipsis}\".{seen} Set OPENAI_API_KEY or ANTHROPIC_API_KEY to talk to a real model.",
            request.model
        )
    }

    /// Cuts the reply to `max_tokens` (whole words), like a provider stopping at the limit.
    fn truncate(text: String, max_tokens: Option<u32>) -> (String, FinishReason) {
        let Some(max) = max_tokens.map(|m| m as usize) else {
            return (text, FinishReason::Stop);
        };
        // Every token is at least one byte: a reply no longer in bytes than the cap fits it
        // without being counted (the usual case, now that chat always sends a cap).
        if text.len() <= max || count_tokens(&text) <= max {
            return (text, FinishReason::Stop);
        }
        let mut out = String::new();
        for word in text.split_inclusive(' ') {
            let candidate = format!("{out}{word}");
            if count_tokens(&candidate) > max {
                break;
            }
            out = candidate;
        }
        (out, FinishReason::Length)
    }

    fn usage(&self, request: &ProviderRequest, reply: &str) -> TokenUsage {
        let prompt = request.prompt_tokens(self.kind);
        let completion = count_tokens(reply) as u64;
        let mut usage = TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            ..TokenUsage::default()
        };
        let Some(system) = request.system.as_deref() else {
            return usage;
        };
        let system_tokens = count_tokens_memo(system);
        if system_tokens < CACHE_MIN_TOKENS {
            return usage;
        }
        let mut hasher = DefaultHasher::new();
        (&request.model, system).hash(&mut hasher);
        let key = hasher.finish();
        let now = Instant::now();
        let warm = match self.prompt_cache.lock() {
            Ok(mut cache) => {
                let warm = cache
                    .get(&key)
                    .is_some_and(|t| now.duration_since(*t) < CACHE_TTL);
                cache.insert(key, now);
                warm
            }
            Err(_) => false,
        };
        let system_tokens = system_tokens as u64;
        match (self.kind, warm) {
            (ProviderKind::Openai, true) => usage.cached_tokens = system_tokens / 128 * 128,
            (ProviderKind::Anthropic | ProviderKind::Bedrock, true) => {
                usage.cached_tokens = system_tokens;
            }
            (ProviderKind::Anthropic | ProviderKind::Bedrock, false) => {
                usage.cache_write_tokens = system_tokens;
            }
            (ProviderKind::Openai, false) => {}
        }
        usage
    }

    /// The tool call the simulated model makes, if it makes one (see the module docs).
    fn tool_call(request: &ProviderRequest) -> Option<ToolCall> {
        let tools = &request.tools;
        if !tools.callable() {
            return None;
        }
        let after_results = request
            .messages
            .last()
            .is_some_and(|m| m.role == Role::Tool);
        let tool = match &tools.choice {
            Some(ToolChoice::Function(name)) => tools.get(name)?,
            Some(ToolChoice::Required) => tools.definitions.first()?,
            _ if after_results => return None,
            _ => tools.definitions.first()?,
        };
        let arguments = example_instance(&tool.parameters, &tool.parameters, 0).to_string();
        let mut hasher = DefaultHasher::new();
        (&request.model, request.messages.len(), &tool.name).hash(&mut hasher);
        for m in &request.messages {
            m.content.hash(&mut hasher);
        }
        Some(ToolCall {
            id: format!("call_{:016x}", hasher.finish()),
            name: tool.name.clone(),
            arguments,
        })
    }

    fn generate(&self, request: &ProviderRequest) -> Completion {
        if let Some(call) = Self::tool_call(request) {
            let written = format!("{}{}", call.name, call.arguments);
            let usage = self.usage(request, &written);
            return Completion {
                content: String::new(),
                tool_calls: vec![call],
                finish_reason: FinishReason::ToolCalls,
                usage,
                served_model: request.model.clone(),
            };
        }
        let (content, finish_reason) =
            Self::truncate(Self::reply_text(request), request.max_tokens);
        let usage = self.usage(request, &content);
        Completion {
            content,
            tool_calls: Vec::new(),
            finish_reason,
            usage,
            served_model: request.model.clone(),
        }
    }
}

#[async_trait]
impl LlmProvider for SimulatedProvider {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        if !self.latency.first_token.is_zero() {
            tokio::time::sleep(self.latency.first_token).await;
        }
        Ok(self.generate(request))
    }

    /// Deterministic vectors (the local embedder's feature hashing) of the model's usual
    /// length, or the length asked for; usage counted like the simulated chat's.
    async fn embed(&self, request: &EmbeddingRequest) -> Result<Embeddings, ProviderError> {
        if !self.latency.first_token.is_zero() {
            tokio::time::sleep(self.latency.first_token).await;
        }
        let dimensions = request.dimensions.map_or_else(
            || match request.model.as_str() {
                "text-embedding-3-large" => 3072,
                _ => 1536,
            },
            |d| d as usize,
        );
        let embedder = LocalEmbedder::exact(dimensions);
        let (vectors, prompt_tokens) = match &request.input {
            EmbeddingInput::Texts(texts) => (
                texts.iter().map(|t| embedder.vector(t)).collect(),
                texts.iter().map(|t| count_tokens(t) as u64).sum(),
            ),
            EmbeddingInput::Tokens(tokens) => (
                tokens
                    .iter()
                    .map(|ids| {
                        let words: Vec<String> = ids.iter().map(|id| format!("t{id}")).collect();
                        embedder.vector(&words.join(" "))
                    })
                    .collect(),
                tokens.iter().map(|ids| ids.len() as u64).sum(),
            ),
        };
        Ok(Embeddings {
            vectors,
            prompt_tokens,
            model: request.model.clone(),
        })
    }

    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError> {
        let completion = self.generate(request);
        let mut events = vec![StreamEvent::Model(completion.served_model.clone())];
        events.extend(
            completion
                .content
                .split_inclusive(' ')
                .map(|word| StreamEvent::Delta(word.to_owned())),
        );
        for (index, call) in completion.tool_calls.iter().enumerate() {
            let index = index as u32;
            events.push(StreamEvent::ToolCall(ToolCallDelta {
                index,
                id: Some(call.id.clone()),
                name: Some(call.name.clone()),
                arguments: String::new(),
            }));
            // Arguments in pieces, split after each `,` or `:` (always on a char boundary).
            events.extend(call.arguments.split_inclusive([',', ':']).map(|piece| {
                StreamEvent::ToolCall(ToolCallDelta {
                    index,
                    id: None,
                    name: None,
                    arguments: piece.to_owned(),
                })
            }));
        }
        events.push(StreamEvent::Finish(completion.finish_reason));
        events.push(StreamEvent::Usage(completion.usage));
        let latency = self.latency;
        let stream = stream::unfold(
            (events.into_iter(), true),
            move |(mut events, first)| async move {
                let event = events.next()?;
                let delay = if first {
                    latency.first_token
                } else {
                    latency.per_chunk
                };
                if !delay.is_zero()
                    && matches!(event, StreamEvent::Delta(_) | StreamEvent::Model(_))
                {
                    tokio::time::sleep(delay).await;
                }
                Some((Ok(event), (events, false)))
            },
        );
        Ok(Box::pin(stream))
    }
}

/// How deep [`example_instance`] follows nested schemas and references.
const MAX_EXAMPLE_DEPTH: usize = 12;

/// A deterministic value satisfying `schema` (for the simple schemas described in the module
/// docs). `root` resolves local `$ref`s (`#/$defs/...`, `#/definitions/...`).
pub fn example_instance(schema: &Value, root: &Value, depth: usize) -> Value {
    if depth > MAX_EXAMPLE_DEPTH {
        return Value::Null;
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
    {
        return first.clone();
    }
    if let Some(target) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
    {
        return example_instance(target, root, depth + 1);
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(combinator)
            .and_then(Value::as_array)
            .and_then(|v| v.first())
        {
            return example_instance(first, root, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // `["string", "null"]`: the first non-null type.
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "null",
    };
    let number = |key: &str| schema.get(key).and_then(Value::as_f64);
    match kind {
        "object" => {
            let properties = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .map(|(name, sub)| (name.clone(), example_instance(sub, root, depth + 1)))
                        .collect()
                })
                .unwrap_or_default();
            Value::Object(properties)
        }
        "array" => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let max = schema.get("maxItems").and_then(Value::as_u64).unwrap_or(3);
            let count = min.max(1).min(max).min(8);
            Value::Array(
                (0..count)
                    .map(|_| example_instance(items, root, depth + 1))
                    .collect(),
            )
        }
        "string" => {
            let text = match schema.get("format").and_then(Value::as_str) {
                Some("date") => "2026-01-01".to_owned(),
                Some("date-time") => "2026-01-01T00:00:00Z".to_owned(),
                Some("time") => "00:00:00Z".to_owned(),
                Some("email") => "user@example.com".to_owned(),
                Some("uri" | "url") => "https://example.com/".to_owned(),
                Some("uuid") => "00000000-0000-4000-8000-000000000000".to_owned(),
                _ => "simulated".to_owned(),
            };
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
            let max = schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .map(|m| m as usize);
            let mut text = text;
            while text.chars().count() < min {
                text.push('x');
            }
            if let Some(max) = max {
                text = text.chars().take(max).collect();
            }
            Value::String(text)
        }
        "integer" => {
            let low = number("minimum")
                .or(number("exclusiveMinimum").map(|m| m.floor() + 1.0))
                .unwrap_or(1.0)
                .ceil();
            let high = number("maximum")
                .or(number("exclusiveMaximum").map(|m| m.ceil() - 1.0))
                .unwrap_or(f64::MAX);
            let value = low.min(high.floor());
            Value::from(value as i64)
        }
        "number" => {
            let low = number("minimum")
                .or(number("exclusiveMinimum").map(|m| m + 0.5))
                .unwrap_or(1.5);
            let high = number("maximum")
                .or(number("exclusiveMaximum").map(|m| m - 0.5))
                .unwrap_or(f64::MAX);
            serde_json::Number::from_f64(low.min(high)).map_or(Value::Null, Value::Number)
        }
        "boolean" => Value::Bool(true),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::domain::chat::Message;

    fn request(system: Option<String>, text: &str, max_tokens: Option<u32>) -> ProviderRequest {
        ProviderRequest {
            model: "gpt-4o-mini".into(),
            system,
            messages: vec![Message {
                role: Role::User,
                content: text.into(),
                name: None,
                tool_calls: Vec::new(),
                tool_call_id: None,
                parts: Vec::new(),
                cache_breakpoint: false,
            }],
            max_tokens,
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

    #[tokio::test]
    async fn replies_are_deterministic_and_counted_with_the_tokenizer() {
        let p = SimulatedProvider::new(ProviderKind::Openai, SimulatedLatency::default());
        let a = p
            .complete(&request(Some("Be kind.".into()), "hello", None))
            .await
            .unwrap();
        let b = p
            .complete(&request(Some("Be kind.".into()), "hello", None))
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.usage.completion_tokens, count_tokens(&a.content) as u64);
        assert_eq!(
            a.usage.prompt_tokens,
            (count_tokens("Be kind.") + 3 + count_tokens("hello") + 3 + 3) as u64
        );
    }

    #[tokio::test]
    async fn max_tokens_cuts_the_reply_and_says_length() {
        let p = SimulatedProvider::new(ProviderKind::Openai, SimulatedLatency::default());
        let c = p.complete(&request(None, "hello", Some(5))).await.unwrap();
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert!(c.usage.completion_tokens <= 5);
    }

    #[tokio::test]
    async fn structured_replies_conform_to_simple_schemas() {
        let format = ResponseFormat::parse(&serde_json::json!({
            "type": "json_schema",
            "json_schema": {"name": "order", "strict": true, "schema": {
                "type": "object",
                "$defs": {"money": {"type": "number", "minimum": 0}},
                "properties": {
                    "id": {"type": "string", "minLength": 12},
                    "status": {"type": "string", "enum": ["open", "closed"]},
                    "count": {"type": "integer", "minimum": 3, "maximum": 9},
                    "score": {"type": "number", "exclusiveMinimum": 2, "maximum": 5},
                    "paid": {"type": "boolean"},
                    "total": {"$ref": "#/$defs/money"},
                    "note": {"type": ["string", "null"]},
                    "placed": {"type": "string", "format": "date-time"},
                    "lines": {"type": "array", "minItems": 2, "items": {
                        "type": "object",
                        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                        "required": ["sku", "qty"], "additionalProperties": false
                    }},
                    "meta": {"type": "object", "properties": {"kind": {"const": "retail"}}, "required": ["kind"]}
                },
                "required": ["id", "status", "count", "score", "paid", "total", "note", "placed", "lines", "meta"],
                "additionalProperties": false
            }}
        }))
        .unwrap();
        let p = SimulatedProvider::new(ProviderKind::Anthropic, SimulatedLatency::default());
        let mut req = request(None, "an order please", None);
        req.response_format = format.clone();
        let reply = p.complete(&req).await.unwrap();
        format.check(&reply.content).unwrap();
        assert_eq!(
            reply.usage.completion_tokens,
            count_tokens(&reply.content) as u64
        );

        req.response_format = ResponseFormat::JsonObject;
        let reply = p.complete(&req).await.unwrap();
        ResponseFormat::JsonObject.check(&reply.content).unwrap();
        assert!(reply.content.contains("an order please"));
    }

    #[tokio::test]
    async fn a_streamed_reply_matches_the_buffered_one() {
        let p = SimulatedProvider::new(ProviderKind::Anthropic, SimulatedLatency::default());
        let buffered = p.complete(&request(None, "stream me", None)).await.unwrap();
        let mut text = String::new();
        let mut usage = None;
        let mut s = p.stream(&request(None, "stream me", None)).await.unwrap();
        while let Some(event) = s.next().await {
            match event.unwrap() {
                StreamEvent::Delta(d) => text.push_str(&d),
                StreamEvent::Usage(u) => usage = Some(u),
                _ => {}
            }
        }
        assert_eq!(text, buffered.content);
        assert_eq!(usage, Some(buffered.usage));
    }

    #[tokio::test]
    async fn long_system_prompts_are_cached_like_the_real_providers() {
        let long = "You are a meticulous assistant. ".repeat(300);
        let anthropic =
            SimulatedProvider::new(ProviderKind::Anthropic, SimulatedLatency::default());
        let first = anthropic
            .complete(&request(Some(long.clone()), "q", None))
            .await
            .unwrap();
        let second = anthropic
            .complete(&request(Some(long.clone()), "q", None))
            .await
            .unwrap();
        assert!(first.usage.cache_write_tokens >= 1024 && first.usage.cached_tokens == 0);
        assert_eq!(second.usage.cached_tokens, first.usage.cache_write_tokens);

        let openai = SimulatedProvider::new(ProviderKind::Openai, SimulatedLatency::default());
        let first = openai
            .complete(&request(Some(long.clone()), "q", None))
            .await
            .unwrap();
        let second = openai
            .complete(&request(Some(long), "q", None))
            .await
            .unwrap();
        assert_eq!(first.usage.cached_tokens, 0);
        assert!(second.usage.cached_tokens >= 1024 && second.usage.cached_tokens % 128 == 0);
    }
}
