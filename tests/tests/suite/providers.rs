//! The provider contract: one list of tests, run against every HTTP provider adapter talking to
//! its stand-in over real HTTP.
//!
//! `contract_suite!` (`tollgate_tests::contracts`, the macro every contract suite uses) expands
//! each generic test once per provider (`openai::…`, `anthropic::…`, `bedrock::…`), each on a
//! fresh stand-in. The cases about API keys (pools, scrubbing an echoed key, `retry-after`,
//! which Bedrock never sends) run on the keyed providers (`keyed_openai::…`,
//! `keyed_anthropic::…`); Bedrock's own (SigV4, throttling, inference profiles) follow them. What differs between providers (where the system prompt goes, which
//! headers carry the key) is asked of the [`Harness`], never branched on in a test.
// The generic test bodies and their helpers are test code (the macro wraps each body in a
// `#[tokio::test]`), but clippy only recognises the wrappers as tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate::adapters::anthropic::AnthropicProvider;
use tollgate::adapters::bedrock::BedrockProvider;
use tollgate::adapters::http_provider::ProviderSettings;
use tollgate::adapters::openai::OpenAiProvider;
use tollgate::adapters::retry::RetryPolicy;
use tollgate::adapters::sigv4::{AwsSigner, CredentialSource};
use tollgate::domain::chat::{FinishReason, Role};
use tollgate::domain::tenant::ProviderKind;
use tollgate::domain::usage::TokenUsage;
use tollgate::ports::provider::{
    EventStream, LlmProvider, ProviderError, ProviderErrorKind, ProviderRequest, StreamEvent,
};
use tollgate_tests::fixtures::{message, provider_request};
use tollgate_tests::standins::bedrock as bedrock_standin;
use tollgate_tests::{
    AnthropicStandIn, BedrockStandIn, Behavior, OpenAiStandIn, RecordedRequest, StandIn,
};

const API_KEY: &str = "sk-tollgate-test-3f9a1c7e5b2d";
const IDLE_TIMEOUT: Duration = Duration::from_millis(300);
const SHORT_REQUEST_TIMEOUT: Duration = Duration::from_millis(300);
/// Timeouts must fire well before this; generous for a loaded 2-core CI machine.
const PROMPTLY: Duration = Duration::from_secs(2);

/// What a test needs to know about one provider.
trait Harness: Sized {
    const KIND: ProviderKind;
    const MODEL: &'static str;
    /// Anthropic reports prompt-cache writes; OpenAI caches automatically and reports reads only.
    const REPORTS_CACHE_WRITES: bool;
    const ENDPOINT_PATH: &'static str;

    async fn start() -> Self;
    fn stand_in(&self) -> &StandIn;
    fn build(settings: &ProviderSettings) -> Box<dyn LlmProvider>;
    /// The adapter's `Debug` output (the port trait does not require `Debug`).
    fn debug(settings: &ProviderSettings) -> String;

    /// The key went upstream in this provider's header.
    fn assert_credentials_sent(request: &RecordedRequest);
    /// The tenant prompt is where this provider's cache benefits from it; `long` prompts are
    /// past the caching threshold.
    fn assert_system_prompt_placement(
        body: &Value,
        tenant_prompt: &str,
        client_system: &str,
        long: bool,
    );
    /// `stop` and the defaults went upstream under this provider's names.
    fn assert_parameters(body: &Value);
    /// A streamed request asks for what Tollgate needs (usage, for OpenAI).
    fn assert_stream_request(body: &Value);
    /// How the adapter words a rejection whose body said `message` (Bedrock: after AWS's
    /// error type).
    fn rejection(message: &str) -> String {
        message.to_owned()
    }
    /// The model id the request named (in the body; Bedrock: in the path).
    fn model_sent(request: &RecordedRequest) -> String {
        request.body["model"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn settings(&self) -> ProviderSettings {
        ProviderSettings {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            stream_idle_timeout: IDLE_TIMEOUT,
            ..ProviderSettings::new(self.stand_in().base_url(), API_KEY)
        }
    }

    fn provider(&self) -> Box<dyn LlmProvider> {
        Self::build(&self.settings())
    }
}

struct OpenAi(OpenAiStandIn);

impl Harness for OpenAi {
    const KIND: ProviderKind = ProviderKind::Openai;
    const MODEL: &'static str = "gpt-4o-mini";
    const REPORTS_CACHE_WRITES: bool = false;
    const ENDPOINT_PATH: &'static str = "/v1/chat/completions";

    async fn start() -> Self {
        Self(OpenAiStandIn::start().await)
    }

    fn stand_in(&self) -> &StandIn {
        &self.0
    }

    fn build(settings: &ProviderSettings) -> Box<dyn LlmProvider> {
        Box::new(OpenAiProvider::new(settings).unwrap())
    }

    fn debug(settings: &ProviderSettings) -> String {
        format!("{:?}", OpenAiProvider::new(settings).unwrap())
    }

    fn assert_credentials_sent(request: &RecordedRequest) {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {API_KEY}").as_str())
        );
    }

    fn assert_system_prompt_placement(
        body: &Value,
        tenant_prompt: &str,
        client_system: &str,
        _long: bool,
    ) {
        // OpenAI caches the longest stable prefix automatically: the tenant prompt goes first.
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": tenant_prompt})
        );
        assert_eq!(
            body["messages"][1],
            json!({"role": "system", "content": client_system})
        );
        assert_eq!(body["messages"][2]["role"], "user");
        assert!(!body.to_string().contains("cache_control"));
    }

