//! The Lambda edge shared by every function: API Gateway events in, buffered responses out.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};

use crate::domain::ids::RequestId;
use crate::http::Body;

/// The request id the platform assigned (API Gateway's), carried in request extensions.
/// Client headers are never trusted for it: it is the usage event's idempotency key.
#[derive(Debug, Clone)]
pub struct PlatformRequestId(pub String);

/// The AWS principal API Gateway authenticated the request as (its `AWS_IAM` authorizer):
/// the caller's IAM ARN, carried in request extensions. Only the platform's request context
/// sets it; no header can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformPrincipal(pub String);

/// When the Lambda invocation times out, carried in request extensions.
#[derive(Debug, Clone, Copy)]
pub struct PlatformDeadline(pub std::time::SystemTime);

/// When the request's provider calls must be over: the invocation's deadline less `margin`, so
/// that a call cut there is still metered before the platform stops the function. `None`
/// outside Lambda (no deadline in the extensions), and when the deadline had already passed
/// as the request arrived: Lambda hands an event over before its deadline, so such a value is
/// not one (cargo-lambda's emulator sends a constant 600,000 ms, a 1970 instant) and cutting
/// every call at once on it would fail every request.
pub fn call_deadline<B>(req: &Request<B>, margin: Duration) -> Option<tokio::time::Instant> {
    let PlatformDeadline(at) = req.extensions().get::<PlatformDeadline>()?;
    let Ok(left) = at.duration_since(std::time::SystemTime::now()) else {
        tracing::warn!("the runtime's invocation deadline had passed on arrival; ignoring it");
        return None;
    };
    Some(tokio::time::Instant::now() + left.saturating_sub(margin))
}

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
    let (platform_id, principal) = match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => (
            ctx.request_id.clone(),
            ctx.authorizer
                .as_ref()
                .and_then(|a| a.iam.as_ref())
                .and_then(|iam| iam.user_arn.clone()),
        ),
        Some(lambda_http::request::RequestContext::ApiGatewayV1(ctx)) => {
            (ctx.request_id.clone(), ctx.identity.user_arn.clone())
        }
        _ => (None, None),
    };
    let deadline = req
        .lambda_context_ref()
        .map(|cx| std::time::UNIX_EPOCH + Duration::from_millis(cx.deadline));
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
    if let Some(at) = deadline {
        out.extensions_mut().insert(PlatformDeadline(at));
    }
    if let Some(arn) = principal.filter(|arn| !arn.is_empty()) {
        out.extensions_mut().insert(PlatformPrincipal(arn));
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

/// Runs a function's routes (`tollgate::routes`) as a Lambda function behind API Gateway,
/// each response buffered (ingest, usage-report).
pub async fn serve<S: crate::routes::RouteTable>(state: S) -> Result<(), lambda_http::Error> {
    let state = std::sync::Arc::new(state);
    lambda_http::run(lambda_http::service_fn(move |req| {
        let state = state.clone();
        async move {
            let response = crate::routes::handle(&*state, from_lambda(req)).await;
            Ok::<_, std::convert::Infallible>(into_lambda(response).await)
        }
    }))
    .await
}

/// [`serve`] with response streaming (invoke): API Gateway (a REST API whose integration has
/// `ResponseTransferMode: STREAM`, see template.yaml) forwards each SSE chunk as the provider
/// sends it, so time to first token is the provider's; buffered JSON goes out in one piece.
pub async fn serve_streaming<S: crate::routes::RouteTable>(
    state: S,
) -> Result<(), lambda_http::Error> {
    let state = std::sync::Arc::new(state);
    lambda_http::run_with_streaming_response(lambda_http::service_fn(move |req| {
        let state = state.clone();
        async move {
            let response = crate::routes::handle(&*state, from_lambda(req)).await;
            Ok::<_, std::convert::Infallible>(response)
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_deadline(at: std::time::SystemTime) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(PlatformDeadline(at));
        req
    }

    #[test]
    fn a_future_deadline_less_the_margin_bounds_the_calls() {
        let req = with_deadline(std::time::SystemTime::now() + Duration::from_secs(60));
        let cut = call_deadline(&req, Duration::from_secs(3)).expect("a deadline");
        let left = cut - tokio::time::Instant::now();
        assert!(
            left > Duration::from_secs(50) && left <= Duration::from_secs(57),
            "{left:?}"
        );
    }

    #[test]
    fn a_deadline_inside_the_margin_cuts_calls_now() {
        let req = with_deadline(std::time::SystemTime::now() + Duration::from_secs(1));
        let cut = call_deadline(&req, Duration::from_secs(3)).expect("a deadline");
        assert!(cut <= tokio::time::Instant::now());
    }

    #[test]
    fn a_deadline_already_past_on_arrival_is_not_one() {
        // cargo-lambda's emulator sends `lambda-runtime-deadline-ms: 600000`.
        let req = with_deadline(std::time::UNIX_EPOCH + Duration::from_millis(600_000));
        assert!(call_deadline(&req, Duration::from_secs(3)).is_none());
        assert!(call_deadline(&Request::new(()), Duration::from_secs(3)).is_none());
    }
}
