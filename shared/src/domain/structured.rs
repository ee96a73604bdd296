//! Structured outputs: the `response_format` a client asks for, its compiled JSON Schema, and
//! the check of a model's reply against it.
//!
//! A format is parsed once at the edge into a [`ResponseFormat`] whose schema is already
//! compiled, so an invalid schema is the client's 400 before any money is spent, and the reply
//! check after the provider call cannot fail on the schema itself. The serialized form is
//! OpenAI's `response_format` (what the OpenAI adapter sends upstream, and what response-cache
//! keys hash through [`ChatRequest`](super::chat::ChatRequest)).
//!
//! Schemas are compiled by the `jsonschema` crate without its HTTP or file resolvers: a `$ref`
//! to anything outside the schema itself fails compilation instead of fetching a URL.
//!
//! Checking a reply is bounded (module `bounds`): patterns run on a linear-time engine, a
//! schema's patterns and unfolded size are capped when it is parsed, and a reply whose check
//! would cost more than a fixed budget fails as a validation error without being validated.
//! That bound is what lets the services check a reply before metering it: the usage event can
//! say the reply failed its format, and the check cannot outlast the deadline margin left for
//! metering.
//!
//! Error messages name where a schema or a request went wrong, never the values in it: a
//! schema is request content, and refusals are logged.

mod bounds;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;

use bounds::Shape;
pub use bounds::{
    DETAIL_BUDGET, EVALUATION_BUDGET, MAX_PATTERNS, MAX_UNFOLDED_SUBSCHEMAS, PATTERN_SIZE_LIMIT,
};

/// The largest schema accepted (its compact JSON), so a request cannot make every reply check
/// expensive. OpenAI's own limits on strict schemas are far below this.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Longest `json_schema.name`: the Anthropic tool-name limit, which the name becomes.
const MAX_NAME_LEN: usize = 64;
const MAX_DESCRIPTION_LEN: usize = 1_024;
/// Errors past the first are counted up to this many.
const MAX_COUNTED_ERRORS: usize = 100;
/// Characters of an unparsable reply quoted back in the error, so the client can see what
/// came back without the gateway echoing a whole reply.
const EXCERPT_CHARS: usize = 40;
/// The tool name that carries a `json_object` reply on APIs that need a tool for it.
pub const JSON_OBJECT_TOOL: &str = "json_object";

/// What shape the reply must have.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ResponseFormat {
    /// Free text (the default, and `{"type": "text"}`).
    #[default]
    Text,
    /// Any JSON object (`{"type": "json_object"}`).
    JsonObject,
    /// JSON matching a schema (`{"type": "json_schema", "json_schema": {...}}`).
    JsonSchema(JsonSchemaFormat),
}

/// A named schema, as sent, with its compiled validator.
#[derive(Clone)]
pub struct JsonSchemaFormat {
    /// The schema's name (becomes the tool name on Anthropic).
    pub name: String,
    /// What the schema is for, as the client sent it.
    pub description: Option<String>,
    /// The schema exactly as the client sent it.
    pub schema: Value,
    /// OpenAI's `strict` flag, as the client sent it.
    pub strict: Option<bool>,
    validator: Arc<jsonschema::Validator>,
    /// What checking a reply can cost, walked before the validator runs.
    shape: Arc<Shape>,
}

impl fmt::Debug for JsonSchemaFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSchemaFormat")
            .field("name", &self.name)
            .field("strict", &self.strict)
            .finish_non_exhaustive()
    }
}

/// Two formats are the same when the client sent the same thing; the validator follows.
impl PartialEq for JsonSchemaFormat {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.description == other.description
            && self.schema == other.schema
            && self.strict == other.strict
    }
}

/// A structured-output format as a forced tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTool<'a> {
    /// The tool's name.
    pub name: &'a str,
    /// The tool's description, when the format has one.
    pub description: Option<&'a str>,
    /// The tool's input schema: the reply's schema.
    pub schema: Cow<'a, Value>,
}