    fn assert_parameters(body: &Value) {
        assert_eq!(body["stop"], json!(["END"]));
        assert!(body.get("max_completion_tokens").is_none());
        assert!(body.get("stream_options").is_none());
    }

    fn assert_stream_request(body: &Value) {
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }
}

struct Anthropic(AnthropicStandIn);

impl Harness for Anthropic {
    const KIND: ProviderKind = ProviderKind::Anthropic;
    const MODEL: &'static str = "claude-sonnet-4-5";
    const REPORTS_CACHE_WRITES: bool = true;
    const ENDPOINT_PATH: &'static str = "/v1/messages";

    async fn start() -> Self {
        Self(AnthropicStandIn::start().await)
    }

    fn stand_in(&self) -> &StandIn {
        &self.0
    }

    fn build(settings: &ProviderSettings) -> Box<dyn LlmProvider> {
        Box::new(AnthropicProvider::new(settings).unwrap())
    }

    fn debug(settings: &ProviderSettings) -> String {
        format!("{:?}", AnthropicProvider::new(settings).unwrap())
    }

    fn assert_credentials_sent(request: &RecordedRequest) {
        assert_eq!(request.header("x-api-key"), Some(API_KEY));
        assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(request.header("authorization"), None);
    }

    fn assert_system_prompt_placement(
        body: &Value,
        tenant_prompt: &str,
        client_system: &str,
        long: bool,
    ) {
        let mut tenant_block = json!({"type": "text", "text": tenant_prompt});
        if long {
            tenant_block["cache_control"] = json!({"type": "ephemeral"});
        }
        assert_eq!(
            body["system"],
            json!([tenant_block, {"type": "text", "text": client_system}])
        );
        assert_eq!(body["messages"][0]["role"], "user");
    }

    fn assert_parameters(body: &Value) {
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["max_tokens"], 4096);
    }

    fn assert_stream_request(body: &Value) {
        assert_eq!(body["stream"], true);
    }
}

struct Bedrock(BedrockStandIn);

/// The stand-in's model id: the `:` of a Bedrock id is percent-encoded in the path, and
/// signed that way.
const BEDROCK_MODEL: &str = "anthropic.claude-sonnet-4-5-20250929-v1:0";

fn bedrock_signer() -> AwsSigner {
    AwsSigner::new(
        tollgate::adapters::bedrock::SIGNING_NAME,
        bedrock_standin::REGION,
        CredentialSource::Provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                bedrock_standin::credentials(),
            ),
        ),
    )
}

impl Harness for Bedrock {
    const KIND: ProviderKind = ProviderKind::Bedrock;
    const MODEL: &'static str = BEDROCK_MODEL;
    const REPORTS_CACHE_WRITES: bool = true;
    const ENDPOINT_PATH: &'static str =
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse";

    async fn start() -> Self {
        Self(BedrockStandIn::start().await)
    }

    fn stand_in(&self) -> &StandIn {
        &self.0
    }

    fn build(settings: &ProviderSettings) -> Box<dyn LlmProvider> {
        Box::new(BedrockProvider::new(settings, bedrock_signer()).unwrap())
    }

    fn debug(settings: &ProviderSettings) -> String {
        format!(
            "{:?}",
            BedrockProvider::new(settings, bedrock_signer()).unwrap()
        )
    }

    fn assert_credentials_sent(request: &RecordedRequest) {
        // The stand-in recomputed the signature from what arrived before answering.
        let authorization = request.header("authorization").unwrap();
        assert!(
            authorization.starts_with(&format!(
                "AWS4-HMAC-SHA256 Credential={}/",
                bedrock_standin::ACCESS_KEY
            )),
            "{authorization}"
        );
        assert_eq!(
            request.header("x-amz-security-token"),
            Some(bedrock_standin::SESSION_TOKEN)
        );
        assert_eq!(request.header("x-api-key"), None);
    }

    fn assert_system_prompt_placement(
        body: &Value,
        tenant_prompt: &str,
        client_system: &str,
        long: bool,
    ) {
        let mut system = vec![json!({"text": tenant_prompt})];
        if long {
            system.push(json!({"cachePoint": {"type": "default"}}));
        }
        system.push(json!({"text": client_system}));
        assert_eq!(body["system"], Value::Array(system));
        assert_eq!(body["messages"][0]["role"], "user");
    }

    fn assert_parameters(body: &Value) {
        assert_eq!(body["inferenceConfig"]["stopSequences"], json!(["END"]));
        assert_eq!(body["inferenceConfig"]["maxTokens"], 4096);
    }

    fn assert_stream_request(body: &Value) {
        // The operation (`converse-stream`) asks for the stream; the body is the same.
        assert!(body.get("stream").is_none());
    }

    fn rejection(message: &str) -> String {
        format!("ValidationException: {message}")
    }

    fn model_sent(request: &RecordedRequest) -> String {
        request
            .path
            .strip_prefix("/model/")
            .and_then(|rest| rest.rsplit_once('/'))
            .map(|(model, _)| model.replace("%3A", ":"))
            .unwrap_or_default()
    }
}

async fn openai() -> Option<OpenAi> {
    Some(OpenAi::start().await)
}

async fn anthropic() -> Option<Anthropic> {
    Some(Anthropic::start().await)
}

async fn bedrock() -> Option<Bedrock> {
    Some(Bedrock::start().await)
}

async fn keyed_openai() -> Option<OpenAi> {
    openai().await
}

async fn keyed_anthropic() -> Option<Anthropic> {
    anthropic().await
}

impl tollgate_tests::contracts::Backend for OpenAi {}
impl tollgate_tests::contracts::Backend for Anthropic {}
impl tollgate_tests::contracts::Backend for Bedrock {}

