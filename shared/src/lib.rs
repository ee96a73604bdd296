//! Tollgate's shared library.
//!
//! Three layers, kept apart on purpose:
//!
//! * [`domain`]: what a tenant may do, what a call costs, how a prompt is rendered. Pure, no I/O.
//! * [`ports`]: the small traits the domain needs from the outside world (stores, providers,
//!   metrics, secrets, clock). Each Lambda's state holds only the ports it uses.
//! * [`adapters`]: implementations of the ports: real services (OpenAI, Anthropic, EMF) and the
//!   embedded default (in-memory store, simulated provider) used by `tollgate serve` and tests.
//!
//! [`service`] wires the domain to the ports for each use case (the chat hot path), and
//! [`wire`] holds the OpenAI-compatible request/response shapes clients see. [`http`] is the
//! framework-agnostic HTTP edge that every function's handler shares.

#![warn(missing_docs)]

pub mod adapters;
pub mod bootstrap;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod http;
pub mod lambda;
pub mod ports;
pub mod render;
pub mod routes;
pub mod service;
pub mod telemetry;
pub mod tokenizer;
pub mod wire;

pub use error::GatewayError;
