//! The saved Logs Insights queries in template.yaml (`AWS::Logs::QueryDefinition`) against the
//! lines the functions really write.
//!
//! Each function is driven through its real handler (invoke and ingest through the harness,
//! usage-report and anomaly-scheduler as their suites drive them), with the EMF sink and the
//! JSON log layer the Lambda binaries install (`EmfSink`, `telemetry::json_layer`) writing to
//! buffers, one batch of lines per function. A query's `LogGroupNames` say which functions'
//! lines it reads (the template's `LoggingConfig` maps each binary to its log group). Then, per
//! query, with its placeholders replaced by a tenant and a request id the function really
//! served:
//!
//! - its filter selects at least one line of every function it targets;
//! - every field it names (`fields`, `filter`, `stats`, `sort`) is on a line it selects;
//! - every comparison in its filter (`Function = "invoke"`, `Errors = 1`, `RequestId like
//!   /^.../`) holds on some line of the functions it targets.
//!
//! A renamed EMF property, log field or value would otherwise leave a saved query silently
//! empty. The filter evaluator covers the part of the query language the saved queries use and
//! fails loudly on anything else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http::{Method, Request};
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate::adapters::alerts::EmfAlerts;
use tollgate::adapters::emf::EmfSink;
use tollgate::adapters::memory::MemoryStore;
use tollgate::ports::TenantAdmin;
use tollgate::ports::UsageSink;
use tollgate::ports::clock::SystemClock;
use tollgate::service::anomaly::SchedulerOptions;
use tollgate_tests::capture::Captured;
use tollgate_tests::harness::{Gateway, TestResponse, chat_body, standin_settings};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const TEMPLATE: &str = include_str!("../../../template.yaml");

/// Quoted placeholders an operator replaces before running a query.
const TENANT_ID: &str = "TENANT_ID";
const REQUEST_ID: &str = "REQUEST_ID";

/// The request id Lambda gives the anomaly-scheduler invocation.
const LAMBDA_REQUEST_ID: &str = "7c2d6a1e-3f4b-4c5d-9e8f-0a1b2c3d4e5f";

// ---------------------------------------------------------------------------------------------
// The template
// ---------------------------------------------------------------------------------------------

struct SavedQuery {
    name: String,
    /// The binaries whose log groups the query reads.
    functions: Vec<String>,
    text: String,
}

/// The resources of template.yaml as `(logical id, indented body lines)`.
fn resources() -> Vec<(String, Vec<&'static str>)> {
    let mut out: Vec<(String, Vec<&str>)> = Vec::new();
    let mut in_resources = false;
    for line in TEMPLATE.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_resources = line == "Resources:";
            continue;
        }
        if !in_resources || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 2 && line.trim_end().ends_with(':') {
            out.push((line.trim().trim_end_matches(':').to_owned(), Vec::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push(line);
        }
    }
    out
}

/// The value after `key: ` on the first body line that has it.
fn property<'a>(body: &[&'a str], key: &str) -> Option<&'a str> {
    body.iter()
        .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix(": "))
}

/// Log group logical id → the binary whose `LoggingConfig` writes there.
fn log_group_functions() -> BTreeMap<String, String> {
    resources()
        .into_iter()
        .filter(|(_, body)| property(body, "Type") == Some("AWS::Serverless::Function"))
        .map(|(id, body)| {
            let binary = property(&body, "Binary").unwrap_or_else(|| panic!("{id}: no Binary"));
            let group = property(&body, "LogGroup")
                .and_then(|g| g.strip_prefix("!Ref "))
                .unwrap_or_else(|| panic!("{id}: no LoggingConfig LogGroup"));
            (group.to_owned(), binary.to_owned())
        })
        .collect()
}