tollgate_tests::contract_suite! {
    backends: [openai, anthropic, bedrock],
    cases: {
        a_buffered_reply_carries_the_text_usage_and_served_model => super::a_buffered_reply_carries_the_text_usage_and_served_model,
        a_streamed_reply_concatenates_its_deltas_and_ends_with_one_usage => super::a_streamed_reply_concatenates_its_deltas_and_ends_with_one_usage,
        cache_reads_and_writes_are_parsed_from_buffered_and_streamed_replies => super::cache_reads_and_writes_are_parsed_from_buffered_and_streamed_replies,
        the_request_reaches_the_providers_endpoint_with_its_credentials_and_parameters => super::the_request_reaches_the_providers_endpoint_with_its_credentials_and_parameters,
        the_tenant_system_prompt_is_placed_where_the_provider_caches_it => super::the_tenant_system_prompt_is_placed_where_the_provider_caches_it,
        a_5xx_is_an_upstream_error_and_is_retried_until_success => super::a_5xx_is_an_upstream_error_and_is_retried_until_success,
        a_400_is_rejected_with_the_providers_message_and_not_retried => super::a_400_is_rejected_with_the_providers_message_and_not_retried,
        a_401_is_a_credentials_error_and_not_retried => super::a_401_is_a_credentials_error_and_not_retried,
        an_error_status_before_a_stream_starts_is_returned_by_stream => super::an_error_status_before_a_stream_starts_is_returned_by_stream,
        a_stalled_stream_times_out_within_the_idle_timeout => super::a_stalled_stream_times_out_within_the_idle_timeout,
        a_slow_response_times_out_with_the_request_timeout => super::a_slow_response_times_out_with_the_request_timeout,
        a_buffered_calls_limit_allows_for_its_reply_cap => super::a_buffered_calls_limit_allows_for_its_reply_cap,
        a_call_past_its_deadline_is_cut_there_and_one_already_past_is_never_sent => super::a_call_past_its_deadline_is_cut_there_and_one_already_past_is_never_sent,
        a_stalled_buffered_body_times_out_with_the_request_timeout => super::a_stalled_buffered_body_times_out_with_the_request_timeout,
        an_unparseable_reply_is_an_upstream_error => super::an_unparseable_reply_is_an_upstream_error,
        an_unreachable_provider_is_an_upstream_error => super::an_unreachable_provider_is_an_upstream_error,
    }
}

tollgate_tests::contract_suite! {
    backends: [keyed_openai, keyed_anthropic],
    cases: {
        a_429_carries_its_retry_after_and_the_retry_policy_waits_that_long => super::a_429_carries_its_retry_after_and_the_retry_policy_waits_that_long,
        a_retry_after_longer_than_the_max_delay_is_returned_without_waiting => super::a_retry_after_longer_than_the_max_delay_is_returned_without_waiting,
        the_api_key_never_appears_in_errors_or_debug_output => super::the_api_key_never_appears_in_errors_or_debug_output,
        a_pools_keys_take_turns_and_a_429_moves_the_call_to_the_next_key_at_once => super::a_pools_keys_take_turns_and_a_429_moves_the_call_to_the_next_key_at_once,
        when_every_key_of_a_pool_is_rate_limited_the_429_is_returned => super::when_every_key_of_a_pool_is_rate_limited_the_429_is_returned,
        no_key_of_a_pool_appears_in_errors => super::no_key_of_a_pool_appears_in_errors,
        a_refused_key_of_a_pool_sits_out_and_the_call_is_served_by_another => super::a_refused_key_of_a_pool_sits_out_and_the_call_is_served_by_another,
        a_call_pinned_to_a_key_goes_out_on_it_alone_and_its_429_is_returned => super::a_call_pinned_to_a_key_goes_out_on_it_alone_and_its_429_is_returned,
    }
}

// ---- Key pools ----

const POOL: [&str; 2] = ["sk-pool-key-aaaa-0001", "sk-pool-key-bbbb-0002"];

fn pooled<H: Harness>(h: &H) -> Box<dyn LlmProvider> {
    H::build(&ProviderSettings {
        api_key: format!("{}, {}", POOL[0], POOL[1]).into(),
        ..h.settings()
    })
}

/// The key a request carried, in either provider's header.
fn key_of(request: &RecordedRequest) -> String {
    request
        .header("x-api-key")
        .or_else(|| request.header("authorization")?.strip_prefix("Bearer "))
        .expect("a credential header")
        .to_owned()
}

fn keys_sent<H: Harness>(h: &H) -> Vec<String> {
    h.stand_in().requests().iter().map(key_of).collect()
}

async fn a_pools_keys_take_turns_and_a_429_moves_the_call_to_the_next_key_at_once<H: Harness>(
    h: &H,
) {
    let provider = pooled(h);
    let req = request::<H>();
    provider.complete(&req).await.unwrap();
    provider.complete(&req).await.unwrap();
    assert_eq!(keys_sent(h), [POOL[0], POOL[1]]);
    // The first key is rate limited for 30 s: the same call goes out again on the second,
    // without waiting and without a retry by the caller.
    h.stand_in()
        .push(Behavior::rate_limited(Duration::from_secs(30)));
    let started = Instant::now();
    let reply = provider.complete(&req).await.unwrap();
    assert_eq!(reply.content, tollgate_tests::standins::DEFAULT_REPLY_TEXT);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Then the rested key sits out: every call goes to the other one.
    provider.complete(&req).await.unwrap();
    let mut events = provider.stream(&req).await.unwrap();
    while events.next().await.is_some() {}
    assert_eq!(
        keys_sent(h),
        [POOL[0], POOL[1], POOL[0], POOL[1], POOL[1], POOL[1]]
    );
}