/// Why a `response_format` was refused: a message and the parameter it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// What is wrong, naming where and never the values.
    pub message: String,
    /// The request parameter at fault, e.g. `response_format.json_schema.name`.
    pub param: &'static str,
}

fn refuse(param: &'static str, message: impl Into<String>) -> FormatError {
    FormatError {
        message: message.into(),
        param,
    }
}

impl ResponseFormat {
    /// Parses OpenAI's `response_format` object and compiles its schema.
    pub fn parse(raw: &Value) -> Result<Self, FormatError> {
        const P: &str = "response_format";
        const P_TYPE: &str = "response_format.type";
        const P_SPEC: &str = "response_format.json_schema";
        const P_NAME: &str = "response_format.json_schema.name";
        const P_DESCRIPTION: &str = "response_format.json_schema.description";
        const P_SCHEMA: &str = "response_format.json_schema.schema";
        const P_STRICT: &str = "response_format.json_schema.strict";

        let Some(object) = raw.as_object() else {
            return Err(refuse(
                P,
                "`response_format` must be an object such as {\"type\": \"json_object\"}",
            ));
        };
        match object.get("type").and_then(Value::as_str) {
            Some("text") => Ok(Self::Text),
            Some("json_object") => Ok(Self::JsonObject),
            Some("json_schema") => {
                let Some(spec) = object.get("json_schema").and_then(Value::as_object) else {
                    return Err(refuse(
                        P_SPEC,
                        "`response_format.json_schema` is required with type `json_schema`: {\"name\": ..., \"schema\": {...}}",
                    ));
                };
                let name = match spec.get("name") {
                    Some(Value::String(name)) if valid_name(name) => name.clone(),
                    Some(_) => {
                        return Err(refuse(
                            P_NAME,
                            format!(
                                "`response_format.json_schema.name` must be 1-{MAX_NAME_LEN} characters of a-z, A-Z, 0-9, '_' and '-'"
                            ),
                        ));
                    }
                    None => {
                        return Err(refuse(
                            P_NAME,
                            "`response_format.json_schema.name` is required",
                        ));
                    }
                };
                let description = match spec.get("description") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(d)) if d.chars().count() <= MAX_DESCRIPTION_LEN => {
                        Some(d.clone())
                    }
                    Some(_) => {
                        return Err(refuse(
                            P_DESCRIPTION,
                            format!(
                                "`response_format.json_schema.description` must be a string of at most {MAX_DESCRIPTION_LEN} characters"
                            ),
                        ));
                    }
                };
                let strict = match spec.get("strict") {
                    None | Some(Value::Null) => None,
                    Some(Value::Bool(b)) => Some(*b),
                    Some(_) => {
                        return Err(refuse(
                            P_STRICT,
                            "`response_format.json_schema.strict` must be a boolean",
                        ));
                    }
                };
                let Some(schema) = spec.get("schema") else {
                    return Err(refuse(
                        P_SCHEMA,
                        "`response_format.json_schema.schema` is required: the JSON Schema the reply must match",
                    ));
                };
                let size = serde_json::to_vec(schema).map_or(usize::MAX, |v| v.len());
                if size > MAX_SCHEMA_BYTES {
                    return Err(refuse(
                        P_SCHEMA,
                        format!(
                            "`response_format.json_schema.schema` is {size} bytes; the limit is {MAX_SCHEMA_BYTES}"
                        ),
                    ));
                }
                // Both providers require it: OpenAI for structured outputs, Anthropic for a
                // tool's `input_schema`, which is how the schema reaches Claude.
                if schema.get("type").and_then(Value::as_str) != Some("object") {
                    return Err(refuse(
                        P_SCHEMA,
                        "`response_format.json_schema.schema` must describe a JSON object: `\"type\": \"object\"` at its root",
                    ));
                }
                let shape = Shape::of(schema).map_err(|err| {
                    refuse(
                        P_SCHEMA,
                        format!("`response_format.json_schema.schema` {}", err.0),
                    )
                })?;
                let validator =
                    compile(schema, P_SCHEMA).map_err(|message| refuse(P_SCHEMA, message))?;
                Ok(Self::JsonSchema(JsonSchemaFormat {
                    name,
                    description,
                    schema: schema.clone(),
                    strict,
                    validator: Arc::new(validator),
                    shape: Arc::new(shape),
                }))
            }
            Some(_) => Err(refuse(
                P_TYPE,
                "`response_format.type` must be one of `text`, `json_object` or `json_schema`",
            )),
            None if object.get("type").is_some_and(|t| !t.is_null()) => Err(refuse(
                P_TYPE,
                "`response_format.type` must be a string: `text`, `json_object` or `json_schema`",
            )),
            None => Err(refuse(
                P_TYPE,
                "`response_format.type` is required: `text`, `json_object` or `json_schema`",
            )),
        }
    }

    /// Whether the format is free text.
    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text)
    }

    /// The reply must be JSON (and is validated).
    pub fn is_structured(&self) -> bool {
        !self.is_text()
    }

    /// The `type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::JsonObject => "json_object",
            Self::JsonSchema(_) => "json_schema",
        }
    }

    /// The format as a tool the model must call, for APIs that express structured output that
    /// way (Anthropic): the schema's name and schema, `{"type": "object"}` for `json_object`.
    pub fn as_tool(&self) -> Option<OutputTool<'_>> {
        match self {
            Self::Text => None,
            Self::JsonObject => Some(OutputTool {
                name: JSON_OBJECT_TOOL,
                description: None,
                schema: Cow::Owned(serde_json::json!({"type": "object"})),
            }),
            Self::JsonSchema(format) => Some(OutputTool {
                name: &format.name,
                description: format.description.as_deref(),
                schema: Cow::Borrowed(&format.schema),
            }),
        }
    }

    /// Checks a reply: JSON, an object for `json_object`, valid against the schema for
    /// `json_schema`. Text formats accept anything.
    pub fn check(&self, reply: &str) -> Result<(), ValidationFailure> {
        let schema_name = match self {
            Self::Text => return Ok(()),
            Self::JsonObject => None,
            Self::JsonSchema(format) => Some(format.name.clone()),
        };
        let failure =
            |instance_path: String, schema_path: &str, reason: String, more| ValidationFailure {
                schema_name: schema_name.clone(),
                instance_path,
                schema_path: schema_path.to_owned(),
                reason,
                more,
            };
        let value: Value = match serde_json::from_str(reply) {
            Ok(value) => value,
            Err(err) => {
                let reason = if reply.trim().is_empty() {
                    "the reply is empty, not JSON".to_owned()
                } else {
                    format!(
                        "the reply is not valid JSON ({err}); it begins `{}`",
                        excerpt(reply.trim_start(), EXCERPT_CHARS)
                    )
                };
                return Err(failure(String::new(), "", reason, 0));
            }
        };
        match self {
            Self::Text => Ok(()),
            Self::JsonObject if value.is_object() => Ok(()),
            Self::JsonObject => Err(failure(
                String::new(),
                "/type",
                format!("expected a JSON object, got {}", json_type(&value)),
                0,
            )),
            Self::JsonSchema(format) => {
                let Some(cost) = format.shape.cost(&value, EVALUATION_BUDGET) else {
                    return Err(failure(
                        String::new(),
                        "",
                        format!(
                            "the reply is too large to check against this schema: it would take more than {EVALUATION_BUDGET} schema evaluations"
                        ),
                        0,
                    ));
                };
                // A panic in the validator would end the request before its usage event is
                // recorded: it is a failed check instead.
                let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    validate(&format.validator, &value, cost)
                }));
                match checked {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(found)) => Err(ValidationFailure {
                        schema_name: schema_name.clone(),
                        ..found
                    }),
                    Err(_) => Err(failure(
                        String::new(),
                        "",
                        "the reply could not be checked: the schema validator failed".to_owned(),
                        0,
                    )),
                }
            }
        }
    }
}

