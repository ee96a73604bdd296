#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Test support for Tollgate's suites.
//!
//! [`standins`] holds local servers that speak the real OpenAI Chat Completions and Anthropic
//! Messages wire formats, with scripted faults, so provider adapters and end-to-end flows are
//! tested over real HTTP without network access or API keys.

pub mod standins;

pub use standins::{AnthropicStandIn, Behavior, OpenAiStandIn, RecordedRequest, StandIn};
pub mod harness;
