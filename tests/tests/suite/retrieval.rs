#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! Invoke grounded in the tenant's own documents: excerpts reach the provider with their
//! document ids, the response names them, the answer's groundedness is metered, and a broken
//! tenant filter is caught by the defense-in-depth check. The switches: the tenant's policy,
//! the request's `retrieval` (on, off, `top_k` and its bounds); and a fresh Qdrant collection
//! (no `tollgate init`, no ingest yet) that the first grounded request sets up.

use std::sync::Arc;

use http::Method;
use serde_json::json;
use tollgate::adapters::vector_memory::MemoryVectorIndex;
use tollgate::ports::TenantAdmin;
use tollgate::ports::vector::IndexReadiness;
use tollgate_tests::harness::Gateway;
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn, QdrantStandIn};

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

/// The `[document#chunk]` labels of the excerpts that went upstream, in order.
fn excerpt_labels(upstream: &serde_json::Value) -> Vec<String> {
    let Some(system) = upstream["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|m| {
            m["content"]
                .as_str()
                .filter(|c| c.starts_with("Answer using the following excerpts"))
        })
    else {
        return Vec::new();
    };
    system
        .lines()
        .filter_map(|line| line.strip_prefix('['))
        .filter_map(|rest| rest.split_once(']'))
        .map(|(label, _)| label.to_owned())
        .collect()
}

/// `put_tenant_config` with acme's demo configuration, its retrieval policy changed.
async fn acme_retrieval_policy(gw: &Gateway, enabled: bool, top_k: u8) {
    let mut config = tollgate::demo::acme_config().unwrap();
    config.retrieval.enabled = enabled;
    config.retrieval.top_k = top_k;
    gw.store.put_tenant_config(config).await.unwrap();
}

fn ask(retrieval: Option<serde_json::Value>) -> serde_json::Value {
    let mut body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "When is the next launch window?"}]});
    if let Some(retrieval) = retrieval {
        body["retrieval"] = retrieval;
    }
    body
}

fn query_embeddings(gw: &Gateway) -> usize {
    gw.usage_events()
        .iter()
        .filter(|e| e.request_id.as_str().ends_with("-retrieval"))
        .count()
}

#[tokio::test]
async fn a_tenant_whose_policy_turns_retrieval_on_is_grounded_without_asking() {
    let (openai, _a, gw) = gateway().await;
    acme_retrieval_policy(&gw, true, 4).await;

    let res = gw.chat("acme", ask(None)).await;

    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-tollgate-documents"), Some("launch-schedule"));
    assert_eq!(
        excerpt_labels(&openai.last_request().body),
        ["launch-schedule#0"]
    );
    assert_eq!(query_embeddings(&gw), 1);
}

