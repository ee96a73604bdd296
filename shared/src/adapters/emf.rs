//! CloudWatch Embedded Metric Format: one JSON document per request on stdout.
//!
//! The Lambda log agent turns each line into metrics; the same line is the per-request trace
//! (request id, tenant, model, tokens, cost, status) that Logs Insights queries.
//!
//! Dimension sets are chosen with CloudWatch's per-metric price in mind (every distinct
//! dimension combination is a billed custom metric):
//! - `[Function, Model]` and `[Function, TenantId]` for latency, tokens, cost and cache hits:
//!   percentiles by model and by tenant, `(models + tenants) × 10` metrics in all.
//! - `[Function]` for `Errors` (0 or 1 on every line: its average is the error rate, which the
//!   error-rate alarm watches) and `[Function, ErrorType]` for `Errors` on failed requests;
//!   `EstimatedUsage` (1 when the line's tokens are the gateway's estimate) under `[Function]`.
//! - `Model` is only ever a model the tenant routes, or `unknown`: a client's arbitrary model
//!   string never becomes a dimension (each new value would be a billed custom metric).
//! - Tenant × model percentiles are not a dimension set (that would multiply the bill); the
//!   properties on every line answer them through Logs Insights instead.

use std::io::Write;
use std::sync::Mutex;

use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use serde_json::{Value, json};

use crate::adapters::line_writer::LineWriter;
use crate::domain::usage::{UsageEvent, UsageSource};
use crate::ports::metrics::{MetricsSink, RequestMetrics};

/// The CloudWatch metric namespace of every Tollgate metric.
pub const NAMESPACE: &str = "Tollgate";

/// A [`MetricsSink`] writing one EMF JSON line per record to a writer (stdout in Lambda).
pub struct EmfSink {
    out: Mutex<Box<dyn Write + Send>>,
}

impl EmfSink {
    /// Writes to standard output, where Lambda's log agent picks the lines up, from a thread
    /// of its own: a request only sends its line ([`LineWriter`]).
    pub fn stdout() -> Self {
        match LineWriter::spawn("emf", Box::new(std::io::stdout())) {
            Ok(writer) => Self::new(Box::new(writer)),
            Err(err) => {
                tracing::warn!(error = %err, "no EMF writer thread; writing lines inline");
                Self::new(Box::new(std::io::stdout()))
            }
        }
    }

    /// Writes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }

    fn write(&self, doc: &impl serde::Serialize) {
        let Ok(mut line) = serde_json::to_vec(doc) else {
            return;
        };
        line.push(b'\n');
        if let Ok(mut out) = self.out.lock() {
            // A metrics line that cannot be written must never fail the request.
            let _ = out.write_all(&line);
            let _ = out.flush();
        }
    }
}

fn metric(name: &str, unit: &str) -> Value {
    json!({"Name": name, "Unit": unit})
}

/// One EMF metric declaration.
#[derive(Serialize)]
struct Metric {
    #[serde(rename = "Name")]
    name: &'static str,
    #[serde(rename = "Unit")]
    unit: &'static str,
}

const fn metric_decl(name: &'static str, unit: &'static str) -> Metric {
    Metric { name, unit }
}

/// Latency, tokens, cost and cache hits, by model and by tenant.
const REQUEST_METRICS: &[Metric] = &[
    metric_decl("Requests", "Count"),
    metric_decl("Latency", "Milliseconds"),
    metric_decl("ProviderLatency", "Milliseconds"),
    metric_decl("PromptTokens", "Count"),
    metric_decl("CompletionTokens", "Count"),
    metric_decl("CachedTokens", "Count"),
    metric_decl("CacheWriteTokens", "Count"),
    metric_decl("CostUSD", "None"),
    metric_decl("CacheHit", "Count"),
    metric_decl("CacheMiss", "Count"),
];

/// `Errors` (0 or 1 on every line) and `EstimatedUsage`.
const ERROR_METRICS: &[Metric] = &[
    metric_decl("Errors", "Count"),
    metric_decl("EstimatedUsage", "Count"),
];

