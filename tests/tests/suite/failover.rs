#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Failover chains through the real invoke handler with the provider stand-ins: a route's
//! fallbacks serve what its own provider had not started answering (429 storms, 5xx), each
//! call metered at the price of the target that served it and named in `x-tollgate-served-by`;
//! never after output started, never on a rejection; one reservation at the dearest target's
//! worst case; and a circuit breaker that skips a failing target, then probes it again.

use std::sync::Arc;
use std::time::Duration;

use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate::domain::budget::BudgetCap;
use tollgate::domain::tenant::{ProviderKind, Target, TenantConfig};
use tollgate::domain::usage::TokenUsage;
use tollgate::ports::TenantAdmin;
use tollgate::service::failover::{Breakers, CircuitState};
use tollgate_tests::harness::{Gateway, chat_body};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

const SERVED_BY: &str = "x-tollgate-served-by";

fn haiku() -> Target {
    Target {
        provider: ProviderKind::Anthropic,
        model: "claude-haiku-4-5".into(),
    }
}

fn primary() -> Target {
    Target {
        provider: ProviderKind::Openai,
        model: "gpt-4o-mini".into(),
    }
}

/// acme with its response cache off, `gpt-4o-mini` failing over to Claude Haiku, and `edit`.
async fn acme(gw: &Gateway, edit: impl FnOnce(&mut TenantConfig)) {
    let mut config = tollgate::demo::acme_config().unwrap();
    config.response_cache.enabled = false;
    config.routes.get_mut("gpt-4o-mini").unwrap().fallbacks = vec![haiku()];
    edit(&mut config);
    gw.store.put_tenant_config(config).await.unwrap();
}

fn usage(prompt: u64, completion: u64) -> TokenUsage {
    TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..Default::default()
    }
}

fn ask(stream: bool) -> Value {
    let mut body = chat_body("gpt-4o-mini", "Where is my order?");
    body["max_tokens"] = json!(100);
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

async fn gateway() -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    (openai, anthropic, gw)
}

#[tokio::test]
async fn a_429_storm_on_the_primary_is_served_by_the_fallback_at_the_fallbacks_price() {
    let (openai, anthropic, gw) = gateway().await;
    acme(&gw, |_| {}).await;
    // The primary's three attempts (one try, two retries) are all rate limited.
    for _ in 0..3 {
        openai.push(Behavior::rate_limited(Duration::ZERO));
    }
    anthropic.push(Behavior::reply("Your order ships today.", usage(40, 10)));
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header(SERVED_BY), Some("anthropic/claude-haiku-4-5"));
    assert_eq!(
        res.json()["choices"][0]["message"]["content"],
        "Your order ships today."
    );
    // The client's model name stays the route's.
    assert_eq!(res.json()["model"], "gpt-4o-mini");
    assert_eq!(
        (openai.requests().len(), anthropic.requests().len()),
        (3, 1)
    );
    assert_eq!(anthropic.last_request().body["model"], "claude-haiku-4-5");

    let events = gw.wait_for_usage_events(1).await;
    assert_eq!(events.len(), 1, "one usage event per client request");
    let event = &events[0];
    assert_eq!(event.provider, ProviderKind::Anthropic);
    assert_eq!(event.model_requested, "gpt-4o-mini");
    assert!(
        event.model_served.starts_with("claude-haiku-4-5"),
        "{}",
        event.model_served
    );
    assert_eq!(
        event.attempts, 4,
        "three rate-limited attempts and the one that answered"
    );
    assert!(event.success);
    // Claude Haiku 4.5 at $1 / $5 per 1M: 40 × 1 + 10 × 5 micro-dollars.
    assert_eq!(event.cost_usd, dec!(0.00009));
}

#[tokio::test]
async fn a_stream_whose_primary_answers_5xx_opens_on_the_fallback() {
    let (openai, anthropic, gw) = gateway().await;
    acme(&gw, |_| {}).await;
    for _ in 0..3 {
        openai.push(Behavior::status(503));
    }
    anthropic.push(Behavior::reply("Streaming from Claude.", usage(40, 12)));
    let res = gw.chat("acme", ask(true)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header(SERVED_BY), Some("anthropic/claude-haiku-4-5"));
    let body = res.text();
    assert!(
        body.contains("Streaming") && body.contains("[DONE]"),
        "{body}"
    );
    assert!(anthropic.last_request().is_stream());
    let events = gw.wait_for_usage_events(1).await;
    let event = &events[0];
    assert!(event.streamed && event.success);
    assert_eq!(event.provider, ProviderKind::Anthropic);
    assert_eq!(event.cost_usd, dec!(0.0001));
}

#[tokio::test]
async fn the_primary_serving_says_so_and_nothing_reaches_the_fallback() {
    let (openai, anthropic, gw) = gateway().await;
    acme(&gw, |_| {}).await;
    openai.push(Behavior::reply("From OpenAI.", usage(20, 5)));
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header(SERVED_BY), Some("openai/gpt-4o-mini"));
    assert!(anthropic.requests().is_empty());
    let events = gw.wait_for_usage_events(1).await;
    assert_eq!(events[0].provider, ProviderKind::Openai);
}

