//! The one error type every request path returns, and the one place it becomes a response.
//!
//! `status()` and `kind()` are exhaustive matches with no wildcard arm: a new variant forces a
//! decision about its status code and its metric bucket.

use std::time::Duration;

use serde::Serialize;

pub use crate::domain::usage::ErrorKind;

/// Why one document of an ingest request was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentRejection {
    /// Not a document object (a missing `text`, an unknown field, a wrong type).
    InvalidDocument,
    /// `id` is not a valid document id.
    InvalidId,
    /// `text` is empty or whitespace.
    Empty,
    /// `metadata` is over one of its bounds (`domain::documents`).
    InvalidMetadata,
    /// `title` is over its bound.
    InvalidTitle,
    /// `text` is over the per-document byte limit.
    TooLarge,
    /// `text` makes more chunks than one document may have.
    TooManyChunks,
    /// Storing the document would take the tenant over its storage quota.
    StorageQuotaExceeded,
}

/// Every way a request can fail, each with its status, metric kind and client message.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No `Authorization: Bearer` header, or not one of that shape (401).
    #[error(
        "missing or malformed Authorization header; expected `Authorization: Bearer <api key>`"
    )]
    MissingApiKey,
    /// The key is malformed, unknown or revoked (401).
    #[error("incorrect API key provided")]
    InvalidApiKey,
    /// The request is malformed or not allowed (400).
    #[error("{message}")]
    InvalidRequest {
        /// Said to the client as is.
        message: String,
        /// The request parameter at fault, when there is one.
        param: Option<String>,
    },
    /// The body is over the function's limit, in bytes (413).
    #[error("the request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The function's body limit, in bytes.
        limit: usize,
    },
    /// The tenant has no document with this id (404).
    #[error("no document `{id}` for this tenant")]
    DocumentNotFound {
        /// The document id asked for.
        id: String,
    },
    /// Another request is storing this document id; it is held until that request finishes.
    #[error(
        "document `{id}` is being stored by another request; retry when that request has finished"
    )]
    DocumentBusy {
        /// The document id being stored.
        id: String,
    },
    /// One document of an ingest request cannot be stored as sent. In a batch it is that
    /// document's result; a request of one document fails with it.
    #[error("{message}")]
    DocumentRejected {
        /// Which rule the document broke.
        reason: DocumentRejection,
        /// Said to the client as is.
        message: String,
    },
    /// The tenant has no profile for this user (404).
    #[error("no profile for user `{user_id}` in this tenant")]
    ProfileNotFound {
        /// The user id asked for.
        user_id: String,
    },
    /// No route matches the path (404).
    #[error("unknown route {method} {path}")]
    RouteNotFound {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The path exists but not for this method (405).
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The model is not one of the tenant's routes (404).
    #[error(
        "the model `{model}` does not exist or you do not have access to it; GET /v1/models lists the models available to you"
    )]
    ModelNotFound {
        /// The model name the client asked for.
        model: String,
    },
    /// The route points at a fine-tuned model another tenant owns, or none is known to (403).
    #[error(
        "the model `{model}` is routed to a fine-tuned model that does not belong to this tenant; the route is refused. Ask your operator to fix the routing"
    )]
    ForeignFineTunedModel {
        /// The model name the client asked for.
        model: String,
    },
    /// No price for the provider model a route serves; refused before the call (503).
    #[error(
        "no price is configured for `{provider_model}` (served for `{model}`); the request was refused before reaching the provider. Ask your operator to add it to the price table"
    )]
    PriceMissing {
        /// The logical model requested.
        model: String,
        /// The provider model it routes to.
        provider_model: String,
    },
    /// The route's provider is not configured in this deployment (503).
    #[error("the provider for `{model}` is not configured in this deployment")]
    ProviderUnavailable {
        /// The model name the client asked for.
        model: String,
    },
    /// A tenant limit or upstream quota refused the request (429).
    #[error("{message}")]
    RateLimited {
        /// Said to the client as is; names the limit.
        message: String,
        /// How long until the request could fit.
        retry_after: Duration,
        /// What the `x-ratelimit-*` headers report.
        rate: Box<crate::domain::limits::RateStatus>,
    },
    /// A dollar budget (the tenant's daily or monthly one, or an end user's daily one) has no
    /// room left for the request in its period (429, OpenAI's `insufficient_quota`).
    #[error("{message}")]
    BudgetExceeded {
        /// Said to the client as is: names the budget, the spend and when it resets.
        message: String,
        /// Until the period resets.
        retry_after: Duration,
    },
    /// A call that needs more tokens than the tenant's limit allows at all; `param` names
    /// what the client can shrink (`max_tokens` of a chat request, `text` of a document).
    #[error("{message}")]
    RequestTooLarge {
        /// Said to the client as is.
        message: String,
        /// The request parameter the client can shrink.
        param: &'static str,
    },
    /// The limiter's store failed; refused rather than admitted unmetered (503).
    #[error(
        "the rate limiter is unavailable, so the request was refused rather than admitted unmetered; retry shortly"
    )]
    LimiterUnavailable,
    /// The gateway's store (or the vector index) failed (503).
    #[error("the gateway's store is unavailable; the request was not processed. Retry shortly")]
    StoreUnavailable {
        /// Logged, never rendered.
        detail: String,
    },
    /// The vector index is rate limiting (503 with `Retry-After`).
    #[error(
        "the document index is busy; the request was not processed. Retry after {} s",
        retry_after.as_secs().max(1)
    )]
    IndexBusy {
        /// How long the index asked to wait.
        retry_after: Duration,
        /// Logged, never rendered.
        detail: String,
    },
    /// Retrieval returned another tenant's data; refused and logged (500).
    #[error(
        "retrieval returned data that does not belong to this tenant, so the request was refused; the incident is logged"
    )]
    IsolationViolation,
    /// The key's tenant is disabled (401).
    #[error("this tenant is disabled; contact your operator")]
    TenantDisabled,
    /// The key is valid but not for this route (403).
    #[error(
        "this API key does not have the `{scope}` scope this request needs; use a key with that scope, or ask your operator to issue one"
    )]
    InsufficientScope {
        /// The scope the route needs.
        scope: crate::domain::keys::KeyScope,
    },
    /// The provider answered 429 (429).
    #[error("the upstream provider is rate limiting requests; retry after {} s", retry_after.map_or(1, |d| d.as_secs().max(1)))]
    UpstreamRateLimited {
        /// How long the provider asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The provider did not answer in time (504).
    #[error("the upstream provider did not respond in time")]
    UpstreamTimeout,
    /// The provider refused the request as invalid (400); carries the provider's words.
    #[error("the upstream provider rejected the request: {message}")]
    UpstreamRejected {
        /// The provider's words about the request; safe to show the client.
        message: String,
    },
    /// A 5xx, a broken connection or an unreadable answer. The provider's words can carry
    /// anything (internal hostnames, other requests' ids, our key's prefix), so they are
    /// logged and never rendered.
    #[error(
        "the upstream provider failed to complete the request; the request id identifies it in our logs"
    )]
    Upstream {
        /// Logged, never rendered.
        detail: String,
    },
    /// The provider refused the gateway's own key: the operator's problem, said as such so
    /// the tenant knows retrying will not help. The provider's words are not rendered either.
    #[error(
        "the upstream provider refused the gateway's credentials; the operator must fix them. The request id identifies it in our logs"
    )]
    UpstreamCredentials {
        /// Logged, never rendered.
        detail: String,
    },
    /// The model's reply does not have the `response_format` the request asked for. The call
    /// was made and is billed; the reply is withheld.
    #[error("{failure}")]
    ResponseValidation {
        /// Where the reply failed its format, and which rule.
        failure: Box<crate::domain::structured::ValidationFailure>,
    },
    /// A bug or an unexpected failure on our side (500).
    #[error("internal error; the request id identifies it in our logs")]
    Internal {
        /// Logged, never rendered.
        detail: String,
    },
}

