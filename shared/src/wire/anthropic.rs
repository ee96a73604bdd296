//! `POST /v1/messages`: Anthropic's Messages API request, parsed into the gateway's
//! [`ChatRequest`].
//!
//! The body is checked for what is Anthropic's own (`max_tokens` required, `system` as a
//! string or text blocks, `user`/`assistant` turns, text content blocks, `stop_sequences`,
//! `metadata.user_id`, `temperature` up to 1), then translated into the Chat Completions body
//! it means and validated by [`parse_chat_request`], so both APIs share one set of bounds.
//! `cache_control` on a block is accepted; the tenant prompt is where the gateway places its own
//! cache breakpoint. Tools, images, documents and extended thinking are refused with a 400
//! naming the field until the gateway carries them (issue 14).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::chat::ChatRequest;
use crate::error::GatewayError;

use super::fields::{self, FieldError};
use super::request::parse_chat_request;

#[derive(Deserialize)]
struct RawRequest {
    model: String,
    max_tokens: i64,
    messages: Vec<RawMessage>,
    #[serde(default)]
    system: Option<Content>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    thinking: Option<Value>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    content: Content,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a string or an array of content blocks"
)]
enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

fn invalid(message: impl Into<String>, param: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some(param.into()))
}

/// Parses a Messages API body. Every failure is a 400 naming the field.
pub fn parse_messages_request(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(format!("the request body is not valid JSON ({e})"), None)
    })?;
    if !value.is_object() {
        return Err(GatewayError::invalid(
            "the request body must be a JSON object with `model`, `max_tokens` and `messages`",
            None,
        ));
    }
    let raw: RawRequest = serde_path_to_error::deserialize(&value).map_err(|e| {
        let FieldError { param, message } = fields::describe(&e, &value);
        GatewayError::invalid(message, param)
    })?;
    for (field, present) in [
        ("tools", raw.tools.is_some()),
        ("tool_choice", raw.tool_choice.is_some()),
        ("thinking", raw.thinking.is_some()),
        ("top_k", raw.top_k.is_some()),
    ] {
        if present {
            return Err(invalid(
                format!("`{field}` is not supported by this gateway's Messages API yet"),
                field,
            ));
        }
    }
    if raw.max_tokens < 1 {
        return Err(invalid("`max_tokens` must be at least 1", "max_tokens"));
    }
    if raw.temperature.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return Err(invalid(
            "`temperature` must be between 0 and 1",
            "temperature",
        ));
    }
    let mut messages = Vec::with_capacity(raw.messages.len() + 1);
    if let Some(system) = raw.system {
        messages.push(json!({"role": "system", "content": text_of(system, "system")?}));
    }
    for (i, message) in raw.messages.into_iter().enumerate() {
        if !matches!(message.role.as_str(), "user" | "assistant") {
            return Err(invalid(
                "`role` must be `user` or `assistant` (the system prompt goes in `system`)",
                format!("messages[{i}].role"),
            ));
        }
        let content = text_of(message.content, &format!("messages[{i}].content"))?;
        messages.push(json!({"role": message.role, "content": content}));
    }
    let stream = raw.stream.unwrap_or(false);
    let mut chat = json!({
        "model": raw.model,
        "messages": messages,
        "max_tokens": raw.max_tokens,
        "stream": stream,
    });
    let optional = [
        ("temperature", raw.temperature.map(Value::from)),
        ("top_p", raw.top_p.map(Value::from)),
        ("stop", raw.stop_sequences.map(Value::from)),
        (
            "user",
            raw.metadata.and_then(|m| m.user_id).map(Value::from),
        ),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            chat[key] = value;
        }
    }
    let body = serde_json::to_vec(&chat).map_err(GatewayError::internal)?;
    parse_chat_request(&body).map_err(anthropic_names)
}

/// The text of a string or of text blocks; any other block is refused by name.
fn text_of(content: Content, param: &str) -> Result<String, GatewayError> {
    match content {
        Content::Text(text) => Ok(text),
        Content::Blocks(blocks) => {
            let mut text = Vec::with_capacity(blocks.len());
            for (j, block) in blocks.into_iter().enumerate() {
                match (block.kind.as_str(), block.text) {
                    ("text", Some(t)) => text.push(t),
                    ("text", None) => {
                        return Err(invalid(
                            "a `text` block needs its `text`",
                            format!("{param}[{j}].text"),
                        ));
                    }
                    (kind, _) => {
                        return Err(invalid(
                            format!(
                                "`{kind}` content blocks are not supported by this gateway's Messages API yet"
                            ),
                            format!("{param}[{j}].type"),
                        ));
                    }
                }
            }
            Ok(text.join("\n\n"))
        }
    }
}

/// A refusal from the shared validation, with the fields named as the client sent them.
fn anthropic_names(err: GatewayError) -> GatewayError {
    match err {
        GatewayError::InvalidRequest { message, param } => {
            let param = param.map(|p| match p.as_str() {
                "stop" => "stop_sequences".to_owned(),
                "user" => "metadata.user_id".to_owned(),
                _ => p,
            });
            GatewayError::InvalidRequest {
                message: message
                    .replace("`stop`", "`stop_sequences`")
                    .replace("`user`", "`metadata.user_id`"),
                param,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::chat::Role;

    fn parse(body: Value) -> Result<ChatRequest, GatewayError> {
        parse_messages_request(body.to_string().as_bytes())
    }

    fn refused_param(body: Value) -> Option<String> {
        match parse(body).unwrap_err() {
            GatewayError::InvalidRequest { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_messages_body_becomes_the_chat_request_it_means() {
        let request = parse(json!({
            "model": "claude-haiku",
            "max_tokens": 256,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
                {"role": "user", "content": [{"type": "text", "text": "Part one"}, {"type": "text", "text": "part two"}]}
            ],
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "metadata": {"user_id": "end-user-7"},
            "stream": true
        }))
        .unwrap();
        assert_eq!(request.model, "claude-haiku");
        assert_eq!(request.max_tokens, Some(256));
        let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(request.messages[0].content, "Be brief.");
        assert_eq!(request.messages[3].content, "Part one\n\npart two");
        assert_eq!(request.stop, ["END"]);
        assert_eq!(request.user.as_deref(), Some("end-user-7"));
        assert!(request.stream);
    }

    #[test]
    fn what_the_gateway_cannot_carry_yet_is_refused_naming_the_field() {
        let base = || json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
        let with = |key: &str, value: Value| {
            let mut body = base();
            body[key] = value;
            body
        };
        assert_eq!(
            refused_param(with("tools", json!([]))),
            Some("tools".into())
        );
        assert_eq!(refused_param(with("top_k", json!(5))), Some("top_k".into()));
        assert_eq!(
            refused_param(with("max_tokens", json!(0))),
            Some("max_tokens".into())
        );
        assert_eq!(
            refused_param(with("temperature", json!(1.5))),
            Some("temperature".into())
        );
        let image = json!([{"role": "user", "content": [{"type": "image", "source": {}}]}]);
        assert_eq!(
            refused_param(with("messages", image)),
            Some("messages[0].content[0].type".into())
        );
        let system_turn = json!([{"role": "system", "content": "x"}]);
        assert_eq!(
            refused_param(with("messages", system_turn)),
            Some("messages[0].role".into())
        );
        let mut no_cap = base();
        no_cap.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(refused_param(no_cap), Some("max_tokens".into()));
        assert_eq!(
            refused_param(with("stop_sequences", json!(["a", "b", "c", "d", "e"]))),
            Some("stop_sequences".into())
        );
    }
}
