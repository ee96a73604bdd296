//! `tollgate ingest`: sends a tenant's text and Markdown files to `POST /v1/documents`.
//!
//! Files are found first (sorted, so ids and batches are the same on every run) and read one
//! batch at a time, so a large folder is never held in memory. A document's id comes from its
//! path, and the server replaces a document by id: re-running over the same folder updates what
//! an earlier run stored instead of duplicating it, which is also what makes retrying a batch
//! safe.
//!
//! Batches go one after another. A 413 halves the batch until it fits; 429, 5xx and connection
//! errors are retried with backoff (the server's `Retry-After` first); other 4xx fail the batch.
//! 401/403 and a server that stays unreachable stop sending: every later batch would get the
//! same answer, so their documents are reported as not sent.
//!
//! The key is only ever put in the `Authorization` header (marked sensitive); it is never
//! printed, and any server message that echoed it would be redacted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

/// The server's limit on documents per request.
const MAX_BATCH: u16 = 100;
/// The server's limit on document id length.
const MAX_ID_LEN: usize = 128;
/// Files larger than this are not read: far past any document limit the server has, and
/// reading them could exhaust memory.
const MAX_FILE_BYTES: u64 = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The server embeds every document of a batch before it answers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// A broken connection during an upload at least this big is taken for a 413; smaller bodies
/// go out in one write, so a break there is an ordinary connection error, and retried.
const CUT_OFF_MIN_BYTES: usize = 256 << 10;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A `Retry-After` beyond this is taken as this: one bogus header must not park the run.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// How many skipped files and failed documents the summary lists one by one.
const LISTED: usize = 100;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    tollgate ingest docs/ --url http://127.0.0.1:9000 --key \"$KEY\"\n  \
    TOLLGATE_API_KEY=\"$KEY\" tollgate ingest handbook/ faq.md --url https://api.example.com/prod --batch 50\n  \
    tollgate ingest docs/ --dry-run")]
pub struct IngestArgs {
    /// Files and folders to send. Folders are walked recursively (hidden folders are not);
    /// `.txt`, `.md` and `.markdown` files are sent, anything else is skipped.
    #[arg(value_name = "FILE-OR-FOLDER", required = true)]
    paths: Vec<PathBuf>,
    /// API base URL, http or https, e.g. http://127.0.0.1:9000; a path is kept as a prefix
    /// (an API Gateway stage: https://abc.execute-api.eu-west-1.amazonaws.com/prod).
    #[arg(long, value_parser = parse_base_url, required_unless_present = "dry_run")]
    url: Option<Url>,
    /// Tenant API key, sent as the bearer token and never printed. The environment variable
    /// keeps it out of the process list and shell history.
    // Parsed without validation: clap repeats a rejected value in its error message.
    #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true,
          value_parser = secret, required_unless_present = "dry_run")]
    key: Option<SecretString>,
    /// Documents per request (the server takes at most 100).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_BATCH)))]
    batch: u16,
    /// Retries of one request after 429, 5xx or a connection error.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    max_retries: u32,
    /// Document ids from the path relative to the folder given (`guides/setup.md` →
    /// `guides--setup.md`) or from the file name alone (`setup.md`).
    #[arg(long, value_enum, default_value = "path")]
    id_from: IdFrom,
    /// List the documents and batches that would be sent, without contacting the server.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IdFrom {
    Path,
    Name,
}

fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

fn parse_base_url(raw: &str) -> Result<Url, String> {
    const EXAMPLE: &str = "e.g. http://127.0.0.1:9000";
    let url = Url::parse(raw).map_err(|e| format!("not an absolute URL ({e}); {EXAMPLE}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme `{}` is not supported: use http or https, {EXAMPLE}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("the URL has no host; {EXAMPLE}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must not have a query or fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL are not supported; pass the tenant key with --key".into(),
        );
    }
    Ok(url)
}

/// `{base}/v1/documents`, keeping any stage prefix in the base.
fn documents_endpoint(base: &Url) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{prefix}/v1/documents"));
    url
}

