//! Retrieval for invoke: the tenant's own chunks, checked again before use.
//!
//! The vector index filters by tenant at the query level; this module then verifies every
//! returned chunk's `tenant_id` (defense in depth). A chunk of another tenant fails the whole
//! request closed: nothing retrieved is used, a security event is logged and an
//! `IsolationViolation` metric emitted.

use std::sync::Arc;
use std::time::Instant;

use crate::adapters::retry::RetryPolicy;
use crate::domain::chat::{Message, Role};
use crate::domain::ids::{RequestId, TenantId};
use crate::domain::pricing::ModelPrice;
use crate::error::GatewayError;
use crate::ports::vector::{Embedder, Embeddings, IndexReadiness, ScoredChunk, VectorIndex};
use crate::ports::{Clock, MetricsSink, UsageSink};
use crate::service::catalog::OperatorCatalog;
use crate::tokenizer::count_tokens;

use super::embedding_usage::{EmbeddingCall, EmbeddingFailure};
use super::limiter::{Limiter, Reservation, Spent};

/// Grounds a chat request in the tenant's documents: embeds the query, searches the index,
/// verifies every hit is the tenant's, and meters the embedding.
#[derive(Clone)]
pub struct Retriever {
    /// The tenant-scoped index the query searches.
    pub index: Arc<dyn VectorIndex>,
    /// Embeds the query; it must be the model the documents were ingested with.
    pub embedder: Arc<dyn Embedder>,
    /// Where the query embedding's usage event goes, with its limiter settlement.
    pub usage: Arc<dyn UsageSink>,
    /// Prices the query embedding.
    pub catalog: Arc<OperatorCatalog>,
    /// Isolation violations, and a usage event that could not be stored.
    pub metrics: Arc<dyn MetricsSink>,
    /// Stamps the usage event.
    pub clock: Arc<dyn Clock>,
    /// Retries of a failed query embedding.
    pub retry: RetryPolicy,
    /// A fresh deployment's first grounded request creates the collection (a tenant with no
    /// documents then simply gets no excerpts); later requests skip the check.
    pub ready: IndexReadiness,
    /// Gives back the query embedding's share of a reservation when no embedding was made.
    pub limiter: Arc<Limiter>,
}

/// What retrieval adds to a request.
#[derive(Debug, Clone)]
pub struct RetrievedContext {
    /// A system message with the excerpts, placed before the conversation.
    pub message: Message,
    /// Distinct document ids used, best first.
    pub documents: Vec<String>,
    /// The excerpts' texts (for the quality score).
    pub sources: Arc<Vec<String>>,
}

/// Every chunk must belong to `tenant`; one that does not fails the request closed.
pub fn verify_tenant(
    tenant: &TenantId,
    hits: &[ScoredChunk],
    metrics: &dyn MetricsSink,
    request_id: &RequestId,
) -> Result<(), GatewayError> {
    if let Some(foreign) = hits.iter().find(|h| &h.chunk.tenant_id != tenant) {
        tracing::error!(
            security_event = "isolation_violation",
            request_id = %request_id,
            tenant_id = %tenant,
            offending_tenant = %foreign.chunk.tenant_id,
            document_id = %foreign.chunk.document_id,
            "vector index returned another tenant's chunk; request refused"
        );
        metrics.isolation_violation("invoke", tenant.as_str());
        return Err(GatewayError::IsolationViolation);
    }
    Ok(())
}

/// Whose request a retrieval serves: the query embedding's usage event names them.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    /// The chat request's id (the embedding's event is `{id}-retrieval`).
    pub request_id: &'a RequestId,
    /// The tenant whose documents are searched.
    pub tenant: &'a TenantId,
    /// The tenant's end user, when the request named one.
    pub user: Option<&'a crate::domain::profile::UserId>,
}

