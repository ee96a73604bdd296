//! Structured JSON logs (tracing) on stderr; stdout is kept for EMF metric lines so a log
//! pipeline can tell them apart. `RUST_LOG` sets the filter (default `info`): a level, or
//! `target=level` pairs separated by commas (`info,tollgate=debug`). Span and field directives
//! are not supported: the full `EnvFilter` brings a regex-based matcher into every bootstrap,
//! and an unparsable value falls back to `info`.

use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::adapters::line_writer::LineWriter;

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

/// The `RUST_LOG` filter.
fn filter() -> Targets {
    parse_filter(std::env::var("RUST_LOG").ok().as_deref())
}

/// `info` when unset or unparsable.
fn parse_filter(value: Option<&str>) -> Targets {
    value
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// Installs the global subscriber once; later calls are no-ops. Lines are written to stderr by
/// a thread of their own (`adapters::line_writer`): logging never waits on the output.
pub fn init_json_logs() {
    let filter = filter();
    let _ = match LineWriter::spawn("logs", Box::new(std::io::stderr())) {
        Ok(writer) => tracing_subscriber::registry()
            .with(filter)
            .with(json_layer(writer))
            .try_init(),
        Err(_) => tracing_subscriber::registry()
            .with(filter)
            .with(json_layer(std::io::stderr))
            .try_init(),
    };
}

/// Human-readable logs for `tollgate serve` in a terminal.
pub fn init_text_logs() {
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_writer(std::io::stderr),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn rust_log_takes_a_level_or_target_pairs_and_defaults_to_info() {
        let default = parse_filter(None);
        assert!(default.would_enable("tollgate", &Level::INFO));
        assert!(!default.would_enable("tollgate", &Level::DEBUG));

        let pairs = parse_filter(Some("warn,tollgate=debug"));
        assert!(pairs.would_enable("tollgate::service", &Level::DEBUG));
        assert!(!pairs.would_enable("hyper", &Level::INFO));
        assert!(pairs.would_enable("hyper", &Level::WARN));

        let garbage = parse_filter(Some("tollgate=loud"));
        assert!(garbage.would_enable("tollgate", &Level::INFO));
        assert!(!garbage.would_enable("tollgate", &Level::DEBUG));
    }
}
