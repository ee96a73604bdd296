//! Tool (function) calling: the tools a client offers the model, how it may use them, and the
//! calls the model makes.
//!
//! The shapes are OpenAI's (what clients send and what the OpenAI adapter passes through); the
//! Anthropic adapter translates them. They serialize in OpenAI's wire form, which is also what
//! response-cache keys hash through [`ChatRequest`](super::chat::ChatRequest): two requests
//! that offer different tools are different questions.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The most tools one request may offer (OpenAI's own limit).
pub const MAX_TOOLS: usize = 128;
/// Longest tool name: OpenAI's and Anthropic's limit, `^[a-zA-Z0-9_-]{1,64}$`.
pub const MAX_TOOL_NAME_LEN: usize = 64;
/// Longest tool description, in characters.
pub const MAX_TOOL_DESCRIPTION_LEN: usize = 8_192;
/// The most bytes all of a request's tool definitions may take (compact JSON), so tools cannot
/// make a request's prompt count or cache key expensive.
pub const MAX_TOOLS_BYTES: usize = 256 * 1024;
/// Longest tool-call id accepted back from a client.
pub const MAX_TOOL_CALL_ID_LEN: usize = 256;
/// The most tool calls one assistant message may carry.
pub const MAX_TOOL_CALLS: usize = 128;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    /// The function's name (`^[a-zA-Z0-9_-]{1,64}$`).
    pub name: String,
    /// What the function does, as the client described it.
    pub description: Option<String>,
    /// The JSON Schema of the function's arguments: always an object schema (`{"type":
    /// "object"}` when the client sent none).
    pub parameters: Value,
    /// OpenAI's `strict` flag, as the client sent it.
    pub strict: Option<bool>,
    /// The client marked a prompt-cache breakpoint after this tool (`cache_control`):
    /// Anthropic gets it on the tool; OpenAI caches by itself and gets nothing.
    pub cache_breakpoint: bool,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model must not call a tool.
    None,
    /// The model decides (the default when tools are offered).
    Auto,
    /// The model must call at least one tool.
    Required,
    /// The model must call this function.
    Function(String),
}

/// A tool call the model made (or, in an earlier assistant message, made before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id; the tool result names it (`tool_call_id`).
    pub id: String,
    /// The function called.
    pub name: String,
    /// The arguments, as JSON text exactly as the model wrote them.
    pub arguments: String,
}

/// A piece of a streamed tool call, in OpenAI's delta terms: the first piece of each call
/// carries its id and name, later ones fragments of its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the reply (0, 1, ... in the order the model started them).
    pub index: u32,
    /// The call's id, on its first piece.
    pub id: Option<String>,
    /// The function's name, on its first piece.
    pub name: Option<String>,
    /// The next fragment of the arguments' JSON text (may be empty).
    pub arguments: String,
}

/// The tools a request offers and how the model may use them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tools {
    /// The functions offered, in the client's order.
    pub definitions: Vec<ToolDefinition>,
    /// `tool_choice`, when the client sent one (only with tools).
    pub choice: Option<ToolChoice>,
    /// `parallel_tool_calls`, when the client sent it.
    pub parallel_calls: Option<bool>,
}

impl Tools {
    /// No tools offered (`choice` and `parallel_calls` come only with tools).
    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
    }

    /// The model may call a tool: tools are offered and `tool_choice` is not `none`.
    pub fn callable(&self) -> bool {
        !self.is_empty() && self.choice != Some(ToolChoice::None)
    }

    /// The definition named `name`.
    pub fn get(&self, name: &str) -> Option<&ToolDefinition> {
        self.definitions.iter().find(|d| d.name == name)
    }

    /// OpenAI's `tools` array.
    pub fn wire_tools(&self) -> impl Serialize + '_ {
        WireTools(&self.definitions)
    }
}

/// `{"type": "function", "function": {...}}` per tool.
struct WireTools<'a>(&'a [ToolDefinition]);

impl Serialize for WireTools<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(WireTool))
    }
}

struct WireTool<'a>(&'a ToolDefinition);

impl Serialize for WireTool<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Function<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            parameters: &'a Value,
            #[serde(skip_serializing_if = "Option::is_none")]
            strict: Option<bool>,
        }
        let d = self.0;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("type", "function")?;
        map.serialize_entry(
            "function",
            &Function {
                name: &d.name,
                description: d.description.as_deref(),
                parameters: &d.parameters,
                strict: d.strict,
            },
        )?;
        map.end()
    }
}

