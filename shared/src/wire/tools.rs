//! Parsing a chat request's tool fields: `tools`, `tool_choice`, `parallel_tool_calls`, an
//! assistant message's `tool_calls`, and the tool messages that answer them.
//!
//! Everything is checked on arrival, so a request that reaches a provider can be translated
//! for either one: names follow the providers' rule, parameters are valid JSON Schemas of an
//! object, arguments are JSON objects (Anthropic takes them as objects), a named
//! `tool_choice` names an offered tool, and every tool message answers a call of the assistant
//! message before it. Refusals name the field and never quote the value.

use serde_json::{Map, Value};

use crate::domain::chat::{Message, Role};
use crate::domain::tools::{
    MAX_TOOL_CALL_ID_LEN, MAX_TOOL_CALLS, MAX_TOOL_DESCRIPTION_LEN, MAX_TOOLS, MAX_TOOLS_BYTES,
    ToolCall, ToolChoice, ToolDefinition, Tools, valid_tool_name,
};
use crate::error::GatewayError;

use super::fields::json_type;

fn invalid(message: impl Into<String>, param: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some(param.into()))
}

const NAME_RULE: &str = "1-64 characters of a-z, A-Z, 0-9, '_' and '-'";

/// The most prompt-cache breakpoints a request may mark: Anthropic takes four, and the
/// gateway places one on the tenant's system prompt.
pub const MAX_CACHE_BREAKPOINTS: usize = 3;

