//! Configuration: every environment variable Tollgate reads, read once at cold start and
//! validated here. The only other environment reads are `RUST_LOG` (`telemetry`) and the AWS
//! SDK's own variables (`adapters::aws`).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `TOLLGATE_PROVIDERS` | `real` in Lambda, `auto` in `tollgate serve` | `real`: only providers with a key; `simulated`: the simulated provider for both; `auto`: real where a key is set, simulated elsewhere |
//! | `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` | unset | provider keys (local development; production uses the secret below) |
//! | `TOLLGATE_PROVIDER_SECRET_ID` | unset | Secrets Manager id or ARN of a JSON secret `{"OPENAI_API_KEY": "...", "ANTHROPIC_API_KEY": "..."}`; both providers are configured and each reads its field on first use |
//! | `TOLLGATE_SECRET_TTL_SECS` | 300 | how long a container uses a fetched secret before reading it again (a provider's 401 forces a re-read) |
//! | `OPENAI_BASE_URL` | `https://api.openai.com/v1` | any OpenAI-compatible endpoint |
//! | `ANTHROPIC_BASE_URL` | `https://api.anthropic.com` | any Anthropic-compatible endpoint |
//! | `TOLLGATE_BEDROCK_REGION` | unset | turns Bedrock on: Converse calls go to this region's runtime, signed with the function's role (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME` overrides the endpoint) |
//! | `TOLLGATE_PROVIDER_TIMEOUT_SECS` | 60 | stream start limit, and the base of a buffered call's limit |
//! | `TOLLGATE_PROVIDER_MIN_TOKENS_PER_SEC` | 20 | a buffered call also gets `max_tokens / this` seconds for its reply |
//! | `TOLLGATE_DEADLINE_MARGIN_MS` | 3000 | provider calls end this long before the Lambda invocation's deadline, leaving time to meter them |
//! | `TOLLGATE_CONNECT_TIMEOUT_SECS` | 5 | TCP+TLS connect limit |
//! | `TOLLGATE_STREAM_IDLE_TIMEOUT_SECS` | 30 | longest gap between stream chunks |
//! | `TOLLGATE_MAX_RETRIES` | 2 | provider retries on 429/5xx/timeout |
//! | `TOLLGATE_ANTHROPIC_CACHE_MIN_TOKENS` | 1024 | system prompts this long get `cache_control` |
//! | `TOLLGATE_DEFAULT_MAX_TOKENS` | 4096 | Anthropic adapter: `max_tokens` for a caller that sets none (chat always sets the reservation's cap) |
//! | `TOLLGATE_SIMULATED_LATENCY_MS` | 0 | simulated provider: time to first token |
//! | `TOLLGATE_SIMULATED_CHUNK_MS` | 0 | simulated provider: gap between stream chunks |
//! | `TOLLGATE_PRICES_FILE` | unset | JSON price overrides merged over the bundled table |
//! | `TOLLGATE_MAX_BODY_BYTES` | 4194304 | request bodies larger than this get 413 |
//! | `TOLLGATE_DEFAULT_RESERVE_TOKENS` | 1024 | completion tokens reserved, and sent upstream as the reply's cap, when a request sets no `max_tokens` |
//! | `TOLLGATE_DIRECTORY_CACHE_SECS` | 30 | how long a container caches keys and tenant configs (0: off) |
//! | `TOLLGATE_STORE` | `dynamodb` in Lambda, `memory` in `tollgate serve` | where state lives |
//! | `TOLLGATE_TABLE_PREFIX` | `tollgate` | DynamoDB tables are `<prefix>-tenants`, `-usage`, `-limits`, `-cache` |
//! | `TOLLGATE_QDRANT_URL` | unset (embedded index) | Qdrant's gRPC URL, e.g. `https://xyz.cloud.qdrant.io:6334` |
//! | `TOLLGATE_QDRANT_API_KEY` | unset | Qdrant Cloud API key (local development) |
//! | `TOLLGATE_QDRANT_API_KEY_SECRET_ID` | unset | Secrets Manager id or ARN of a secret whose string is the Qdrant API key, read on first use |
//! | `TOLLGATE_QDRANT_COLLECTION` | `tollgate-chunks` | the one collection all tenants share |
//! | `TOLLGATE_EMBEDDING_MODEL` | `text-embedding-3-small` | OpenAI embedding model |
//! | `TOLLGATE_EMBEDDING_DIMENSIONS` | 256 | vector size (text-embedding-3 models shorten on request) |
//! | `TOLLGATE_ANOMALY_SPIKE_RATIO` | 3 | anomaly-scheduler: an hour costing at least this many times the tenant's 7-day hourly average is a spike ([`anomaly`]) |
//! | `TOLLGATE_ANOMALY_COST_FLOOR_USD` | 0.50 | anomaly-scheduler: hours costing less are never a spike |
//! | `TOLLGATE_ANOMALY_QUALITY_DROP_PERCENT` | 20 | anomaly-scheduler: a day's average quality this far (relative) below its 7-day average is a drop |
//! | `TOLLGATE_ANOMALY_QUALITY_MIN_GRADED` | 20 | anomaly-scheduler: graded answers the day and the 7 days each need before quality is judged |
//! | `TOLLGATE_ANOMALY_CONCURRENCY` | 16 | anomaly-scheduler: tenants checked at once |
//! | `TOLLGATE_ANOMALY_ALERTS` | `cloudwatch` | anomaly-scheduler: `cloudwatch` (PutMetricData) or `emf` (metrics from log lines) |

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::adapters::anthropic::AnthropicProvider;
use crate::adapters::api_key::{ApiKey, DEFAULT_SECRET_TTL};
use crate::adapters::aws::AwsConfigSource;
use crate::adapters::bedrock::BedrockProvider;
use crate::adapters::http_provider::{ProviderSettings, ProviderSetupError};
use crate::adapters::openai::OpenAiProvider;
use crate::adapters::retry::RetryPolicy;
use crate::adapters::secrets_manager::SecretsManagerSource;
use crate::adapters::sigv4::{AwsSigner, CredentialSource};
use crate::adapters::simulated::{SimulatedLatency, SimulatedProvider};
use crate::domain::pricing::{PriceTable, PriceTableError};
use crate::domain::tenant::ProviderKind;
use crate::ports::secrets::SecretSource;
use crate::service::Providers;

