//! Secrets (provider API keys) as a port. Values are `SecretString`: they never print.

use async_trait::async_trait;
use secrecy::SecretString;

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No secret (or field of a JSON secret) by that name.
    #[error("secret `{0}` is not set")]
    Missing(String),
    /// The secret store failed or could not be reached.
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
    /// The secret exists but does not hold what was expected (the message never quotes it).
    #[error("{0}")]
    Malformed(String),
}

/// Reads secrets (provider API keys) by name.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The secret called `name`.
    async fn secret(&self, name: &str) -> Result<SecretString, SecretError>;
}
