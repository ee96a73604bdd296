//! The Lambda edge shared by every function: API Gateway events in, buffered responses out.

use bytes::Bytes;
use http::{Request, Response};

use crate::domain::ids::RequestId;
use crate::http::Body;

/// The request id the platform assigned (API Gateway's), carried in request extensions.
/// Client headers are never trusted for it: it is the usage event's idempotency key.
#[derive(Debug, Clone)]
pub struct PlatformRequestId(pub String);

/// The request's id: the platform's when there is one, a fresh one otherwise.
pub fn request_id<B>(req: &Request<B>) -> RequestId {
    req.extensions()
        .get::<PlatformRequestId>()
        .map_or_else(RequestId::generate, |id| RequestId::from_upstream(&id.0))
}

/// Converts a Lambda HTTP event into the framework-agnostic request, keeping API Gateway's
/// request id.
pub fn from_lambda(req: lambda_http::Request) -> Request<Bytes> {
    use lambda_http::RequestExt;
    let platform_id = match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        Some(lambda_http::request::RequestContext::ApiGatewayV1(ctx)) => ctx.request_id.clone(),
        _ => None,
    };
    let (parts, body) = req.into_parts();
    let bytes = match body {
        lambda_http::Body::Text(text) => Bytes::from(text),
        lambda_http::Body::Binary(bin) => Bytes::from(bin),
        _ => Bytes::new(),
    };
    let mut out = Request::from_parts(parts, bytes);
    if let Some(id) = platform_id {
        out.extensions_mut().insert(PlatformRequestId(id));
    }
    out
}

/// Collects a response for Lambda's buffered (API Gateway proxy) mode.
pub async fn into_lambda(response: Response<Body>) -> Response<lambda_http::Body> {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await;
    let body = match String::from_utf8(bytes.to_vec()) {
        Ok(text) => lambda_http::Body::Text(text),
        Err(_) => lambda_http::Body::Binary(bytes.to_vec()),
    };
    Response::from_parts(parts, body)
}
