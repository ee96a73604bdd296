//! The invoke function: OpenAI-compatible chat completions, Anthropic's Messages API and
//! embeddings.
//!
//! Routes (under any API Gateway stage prefix):
//! - `POST /v1/chat/completions` (buffered or `stream: true`)
//! - `POST /v1/messages` (Anthropic's Messages API, buffered or streamed; key in `x-api-key`
//!   or `Authorization: Bearer`)
//! - `POST /v1/messages/count_tokens` (the prompt tokens a Messages body would send)
//! - `POST /v1/embeddings`
//! - `GET  /v1/models`, `GET /v1/models/{id}`
//! - `PUT|GET|DELETE /v1/users/{user_id}/profile` (end-user profiles, see
//!   `tollgate::domain::profile`)
//! - `GET  /healthz`
//!
//! The routes are declared once, in `InvokeState`'s `RouteTable`; each handler parses HTTP,
//! calls its service once, and maps the result to a response.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use tollgate::GatewayError;
use tollgate::bootstrap::{BootError, Stores, chat_service};
use tollgate::config::Settings;
use tollgate::domain::chat::ChatRequest;
use tollgate::domain::ids::RequestId;
use tollgate::domain::keys::KeyScope;
use tollgate::http::{self as edge, Body, bearer_token};
use tollgate::ports::MetricsSink;
use tollgate::ports::vector::VectorIndex;
use tollgate::render::{anthropic, openai};
use tollgate::routes::{Handler, Params, Route, RouteTable};
use tollgate::service::caller::{Caller, Callers};
use tollgate::service::{ChatReply, ChatService, EmbeddingsService, ReplyMeta, RequestContext};
use tollgate::wire::anthropic::parse_messages_request;
use tollgate::wire::request::parse_chat_request;

/// What invoke may touch: the chat service's ports, the caller extractor, and the body limit.
#[derive(Clone)]
pub struct InvokeState {
    /// The chat path (and the profile routes, through its profile store).
    pub chat: ChatService,
    /// `POST /v1/embeddings`, on the chat path's providers, limiter and meter.
    pub embeddings: EmbeddingsService,
    /// Resolves each request's caller from its key.
    pub callers: Callers,
    /// Larger request bodies get a 413.
    pub max_body_bytes: usize,
    /// Provider calls end this long before the invocation's deadline (metering time).
    pub deadline_margin: std::time::Duration,
}

impl InvokeState {
    /// Invoke's state from settings: the one constructor every `main`, `tollgate serve` and
    /// the test harness use. Retrieval runs over `index` when one is given. Also returns a
    /// line per configured provider. Makes no network call.
    pub fn build(
        settings: &Settings,
        stores: &Stores,
        metrics: Arc<dyn MetricsSink>,
        index: Option<Arc<dyn VectorIndex>>,
    ) -> Result<(Self, Vec<String>), BootError> {
        let (chat, providers) = chat_service(settings, stores, metrics, index)?;
        let state = Self {
            embeddings: tollgate::bootstrap::embeddings_service(&chat),
            chat,
            callers: stores.callers(),
            max_body_bytes: settings.edge.max_body_bytes,
            deadline_margin: settings.edge.deadline_margin,
        };
        Ok((state, providers))
    }
}

impl RouteTable for InvokeState {
    const ROUTES: &'static [Route<Self>] = &[
        Route {
            method: Method::POST,
            path: "/v1/chat/completions",
            handler: Handler::Open(|s, req, _| Box::pin(chat(s, req))),
        },
        Route {
            method: Method::POST,
            path: "/v1/messages",
            handler: Handler::Open(|s, req, _| Box::pin(messages(s, req))),
        },
        Route {
            method: Method::POST,
            path: "/v1/messages/count_tokens",
            handler: Handler::Open(|s, req, _| Box::pin(count_tokens(s, req))),
        },
        Route {
            method: Method::POST,
            path: "/v1/embeddings",
            handler: Handler::Open(|s, req, _| Box::pin(embeddings(s, req))),
        },
        Route {
            method: Method::GET,
            path: "/v1/models",
            handler: Handler::Tenant(None, |_, caller, req, _| Box::pin(models(caller, req))),
        },
        Route {
            method: Method::GET,
            path: "/v1/models/{*id}",
            handler: Handler::Tenant(None, |_, caller, req, p| Box::pin(model(caller, req, p))),
        },
        Route {
            method: Method::PUT,
            path: PROFILE,
            handler: Handler::Tenant(Some(KeyScope::Profiles), |s, c, req, p| {
                Box::pin(put_profile(s, c, req, p))
            }),
        },
        Route {
            method: Method::GET,
            path: PROFILE,
            handler: Handler::Tenant(Some(KeyScope::Profiles), |s, c, req, p| {
                Box::pin(get_profile(s, c, req, p))
            }),
        },
        Route {
            method: Method::DELETE,
            path: PROFILE,
            handler: Handler::Tenant(Some(KeyScope::Profiles), |s, c, req, p| {
                Box::pin(delete_profile(s, c, req, p))
            }),
        },
        Route {
            method: Method::GET,
            path: "/healthz",
            handler: Handler::Open(|_, req, _| Box::pin(tollgate::routes::healthz(req))),
        },
    ];

    fn callers(&self) -> &Callers {
        &self.callers
    }
}

