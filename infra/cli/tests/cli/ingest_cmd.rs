//! `tollgate ingest`, run as the built binary: against a real `tollgate serve` (a child process
//! on a random port) and against stub servers that answer 429, 5xx, 413 and 401 on cue.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tollgate-ingest-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Self {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
        self
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tollgate serve --port 0` as a child process, killed on drop whatever the test does.
pub(crate) struct Gateway {
    child: Child,
    pub(crate) url: String,
    pub(crate) acme_key: String,
    stderr: Arc<Mutex<String>>,
    /// Every stdout line after the banner's address and key lines were read.
    pub(crate) banner: Vec<String>,
}

impl Gateway {
    fn start(extra_env: &[(&str, &str)]) -> Self {
        Self::start_with(&[], extra_env)
    }

    /// `tollgate serve` with `extra_args` too.
    pub(crate) fn start_with(extra_args: &[&str], extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--port", "0", "--metrics", "off"]);
        cmd.args(extra_args);
        for var in [
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "OPENAI_BASE_URL",
            "ANTHROPIC_BASE_URL",
            "TOLLGATE_QDRANT_URL",
            "TOLLGATE_QDRANT_API_KEY",
            "TOLLGATE_STORE",
            "TOLLGATE_PRICES_FILE",
            "TOLLGATE_MAX_BODY_BYTES",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("TOLLGATE_PROVIDERS", "simulated");
        for (name, value) in extra_env {
            cmd.env(name, value);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tollgate serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // The banner is read on a thread so a server that never prints cannot hang the test;
        // the thread keeps draining stdout so the server never blocks on a full pipe.
        let (lines, banner) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = lines.send(line);
            }
        });
        let mut gateway = Self {
            child,
            url: String::new(),
            acme_key: String::new(),
            stderr,
            banner: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while gateway.url.is_empty() || gateway.acme_key.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = banner.recv_timeout(left) else {
                panic!(
                    "no banner from tollgate serve; stderr:\n{}",
                    gateway.stderr.lock().unwrap()
                );
            };
            if let Some(rest) = line.strip_prefix("tollgate serve: listening on ") {
                gateway.url = rest.split_whitespace().next().unwrap().to_owned();
            } else if let Some(key) = line.strip_prefix("demo tenant acme key ") {
                gateway.acme_key = key.trim().to_owned();
            }
            gateway.banner.push(line);
        }
        // The rest of the banner (printed together, before the server accepts).
        while let Ok(line) = banner.recv_timeout(Duration::from_millis(200)) {
            gateway.banner.push(line);
        }
        gateway
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, with no key in its environment unless a test passes one.
fn tollgate() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("TOLLGATE_API_KEY");
    cmd
}

fn ingest(args: &[&str]) -> Output {
    tollgate()
        .arg("ingest")
        .args(args)
        .output()
        .expect("the tollgate binary runs")
}

/// Runs the CLI off the async runtime, so a stub served by this test's runtime can answer it.
async fn ingest_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ingest(&args)
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The summary's last line: the JSON scripts read.
fn summary_json(out: &Output) -> Value {
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: no JSON summary in\n{stdout}"))
}

fn explain(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// A folder with three kinds of text files, a nested folder, and files that must be skipped.
fn sample_folder(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dir.write(
        "README.md",
        "```sh\n# a comment, not the title\n```\n# Welcome to Acme\n\nRockets, reusable.\n",
    )
    .write("guides/setup.md", "## Setup\n\nInstall the launcher.\n")
    .write("release notes.txt", "v2: landing legs.\n")
    .write("logo.png", [0x89, b'P', b'N', b'G', 0x0d, 0x0a])
    .write("latin1.txt", b"caf\xe9 cr\xe8me".as_slice());
    dir
}

#[test]
fn a_folder_is_ingested_into_a_running_gateway_and_listed_back() {
    // A small body limit makes the gateway refuse the whole batch (413), so the command must
    // split it to get everything stored.
    let gateway = Gateway::start(&[("TOLLGATE_MAX_BODY_BYTES", "6000")]);
    let dir = sample_folder("serve");
    dir.write(
        "long-a.md",
        format!("# Long A\n{}", "lorem ipsum ".repeat(330)),
    )
    .write(
        "long-b.md",
        format!("# Long B\n{}", "dolor sit ".repeat(400)),
    );

    let folder = dir.path().to_str().unwrap();
    let out = ingest(&[
        folder,
        "--url",
        &gateway.url,
        "--key",
        &gateway.acme_key,
        "--batch",
        "10",
    ]);
    assert!(out.status.success(), "{}", explain(&out));
    let summary = summary_json(&out);
    assert_eq!(summary["stored"], 5, "{}", explain(&out));
    assert_eq!(summary["skipped"], 2, "{}", explain(&out));
    assert_eq!(summary["failed"], 0, "{}", explain(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("logo.png: not a .txt, .md or .markdown file"),
        "{stdout}"
    );
    assert!(stdout.contains("latin1.txt: not UTF-8"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("over the server's body limit"), "{stderr}");
    for output in [&stdout, &stderr] {
        assert!(!output.contains(&gateway.acme_key), "the key was printed");
    }

    let listed: Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        tollgate::adapters::tls::reqwest_builder()
            .build()
            .unwrap()
            .get(format!("{}/v1/documents", gateway.url))
            .bearer_auth(&gateway.acme_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let docs: BTreeMap<&str, &Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d))
        .collect();
    assert_eq!(
        docs.keys().copied().collect::<Vec<_>>(),
        [
            "README.md",
            "guides--setup.md",
            "long-a.md",
            "long-b.md",
            "release-notes.txt"
        ]
    );
    assert_eq!(docs["README.md"]["title"], "Welcome to Acme");
    assert_eq!(docs["guides--setup.md"]["title"], "setup.md");
    assert_eq!(
        docs["guides--setup.md"]["metadata"]["path"],
        "guides/setup.md"
    );
    assert_eq!(docs["release-notes.txt"]["title"], "release notes.txt");
    let chunks: u64 = docs.values().map(|d| d["chunks"].as_u64().unwrap()).sum();
    assert_eq!(summary["chunks"], chunks);
}

/// What a stub server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    ids: Vec<String>,
    authorization: Option<String>,
}

