//! Lambda entry point: wiring only. Configuration is read and clients are built once, at cold
//! start (no network call: the SDKs resolve credentials on first use); the handler lives in
//! `lib.rs`.

use std::sync::Arc;

use anomaly_scheduler::{SchedulerState, SchedulerStore, handle_invocation};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tollgate::adapters::alerts::EmfAlerts;
use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::cloudwatch::CloudWatchAlerts;
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::adapters::memory::MemoryStore;
use tollgate::config::anomaly::{AlertsKind, AnomalySettings};
use tollgate::config::{ProviderMode, Settings, StoreKind};
use tollgate::ports::alerts::AnomalyAlerts;
use tollgate::ports::clock::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate::telemetry::init_json_logs();
    let settings = Settings::from_env(ProviderMode::Real, AwsConfigSource::LAMBDA)?;
    let anomaly = AnomalySettings::from_env()?;
    let store: Arc<dyn SchedulerStore> = match settings.store.unwrap_or(StoreKind::Dynamodb) {
        StoreKind::Dynamodb => Arc::new(
            DynamoStore::from_env(
                settings.aws,
                TableNames::with_prefix(&settings.table_prefix),
            )
            .await,
        ),
        // For `cargo lambda watch` without AWS: an empty store, so every run checks nobody.
        StoreKind::Memory => Arc::new(MemoryStore::new()),
    };
    // The deployment (stack name) is the alarm's dimension: dev and prod never mix.
    let deployment = settings.table_prefix.clone();
    let alerts: Arc<dyn AnomalyAlerts> = match anomaly.alerts {
        AlertsKind::Cloudwatch => {
            Arc::new(CloudWatchAlerts::from_env(settings.aws, deployment).await)
        }
        AlertsKind::Emf => Arc::new(EmfAlerts::stdout(deployment)),
    };
    let state = SchedulerState {
        store,
        alerts,
        clock: Arc::new(SystemClock),
        options: anomaly.options(),
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| {
        let state = state.clone();
        async move { handle_invocation(&state, event).await }
    }))
    .await
}
