//! Parsing and validating a client's chat-completions body into a [`ChatRequest`].
//!
//! Unknown fields are ignored (SDKs send many optional fields, and a tenant id in the body must
//! have no effect); known fields with wrong types or values out of range are a 400 naming the
//! field. Features the gateway does not implement yet are refused explicitly rather than
//! silently dropped.
//!
//! A refusal names the field and what it must be, never the value sent: its message is the
//! request's log line too ([`fields`]).

use serde::Deserialize;
use serde_json::Value;

use crate::domain::chat::{ChatRequest, Message, RetrievalRequest, Role};
use crate::domain::image::{ContentPart, Detail, Image, MAX_IMAGES};
use crate::domain::structured::ResponseFormat;
use crate::error::GatewayError;

use super::fields::{self, FieldError};

/// Upper bound for `max_tokens`; larger values are a client bug, not a real budget.
pub const MAX_OUTPUT_TOKENS: i64 = 131_072;
const MAX_MESSAGES: usize = 2_048;
const MAX_STOP: usize = 4;
const MAX_MODEL_LEN: usize = 256;

#[derive(Deserialize)]
struct RawRequest {
    model: String,
    messages: Vec<RawMessage>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    functions: Option<Vec<Value>>,
    #[serde(default)]
    function_call: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    retrieval: Option<RawRetrieval>,
    #[serde(default)]
    conversation_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "expected a boolean or an object")]
enum RawRetrieval {
    Switch(bool),
    Options {
        #[serde(default)]
        enabled: Option<bool>,
        #[serde(default)]
        top_k: Option<i64>,
    },
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "expected a string or an array of strings")]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    tool_call_id: Option<Value>,
    #[serde(default)]
    cache_control: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "expected a string or an array of content parts")]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    image_url: Option<RawImageUrl>,
    #[serde(default)]
    cache_control: Option<Value>,
}

#[derive(Deserialize)]
struct RawImageUrl {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// The end user a request names (`user` in OpenAI's APIs, `metadata.user_id` in Anthropic's),
/// validated as a profile's user id is: it keys the user's limits, usage and profile. An
/// absent field is no user; an invalid one is a 400 naming `user`.
pub(crate) fn end_user(
    raw: Option<String>,
) -> Result<Option<crate::domain::profile::UserId>, GatewayError> {
    raw.map(crate::domain::profile::UserId::parse)
        .transpose()
        .map_err(|_| {
            crate::error::GatewayError::invalid(
                format!(
                    "invalid `user`: use 1-{} characters of A-Z, a-z, 0-9 and - _ . @ : + = | ~ (the end user's id, which keys their limits and usage)",
                    crate::domain::profile::MAX_USER_ID_BYTES
                ),
                Some("user".to_owned()),
            )
        })
}

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::invalid(message, Some(param.to_owned()))
}

/// Parses a request body. Every failure is a 400 with a message a developer can act on.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::invalid(
            "the request body is empty; send a JSON object with `model` and `messages`",
            None,
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(format!("the request body is not valid JSON ({e})"), None)
    })?;
    if !value.is_object() {
        return Err(GatewayError::invalid(
            "the request body must be a JSON object",
            None,
        ));
    }
    let raw: RawRequest = serde_path_to_error::deserialize(&value).map_err(|e| {
        let FieldError { param, message } = fields::describe(&e, &value);
        GatewayError::invalid(message, param)
    })?;
    validate(raw)
}

