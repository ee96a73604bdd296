//! `tollgate replay`: records the usage events of `MeteringFailure` log lines.
//!
//! When invoke cannot record a usage event (after retries), it logs one EMF line holding the
//! whole event under `UsageEvent` (`adapters::emf::render_metering_failure`). This command reads
//! such lines (as written, as exported by CloudWatch Logs with the line in a `message` field,
//! or behind a `aws logs tail`-style timestamp prefix) and records each event through
//! `UsageSink::record`, which inserts a request id at most once: replaying a file twice, or a
//! file with an event that did get recorded, never double-counts.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Map, Value};
use tollgate::domain::usage::UsageEvent;
use tollgate::ports::store::{Recorded, UsageSink};

use super::{Output, StoreArgs, UsageError};

/// How many unreadable lines the summary lists one by one.
const LISTED: usize = 20;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    tollgate replay invoke-errors.log\n  \
    aws logs tail /aws/lambda/tollgate-invoke --since 1d --filter-pattern MeteringFailure | tollgate replay -")]
pub struct ReplayArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Log file to read, one line per log event; `-` (or nothing) reads stdin. Lines without a
    /// `UsageEvent` are skipped, so a whole log export can be given.
    #[arg(value_name = "FILE|-")]
    pub file: Option<PathBuf>,
}

/// What one replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Request ids recorded now, with their line numbers.
    pub replayed: Vec<(usize, String)>,
    /// Events whose request id was already recorded.
    pub already_recorded: usize,
    /// JSON lines without a usage event (other log lines) and blank lines.
    pub skipped: usize,
    /// Line number and reason for each line that could not be read.
    pub unreadable: Vec<(usize, String)>,
    /// Unreadable lines that mention `UsageEvent` or `MeteringFailure`: an event may be among
    /// them.
    pub unreadable_events: usize,
    /// The store failed: the line, and the error. Replay stops there.
    pub stopped: Option<(usize, String)>,
}

pub async fn execute<S>(store: &S, args: ReplayArgs) -> anyhow::Result<Output>
where
    S: UsageSink + ?Sized,
{
    let report = match args.file.as_deref() {
        None if std::io::stdin().is_terminal() => {
            return Err(UsageError::new(
                "no input: give a FILE, or pipe log lines into `tollgate replay -`",
            )
            .into());
        }
        None => replay(store, std::io::stdin().lock()).await?,
        Some(path) if path.as_os_str() == "-" => replay(store, std::io::stdin().lock()).await?,
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            replay(store, BufReader::new(file)).await?
        }
    };
    Ok(render(&report))
}

/// Reads `input` line by line and records every usage event in it.
pub async fn replay<S, R>(store: &S, mut input: R) -> anyhow::Result<ReplayReport>
where
    S: UsageSink + ?Sized,
    R: BufRead,
{
    let mut report = ReplayReport::default();
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        if input
            .read_until(b'\n', &mut buf)
            .context("reading the log")?
            == 0
        {
            break;
        }
        number += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            report
                .unreadable
                .push((number, "not UTF-8 text".to_owned()));
            continue;
        };
        match classify(text) {
            Line::Skip => report.skipped += 1,
            Line::Unreadable(reason) => {
                if text.contains("UsageEvent") || text.contains("MeteringFailure") {
                    report.unreadable_events += 1;
                }
                report.unreadable.push((number, reason));
            }
            // No limiter adjustments: the reservation was charged at admission and its windows
            // have long moved on, so reconciling it now would only skew a current window.
            Line::Event(event) => match store.record(&event, &[]).await {
                Ok(Recorded::Inserted) => report
                    .replayed
                    .push((number, event.request_id.as_str().to_owned())),
                Ok(Recorded::Duplicate) => report.already_recorded += 1,
                Err(err) => {
                    report.stopped = Some((number, err.to_string()));
                    break;
                }
            },
        }
    }
    Ok(report)
}

enum Line {
    Event(Box<UsageEvent>),
    Skip,
    Unreadable(String),
}

fn classify(text: &str) -> Line {
    let text = text.trim();
    if text.is_empty() {
        return Line::Skip;
    }
    let Some(object) = json_object(text) else {
        return Line::Unreadable("not a JSON log line".to_owned());
    };
    let object = match unwrap_message(object) {
        Ok(object) => object,
        Err(reason) => return Line::Unreadable(reason),
    };
    let Some(event) = object.get("UsageEvent") else {
        return Line::Skip;
    };
    match serde_json::from_value::<UsageEvent>(event.clone()) {
        Ok(event) => Line::Event(Box::new(event)),
        Err(err) => Line::Unreadable(format!("its UsageEvent does not decode: {err}")),
    }
}

/// The JSON object on a line: the whole line, or what follows a prefix such as the timestamp
/// and stream name `aws logs tail` prints.
fn json_object(text: &str) -> Option<Map<String, Value>> {
    let parse = |s: &str| match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    parse(text).or_else(|| parse(&text[text.find('{')?..]))
}

/// CloudWatch Logs exports carry the logged line in `message`, as a string or an object.
fn unwrap_message(object: Map<String, Value>) -> Result<Map<String, Value>, String> {
    if object.contains_key("UsageEvent") {
        return Ok(object);
    }
    match object.get("message") {
        Some(Value::Object(inner)) => Ok(inner.clone()),
        Some(Value::String(inner)) => match json_object(inner.trim()) {
            Some(inner) => Ok(inner),
            None if inner.contains("UsageEvent") => {
                Err("its message mentions UsageEvent but is not a JSON object".to_owned())
            }
            // A plain-text log message: not a metering failure.
            None => Ok(Map::new()),
        },
        _ => Ok(object),
    }
}

/// The summary, and whether the replay is complete (exit code 0).
pub fn render(report: &ReplayReport) -> Output {
    let mut out = String::new();
    for (line, request_id) in &report.replayed {
        out.push_str(&format!("line {line}: replayed request {request_id}\n"));
    }
    out.push_str(&format!(
        "replayed: {}\nalready recorded: {}\nskipped (no usage event): {}\nunreadable: {}\n",
        report.replayed.len(),
        report.already_recorded,
        report.skipped,
        report.unreadable.len()
    ));
    for (line, reason) in report.unreadable.iter().take(LISTED) {
        out.push_str(&format!("  line {line}: {reason}\n"));
    }
    if report.unreadable.len() > LISTED {
        out.push_str(&format!(
            "  ... and {} more\n",
            report.unreadable.len() - LISTED
        ));
    }
    let mut output = Output::stdout(out);
    if let Some((line, error)) = &report.stopped {
        output = output.note(format!(
            "stopped at line {line}: the store failed: {error}. Fix the cause and run the same \
             replay again; events already recorded are skipped."
        ));
    }
    if report.unreadable_events > 0 {
        output = output.note(format!(
            "{} unreadable line(s) look like metering failures: check them, an event may be lost",
            report.unreadable_events
        ));
    }
    output.complete = report.stopped.is_none() && report.unreadable_events == 0;
    output
}
