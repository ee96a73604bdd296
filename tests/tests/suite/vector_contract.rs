//! One contract for the vector-index port, run against every backend: the embedded index and
//! the Qdrant adapter against the Qdrant gRPC stand-in on every `cargo test`, and the Qdrant
//! adapter against a real Qdrant when `TOLLGATE_TEST_QDRANT_URL` holds its gRPC URL (e.g.
//! `http://127.0.0.1:6334`; `TOLLGATE_TEST_QDRANT_API_KEY` if it needs one). Real Qdrant is
//! optional, in CI too: without the variable those tests skip and say so.
//!
//! `cargo test qdrant` selects the Qdrant variants (`qdrant_standin::`, `qdrant_real::`) and the
//! stand-in-only wire tests (`qdrant_wire::`). Each test uses a collection of its own, so the
//! tests run in parallel against one real Qdrant.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// A skipped real-Qdrant test says so on stderr.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use qdrant_client::qdrant::{
    Condition, CountPoints, DeleteCollection, DeletePoints, Filter, GetCollectionInfoRequest,
    PointId, PointStruct, PointsIdsList, PointsSelector, Query, QueryPoints,
    payload_index_params::IndexParams, points_selector::PointsSelectorOneOf,
};
use tollgate::adapters::api_key::ApiKey;
use tollgate::adapters::qdrant::QdrantIndex;
use tollgate::adapters::vector_memory::MemoryVectorIndex;
use tollgate::domain::documents::{Chunk, DocumentId};
use tollgate::domain::ids::TenantId;
use tollgate::ports::vector::{IndexError, IndexedChunk, ScoredChunk, VectorIndex};
use tollgate_tests::QdrantStandIn;

const DIMS: usize = 8;

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

fn doc(id: &str) -> DocumentId {
    DocumentId::parse(id).unwrap()
}

/// A vector along the given axes (weights), not normalised: the index does that.
fn vector(weights: &[(usize, f32)]) -> Vec<f32> {
    let mut v = vec![0.0; DIMS];
    for &(axis, w) in weights {
        v[axis] = w;
    }
    v
}

fn axis(i: usize) -> Vec<f32> {
    vector(&[(i, 1.0)])
}

fn chunk(tenant_id: &str, document: &str, index: u32, text: &str, v: Vec<f32>) -> IndexedChunk {
    IndexedChunk {
        chunk: Chunk {
            tenant_id: tenant(tenant_id),
            document_id: doc(document),
            chunk_index: index,
            title: format!("{document} title"),
            text: text.into(),
            metadata: BTreeMap::from([
                ("source".into(), format!("{document}.md")),
                ("lang".into(), "en".into()),
            ]),
        },
        vector: v,
    }
}

/// `n` chunks of one document, chunk `i` along axis `i % DIMS` with text `<prefix> <i>`.
fn chunks(tenant_id: &str, document: &str, n: u32, prefix: &str) -> Vec<IndexedChunk> {
    (0..n)
        .map(|i| {
            chunk(
                tenant_id,
                document,
                i,
                &format!("{prefix} {i}"),
                axis(i as usize % DIMS),
            )
        })
        .collect()
}

fn texts(results: &[ScoredChunk]) -> Vec<&str> {
    results.iter().map(|r| r.chunk.text.as_str()).collect()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-4
}

// ---------------------------------------------------------------------------------------------
// The contract
// ---------------------------------------------------------------------------------------------

mod contract {
    use super::*;

    pub async fn ensure_ready_is_idempotent(fixture: &Fixture) {
        let index = &*fixture.index;
        index.ensure_ready(DIMS).await.unwrap();
        index.ensure_ready(DIMS).await.unwrap();
        let (acme, faq) = (tenant("acme"), doc("faq"));
        index
            .replace_document(&acme, &faq, chunks("acme", "faq", 2, "faq"))
            .await
            .unwrap();
        // Again with data in place: nothing is lost.
        index.ensure_ready(DIMS).await.unwrap();
        assert_eq!(index.count(&acme).await.unwrap(), 2);
        // Another embedder's dimensions are refused, not silently accepted.
        let err = index.ensure_ready(DIMS * 2).await.unwrap_err();
        assert!(matches!(err, IndexError::Rejected(_)), "{err:?}");
    }

