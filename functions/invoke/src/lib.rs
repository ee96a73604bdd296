//! The invoke function: OpenAI-compatible chat completions.
//!
//! Routes (under any API Gateway stage prefix):
//! - `POST /v1/chat/completions` (buffered or `stream: true`)
//! - `GET  /v1/models`, `GET /v1/models/{id}`
//! - `PUT|GET|DELETE /v1/users/{user_id}/profile` (end-user profiles, see
//!   `tollgate::domain::profile`)
//! - `GET  /healthz`
//!
//! The handler parses HTTP, calls the chat service once, and maps the result to a response.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use tollgate::GatewayError;
use tollgate::domain::ids::RequestId;
use tollgate::http::{self as edge, Body, bearer_token, route_path};
use tollgate::service::{ChatReply, ChatService, RequestContext};

/// What invoke may touch: the chat service's ports, and the body limit.
#[derive(Clone)]
pub struct InvokeState {
    pub chat: ChatService,
    pub max_body_bytes: usize,
    /// Provider calls end this long before the invocation's deadline (metering time).
    pub deadline_margin: std::time::Duration,
}

pub async fn handle(state: &InvokeState, req: Request<Bytes>) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    let path = route_path(req.uri().path()).to_owned();
    let method = req.method().clone();
    if let Some(user) = profile_user(&path) {
        return profile(state, request_id, method, user, &req).await;
    }
    match (method, path.as_str()) {
        (Method::POST, "/v1/chat/completions") => chat(state, request_id, req).await,
        (Method::GET, "/v1/models") => match state.chat.models(bearer_token(req.headers())).await {
            Ok(list) => edge::json(StatusCode::OK, &list, &request_id),
            Err(err) => edge::error(&err, &request_id),
        },
        (Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = &p["/v1/models/".len()..];
            match state.chat.models(bearer_token(req.headers())).await {
                Ok(list) => match list.data.into_iter().find(|m| m.id == id) {
                    Some(model) => edge::json(StatusCode::OK, &model, &request_id),
                    None => edge::error(
                        &GatewayError::ModelNotFound {
                            model: id.to_owned(),
                        },
                        &request_id,
                    ),
                },
                Err(err) => edge::error(&err, &request_id),
            }
        }
        (Method::GET, "/healthz") => edge::json(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
            &request_id,
        ),
        (method, "/v1/chat/completions" | "/v1/models" | "/healthz") => edge::error(
            &GatewayError::MethodNotAllowed {
                method: method.to_string(),
                path,
            },
            &request_id,
        ),
        (method, _) => edge::error(
            &GatewayError::RouteNotFound {
                method: method.to_string(),
                path,
            },
            &request_id,
        ),
    }
}

async fn chat(state: &InvokeState, request_id: RequestId, req: Request<Bytes>) -> Response<Body> {
    let body = req.body();
    if body.len() > state.max_body_bytes {
        let err = GatewayError::PayloadTooLarge {
            limit: state.max_body_bytes,
        };
        return edge::error(&err, &request_id);
    }
    let mut ctx = RequestContext::new(request_id.clone());
    ctx.deadline = tollgate::lambda::call_deadline(&req, state.deadline_margin);
    ctx.bypass_cache = req
        .headers()
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("no-cache") || v.contains("no-store"));
    let reply = state
        .chat
        .chat(&ctx, bearer_token(req.headers()), body)
        .await;
    let (mut response, meta) = match reply {
        Ok(ChatReply::Completion { body, meta }) => {
            (edge::json(StatusCode::OK, &body, &request_id), meta)
        }
        Ok(ChatReply::Stream { events, meta }) => (edge::sse(events, &request_id), meta),
        Err(err) => return edge::error(&err, &request_id),
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
    if !meta.documents.is_empty() {
        edge::set_header(
            &mut response,
            "x-tollgate-documents",
            &meta.documents.join(","),
        );
    }
    response
}

/// The `{user_id}` segment of `/v1/users/{user_id}/profile` (still percent-encoded).
fn profile_user(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/users/")?.strip_suffix("/profile")
}

async fn profile(
    state: &InvokeState,
    request_id: RequestId,
    method: Method,
    user: &str,
    req: &Request<Bytes>,
) -> Response<Body> {
    let bearer = bearer_token(req.headers());
    let limit = state
        .max_body_bytes
        .min(tollgate::domain::profile::MAX_BODY_BYTES);
    let result = match method {
        Method::PUT if req.body().len() > limit => Err(GatewayError::PayloadTooLarge { limit }),
        Method::PUT => state
            .chat
            .profile_service()
            .put_profile(bearer, user, req.body())
            .await
            .map(|view| edge::json(StatusCode::OK, &view, &request_id)),
        Method::GET => state
            .chat
            .profile_service()
            .get_profile(bearer, user)
            .await
            .map(|view| edge::json(StatusCode::OK, &view, &request_id)),
        Method::DELETE => state
            .chat
            .profile_service()
            .delete_profile(bearer, user)
            .await
            .map(|deleted| edge::json(StatusCode::OK, &deleted, &request_id)),
        method => Err(GatewayError::MethodNotAllowed {
            method: method.to_string(),
            path: format!("/v1/users/{user}/profile"),
        }),
    };
    result.unwrap_or_else(|err| edge::error(&err, &request_id))
}
