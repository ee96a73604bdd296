#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Isolation canaries: eight tenants, each with unique canary strings planted in its documents,
//! conversation history, cached responses, end-user profiles and fine-tuned model id, and (for
//! the first five) its system prompt; 1,000 randomized, interleaved requests through the real
//! handlers (chat with and without retrieval, streamed and not, with and without a `user` whose
//! profile every tenant has under the same id, ingest, delete, profile put/get/delete, questions
//! every tenant asks byte for byte, and requests for other tenants' fine-tuned model ids).
//!
//! No canary of one tenant may appear in another tenant's upstream request, response body or
//! stream chunk, usage event, EMF metric line or JSON log line. Logs carry no prompt, document,
//! history, reply or profile canary at all; a fine-tuned model id may appear only in its own
//! tenant's lines (the served model of the tenant's request). Logs are captured per test with a
//! subscriber scoped to the test's thread, in the Lambdas' JSON format, and the capture is
//! checked to hold the line every request writes. A second run with a broken tenant filter in
//! the embedded vector index (test-only fault injection) must be caught by the defense-in-depth
//! check, with one security log line and one `IsolationViolation` EMF document per refusal.
//!
//! Why two kinds of tenant: a response-cache key hashes the rendered system prompt, so tenants
//! whose prompts carry their own canary can never share a key even if the tenant were dropped
//! from it. Tenants provisioned from one template (same prompt, same routes) can: for them only
//! the tenant id keeps a cached answer private, and the shared questions test exactly that.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures_util::StreamExt;
use http::Method;
use rand::{Rng, RngExt, SeedableRng};
use serde_json::{Value, json};
use tollgate::adapters::emf::EmfSink;
use tollgate::adapters::simulated::{SimulatedLatency, SimulatedProvider};
use tollgate::adapters::vector_memory::MemoryVectorIndex;
use tollgate::domain::chat::Completion;
use tollgate::domain::ids::TenantId;
use tollgate::domain::keys::issue_key;
use tollgate::domain::pricing::ModelPrice;
use tollgate::domain::profile::{ProfileRecord, UserId, UserProfile};
use tollgate::domain::prompt::PromptTemplate;
use tollgate::domain::tenant::{ProviderKind, ResponseCachePolicy, Route, RouteKind};
use tollgate::lambda::PlatformRequestId;
use tollgate::ports::TenantAdmin;
use tollgate::ports::provider::{
    EventStream, LlmProvider, ProviderError, ProviderRequest, StreamEvent,
};
use tollgate::ports::store::ProfileStore;
use tollgate::service::Providers;
use tollgate_tests::capture::Captured;
use tollgate_tests::harness::{Gateway, TestResponse};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

/// Tenants whose system prompt carries their prompt canary.
const PROMPT_TENANTS: usize = 5;
/// All tenants: the rest share [`TEMPLATE_PROMPT`].
const TENANTS: usize = 8;
const REQUESTS: usize = 1_000;

/// The user id every tenant has a profile for: the same id, eight different users.
const SHARED_USER: &str = "user-1";

/// The system prompt of the tenants provisioned from one template.
const TEMPLATE_PROMPT: &str = "You are the support assistant. Customer note: {{user.note}}. Customer profile: {{user_profile}}.";

/// Questions every tenant asks, byte for byte (the cache attack).
const SHARED_QUESTIONS: usize = 6;

/// Tenant `i`'s canaries in tool calling: one in a tool definition's description, one in a
/// tool result it sends back.
fn tool_canaries(i: usize) -> [String; 2] {
    [format!("canarytool{i}x"), format!("canaryresult{i}x")]
}

fn canaries(i: usize) -> [String; 6] {
    [
        format!("canaryprompt{i}x"),
        format!("canarydoc{i}x"),
        format!("canaryhistory{i}x"),
        format!("canaryreply{i}x"),
        format!("canaryprofile{i}x"),
        // Last: the fine-tuned model id is the one canary a log line may name (its own
        // tenant's: the served model on the tenant's request line).
        format!("canaryft{i}x"),
    ]
}

