//! Use cases: the domain wired to the ports. Handlers call exactly one of these.

pub mod anomaly;
pub mod audit;
pub mod budget_admin;
pub mod budget_events;
mod call;
pub mod caller;
pub mod catalog;
pub mod catalog_admin;
pub mod chat;
mod context;
mod embedding_usage;
pub mod embeddings;
pub mod failover;
pub mod ingest;
pub mod key_admin;
pub mod limiter;
pub mod metering;
mod prepared;
pub mod profiles;
pub mod reply;
pub mod retrieval;
mod stream;
mod structured;
pub mod tenant_admin;
pub mod usage_report;

pub use caller::{Caller, Callers, Refused};
pub use chat::{ChatService, Providers};
pub use context::RequestContext;
pub use embeddings::EmbeddingsService;
pub use reply::{CacheStatus, ChatEvent, ChatEvents, ChatReply, ReplyMeta};
