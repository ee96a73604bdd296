//! Ingest: tenant documents → chunks → embeddings → the vector index, scoped to the
//! authenticated tenant, with per-document results so one bad document never loses the rest.
//!
//! Bounds: documents per request, bytes and chunks per document ([`IngestLimits`]), the title
//! and metadata (`domain::documents`), and the tenant's storage quota in chunks, charged by a
//! conditional write before a document is embedded (`domain::storage`), so parallel ingests
//! cannot pass it together. Storing or deleting one document reads only that document's entry
//! and the tenant's counter. `GET /v1/documents` is paginated by id ([`parse_list_query`]).
//!
//! Spend: a document's embedding tokens (its chunks, as the gateway counts them) are reserved
//! against the tenant's tokens per minute and per day and the embedding model's upstream quota
//! before anything is embedded, tokens only (a batch of documents is one client request, not
//! one per document, toward requests per minute). The chunks go upstream
//! [`Embedder::max_batch`] at a time, each request retried on its own, so a failed request
//! neither re-sends nor loses the ones before it: the document's one usage event meters what
//! the provider billed and settles the reservation in the same write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::retry::RetryPolicy;
use crate::domain::chunking::{ChunkSpec, chunk_text};
use crate::domain::documents::{
    Chunk, DocumentCursor, DocumentId, DocumentPage, DocumentRecord, parse_metadata, parse_title,
};
use crate::domain::ids::{RequestId, TenantId};
use crate::domain::pricing::ModelPrice;
use crate::domain::storage::{Claim, ClaimRefused, DocumentEntry};
use crate::domain::tenant::{ProviderKind, TenantConfig, Tier};
use crate::domain::usage::{TokenUsage, UsageSource};
use crate::error::{DocumentRejection, GatewayError};
use crate::ports::metrics::RequestMetrics;
use crate::ports::provider::{ProviderError, ProviderErrorKind};
use crate::ports::store::{ClaimOutcome, DocumentStore};
use crate::ports::vector::{Embedder, Embeddings, IndexReadiness, IndexedChunk, VectorIndex};
use crate::ports::{Clock, MetricsSink, UsageSink};
use crate::service::catalog::OperatorCatalog;
use crate::tokenizer::count_tokens;

use super::caller::{Caller, Refused};
use super::context::RequestContext;
use super::embedding_usage::{EmbeddingCall, EmbeddingFailure};
use super::limiter::{self, Demand, Limiter, Reservation, Scope, oversized};

/// Limits that keep one request bounded.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Documents in one request; more is a 400 for the whole request.
    pub max_documents: usize,
    /// Bytes of one document's `text`; more fails that document (413).
    pub max_document_bytes: usize,
    /// Chunks one document may make; more fails that document (413).
    pub max_chunks_per_document: usize,
    /// How documents are cut into chunks.
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

/// The document routes (`POST`, `GET` and `DELETE /v1/documents`): everything they need, and
/// nothing else (no response cache, conversations or profiles).
#[derive(Clone)]
pub struct IngestService {
    /// Document entries and each tenant's storage counter: claims, commits, removals, pages.
    pub documents: Arc<dyn DocumentStore>,
    /// Where the chunks and their vectors live, scoped by tenant.
    pub index: Arc<dyn VectorIndex>,
    /// Turns chunks into vectors; its model is priced from `catalog`.
    pub embedder: Arc<dyn Embedder>,
    /// Where each document's usage event goes, with its limiter settlement in the same write.
    pub usage: Arc<dyn UsageSink>,
    /// Embedding prices, read on first use.
    pub catalog: Arc<OperatorCatalog>,
    /// Each request's one metrics line, and a usage event that could not be stored.
    pub metrics: Arc<dyn MetricsSink>,
    /// The time of usage events, document versions, storage claims and removals, the
    /// limiter's windows and metrics.
    pub clock: Arc<dyn Clock>,
    /// Retries of a failed embedding request, each batch on its own.
    pub retry: RetryPolicy,
    /// What one request and one document may hold.
    pub limits: IngestLimits,
    /// The collection is created on first use, once per process.
    pub ready: IndexReadiness,
    /// Holds each document's embedding tokens against the tenant's limits and the upstream
    /// quota before the call (the same counters chat uses).
    pub limiter: Arc<Limiter>,
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

/// One document's outcome. A failure carries the error a request of that document alone gets
/// (its status, code and message), in the OpenAI error shape.
#[derive(Debug, Serialize)]
pub struct DocumentResult {
    /// The id as sent, or the one generated for a document sent without one; `None` for a
    /// document sent without one that failed before it was given one.
    pub id: Option<String>,
    /// `stored` or `failed`.
    pub status: &'static str,
    /// How many chunks a stored document was split into; `None` when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    /// Why the document failed; `None` when it was stored.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "error_object"
    )]
    pub error: Option<GatewayError>,
}