fn fine_tuned_model(i: usize) -> String {
    let [_, _, _, _, _, ft] = canaries(i);
    format!("ft:gpt-4o-mini-2024-07-18:org:{ft}:v1")
}

fn shared_question(n: usize) -> String {
    format!("Shared question {n}: how long do refunds take?")
}

/// The profile tenant `i` keeps for an end user (`version` varies it between puts).
fn profile_body(i: usize, version: usize) -> Value {
    let [_, _, _, _, profile, _] = canaries(i);
    json!({"note": format!("{profile} v{version}"), "plan": "pro", "seats": version})
}

/// Every upstream call, with the tenant it was made for.
#[derive(Default)]
struct Recorder {
    /// The tenant whose request is in flight. Requests run one at a time and every provider
    /// call happens inside its request, so this is exact.
    caller: Mutex<Option<usize>>,
    calls: Mutex<Vec<(usize, String)>>,
}

impl Recorder {
    fn record(&self, request: &ProviderRequest) -> usize {
        let caller = self
            .caller
            .lock()
            .unwrap()
            .expect("a provider call outside any request");
        self.calls
            .lock()
            .unwrap()
            .push((caller, format!("{request:?}")));
        caller
    }

    fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

/// The simulated provider, recording every call, whose answers are the calling tenant's own
/// data: each ends with the caller's reply canary. (A real provider answers for the account it
/// is called with; the simulated one only echoes the request, and two tenants sending the same
/// request would get the same bytes, so a cached answer served to the wrong tenant could not be
/// told apart.)
struct Recording {
    inner: SimulatedProvider,
    recorder: Arc<Recorder>,
}

fn account_memo(i: usize) -> String {
    let [_, _, _, reply, _, _] = canaries(i);
    format!(" Account memo: {reply}.")
}

#[async_trait]
impl LlmProvider for Recording {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }
    async fn complete(&self, request: &ProviderRequest) -> Result<Completion, ProviderError> {
        let caller = self.recorder.record(request);
        let mut completion = self.inner.complete(request).await?;
        completion.content.push_str(&account_memo(caller));
        Ok(completion)
    }
    async fn stream(&self, request: &ProviderRequest) -> Result<EventStream, ProviderError> {
        let memo = account_memo(self.recorder.record(request));
        let events = self.inner.stream(request).await?;
        Ok(Box::pin(events.flat_map(move |event| {
            let memo = matches!(event, Ok(StreamEvent::Finish(_)))
                .then(|| Ok(StreamEvent::Delta(memo.clone())));
            futures_util::stream::iter(memo.into_iter().chain([event]))
        })))
    }
}

struct World {
    gw: Gateway,
    keys: Vec<String>,
    recorder: Arc<Recorder>,
    /// The JSON log lines (stderr in a Lambda).
    logs: Captured,
    /// The EMF documents (stdout in a Lambda, where CloudWatch Logs receives them too: they
    /// are each request's log line as well as its metrics).
    emf: Captured,
    /// The log capture is this thread's default subscriber while the world lives. Scoped, not
    /// global: another test in this binary may have installed a global one first, and tests
    /// running in parallel must not write into each other's capture. The tests run on a
    /// current-thread runtime, so every task the handlers spawn logs on this thread too.
    _logging: tracing::subscriber::DefaultGuard,
}

