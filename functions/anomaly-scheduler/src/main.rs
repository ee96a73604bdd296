//! Lambda entry point: wiring only. Configuration is read and clients are built once, at cold
//! start (no network call: the SDKs resolve credentials on first use); the handler lives in
//! `lib.rs`. On the embedded store (`cargo lambda watch` without AWS) every run finds no usage.

use anomaly_scheduler::{SchedulerState, handle_any};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use tollgate::adapters::aws::AwsConfigSource;
use tollgate::bootstrap::Stores;
use tollgate::config::anomaly::AnomalySettings;
use tollgate::config::{ProviderMode, Settings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate::telemetry::init_json_logs();
    let settings = Settings::from_env(ProviderMode::Real, AwsConfigSource::LAMBDA)?;
    let anomaly = AnomalySettings::from_env()?;
    let stores = Stores::from_settings(&settings).await?;
    let state = SchedulerState::build(&settings, &anomaly, &stores).await;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| {
        let state = state.clone();
        async move { handle_any(&state, event).await }
    }))
    .await
}
