//! Secrets (provider API keys) as a port. Values are `SecretString`: they never print.

use async_trait::async_trait;
use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{0}` is not set")]
    Missing(String),
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
    /// The secret exists but does not hold what was expected (the message never quotes it).
    #[error("{0}")]
    Malformed(String),
}

#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn secret(&self, name: &str) -> Result<SecretString, SecretError>;
}
