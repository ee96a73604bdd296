//! The vector index port (Qdrant in production, an exact in-memory index embedded) and the
//! embedder port (OpenAI embeddings in production, a deterministic local embedder embedded).
//!
//! Tenant scoping is the adapter's job *and* the caller's: every adapter filters by tenant at
//! the query level (Qdrant: a `must` condition on the `tenant_id` payload index), and the
//! retrieval service checks every returned chunk again before using it.

use async_trait::async_trait;

use crate::domain::documents::{Chunk, DocumentId};
use crate::domain::ids::TenantId;
use crate::domain::tenant::ProviderKind;
use crate::ports::provider::ProviderError;

/// Why a vector index operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IndexError {
    /// The index failed or could not be reached.
    #[error("vector index unavailable: {0}")]
    Unavailable(String),
    /// The index is rate limiting (Qdrant Cloud's `RESOURCE_EXHAUSTED`); retry after the hint.
    #[error("vector index is rate limiting requests: {detail}")]
    Busy {
        /// How long the index asked us to wait.
        retry_after: std::time::Duration,
        /// The index's message.
        detail: String,
    },
    /// The index refused the request as invalid.
    #[error("vector index refused the request: {0}")]
    Rejected(String),
    /// The index answered with something unreadable.
    #[error("vector index returned something unreadable: {0}")]
    Corrupt(String),
}

/// A chunk with its embedding, ready to upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedChunk {
    /// The chunk and its payload.
    pub chunk: Chunk,
    /// Its embedding (as many values as the index's dimensions).
    pub vector: Vec<f32>,
}

/// A search result: the chunk's payload and its similarity (cosine, higher is closer).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredChunk {
    /// The stored chunk.
    pub chunk: Chunk,
    /// Cosine similarity to the query vector; higher is closer.
    pub score: f32,
}

/// A tenant-scoped vector index of document chunks.
#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// Creates the collection (cosine distance, `dimensions`) and the `tenant_id` keyword
    /// payload index with `is_tenant: true`, if missing. Idempotent.
    async fn ensure_ready(&self, dimensions: usize) -> Result<(), IndexError>;

    /// Replaces every chunk of `document` of `tenant` with `chunks` (all of that tenant).
    async fn replace_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        chunks: Vec<IndexedChunk>,
    ) -> Result<(), IndexError>;

    /// Deletes every chunk of `document` of `tenant`; returns how many were deleted.
    async fn delete_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
    ) -> Result<u64, IndexError>;

    /// The `top_k` nearest chunks among `tenant`'s own, best first. Chunks of equal score come
    /// in no promised order.
    async fn search(
        &self,
        tenant: &TenantId,
        vector: &[f32],
        top_k: usize,
    ) -> Result<Vec<ScoredChunk>, IndexError>;

    /// How many chunks `tenant` has stored (for the storage quota).
    async fn count(&self, tenant: &TenantId) -> Result<u64, IndexError>;
}

/// [`VectorIndex::ensure_ready`] once per process, for every path that reads or writes the
/// index: the first request creates (or checks) the collection, later ones skip it, so a fresh
/// deployment works without `tollgate init` and no request pays for the check again. A failure
/// is not remembered: the next request tries again.
#[derive(Clone, Default)]
pub struct IndexReadiness(std::sync::Arc<tokio::sync::OnceCell<()>>);

impl IndexReadiness {
    /// Runs [`VectorIndex::ensure_ready`] unless it already succeeded in this process.
    pub async fn ensure(
        &self,
        index: &dyn VectorIndex,
        dimensions: usize,
    ) -> Result<(), IndexError> {
        self.0
            .get_or_try_init(|| index.ensure_ready(dimensions))
            .await
            .map(|_| ())
    }
}

/// Embeddings for a batch of texts, in order, and the tokens the provider billed.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input text, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the provider billed for the batch.
    pub prompt_tokens: u64,
    /// The embedding model that produced them (priced like any model).
    pub model: String,
}

/// Turns texts into vectors. Failures are classified like chat-provider failures (rate
/// limits, timeouts, rejections), so retries and metering treat both alike.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// The provider billed for embeddings (for the usage event and its price).
    fn kind(&self) -> ProviderKind;
    /// The model billed, so a call can be priced before it is made.
    fn model(&self) -> &str;
    /// The length of every vector this embedder returns.
    fn dimensions(&self) -> usize;
    /// The most texts one [`Embedder::embed`] call should carry. Callers split longer inputs
    /// into calls of at most this many, so each upstream request is retried, metered and
    /// reserved on its own: a failed request never re-sends (or loses the usage of) the ones
    /// before it.
    fn max_batch(&self) -> usize {
        DEFAULT_MAX_BATCH
    }
    /// One upstream request for `texts` (one attempt: the caller retries), on the provider key
    /// at `pool_key` when the limiter pinned one (see `ProviderRequest::pool_key`).
    async fn embed(
        &self,
        texts: &[String],
        pool_key: Option<u16>,
    ) -> Result<Embeddings, ProviderError>;
}

/// [`Embedder::max_batch`] unless an embedder says otherwise.
pub const DEFAULT_MAX_BATCH: usize = 256;