    pub async fn replaced_chunks_are_found_best_first_with_scores(fixture: &Fixture) {
        let index = &*fixture.index;
        let (acme, faq) = (tenant("acme"), doc("faq"));
        let mixed = vector(&[(0, 1.0), (1, 1.0)]);
        let uploaded = vec![
            chunk("acme", "faq", 0, "refunds take five days", axis(0)),
            chunk("acme", "faq", 1, "shipping is free", axis(1)),
            chunk("acme", "faq", 2, "refunds and shipping", mixed),
            chunk("acme", "faq", 3, "opening hours", axis(2)),
        ];
        index
            .replace_document(&acme, &faq, uploaded.clone())
            .await
            .unwrap();

        // A query that is not unit length: cosine does not care. Best first; chunks of equal
        // score come in no promised order (the port defines no tie-break, and a real Qdrant
        // returned the two orthogonal chunks either way), so the third is either of them.
        let results = index.search(&acme, &vector(&[(0, 3.0)]), 3).await.unwrap();
        let found = texts(&results);
        assert_eq!(
            found[..2],
            ["refunds take five days", "refunds and shipping"]
        );
        assert!(
            ["shipping is free", "opening hours"].contains(&found[2]),
            "{found:?}"
        );
        let scores: Vec<f32> = results.iter().map(|r| r.score).collect();
        assert!(close(scores[0], 1.0), "{scores:?}");
        assert!(
            close(scores[1], std::f32::consts::FRAC_1_SQRT_2),
            "{scores:?}"
        );
        assert!(close(scores[2], 0.0), "{scores:?}");
        // Every payload field comes back as it went in.
        assert_eq!(results[0].chunk, uploaded[0].chunk);
        assert_eq!(results[1].chunk, uploaded[2].chunk);
    }

    pub async fn reingesting_a_document_replaces_its_chunks(fixture: &Fixture) {
        let index = &*fixture.index;
        let (acme, faq) = (tenant("acme"), doc("faq"));
        index
            .replace_document(&acme, &faq, chunks("acme", "faq", 5, "old"))
            .await
            .unwrap();
        index
            .replace_document(&acme, &doc("other"), chunks("acme", "other", 1, "other"))
            .await
            .unwrap();
        assert_eq!(index.count(&acme).await.unwrap(), 6);

        // Fewer chunks the second time: the old extra ones must be gone, not just overwritten.
        index
            .replace_document(&acme, &faq, chunks("acme", "faq", 2, "new"))
            .await
            .unwrap();
        assert_eq!(index.count(&acme).await.unwrap(), 3);
        let mut all = texts(&index.search(&acme, &axis(0), 50).await.unwrap())
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        all.sort();
        assert_eq!(all, ["new 0", "new 1", "other 0"]);

        // Replacing with nothing removes the document.
        index
            .replace_document(&acme, &faq, Vec::new())
            .await
            .unwrap();
        assert_eq!(index.count(&acme).await.unwrap(), 1);
    }

