//! The Anthropic Messages wire format, as the stand-in speaks it.

use axum::http::HeaderMap;
use serde_json::{Value, json};
use tollgate::domain::usage::TokenUsage;

use super::{ReplyContext, deltas};

/// The checks Anthropic makes before anything else: key and version headers, and the
/// required body fields.
pub(super) fn check(headers: &HeaderMap, body: &Value) -> Result<(), (u16, String)> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    if header("x-api-key").trim().is_empty() {
        return Err((401, "x-api-key header is required".into()));
    }
    if header("anthropic-version").is_empty() {
        return Err((400, "anthropic-version: header is required".into()));
    }
    if !body.is_object() {
        return Err((400, "Invalid JSON body".into()));
    }
    if !body["model"].is_string() {
        return Err((400, "model: Field required".into()));
    }
    if !body["max_tokens"].is_u64() {
        return Err((400, "max_tokens: Field required".into()));
    }
    let Some(messages) = body["messages"].as_array() else {
        return Err((400, "messages: Field required".into()));
    };
    if messages.is_empty() {
        return Err((400, "messages: at least one message is required".into()));
    }
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if !matches!(role, "user" | "assistant") {
            return Err((
                400,
                format!("messages.{i}.role: Input should be 'user' or 'assistant'"),
            ));
        }
    }
    check_tool_turns(messages)?;
    check_images(messages)?;
    let breakpoints = body.to_string().matches("\"cache_control\"").count();
    if breakpoints > 4 {
        return Err((
            400,
            format!(
                "A maximum of 4 blocks with cache_control may be provided. Found {breakpoints}."
            ),
        ));
    }
    match &body["system"] {
        Value::Null | Value::String(_) => {}
        Value::Array(blocks)
            if blocks
                .iter()
                .all(|b| b["type"] == "text" && b["text"].is_string()) => {}
        _ => {
            return Err((
                400,
                "system: Input should be a valid string or a list of text blocks".into(),
            ));
        }
    }
    for field in [
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "stream_options",
        "response_format",
    ] {
        if !body[field].is_null() {
            return Err((400, format!("{field}: Extra inputs are not permitted")));
        }
    }
    check_tools(body)
}