/// Rendered by the one error renderer, so a batch entry and a single document's error response
/// say the same thing.
fn error_object<S: serde::Serializer>(
    error: &Option<GatewayError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    error
        .as_ref()
        .map(|e| e.to_body().error)
        .serialize(serializer)
}

/// The body of a `POST /v1/documents` that did not fail as a whole.
#[derive(Debug, Serialize)]
pub struct IngestReport {
    /// Always `list`.
    pub object: &'static str,
    /// One result per document, in the order sent.
    pub data: Vec<DocumentResult>,
    /// Documents stored.
    pub stored: usize,
    /// Documents that failed.
    pub failed: usize,
}

fn rejected(reason: DocumentRejection, message: impl Into<String>) -> GatewayError {
    GatewayError::DocumentRejected {
        reason,
        message: message.into(),
    }
}

/// What a request has spent so far, for its metrics record (also when it fails later).
struct Spent {
    tenant: Option<TenantId>,
    usage: TokenUsage,
    cost: rust_decimal::Decimal,
    /// `none` until a document is metered; `estimated` once any document's event is.
    usage_source: UsageSource,
}

impl Spent {
    /// Nothing spent yet, by `tenant` (if known).
    fn by(tenant: Option<TenantId>) -> Self {
        Self {
            tenant,
            usage: TokenUsage::default(),
            cost: rust_decimal::Decimal::ZERO,
            usage_source: UsageSource::None,
        }
    }

    fn add(&mut self, usage: TokenUsage, cost: rust_decimal::Decimal, source: UsageSource) {
        self.usage.prompt_tokens += usage.prompt_tokens;
        self.cost += cost;
        self.usage_source = match (self.usage_source, source) {
            (UsageSource::Estimated, _) | (_, UsageSource::Estimated) => UsageSource::Estimated,
            (UsageSource::Provider, _) | (_, UsageSource::Provider) => UsageSource::Provider,
            _ => UsageSource::None,
        };
    }
}

/// What every document of one request shares.
#[derive(Clone, Copy)]
struct Shared<'a> {
    tenant: &'a TenantId,
    config: &'a TenantConfig,
    /// The embedding model's price; `None` fails each document before it is embedded.
    price: Option<&'a ModelPrice>,
    /// When embedding calls must be over (the Lambda deadline less the metering margin).
    deadline: Option<tokio::time::Instant>,
}

impl IngestService {
    async fn ensure_ready(&self) -> Result<(), GatewayError> {
        self.ready
            .ensure(self.index.as_ref(), self.embedder.dimensions())
            .await
            .map_err(GatewayError::from)
    }

    /// `POST /v1/documents`: one document object, or `{"documents": [...]}`.
    ///
    /// A batch answers with every document's result (a bad document never loses the good
    /// ones). A single document that cannot be stored fails the request with its own error
    /// (400, 413, 403, the tenant's 429 or 400 `request_too_large`, or the 429/5xx of the
    /// embedder or index), as a client of one document expects. Exactly one metrics record per
    /// request, with the status the client gets.
    ///
    /// Embedding calls end by `deadline` (`tollgate::lambda::call_deadline`; `None` outside
    /// Lambda): a call cut there is metered at its estimate, and documents not started by then
    /// fail with 504 `upstream_timeout` (send them again), so the function is never stopped
    /// with a call unmetered.
    pub async fn ingest(
        &self,
        ctx: &RequestContext,
        caller: &Caller,
        body: &[u8],
    ) -> Result<IngestReport, GatewayError> {
        let mut spent = Spent::by(Some(caller.tenant.clone()));
        let result = self.ingest_documents(ctx, caller, body, &mut spent).await;
        self.report(ctx, &spent, result.as_ref().err());
        result
    }

