//! `POST /v1/messages`: Anthropic's Messages API request, parsed into the gateway's
//! [`ChatRequest`].
//!
//! The body is checked for what is Anthropic's own (`max_tokens` required, `system` as a
//! string or text blocks, `user`/`assistant` turns, text content blocks, `stop_sequences`,
//! `metadata.user_id`, `temperature` up to 1), then translated into the Chat Completions body
//! it means and validated by [`parse_chat_request`], so both APIs share one set of bounds.
//! `cache_control` on a block is kept: it marks the translated message (or tool), and an
//! Anthropic route gets it back on that message's last block (at most three; the gateway
//! places its own on the tenant prompt).
//!
//! Tools translate to Chat Completions' terms: each custom tool to a function (its
//! `input_schema` as `parameters`), `tool_choice` `auto`/`any`/`tool`/`none` to
//! `auto`/`required`/a function/`none` (`disable_parallel_tool_use` to `parallel_tool_calls:
//! false`), an assistant turn's `tool_use` blocks to its `tool_calls`, and a user turn's
//! `tool_result` blocks to `tool` messages before the turn's text. A result with `is_error`
//! reaches the model with its text prefixed `Error: ` (Chat Completions has no such flag).
//! Refusals from the shared validation name the field as this API spells it.
//!
//! Image blocks in user turns become `image_url` parts (a base64 source as a `data:` URL), so
//! they are checked and reserved like any image. Documents, server tools and extended thinking
//! are refused with a 400 naming the field.

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
    tools: Option<Vec<Value>>,
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
    /// `tool_use`: the call's id, name and input.
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    input: Option<Value>,
    /// `tool_result`: the call it answers, its content (a string or text blocks) and whether
    /// the tool failed.
    #[serde(default)]
    tool_use_id: Option<Value>,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    is_error: Option<bool>,
    /// `image`: its source.
    #[serde(default)]
    source: Option<Value>,
    /// A prompt-cache breakpoint after this block.
    #[serde(default)]
    cache_control: Option<Value>,
}

/// The last `cache_control` among `blocks`: it marks the translated message.
fn marker(content: &Content) -> Option<Value> {
    match content {
        Content::Text(_) => None,
        Content::Blocks(blocks) => blocks.iter().rev().find_map(|b| b.cache_control.clone()),
    }
}

/// `message` with the breakpoint `marker` (if any), in the Chat Completions extension shape.
fn marked(mut message: Value, marker: Option<Value>) -> Value {
    if let Some(marker) = marker {
        message["cache_control"] = marker;
    }
    message
}

fn invalid(message: impl Into<String>, param: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some(param.into()))
}

/// Parses a `POST /v1/messages/count_tokens` body: a Messages body without `max_tokens` (or
/// `stream`, which counting ignores).
pub fn parse_count_tokens_request(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    let mut value = json_body(body)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("max_tokens".into(), Value::from(1));
        object.remove("stream");
    }
    parse_messages_value(value)
}

fn json_body(body: &[u8]) -> Result<Value, GatewayError> {
    serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(format!("the request body is not valid JSON ({e})"), None)
    })
}

/// Parses a Messages API body. Every failure is a 400 naming the field.
pub fn parse_messages_request(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    parse_messages_value(json_body(body)?)
}

fn parse_messages_value(value: Value) -> Result<ChatRequest, GatewayError> {
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
    let mut turns = Turns::default();
    if let Some(system) = raw.system {
        let mark = marker(&system);
        let text = text_of(system, "system")?;
        turns.push(
            marked(json!({"role": "system", "content": text}), mark),
            "system",
        );
    }
    for (i, message) in raw.messages.into_iter().enumerate() {
        let param = format!("messages[{i}]");
        match (message.role.as_str(), message.content) {
            ("user" | "assistant", Content::Text(text)) => {
                turns.push(json!({"role": message.role, "content": text}), &param);
            }
            ("assistant", Content::Blocks(blocks)) => assistant_turn(&mut turns, blocks, &param)?,
            ("user", Content::Blocks(blocks)) => user_turn(&mut turns, blocks, &param)?,
            _ => {
                return Err(invalid(
                    "`role` must be `user` or `assistant` (the system prompt goes in `system`)",
                    format!("{param}.role"),
                ));
            }
        }
    }
    let stream = raw.stream.unwrap_or(false);
    let mut chat = json!({
        "model": raw.model,
        "messages": turns.messages,
        "max_tokens": raw.max_tokens,
        "stream": stream,
    });
    if let Some(tools) = raw.tools {
        chat["tools"] = Value::Array(
            tools
                .into_iter()
                .enumerate()
                .map(|(i, tool)| function_tool(i, tool))
                .collect::<Result<_, _>>()?,
        );
    }
    if let Some(choice) = raw.tool_choice {
        let (choice, parallel) = tool_choice(&choice)?;
        chat["tool_choice"] = choice;
        if let Some(parallel) = parallel {
            chat["parallel_tool_calls"] = Value::Bool(parallel);
        }
    }
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
    parse_chat_request(&body).map_err(|err| anthropic_names(err, &turns.origins))
}