const PROFILE: &str = "/v1/users/{*user}/profile";

/// Serves one request with invoke's route table.
pub async fn handle(state: &InvokeState, req: Request<Bytes>) -> Response<Body> {
    tollgate::routes::handle(state, req).await
}

async fn models(caller: Caller, req: Request<Bytes>) -> Response<Body> {
    let list = tollgate::service::chat::models(&caller);
    edge::json(StatusCode::OK, &list, &tollgate::lambda::request_id(&req))
}

async fn model(caller: Caller, req: Request<Bytes>, params: Params) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    let id = params.get("id");
    let list = tollgate::service::chat::models(&caller);
    match list.data.into_iter().find(|m| m.id == id) {
        Some(model) => edge::json(StatusCode::OK, &model, &request_id),
        None => edge::error(
            &GatewayError::ModelNotFound {
                model: id.to_owned(),
            },
            &request_id,
        ),
    }
}

/// An inbound chat API: the same service behind both, each with its own body, key header,
/// reply and error shapes.
#[derive(Clone, Copy)]
enum ChatApi {
    /// OpenAI's `POST /v1/chat/completions`.
    ChatCompletions,
    /// Anthropic's `POST /v1/messages`.
    Messages,
}

impl ChatApi {
    fn parse(self, body: &[u8]) -> Result<ChatRequest, GatewayError> {
        match self {
            ChatApi::ChatCompletions => parse_chat_request(body),
            ChatApi::Messages => parse_messages_request(body),
        }
    }

    /// The key: `Authorization: Bearer`, or for Anthropic's SDKs `x-api-key` too.
    fn key(self, headers: &http::HeaderMap) -> Option<&str> {
        let x_api_key = || {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|k| !k.is_empty())
        };
        match self {
            ChatApi::ChatCompletions => bearer_token(headers),
            ChatApi::Messages => x_api_key().or_else(|| bearer_token(headers)),
        }
    }

    fn error(self, err: &GatewayError, request_id: &RequestId) -> Response<Body> {
        match self {
            ChatApi::ChatCompletions => edge::error(err, request_id),
            ChatApi::Messages => edge::anthropic_error(err, request_id),
        }
    }

    fn reply(self, reply: ChatReply, request_id: &RequestId) -> (Response<Body>, ReplyMeta) {
        match (self, reply) {
            (ChatApi::ChatCompletions, ChatReply::Completion { completion, meta }) => {
                let body = openai::completion(request_id, &meta, completion);
                (edge::json(StatusCode::OK, &body, request_id), meta)
            }
            (ChatApi::ChatCompletions, ChatReply::Stream { events, meta }) => {
                let body = openai::sse(request_id, &meta, events);
                (edge::sse(body, request_id), meta)
            }
            (ChatApi::Messages, ChatReply::Completion { completion, meta }) => {
                let body = anthropic::message(request_id, &meta, completion);
                (edge::json(StatusCode::OK, &body, request_id), meta)
            }
            (ChatApi::Messages, ChatReply::Stream { events, meta }) => {
                let body = anthropic::sse(request_id, &meta, events);
                (edge::sse(body, request_id), meta)
            }
        }
    }
}

/// `POST /v1/chat/completions`.
async fn chat(state: &InvokeState, req: Request<Bytes>) -> Response<Body> {
    serve_chat(state, req, ChatApi::ChatCompletions).await
}

