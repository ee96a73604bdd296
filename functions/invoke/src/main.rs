//! Lambda entry point: wiring only. Configuration is read and clients are built once, at cold
//! start, with no network call; the routes live in `lib.rs`.

use std::sync::Arc;

use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::emf::EmfSink;
use tollgate::bootstrap::{Stores, vector_index};
use tollgate::config::{ProviderMode, Settings, StoreKind};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tollgate::telemetry::init_json_logs();
    let settings = Settings::from_env(ProviderMode::Real, AwsConfigSource::LAMBDA)?;
    let stores = Stores::from_settings(&settings).await?;
    // Retrieval over Qdrant (or, on the embedded store, the embedded index).
    let retrieval = settings.retrieval.qdrant_url.is_some() || stores.kind() == StoreKind::Memory;
    let index = retrieval.then(|| vector_index(&settings)).transpose()?;
    let metrics = Arc::new(EmfSink::stdout());
    let (state, providers) = invoke::InvokeState::build(&settings, &stores, metrics, index)?;
    for provider in &providers {
        tracing::info!(provider = %provider, "provider configured");
    }
    tollgate::lambda::serve_streaming(state).await
}
