#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Test support for Tollgate's suites.
//!
//! [`standins`] holds local servers that speak the real OpenAI Chat Completions, Anthropic
//! Messages and Bedrock Converse wire formats (Converse with SigV4 checks and event-stream
//! framing), with scripted faults, so provider adapters and end-to-end flows are
//! tested over real HTTP without network access or API keys. [`qdrant_standin`] is a local
//! server speaking Qdrant's gRPC protocol (exact search, refuses queries without a tenant
//! filter) for the vector-index contract suite. [`tls_proxy`] puts TLS with a test CA in front
//! of any of them.

pub mod capture;
pub mod contracts;
pub mod fixtures;
pub mod moto;
pub mod qdrant_standin;
pub mod standins;
pub mod tls_proxy;

pub use qdrant_standin::{QdrantCall, QdrantStandIn};
pub use standins::{
    AnthropicStandIn, BedrockStandIn, Behavior, OpenAiStandIn, RecordedRequest, StandIn,
};
pub mod harness;
