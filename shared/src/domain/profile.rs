//! End-user profiles: a small, flat JSON object a tenant keeps per end user, rendered into the
//! tenant's system prompt when a chat request's `user` names it.
//!
//! A profile belongs to `(tenant, user_id)`: the same user id under another tenant is another
//! user. Everything here is bounded, because a profile is read on the hot path and rendered into
//! a prompt the tenant pays for:
//!
//! - **user id**: 1-256 bytes (the chat `user` field's bound) of `A-Z a-z 0-9` and
//!   `- _ . @ : + = | ~` (e-mail addresses, UUIDs, `auth0|…` ids). No `/`, `#`, `%`, spaces or
//!   control characters, so an id is one URL path segment and one unambiguous store-key part.
//! - **profile**: a JSON object of at most [`MAX_FIELDS`] fields; each key 1-64 characters of
//!   `A-Z a-z 0-9 _` (exactly what a `{{user.<key>}}` template variable may name); each value a
//!   string (at most [`MAX_STRING_BYTES`] bytes), a number or a boolean: no nulls, arrays or
//!   nested objects, so every field renders as one piece of text. Serialized compactly, at most
//!   [`MAX_PROFILE_BYTES`] bytes.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::TenantId;

/// Longest user id, in bytes (the chat `user` field's bound).
pub const MAX_USER_ID_BYTES: usize = 256;
/// Most fields a profile may have.
pub const MAX_FIELDS: usize = 32;
/// Longest field name, in bytes.
pub const MAX_KEY_BYTES: usize = 64;
/// Longest string value, in bytes of UTF-8.
pub const MAX_STRING_BYTES: usize = 1_024;
/// Largest profile, serialized as compact JSON.
pub const MAX_PROFILE_BYTES: usize = 4_096;
/// Largest `PUT` body (whitespace included); larger bodies are refused before parsing (413).
pub const MAX_BODY_BYTES: usize = 16 * 1_024;

/// An end user's id as the tenant names it. Valid by construction (see the module header).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Accepts a valid user id (see the module docs); [`ProfileError::BadUserId`] otherwise.
    pub fn parse(raw: impl Into<String>) -> Result<Self, ProfileError> {
        let raw = raw.into();
        let valid_len = (1..=MAX_USER_ID_BYTES).contains(&raw.len());
        let valid_chars = raw.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'_' | b'.' | b'@' | b':' | b'+' | b'=' | b'|' | b'~'
                )
        });
        if valid_len && valid_chars {
            Ok(Self(raw))
        } else {
            Err(ProfileError::BadUserId)
        }
    }

    /// A user id from one URL path segment: `%XX` escapes are decoded first (clients encode
    /// `|` and `@`), then the id is validated as usual. A malformed escape is a bad id.
    pub fn from_path_segment(segment: &str) -> Result<Self, ProfileError> {
        let bytes = segment.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = bytes.get(i + 1..i + 3).ok_or(ProfileError::BadUserId)?;
                let text = std::str::from_utf8(hex).map_err(|_| ProfileError::BadUserId)?;
                let byte = u8::from_str_radix(text, 16).map_err(|_| ProfileError::BadUserId)?;
                out.push(byte);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        let decoded = String::from_utf8(out).map_err(|_| ProfileError::BadUserId)?;
        Self::parse(decoded)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = ProfileError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One profile field's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProfileValue {
    /// A JSON boolean.
    Bool(bool),
    /// A JSON number, as written.
    Number(serde_json::Number),
    /// A JSON string.
    Text(String),
}

