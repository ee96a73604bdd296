//! The moto server the DynamoDB, Secrets Manager and CloudWatch suites run against
//! (`infra/test.sh` starts it single-threaded and sets `TOLLGATE_TEST_DYNAMODB_ENDPOINT`).

use std::sync::atomic::{AtomicU64, Ordering};

use tollgate::adapters::dynamodb::{DynamoStore, TableNames};

pub const ENDPOINT_VAR: &str = "TOLLGATE_TEST_DYNAMODB_ENDPOINT";

/// moto's URL. When it is not set, `suite` is skipped with a message, except under `CI=true`,
/// where a missing emulator is a failure.
#[allow(clippy::print_stderr)] // The skip message.
pub fn endpoint(suite: &str) -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "{ENDPOINT_VAR} is not set: CI must run the {suite} against moto \
             (infra/test.sh starts it and sets the variable)"
        ),
        _ => {
            eprintln!(
                "skipped: {ENDPOINT_VAR} is not set (run infra/test.sh, or start moto and set it)"
            );
            None
        }
    }
}

/// A store on fresh tables of its own (prefix `{tag}{pid}-{nanos}-{n}`), so tests run in
/// parallel on one emulator.
pub async fn fresh_store(suite: &str, tag: &str) -> Option<DynamoStore> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let endpoint = endpoint(suite)?;
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let prefix = format!(
        "{tag}{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let store = DynamoStore::emulator(&endpoint, TableNames::with_prefix(&prefix));
    store
        .create_tables()
        .await
        .expect("tables created in the emulator");
    Some(store)
}