async fn when_every_key_of_a_pool_is_rate_limited_the_429_is_returned<H: Harness>(h: &H) {
    let provider = pooled(h);
    let req = request::<H>();
    let wait = Duration::from_secs(2);
    h.stand_in().push(Behavior::rate_limited(wait));
    h.stand_in().push(Behavior::rate_limited(wait));
    let err = provider.complete(&req).await.unwrap_err();
    assert_eq!(
        err.kind,
        ProviderErrorKind::RateLimited {
            retry_after: Some(wait)
        }
    );
    // Each key was tried once, then the caller's retry policy decides.
    assert_eq!(keys_sent(h), [POOL[0], POOL[1]]);
}

async fn a_refused_key_of_a_pool_sits_out_and_the_call_is_served_by_another<H: Harness>(h: &H) {
    let provider = pooled(h);
    let req = request::<H>();
    // The first key was revoked: the call moves to the second at once, and the revoked key
    // is not used again for the rest (a minute).
    h.stand_in().push(Behavior::status(401));
    provider.complete(&req).await.unwrap();
    provider.complete(&req).await.unwrap();
    provider.complete(&req).await.unwrap();
    assert_eq!(keys_sent(h), [POOL[0], POOL[1], POOL[1], POOL[1]]);
}

/// A call the limiter reserved on one key's quota (`pool_key`) uses that key and no other:
/// a 429 on it is returned rather than moved to a key whose quota was not reserved.
async fn a_call_pinned_to_a_key_goes_out_on_it_alone_and_its_429_is_returned<H: Harness>(h: &H) {
    let provider = pooled(h);
    let pinned = ProviderRequest {
        pool_key: Some(1),
        ..request::<H>()
    };
    provider.complete(&pinned).await.unwrap();
    let mut events = provider.stream(&pinned).await.unwrap();
    while events.next().await.is_some() {}
    assert_eq!(keys_sent(h), [POOL[1], POOL[1]]);
    h.stand_in()
        .push(Behavior::rate_limited(Duration::from_secs(30)));
    let err = provider.complete(&pinned).await.unwrap_err();
    assert!(
        matches!(err.kind, ProviderErrorKind::RateLimited { .. }),
        "{err}"
    );
    assert_eq!(keys_sent(h), [POOL[1]; 3], "never moved to the other key");
    // The rested key is still the one a pinned call uses; an unpinned call avoids it.
    provider.complete(&pinned).await.unwrap();
    provider.complete(&request::<H>()).await.unwrap();
    assert_eq!(keys_sent(h)[3..], [POOL[1], POOL[0]]);
    // A position past the pool (the secret now holds fewer keys than the quotas name) is the
    // operator's to fix, and nothing is sent.
    let past = ProviderRequest {
        pool_key: Some(2),
        ..request::<H>()
    };
    let err = provider.complete(&past).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Credentials);
    assert!(err.message.contains("has 2 key(s)"), "{err}");
    assert_eq!(keys_sent(h).len(), 5);
}

async fn no_key_of_a_pool_appears_in_errors<H: Harness>(h: &H) {
    let provider = pooled(h);
    let req = request::<H>();
    h.stand_in().push(Behavior::error(
        400,
        format!("invalid request for key {} and {}", POOL[1], POOL[0]),
    ));
    let err = provider.complete(&req).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Rejected);
    for key in POOL {
        assert!(!err.to_string().contains(key), "{err}");
    }
    assert!(err.message.contains("[REDACTED]"), "{err}");
}

// ---- Helpers ----

fn request<H: Harness>() -> ProviderRequest {
    provider_request(H::MODEL)
}

fn usage(prompt: u64, completion: u64) -> TokenUsage {
    TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..TokenUsage::default()
    }
}

async fn collect(stream: EventStream) -> Vec<Result<StreamEvent, ProviderError>> {
    stream.collect().await
}

async fn stream_ok(provider: &dyn LlmProvider, request: &ProviderRequest) -> Vec<StreamEvent> {
    let stream = provider.stream(request).await.unwrap();
    collect(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn usages(events: &[StreamEvent]) -> Vec<TokenUsage> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Usage(u) => Some(*u),
            _ => None,
        })
        .collect()
}

/// A retry policy fast enough for tests.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(8),
    }
}

// ---- The contract ----

async fn a_buffered_reply_carries_the_text_usage_and_served_model<H: Harness>(h: &H) {
    h.stand_in()
        .push(Behavior::reply("The answer is 42.", usage(31, 7)));
    let provider = h.provider();
    assert_eq!(provider.kind(), H::KIND);

    let completion = provider.complete(&request::<H>()).await.unwrap();

    assert_eq!(completion.content, "The answer is 42.");
    assert_eq!(completion.finish_reason, FinishReason::Stop);
    assert_eq!(completion.usage, usage(31, 7));
    assert_eq!(completion.served_model, H::MODEL);
    assert_eq!(h.stand_in().requests().len(), 1);
}

async fn a_streamed_reply_concatenates_its_deltas_and_ends_with_one_usage<H: Harness>(h: &H) {
    let text = "Streaming works, one word at a time.";
    h.stand_in().push(Behavior::reply(text, usage(40, 9)));

    let events = stream_ok(h.provider().as_ref(), &request::<H>()).await;

    assert_eq!(events.first(), Some(&StreamEvent::Model(H::MODEL.into())));
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, StreamEvent::Delta(_)))
            .count()
            > 1
    );
    assert_eq!(text_of(&events), text);
    assert!(events.contains(&StreamEvent::Finish(FinishReason::Stop)));
    assert_eq!(usages(&events), vec![usage(40, 9)]);
    assert_eq!(events.last(), Some(&StreamEvent::Usage(usage(40, 9))));
    H::assert_stream_request(&h.stand_in().last_request().body);
}