/// OpenAI's `response_format` shape; `text` included so the adapter can send it as received.
impl Serialize for ResponseFormat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            json_schema: Option<SchemaWire<'a>>,
        }
        #[derive(Serialize)]
        struct SchemaWire<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            schema: &'a Value,
            #[serde(skip_serializing_if = "Option::is_none")]
            strict: Option<bool>,
        }
        Wire {
            kind: self.kind(),
            json_schema: match self {
                Self::JsonSchema(format) => Some(SchemaWire {
                    name: &format.name,
                    description: format.description.as_deref(),
                    schema: &format.schema,
                    strict: format.strict,
                }),
                _ => None,
            },
        }
        .serialize(serializer)
    }
}

/// Why a reply failed its format: where (JSON Pointers into the reply and into the schema) and
/// which rule. Holds no more of the reply than a short excerpt of an unparsable one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationFailure {
    /// The `json_schema` name, when there is a schema.
    pub schema_name: Option<String>,
    /// JSON Pointer to the failing value in the reply (`""` is the whole reply).
    pub instance_path: String,
    /// JSON Pointer to the failing keyword in the schema (`""` when the reply is not JSON).
    pub schema_path: String,
    /// Which rule the reply broke, in words.
    pub reason: String,
    /// Further errors found (up to 100).
    pub more: usize,
}