    pub async fn tenants_with_identical_documents_never_see_each_other(fixture: &Fixture) {
        let index = &*fixture.index;
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let shared = doc("handbook");
        // Same document id, same chunk indexes, same vectors: only the tenant differs.
        for (t, canary) in [("acme", "CANARY-ACME"), ("globex", "CANARY-GLOBEX")] {
            let batch = (0..4)
                .map(|i| chunk(t, "handbook", i, &format!("{canary} {i}"), axis(i as usize)))
                .collect();
            index
                .replace_document(&tenant(t), &shared, batch)
                .await
                .unwrap();
        }
        for (t, own, other) in [
            (&acme, "CANARY-ACME", "CANARY-GLOBEX"),
            (&globex, "CANARY-GLOBEX", "CANARY-ACME"),
        ] {
            for q in 0..4 {
                let results = index.search(t, &axis(q), 100).await.unwrap();
                assert_eq!(results.len(), 4, "{t}: all of its own chunks, nothing more");
                for r in &results {
                    assert_eq!(&r.chunk.tenant_id, t);
                    assert!(r.chunk.text.starts_with(own), "{t} got {:?}", r.chunk.text);
                    assert!(!r.chunk.text.contains(other));
                }
                assert_eq!(results[0].chunk.text, format!("{own} {q}"));
            }
            assert_eq!(index.count(t).await.unwrap(), 4);
        }

        // Re-ingesting one tenant's copy leaves the other's alone.
        index
            .replace_document(&acme, &shared, chunks("acme", "handbook", 1, "acme v2"))
            .await
            .unwrap();
        assert_eq!(index.count(&acme).await.unwrap(), 1);
        assert_eq!(index.count(&globex).await.unwrap(), 4);
        let globex_texts = texts(&index.search(&globex, &axis(0), 10).await.unwrap())
            .iter()
            .all(|t| t.starts_with("CANARY-GLOBEX"));
        assert!(globex_texts);
    }

    pub async fn delete_document_counts_and_removes_only_that_tenants_document(fixture: &Fixture) {
        let index = &*fixture.index;
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let (a, b) = (doc("a"), doc("b"));
        index
            .replace_document(&acme, &a, chunks("acme", "a", 3, "acme a"))
            .await
            .unwrap();
        index
            .replace_document(&acme, &b, chunks("acme", "b", 2, "acme b"))
            .await
            .unwrap();
        index
            .replace_document(&globex, &a, chunks("globex", "a", 4, "globex a"))
            .await
            .unwrap();

        assert_eq!(index.delete_document(&acme, &a).await.unwrap(), 3);
        assert_eq!(index.count(&acme).await.unwrap(), 2);
        assert_eq!(
            index.count(&globex).await.unwrap(),
            4,
            "same id, other tenant"
        );
        let left = index.search(&acme, &axis(0), 10).await.unwrap();
        assert!(
            texts(&left).iter().all(|t| t.starts_with("acme b")),
            "{left:?}"
        );

        // Deleting again, or something never stored, deletes nothing.
        assert_eq!(index.delete_document(&acme, &a).await.unwrap(), 0);
        assert_eq!(
            index.delete_document(&acme, &doc("never")).await.unwrap(),
            0
        );
        assert_eq!(
            index.delete_document(&tenant("initech"), &a).await.unwrap(),
            0
        );
        assert_eq!(index.count(&globex).await.unwrap(), 4);
    }