type Behaviour = dyn Fn(usize, &Seen) -> Response + Send + Sync;

#[derive(Clone)]
struct StubState {
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Arc<Behaviour>,
}

struct Stub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    /// Serves `POST /v1/documents` on 127.0.0.1:0; `behaviour` gets the request's number
    /// (from 0) and what it carried.
    async fn start(behaviour: impl Fn(usize, &Seen) -> Response + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = StubState {
            seen: seen.clone(),
            behaviour: Arc::new(behaviour),
        };
        let app = Router::new()
            .route("/v1/documents", post(stub_documents))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn stub_documents(
    State(state): State<StubState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    let seen = Seen {
        at: Instant::now(),
        ids: body["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
    };
    let n = {
        let mut log = state.seen.lock().unwrap();
        log.push(seen.clone());
        log.len() - 1
    };
    (state.behaviour)(n, &seen)
}

fn respond(status: StatusCode, headers: &[(&str, &str)], body: Value) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

fn all_stored(seen: &Seen) -> Response {
    let data: Vec<Value> = seen
        .ids
        .iter()
        .map(|id| json!({"id": id, "status": "stored", "chunks": 2}))
        .collect();
    respond(
        StatusCode::OK,
        &[],
        json!({"object": "list", "data": data, "stored": seen.ids.len(), "failed": 0}),
    )
}

fn openai_error(
    status: StatusCode,
    code: &str,
    message: &str,
    headers: &[(&str, &str)],
) -> Response {
    respond(
        status,
        headers,
        json!({"error": {"message": message, "type": "error", "param": null, "code": code}}),
    )
}

fn two_files(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dir.write("a.md", "# Alpha\nfirst\n")
        .write("b.txt", "second\n");
    dir
}

const STUB_KEY: &str = "tg_stubprefix0_secretsecretsecretsecretsecret";

fn args(folder: &Path, url: &str, extra: &[&str]) -> Vec<String> {
    [folder.to_str().unwrap(), "--url", url, "--key", STUB_KEY]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect()
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_the_batch_sent_again() {
    let stub = Stub::start(|n, seen| {
        if n == 0 {
            openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "slow down",
                &[("retry-after", "1")],
            )
        } else {
            all_stored(seen)
        }
    })
    .await;
    let dir = two_files("retry");

    let out = ingest_async(args(dir.path(), &stub.url, &[])).await;

    assert!(out.status.success(), "{}", explain(&out));
    let seen = stub.seen();
    assert_eq!(seen.len(), 2, "one refusal, one retry: {seen:?}");
    assert_eq!(seen[0].ids, seen[1].ids);
    assert_eq!(seen[1].ids, ["a.md", "b.txt"]);
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    let bearer = format!("Bearer {STUB_KEY}");
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(bearer.as_str()))
    );
    let summary = summary_json(&out);
    assert_eq!(summary["stored"], 2);
    assert_eq!(summary["chunks"], 4);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("rate_limit_exceeded: slow down; retry 1 of 5 in 1.0s"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_5xx_is_retried_with_backoff_and_the_batch_sent_again() {
    let stub = Stub::start(|n, seen| match n {
        0 => openai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is unavailable",
            &[],
        ),
        // What a proxy in front of the gateway sends: not the OpenAI error shape.
        1 => respond(StatusCode::BAD_GATEWAY, &[], json!("Bad Gateway")),
        _ => all_stored(seen),
    })
    .await;
    let dir = two_files("retry-5xx");

    let out = ingest_async(args(dir.path(), &stub.url, &[])).await;

    assert!(out.status.success(), "{}", explain(&out));
    let seen = stub.seen();
    assert_eq!(seen.len(), 3, "two refusals, then stored: {seen:?}");
    assert!(seen.iter().all(|s| s.ids == ["a.md", "b.txt"]), "{seen:?}");
    // No Retry-After: the backoff, 0.5 s then 1 s.
    let waits = [seen[1].at - seen[0].at, seen[2].at - seen[1].at];
    assert!(
        waits[0] >= Duration::from_millis(450) && waits[1] >= Duration::from_millis(950),
        "retried after {waits:?}"
    );
    let summary = summary_json(&out);
    assert_eq!(summary["stored"], 2);
    assert_eq!(summary["failed"], 0);
    let stderr = text(&out.stderr);
    for note in [
        "store_unavailable: the store is unavailable; retry 1 of 5 in 0.5s",
        "http_502: HTTP 502 Bad Gateway: \"Bad Gateway\"; retry 2 of 5 in 1.0s",
    ] {
        assert!(stderr.contains(note), "{note}\n{stderr}");
    }
}

#[tokio::test]
async fn a_5xx_that_outlasts_the_retries_fails_its_batch_and_the_run_goes_on() {
    let stub = Stub::start(|n, seen| {
        if n < 2 {
            openai_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable",
                &[("retry-after", "0")],
            )
        } else {
            all_stored(seen)
        }
    })
    .await;
    let dir = two_files("retry-exhausted");

    let out = ingest_async(args(
        dir.path(),
        &stub.url,
        &["--batch", "1", "--max-retries", "1"],
    ))
    .await;

    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let ids: Vec<Vec<String>> = stub.seen().into_iter().map(|s| s.ids).collect();
    assert_eq!(
        ids,
        [["a.md"], ["a.md"], ["b.txt"]],
        "one retry, then the next batch"
    );
    let summary = summary_json(&out);
    assert_eq!(summary["stored"], 1);
    assert_eq!(summary["failed"], 1);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("a.md (a.md): store_unavailable: the store is unavailable"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_batch_over_the_body_limit_is_halved_until_it_fits() {
    let stub = Stub::start(|_, seen| {
        if seen.ids.len() > 1 {
            openai_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "too big",
                &[],
            )
        } else {
            all_stored(seen)
        }
    })
    .await;
    let dir = two_files("split");
    dir.write("c.md", "third\n");

    let out = ingest_async(args(dir.path(), &stub.url, &[])).await;

    assert!(out.status.success(), "{}", explain(&out));
    let sizes: Vec<usize> = stub.seen().iter().map(|s| s.ids.len()).collect();
    assert_eq!(sizes, [3, 1, 2, 1, 1]);
    assert_eq!(summary_json(&out)["stored"], 3);
}

#[tokio::test]
async fn a_refused_key_fails_every_document_stops_sending_and_is_never_printed() {
    // The stub echoes the bearer token, which a real server must not do; the CLI still hides it.
    let stub = Stub::start(|_, seen| {
        let echoed = seen.authorization.clone().unwrap_or_default();
        openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            &format!("incorrect API key provided: {echoed}"),
            &[],
        )
    })
    .await;
    let dir = two_files("refused");

    let out = ingest_async(args(dir.path(), &stub.url, &["--batch", "1"])).await;

    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert_eq!(stub.seen().len(), 1, "no batch after the 401");
    let summary = summary_json(&out);
    assert_eq!(summary["failed"], 2);
    assert_eq!(summary["stored"], 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("a.md (a.md): invalid_api_key: incorrect API key provided"),
        "{stdout}"
    );
    assert!(stdout.contains("b.txt (b.txt): not_sent"), "{stdout}");
    for output in [stdout, text(&out.stderr)] {
        assert!(!output.contains(STUB_KEY), "the key was printed:\n{output}");
        assert!(
            !output.contains("secretsecret"),
            "part of the key was printed:\n{output}"
        );
    }
}