/// Every `AWS::Logs::QueryDefinition`, in template order.
fn saved_queries() -> Vec<SavedQuery> {
    let groups = log_group_functions();
    resources()
        .into_iter()
        .filter(|(_, body)| property(body, "Type") == Some("AWS::Logs::QueryDefinition"))
        .map(|(id, body)| {
            let name = property(&body, "Name")
                .and_then(|n| n.strip_prefix("!Sub \"${AWS::StackName}/"))
                .and_then(|n| n.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{id}: no Name"))
                .to_owned();
            let functions = property(&body, "LogGroupNames")
                .unwrap_or_else(|| panic!("{id}: no LogGroupNames"))
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|g| {
                    let group = g.trim().trim_start_matches("!Ref ");
                    groups
                        .get(group)
                        .unwrap_or_else(|| panic!("{id}: no function logs to {group}"))
                        .clone()
                })
                .collect();
            let start = body
                .iter()
                .position(|l| l.trim() == "QueryString: |")
                .unwrap_or_else(|| panic!("{id}: no QueryString block"));
            let indent = |l: &str| l.len() - l.trim_start().len();
            let own = indent(body[start]);
            let text = body[start + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > own)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join("\n");
            SavedQuery {
                name,
                functions,
                text,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The query language, as far as the saved queries use it
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Regex(String),
    Num(f64),
    Sym(&'static str),
}

const SYMBOLS: &[&str] = &[
    "!=", "=~", "<=", ">=", "|", ",", "(", ")", "=", "<", ">", "*",
];

fn tokenize(text: &str) -> Vec<Tok> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let until = |i: usize, end: char| -> (String, usize) {
        let mut s = String::new();
        let mut j = i;
        while j < chars.len() && chars[j] != end {
            if chars[j] == '\\' && end == '/' && j + 1 < chars.len() {
                s.push(chars[j]);
                j += 1;
            }
            s.push(chars[j]);
            j += 1;
        }
        assert!(j < chars.len(), "unterminated {end} literal in {text}");
        (s, j + 1)
    };
    while i < chars.len() {
        let c = chars[i];
        let after_match_op = matches!(out.last(), Some(Tok::Ident(k)) if k == "like")
            || out.last() == Some(&Tok::Sym("=~"));
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            let (s, next) = until(i + 1, c);
            out.push(Tok::Str(s));
            i = next;
        } else if c == '/' && after_match_op {
            let (s, next) = until(i + 1, '/');
            out.push(Tok::Regex(s));
            i = next;
        } else if c == '`' {
            let (s, next) = until(i + 1, '`');
            out.push(Tok::Ident(s));
            i = next;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let n: String = chars[start..i].iter().collect();
            out.push(Tok::Num(n.parse().unwrap()));
        } else if c.is_ascii_alphabetic() || c == '_' || c == '@' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '@' | '.'))
            {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let sym = SYMBOLS
                .iter()
                .find(|s| rest.starts_with(**s))
                .unwrap_or_else(|| panic!("unexpected `{c}` in {text}"));
            out.push(Tok::Sym(sym));
            i += sym.len();
        }
    }
    out
}

/// A query's commands (`fields ...`, `filter ...`, `stats ...`), split on `|`.
fn commands(text: &str) -> Vec<Vec<Tok>> {
    tokenize(text)
        .split(|t| *t == Tok::Sym("|"))
        .map(<[Tok]>::to_vec)
        .collect()
}

const KEYWORDS: &[&str] = &[
    "fields", "filter", "stats", "sort", "limit", "display", "dedup", "by", "as", "and", "or",
    "not", "asc", "desc", "like", "in",
];