impl ProfileValue {
    /// The text a `{{user.<key>}}` variable renders: strings verbatim, numbers as JSON wrote
    /// them, booleans as `true`/`false`.
    pub fn render(&self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Number(n) => n.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

/// A validated profile: bounded, flat, keys usable as template variable names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserProfile(BTreeMap<String, ProfileValue>);

impl UserProfile {
    /// Parses and validates a `PUT` body.
    pub fn from_json(body: &[u8]) -> Result<Self, ProfileError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ProfileError::BadJson(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(ProfileError::NotAnObject);
        };
        if map.len() > MAX_FIELDS {
            return Err(ProfileError::TooManyFields(map.len()));
        }
        let mut fields = BTreeMap::new();
        for (key, value) in map {
            if !valid_key(&key) {
                return Err(ProfileError::BadKey);
            }
            let value = match value {
                Value::Bool(b) => ProfileValue::Bool(b),
                Value::Number(n) => ProfileValue::Number(n),
                Value::String(s) if s.len() > MAX_STRING_BYTES => {
                    return Err(ProfileError::StringTooLong(key));
                }
                Value::String(s) => ProfileValue::Text(s),
                Value::Null | Value::Array(_) | Value::Object(_) => {
                    return Err(ProfileError::BadValue(key));
                }
            };
            fields.insert(key, value);
        }
        let profile = Self(fields);
        let size = profile.to_json().len();
        if size > MAX_PROFILE_BYTES {
            return Err(ProfileError::TooLarge(size));
        }
        Ok(profile)
    }

    /// The value of field `key`, if the profile has it.
    pub fn get(&self, key: &str) -> Option<&ProfileValue> {
        self.0.get(key)
    }

    /// How many fields the profile has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the profile has no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compact JSON, keys in order: what `{{user_profile}}` renders and what the size bound
    /// measures.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }
}

/// A field name a template can address as `{{user.<key>}}`.
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_BYTES).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// What the store keeps for one end user of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// The tenant the end user belongs to.
    pub tenant_id: TenantId,
    /// The end user, as the tenant names them.
    pub user_id: UserId,
    /// The validated profile.
    pub profile: UserProfile,
    /// When the profile was last written.
    pub updated_at: DateTime<Utc>,
}

/// Why a user id or a profile was refused. Each names the request parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The user id is empty, too long, or has a character outside the allowed set.
    #[error(
        "invalid user id: use 1-{MAX_USER_ID_BYTES} characters of A-Z, a-z, 0-9 and - _ . @ : + = | ~"
    )]
    BadUserId,
    /// The body is not JSON (carries the parser's message).
    #[error("the profile is not valid JSON: {0}")]
    BadJson(String),
    /// The body is JSON but not an object.
    #[error("the profile must be a JSON object")]
    NotAnObject,
    /// More than [`MAX_FIELDS`] fields (carries how many).
    #[error("a profile has at most {MAX_FIELDS} fields; got {0}")]
    TooManyFields(usize),
    /// The name is not repeated: it is the client's text, and refusals are logged.
    #[error(
        "a profile field name is invalid: use 1-{MAX_KEY_BYTES} characters of A-Z, a-z, 0-9 and '_'"
    )]
    BadKey,
    /// A field's value is null, an array or an object (carries the field name).
    #[error("profile field `{0}` must be a string, a number or a boolean")]
    BadValue(String),
    /// A string value is over [`MAX_STRING_BYTES`] (carries the field name).
    #[error("profile field `{0}` is longer than {MAX_STRING_BYTES} bytes")]
    StringTooLong(String),
    /// The compact JSON is over [`MAX_PROFILE_BYTES`] (carries its size).
    #[error("the profile is {0} bytes as compact JSON; at most {MAX_PROFILE_BYTES} are allowed")]
    TooLarge(usize),
}

