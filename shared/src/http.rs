//! The framework-agnostic HTTP edge shared by every function.
//!
//! Handlers take `http::Request<Bytes>` and return `http::Response<Body>`; the Lambda runtime
//! (`lambda_http`) and the local server (`tollgate serve`) each adapt these to their own types.
//! Error responses are rendered here and nowhere else.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body::Frame;
use serde::Serialize;

use crate::domain::ids::RequestId;
use crate::error::GatewayError;

/// The response header carrying the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A streamed response body: its bytes, chunk by chunk.
pub type ByteStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// A response body: complete bytes, or a stream of chunks (server-sent events).
pub enum Body {
    /// The whole body at once; `None` once sent (or when empty).
    Full(Option<Bytes>),
    /// A body sent as its chunks arrive (server-sent events).
    Stream(ByteStream),
}

impl Body {
    /// A body of `bytes`.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Full(None)
    }

    /// Collects the body; for a stream this waits for its end.
    pub async fn collect(self) -> Bytes {
        use futures_util::StreamExt;
        match self {
            Self::Full(bytes) => bytes.unwrap_or_default(),
            Self::Stream(mut stream) => {
                let mut out = Vec::new();
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk);
                }
                Bytes::from(out)
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(stream) => stream
                .as_mut()
                .poll_next(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }
}

/// A JSON response with the request id header.
pub fn json<T: Serialize>(status: StatusCode, value: &T, request_id: &RequestId) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_request_id(
            Response::builder()
                .status(status)
                .header(CONTENT_TYPE, "application/json")
                .body(Body::full(bytes)),
            request_id,
        ),
        Err(e) => error(&GatewayError::internal(e), request_id),
    }
}

/// The one place an error becomes a response: OpenAI's error shape, `Retry-After` when known.
pub fn error(err: &GatewayError, request_id: &RequestId) -> Response<Body> {
    let body = serde_json::to_vec(&err.to_body()).unwrap_or_else(|_| {
        br#"{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}"#.to_vec()
    });
    error_response(err, body, request_id)
}

/// [`error`] in Anthropic's error shape, for the Messages API: the same status and headers.
pub fn anthropic_error(err: &GatewayError, request_id: &RequestId) -> Response<Body> {
    let body =
        serde_json::to_vec(&crate::render::anthropic::error_body(err)).unwrap_or_else(|_| {
            br#"{"type":"error","error":{"type":"api_error","message":"internal error"}}"#.to_vec()
        });
    error_response(err, body, request_id)
}

fn error_response(err: &GatewayError, body: Vec<u8>, request_id: &RequestId) -> Response<Body> {
    let mut builder = Response::builder()
        .status(err.status())
        .header(CONTENT_TYPE, "application/json");
    if let Some(after) = err.retry_after() {
        builder = builder.header(http::header::RETRY_AFTER, after.as_secs().max(1));
    }
    if let GatewayError::RateLimited { rate, .. } = err {
        for (name, value) in rate.headers() {
            builder = builder.header(name, value);
        }
    }
    // A spent budget does not come back within an SDK's retry window: the OpenAI SDKs honour
    // `x-should-retry: false` and surface the 429 at once instead of retrying it.
    if let GatewayError::BudgetExceeded { .. } = err {
        builder = builder.header("x-should-retry", "false");
    }
    with_request_id(builder.body(Body::full(body)), request_id)
}

/// [`error`], after one JSON log line about it: `request_id`, `error_type` and `status`, the
/// fields the saved Logs Insights queries read. For handlers whose service does not log its own
/// failures (usage-report; invoke's chat service logs them with the tenant). Server errors are
/// logged at `error` with their detail, refusals at `info`.
pub fn logged_error(err: &GatewayError, request_id: &RequestId) -> Response<Body> {
    let status = err.status().as_u16();
    let error_type = err.kind().as_str();
    if err.status().is_server_error() {
        let detail = err.detail().unwrap_or_default();
        tracing::error!(request_id = %request_id, error_type, status, %err, detail, "request failed");
    } else {
        tracing::info!(request_id = %request_id, error_type, status, %err, "request refused");
    }
    error(err, request_id)
}

/// A `text/event-stream` response.
pub fn sse(stream: ByteStream, request_id: &RequestId) -> Response<Body> {
    with_request_id(
        Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "text/event-stream")
            .header(http::header::CACHE_CONTROL, "no-cache")
            .body(Body::Stream(stream)),
        request_id,
    )
}

fn with_request_id(
    built: Result<Response<Body>, http::Error>,
    request_id: &RequestId,
) -> Response<Body> {
    // Building only fails on invalid header values, and every value above is static or numeric.
    let mut response = built.unwrap_or_else(|_| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    });
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

/// The bearer token from `Authorization`, if well formed.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Inserts a header whose value came from data (never fails the response).
pub fn set_header(response: &mut Response<Body>, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_extracted_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer"),
        );
        assert_eq!(bearer_token(&headers), None);
    }

    #[tokio::test]
    async fn error_responses_carry_retry_after_and_the_request_id() {
        let id = RequestId::from_upstream("req-1");
        let err = GatewayError::UpstreamRateLimited {
            retry_after: Some(std::time::Duration::from_secs(7)),
        };
        let response = error(&err, &id);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(response.headers()["x-request-id"], "req-1");
        let body: serde_json::Value =
            serde_json::from_slice(&response.into_body().collect().await).unwrap();
        assert_eq!(body["error"]["code"], "upstream_rate_limited");
    }
}