#[tokio::test]
async fn a_rejection_is_returned_as_it_is_and_never_fails_over() {
    let (openai, anthropic, gw) = gateway().await;
    acme(&gw, |_| {}).await;
    openai.push(Behavior::error(400, "messages: too long"));
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(
        anthropic.requests().is_empty(),
        "a bad request is bad everywhere"
    );
}

#[tokio::test]
async fn a_stream_that_failed_after_its_first_output_never_fails_over() {
    let (openai, anthropic, gw) = gateway().await;
    acme(&gw, |_| {}).await;
    openai.push(Behavior::StreamThenError {
        text: "Half an ans".into(),
        usage: usage(20, 3),
    });
    let res = gw.chat("acme", ask(true)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header(SERVED_BY), Some("openai/gpt-4o-mini"));
    let body = res.text();
    assert!(
        body.contains("Half") && body.contains("\"error\""),
        "{body}"
    );
    assert!(
        anthropic.requests().is_empty(),
        "output was sent: no second provider"
    );
    let events = gw.wait_for_usage_events(1).await;
    assert_eq!(events[0].provider, ProviderKind::Openai);
    assert!(!events[0].success);
}

#[tokio::test]
async fn the_reservation_holds_the_dearest_targets_worst_case() {
    let (openai, anthropic, gw) = gateway().await;
    // gpt-4o-mini's worst case for this request is about $0.00007 (100 output tokens at
    // $0.60 per 1M plus the prompt), Claude Haiku's $0.0005575: a $0.0002 budget holds the
    // first and not the second, so a chain through Haiku is refused before any call, naming
    // the chain's worst case.
    acme(&gw, |c| {
        c.limits.budget_daily_usd = Some(BudgetCap::Usd(dec!(0.0002)))
    })
    .await;
    openai.push(Behavior::reply("From OpenAI.", usage(20, 5)));
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.status, 400, "{}", res.text());
    let message = res.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("may cost up to 0.0005575 USD"),
        "{message}"
    );
    assert!(openai.requests().is_empty() && anthropic.requests().is_empty());
    // Without the fallback the same request fits.
    acme(&gw, |c| {
        c.limits.budget_daily_usd = Some(BudgetCap::Usd(dec!(0.0002)));
        c.routes.get_mut("gpt-4o-mini").unwrap().fallbacks.clear();
    })
    .await;
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test]
async fn an_open_circuit_skips_the_primary_until_its_cooldown_ends_then_one_call_probes_it() {
    let (openai, anthropic, mut gw) = gateway().await;
    let breakers =
        Arc::new(Breakers::new(2, Duration::from_millis(400)).with_metrics(gw.metrics.clone()));
    gw.state.chat.breakers = breakers.clone();
    acme(&gw, |_| {}).await;
    // Two requests whose primary fails (3 attempts each): the circuit opens.
    for _ in 0..2 {
        for _ in 0..3 {
            openai.push(Behavior::status(500));
        }
        anthropic.push(Behavior::reply("From Claude.", usage(10, 5)));
        let res = gw.chat("acme", ask(false)).await;
        assert_eq!(res.header(SERVED_BY), Some("anthropic/claude-haiku-4-5"));
    }
    assert_eq!(breakers.state(&primary()), CircuitState::Open);
    assert_eq!(openai.requests().len(), 6);
    // While open, the primary is not called at all.
    anthropic.push(Behavior::reply("From Claude.", usage(10, 5)));
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.header(SERVED_BY), Some("anthropic/claude-haiku-4-5"));
    assert_eq!(openai.requests().len(), 6, "an open circuit sends nothing");
    // After the cool-down one call probes it; it answers, and the circuit closes.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(breakers.state(&primary()), CircuitState::HalfOpen);
    openai.push(Behavior::reply("From OpenAI again.", usage(10, 5)));
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.header(SERVED_BY), Some("openai/gpt-4o-mini"));
    assert_eq!(breakers.state(&primary()), CircuitState::Closed);
    assert_eq!(breakers.state(&haiku()), CircuitState::Closed);
    // Each change went out as a metric (EMF `CircuitOpen` by target in production).
    assert_eq!(
        gw.metrics.circuits(),
        [
            ("openai/gpt-4o-mini".to_owned(), true),
            ("openai/gpt-4o-mini".to_owned(), false)
        ]
    );
}

#[tokio::test]
async fn a_failed_probe_opens_the_circuit_again() {
    let breakers = Breakers::new(1, Duration::from_millis(50));
    let target = primary();
    assert!(breakers.admits(&target));
    assert!(
        breakers.failed(&target),
        "one failure opens a threshold-1 circuit"
    );
    assert!(!breakers.admits(&target));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(breakers.admits(&target), "the cool-down ended: one probe");
    assert!(!breakers.admits(&target), "only one probe at a time");
    assert!(breakers.failed(&target));
    assert_eq!(breakers.state(&target), CircuitState::Open);
}