async fn cache_reads_and_writes_are_parsed_from_buffered_and_streamed_replies<H: Harness>(h: &H) {
    let sent = TokenUsage {
        prompt_tokens: 2100,
        completion_tokens: 12,
        cached_tokens: 1792,
        cache_write_tokens: 250,
    };
    let expected = TokenUsage {
        cache_write_tokens: if H::REPORTS_CACHE_WRITES { 250 } else { 0 },
        ..sent
    };
    h.stand_in().push(Behavior::reply("cached", sent));
    h.stand_in().push(Behavior::reply("cached", sent));
    let provider = h.provider();

    let completion = provider.complete(&request::<H>()).await.unwrap();
    let events = stream_ok(provider.as_ref(), &request::<H>()).await;

    assert_eq!(completion.usage, expected);
    assert_eq!(usages(&events), vec![expected]);
}

async fn the_request_reaches_the_providers_endpoint_with_its_credentials_and_parameters<
    H: Harness,
>(
    h: &H,
) {
    let mut req = request::<H>();
    req.max_tokens = None;
    req.stop = vec!["END".into()];

    h.provider().complete(&req).await.unwrap();

    let recorded = h.stand_in().last_request();
    assert_eq!(recorded.path, H::ENDPOINT_PATH);
    assert_eq!(recorded.header("content-type"), Some("application/json"));
    H::assert_credentials_sent(&recorded);
    assert_eq!(H::model_sent(&recorded), H::MODEL);
    assert!(!recorded.is_stream());
    H::assert_parameters(&recorded.body);
}

async fn the_tenant_system_prompt_is_placed_where_the_provider_caches_it<H: Harness>(h: &H) {
    let provider = h.provider();
    let short = "You are Acme's support assistant.".to_owned();
    let long =
        "You are Acme's support assistant. Follow the style guide in every answer. ".repeat(150);
    for (tenant_prompt, is_long) in [(short, false), (long, true)] {
        let mut req = request::<H>();
        req.system = Some(tenant_prompt.clone());
        req.messages
            .insert(0, message(Role::System, "Answer in French."));

        provider.complete(&req).await.unwrap();

        let body = h.stand_in().last_request().body;
        H::assert_system_prompt_placement(&body, &tenant_prompt, "Answer in French.", is_long);
    }
}

async fn a_429_carries_its_retry_after_and_the_retry_policy_waits_that_long<H: Harness>(h: &H) {
    let provider = h.provider();
    let req = request::<H>();
    let wait = Duration::from_secs(1);

    h.stand_in().push(Behavior::rate_limited(wait));
    let err = provider.complete(&req).await.unwrap_err();
    assert_eq!(
        err.kind,
        ProviderErrorKind::RateLimited {
            retry_after: Some(wait)
        }
    );
    assert!(err.is_retryable());

    h.stand_in().push(Behavior::rate_limited(wait));
    let started = Instant::now();
    let (provider, req) = (provider.as_ref(), &req);
    let (result, attempts) = RetryPolicy::default()
        .run(move || provider.complete(req))
        .await;

    assert_eq!(
        result.unwrap().content,
        tollgate_tests::standins::DEFAULT_REPLY_TEXT
    );
    assert_eq!(attempts, 2);
    assert!(
        started.elapsed() >= wait,
        "retried after {:?}",
        started.elapsed()
    );
    assert_eq!(h.stand_in().requests().len(), 3);
}

async fn a_retry_after_longer_than_the_max_delay_is_returned_without_waiting<H: Harness>(h: &H) {
    let provider = h.provider();
    let req = request::<H>();
    h.stand_in()
        .push(Behavior::rate_limited(Duration::from_secs(30)));

    let started = Instant::now();
    let (provider, req) = (provider.as_ref(), &req);
    let (result, attempts) = RetryPolicy::default()
        .run(move || provider.complete(req))
        .await;

    assert_eq!(
        result.unwrap_err().kind,
        ProviderErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(30))
        }
    );
    assert_eq!(attempts, 1);
    assert!(started.elapsed() < PROMPTLY);
}

async fn a_5xx_is_an_upstream_error_and_is_retried_until_success<H: Harness>(h: &H) {
    let provider = h.provider();
    let req = request::<H>();

    h.stand_in().push(Behavior::status(500));
    assert_eq!(
        provider.complete(&req).await.unwrap_err().kind,
        ProviderErrorKind::Upstream
    );

    h.stand_in().push(Behavior::status(500));
    h.stand_in().push(Behavior::status(503));
    let (provider, req) = (provider.as_ref(), &req);
    let (result, attempts) = quick_retries().run(move || provider.complete(req)).await;

    assert!(result.is_ok(), "{result:?}");
    assert_eq!(attempts, 3);
}

async fn a_400_is_rejected_with_the_providers_message_and_not_retried<H: Harness>(h: &H) {
    let provider = h.provider();
    let req = request::<H>();
    h.stand_in().push(Behavior::error(
        400,
        "messages: the conversation is too long",
    ));

    let (provider, req) = (provider.as_ref(), &req);
    let (result, attempts) = quick_retries().run(move || provider.complete(req)).await;

    let err = result.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Rejected);
    assert_eq!(
        err.message,
        H::rejection("messages: the conversation is too long")
    );
    assert_eq!(attempts, 1);
    assert_eq!(h.stand_in().requests().len(), 1);
}

