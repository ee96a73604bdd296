//! Ports: the small traits the domain needs from the outside world.
//!
//! One trait per need, so a function's state type lists exactly what it may touch (and mirrors
//! its IAM policy). Every port has an embedded implementation in `adapters::memory` (or
//! `adapters::simulated`) and real ones for production.

pub mod alerts;
pub mod clock;
pub mod metrics;
pub mod provider;
pub mod secrets;
pub mod store;
pub mod vector;

pub use clock::Clock;
pub use metrics::MetricsSink;
pub use provider::LlmProvider;
pub use secrets::SecretSource;
pub use store::{
    ApiKeyLookup, AuditLog, Catalog, KeyUsage, LimiterStore, ProfileStore, ResponseCache,
    TenantAdmin, TenantConfigSource, UsageQuery, UsageSink,
};
