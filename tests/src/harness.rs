//! An in-process gateway for end-to-end tests: the real invoke handler and chat service on the
//! embedded store, with the demo tenants seeded, and providers that are either simulated or
//! the real OpenAI/Anthropic adapters pointed at the local stand-ins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::memory::{MemoryMetrics, MemoryStore};
use tollgate::bootstrap::{Store, Stores};
use tollgate::config::{ProviderMode, Settings};
use tollgate::domain::usage::UsageEvent;
use tollgate::ports::metrics::{MetricsSink, RequestMetrics};
use tollgate::routes::Mounted;

use crate::standins::{AnthropicStandIn, BedrockStandIn, OpenAiStandIn};

pub const OPENAI_TEST_KEY: &str = "sk-test-openai-0123456789";
pub const ANTHROPIC_TEST_KEY: &str = "sk-ant-test-0123456789";

pub struct Gateway {
    pub state: invoke::InvokeState,
    pub ingest: ingest::IngestState,
    pub index: Arc<tollgate::adapters::vector_memory::MemoryVectorIndex>,
    pub store: Arc<MemoryStore>,
    pub metrics: Arc<MemoryMetrics>,
    keys: HashMap<String, String>,
}

/// Environment-style settings for a gateway; the harness never reads the real environment.
pub fn settings(vars: &[(&str, String)]) -> Settings {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Settings::from_lookup(ProviderMode::Auto, AwsConfigSource::LAMBDA, |k| {
        map.get(k).cloned()
    })
    .expect("valid settings")
}

impl Gateway {
    /// Simulated providers at 0 ms.
    pub async fn simulated() -> Self {
        Self::build(settings(&[("TOLLGATE_PROVIDERS", "simulated".into())])).await
    }

    /// The real provider adapters, pointed at the stand-ins. Retries back off in milliseconds
    /// so fault tests stay fast; stream idle timeout is 1 s.
    pub async fn with_standins(openai: &OpenAiStandIn, anthropic: &AnthropicStandIn) -> Self {
        Self::build(standin_settings(openai, anthropic)).await
    }

    /// [`Gateway::with_standins`] with Bedrock too: its stand-in as the runtime endpoint, and
    /// requests signed with the stand-in's credentials.
    pub async fn with_bedrock(
        openai: &OpenAiStandIn,
        anthropic: &AnthropicStandIn,
        bedrock: &BedrockStandIn,
    ) -> Self {
        Self::build(bedrock_standin_settings(openai, anthropic, bedrock)).await
    }

    pub async fn build(settings: Settings) -> Self {
        Self::build_observed(settings, None).await
    }

    /// [`Gateway::build`], with every metrics record also handed to `also` (an `EmfSink` on a
    /// buffer shows the EMF lines the functions print).
    pub async fn build_observed(settings: Settings, also: Option<Arc<dyn MetricsSink>>) -> Self {
        let metrics = Arc::new(MemoryMetrics::default());
        let sink: Arc<dyn MetricsSink> = match also {
            Some(also) => Arc::new(Tee(metrics.clone(), also)),
            None => metrics.clone(),
        };
        let store = Arc::new(MemoryStore::new());
        let stores = Stores::embedded(store.clone());
        let seeded = tollgate::demo::seed(store.as_ref(), chrono::Utc::now())
            .await
            .expect("demo tenants seed");
        let keys = seeded
            .into_iter()
            .map(|(tenant, key)| (tenant.to_string(), key.expose().to_owned()))
            .collect();
        let index = Arc::new(tollgate::adapters::vector_memory::MemoryVectorIndex::new());
        let (state, _) =
            invoke::InvokeState::build(&settings, &stores, sink.clone(), Some(index.clone()))
                .expect("gateway builds");
        let ingest = ingest::IngestState::build(&settings, &stores, sink, index.clone())
            .expect("ingest builds");
        Self {
            ingest,
            index,
            state,
            store,
            metrics,
            keys,
        }
    }

    /// The demo key of `tenant` (`acme` or `globex`).
    pub fn key(&self, tenant: &str) -> &str {
        &self.keys[tenant]
    }