/// A `cache_control` marker (Anthropic's prompt-cache breakpoint, also accepted on Chat
/// Completions messages, parts and tools): `{"type": "ephemeral"}`, optionally with
/// `"ttl": "5m"`. The one-hour TTL is refused: its cache writes are priced differently and the
/// price table carries the five-minute price.
pub(crate) fn cache_breakpoint(raw: Option<&Value>, param: &str) -> Result<bool, GatewayError> {
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return Ok(false);
    };
    let ephemeral = raw.get("type").and_then(Value::as_str) == Some("ephemeral");
    match raw.get("ttl") {
        _ if !ephemeral => Err(invalid(
            format!("`{param}` must be {{\"type\": \"ephemeral\"}}"),
            param,
        )),
        None | Some(Value::Null) => Ok(true),
        Some(Value::String(ttl)) if ttl == "5m" => Ok(true),
        Some(_) => Err(invalid(
            format!("`{param}.ttl` must be `5m`: the gateway prices five-minute cache writes only"),
            format!("{param}.ttl"),
        )),
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls` as sent (each `None` when absent).
pub(crate) fn parse_tools(
    tools: Option<Vec<Value>>,
    choice: Option<Value>,
    parallel: Option<bool>,
) -> Result<Tools, GatewayError> {
    let definitions = match tools {
        None => Vec::new(),
        Some(list) => {
            if list.len() > MAX_TOOLS {
                return Err(invalid(
                    format!(
                        "`tools` has {} entries; the limit is {MAX_TOOLS}",
                        list.len()
                    ),
                    "tools",
                ));
            }
            let size: usize = list
                .iter()
                .map(|t| serde_json::to_vec(t).map_or(usize::MAX, |v| v.len()))
                .fold(0, usize::saturating_add);
            if size > MAX_TOOLS_BYTES {
                return Err(invalid(
                    format!("`tools` is {size} bytes; the limit is {MAX_TOOLS_BYTES}"),
                    "tools",
                ));
            }
            let definitions = list
                .into_iter()
                .enumerate()
                .map(|(i, tool)| definition(i, tool))
                .collect::<Result<Vec<_>, _>>()?;
            for (i, d) in definitions.iter().enumerate() {
                if definitions[..i].iter().any(|e| e.name == d.name) {
                    return Err(invalid(
                        format!(
                            "`tools[{i}].function.name` repeats an earlier tool's name; tool names must be unique"
                        ),
                        format!("tools[{i}].function.name"),
                    ));
                }
            }
            definitions
        }
    };
    let choice = match choice {
        None | Some(Value::Null) => None,
        Some(raw) => Some(tool_choice(&raw)?),
    };
    if definitions.is_empty() {
        if choice.is_some() {
            return Err(invalid(
                "`tool_choice` is only allowed when `tools` are specified",
                "tool_choice",
            ));
        }
        if parallel.is_some() {
            return Err(invalid(
                "`parallel_tool_calls` is only allowed when `tools` are specified",
                "parallel_tool_calls",
            ));
        }
    }
    if let Some(ToolChoice::Function(name)) = &choice
        && !definitions.iter().any(|d| &d.name == name)
    {
        return Err(invalid(
            "`tool_choice.function.name` must name one of the `tools`",
            "tool_choice.function.name",
        ));
    }
    Ok(Tools {
        definitions,
        choice,
        parallel_calls: parallel,
    })
}

fn definition(i: usize, tool: Value) -> Result<ToolDefinition, GatewayError> {
    let at = |field: &str| format!("tools[{i}]{field}");
    let Value::Object(mut tool) = tool else {
        return Err(invalid(
            format!(
                "`tools[{i}]` must be an object: {{\"type\": \"function\", \"function\": {{...}}}}"
            ),
            at(""),
        ));
    };
    match tool.get("type") {
        Some(Value::String(kind)) if kind == "function" => {}
        _ => {
            return Err(invalid(
                format!(
                    "`tools[{i}].type` must be `function`: the only tool type this gateway carries"
                ),
                at(".type"),
            ));
        }
    }
    let cache_breakpoint = cache_breakpoint(tool.get("cache_control"), &at(".cache_control"))?;
    let Some(Value::Object(mut function)) = tool.remove("function") else {
        return Err(invalid(
            format!("`tools[{i}].function` is required: an object with `name` and `parameters`"),
            at(".function"),
        ));
    };
    let name = match function.remove("name") {
        Some(Value::String(name)) if valid_tool_name(&name) => name,
        Some(_) => {
            return Err(invalid(
                format!("`tools[{i}].function.name` must be {NAME_RULE}"),
                at(".function.name"),
            ));
        }
        None => {
            return Err(invalid(
                format!("`tools[{i}].function.name` is required"),
                at(".function.name"),
            ));
        }
    };
    let description = match function.remove("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if d.chars().count() <= MAX_TOOL_DESCRIPTION_LEN => Some(d),
        Some(_) => {
            return Err(invalid(
                format!(
                    "`tools[{i}].function.description` must be a string of at most {MAX_TOOL_DESCRIPTION_LEN} characters"
                ),
                at(".function.description"),
            ));
        }
    };
    let strict = match function.remove("strict") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(b),
        Some(_) => {
            return Err(invalid(
                format!("`tools[{i}].function.strict` must be a boolean"),
                at(".function.strict"),
            ));
        }
    };
    let param = at(".function.parameters");
    let parameters = match function.remove("parameters") {
        // OpenAI reads a missing schema as a function without arguments.
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(Value::Object(schema)) => object_schema(schema, &param)?,
        Some(other) => {
            return Err(invalid(
                format!(
                    "invalid type for `{param}`: expected a JSON Schema object, got {}",
                    json_type(&other)
                ),
                param,
            ));
        }
    };
    Ok(ToolDefinition {
        name,
        description,
        parameters,
        strict,
        cache_breakpoint,
    })
}

/// A tool's parameters: a valid JSON Schema describing an object (both providers require it).
fn object_schema(schema: Map<String, Value>, param: &str) -> Result<Value, GatewayError> {
    match schema.get("type") {
        None => {}
        Some(Value::String(t)) if t == "object" => {}
        Some(_) => {
            return Err(invalid(
                format!(
                    "`{param}` must describe a JSON object: `\"type\": \"object\"` at its root"
                ),
                param,
            ));
        }
    }
    let schema = Value::Object(schema);
    crate::domain::structured::check_schema(&schema, param)
        .map_err(|message| invalid(message, param))?;
    Ok(schema)
}

fn tool_choice(raw: &Value) -> Result<ToolChoice, GatewayError> {
    const EXPECTED: &str = "`tool_choice` must be `none`, `auto`, `required` or {\"type\": \"function\", \"function\": {\"name\": ...}}";
    match raw {
        Value::String(s) => match s.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            _ => Err(invalid(EXPECTED, "tool_choice")),
        },
        Value::Object(object) => {
            if object.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid(EXPECTED, "tool_choice.type"));
            }
            match object.get("function").and_then(|f| f.get("name")) {
                Some(Value::String(name)) if valid_tool_name(name) => {
                    Ok(ToolChoice::Function(name.clone()))
                }
                _ => Err(invalid(
                    format!("`tool_choice.function.name` must be {NAME_RULE}"),
                    "tool_choice.function.name",
                )),
            }
        }
        _ => Err(invalid(EXPECTED, "tool_choice")),
    }
}

