//! Lambda entry point: wiring only. Configuration is read and clients are built once, at cold
//! start, with no network call; the routes live in `lib.rs`.

use std::sync::Arc;

use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::emf::EmfSink;
use tollgate::bootstrap::{Stores, vector_index};
use tollgate::config::{ProviderMode, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tollgate::telemetry::init_json_logs();
    let settings = Settings::from_env(ProviderMode::Real, AwsConfigSource::LAMBDA)?;
    let stores = Stores::from_settings(&settings).await?;
    let metrics = Arc::new(EmfSink::stdout());
    let index = vector_index(&settings)?;
    let state = ingest::IngestState::build(&settings, &stores, metrics, index)?;
    tollgate::lambda::serve(state).await
}