    /// Records an upload that had no caller (its key refused, its tenant disabled): its
    /// metrics record and log line, as for any refused upload.
    pub fn refused(&self, ctx: &RequestContext, refused: &Refused) {
        self.report(
            ctx,
            &Spent::by(refused.tenant.clone()),
            Some(&refused.error),
        );
    }

    /// The request's one metrics record (and its log line when it failed).
    fn report(&self, ctx: &RequestContext, spent: &Spent, error: Option<&GatewayError>) {
        if let Some(err) = error {
            log_failure(&ctx.request_id, spent.tenant.as_ref(), None, err);
        }
        self.metrics.request(&RequestMetrics {
            timestamp: self.clock.now(),
            function: "ingest",
            request_id: ctx.request_id.to_string(),
            tenant_id: spent.tenant.as_ref().map(TenantId::to_string),
            model: Some("embeddings".into()),
            model_served: None,
            provider: Some(self.embedder.kind().as_str()),
            status: error.map_or(200, |e| e.status().as_u16()),
            latency_ms: ctx.started.elapsed().as_secs_f64() * 1000.0,
            provider_latency_ms: None,
            usage: spent.usage,
            usage_source: spent.usage_source,
            cost_usd: spent.cost,
            error_type: error.map(GatewayError::kind),
            streamed: false,
            cache_hit: None,
            attempts: 1,
        });
    }

    async fn ingest_documents(
        &self,
        ctx: &RequestContext,
        caller: &Caller,
        body: &[u8],
        spent: &mut Spent,
    ) -> Result<IngestReport, GatewayError> {
        let (request_id, deadline) = (&ctx.request_id, ctx.deadline);
        let (tenant, config) = (&caller.tenant, &caller.config);
        let (documents, batch) = parse_documents(body, self.limits.max_documents)?;
        self.ensure_ready().await?;
        let catalog = self.catalog.get().await?;
        let shared = Shared {
            tenant,
            config,
            price: catalog
                .prices
                .lookup(self.embedder.kind(), self.embedder.model()),
            deadline,
        };
        let mut data = Vec::with_capacity(documents.len());
        for (n, doc) in documents.into_iter().enumerate() {
            let (id, outcome) = match doc {
                Ok(doc) if past(deadline) => (doc.id, Err(out_of_time(self.embedder.kind()))),
                Ok(doc) => match parse_id(doc.id.as_deref()) {
                    Ok(id) => {
                        let call_id = RequestId::from_upstream(&format!("{request_id}-doc{n}"));
                        let shown = Some(id.to_string());
                        let outcome = self.store_document(&shared, &call_id, id, doc, spent).await;
                        (shown, outcome)
                    }
                    Err(err) => (doc.id, Err(err)),
                },
                Err((id, err)) => (id, Err(err)),
            };
            data.push(match outcome {
                Ok(chunks) => DocumentResult {
                    id,
                    status: "stored",
                    chunks: Some(chunks),
                    error: None,
                },
                Err(err) => {
                    if batch {
                        log_failure(request_id, Some(tenant), Some(n), &err);
                    }
                    DocumentResult {
                        id,
                        status: "failed",
                        chunks: None,
                        error: Some(err),
                    }
                }
            });
        }
        // A request of one document fails with that document's error.
        if !batch && let Some(err) = data.first_mut().and_then(|r| r.error.take()) {
            return Err(err);
        }
        let stored = data.iter().filter(|r| r.error.is_none()).count();
        Ok(IngestReport {
            object: "list",
            failed: data.len() - stored,
            stored,
            data,
        })
    }