/// An assistant message's `tool_calls`.
pub(crate) fn parse_tool_calls(
    message: &str,
    calls: Vec<Value>,
) -> Result<Vec<ToolCall>, GatewayError> {
    if calls.len() > MAX_TOOL_CALLS {
        return Err(invalid(
            format!(
                "`{message}.tool_calls` has {} entries; the limit is {MAX_TOOL_CALLS}",
                calls.len()
            ),
            format!("{message}.tool_calls"),
        ));
    }
    calls
        .into_iter()
        .enumerate()
        .map(|(j, call)| tool_call(&format!("{message}.tool_calls[{j}]"), call))
        .collect()
}

fn tool_call(param: &str, call: Value) -> Result<ToolCall, GatewayError> {
    let shape = || {
        invalid(
            format!(
                "`{param}` must be {{\"id\": ..., \"type\": \"function\", \"function\": {{\"name\": ..., \"arguments\": \"{{...}}\"}}}}"
            ),
            param,
        )
    };
    let Value::Object(mut call) = call else {
        return Err(shape());
    };
    let id = call_id(call.remove("id"), &format!("{param}.id"))?;
    if call.get("type").is_some_and(|t| t != "function") {
        return Err(invalid(
            format!("`{param}.type` must be `function`"),
            format!("{param}.type"),
        ));
    }
    let Some(Value::Object(mut function)) = call.remove("function") else {
        return Err(shape());
    };
    let name = match function.remove("name") {
        Some(Value::String(name)) if valid_tool_name(&name) => name,
        _ => {
            return Err(invalid(
                format!("`{param}.function.name` must be {NAME_RULE}"),
                format!("{param}.function.name"),
            ));
        }
    };
    let arguments = match function.remove("arguments") {
        Some(Value::String(arguments)) => arguments,
        _ => {
            return Err(invalid(
                format!(
                    "`{param}.function.arguments` is required: the call's arguments as a JSON string"
                ),
                format!("{param}.function.arguments"),
            ));
        }
    };
    // Anthropic takes a call's input as an object, so the conversation must carry one to be
    // sent to either provider; `""` is a call without arguments.
    let object = arguments.trim().is_empty()
        || serde_json::from_str::<Value>(&arguments).is_ok_and(|v| v.is_object());
    if !object {
        return Err(invalid(
            format!("`{param}.function.arguments` must be a JSON object encoded as a string"),
            format!("{param}.function.arguments"),
        ));
    }
    Ok(ToolCall {
        id,
        name,
        arguments,
    })
}

/// A tool-call id (`tool_calls[].id`, `tool_call_id`).
pub(crate) fn call_id(raw: Option<Value>, param: &str) -> Result<String, GatewayError> {
    match raw {
        Some(Value::String(id))
            if (1..=MAX_TOOL_CALL_ID_LEN).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(id)
        }
        Some(_) => Err(invalid(
            format!("`{param}` must be 1-{MAX_TOOL_CALL_ID_LEN} printable ASCII characters"),
            param,
        )),
        None => Err(invalid(format!("`{param}` is required"), param)),
    }
}

/// Every tool message answers a call of the assistant message before it (with only tool
/// messages in between), and every call of an assistant message is answered before the next
/// user or assistant message: both providers refuse a conversation where either fails, so it is
/// the client's 400 here, before any money is spent.
pub(crate) fn check_tool_turns(messages: &[Message]) -> Result<(), GatewayError> {
    let mut open: Vec<&str> = Vec::new();
    let mut caller: Option<usize> = None;
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let Some(position) = open.iter().position(|o| *o == id) else {
                    return Err(invalid(
                        format!(
                            "`messages[{i}]` is a tool message whose `tool_call_id` answers no call of the assistant message before it"
                        ),
                        format!("messages[{i}].tool_call_id"),
                    ));
                };
                open.swap_remove(position);
            }
            Role::System => {}
            Role::User | Role::Assistant => {
                if let (Some(a), false) = (caller, open.is_empty()) {
                    return Err(invalid(
                        format!(
                            "`messages[{a}].tool_calls` has calls with no tool message answering them before `messages[{i}]`"
                        ),
                        format!("messages[{a}].tool_calls"),
                    ));
                }
                open = m.tool_calls.iter().map(|c| c.id.as_str()).collect();
                caller = (!open.is_empty()).then_some(i);
            }
        }
    }
    match caller {
        Some(a) if !open.is_empty() => Err(invalid(
            format!("`messages[{a}].tool_calls` has calls with no tool message answering them"),
            format!("messages[{a}].tool_calls"),
        )),
        _ => Ok(()),
    }
}