/// The log fields a query reads: identifiers that are not keywords, functions (`pct(`),
/// aliases (`as p99_ms`, wherever used) or `@` built-ins.
fn fields_of(text: &str) -> BTreeSet<String> {
    let tokens = tokenize(text);
    let aliases: BTreeSet<&str> = tokens
        .windows(2)
        .filter_map(|pair| match pair {
            [Tok::Ident(word), Tok::Ident(alias)] if word == "as" => Some(alias.as_str()),
            _ => None,
        })
        .collect();
    let mut fields = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let Tok::Ident(name) = token else { continue };
        let call = tokens.get(i + 1) == Some(&Tok::Sym("("));
        if call
            || aliases.contains(name.as_str())
            || name.starts_with('@')
            || KEYWORDS.contains(&name.as_str())
        {
            continue;
        }
        fields.insert(name.clone());
    }
    fields
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Num(f64),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Present(String),
    Cmp {
        field: String,
        op: &'static str,
        value: Lit,
    },
}

struct Parser<'a> {
    tokens: &'a [Tok],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Tok {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t.unwrap_or_else(|| panic!("filter ends too early: {:?}", self.tokens))
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(k)) if k == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Expr {
        let mut terms = vec![self.and()];
        while self.keyword("or") {
            terms.push(self.and());
        }
        if terms.len() == 1 {
            terms.pop().unwrap()
        } else {
            Expr::Or(terms)
        }
    }

    fn and(&mut self) -> Expr {
        let mut terms = vec![self.unary()];
        while self.keyword("and") {
            terms.push(self.unary());
        }
        if terms.len() == 1 {
            terms.pop().unwrap()
        } else {
            Expr::And(terms)
        }
    }

    fn unary(&mut self) -> Expr {
        if self.keyword("not") {
            return Expr::Not(Box::new(self.unary()));
        }
        match self.next() {
            Tok::Sym("(") => {
                let inner = self.or();
                assert_eq!(self.next(), Tok::Sym(")"), "unbalanced ( in filter");
                inner
            }
            Tok::Ident(f) if f == "ispresent" => {
                assert_eq!(self.next(), Tok::Sym("("));
                let Tok::Ident(field) = self.next() else {
                    panic!("ispresent takes a field")
                };
                assert_eq!(self.next(), Tok::Sym(")"));
                Expr::Present(field)
            }
            Tok::Ident(field) => {
                let op = match self.next() {
                    Tok::Sym(op @ ("=" | "!=" | "=~")) => op,
                    Tok::Ident(k) if k == "like" => "like",
                    other => panic!("`{field} {other:?}`: extend the filter evaluator"),
                };
                let value = match self.next() {
                    Tok::Str(s) => Lit::Str(s),
                    Tok::Num(n) => Lit::Num(n),
                    Tok::Regex(r) => Lit::Regex(r),
                    other => panic!("`{field} {op} {other:?}`: extend the filter evaluator"),
                };
                Expr::Cmp { field, op, value }
            }
            other => panic!("unexpected {other:?} in a filter"),
        }
    }
}

/// The `filter` commands of a query (all of them must hold).
fn filters_of(text: &str) -> Vec<Expr> {
    commands(text)
        .into_iter()
        .filter(|c| c.first() == Some(&Tok::Ident("filter".into())))
        .map(|c| {
            let mut parser = Parser {
                tokens: &c[1..],
                at: 0,
            };
            let expr = parser.or();
            assert_eq!(parser.at, c.len() - 1, "trailing tokens in filter {c:?}");
            expr
        })
        .collect()
}

/// Every comparison in `expr`, wherever it sits (`and`, `or`, `not`).
fn comparisons(expr: &Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::Or(terms) | Expr::And(terms) => terms.iter().for_each(|t| comparisons(t, out)),
        Expr::Not(inner) => comparisons(inner, out),
        Expr::Present(_) => {}
        cmp @ Expr::Cmp { .. } => out.push(cmp.clone()),
    }
}

/// A tenant and a request id the function served: what an operator would type for the
/// placeholders.
#[derive(Debug, Clone)]
struct Samples {
    tenant: String,
    request_id: String,
}

impl Samples {
    fn fill(&self, text: &str) -> String {
        text.replace(TENANT_ID, &self.tenant)
            .replace(REQUEST_ID, &self.request_id)
    }
}