pub mod anomaly;

/// `OPENAI_BASE_URL` when unset: OpenAI's API, up to and including `/v1`.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// `ANTHROPIC_BASE_URL` when unset: Anthropic's API host, without a path.
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// Which providers answer (`TOLLGATE_PROVIDERS`); the binary picks the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderMode {
    /// Only providers with a key; a provider without one is not configured and its routes
    /// answer 503. The Lambda default.
    Real,
    /// The simulated provider for both, keys or not; embeddings use the local embedder.
    Simulated,
    /// Real where a key is set, simulated elsewhere. The `tollgate serve` default.
    Auto,
}

/// Why the settings cannot be read or used; the process should not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value outside what it accepts.
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// The value as set (no key variable is ever reported here).
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// Two variables that say the same thing two ways are both set (a key and the secret
    /// holding it).
    #[error("set {first} or {second}, not both")]
    Conflict {
        /// The variable holding the value itself.
        first: &'static str,
        /// The variable naming a secret that would hold it.
        second: &'static str,
    },
    /// A provider's HTTP client cannot be built from its settings.
    #[error(transparent)]
    Provider(#[from] ProviderSetupError),
    /// `TOLLGATE_PRICES_FILE` cannot be read.
    #[error("cannot read {path}: {source}")]
    PricesFile {
        /// The file named.
        path: String,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// `TOLLGATE_PRICES_FILE` is not a valid price override.
    #[error("{path}: {source}")]
    Prices {
        /// The file named.
        path: String,
        /// What is wrong with its contents.
        source: PriceTableError,
    },
    /// The price table compiled into the binary does not parse (a build defect).
    #[error("bundled price table: {0}")]
    BundledPrices(PriceTableError),
}

/// Typed settings, for every function and the CLI.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which providers answer.
    pub mode: ProviderMode,
    /// OpenAI's endpoint and key; `None` when no key is set (neither `OPENAI_API_KEY` nor
    /// `TOLLGATE_PROVIDER_SECRET_ID`).
    pub openai: Option<ProviderSettings>,
    /// Anthropic's endpoint and key; `None` when no key is set (neither `ANTHROPIC_API_KEY`
    /// nor `TOLLGATE_PROVIDER_SECRET_ID`).
    pub anthropic: Option<ProviderSettings>,
    /// Bedrock's runtime endpoint and region; `None` unless `TOLLGATE_BEDROCK_REGION` is set.
    /// Its `api_key` is not used: calls are signed with the AWS credentials of [`Settings::aws`].
    pub bedrock: Option<BedrockSettings>,
    /// Provider retries (`TOLLGATE_MAX_RETRIES`, at most 10) with the default backoff.
    pub retry: RetryPolicy,
    /// How slowly the simulated provider answers.
    pub simulated: SimulatedLatency,
    /// A JSON file of price overrides, merged over the bundled table by [`Settings::prices`].
    pub prices_file: Option<String>,
    /// Completion tokens reserved, and sent upstream as the reply's cap, when a request sets
    /// no `max_tokens`.
    pub default_reserve_tokens: u32,
    /// What the HTTP edge accepts, and when provider calls must end.
    pub edge: EdgeSettings,
    /// Where state lives.
    pub store: StoreSettings,
    /// The vector index and the embedder.
    pub retrieval: RetrievalSettings,
    /// Where AWS clients take region, credentials and endpoint from: the binary's choice.
    pub aws: AwsConfigSource,
}