/// OpenAI's `tool_choice`: a string, or `{"type": "function", "function": {"name": ...}}`.
impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::None => serializer.serialize_str("none"),
            Self::Auto => serializer.serialize_str("auto"),
            Self::Required => serializer.serialize_str("required"),
            Self::Function(name) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("type", "function")?;
                map.serialize_entry("function", &serde_json::json!({ "name": name }))?;
                map.end()
            }
        }
    }
}

/// The fields a request adds to a Chat Completions body: `tools`, then `tool_choice` and
/// `parallel_tool_calls` when sent. Flattened into the request (and its cache key).
impl Serialize for Tools {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("tools", &self.wire_tools())?;
        if let Some(choice) = &self.choice {
            map.serialize_entry("tool_choice", choice)?;
        }
        if let Some(parallel) = self.parallel_calls {
            map.serialize_entry("parallel_tool_calls", &parallel)?;
        }
        map.end()
    }
}

/// OpenAI's `tool_calls` on an assistant message: `{"id", "type": "function", "function":
/// {"name", "arguments"}}` per call.
pub fn wire_tool_calls(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })
            })
            .collect(),
    )
}

/// Whether `name` is a valid tool name.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Assembles streamed tool-call pieces into whole calls, in index order.
#[derive(Debug, Default, Clone)]
pub struct ToolCallAssembler {
    calls: Vec<ToolCall>,
}

impl ToolCallAssembler {
    /// Adds a piece. A piece for an index not seen yet starts that call.
    pub fn push(&mut self, delta: &ToolCallDelta) {
        let index = delta.index as usize;
        // Indexes arrive in order; a gap (a provider skipping one) is filled, never panics.
        while self.calls.len() <= index {
            self.calls.push(ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let call = &mut self.calls[index];
        if let Some(id) = &delta.id {
            call.id.clone_from(id);
        }
        if let Some(name) = &delta.name {
            call.name.clone_from(name);
        }
        call.arguments.push_str(&delta.arguments);
    }

    /// Whether no piece arrived.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls assembled so far.
    pub fn calls(&self) -> &[ToolCall] {
        &self.calls
    }

    /// The calls, whole.
    pub fn finish(self) -> Vec<ToolCall> {
        self.calls
    }
}

/// The pieces a finished call streams as: its id and name, then its arguments.
pub fn deltas_of(calls: &[ToolCall]) -> impl Iterator<Item = ToolCallDelta> + '_ {
    calls.iter().enumerate().map(|(i, c)| ToolCallDelta {
        index: i as u32,
        id: Some(c.id.clone()),
        name: Some(c.name.clone()),
        arguments: c.arguments.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn weather() -> ToolDefinition {
        ToolDefinition {
            name: "get_weather".into(),
            description: Some("Current weather".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            strict: None,
            cache_breakpoint: false,
        }
    }

    #[test]
    fn tools_serialize_as_openais_fields() {
        let tools = Tools {
            definitions: vec![weather()],
            choice: Some(ToolChoice::Function("get_weather".into())),
            parallel_calls: Some(false),
        };
        assert_eq!(
            serde_json::to_value(&tools).unwrap(),
            json!({
                "tools": [{"type": "function", "function": {
                    "name": "get_weather", "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
                }}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": false,
            })
        );
        for (choice, wire) in [
            (ToolChoice::None, "none"),
            (ToolChoice::Auto, "auto"),
            (ToolChoice::Required, "required"),
        ] {
            assert_eq!(serde_json::to_value(choice).unwrap(), json!(wire));
        }
    }

    #[test]
    fn streamed_pieces_assemble_into_whole_calls() {
        let mut calls = ToolCallAssembler::default();
        let piece = |index, id: Option<&str>, name: Option<&str>, arguments: &str| ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.into(),
        };
        calls.push(&piece(0, Some("call_a"), Some("get_weather"), ""));
        calls.push(&piece(0, None, None, "{\"city\":"));
        calls.push(&piece(1, Some("call_b"), Some("get_time"), "{}"));
        calls.push(&piece(0, None, None, "\"Paris\"}"));
        let calls = calls.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].arguments, "{\"city\":\"Paris\"}");
        assert_eq!(
            (calls[1].id.as_str(), calls[1].name.as_str()),
            ("call_b", "get_time")
        );
        let replayed: Vec<_> = deltas_of(&calls).collect();
        let mut again = ToolCallAssembler::default();
        replayed.iter().for_each(|d| again.push(d));
        assert_eq!(again.finish(), calls);
    }

    #[test]
    fn tool_names_follow_the_providers_rule() {
        assert!(valid_tool_name("get_weather-2"));
        assert!(!valid_tool_name(""));
        assert!(!valid_tool_name("has space"));
        assert!(!valid_tool_name(&"a".repeat(65)));
    }
}
