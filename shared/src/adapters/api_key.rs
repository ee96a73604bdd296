//! A credential that adapters present on every call: either fixed at cold start (environment,
//! `tollgate serve`) or read from a secret store on first use and cached.
//!
//! A managed key makes no call at construction, so a Lambda cold start never waits on Secrets
//! Manager. The first request fetches it; later requests use the cached value until `ttl`
//! passes, then one caller refreshes it while the others wait for that one fetch (single
//! flight). If a refresh fails, the last good value keeps serving (a Secrets Manager blip must
//! not take the gateway down), and [`ApiKey::invalidate`] forces a refetch after the provider
//! refused the key (a rotation).

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

use crate::ports::secrets::{SecretError, SecretSource};

/// How long a fetched secret is used before it is read again.
pub const DEFAULT_SECRET_TTL: Duration = Duration::from_secs(300);

/// A provider or index API key: fixed, or read from a secret store and cached.
#[derive(Clone)]
pub enum ApiKey {
    /// Fixed for the life of the process.
    Static(SecretString),
    /// Read from a secret store on first use, cached for its TTL.
    Managed(Arc<ManagedKey>),
}

impl ApiKey {
    /// A key read from `source` under `secret_id`; with `field`, the secret is a JSON object and
    /// the key is that field's string value.
    pub fn managed(
        source: Arc<dyn SecretSource>,
        secret_id: impl Into<String>,
        field: Option<String>,
        ttl: Duration,
    ) -> Self {
        Self::Managed(Arc::new(ManagedKey {
            source,
            secret_id: secret_id.into(),
            field,
            ttl,
            cached: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }))
    }

    /// The key, fetching it first when it is managed and not cached (or expired).
    pub async fn resolve(&self) -> Result<SecretString, SecretError> {
        match self {
            Self::Static(key) => Ok(key.clone()),
            Self::Managed(managed) => managed.resolve().await,
        }
    }

    /// The key if it is known without a fetch (for scrubbing error messages).
    pub fn current(&self) -> Option<SecretString> {
        match self {
            Self::Static(key) => Some(key.clone()),
            Self::Managed(managed) => managed.cached().map(|c| c.value),
        }
    }

    /// The provider refused the key: a managed key is fetched again on next use.
    pub fn invalidate(&self) {
        if let Self::Managed(managed) = self {
            managed.invalidate();
        }
    }

    /// Whether the key is read from a secret store.
    pub fn is_managed(&self) -> bool {
        matches!(self, Self::Managed(_))
    }
}

impl From<SecretString> for ApiKey {
    fn from(key: SecretString) -> Self {
        Self::Static(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        Self::Static(SecretString::from(key))
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        Self::Static(SecretString::from(key))
    }
}

/// Names where a key comes from, never the key.
impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(_) => f.write_str("ApiKey::Static([REDACTED])"),
            Self::Managed(managed) => f
                .debug_struct("ApiKey::Managed")
                .field("secret_id", &managed.secret_id)
                .field("field", &managed.field)
                .field("ttl", &managed.ttl)
                .finish_non_exhaustive(),
        }
    }
}

#[derive(Clone)]
struct Cached {
    value: SecretString,
    fetched: Instant,
    /// Set by `invalidate`: the value may still serve if a refetch fails.
    stale: bool,
}

/// A key read from a secret store on first use and cached (see the module docs).
pub struct ManagedKey {
    source: Arc<dyn SecretSource>,
    secret_id: String,
    field: Option<String>,
    ttl: Duration,
    cached: RwLock<Option<Cached>>,
    refresh: tokio::sync::Mutex<()>,
}

impl ManagedKey {
    /// The secret the key is read from.
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// The JSON field of the secret holding the key; `None` when the whole secret is the key.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    fn cached(&self) -> Option<Cached> {
        // A poisoned lock only means a writer panicked mid-assignment of an Option: the value
        // is still a whole one.
        match self.cached.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn fresh(&self) -> Option<SecretString> {
        self.cached()
            .filter(|c| !c.stale && c.fetched.elapsed() < self.ttl)
            .map(|c| c.value)
    }