impl GatewayError {
    /// An [`GatewayError::InvalidRequest`] with `message` and the parameter at fault.
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<String>>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: param.into(),
        }
    }

    /// A [`GatewayError::Internal`]; `detail` is logged, never rendered.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal {
            detail: detail.to_string(),
        }
    }

    /// The HTTP status the client gets.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::MissingApiKey | Self::InvalidApiKey | Self::TenantDisabled => S::UNAUTHORIZED,
            Self::InvalidRequest { .. } | Self::RequestTooLarge { .. } => S::BAD_REQUEST,
            Self::DocumentRejected { reason, .. } => match reason {
                DocumentRejection::InvalidDocument
                | DocumentRejection::InvalidId
                | DocumentRejection::Empty
                | DocumentRejection::InvalidMetadata
                | DocumentRejection::InvalidTitle => S::BAD_REQUEST,
                DocumentRejection::TooLarge | DocumentRejection::TooManyChunks => {
                    S::PAYLOAD_TOO_LARGE
                }
                // Not 409 or 429: the OpenAI SDKs retry those, and only deleting documents
                // (or a higher tier) helps. Google Drive answers a full quota with 403 too.
                DocumentRejection::StorageQuotaExceeded => S::FORBIDDEN,
            },
            Self::LimiterUnavailable | Self::StoreUnavailable { .. } | Self::IndexBusy { .. } => {
                S::SERVICE_UNAVAILABLE
            }
            Self::IsolationViolation => S::INTERNAL_SERVER_ERROR,
            Self::PayloadTooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            Self::RouteNotFound { .. }
            | Self::ModelNotFound { .. }
            | Self::DocumentNotFound { .. }
            | Self::ProfileNotFound { .. } => S::NOT_FOUND,
            Self::MethodNotAllowed { .. } => S::METHOD_NOT_ALLOWED,
            // The one retryable client error: the other request will finish (the OpenAI SDKs
            // retry 409s by themselves).
            Self::DocumentBusy { .. } => S::CONFLICT,
            Self::ForeignFineTunedModel { .. } | Self::InsufficientScope { .. } => S::FORBIDDEN,
            Self::PriceMissing { .. } | Self::ProviderUnavailable { .. } => S::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. }
            | Self::UpstreamRateLimited { .. }
            | Self::BudgetExceeded { .. } => S::TOO_MANY_REQUESTS,
            Self::UpstreamTimeout => S::GATEWAY_TIMEOUT,
            Self::UpstreamRejected { .. } => S::BAD_REQUEST,
            Self::Upstream { .. } | Self::UpstreamCredentials { .. } => S::BAD_GATEWAY,
            // The request was fine and the provider answered, but the answer is unusable as
            // asked: 422, as for content that cannot be processed (OpenAI's SDKs raise
            // `UnprocessableEntityError`), and distinct from every other status here.
            Self::ResponseValidation { .. } => S::UNPROCESSABLE_ENTITY,
            Self::Internal { .. } => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The low-cardinality kind for metrics and usage events.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::MissingApiKey
            | Self::InvalidApiKey
            | Self::TenantDisabled
            | Self::InsufficientScope { .. } => ErrorKind::Authentication,
            Self::LimiterUnavailable
            | Self::StoreUnavailable { .. }
            | Self::IndexBusy { .. }
            | Self::IsolationViolation => ErrorKind::Application,
            Self::RequestTooLarge { .. } => ErrorKind::RateLimited,
            Self::InvalidRequest { .. }
            | Self::PayloadTooLarge { .. }
            | Self::RouteNotFound { .. }
            | Self::DocumentNotFound { .. }
            | Self::DocumentBusy { .. }
            | Self::DocumentRejected { .. }
            | Self::ProfileNotFound { .. }
            | Self::MethodNotAllowed { .. }
            | Self::ModelNotFound { .. }
            | Self::UpstreamRejected { .. } => ErrorKind::InvalidRequest,
            Self::ForeignFineTunedModel { .. }
            | Self::PriceMissing { .. }
            | Self::ProviderUnavailable { .. } => ErrorKind::Configuration,
            Self::RateLimited { .. } => ErrorKind::RateLimited,
            Self::BudgetExceeded { .. } => ErrorKind::BudgetExceeded,
            Self::UpstreamRateLimited { .. } => ErrorKind::UpstreamRateLimited,
            Self::UpstreamTimeout => ErrorKind::Timeout,
            Self::Upstream { .. } | Self::UpstreamCredentials { .. } => ErrorKind::UpstreamError,
            Self::ResponseValidation { .. } => ErrorKind::Validation,
            Self::Internal { .. } => ErrorKind::Application,
        }
    }

    /// The OpenAI `error.type` string.
    fn openai_type(&self) -> &'static str {
        if let Self::BudgetExceeded { .. } = self {
            return "insufficient_quota";
        }
        match self.status().as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// The OpenAI `error.code` string.
    fn openai_code(&self) -> Option<&'static str> {
        Some(match self {
            Self::MissingApiKey => "missing_api_key",
            Self::InvalidApiKey => "invalid_api_key",
            Self::TenantDisabled => "tenant_disabled",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::RequestTooLarge { .. } => "request_too_large",
            Self::LimiterUnavailable => "rate_limiter_unavailable",
            Self::StoreUnavailable { .. } => "store_unavailable",
            Self::IndexBusy { .. } => "index_busy",
            Self::IsolationViolation => "isolation_check_failed",
            Self::InvalidRequest { .. } => return None,
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RouteNotFound { .. } => "unknown_url",
            Self::DocumentNotFound { .. } => "document_not_found",
            Self::DocumentBusy { .. } => "document_busy",
            Self::DocumentRejected { reason, .. } => match reason {
                DocumentRejection::InvalidDocument => "invalid_document",
                DocumentRejection::InvalidId => "invalid_document_id",
                DocumentRejection::Empty => "empty_document",
                DocumentRejection::InvalidMetadata => "invalid_metadata",
                DocumentRejection::InvalidTitle => "invalid_title",
                DocumentRejection::TooLarge => "document_too_large",
                DocumentRejection::TooManyChunks => "too_many_chunks",
                DocumentRejection::StorageQuotaExceeded => "storage_quota_exceeded",
            },
            Self::ProfileNotFound { .. } => "profile_not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::ForeignFineTunedModel { .. } => "model_route_forbidden",
            Self::PriceMissing { .. } => "model_price_missing",
            Self::ProviderUnavailable { .. } => "provider_unavailable",
            Self::RateLimited { .. } => "rate_limit_exceeded",
            Self::BudgetExceeded { .. } => "insufficient_quota",
            Self::UpstreamRateLimited { .. } => "upstream_rate_limited",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamRejected { .. } => "upstream_rejected",
            Self::Upstream { .. } | Self::UpstreamCredentials { .. } => "upstream_error",
            Self::ResponseValidation { .. } => "response_validation_failed",
            Self::Internal { .. } => "internal_error",
        })
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => param.as_deref(),
            Self::RequestTooLarge { param, .. } => Some(param),
            Self::ModelNotFound { .. } | Self::ForeignFineTunedModel { .. } => Some("model"),
            Self::ProfileNotFound { .. } => Some("user_id"),
            Self::DocumentBusy { .. } => Some("id"),
            Self::ResponseValidation { .. } => Some("response_format"),
            Self::DocumentRejected { reason, .. } => match reason {
                DocumentRejection::InvalidId => Some("id"),
                DocumentRejection::Empty
                | DocumentRejection::TooLarge
                | DocumentRejection::TooManyChunks => Some("text"),
                DocumentRejection::InvalidMetadata => Some("metadata"),
                DocumentRejection::InvalidTitle => Some("title"),
                DocumentRejection::InvalidDocument | DocumentRejection::StorageQuotaExceeded => {
                    None
                }
            },
            _ => None,
        }
    }

    /// What is logged about an error and never rendered (the store's or provider's own words).
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Internal { detail }
            | Self::Upstream { detail }
            | Self::UpstreamCredentials { detail }
            | Self::StoreUnavailable { detail }
            | Self::IndexBusy { detail, .. } => Some(detail),
            _ => None,
        }
    }

    /// Seconds a client should wait before retrying, when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::IndexBusy { retry_after, .. }
            | Self::BudgetExceeded { retry_after, .. } => Some(*retry_after),
            Self::LimiterUnavailable | Self::StoreUnavailable { .. } => {
                Some(Duration::from_secs(1))
            }
            Self::UpstreamRateLimited { retry_after } => {
                Some(retry_after.unwrap_or(Duration::from_secs(1)))
            }
            _ => None,
        }
    }

    /// The response body in the OpenAI error shape. The only place error bodies are rendered.
    pub fn to_body(&self) -> ErrorBody<'_> {
        let failure = match self {
            Self::ResponseValidation { failure } => Some(failure.as_ref()),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                r#type: self.openai_type(),
                param: self.param(),
                code: self.openai_code(),
                instance_path: failure.map(|f| f.instance_path.as_str()),
                schema_path: failure.map(|f| f.schema_path.as_str()),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The one seam: every error of a domain module, port or service becomes a `GatewayError` here,
// by an exhaustive match, so a new variant forces a decision about what the client sees.
// ---------------------------------------------------------------------------------------------

/// A model the tenant does not route is a 404; one it may not use (another tenant's
/// fine-tuned model) a 403; one of another kind (an embeddings model asked to chat) a 400.
impl From<crate::domain::routing::RouteError> for GatewayError {
    fn from(err: crate::domain::routing::RouteError) -> Self {
        use crate::domain::routing::RouteError as E;
        match err {
            E::UnknownModel { model } => Self::ModelNotFound { model },
            E::ForeignFineTuned { model } => Self::ForeignFineTunedModel { model },
            E::WrongKind { .. } => Self::invalid(err.to_string(), Some("model".to_owned())),
        }
    }
}

/// An unreachable or throttled store is a 503 the client may retry; a corrupt item is our bug.
impl From<crate::ports::store::StoreError> for GatewayError {
    fn from(err: crate::ports::store::StoreError) -> Self {
        use crate::ports::store::StoreError as E;
        match err {
            E::Unavailable(_) | E::Throttled => Self::StoreUnavailable {
                detail: err.to_string(),
            },
            E::Corrupt(_) | E::NotFound(_) | E::Conflict { .. } => Self::internal(err),
        }
    }
}

/// A profile that does not fit its rules is the client's 400, naming the field.
impl From<crate::domain::profile::ProfileError> for GatewayError {
    fn from(err: crate::domain::profile::ProfileError) -> Self {
        Self::invalid(err.to_string(), Some(err.param()))
    }
}

/// A provider failure as the client sees it. Only a rejection keeps the provider's words (they
/// are about the client's request); 5xx and credential failures keep them for logs only.
impl From<crate::ports::provider::ProviderError> for GatewayError {
    fn from(err: crate::ports::provider::ProviderError) -> Self {
        use crate::ports::provider::ProviderErrorKind as K;
        match err.kind {
            K::RateLimited { retry_after } => Self::UpstreamRateLimited { retry_after },
            K::Timeout => Self::UpstreamTimeout,
            K::Upstream => Self::Upstream {
                detail: format!("{}: {}", err.provider, err.message),
            },
            K::Rejected => Self::UpstreamRejected {
                message: err.message,
            },
            K::Credentials => Self::UpstreamCredentials {
                detail: format!("{}: {}", err.provider, err.message),
            },
        }
    }
}

/// An index failure as the client sees it: 503, with `Retry-After` when the index gave one.
impl From<crate::ports::vector::IndexError> for GatewayError {
    fn from(err: crate::ports::vector::IndexError) -> Self {
        use crate::ports::vector::IndexError as E;
        match err {
            E::Busy {
                retry_after,
                detail,
            } => Self::IndexBusy {
                retry_after,
                detail,
            },
            E::Unavailable(_) | E::Rejected(_) | E::Corrupt(_) => Self::StoreUnavailable {
                detail: err.to_string(),
            },
        }
    }
}

/// A title or metadata over its bound: that document's 400, naming the field.
impl From<crate::domain::documents::DocumentFieldError> for GatewayError {
    fn from(error: crate::domain::documents::DocumentFieldError) -> Self {
        use crate::domain::documents::DocumentFieldError as E;
        let reason = match error {
            E::TitleTooLong { .. } => DocumentRejection::InvalidTitle,
            E::TooManyEntries { .. }
            | E::KeyTooLong { .. }
            | E::ValueTooLong { .. }
            | E::MetadataTooLarge { .. } => DocumentRejection::InvalidMetadata,
        };
        Self::DocumentRejected {
            reason,
            message: error.to_string(),
        }
    }
}

/// The body of every error response: OpenAI's error shape.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error.
    pub error: ErrorDetail<'a>,
}

