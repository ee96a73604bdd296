//! Ingest: tenant documents → chunks → embeddings → the vector index, scoped to the
//! authenticated tenant, with per-document results so one bad document never loses the rest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::adapters::retry::RetryPolicy;
use crate::domain::chunking::{ChunkSpec, chunk_text};
use crate::domain::documents::{Chunk, DocumentId};
use crate::domain::ids::{RequestId, TenantId};
use crate::domain::pricing::ModelPrice;
use crate::domain::tenant::{TenantConfig, Tier};
use crate::domain::usage::TokenUsage;
use crate::error::GatewayError;
use crate::ports::metrics::RequestMetrics;
use crate::ports::store::{DocumentRecord, DocumentStore};
use crate::ports::vector::{Embedder, IndexedChunk, VectorIndex};
use crate::ports::{ApiKeyLookup, Clock, MetricsSink, TenantConfigSource, UsageSink};
use crate::service::catalog::OperatorCatalog;

use super::auth::authenticate;
use super::embedding_usage::EmbeddingCall;

/// Limits that keep one request bounded.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    pub max_documents: usize,
    pub max_document_bytes: usize,
    pub max_chunks_per_document: usize,
    pub chunk: ChunkSpec,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_documents: 100,
            max_document_bytes: 1 << 20,
            max_chunks_per_document: 1_000,
            chunk: ChunkSpec::default(),
        }
    }
}

/// Chunks a tenant may keep in the index, by tier.
pub fn storage_quota(tier: Tier) -> u64 {
    match tier {
        Tier::Free => 2_000,
        Tier::Pro => 200_000,
        Tier::Enterprise => 5_000_000,
    }
}