async fn world(index: Arc<MemoryVectorIndex>) -> World {
    tollgate_tests::capture::pin_interest();
    let logs = Captured::default();
    let writer = logs.clone();
    // The Lambdas' layer, at debug rather than their default info: more lines to check.
    let subscriber = tracing_subscriber::registry()
        .with(LevelFilter::DEBUG)
        .with(tollgate::telemetry::json_layer(move || writer.clone()));
    let logging = tracing::subscriber::set_default(subscriber);

    let settings = tollgate_tests::harness::settings(&[("TOLLGATE_PROVIDERS", "simulated".into())]);
    let emf = Captured::default();
    let mut gw = Gateway::build_observed(
        settings.clone(),
        Some(Arc::new(EmfSink::new(Box::new(emf.clone())))),
    )
    .await;
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
    gw.state.chat.retriever =
        Some(tollgate::bootstrap::retriever(&settings, &gw.state.chat, index.clone()).unwrap());
    gw.ingest.ingest.index = index;

    let mut keys = Vec::new();
    for i in 0..TENANTS {
        let [prompt, _, _, _, _, _] = canaries(i);
        let tenant = TenantId::parse(format!("tenant{i}")).unwrap();
        let mut config = tollgate::demo::acme_config().unwrap();
        config.tenant_id = tenant.clone();
        config.display_name = format!("Tenant {i}");
        // The end user's profile renders into the prompt, field by field and as a whole.
        config.system_prompt = PromptTemplate::parse(if i < PROMPT_TENANTS {
            format!(
                "You serve tenant {i}. Secret marker {prompt}. Customer note: {{{{user.note}}}}. \
                 Customer profile: {{{{user_profile}}}}."
            )
        } else {
            TEMPLATE_PROMPT.to_owned()
        })
        .unwrap();
        config.prompt_variables = BTreeMap::new();
        let ft_model = fine_tuned_model(i);
        config.routes = BTreeMap::from([
            (
                "chat".to_owned(),
                Route {
                    fallbacks: Vec::new(),
                    provider: ProviderKind::Openai,
                    model: "gpt-4o-mini".into(),
                    fine_tuned: false,
                    kind: RouteKind::Chat,
                },
            ),
            (
                "claude".to_owned(),
                Route {
                    fallbacks: Vec::new(),
                    provider: ProviderKind::Anthropic,
                    model: "claude-haiku-4-5".into(),
                    fine_tuned: false,
                    kind: RouteKind::Chat,
                },
            ),
            (
                "tuned".to_owned(),
                Route {
                    fallbacks: Vec::new(),
                    provider: ProviderKind::Openai,
                    model: ft_model.clone(),
                    fine_tuned: true,
                    kind: RouteKind::Chat,
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
    World {
        gw,
        keys,
        recorder,
        logs,
        emf,
        _logging: logging,
    }
}

/// One request as the test planned it.
struct Plan {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Which shared question, if it is one.
    shared: Option<usize>,
    /// The tenant whose fine-tuned model id this request names.
    probes: Option<usize>,
}

impl Plan {
    fn new(method: Method, path: impl Into<String>, body: Option<Value>) -> Self {
        Self {
            method,
            path: path.into(),
            body,
            shared: None,
            probes: None,
        }
    }
}

/// One request of the run and what came of it.
struct Exchange {
    tenant: usize,
    request_id: String,
    plan: Plan,
    /// Provider calls made while it was served.
    upstream_calls: usize,
    response: TestResponse,
}

impl Exchange {
    /// Requests that write one EMF request line: chat (served or refused) and ingest.
    fn writes_request_line(&self) -> bool {
        self.plan.method == Method::POST
            && ["/v1/chat/completions", "/v1/documents"].contains(&self.plan.path.as_str())
    }

    fn is_chat(&self) -> bool {
        self.plan.method == Method::POST && self.plan.path == "/v1/chat/completions"
    }

    /// The other tenant's canary this request named itself: an echo of it is not a leak.
    fn echo(&self) -> Option<String> {
        self.plan.probes.map(|j| canaries(j)[5].clone())
    }

    /// Canaries of other tenants that must not appear in anything written for this request.
    fn forbidden(&self) -> Vec<String> {
        let echo = self.echo();
        foreign_canaries(self.tenant)
            .into_iter()
            .filter(|c| Some(c) != echo.as_ref())
            .collect()
    }
}

/// One randomized request of tenant `i`.
fn random_request(i: usize, rng: &mut impl Rng) -> Plan {
    let [_, doc, history, reply, _, _] = canaries(i);
    // The shared user, or one no tenant has a profile for until it is put.
    let user = ["user-1", "user-2"][rng.random_range(0..2)];
    let profile_path = format!("/v1/users/{user}/profile");
    match rng.random_range(0..15) {
        0 => {
            let n = rng.random_range(0..3);
            let body = json!({"id": format!("doc{n}"), "title": "notes", "text": format!("Internal notes {doc} number {n} about refunds and launches.")});
            Plan::new(Method::POST, "/v1/documents", Some(body))
        }
        1 => Plan::new(
            Method::DELETE,
            format!("/v1/documents/doc{}", rng.random_range(0..3)),
            None,
        ),
        2 => Plan::new(Method::GET, "/v1/documents", None),
        10 => Plan::new(
            Method::PUT,
            profile_path,
            Some(profile_body(i, rng.random_range(0..2))),
        ),
        11 => {
            let method = if rng.random_bool(0.7) {
                Method::GET
            } else {
                Method::DELETE
            };
            Plan::new(method, profile_path, None)
        }
        12 | 13 => {
            // Byte for byte what other tenants send (streaming does not change the cache key),
            // with no `user`, so the template tenants' rendered prompts are identical too.
            let n = rng.random_range(0..SHARED_QUESTIONS);
            let mut body = json!({"model": "chat", "messages": [{"role": "user", "content": shared_question(n)}]});
            if rng.random_bool(0.3) {
                body["stream"] = json!(true);
            }
            let mut plan = Plan::new(Method::POST, "/v1/chat/completions", Some(body));
            plan.shared = Some(n);
            plan
        }
        14 => {
            // Another tenant's fine-tuned model, by its provider id.
            let j = (i + rng.random_range(1..TENANTS)) % TENANTS;
            let mut plan = match rng.random_range(0..3) {
                0 => Plan::new(
                    Method::GET,
                    format!("/v1/models/{}", fine_tuned_model(j)),
                    None,
                ),
                1 => {
                    let body = json!({"model": fine_tuned_model(j), "messages": [{"role": "user", "content": "Hello"}]});
                    Plan::new(Method::POST, "/v1/chat/completions", Some(body))
                }
                _ => {
                    let body = json!({"model": fine_tuned_model(j), "stream": true, "messages": [{"role": "user", "content": "Hello"}]});
                    Plan::new(Method::POST, "/v1/chat/completions", Some(body))
                }
            };
            plan.probes = Some(j);
            plan
        }
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
            if k == 4 || k == 5 {
                // A tool loop's second step: the tenant's tool definition and tool result.
                let [tool, result] = tool_canaries(i);
                body["tools"] = json!([{"type": "function", "function": {
                    "name": "lookup", "description": format!("Looks up {tool} records"),
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
                let messages = body["messages"].as_array_mut().unwrap();
                messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]}));
                messages.push(json!({"role": "tool", "tool_call_id": "call_1", "content": format!("Found {result}")}));
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
            Plan::new(Method::POST, "/v1/chat/completions", Some(body))
        }
    }
}

async fn send(world: &World, i: usize, n: usize, plan: Plan) -> Exchange {
    let request_id = format!("req{n}");
    let mut req = http::Request::builder()
        .method(plan.method.clone())
        .uri(&plan.path)
        .header("authorization", format!("Bearer {}", world.keys[i]))
        .body(
            plan.body
                .as_ref()
                .map_or_else(bytes::Bytes::new, |b| bytes::Bytes::from(b.to_string())),
        )
        .unwrap();
    // As API Gateway's id would be: every line written for the request names it.
    req.extensions_mut()
        .insert(PlatformRequestId(request_id.clone()));
    *world.recorder.caller.lock().unwrap() = Some(i);
    let before = world.recorder.count();
    let response = world.gw.send(req).await;
    let upstream_calls = world.recorder.count() - before;
    *world.recorder.caller.lock().unwrap() = None;
    assert_eq!(response.header("x-request-id"), Some(request_id.as_str()));
    Exchange {
        tenant: i,
        request_id,
        plan,
        upstream_calls,
        response,
    }
}

async fn run(world: &World, seed: u64) -> Vec<Exchange> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(REQUESTS);
    for n in 0..REQUESTS {
        let i = rng.random_range(0..TENANTS);
        let plan = random_request(i, &mut rng);
        out.push(send(world, i, n, plan).await);
    }
    out
}

fn foreign_canaries(i: usize) -> Vec<String> {
    (0..TENANTS)
        .filter(|&j| j != i)
        .flat_map(|j| canaries(j).into_iter().chain(tool_canaries(j)))
        .collect()
}

/// The tenant a value such as `tenant3` or `Some("tenant3")` names.
fn tenant_named(value: &str) -> Option<usize> {
    let rest = &value[value.find("tenant")? + "tenant".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&i| i < TENANTS)
}

/// The lines the run wrote.
struct Logs {
    /// JSON log lines (tracing).
    tracing: Vec<Value>,
    /// EMF documents.
    emf: Vec<Value>,
}

impl Logs {
    fn request_ids(lines: &[&Value], field: &str) -> Vec<String> {
        let mut ids: Vec<String> = lines
            .iter()
            .map(|l| l[field].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }
}

fn sorted_ids<'a>(exchanges: impl Iterator<Item = &'a Exchange>) -> Vec<String> {
    let mut ids: Vec<String> = exchanges.map(|x| x.request_id.clone()).collect();
    ids.sort();
    ids
}

/// Reads the capture and checks it saw what the functions really write: one EMF request line
/// per chat and ingest request (for its tenant), and one JSON line per refused or failed chat
/// request. Without this, a capture that saw nothing would pass every canary check.
fn captured_logs(world: &World, exchanges: &[Exchange]) -> Logs {
    let logs = Logs {
        tracing: world.logs.lines(),
        emf: world.emf.lines(),
    };
    for line in &logs.tracing {
        assert!(
            line["level"].is_string() && line["message"].is_string(),
            "not the Lambdas' JSON log format: {line}"
        );
    }
    let request_lines: Vec<&Value> = logs.emf.iter().filter(|l| l["Requests"] == 1).collect();
    assert_eq!(
        Logs::request_ids(&request_lines, "RequestId"),
        sorted_ids(exchanges.iter().filter(|x| x.writes_request_line())),
        "one EMF request line per chat and ingest request"
    );
    assert_eq!(
        request_lines.len(),
        world.gw.request_metrics().len(),
        "every metrics record was printed"
    );
    for (message, server_error) in [("request refused", false), ("request failed", true)] {
        let lines: Vec<&Value> = logs
            .tracing
            .iter()
            .filter(|l| l["message"] == message)
            .collect();
        let expected = exchanges.iter().filter(|x| {
            let status = x.response.status;
            x.is_chat() && status != 200 && status.is_server_error() == server_error
        });
        assert_eq!(
            Logs::request_ids(&lines, "request_id"),
            sorted_ids(expected),
            "one `{message}` line per chat request it applies to"
        );
    }
    logs
}

/// Who a line is about: the request it names (every request of the run has a known id;
/// derived ids such as `req7-retrieval` count as their request's), else the tenant it names.
fn line_owner<'a>(
    line: &Value,
    by_id: &HashMap<&str, &'a Exchange>,
) -> Option<(usize, Option<&'a Exchange>)> {
    let request = ["request_id", "RequestId"]
        .iter()
        .find_map(|k| line[*k].as_str())
        .map(|id| {
            let base = id.split('-').next().unwrap_or(id);
            *by_id.get(base).unwrap_or_else(|| {
                panic!("a line names request {id}, which the run never sent: {line}")
            })
        });
    let tenant = ["tenant_id", "TenantId"]
        .iter()
        .find_map(|k| line[*k].as_str())
        .and_then(tenant_named);
    match (request, tenant) {
        (Some(x), Some(t)) => {
            assert_eq!(
                x.tenant, t,
                "a line names the wrong tenant for its request: {line}"
            );
            Some((t, Some(x)))
        }
        (Some(x), None) => Some((x.tenant, Some(x))),
        (None, Some(t)) => Some((t, None)),
        (None, None) => None,
    }
}

/// Every channel, every tenant: nothing of one tenant reaches another. Returns the captured
/// lines and how many lines carried their own tenant's fine-tuned model id.
fn assert_nothing_crossed(world: &World, exchanges: &[Exchange]) -> (Logs, usize) {
    let by_id: HashMap<&str, &Exchange> = exchanges
        .iter()
        .map(|x| (x.request_id.as_str(), x))
        .collect();

    // Responses and stream chunks (an SSE body is every chunk).
    for x in exchanges {
        let text = x.response.text();
        for canary in x.forbidden() {
            assert!(
                !text.contains(&canary),
                "{} of tenant{} carries {canary}: {text}",
                x.request_id,
                x.tenant
            );
        }
    }

    // Upstream: each call carries its own tenant's prompt and nothing of others.
    let calls = world.recorder.calls.lock().unwrap().clone();
    assert!(calls.len() > 100, "{} upstream calls", calls.len());
    for (i, call) in &calls {
        let own_prompt = if *i < PROMPT_TENANTS {
            canaries(*i)[0].clone()
        } else {
            TEMPLATE_PROMPT.split("{{").next().unwrap().to_owned()
        };
        assert!(
            call.contains(&own_prompt),
            "tenant{i}'s upstream call lacks its system prompt: {call}"
        );
        for canary in foreign_canaries(*i) {
            assert!(
                !call.contains(&canary),
                "tenant{i}'s upstream call carries {canary}: {call}"
            );
        }
    }

    // Tool loops reached the provider with their own tenant's definitions and results (so the
    // checks above had tool canaries to catch).
    let tooled = calls
        .iter()
        .filter(|(i, call)| tool_canaries(*i).iter().all(|c| call.contains(c)))
        .count();
    assert!(tooled > 10, "{tooled} upstream calls carried a tool loop");

    // Usage events, by the tenant they bill; the request they name must be that tenant's.
    let events = world.gw.usage_events();
    assert!(events.len() > 100, "{} usage events", events.len());
    for event in events {
        let i = tenant_named(event.tenant_id.as_str()).unwrap();
        let id = event.request_id.as_str();
        let x = by_id[id.split('-').next().unwrap()];
        assert_eq!(x.tenant, i, "usage event {id} bills the wrong tenant");
        let text = serde_json::to_string(&event).unwrap();
        for canary in x.forbidden() {
            assert!(
                !text.contains(&canary),
                "tenant{i}'s usage event carries {canary}: {text}"
            );
        }
    }

    // Log lines and EMF metric lines.
    let logs = captured_logs(world, exchanges);
    let mut own_fine_tuned = 0;
    for line in logs.tracing.iter().chain(&logs.emf) {
        let text = line.to_string();
        let owner = line_owner(line, &by_id);
        for j in 0..TENANTS {
            let [prompt, doc, history, reply, profile, ft] = canaries(j);
            let [tool, result] = tool_canaries(j);
            for canary in [prompt, doc, history, reply, profile, tool, result] {
                assert!(
                    !text.contains(&canary),
                    "a log line carries {canary}: {text}"
                );
            }
            if !text.contains(&ft) {
                continue;
            }
            match owner {
                Some((i, _)) if i == j => own_fine_tuned += 1,
                Some((_, Some(x))) if x.echo().as_ref() == Some(&ft) => {}
                _ => panic!("a line not of tenant{j} carries {ft}: {text}"),
            }
        }
    }
    (logs, own_fine_tuned)
}

/// The cache attack: a tenant may be served from the cache only what it cached itself, even
/// when another tenant has asked the byte-identical question. Returns how many times a
/// template tenant asked a question another template tenant had cached (where only the tenant
/// id separates the cache keys) and how many shared questions were cache hits.
fn assert_cache_is_per_tenant(exchanges: &[Exchange]) -> (usize, usize) {
    let mut cached_by: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let (mut attacks, mut hits) = (0, 0);
    for x in exchanges {
        let Some(n) = x.plan.shared else { continue };
        assert_eq!(x.response.status, 200, "{}", x.response.text());
        let cache = x.response.header("x-tollgate-cache");
        let cached = cached_by.entry(n).or_default();
        if cached.contains(&x.tenant) {
            hits += usize::from(cache == Some("hit"));
        } else {
            assert_ne!(
                cache,
                Some("hit"),
                "tenant{} was served shared question {n} from the cache before it ever asked it \
                 (tenants {cached:?} had): {}",
                x.tenant,
                x.response.text()
            );
            if x.tenant >= PROMPT_TENANTS && cached.iter().any(|&t| t >= PROMPT_TENANTS) {
                attacks += 1;
            }
        }
        if cache == Some("miss") {
            cached.insert(x.tenant);
        }
    }
    (attacks, hits)
}

/// Requests for another tenant's fine-tuned model id are refused as unknown models, before any
/// provider call. Returns how many there were.
fn assert_foreign_fine_tuned_models_are_refused(exchanges: &[Exchange]) -> usize {
    let probes: Vec<&Exchange> = exchanges
        .iter()
        .filter(|x| x.plan.probes.is_some())
        .collect();
    for x in &probes {
        assert_eq!(x.response.status, 404, "{}", x.response.text());
        assert_eq!(x.response.json()["error"]["code"], "model_not_found");
        assert_eq!(x.upstream_calls, 0, "{} reached a provider", x.request_id);
    }
    probes.len()
}

#[tokio::test(flavor = "current_thread")] // The log capture is this thread's (see `World`).
async fn no_canary_of_one_tenant_reaches_another_through_any_channel() {
    let world = world(Arc::new(MemoryVectorIndex::new())).await;
    let exchanges = run(&world, 7).await;

    let statuses = exchanges.iter().fold(BTreeMap::new(), |mut m, x| {
        *m.entry(x.response.status.as_u16()).or_insert(0) += 1;
        m
    });
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200, 404],
        "{statuses:?}"
    );
    assert!(
        exchanges.iter().any(
            |x| x.plan.shared.is_none() && x.response.header("x-tollgate-cache") == Some("hit")
        ),
        "the cache channel was exercised by each tenant's own questions"
    );
    assert!(
        exchanges
            .iter()
            .any(|x| x.response.header("x-tollgate-documents").is_some()),
        "retrieval was exercised"
    );
    let profile_statuses: BTreeMap<u16, usize> = exchanges
        .iter()
        .filter(|x| x.plan.path.ends_with("/profile"))
        .filter(|x| x.response.text().contains(&canaries(x.tenant)[4]) || x.response.status == 404)
        .fold(BTreeMap::new(), |mut m, x| {
            *m.entry(x.response.status.as_u16()).or_insert(0) += 1;
            m
        });
    assert!(
        profile_statuses.contains_key(&200) && profile_statuses.contains_key(&404),
        "profiles were put, read and found missing: {profile_statuses:?}"
    );
    let calls = world.recorder.calls.lock().unwrap().clone();
    assert!(calls.len() > 300, "{} upstream calls", calls.len());
    let personalized = calls
        .iter()
        .filter(|(i, c)| c.contains(&canaries(*i)[4]))
        .count();
    assert!(
        personalized > 50,
        "profiles were rendered into their own tenant's prompts ({personalized} calls)"
    );

    let (attacks, shared_hits) = assert_cache_is_per_tenant(&exchanges);
    assert!(
        attacks >= 8 && shared_hits >= 20,
        "template tenants asked questions others had cached {attacks} times; \
         {shared_hits} shared questions were cache hits"
    );
    let probes = assert_foreign_fine_tuned_models_are_refused(&exchanges);
    assert!(
        probes >= 20,
        "{probes} requests for foreign fine-tuned models"
    );

    let (logs, own_fine_tuned) = assert_nothing_crossed(&world, &exchanges);
    assert!(
        own_fine_tuned > 20,
        "fine-tuned model ids reach their own tenant's lines ({own_fine_tuned}), so the check \
         that they reach no other tenant's is not vacuous"
    );
    assert!(
        !logs
            .tracing
            .iter()
            .any(|l| l.get("security_event").is_some())
            && !logs
                .emf
                .iter()
                .any(|l| l.get("IsolationViolation").is_some()),
        "a clean run has no isolation violation"
    );
    assert!(world.gw.metrics.isolation_violations().is_empty());
}

#[tokio::test(flavor = "current_thread")] // The log capture is this thread's (see `World`).
async fn a_broken_tenant_filter_is_caught_by_the_defense_in_depth_check() {
    let world = world(Arc::new(MemoryVectorIndex::with_broken_tenant_filter())).await;
    let exchanges = run(&world, 11).await;
    let refused: Vec<&Exchange> = exchanges
        .iter()
        .filter(|x| x.response.status == 500)
        .collect();
    assert!(!refused.is_empty(), "the broken filter was never exercised");
    for x in &refused {
        assert_eq!(x.response.json()["error"]["code"], "isolation_check_failed");
        // Fails closed before any provider call.
        assert_eq!(x.upstream_calls, 0, "{} reached a provider", x.request_id);
    }
    assert_cache_is_per_tenant(&exchanges);
    assert_foreign_fine_tuned_models_are_refused(&exchanges);
    // Still nothing crossed, through any channel.
    let (logs, _) = assert_nothing_crossed(&world, &exchanges);

    // One security log line per refusal, naming the request, its tenant and the other tenant.
    let security: Vec<&Value> = logs
        .tracing
        .iter()
        .filter(|l| l["security_event"] == "isolation_violation")
        .collect();
    assert_eq!(
        Logs::request_ids(&security, "request_id"),
        sorted_ids(refused.iter().copied()),
        "one security log line per refused request"
    );
    for line in &security {
        let x = refused
            .iter()
            .find(|x| line["request_id"] == x.request_id.as_str())
            .unwrap();
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(line["tenant_id"], format!("tenant{}", x.tenant), "{line}");
        let offending = line["offending_tenant"].as_str().unwrap();
        assert!(
            tenant_named(offending).is_some_and(|j| j != x.tenant),
            "{line}"
        );
    }

    // One `IsolationViolation` EMF document per refusal, for the refused tenant.
    let violations: Vec<&Value> = logs
        .emf
        .iter()
        .filter(|l| l.get("IsolationViolation").is_some())
        .collect();
    let mut metric_tenants: Vec<String> = violations
        .iter()
        .map(|l| {
            assert_eq!(l["IsolationViolation"], 1, "{l}");
            assert_eq!(l["Function"], "invoke", "{l}");
            assert_eq!(
                l["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "IsolationViolation",
                "{l}"
            );
            l["TenantId"].as_str().unwrap().to_owned()
        })
        .collect();
    metric_tenants.sort();
    let mut refused_tenants: Vec<String> = refused
        .iter()
        .map(|x| format!("tenant{}", x.tenant))
        .collect();
    refused_tenants.sort();
    assert_eq!(
        metric_tenants, refused_tenants,
        "one IsolationViolation metric per refused request"
    );
    assert_eq!(world.gw.metrics.isolation_violations().len(), refused.len());
}