/// Image blocks as the Messages API checks them: a `base64` source of a supported media
/// type whose data decodes, or a `url` source.
fn check_images(messages: &[Value]) -> Result<(), (u16, String)> {
    use base64::Engine;
    for (i, message) in messages.iter().enumerate() {
        for (j, block) in message["content"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if block["type"] != "image" {
                continue;
            }
            let source = &block["source"];
            let ok = match source["type"].as_str() {
                Some("base64") => {
                    matches!(
                        source["media_type"].as_str(),
                        Some("image/png" | "image/jpeg" | "image/gif" | "image/webp")
                    ) && source["data"].as_str().is_some_and(|d| {
                        base64::engine::general_purpose::STANDARD.decode(d).is_ok()
                    })
                }
                Some("url") => source["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("https://")),
                _ => false,
            };
            if !ok {
                return Err((
                    400,
                    format!("messages.{i}.content.{j}.image.source: invalid image source"),
                ));
            }
        }
    }
    Ok(())
}

/// As the Messages API checks a tool loop: every `tool_use` block of an assistant turn has a
/// `tool_result` in the user turn right after it, and those results come first in that turn.
fn check_tool_turns(messages: &[Value]) -> Result<(), (u16, String)> {
    let blocks = |m: &Value| m["content"].as_array().cloned().unwrap_or_default();
    for (i, message) in messages.iter().enumerate() {
        let uses: Vec<String> = blocks(message)
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .filter_map(|b| b["id"].as_str().map(str::to_owned))
            .collect();
        if message["role"] == "assistant" && !uses.is_empty() {
            let next = messages.get(i + 1).map(blocks).unwrap_or_default();
            let results: Vec<&Value> = next
                .iter()
                .take_while(|b| b["type"] == "tool_result")
                .collect();
            for id in &uses {
                if !results.iter().any(|r| r["tool_use_id"] == id.as_str()) {
                    return Err((
                        400,
                        format!(
                            "messages.{}: `tool_use` ids were found without `tool_result` blocks immediately after: {id}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                            i + 1
                        ),
                    ));
                }
            }
        }
        for (j, block) in blocks(message).iter().enumerate() {
            if block["type"] == "tool_result" {
                let previous = i
                    .checked_sub(1)
                    .map(|p| blocks(&messages[p]))
                    .unwrap_or_default();
                let known = previous
                    .iter()
                    .any(|b| b["type"] == "tool_use" && b["id"] == block["tool_use_id"]);
                if message["role"] != "user" || !known {
                    return Err((
                        400,
                        format!(
                            "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `tools` and `tool_choice` as the Messages API validates them: tool names of 1-64
/// characters of `[a-zA-Z0-9_-]`, an object `input_schema` of type `object`, and a
/// `tool_choice` of type `tool` naming one of the tools.
fn check_tools(body: &Value) -> Result<(), (u16, String)> {
    let tools = match &body["tools"] {
        Value::Null => &[][..],
        Value::Array(tools) => tools.as_slice(),
        _ => return Err((400, "tools: Input should be a valid list".into())),
    };
    for (i, tool) in tools.iter().enumerate() {
        let name = tool["name"].as_str().unwrap_or_default();
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err((
                400,
                format!(
                    "tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                ),
            ));
        }
        if tool["input_schema"]["type"] != "object" {
            return Err((
                400,
                format!("tools.{i}.custom.input_schema.type: Input should be 'object'"),
            ));
        }
    }
    match body["tool_choice"]["type"].as_str() {
        None if body["tool_choice"].is_null() => Ok(()),
        Some("auto" | "any" | "none") => Ok(()),
        Some("tool") => {
            let name = body["tool_choice"]["name"].as_str().unwrap_or_default();
            if tools.iter().any(|t| t["name"] == name) {
                Ok(())
            } else {
                Err((
                    400,
                    format!("tool_choice.name: Tool '{name}' not found in provided tools"),
                ))
            }
        }
        _ => Err((
            400,
            "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'".into(),
        )),
    }
}

/// The reply text as the forced tool's input, when there is a forced tool and the text is a
/// JSON object (the API's tool inputs are always objects).
fn tool_input<'a>(cx: &ReplyContext<'a>) -> Option<(&'a str, Value)> {
    let name = cx.forced_tool?;
    let input: Value = serde_json::from_str(cx.text).ok()?;
    input.is_object().then_some((name, input))
}

/// Anthropic's `input_tokens` counts only what was neither read from nor written to the cache.
fn usage(usage: TokenUsage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": usage
            .prompt_tokens
            .saturating_sub(usage.cached_tokens + usage.cache_write_tokens),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": output_tokens,
        "service_tier": "standard"
    })
}

/// The reply's `tool_use` blocks, after its text (if any).
fn call_blocks(cx: &ReplyContext<'_>) -> Value {
    let text = (!cx.text.is_empty()).then(|| json!({"type": "text", "text": cx.text}));
    text.into_iter()
        .chain(cx.calls.iter().enumerate().map(|(i, (name, input))| {
            json!({"type": "tool_use", "id": format!("toolu_standin{i}"), "name": name, "input": input})
        }))
        .collect()
}

pub(super) fn reply_json(cx: &ReplyContext<'_>) -> Value {
    let (content, stop_reason) = match tool_input(cx) {
        _ if !cx.calls.is_empty() => (call_blocks(cx), "tool_use"),
        Some((name, input)) => (
            json!([{"type": "tool_use", "id": format!("toolu_{}", cx.id), "name": name, "input": input}]),
            "tool_use",
        ),
        None => (json!([{"type": "text", "text": cx.text}]), "end_turn"),
    };
    json!({
        "id": cx.id,
        "type": "message",
        "role": "assistant",
        "model": cx.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage(cx.usage, cx.usage.completion_tokens)
    })
}

/// Named events: `message_start` (input usage), a text block streamed a word at a time with a
/// `ping` in it, `message_delta` (stop reason, cumulative output tokens), `message_stop`.
/// A forced tool's reply is a `tool_use` block instead: its start (with an empty `input`), an
/// empty `input_json_delta`, then the input JSON in word-sized `partial_json` fragments.
pub(super) fn stream_events(cx: &ReplyContext<'_>) -> Vec<String> {
    let tool = tool_input(cx);
    let mut events = vec![(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": cx.id, "type": "message", "role": "assistant", "content": [],
            "model": cx.model, "stop_reason": null, "stop_sequence": null,
            "usage": usage(cx.usage, 1)
        }}),
    )];
    let stop_reason = match &tool {
        _ if !cx.calls.is_empty() => {
            let mut index = 0;
            if !cx.text.is_empty() {
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ));
                events.extend(deltas(cx.text).into_iter().map(|text| {
                    (
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
                    )
                }));
                events.push((
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ));
                index = 1;
            }
            for (i, (name, input)) in cx.calls.iter().enumerate() {
                let block = index + i;
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": block, "content_block": {
                        "type": "tool_use", "id": format!("toolu_standin{i}"), "name": name, "input": {}
                    }}),
                ));
                events.extend(deltas(&input.to_string()).into_iter().map(|fragment| {
                    (
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
                    )
                }));
                if i + 1 < cx.calls.len() {
                    events.push((
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": block}),
                    ));
                }
            }
            "tool_use"
        }
        Some((name, _)) => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {
                    "type": "tool_use", "id": format!("toolu_{}", cx.id), "name": name, "input": {}
                }}),
            ));
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ));
            events.push(("ping", json!({"type": "ping"})));
            events.extend(deltas(cx.text).into_iter().map(|fragment| {
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
                )
            }));
            "tool_use"
        }
        None => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            events.push(("ping", json!({"type": "ping"})));
            events.extend(deltas(cx.text).into_iter().map(|text| {
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
                )
            }));
            "end_turn"
        }
    };
    let last_block = match cx.calls.len() {
        0 => 0,
        n => n - 1 + usize::from(!cx.text.is_empty()),
    };
    events.extend([
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": last_block}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": cx.usage.completion_tokens}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    events
        .into_iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

pub(super) fn canned_message(status: u16) -> &'static str {
    match status {
        400 => "Invalid request.",
        401 => "invalid x-api-key",
        403 => "Your API key does not have permission to use the specified resource.",
        404 => "model: not found",
        413 => "Request exceeds the maximum allowed number of bytes.",
        429 => "Number of request tokens has exceeded your per-minute rate limit.",
        529 => "Overloaded",
        _ => "Internal server error",
    }
}

pub(super) fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_standin"
    })
}