impl fmt::Display for ValidationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema_name {
            Some(name) => write!(
                f,
                "the model's reply does not match the response_format schema `{name}`"
            )?,
            None => {
                f.write_str("the model's reply is not the JSON object response_format asked for")?
            }
        }
        let instance = if self.instance_path.is_empty() {
            "the root of the reply".to_owned()
        } else {
            format!("instance path `{}`", self.instance_path)
        };
        write!(f, ": at {instance}")?;
        if !self.schema_path.is_empty() {
            write!(f, " (schema path `{}`)", self.schema_path)?;
        }
        write!(f, ": {}", self.reason)?;
        match self.more {
            0 => Ok(()),
            1 => f.write_str(" (and 1 more error)"),
            n => write!(f, " (and {n} more errors)"),
        }
    }
}

/// The check of a reply whose cost is known to be within [`EVALUATION_BUDGET`]: deciding
/// validity is cheap per visit, collecting errors is not, so errors are collected only within
/// [`DETAIL_BUDGET`]. The failure names no schema; the caller does.
fn validate(
    validator: &jsonschema::Validator,
    value: &Value,
    cost: u64,
) -> Result<(), ValidationFailure> {
    let at_root = |reason: String| ValidationFailure {
        schema_name: None,
        instance_path: String::new(),
        schema_path: String::new(),
        reason,
        more: 0,
    };
    if validator.is_valid(value) {
        return Ok(());
    }
    if cost > DETAIL_BUDGET {
        return Err(at_root(format!(
            "the reply does not match the schema; it is too large for the gateway to locate the failing rule (more than {DETAIL_BUDGET} schema evaluations)"
        )));
    }
    let mut errors = validator.iter_errors(value);
    let Some(first) = errors.next() else {
        // `is_valid` and `iter_errors` disagree only on a validator bug; the reply failed.
        return Err(at_root("the reply does not match the schema".to_owned()));
    };
    let more = errors.take(MAX_COUNTED_ERRORS).count();
    Err(ValidationFailure {
        schema_name: None,
        instance_path: first.instance_path().as_str().to_owned(),
        schema_path: first.schema_path().as_str().to_owned(),
        // Masked: the reason names the rule that failed, never the reply's values.
        reason: excerpt(&first.masked_with("the value").to_string(), 200),
        more,
    })
}

