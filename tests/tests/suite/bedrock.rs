#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Bedrock through the real invoke handler, with the Converse stand-in checking every
//! request's SigV4 signature: a Bedrock route's chat and stream at the Bedrock model's exact
//! price, prompt caching through `cachePoint` metered at the cache prices, an Anthropic 529 or
//! 429 storm served by Bedrock's Claude, and a tenant's application inference profile carrying
//! its calls while the model id prices them.

use std::time::Duration;

use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate::demo::DEMO_BEDROCK_MODEL;
use tollgate::domain::tenant::{ConfigError, ProviderKind, TenantConfig};
use tollgate::domain::usage::TokenUsage;
use tollgate::ports::TenantAdmin;
use tollgate_tests::harness::{Gateway, chat_body};
use tollgate_tests::{AnthropicStandIn, BedrockStandIn, Behavior, OpenAiStandIn};

const SERVED_BY: &str = "x-tollgate-served-by";
const PROFILE: &str = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/acme01";

struct Setup {
    _openai: OpenAiStandIn,
    anthropic: AnthropicStandIn,
    bedrock: BedrockStandIn,
    gw: Gateway,
}

impl Setup {
    /// The path of every request Bedrock's stand-in received, in order.
    fn paths(&self) -> Vec<String> {
        self.bedrock
            .requests()
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }
}

/// The demo tenants, acme with its response cache off and `edit` applied.
async fn setup(edit: impl FnOnce(&mut TenantConfig)) -> Setup {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let bedrock = BedrockStandIn::start().await;
    let gw = Gateway::with_bedrock(&openai, &anthropic, &bedrock).await;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.response_cache.enabled = false;
    edit(&mut config);
    gw.store.put_tenant_config(config).await.unwrap();
    Setup {
        _openai: openai,
        anthropic,
        bedrock,
        gw,
    }
}

fn usage(prompt: u64, completion: u64) -> TokenUsage {
    TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..Default::default()
    }
}

