//! The OpenAI Chat Completions wire format, as the stand-in speaks it.

use axum::http::HeaderMap;
use serde_json::{Value, json};
use tollgate::domain::usage::TokenUsage;

use super::{ReplyContext, deltas, unix_now};

/// The checks OpenAI makes before anything else: a bearer key and a well-formed body.
pub(super) fn check(headers: &HeaderMap, body: &Value) -> Result<(), (u16, String)> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if key.trim().is_empty() {
        return Err((
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).".into(),
        ));
    }
    if !body.is_object() {
        return Err((
            400,
            "We could not parse the JSON body of your request.".into(),
        ));
    }
    if !body["model"].is_string() {
        return Err((400, "you must provide a model parameter".into()));
    }
    let Some(messages) = body["messages"].as_array() else {
        return Err((400, "Missing required parameter: 'messages'.".into()));
    };
    if messages.is_empty() {
        return Err((400, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.".into()));
    }
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
            return Err((
                400,
                format!(
                    "Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'. (messages[{i}].role)"
                ),
            ));
        }
    }
    check_tool_messages(messages)?;
    check_parts(messages)?;
    if !body["stream_options"].is_null() && body["stream"] != Value::Bool(true) {
        return Err((
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.".into(),
        ));
    }
    check_response_format(body, messages)
}

/// Content arrays as Chat Completions checks them: `text` parts with text, `image_url` parts
/// (user messages only) with a `data:image/...;base64,` or `https` URL.
fn check_parts(messages: &[Value]) -> Result<(), (u16, String)> {
    for (i, message) in messages.iter().enumerate() {
        for (j, part) in message["content"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let ok = match part["type"].as_str() {
                Some("text") => part["text"].is_string(),
                Some("image_url") => {
                    let url = part["image_url"]["url"].as_str().unwrap_or_default();
                    message["role"] == "user"
                        && (url.starts_with("data:image/") && url.contains(";base64,")
                            || url.starts_with("https://"))
                }
                _ => false,
            };
            if !ok {
                return Err((
                    400,
                    format!("Invalid content part. (messages[{i}].content[{j}])"),
                ));
            }
        }
    }
    Ok(())
}

/// As Chat Completions checks a tool loop: an assistant message's `tool_calls` must be
/// answered by `tool` messages right after it, and a `tool` message must answer one of them.
fn check_tool_messages(messages: &[Value]) -> Result<(), (u16, String)> {
    let mut open: Vec<&str> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        if message["role"] == "tool" {
            let id = message["tool_call_id"].as_str().unwrap_or_default();
            let Some(at) = open.iter().position(|o| *o == id) else {
                return Err((
                    400,
                    format!(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'. (messages[{i}])"
                    ),
                ));
            };
            open.remove(at);
            continue;
        }
        if !open.is_empty() {
            return Err((400, "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'.".into()));
        }
        open = message["tool_calls"]
            .as_array()
            .map(|calls| calls.iter().filter_map(|c| c["id"].as_str()).collect())
            .unwrap_or_default();
    }
    Ok(())
}

/// `response_format` as Chat Completions validates it, including the rule that `json_object`
/// needs the word "json" somewhere in the messages.
fn check_response_format(body: &Value, messages: &[Value]) -> Result<(), (u16, String)> {
    let format = &body["response_format"];
    if format.is_null() {
        return Ok(());
    }
    match format["type"].as_str() {
        Some("text") => Ok(()),
        Some("json_object") => {
            let mentions_json = messages.iter().any(|m| {
                m["content"]
                    .as_str()
                    .is_some_and(|c| c.to_ascii_lowercase().contains("json"))
            });
            if mentions_json {
                Ok(())
            } else {
                Err((
                    400,
                    "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.".into(),
                ))
            }
        }
        Some("json_schema") => {
            let spec = &format["json_schema"];
            let name = spec["name"].as_str().unwrap_or_default();
            if name.is_empty() {
                return Err((
                    400,
                    "Missing required parameter: 'response_format.json_schema.name'.".into(),
                ));
            }
            let name_ok = name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !name_ok {
                return Err((
                    400,
                    format!(
                        "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'. ({name})"
                    ),
                ));
            }
            if !spec["schema"].is_null() && !spec["schema"].is_object() {
                return Err((
                    400,
                    "Invalid type for 'response_format.json_schema.schema': expected an object."
                        .into(),
                ));
            }
            Ok(())
        }
        other => Err((
            400,
            format!(
                "Invalid value: '{}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
                other.unwrap_or_default()
            ),
        )),
    }
}

fn usage(usage: TokenUsage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// The reply's tool calls in OpenAI's shape (arguments as JSON text).
fn tool_calls(cx: &ReplyContext<'_>) -> Value {
    cx.calls
        .iter()
        .enumerate()
        .map(|(i, (name, arguments))| {
            json!({"id": format!("call_standin{i}"), "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()}})
        })
        .collect()
}

pub(super) fn reply_json(cx: &ReplyContext<'_>) -> Value {
    if !cx.calls.is_empty() {
        let content = if cx.text.is_empty() {
            Value::Null
        } else {
            json!(cx.text)
        };
        return json!({
            "id": cx.id,
            "object": "chat.completion",
            "created": unix_now(),
            "model": cx.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": null,
                    "annotations": [], "tool_calls": tool_calls(cx)},
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": usage(cx.usage),
            "service_tier": "default",
            "system_fingerprint": "fp_standin"
        });
    }
    json!({
        "id": cx.id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": cx.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": cx.text, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": usage(cx.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_standin"
    })
}

/// `data:` events: a role chunk, one chunk per word, a finish chunk, the usage chunk when it
/// was asked for, and `[DONE]`.
pub(super) fn stream_events(cx: &ReplyContext<'_>) -> Vec<String> {
    let created = unix_now();
    let chunk = |delta: Value, finish_reason: Value| {
        json!({
            "id": cx.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": cx.model,
            "service_tier": "default",
            "system_fingerprint": "fp_standin",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
            "usage": null
        })
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    chunks.extend(
        deltas(cx.text)
            .into_iter()
            .map(|text| chunk(json!({"content": text}), Value::Null)),
    );
    // Each call: its id, type and name with empty arguments, then the arguments in pieces.
    for (i, (name, arguments)) in cx.calls.iter().enumerate() {
        chunks.push(chunk(
            json!({"tool_calls": [{"index": i, "id": format!("call_standin{i}"), "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in deltas(&arguments.to_string()) {
            chunks.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    let finish = if cx.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    chunks.push(chunk(json!({}), json!(finish)));
    if cx.include_usage {
        chunks.push(json!({
            "id": cx.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": cx.model,
            "service_tier": "default",
            "system_fingerprint": "fp_standin",
            "choices": [],
            "usage": usage(cx.usage)
        }));
    }
    chunks
        .into_iter()
        .map(|c| format!("data: {c}\n\n"))
        .chain(std::iter::once("data: [DONE]\n\n".to_owned()))
        .collect()
}

pub(super) fn canned_message(status: u16) -> &'static str {
    match status {
        400 => "Invalid request.",
        401 => {
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
        }
        403 => "You are not allowed to sample from this model",
        404 => "The model `unknown` does not exist or you do not have access to it.",
        429 => {
            "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again later."
        }
        503 => "The engine is currently overloaded, please try again later",
        _ => "The server had an error while processing your request. Sorry about that!",
    }
}

pub(super) fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", json!("invalid_api_key")),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("requests", json!("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", Value::Null),
        _ => ("server_error", Value::Null),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}
