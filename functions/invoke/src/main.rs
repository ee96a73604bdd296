//! Lambda entry point: wiring only. Configuration is read and clients are built once, at cold
//! start; the handler lives in `lib.rs`.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::{Error, service_fn};
use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::adapters::emf::EmfSink;
use tollgate::bootstrap::{chat_service, embedded_chat_service, retriever, vector_index};
use tollgate::config::{ProviderMode, Settings, StoreKind};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tollgate::telemetry::init_json_logs();
    let settings = Settings::from_env(ProviderMode::Real, AwsConfigSource::LAMBDA)?;
    let metrics = Arc::new(EmfSink::stdout());
    let (mut chat, providers) = match settings.store.unwrap_or(StoreKind::Dynamodb) {
        StoreKind::Dynamodb => {
            // Building the client and the service makes no network call: the operator
            // catalog is read by the first request that needs it.
            let store = DynamoStore::from_env(
                settings.aws,
                TableNames::with_prefix(&settings.table_prefix),
            )
            .await;
            chat_service(&settings, metrics, Arc::new(store))?
        }
        StoreKind::Memory => {
            // For `cargo lambda watch` without AWS: the demo tenants, in memory.
            let (chat, store, providers) = embedded_chat_service(&settings, metrics)?;
            let seeded = tollgate::demo::seed(store.as_ref(), chrono::Utc::now()).await?;
            tracing::warn!(
                tenants = seeded.len(),
                "embedded store: demo tenants seeded; use `tollgate serve` to see their keys"
            );
            (chat, providers)
        }
    };
    // Retrieval over Qdrant (or, on the embedded store, the embedded index).
    if settings.qdrant_url.is_some() || settings.store == Some(StoreKind::Memory) {
        chat.retriever = Some(retriever(&settings, &chat, vector_index(&settings)?)?);
    }
    for provider in &providers {
        tracing::info!(provider = %provider, "provider configured");
    }
    let state = invoke::InvokeState {
        chat,
        max_body_bytes: settings.max_body_bytes,
        deadline_margin: settings.deadline_margin,
    };
    // Response streaming: API Gateway (a REST API whose integration has
    // `ResponseTransferMode: STREAM`, see template.yaml) forwards each SSE chunk as the
    // provider sends it, so time to first token is the provider's. Buffered JSON answers go out
    // the same way, in one piece.
    lambda_http::run_with_streaming_response(service_fn(move |req| {
        let state = state.clone();
        async move {
            Ok::<_, Infallible>(invoke::handle(&state, tollgate::lambda::from_lambda(req)).await)
        }
    }))
    .await
}
