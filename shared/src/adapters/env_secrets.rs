//! Secrets captured once at cold start (from the environment, by `config`). The embedded
//! default and `tollgate serve` use this; production reads Secrets Manager.

use std::collections::HashMap;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::ports::secrets::{SecretError, SecretSource};

/// A [`SecretSource`] over values fixed at construction.
#[derive(Default)]
pub struct StaticSecrets {
    values: HashMap<String, SecretString>,
}

impl StaticSecrets {
    /// No secrets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the secret `name`.
    pub fn with(mut self, name: impl Into<String>, value: SecretString) -> Self {
        self.values.insert(name.into(), value);
        self
    }
}

impl std::fmt::Debug for StaticSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticSecrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[async_trait]
impl SecretSource for StaticSecrets {
    async fn secret(&self, name: &str) -> Result<SecretString, SecretError> {
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::Missing(name.to_owned()))
    }
}