    fn store(&self, value: Option<Cached>) {
        match self.cached.write() {
            Ok(mut guard) => *guard = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }

    fn invalidate(&self) {
        if let Some(mut cached) = self.cached() {
            cached.stale = true;
            self.store(Some(cached));
        }
    }

    async fn resolve(&self) -> Result<SecretString, SecretError> {
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        let _single_flight = self.refresh.lock().await;
        // Another caller may have refreshed while this one waited.
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        match self.fetch().await {
            Ok(value) => {
                self.store(Some(Cached {
                    value: value.clone(),
                    fetched: Instant::now(),
                    stale: false,
                }));
                Ok(value)
            }
            Err(error) => match self.cached() {
                Some(last) => {
                    tracing::warn!(
                        secret_id = %self.secret_id,
                        %error,
                        "refreshing a secret failed; the last value keeps serving"
                    );
                    Ok(last.value)
                }
                None => Err(error),
            },
        }
    }

    async fn fetch(&self) -> Result<SecretString, SecretError> {
        let raw = self.source.secret(&self.secret_id).await?;
        let value = match &self.field {
            None => raw,
            Some(field) => extract_field(&self.secret_id, field, raw.expose_secret())?,
        };
        if value.expose_secret().trim().is_empty() {
            return Err(SecretError::Malformed(format!(
                "secret `{}` holds an empty key",
                self.secret_id
            )));
        }
        Ok(value)
    }
}

/// `field` of the JSON object in `raw`. Errors name the secret and field, never the content.
fn extract_field(secret_id: &str, field: &str, raw: &str) -> Result<SecretString, SecretError> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(|_| {
            SecretError::Malformed(format!(
                "secret `{secret_id}` is not a JSON object (expected {{\"{field}\": \"...\"}})"
            ))
        })?;
    match object.get(field) {
        Some(serde_json::Value::String(value)) => Ok(SecretString::from(value.clone())),
        Some(_) => Err(SecretError::Malformed(format!(
            "field `{field}` of secret `{secret_id}` is not a string"
        ))),
        None => Err(SecretError::Missing(format!("{secret_id}#{field}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;

    /// A secret store whose value the test changes, counting reads.
    struct Rotating {
        value: std::sync::Mutex<Result<String, String>>,
        reads: AtomicUsize,
    }

    impl Rotating {
        fn new(value: &str) -> Arc<Self> {
            Arc::new(Self {
                value: std::sync::Mutex::new(Ok(value.to_owned())),
                reads: AtomicUsize::new(0),
            })
        }
        fn set(&self, value: Result<&str, &str>) {
            *self.value.lock().unwrap() = value.map(str::to_owned).map_err(str::to_owned);
        }
        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl SecretSource for Rotating {
        async fn secret(&self, _name: &str) -> Result<SecretString, SecretError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            match &*self.value.lock().unwrap() {
                Ok(v) => Ok(SecretString::from(v.clone())),
                Err(e) => Err(SecretError::Unavailable(e.clone())),
            }
        }
    }

    fn key(source: &Arc<Rotating>, field: Option<&str>, ttl: Duration) -> ApiKey {
        ApiKey::managed(source.clone(), "prod/llm", field.map(str::to_owned), ttl)
    }

    #[tokio::test]
    async fn a_managed_key_is_fetched_on_first_use_and_then_cached() {
        let source = Rotating::new("sk-one");
        let key = key(&source, None, Duration::from_secs(60));
        assert_eq!(source.reads(), 0, "construction fetches nothing");
        assert!(key.current().is_none());
        for _ in 0..5 {
            assert_eq!(key.resolve().await.unwrap().expose_secret(), "sk-one");
        }
        assert_eq!(source.reads(), 1);
        assert_eq!(key.current().unwrap().expose_secret(), "sk-one");
    }

    #[tokio::test]
    async fn concurrent_first_uses_share_one_fetch() {
        let source = Rotating::new("sk-one");
        let key = key(&source, None, Duration::from_secs(60));
        let calls = (0..32).map(|_| key.resolve());
        let values = futures_util::future::join_all(calls).await;
        assert!(
            values
                .iter()
                .all(|v| v.as_ref().unwrap().expose_secret() == "sk-one")
        );
        assert_eq!(source.reads(), 1);
    }

    #[tokio::test]
    async fn an_expired_key_is_read_again_and_a_rotation_is_picked_up() {
        let source = Rotating::new("sk-one");
        let key = key(&source, None, Duration::ZERO);
        assert_eq!(key.resolve().await.unwrap().expose_secret(), "sk-one");
        source.set(Ok("sk-two"));
        assert_eq!(key.resolve().await.unwrap().expose_secret(), "sk-two");
        assert_eq!(source.reads(), 2);
    }

    #[tokio::test]
    async fn invalidate_forces_a_refetch_before_the_ttl() {
        let source = Rotating::new("sk-one");
        let key = key(&source, None, Duration::from_secs(3600));
        key.resolve().await.unwrap();
        source.set(Ok("sk-two"));
        assert_eq!(key.resolve().await.unwrap().expose_secret(), "sk-one");
        key.invalidate();
        assert_eq!(key.resolve().await.unwrap().expose_secret(), "sk-two");
        assert_eq!(source.reads(), 2);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_serving_the_last_value() {
        let source = Rotating::new("sk-one");
        let key = key(&source, None, Duration::ZERO);
        key.resolve().await.unwrap();
        source.set(Err("throttled"));
        assert_eq!(key.resolve().await.unwrap().expose_secret(), "sk-one");
    }

    #[tokio::test]
    async fn a_failed_first_fetch_is_an_error() {
        let source = Rotating::new("x");
        source.set(Err("no route to host"));
        let key = key(&source, None, Duration::from_secs(60));
        assert!(matches!(
            key.resolve().await,
            Err(SecretError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_field_of_a_json_secret_is_extracted() {
        let source =
            Rotating::new(r#"{"OPENAI_API_KEY":"sk-openai","ANTHROPIC_API_KEY":"sk-ant"}"#);
        let openai = key(&source, Some("OPENAI_API_KEY"), Duration::from_secs(60));
        assert_eq!(openai.resolve().await.unwrap().expose_secret(), "sk-openai");
        let missing = key(&source, Some("GEMINI_API_KEY"), Duration::from_secs(60));
        let err = missing.resolve().await.unwrap_err();
        assert!(matches!(err, SecretError::Missing(_)));
        assert_eq!(
            err.to_string(),
            "secret `prod/llm#GEMINI_API_KEY` is not set"
        );
    }

    #[tokio::test]
    async fn malformed_secrets_are_errors_that_never_quote_the_content() {
        let source = Rotating::new("sk-not-json-but-secret");
        let err = key(&source, Some("OPENAI_API_KEY"), Duration::from_secs(60))
            .resolve()
            .await
            .unwrap_err();
        assert!(matches!(err, SecretError::Malformed(_)));
        assert!(!err.to_string().contains("sk-not-json"));
        source.set(Ok(r#"{"OPENAI_API_KEY": 42}"#));
        let err = key(&source, Some("OPENAI_API_KEY"), Duration::from_secs(60))
            .resolve()
            .await
            .unwrap_err();
        assert!(matches!(err, SecretError::Malformed(_)));
        source.set(Ok("   "));
        let err = key(&source, None, Duration::from_secs(60))
            .resolve()
            .await
            .unwrap_err();
        assert!(matches!(err, SecretError::Malformed(_)));
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let fixed = ApiKey::from("sk-very-secret");
        assert!(!format!("{fixed:?}").contains("sk-very-secret"));
        let source = Rotating::new("sk-very-secret");
        let managed = key(&source, Some("OPENAI_API_KEY"), Duration::from_secs(60));
        let shown = format!("{managed:?}");
        assert!(shown.contains("prod/llm") && shown.contains("OPENAI_API_KEY"));
        assert!(!shown.contains("sk-very-secret"));
    }
}
