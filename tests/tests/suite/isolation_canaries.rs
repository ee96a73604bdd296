#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Isolation canaries: five tenants, each with unique canary strings planted in its system
//! prompt, documents, conversation history, cached responses, end-user profiles and fine-tuned
//! model id; 1,000 randomized, interleaved requests through the real handlers (chat with and
//! without retrieval, streamed and not, with and without a `user` whose profile every tenant
//! has under the same id, ingest, delete, profile put/get/delete). No canary of one tenant may
//! appear in another tenant's upstream request, response body or stream chunk, usage event or
//! metric, and no canary at all in a log line. A second run with a broken tenant filter in the vector index
//! (test-only fault injection) must be caught by the defense-in-depth check.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use http::Method;
use rand::{Rng, RngExt, SeedableRng};
use serde_json::{Value, json};
use tollgate::adapters::simulated::{SimulatedLatency, SimulatedProvider};
use tollgate::adapters::vector_memory::MemoryVectorIndex;
use tollgate::domain::chat::Completion;
use tollgate::domain::ids::TenantId;
use tollgate::domain::keys::issue_key;
use tollgate::domain::pricing::ModelPrice;
use tollgate::domain::profile::{ProfileRecord, UserId, UserProfile};
use tollgate::domain::prompt::PromptTemplate;
use tollgate::domain::tenant::{ProviderKind, ResponseCachePolicy, Route};
use tollgate::ports::TenantAdmin;
use tollgate::ports::provider::{EventStream, LlmProvider, ProviderError, ProviderRequest};
use tollgate::ports::store::ProfileStore;
use tollgate::service::Providers;
use tollgate_tests::harness::{Gateway, TestResponse};

const TENANTS: usize = 5;
const REQUESTS: usize = 1_000;

/// The user id every tenant has a profile for: the same id, five different users.
const SHARED_USER: &str = "user-1";

fn canaries(i: usize) -> [String; 6] {
    [
        format!("canaryprompt{i}x"),
        format!("canarydoc{i}x"),
        format!("canaryhistory{i}x"),
        format!("canaryreply{i}x"),
        format!("canaryprofile{i}x"),
        // Last: the fine-tuned model id is the one canary a (security) log line may name.
        format!("canaryft{i}x"),
    ]
}

/// The profile tenant `i` keeps for an end user (`version` varies it between puts).
fn profile_body(i: usize, version: usize) -> Value {
    let [_, _, _, _, profile, _] = canaries(i);
    json!({"note": format!("{profile} v{version}"), "plan": "pro", "seats": version})
}

/// Every upstream call, as the provider received it.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

struct Recording {
    inner: SimulatedProvider,
    recorder: Arc<Recorder>,
}

#[async_trait]
impl LlmProvider for Recording {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }
    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        self.recorder
            .calls
            .lock()
            .unwrap()
            .push(format!("{request:?}"));
        self.inner.complete(request).await
    }
    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError> {
        self.recorder
            .calls
            .lock()
            .unwrap()
            .push(format!("{request:?}"));
        self.inner.stream(request).await
    }
}

/// Log lines of the whole test binary.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || sink.clone())
            .try_init();
        buffer
    })
}

struct World {
    gw: Gateway,
    keys: Vec<String>,
    recorder: Arc<Recorder>,
}