    /// Checks, claims storage for, embeds, meters and indexes one document; returns its number
    /// of chunks. What the embedding cost is added to `spent` as soon as it is metered.
    ///
    /// The document's chunks are charged to the tenant's storage quota by a conditional write
    /// before anything is embedded (`domain::storage`): parallel ingests cannot pass the quota
    /// together. A claim that stores nothing is released; one whose index write failed keeps
    /// its charge, because the index may hold either version.
    async fn store_document(
        &self,
        shared: &Shared<'_>,
        call_id: &RequestId,
        id: DocumentId,
        doc: NewDocument,
        spent: &mut Spent,
    ) -> Result<u32, GatewayError> {
        let Shared { tenant, config, .. } = *shared;
        if doc.text.trim().is_empty() {
            return Err(rejected(
                DocumentRejection::Empty,
                "`text` must not be empty",
            ));
        }
        if doc.text.len() > self.limits.max_document_bytes {
            return Err(rejected(
                DocumentRejection::TooLarge,
                format!(
                    "`text` is {} bytes; the limit is {}",
                    doc.text.len(),
                    self.limits.max_document_bytes
                ),
            ));
        }
        let title = parse_title(doc.title)?;
        let metadata = parse_metadata(doc.metadata)?;
        let texts = chunk_text(&doc.text, self.limits.chunk);
        if texts.len() > self.limits.max_chunks_per_document {
            return Err(rejected(
                DocumentRejection::TooManyChunks,
                format!(
                    "the document makes {} chunks; the limit is {}",
                    texts.len(),
                    self.limits.max_chunks_per_document
                ),
            ));
        }
        // Tokens as the gateway counts them: what is reserved before the call, and refused
        // outright (before any write) when the document alone exceeds the tenant's limit.
        let tokens: u64 = texts.iter().map(|t| count_tokens(t) as u64).sum();
        if let Some((limit, kind)) = oversized(config.effective_limits(), tokens) {
            return Err(GatewayError::RequestTooLarge {
                message: format!(
                    "embedding this document needs {tokens} tokens, more than the tenant's limit of {limit} {}; split it into smaller documents",
                    kind.describe()
                ),
                param: "text",
            });
        }
        let (claim, before) = self
            .claim_storage(tenant, config, &id, texts.len() as u64)
            .await?;
        let new = NewVersion {
            id: &id,
            title,
            metadata,
            bytes: doc.text.len() as u64,
            tokens,
        };
        let failed = match self
            .embed_and_index(shared, call_id, new, texts, spent)
            .await
        {
            Ok(record) => {
                let settlement = claim.commit(u64::from(record.chunks));
                if self.documents.commit_document(&record, &settlement).await? {
                    return Ok(record.chunks);
                }
                // The lease expired and another request took the id: its version wins.
                return Err(GatewayError::DocumentBusy { id: id.to_string() });
            }
            Err(Failed::BeforeIndex(err)) => (err, claim.release(&before)),
            Err(Failed::InIndex(err)) => (err, claim.abandon()),
        };
        let (err, settlement) = failed;
        if let Err(release) = self
            .documents
            .release_document(tenant, &id, &settlement)
            .await
        {
            // The document's error is the answer; its charge stays held until the lease
            // expires and the id is stored or deleted again (an overcount, never an undercount).
            tracing::warn!(tenant_id = tenant.as_str(), error = %release, "storage claim not released");
        }
        Err(err)
    }