/// A file that will be sent: where it is, and the path relative to the folder given (or its
/// name, for a file given directly) that its id and metadata use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    disk: PathBuf,
    rel: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Skip {
    path: String,
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    id: String,
    path: String,
    code: String,
    message: String,
}

/// What one run did; also what the progress line shows.
#[derive(Debug, Default)]
struct Report {
    /// Files that were to be sent (matching extension), and how many have an outcome.
    files: usize,
    done: usize,
    stored: usize,
    chunks: u64,
    batches: usize,
    skipped: Vec<Skip>,
    failed: Vec<Failure>,
}

impl Report {
    fn skip(&mut self, path: String, reason: impl Into<String>) {
        self.done += 1;
        self.skipped.push(Skip {
            path,
            reason: reason.into(),
        });
    }

    fn fail(&mut self, id: &str, path: &str, failure: &ApiFailure) {
        self.done += 1;
        self.failed.push(Failure {
            id: id.to_owned(),
            path: path.to_owned(),
            code: failure.code.clone(),
            message: failure.message.clone(),
        });
    }
}

const UNSUPPORTED: &str = "not a .txt, .md or .markdown file";

fn supported(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "txt" | "md" | "markdown"))
}

fn is_markdown(rel: &str) -> bool {
    Path::new(rel)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "md" | "markdown"))
}

/// Every file under `roots`, in order: roots as given, folder contents sorted by name.
/// Unsupported and unreachable entries are recorded as skipped (not counted as files to send).
fn discover(roots: &[PathBuf], report: &mut Report) -> Vec<Found> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for root in roots {
        let is_dir = std::fs::metadata(root).is_ok_and(|m| m.is_dir());
        if is_dir {
            walk(root, "", &mut found, report);
        } else if supported(root) {
            let rel = root.file_name().map_or_else(
                || root.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            found.push(Found {
                disk: root.clone(),
                rel,
            });
        } else {
            report.skipped.push(Skip {
                path: root.display().to_string(),
                reason: UNSUPPORTED.into(),
            });
        }
    }
    // A file reached twice (a folder and a file in it, or two overlapping folders) is sent once.
    found.retain(|f| {
        let key = std::fs::canonicalize(&f.disk).unwrap_or_else(|_| f.disk.clone());
        let first = seen.insert(key);
        if !first {
            report.skipped.push(Skip {
                path: f.disk.display().to_string(),
                reason: "given more than once".into(),
            });
        }
        first
    });
    found
}

fn walk(dir: &Path, prefix: &str, found: &mut Vec<Found>, report: &mut Report) {
    let shown = || dir.display().to_string();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            report.skipped.push(Skip {
                path: shown(),
                reason: format!("folder not readable: {err}"),
            });
            return;
        }
    };
    let mut entries: Vec<_> = entries
        .filter_map(|entry| match entry {
            Ok(entry) => Some(entry),
            Err(err) => {
                report.skipped.push(Skip {
                    path: shown(),
                    reason: format!("folder entry not readable: {err}"),
                });
                None
            }
        })
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        let skip = |report: &mut Report, reason: &str| {
            report.skipped.push(Skip {
                path: path.display().to_string(),
                reason: reason.to_owned(),
            });
        };
        let Ok(file_type) = entry.file_type() else {
            skip(report, "not readable");
            continue;
        };
        // Symbolic links to files are followed; links to folders are not, so a link cycle
        // cannot make the walk endless.
        let (is_dir, is_file) = if file_type.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => {
                    skip(report, "symbolic link to a folder (not followed)");
                    continue;
                }
                Ok(m) => (false, m.is_file()),
                Err(err) => {
                    skip(report, &format!("broken symbolic link: {err}"));
                    continue;
                }
            }
        } else {
            (file_type.is_dir(), file_type.is_file())
        };
        if is_dir {
            if name.starts_with('.') {
                skip(report, "hidden folder (not walked; name it to include it)");
            } else {
                walk(&path, &format!("{rel}/"), found, report);
            }
        } else if !is_file {
            skip(report, "not a regular file");
        } else if supported(&path) {
            found.push(Found { disk: path, rel });
        } else {
            skip(report, UNSUPPORTED);
        }
    }
}