async fn a_401_is_a_credentials_error_and_not_retried<H: Harness>(h: &H) {
    let provider = h.provider();
    let req = request::<H>();
    h.stand_in().push(Behavior::status(401));

    let (provider, req) = (provider.as_ref(), &req);
    let (result, attempts) = quick_retries().run(move || provider.complete(req)).await;

    assert_eq!(result.unwrap_err().kind, ProviderErrorKind::Credentials);
    assert_eq!(attempts, 1);
}

async fn an_error_status_before_a_stream_starts_is_returned_by_stream<H: Harness>(h: &H) {
    h.stand_in().push(Behavior::status(500));

    let err = h.provider().stream(&request::<H>()).await.err().unwrap();

    assert_eq!(err.kind, ProviderErrorKind::Upstream);
}

async fn a_stalled_stream_times_out_within_the_idle_timeout<H: Harness>(h: &H) {
    h.stand_in().push(Behavior::StallStream);
    let started = Instant::now();

    let stream = h.provider().stream(&request::<H>()).await.unwrap();
    let items = collect(stream).await;

    let elapsed = started.elapsed();
    assert!(elapsed >= IDLE_TIMEOUT && elapsed < PROMPTLY, "{elapsed:?}");
    assert!(
        matches!(items.first(), Some(Ok(StreamEvent::Model(_)))),
        "{items:?}"
    );
    let last = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(last.kind, ProviderErrorKind::Timeout);
}

async fn a_slow_response_times_out_with_the_request_timeout<H: Harness>(h: &H) {
    let provider = H::build(&ProviderSettings {
        request_timeout: SHORT_REQUEST_TIMEOUT,
        // No allowance for the reply: the request timeout alone.
        output_tokens_per_second: u32::MAX,
        ..h.settings()
    });
    let req = request::<H>();

    h.stand_in().push(Behavior::Delay(Duration::from_secs(5)));
    let started = Instant::now();
    let err = provider.complete(&req).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Timeout);
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
    // The request was sent: the provider may be generating it, so it is never sent again.
    assert!(err.started && !err.is_retryable(), "{err:?}");

    h.stand_in().push(Behavior::Delay(Duration::from_secs(5)));
    let started = Instant::now();
    let err = provider.stream(&req).await.err().unwrap();
    assert_eq!(err.kind, ProviderErrorKind::Timeout);
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
}

async fn a_buffered_calls_limit_allows_for_its_reply_cap<H: Harness>(h: &H) {
    let provider = H::build(&ProviderSettings {
        request_timeout: SHORT_REQUEST_TIMEOUT,
        output_tokens_per_second: 100,
        ..h.settings()
    });
    // 300 ms + 100 tokens at 100/s: 1.3 s, enough for a reply that takes 800 ms.
    let mut req = request::<H>();
    req.max_tokens = Some(100);
    h.stand_in()
        .push(Behavior::Delay(Duration::from_millis(800)));
    provider.complete(&req).await.unwrap();
    // 300 ms + 10 tokens at 100/s: 0.4 s, not enough.
    req.max_tokens = Some(10);
    h.stand_in()
        .push(Behavior::Delay(Duration::from_millis(800)));
    let err = provider.complete(&req).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Timeout);
}

async fn a_call_past_its_deadline_is_cut_there_and_one_already_past_is_never_sent<H: Harness>(
    h: &H,
) {
    let provider = h.provider();
    let mut req = request::<H>();
    req.deadline = Some(tokio::time::Instant::now() + Duration::from_millis(300));
    h.stand_in().push(Behavior::Delay(Duration::from_secs(5)));
    let started = Instant::now();
    let err = provider.complete(&req).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Timeout);
    assert!(err.started, "{err:?}");
    assert!(err.message.contains("deadline"), "{err:?}");
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());

    let sent = h.stand_in().requests().len();
    req.deadline = Some(tokio::time::Instant::now());
    let err = provider.complete(&req).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Timeout);
    assert!(!err.started, "{err:?}");
    assert_eq!(h.stand_in().requests().len(), sent, "nothing went upstream");
}

async fn a_stalled_buffered_body_times_out_with_the_request_timeout<H: Harness>(h: &H) {
    let provider = H::build(&ProviderSettings {
        request_timeout: SHORT_REQUEST_TIMEOUT,
        // No allowance for the reply: the request timeout alone.
        output_tokens_per_second: u32::MAX,
        ..h.settings()
    });
    h.stand_in().push(Behavior::StallStream);
    let started = Instant::now();

    let err = provider.complete(&request::<H>()).await.unwrap_err();

    assert_eq!(err.kind, ProviderErrorKind::Timeout);
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());
}

async fn an_unparseable_reply_is_an_upstream_error<H: Harness>(h: &H) {
    let provider = h.provider();
    let req = request::<H>();

    h.stand_in().push(Behavior::Malformed);
    let err = provider.complete(&req).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Upstream);
    // A 2xx was generated (and billed) even if unreadable: not sent again.
    assert!(err.started && !err.is_retryable(), "{err:?}");

    h.stand_in().push(Behavior::Malformed);
    let items = collect(provider.stream(&req).await.unwrap()).await;
    let last = items.last().unwrap().as_ref().unwrap_err();
    assert_eq!(last.kind, ProviderErrorKind::Upstream);
}

