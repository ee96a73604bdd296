//! The ingest function: tenant documents for retrieval.
//!
//! Routes (under any API Gateway stage prefix):
//! - `POST   /v1/documents`      one document or `{"documents": [...]}`; a batch gets 200 with
//!   per-document results, a single document that cannot be stored gets its own error status
//! - `GET    /v1/documents`      the tenant's documents by id, a page at a time (`limit`,
//!   `cursor`: `next_cursor` of the previous page)
//! - `DELETE /v1/documents/{id}` a document and its chunks

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::json;
use tollgate::GatewayError;
use tollgate::http::{self as edge, Body, bearer_token};
use tollgate::routes::{Params, Route, RouteTable};
use tollgate::service::ingest::IngestService;

#[derive(Clone)]
pub struct IngestState {
    pub ingest: IngestService,
    pub max_body_bytes: usize,
    /// Embedding calls end this long before the invocation's deadline (metering time).
    pub deadline_margin: std::time::Duration,
}

impl RouteTable for IngestState {
    const ROUTES: &'static [Route<Self>] = &[
        Route {
            method: Method::POST,
            path: "/v1/documents",
            handler: |s, req, _| Box::pin(ingest(s, req)),
        },
        Route {
            method: Method::GET,
            path: "/v1/documents",
            handler: |s, req, _| Box::pin(list(s, req)),
        },
        Route {
            method: Method::DELETE,
            path: "/v1/documents/{*id}",
            handler: |s, req, p| Box::pin(delete(s, req, p)),
        },
    ];
}

/// Serves one request with ingest's route table.
pub async fn handle(state: &IngestState, req: Request<Bytes>) -> Response<Body> {
    tollgate::routes::handle(state, req).await
}

/// Whether this function serves `path` (any method).
pub fn owns(path: &str) -> bool {
    tollgate::routes::owns::<IngestState>(path)
}

async fn ingest(state: &IngestState, req: Request<Bytes>) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    let result = if req.body().len() > state.max_body_bytes {
        Err(GatewayError::PayloadTooLarge {
            limit: state.max_body_bytes,
        })
    } else {
        state
            .ingest
            .ingest(
                &request_id,
                bearer_token(req.headers()),
                req.body(),
                tollgate::lambda::call_deadline(&req, state.deadline_margin),
            )
            .await
    };
    match result {
        Ok(report) => edge::json(StatusCode::OK, &report, &request_id),
        Err(err) => edge::error(&err, &request_id),
    }
}

async fn list(state: &IngestState, req: Request<Bytes>) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    match state
        .ingest
        .list(bearer_token(req.headers()), req.uri().query())
        .await
    {
        Ok(page) => edge::json(StatusCode::OK, &page, &request_id),
        Err(err) => edge::error(&err, &request_id),
    }
}

async fn delete(state: &IngestState, req: Request<Bytes>, params: Params) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    let id = params.get("id");
    match state.ingest.delete(bearer_token(req.headers()), id).await {
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
