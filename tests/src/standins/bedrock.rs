//! Amazon Bedrock's Converse wire format, as the stand-in speaks it: `POST
//! /model/{modelId}/converse` (JSON) and `/converse-stream` (AWS's binary event stream,
//! framed by the SDK's own encoder, `aws-smithy-eventstream`, so the adapter's decoder is
//! checked against an independent implementation).
//!
//! Every request's SigV4 signature is computed again, with aws-sigv4, from what arrived: the
//! access key, service (`bedrock`), session token, each signed header, the path (the model id
//! percent-encoded as the SDK sends it) and the body. A request signed with other credentials,
//! or changed after signing, gets Bedrock's 403.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};
use tollgate::domain::usage::TokenUsage;

use super::{ReplyContext, deltas};

/// The credentials the stand-in accepts (temporary ones, as a Lambda role's are).
pub const ACCESS_KEY: &str = "ASIASTANDINBEDROCK01";
/// The secret half; never sent, only used to sign.
pub const SECRET_KEY: &str = "standin-bedrock-secret-key-do-not-log";
/// The session token that must come with them.
pub const SESSION_TOKEN: &str = "standin-bedrock-session-token";
/// The region the stand-in serves.
pub const REGION: &str = "us-east-1";

/// Credentials for the stand-in, as an SDK credentials provider would give them.
pub fn credentials() -> Credentials {
    Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        Some(SESSION_TOKEN.to_owned()),
        None,
        "standin",
    )
}

/// The model id and operation (`converse` or `converse-stream`) of a Converse path, the id
/// percent-decoded.
pub(super) fn route(path: &str) -> Option<(String, bool)> {
    let rest = path.strip_prefix("/model/")?;
    let (model, operation) = rest.rsplit_once('/')?;
    let stream = match operation {
        "converse" => false,
        "converse-stream" => true,
        _ => return None,
    };
    Some((percent_decode(model)?, stream))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `Credential=AKID/date/region/service/aws4_request, SignedHeaders=a;b, Signature=hex`.
fn field<'a>(authorization: &'a str, name: &str) -> Option<&'a str> {
    authorization
        .split([' ', ','])
        .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
}

/// Bedrock's checks, signature first (403 as Bedrock answers them), then the body's shape
/// (400 `ValidationException`).
pub(super) fn check(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    raw: &[u8],
    body: &Value,
) -> Result<(), (u16, String)> {
    check_signature(method, uri, headers, raw)?;
    check_body(body).map_err(|message| (400, message))
}

fn check_signature(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<(), (u16, String)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(authorization) = header("authorization") else {
        return Err((403, "Missing Authentication Token".into()));
    };
    let refused = |why: &str| Err((403, why.to_owned()));
    let credential = field(authorization, "Credential").unwrap_or_default();
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.first() != Some(&ACCESS_KEY) {
        return refused("The security token included in the request is invalid.");
    }
    if scope.get(3) != Some(&"bedrock") || scope.get(2) != Some(&REGION) {
        return refused("Credential should be scoped to a valid region and service bedrock.");
    }
    if header("x-amz-security-token") != Some(SESSION_TOKEN) {
        return refused("The security token included in the request is invalid.");
    }
    let Some(date) = header("x-amz-date") else {
        return refused("Missing x-amz-date");
    };
    let Ok(at) = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ") else {
        return refused("Invalid x-amz-date");
    };
    let signed: Vec<&str> = field(authorization, "SignedHeaders")
        .unwrap_or_default()
        .split(';')
        .collect();
    for required in ["host", "x-amz-date", "x-amz-security-token", "content-type"] {
        if !signed.contains(&required) {
            return refused(
                "The request signature we calculated does not match the signature you provided.",
            );
        }
    }
    let mut values = Vec::new();
    for name in &signed {
        match header(name) {
            Some(value) => values.push((*name, value)),
            None => return refused("a signed header is missing"),
        }
    }
    let identity: Identity = credentials().into();
    let Ok(params) = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("bedrock")
        .time(SystemTime::from(at.and_utc()))
        .settings(SigningSettings::default())
        .build()
    else {
        return refused("unsignable");
    };
    let url = format!("http://{}{}", header("host").unwrap_or_default(), uri);
    let request = SignableRequest::new(
        method.as_str(),
        url,
        values.into_iter(),
        SignableBody::Bytes(raw),
    )
    .map_err(|e| (403, e.to_string()))?;
    let (_, signature) = sign(request, &params.into())
        .map_err(|e| (403, e.to_string()))?
        .into_parts();
    if Some(signature.as_str()) != field(authorization, "Signature") {
        return refused(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        );
    }
    Ok(())
}