fn ask(model: &str, stream: bool) -> Value {
    let mut body = chat_body(model, "Where is my order?");
    body["max_tokens"] = json!(100);
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// The path of a Converse call of `model` (its id percent-encoded, as signed).
fn converse_path(model: &str, operation: &str) -> String {
    format!(
        "/model/{}/{operation}",
        model.replace(':', "%3A").replace('/', "%2F")
    )
}

#[tokio::test]
async fn a_bedrock_route_serves_chat_and_stream_at_the_bedrock_models_price() {
    let s = setup(|_| {}).await;
    s.bedrock
        .push(Behavior::reply("Your order ships today.", usage(40, 10)));
    s.bedrock
        .push(Behavior::reply("Streaming from Bedrock.", usage(40, 12)));

    let chat = s.gw.chat("acme", ask("claude-bedrock", false)).await;
    let stream = s.gw.chat("acme", ask("claude-bedrock", true)).await;

    assert_eq!(chat.status, 200, "{}", chat.text());
    assert_eq!(
        chat.json()["choices"][0]["message"]["content"],
        "Your order ships today."
    );
    assert_eq!(chat.json()["usage"]["prompt_tokens"], 40);
    let served = format!("bedrock/{DEMO_BEDROCK_MODEL}");
    assert_eq!(chat.header(SERVED_BY), Some(served.as_str()));
    assert_eq!(stream.status, 200, "{}", stream.text());
    assert_eq!(stream.header(SERVED_BY), Some(served.as_str()));
    let body = stream.text();
    assert!(
        body.contains("Bedrock") && body.contains("[DONE]"),
        "{body}"
    );
    assert_eq!(
        s.paths(),
        [
            converse_path(DEMO_BEDROCK_MODEL, "converse"),
            converse_path(DEMO_BEDROCK_MODEL, "converse-stream")
        ]
    );
    // The tenant's system prompt went as Converse's system block.
    let sent = s.bedrock.last_request().body;
    assert!(
        sent["system"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Acme Rockets"),
        "{sent}"
    );
    assert_eq!(sent["inferenceConfig"]["maxTokens"], 100);

    let events = s.gw.wait_for_usage_events(2).await;
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(event.provider, ProviderKind::Bedrock);
        assert_eq!(event.model_served, DEMO_BEDROCK_MODEL);
        assert!(event.success);
    }
    // us. Claude Sonnet 4.5 at $3.30 / $16.50 per 1M: 40 × 3.30 + 10 × 16.50 micro-dollars,
    // then 40 × 3.30 + 12 × 16.50.
    assert_eq!(events[0].cost_usd, dec!(0.000297));
    assert_eq!(events[1].cost_usd, dec!(0.00033));
    assert!(events[1].streamed);
}

#[tokio::test]
async fn a_long_tenant_prompt_is_cached_through_a_cache_point_and_metered_at_cache_prices() {
    let long =
        "You are Acme's support assistant; follow the style guide in every answer. ".repeat(150);
    let s = setup(|c| {
        c.system_prompt = tollgate::domain::prompt::PromptTemplate::parse(long.clone()).unwrap();
    })
    .await;
    let cached = TokenUsage {
        prompt_tokens: 2_100,
        completion_tokens: 12,
        cached_tokens: 1_792,
        cache_write_tokens: 250,
    };
    s.bedrock.push(Behavior::reply("Cached.", cached));

    let res = s.gw.chat("acme", ask("claude-bedrock", false)).await;

    assert_eq!(res.status, 200, "{}", res.text());
    let sent = s.bedrock.last_request().body;
    assert_eq!(
        sent["system"][1],
        json!({"cachePoint": {"type": "default"}})
    );
    assert_eq!(
        res.json()["usage"]["prompt_tokens_details"]["cached_tokens"],
        1_792
    );
    let events = s.gw.wait_for_usage_events(1).await;
    assert_eq!(events[0].usage, cached);
    // 58 uncached × 3.30 + 1,792 reads × 0.33 + 250 writes × 4.125 + 12 × 16.50, per 1M.
    assert_eq!(events[0].cost_usd, dec!(0.00201201));
}

#[tokio::test]
async fn an_anthropic_529_storm_is_served_by_bedrock_and_every_attempt_is_counted() {
    let s = setup(|_| {}).await;
    // Anthropic's three attempts (one try, two retries) are all overloaded.
    s.anthropic.always(Some(Behavior::status(529)));
    s.bedrock
        .push(Behavior::reply("Served by Bedrock.", usage(40, 10)));

    let res = s.gw.chat("acme", ask("claude-failover", false)).await;

    assert_eq!(res.status, 200, "{}", res.text());
    let served = format!("bedrock/{DEMO_BEDROCK_MODEL}");
    assert_eq!(res.header(SERVED_BY), Some(served.as_str()));
    assert_eq!(res.json()["model"], "claude-failover");
    assert_eq!(s.anthropic.requests().len(), 3);
    assert_eq!(s.bedrock.requests().len(), 1);
    let events = s.gw.wait_for_usage_events(1).await;
    assert_eq!(events.len(), 1, "one usage event per client request");
    let event = &events[0];
    assert_eq!(event.provider, ProviderKind::Bedrock);
    assert_eq!(event.model_requested, "claude-failover");
    assert_eq!(event.model_served, DEMO_BEDROCK_MODEL);
    assert_eq!(event.attempts, 4, "three 529s, then Bedrock's answer");
    // The 529s produced no tokens and cost nothing; the answer is at Bedrock's price.
    assert_eq!(event.cost_usd, dec!(0.000297));
}

#[tokio::test]
async fn an_anthropic_429_storm_on_a_stream_opens_on_bedrock() {
    let s = setup(|_| {}).await;
    for _ in 0..3 {
        s.anthropic
            .push(Behavior::rate_limited(Duration::from_millis(1)));
    }
    s.bedrock
        .push(Behavior::reply("Streaming from Bedrock.", usage(40, 12)));

    let res = s.gw.chat("acme", ask("claude-failover", true)).await;

    assert_eq!(res.status, 200, "{}", res.text());
    let served = format!("bedrock/{DEMO_BEDROCK_MODEL}");
    assert_eq!(res.header(SERVED_BY), Some(served.as_str()));
    assert!(res.text().contains("[DONE]"));
    assert!(s.bedrock.last_request().is_stream());
    let events = s.gw.wait_for_usage_events(1).await;
    assert_eq!(events[0].provider, ProviderKind::Bedrock);
    assert_eq!(events[0].attempts, 4);
    assert_eq!(events[0].cost_usd, dec!(0.00033));
}

#[tokio::test]
async fn a_tenants_inference_profile_carries_its_calls_and_the_model_prices_them() {
    let s = setup(|c| {
        c.bedrock_profiles
            .insert(DEMO_BEDROCK_MODEL.into(), PROFILE.into());
    })
    .await;
    s.bedrock.push(Behavior::reply("Tagged.", usage(40, 10)));
    s.anthropic.always(Some(Behavior::status(529)));
    s.bedrock
        .push(Behavior::reply("Tagged too.", usage(40, 10)));

    // Directly, and as the fallback of an Anthropic route.
    let direct = s.gw.chat("acme", ask("claude-bedrock", false)).await;
    let failover = s.gw.chat("acme", ask("claude-failover", false)).await;

    assert_eq!(direct.status, 200, "{}", direct.text());
    assert_eq!(failover.status, 200, "{}", failover.text());
    assert_eq!(
        s.paths(),
        [
            converse_path(PROFILE, "converse"),
            converse_path(PROFILE, "converse")
        ]
    );
    let events = s.gw.wait_for_usage_events(2).await;
    for event in &events {
        assert_eq!(event.model_served, DEMO_BEDROCK_MODEL);
        assert_eq!(event.cost_usd, dec!(0.000297));
    }
}

#[tokio::test]
async fn a_profile_that_is_not_an_application_inference_profile_arn_is_refused() {
    let mut config = tollgate::demo::acme_config().unwrap();
    for bad in [
        "acme01",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.x",
        "arn:aws:bedrock:us-east-1:1234:application-inference-profile/acme01",
        "arn:aws:iam::123456789012:application-inference-profile/acme01",
    ] {
        config.bedrock_profiles = [(DEMO_BEDROCK_MODEL.to_owned(), bad.to_owned())].into();
        assert!(
            matches!(config.validate(), Err(ConfigError::BadInferenceProfile(_))),
            "{bad}"
        );
    }
    config.bedrock_profiles = [(DEMO_BEDROCK_MODEL.to_owned(), PROFILE.to_owned())].into();
    config.validate().unwrap();
}
