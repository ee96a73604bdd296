//! The saved Logs Insights queries in template.yaml (`AWS::Logs::QueryDefinition`) name only
//! fields that the functions actually write: the per-request EMF line (what `EmfSink` prints
//! for each request) and the JSON logs (what `telemetry::init_json_logs` prints).
//!
//! A renamed EMF property or log field would otherwise leave a saved query silently empty.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tollgate::adapters::emf;
use tollgate_tests::harness::{Gateway, chat_body};

/// `(name, query)` for every `AWS::Logs::QueryDefinition` in template.yaml.
fn saved_queries() -> Vec<(String, String)> {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
            .expect("template.yaml");
    let lines: Vec<&str> = template.lines().collect();
    let mut queries = Vec::new();
    let mut name = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line
            .trim_start()
            .starts_with("Name: !Sub \"${AWS::StackName}/")
        {
            name = line
                .trim()
                .trim_start_matches("Name: !Sub \"${AWS::StackName}/")
                .trim_end_matches('"')
                .to_owned();
        }
        if line.trim() == "QueryString: |" {
            let indent = line.len() - line.trim_start().len();
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() {
                let next = lines[i];
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                body.push(next.trim());
                i += 1;
            }
            queries.push((name.clone(), body.join("\n")));
            continue;
        }
        i += 1;
    }
    queries
}

const KEYWORDS: &[&str] = &[
    "fields",
    "filter",
    "stats",
    "sort",
    "limit",
    "by",
    "as",
    "and",
    "or",
    "not",
    "desc",
    "asc",
    "count",
    "sum",
    "pct",
    "max",
    "min",
    "avg",
    "ispresent",
    "like",
    "in",
];

/// The log fields a query reads: identifiers that are not keywords, functions, aliases,
/// string literals, numbers or `@` built-ins.
fn fields_of(query: &str) -> BTreeSet<String> {
    let mut without_strings = String::new();
    let mut in_string = false;
    for c in query.chars() {
        if c == '"' {
            in_string = !in_string;
            without_strings.push(' ');
        } else if !in_string {
            without_strings.push(c);
        }
    }
    let tokens: Vec<String> = without_strings
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '@'))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    // Names a query defines (`... as p99_ms`) are not log fields, wherever they are used.
    let aliases: BTreeSet<&String> = tokens
        .windows(2)
        .filter(|pair| pair[0] == "as")
        .map(|pair| &pair[1])
        .collect();
    let mut fields = BTreeSet::new();
    for token in &tokens {
        if aliases.contains(token)
            || token.starts_with('@')
            || token.chars().all(|c| c.is_ascii_digit())
            || KEYWORDS.contains(&token.as_str())
        {
            continue;
        }
        fields.insert(token.clone());
    }
    fields
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every top-level field of the lines the gateway writes for a mix of requests: EMF documents
/// (one per request) and JSON log lines (here, refusals and failures log `request_id`).
async fn written_fields() -> BTreeSet<String> {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let gateway = Gateway::simulated().await;
    let ok = gateway
        .chat("acme", chat_body("gpt-4o-mini", "hello"))
        .await;
    assert_eq!(ok.status, 200);
    let mut streamed = chat_body("claude-haiku", "hello again");
    streamed["stream"] = Value::Bool(true);
    assert_eq!(gateway.chat("acme", streamed).await.status, 200);
    let refused = gateway.chat("acme", chat_body("no-such-model", "hi")).await;
    assert_eq!(refused.status, 404);

    let mut fields = BTreeSet::new();
    for metrics in gateway.request_metrics() {
        let doc = emf::render(&metrics);
        fields.extend(doc.as_object().unwrap().keys().cloned());
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for line in text.lines() {
        let doc: Value = serde_json::from_str(line).expect("JSON log line");
        fields.extend(doc.as_object().unwrap().keys().cloned());
    }
    fields
}

#[test]
fn the_template_ships_the_five_saved_queries() {
    let names: Vec<String> = saved_queries().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "tenant-requests",
            "tenant-errors-by-type",
            "slowest-requests-by-model",
            "cost-by-tenant",
            "request-id"
        ]
    );
}

#[test]
fn field_extraction_skips_keywords_aliases_strings_and_builtins() {
    let fields = fields_of(
        "fields @timestamp, RequestId | filter TenantId = \"acme Model\" and Errors = 1 \
         | stats pct(Latency, 99) as p99_ms by Model | sort p99_ms desc",
    );
    let expected: BTreeSet<String> = ["RequestId", "TenantId", "Errors", "Latency", "Model"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(fields, expected);
}

#[tokio::test(flavor = "current_thread")]
async fn every_field_a_saved_query_names_is_written_by_the_functions() {
    let written = written_fields().await;
    for (name, query) in saved_queries() {
        let fields = fields_of(&query);
        assert!(!fields.is_empty(), "{name}: no fields found in {query}");
        let missing: Vec<_> = fields.difference(&written).collect();
        assert!(
            missing.is_empty(),
            "saved query `{name}` names fields no log line has: {missing:?}\nwritten: {written:?}"
        );
    }
}
