#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure report.
//! The ingest function through its handler on the embedded store and index: per-document
//! results, replacement, tenant scoping, limits and quotas (a single document's failure is the
//! response's status; a batch reports it per document), the request metric's status, metered
//! embeddings, title and metadata bounds, the storage quota under concurrent ingests (also on
//! DynamoDB), per-document registry reads, and the paginated listing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use http::Method;
use serde_json::{Value, json};
use tollgate::adapters::vector_memory::MemoryVectorIndex;
use tollgate::domain::chunking::{ChunkSpec, chunk_text};
use tollgate::domain::documents::{DocumentCursor, DocumentId, DocumentPage};
use tollgate::domain::ids::TenantId;
use tollgate::domain::limits::LimitOverrides;
use tollgate::domain::storage::{Claim, Removal, Settlement, StorageSlot};
use tollgate::domain::tenant::{ProviderKind, Tier};
use tollgate::domain::usage::UsageSource;
use tollgate::error::ErrorKind;
use tollgate::ports::TenantAdmin;
use tollgate::ports::provider::{ProviderError, ProviderErrorKind};
use tollgate::ports::store::{ClaimOutcome, DocumentRecord, DocumentStore, StoreError};
use tollgate::ports::store::{CounterKey, LimiterStore};
use tollgate::ports::vector::{
    Embedder, Embeddings, IndexError, IndexedChunk, ScoredChunk, VectorIndex,
};
use tollgate::service::ingest::IngestLimits;
use tollgate::tokenizer::count_tokens;
use tollgate_tests::harness::{Gateway, TestResponse};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

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
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_before_it_is_read() {
    let mut gw = Gateway::simulated().await;
    let body = doc("faq", "Rockets are reusable.");
    gw.ingest.max_body_bytes = body.to_string().len();
    let at_limit = post(&gw, "acme", body).await;
    assert_eq!(at_limit.status, 200, "{}", at_limit.text());

    let res = post(&gw, "acme", doc("faq", "Rockets are reusable!!")).await;

    assert_eq!(res.status, 413, "{}", res.text());
    assert_eq!(res.json()["error"]["code"], "payload_too_large");
    assert_eq!(chunks_of(&gw, "acme").await, 1, "only the first was stored");
}

#[tokio::test]
async fn a_tenants_storage_override_replaces_its_tiers_quota() {
    let gw = Gateway::simulated().await;
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
    assert_eq!(res.status, 403, "{}", res.text());
    let error = &res.json()["error"];
    assert_eq!(error["code"], "storage_quota_exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the free tier's quota of 3 chunks"),
        "{error}"
    );
    assert_eq!(chunks_of(&gw, "globex").await, 0);
    assert!(gw.usage_events().is_empty(), "refused before embedding");
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
    let line = metrics.last().unwrap();
    assert_eq!(line.function, "ingest");
    assert_eq!(line.usage_source, UsageSource::Provider);
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

fn post(gw: &Gateway, tenant: &str, body: Value) -> impl Future<Output = TestResponse> {
    gw.call(tenant, Method::POST, "/v1/documents", Some(body))
}

/// The ingest request metric's status, error type and tenant (the last one recorded).
fn last_ingest_metric(gw: &Gateway) -> (u16, Option<ErrorKind>, Option<String>) {
    let metric = gw
        .request_metrics()
        .into_iter()
        .rev()
        .find(|m| m.function == "ingest")
        .expect("an ingest metric");
    (metric.status, metric.error_type, metric.tenant_id)
}

#[tokio::test]
async fn a_single_document_over_1_mib_is_a_413_naming_text_and_embeds_nothing() {
    let gw = Gateway::simulated().await;
    let text = "Seats and fares. ".repeat(61_681); // 1 MiB + 1 byte
    assert_eq!(text.len(), (1 << 20) + 1);

    let res = post(&gw, "acme", doc("huge", &text)).await;

    assert_eq!(res.status, 413, "{}", res.text());
    let error = &res.json()["error"];
    assert_eq!(error["code"], "document_too_large");
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "text");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("`text` is 1048577 bytes; the limit is 1048576"),
        "{error}"
    );
    assert_eq!(chunks_of(&gw, "acme").await, 0);
    assert!(gw.usage_events().is_empty(), "nothing was embedded");
    assert_eq!(
        last_ingest_metric(&gw),
        (413, Some(ErrorKind::InvalidRequest), Some("acme".into()))
    );
}

#[tokio::test]
async fn a_single_document_of_more_than_1000_chunks_is_a_413_naming_text() {
    let gw = Gateway::simulated().await;
    // " a" is one token: 345,001 tokens are 1,016 chunks of 400 (60 shared), in 690 KB.
    let text = format!("a{}", " a".repeat(345_000));
    assert!(text.len() < 1 << 20, "under the byte limit");

    let res = post(&gw, "acme", doc("dense", &text)).await;

    assert_eq!(res.status, 413, "{}", res.text());
    let error = &res.json()["error"];
    assert_eq!(error["code"], "too_many_chunks");
    assert_eq!(error["param"], "text");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("chunks; the limit is 1000"),
        "{error}"
    );
    assert_eq!(chunks_of(&gw, "acme").await, 0);
    assert!(gw.usage_events().is_empty(), "nothing was embedded");
}

#[tokio::test]
async fn single_documents_fail_with_their_own_status_in_the_openai_shape() {
    let gw = Gateway::simulated().await;
    for (body, status, code, param) in [
        (
            json!({"id": "bad id!", "text": "x"}),
            400,
            "invalid_document_id",
            json!("id"),
        ),
        (
            json!({"id": "blank", "text": "  "}),
            400,
            "empty_document",
            json!("text"),
        ),
        (
            json!({"title": "no text"}),
            400,
            "invalid_document",
            Value::Null,
        ),
        (
            json!({"text": "x", "metadata": {"k": "v".repeat(1025)}}),
            400,
            "invalid_metadata",
            json!("metadata"),
        ),
    ] {
        let res = post(&gw, "acme", body.clone()).await;
        assert_eq!(res.status, status, "{body}: {}", res.text());
        let error = &res.json()["error"];
        assert_eq!(error["code"], code, "{body}");
        assert_eq!(error["param"], param, "{body}");
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert_eq!(
            last_ingest_metric(&gw),
            (status, Some(ErrorKind::InvalidRequest), Some("acme".into()))
        );
    }
    assert_eq!(chunks_of(&gw, "acme").await, 0);
    // A stored single document still gets the report.
    let res = post(&gw, "acme", doc("faq", "Rockets are reusable.")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["stored"], 1);
    assert_eq!(last_ingest_metric(&gw), (200, None, Some("acme".into())));
}

