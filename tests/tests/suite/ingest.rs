#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! The ingest function through its handler on the embedded store and index: per-document
//! results, replacement, tenant scoping, limits and quotas, and metered embeddings.

use http::Method;
use serde_json::{Value, json};
use tollgate::domain::documents::DocumentId;
use tollgate::domain::ids::TenantId;
use tollgate::ports::TenantAdmin;
use tollgate::ports::vector::VectorIndex;
use tollgate_tests::harness::Gateway;

fn doc(id: &str, text: &str) -> Value {
    json!({"id": id, "title": format!("Title of {id}"), "text": text, "metadata": {"source": "test"}})
}

async fn chunks_of(gw: &Gateway, tenant: &str) -> u64 {
    gw.index
        .count(&TenantId::parse(tenant).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_with_one_bad_document_stores_the_good_ones() {
    let gw = Gateway::simulated().await;
    let body = json!({"documents": [
        doc("faq", "Refunds are free within 24 hours of booking."),
        {"id": "bad id!", "text": "x"},
        {"id": "empty", "text": "   "},
        doc("policy.md", "# Policy\n\nChanges after 24 hours cost a fee."),
        {"title": "no text at all"},
    ]});
    let res = gw
        .call("globex", Method::POST, "/v1/documents", Some(body))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let report = res.json();
    assert_eq!(report["stored"], 2);
    assert_eq!(report["failed"], 3);
    let statuses: Vec<(&str, &str)> = report["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap(),
                r["error"]["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("stored", ""),
            ("failed", "invalid_document_id"),
            ("failed", "empty_document"),
            ("stored", ""),
            ("failed", "invalid_document")
        ]
    );
    assert_eq!(chunks_of(&gw, "globex").await, 2);
}

#[tokio::test]
async fn reingesting_a_document_replaces_its_chunks() {
    let gw = Gateway::simulated().await;
    let long = "Paragraph about fares and seats. ".repeat(400);
    let first = gw
        .call(
            "acme",
            Method::POST,
            "/v1/documents",
            Some(doc("guide", &long)),
        )
        .await;
    let many = first.json()["data"][0]["chunks"].as_u64().unwrap();
    assert!(many > 1);
    assert_eq!(chunks_of(&gw, "acme").await, many);
    let second = gw
        .call(
            "acme",
            Method::POST,
            "/v1/documents",
            Some(doc("guide", "Now short.")),
        )
        .await;
    assert_eq!(second.json()["data"][0]["chunks"], 1);
    assert_eq!(chunks_of(&gw, "acme").await, 1, "old chunks must be gone");
    let list = gw
        .call("acme", Method::GET, "/v1/documents", None)
        .await
        .json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["chunks"], 1);
}

#[tokio::test]
async fn documents_are_listed_and_deleted_only_by_their_tenant() {
    let gw = Gateway::simulated().await;
    gw.call(
        "acme",
        Method::POST,
        "/v1/documents",
        Some(doc("shared-name", "acme secret plans")),
    )
    .await;
    gw.call(
        "globex",
        Method::POST,
        "/v1/documents",
        Some(doc("shared-name", "globex travel notes")),
    )
    .await;
    let acme = gw
        .call("acme", Method::GET, "/v1/documents", None)
        .await
        .json();
    assert_eq!(acme["data"].as_array().unwrap().len(), 1);
    assert!(!acme.to_string().contains("globex"));

    let deleted = gw
        .call("globex", Method::DELETE, "/v1/documents/shared-name", None)
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["deleted"], true);
    // acme's document of the same id is untouched.
    assert_eq!(chunks_of(&gw, "acme").await, 1);
    assert_eq!(chunks_of(&gw, "globex").await, 0);
    let again = gw
        .call("globex", Method::DELETE, "/v1/documents/shared-name", None)
        .await;
    assert_eq!(again.status, 404);
    assert_eq!(again.json()["error"]["code"], "document_not_found");
}

