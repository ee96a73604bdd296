//! The ingest function: tenant documents for retrieval.
//!
//! Routes (under any API Gateway stage prefix):
//! - `POST   /v1/documents`      one document or `{"documents": [...]}`; a batch gets 200 with
//!   per-document results, a single document that cannot be stored gets its own error status
//! - `GET    /v1/documents`      the tenant's documents by id, a page at a time (`limit`,
//!   `cursor`: `next_cursor` of the previous page)
//! - `DELETE /v1/documents/{id}` a document and its chunks

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::json;
use tollgate::GatewayError;
use tollgate::bootstrap::{BootError, Stores, ingest_service};
use tollgate::config::Settings;
use tollgate::domain::keys::KeyScope;
use tollgate::http::{self as edge, Body, bearer_token};
use tollgate::ports::MetricsSink;
use tollgate::ports::vector::VectorIndex;
use tollgate::routes::{Handler, Params, Route, RouteTable};
use tollgate::service::RequestContext;
use tollgate::service::caller::{Caller, Callers};
use tollgate::service::ingest::IngestService;

/// What ingest may touch: the ingest service's ports, the caller extractor, the body limit.
#[derive(Clone)]
pub struct IngestState {
    /// Documents in, chunks embedded and indexed.
    pub ingest: IngestService,
    /// Resolves each request's caller from its key.
    pub callers: Callers,
    /// Larger request bodies get a 413.
    pub max_body_bytes: usize,
    /// Embedding calls end this long before the invocation's deadline (metering time).
    pub deadline_margin: std::time::Duration,
}

impl IngestState {
    /// Ingest's state from settings, over `index`: the one constructor every `main`,
    /// `tollgate serve` and the test harness use. Makes no network call.
    pub fn build(
        settings: &Settings,
        stores: &Stores,
        metrics: Arc<dyn MetricsSink>,
        index: Arc<dyn VectorIndex>,
    ) -> Result<Self, BootError> {
        Ok(Self {
            ingest: ingest_service(settings, stores, metrics, index)?,
            callers: stores.callers(),
            max_body_bytes: settings.edge.max_body_bytes,
            deadline_margin: settings.edge.deadline_margin,
        })
    }
}

impl RouteTable for IngestState {
    const ROUTES: &'static [Route<Self>] = &[
        Route {
            method: Method::POST,
            path: "/v1/documents",
            handler: Handler::Open(|s, req, _| Box::pin(ingest(s, req))),
        },
        Route {
            method: Method::GET,
            path: "/v1/documents",
            handler: Handler::Tenant(Some(KeyScope::Documents), |s, c, req, _| {
                Box::pin(list(s, c, req))
            }),
        },
        Route {
            method: Method::DELETE,
            path: "/v1/documents/{*id}",
            handler: Handler::Tenant(Some(KeyScope::Documents), |s, c, req, p| {
                Box::pin(delete(s, c, req, p))
            }),
        },
    ];

    fn callers(&self) -> &Callers {
        &self.callers
    }
}

/// Serves one request with ingest's route table.
pub async fn handle(state: &IngestState, req: Request<Bytes>) -> Response<Body> {
    tollgate::routes::handle(state, req).await
}

/// Whether this function serves `path` (any method).
pub fn owns(path: &str) -> bool {
    tollgate::routes::owns::<IngestState>(path)
}

/// `POST /v1/documents`. The caller is resolved here rather than by the route table, so a
/// refused key is metered like any refused upload (a metrics record and a log line).
async fn ingest(state: &IngestState, req: Request<Bytes>) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    if req.body().len() > state.max_body_bytes {
        let err = GatewayError::PayloadTooLarge {
            limit: state.max_body_bytes,
        };
        return edge::error(&err, &request_id);
    }
    let mut ctx = RequestContext::new(request_id.clone());
    ctx.deadline = tollgate::lambda::call_deadline(&req, state.deadline_margin);
    let caller = match state
        .callers
        .resolve(bearer_token(req.headers()), Some(KeyScope::Documents))
        .await
    {
        Ok(caller) => caller,
        Err(refused) => {
            state.ingest.refused(&ctx, &refused);
            return edge::error(&refused.error, &request_id);
        }
    };
    match state.ingest.ingest(&ctx, &caller, req.body()).await {
        Ok(report) => edge::json(StatusCode::OK, &report, &request_id),
        Err(err) => edge::error(&err, &request_id),
    }
}

async fn list(state: &IngestState, caller: Caller, req: Request<Bytes>) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    match state.ingest.list(&caller, req.uri().query()).await {
        Ok(page) => edge::json(StatusCode::OK, &page, &request_id),
        Err(err) => edge::error(&err, &request_id),
    }
}

async fn delete(
    state: &IngestState,
    caller: Caller,
    req: Request<Bytes>,
    params: Params,
) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    let id = params.get("id");
    match state.ingest.delete(&caller, id).await {
        Ok(true) => edge::json(
            StatusCode::OK,
            &json!({"id": id, "object": "document", "deleted": true}),
            &request_id,
        ),
        Ok(false) => edge::error(
            &GatewayError::DocumentNotFound { id: id.to_owned() },
            &request_id,
        ),
        Err(err) => edge::error(&err, &request_id),
    }
}