/// A field's value; `null` counts as absent.
fn value<'a>(line: &'a Value, field: &str) -> Option<&'a Value> {
    field
        .split('.')
        .try_fold(line, |v, key| v.get(key))
        .filter(|v| !v.is_null())
}

/// Regular expressions as far as the saved queries use them: literal text, `^` and `$`
/// anchors, `\` escapes.
fn regex_matches(pattern: &str, text: &str) -> bool {
    let (start, rest) = match pattern.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    };
    let (end, rest) = match rest.strip_suffix('$') {
        Some(rest) if !rest.ends_with('\\') => (true, rest),
        _ => (false, rest),
    };
    let mut literal = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => literal.push(chars.next().expect("a trailing \\ in a regex")),
            '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' => {
                panic!("regex /{pattern}/: extend the filter evaluator for `{c}`")
            }
            c => literal.push(c),
        }
    }
    match (start, end) {
        (true, true) => text == literal,
        (true, false) => text.starts_with(&literal),
        (false, true) => text.ends_with(&literal),
        (false, false) => text.contains(&literal),
    }
}

fn holds(expr: &Expr, line: &Value, samples: &Samples) -> bool {
    match expr {
        Expr::Or(terms) => terms.iter().any(|t| holds(t, line, samples)),
        Expr::And(terms) => terms.iter().all(|t| holds(t, line, samples)),
        Expr::Not(inner) => !holds(inner, line, samples),
        Expr::Present(field) => value(line, field).is_some(),
        Expr::Cmp {
            field,
            op,
            value: v,
        } => {
            let Some(actual) = value(line, field) else {
                return false;
            };
            let text = || match actual {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let equal = || match v {
                Lit::Str(s) => actual.as_str() == Some(samples.fill(s).as_str()),
                Lit::Num(n) => actual.as_f64() == Some(*n),
                Lit::Regex(_) => panic!("`{field} {op}` takes a string or a number"),
            };
            match (*op, v) {
                ("=", _) => equal(),
                ("!=", _) => !equal(),
                ("like" | "=~", Lit::Regex(r)) => regex_matches(&samples.fill(r), &text()),
                ("like", Lit::Str(s)) => text().contains(&samples.fill(s)),
                _ => panic!("`{field} {op} {v:?}`: extend the filter evaluator"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The lines the functions write
// ---------------------------------------------------------------------------------------------

/// Each function's lines (EMF and JSON logs, as they share its log group) and its samples.
struct Written {
    lines: BTreeMap<&'static str, Vec<Value>>,
    samples: BTreeMap<&'static str, Samples>,
}

fn x_request_id(res: &TestResponse) -> String {
    res.header("x-request-id").unwrap().to_owned()
}

/// A JSON-schema `response_format` the structured-output retry is checked against.
fn person_body() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Who is Ann? Answer in JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        }}},
    })
}

const USAGE: tollgate::domain::usage::TokenUsage = tollgate::domain::usage::TokenUsage {
    prompt_tokens: 200,
    completion_tokens: 40,
    cached_tokens: 0,
    cache_write_tokens: 0,
};