/// Where Bedrock calls go.
#[derive(Debug, Clone)]
pub struct BedrockSettings {
    /// The runtime endpoint, timeouts and limits.
    pub http: ProviderSettings,
    /// The region requests are signed for.
    pub region: String,
    /// Where signing credentials come from: [`Settings::aws`]'s source, unless a caller
    /// (a test) sets a provider.
    pub credentials: CredentialSource,
}

/// The HTTP edge's settings.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Request bodies longer than this, in bytes, get 413.
    pub max_body_bytes: usize,
    /// Provider calls end this long before the Lambda invocation's deadline.
    pub deadline_margin: Duration,
}

/// Where state lives.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `None` when the binary's default applies.
    pub kind: Option<StoreKind>,
    /// DynamoDB tables are `{table_prefix}-tenants`, `-usage`, `-limits` and `-cache`.
    pub table_prefix: String,
    /// How long a container caches API keys and tenant configurations; zero turns the cache
    /// off.
    pub directory_cache_ttl: Duration,
}

/// The vector index and the embedder.
#[derive(Debug, Clone)]
pub struct RetrievalSettings {
    /// Qdrant's gRPC URL; `None` selects the embedded vector index.
    pub qdrant_url: Option<String>,
    /// Qdrant's API key, fixed or read from Secrets Manager on first use; `None` when neither
    /// is set.
    pub qdrant_api_key: Option<ApiKey>,
    /// The one Qdrant collection every tenant's chunks share.
    pub qdrant_collection: String,
    /// The OpenAI embedding model, when embeddings are real.
    pub embedding_model: String,
    /// Length of every vector, 8 to 4096 (text-embedding-3 models shorten on request).
    pub embedding_dimensions: usize,
}

/// Where state lives: the workspace's one store-kind enum (`TOLLGATE_STORE`, and the CLI's
/// `--store`), opened by `bootstrap::Stores::open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded in-process store (nothing persists).
    Memory,
    /// The DynamoDB tables `{prefix}-*`.
    Dynamodb,
}