    /// Charges `chunks` for document `id` to the tenant's storage, within its quota (the
    /// tenant's override or its tier's). Returns the claim and the entry as it was before.
    async fn claim_storage(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        id: &DocumentId,
        chunks: u64,
    ) -> Result<(Claim, DocumentEntry), GatewayError> {
        let quota = config
            .limits
            .storage_chunks
            .unwrap_or_else(|| storage_quota(config.tier));
        let exceeded = || {
            rejected(
                DocumentRejection::StorageQuotaExceeded,
                format!(
                    "storing {chunks} more chunks would exceed the {} tier's quota of {quota} chunks; delete documents first",
                    config.tier.as_str()
                ),
            )
        };
        let busy = || GatewayError::DocumentBusy { id: id.to_string() };
        for _ in 0..CLAIM_ATTEMPTS {
            let slot = self.documents.storage_slot(tenant, id).await?;
            // Only a tenant's first claim counts the index: it creates the counter.
            let seed = match slot.counter {
                Some(_) => 0,
                None => self.index.count(tenant).await?,
            };
            let claim = slot
                .claim(chunks, quota, seed, self.clock.now())
                .map_err(|refused| match refused {
                    ClaimRefused::Busy => busy(),
                    ClaimRefused::QuotaExceeded => exceeded(),
                })?;
            match self.documents.claim_document(tenant, id, &claim).await? {
                ClaimOutcome::Claimed => return Ok((claim, slot.entry)),
                ClaimOutcome::QuotaExceeded => return Err(exceeded()),
                ClaimOutcome::Changed => continue,
            }
        }
        Err(busy())
    }