/// The document id for a relative path: `/` becomes `--`, anything outside `[A-Za-z0-9._-]`
/// becomes `-`, cut to the server's 128 characters.
fn document_id(rel: &str, from: IdFrom) -> String {
    let source = match from {
        IdFrom::Path => rel,
        IdFrom::Name => rel.rsplit('/').next().unwrap_or(rel),
    };
    let mut id = String::with_capacity(source.len());
    for c in source.chars() {
        match c {
            '/' => id.push_str("--"),
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') => id.push(c),
            _ => id.push('-'),
        }
    }
    // Only ASCII was pushed, so any byte index is a character boundary.
    id.truncate(MAX_ID_LEN);
    id
}

/// The first `# ` heading outside code blocks, without a closing `#` sequence.
fn first_heading(text: &str) -> Option<String> {
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start_matches(' ');
        if line.len() - trimmed.len() > 3 {
            continue; // indented code
        }
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            continue;
        }
        if let Some(open) = ["```", "~~~"].into_iter().find(|f| trimmed.starts_with(f)) {
            fence = Some(open);
            continue;
        }
        let Some(rest) = trimmed.strip_prefix("# ") else {
            continue;
        };
        let heading = rest.trim();
        let without_closing = heading.trim_end_matches('#');
        let heading = if without_closing.is_empty() || without_closing.ends_with([' ', '\t']) {
            without_closing.trim_end()
        } else {
            heading // `# C#`: the `#` is part of the text
        };
        if !heading.is_empty() {
            return Some(heading.to_owned());
        }
    }
    None
}

fn title(text: &str, rel: &str) -> String {
    is_markdown(rel)
        .then(|| first_heading(text))
        .flatten()
        .unwrap_or_else(|| rel.rsplit('/').next().unwrap_or(rel).to_owned())
}

/// A file's text, or why it cannot be sent as a document.
fn read_text(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("not readable: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    if text.trim().is_empty() {
        return Err("empty".into());
    }
    Ok(text)
}

/// A file to send, with its id worked out (and whether that id was taken by an earlier file).
struct Planned {
    found: Found,
    id: String,
    duplicate_of: Option<String>,
}

fn plan(found: Vec<Found>, from: IdFrom) -> Vec<Planned> {
    let mut owners: HashMap<String, String> = HashMap::new();
    found
        .into_iter()
        .map(|found| {
            let id = document_id(&found.rel, from);
            let duplicate_of = match owners.get(&id) {
                Some(first) => Some(first.clone()),
                None => {
                    owners.insert(id.clone(), found.rel.clone());
                    None
                }
            };
            Planned {
                found,
                id,
                duplicate_of,
            }
        })
        .collect()
}

#[derive(Debug)]
struct Document {
    id: String,
    rel: String,
    title: String,
    text: String,
}

/// Reads files until `size` documents are ready or the files run out; the files that cannot be
/// sent are recorded in `report` on the way.
fn next_batch(
    files: &mut impl Iterator<Item = Planned>,
    size: usize,
    report: &mut Report,
) -> Vec<Document> {
    let mut batch = Vec::with_capacity(size);
    while batch.len() < size {
        let Some(Planned {
            found,
            id,
            duplicate_of,
        }) = files.next()
        else {
            break;
        };
        if let Some(first) = duplicate_of {
            report.fail(
                &id,
                &found.rel,
                &ApiFailure::new(
                    "duplicate_id",
                    format!("`{first}` has the same id; use --id-from path or rename one"),
                ),
            );
            continue;
        }
        let shown = found.disk.display().to_string();
        if let Ok(meta) = std::fs::metadata(&found.disk)
            && meta.len() > MAX_FILE_BYTES
        {
            report.fail(
                &id,
                &found.rel,
                &ApiFailure::new(
                    "file_too_large",
                    format!(
                        "{} bytes; files over {MAX_FILE_BYTES} bytes are not read",
                        meta.len()
                    ),
                ),
            );
            continue;
        }
        match read_text(&found.disk) {
            Ok(text) => batch.push(Document {
                title: title(&text, &found.rel),
                id,
                rel: found.rel,
                text,
            }),
            Err(reason) => report.skip(shown, reason),
        }
    }
    batch
}

