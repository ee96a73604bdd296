//! Adapters: implementations of the ports.
//!
//! Real services: [`openai`], [`anthropic`] (over reqwest), [`emf`] (CloudWatch EMF on stdout),
//! [`env_secrets`], [`dynamodb`] (every store port). Embedded default: [`memory`] (every store
//! port) and [`simulated`] (a deterministic provider with real token counts).

pub mod anthropic;
pub mod cached;
pub mod dynamodb;
pub mod emf;
pub mod env_secrets;
pub mod http_provider;
pub mod memory;
pub mod openai;
pub mod retry;
pub mod simulated;
pub mod sse;
