//! What a request carries into a service besides its caller and body.

use std::time::Instant;

use crate::domain::ids::RequestId;

/// Per-request facts known before any work is done.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request's id: on its response, its log lines and its usage events (suffixed for
    /// calls made on its behalf).
    pub request_id: RequestId,
    /// When the request arrived; latencies are measured from here.
    pub started: Instant,
    /// The client asked to skip the response cache (`Cache-Control: no-cache`).
    pub bypass_cache: bool,
    /// When provider calls must be over: the Lambda invocation's deadline less the metering
    /// margin (`tollgate::lambda::call_deadline`). `None` outside Lambda.
    pub deadline: Option<tokio::time::Instant>,
}

impl RequestContext {
    /// A context started now, with the cache allowed and no deadline.
    pub fn new(request_id: RequestId) -> Self {
        Self {
            request_id,
            started: Instant::now(),
            bypass_cache: false,
            deadline: None,
        }
    }
}