    pub async fn count_is_per_tenant(fixture: &Fixture) {
        let index = &*fixture.index;
        let (acme, globex, initech) = (tenant("acme"), tenant("globex"), tenant("initech"));
        for (t, docs) in [(&acme, 3_u32), (&globex, 1)] {
            for d in 0..docs {
                let name = format!("doc-{d}");
                index
                    .replace_document(t, &doc(&name), chunks(t.as_str(), &name, d + 2, "x"))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(index.count(&acme).await.unwrap(), 2 + 3 + 4);
        assert_eq!(index.count(&globex).await.unwrap(), 2);
        assert_eq!(index.count(&initech).await.unwrap(), 0);
    }

    pub async fn search_returns_at_most_top_k(fixture: &Fixture) {
        let index = &*fixture.index;
        let acme = tenant("acme");
        let batch = (0..12)
            .map(|i| {
                // Decreasing similarity to axis 0 as i grows.
                let v = vector(&[(0, 12.0 - i as f32), (1, i as f32 + 1.0)]);
                chunk("acme", "many", i, &format!("many {i}"), v)
            })
            .collect();
        index
            .replace_document(&acme, &doc("many"), batch)
            .await
            .unwrap();
        let top3 = index.search(&acme, &axis(0), 3).await.unwrap();
        assert_eq!(texts(&top3), ["many 0", "many 1", "many 2"]);
        assert!(top3.windows(2).all(|w| w[0].score >= w[1].score));
        assert_eq!(index.search(&acme, &axis(0), 1).await.unwrap().len(), 1);
        assert_eq!(index.search(&acme, &axis(0), 100).await.unwrap().len(), 12);
        assert!(index.search(&acme, &axis(0), 0).await.unwrap().is_empty());
    }

    pub async fn an_empty_tenant_has_no_results_and_no_error(fixture: &Fixture) {
        let index = &*fixture.index;
        let initech = tenant("initech");
        assert!(
            index
                .search(&initech, &axis(0), 5)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(index.count(&initech).await.unwrap(), 0);
        // Also while other tenants have data.
        index
            .replace_document(&tenant("acme"), &doc("faq"), chunks("acme", "faq", 3, "x"))
            .await
            .unwrap();
        assert!(
            index
                .search(&initech, &axis(0), 5)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn bad_batches_are_rejected_and_change_nothing(fixture: &Fixture) {
        let index = &*fixture.index;
        let (acme, faq) = (tenant("acme"), doc("faq"));
        index
            .replace_document(&acme, &faq, chunks("acme", "faq", 2, "kept"))
            .await
            .unwrap();

        // A chunk of another tenant, or of another document, in the batch.
        let mut stray = chunks("acme", "faq", 1, "x");
        stray.push(chunk("globex", "faq", 1, "x", axis(1)));
        let err = index
            .replace_document(&acme, &faq, stray)
            .await
            .unwrap_err();
        assert!(matches!(err, IndexError::Rejected(_)), "{err:?}");
        let mut stray = chunks("acme", "faq", 1, "x");
        stray.push(chunk("acme", "other", 1, "x", axis(1)));
        let err = index
            .replace_document(&acme, &faq, stray)
            .await
            .unwrap_err();
        assert!(matches!(err, IndexError::Rejected(_)), "{err:?}");
        // A vector of the wrong size.
        let wrong = vec![chunk("acme", "faq", 0, "x", vec![1.0; DIMS + 1])];
        let err = index
            .replace_document(&acme, &faq, wrong)
            .await
            .unwrap_err();
        assert!(matches!(err, IndexError::Rejected(_)), "{err:?}");

        assert_eq!(index.count(&acme).await.unwrap(), 2);
        assert_eq!(index.count(&tenant("globex")).await.unwrap(), 0);
        let kept = index.search(&acme, &axis(0), 10).await.unwrap();
        assert!(
            texts(&kept).iter().all(|t| t.starts_with("kept")),
            "{kept:?}"
        );

        let err = index.search(&acme, &[1.0; DIMS - 1], 3).await.unwrap_err();
        assert!(matches!(err, IndexError::Rejected(_)), "{err:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// An index ready for a test (dimensions set), and whatever must live as long as it.
struct Fixture {
    index: Box<dyn VectorIndex>,
    _standin: Option<QdrantStandIn>,
    /// Dropped after a passing test, so a real Qdrant does not collect test collections.
    real: Option<(qdrant_client::Qdrant, String)>,
}

impl tollgate_tests::contracts::Backend for Fixture {
    /// Drops a real Qdrant's test collection.
    async fn finish(self) {
        Fixture::finish(self).await;
    }
}

impl Fixture {
    async fn ready(index: Box<dyn VectorIndex>) -> Self {
        index.ensure_ready(DIMS).await.expect("ensure_ready");
        Self {
            index,
            _standin: None,
            real: None,
        }
    }

    async fn finish(self) {
        if let Some((client, collection)) = self.real {
            client
                .delete_collection(DeleteCollection {
                    collection_name: collection,
                    ..Default::default()
                })
                .await
                .expect("drop the test collection");
        }
    }
}

fn unique_collection() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "tollgate-test-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn embedded() -> Option<Fixture> {
    Some(Fixture::ready(Box::new(MemoryVectorIndex::new())).await)
}

async fn qdrant_standin() -> Option<Fixture> {
    let standin = QdrantStandIn::start().await;
    let index = QdrantIndex::new(&standin.url(), None, unique_collection()).unwrap();
    let mut fixture = Fixture::ready(Box::new(index)).await;
    fixture._standin = Some(standin);
    Some(fixture)
}

const QDRANT_URL_VAR: &str = "TOLLGATE_TEST_QDRANT_URL";
const QDRANT_KEY_VAR: &str = "TOLLGATE_TEST_QDRANT_API_KEY";

/// The real Qdrant's gRPC URL, if one is configured. Optional even in CI (the stand-in covers
/// the adapter there), so a missing variable skips with a note rather than failing.
fn real_qdrant_url() -> Option<String> {
    match std::env::var(QDRANT_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: {QDRANT_URL_VAR} is not set (give it a Qdrant gRPC URL such as \
                 http://127.0.0.1:6334 to run the contract against a real Qdrant)"
            );
            None
        }
    }
}

async fn qdrant_real() -> Option<Fixture> {
    let url = real_qdrant_url()?;
    let key = std::env::var(QDRANT_KEY_VAR).ok().filter(|k| !k.is_empty());
    let collection = unique_collection();
    let index = QdrantIndex::new(&url, key.clone().map(ApiKey::from), &collection).unwrap();
    let mut client = qdrant_client::Qdrant::from_url(&url).skip_compatibility_check();
    if let Some(key) = key {
        client = client.api_key(key);
    }
    let mut fixture = Fixture::ready(Box::new(index)).await;
    fixture.real = Some((client.build().unwrap(), collection));
    Some(fixture)
}

tollgate_tests::contract_suite! {
    backends: [embedded, qdrant_standin, qdrant_real],
    cases: {
        ensure_ready_is_idempotent_and_refuses_other_dimensions => contract::ensure_ready_is_idempotent,
        replaced_chunks_are_found_best_first_with_cosine_scores => contract::replaced_chunks_are_found_best_first_with_scores,
        reingesting_a_document_replaces_all_its_old_chunks => contract::reingesting_a_document_replaces_its_chunks,
        tenants_with_identical_document_ids_and_vectors_never_see_each_other => contract::tenants_with_identical_documents_never_see_each_other,
        delete_document_returns_the_count_and_removes_only_that_tenants_document => contract::delete_document_counts_and_removes_only_that_tenants_document,
        count_is_per_tenant => contract::count_is_per_tenant,
        search_returns_at_most_top_k_best_first => contract::search_returns_at_most_top_k,
        search_on_an_empty_tenant_is_empty_not_an_error => contract::an_empty_tenant_has_no_results_and_no_error,
        bad_batches_are_rejected_and_change_nothing => contract::bad_batches_are_rejected_and_change_nothing,
    },
}

// ---------------------------------------------------------------------------------------------
// What only the stand-in can show: the requests on the wire, refusals, faults
// ---------------------------------------------------------------------------------------------

mod qdrant_wire {
    use super::*;

    async fn adapter() -> (QdrantStandIn, QdrantIndex, String) {
        let standin = QdrantStandIn::start().await;
        let collection = unique_collection();
        let index = QdrantIndex::new(&standin.url(), None, &collection).unwrap();
        index.ensure_ready(DIMS).await.unwrap();
        (standin, index, collection)
    }

    fn raw_client(standin: &QdrantStandIn) -> qdrant_client::Qdrant {
        qdrant_client::Qdrant::from_url(&standin.url())
            .skip_compatibility_check()
            .build()
            .unwrap()
    }

    fn status_code(err: qdrant_client::QdrantError) -> tonic::Code {
        match err {
            qdrant_client::QdrantError::ResponseError { status } => status.code(),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[tokio::test]
    async fn qdrant_every_search_count_and_delete_carries_a_must_filter_on_the_tenant() {
        let (standin, index, _) = adapter().await;
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        for t in [&acme, &globex] {
            index
                .replace_document(t, &doc("faq"), chunks(t.as_str(), "faq", 3, "x"))
                .await
                .unwrap();
            index.search(t, &axis(0), 2).await.unwrap();
            index.count(t).await.unwrap();
            index.delete_document(t, &doc("faq")).await.unwrap();
        }

        let calls = standin.point_selecting_calls();
        let methods: Vec<_> = calls.iter().map(|c| c.method).collect();
        // Per tenant: replace's delete; query; count; delete_document's count and delete.
        let per_tenant = ["delete", "query", "count", "count", "delete"];
        assert_eq!(methods, [per_tenant, per_tenant].concat());
        for (i, call) in calls.iter().enumerate() {
            let expected = if i < per_tenant.len() {
                "acme"
            } else {
                "globex"
            };
            assert_eq!(call.tenant().as_deref(), Some(expected), "{call:?}");
            let filter = call.filter.as_ref().unwrap();
            assert!(filter.should.is_empty() && filter.must_not.is_empty());
        }
        // Deletes (and delete_document's count) also name the document.
        for call in calls.iter().filter(|c| c.method == "delete") {
            assert_eq!(call.filter.as_ref().unwrap().must.len(), 2, "{call:?}");
        }
    }

    #[tokio::test]
    async fn qdrant_init_creates_the_collection_and_tenant_index_and_is_idempotent() {
        let standin = QdrantStandIn::start().await;
        let collection = unique_collection();
        let settings = tollgate_tests::harness::settings(&[
            ("TOLLGATE_QDRANT_URL", standin.url()),
            ("TOLLGATE_QDRANT_COLLECTION", collection.clone()),
            ("TOLLGATE_EMBEDDING_DIMENSIONS", "64".into()),
        ]);
        for _ in 0..2 {
            let line = tollgate::bootstrap::init_vector_index(&settings)
                .await
                .unwrap()
                .unwrap();
            assert!(
                line.contains(&collection) && line.contains("64 dimensions"),
                "{line}"
            );
        }
        let methods: Vec<_> = standin.calls().iter().map(|c| c.method).collect();
        assert_eq!(
            methods.iter().filter(|m| **m == "create").count(),
            1,
            "{methods:?}"
        );
        let info = raw_client(&standin)
            .collection_info(&collection)
            .await
            .unwrap();
        let schema = info.result.unwrap().payload_schema;
        assert!(schema.contains_key("tenant_id"), "{schema:?}");
        // Without a Qdrant URL there is nothing to set up.
        let embedded = tollgate_tests::harness::settings(&[]);
        assert!(
            tollgate::bootstrap::init_vector_index(&embedded)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn qdrant_a_long_document_is_upserted_in_batches() {
        let (standin, index, _) = adapter().await;
        let acme = tenant("acme");
        index
            .replace_document(&acme, &doc("book"), chunks("acme", "book", 600, "page"))
            .await
            .unwrap();
        let upserts: Vec<_> = standin
            .calls()
            .into_iter()
            .filter(|c| c.method == "upsert")
            .map(|c| c.points)
            .collect();
        assert_eq!(upserts, [256, 256, 88]);
        assert_eq!(index.count(&acme).await.unwrap(), 600);
    }

    #[tokio::test]
    async fn qdrant_ensure_ready_creates_a_cosine_collection_and_the_tenant_index() {
        let (standin, index, collection) = adapter().await;
        let info = raw_client(&standin)
            .collection_info(GetCollectionInfoRequest {
                collection_name: collection.clone(),
            })
            .await
            .unwrap()
            .result
            .unwrap();
        let schema = &info.payload_schema;
        let tenant_params = schema["tenant_id"].params.clone().unwrap().index_params;
        assert!(
            matches!(tenant_params, Some(IndexParams::KeywordIndexParams(p)) if p.is_tenant == Some(true)),
            "{schema:?}"
        );
        assert!(schema.contains_key("document_id"), "{schema:?}");

        // A second ensure_ready finds everything in place and creates nothing.
        let before = standin.calls().len();
        index.ensure_ready(DIMS).await.unwrap();
        let again: Vec<_> = standin.calls()[before..].iter().map(|c| c.method).collect();
        assert_eq!(again, ["collection_exists", "get"]);
    }

    #[tokio::test]
    async fn qdrant_requests_without_a_tenant_filter_are_refused() {
        let (standin, index, collection) = adapter().await;
        index
            .replace_document(&tenant("acme"), &doc("faq"), chunks("acme", "faq", 2, "x"))
            .await
            .unwrap();
        let client = raw_client(&standin);
        let by_document = Filter::must([Condition::matches("document_id", "faq".to_string())]);
        let tenant_as_should =
            Filter::should([Condition::matches("tenant_id", "acme".to_string())]);

        for filter in [None, Some(by_document.clone()), Some(tenant_as_should)] {
            let query = client
                .query(QueryPoints {
                    collection_name: collection.clone(),
                    query: Some(Query::from(axis(0))),
                    filter: filter.clone(),
                    limit: Some(5),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(status_code(query), tonic::Code::InvalidArgument);
            let count = client
                .count(CountPoints {
                    collection_name: collection.clone(),
                    filter: filter.clone(),
                    exact: Some(true),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(status_code(count), tonic::Code::InvalidArgument);
        }
        let delete_by_filter = client
            .delete_points(DeletePoints {
                collection_name: collection.clone(),
                wait: Some(true),
                points: Some(PointsSelector {
                    points_selector_one_of: Some(PointsSelectorOneOf::Filter(by_document)),
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status_code(delete_by_filter), tonic::Code::InvalidArgument);
        let delete_by_id = client
            .delete_points(DeletePoints {
                collection_name: collection.clone(),
                wait: Some(true),
                points: Some(PointsSelector {
                    points_selector_one_of: Some(PointsSelectorOneOf::Points(PointsIdsList {
                        ids: vec![PointId::from(1_u64)],
                    })),
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status_code(delete_by_id), tonic::Code::InvalidArgument);

        // Nothing was deleted, and the adapter's own requests still pass.
        assert_eq!(standin.point_count(&collection), Some(2));
        assert_eq!(index.count(&tenant("acme")).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn qdrant_an_unavailable_server_is_index_unavailable() {
        let (mut standin, index, _) = adapter().await;
        let (acme, faq) = (tenant("acme"), doc("faq"));
        standin.set_unavailable(true);
        let errors = [
            index.ensure_ready(DIMS).await.unwrap_err(),
            index
                .replace_document(&acme, &faq, chunks("acme", "faq", 1, "x"))
                .await
                .unwrap_err(),
            index.search(&acme, &axis(0), 3).await.unwrap_err(),
            index.count(&acme).await.unwrap_err(),
            index.delete_document(&acme, &faq).await.unwrap_err(),
        ];
        for err in errors {
            assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
        }
        standin.set_unavailable(false);
        assert_eq!(index.count(&acme).await.unwrap(), 0, "recovers");

        // A server that is gone: connections refused.
        standin.stop().await;
        let err = index.search(&acme, &axis(0), 3).await.unwrap_err();
        assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn qdrant_an_unreachable_url_is_unavailable_and_construction_does_not_connect() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let index = QdrantIndex::new(
            &format!("http://127.0.0.1:{port}"),
            Some(ApiKey::from("test-api-key-never-shown")),
            "nowhere",
        )
        .unwrap();
        let err = index.ensure_ready(DIMS).await.unwrap_err();
        assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
        let err = index
            .search(&tenant("acme"), &axis(0), 3)
            .await
            .unwrap_err();
        assert!(matches!(err, IndexError::Unavailable(_)), "{err:?}");
        assert!(!format!("{err}").contains("never-shown"), "{err}");
    }

    #[tokio::test]
    async fn qdrant_a_missing_collection_is_unavailable_with_a_hint() {
        let standin = QdrantStandIn::start().await;
        let index = QdrantIndex::new(&standin.url(), None, "never-created").unwrap();
        let err = index.count(&tenant("acme")).await.unwrap_err();
        assert!(
            matches!(&err, IndexError::Unavailable(m) if m.contains("tollgate init")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn qdrant_an_unreadable_payload_is_corrupt() {
        let (standin, index, collection) = adapter().await;
        // A point of acme's whose payload lacks the text (not written by Tollgate).
        raw_client(&standin)
            .upsert_points(qdrant_client::qdrant::UpsertPoints {
                collection_name: collection,
                wait: Some(true),
                points: vec![PointStruct {
                    id: Some(PointId::from(7_u64)),
                    payload: [
                        ("tenant_id".to_string(), "acme".into()),
                        ("document_id".to_string(), "faq".into()),
                        ("chunk_index".to_string(), 0_i64.into()),
                    ]
                    .into(),
                    vectors: Some(axis(0).into()),
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        let err = index
            .search(&tenant("acme"), &axis(0), 3)
            .await
            .unwrap_err();
        assert!(matches!(err, IndexError::Corrupt(_)), "{err:?}");
    }

    /// The adapter trusts the server's filtering (the retrieval service re-checks every chunk):
    /// a server that ignores the filter leaks through the adapter, so only that re-check stands
    /// between it and another tenant. (The isolation canaries' fault run exercises the re-check
    /// through the embedded index's switch, `embedded_fault_injection` below, not this one.)
    #[tokio::test]
    async fn qdrant_a_server_ignoring_the_tenant_filter_returns_other_tenants_chunks() {
        let (standin, index, _) = adapter().await;
        for t in ["acme", "globex"] {
            index
                .replace_document(&tenant(t), &doc("faq"), chunks(t, "faq", 2, t))
                .await
                .unwrap();
        }
        standin.ignore_tenant_filter_in_queries(true);
        let results = index.search(&tenant("acme"), &axis(0), 10).await.unwrap();
        assert!(
            results
                .iter()
                .any(|r| r.chunk.tenant_id == tenant("globex"))
        );
        // The filter still went out: the fault is the server's.
        assert_eq!(
            standin
                .point_selecting_calls()
                .last()
                .unwrap()
                .tenant()
                .as_deref(),
            Some("acme")
        );
    }
}

/// The embedded index's test-only fault switch, for the isolation canaries.
mod embedded_fault_injection {
    use super::*;

    #[tokio::test]
    async fn a_broken_tenant_filter_returns_other_tenants_chunks() {
        let index = MemoryVectorIndex::with_broken_tenant_filter();
        for t in ["acme", "globex"] {
            index
                .replace_document(&tenant(t), &doc("faq"), chunks(t, "faq", 2, t))
                .await
                .unwrap();
        }
        let results = index.search(&tenant("acme"), &axis(0), 10).await.unwrap();
        assert!(
            results
                .iter()
                .any(|r| r.chunk.tenant_id == tenant("globex"))
        );
        // Only search is broken: counts and deletes stay scoped.
        assert_eq!(index.count(&tenant("acme")).await.unwrap(), 2);

        let healthy = MemoryVectorIndex::new();
        for t in ["acme", "globex"] {
            healthy
                .replace_document(&tenant(t), &doc("faq"), chunks(t, "faq", 2, t))
                .await
                .unwrap();
        }
        let results = healthy.search(&tenant("acme"), &axis(0), 10).await.unwrap();
        assert!(results.iter().all(|r| r.chunk.tenant_id == tenant("acme")));
    }
}
