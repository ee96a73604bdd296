//! What a chat request produces, before any wire format: a [`Completion`] or a stream of
//! [`ChatEvent`]s, with the [`ReplyMeta`] the edge renders them with (`tollgate::render`).

use crate::domain::chat::{Completion, FinishReason};
use crate::domain::limits::RateStatus;
use crate::domain::tools::ToolCallDelta;
use crate::domain::usage::TokenUsage;
use crate::error::GatewayError;

/// What the response cache did for a cacheable request (`x-tollgate-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the cache: no provider call, no limiter.
    Hit,
    /// Looked up and not found (or the cache could not be read); the reply may be stored.
    Miss,
    /// The client sent `Cache-Control: no-cache`: neither looked up nor stored.
    Bypass,
}

impl CacheStatus {
    /// The `x-tollgate-cache` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// Facts about a reply: what its wire rendering needs besides the completion or events, and
/// what becomes response headers.
#[derive(Debug, Clone)]
pub struct ReplyMeta {
    /// The model as the client named it (a logical route name, never the provider's id).
    pub model: String,
    /// When the reply was created (Unix seconds).
    pub created: i64,
    /// The client asked for a final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// What the response cache did; `None` when the request is not cacheable (the tenant's
    /// cache is off, or the request continues a conversation or is grounded in documents).
    pub cache: Option<CacheStatus>,
    /// The `x-ratelimit-*` values after this request's reservation; `None` for a cache hit,
    /// which reserves nothing.
    pub rate: Option<RateStatus>,
    /// Set when a cheaper model served the request (`x-tollgate-degraded-from`).
    pub degraded_from: Option<String>,
    /// The tenant documents the answer was grounded in (`x-tollgate-documents`).
    pub documents: Vec<String>,
    /// The provider model that answered, `{provider}/{model}` (`x-tollgate-served-by`): the
    /// route's own, or a fallback when the route failed over (`service::failover`). `None` for
    /// a cache hit.
    pub served_by: Option<String>,
}

/// What a chat request produced, before any wire format: the edge renders it
/// (`tollgate::render`).
pub enum ChatReply {
    /// A buffered reply.
    Completion {
        /// The reply, with its usage.
        completion: Completion,
        /// Rendering and header facts.
        meta: ReplyMeta,
    },
    /// A streamed reply, metered when the stream ends (or when it is dropped).
    Stream {
        /// The reply's events, in order; the last is `End` or `Failed`.
        events: ChatEvents,
        /// Rendering and header facts.
        meta: ReplyMeta,
    },
}

/// One event of a streamed reply.
#[derive(Debug)]
pub enum ChatEvent {
    /// The next piece of the reply's text (never empty).
    Text(String),
    /// The next piece of a tool call (the first of each call has its id and name).
    ToolCall(ToolCallDelta),
    /// The reply is complete and metered: why it ended, and the provider's usage.
    End {
        /// Why the reply ended.
        finish: FinishReason,
        /// The provider's counts (zero when it reported none).
        usage: TokenUsage,
    },
    /// The reply failed after it started (metered); nothing follows.
    Failed(GatewayError),
}

/// A streamed reply's events.
pub type ChatEvents = std::pin::Pin<Box<dyn futures_util::Stream<Item = ChatEvent> + Send>>;