async fn world(index: Arc<MemoryVectorIndex>) -> World {
    let _ = logs();
    let mut gw = Gateway::simulated().await;
    let recorder = Arc::new(Recorder::default());
    let provider = |kind| {
        Arc::new(Recording {
            inner: SimulatedProvider::new(kind, SimulatedLatency::default()),
            recorder: recorder.clone(),
        })
    };
    gw.state.chat.providers = Providers::default()
        .with(provider(ProviderKind::Openai))
        .with(provider(ProviderKind::Anthropic));
    let settings = tollgate_tests::harness::settings(&[("TOLLGATE_PROVIDERS", "simulated".into())]);
    gw.state.chat.retriever =
        Some(tollgate::bootstrap::retriever(&settings, &gw.state.chat, index.clone()).unwrap());
    gw.ingest.ingest.index = index;

    let mut keys = Vec::new();
    for i in 0..TENANTS {
        let [prompt, _, _, _, _, ft] = canaries(i);
        let tenant = TenantId::parse(format!("tenant{i}")).unwrap();
        let mut config = tollgate::demo::acme_config().unwrap();
        config.tenant_id = tenant.clone();
        config.display_name = format!("Tenant {i}");
        // The end user's profile renders into the prompt, field by field and as a whole.
        config.system_prompt = PromptTemplate::parse(format!(
            "You serve tenant {i}. Secret marker {prompt}. Customer note: {{{{user.note}}}}. \
             Customer profile: {{{{user_profile}}}}."
        ))
        .unwrap();
        config.prompt_variables = BTreeMap::new();
        let ft_model = format!("ft:gpt-4o-mini-2024-07-18:org:{ft}:v1");
        config.routes = BTreeMap::from([
            (
                "chat".to_owned(),
                Route {
                    provider: ProviderKind::Openai,
                    model: "gpt-4o-mini".into(),
                    fine_tuned: false,
                },
            ),
            (
                "claude".to_owned(),
                Route {
                    provider: ProviderKind::Anthropic,
                    model: "claude-haiku-4-5".into(),
                    fine_tuned: false,
                },
            ),
            (
                "tuned".to_owned(),
                Route {
                    provider: ProviderKind::Openai,
                    model: ft_model.clone(),
                    fine_tuned: true,
                },
            ),
        ]);
        config.price_overrides = BTreeMap::from([(
            ft_model.clone(),
            ModelPrice {
                input: rust_decimal::Decimal::new(30, 2),
                output: rust_decimal::Decimal::new(120, 2),
                cached_input: None,
                cache_write: None,
            },
        )]);
        config.degradation = None;
        config.limits = tollgate::demo::UNLIMITED;
        config.response_cache = ResponseCachePolicy {
            enabled: true,
            ttl_seconds: 600,
        };
        gw.store.put_tenant_config(config).await.unwrap();
        gw.store
            .register_fine_tuned(ProviderKind::Openai, &ft_model, &tenant)
            .await
            .unwrap();
        gw.store
            .put_profile(&ProfileRecord {
                tenant_id: tenant.clone(),
                user_id: UserId::parse(SHARED_USER).unwrap(),
                profile: UserProfile::from_json(profile_body(i, 0).to_string().as_bytes()).unwrap(),
                updated_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        let key = issue_key(tenant, chrono::Utc::now());
        gw.store.put_key(key.record.clone()).await.unwrap();
        keys.push(key.expose().to_owned());
    }
    World { gw, keys, recorder }
}

async fn call(
    world: &World,
    i: usize,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> TestResponse {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", world.keys[i]))
        .body(body.map_or_else(bytes::Bytes::new, |b| bytes::Bytes::from(b.to_string())))
        .unwrap();
    world.gw.send(req).await
}

/// One randomized request of tenant `i`; returns its response.
async fn random_request(world: &World, i: usize, rng: &mut impl Rng) -> TestResponse {
    let [_, doc, history, reply, _, _] = canaries(i);
    // The shared user, or one no tenant has a profile for until it is put.
    let user = ["user-1", "user-2"][rng.random_range(0..2)];
    let profile_path = format!("/v1/users/{user}/profile");
    match rng.random_range(0..12) {
        10 => {
            let body = profile_body(i, rng.random_range(0..2));
            call(world, i, Method::PUT, &profile_path, Some(body)).await
        }
        11 => {
            let method = if rng.random_bool(0.7) {
                Method::GET
            } else {
                Method::DELETE
            };
            call(world, i, method, &profile_path, None).await
        }
        0 => {
            let n = rng.random_range(0..3);
            let body = json!({"id": format!("doc{n}"), "title": "notes", "text": format!("Internal notes {doc} number {n} about refunds and launches.")});
            call(world, i, Method::POST, "/v1/documents", Some(body)).await
        }
        1 => {
            call(
                world,
                i,
                Method::DELETE,
                &format!("/v1/documents/doc{}", rng.random_range(0..3)),
                None,
            )
            .await
        }
        2 => call(world, i, Method::GET, "/v1/documents", None).await,
        k => {
            let model = ["chat", "claude", "tuned"][rng.random_range(0..3)];
            // A small set of questions per tenant, so the response cache gets hits.
            let question = format!(
                "Question {} about refunds and launches, {reply}",
                rng.random_range(0..4)
            );
            let mut body =
                json!({"model": model, "messages": [{"role": "user", "content": question}]});
            if k >= 6 {
                body["retrieval"] = json!({"top_k": 3});
            }
            if k == 9 {
                body["conversation_id"] = json!("shared-conversation");
                body["messages"] =
                    json!([{"role": "user", "content": format!("Remember {history}. {question}")}]);
            }
            if rng.random_bool(0.3) {
                body["stream"] = json!(true);
            }
            if rng.random_bool(0.6) {
                body["user"] = json!(user);
            }
            call(world, i, Method::POST, "/v1/chat/completions", Some(body)).await
        }
    }
}

fn foreign_canaries(i: usize) -> Vec<String> {
    (0..TENANTS)
        .filter(|&j| j != i)
        .flat_map(canaries)
        .collect()
}

fn owner_of(text: &str) -> Option<usize> {
    (0..TENANTS).find(|&i| text.contains(&canaries(i)[0]))
}

async fn run(world: &World, seed: u64) -> Vec<(usize, TestResponse)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let i = rng.random_range(0..TENANTS);
        let res = random_request(world, i, &mut rng).await;
        out.push((i, res));
    }
    out
}

#[tokio::test]
async fn no_canary_of_one_tenant_reaches_another_through_any_channel() {
    let world = world(Arc::new(MemoryVectorIndex::new())).await;
    let responses = run(&world, 7).await;

    let mut statuses = BTreeMap::new();
    for (i, res) in &responses {
        *statuses.entry(res.status.as_u16()).or_insert(0) += 1;
        let text = res.text();
        for canary in foreign_canaries(*i) {
            assert!(
                !text.contains(&canary),
                "tenant{i}'s response carries {canary}: {text}"
            );
        }
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200, 404],
        "{statuses:?}"
    );
    assert!(
        responses
            .iter()
            .any(|(_, r)| r.header("x-tollgate-cache") == Some("hit")),
        "the cache channel was exercised"
    );
    assert!(
        responses
            .iter()
            .any(|(_, r)| r.header("x-tollgate-documents").is_some()),
        "retrieval was exercised"
    );
    let profile_statuses: BTreeMap<u16, usize> = responses
        .iter()
        .filter(|(i, r)| r.text().contains(&canaries(*i)[4]) || r.status == 404)
        .fold(BTreeMap::new(), |mut m, (_, r)| {
            *m.entry(r.status.as_u16()).or_insert(0) += 1;
            m
        });
    assert!(
        profile_statuses.contains_key(&200) && profile_statuses.contains_key(&404),
        "profiles were put, read and found missing: {profile_statuses:?}"
    );

    // Upstream: every provider call carries exactly one tenant's prompt and nothing of others.
    let calls = world.recorder.calls.lock().unwrap().clone();
    assert!(calls.len() > 300);
    let personalized = calls
        .iter()
        .filter(|c| owner_of(c).is_some_and(|i| c.contains(&canaries(i)[4])))
        .count();
    assert!(
        personalized > 50,
        "profiles were rendered into their own tenant's prompts ({personalized} calls)"
    );
    for call in &calls {
        let i = owner_of(call).expect("every upstream call carries its tenant's system prompt");
        for canary in foreign_canaries(i) {
            assert!(
                !call.contains(&canary),
                "tenant{i}'s upstream call carries {canary}"
            );
        }
    }
    // Usage events and metrics, by tenant.
    for event in world.gw.usage_events() {
        let i: usize = event.tenant_id.as_str()["tenant".len()..].parse().unwrap();
        let text = serde_json::to_string(&event).unwrap();
        for canary in foreign_canaries(i) {
            assert!(
                !text.contains(&canary),
                "tenant{i}'s usage event carries {canary}"
            );
        }
    }
    for m in world.gw.request_metrics() {
        let Some(tenant) = &m.tenant_id else { continue };
        let i: usize = tenant["tenant".len()..].parse().unwrap();
        let text = format!("{m:?}");
        for canary in foreign_canaries(i) {
            assert!(
                !text.contains(&canary),
                "tenant{i}'s metrics carry {canary}"
            );
        }
    }
    // Logs never carry prompts, documents, history, replies or profiles at all.
    let log = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    for i in 0..TENANTS {
        for canary in &canaries(i)[..5] {
            assert!(
                !log.contains(canary.as_str()),
                "a log line carries {canary}"
            );
        }
    }
}

#[tokio::test]
async fn a_broken_tenant_filter_is_caught_by_the_defense_in_depth_check() {
    let world = world(Arc::new(MemoryVectorIndex::with_broken_tenant_filter())).await;
    let responses = run(&world, 11).await;
    let refused: Vec<_> = responses.iter().filter(|(_, r)| r.status == 500).collect();
    assert!(!refused.is_empty(), "the broken filter was never exercised");
    for (_, res) in &refused {
        assert_eq!(res.json()["error"]["code"], "isolation_check_failed");
    }
    // Still nothing crossed: the check fails closed before any provider call.
    for (i, res) in &responses {
        for canary in foreign_canaries(*i) {
            assert!(
                !res.text().contains(&canary),
                "tenant{i}'s response carries {canary}"
            );
        }
    }
    for call in world.recorder.calls.lock().unwrap().iter() {
        let i = owner_of(call).unwrap();
        for canary in foreign_canaries(i) {
            assert!(
                !call.contains(&canary),
                "tenant{i}'s upstream call carries {canary}"
            );
        }
    }
    assert_eq!(world.gw.metrics.isolation_violations().len(), refused.len());
}