#[tokio::test]
async fn limits_give_clear_errors() {
    let gw = Gateway::simulated().await;
    let too_many: Vec<Value> = (0..101).map(|i| doc(&format!("d{i}"), "text")).collect();
    let res = gw
        .call(
            "acme",
            Method::POST,
            "/v1/documents",
            Some(json!({"documents": too_many})),
        )
        .await;
    assert_eq!(res.status, 400);
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit is 100")
    );
    let res = gw
        .call("acme", Method::POST, "/v1/documents", Some(json!([1, 2])))
        .await;
    assert_eq!(res.status, 400);
    let res = gw.call("acme", Method::PUT, "/v1/documents", None).await;
    assert_eq!(res.status, 405);

    // A tenant over its storage quota gets a per-document failure naming it.
    let mut config = tollgate::demo::globex_config().unwrap();
    config.limits.storage_chunks = Some(3);
    gw.store.put_tenant_config(config).await.unwrap();
    let long = "Words about luggage allowances. ".repeat(400);
    let res = gw
        .call(
            "globex",
            Method::POST,
            "/v1/documents",
            Some(doc("big", &long)),
        )
        .await;
    assert_eq!(
        res.json()["data"][0]["error"]["code"],
        "storage_quota_exceeded"
    );
    assert_eq!(chunks_of(&gw, "globex").await, 0);
}

#[tokio::test]
async fn embedding_calls_are_metered_as_usage_events() {
    let gw = Gateway::simulated().await;
    let res = gw
        .call(
            "acme",
            Method::POST,
            "/v1/documents",
            Some(doc("faq", "Rockets are reusable.")),
        )
        .await;
    assert_eq!(res.status, 200);
    let events = gw.usage_events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.tenant_id.as_str(), "acme");
    assert_eq!(e.model_served, "text-embedding-3-small");
    assert!(e.usage.prompt_tokens > 0 && e.cost_usd > rust_decimal::Decimal::ZERO);
    let metrics = gw.request_metrics();
    assert_eq!(metrics.last().unwrap().function, "ingest");
    // The stored chunk carries the tenant, document and metadata in its payload.
    let hits = gw
        .index
        .search(
            &TenantId::parse("acme").unwrap(),
            &tollgate::adapters::embeddings::LocalEmbedder::new(256).vector("reusable rockets"),
            3,
        )
        .await
        .unwrap();
    assert_eq!(hits[0].chunk.document_id, DocumentId::parse("faq").unwrap());
    assert_eq!(hits[0].chunk.metadata["source"], "test");
}

#[tokio::test]
async fn ingest_requires_a_valid_key() {
    let gw = Gateway::simulated().await;
    let req = http::Request::builder()
        .method("GET")
        .uri("/v1/documents")
        .body(bytes::Bytes::new())
        .unwrap();
    assert_eq!(gw.send(req).await.status, 401);
}

/// An API Gateway REST event fixture from `functions/ingest/events/`, with a tenant key.
fn fixture(name: &str, key: &str) -> lambda_http::Request {
    let path = format!(
        "{}/../functions/ingest/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&raw.replace("__TENANT_KEY__", key))
        .expect("valid API Gateway event")
}

#[tokio::test]
async fn the_event_fixtures_upload_and_list_a_document_through_the_handler() {
    let gw = Gateway::simulated().await;
    let key = gw.key("acme").to_owned();
    let uploaded = gw
        .send(tollgate::lambda::from_lambda(fixture(
            "upload-document.json",
            &key,
        )))
        .await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.text());
    assert_eq!(
        uploaded.header("x-request-id"),
        Some("0b1c2d3e-4f50-4a61-b723-84950a6b7c8d")
    );
    assert!(chunks_of(&gw, "acme").await > 0);
    let listed = gw
        .send(tollgate::lambda::from_lambda(fixture(
            "list-documents.json",
            &key,
        )))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(listed.text().contains("refund-policy"), "{}", listed.text());
}