impl Retriever {
    /// Embeds `query`, searches the tenant's chunks and builds the context message within
    /// `max_tokens`. The query embedding is metered as its own usage event, reconciling
    /// `share`: the part of the request's reservation admitted for it (given back whole when
    /// no embedding is made or the provider refused it; a failed call that may have been
    /// billed, such as a timeout after sending, is metered at the query's counted tokens).
    pub async fn retrieve(
        &self,
        asker: Asker<'_>,
        query: &str,
        top_k: usize,
        max_tokens: usize,
        share: Reservation,
    ) -> Result<RetrievedContext, GatewayError> {
        let Asker {
            request_id,
            tenant,
            user,
        } = asker;
        let price = match self.before_embedding().await {
            Ok(price) => price,
            Err(err) => {
                self.limiter.release(&share).await;
                return Err(err);
            }
        };
        let started = Instant::now();
        let texts = [query.to_owned()];
        let (result, attempts) = self.retry.run(|| self.embedder.embed(&texts, None)).await;
        let (embedded, failure) = match result {
            Ok(embedded) => (embedded, None),
            Err(err) => {
                let failure = EmbeddingFailure::of(&err, &texts);
                if failure.estimated_tokens == 0 {
                    // Refused before anything was made: nothing to meter, all tokens back.
                    self.limiter.release(&share).await;
                    return Err(GatewayError::from(err));
                }
                // It may have been billed: metered at its estimate, as chat is.
                let nothing = Embeddings {
                    vectors: Vec::new(),
                    prompt_tokens: 0,
                    model: self.embedder.model().to_owned(),
                };
                (nothing, Some((GatewayError::from(err), failure)))
            }
        };
        let metered = failure.as_ref().map(|(_, f)| *f);
        let usage = EmbeddingCall::metered(&embedded, metered.as_ref());
        EmbeddingCall {
            id: RequestId::from_upstream(&format!("{request_id}-retrieval")),
            tenant,
            requested: "embeddings",
            provider: self.embedder.kind(),
            embedded: &embedded,
            cost: price.cost(&usage),
            started,
            attempts,
            at: self.clock.now(),
            failure: metered,
            cache_hit: false,
            user,
        }
        .record_reconciled(
            self.usage.as_ref(),
            self.metrics.as_ref(),
            &share.reconcile(Spent {
                tokens: usage.total(),
                cost: price.cost(&usage),
            }),
        )
        .await;
        if let Some((err, _)) = failure {
            return Err(err);
        }
        let vector = embedded.vectors.into_iter().next().unwrap_or_default();
        let hits = self
            .index
            .search(tenant, &vector, top_k)
            .await
            .map_err(GatewayError::from)?;
        verify_tenant(tenant, &hits, self.metrics.as_ref(), request_id)?;
        Ok(build_context(&hits, max_tokens))
    }

    /// The query embedding's price (a chat request reserves its cost before retrieval).
    pub async fn query_price(&self) -> Result<ModelPrice, GatewayError> {
        let catalog = self.catalog.get().await?;
        catalog
            .prices
            .lookup(self.embedder.kind(), self.embedder.model())
            .cloned()
            .ok_or_else(|| GatewayError::PriceMissing {
                model: "embeddings".into(),
                provider_model: self.embedder.model().to_owned(),
            })
    }

    /// The embedding's price, and an index ready to search: nothing is embedded that cannot
    /// be billed or searched.
    async fn before_embedding(&self) -> Result<ModelPrice, GatewayError> {
        let price = self.query_price().await?;
        // Before the embedding: an index that cannot answer must not cost the tenant a call.
        self.ready
            .ensure(self.index.as_ref(), self.embedder.dimensions())
            .await
            .map_err(GatewayError::from)?;
        Ok(price)
    }
}

/// The excerpts, best first, each labelled with its document id, cut at `max_tokens`.
fn build_context(hits: &[ScoredChunk], max_tokens: usize) -> RetrievedContext {
    let mut text = String::from(
        "Answer using the following excerpts from this organization's documents when they are relevant. \
         Cite the document id in brackets when you use one.\n",
    );
    let mut used = count_tokens(&text);
    let mut documents: Vec<String> = Vec::new();
    let mut sources = Vec::new();
    for hit in hits {
        let block = format!(
            "\n[{}#{}] {}\n{}\n",
            hit.chunk.document_id, hit.chunk.chunk_index, hit.chunk.title, hit.chunk.text
        );
        let cost = count_tokens(&block);
        if used + cost > max_tokens {
            break;
        }
        used += cost;
        text.push_str(&block);
        sources.push(hit.chunk.text.clone());
        let id = hit.chunk.document_id.to_string();
        if !documents.contains(&id) {
            documents.push(id);
        }
    }
    RetrievedContext {
        message: Message::new(Role::System, text),
        documents,
        sources: Arc::new(sources),
    }
}
