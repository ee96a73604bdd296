#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Tenant isolation through the whole invoke path: two tenants with distinct system prompts,
//! routes and cached responses, interleaved, against the real provider adapters and the
//! stand-ins. Nothing of one tenant may appear in the other's upstream request or response.

use serde_json::{Value, json};
use tollgate::domain::usage::TokenUsage;
use tollgate_tests::harness::{Gateway, chat_body};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

const ACME_CANARY: &str = "canary-acme-7f3a";
const GLOBEX_CANARY: &str = "canary-globex-91bd";

fn usage() -> TokenUsage {
    TokenUsage {
        prompt_tokens: 30,
        completion_tokens: 8,
        cached_tokens: 0,
        cache_write_tokens: 0,
    }
}

/// Everything a tenant-specific string could hide in: the whole upstream JSON body.
fn upstream_text(requests: &[tollgate_tests::RecordedRequest]) -> Vec<String> {
    requests.iter().map(|r| r.body.to_string()).collect()
}

#[tokio::test]
async fn interleaved_tenants_never_see_each_others_prompts_routes_or_replies() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;

    for round in 0..5 {
        // Both tenants ask for the same logical model name; it routes differently for each.
        openai.push(Behavior::reply(
            format!("acme reply {ACME_CANARY} {round}"),
            usage(),
        ));
        let a = gw
            .chat(
                "acme",
                chat_body(
                    "gpt-4o-mini",
                    &format!("acme question {ACME_CANARY} {round}"),
                ),
            )
            .await;
        anthropic.push(Behavior::reply(
            format!("globex reply {GLOBEX_CANARY} {round}"),
            usage(),
        ));
        let g = gw
            .chat(
                "globex",
                chat_body(
                    "gpt-4o-mini",
                    &format!("globex question {GLOBEX_CANARY} {round}"),
                ),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(g.status, 200, "{}", g.text());
        assert!(a.text().contains(ACME_CANARY) && !a.text().contains(GLOBEX_CANARY));
        assert!(g.text().contains(GLOBEX_CANARY) && !g.text().contains(ACME_CANARY));
    }

    // acme's gpt-4o-mini went to OpenAI; globex's went to Anthropic (claude-haiku-4-5).
    let to_openai = upstream_text(&openai.requests());
    let to_anthropic = upstream_text(&anthropic.requests());
    assert_eq!(to_openai.len(), 5);
    assert_eq!(to_anthropic.len(), 5);
    for body in &to_openai {
        assert!(
            body.contains("Acme Rockets"),
            "acme's system prompt missing: {body}"
        );
        assert!(
            !body.contains("Globex") && !body.contains(GLOBEX_CANARY),
            "globex leaked into acme's call: {body}"
        );
    }
    for body in &to_anthropic {
        assert!(
            body.contains("Globex Travel"),
            "globex's system prompt missing"
        );
        assert!(
            !body.contains("Acme") && !body.contains(ACME_CANARY),
            "acme leaked into globex's call"
        );
        assert!(body.contains("claude-haiku-4-5"));
    }
    for event in gw.usage_events() {
        let expected = if event.provider.as_str() == "openai" {
            "acme"
        } else {
            "globex"
        };
        assert_eq!(event.tenant_id.as_str(), expected);
    }
}

#[tokio::test]
async fn a_cached_response_is_never_served_to_another_tenant() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    // acme has the response cache on; globex asks the identical question on the identical
    // logical model that happens to route to the same provider model (gpt-4o).
    let body = chat_body("gpt-4o", "What is your refund policy?");
    openai.push(Behavior::reply(
        format!("acme answer {ACME_CANARY}"),
        usage(),
    ));
    let first = gw.chat("acme", body.clone()).await;
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    let second = gw.chat("acme", body.clone()).await;
    assert_eq!(second.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(first.json()["choices"], second.json()["choices"]);

    openai.push(Behavior::reply(
        format!("globex answer {GLOBEX_CANARY}"),
        usage(),
    ));
    let other = gw.chat("globex", body).await;
    assert_eq!(other.status, 200);
    assert!(other.text().contains(GLOBEX_CANARY), "{}", other.text());
    assert!(!other.text().contains(ACME_CANARY));
    assert_eq!(
        openai.requests().len(),
        2,
        "the cache hit must not call the provider; globex must"
    );

    let events = gw.usage_events();
    let hits: Vec<_> = events.iter().filter(|e| e.cache_hit).collect();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].tenant_id.as_str(), "acme");
    assert!(hits[0].cost_usd.is_zero());
}

#[tokio::test]
async fn a_route_to_another_tenants_fine_tuned_model_is_refused_before_any_provider_call() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;

    let own = gw.chat("acme", chat_body("acme-support", "hi")).await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(
        openai.last_request().body["model"],
        tollgate::demo::ACME_FINE_TUNED
    );

    let foreign = gw.chat("globex", chat_body("acme-support", "hi")).await;
    assert_eq!(foreign.status, 403, "{}", foreign.text());
    let err: Value = foreign.json();
    assert_eq!(err["error"]["code"], "model_route_forbidden");
    assert!(
        !foreign.text().contains("ft:"),
        "the error must not reveal the fine-tuned model id"
    );
    assert_eq!(
        openai.requests().len(),
        1,
        "the refused route reached the provider"
    );
}

#[tokio::test]
async fn the_system_prompt_is_rendered_per_request_from_the_tenant_config() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    // Change acme's prompt variables; the next request must use the new rendering.
    let res = gw.chat("acme", chat_body("gpt-4o", "first")).await;
    assert_eq!(res.status, 200);
    let first = openai.last_request().body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first.contains("reusable rockets"), "{first}");

    let mut config = tollgate::demo::acme_config().unwrap();
    config
        .prompt_variables
        .insert("product".into(), "orbital tugs".into());
    tollgate::ports::TenantAdmin::put_tenant_config(gw.store.as_ref(), config)
        .await
        .unwrap();
    let res = gw
        .chat(
            "acme",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "second"}]}),
        )
        .await;
    assert_eq!(res.status, 200);
    let second = openai.last_request().body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        second.contains("orbital tugs") && !second.contains("reusable rockets"),
        "{second}"
    );
}