/// The Chat Completions messages a body translates to, and the field each came from.
#[derive(Default)]
struct Turns {
    messages: Vec<Value>,
    /// `system` or `messages[i]`, per message.
    origins: Vec<String>,
}

impl Turns {
    fn push(&mut self, message: Value, origin: &str) {
        self.messages.push(message);
        self.origins.push(origin.to_owned());
    }
}

/// An assistant turn of blocks: its text, and its `tool_use` blocks as `tool_calls`.
fn assistant_turn(turns: &mut Turns, blocks: Vec<Block>, param: &str) -> Result<(), GatewayError> {
    let mut text = Vec::new();
    let mut calls = Vec::new();
    let mut mark = None;
    for (j, block) in blocks.into_iter().enumerate() {
        mark = block.cache_control.clone().or(mark);
        let at = format!("{param}.content[{j}]");
        match block.kind.as_str() {
            "text" => text.push(block_text(block.text, &at)?),
            "tool_use" => {
                let input = match block.input {
                    Some(input @ Value::Object(_)) => input,
                    _ => {
                        return Err(invalid(
                            "a `tool_use` block's `input` must be an object",
                            format!("{at}.input"),
                        ));
                    }
                };
                calls.push(json!({
                    "id": block.id.unwrap_or(Value::Null),
                    "type": "function",
                    "function": {"name": block.name.unwrap_or(Value::Null), "arguments": input.to_string()},
                }));
            }
            kind => return Err(unsupported_block(kind, &at)),
        }
    }
    let mut message = json!({"role": "assistant", "content": text.join("\n\n")});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    turns.push(marked(message, mark), param);
    Ok(())
}

/// A user turn of blocks: a `tool` message per `tool_result` (in order), then its text and
/// images (as `image_url` parts when there are images).
fn user_turn(turns: &mut Turns, blocks: Vec<Block>, param: &str) -> Result<(), GatewayError> {
    let mut text = Vec::new();
    let mut parts = Vec::new();
    let mut mark = None;
    for (j, block) in blocks.into_iter().enumerate() {
        let at = format!("{param}.content[{j}]");
        if block.kind != "tool_result" {
            mark = block.cache_control.clone().or(mark);
        }
        match block.kind.as_str() {
            "text" => {
                let t = block_text(block.text, &at)?;
                parts.push(json!({"type": "text", "text": t}));
                text.push(t);
            }
            "image" => parts.push(image_part(block.source, &at)?),
            "tool_result" => {
                let mut content = match block.content {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s,
                    Some(Value::Array(parts)) => {
                        let blocks: Vec<Block> = serde_json::from_value(Value::Array(parts))
                            .map_err(|_| {
                                invalid(
                                    "a `tool_result` block's `content` must be a string or text blocks",
                                    format!("{at}.content"),
                                )
                            })?;
                        text_of(Content::Blocks(blocks), &format!("{at}.content"))?
                    }
                    Some(_) => {
                        return Err(invalid(
                            "a `tool_result` block's `content` must be a string or text blocks",
                            format!("{at}.content"),
                        ));
                    }
                };
                if block.is_error == Some(true) {
                    content.insert_str(0, "Error: ");
                }
                turns.push(
                    marked(
                        json!({"role": "tool", "tool_call_id": block.tool_use_id.unwrap_or(Value::Null), "content": content}),
                        block.cache_control,
                    ),
                    param,
                );
            }
            kind => return Err(unsupported_block(kind, &at)),
        }
    }
    if parts.len() > text.len() {
        turns.push(
            marked(json!({"role": "user", "content": parts}), mark),
            param,
        );
    } else if !text.is_empty() {
        turns.push(
            marked(json!({"role": "user", "content": text.join("\n\n")}), mark),
            param,
        );
    }
    Ok(())
}