async fn an_unreachable_provider_is_an_upstream_error<H: Harness>(_: &H) {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let provider = H::build(&ProviderSettings::new(format!("http://{addr}"), API_KEY));

    let err = provider.complete(&request::<H>()).await.unwrap_err();

    assert_eq!(err.kind, ProviderErrorKind::Upstream);
    // Nothing reached a provider: safe to try again.
    assert!(!err.started && err.is_retryable(), "{err:?}");
}

async fn the_api_key_never_appears_in_errors_or_debug_output<H: Harness>(h: &H) {
    let provider = h.provider();
    let slow = H::build(&ProviderSettings {
        request_timeout: SHORT_REQUEST_TIMEOUT,
        ..h.settings()
    });
    let req = request::<H>();
    let echoing = format!("Incorrect API key provided: {API_KEY}.");
    let mut errors = Vec::new();
    for behavior in [
        Behavior::error(400, echoing.clone()),
        Behavior::error(401, echoing.clone()),
        Behavior::error(429, echoing.clone()),
        Behavior::error(500, echoing.clone()),
        Behavior::Malformed,
    ] {
        h.stand_in().push(behavior);
        errors.push(provider.complete(&req).await.unwrap_err());
    }
    h.stand_in().push(Behavior::Delay(Duration::from_secs(5)));
    errors.push(slow.complete(&req).await.unwrap_err());

    for err in &errors {
        for rendered in [err.to_string(), format!("{err:?}")] {
            assert!(!rendered.contains(API_KEY), "key leaked: {rendered}");
        }
    }
    assert!(errors[0].message.contains("[REDACTED]"), "{:?}", errors[0]);
    for debug in [format!("{:?}", h.settings()), H::debug(&h.settings())] {
        assert!(!debug.contains(API_KEY), "key leaked: {debug}");
    }
}

/// `OpenAiEmbedder` against the OpenAI stand-in: what goes over the wire, and what comes back.
mod openai_embeddings {
    use tollgate::adapters::embeddings::{LocalEmbedder, OpenAiEmbedder};
    use tollgate::ports::vector::Embedder;

    use super::*;

    #[tokio::test]
    async fn a_call_of_256_texts_is_one_request_with_the_model_dimensions_and_key_in_order() {
        let openai = OpenAiStandIn::start().await;
        let settings = ProviderSettings::new(openai.base_url(), API_KEY);
        let embedder = OpenAiEmbedder::new(&settings, "text-embedding-3-large", 64).unwrap();
        // Callers split longer inputs (ingest: tests/suite/ingest.rs), so each request is
        // retried and metered on its own.
        assert_eq!(embedder.max_batch(), 256);
        let texts: Vec<String> = (0..256)
            .map(|i| format!("excerpt {i} about topic {}", i % 7))
            .collect();

        let embedded = embedder.embed(&texts, None).await.unwrap();

        let requests = openai.embedding_requests();
        let sizes: Vec<usize> = requests
            .iter()
            .map(|r| r.body["input"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [256]);
        let bearer = format!("Bearer {API_KEY}");
        let mut sent = Vec::new();
        for r in &requests {
            assert_eq!(r.path, "/v1/embeddings");
            assert_eq!(r.header("authorization"), Some(bearer.as_str()));
            assert_eq!(r.body["model"], "text-embedding-3-large");
            assert_eq!(r.body["dimensions"], 64);
            assert_eq!(r.body["encoding_format"], "float");
            sent.extend(
                r.body["input"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned()),
            );
        }
        assert_eq!(sent, texts, "every text exactly once, in order");
        assert!(openai.requests().is_empty(), "nothing went to chat");

        // The stand-in embeds with the local embedder at the size asked for, so each vector
        // can be matched to its text.
        let local = LocalEmbedder::new(64);
        assert_eq!(embedded.vectors.len(), texts.len());
        for (text, vector) in texts.iter().zip(&embedded.vectors) {
            assert_eq!(vector, &local.vector(text), "{text}");
        }
        let tokens: usize = texts
            .iter()
            .map(|t| tollgate::tokenizer::count_tokens(t))
            .sum();
        assert_eq!(
            embedded.prompt_tokens, tokens as u64,
            "the provider's count"
        );
        assert_eq!(embedded.model, "text-embedding-3-large");
    }
}

/// What only Bedrock has: SigV4 instead of a key, throttling without `retry-after`,
/// application inference profiles, and Converse's own shapes for tools, structured output
/// and mid-stream exceptions, each checked by the stand-in as Converse checks them.
mod bedrock_only {
    use tollgate::domain::structured::ResponseFormat;
    use tollgate::domain::tools::{ToolChoice, ToolDefinition, Tools};

    use super::*;

    async fn start() -> Bedrock {
        Bedrock::start().await
    }

    #[tokio::test]
    async fn a_request_signed_with_other_credentials_is_refused_and_not_retried() {
        let h = start().await;
        let forged = AwsSigner::new(
            tollgate::adapters::bedrock::SIGNING_NAME,
            bedrock_standin::REGION,
            CredentialSource::Provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new(
                        bedrock_standin::ACCESS_KEY,
                        "not-the-secret-key",
                        Some(bedrock_standin::SESSION_TOKEN.to_owned()),
                        None,
                        "test",
                    ),
                ),
            ),
        );
        let provider = BedrockProvider::new(&h.settings(), forged).unwrap();
        let req = request::<Bedrock>();

        let (result, attempts) = quick_retries().run(|| provider.complete(&req)).await;

