//! Embedders: OpenAI's embeddings API in production, and a deterministic local embedder for
//! the embedded default and tests.
//!
//! The local embedder stands in for OpenAI's (it reports the same model name and token counts
//! from the real tokenizer, so embedding calls are priced and metered the same way). Its
//! vectors come from feature hashing: lowercased words and word pairs are hashed into the
//! dimensions with a sign, then L2-normalized. Texts sharing words land close together, which
//! is enough for retrieval tests to mean something; it is no semantic model.

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use super::http_provider::{Auth, CallLimits, HttpCore, ProviderSettings, ProviderSetupError};
use crate::domain::tenant::ProviderKind;
use crate::ports::provider::{ProviderError, ProviderErrorKind};
use crate::ports::vector::{Embedder, Embeddings};
use crate::tokenizer::count_tokens;

/// The embedding model used when none is configured.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";
/// The default embedding vector length.
pub const DEFAULT_DIMENSIONS: usize = 256;

/// FNV-1a: stable across processes and Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A deterministic feature-hashing embedder (see the module docs); no network, no semantics.
pub struct LocalEmbedder {
    dimensions: usize,
    model: String,
}

impl LocalEmbedder {
    /// Vectors of `dimensions` values (at least 8), reporting OpenAI's default embedding model.
    pub fn new(dimensions: usize) -> Self {
        Self {
            dimensions: dimensions.max(8),
            model: DEFAULT_EMBEDDING_MODEL.to_owned(),
        }
    }

    /// Vectors of exactly `dimensions` values (at least 1): what the simulated provider returns
    /// for an embeddings call that asked for a length.
    pub fn exact(dimensions: usize) -> Self {
        Self {
            dimensions: dimensions.max(1),
            model: DEFAULT_EMBEDDING_MODEL.to_owned(),
        }
    }

    /// The unit-length (or all-zero, for a text without words) vector of `text`.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut v = vec![0.0_f32; self.dimensions];
        let mut add = |feature: &str, weight: f32| {
            let h = fnv1a(feature.as_bytes());
            let index = (h % self.dimensions as u64) as usize;
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[index] += sign * weight;
        };
        for w in &words {
            add(w, 1.0);
        }
        for pair in words.windows(2) {
            add(&format!("{} {}", pair[0], pair[1]), 0.5);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Openai
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String], _: Option<u16>) -> Result<Embeddings, ProviderError> {
        Ok(Embeddings {
            vectors: texts.iter().map(|t| self.vector(t)).collect(),
            prompt_tokens: texts.iter().map(|t| count_tokens(t) as u64).sum(),
            model: self.model.clone(),
        })
    }
}

/// OpenAI's `POST /embeddings`, asking for `dimensions` (text-embedding-3 models shorten their
/// vectors on request, so the index size is a deployment choice).
pub struct OpenAiEmbedder {
    http: HttpCore,
    model: String,
    dimensions: usize,
}

/// Inputs per request ([`Embedder::max_batch`]); OpenAI accepts up to 2,048, and a smaller
/// request loses less when it fails.
const BATCH: usize = 256;

#[derive(Serialize)]
struct EmbeddingRequest<'a> {
    model: &'a str,
    input: &'a [String],
    dimensions: usize,
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingDatum>,
    #[serde(default)]
    model: Option<String>,
    usage: EmbeddingUsage,
}

#[derive(Deserialize)]
struct EmbeddingDatum {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
}

impl OpenAiEmbedder {
    /// Embeds with `model` at `settings.base_url`, asking for vectors of `dimensions`.
    pub fn new(
        settings: &ProviderSettings,
        model: impl Into<String>,
        dimensions: usize,
    ) -> Result<Self, ProviderSetupError> {
        Ok(Self {
            http: HttpCore::new(
                ProviderKind::Openai,
                settings,
                "/embeddings",
                Auth::bearer(),
                HeaderMap::new(),
            )?,
            model: model.into(),
            dimensions,
        })
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Openai
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn max_batch(&self) -> usize {
        BATCH
    }

    /// One `POST /embeddings` of all of `texts`: the caller splits by [`Embedder::max_batch`],
    /// so that the usage of every request that succeeded is known even when a later one fails.
    async fn embed(
        &self,
        texts: &[String],
        pool_key: Option<u16>,
    ) -> Result<Embeddings, ProviderError> {
        let body = self
            .http
            .post_json(
                &EmbeddingRequest {
                    model: &self.model,
                    input: texts,
                    dimensions: self.dimensions,
                    encoding_format: "float",
                },
                CallLimits::on_key(pool_key),
            )
            .await?;
        read_embeddings(
            &self.http,
            &body,
            texts.len(),
            Some(self.dimensions),
            &self.model,
        )
    }
}

/// An OpenAI embeddings reply for `inputs` inputs, checked: one vector per input, each of
/// `dimensions` when a length was asked for, in input order. A 2xx the provider billed but
/// that cannot be used is an `after_send` error, so it is never sent again and is metered as
/// an estimate.
pub(super) fn read_embeddings(
    http: &HttpCore,
    body: &[u8],
    inputs: usize,
    dimensions: Option<usize>,
    model: &str,
) -> Result<Embeddings, ProviderError> {
    let mut reply: EmbeddingResponse = serde_json::from_slice(body).map_err(|e| {
        http.error(
            ProviderErrorKind::Upstream,
            format!("unreadable embeddings: {e}"),
        )
        .after_send()
    })?;
    let width = reply.data.first().map_or(0, |d| d.embedding.len());
    if reply.data.len() != inputs
        || reply
            .data
            .iter()
            .any(|d| d.embedding.len() != dimensions.unwrap_or(width) || d.embedding.is_empty())
    {
        return Err(http
            .error(
                ProviderErrorKind::Upstream,
                format!(
                    "expected {inputs} embeddings of {} dimensions, got {}",
                    dimensions.map_or_else(|| "equal".to_owned(), |d| d.to_string()),
                    reply.data.len()
                ),
            )
            .after_send());
    }
    reply.data.sort_by_key(|d| d.index);
    Ok(Embeddings {
        vectors: reply.data.into_iter().map(|d| d.embedding).collect(),
        prompt_tokens: reply.usage.prompt_tokens,
        model: reply.model.unwrap_or_else(|| model.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[tokio::test]
    async fn local_vectors_are_deterministic_unit_length_and_lexically_meaningful() {
        let e = LocalEmbedder::new(256);
        let texts = vec![
            "refund policy for cancelled flights".to_owned(),
            "our refund policy covers cancelled flights".to_owned(),
            "rocket engine maintenance schedule".to_owned(),
        ];
        let a = e.embed(&texts, None).await.unwrap();
        let b = e.embed(&texts, None).await.unwrap();
        assert_eq!(a.vectors, b.vectors);
        for v in &a.vectors {
            assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
        }
        assert!(cosine(&a.vectors[0], &a.vectors[1]) > cosine(&a.vectors[0], &a.vectors[2]));
        assert!(a.prompt_tokens > 0);
        assert_eq!(a.model, DEFAULT_EMBEDDING_MODEL);
    }
}
