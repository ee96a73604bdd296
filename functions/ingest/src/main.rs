//! Lambda entry point: wiring only.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::{Error, service_fn};
use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::emf::EmfSink;
use tollgate::bootstrap::ingest_service;
use tollgate::config::{ProviderMode, Settings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate::telemetry::init_json_logs();
    let settings = Settings::from_env(ProviderMode::Real, AwsConfigSource::LAMBDA)?;
    let ingest = ingest_service(&settings, Arc::new(EmfSink::stdout())).await?;
    let state = ingest::IngestState {
        ingest,
        max_body_bytes: settings.max_body_bytes,
        deadline_margin: settings.deadline_margin,
    };
    lambda_http::run(service_fn(move |req| {
        let state = state.clone();
        async move {
            let response = ingest::handle(&state, tollgate::lambda::from_lambda(req)).await;
            Ok::<_, Infallible>(tollgate::lambda::into_lambda(response).await)
        }
    }))
    .await
}