/// Checks that `schema` (the request's field `param`) is a JSON Schema this gateway can run:
/// the compile structured outputs use, so tool parameters and response formats are held to
/// the same rules. The error names where the schema is wrong, never its values.
pub fn check_schema(schema: &Value, param: &str) -> Result<(), String> {
    compile(schema, param).map(drop)
}

/// Compiles a schema, patterns on the linear-time `regex` engine. The error names where the
/// schema is wrong and which rule it breaks, never the schema's values.
fn compile(schema: &Value, param: &str) -> Result<jsonschema::Validator, String> {
    use jsonschema::error::ValidationErrorKind as Kind;
    let patterns = jsonschema::PatternOptions::regex()
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT);
    jsonschema::options()
        .with_pattern_options(patterns)
        .build(schema)
        .map_err(|err| {
            // A schema checked against the meta-schema fails as an instance: its instance
            // path is the place in the client's schema.
            let at = match err.instance_path().as_str() {
                "" => "the root".to_owned(),
                at => format!("`{at}`"),
            };
            let reason = match err.kind() {
                Kind::Format { format } if format == "regex" => format!(
                    "the pattern is not one this gateway can run: patterns are matched in linear time, so \
                     lookaround (`(?=`, `(?!`, `(?<=`, `(?<!`) and backreferences (`\\1`) are not supported, \
                     and a pattern may compile to at most {} KiB",
                    PATTERN_SIZE_LIMIT / 1024
                ),
                // These quote the schema's own text (references, property names, messages).
                Kind::Referencing(_)
                | Kind::AdditionalProperties { .. }
                | Kind::UnevaluatedProperties { .. }
                | Kind::PropertyNames { .. }
                | Kind::Custom { .. }
                | Kind::FromUtf8 { .. }
                | Kind::BacktrackLimitExceeded { .. }
                | Kind::RegexEngineFailure { .. } => format!(
                    "it breaks the meta-schema rule at `{}`",
                    err.schema_path().as_str()
                ),
                _ => excerpt(&err.masked_with("the value").to_string(), 200),
            };
            format!("`{param}` is not a valid JSON Schema (at {at}): {reason}")
        })
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The first `max` characters of `text`, with an ellipsis when cut.
fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn person() -> Value {
        json!({
            "type": "json_schema",
            "json_schema": {
                "name": "person",
                "strict": true,
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "age": {"type": "integer", "minimum": 0},
                        "tags": {"type": "array", "items": {"type": "string"}}
                    },
                    "required": ["name", "age"],
                    "additionalProperties": false
                }
            }
        })
    }

    fn param_of(raw: Value) -> &'static str {
        ResponseFormat::parse(&raw).unwrap_err().param
    }

    #[test]
    fn text_json_object_and_json_schema_parse() {
        assert_eq!(
            ResponseFormat::parse(&json!({"type": "text"})).unwrap(),
            ResponseFormat::Text
        );
        assert_eq!(
            ResponseFormat::parse(&json!({"type": "json_object"})).unwrap(),
            ResponseFormat::JsonObject
        );
        let ResponseFormat::JsonSchema(format) = ResponseFormat::parse(&person()).unwrap() else {
            panic!("expected a schema format");
        };
        assert_eq!(format.name, "person");
        assert_eq!(format.strict, Some(true));
        assert_eq!(format.schema, person()["json_schema"]["schema"]);
    }

    #[test]
    fn the_serialized_form_is_openais_response_format() {
        let format = ResponseFormat::parse(&person()).unwrap();
        assert_eq!(serde_json::to_value(&format).unwrap(), person());
        assert_eq!(
            serde_json::to_value(ResponseFormat::JsonObject).unwrap(),
            json!({"type": "json_object"})
        );
    }

    #[test]
    fn unknown_types_and_missing_parts_name_the_field() {
        assert_eq!(param_of(json!("json")), "response_format");
        assert_eq!(param_of(json!({"type": "xml"})), "response_format.type");
        assert_eq!(param_of(json!({})), "response_format.type");
        assert_eq!(
            param_of(json!({"type": "json_schema"})),
            "response_format.json_schema"
        );
        assert_eq!(
            param_of(json!({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}})),
            "response_format.json_schema.name"
        );
        assert_eq!(
            param_of(
                json!({"type": "json_schema", "json_schema": {"name": "has space", "schema": {"type": "object"}}})
            ),
            "response_format.json_schema.name"
        );
        assert_eq!(
            param_of(json!({"type": "json_schema", "json_schema": {"name": "x"}})),
            "response_format.json_schema.schema"
        );
        assert_eq!(
            param_of(
                json!({"type": "json_schema", "json_schema": {"name": "x", "strict": "yes", "schema": {"type": "object"}}})
            ),
            "response_format.json_schema.strict"
        );
    }

    #[test]
    fn invalid_schemas_are_refused_with_where_they_fail() {
        let err = ResponseFormat::parse(&json!({"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "strin"}}}
        }}))
        .unwrap_err();
        assert_eq!(err.param, "response_format.json_schema.schema");
        assert!(
            err.message.contains("not a valid JSON Schema"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("/properties/a/type"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_schema_must_describe_an_object() {
        let err = ResponseFormat::parse(&json!({"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "array"}
        }}))
        .unwrap_err();
        assert!(
            err.message.contains("\"type\": \"object\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn remote_references_are_never_fetched() {
        let err = ResponseFormat::parse(&json!({"type": "json_schema", "json_schema": {
            "name": "x",
            "schema": {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}
        }}))
        .unwrap_err();
        assert_eq!(err.param, "response_format.json_schema.schema");
        // Local references still work.
        assert!(
            ResponseFormat::parse(&json!({"type": "json_schema", "json_schema": {
                "name": "x",
                "schema": {"type": "object", "$defs": {"n": {"type": "integer"}},
                           "properties": {"a": {"$ref": "#/$defs/n"}}}
            }}))
            .is_ok()
        );
    }

    #[test]
    fn oversized_schemas_are_refused() {
        let properties: serde_json::Map<String, Value> = (0..3_000)
            .map(|i| (format!("field_{i:05}"), json!({"type": "string"})))
            .collect();
        let err = ResponseFormat::parse(&json!({"type": "json_schema", "json_schema": {
            "name": "big", "schema": {"type": "object", "properties": properties}
        }}))
        .unwrap_err();
        assert!(
            err.message.contains("the limit is 65536"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_matching_reply_passes_and_text_accepts_anything() {
        let format = ResponseFormat::parse(&person()).unwrap();
        assert!(format.check(r#"{"name": "Ann", "age": 31}"#).is_ok());
        assert!(ResponseFormat::Text.check("anything at all").is_ok());
        assert!(ResponseFormat::JsonObject.check(r#" {"a": [1]} "#).is_ok());
    }

    #[test]
    fn a_schema_violation_names_the_instance_and_schema_paths_without_the_value() {
        let format = ResponseFormat::parse(&person()).unwrap();
        let failure = format
            .check(r#"{"name": "Ann", "age": "thirty-one", "tags": ["a", 7]}"#)
            .unwrap_err();
        assert_eq!(failure.schema_name.as_deref(), Some("person"));
        assert_eq!(failure.instance_path, "/age");
        assert_eq!(failure.schema_path, "/properties/age/type");
        assert_eq!(failure.more, 1);
        assert_eq!(failure.reason, r#"the value is not of type "integer""#);
        let message = failure.to_string();
        assert!(message.contains("instance path `/age`"), "{message}");
        assert!(
            message.contains("schema path `/properties/age/type`"),
            "{message}"
        );
        assert!(message.contains("(and 1 more error)"), "{message}");
        assert!(!message.contains("thirty-one"), "{message}");
    }

    #[test]
    fn a_missing_required_property_points_at_required() {
        let format = ResponseFormat::parse(&person()).unwrap();
        let failure = format.check(r#"{"name": "Ann"}"#).unwrap_err();
        assert_eq!(failure.instance_path, "");
        assert_eq!(failure.schema_path, "/required");
        assert!(failure.reason.contains("age"), "{}", failure.reason);
    }

    #[test]
    fn a_reply_that_is_not_json_quotes_only_a_short_excerpt() {
        let long = format!("Sure! Here is the JSON you asked for: {}", "x".repeat(500));
        let failure = ResponseFormat::JsonObject.check(&long).unwrap_err();
        assert_eq!(failure.instance_path, "");
        assert_eq!(failure.schema_path, "");
        assert!(
            failure.reason.contains("not valid JSON"),
            "{}",
            failure.reason
        );
        assert!(
            failure.reason.contains("Sure! Here is"),
            "{}",
            failure.reason
        );
        assert!(
            !failure.reason.contains(&"x".repeat(50)),
            "{}",
            failure.reason
        );
        assert!(
            ResponseFormat::JsonObject
                .check("")
                .unwrap_err()
                .reason
                .contains("empty")
        );
    }

    fn schema_format(schema: Value) -> Value {
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    }

    fn refused(schema: Value) -> FormatError {
        let err = ResponseFormat::parse(&schema_format(schema)).unwrap_err();
        assert_eq!(err.param, "response_format.json_schema.schema");
        err
    }

    #[test]
    fn patterns_that_need_a_backtracking_engine_are_refused_when_parsed() {
        for pattern in [r"^(a|aa)+\1$", r"^(?=.*\d)\w+$", r"^a+(?!b)", r"(?<=x)y"] {
            let err = refused(json!({"type": "object", "properties": {"p": {"pattern": pattern}}}));
            assert!(
                err.message.contains("linear time"),
                "{pattern}: {}",
                err.message
            );
            assert!(
                err.message.contains("/properties/p/pattern"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn catastrophic_backtracking_patterns_check_long_replies_in_linear_time() {
        // Exponential on a backtracking engine: each of these strings would take longer
        // than the age of the universe. A hang fails the test by the harness timeout.
        let hostile = format!("{}!", "a".repeat(20_000));
        for pattern in [r"^(a+)+$", r"^(a|a)*$", r"^(a|aa)+$", r"^(\w+\s?)+$"] {
            let format = ResponseFormat::parse(&schema_format(json!({"type": "object",
                "properties": {"s": {"type": "array", "items": {"type": "string", "pattern": pattern}}}
            })))
            .unwrap();
            let reply = json!({"s": vec![hostile.clone(); 20]}).to_string();
            let failure = format.check(&reply).unwrap_err();
            assert_eq!(failure.instance_path, "/s/0", "{pattern}");
            assert_eq!(failure.schema_path, "/properties/s/items/pattern");
            assert_eq!(failure.more, 19);
            assert!(!failure.reason.contains("aaaa"), "{}", failure.reason);
            let matching = json!({"s": ["a".repeat(20_000)]}).to_string();
            assert!(format.check(&matching).is_ok(), "{pattern}");
        }
    }

    #[test]
    fn a_schema_with_more_patterns_than_the_limit_is_refused() {
        let properties: serde_json::Map<String, Value> = (0..=MAX_PATTERNS)
            .map(|i| {
                (
                    format!("p{i}"),
                    json!({"type": "string", "pattern": format!("^{i}")}),
                )
            })
            .collect();
        let err = refused(json!({"type": "object", "properties": properties}));
        assert!(err.message.contains("the limit is 100"), "{}", err.message);
    }

    #[test]
    fn a_schema_whose_references_unfold_exponentially_is_refused() {
        // 1.5 KB that a validator without memory runs 2^22 times for one value.
        let mut defs = serde_json::Map::new();
        for i in 0..22 {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                json!({"anyOf": [{"$ref": next}, {"$ref": next}]}),
            );
        }
        defs.insert("d22".into(), json!({"type": "integer"}));
        let err = refused(json!({"type": "object", "$defs": defs,
            "properties": {"a": {"$ref": "#/$defs/d0"}}}));
        assert!(
            err.message.contains("unfolds to more than"),
            "{}",
            err.message
        );
    }

    /// A tree whose every level may be either of two references to the root: 2^depth visits
    /// for a reply `depth` levels deep.
    fn branching_tree() -> ResponseFormat {
        ResponseFormat::parse(&schema_format(json!({"type": "object", "properties": {
            "label": {"type": "string"},
            "child": {"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}
        }})))
        .unwrap()
    }

    fn nested(depth: usize, leaf: Value) -> String {
        let mut reply = leaf;
        for _ in 0..depth {
            reply = json!({"label": "n", "child": reply});
        }
        reply.to_string()
    }

    #[test]
    fn a_reply_too_costly_to_check_fails_as_a_validation_error_without_being_checked() {
        // 2^60 visits unbounded; a hang fails the test by the harness timeout.
        let failure = branching_tree()
            .check(&nested(60, json!({"label": 1})))
            .unwrap_err();
        assert_eq!(failure.instance_path, "");
        assert!(
            failure.reason.contains("too large to check"),
            "{}",
            failure.reason
        );
        assert!(failure.to_string().contains("schema `x`"), "{failure}");
        // Shallow replies of the same schema are checked in full.
        assert!(
            branching_tree()
                .check(&nested(8, json!({"label": "leaf"})))
                .is_ok()
        );
        let failure = branching_tree()
            .check(&nested(8, json!({"label": 1})))
            .unwrap_err();
        assert_eq!(failure.instance_path, "/child", "{failure}");
        assert_eq!(failure.schema_path, "/properties/child/anyOf");
    }

    #[test]
    fn a_failing_reply_too_costly_to_explain_fails_without_detail() {
        // 2^17 visits: validity is decided, errors are not collected.
        let failure = branching_tree()
            .check(&nested(16, json!({"label": 1})))
            .unwrap_err();
        assert!(
            failure
                .reason
                .contains("too large for the gateway to locate"),
            "{}",
            failure.reason
        );
        assert!(
            branching_tree()
                .check(&nested(16, json!({"label": "leaf"})))
                .is_ok()
        );
    }

    #[test]
    fn refusals_name_the_place_and_never_quote_the_schema() {
        let canary = "canaryschema7x";
        for schema in [
            json!({"type": "object", "properties": {"a": {"type": canary}}}),
            json!({"type": "object", "properties": {"a": {"pattern": format!("{canary}(?=x)")}}}),
            json!({"type": "object", "properties": {"a": {"pattern": format!("{canary}[")}}}),
            json!({"type": "object", "properties": {"a": {"$ref": format!("https://{canary}.example/a")}}}),
            json!({"type": "object", "properties": {"a": {"$ref": format!("#/$defs/{canary}")}}}),
            json!({"type": "object", "properties": {"a": {"minimum": canary}}}),
            json!({"type": "object", "required": canary}),
        ] {
            let err = refused(schema.clone());
            assert!(!err.message.contains(canary), "{schema}: {}", err.message);
            assert!(err.message.contains('/'), "names where: {}", err.message);
        }
        let err = ResponseFormat::parse(&json!({"type": canary})).unwrap_err();
        assert_eq!(err.param, "response_format.type");
        assert!(!err.message.contains(canary), "{}", err.message);
    }

    #[test]
    fn json_object_wants_an_object() {
        let failure = ResponseFormat::JsonObject.check("[1, 2]").unwrap_err();
        assert_eq!(failure.schema_path, "/type");
        assert!(failure.to_string().contains("got an array"));
    }
}
