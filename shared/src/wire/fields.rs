//! Describing a client body that does not fit its shape: the field's path and the type it
//! must have, never the value that was sent.
//!
//! serde's messages quote the value (`invalid type: string "...", expected a sequence`), and
//! a refusal's message is both the response and the request's log line, so quoting would copy
//! request content into the logs. The message is rebuilt from what serde reports that is not
//! the value: the path, the expected type (which comes from our own types), and the JSON type
//! of what was sent, read from the body itself.

use serde_json::Value;
use serde_path_to_error::Segment;

/// A field that does not fit, described without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path (`messages[0].content`), when the error is not about the whole body.
    pub param: Option<String>,
    /// What is wrong and what the field must be; never the value sent.
    pub message: String,
}

/// Describes an error from deserializing `body` with `serde_path_to_error`.
pub fn describe(err: &serde_path_to_error::Error<serde_json::Error>, body: &Value) -> FieldError {
    let path = err.path().to_string();
    let inner = strip_position(err.inner().to_string());
    if let Some(field) = quoted_after(&inner, "missing field `") {
        // The name is one of our fields; the path is its parent.
        let param = if path == "." {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return FieldError {
            message: format!("`{param}` is required"),
            param: Some(param),
        };
    }
    let got = value_at(body, err.path()).map(json_type);
    let expected = expected(&inner);
    let what = if path == "." {
        "the request body".to_owned()
    } else {
        format!("`{path}`")
    };
    let message = match (
        inner.starts_with("invalid type") || inner.starts_with("expected "),
        expected,
        got,
    ) {
        (true, Some(expected), Some(got)) => {
            format!("invalid type for {what}: expected {expected}, got {got}")
        }
        (_, Some(expected), _) => format!("invalid value for {what}: expected {expected}"),
        (_, None, _) => format!("invalid value for {what}"),
    };
    FieldError {
        param: (path != ".").then_some(path),
        message,
    }
}

/// What serde says was expected, in JSON's words. Expectations come from the types being
/// deserialized into (our own), never from the body; everything before the last
/// `, expected ` (where serde puts the value) is dropped.
fn expected(message: &str) -> Option<String> {
    let raw = match message.rsplit_once(", expected ") {
        Some((_, expected)) => expected,
        // Untagged enums with `#[serde(expecting = "expected ...")]` say only that.
        None => message.strip_prefix("expected ")?,
    };
    let json = match raw {
        "a sequence" => "an array",
        "a map" => "an object",
        "a borrowed string" => "a string",
        "a boolean" | "a string" => raw,
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128"
        | "usize" => "an integer",
        "f32" | "f64" => "a number",
        _ if raw.starts_with("struct ") => "an object",
        _ => raw,
    };
    Some(json.to_owned())
}

/// serde_json ends a parse error with ` at line L column C`.
fn strip_position(mut message: String) -> String {
    if let Some(at) = message.rfind(" at line ") {
        let tail = &message[at + " at line ".len()..];
        let numeric = tail
            .split(" column ")
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if numeric {
            message.truncate(at);
        }
    }
    message
}

fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// The part of `body` at `path`, when the path leads somewhere in it.
fn value_at<'v>(body: &'v Value, path: &serde_path_to_error::Path) -> Option<&'v Value> {
    path.iter().try_fold(body, |value, segment| match segment {
        Segment::Seq { index } => value.get(index),
        Segment::Map { key } => value.get(key),
        Segment::Enum { .. } | Segment::Unknown => None,
    })
}

/// The JSON type of a value, as a message names it.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // Only deserialized.
    struct Shape {
        name: String,
        count: Option<i64>,
        ratio: Option<f64>,
        items: Option<Vec<Item>>,
        either: Option<Either>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        on: bool,
    }

    #[derive(Debug, Deserialize)]
    #[serde(untagged, expecting = "expected a string or an array of strings")]
    #[allow(dead_code)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }

    fn describe_body(body: Value) -> FieldError {
        let err = serde_path_to_error::deserialize::<_, Shape>(&body).unwrap_err();
        describe(&err, &body)
    }

    #[test]
    fn wrong_types_give_the_path_the_expected_type_and_what_was_sent() {
        let canary = "canaryfield1x";
        for (body, param, message) in [
            (
                json!({"name": 7}),
                "name",
                "invalid type for `name`: expected a string, got an integer",
            ),
            (
                json!({"name": "n", "count": canary}),
                "count",
                "invalid type for `count`: expected an integer, got a string",
            ),
            (
                json!({"name": "n", "count": 1.5}),
                "count",
                "invalid type for `count`: expected an integer, got a number",
            ),
            (
                json!({"name": "n", "ratio": [canary]}),
                "ratio",
                "invalid type for `ratio`: expected a number, got an array",
            ),
            (
                json!({"name": "n", "items": canary}),
                "items",
                "invalid type for `items`: expected an array, got a string",
            ),
            (
                json!({"name": "n", "items": [canary]}),
                "items[0]",
                "invalid type for `items[0]`: expected an object, got a string",
            ),
            (
                json!({"name": "n", "items": [{"on": canary}]}),
                "items[0].on",
                "invalid type for `items[0].on`: expected a boolean, got a string",
            ),
            (
                json!({"name": "n", "either": {"k": canary}}),
                "either",
                "invalid type for `either`: expected a string or an array of strings, got an object",
            ),
        ] {
            let err = describe_body(body);
            assert_eq!(err.param.as_deref(), Some(param));
            assert_eq!(err.message, message);
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(
            describe_body(json!({})),
            FieldError {
                param: Some("name".into()),
                message: "`name` is required".into()
            }
        );
        let err = describe_body(json!({"name": "n", "items": [{}]}));
        assert_eq!(err.param.as_deref(), Some("items[0].on"));
    }

    #[test]
    fn a_value_that_imitates_serdes_wording_is_still_not_quoted() {
        let sneaky = "canary2x\", expected a unicorn";
        let err = describe_body(json!({"name": "n", "count": sneaky}));
        assert_eq!(
            err.message,
            "invalid type for `count`: expected an integer, got a string"
        );
    }

    #[test]
    fn parse_positions_are_dropped() {
        assert_eq!(
            strip_position("invalid type: map, expected a string at line 1 column 9".into()),
            "invalid type: map, expected a string"
        );
        assert_eq!(strip_position("at line one".into()), "at line one");
    }
}