/// What Converse validates before calling the model: known top-level fields, alternating
/// user/assistant turns starting with the user, non-empty content blocks of known kinds, a
/// positive `maxTokens`, `toolConfig` whenever the conversation has tool blocks, a forced tool
/// that exists, and at most four cache points.
fn check_body(body: &Value) -> Result<(), String> {
    let Some(object) = body.as_object() else {
        return Err("Malformed input request, please reformat your input and try again.".into());
    };
    for key in object.keys() {
        if ![
            "messages",
            "system",
            "inferenceConfig",
            "toolConfig",
            "additionalModelRequestFields",
        ]
        .contains(&key.as_str())
        {
            return Err(format!("extraneous key [{key}] is not permitted"));
        }
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() {
        return Err("A conversation must start with a user message.".into());
    }
    let mut tool_blocks = false;
    for (i, message) in messages.iter().enumerate() {
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if message["role"] != expected {
            return Err("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".into());
        }
        let content = message["content"].as_array().cloned().unwrap_or_default();
        if content.is_empty() {
            return Err(format!(
                "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
            ));
        }
        for block in &content {
            let kind = block
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_default();
            match kind.as_str() {
                "text" if block["text"].as_str().is_some_and(|t| !t.is_empty()) => {}
                "text" => {
                    return Err(format!(
                        "The text field in the ContentBlock object at messages.{i} is blank."
                    ));
                }
                "image" => {
                    let format = block["image"]["format"].as_str().unwrap_or_default();
                    if !["png", "jpeg", "gif", "webp"].contains(&format)
                        || !block["image"]["source"]["bytes"].is_string()
                    {
                        return Err(format!("messages.{i}: invalid image block"));
                    }
                }
                "toolResult" => {
                    tool_blocks = true;
                    let blank = block["toolResult"]["content"]
                        .as_array()
                        .is_none_or(|c| c.is_empty() || c.iter().any(|b| b["text"] == ""));
                    if blank {
                        return Err(format!(
                            "messages.{i}: a toolResult's content is missing or blank"
                        ));
                    }
                }
                "toolUse" => tool_blocks = true,
                "cachePoint" => {}
                other => return Err(format!("messages.{i}: unknown content block {other}")),
            }
        }
    }
    if tool_blocks && body["toolConfig"].is_null() {
        return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into());
    }
    if body["inferenceConfig"]["maxTokens"]
        .as_u64()
        .is_some_and(|n| n == 0)
    {
        return Err("The maximum tokens you requested must be at least 1.".into());
    }
    if let Some(name) = body["toolConfig"]["toolChoice"]["tool"]["name"].as_str() {
        let tools = body["toolConfig"]["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !tools.iter().any(|t| t["toolSpec"]["name"] == name) {
            return Err(format!("The tool {name} was not found in the toolConfig."));
        }
    }
    let cache_points = body.to_string().matches("\"cachePoint\"").count();
    if cache_points > 4 {
        return Err(format!(
            "A maximum of 4 cache points is allowed; the request has {cache_points}."
        ));
    }
    Ok(())
}

/// The tool the request forces (structured output), if any.
pub(super) fn forced_tool(body: &Value) -> Option<&str> {
    body["toolConfig"]["toolChoice"]["tool"]["name"].as_str()
}

/// The reply cap the request sets.
pub(super) fn request_cap(body: &Value) -> Option<u64> {
    body["inferenceConfig"]["maxTokens"].as_u64()
}

/// Converse's usage: `inputTokens` is what was neither read from nor written to the cache.
fn usage(usage: TokenUsage) -> Value {
    let input = usage
        .prompt_tokens
        .saturating_sub(usage.cached_tokens + usage.cache_write_tokens);
    let mut out = json!({
        "inputTokens": input,
        "outputTokens": usage.completion_tokens,
        "totalTokens": usage.prompt_tokens + usage.completion_tokens,
    });
    if usage.cached_tokens + usage.cache_write_tokens > 0 {
        out["cacheReadInputTokens"] = json!(usage.cached_tokens);
        out["cacheWriteInputTokens"] = json!(usage.cache_write_tokens);
    }
    out
}

/// The forced tool's input, when the reply text is a JSON object.
fn tool_input<'a>(cx: &ReplyContext<'a>) -> Option<(&'a str, Value)> {
    let name = cx.forced_tool?;
    let input: Value = serde_json::from_str(cx.text).ok()?;
    input.is_object().then_some((name, input))
}

