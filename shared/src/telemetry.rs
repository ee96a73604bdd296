//! Structured JSON logs (tracing) on stderr; stdout is kept for EMF metric lines so a log
//! pipeline can tell them apart. `RUST_LOG` sets the filter (default `info`).

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The JSON log format every function writes to `writer`: one object per line, the event's
/// fields at the top level (`request_id`, `tenant_id`, ...) where Logs Insights discovers them.
/// [`init_json_logs`] installs it on stderr; the saved-query suite (`log_queries.rs`) installs
/// the same layer on a buffer, so it checks the very lines the functions write.
pub fn json_layer<S, W>(writer: W) -> tracing_subscriber::fmt::Layer<S, JsonFields, Format<Json>, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(false)
        .with_writer(writer)
}

/// Installs the global subscriber once; later calls are no-ops.
pub fn init_json_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(json_layer(std::io::stderr))
        .try_init();
}

/// Human-readable logs for `tollgate serve` in a terminal.
pub fn init_text_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}