    /// Embeds, meters and indexes one document's chunks; returns the record to commit.
    async fn embed_and_index(
        &self,
        shared: &Shared<'_>,
        call_id: &RequestId,
        new: NewVersion<'_>,
        texts: Vec<String>,
        spent: &mut Spent,
    ) -> Result<DocumentRecord, Failed> {
        let Shared {
            tenant,
            config,
            price,
            deadline,
        } = *shared;
        let NewVersion {
            id,
            title,
            metadata,
            bytes,
            tokens,
        } = new;
        let model = self.embedder.model();
        let Some(price) = price else {
            return Err(GatewayError::PriceMissing {
                model: "embeddings".into(),
                provider_model: model.to_owned(),
            }
            .into());
        };
        let demand = Demand::worst_case(price, tokens, 0);
        let reservation = self.reserve(call_id, tenant, config, demand).await?;

        let provider_started = Instant::now();
        let (embedded, attempts, failure) = self
            .embed_in_batches(&texts, deadline, reservation.pool_key)
            .await;
        let metered = failure.as_ref().map(|(_, f)| *f);
        let usage = EmbeddingCall::metered(&embedded, metered.as_ref());
        let cost = price.cost(&usage);
        // The reservation is settled to what was metered: a failed request's share comes
        // back (unless it may have been billed), and so does everything after it.
        let call = EmbeddingCall {
            id: call_id.clone(),
            tenant,
            requested: "embeddings",
            provider: self.embedder.kind(),
            embedded: &embedded,
            cost,
            started: provider_started,
            attempts,
            at: self.clock.now(),
            failure: metered,
            cache_hit: false,
            user: None,
        };
        spent.add(usage, cost, call.usage_source());
        call.record_reconciled(
            self.usage.as_ref(),
            self.metrics.as_ref(),
            &reservation.reconcile(limiter::Spent {
                tokens: usage.total(),
                cost,
            }),
        )
        .await;
        if let Some((err, _)) = failure {
            return Err(Failed::BeforeIndex(err));
        }

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
                    metadata: metadata.clone(),
                },
                vector,
            })
            .collect();
        let count = chunks.len() as u32;
        self.index
            .replace_document(tenant, id, chunks)
            .await
            .map_err(|e| Failed::InIndex(e.into()))?;
        Ok(DocumentRecord {
            tenant_id: tenant.clone(),
            document_id: id.clone(),
            title,
            chunks: count,
            bytes,
            metadata,
            updated_at: self.clock.now(),
        })
    }

    /// Reserves `tokens` for one document's embeddings, tokens only (see the module docs). A
    /// limiter that cannot decide fails the document closed (503): nothing is embedded
    /// without a reservation.
    async fn reserve(
        &self,
        call_id: &RequestId,
        tenant: &TenantId,
        config: &TenantConfig,
        demand: Demand,
    ) -> Result<Reservation, GatewayError> {
        let route = (self.embedder.kind(), self.embedder.model());
        let unavailable = |err: crate::ports::store::StoreError| {
            tracing::error!(request_id = %call_id, tenant_id = %tenant, error = %err, "rate limiter unavailable; document refused");
            GatewayError::LimiterUnavailable
        };
        let now = self.clock.now().timestamp();
        let scope = Scope::of(tenant, config, None);
        let snapshot = self
            .limiter
            .snapshot(&scope, &[route], now)
            .await
            .map_err(unavailable)?;
        self.limiter
            .reserve_tokens(&scope, &snapshot, demand, route)
            .await
            .map_err(unavailable)?
    }

    /// Embeds `texts` one upstream request ([`Embedder::max_batch`] texts) at a time, each
    /// retried on its own. Stops at the first request that fails for good and returns what the
    /// requests before it returned, the attempts made, and the failure (with the tokens of the
    /// failed request when the provider may have billed them). A request still running at
    /// `deadline` is cut there and counted as possibly billed; none starts after it.
    async fn embed_in_batches(
        &self,
        texts: &[String],
        deadline: Option<tokio::time::Instant>,
        pool_key: Option<u16>,
    ) -> (Embeddings, u32, Option<(GatewayError, EmbeddingFailure)>) {
        let mut embedded = Embeddings {
            vectors: Vec::with_capacity(texts.len()),
            prompt_tokens: 0,
            model: self.embedder.model().to_owned(),
        };
        let mut attempts = 0;
        for batch in texts.chunks(self.embedder.max_batch().max(1)) {
            let (result, tries) = match deadline {
                _ if past(deadline) => (Err(deadline_error(self.embedder.kind(), false)), 0),
                Some(at) => tokio::time::timeout_at(
                    at,
                    self.retry.run(|| self.embedder.embed(batch, pool_key)),
                )
                .await
                .unwrap_or_else(|_| (Err(deadline_error(self.embedder.kind(), true)), 1)),
                None => {
                    self.retry
                        .run(|| self.embedder.embed(batch, pool_key))
                        .await
                }
            };
            attempts += tries;
            match result {
                Ok(part) => {
                    embedded.vectors.extend(part.vectors);
                    embedded.prompt_tokens += part.prompt_tokens;
                    embedded.model = part.model;
                }
                Err(err) => {
                    let failure = EmbeddingFailure::of(&err, batch);
                    return (embedded, attempts, Some((err.into(), failure)));
                }
            }
        }
        (embedded, attempts, None)
    }

    /// `GET /v1/documents`: one page of the tenant's documents, by id.
    pub async fn list(
        &self,
        caller: &Caller,
        query: Option<&str>,
    ) -> Result<DocumentList, GatewayError> {
        let tenant = &caller.tenant;
        let q = parse_list_query(query.unwrap_or_default())?;
        let page = self
            .documents
            .documents_page(tenant, q.cursor.as_ref(), q.limit)
            .await?;
        Ok(DocumentList::from(page))
    }

    /// `DELETE /v1/documents/{id}`: removes the document's chunks, its entry and its charge.
    pub async fn delete(&self, caller: &Caller, raw_id: &str) -> Result<bool, GatewayError> {
        let tenant = &caller.tenant;
        let id = DocumentId::parse(raw_id)
            .map_err(|m| GatewayError::invalid(m, Some("id".to_owned())))?;
        self.ensure_ready().await?;
        let busy = || GatewayError::DocumentBusy { id: id.to_string() };
        for _ in 0..CLAIM_ATTEMPTS {
            let slot = self.documents.storage_slot(tenant, &id).await?;
            let removal = slot.removal(self.clock.now()).map_err(|_| busy())?;
            // The chunks go first: an entry outliving its chunks overcounts, never the reverse.
            let removed = self
                .index
                .delete_document(tenant, &id)
                .await
                .map_err(GatewayError::from)?;
            match removal {
                None => return Ok(removed > 0),
                Some(removal) => {
                    if self
                        .documents
                        .remove_document(tenant, &id, &removal)
                        .await?
                    {
                        return Ok(true);
                    }
                }
            }
        }
        Err(busy())
    }
}