impl ProfileError {
    /// The OpenAI error shape's `param`: `user_id`, `profile`, or `profile.<key>`.
    pub fn param(&self) -> String {
        match self {
            Self::BadUserId => "user_id".to_owned(),
            Self::BadValue(key) | Self::StringTooLong(key) => format!("profile.{key}"),
            Self::BadJson(_)
            | Self::NotAnObject
            | Self::TooManyFields(_)
            | Self::BadKey
            | Self::TooLarge(_) => "profile".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<UserProfile, ProfileError> {
        UserProfile::from_json(json.as_bytes())
    }

    #[test]
    fn user_ids_accept_common_id_shapes_and_refuse_path_and_key_characters() {
        for ok in [
            "user-1",
            "ada@example.com",
            "auth0|5f1c",
            "0b8e2c1e-4d2f-4c1a-9d9e-000000000001",
            "a.b_c:d+e=f~g",
        ] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a#b", "a b", "a%41", "é", "a\nb"] {
            assert_eq!(UserId::parse(bad), Err(ProfileError::BadUserId), "{bad:?}");
        }
        assert!(UserId::parse("x".repeat(256)).is_ok());
        assert!(UserId::parse("x".repeat(257)).is_err());
    }

    #[test]
    fn path_segments_are_percent_decoded_before_validation() {
        assert_eq!(
            UserId::from_path_segment("auth0%7C42").unwrap().as_str(),
            "auth0|42"
        );
        assert_eq!(
            UserId::from_path_segment("ada%40example.com")
                .unwrap()
                .as_str(),
            "ada@example.com"
        );
        for bad in ["a%2Fb", "a%2", "a%zz", "a%20b", "%C3%28"] {
            assert!(UserId::from_path_segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_flat_object_of_strings_numbers_and_booleans_is_a_profile() {
        let p = parse(r#"{"name":"Ada","visits":3,"ratio":1.5,"vip":true}"#).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p.get("name").unwrap().render(), "Ada");
        assert_eq!(p.get("visits").unwrap().render(), "3");
        assert_eq!(p.get("ratio").unwrap().render(), "1.5");
        assert_eq!(p.get("vip").unwrap().render(), "true");
        assert_eq!(
            p.to_json(),
            r#"{"name":"Ada","ratio":1.5,"vip":true,"visits":3}"#
        );
        assert!(parse("{}").unwrap().is_empty());
    }

    #[test]
    fn every_refusal_names_its_param() {
        let param = |json: &str| parse(json).unwrap_err().param();
        assert_eq!(param("not json"), "profile");
        assert_eq!(param("[1,2]"), "profile");
        assert_eq!(param(r#""text""#), "profile");
        assert_eq!(param(r#"{"a b":1}"#), "profile");
        assert_eq!(param(r#"{"user.name":1}"#), "profile");
        assert_eq!(param(r#"{"tags":["a"]}"#), "profile.tags");
        assert_eq!(param(r#"{"address":{"city":"x"}}"#), "profile.address");
        assert_eq!(param(r#"{"gone":null}"#), "profile.gone");
        let long = format!(r#"{{"bio":"{}"}}"#, "x".repeat(MAX_STRING_BYTES + 1));
        assert_eq!(param(&long), "profile.bio");
        let many: serde_json::Map<String, Value> = (0..=MAX_FIELDS)
            .map(|i| (format!("k{i}"), Value::from(i)))
            .collect();
        assert_eq!(
            parse(&Value::Object(many).to_string()),
            Err(ProfileError::TooManyFields(MAX_FIELDS + 1))
        );
    }

    #[test]
    fn the_size_bound_is_on_compact_json_not_on_whitespace() {
        // Five fields of 900 bytes each: every value is allowed, the whole is not.
        let big: serde_json::Map<String, Value> = (0..5)
            .map(|i| (format!("k{i}"), Value::from("x".repeat(900))))
            .collect();
        assert!(matches!(
            parse(&Value::Object(big).to_string()),
            Err(ProfileError::TooLarge(_))
        ));
        let padded = format!("{{ {} \"a\" : 1 }}", " ".repeat(MAX_PROFILE_BYTES));
        assert!(parse(&padded).is_ok());
    }

    #[test]
    fn stored_profiles_round_trip_through_json() {
        let p = parse(r#"{"name":"Grüße 🌍","n":-12.5e3,"big":18446744073709551615,"f":false}"#)
            .unwrap();
        let back: UserProfile = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(back, p);
    }
}