/// An `image` block as an `image_url` part: a base64 source as a `data:` URL, a URL source as
/// itself. The shared parser checks the type, data, size and dimensions.
fn image_part(source: Option<Value>, at: &str) -> Result<Value, GatewayError> {
    let source = source.unwrap_or(Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => match (
            source.get("media_type").and_then(Value::as_str),
            source.get("data").and_then(Value::as_str),
        ) {
            (Some(media_type), Some(data)) => format!("data:{media_type};base64,{data}"),
            _ => {
                return Err(invalid(
                    "a base64 image source needs `media_type` and `data`",
                    format!("{at}.source"),
                ));
            }
        },
        Some("url") => match source.get("url").and_then(Value::as_str) {
            Some(url) => url.to_owned(),
            None => {
                return Err(invalid(
                    "a url image source needs its `url`",
                    format!("{at}.source.url"),
                ));
            }
        },
        _ => {
            return Err(invalid(
                "an image's `source.type` must be `base64` or `url`",
                format!("{at}.source.type"),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn block_text(text: Option<String>, at: &str) -> Result<String, GatewayError> {
    text.ok_or_else(|| invalid("a `text` block needs its `text`", format!("{at}.text")))
}

fn unsupported_block(kind: &str, at: &str) -> GatewayError {
    invalid(
        format!("`{kind}` content blocks are not supported by this gateway's Messages API yet"),
        format!("{at}.type"),
    )
}

/// A custom tool as a Chat Completions function; server tools are refused.
fn function_tool(i: usize, tool: Value) -> Result<Value, GatewayError> {
    let Value::Object(tool) = tool else {
        return Err(invalid(
            "a tool must be an object with `name` and `input_schema`",
            format!("tools[{i}]"),
        ));
    };
    match tool.get("type").and_then(Value::as_str) {
        None | Some("custom") => {}
        Some(_) => {
            return Err(invalid(
                "only custom tools (`name`, `description`, `input_schema`) are supported; Anthropic's server tools are not",
                format!("tools[{i}].type"),
            ));
        }
    }
    let Some(schema) = tool.get("input_schema") else {
        return Err(invalid(
            "`input_schema` is required",
            format!("tools[{i}].input_schema"),
        ));
    };
    let mut function =
        json!({"name": tool.get("name").cloned().unwrap_or(Value::Null), "parameters": schema});
    if let Some(description) = tool.get("description") {
        function["description"] = description.clone();
    }
    let openai = json!({"type": "function", "function": function});
    Ok(marked(openai, tool.get("cache_control").cloned()))
}

/// `tool_choice` as Chat Completions' choice, and `parallel_tool_calls` when it says.
fn tool_choice(choice: &Value) -> Result<(Value, Option<bool>), GatewayError> {
    let parallel = match choice.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(disable)) => Some(!disable),
        Some(_) => {
            return Err(invalid(
                "`tool_choice.disable_parallel_tool_use` must be a boolean",
                "tool_choice.disable_parallel_tool_use",
            ));
        }
    };
    let openai = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match choice.get("name") {
            Some(name @ Value::String(_)) => {
                json!({"type": "function", "function": {"name": name}})
            }
            _ => {
                return Err(invalid(
                    "`tool_choice.name` is required with type `tool`",
                    "tool_choice.name",
                ));
            }
        },
        _ => {
            return Err(invalid(
                "`tool_choice.type` must be `auto`, `any`, `tool` or `none`",
                "tool_choice.type",
            ));
        }
    };
    Ok((openai, parallel))
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

/// A refusal from the shared validation, with the fields named as the client sent them:
/// `origins` maps each translated message back to the field it came from (`system` or
/// `messages[i]`; a refusal inside a translated message names the message).
fn anthropic_names(err: GatewayError, origins: &[String]) -> GatewayError {
    const TOOL_RENAMES: [(&str, &str); 3] = [
        (".function.parameters", ".input_schema"),
        (".function.description", ".description"),
        (".function.name", ".name"),
    ];
    let GatewayError::InvalidRequest { message, param } = err else {
        return err;
    };
    let param = param.map(|p| match p.as_str() {
        "stop" => "stop_sequences".to_owned(),
        "user" => "metadata.user_id".to_owned(),
        _ if p.starts_with("messages[") => {
            let origin = p
                .strip_prefix("messages[")
                .and_then(|rest| rest.split_once(']'))
                .and_then(|(k, _)| k.parse::<usize>().ok())
                .and_then(|k| origins.get(k));
            origin.cloned().unwrap_or(p)
        }
        _ if p.starts_with("tools[") => TOOL_RENAMES
            .iter()
            .fold(p, |p, (old, new)| p.replace(old, new)),
        _ => p,
    });
    let mut message = remap_message_indexes(&message, origins)
        .replace("`stop`", "`stop_sequences`")
        .replace("`user`", "`metadata.user_id`");
    for (old, new) in TOOL_RENAMES {
        message = message.replace(old, new);
    }
    GatewayError::InvalidRequest { message, param }
}

/// `messages[k]` in a message, as the field message `k` came from.
fn remap_message_indexes(message: &str, origins: &[String]) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("messages[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "messages[".len()..];
        match after.split_once(']') {
            Some((k, tail)) if k.bytes().all(|b| b.is_ascii_digit()) && !k.is_empty() => {
                match k.parse::<usize>().ok().and_then(|k| origins.get(k)) {
                    Some(origin) => out.push_str(origin),
                    None => {
                        out.push_str("messages[");
                        out.push_str(k);
                        out.push(']');
                    }
                }
                rest = tail;
            }
            _ => {
                out.push_str("messages[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
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
        assert_eq!(
            request.user.as_ref().map(|u| u.as_str()),
            Some("end-user-7")
        );
        assert!(request.stream);
    }

    #[test]
    fn a_tool_loop_becomes_tool_calls_and_tool_messages() {
        let request = parse(json!({
            "model": "m",
            "max_tokens": 100,
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}, "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "no data"}], "is_error": true},
                    {"type": "text", "text": "Summarize."}
                ]}
            ]
        }))
        .unwrap();
        assert_eq!(request.tools.definitions[0].name, "get_weather");
        assert_eq!(
            request.tools.definitions[0].description.as_deref(),
            Some("Weather")
        );
        assert_eq!(
            request.tools.choice,
            Some(crate::domain::tools::ToolChoice::Required)
        );
        assert_eq!(request.tools.parallel_calls, Some(false));
        let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool,
                Role::User
            ]
        );
        let assistant = &request.messages[1];
        assert_eq!(assistant.content, "Checking.");
        assert_eq!(assistant.tool_calls[1].id, "toolu_2");
        assert_eq!(assistant.tool_calls[1].arguments, r#"{"city":"Rome"}"#);
        assert_eq!(request.messages[2].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(request.messages[3].content, "Error: no data");
        assert_eq!(request.messages[4].content, "Summarize.");
    }

    #[test]
    fn refusals_inside_translated_turns_name_the_turn_as_sent() {
        // The result answers no call: the shared check refuses the translated tool message,
        // and the refusal names the Anthropic turn it came from.
        let err = parse(json!({
            "model": "m", "max_tokens": 10,
            "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "?"}]}
            ]
        }))
        .unwrap_err();
        let GatewayError::InvalidRequest { message, param } = err else {
            panic!("{err:?}")
        };
        assert_eq!(param.as_deref(), Some("messages[2]"));
        assert!(message.contains("`messages[2]`"), "{message}");
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
            refused_param(with(
                "tools",
                json!([{"type": "web_search_20250305", "name": "web_search"}])
            )),
            Some("tools[0].type".into())
        );
        assert_eq!(
            refused_param(with(
                "tools",
                json!([{"name": "has space", "input_schema": {"type": "object"}}])
            )),
            Some("tools[0].name".into())
        );
        assert_eq!(
            refused_param(with(
                "tools",
                json!([{"name": "f", "input_schema": {"type": "array"}}])
            )),
            Some("tools[0].input_schema".into())
        );
        assert_eq!(
            refused_param(with("tool_choice", json!({"type": "sometimes"}))),
            Some("tool_choice.type".into())
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
            Some("messages[0].content[0].source.type".into())
        );
        let document = json!([{"role": "user", "content": [{"type": "document", "source": {}}]}]);
        assert_eq!(
            refused_param(with("messages", document)),
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
