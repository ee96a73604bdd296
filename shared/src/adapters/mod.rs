//! Adapters: implementations of the ports.
//!
//! Real services: [`openai`], [`anthropic`] (over reqwest), [`emf`] (CloudWatch EMF on stdout),
//! [`env_secrets`], [`dynamodb`] (every store port), [`qdrant`] (the vector index, over gRPC).
//! Embedded default: [`memory`] (every store port), [`vector_memory`] (an exact vector index)
//! and [`simulated`] (a deterministic provider with real token counts).

pub mod anthropic;
pub mod cached;
pub mod dynamodb;
pub mod embeddings;
pub mod emf;
pub mod env_secrets;
pub mod http_provider;
pub mod memory;
pub mod openai;
pub mod qdrant;
pub mod retry;
pub mod simulated;
pub mod sse;
pub mod vector_memory;
