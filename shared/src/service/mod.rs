//! Use cases: the domain wired to the ports. Handlers call exactly one of these.

pub mod auth;
pub mod chat;
pub mod limiter;
mod metering;
mod stream;

pub use chat::{CacheStatus, ChatReply, ChatService, Providers, ReplyMeta, RequestContext};
