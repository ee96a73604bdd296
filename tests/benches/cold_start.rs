//! Cold start of each function binary: from process start to its first
//! `GET /2018-06-01/runtime/invocation/next`, i.e. init done and ready for an event.
//!
//! A fake Lambda runtime API on loopback records the moment each process asks for its first
//! event, then the process is killed; repeated per function. The functions run as in Lambda
//! (`TOLLGATE_STORE=dynamodb`, provider and Qdrant keys named as Secrets Manager ids, so a secret
//! fetch at init would show up as an error or a delay), next to a hello-world Rust Lambda built
//! the same way, as the baseline.
//!
//! Every AWS endpoint (DynamoDB, Secrets Manager, CloudWatch, Bedrock) and Qdrant point at a closed
//! loopback port: a function that called any of them during init would report an init error
//! (or stall) instead of asking for its first event, and the bench says so. So this also checks
//! that init makes no network call.
//!
//! Needs release binaries: `infra/cold-start.sh` builds them and runs this. To measure some
//! functions only: `cargo bench -p tollgate-tests --bench cold_start -- admin` (after
//! `cargo build --release -p admin` and `--bin hello_lambda`).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const RUNS: usize = 30;

/// Nothing listens here: a connection attempt fails at once.
const CLOSED_PORT: &str = "http://127.0.0.1:1";

/// Serves the runtime API: reports the path of every request; never answers
/// `invocation/next` (the process under test waits there until it is killed).
async fn fake_runtime_api() -> (String, mpsc::UnboundedReceiver<(Instant, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut read = 0;
                loop {
                    match socket.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                    if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") || read == buf.len() {
                        break;
                    }
                }
                let at = Instant::now();
                let head = String::from_utf8_lossy(&buf[..read]).to_string();
                let line = head.lines().next().unwrap_or_default().to_owned();
                let _ = tx.send((at, line.clone()));
                if line.contains("/invocation/next") {
                    // Hold the connection: the process is ready and waiting for an event.
                    let _ = socket.read(&mut buf).await;
                } else {
                    // An init error report, say: acknowledge it.
                    let _ = socket
                        .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (addr, rx)
}

/// `name` beside this bench's own profile directory: the bench runs from
/// `<target>/release/deps/`, so `CARGO_TARGET_DIR` is honoured.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the bench knows its own path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the bench runs from <target>/release/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run infra/cold-start.sh (it builds the release binaries)",
        path.display()
    );
    path
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

async fn measure(name: &str) -> Option<Vec<f64>> {
    let path = binary(name);
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (api, mut requests) = fake_runtime_api().await;
        let mut command = Command::new(&path);
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", &api)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_ENDPOINT_URL", CLOSED_PORT)
            .env("TOLLGATE_STORE", "dynamodb")
            .env("TOLLGATE_TABLE_PREFIX", "cold-start")
            .env(
                "TOLLGATE_PROVIDER_SECRET_ID",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:tollgate/providers",
            )
            .env("TOLLGATE_QDRANT_URL", CLOSED_PORT)
            .env("TOLLGATE_QDRANT_API_KEY_SECRET_ID", "tollgate/qdrant")
            .env("TOLLGATE_ANOMALY_ALERTS", "emf")
            // Bedrock on, as a deployment with `BedrockResourceArns` runs: its signer reads
            // credentials at the first call, never at init.
            .env("TOLLGATE_BEDROCK_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", CLOSED_PORT)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        let mut child = command.spawn().expect("the function starts");
        let first = tokio::time::timeout(Duration::from_secs(10), requests.recv()).await;
        let _ = child.kill();
        let _ = child.wait();
        match first {
            Ok(Some((at, line))) if line.contains("/invocation/next") => {
                samples.push(at.duration_since(started).as_secs_f64() * 1000.0);
            }
            Ok(Some((_, line))) => {
                println!("{name}: init did not finish ({line}): it made a network call?");
                return None;
            }
            _ => {
                println!("{name}: no request to the runtime API within 10 s");
                return None;
            }
        }
    }
    samples.sort_by(f64::total_cmp);
    Some(samples)
}

#[tokio::main]
async fn main() {
    println!(
        "cold start (process start → first invocation/next), {RUNS} runs each, release, {}",
        std::env::consts::ARCH
    );
    println!(
        "{:<20} {:>8} {:>8} {:>8}",
        "function", "p50 ms", "p95 ms", "max ms"
    );
    // `cargo bench --bench cold_start -- admin` measures only the functions named (and the
    // baseline); with none named, every function.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let functions = [
        "invoke",
        "ingest",
        "usage-report",
        "anomaly-scheduler",
        "admin",
    ];
    let chosen = functions
        .into_iter()
        .filter(|f| only.is_empty() || only.iter().any(|o| o == f));
    for name in std::iter::once("hello_lambda").chain(chosen) {
        if let Some(samples) = measure(name).await {
            println!(
                "{name:<20} {:>8.1} {:>8.1} {:>8.1}",
                percentile(&samples, 50.0),
                percentile(&samples, 95.0),
                samples[samples.len() - 1]
            );
        }
    }
}
