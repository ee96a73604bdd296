//! Identifiers that can only exist valid.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A tenant identifier: 1 to 64 characters of `[a-z0-9_-]`, starting with a letter or digit.
///
/// Tenant ids end up in store keys, metric dimensions and vector payloads, so they are kept to a
/// small, unambiguous alphabet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Accepts a valid tenant id; [`IdError::Tenant`] otherwise.
    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let raw = raw.into();
        let valid_len = (1..=64).contains(&raw.len());
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        let valid_start = raw
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if valid_len && valid_chars && valid_start {
            Ok(Self(raw))
        } else {
            Err(IdError::Tenant(raw))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request id: the API Gateway request id when there is one, otherwise a fresh UUIDv7.
/// It is also the usage event's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh UUIDv7.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Accepts an upstream id (API Gateway's) if it is printable and reasonably short;
    /// otherwise generates a fresh one so a hostile header cannot poison logs.
    pub fn from_upstream(raw: &str) -> Self {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=');
        if ok {
            Self(raw.to_owned())
        } else {
            Self::generate()
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An identifier that failed validation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Not a valid tenant id (carries what was given).
    #[error(
        "invalid tenant id `{0}`: use 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    Tenant(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_restricted_to_a_safe_alphabet() {
        assert!(TenantId::parse("acme-corp_1").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("-leading").is_err());
        assert!(TenantId::parse("Upper").is_err());
        assert!(TenantId::parse("a#b").is_err());
        assert!(TenantId::parse("a".repeat(65)).is_err());
    }

    #[test]
    fn hostile_upstream_request_ids_are_replaced() {
        assert_eq!(RequestId::from_upstream("abc-123=").as_str(), "abc-123=");
        let replaced = RequestId::from_upstream("bad\nid");
        assert_ne!(replaced.as_str(), "bad\nid");
        assert_eq!(replaced.as_str().len(), 36);
    }
}