impl std::str::FromStr for StoreKind {
    type Err = &'static str;

    /// `memory` or `dynamodb`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(Self::Memory),
            "dynamodb" => Ok(Self::Dynamodb),
            _ => Err("expected memory or dynamodb"),
        }
    }
}

impl Settings {
    /// Reads the process environment. `default_mode` and `aws` are the binary's choices
    /// (Lambda: `Real`, so production never answers from a simulator by accident, and
    /// [`AwsConfigSource::LAMBDA`]).
    pub fn from_env(default_mode: ProviderMode, aws: AwsConfigSource) -> Result<Self, ConfigError> {
        Self::from_lookup(default_mode, aws, |name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (tests pass a map).
    pub fn from_lookup(
        default_mode: ProviderMode,
        aws: AwsConfigSource,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mode = match get("TOLLGATE_PROVIDERS").as_deref() {
            None => default_mode,
            Some("real") => ProviderMode::Real,
            Some("simulated") => ProviderMode::Simulated,
            Some("auto") => ProviderMode::Auto,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "TOLLGATE_PROVIDERS",
                    value: other.to_owned(),
                    reason: "expected real, simulated or auto",
                });
            }
        };
        let secs =
            |name: &'static str, default: u64| number(&get, name, default).map(Duration::from_secs);
        let request_timeout = secs("TOLLGATE_PROVIDER_TIMEOUT_SECS", 60)?;
        let connect_timeout = secs("TOLLGATE_CONNECT_TIMEOUT_SECS", 5)?;
        let stream_idle_timeout = secs("TOLLGATE_STREAM_IDLE_TIMEOUT_SECS", 30)?;
        let output_tokens_per_second = number(&get, "TOLLGATE_PROVIDER_MIN_TOKENS_PER_SEC", 20)?;
        let output_tokens_per_second = u32::try_from(output_tokens_per_second)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ConfigError::Invalid {
                name: "TOLLGATE_PROVIDER_MIN_TOKENS_PER_SEC",
                value: output_tokens_per_second.to_string(),
                reason: "expected 1 to 4294967295",
            })?;
        let cache_min_tokens = number(&get, "TOLLGATE_ANTHROPIC_CACHE_MIN_TOKENS", 1024)? as usize;
        let default_max_tokens = number_u32(&get, "TOLLGATE_DEFAULT_MAX_TOKENS", 4096)?;
        let default_reserve_tokens = number_u32(&get, "TOLLGATE_DEFAULT_RESERVE_TOKENS", 1024)?;
        let provider_secret = get("TOLLGATE_PROVIDER_SECRET_ID");
        let qdrant_secret = get("TOLLGATE_QDRANT_API_KEY_SECRET_ID");
        let secret_ttl = secs("TOLLGATE_SECRET_TTL_SECS", DEFAULT_SECRET_TTL.as_secs())?;
        // One Secrets Manager client for every managed key; it is built on first use.
        let secrets: Option<Arc<dyn SecretSource>> = (provider_secret.is_some()
            || qdrant_secret.is_some())
        .then(|| Arc::new(SecretsManagerSource::from_env(aws)) as Arc<dyn SecretSource>);
        let managed = |secret_id: &str, field: Option<&str>| {
            secrets.as_ref().map(|source| {
                ApiKey::managed(
                    source.clone(),
                    secret_id,
                    field.map(str::to_owned),
                    secret_ttl,
                )
            })
        };
        let provider_key = |key: &'static str| -> Result<Option<ApiKey>, ConfigError> {
            match (get(key), &provider_secret) {
                (Some(_), Some(_)) => Err(ConfigError::Conflict {
                    first: key,
                    second: "TOLLGATE_PROVIDER_SECRET_ID",
                }),
                (Some(value), None) => Ok(Some(ApiKey::from(SecretString::from(value)))),
                (None, Some(id)) => Ok(managed(id, Some(key))),
                (None, None) => Ok(None),
            }
        };
        let openai_key = provider_key("OPENAI_API_KEY")?;
        let anthropic_key = provider_key("ANTHROPIC_API_KEY")?;
        let qdrant_api_key = match (get("TOLLGATE_QDRANT_API_KEY"), &qdrant_secret) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Conflict {
                    first: "TOLLGATE_QDRANT_API_KEY",
                    second: "TOLLGATE_QDRANT_API_KEY_SECRET_ID",
                });
            }
            (Some(value), None) => Some(ApiKey::from(SecretString::from(value))),
            (None, Some(id)) => managed(id, None),
            (None, None) => None,
        };
        let provider = |api_key: Option<ApiKey>, url: &str, default_url: &str| {
            api_key.map(|api_key| ProviderSettings {
                request_timeout,
                output_tokens_per_second,
                connect_timeout,
                stream_idle_timeout,
                cache_min_tokens,
                default_max_tokens,
                ..ProviderSettings::new(get(url).unwrap_or_else(|| default_url.to_owned()), api_key)
            })
        };
        let bedrock = match get("TOLLGATE_BEDROCK_REGION") {
            Some(region) => {
                let region = region.trim().to_owned();
                let valid = region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !valid {
                    return Err(ConfigError::Invalid {
                        name: "TOLLGATE_BEDROCK_REGION",
                        value: region,
                        reason: "expected a region name such as us-east-1",
                    });
                }
                let url = crate::adapters::aws::endpoint_override("BEDROCK_RUNTIME", get)
                    .unwrap_or_else(|| crate::adapters::bedrock::endpoint(&region));
                provider(
                    Some(ApiKey::from(SecretString::from(String::new()))),
                    "",
                    &url,
                )
                .map(|http| BedrockSettings {
                    http,
                    region,
                    credentials: CredentialSource::Config(aws),
                })
            }
            None => None,
        };
        let max_retries = number(&get, "TOLLGATE_MAX_RETRIES", 2)?;
        Ok(Self {
            mode,
            openai: provider(openai_key, "OPENAI_BASE_URL", DEFAULT_OPENAI_BASE_URL),
            anthropic: provider(
                anthropic_key,
                "ANTHROPIC_BASE_URL",
                DEFAULT_ANTHROPIC_BASE_URL,
            ),
            bedrock,
            retry: RetryPolicy {
                max_retries: u32::try_from(max_retries.min(10)).unwrap_or(10),
                ..RetryPolicy::default()
            },
            simulated: SimulatedLatency {
                first_token: Duration::from_millis(number(
                    &get,
                    "TOLLGATE_SIMULATED_LATENCY_MS",
                    0,
                )?),
                per_chunk: Duration::from_millis(number(&get, "TOLLGATE_SIMULATED_CHUNK_MS", 0)?),
            },
            prices_file: get("TOLLGATE_PRICES_FILE"),
            edge: EdgeSettings {
                max_body_bytes: number(&get, "TOLLGATE_MAX_BODY_BYTES", 4 * 1024 * 1024)? as usize,
                deadline_margin: Duration::from_millis(number(
                    &get,
                    "TOLLGATE_DEADLINE_MARGIN_MS",
                    3000,
                )?),
            },
            store: StoreSettings {
                kind: match get("TOLLGATE_STORE") {
                    None => None,
                    Some(value) => Some(value.parse().map_err(|reason| ConfigError::Invalid {
                        name: "TOLLGATE_STORE",
                        value,
                        reason,
                    })?),
                },
                table_prefix: get("TOLLGATE_TABLE_PREFIX").unwrap_or_else(|| "tollgate".to_owned()),
                directory_cache_ttl: Duration::from_secs(number(
                    &get,
                    "TOLLGATE_DIRECTORY_CACHE_SECS",
                    30,
                )?),
            },
            retrieval: RetrievalSettings {
                qdrant_url: get("TOLLGATE_QDRANT_URL"),
                qdrant_api_key,
                qdrant_collection: get("TOLLGATE_QDRANT_COLLECTION")
                    .unwrap_or_else(|| "tollgate-chunks".to_owned()),
                embedding_model: get("TOLLGATE_EMBEDDING_MODEL").unwrap_or_else(|| {
                    crate::adapters::embeddings::DEFAULT_EMBEDDING_MODEL.to_owned()
                }),
                embedding_dimensions: match number(&get, "TOLLGATE_EMBEDDING_DIMENSIONS", 256)? {
                    n @ 8..=4096 => n as usize,
                    n => {
                        return Err(ConfigError::Invalid {
                            name: "TOLLGATE_EMBEDDING_DIMENSIONS",
                            value: n.to_string(),
                            reason: "expected 8 to 4096",
                        });
                    }
                },
            },
            aws,
            default_reserve_tokens,
        })
    }

    /// Builds the provider set. Returns it with one line per provider saying what serves it.
    pub fn providers(&self) -> Result<(Providers, Vec<String>), ConfigError> {
        let mut providers = Providers::default();
        let mut described = Vec::new();
        for kind in ProviderKind::ALL {
            let real = match kind {
                ProviderKind::Openai => self.openai.as_ref(),
                ProviderKind::Anthropic => self.anthropic.as_ref(),
                ProviderKind::Bedrock => self.bedrock.as_ref().map(|b| &b.http),
            };
            match (self.mode, real) {
                (ProviderMode::Real | ProviderMode::Auto, Some(settings)) => {
                    let provider: Arc<dyn crate::ports::LlmProvider> = match kind {
                        ProviderKind::Openai => Arc::new(OpenAiProvider::new(settings)?),
                        ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(settings)?),
                        ProviderKind::Bedrock => {
                            let (region, credentials) = match &self.bedrock {
                                Some(b) => (b.region.as_str(), b.credentials.clone()),
                                None => ("", CredentialSource::Config(self.aws)),
                            };
                            let signer = AwsSigner::new(
                                crate::adapters::bedrock::SIGNING_NAME,
                                region,
                                credentials,
                            );
                            Arc::new(BedrockProvider::new(settings, signer)?)
                        }
                    };
                    providers = providers.with(provider);
                    let key = if kind == ProviderKind::Bedrock {
                        "signed with the AWS credentials of the environment"
                    } else if settings.api_key.is_managed() {
                        "key from Secrets Manager on first use"
                    } else {
                        "key from the environment"
                    };
                    described.push(format!("{kind}: {} (real, {key})", settings.base_url));
                }
                (ProviderMode::Simulated, _) | (ProviderMode::Auto, None) => {
                    providers =
                        providers.with(Arc::new(SimulatedProvider::new(kind, self.simulated)));
                    described.push(format!("{kind}: simulated (no {} set)", key_name(kind)));
                }
                (ProviderMode::Real, None) => {
                    described.push(format!(
                        "{kind}: not configured ({} unset); its routes answer 503",
                        key_name(kind)
                    ));
                }
            }
        }
        Ok((providers, described))
    }

    /// The embedder: OpenAI's embeddings API when a key is set (and not simulating), otherwise
    /// the deterministic local embedder standing in for it.
    pub fn embedder(
        &self,
    ) -> Result<(Arc<dyn crate::ports::vector::Embedder>, String), ConfigError> {
        use crate::adapters::embeddings::{LocalEmbedder, OpenAiEmbedder};
        match (self.mode, &self.openai) {
            (ProviderMode::Real | ProviderMode::Auto, Some(settings)) => Ok((
                Arc::new(OpenAiEmbedder::new(
                    settings,
                    self.retrieval.embedding_model.clone(),
                    self.retrieval.embedding_dimensions,
                )?),
                format!(
                    "embeddings: {} at {} (real)",
                    self.retrieval.embedding_model, settings.base_url
                ),
            )),
            _ => Ok((
                Arc::new(LocalEmbedder::new(self.retrieval.embedding_dimensions)),
                "embeddings: local deterministic embedder".to_owned(),
            )),
        }
    }

    /// The bundled price table with the operator's overrides merged in.
    pub fn prices(&self) -> Result<PriceTable, ConfigError> {
        let mut table = PriceTable::bundled().map_err(ConfigError::BundledPrices)?;
        if let Some(path) = &self.prices_file {
            let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::PricesFile {
                path: path.clone(),
                source,
            })?;
            table
                .merge_json(&raw)
                .map_err(|source| ConfigError::Prices {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(table)
    }
}

fn key_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "OPENAI_API_KEY",
        ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
        ProviderKind::Bedrock => "TOLLGATE_BEDROCK_REGION",
    }
}