#[tokio::test]
async fn a_dry_run_lists_the_documents_and_sends_nothing() {
    let stub = Stub::start(|_, seen| all_stored(seen)).await;
    let dir = sample_folder("dry");

    let out = ingest_async(args(dir.path(), &stub.url, &["--dry-run", "--batch", "2"])).await;

    assert!(out.status.success(), "{}", explain(&out));
    assert!(stub.seen().is_empty(), "a dry run contacted the server");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("would send 3 documents in 2 batches (nothing is sent)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  README.md  \"Welcome to Acme\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("  guides--setup.md  \"setup.md\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("  release-notes.txt  \"release notes.txt\""),
        "{stdout}"
    );
    assert!(!stdout.contains(STUB_KEY));
    let summary = summary_json(&out);
    assert_eq!(summary["dry_run"], true);
    assert_eq!(summary["documents"], 3);
    assert_eq!(summary["skipped"], 2);

    // Without --url and --key too.
    let bare = ingest(&[
        dir.path().to_str().unwrap(),
        "--dry-run",
        "--id-from",
        "name",
    ]);
    assert!(bare.status.success(), "{}", explain(&bare));
    assert!(text(&bare.stdout).contains("  setup.md  \"setup.md\""));
}

#[test]
fn a_url_that_is_not_http_is_refused_before_anything_is_read() {
    let dir = two_files("scheme");
    let out = ingest(&[
        dir.path().to_str().unwrap(),
        "--url",
        "ftp://127.0.0.1:9000",
        "--key",
        STUB_KEY,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("use http or https"), "{stderr}");
    assert!(!stderr.contains(STUB_KEY));
}