/// Reads of a document's slot before a claim or removal gives up as busy (each retry follows a
/// concurrent change to the same id or the tenant's first counter).
const CLAIM_ATTEMPTS: usize = 3;

/// A new version of a document, checked, before its chunks are embedded.
struct NewVersion<'a> {
    id: &'a DocumentId,
    title: String,
    metadata: BTreeMap<String, String>,
    bytes: u64,
    /// Its chunks' tokens, as reserved.
    tokens: u64,
}

/// Whether `deadline` has come.
fn past(deadline: Option<tokio::time::Instant>) -> bool {
    deadline.is_some_and(|at| at <= tokio::time::Instant::now())
}

/// An embedding request the function's deadline stopped: before it was sent, or while it ran
/// (then it may have been billed).
fn deadline_error(provider: ProviderKind, running: bool) -> ProviderError {
    let err = ProviderError::new(
        provider,
        ProviderErrorKind::Timeout,
        "the embedding was cut at the function's deadline",
    );
    if running { err.after_send() } else { err }
}

/// A document not started before the function's deadline.
fn out_of_time(provider: ProviderKind) -> GatewayError {
    GatewayError::from(ProviderError::new(
        provider,
        ProviderErrorKind::Timeout,
        "the function's deadline came before this document was embedded; send it again",
    ))
}

/// Where storing a document failed: before its chunks reached the index (its claim is
/// released), or in the index write (the claim keeps its charge).
enum Failed {
    BeforeIndex(GatewayError),
    InIndex(GatewayError),
}

impl From<GatewayError> for Failed {
    fn from(error: GatewayError) -> Self {
        Self::BeforeIndex(error)
    }
}

// ---------------------------------------------------------------------------------------------
// The listing
// ---------------------------------------------------------------------------------------------

/// Documents per page of `GET /v1/documents` when `limit` is not given.
pub const DEFAULT_DOCUMENTS_LIMIT: usize = 20;
/// Most documents per page of `GET /v1/documents`.
pub const MAX_DOCUMENTS_LIMIT: usize = 100;

/// A parsed `GET /v1/documents` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Where the page starts; `None` for the first page.
    pub cursor: Option<DocumentCursor>,
    /// Documents per page, 1 to [`MAX_DOCUMENTS_LIMIT`].
    pub limit: usize,
}

/// Parses `limit` (1-[`MAX_DOCUMENTS_LIMIT`], default [`DEFAULT_DOCUMENTS_LIMIT`]) and `cursor`
/// (a previous page's `next_cursor`). Unknown, repeated and empty parameters are refused, as
/// for the usage API; every mistake is a 400 naming the parameter, never quoting its value.
pub fn parse_list_query(query: &str) -> Result<ListQuery, GatewayError> {
    let invalid = |message: String, param: &str| GatewayError::invalid(message, param.to_owned());
    let mut limit = None;
    let mut cursor = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "limit" => &mut limit,
            "cursor" => &mut cursor,
            other => {
                // Names are echoed (cut short), values never.
                let shown: String = other.chars().take(64).collect();
                return Err(invalid(
                    format!("unknown parameter `{shown}`; expected one of: limit, cursor"),
                    &shown,
                ));
            }
        };
        if value.is_empty() {
            return Err(invalid(format!("`{name}` must not be empty"), &name));
        }
        if slot.replace(value.into_owned()).is_some() {
            return Err(invalid(format!("`{name}` is given more than once"), &name));
        }
    }
    let limit = match limit {
        None => DEFAULT_DOCUMENTS_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_DOCUMENTS_LIMIT).contains(n))
            .ok_or_else(|| {
                invalid(
                    format!("`limit` must be an integer from 1 to {MAX_DOCUMENTS_LIMIT}"),
                    "limit",
                )
            })?,
    };
    let cursor = cursor
        .map(|raw| {
            DocumentCursor::decode(&raw).map_err(|_| {
                invalid(
                    "`cursor` is not valid; pass the `next_cursor` of a previous page unchanged"
                        .into(),
                    "cursor",
                )
            })
        })
        .transpose()?;
    Ok(ListQuery { cursor, limit })
}