#[derive(Clone)]
pub struct IngestService {
    pub keys: Arc<dyn ApiKeyLookup>,
    pub tenants: Arc<dyn TenantConfigSource>,
    pub documents: Arc<dyn DocumentStore>,
    pub index: Arc<dyn VectorIndex>,
    pub embedder: Arc<dyn Embedder>,
    pub usage: Arc<dyn UsageSink>,
    /// Embedding prices, read on first use.
    pub catalog: Arc<OperatorCatalog>,
    pub metrics: Arc<dyn MetricsSink>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    pub limits: IngestLimits,
    /// The collection is created on first use, once per process.
    pub ready: Arc<OnceCell<()>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDocument {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    text: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// One document's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentResult {
    pub id: Option<String>,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<DocumentError>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestReport {
    pub object: &'static str,
    pub data: Vec<DocumentResult>,
    pub stored: usize,
    pub failed: usize,
}

fn failed(id: Option<String>, code: &'static str, message: impl Into<String>) -> DocumentResult {
    DocumentResult {
        id,
        status: "failed",
        chunks: None,
        error: Some(DocumentError {
            code,
            message: message.into(),
        }),
    }
}

impl IngestService {
    async fn tenant(
        &self,
        bearer: Option<&str>,
    ) -> Result<(TenantId, Arc<TenantConfig>), GatewayError> {
        let tenant = authenticate(self.keys.as_ref(), bearer).await?;
        let config = self.tenants.tenant_config(&tenant).await?.ok_or_else(|| {
            GatewayError::internal(format!("tenant {tenant} has a key but no configuration"))
        })?;
        if config.disabled {
            return Err(GatewayError::TenantDisabled);
        }
        Ok((tenant, config))
    }

    async fn ensure_ready(&self) -> Result<(), GatewayError> {
        let dims = self.embedder.dimensions();
        self.ready
            .get_or_try_init(|| async { self.index.ensure_ready(dims).await })
            .await
            .map(|_| ())
            .map_err(GatewayError::from)
    }

    /// `POST /v1/documents`: one document object, or `{"documents": [...]}`.
    pub async fn ingest(
        &self,
        request_id: &RequestId,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<IngestReport, GatewayError> {
        let started = Instant::now();
        let (tenant, config) = self.tenant(bearer).await?;
        let documents = parse_documents(body, self.limits.max_documents)?;
        self.ensure_ready().await?;
        let catalog = self.catalog.get().await?;
        let price = catalog
            .prices
            .lookup(self.embedder.kind(), self.embedder.model());
        let mut results = Vec::with_capacity(documents.len());
        let mut usage = TokenUsage::default();
        let mut cost = rust_decimal::Decimal::ZERO;
        for (n, doc) in documents.into_iter().enumerate() {
            let result = match doc {
                Ok(doc) => {
                    let call_id = RequestId::from_upstream(&format!("{request_id}-doc{n}"));
                    match self
                        .store_document(&tenant, &config, &call_id, price, doc)
                        .await
                    {
                        Ok((result, tokens, price)) => {
                            usage.prompt_tokens += tokens;
                            cost += price;
                            result
                        }
                        Err(result) => result,
                    }
                }
                Err(result) => result,
            };
            results.push(result);
        }
        let stored = results.iter().filter(|r| r.status == "stored").count();
        self.metrics.request(&RequestMetrics {
            timestamp: self.clock.now(),
            function: "ingest",
            request_id: request_id.to_string(),
            tenant_id: Some(tenant.to_string()),
            model: Some("embeddings".into()),
            model_served: None,
            provider: Some(self.embedder.kind().as_str()),
            status: 200,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            provider_latency_ms: None,
            usage,
            cost_usd: cost,
            error_type: None,
            streamed: false,
            cache_hit: None,
            attempts: 1,
        });
        Ok(IngestReport {
            object: "list",
            failed: results.len() - stored,
            stored,
            data: results,
        })
    }

    /// Chunks, embeds, meters and indexes one document. `Err` is the document's failure.
    async fn store_document(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        call_id: &RequestId,
        price: Option<&ModelPrice>,
        doc: NewDocument,
    ) -> Result<(DocumentResult, u64, rust_decimal::Decimal), DocumentResult> {
        let id = match doc.id {
            Some(raw) => DocumentId::parse(raw.clone())
                .map_err(|m| failed(Some(raw), "invalid_document_id", m))?,
            None => DocumentId::generate(),
        };
        let shown = Some(id.to_string());
        if doc.text.trim().is_empty() {
            return Err(failed(shown, "empty_document", "`text` must not be empty"));
        }
        if doc.text.len() > self.limits.max_document_bytes {
            return Err(failed(
                shown,
                "document_too_large",
                format!(
                    "`text` is {} bytes; the limit is {}",
                    doc.text.len(),
                    self.limits.max_document_bytes
                ),
            ));
        }
        if doc.metadata.len() > 32
            || doc
                .metadata
                .iter()
                .any(|(k, v)| k.len() > 128 || v.len() > 1024)
        {
            return Err(failed(
                shown,
                "invalid_metadata",
                "at most 32 metadata entries, keys up to 128 and values up to 1024 bytes",
            ));
        }
        let title = doc.title.unwrap_or_default();
        let texts = chunk_text(&doc.text, self.limits.chunk);
        if texts.len() > self.limits.max_chunks_per_document {
            return Err(failed(
                shown,
                "too_many_chunks",
                format!(
                    "the document makes {} chunks; the limit is {}",
                    texts.len(),
                    self.limits.max_chunks_per_document
                ),
            ));
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            failed(
                shown.clone(),
                "index_unavailable",
                format!("the vector index is unavailable: {e}"),
            )
        };
        let quota = config
            .limits
            .storage_chunks
            .unwrap_or_else(|| storage_quota(config.tier));
        let stored = self
            .index
            .count(tenant)
            .await
            .map_err(|e| unavailable(&e))?;
        let replaced = self
            .documents
            .documents(tenant)
            .await
            .map_err(|e| unavailable(&e))?
            .iter()
            .find(|d| d.document_id == id)
            .map_or(0, |d| u64::from(d.chunks));
        if stored - replaced.min(stored) + texts.len() as u64 > quota {
            return Err(failed(
                shown,
                "storage_quota_exceeded",
                format!(
                    "storing {} more chunks would exceed the {} tier's quota of {quota} chunks; delete documents first",
                    texts.len(),
                    config.tier.as_str()
                ),
            ));
        }
        let model = self.embedder.model();
        let Some(price) = price else {
            return Err(failed(
                shown,
                "model_price_missing",
                format!("no price is configured for the embedding model `{model}`"),
            ));
        };

        let provider_started = Instant::now();
        let (embedded, attempts) = self.retry.run(|| self.embedder.embed(&texts)).await;
        let embedded = match embedded {
            Ok(e) => e,
            Err(err) => {
                let err = GatewayError::from(err);
                return Err(failed(shown, "embedding_failed", err.to_string()));
            }
        };
        let usage = EmbeddingCall::usage(&embedded);
        let cost = price.cost(&usage);
        EmbeddingCall {
            id: call_id.clone(),
            tenant,
            provider: self.embedder.kind(),
            embedded: &embedded,
            cost,
            started: provider_started,
            attempts,
            at: self.clock.now(),
        }
        .record(self.usage.as_ref(), self.metrics.as_ref())
        .await;

        let chunks: Vec<IndexedChunk> = texts
            .into_iter()
            .zip(embedded.vectors)
            .enumerate()
            .map(|(i, (text, vector))| IndexedChunk {
                chunk: Chunk {
                    tenant_id: tenant.clone(),
                    document_id: id.clone(),
                    chunk_index: i as u32,
                    title: title.clone(),
                    text,
                    metadata: doc.metadata.clone(),
                },
                vector,
            })
            .collect();
        let count = chunks.len() as u32;
        self.index
            .replace_document(tenant, &id, chunks)
            .await
            .map_err(|e| unavailable(&e))?;
        let record = DocumentRecord {
            tenant_id: tenant.clone(),
            document_id: id.clone(),
            title,
            chunks: count,
            bytes: doc.text.len() as u64,
            metadata: doc.metadata,
            updated_at: self.clock.now(),
        };
        self.documents
            .put_document(&record)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok((
            DocumentResult {
                id: shown,
                status: "stored",
                chunks: Some(count),
                error: None,
            },
            usage.prompt_tokens,
            cost,
        ))
    }

    /// `GET /v1/documents`.
    pub async fn list(&self, bearer: Option<&str>) -> Result<Vec<DocumentRecord>, GatewayError> {
        let (tenant, _) = self.tenant(bearer).await?;
        Ok(self.documents.documents(&tenant).await?)
    }

    /// `DELETE /v1/documents/{id}`: removes the document's chunks and its record.
    pub async fn delete(&self, bearer: Option<&str>, raw_id: &str) -> Result<bool, GatewayError> {
        let (tenant, _) = self.tenant(bearer).await?;
        let id = DocumentId::parse(raw_id)
            .map_err(|m| GatewayError::invalid(m, Some("id".to_owned())))?;
        self.ensure_ready().await?;
        let removed = self
            .index
            .delete_document(&tenant, &id)
            .await
            .map_err(GatewayError::from)?;
        let existed = self.documents.delete_document(&tenant, &id).await?;
        Ok(existed || removed > 0)
    }
}

/// Accepts one document or `{"documents": [...]}`. Malformed JSON is a 400 for the request;
/// a malformed entry fails only itself.
fn parse_documents(
    body: &[u8],
    max: usize,
) -> Result<Vec<Result<NewDocument, DocumentResult>>, GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(format!("the request body is not valid JSON ({e})"), None)
    })?;
    let entries = match value {
        Value::Object(mut map) if map.contains_key("documents") => match map.remove("documents") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(GatewayError::invalid(
                    "`documents` must be an array of documents",
                    Some("documents".to_owned()),
                ));
            }
        },
        Value::Object(map) => vec![Value::Object(map)],
        _ => {
            return Err(GatewayError::invalid(
                "send a document object or {\"documents\": [...]}",
                None,
            ));
        }
    };
    if entries.is_empty() {
        return Err(GatewayError::invalid(
            "`documents` must not be empty",
            Some("documents".to_owned()),
        ));
    }
    if entries.len() > max {
        return Err(GatewayError::invalid(
            format!(
                "{} documents in one request; the limit is {max}",
                entries.len()
            ),
            Some("documents".to_owned()),
        ));
    }
    Ok(entries
        .into_iter()
        .map(|entry| {
            let id = entry.get("id").and_then(Value::as_str).map(str::to_owned);
            serde_json::from_value::<NewDocument>(entry)
                .map_err(|e| failed(id, "invalid_document", format!("{e}")))
        })
        .collect())
}
