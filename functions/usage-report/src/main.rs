//! Lambda entry point: wiring only. The store is built once, at cold start.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::{Error, service_fn};
use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::adapters::memory::MemoryStore;
use tollgate::config::{ProviderMode, Settings, StoreKind};
use usage_report::UsageReportState;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate::telemetry::init_json_logs();
    let settings = Settings::from_env(ProviderMode::Real, AwsConfigSource::LAMBDA)?;
    let state = match settings.store.unwrap_or(StoreKind::Dynamodb) {
        StoreKind::Dynamodb => {
            // Building the client makes no network call; the first request does.
            let store = DynamoStore::from_env(
                settings.aws,
                TableNames::with_prefix(&settings.table_prefix),
            )
            .await;
            UsageReportState::on(Arc::new(store), settings.directory_cache_ttl)
        }
        StoreKind::Memory => {
            // For `cargo lambda watch` without AWS: the demo tenants, with no usage yet.
            let store = Arc::new(MemoryStore::new());
            let seeded = tollgate::demo::seed(store.as_ref(), chrono::Utc::now()).await?;
            tracing::warn!(
                tenants = seeded.len(),
                "embedded store: demo tenants seeded; use `tollgate serve` to see their keys"
            );
            UsageReportState::on(store, settings.directory_cache_ttl)
        }
    };
    lambda_http::run(service_fn(move |req| {
        let state = state.clone();
        async move {
            let response = usage_report::handle(&state, tollgate::lambda::from_lambda(req)).await;
            Ok::<_, Infallible>(tollgate::lambda::into_lambda(response).await)
        }
    }))
    .await
}