/// invoke: a buffered and a streamed chat, a refused one, and a structured-output reply that
/// fails validation and is retried (the request's id and `{id}-retry`).
async fn drive_invoke(gw: &Gateway, openai: &OpenAiStandIn) -> Samples {
    assert_eq!(
        gw.chat("acme", chat_body("gpt-4o-mini", "hello"))
            .await
            .status,
        200
    );
    let mut streamed = chat_body("claude-haiku", "hello again");
    streamed["stream"] = json!(true);
    assert_eq!(gw.chat("acme", streamed).await.status, 200);
    let refused = gw.chat("acme", chat_body("no-such-model", "hi")).await;
    assert_eq!(refused.status, 404);

    let mut config = tollgate::demo::acme_config().unwrap();
    config.structured_output.retry_on_invalid = true;
    gw.store.put_tenant_config(config).await.unwrap();
    openai.push(Behavior::reply(r#"{"name": "Ann", "age": "31"}"#, USAGE));
    openai.push(Behavior::reply(r#"{"name": "Ann", "age": 31}"#, USAGE));
    let retried = gw.chat("acme", person_body()).await;
    assert_eq!(retried.status, 200, "{}", retried.text());
    Samples {
        tenant: "acme".into(),
        request_id: x_request_id(&retried),
    }
}

/// ingest: an upload, and a document the service rejects (empty text).
async fn drive_ingest(gw: &Gateway) -> Samples {
    let upload = |text: &str| json!({"id": "faq", "text": text, "metadata": {"source": "test"}});
    let stored = gw
        .call(
            "acme",
            Method::POST,
            "/v1/documents",
            Some(upload("Rockets are reusable.")),
        )
        .await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    let rejected = gw
        .call("acme", Method::POST, "/v1/documents", Some(upload(" ")))
        .await;
    assert!(rejected.text().contains("empty"), "{}", rejected.text());
    Samples {
        tenant: "acme".into(),
        request_id: x_request_id(&stored),
    }
}

async fn get_usage(state: &usage_report::UsageReportState, key: Option<&str>) -> TestResponse {
    let mut req = Request::builder().method(Method::GET).uri("/v1/usage");
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let req = req.body(Bytes::new()).unwrap();
    let (parts, body) = usage_report::handle(state, req).await.into_parts();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await,
    }
}

/// usage-report: a report, and a request refused for its missing key.
async fn drive_usage_report(gw: &Gateway) -> Samples {
    let stores = tollgate::bootstrap::Stores::embedded(gw.store.clone());
    let state = usage_report::UsageReportState::build(&stores);
    assert_eq!(get_usage(&state, Some(gw.key("acme"))).await.status, 200);
    let refused = get_usage(&state, None).await;
    assert_eq!(refused.status, 401);
    Samples {
        tenant: "acme".into(),
        request_id: x_request_id(&refused),
    }
}

/// anomaly-scheduler: one invocation (its EventBridge fixture, a Lambda request id) over a
/// tenant whose hour costs 50 times its weekly average, so the run records and alerts a spike.
async fn drive_anomaly_scheduler(emf: &Captured) -> Samples {
    let fixture = include_str!("../../../functions/anomaly-scheduler/events/scheduled.json");
    let hour: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 3, 14, 15, 0, 0).unwrap();
    let store = Arc::new(MemoryStore::new());
    let event = |at, cost| tollgate_tests::fixtures::ok_event("spiky", "gpt-4o", at, cost);
    for day in 1..=7 {
        let at = hour - chrono::Duration::days(day) + chrono::Duration::hours(3);
        store.record(&event(at, dec!(2.40)), &[]).await.unwrap();
    }
    store.record(&event(hour, dec!(5)), &[]).await.unwrap();
    let state = anomaly_scheduler::SchedulerState {
        store,
        alerts: Arc::new(EmfAlerts::new("log-queries", Box::new(emf.clone()))),
        clock: Arc::new(SystemClock),
        options: SchedulerOptions::default(),
        budget_bus: Arc::new(tollgate::adapters::alerts::MemoryBudgetBus::default()),
        sweep_after: std::time::Duration::ZERO,
    };
    let mut context = anomaly_scheduler::Context::default();
    context.request_id = LAMBDA_REQUEST_ID.into();
    let invocation =
        anomaly_scheduler::LambdaEvent::new(serde_json::from_str(fixture).unwrap(), context);
    let summary = anomaly_scheduler::handle_invocation(&state, invocation)
        .await
        .unwrap();
    assert_eq!(summary.anomalies_recorded, 1);
    Samples {
        tenant: "spiky".into(),
        request_id: LAMBDA_REQUEST_ID.into(),
    }
}

/// Drives every function with the JSON log layer the binaries install (info and above, their
/// default) and a real `EmfSink`, and sorts the lines by function.
async fn written() -> Written {
    tollgate_tests::capture::pin_interest();
    let logs = Captured::default();
    let emf = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(tollgate::telemetry::json_layer(move || writer.clone()));
    // This thread only, on a current-thread runtime: other tests' logs never reach it.
    let _guard = tracing::subscriber::set_default(subscriber);

    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let sink = Arc::new(EmfSink::new(Box::new(emf.clone())));
    let gw = Gateway::build_observed(standin_settings(&openai, &anthropic), Some(sink)).await;
    // Lines written while building (none today) belong to no request.
    let _ = (logs.take(), emf.take());

    let mut out = Written {
        lines: BTreeMap::new(),
        samples: BTreeMap::new(),
    };
    let mut keep = |function: &'static str, samples: Samples| {
        let mut lines = emf.take();
        lines.extend(logs.take());
        assert!(!lines.is_empty(), "{function} wrote no line");
        out.lines.insert(function, lines);
        out.samples.insert(function, samples);
    };
    keep("invoke", drive_invoke(&gw, &openai).await);
    keep("ingest", drive_ingest(&gw).await);
    keep("usage-report", drive_usage_report(&gw).await);
    keep("anomaly-scheduler", drive_anomaly_scheduler(&emf).await);
    out
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn the_template_ships_the_five_saved_queries_over_the_functions_log_groups() {
    let queries: Vec<(String, Vec<String>)> = saved_queries()
        .into_iter()
        .map(|q| (q.name, q.functions))
        .collect();
    let query = |name: &str, functions: &[&str]| {
        let functions = functions.iter().map(|f| (*f).to_owned()).collect();
        (name.to_owned(), functions)
    };
    assert_eq!(
        queries,
        [
            query("tenant-requests", &["invoke", "ingest"]),
            query("tenant-errors-by-type", &["invoke", "ingest"]),
            query("slowest-requests-by-model", &["invoke"]),
            query("cost-by-tenant", &["invoke", "ingest"]),
            query(
                "request-id",
                &["invoke", "ingest", "usage-report", "anomaly-scheduler"]
            ),
        ]
    );
}

#[test]
fn fields_skip_keywords_functions_aliases_literals_and_builtins() {
    let fields = fields_of(
        "fields @timestamp, RequestId # a comment naming NotAField\n\
         | filter TenantId = \"acme Model\" and Errors = 1 and request_id like /^a-b NotAField/ \
         | stats pct(Latency, 99) as p99_ms by Model | sort p99_ms desc | limit 5",
    );
    let expected: BTreeSet<String> = [
        "RequestId",
        "TenantId",
        "Errors",
        "request_id",
        "Latency",
        "Model",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(fields, expected);
}

#[test]
fn the_filter_evaluator_matches_prefixes_substrings_and_typed_values() {
    let samples = Samples {
        tenant: "acme".into(),
        request_id: "r1".into(),
    };
    let line = json!({"RequestId": "r1-retry", "Errors": 1, "TenantId": "acme", "Gone": null});
    let eval = |filter: &str| holds(&filters_of(filter)[0], &line, &samples);
    assert!(eval("filter RequestId like /^REQUEST_ID/"));
    assert!(!eval("filter RequestId like /^REQUEST_ID$/"));
    assert!(!eval("filter RequestId like /^retry/"));
    assert!(eval("filter RequestId like \"retry\""));
    assert!(eval("filter TenantId = \"TENANT_ID\" and Errors = 1"));
    // Stricter than Logs Insights may be: a number never equals a string, so a value written
    // with another JSON type than the query compares with fails the suite.
    assert!(!eval("filter Errors = \"1\""));
    assert!(eval(
        "filter Errors = 2 or (ispresent(TenantId) and not ispresent(Gone))"
    ));
    assert!(!eval("filter ispresent(Gone) or TenantId != \"acme\""));
}

#[test]
fn the_slowest_requests_query_lists_requests_slowest_first_not_aggregates() {
    let query = saved_queries()
        .into_iter()
        .find(|q| q.name == "slowest-requests-by-model")
        .unwrap();
    let commands = commands(&query.text);
    let starts = |word: &str| {
        commands
            .iter()
            .find(|c| c.first() == Some(&Tok::Ident(word.into())))
            .cloned()
    };
    assert!(starts("stats").is_none(), "one row per request");
    let fields = starts("fields").expect("a fields command");
    for field in ["RequestId", "Model", "TenantId", "Latency", "Status"] {
        assert!(fields.contains(&Tok::Ident(field.into())), "{field}");
    }
    assert_eq!(
        starts("sort").unwrap()[1..],
        [Tok::Ident("Latency".into()), Tok::Ident("desc".into())]
    );
    assert!(matches!(starts("limit").unwrap()[..], [_, Tok::Num(n)] if n > 0.0));
}

#[tokio::test(flavor = "current_thread")]
async fn every_saved_query_selects_real_lines_of_each_function_it_targets() {
    let written = written().await;
    for query in saved_queries() {
        let name = &query.name;
        let filters = filters_of(&query.text);
        let mut selected: Vec<&Value> = Vec::new();
        for function in &query.functions {
            let lines = &written.lines[function.as_str()];
            let samples = &written.samples[function.as_str()];
            let mine: Vec<&Value> = lines
                .iter()
                .filter(|line| filters.iter().all(|f| holds(f, line, samples)))
                .collect();
            assert!(
                !mine.is_empty(),
                "`{name}` selects none of {function}'s lines (placeholders: {samples:?}):\n{}",
                query.text
            );
            selected.extend(mine);
        }

        let fields = fields_of(&query.text);
        assert!(
            !fields.is_empty(),
            "{name}: no fields found in {}",
            query.text
        );
        for field in &fields {
            assert!(
                selected.iter().any(|line| value(line, field).is_some()),
                "`{name}` names `{field}`, which no line it selects has"
            );
        }

        let mut cmps = Vec::new();
        filters.iter().for_each(|f| comparisons(f, &mut cmps));
        for cmp in &cmps {
            let matched = query.functions.iter().any(|function| {
                let samples = &written.samples[function.as_str()];
                written.lines[function.as_str()]
                    .iter()
                    .any(|line| holds(cmp, line, samples))
            });
            assert!(
                matched,
                "`{name}`: no line of {:?} has {cmp:?}",
                query.functions
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_request_id_query_finds_the_request_and_the_calls_made_for_it() {
    let written = written().await;
    let query = saved_queries()
        .into_iter()
        .find(|q| q.name == "request-id")
        .unwrap();
    let filters = filters_of(&query.text);
    let samples = &written.samples["invoke"];
    let id = &samples.request_id;
    let found: Vec<&Value> = written.lines["invoke"]
        .iter()
        .filter(|line| filters.iter().all(|f| holds(f, line, samples)))
        .collect();
    let emf_ids: BTreeSet<&str> = found
        .iter()
        .filter_map(|line| line["RequestId"].as_str())
        .collect();
    let retry = format!("{id}-retry");
    assert_eq!(
        emf_ids,
        BTreeSet::from([id.as_str(), retry.as_str()]),
        "the structured-output request's EMF line and its retry's"
    );
    assert!(
        found
            .iter()
            .any(|line| line["request_id"] == id.as_str() && line["retry_request_id"] == retry),
        "the log line that announces the retry"
    );
    // Nothing about the other requests.
    assert!(found.iter().all(|line| {
        let of = line["RequestId"].as_str().or(line["request_id"].as_str());
        of.is_some_and(|of| of.starts_with(id.as_str()))
    }));
}