/// `POST /v1/messages` (Anthropic's Messages API).
async fn messages(state: &InvokeState, req: Request<Bytes>) -> Response<Body> {
    serve_chat(state, req, ChatApi::Messages).await
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": n}`, the prompt the body would send
/// on the tenant's route as the gateway counts it (an estimate for Claude, whose tokenizer is
/// not public). No provider call, no reservation, no usage event.
async fn count_tokens(state: &InvokeState, req: Request<Bytes>) -> Response<Body> {
    let api = ChatApi::Messages;
    let request_id = tollgate::lambda::request_id(&req);
    if req.body().len() > state.max_body_bytes {
        let err = GatewayError::PayloadTooLarge {
            limit: state.max_body_bytes,
        };
        return api.error(&err, &request_id);
    }
    let ctx = RequestContext::new(request_id.clone());
    let caller = match state
        .callers
        .resolve(api.key(req.headers()), Some(KeyScope::Chat))
        .await
    {
        Ok(caller) => caller,
        Err(refused) => return api.error(&refused.error, &request_id),
    };
    let counted = match tollgate::wire::anthropic::parse_count_tokens_request(req.body()) {
        Ok(request) => state.chat.count_prompt_tokens(&ctx, &caller, request).await,
        Err(err) => Err(err),
    };
    match counted {
        Ok(input_tokens) => edge::json(
            StatusCode::OK,
            &serde_json::json!({ "input_tokens": input_tokens }),
            &request_id,
        ),
        Err(err) => api.error(&err, &request_id),
    }
}

/// A chat request in `api`'s shapes. The caller is resolved here rather than by the route
/// table, so a refused key is metered like any refused request (a metrics record and a log
/// line).
async fn serve_chat(state: &InvokeState, req: Request<Bytes>, api: ChatApi) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    let body = req.body();
    if body.len() > state.max_body_bytes {
        let err = GatewayError::PayloadTooLarge {
            limit: state.max_body_bytes,
        };
        return api.error(&err, &request_id);
    }
    let mut ctx = RequestContext::new(request_id.clone());
    ctx.deadline = tollgate::lambda::call_deadline(&req, state.deadline_margin);
    ctx.bypass_cache = bypasses_cache(req.headers());
    let caller = match state
        .callers
        .resolve(api.key(req.headers()), Some(KeyScope::Chat))
        .await
    {
        Ok(caller) => caller,
        Err(refused) => {
            state.chat.refused(&ctx, &refused);
            return api.error(&refused.error, &request_id);
        }
    };
    let (mut response, meta) = match state.chat.serve(&ctx, &caller, api.parse(body)).await {
        Ok(reply) => api.reply(reply, &request_id),
        Err(err) => return api.error(&err, &request_id),
    };
    if let Some(cache) = meta.cache {
        edge::set_header(&mut response, "x-tollgate-cache", cache.as_str());
    }
    if let Some(rate) = meta.rate {
        for (name, value) in rate.headers() {
            edge::set_header(&mut response, name, &value);
        }
    }
    if let Some(from) = &meta.degraded_from {
        edge::set_header(&mut response, "x-tollgate-degraded-from", from);
    }
    if let Some(served_by) = &meta.served_by {
        edge::set_header(&mut response, "x-tollgate-served-by", served_by);
    }
    if !meta.documents.is_empty() {
        edge::set_header(
            &mut response,
            "x-tollgate-documents",
            &meta.documents.join(","),
        );
    }
    response
}

/// `Cache-Control: no-cache` (or `no-store`): neither read nor write the response cache.
fn bypasses_cache(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("no-cache") || v.contains("no-store"))
}

/// `POST /v1/embeddings`. Like chat, the caller is resolved here so a refused key still gets
/// its metrics record.
async fn embeddings(state: &InvokeState, req: Request<Bytes>) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    let body = req.body();
    if body.len() > state.max_body_bytes {
        let err = GatewayError::PayloadTooLarge {
            limit: state.max_body_bytes,
        };
        return edge::error(&err, &request_id);
    }
    let mut ctx = RequestContext::new(request_id.clone());
    ctx.deadline = tollgate::lambda::call_deadline(&req, state.deadline_margin);
    ctx.bypass_cache = bypasses_cache(req.headers());
    let caller = match state
        .callers
        .resolve(bearer_token(req.headers()), Some(KeyScope::Embeddings))
        .await
    {
        Ok(caller) => caller,
        Err(refused) => {
            state.embeddings.refused(&ctx, &refused);
            return edge::error(&refused.error, &request_id);
        }
    };
    match state.embeddings.embeddings(&ctx, &caller, body).await {
        Ok((reply, cache)) => {
            let mut response = edge::json(StatusCode::OK, &reply, &request_id);
            if let Some(cache) = cache {
                edge::set_header(&mut response, "x-tollgate-cache", cache.as_str());
            }
            response
        }
        Err(err) => edge::error(&err, &request_id),
    }
}

/// `PUT /v1/users/{user_id}/profile` (the segment still percent-encoded).
async fn put_profile(
    state: &InvokeState,
    caller: Caller,
    req: Request<Bytes>,
    params: Params,
) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    let limit = state
        .max_body_bytes
        .min(tollgate::domain::profile::MAX_BODY_BYTES);
    let result = if req.body().len() > limit {
        Err(GatewayError::PayloadTooLarge { limit })
    } else {
        state
            .chat
            .profile_service()
            .put_profile(&caller, params.get("user"), req.body())
            .await
    };
    match result {
        Ok(view) => edge::json(StatusCode::OK, &view, &request_id),
        Err(err) => edge::error(&err, &request_id),
    }
}

/// `GET /v1/users/{user_id}/profile`.
async fn get_profile(
    state: &InvokeState,
    caller: Caller,
    req: Request<Bytes>,
    params: Params,
) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    match state
        .chat
        .profile_service()
        .get_profile(&caller, params.get("user"))
        .await
    {
        Ok(view) => edge::json(StatusCode::OK, &view, &request_id),
        Err(err) => edge::error(&err, &request_id),
    }
}

/// `DELETE /v1/users/{user_id}/profile`.
async fn delete_profile(
    state: &InvokeState,
    caller: Caller,
    req: Request<Bytes>,
    params: Params,
) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    match state
        .chat
        .profile_service()
        .delete_profile(&caller, params.get("user"))
        .await
    {
        Ok(deleted) => edge::json(StatusCode::OK, &deleted, &request_id),
        Err(err) => edge::error(&err, &request_id),
    }
}
