//! Adapters: implementations of the ports.
//!
//! Real services: [`openai`], [`anthropic`] (over reqwest), [`emf`] (CloudWatch EMF on stdout),
//! [`env_secrets`] and [`secrets_manager`] (provider and Qdrant keys, behind [`api_key`]),
//! [`dynamodb`] (every store port), [`qdrant`] (the vector index, over gRPC), [`cloudwatch`]
//! (anomaly metrics through PutMetricData), [`eventbridge`] (budget events through PutEvents);
//! [`tls`] (the one TLS stack they all use: rustls on ring); [`aws`] (where AWS clients take
//! region, credentials and endpoint from).
//! Embedded default: [`memory`] (every store port), [`vector_memory`] (an exact vector index)
//! and [`simulated`] (a deterministic provider with real token counts); [`alerts`] (anomaly
//! alerts as EMF lines or in memory, budget events as JSON lines or in memory).

pub mod alerts;
pub mod anthropic;
pub mod api_key;
pub mod aws;
pub mod aws_http;
pub mod bedrock;
pub mod cached;
pub mod cloudwatch;
pub mod dynamodb;
pub mod embeddings;
pub mod emf;
pub mod env_secrets;
pub mod event_stream;
pub mod eventbridge;
pub mod http_provider;
pub mod key_pool;
pub mod line_writer;
pub mod memory;
pub mod openai;
pub mod qdrant;
pub mod retry;
pub mod secrets_manager;
pub mod sigv4;
pub mod simulated;
pub mod sse;
pub mod tls;
mod tool_blocks;
pub mod vector_memory;
