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
use tollgate::http::{self as edge, Body, bearer_token, route_path};
use tollgate::service::ingest::IngestService;

#[derive(Clone)]
pub struct IngestState {
    pub ingest: IngestService,
    pub max_body_bytes: usize,
    /// Embedding calls end this long before the invocation's deadline (metering time).
    pub deadline_margin: std::time::Duration,
}

pub async fn handle(state: &IngestState, req: Request<Bytes>) -> Response<Body> {
    let request_id = tollgate::lambda::request_id(&req);
    let path = route_path(req.uri().path()).to_owned();
    let bearer = bearer_token(req.headers());
    let result = match (req.method().clone(), path.as_str()) {
        (Method::POST, "/v1/documents") => {
            if req.body().len() > state.max_body_bytes {
                Err(GatewayError::PayloadTooLarge {
                    limit: state.max_body_bytes,
                })
            } else {
                state
                    .ingest
                    .ingest(
                        &request_id,
                        bearer,
                        req.body(),
                        tollgate::lambda::call_deadline(&req, state.deadline_margin),
                    )
                    .await
                    .map(|report| edge::json(StatusCode::OK, &report, &request_id))
            }
        }
        (Method::GET, "/v1/documents") => state
            .ingest
            .list(bearer, req.uri().query())
            .await
            .map(|page| edge::json(StatusCode::OK, &page, &request_id)),
        (Method::DELETE, p) if p.starts_with("/v1/documents/") => {
            let id = &p["/v1/documents/".len()..];
            match state.ingest.delete(bearer, id).await {
                Ok(true) => Ok(edge::json(
                    StatusCode::OK,
                    &json!({"id": id, "object": "document", "deleted": true}),
                    &request_id,
                )),
                Ok(false) => Err(GatewayError::DocumentNotFound { id: id.to_owned() }),
                Err(err) => Err(err),
            }
        }
        (method, "/v1/documents") => Err(GatewayError::MethodNotAllowed {
            method: method.to_string(),
            path,
        }),
        (method, _) => Err(GatewayError::RouteNotFound {
            method: method.to_string(),
            path,
        }),
    };
    result.unwrap_or_else(|err| edge::error(&err, &request_id))
}

/// Whether this function owns `path` (for `tollgate serve`'s dispatch).
pub fn owns(path: &str) -> bool {
    let p = route_path(path);
    p == "/v1/documents" || p.starts_with("/v1/documents/")
}