fn validate(raw: RawRequest) -> Result<ChatRequest, GatewayError> {
    let model = raw.model.trim().to_owned();
    if model.is_empty() || model.len() > MAX_MODEL_LEN {
        return Err(invalid("`model` must be a non-empty model name", "model"));
    }
    if raw.messages.is_empty() {
        return Err(invalid(
            "`messages` must contain at least one message",
            "messages",
        ));
    }
    if raw.messages.len() > MAX_MESSAGES {
        return Err(invalid(
            format!(
                "`messages` has {} entries; the limit is {MAX_MESSAGES}",
                raw.messages.len()
            ),
            "messages",
        ));
    }
    let messages = raw
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let images: usize = messages.iter().map(|m| m.images().count()).sum();
    if images > MAX_IMAGES {
        return Err(invalid(
            format!("the request has {images} images; the limit is {MAX_IMAGES}"),
            "messages",
        ));
    }
    if !messages.iter().any(|m| m.role == Role::User) {
        return Err(invalid(
            "`messages` must contain at least one `user` message",
            "messages",
        ));
    }

    let max_tokens = match (raw.max_completion_tokens, raw.max_tokens) {
        (Some(n), _) => Some(bounded_tokens(n, "max_completion_tokens")?),
        (None, Some(n)) => Some(bounded_tokens(n, "max_tokens")?),
        (None, None) => None,
    };
    let temperature = in_range(raw.temperature, 0.0, 2.0, "temperature")?;
    let top_p = in_range(raw.top_p, 0.0, 1.0, "top_p")?;
    let presence_penalty = in_range(raw.presence_penalty, -2.0, 2.0, "presence_penalty")?;
    let frequency_penalty = in_range(raw.frequency_penalty, -2.0, 2.0, "frequency_penalty")?;
    if raw.n.is_some_and(|n| n != 1) {
        return Err(invalid("only `n: 1` is supported", "n"));
    }
    let stop = match raw.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > MAX_STOP || stop.iter().any(String::is_empty) {
        return Err(invalid(
            format!("`stop` takes at most {MAX_STOP} non-empty strings"),
            "stop",
        ));
    }
    if raw.functions.is_some() || raw.function_call.is_some() {
        let param = if raw.functions.is_some() {
            "functions"
        } else {
            "function_call"
        };
        return Err(invalid(
            format!(
                "`{param}` is OpenAI's deprecated function-calling API; send `tools` and `tool_choice` instead"
            ),
            param,
        ));
    }
    let tools = super::tools::parse_tools(raw.tools, raw.tool_choice, raw.parallel_tool_calls)?;
    let breakpoints = messages.iter().filter(|m| m.cache_breakpoint).count()
        + tools
            .definitions
            .iter()
            .filter(|d| d.cache_breakpoint)
            .count();
    if breakpoints > super::tools::MAX_CACHE_BREAKPOINTS {
        return Err(invalid(
            format!(
                "the request marks {breakpoints} `cache_control` breakpoints; the limit is {} (Anthropic takes 4, and the gateway places one on the tenant's system prompt)",
                super::tools::MAX_CACHE_BREAKPOINTS
            ),
            "messages",
        ));
    }
    super::tools::check_tool_turns(&messages)?;
    let response_format = match &raw.response_format {
        None | Some(Value::Null) => ResponseFormat::Text,
        Some(format) => {
            ResponseFormat::parse(format).map_err(|err| invalid(err.message, err.param))?
        }
    };
    // On Anthropic the format is a tool of that name, offered beside the client's.
    if let Some(output) = response_format.as_tool()
        && tools.get(output.name).is_some()
    {
        return Err(invalid(
            "a tool has the name the `response_format` is served under (its `json_schema.name`, or `json_object`); rename one",
            "response_format",
        ));
    }
    if raw.logprobs == Some(true) {
        return Err(invalid("`logprobs` is not supported", "logprobs"));
    }
    let user = end_user(raw.user)?;
    let retrieval = match raw.retrieval {
        None => None,
        Some(RawRetrieval::Switch(on)) => Some(RetrievalRequest {
            enabled: Some(on),
            top_k: None,
        }),
        Some(RawRetrieval::Options { enabled, top_k }) => {
            let top_k = match top_k {
                None => None,
                Some(k @ 1..=20) => Some(k as u8),
                Some(_) => {
                    return Err(invalid(
                        "`retrieval.top_k` must be between 1 and 20",
                        "retrieval.top_k",
                    ));
                }
            };
            Some(RetrievalRequest {
                enabled: enabled.or(Some(true)),
                top_k,
            })
        }
    };
    if let Some(id) = &raw.conversation_id {
        let ok = (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(invalid(
                "`conversation_id` must be 1-128 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
                "conversation_id",
            ));
        }
    }
    let stream = raw.stream.unwrap_or(false);
    if raw.stream_options.is_some() && !stream {
        return Err(invalid(
            "`stream_options` is only allowed when `stream` is true",
            "stream_options",
        ));
    }
    Ok(ChatRequest {
        model,
        messages,
        max_tokens,
        temperature,
        top_p,
        stop,
        seed: raw.seed,
        presence_penalty,
        frequency_penalty,
        retrieval,
        conversation_id: raw.conversation_id,
        response_format,
        tools,
        user,
        stream,
        include_usage: raw
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

fn message(index: usize, raw: RawMessage) -> Result<Message, GatewayError> {
    let param = format!("messages[{index}]");
    let role = match raw.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        "function" => {
            return Err(invalid(
                format!(
                    "`{param}.role` is `function`, OpenAI's deprecated function-calling API; answer tool calls with `tool` messages"
                ),
                &format!("{param}.role"),
            ));
        }
        _ => {
            return Err(invalid(
                format!(
                    "invalid value for `{param}.role`: expected one of system, developer, user, assistant"
                ),
                &format!("{param}.role"),
            ));
        }
    };
    let tool_calls = match raw.tool_calls {
        Some(calls) if role == Role::Assistant => super::tools::parse_tool_calls(&param, calls)?,
        Some(_) => {
            return Err(invalid(
                format!("`{param}.tool_calls` is only allowed on assistant messages"),
                &format!("{param}.tool_calls"),
            ));
        }
        None => Vec::new(),
    };
    let tool_call_id = match (role, raw.tool_call_id) {
        (Role::Tool, id) => Some(super::tools::call_id(id, &format!("{param}.tool_call_id"))?),
        (_, None | Some(Value::Null)) => None,
        (_, Some(_)) => {
            return Err(invalid(
                format!("`{param}.tool_call_id` is only allowed on tool messages"),
                &format!("{param}.tool_call_id"),
            ));
        }
    };
    let mut cache_breakpoint = super::tools::cache_breakpoint(
        raw.cache_control.as_ref(),
        &format!("{param}.cache_control"),
    )?;
    let mut parts = Vec::new();
    let content = match raw.content {
        // An assistant message that only calls tools has no content.
        None if !tool_calls.is_empty() => String::new(),
        None => {
            return Err(invalid(
                format!("`{param}.content` is required"),
                &format!("{param}.content"),
            ));
        }
        Some(Content::Text(text)) => text,
        Some(Content::Parts(raw_parts)) => {
            let mut text = String::new();
            for (j, part) in raw_parts.into_iter().enumerate() {
                let at = format!("{param}.content[{j}]");
                // A breakpoint on any part marks the message: Anthropic caches the prefix up
                // to the block it is on, and the message's blocks end where its parts do.
                cache_breakpoint |= super::tools::cache_breakpoint(
                    part.cache_control.as_ref(),
                    &format!("{at}.cache_control"),
                )?;
                match (part.kind.as_str(), part.text, part.image_url) {
                    ("text", Some(t), _) => {
                        text.push_str(&t);
                        parts.push(ContentPart::Text(t));
                    }
                    ("text", None, _) => {
                        return Err(invalid(
                            format!("`{at}.text` is required"),
                            &format!("{at}.text"),
                        ));
                    }
                    ("image_url", _, Some(image)) if role == Role::User => {
                        parts.push(ContentPart::Image(image_part(&at, image)?));
                    }
                    ("image_url", _, Some(_)) => {
                        return Err(invalid(
                            format!("`{at}`: images are only allowed in user messages"),
                            &format!("{at}.type"),
                        ));
                    }
                    ("image_url", _, None) => {
                        return Err(invalid(
                            format!("`{at}.image_url` is required"),
                            &format!("{at}.image_url"),
                        ));
                    }
                    (_, _, _) => {
                        return Err(invalid(
                            format!(
                                "invalid value for `{at}.type`: only `text` and `image_url` content parts are supported"
                            ),
                            &format!("{at}.type"),
                        ));
                    }
                }
            }
            text
        }
    };
    // Text-only parts are plain content; parts are kept only for messages with images.
    if !parts.iter().any(|p| p.image().is_some()) {
        parts.clear();
    }
    if content.is_empty() && parts.is_empty() && !matches!(role, Role::Assistant | Role::Tool) {
        return Err(invalid(
            format!("`{param}.content` must not be empty"),
            &format!("{param}.content"),
        ));
    }
    Ok(Message {
        role,
        content,
        name: raw.name,
        tool_calls,
        tool_call_id,
        parts,
        cache_breakpoint,
    })
}

/// An `image_url` part: a `data:` or `https` URL and an optional `detail`.
fn image_part(at: &str, raw: RawImageUrl) -> Result<Image, GatewayError> {
    let detail = match raw.detail.as_deref() {
        None => Detail::Auto,
        Some(detail) => Detail::parse(detail).ok_or_else(|| {
            invalid(
                format!("`{at}.image_url.detail` must be `auto`, `low` or `high`"),
                &format!("{at}.image_url.detail"),
            )
        })?,
    };
    let Some(url) = raw.url else {
        return Err(invalid(
            format!("`{at}.image_url.url` is required: a `data:` URL or an `https` URL"),
            &format!("{at}.image_url.url"),
        ));
    };
    Image::parse(&url, detail).map_err(|err| {
        invalid(
            format!("`{at}.image_url.url`: {err}"),
            &format!("{at}.image_url.url"),
        )
    })
}

fn bounded_tokens(n: i64, param: &str) -> Result<u32, GatewayError> {
    if (1..=MAX_OUTPUT_TOKENS).contains(&n) {
        // In range, so the conversion cannot fail.
        u32::try_from(n).map_err(|_| invalid("out of range", param))
    } else {
        Err(invalid(
            format!("`{param}` must be between 1 and {MAX_OUTPUT_TOKENS}"),
            param,
        ))
    }
}

fn in_range(
    value: Option<f64>,
    min: f64,
    max: f64,
    param: &str,
) -> Result<Option<f64>, GatewayError> {
    match value {
        Some(v) if !(v.is_finite() && (min..=max).contains(&v)) => Err(invalid(
            format!("`{param}` must be between {min} and {max}"),
            param,
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ChatRequest, GatewayError> {
        parse_chat_request(body.as_bytes())
    }

    fn param_of(body: &str) -> Option<String> {
        match parse(body) {
            Err(GatewayError::InvalidRequest { param, .. }) => param,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_request_parses() {
        let req = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(req.model, "m");
        assert_eq!(req.messages[0].content, "hi");
        assert!(!req.stream);
    }

    #[test]
    fn developer_messages_and_text_parts_are_accepted() {
        let req = parse(
            r#"{"model":"m","messages":[{"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                "stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":5}"#,
        )
        .unwrap();
        assert_eq!(req.messages[0].role, Role::System);
        assert_eq!(req.messages[1].content, "ab");
        assert!(req.stream && req.include_usage);
        assert_eq!(req.max_tokens, Some(5));
    }

    #[test]
    fn a_tenant_id_in_the_body_is_ignored() {
        let req = parse(
            r#"{"model":"m","tenant_id":"globex","messages":[{"role":"user","content":"hi"}]}"#,
        );
        assert!(req.is_ok());
    }

    #[test]
    fn malformed_json_is_a_400() {
        assert!(matches!(
            parse("{\"model\":"),
            Err(GatewayError::InvalidRequest { .. })
        ));
        assert!(matches!(
            parse(""),
            Err(GatewayError::InvalidRequest { .. })
        ));
        assert!(matches!(
            parse("[1,2]"),
            Err(GatewayError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn wrong_types_name_the_field() {
        assert_eq!(
            param_of(
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":"ten"}"#
            )
            .as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            param_of(r#"{"model":7,"messages":[]}"#).as_deref(),
            Some("model")
        );
        assert_eq!(
            param_of(r#"{"messages":[{"role":"user","content":"hi"}]}"#).as_deref(),
            Some("model")
        );
    }

    fn refusal(body: serde_json::Value) -> (Option<String>, String) {
        match parse(&body.to_string()) {
            Err(GatewayError::InvalidRequest { param, message }) => (param, message),
            other => panic!("expected a 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn wrong_types_and_values_name_the_field_and_what_it_must_be_never_the_value() {
        let user = serde_json::json!({"role": "user", "content": "hi"});
        let with = |field: &str, value: serde_json::Value| {
            let mut body = serde_json::json!({"model": "m", "messages": [user.clone()]});
            body[field] = value;
            body
        };
        let canary = "canaryparse9x";
        let number = 918_273_645_i64;
        for (body, param, needle) in [
            (
                with("messages", canary.into()),
                "messages",
                "expected an array, got a string",
            ),
            (
                with("max_tokens", canary.into()),
                "max_tokens",
                "expected an integer, got a string",
            ),
            (
                with("model", number.into()),
                "model",
                "expected a string, got an integer",
            ),
            (
                with("messages", serde_json::json!([canary])),
                "messages[0]",
                "expected an object, got a string",
            ),
            (
                with(
                    "messages",
                    serde_json::json!([{"role": "user", "content": number}]),
                ),
                "messages[0].content",
                "expected a string or an array of content parts, got an integer",
            ),
            (
                with(
                    "messages",
                    serde_json::json!([{"role": canary, "content": "hi"}]),
                ),
                "messages[0].role",
                "expected one of system, developer, user, assistant",
            ),
            (
                with(
                    "messages",
                    serde_json::json!([{"role": "user", "content": [{"type": canary, "text": "x"}]}]),
                ),
                "messages[0].content[0].type",
                "only `text` and `image_url` content parts",
            ),
            (
                with("stop", serde_json::json!({"k": canary})),
                "stop",
                "expected a string or an array of strings, got an object",
            ),
            (
                with("retrieval", canary.into()),
                "retrieval",
                "expected a boolean or an object, got a string",
            ),
            (
                with("max_tokens", number.into()),
                "max_tokens",
                "must be between 1 and",
            ),
            (
                with("temperature", (number as f64).into()),
                "temperature",
                "must be between 0 and 2",
            ),
            (
                with("retrieval", serde_json::json!({"top_k": number})),
                "retrieval.top_k",
                "must be between 1 and 20",
            ),
        ] {
            let (got, message) = refusal(body.clone());
            assert_eq!(got.as_deref(), Some(param), "{body}");
            assert!(message.contains(needle), "{body}: {message}");
            assert!(
                !message.contains(canary) && !message.contains(&number.to_string()),
                "{body}: {message}"
            );
        }
    }

    #[test]
    fn empty_messages_are_a_400() {
        assert_eq!(
            param_of(r#"{"model":"m","messages":[]}"#).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"user","content":""}]}"#).as_deref(),
            Some("messages[0].content")
        );
    }

    #[test]
    fn unknown_roles_are_a_400() {
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"function","content":"x"}]}"#).as_deref(),
            Some("messages[0].role")
        );
    }

    #[test]
    fn absurd_max_tokens_are_a_400() {
        for n in ["-1", "0", "1000000000", "99999999999999"] {
            let body = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{n}}}"#
            );
            assert_eq!(param_of(&body).as_deref(), Some("max_tokens"), "{n}");
        }
    }

    #[test]
    fn out_of_range_sampling_parameters_are_a_400() {
        assert_eq!(
            param_of(
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":3}"#
            )
            .as_deref(),
            Some("temperature")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":-0.1}"#)
                .as_deref(),
            Some("top_p")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}"#)
                .as_deref(),
            Some("n")
        );
    }

    const WEATHER: &str = r#"{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}"#;

    fn with_tools(tools: &str, extra: &str) -> String {
        format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":[{tools}]{extra}}}"#
        )
    }

    #[test]
    fn a_whole_tool_loop_parses_into_the_request() {
        let req = parse(&format!(
            r#"{{"model":"m","tools":[{WEATHER}],"tool_choice":"auto","parallel_tool_calls":false,
                "messages":[{{"role":"user","content":"Weather in Paris?"}},
                {{"role":"assistant","content":null,"tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Paris\"}}"}}}}]}},
                {{"role":"tool","tool_call_id":"call_1","content":"18C and sunny"}}]}}"#
        ))
        .unwrap();
        assert_eq!(req.tools.definitions.len(), 1);
        assert_eq!(
            req.tools.choice,
            Some(crate::domain::tools::ToolChoice::Auto)
        );
        assert_eq!(req.tools.parallel_calls, Some(false));
        assert_eq!(req.messages[1].tool_calls[0].name, "get_weather");
        assert_eq!(req.messages[1].content, "");
        assert_eq!(req.messages[2].role, Role::Tool);
        assert_eq!(req.messages[2].tool_call_id.as_deref(), Some("call_1"));
        // The tools are part of what the cache key hashes, in OpenAI's shape.
        let normalized = serde_json::to_value(&req).unwrap();
        assert_eq!(normalized["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(normalized["tool_choice"], "auto");
        assert_eq!(normalized["messages"][1]["tool_calls"][0]["id"], "call_1");
        // Without tools, the normalized body has no tool fields at all.
        let plain = serde_json::to_value(
            parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap(),
        )
        .unwrap();
        assert!(plain.get("tools").is_none() && plain.get("tool_choice").is_none());
    }

    #[test]
    fn bad_tool_fields_are_a_400_naming_the_field() {
        let cases: Vec<(String, &str)> = vec![
            (with_tools(r#"{"type":"function"}"#, ""), "tools[0].function"),
            (with_tools(r#"{"type":"code_interpreter"}"#, ""), "tools[0].type"),
            (with_tools(r#"{"type":"function","function":{"name":"has space"}}"#, ""), "tools[0].function.name"),
            (with_tools(r#"{"type":"function","function":{"name":"f","parameters":{"type":"string"}}}"#, ""), "tools[0].function.parameters"),
            (with_tools(r#"{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"no-such-type"}}}}}"#, ""), "tools[0].function.parameters"),
            (with_tools(r#"{"type":"function","function":{"name":"f","parameters":[1]}}"#, ""), "tools[0].function.parameters"),
            (with_tools(r#"{"type":"function","function":{"name":"f","strict":"yes"}}"#, ""), "tools[0].function.strict"),
            (with_tools(&format!("{WEATHER},{WEATHER}"), ""), "tools[1].function.name"),
            (with_tools(WEATHER, r#","tool_choice":"sometimes""#), "tool_choice"),
            (with_tools(WEATHER, r#","tool_choice":{"type":"function","function":{"name":"other"}}"#), "tool_choice.function.name"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"auto"}"#.to_owned(), "tool_choice"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"parallel_tool_calls":true}"#.to_owned(), "parallel_tool_calls"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"functions":[{"name":"f"}]}"#.to_owned(), "functions"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"function_call":"auto"}"#.to_owned(), "function_call"),
            (with_tools(r#"{"type":"function","function":{"name":"json_object"}}"#, r#","response_format":{"type":"json_object"}"#), "response_format"),
            // Tool messages must answer a call made just before them.
            (r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"call_9","content":"x"}]}"#.to_owned(), "messages[1].tool_call_id"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"tool","content":"x"}]}"#.to_owned(), "messages[1].tool_call_id"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}"#.to_owned(), "messages[1].tool_calls"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"user","content":"and?"}]}"#.to_owned(), "messages[1].tool_calls"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"[1]"}}]},{"role":"tool","tool_call_id":"c1","content":"x"}]}"#.to_owned(), "messages[1].tool_calls[0].function.arguments"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}]}"#.to_owned(), "messages[1].tool_calls[0].id"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi","tool_calls":[]}]}"#.to_owned(), "messages[0].tool_calls"),
            (r#"{"model":"m","messages":[{"role":"user","content":"hi","tool_call_id":"c"}]}"#.to_owned(), "messages[0].tool_call_id"),
        ];
        for (body, param) in cases {
            assert_eq!(param_of(&body).as_deref(), Some(param), "{body}");
        }
        let many: Vec<String> = (0..=crate::domain::tools::MAX_TOOLS)
            .map(|i| format!(r#"{{"type":"function","function":{{"name":"f{i}"}}}}"#))
            .collect();
        assert_eq!(
            param_of(&with_tools(&many.join(","), "")).as_deref(),
            Some("tools")
        );
    }

    #[test]
    fn tool_refusals_never_quote_the_value() {
        let secret = "sk-canary-7f3a";
        let bodies = [
            with_tools(
                &format!(r#"{{"type":"function","function":{{"name":"{secret} x"}}}}"#),
                "",
            ),
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}},{{"role":"tool","tool_call_id":"{secret}","content":"x"}}]}}"#
            ),
            with_tools(WEATHER, &format!(r#","tool_choice":"{secret}""#)),
        ];
        for body in bodies {
            let err = parse(&body).unwrap_err();
            assert!(!err.to_string().contains(secret), "{err}");
        }
    }

    /// A 1024 × 1024 PNG's signature and header, base64: what dimensions are read from.
    fn png_url(width: u32, height: u32) -> String {
        use base64::Engine;
        let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&[8, 6, 0, 0, 0]);
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    #[test]
    fn image_parts_parse_in_order_and_bad_ones_name_the_part() {
        let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in "},
            {"type": "image_url", "image_url": {"url": png_url(1024, 1024), "detail": "high"}},
            {"type": "text", "text": "this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]}]});
        let req = parse(&body.to_string()).unwrap();
        let message = &req.messages[0];
        assert_eq!(message.content, "What is in this?");
        assert_eq!(message.parts.len(), 4);
        let images: Vec<_> = message.images().collect();
        assert_eq!(
            images[0].tokens(crate::domain::tenant::ProviderKind::Openai),
            765
        );
        assert_eq!(images[1].detail, Detail::Auto);
        // The normalized body (the cache key's input) keeps the parts in OpenAI's shape.
        let normalized = serde_json::to_value(&req).unwrap();
        assert_eq!(
            normalized["messages"][0]["parts"][1]["image_url"]["detail"],
            "high"
        );
        assert!(
            normalized["messages"][0]["parts"][3]["image_url"]
                .get("detail")
                .is_none()
        );

        // Text-only parts stay plain content.
        let plain = parse(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
        )
        .unwrap();
        assert!(plain.messages[0].parts.is_empty());
        // An image alone is a whole message.
        let alone = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": png_url(10, 10)}}]}]});
        assert!(parse(&alone.to_string()).is_ok());

        let image = |url: &str, detail: &str| {
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url, "detail": detail}}]}]})
            .to_string()
        };
        let at = "messages[0].content[0].image_url";
        assert_eq!(
            param_of(&image("http://example.com/a.png", "low")).as_deref(),
            Some(&*format!("{at}.url"))
        );
        assert_eq!(
            param_of(&image(&png_url(10, 10), "ultra")).as_deref(),
            Some(&*format!("{at}.detail"))
        );
        assert_eq!(
            param_of(&image("data:image/bmp;base64,Qk0=", "low")).as_deref(),
            Some(&*format!("{at}.url"))
        );
        let no_url = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#;
        assert_eq!(param_of(no_url).as_deref(), Some(&*format!("{at}.url")));
        let assistant = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": png_url(1, 1)}}]}]});
        assert_eq!(
            param_of(&assistant.to_string()).as_deref(),
            Some("messages[1].content[0].type")
        );
        let many: Vec<_> = (0..=crate::domain::image::MAX_IMAGES)
            .map(|_| serde_json::json!({"type": "image_url", "image_url": {"url": png_url(1, 1)}}))
            .collect();
        let many =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": many}]});
        assert_eq!(param_of(&many.to_string()).as_deref(), Some("messages"));
    }

    #[test]
    fn cache_control_marks_messages_and_tools_and_is_bounded() {
        let req = parse(r#"{"model":"m","messages":[
            {"role":"system","content":"rules","cache_control":{"type":"ephemeral"}},
            {"role":"user","content":[{"type":"text","text":"doc","cache_control":{"type":"ephemeral","ttl":"5m"}},{"type":"text","text":"q"}]},
            {"role":"user","content":"plain"}],
            "tools":[{"type":"function","function":{"name":"f"},"cache_control":{"type":"ephemeral"}}]}"#)
        .unwrap();
        let marks: Vec<bool> = req.messages.iter().map(|m| m.cache_breakpoint).collect();
        assert_eq!(marks, [true, true, false]);
        assert!(req.tools.definitions[0].cache_breakpoint);
        // Not part of the cache key: a breakpoint does not change the answer.
        assert!(!serde_json::to_string(&req).unwrap().contains("cache"));

        let mark = r#"{"type":"ephemeral"}"#;
        let four = format!(
            r#"{{"model":"m","messages":[{{"role":"system","content":"a","cache_control":{mark}}},{{"role":"user","content":"b","cache_control":{mark}}},{{"role":"assistant","content":"c","cache_control":{mark}}},{{"role":"user","content":"d","cache_control":{mark}}}]}}"#
        );
        assert_eq!(param_of(&four).as_deref(), Some("messages"));
        let hour = r#"{"model":"m","messages":[{"role":"user","content":"a","cache_control":{"type":"ephemeral","ttl":"1h"}}]}"#;
        assert_eq!(
            param_of(hour).as_deref(),
            Some("messages[0].cache_control.ttl")
        );
        let odd = r#"{"model":"m","messages":[{"role":"user","content":"a","cache_control":{"type":"forever"}}]}"#;
        assert_eq!(param_of(odd).as_deref(), Some("messages[0].cache_control"));
    }

    #[test]
    fn unsupported_features_are_refused_not_dropped() {
        assert_eq!(param_of(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#).as_deref(), Some("messages[0].content[0].type"));
        assert!(
            parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[]}"#)
                .is_ok()
        );
    }

    #[test]
    fn response_formats_parse_into_the_request_and_bad_ones_name_the_field() {
        let req = parse(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                "response_format":{"type":"json_schema","json_schema":{"name":"a",
                "schema":{"type":"object","properties":{"x":{"type":"integer"}}}}}}"#,
        )
        .unwrap();
        assert_eq!(req.response_format.kind(), "json_schema");
        assert!(req.response_format.check(r#"{"x": 1}"#).is_ok());
        assert!(req.response_format.check(r#"{"x": "1"}"#).is_err());
        let req = parse(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"text"}}"#,
        )
        .unwrap();
        assert!(req.response_format.is_text());
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}}}"#).as_deref(),
            Some("response_format.json_schema.name")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"yaml"}}"#).as_deref(),
            Some("response_format.type")
        );
    }

    #[test]
    fn a_conversation_without_a_user_turn_is_a_400() {
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#).as_deref(),
            Some("messages")
        );
    }
}
