//! The embedded vector index: exact cosine search in memory, with the same tenant scoping as
//! the Qdrant adapter. Used by `tollgate serve` and fast tests, and held to the same contract
//! suite (`tests/tests/suite/vector_contract.rs`).
//!
//! Points are stored per tenant, so a search only ever reads the searching tenant's own points:
//! the tenant filter is the shape of the data, not a condition that could be forgotten.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;

use crate::domain::documents::{Chunk, DocumentId};
use crate::domain::ids::TenantId;
use crate::ports::vector::{IndexError, IndexedChunk, ScoredChunk, VectorIndex};

/// An exact in-memory [`VectorIndex`] (see the module docs).
#[derive(Default)]
pub struct MemoryVectorIndex {
    inner: RwLock<Inner>,
    /// Test-only fault injection: `search` reads every tenant's points. See
    /// [`MemoryVectorIndex::with_broken_tenant_filter`].
    #[cfg(feature = "fault-injection")]
    broken_tenant_filter: bool,
}

#[derive(Default)]
struct Inner {
    /// Fixed by `ensure_ready` or by the first write, like a Qdrant collection's vector size.
    dimensions: Option<usize>,
    tenants: HashMap<TenantId, HashMap<DocumentId, Vec<Point>>>,
}

struct Point {
    chunk: Chunk,
    /// Normalised to unit length on the way in (as Qdrant does for cosine collections), so a
    /// search is one dot product per point.
    unit: Vec<f32>,
}

fn poisoned<T>(_: T) -> IndexError {
    IndexError::Unavailable("in-memory vector index lock poisoned".into())
}

impl MemoryVectorIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// **Test-only fault injection** for the isolation canaries: an index whose `search`
    /// ignores the tenant filter and ranks every tenant's points, as a broken Qdrant filter
    /// would. The retrieval service's defense-in-depth check must catch what it returns.
    ///
    /// Gated behind the `fault-injection` cargo feature rather than `cfg(test)` (which does
    /// not cross crates): only `tollgate-tests` enables it, and only as a dev-dependency, so
    /// with cargo's feature resolver v2+ it is on for test and bench builds and off for every
    /// build of a deployable binary (`cargo build`, `cargo lambda build`, `sam build`).
    #[cfg(feature = "fault-injection")]
    pub fn with_broken_tenant_filter() -> Self {
        Self {
            broken_tenant_filter: true,
            ..Self::default()
        }
    }

    #[cfg(feature = "fault-injection")]
    fn tenant_filter_is_broken(&self) -> bool {
        self.broken_tenant_filter
    }

    #[cfg(not(feature = "fault-injection"))]
    fn tenant_filter_is_broken(&self) -> bool {
        false
    }
}

/// Checks a vector against the index's dimensions (fixing them if unset) and returns it at
/// unit length. A zero vector stays zero (it scores 0 against everything, as in Qdrant).
fn unit_vector(dimensions: &mut Option<usize>, vector: &[f32]) -> Result<Vec<f32>, IndexError> {
    let expected = *dimensions.get_or_insert(vector.len());
    if vector.len() != expected {
        return Err(IndexError::Rejected(format!(
            "vector has {} dimensions, the index has {expected}",
            vector.len()
        )));
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(IndexError::Rejected("vector has a non-finite value".into()));
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    Ok(if norm > 0.0 {
        vector.iter().map(|x| x / norm).collect()
    } else {
        vector.to_vec()
    })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[async_trait]
impl VectorIndex for MemoryVectorIndex {
    async fn ensure_ready(&self, dimensions: usize) -> Result<(), IndexError> {
        let mut inner = self.inner.write().map_err(poisoned)?;
        match inner.dimensions {
            Some(existing) if existing != dimensions => Err(IndexError::Rejected(format!(
                "the index holds {existing}-dimensional vectors, not {dimensions}"
            ))),
            _ => {
                inner.dimensions = Some(dimensions);
                Ok(())
            }
        }
    }

    async fn replace_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
        chunks: Vec<IndexedChunk>,
    ) -> Result<(), IndexError> {
        let mut inner = self.inner.write().map_err(poisoned)?;
        // Everything is checked before anything is written: a bad batch changes nothing.
        let mut points = Vec::with_capacity(chunks.len());
        for IndexedChunk { chunk, vector } in chunks {
            if &chunk.tenant_id != tenant || &chunk.document_id != document {
                return Err(IndexError::Rejected(format!(
                    "chunk of {}/{} passed to replace {tenant}/{document}",
                    chunk.tenant_id, chunk.document_id
                )));
            }
            let unit = unit_vector(&mut inner.dimensions, &vector)?;
            points.push(Point { chunk, unit });
        }
        // A chunk index given twice keeps the last one, as a second upsert of a point id would.
        points.reverse();
        points.sort_by_key(|p| p.chunk.chunk_index);
        points.dedup_by_key(|p| p.chunk.chunk_index);

        let documents = inner.tenants.entry(tenant.clone()).or_default();
        if points.is_empty() {
            documents.remove(document);
        } else {
            documents.insert(document.clone(), points);
        }
        if documents.is_empty() {
            inner.tenants.remove(tenant);
        }
        Ok(())
    }

    async fn delete_document(
        &self,
        tenant: &TenantId,
        document: &DocumentId,
    ) -> Result<u64, IndexError> {
        let mut inner = self.inner.write().map_err(poisoned)?;
        let Some(documents) = inner.tenants.get_mut(tenant) else {
            return Ok(0);
        };
        let deleted = documents.remove(document).map_or(0, |points| points.len());
        if documents.is_empty() {
            inner.tenants.remove(tenant);
        }
        Ok(deleted as u64)
    }

    async fn search(
        &self,
        tenant: &TenantId,
        vector: &[f32],
        top_k: usize,
    ) -> Result<Vec<ScoredChunk>, IndexError> {
        let inner = self.inner.read().map_err(poisoned)?;
        let mut dimensions = inner.dimensions;
        let query = unit_vector(&mut dimensions, vector)?;
        if top_k == 0 {
            return Ok(Vec::new());
        }

        let broken = self.tenant_filter_is_broken();
        let mut scored: Vec<(f32, &Chunk)> = inner
            .tenants
            .iter()
            .filter(|(owner, _)| broken || *owner == tenant)
            .flat_map(|(_, documents)| documents.values().flatten())
            .map(|point| (dot(&query, &point.unit), &point.chunk))
            .collect();

        // Best first; ties in a fixed order (document, then chunk) so results are repeatable.
        let order = |a: &(f32, &Chunk), b: &(f32, &Chunk)| {
            b.0.total_cmp(&a.0)
                .then_with(|| a.1.document_id.cmp(&b.1.document_id))
                .then_with(|| a.1.chunk_index.cmp(&b.1.chunk_index))
        };
        if scored.len() > top_k {
            scored.select_nth_unstable_by(top_k - 1, order);
            scored.truncate(top_k);
        }
        scored.sort_unstable_by(order);
        Ok(scored
            .into_iter()
            .map(|(score, chunk)| ScoredChunk {
                chunk: chunk.clone(),
                score,
            })
            .collect())
    }

    async fn count(&self, tenant: &TenantId) -> Result<u64, IndexError> {
        let inner = self.inner.read().map_err(poisoned)?;
        Ok(inner.tenants.get(tenant).map_or(0, |documents| {
            documents.values().map(Vec::len).sum::<usize>()
        }) as u64)
    }
}
