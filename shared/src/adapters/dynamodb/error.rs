//! SDK errors → `StoreError`. Messages carry the operation, the service's error code and
//! message, or the transport failure: never a request, never credentials.

use std::error::Error;
use std::fmt::Debug;

use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};

use crate::ports::store::StoreError;

/// Error codes that mean "slow down": the limiter answers them as throttling (503 with a
/// retry hint) instead of an outage.
const THROTTLING_CODES: [&str; 5] = [
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionConflictException",
];

pub(super) fn is_throttling_code(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

pub(super) fn sdk<E, R>(op: &'static str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("UnknownError");
            if is_throttling_code(code) {
                return StoreError::Throttled;
            }
            let hint = if code == "ResourceNotFoundException" {
                " (are the tables created? run `tollgate init`)"
            } else {
                ""
            };
            StoreError::Unavailable(format!(
                "DynamoDB {op}: {code}: {}{hint}",
                e.message().unwrap_or("no message")
            ))
        }
        SdkError::TimeoutError(_) => StoreError::Unavailable(format!("DynamoDB {op}: timed out")),
        _ => StoreError::Unavailable(format!("DynamoDB {op}: {}", chain(&err))),
    }
}

/// `outer: cause: root cause`, from each error's `Display` (never `Debug`, which would dump
/// request internals).
fn chain(err: &(dyn Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// A request the SDK refused to build: a bug in this adapter, not an outage.
pub(super) fn build(err: BuildError) -> StoreError {
    StoreError::Unavailable(format!("building a DynamoDB request: {err}"))
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
