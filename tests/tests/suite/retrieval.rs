#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Invoke grounded in the tenant's own documents: excerpts reach the provider with their
//! document ids, the response names them, the answer's groundedness is metered, and a broken
//! tenant filter is caught by the defense-in-depth check.

use std::sync::Arc;

use http::Method;
use serde_json::json;
use tollgate::adapters::vector_memory::MemoryVectorIndex;
use tollgate_tests::harness::Gateway;
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

const ACME_FACT: &str =
    "The next launch window for the Falcon Nine replica opens on Saturday at dawn.";

async fn gateway() -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    let doc = json!({"id": "launch-schedule", "title": "Launch schedule", "text": ACME_FACT});
    let res = gw
        .call("acme", Method::POST, "/v1/documents", Some(doc))
        .await;
    assert_eq!(res.json()["stored"], 1, "{}", res.text());
    (openai, anthropic, gw)
}

fn grounded(content: &str) -> serde_json::Value {
    json!({"model": "gpt-4o", "retrieval": {"top_k": 3}, "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn a_grounded_answer_sees_the_tenants_excerpts_and_names_its_documents() {
    let (openai, _a, gw) = gateway().await;
    openai.push(Behavior::reply(
        "The launch window opens on Saturday at dawn.",
        tollgate::domain::usage::TokenUsage {
            prompt_tokens: 80,
            completion_tokens: 12,
            ..Default::default()
        },
    ));
    let res = gw
        .chat("acme", grounded("When is the next launch window?"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-tollgate-documents"), Some("launch-schedule"));
    let upstream = openai.last_request().body.to_string();
    assert!(
        upstream.contains("[launch-schedule#0]") && upstream.contains("Saturday at dawn"),
        "{upstream}"
    );

    let events = gw.usage_events();
    let chat_event = events
        .iter()
        .find(|e| e.model_requested == "gpt-4o")
        .unwrap();
    let score = chat_event
        .quality_score
        .expect("a grounded answer is scored");
    assert!(
        score > rust_decimal::Decimal::new(5, 1),
        "groundedness {score}"
    );
    // The query embedding is metered too.
    assert!(
        events
            .iter()
            .any(|e| e.request_id.as_str().ends_with("-retrieval") && e.usage.prompt_tokens > 0)
    );
}

#[tokio::test]
async fn another_tenant_asking_the_same_question_gets_nothing_of_acmes() {
    let (openai, _a, gw) = gateway().await;
    let res = gw
        .chat("globex", grounded("When is the next launch window?"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-tollgate-documents"), None);
    let upstream = openai.last_request().body.to_string();
    assert!(!upstream.contains("Saturday at dawn") && !upstream.contains("launch-schedule"));
}

#[tokio::test]
async fn without_retrieval_no_excerpts_are_added() {
    let (openai, _a, gw) = gateway().await;
    let res = gw.chat("acme", json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "When is the next launch window?"}]})).await;
    assert_eq!(res.status, 200);
    assert!(
        !openai
            .last_request()
            .body
            .to_string()
            .contains("Saturday at dawn")
    );
    assert_eq!(res.header("x-tollgate-documents"), None);
}

#[tokio::test]
async fn a_broken_tenant_filter_is_caught_and_fails_the_request_closed() {
    let (openai, _a, mut gw) = gateway().await;
    // Fault injection: an index that ignores the tenant filter, holding acme's document.
    let broken = Arc::new(MemoryVectorIndex::with_broken_tenant_filter());
    let settings = tollgate_tests::harness::settings(&[("TOLLGATE_PROVIDERS", "simulated".into())]);
    gw.state.chat.retriever =
        Some(tollgate::bootstrap::retriever(&settings, &gw.state.chat, broken.clone()).unwrap());
    let embedder = tollgate::adapters::embeddings::LocalEmbedder::new(256);
    let chunk = tollgate::domain::documents::Chunk {
        tenant_id: tollgate::domain::ids::TenantId::parse("acme").unwrap(),
        document_id: tollgate::domain::documents::DocumentId::parse("launch-schedule").unwrap(),
        chunk_index: 0,
        title: "Launch schedule".into(),
        text: ACME_FACT.into(),
        metadata: Default::default(),
    };
    tollgate::ports::vector::VectorIndex::replace_document(
        broken.as_ref(),
        &chunk.tenant_id.clone(),
        &chunk.document_id.clone(),
        vec![tollgate::ports::vector::IndexedChunk {
            vector: embedder.vector(ACME_FACT),
            chunk,
        }],
    )
    .await
    .unwrap();
    let before = openai.requests().len();
    let res = gw
        .chat("globex", grounded("When is the next launch window?"))
        .await;
    assert_eq!(res.status, 500, "{}", res.text());
    assert_eq!(res.json()["error"]["code"], "isolation_check_failed");
    assert!(!res.text().contains("Saturday"), "no partial answer");
    assert_eq!(
        openai.requests().len(),
        before,
        "nothing reached the provider"
    );
    assert_eq!(gw.metrics.isolation_violations(), vec!["globex".to_owned()]);
}