/// `GET /v1/documents`: one page, by id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentList {
    /// Always `list`.
    pub object: &'static str,
    /// The page's documents, by id.
    pub data: Vec<DocumentView>,
    /// Whether another page follows.
    pub has_more: bool,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl From<DocumentPage> for DocumentList {
    fn from(page: DocumentPage) -> Self {
        Self {
            object: "list",
            data: page.documents.into_iter().map(DocumentView::from).collect(),
            has_more: page.next.is_some(),
            next_cursor: page.next.as_ref().map(DocumentCursor::encode),
        }
    }
}

/// One document, as its tenant sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentView {
    /// The document's id within the tenant.
    pub id: DocumentId,
    /// Always `document`.
    pub object: &'static str,
    /// The title; empty when none was sent.
    pub title: String,
    /// How many chunks the document was split into.
    pub chunks: u32,
    /// Bytes of text stored.
    pub bytes: u64,
    /// The tenant's metadata, as sent.
    pub metadata: BTreeMap<String, String>,
    /// When this version was stored.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<DocumentRecord> for DocumentView {
    fn from(d: DocumentRecord) -> Self {
        Self {
            id: d.document_id,
            object: "document",
            title: d.title,
            chunks: d.chunks,
            bytes: d.bytes,
            metadata: d.metadata,
            updated_at: d.updated_at,
        }
    }
}

/// A document that is not one, with the id it gave (if any).
type Unreadable = (Option<String>, GatewayError);

/// Accepts one document or `{"documents": [...]}` (then `true`: a batch). Malformed JSON is a
/// 400 for the request; a malformed entry fails only itself.
fn parse_documents(
    body: &[u8],
    max: usize,
) -> Result<(Vec<Result<NewDocument, Unreadable>>, bool), GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid(format!("the request body is not valid JSON ({e})"), None)
    })?;
    let (entries, batch) = match value {
        Value::Object(mut map) if map.contains_key("documents") => match map.remove("documents") {
            Some(Value::Array(items)) => (items, true),
            _ => {
                return Err(GatewayError::invalid(
                    "`documents` must be an array of documents",
                    Some("documents".to_owned()),
                ));
            }
        },
        Value::Object(map) => (vec![Value::Object(map)], false),
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
    let documents = entries
        .into_iter()
        .map(|entry| {
            let id = entry.get("id").and_then(Value::as_str).map(str::to_owned);
            // Described by field and type, never by the value: the message is logged.
            serde_path_to_error::deserialize::<_, NewDocument>(&entry).map_err(|e| {
                let described = crate::wire::fields::describe(&e, &entry);
                (
                    id,
                    rejected(DocumentRejection::InvalidDocument, described.message),
                )
            })
        })
        .collect();
    Ok((documents, batch))
}

/// The document's id as sent, or a new one when it sent none.
fn parse_id(raw: Option<&str>) -> Result<DocumentId, GatewayError> {
    match raw {
        Some(raw) => DocumentId::parse(raw).map_err(|m| rejected(DocumentRejection::InvalidId, m)),
        None => Ok(DocumentId::generate()),
    }
}

/// One line per failed request, and per failed document of a batch (`document`: its position).
/// A refusal's message is not logged: it can quote the document (serde names a bad value).
fn log_failure(
    request_id: &RequestId,
    tenant: Option<&TenantId>,
    document: Option<usize>,
    err: &GatewayError,
) {
    let status = err.status().as_u16();
    let error_type = err.kind().as_str();
    if err.status().is_server_error() {
        let detail = err.detail().unwrap_or_default();
        tracing::error!(%request_id, tenant_id = tenant.map(TenantId::as_str), document, error_type, status, %err, detail, "ingest failed");
    } else {
        tracing::info!(%request_id, tenant_id = tenant.map(TenantId::as_str), document, error_type, status, "ingest refused");
    }
}