fn request_body(docs: &[Document]) -> anyhow::Result<Bytes> {
    let documents: Vec<_> = docs
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "title": d.title,
                "text": d.text,
                "metadata": {"path": d.rel},
            })
        })
        .collect();
    Ok(Bytes::from(serde_json::to_vec(
        &json!({"documents": documents}),
    )?))
}

/// Why a document or a batch was not stored, as the server (or this command) put it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiFailure {
    code: String,
    message: String,
}

impl ApiFailure {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// For a document that was never sent because an earlier batch ended the run.
    fn not_sent(reason: &ApiFailure) -> Self {
        Self::new(
            "not_sent",
            format!("not sent after {}: {}", reason.code, reason.message),
        )
    }

    /// From an OpenAI-shaped error body, or the status when the body is something else.
    fn from_response(status: StatusCode, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            message: Option<String>,
            code: Option<String>,
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        let fallback_code = format!("http_{}", status.as_u16());
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => Self {
                code: error.code.or(error.kind).unwrap_or(fallback_code),
                message: error.message.unwrap_or_else(|| status.to_string()),
            },
            Err(_) => {
                let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
                let text = text.trim();
                Self {
                    code: fallback_code,
                    message: if text.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        format!("HTTP {status}: {text}")
                    },
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct IngestResponse {
    data: Vec<DocumentOutcome>,
}

#[derive(Debug, Deserialize)]
struct DocumentOutcome {
    id: Option<String>,
    status: String,
    chunks: Option<u32>,
    error: Option<OutcomeError>,
}

#[derive(Debug, Deserialize)]
struct OutcomeError {
    code: String,
    message: String,
}

/// How one batch ended, after retries.
enum Answer {
    Results(Vec<DocumentOutcome>),
    /// 413: the body is over the server's limit.
    TooLarge(ApiFailure),
    /// The batch failed; `stop` when every later batch would fail the same way.
    Failed {
        failure: ApiFailure,
        stop: bool,
    },
}

struct Sender {
    http: reqwest::Client,
    endpoint: Url,
    auth: HeaderValue,
    max_retries: u32,
}

impl Sender {
    fn new(base: &Url, key: &SecretString, max_retries: u32) -> anyhow::Result<Self> {
        if key.expose_secret().trim().is_empty() {
            anyhow::bail!("the key is empty");
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
            .map_err(|_| anyhow::anyhow!("the key has characters a header cannot carry"))?;
        auth.set_sensitive(true);
        // No redirects: the key must not follow one to another host.
        let http = tollgate::adapters::tls::reqwest_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tollgate-ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            endpoint: documents_endpoint(base),
            auth,
            max_retries,
        })
    }

    async fn post(
        &self,
        body: Bytes,
    ) -> Result<(StatusCode, Option<Duration>, Bytes), reqwest::Error> {
        let response = self
            .http
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // A server that refuses a large body (413) may answer before reading all of it and
        // then close the connection: the status stands even if its body is cut off.
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(_) if !status.is_success() => Bytes::new(),
            Err(err) => return Err(err),
        };
        Ok((status, retry_after, body))
    }

    /// Sends one batch, retrying what can be retried.
    async fn send(&self, body: Bytes, label: &str, progress: &mut Progress) -> Answer {
        let mut retries = 0;
        loop {
            let (wait, failure, unreachable) = match self.post(body.clone()).await {
                Ok((status, _, bytes)) if status.is_success() => {
                    return match serde_json::from_slice::<IngestResponse>(&bytes) {
                        Ok(response) => Answer::Results(response.data),
                        Err(err) => Answer::Failed {
                            failure: ApiFailure::new(
                                "invalid_response",
                                format!(
                                    "HTTP {status} with a body that is not an ingest report ({err})"
                                ),
                            ),
                            stop: false,
                        },
                    };
                }
                Ok((StatusCode::PAYLOAD_TOO_LARGE, _, bytes)) => {
                    return Answer::TooLarge(ApiFailure::from_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &bytes,
                    ));
                }
                Ok((status, retry_after, bytes))
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() =>
                {
                    let wait = retry_after
                        .map_or_else(|| backoff(retries), |after| after.min(MAX_RETRY_AFTER));
                    (wait, ApiFailure::from_response(status, &bytes), false)
                }
                Ok((status, _, bytes)) => {
                    let mut failure = ApiFailure::from_response(status, &bytes);
                    if status.is_redirection() {
                        failure.message = format!(
                            "HTTP {status}: redirects are not followed; give the final URL as --url"
                        );
                    }
                    return Answer::Failed {
                        failure,
                        stop: matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                    };
                }
                Err(err) if body.len() >= CUT_OFF_MIN_BYTES && cut_off_upload(&err) => {
                    return Answer::TooLarge(ApiFailure::new(
                        "payload_too_large",
                        format!(
                            "the server closed the connection during the {}-byte upload \
                             (over its body limit?): {}",
                            body.len(),
                            error_chain(&err)
                        ),
                    ));
                }
                Err(err) => {
                    let code = if err.is_timeout() {
                        "timeout"
                    } else {
                        "connection_failed"
                    };
                    // Only a connection that cannot be made at all says the server is gone.
                    let unreachable = err.is_connect();
                    (
                        backoff(retries),
                        ApiFailure::new(code, error_chain(&err)),
                        unreachable,
                    )
                }
            };
            if retries >= self.max_retries {
                return Answer::Failed {
                    failure,
                    stop: unreachable,
                };
            }
            retries += 1;
            progress.note(&format!(
                "{label}: {}: {}; retry {retries} of {} in {}",
                failure.code,
                failure.message,
                self.max_retries,
                seconds(wait)
            ));
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends `docs`, halving on 413, and tallies each document's outcome.
    /// Returns the reason to stop sending, if this batch found one.
    async fn deliver(
        &self,
        docs: Vec<Document>,
        label: &str,
        report: &mut Report,
        progress: &mut Progress,
    ) -> anyhow::Result<Option<ApiFailure>> {
        let mut parts = VecDeque::from([docs]);
        while let Some(mut part) = parts.pop_front() {
            let answer = self.send(request_body(&part)?, label, progress).await;
            match answer {
                Answer::Results(results) => tally(&part, results, report),
                Answer::TooLarge(_) if part.len() > 1 => {
                    let second = part.split_off(part.len() / 2);
                    progress.note(&format!(
                        "{label}: {} documents are over the server's body limit; sending {} and {}",
                        part.len() + second.len(),
                        part.len(),
                        second.len()
                    ));
                    parts.push_front(second);
                    parts.push_front(part);
                }
                Answer::TooLarge(failure) => {
                    for doc in &part {
                        report.fail(&doc.id, &doc.rel, &failure);
                    }
                }
                Answer::Failed { failure, stop } => {
                    for doc in &part {
                        report.fail(&doc.id, &doc.rel, &failure);
                    }
                    if stop {
                        let not_sent = ApiFailure::not_sent(&failure);
                        for doc in parts.iter().flatten() {
                            report.fail(&doc.id, &doc.rel, &not_sent);
                        }
                        return Ok(Some(failure));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Matches the server's per-document results to the documents sent (by id, which every
/// document sent has).
fn tally(sent: &[Document], results: Vec<DocumentOutcome>, report: &mut Report) {
    let mut by_id: HashMap<String, DocumentOutcome> = results
        .into_iter()
        .filter_map(|r| r.id.clone().map(|id| (id, r)))
        .collect();
    for doc in sent {
        match by_id.remove(&doc.id) {
            Some(outcome) if outcome.status == "stored" => {
                report.done += 1;
                report.stored += 1;
                report.chunks += u64::from(outcome.chunks.unwrap_or(0));
            }
            Some(outcome) => {
                let failure = outcome.error.map_or_else(
                    || ApiFailure::new("failed", format!("status `{}`", outcome.status)),
                    |e| ApiFailure::new(&e.code, e.message),
                );
                report.fail(&doc.id, &doc.rel, &failure);
            }
            None => report.fail(
                &doc.id,
                &doc.rel,
                &ApiFailure::new("missing_result", "the server's answer has no result for it"),
            ),
        }
    }
}

fn backoff(retries: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << retries.min(16))
        .min(MAX_BACKOFF)
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Whether the connection broke while the body was being written: what a server that answers
/// 413 before reading a large body and then closes looks like from here.
fn cut_off_upload(err: &reqwest::Error) -> bool {
    if err.is_connect() || err.is_timeout() {
        return false;
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            )
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// reqwest's message and its causes (`connection refused` is two levels down).
fn error_chain(err: &reqwest::Error) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

const BAR_WIDTH: usize = 30;

/// `[#####-----]`: `done` of `total` as `width` cells (full when `total` is 0).
fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done.min(total) * width)
        .checked_div(total)
        .unwrap_or(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// Progress on stderr: one `\r`-rewritten bar on a terminal, one line per batch otherwise.
struct Progress {
    tty: bool,
    /// Notes carry server messages, which must not repeat the key.
    key: Option<SecretString>,
    /// A progress line is on screen without its newline.
    open: bool,
}

impl Progress {
    fn new(key: Option<SecretString>) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            key,
            open: false,
        }
    }

    #[allow(clippy::print_stderr)] // Progress is this command's stderr output.
    fn batch_done(&mut self, label: &str, report: &Report) {
        let counts = format!(
            "{} files {}/{}  stored {}  failed {}",
            bar(report.done, report.files, BAR_WIDTH),
            report.done,
            report.files,
            report.stored,
            report.failed.len()
        );
        if self.tty {
            eprint!("\r{counts}\x1b[K");
            let _ = std::io::stderr().flush();
            self.open = true;
        } else {
            eprintln!("{label} done: {counts}");
        }
    }

    #[allow(clippy::print_stderr)]
    fn note(&mut self, line: &str) {
        if self.open {
            eprint!("\r\x1b[K");
            self.open = false;
        }
        let key = self.key.as_ref().map(|k| k.expose_secret());
        eprintln!("{}", redact(line, key));
    }

    #[allow(clippy::print_stderr)]
    fn finish(&mut self) {
        if self.open {
            eprintln!();
            self.open = false;
        }
    }
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    for path in &args.paths {
        if let Err(err) = std::fs::metadata(path) {
            usage_error(&format!("{}: {err}", path.display()));
        }
    }
    let sender = match (&args.url, &args.key, args.dry_run) {
        (_, _, true) => None,
        (Some(url), Some(key), false) => match Sender::new(url, key, args.max_retries) {
            Ok(sender) => Some(sender),
            Err(err) => usage_error(&format!("--key: {err}")),
        },
        // clap requires both unless --dry-run.
        _ => usage_error("--url and --key are required unless --dry-run"),
    };

    let mut report = Report::default();
    let found = discover(&args.paths, &mut report);
    report.files = found.len();
    let mut files = plan(found, args.id_from).into_iter();
    let size = usize::from(args.batch);

    let Some(sender) = sender else {
        let mut batches = Vec::new();
        loop {
            let batch = next_batch(&mut files, size, &mut report);
            if batch.is_empty() {
                break;
            }
            report.done += batch.len();
            batches.push(batch);
        }
        report.batches = batches.len();
        print_summary(&render_dry_run(&batches, &report));
        return finish(&report);
    };

    let mut progress = Progress::new(args.key.clone());
    let mut stopped: Option<ApiFailure> = None;
    loop {
        let batch = next_batch(&mut files, size, &mut report);
        if batch.is_empty() {
            break;
        }
        if let Some(reason) = &stopped {
            // Read anyway, so the summary still says which files would have been skipped.
            let not_sent = ApiFailure::not_sent(reason);
            for doc in &batch {
                report.fail(&doc.id, &doc.rel, &not_sent);
            }
            continue;
        }
        report.batches += 1;
        let label = format!("batch {}", report.batches);
        stopped = sender
            .deliver(batch, &label, &mut report, &mut progress)
            .await?;
        if let Some(reason) = &stopped {
            progress.note(&format!(
                "{label}: {}: {}; not sending the remaining documents",
                reason.code, reason.message
            ));
        }
        progress.batch_done(&label, &report);
    }
    progress.finish();
    let key = args.key.as_ref().map(|k| k.expose_secret());
    let summary = render_summary(&sender.endpoint, &report);
    print_summary(&redact(&summary, key));
    finish(&report)
}

/// Exit code 1 when any document failed; the summary is already on stdout.
fn finish(report: &Report) -> anyhow::Result<()> {
    if report.failed.is_empty() {
        return Ok(());
    }
    let _ = std::io::stdout().flush();
    std::process::exit(1)
}

/// Bad input only this command can see: reported like clap's own usage errors (exit code 2).
fn usage_error(message: &str) -> ! {
    clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("{message}\n"),
    )
    .exit()
}

/// Hides the key should a server message ever repeat it. Real keys are ~57 characters; a
/// string this short is no secret worth mangling every word it occurs in.
fn redact(text: &str, key: Option<&str>) -> String {
    match key {
        Some(key) if key.len() >= 8 => text.replace(key, "[redacted]"),
        _ => text.to_owned(),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The skipped and failed sections, shared by a run and a dry run.
fn render_problems(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "skipped  {}",
        plural(report.skipped.len(), "file", "files")
    );
    for skip in report.skipped.iter().take(LISTED) {
        let _ = writeln!(out, "  {}: {}", skip.path, skip.reason);
    }
    if report.skipped.len() > LISTED {
        let _ = writeln!(out, "  … and {} more", report.skipped.len() - LISTED);
    }
    let _ = writeln!(
        out,
        "failed   {}",
        plural(report.failed.len(), "document", "documents")
    );
    for failure in report.failed.iter().take(LISTED) {
        let _ = writeln!(
            out,
            "  {} ({}): {}: {}",
            failure.id, failure.path, failure.code, failure.message
        );
    }
    if report.failed.len() > LISTED {
        let _ = writeln!(out, "  … and {} more", report.failed.len() - LISTED);
    }
}

fn render_summary(endpoint: &Url, report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tollgate ingest: {} to {endpoint} in {}",
        plural(report.files, "file", "files"),
        plural(report.batches, "batch", "batches"),
    );
    let _ = writeln!(
        out,
        "stored   {}, {}",
        plural(report.stored, "document", "documents"),
        plural(
            usize::try_from(report.chunks).unwrap_or(usize::MAX),
            "chunk",
            "chunks"
        ),
    );
    render_problems(&mut out, report);
    let _ = writeln!(
        out,
        "{}",
        json!({
            "stored": report.stored,
            "chunks": report.chunks,
            "skipped": report.skipped.len(),
            "failed": report.failed.len(),
        })
    );
    out
}

fn render_dry_run(batches: &[Vec<Document>], report: &Report) -> String {
    let mut out = String::new();
    let documents: usize = batches.iter().map(Vec::len).sum();
    let _ = writeln!(
        out,
        "tollgate ingest --dry-run: would send {} in {} (nothing is sent)",
        plural(documents, "document", "documents"),
        plural(batches.len(), "batch", "batches"),
    );
    for (n, batch) in batches.iter().enumerate() {
        let bytes: usize = batch.iter().map(|d| d.text.len()).sum();
        let _ = writeln!(
            out,
            "batch {}: {}, {bytes} bytes of text",
            n + 1,
            plural(batch.len(), "document", "documents")
        );
        for doc in batch {
            let _ = writeln!(
                out,
                "  {}  {:?}  {} bytes  {}",
                doc.id,
                doc.title,
                doc.text.len(),
                doc.rel
            );
        }
    }
    render_problems(&mut out, report);
    let _ = writeln!(
        out,
        "{}",
        json!({
            "dry_run": true,
            "documents": documents,
            "batches": batches.len(),
            "skipped": report.skipped.len(),
            "failed": report.failed.len(),
        })
    );
    out
}

#[allow(clippy::print_stdout)] // The summary is this command's output.
fn print_summary(text: &str) {
    print!("{text}");
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_progress_bar_fills_in_proportion_and_never_overflows() {
        assert_eq!(bar(0, 4, 8), "[--------]");
        assert_eq!(bar(1, 4, 8), "[##------]");
        assert_eq!(bar(3, 4, 8), "[######--]");
        assert_eq!(bar(4, 4, 8), "[########]");
        assert_eq!(bar(5, 4, 8), "[########]");
        assert_eq!(bar(0, 0, 8), "[########]");
    }

    use super::*;

    #[test]
    fn ids_come_from_the_relative_path() {
        assert_eq!(
            document_id("guides/setup.md", IdFrom::Path),
            "guides--setup.md"
        );
        assert_eq!(
            document_id("release notes (v2).txt", IdFrom::Path),
            "release-notes--v2-.txt"
        );
        assert_eq!(document_id("café/ü.md", IdFrom::Path), "caf----.md");
        assert_eq!(document_id("guides/setup.md", IdFrom::Name), "setup.md");
        let long = format!("{}/x.md", "a".repeat(200));
        assert_eq!(document_id(&long, IdFrom::Path).len(), 128);
    }

    #[test]
    fn the_title_is_the_first_markdown_heading_or_the_file_name() {
        let text = "```sh\n# not a title\n```\n## Sub\n# Getting started ##\n# Later\n";
        assert_eq!(title(text, "docs/start.md"), "Getting started");
        assert_eq!(title("# C#\n", "c.markdown"), "C#");
        assert_eq!(title("    # indented code\n", "x.md"), "x.md");
        assert_eq!(title("# Heading\n", "notes/plain.txt"), "plain.txt");
        assert_eq!(title("no heading", "a/b.md"), "b.md");
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(parse_base_url("http://127.0.0.1:9000").is_ok());
        assert!(parse_base_url("https://api.example.com/prod").is_ok());
        assert!(parse_base_url("ftp://example.com").is_err());
        assert!(parse_base_url("127.0.0.1:9000").is_err());
        assert!(parse_base_url("http://user:pw@example.com").is_err());
        assert!(parse_base_url("http://example.com/?a=b").is_err());
    }

    #[test]
    fn the_endpoint_keeps_a_stage_prefix() {
        let url = |raw| documents_endpoint(&parse_base_url(raw).unwrap()).to_string();
        assert_eq!(
            url("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000/v1/documents"
        );
        assert_eq!(
            url("https://x.example.com/prod/"),
            "https://x.example.com/prod/v1/documents"
        );
    }

    #[test]
    fn error_bodies_give_the_code_and_message() {
        let body = br#"{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            ApiFailure::from_response(StatusCode::TOO_MANY_REQUESTS, body),
            ApiFailure::new("rate_limit_exceeded", "slow down")
        );
        let plain = ApiFailure::from_response(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(plain.code, "http_502");
        assert!(plain.message.contains("upstream down"), "{plain:?}");
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn duplicate_ids_are_flagged_after_the_first() {
        let found = |rel: &str| Found {
            disk: PathBuf::from(rel),
            rel: rel.to_owned(),
        };
        let planned = plan(vec![found("a/x.md"), found("b/x.md")], IdFrom::Name);
        assert_eq!(planned[0].duplicate_of, None);
        assert_eq!(planned[1].duplicate_of.as_deref(), Some("a/x.md"));
    }

    #[test]
    fn a_repeated_key_is_redacted() {
        assert_eq!(
            redact("bad key tg_abc_secret", Some("tg_abc_secret")),
            "bad key [redacted]"
        );
        assert_eq!(redact("skipped", Some("k")), "skipped");
    }
}