pub(super) fn reply_json(cx: &ReplyContext<'_>) -> Value {
    let text = (!cx.text.is_empty()).then(|| json!({"text": cx.text}));
    let (content, stop_reason): (Vec<Value>, &str) = match tool_input(cx) {
        _ if !cx.calls.is_empty() => (
            text.into_iter()
                .chain(cx.calls.iter().enumerate().map(|(i, (name, input))| {
                    json!({"toolUse": {"toolUseId": format!("tooluse_standin{i}"), "name": name, "input": input}})
                }))
                .collect(),
            "tool_use",
        ),
        Some((name, input)) => (
            vec![json!({"toolUse": {"toolUseId": "tooluse_output", "name": name, "input": input}})],
            "tool_use",
        ),
        None => (text.into_iter().collect(), "end_turn"),
    };
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "usage": usage(cx.usage),
        "metrics": {"latencyMs": 42}
    })
}

/// One frame, as the SDK's encoder writes it: `:message-type`, then `kind_header` naming
/// `kind`, then the JSON content type.
fn frame(
    message_type: &'static str,
    kind_header: &'static str,
    kind: &'static str,
    payload: Value,
) -> Vec<u8> {
    let message = Message::new(payload.to_string())
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.into()),
        ))
        .add_header(Header::new(kind_header, HeaderValue::String(kind.into())))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out)
        .expect("an event-stream frame");
    out
}

fn event(kind: &'static str, payload: Value) -> Vec<u8> {
    frame("event", ":event-type", kind, payload)
}

/// A mid-stream exception frame, as ConverseStream sends one.
pub(super) fn exception(kind: &'static str, message: &str) -> Vec<u8> {
    frame(
        "exception",
        ":exception-type",
        kind,
        json!({"message": message}),
    )
}

/// `messageStart`, then text deltas (text blocks have no start event), tool-use blocks with
/// their start and input fragments, `messageStop` with the stop reason, and `metadata` with
/// the usage. `upto_text`: only the start and the text deltas (for a stream that then fails).
pub(super) fn stream_frames(cx: &ReplyContext<'_>, upto_text: bool) -> Vec<Vec<u8>> {
    let mut frames = vec![event("messageStart", json!({"role": "assistant"}))];
    let tool = tool_input(cx);
    let text_block = |frames: &mut Vec<Vec<u8>>| {
        for text in deltas(cx.text) {
            frames.push(event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": text}}),
            ));
        }
    };
    let stop_reason = if !cx.calls.is_empty() {
        text_block(&mut frames);
        let first = usize::from(!cx.text.is_empty());
        if first == 1 {
            frames.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
        }
        for (i, (name, input)) in cx.calls.iter().enumerate() {
            let index = first + i;
            frames.push(event(
                "contentBlockStart",
                json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": format!("tooluse_standin{i}"), "name": name}}}),
            ));
            for fragment in deltas(&input.to_string()) {
                frames.push(event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": fragment}}}),
                ));
            }
            frames.push(event(
                "contentBlockStop",
                json!({"contentBlockIndex": index}),
            ));
        }
        "tool_use"
    } else if let Some((name, input)) = &tool {
        frames.push(event(
            "contentBlockStart",
            json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_output", "name": name}}}),
        ));
        for fragment in deltas(&input.to_string()) {
            frames.push(event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": fragment}}}),
            ));
        }
        frames.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
        "tool_use"
    } else {
        text_block(&mut frames);
        if upto_text {
            return frames;
        }
        frames.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
        "end_turn"
    };
    frames.push(event("messageStop", json!({"stopReason": stop_reason})));
    frames.push(event(
        "metadata",
        json!({"usage": usage(cx.usage), "metrics": {"latencyMs": 42}}),
    ));
    frames
}

/// Bedrock's error type for a status, as `x-amzn-errortype` names it.
pub(super) fn error_type(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 | 529 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

pub(super) fn canned_message(status: u16) -> &'static str {
    match status {
        400 => "Malformed input request, please reformat your input and try again.",
        401 => "The security token included in the request is invalid.",
        403 => "You don't have access to the model with the specified model ID.",
        404 => "The provided model identifier is invalid.",
        429 => "Too many requests, please wait before trying again.",
        503 | 529 => "Bedrock is unable to process your request.",
        _ => "The server encountered an internal error.",
    }
}

pub(super) fn error_body(message: &str) -> Value {
    json!({"message": message})
}