/// One `CloudWatchMetrics` directive.
#[derive(Serialize)]
struct Directive {
    #[serde(rename = "Namespace")]
    namespace: &'static str,
    #[serde(rename = "Dimensions")]
    dimensions: &'static [&'static [&'static str]],
    #[serde(rename = "Metrics")]
    metrics: &'static [Metric],
}

#[derive(Serialize)]
struct Aws {
    #[serde(rename = "Timestamp")]
    timestamp: i64,
    #[serde(rename = "CloudWatchMetrics")]
    directives: [Directive; 2],
}

/// A request's EMF document, serialized straight from the record (no intermediate JSON tree:
/// this runs once per request).
#[derive(Serialize)]
struct RequestLine<'a> {
    #[serde(rename = "_aws")]
    aws: Aws,
    #[serde(rename = "Function")]
    function: &'a str,
    #[serde(rename = "TenantId")]
    tenant_id: &'a str,
    #[serde(rename = "Model")]
    model: &'a str,
    #[serde(rename = "RequestId")]
    request_id: &'a str,
    #[serde(rename = "ModelServed")]
    model_served: Option<&'a str>,
    #[serde(rename = "Provider")]
    provider: Option<&'a str>,
    #[serde(rename = "Status")]
    status: u16,
    #[serde(rename = "Success")]
    success: bool,
    #[serde(rename = "Streamed")]
    streamed: bool,
    #[serde(rename = "Attempts")]
    attempts: u32,
    #[serde(rename = "Requests")]
    requests: u8,
    #[serde(rename = "Latency")]
    latency: f64,
    #[serde(rename = "ProviderLatency", skip_serializing_if = "Option::is_none")]
    provider_latency: Option<f64>,
    #[serde(rename = "PromptTokens")]
    prompt_tokens: u64,
    #[serde(rename = "CompletionTokens")]
    completion_tokens: u64,
    #[serde(rename = "CachedTokens")]
    cached_tokens: u64,
    #[serde(rename = "CacheWriteTokens")]
    cache_write_tokens: u64,
    #[serde(rename = "CostUSD")]
    cost_usd: f64,
    /// The exact figure, for reconciliation: metrics are floats, money is not.
    #[serde(rename = "CostUSDExact")]
    cost_usd_exact: String,
    #[serde(rename = "CacheHit")]
    cache_hit: u8,
    #[serde(rename = "CacheMiss")]
    cache_miss: u8,
    #[serde(rename = "Errors")]
    errors: u8,
    /// 1 when the tokens on this line are the gateway's estimate, not the provider's report.
    #[serde(rename = "EstimatedUsage")]
    estimated_usage: u8,
    #[serde(rename = "UsageSource")]
    usage_source: &'static str,
    #[serde(rename = "ErrorType", skip_serializing_if = "Option::is_none")]
    error_type: Option<&'static str>,
}

fn request_line(m: &RequestMetrics) -> RequestLine<'_> {
    // `Errors` is 0 or 1 on every line under `[Function]`, so its average is the error rate
    // (the error-rate alarm); failed requests also count under `[Function, ErrorType]`.
    let error_dimensions: &'static [&'static [&'static str]] = if m.error_type.is_some() {
        &[&["Function"], &["Function", "ErrorType"]]
    } else {
        &[&["Function"]]
    };
    RequestLine {
        aws: Aws {
            timestamp: m.timestamp.timestamp_millis(),
            directives: [
                Directive {
                    namespace: NAMESPACE,
                    dimensions: &[&["Function", "Model"], &["Function", "TenantId"]],
                    metrics: REQUEST_METRICS,
                },
                Directive {
                    namespace: NAMESPACE,
                    dimensions: error_dimensions,
                    metrics: ERROR_METRICS,
                },
            ],
        },
        function: m.function,
        tenant_id: m.tenant_id.as_deref().unwrap_or("unauthenticated"),
        model: m.model.as_deref().unwrap_or("unknown"),
        request_id: &m.request_id,
        model_served: m.model_served.as_deref(),
        provider: m.provider,
        status: m.status,
        success: m.error_type.is_none(),
        streamed: m.streamed,
        attempts: m.attempts,
        requests: 1,
        latency: m.latency_ms,
        provider_latency: m.provider_latency_ms,
        prompt_tokens: m.usage.prompt_tokens,
        completion_tokens: m.usage.completion_tokens,
        cached_tokens: m.usage.cached_tokens,
        cache_write_tokens: m.usage.cache_write_tokens,
        cost_usd: m.cost_usd.to_f64().unwrap_or(0.0),
        cost_usd_exact: m.cost_usd.to_string(),
        cache_hit: u8::from(m.cache_hit == Some(true)),
        cache_miss: u8::from(m.cache_hit == Some(false)),
        errors: u8::from(m.error_type.is_some()),
        estimated_usage: u8::from(m.usage_source == UsageSource::Estimated),
        usage_source: m.usage_source.as_str(),
        error_type: m.error_type.map(|kind| kind.as_str()),
    }
}

/// Renders one request's EMF document (as a JSON value, for tests and tools; the sink writes
/// the same document without building one).
pub fn render(m: &RequestMetrics) -> Value {
    serde_json::to_value(request_line(m)).unwrap_or(Value::Null)
}

/// The document for a usage event that could not be stored: a `MeteringFailure` metric to
/// alarm on, and the whole event so it can be replayed into the usage table.
pub fn render_metering_failure(event: &UsageEvent, error: &str) -> Value {
    json!({
        "_aws": {
            "Timestamp": event.created_at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": [metric("MeteringFailure", "Count")],
            }],
        },
        "Function": "invoke",
        "MeteringFailure": 1,
        "RequestId": event.request_id.as_str(),
        "TenantId": event.tenant_id.as_str(),
        "Error": error,
        "UsageEvent": event,
    })
}