        let err = result.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Credentials);
        assert!(err.message.contains("signature"), "{err}");
        assert_eq!(attempts, 1);
        assert!(!err.to_string().contains("not-the-secret-key"));
    }

    #[tokio::test]
    async fn credentials_aws_refuses_are_fetched_again_for_the_next_call() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let h = start().await;
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let provider = aws_credential_types::credential_fn::provide_credentials_fn(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok(bedrock_standin::credentials()) }
        });
        let signer = AwsSigner::new(
            tollgate::adapters::bedrock::SIGNING_NAME,
            bedrock_standin::REGION,
            CredentialSource::Provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            ),
        );
        let provider = BedrockProvider::new(&h.settings(), signer).unwrap();
        let req = request::<Bedrock>();

        provider.complete(&req).await.unwrap();
        provider.complete(&req).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1, "cached between calls");
        // An expired session token: AWS answers 403, and the next call signs with fresh ones.
        h.stand_in().push(Behavior::status(403));
        let err = provider.complete(&req).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Credentials);
        provider.complete(&req).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_throttled_call_is_rate_limited_without_retry_after_and_retried_with_backoff() {
        let h = start().await;
        let provider = h.provider();
        let req = request::<Bedrock>();
        h.stand_in()
            .push(Behavior::rate_limited(Duration::from_secs(30)));

        let err = provider.complete(&req).await.unwrap_err();
        assert_eq!(
            err.kind,
            ProviderErrorKind::RateLimited { retry_after: None }
        );
        assert!(err.message.starts_with("ThrottlingException: "), "{err}");

        h.stand_in().push(Behavior::status(429));
        let (provider, req) = (provider.as_ref(), &req);
        let (result, attempts) = quick_retries().run(move || provider.complete(req)).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(attempts, 2);
    }

    #[tokio::test]
    async fn a_tenants_inference_profile_is_the_model_id_called_and_the_route_model_is_served() {
        let h = start().await;
        let mut req = request::<Bedrock>();
        req.inference_profile = Some(
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/acme01".into(),
        );

        let completion = h.provider().complete(&req).await.unwrap();
        let events = stream_ok(h.provider().as_ref(), &req).await;

        assert_eq!(completion.served_model, BEDROCK_MODEL);
        assert_eq!(
            events.first(),
            Some(&StreamEvent::Model(BEDROCK_MODEL.into()))
        );
        let paths: Vec<String> = h
            .stand_in()
            .requests()
            .iter()
            .map(|r| r.path.clone())
            .collect();
        let profile = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Facme01";
        assert_eq!(
            paths,
            [
                format!("/model/{profile}/converse"),
                format!("/model/{profile}/converse-stream")
            ]
        );
    }

    fn weather_tools() -> Tools {
        Tools {
            definitions: vec![ToolDefinition {
                name: "get_weather".into(),
                description: Some("Current weather for a city".into()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
                strict: None,
                cache_breakpoint: false,
            }],
            choice: Some(ToolChoice::Required),
            parallel_calls: None,
        }
    }

    #[tokio::test]
    async fn tool_calls_come_back_buffered_and_streamed_with_their_arguments() {
        let h = start().await;
        let mut req = request::<Bedrock>();
        req.tools = weather_tools();
        let calls = || {
            Behavior::call_tools(
                vec![("get_weather", json!({"city": "Paris"}))],
                usage(30, 8),
            )
        };
        h.stand_in().push(calls());
        h.stand_in().push(calls());
        let provider = h.provider();

        let completion = provider.complete(&req).await.unwrap();
        let events = stream_ok(provider.as_ref(), &req).await;

        assert_eq!(completion.finish_reason, FinishReason::ToolCalls);
        assert_eq!(completion.tool_calls.len(), 1);
        assert_eq!(completion.tool_calls[0].name, "get_weather");
        assert_eq!(completion.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        let mut assembler = tollgate::domain::tools::ToolCallAssembler::default();
        for event in &events {
            if let StreamEvent::ToolCall(delta) = event {
                assembler.push(delta);
            }
        }
        assert_eq!(assembler.finish(), completion.tool_calls);
        assert!(events.contains(&StreamEvent::Finish(FinishReason::ToolCalls)));
        let sent = h.stand_in().last_request().body;
        assert_eq!(sent["toolConfig"]["toolChoice"], json!({"any": {}}));
    }

    #[tokio::test]
    async fn a_structured_reply_is_the_forced_tools_input() {
        let h = start().await;
        let mut req = request::<Bedrock>();
        req.response_format = ResponseFormat::JsonObject;
        h.stand_in()
            .push(Behavior::reply(r#"{"answer": 42}"#, usage(20, 5)));
        h.stand_in()
            .push(Behavior::reply(r#"{"answer": 42}"#, usage(20, 5)));
        let provider = h.provider();

        let completion = provider.complete(&req).await.unwrap();
        let events = stream_ok(provider.as_ref(), &req).await;

        assert_eq!(completion.content, r#"{"answer":42}"#);
        assert_eq!(completion.finish_reason, FinishReason::Stop);
        assert_eq!(text_of(&events), r#"{"answer":42}"#);
    }

    #[tokio::test]
    async fn an_exception_mid_stream_ends_it_after_the_text_as_a_started_error() {
        let h = start().await;
        h.stand_in().push(Behavior::StreamThenError {
            text: "Partial answer".into(),
            usage: usage(12, 3),
        });

        let items = collect(h.provider().stream(&request::<Bedrock>()).await.unwrap()).await;

        let text: String = items
            .iter()
            .filter_map(|i| match i {
                Ok(StreamEvent::Delta(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Partial answer");
        let err = items.last().unwrap().as_ref().unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Upstream);
        assert!(err.started && !err.is_retryable(), "{err:?}");
        assert!(
            err.message.starts_with("modelStreamErrorException"),
            "{err}"
        );
    }
}