    pub async fn send(&self, req: Request<Bytes>) -> TestResponse {
        let functions: [&dyn Mounted; 2] = [&self.ingest, &self.state];
        let response = tollgate::routes::dispatch(&functions, req).await;
        let (parts, body) = response.into_parts();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await,
        }
    }

    /// `POST /v1/chat/completions` as `tenant`.
    pub async fn chat(&self, tenant: &str, body: Value) -> TestResponse {
        let key = self.key(tenant).to_owned();
        self.chat_with_key(Some(&key), body.to_string()).await
    }

    pub async fn chat_with_key(&self, key: Option<&str>, body: String) -> TestResponse {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/v1/chat/completions")
            .header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        self.send(req.body(Bytes::from(body)).expect("request builds"))
            .await
    }

    /// A request to `path` as `tenant` (`method` with a JSON body, if any).
    pub async fn call(
        &self,
        tenant: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> TestResponse {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.key(tenant)))
            .header("content-type", "application/json")
            .body(body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string())))
            .expect("request builds");
        self.send(req).await
    }

    pub fn usage_events(&self) -> Vec<UsageEvent> {
        self.store.usage_events()
    }

    /// Waits for metering that finishes in a background task (client disconnects).
    pub async fn wait_for_usage_events(&self, n: usize) -> Vec<UsageEvent> {
        for _ in 0..200 {
            let events = self.usage_events();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.usage_events()
    }

    pub fn request_metrics(&self) -> Vec<RequestMetrics> {
        self.metrics.requests()
    }
}

/// Invoke's state on `store` (DynamoDB in the emulator tests) as `InvokeState::build` makes
/// it, lookups cached for the settings' TTL, with a 1 MiB body limit and a 3 s deadline margin.
pub fn invoke_on(
    settings: &Settings,
    store: impl Into<Store>,
    metrics: Arc<dyn MetricsSink>,
) -> invoke::InvokeState {
    let stores = Stores::on(store, settings.store.directory_cache_ttl);
    let (mut state, _) =
        invoke::InvokeState::build(settings, &stores, metrics, None).expect("invoke builds");
    state.max_body_bytes = 1 << 20;
    state.deadline_margin = Duration::from_secs(3);
    state
}

/// Settings for the real provider adapters pointed at the stand-ins (see
/// [`Gateway::with_standins`]).
pub fn standin_settings(openai: &OpenAiStandIn, anthropic: &AnthropicStandIn) -> Settings {
    let mut s = settings(&[
        ("TOLLGATE_PROVIDERS", "real".into()),
        ("OPENAI_API_KEY", OPENAI_TEST_KEY.into()),
        ("OPENAI_BASE_URL", openai.base_url()),
        ("ANTHROPIC_API_KEY", ANTHROPIC_TEST_KEY.into()),
        ("ANTHROPIC_BASE_URL", anthropic.base_url()),
        ("TOLLGATE_STREAM_IDLE_TIMEOUT_SECS", "1".into()),
        ("TOLLGATE_PROVIDER_TIMEOUT_SECS", "2".into()),
        // A buffered call's limit is the request timeout alone (no allowance per reply token),
        // so timeout tests stay short.
        ("TOLLGATE_PROVIDER_MIN_TOKENS_PER_SEC", "1000000".into()),
    ]);
    s.retry.base_delay = Duration::from_millis(5);
    s.retry.max_delay = Duration::from_secs(2);
    s
}

/// [`standin_settings`] with Bedrock served by `bedrock` (see [`Gateway::with_bedrock`]).
pub fn bedrock_standin_settings(
    openai: &OpenAiStandIn,
    anthropic: &AnthropicStandIn,
    bedrock: &BedrockStandIn,
) -> Settings {
    let mut s = standin_settings(openai, anthropic);
    let mut settings = s.openai.clone().expect("OpenAI settings");
    settings.base_url = bedrock.base_url();
    s.bedrock = Some(tollgate::config::BedrockSettings {
        http: settings,
        region: crate::standins::bedrock::REGION.to_owned(),
        credentials: tollgate::adapters::sigv4::CredentialSource::Provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                crate::standins::bedrock::credentials(),
            ),
        ),
    });
    s
}

/// Hands every metrics record to the gateway's [`MemoryMetrics`] and to a second sink.
struct Tee(Arc<MemoryMetrics>, Arc<dyn MetricsSink>);

impl MetricsSink for Tee {
    fn request(&self, metrics: &RequestMetrics) {
        self.0.request(metrics);
        self.1.request(metrics);
    }

    fn metering_failure(&self, event: &UsageEvent, error: &str) {
        self.0.metering_failure(event, error);
        self.1.metering_failure(event, error);
    }

    fn isolation_violation(&self, function: &'static str, tenant: &str) {
        self.0.isolation_violation(function, tenant);
        self.1.isolation_violation(function, tenant);
    }

    fn circuit(&self, target: &str, open: bool) {
        self.0.circuit(target, open);
        self.1.circuit(target, open);
    }
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `data:` payloads of an SSE body, `[DONE]` excluded.
    pub fn sse_events(&self) -> Vec<Value> {
        self.text()
            .split("\n\n")
            .filter_map(|frame| frame.strip_prefix("data: "))
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str(data).expect("SSE data is JSON"))
            .collect()
    }

    /// The concatenated `delta.content` of an SSE body.
    pub fn sse_text(&self) -> String {
        self.sse_events()
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// A chat body for `model` with one user message.
pub fn chat_body(model: &str, content: &str) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
    })
}