/// [`number`], at most `u32::MAX`.
fn number_u32(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u32,
) -> Result<u32, ConfigError> {
    let n = number(get, name, u64::from(default))?;
    u32::try_from(n).map_err(|_| ConfigError::Invalid {
        name,
        value: n.to_string(),
        reason: "expected at most 4294967295",
    })
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    match get(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| ConfigError::Invalid {
            name,
            value: raw,
            reason: "expected a non-negative whole number",
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)], mode: ProviderMode) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(mode, AwsConfigSource::LAMBDA, |k| map.get(k).cloned())
    }

    #[test]
    fn with_no_keys_auto_mode_simulates_both_providers() {
        let s = settings(&[], ProviderMode::Auto).unwrap();
        let (providers, described) = s.providers().unwrap();
        assert!(providers.get(ProviderKind::Openai).is_some());
        assert!(providers.get(ProviderKind::Anthropic).is_some());
        assert!(
            described.iter().all(|d| d.contains("simulated")),
            "{described:?}"
        );
    }

    #[test]
    fn a_provider_secret_configures_both_providers_with_keys_read_on_first_use() {
        let s = settings(
            &[
                (
                    "TOLLGATE_PROVIDER_SECRET_ID",
                    "arn:aws:secretsmanager:eu-west-1:1:secret:llm",
                ),
                ("TOLLGATE_QDRANT_API_KEY_SECRET_ID", "tollgate/qdrant"),
                ("TOLLGATE_SECRET_TTL_SECS", "60"),
            ],
            ProviderMode::Real,
        )
        .unwrap();
        for (provider, field) in [
            (&s.openai, "OPENAI_API_KEY"),
            (&s.anthropic, "ANTHROPIC_API_KEY"),
        ] {
            let ApiKey::Managed(key) = &provider.as_ref().unwrap().api_key else {
                panic!("a managed key");
            };
            assert_eq!(
                key.secret_id(),
                "arn:aws:secretsmanager:eu-west-1:1:secret:llm"
            );
            assert_eq!(key.field(), Some(field));
        }
        let Some(ApiKey::Managed(qdrant)) = &s.retrieval.qdrant_api_key else {
            panic!("a managed Qdrant key");
        };
        assert_eq!(
            (qdrant.secret_id(), qdrant.field()),
            ("tollgate/qdrant", None)
        );
        let (providers, described) = s.providers().unwrap();
        assert!(providers.get(ProviderKind::Anthropic).is_some());
        assert!(
            described
                .iter()
                .filter(|d| !d.starts_with("bedrock"))
                .all(|d| d.contains("Secrets Manager")),
            "{described:?}"
        );
    }

    #[test]
    fn a_bedrock_region_turns_bedrock_on_at_its_runtime_endpoint_or_the_override() {
        let s = settings(
            &[("TOLLGATE_BEDROCK_REGION", "eu-central-1")],
            ProviderMode::Real,
        )
        .unwrap();
        let bedrock = s.bedrock.as_ref().unwrap();
        assert_eq!(bedrock.region, "eu-central-1");
        assert_eq!(
            bedrock.http.base_url,
            "https://bedrock-runtime.eu-central-1.amazonaws.com"
        );
        let (providers, described) = s.providers().unwrap();
        assert!(providers.get(ProviderKind::Bedrock).is_some());
        assert!(
            described.iter().any(|d| d
                .starts_with("bedrock: https://bedrock-runtime.eu-central-1")
                && d.contains("AWS credentials")),
            "{described:?}"
        );

        let local = settings(
            &[
                ("TOLLGATE_BEDROCK_REGION", "us-east-1"),
                ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://127.0.0.1:4010"),
            ],
            ProviderMode::Real,
        )
        .unwrap();
        assert_eq!(
            local.bedrock.unwrap().http.base_url,
            "http://127.0.0.1:4010"
        );

        let err = settings(
            &[("TOLLGATE_BEDROCK_REGION", "US East")],
            ProviderMode::Real,
        )
        .unwrap_err();
        assert!(err.to_string().contains("TOLLGATE_BEDROCK_REGION"), "{err}");

        let (providers, described) = settings(&[], ProviderMode::Real)
            .unwrap()
            .providers()
            .unwrap();
        assert!(providers.get(ProviderKind::Bedrock).is_none());
        assert!(
            described
                .iter()
                .any(|d| d.contains("TOLLGATE_BEDROCK_REGION unset")),
            "{described:?}"
        );
        let (providers, _) = settings(&[], ProviderMode::Auto)
            .unwrap()
            .providers()
            .unwrap();
        assert!(providers.get(ProviderKind::Bedrock).is_some(), "simulated");
    }

    #[test]
    fn a_key_in_the_environment_and_a_secret_for_it_conflict() {
        let err = settings(
            &[
                ("OPENAI_API_KEY", "sk-test"),
                ("TOLLGATE_PROVIDER_SECRET_ID", "llm"),
            ],
            ProviderMode::Real,
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Conflict { .. }), "{err}");
        assert!(!err.to_string().contains("sk-test"));
        let err = settings(
            &[
                ("TOLLGATE_QDRANT_API_KEY", "q"),
                ("TOLLGATE_QDRANT_API_KEY_SECRET_ID", "qdrant"),
            ],
            ProviderMode::Real,
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Conflict { .. }), "{err}");
    }

    #[test]
    fn real_mode_never_simulates() {
        let s = settings(&[("OPENAI_API_KEY", "sk-test")], ProviderMode::Real).unwrap();
        let (providers, described) = s.providers().unwrap();
        assert!(providers.get(ProviderKind::Openai).is_some());
        assert!(providers.get(ProviderKind::Anthropic).is_none());
        assert!(described.iter().all(|d| !d.contains("simulated")));
    }

    #[test]
    fn base_urls_point_providers_anywhere() {
        let s = settings(
            &[
                ("OPENAI_API_KEY", "sk-test"),
                ("OPENAI_BASE_URL", "http://127.0.0.1:1/v1"),
            ],
            ProviderMode::Auto,
        )
        .unwrap();
        assert_eq!(s.openai.as_ref().unwrap().base_url, "http://127.0.0.1:1/v1");
        let (_, described) = s.providers().unwrap();
        assert!(described[0].contains("127.0.0.1:1"));
        assert!(!described.join(" ").contains("sk-test"));
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let err = settings(&[("TOLLGATE_MAX_RETRIES", "many")], ProviderMode::Auto).unwrap_err();
        assert!(err.to_string().contains("TOLLGATE_MAX_RETRIES"));
        let err = settings(&[("TOLLGATE_PROVIDERS", "magic")], ProviderMode::Auto).unwrap_err();
        assert!(err.to_string().contains("TOLLGATE_PROVIDERS"));
    }

    #[test]
    fn the_api_key_never_appears_in_debug_output() {
        let s = settings(
            &[("ANTHROPIC_API_KEY", "sk-ant-very-secret")],
            ProviderMode::Auto,
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("sk-ant-very-secret"));
    }
}