/// The document for a refused isolation violation: an `IsolationViolation` metric to alarm on.
pub fn render_isolation_violation(
    function: &str,
    tenant: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Value {
    json!({
        "_aws": {
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": [metric("IsolationViolation", "Count")],
            }],
        },
        "Function": function,
        "IsolationViolation": 1,
        "TenantId": tenant,
    })
}

/// A route target's circuit opened (`CircuitOpen` 1) or closed (0), under `[Function, Target]`:
/// a few targets per deployment, so a few metrics; the maximum over a period says whether it
/// was open at all.
pub fn render_circuit(target: &str, open: bool, at: chrono::DateTime<chrono::Utc>) -> Value {
    json!({
        "_aws": {
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function", "Target"]],
                "Metrics": [metric("CircuitOpen", "Count")],
            }],
        },
        "Function": "invoke",
        "Target": target,
        "CircuitOpen": u8::from(open),
        "CircuitState": if open { "open" } else { "closed" },
    })
}

impl MetricsSink for EmfSink {
    fn request(&self, metrics: &RequestMetrics) {
        self.write(&request_line(metrics));
    }

    fn metering_failure(&self, event: &UsageEvent, error: &str) {
        self.write(&render_metering_failure(event, error));
    }

    fn isolation_violation(&self, function: &'static str, tenant: &str) {
        self.write(&render_isolation_violation(
            function,
            tenant,
            chrono::Utc::now(),
        ));
    }

    fn circuit(&self, target: &str, open: bool) {
        self.write(&render_circuit(target, open, chrono::Utc::now()));
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    #[test]
    fn a_circuit_change_is_one_metric_by_target() {
        let at = chrono::Utc::now();
        let line = render_circuit("anthropic/claude-haiku-4-5", true, at);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Function", "Target"]]));
        assert_eq!(directive["Metrics"][0]["Name"], "CircuitOpen");
        assert_eq!(line["Target"], "anthropic/claude-haiku-4-5");
        assert_eq!(line["CircuitOpen"], 1);
        assert_eq!(render_circuit("x/y", false, at)["CircuitOpen"], 0);
    }

    use super::*;
    use crate::domain::usage::TokenUsage;
    use crate::error::ErrorKind;

    fn metrics(error: Option<ErrorKind>) -> RequestMetrics {
        RequestMetrics {
            timestamp: chrono::Utc::now(),
            function: "invoke",
            request_id: "r1".into(),
            tenant_id: Some("acme".into()),
            model: Some("fast".into()),
            model_served: Some("gpt-4o-mini".into()),
            provider: Some("openai"),
            status: 200,
            latency_ms: 12.5,
            provider_latency_ms: Some(10.0),
            usage: TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: 0,
                cache_write_tokens: 0,
            },
            usage_source: Default::default(),
            cost_usd: dec!(0.0000045),
            error_type: error,
            streamed: false,
            cache_hit: Some(false),
            attempts: 1,
        }
    }

    /// Every metric a directive names must be a top-level number, and every dimension a
    /// top-level string; otherwise CloudWatch drops the metric silently.
    fn assert_valid_emf(doc: &Value) {
        for directive in doc["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            for set in directive["Dimensions"].as_array().unwrap() {
                for dim in set.as_array().unwrap() {
                    let name = dim.as_str().unwrap();
                    assert!(doc[name].is_string(), "dimension {name} missing");
                }
            }
            for m in directive["Metrics"].as_array().unwrap() {
                let name = m["Name"].as_str().unwrap();
                assert!(doc[name].is_number(), "metric {name} missing");
            }
        }
    }

    #[test]
    fn a_successful_request_renders_valid_emf_with_exact_cost() {
        let doc = render(&metrics(None));
        assert_valid_emf(&doc);
        assert_eq!(doc["CostUSDExact"], "0.0000045");
        assert_eq!(doc["TenantId"], "acme");
        assert!(doc.get("ErrorType").is_none());
        // Errors = 0 under [Function]: the error-rate alarm averages it.
        assert_eq!(doc["Errors"], 0);
        let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 2);
        assert_eq!(directives[1]["Dimensions"], json!([["Function"]]));
    }

    #[test]
    fn a_failed_request_adds_the_error_type_dimension() {
        let doc = render(&metrics(Some(ErrorKind::UpstreamRateLimited)));
        assert_valid_emf(&doc);
        assert_eq!(doc["ErrorType"], "upstream_rate_limited");
        assert_eq!(doc["Errors"], 1);
        let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(
            directives[1]["Dimensions"],
            json!([["Function"], ["Function", "ErrorType"]])
        );
    }

    #[test]
    fn unauthenticated_requests_still_have_every_dimension() {
        let mut m = metrics(Some(ErrorKind::Authentication));
        m.tenant_id = None;
        m.model = None;
        assert_valid_emf(&render(&m));
    }

    #[test]
    fn lines_are_written_one_per_request() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = EmfSink::new(Box::new(buf.clone()));
        sink.request(&metrics(None));
        sink.request(&metrics(None));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2);
        for line in text.lines() {
            let _: Value = serde_json::from_str(line).unwrap();
        }
    }
}
