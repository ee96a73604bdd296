//! Lambda entry point: wiring only. Configuration is read and clients are built once, at cold
//! start; the handler lives in `lib.rs`.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::{Error, service_fn};
use tollgate::adapters::emf::EmfSink;
use tollgate::bootstrap::embedded_chat_service;
use tollgate::config::{ProviderMode, Settings};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate::telemetry::init_json_logs();
    let settings = Settings::from_env(ProviderMode::Real)?;
    // The DynamoDB store replaces the embedded one with the DynamoDB issue; until then the
    // function runs on the embedded store, seeded with the demo tenants.
    let (chat, store, providers) = embedded_chat_service(&settings, Arc::new(EmfSink::stdout()))?;
    tollgate::demo::seed(store.as_ref(), chrono::Utc::now()).await?;
    for provider in &providers {
        tracing::info!(provider = %provider, "provider configured");
    }
    let state = invoke::InvokeState {
        chat,
        max_body_bytes: settings.max_body_bytes,
    };
    // Buffered mode, matching the HTTP API integration in template.yaml: a streamed reply is
    // delivered whole (still valid SSE). True response streaming (a function URL in
    // RESPONSE_STREAM mode, `run_with_streaming_response`) is the SAM issue's decision.
    lambda_http::run(service_fn(move |req| {
        let state = state.clone();
        async move {
            let response = invoke::handle(&state, invoke::from_lambda(req)).await;
            Ok::<_, Infallible>(invoke::into_lambda(response).await)
        }
    }))
    .await
}