#[tokio::test]
async fn retrieval_false_in_the_request_overrides_the_tenants_policy_and_embeds_nothing() {
    let (openai, _a, gw) = gateway().await;
    acme_retrieval_policy(&gw, true, 4).await;

    let res = gw.chat("acme", ask(Some(json!(false)))).await;

    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-tollgate-documents"), None);
    let upstream = openai.last_request().body;
    assert!(excerpt_labels(&upstream).is_empty(), "{upstream}");
    assert!(!upstream.to_string().contains("Saturday at dawn"));
    assert_eq!(query_embeddings(&gw), 0, "no query embedding was paid for");
    // `{"enabled": false}` is the same switch.
    let res = gw.chat("acme", ask(Some(json!({"enabled": false})))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(excerpt_labels(&openai.last_request().body).is_empty());
    assert_eq!(query_embeddings(&gw), 0);
}

#[tokio::test]
async fn top_k_bounds_the_excerpts_from_the_request_or_else_the_tenants_policy() {
    let (openai, _a, gw) = gateway().await;
    // Six one-chunk documents that all share the question's words.
    for i in 0..5 {
        let doc = json!({"id": format!("window-{i}"), "text": format!("The next launch window number {i} opens soon.")});
        let res = gw
            .call("acme", Method::POST, "/v1/documents", Some(doc))
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    acme_retrieval_policy(&gw, false, 3).await;

    for (retrieval, expected) in [
        (json!({"top_k": 2}), 2),
        (json!({"top_k": 1}), 1),
        (json!({"top_k": 5}), 5),
        // No top_k in the request: the tenant's policy (3).
        (json!(true), 3),
        (json!({"enabled": true}), 3),
    ] {
        let res = gw.chat("acme", ask(Some(retrieval.clone()))).await;
        assert_eq!(res.status, 200, "{retrieval}: {}", res.text());
        let labels = excerpt_labels(&openai.last_request().body);
        assert_eq!(labels.len(), expected, "{retrieval}: {labels:?}");
        let documents = res.header("x-tollgate-documents").unwrap();
        assert_eq!(documents.split(',').count(), expected, "{retrieval}");
    }
}

#[tokio::test]
async fn top_k_outside_1_to_20_is_a_400_naming_it_that_reaches_no_provider() {
    let (openai, _a, gw) = gateway().await;
    let before = openai.requests().len();
    for top_k in [json!(0), json!(21), json!(-1), json!(1000)] {
        let res = gw.chat("acme", ask(Some(json!({"top_k": top_k})))).await;
        assert_eq!(res.status, 400, "top_k {top_k}: {}", res.text());
        let error = &res.json()["error"];
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], "retrieval.top_k");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("between 1 and 20"),
            "{error}"
        );
    }
    assert_eq!(
        openai.requests().len(),
        before,
        "nothing reached the provider"
    );
    assert_eq!(query_embeddings(&gw), 0);
    // The bounds themselves are accepted.
    for top_k in [1, 20] {
        let res = gw.chat("acme", ask(Some(json!({"top_k": top_k})))).await;
        assert_eq!(res.status, 200, "top_k {top_k}: {}", res.text());
    }
}

#[tokio::test]
async fn a_grounded_chat_on_a_fresh_qdrant_creates_the_collection_once_and_answers_without_excerpts()
 {
    let qdrant = QdrantStandIn::start().await;
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let mut gw = Gateway::with_standins(&openai, &anthropic).await;
    // The production wiring: the index named by the settings, never set up (no `tollgate
    // init`, no ingest). Local embeddings of the stand-in's size (256), as ingest's.
    let settings = tollgate_tests::harness::settings(&[
        ("TOLLGATE_PROVIDERS", "simulated".into()),
        ("TOLLGATE_QDRANT_URL", qdrant.url()),
        ("TOLLGATE_QDRANT_COLLECTION", "fresh-chunks".into()),
    ]);
    let index = tollgate::bootstrap::vector_index(&settings).unwrap();
    gw.state.chat.retriever =
        Some(tollgate::bootstrap::retriever(&settings, &gw.state.chat, index.clone()).unwrap());
    assert_eq!(
        qdrant.point_count("fresh-chunks"),
        None,
        "no collection yet"
    );

    let res = gw
        .chat("acme", grounded("When is the next launch window?"))
        .await;

    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-tollgate-documents"), None);
    assert!(excerpt_labels(&openai.last_request().body).is_empty());
    assert_eq!(qdrant.point_count("fresh-chunks"), Some(0), "created");
    let setup = |q: &QdrantStandIn| {
        q.calls()
            .iter()
            .filter(|c| c.method != "query")
            .map(|c| c.method)
            .collect::<Vec<_>>()
    };
    let after_first = setup(&qdrant);
    assert_eq!(
        after_first.iter().filter(|m| **m == "create").count(),
        1,
        "{after_first:?}"
    );

    // Later requests, of any tenant, only query: the set-up is once per process.
    let res = gw.chat("globex", grounded("Any refunds?")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(setup(&qdrant), after_first);
    let queries = qdrant
        .calls()
        .iter()
        .filter(|c| c.method == "query")
        .count();
    assert_eq!(queries, 2);

    // The collection it made is the one ingest writes to.
    gw.ingest.ingest.index = index;
    gw.ingest.ingest.ready = IndexReadiness::default();
    let doc = json!({"id": "launch-schedule", "title": "Launch schedule", "text": ACME_FACT});
    let stored = gw
        .call("acme", Method::POST, "/v1/documents", Some(doc))
        .await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    let res = gw
        .chat("acme", grounded("When is the next launch window?"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-tollgate-documents"), Some("launch-schedule"));
    assert_eq!(
        excerpt_labels(&openai.last_request().body),
        ["launch-schedule#0"]
    );
}