/// OpenAI's `error` object.
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    /// What went wrong, for the client.
    pub message: String,
    /// OpenAI's `error.type` (`invalid_request_error`, `rate_limit_error`, ...).
    pub r#type: &'static str,
    /// The request parameter at fault, when there is one.
    pub param: Option<&'a str>,
    /// A stable code for the error (`model_not_found`, ...); `None` for a generic invalid request.
    pub code: Option<&'static str>,
    /// `response_validation_failed` only (also in the message): JSON Pointers to the failing
    /// value in the model's reply and to the failing keyword in the schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_path: Option<&'a str>,
    /// `response_validation_failed` only: the failing keyword in the schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_path: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_render_their_detail() {
        let err = GatewayError::internal("dynamodb said: secret-table-name exploded");
        let body = serde_json::to_string(&err.to_body()).unwrap_or_default();
        assert!(!body.contains("secret-table-name"), "{body}");
        assert_eq!(err.status(), 500);
        assert_eq!(err.kind(), ErrorKind::Application);
    }

    #[test]
    fn upstream_failures_never_render_the_providers_words() {
        let err = GatewayError::from(crate::ports::provider::ProviderError::new(
            crate::domain::tenant::ProviderKind::Openai,
            crate::ports::provider::ProviderErrorKind::Upstream,
            "HTTP 502: canary-5xx-text from upstream-host.internal",
        ));
        let body = serde_json::to_string(&err.to_body()).unwrap_or_default();
        assert!(!body.contains("canary-5xx-text"), "{body}");
        assert!(!err.to_string().contains("canary-5xx-text"));
        assert!(err.detail().is_some_and(|d| d.contains("canary-5xx-text")));
        assert_eq!(err.status(), 502);

        // A refused key is said to be one, still without the provider's words.
        let err = GatewayError::from(crate::ports::provider::ProviderError::new(
            crate::domain::tenant::ProviderKind::Anthropic,
            crate::ports::provider::ProviderErrorKind::Credentials,
            "authentication_error: canary-key-text",
        ));
        let body = serde_json::to_string(&err.to_body()).unwrap_or_default();
        assert!(body.contains("credentials"), "{body}");
        assert!(!body.contains("canary-key-text"), "{body}");
        assert_eq!(
            (err.status().as_u16(), err.kind()),
            (502, ErrorKind::UpstreamError)
        );
    }

    #[test]
    fn errors_render_in_the_openai_shape() {
        let err = GatewayError::invalid("messages must not be empty", Some("messages".into()));
        let body: serde_json::Value =
            serde_json::to_value(err.to_body()).unwrap_or(serde_json::Value::Null);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "messages");
        assert_eq!(body["error"]["message"], "messages must not be empty");
        assert!(body["error"]["code"].is_null());
    }

    #[test]
    fn status_codes_follow_openai_conventions() {
        assert_eq!(GatewayError::InvalidApiKey.status(), 401);
        assert_eq!(
            GatewayError::ModelNotFound { model: "x".into() }.status(),
            404
        );
        assert_eq!(
            GatewayError::UpstreamRateLimited { retry_after: None }.status(),
            429
        );
        assert_eq!(GatewayError::UpstreamTimeout.status(), 504);
        assert_eq!(
            GatewayError::UpstreamRateLimited { retry_after: None }.retry_after(),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_reply_validation_failure_is_a_422_naming_response_format_and_both_paths() {
        let err = GatewayError::ResponseValidation {
            failure: Box::new(crate::domain::structured::ValidationFailure {
                schema_name: Some("person".into()),
                instance_path: "/age".into(),
                schema_path: "/properties/age/type".into(),
                reason: "the value is not of type \"integer\"".into(),
                more: 0,
            }),
        };
        assert_eq!(err.status(), 422);
        assert_eq!(err.kind(), ErrorKind::Validation);
        assert_eq!(err.kind().as_str(), "validation");
        let body = serde_json::to_value(err.to_body()).unwrap_or_default();
        assert_eq!(body["error"]["code"], "response_validation_failed");
        assert_eq!(body["error"]["param"], "response_format");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["instance_path"], "/age");
        assert_eq!(body["error"]["schema_path"], "/properties/age/type");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("`/age`") && message.contains("`/properties/age/type`"));
        // Other errors keep exactly the four OpenAI fields.
        let other = serde_json::to_value(GatewayError::InvalidApiKey.to_body()).unwrap_or_default();
        assert_eq!(other["error"].as_object().map(|o| o.len()), Some(4));
    }

    #[test]
    fn a_rejected_document_is_a_400_413_or_403_naming_its_field() {
        let body = |reason| {
            let err = GatewayError::DocumentRejected {
                reason,
                message: "m".into(),
            };
            assert_eq!(err.kind(), ErrorKind::InvalidRequest);
            let body = serde_json::to_value(err.to_body()).unwrap_or_default();
            (
                err.status().as_u16(),
                body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body["error"]["param"].as_str().map(str::to_owned),
            )
        };
        let text = Some("text".to_owned());
        assert_eq!(
            body(DocumentRejection::TooLarge),
            (413, "document_too_large".into(), text.clone())
        );
        assert_eq!(
            body(DocumentRejection::TooManyChunks),
            (413, "too_many_chunks".into(), text.clone())
        );
        assert_eq!(
            body(DocumentRejection::Empty),
            (400, "empty_document".into(), text)
        );
        assert_eq!(
            body(DocumentRejection::InvalidId),
            (400, "invalid_document_id".into(), Some("id".into()))
        );
        assert_eq!(
            body(DocumentRejection::StorageQuotaExceeded),
            (403, "storage_quota_exceeded".into(), None)
        );
        assert_eq!(
            body(DocumentRejection::InvalidTitle),
            (400, "invalid_title".into(), Some("title".into()))
        );
    }

    #[test]
    fn a_document_held_by_another_request_is_a_409_naming_its_id() {
        let err = GatewayError::DocumentBusy { id: "faq".into() };
        assert_eq!(err.status(), 409);
        assert_eq!(err.kind(), ErrorKind::InvalidRequest);
        let body = serde_json::to_value(err.to_body()).unwrap_or_default();
        assert_eq!(body["error"]["code"], "document_busy");
        assert_eq!(body["error"]["param"], "id");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn error_kinds_bucket_metrics() {
        assert_eq!(GatewayError::UpstreamTimeout.kind().as_str(), "timeout");
        assert_eq!(
            GatewayError::Upstream {
                detail: "503".into()
            }
            .kind(),
            ErrorKind::UpstreamError
        );
        assert_eq!(
            GatewayError::PriceMissing {
                model: "m".into(),
                provider_model: "p".into()
            }
            .kind(),
            ErrorKind::Configuration
        );
    }
}