/// `words` distinct words, which the tokenizer counts one each.
fn words(n: usize) -> String {
    (0..n)
        .map(|i| ["alpha", "beta", "gamma", "delta"][i % 4])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ids, statuses and error codes of a batch report.
fn outcomes(report: &Value) -> Vec<(String, String, String)> {
    report["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
                r["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn outcome(id: &str, status: &str, code: &str) -> (String, String, String) {
    (id.into(), status.into(), code.into())
}

#[tokio::test]
async fn in_a_batch_each_limit_fails_only_its_document_and_the_request_is_a_200() {
    let mut gw = Gateway::simulated().await;
    // The byte limit, at its boundary.
    gw.ingest.ingest.limits = IngestLimits {
        max_document_bytes: 200,
        ..IngestLimits::default()
    };
    let res = post(
        &gw,
        "acme",
        json!({"documents": [doc("200-bytes", &"a".repeat(200)), doc("201-bytes", &"a".repeat(201))]}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        outcomes(&res.json()),
        [
            outcome("200-bytes", "stored", ""),
            outcome("201-bytes", "failed", "document_too_large")
        ]
    );

    // The chunk limit, at its boundary.
    let spec = ChunkSpec {
        size: 8,
        overlap: 0,
    };
    gw.ingest.ingest.limits = IngestLimits {
        max_chunks_per_document: 2,
        chunk: spec,
        ..IngestLimits::default()
    };
    let (two, three) = (words(16), words(17));
    assert_eq!(chunk_text(&two, spec).len(), 2);
    assert_eq!(chunk_text(&three, spec).len(), 3);
    let res = post(
        &gw,
        "acme",
        json!({"documents": [doc("two-chunks", &two), doc("three-chunks", &three)]}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let report = res.json();
    assert_eq!(
        outcomes(&report),
        [
            outcome("two-chunks", "stored", ""),
            outcome("three-chunks", "failed", "too_many_chunks")
        ]
    );
    // A batch entry's error is the error object the document alone gets.
    assert_eq!(
        report["data"][1]["error"],
        json!({"message": "the document makes 3 chunks; the limit is 2", "type": "invalid_request_error", "param": "text", "code": "too_many_chunks"})
    );
    assert_eq!(
        (report["stored"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(last_ingest_metric(&gw), (200, None, Some("acme".into())));
    assert_eq!(chunks_of(&gw, "acme").await, 1 + 2);

    let alone = post(&gw, "acme", doc("three-chunks", &three)).await;
    assert_eq!(alone.status, 413, "{}", alone.text());
    assert_eq!(alone.json()["error"], report["data"][1]["error"]);
}

/// The embedded index, counting `extra` more chunks for every tenant than it holds: a tenant
/// one chunk short of a large quota without storing millions of vectors.
struct Preloaded {
    inner: Arc<MemoryVectorIndex>,
    extra: u64,
}

#[async_trait]
impl VectorIndex for Preloaded {
    async fn ensure_ready(&self, dimensions: usize) -> Result<(), IndexError> {
        self.inner.ensure_ready(dimensions).await
    }

    async fn replace_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        chunks: Vec<IndexedChunk>,
    ) -> Result<(), IndexError> {
        self.inner.replace_document(tenant, document, chunks).await
    }

    async fn delete_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
    ) -> Result<u64, IndexError> {
        self.inner.delete_document(tenant, document).await
    }

    async fn search(
        &self,
        tenant: &TenantId,
        vector: &[f32],
        top_k: usize,
    ) -> Result<Vec<ScoredChunk>, IndexError> {
        self.inner.search(tenant, vector, top_k).await
    }

    async fn count(&self, tenant: &TenantId) -> Result<u64, IndexError> {
        Ok(self.inner.count(tenant).await? + self.extra)
    }
}

#[tokio::test]
async fn each_tiers_default_quota_admits_its_last_chunk_and_refuses_the_next_with_a_403() {
    for (tier, quota) in [
        (Tier::Free, 2_000),
        (Tier::Pro, 200_000),
        (Tier::Enterprise, 5_000_000),
    ] {
        let mut gw = Gateway::simulated().await;
        gw.ingest.ingest.index = Arc::new(Preloaded {
            inner: gw.index.clone(),
            extra: quota - 1,
        });
        let mut config = tollgate::demo::globex_config().unwrap();
        config.tier = tier;
        assert_eq!(config.limits.storage_chunks, None, "no override");
        gw.store.put_tenant_config(config).await.unwrap();

        let last = post(&gw, "globex", doc("last", "One short chunk.")).await;
        assert_eq!(last.status, 200, "{tier:?}: {}", last.text());
        assert_eq!(last.json()["data"][0]["chunks"], 1);

        let over = post(&gw, "globex", doc("over", "Another short chunk.")).await;
        assert_eq!(over.status, 403, "{tier:?}: {}", over.text());
        let error = &over.json()["error"];
        assert_eq!(error["code"], "storage_quota_exceeded");
        assert_eq!(error["type"], "permission_error");
        let expected = format!("the {} tier's quota of {quota} chunks", tier.as_str());
        assert!(
            error["message"].as_str().unwrap().contains(&expected),
            "{error}"
        );
        assert_eq!(
            last_ingest_metric(&gw),
            (403, Some(ErrorKind::InvalidRequest), Some("globex".into()))
        );

        // Replacing a stored document frees its own chunks first, so it still fits.
        let edited = post(&gw, "globex", doc("last", "One short chunk, edited.")).await;
        assert_eq!(edited.status, 200, "{tier:?}: {}", edited.text());
        // In a batch the refusal is that document's result.
        let batch = post(
            &gw,
            "globex",
            json!({"documents": [doc("over", "Another short chunk.")]}),
        )
        .await;
        assert_eq!(batch.status, 200, "{tier:?}: {}", batch.text());
        assert_eq!(
            batch.json()["data"][0]["error"]["code"],
            "storage_quota_exceeded"
        );
        assert_eq!(chunks_of(&gw, "globex").await, 1, "{tier:?}");
    }
}

#[tokio::test]
async fn the_ingest_metric_reports_the_status_the_client_got() {
    let gw = Gateway::simulated().await;
    let unauthenticated = gw
        .send(
            http::Request::builder()
                .method("POST")
                .uri("/v1/documents")
                .body(bytes::Bytes::from(doc("faq", "text").to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(
        last_ingest_metric(&gw),
        (401, Some(ErrorKind::Authentication), None)
    );

    let too_many: Vec<Value> = (0..101).map(|i| doc(&format!("d{i}"), "text")).collect();
    let res = post(&gw, "acme", json!({"documents": too_many})).await;
    assert_eq!(res.status, 400);
    assert_eq!(
        last_ingest_metric(&gw),
        (400, Some(ErrorKind::InvalidRequest), Some("acme".into()))
    );

    // A batch whose every document failed still answered 200.
    let res = post(
        &gw,
        "acme",
        json!({"documents": [{"id": "e", "text": " "}]}),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["failed"], 1);
    assert_eq!(last_ingest_metric(&gw), (200, None, Some("acme".into())));
}

// ---------------------------------------------------------------------------------------------
// Title and metadata bounds
// ---------------------------------------------------------------------------------------------

/// `len` bytes starting with a canary that an error message must never quote.
fn canary(len: usize) -> String {
    format!("{:x<len$}", "canary")
}

/// Posts `body` alone, and asserts a 400 naming `param` with exactly `message`, without the
/// canary.
async fn assert_refused(gw: &Gateway, body: Value, code: &str, param: &str, message: &str) {
    let res = post(gw, "acme", body.clone()).await;
    assert_eq!(res.status, 400, "{}", res.text());
    let error = &res.json()["error"];
    assert_eq!(
        error,
        &json!({"message": message, "type": "invalid_request_error", "param": param, "code": code})
    );
    assert!(!res.text().contains("canary"), "{}", res.text());
}

#[tokio::test]
async fn a_document_of_the_wrong_shape_is_refused_by_field_and_type_never_by_its_value() {
    let gw = Gateway::simulated().await;
    let single = json!({"id": "m", "text": "Rockets are reusable.", "metadata": canary(40)});
    let res = post(&gw, "acme", single).await;
    assert_eq!(res.status, 400, "{}", res.text());
    let error = &res.json()["error"];
    assert_eq!(error["code"], "invalid_document");
    assert_eq!(
        error["message"],
        "invalid type for `metadata`: expected an object, got a string"
    );
    assert!(!res.text().contains("canary"), "{}", res.text());

    // In a batch, each entry's result says the same; the good one is stored.
    let batch = json!({"documents": [
        {"id": "ok", "text": "Rockets are reusable."},
        {"id": "t", "title": 987_654_321, "text": "Rockets."},
        {"id": "x", "text": {"canary": canary(20)}},
    ]});
    let res = post(&gw, "acme", batch).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let results = res.json()["data"].clone();
    assert_eq!(results[0]["status"], "stored", "{results}");
    assert_eq!(
        results[1]["error"]["message"],
        "invalid type for `title`: expected a string, got an integer"
    );
    assert_eq!(
        results[2]["error"]["message"],
        "invalid type for `text`: expected a string, got an object"
    );
    assert!(!res.text().contains("canary") && !res.text().contains("987654321"));
}

#[tokio::test]
async fn a_title_of_256_bytes_is_stored_and_one_of_257_is_a_400_naming_title() {
    let gw = Gateway::simulated().await;
    let at_limit = json!({"id": "t256", "title": canary(256), "text": "Rockets are reusable."});
    let res = post(&gw, "acme", at_limit).await;
    assert_eq!(res.status, 200, "{}", res.text());

    let over = json!({"id": "t257", "title": canary(257), "text": "Rockets are reusable."});
    assert_refused(
        &gw,
        over,
        "invalid_title",
        "title",
        "`title` is 257 bytes; the limit is 256",
    )
    .await;
    assert_eq!(chunks_of(&gw, "acme").await, 1, "only the first was stored");
    // Bytes, not characters: 129 two-byte characters are over.
    let wide = json!({"id": "wide", "title": "é".repeat(129), "text": "Rockets."});
    assert_eq!(post(&gw, "acme", wide).await.status, 400);
}

#[tokio::test]
async fn each_metadata_bound_admits_its_limit_and_refuses_one_past_it_naming_metadata() {
    let gw = Gateway::simulated().await;
    let entries = |n: usize| -> Value {
        (0..n)
            .map(|i| (format!("canary-{i:02}"), json!("v")))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let cases = [
        (
            entries(32),
            entries(33),
            "`metadata` has 33 entries; the limit is 32",
        ),
        (
            json!({canary(128): "v"}),
            json!({canary(129): "v"}),
            "a `metadata` key is 129 bytes; the limit is 128",
        ),
        (
            json!({"k": canary(1024)}),
            json!({"k": canary(1025)}),
            "a `metadata` value is 1025 bytes; the limit is 1024",
        ),
        (
            // 2 x (1 + 1023) bytes, then one value a byte longer.
            json!({"a": canary(1023), "b": canary(1023)}),
            json!({"a": canary(1023), "b": canary(1024)}),
            "`metadata` is 2049 bytes (keys and values); the limit is 2048",
        ),
    ];
    for (n, (at_limit, over, message)) in cases.into_iter().enumerate() {
        let id = format!("m{n}");
        let res = post(
            &gw,
            "acme",
            json!({"id": id, "text": "Rockets.", "metadata": at_limit}),
        )
        .await;
        assert_eq!(res.status, 200, "{message}: {}", res.text());
        assert_refused(
            &gw,
            json!({"id": id, "text": "Rockets.", "metadata": over}),
            "invalid_metadata",
            "metadata",
            message,
        )
        .await;
    }
    assert_eq!(chunks_of(&gw, "acme").await, 4);
}

// ---------------------------------------------------------------------------------------------
// The storage quota under concurrency
// ---------------------------------------------------------------------------------------------

/// An embedder that answers after `delay` (or fails, when `fail`): concurrent ingests overlap
/// while they embed, as Lambdas calling a real provider do.
struct SlowEmbedder {
    inner: Arc<dyn Embedder>,
    delay: Duration,
    fail: bool,
}

impl SlowEmbedder {
    fn wrap(inner: &Arc<dyn Embedder>, delay_ms: u64) -> Arc<dyn Embedder> {
        Arc::new(Self {
            inner: inner.clone(),
            delay: Duration::from_millis(delay_ms),
            fail: false,
        })
    }
}

#[async_trait]
impl Embedder for SlowEmbedder {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }
    fn model(&self) -> &str {
        self.inner.model()
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
    async fn embed(
        &self,
        texts: &[String],
        pool_key: Option<u16>,
    ) -> Result<Embeddings, ProviderError> {
        tokio::time::sleep(self.delay).await;
        if self.fail {
            return Err(ProviderError::new(
                self.kind(),
                ProviderErrorKind::Rejected,
                "the embedding stand-in refuses",
            ));
        }
        self.inner.embed(texts, pool_key).await
    }
}

/// Chunks of 8 tokens: `words(24)` is a document of exactly 3 chunks.
fn three_chunk_limits() -> IngestLimits {
    IngestLimits {
        chunk: ChunkSpec {
            size: 8,
            overlap: 0,
        },
        ..IngestLimits::default()
    }
}

/// globex with a quota of `chunks` chunks.
async fn set_storage_quota(admin: &dyn TenantAdmin, chunks: u64) {
    let mut config = tollgate::demo::globex_config().unwrap();
    config.limits.storage_chunks = Some(chunks);
    admin.put_tenant_config(config).await.unwrap();
}

/// `POST /v1/documents` through the ingest handler of `state`, with `key`.
async fn post_with(state: &ingest::IngestState, key: &str, body: Value) -> (u16, Value) {
    let req = http::Request::builder()
        .method(Method::POST)
        .uri("/v1/documents")
        .header("authorization", format!("Bearer {key}"))
        .body(bytes::Bytes::from(body.to_string()))
        .unwrap();
    let res = ingest::handle(state, req).await;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// 8 concurrent single-document ingests of 3 chunks each (24 chunks) against a quota of 10:
/// exactly 3 are stored (9 chunks), the other 5 get 403 `storage_quota_exceeded`, and the
/// index never holds more than the quota. `state`'s tenant globex must have that quota.
async fn parallel_ingests_stay_within_the_quota(
    state: &ingest::IngestState,
    key: &str,
    index: &MemoryVectorIndex,
) {
    let text = words(24);
    assert_eq!(chunk_text(&text, three_chunk_limits().chunk).len(), 3);
    let results = join_all(
        (0..8).map(|i| post_with(state, key, json!({"id": format!("doc-{i}"), "text": text}))),
    )
    .await;
    let stored = results.iter().filter(|(status, _)| *status == 200).count();
    let refused: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status != 200)
        .map(|(status, body)| (*status, body["error"]["code"].clone()))
        .collect();
    assert_eq!(stored, 3, "{results:?}");
    assert_eq!(refused, vec![(403, json!("storage_quota_exceeded")); 5]);
    let globex = TenantId::parse("globex").unwrap();
    assert_eq!(index.count(&globex).await.unwrap(), 9);
}

#[tokio::test]
async fn parallel_ingests_past_the_quota_store_at_most_the_quota_and_refuse_the_rest_with_403() {
    let mut gw = Gateway::simulated().await;
    set_storage_quota(gw.store.as_ref(), 10).await;
    let service = &mut gw.ingest.ingest;
    service.limits = three_chunk_limits();
    service.embedder = SlowEmbedder::wrap(&service.embedder, 50);
    let key = gw.key("globex").to_owned();
    parallel_ingests_stay_within_the_quota(&gw.ingest, &key, &gw.index).await;
}

#[tokio::test]
async fn dynamodb_parallel_ingests_past_the_quota_store_at_most_the_quota() {
    let Some(store) = tollgate_tests::moto::fresh_store("DynamoDB ingest quota test", "iq").await
    else {
        return;
    };
    let seeded = tollgate::demo::seed(&store, chrono::Utc::now())
        .await
        .unwrap();
    set_storage_quota(&store, 10).await;
    let index = Arc::new(MemoryVectorIndex::new());
    let settings = tollgate_tests::harness::settings(&[("TOLLGATE_PROVIDERS", "simulated".into())]);
    let metrics = Arc::new(tollgate::adapters::memory::MemoryMetrics::default());
    let stores = tollgate::bootstrap::Stores::on(
        Arc::new(store.clone()),
        settings.store.directory_cache_ttl,
    );
    let mut state = ingest::IngestState::build(&settings, &stores, metrics, index.clone()).unwrap();
    state.ingest.limits = three_chunk_limits();
    state.ingest.embedder = SlowEmbedder::wrap(&state.ingest.embedder, 50);
    state.max_body_bytes = 1 << 20;
    state.deadline_margin = std::time::Duration::from_secs(3);
    let key = seeded
        .iter()
        .find(|(tenant, _)| tenant.as_str() == "globex")
        .map(|(_, key)| key.expose().to_owned())
        .unwrap();
    parallel_ingests_stay_within_the_quota(&state, &key, &index).await;
    // The counter agrees with the index.
    let slot = store
        .storage_slot(
            &TenantId::parse("globex").unwrap(),
            &DocumentId::parse("doc-0").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(slot.counter, Some(9));
    // The stored documents' embedding tokens were reserved and reconciled on DynamoDB's
    // limiter counters (the refused ones were refused before a reservation), no request.
    let chunks = chunk_text(&words(24), three_chunk_limits().chunk);
    let minute = chrono::Utc::now().timestamp().div_euclid(10);
    let keys: Vec<CounterKey> = (minute - 7..=minute + 1)
        .map(|i| CounterKey(format!("t#globex#m#{i}")))
        .collect();
    let counters = store.read_counters(&keys).await.unwrap();
    assert_eq!(
        (
            counters.iter().map(|c| c.tokens).sum::<i64>(),
            counters.iter().map(|c| c.requests).sum::<i64>()
        ),
        (3 * tokens_of(&chunks) as i64, 0)
    );
}

#[tokio::test]
async fn a_second_ingest_of_a_document_being_stored_gets_a_409_and_the_first_version_stays() {
    let mut gw = Gateway::simulated().await;
    let service = &mut gw.ingest.ingest;
    service.embedder = SlowEmbedder::wrap(&service.embedder, 200);
    let first = post(&gw, "acme", doc("guide", "The first version."));
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        post(&gw, "acme", doc("guide", "The second version.")).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(second.status, 409, "{}", second.text());
    assert_eq!(
        second.json()["error"],
        json!({"message": "document `guide` is being stored by another request; retry when that request has finished", "type": "invalid_request_error", "param": "id", "code": "document_busy"})
    );
    // Once the first has finished, the id is free again.
    let third = post(&gw, "acme", doc("guide", "The third version.")).await;
    assert_eq!(third.status, 200, "{}", third.text());
}

#[tokio::test]
async fn a_document_that_fails_to_embed_gives_its_chunks_back_to_the_quota() {
    let mut gw = Gateway::simulated().await;
    set_storage_quota(gw.store.as_ref(), 3).await;
    let service = &mut gw.ingest.ingest;
    service.limits = three_chunk_limits();
    let working = service.embedder.clone();
    service.embedder = Arc::new(SlowEmbedder {
        inner: working.clone(),
        delay: Duration::ZERO,
        fail: true,
    });
    let failed = post(&gw, "globex", doc("fails", &words(24))).await;
    assert_eq!(failed.status, 400, "{}", failed.text());
    assert_eq!(failed.json()["error"]["code"], "upstream_rejected");

    gw.ingest.ingest.embedder = working;
    let stored = post(&gw, "globex", doc("fits", &words(24))).await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    // The failed id left nothing behind: it is neither listed nor charged.
    let list = gw.call("globex", Method::GET, "/v1/documents", None).await;
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn deleting_a_document_gives_its_chunks_back_to_the_quota() {
    let mut gw = Gateway::simulated().await;
    set_storage_quota(gw.store.as_ref(), 3).await;
    gw.ingest.ingest.limits = three_chunk_limits();
    assert_eq!(post(&gw, "globex", doc("a", &words(24))).await.status, 200);
    let full = post(&gw, "globex", doc("b", &words(24))).await;
    assert_eq!(full.status, 403, "{}", full.text());

    let deleted = gw
        .call("globex", Method::DELETE, "/v1/documents/a", None)
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let res = post(&gw, "globex", doc("b", &words(24))).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(chunks_of(&gw, "globex").await, 3);
}

// ---------------------------------------------------------------------------------------------
// Registry reads
// ---------------------------------------------------------------------------------------------

/// The embedded registry, counting the entries each call reads.
struct CountingRegistry {
    inner: Arc<tollgate::adapters::memory::MemoryStore>,
    entries_read: AtomicU64,
}

#[async_trait]
impl DocumentStore for CountingRegistry {
    async fn storage_slot(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
    ) -> Result<StorageSlot, StoreError> {
        self.entries_read.fetch_add(1, Ordering::SeqCst);
        self.inner.storage_slot(tenant, document).await
    }
    async fn claim_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        claim: &Claim,
    ) -> Result<ClaimOutcome, StoreError> {
        self.inner.claim_document(tenant, document, claim).await
    }
    async fn commit_document(
        &self,
        record: &DocumentRecord,
        settlement: &Settlement,
    ) -> Result<bool, StoreError> {
        self.inner.commit_document(record, settlement).await
    }
    async fn release_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        settlement: &Settlement,
    ) -> Result<bool, StoreError> {
        self.inner
            .release_document(tenant, document, settlement)
            .await
    }
    async fn remove_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        removal: &Removal,
    ) -> Result<bool, StoreError> {
        self.inner.remove_document(tenant, document, removal).await
    }
    async fn documents_page(
        &self,
        tenant: &TenantId,
        cursor: Option<&DocumentCursor>,
        limit: usize,
    ) -> Result<DocumentPage, StoreError> {
        let page = self.inner.documents_page(tenant, cursor, limit).await?;
        self.entries_read
            .fetch_add(page.documents.len() as u64, Ordering::SeqCst);
        Ok(page)
    }
}

#[tokio::test]
async fn storing_one_document_reads_one_registry_entry_however_many_the_tenant_has() {
    let mut gw = Gateway::simulated().await;
    let registry = Arc::new(CountingRegistry {
        inner: gw.store.clone(),
        entries_read: AtomicU64::new(0),
    });
    gw.ingest.ingest.documents = registry.clone();
    let reads_to_store = |id: &'static str| {
        let (gw, registry) = (&gw, registry.clone());
        async move {
            let before = registry.entries_read.load(Ordering::SeqCst);
            let res = post(gw, "acme", doc(id, "One more document.")).await;
            assert_eq!(res.status, 200, "{}", res.text());
            registry.entries_read.load(Ordering::SeqCst) - before
        }
    };
    assert_eq!(reads_to_store("first").await, 1);
    let many: Vec<Value> = (0..60).map(|i| doc(&format!("d{i}"), "text")).collect();
    let res = post(&gw, "acme", json!({"documents": many})).await;
    assert_eq!(res.json()["stored"], 60);
    assert_eq!(reads_to_store("after-sixty").await, 1);
    // Replacing one reads that one too.
    assert_eq!(reads_to_store("d30").await, 1);
}

// ---------------------------------------------------------------------------------------------
// The listing
// ---------------------------------------------------------------------------------------------

/// `GET /v1/documents?{query}` as `tenant`.
async fn list(gw: &Gateway, tenant: &str, query: &str) -> TestResponse {
    gw.call(tenant, Method::GET, &format!("/v1/documents?{query}"), None)
        .await
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn documents_are_listed_by_id_a_page_at_a_time_with_an_opaque_cursor() {
    let gw = Gateway::simulated().await;
    let docs: Vec<Value> = (0..45).map(|i| doc(&format!("d{i:02}"), "text")).collect();
    let res = post(&gw, "acme", json!({"documents": docs})).await;
    assert_eq!(res.json()["stored"], 45);

    // The default page is 20.
    let first = list(&gw, "acme", "").await.json();
    assert_eq!(ids(&first).len(), 20);
    assert_eq!(first["has_more"], true);
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=17&cursor={c}"),
            None => "limit=17".into(),
        };
        let page = list(&gw, "acme", &query).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        sizes.push(ids(&page).len());
        all.extend(ids(&page));
        assert_eq!(page["has_more"], page["next_cursor"].is_string());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(sizes, [17, 17, 11]);
    let expected: Vec<String> = (0..45).map(|i| format!("d{i:02}")).collect();
    assert_eq!(all, expected);
    // The largest page holds them all.
    let everything = list(&gw, "acme", "limit=100").await.json();
    assert_eq!(ids(&everything).len(), 45);
    assert_eq!(
        (
            everything["has_more"].clone(),
            everything["next_cursor"].clone()
        ),
        (json!(false), Value::Null)
    );
    let one = &everything["data"][0];
    assert_eq!(
        (
            one["object"].clone(),
            one["title"].clone(),
            one["chunks"].clone()
        ),
        (json!("document"), json!("Title of d00"), json!(1))
    );
}

#[tokio::test]
async fn a_cursor_from_another_tenant_lists_only_the_callers_own_documents() {
    let gw = Gateway::simulated().await;
    let acme: Vec<Value> = (1..=5)
        .map(|i| doc(&format!("p-{i:02}"), "acme plans"))
        .collect();
    post(&gw, "acme", json!({"documents": acme})).await;
    let globex = json!({"documents": [
        {"id": "p-03", "title": "globex notes", "text": "globex travel"},
        {"id": "p-06", "title": "globex notes", "text": "globex travel"},
    ]});
    post(&gw, "globex", globex).await;

    let page = list(&gw, "acme", "limit=2").await.json();
    assert_eq!(ids(&page), ["p-01", "p-02"]);
    let cursor = page["next_cursor"].as_str().unwrap();

    let theirs = list(&gw, "globex", &format!("cursor={cursor}")).await;
    assert_eq!(theirs.status, 200, "{}", theirs.text());
    let theirs = theirs.json();
    assert_eq!(ids(&theirs), ["p-03", "p-06"]);
    assert!(!theirs.to_string().contains("acme"), "{theirs}");
    assert_eq!(theirs["has_more"], false);
}

#[tokio::test]
async fn a_bad_limit_or_cursor_is_a_400_naming_it_without_echoing_it() {
    let gw = Gateway::simulated().await;
    let limit = "`limit` must be an integer from 1 to 100";
    let cursor = "`cursor` is not valid; pass the `next_cursor` of a previous page unchanged";
    for (query, param, message) in [
        ("limit=0", "limit", limit),
        ("limit=101", "limit", limit),
        ("limit=-1", "limit", limit),
        ("limit=canary", "limit", limit),
        ("limit=", "limit", "`limit` must not be empty"),
        (
            "limit=5&limit=6",
            "limit",
            "`limit` is given more than once",
        ),
        ("cursor=canary", "cursor", cursor),
        // An id that is not a document id, and a usage events cursor.
        ("cursor=d12f2f", "cursor", cursor),
        ("cursor=e1c0ffee", "cursor", cursor),
        (
            "tenant_id=globex",
            "tenant_id",
            "unknown parameter `tenant_id`; expected one of: limit, cursor",
        ),
    ] {
        let res = list(&gw, "acme", query).await;
        assert_eq!(res.status, 400, "{query}: {}", res.text());
        let error = &res.json()["error"];
        assert_eq!(error["param"], param, "{query}");
        assert_eq!(error["type"], "invalid_request_error", "{query}");
        assert_eq!(error["message"], message, "{query}");
        assert!(!res.text().contains("canary"), "{query}: {}", res.text());
    }
}

// ---------------------------------------------------------------------------------------------
// Spend: embeddings under the tenant's limits, metered per upstream request
// ---------------------------------------------------------------------------------------------

/// The gateway on the OpenAI stand-in (real embedder adapter), acme with `limits`.
async fn openai_gateway(limits: LimitOverrides) -> (OpenAiStandIn, AnthropicStandIn, Gateway) {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let gw = Gateway::with_standins(&openai, &anthropic).await;
    let mut config = tollgate::demo::acme_config().unwrap();
    config.limits = limits;
    gw.store.put_tenant_config(config).await.unwrap();
    (openai, anthropic, gw)
}

fn tpm(tokens_per_minute: u64) -> LimitOverrides {
    LimitOverrides {
        tokens_per_minute: Some(tokens_per_minute),
        ..LimitOverrides::default()
    }
}

/// What `tenant`'s counters of `window` (`m` or `h`) hold now, over every bucket a reservation
/// can have written: (tokens, requests).
async fn counted(gw: &Gateway, tenant: &str, window: &str) -> (i64, i64) {
    let (bucket_secs, buckets) = if window == "m" { (10, 7) } else { (3_600, 25) };
    let current = chrono::Utc::now().timestamp().div_euclid(bucket_secs);
    let keys: Vec<CounterKey> = (current - buckets..=current + 1)
        .map(|i| CounterKey(format!("t#{tenant}#{window}#{i}")))
        .collect();
    let counters = gw.store.read_counters(&keys).await.unwrap();
    (
        counters.iter().map(|c| c.tokens).sum(),
        counters.iter().map(|c| c.requests).sum(),
    )
}

fn tokens_of(texts: &[String]) -> u64 {
    texts.iter().map(|t| count_tokens(t) as u64).sum()
}

/// The tenant's charged chunks, as the storage counter holds them.
async fn charged(gw: &Gateway, tenant: &str) -> u64 {
    gw.store
        .storage_slot(
            &TenantId::parse(tenant).unwrap(),
            &DocumentId::parse("any").unwrap(),
        )
        .await
        .unwrap()
        .counter
        .unwrap_or(0)
}

#[tokio::test]
async fn a_document_needing_more_than_the_tenants_limit_is_a_400_and_embeds_nothing() {
    let text = format!("canary7f3a {}", words(59));
    let tokens = count_tokens(&text) as u64;
    for (limits, describe) in [
        (tpm(tokens - 1), "tokens per minute (TPM)"),
        (
            LimitOverrides {
                tokens_per_day: Some(tokens - 1),
                ..LimitOverrides::default()
            },
            "tokens per day (daily budget)",
        ),
    ] {
        let (openai, _anthropic, gw) = openai_gateway(limits).await;
        let res = post(&gw, "acme", doc("big", &text)).await;
        assert_eq!(res.status, 400, "{}", res.text());
        let expected = format!(
            "embedding this document needs {tokens} tokens, more than the tenant's limit of {} {describe}; split it into smaller documents",
            tokens - 1
        );
        assert_eq!(
            res.json()["error"],
            json!({"message": expected, "type": "invalid_request_error", "param": "text", "code": "request_too_large"})
        );
        assert!(!res.text().contains("canary7f3a"), "{}", res.text());
        assert!(openai.embedding_requests().is_empty(), "nothing embedded");
        assert!(gw.usage_events().is_empty(), "nothing metered");
        assert_eq!(counted(&gw, "acme", "m").await, (0, 0));
        assert_eq!(charged(&gw, "acme").await, 0, "no storage claimed");
        assert_eq!(
            last_ingest_metric(&gw),
            (400, Some(ErrorKind::RateLimited), Some("acme".into()))
        );
    }
}

#[tokio::test]
async fn a_document_refused_by_a_full_minute_window_gets_429_with_retry_after_and_embeds_nothing() {
    let (first, second) = (words(60), words(50));
    let (a, b) = (count_tokens(&first) as u64, count_tokens(&second) as u64);
    let (openai, _anthropic, gw) = openai_gateway(tpm(a + b - 1)).await;
    let stored = post(&gw, "acme", doc("first", &first)).await;
    assert_eq!(stored.status, 200, "{}", stored.text());

    let refused = post(&gw, "acme", doc("second", &second)).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["type"], "rate_limit_error");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "rate limit reached for tokens per minute (TPM) on tenant `acme`: limit {}, used {a}, requested {b}.",
            a + b - 1
        )),
        "{message}"
    );
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    // When the first document's bucket leaves the window: within 70 s (six closed buckets of
    // 10 s and the current one).
    assert!((1..=70).contains(&retry_after), "{retry_after}");
    assert_eq!(openai.embedding_requests().len(), 1, "only the first");
    assert_eq!(gw.usage_events().len(), 1, "only the first is metered");
    assert_eq!(counted(&gw, "acme", "m").await, (a as i64, 0));
    // The refused document's storage claim was given back, and it is not listed.
    assert_eq!(charged(&gw, "acme").await, 1);
    let list = gw.call("acme", Method::GET, "/v1/documents", None).await;
    assert_eq!(ids(&list.json()), ["first"]);

    // In a batch the refusal is the document's own result; a document that fits is stored.
    let small = words(10);
    let res = post(
        &gw,
        "acme",
        json!({"documents": [doc("small", &small), doc("second", &second)]}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        outcomes(&res.json()),
        [
            outcome("small", "stored", ""),
            outcome("second", "failed", "rate_limit_exceeded")
        ]
    );
    assert_eq!(openai.embedding_requests().len(), 2);
    assert_eq!(charged(&gw, "acme").await, 2);
}

#[tokio::test]
async fn an_ingests_embedding_tokens_are_counted_in_the_tenants_limiter_exactly_and_no_request() {
    let (openai, _anthropic, gw) = openai_gateway(LimitOverrides::default()).await;
    let texts = [
        words(40),
        "Refunds are free within a day.".to_owned(),
        words(7),
    ];
    let batch: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| doc(&format!("d{i}"), t))
        .collect();
    let res = post(&gw, "acme", json!({"documents": batch})).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["stored"], 3);
    assert_eq!(openai.embedding_requests().len(), 3);

    let events = gw.usage_events();
    assert_eq!(events.len(), 3);
    let metered: u64 = events.iter().map(|e| e.usage.total()).sum();
    assert_eq!(metered, tokens_of(&texts), "the provider's counts");
    // Reserved before each call, reconciled in the usage write: the counters hold exactly the
    // metered tokens, in the minute and the day, and embeddings count no request.
    assert_eq!(counted(&gw, "acme", "m").await, (metered as i64, 0));
    assert_eq!(counted(&gw, "acme", "h").await, (metered as i64, 0));
}

#[tokio::test]
async fn embeddings_do_not_count_toward_requests_per_minute() {
    let (openai, _anthropic, gw) = openai_gateway(LimitOverrides {
        requests_per_minute: Some(1),
        ..LimitOverrides::default()
    })
    .await;
    let batch: Vec<Value> = (0..5)
        .map(|i| doc(&format!("d{i}"), &format!("document number {i}")))
        .collect();
    let res = post(&gw, "acme", json!({"documents": batch})).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["stored"], 5);
    let res = post(&gw, "acme", doc("one-more", "and one more")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(counted(&gw, "acme", "m").await.1, 0);

    // The tenant's one request per minute is still there for a chat call, and only one.
    let chat = gw
        .chat("acme", tollgate_tests::harness::chat_body("gpt-4o", "hi"))
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let chat = gw
        .chat(
            "acme",
            tollgate_tests::harness::chat_body("gpt-4o", "again"),
        )
        .await;
    assert_eq!(chat.status, 429, "{}", chat.text());
    assert!(
        chat.text().contains("requests per minute (RPM)"),
        "{}",
        chat.text()
    );
    assert_eq!(openai.requests().len(), 1);
}

/// Chunks of 8 tokens and a document of 600 of them: three upstream requests (256, 256, 88).
fn six_hundred_chunks() -> (IngestLimits, String, Vec<String>) {
    let limits = three_chunk_limits();
    let text = words(4_800);
    let chunks = chunk_text(&text, limits.chunk);
    assert_eq!(chunks.len(), 600);
    (limits, text, chunks)
}

fn request_sizes(openai: &OpenAiStandIn) -> Vec<usize> {
    openai
        .embedding_requests()
        .iter()
        .map(|r| r.body["input"].as_array().unwrap().len())
        .collect()
}

#[tokio::test]
async fn a_long_document_goes_upstream_256_chunks_at_a_time_and_is_metered_once() {
    let (openai, _anthropic, mut gw) = openai_gateway(LimitOverrides::default()).await;
    let (limits, text, chunks) = six_hundred_chunks();
    gw.ingest.ingest.limits = limits;
    let res = post(&gw, "acme", doc("long", &text)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(request_sizes(&openai), [256, 256, 88]);
    let events = gw.usage_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].usage.prompt_tokens, tokens_of(&chunks));
    assert_eq!(events[0].attempts, 3);
    assert_eq!(
        counted(&gw, "acme", "m").await,
        (tokens_of(&chunks) as i64, 0)
    );
    assert_eq!(chunks_of(&gw, "acme").await, 600);
}

#[tokio::test]
async fn a_failed_second_request_still_meters_the_first_requests_tokens() {
    let (openai, _anthropic, mut gw) = openai_gateway(LimitOverrides::default()).await;
    let (limits, text, chunks) = six_hundred_chunks();
    gw.ingest.ingest.limits = limits;
    openai.push_embeddings(Behavior::default_reply());
    openai.push_embeddings(Behavior::Error {
        status: 400,
        message: "this batch is refused".into(),
    });
    let res = post(&gw, "acme", doc("long", &text)).await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(res.json()["error"]["code"], "upstream_rejected");
    assert_eq!(
        request_sizes(&openai),
        [256, 256],
        "nothing after the failure"
    );

    // One event: the first request's billed tokens, marked failed with the error's type.
    let first = tokens_of(&chunks[..256]);
    let events = gw.usage_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert!(event.request_id.as_str().ends_with("-doc0"));
    assert_eq!(event.usage.prompt_tokens, first);
    assert_eq!(event.usage_source, UsageSource::Provider);
    assert!(!event.success);
    assert_eq!(event.error_type, Some(ErrorKind::InvalidRequest));
    assert!(event.cost_usd > rust_decimal::Decimal::ZERO);
    assert_eq!(event.attempts, 2);
    // The reservation is settled to those tokens: the failed request's share and the rest
    // came back.
    assert_eq!(counted(&gw, "acme", "m").await, (first as i64, 0));
    assert_eq!(counted(&gw, "acme", "h").await, (first as i64, 0));
    // Nothing was indexed and the storage claim was given back.
    assert_eq!(chunks_of(&gw, "acme").await, 0);
    assert_eq!(charged(&gw, "acme").await, 0);
    // The request's metric carries what was spent.
    let metric = gw
        .request_metrics()
        .into_iter()
        .rev()
        .find(|m| m.function == "ingest")
        .unwrap();
    assert_eq!(metric.usage.prompt_tokens, first);
}

#[tokio::test]
async fn a_retried_request_resends_only_its_own_chunks() {
    let (openai, _anthropic, mut gw) = openai_gateway(LimitOverrides::default()).await;
    let (limits, text, chunks) = six_hundred_chunks();
    gw.ingest.ingest.limits = limits;
    openai.push_embeddings(Behavior::default_reply());
    openai.push_embeddings(Behavior::status(500));
    let res = post(&gw, "acme", doc("long", &text)).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(request_sizes(&openai), [256, 256, 256, 88]);
    let sent: Vec<String> = openai
        .embedding_requests()
        .iter()
        .skip(1)
        .flat_map(|r| r.body["input"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sent[..256],
        chunks[256..512],
        "the retry carried the second batch"
    );
    let events = gw.usage_events();
    assert_eq!(events.len(), 1);
    assert!(events[0].success);
    assert_eq!(events[0].usage.prompt_tokens, tokens_of(&chunks));
    assert_eq!(events[0].attempts, 4);
    assert_eq!(
        counted(&gw, "acme", "m").await,
        (tokens_of(&chunks) as i64, 0)
    );
}

#[tokio::test]
async fn an_embedding_running_at_the_deadline_is_cut_and_metered_and_later_documents_are_not_started()
 {
    let (openai, _anthropic, mut gw) = openai_gateway(LimitOverrides::default()).await;
    gw.ingest.deadline_margin = Duration::from_millis(1_000);
    openai.push_embeddings(Behavior::Delay(Duration::from_secs(6)));
    let body = json!({"documents": [
        doc("slow", "Rockets are reusable."),
        doc("later", "Boosters land on ships."),
    ]});
    let mut req = http::Request::builder()
        .method(Method::POST)
        .uri("/v1/documents")
        .header("authorization", format!("Bearer {}", gw.key("acme")))
        .body(bytes::Bytes::from(body.to_string()))
        .unwrap();
    // The invocation times out in 2.5 s; embedding calls must end 1 s before, sooner than
    // the harness's 2 s provider timeout.
    req.extensions_mut()
        .insert(tollgate::lambda::PlatformDeadline(
            std::time::SystemTime::now() + Duration::from_millis(2_500),
        ));
    let started = std::time::Instant::now();
    let res = gw.send(req).await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(2_000), "{elapsed:?}");
    assert_eq!(res.status, 200, "{}", res.text());
    let data = res.json()["data"].clone();
    for n in 0..2 {
        assert_eq!(data[n]["error"]["code"], "upstream_timeout", "{data}");
    }
    assert_eq!(
        openai.embedding_requests().len(),
        1,
        "the second never started"
    );

    // The cut request may have been billed: metered at its estimate, which stays charged.
    let events = gw.usage_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.usage_source, UsageSource::Estimated);
    assert_eq!(event.error_type, Some(ErrorKind::Timeout));
    assert!(event.usage.prompt_tokens > 0 && event.cost_usd > rust_decimal::Decimal::ZERO);
    assert_eq!(
        counted(&gw, "acme", "m").await,
        (event.usage.total() as i64, 0)
    );
    assert_eq!(chunks_of(&gw, "acme").await, 0);
}

#[tokio::test]
async fn a_request_the_provider_may_have_billed_is_metered_at_its_estimate() {
    let (openai, _anthropic, mut gw) = openai_gateway(LimitOverrides::default()).await;
    let (limits, text, chunks) = six_hundred_chunks();
    gw.ingest.ingest.limits = limits;
    openai.push_embeddings(Behavior::default_reply());
    // A 2xx that cannot be read: billed upstream, so never re-sent.
    openai.push_embeddings(Behavior::Malformed);
    let res = post(&gw, "acme", doc("long", &text)).await;
    assert_eq!(res.status, 502, "{}", res.text());
    assert_eq!(request_sizes(&openai), [256, 256]);
    let spent = tokens_of(&chunks[..512]);
    let events = gw.usage_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].usage.prompt_tokens, spent);
    assert_eq!(events[0].usage_source, UsageSource::Estimated);
    assert_eq!(events[0].error_type, Some(ErrorKind::UpstreamError));
    // The request's metrics line says its usage is (partly) an estimate too.
    let line = gw.request_metrics().pop().unwrap();
    assert_eq!(
        (line.function, line.usage_source),
        ("ingest", UsageSource::Estimated)
    );
    assert_eq!(counted(&gw, "acme", "m").await, (spent as i64, 0));
    assert_eq!(chunks_of(&gw, "acme").await, 0);
}