#[tokio::test]
async fn fine_tuned_and_embeddings_routes_may_not_fail_over() {
    let (_openai, _anthropic, gw) = gateway().await;
    for (route, why) in [
        ("acme-support", "fine-tuned"),
        ("text-embedding-3-small", "only chat routes"),
    ] {
        let mut config = tollgate::demo::acme_config().unwrap();
        config.routes.get_mut(route).unwrap().fallbacks = vec![haiku()];
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains(why), "{route}: {err}");
    }
    let mut config = tollgate::demo::acme_config().unwrap();
    config.routes.get_mut("gpt-4o").unwrap().fallbacks = vec![Target {
        provider: ProviderKind::Openai,
        model: "ft:gpt-4o-mini-2024-07-18:other::x".into(),
    }];
    let err = config.validate().unwrap_err();
    assert!(err.to_string().contains("fine-tuned"), "{err}");
    // A chat route's chain of another provider's base model is fine.
    let mut config = tollgate::demo::acme_config().unwrap();
    config.routes.get_mut("gpt-4o").unwrap().fallbacks = vec![haiku()];
    config.validate().unwrap();
    // And a config stored with fallbacks reads back with them.
    gw.store.put_tenant_config(config).await.unwrap();
}

#[tokio::test]
async fn a_half_open_target_not_reached_keeps_its_probe_for_a_later_call() {
    // The chain's first target answers, so the half-open second is never called: its probe
    // must stay available (it used to be claimed when the chain was ordered, and then never
    // released).
    let breakers = Breakers::new(1, Duration::from_millis(50));
    assert!(breakers.failed(&haiku()));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let (openai, anthropic, mut gw) = gateway().await;
    gw.state.chat.breakers = Arc::new(breakers);
    acme(&gw, |_| {}).await;
    openai.push(Behavior::reply("From OpenAI.", usage(10, 5)));
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.header(SERVED_BY), Some("openai/gpt-4o-mini"));
    assert_eq!(
        gw.state.chat.breakers.state(&haiku()),
        CircuitState::HalfOpen
    );
    // Now the primary fails: the half-open fallback gets its probe, answers, and closes.
    for _ in 0..3 {
        openai.push(Behavior::status(502));
    }
    anthropic.push(Behavior::reply("From Claude.", usage(10, 5)));
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.header(SERVED_BY), Some("anthropic/claude-haiku-4-5"));
    assert_eq!(gw.state.chat.breakers.state(&haiku()), CircuitState::Closed);
}

#[tokio::test]
async fn a_rejected_probe_releases_the_half_open_circuit() {
    let breakers = Breakers::new(1, Duration::from_millis(50));
    let target = primary();
    breakers.failed(&target);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(breakers.admits(&target));
    breakers.settled(&target);
    assert!(breakers.admits(&target), "the next call may probe again");
    // A probe whose request was dropped (a client that went away) never reports back: once
    // it is older than the cool-down, another call may probe.
    assert!(!breakers.admits(&target));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(
        breakers.admits(&target),
        "an abandoned probe does not shut the circuit for good"
    );
}

#[tokio::test]
async fn a_timeout_after_the_request_was_sent_never_fails_over() {
    // The harness's provider timeout is 2 s; the primary answers after 3: it may be
    // generating (and billing), so the call is not sent anywhere else.
    let (openai, anthropic, gw) = gateway().await;
    acme(&gw, |_| {}).await;
    openai.push(Behavior::Delay(Duration::from_secs(3)));
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.status, 504, "{}", res.text());
    assert!(anthropic.requests().is_empty());
    assert_eq!(openai.requests().len(), 1, "not retried either");
}

#[tokio::test]
async fn a_refused_key_is_returned_as_it_is_and_never_fails_over() {
    let (openai, anthropic, gw) = gateway().await;
    acme(&gw, |_| {}).await;
    openai.push(Behavior::status(401));
    let res = gw.chat("acme", ask(false)).await;
    assert!(
        res.status.is_server_error(),
        "{}: {}",
        res.status,
        res.text()
    );
    assert!(
        anthropic.requests().is_empty(),
        "an operator problem, not the provider's"
    );
}

#[tokio::test]
async fn when_every_circuit_of_a_chain_is_open_the_chain_is_tried_in_order_anyway() {
    let (openai, anthropic, mut gw) = gateway().await;
    let breakers = Breakers::new(1, Duration::from_secs(3600));
    breakers.failed(&primary());
    breakers.failed(&haiku());
    gw.state.chat.breakers = Arc::new(breakers);
    acme(&gw, |_| {}).await;
    openai.push(Behavior::reply("From OpenAI.", usage(10, 5)));
    let res = gw.chat("acme", ask(false)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header(SERVED_BY), Some("openai/gpt-4o-mini"));
    assert!(anthropic.requests().is_empty());
    assert_eq!(
        gw.state.chat.breakers.state(&primary()),
        CircuitState::Closed,
        "the call was the probe, and it answered"
    );
}
