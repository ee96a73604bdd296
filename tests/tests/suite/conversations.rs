#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Conversations (`conversation_id`): turns carry over per tenant, within a token budget.

use serde_json::{Value, json};
use tollgate::ports::TenantAdmin;
use tollgate_tests::harness::Gateway;
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

fn turn(content: &str, conversation: &str) -> Value {
    json!({"model": "gpt-4o", "conversation_id": conversation, "messages": [{"role": "user", "content": content}]})
}

fn upstream_contents(openai: &OpenAiStandIn) -> Vec<String> {
    openai.last_request().body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn usage() -> tollgate::domain::usage::TokenUsage {
    tollgate::domain::usage::TokenUsage {
        prompt_tokens: 40,
        completion_tokens: 5,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_conversation_carries_its_earlier_turns_to_the_provider() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    openai.push(Behavior::reply("Nice to meet you, Ada.", usage()));
    assert_eq!(
        gw.chat("globex", turn("My name is Ada.", "trip-1"))
            .await
            .status,
        200
    );
    openai.push(Behavior::reply("Your name is Ada.", usage()));
    assert_eq!(
        gw.chat("globex", turn("What is my name?", "trip-1"))
            .await
            .status,
        200
    );
    let contents = upstream_contents(&openai);
    // System prompt, then the stored exchange, then the new question.
    assert!(contents[0].contains("Globex"));
    assert_eq!(
        &contents[1..],
        [
            "My name is Ada.",
            "Nice to meet you, Ada.",
            "What is my name?"
        ]
    );
}

#[tokio::test]
async fn the_same_conversation_id_under_another_tenant_is_empty() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    openai.push(Behavior::reply("Noted: the code is canary-7731.", usage()));
    gw.chat(
        "globex",
        turn("Remember the code canary-7731.", "shared-id"),
    )
    .await;
    let res = gw
        .chat("acme", turn("What was the code?", "shared-id"))
        .await;
    assert_eq!(res.status, 200);
    let contents = upstream_contents(&openai);
    assert!(
        contents.iter().all(|c| !c.contains("canary-7731")),
        "{contents:?}"
    );
    assert_eq!(
        contents.len(),
        2,
        "acme's system prompt and its own question only"
    );
}

#[tokio::test]
async fn history_is_loaded_within_the_token_budget_oldest_turns_first_dropped() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    let mut config = tollgate::demo::globex_config().unwrap();
    config.conversations.max_tokens = 12;
    gw.store.put_tenant_config(config).await.unwrap();
    for i in 0..4 {
        openai.push(Behavior::reply(format!("answer {i}"), usage()));
        gw.chat("globex", turn(&format!("question {i}"), "long"))
            .await;
    }
    let contents = upstream_contents(&openai);
    // Each stored turn is 2 tokens: 12 tokens keep the 6 newest turns (3 exchanges) at most,
    // so `question 0` and `answer 0` were dropped; the newest ones are there, in order.
    assert!(!contents.iter().any(|c| c == "question 0"), "{contents:?}");
    assert!(contents.iter().any(|c| c == "answer 2"));
    assert_eq!(contents.last().unwrap(), "question 3");
}

#[tokio::test]
async fn a_malformed_conversation_id_is_a_400() {
    let gw = Gateway::simulated().await;
    let res = gw.chat("acme", turn("hi", "has spaces/and slashes")).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["error"]["param"], "conversation_id");
}
