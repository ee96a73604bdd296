//! `tollgate loadtest`: a closed-loop load generator for a local gateway.
//!
//! Each of `--concurrency` tasks owns one keep-alive HTTP/1.1 connection and sends its next
//! request as soon as the previous response has been read to the end, so the offered load
//! adapts to the server instead of queueing in front of it (what a fleet of synchronous clients
//! does). Requests that start during `--warmup` are not counted; the run is bounded by
//! `--duration` plus at most one request timeout.
//!
//! Loopback only unless `--allow-remote`: load tests against anything but this machine are not
//! allowed here, and a typo in `--url` must not turn into one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A request that takes longer than this counts as an error and its connection is replaced.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Latencies are recorded in microseconds, up to this.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(clap::Args, Debug)]
pub struct LoadtestArgs {
    /// Gateway base URL (`http://` only); any path before `/v1/` is kept, like a stage prefix.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    url: Uri,
    /// Tenant API key sent as the bearer token (`tollgate serve` prints the demo keys).
    #[arg(long)]
    key: String,
    /// Logical model to request.
    #[arg(long, default_value = "gpt-4o")]
    model: String,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
    concurrency: u16,
    /// How long to measure, e.g. `10s`, `500ms`, `1m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before measuring starts (connections warm, caches filled), same syntax.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Ask for `stream: true`; latency is to the last byte of the event stream.
    #[arg(long)]
    stream: bool,
    /// Send `Cache-Control: no-cache` so every request reaches the provider.
    #[arg(long)]
    no_cache: bool,
    /// Permit a target that is not this machine.
    #[arg(long)]
    allow_remote: bool,
}

/// What every connection sends.
struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
    body: Bytes,
    bearer: String,
    no_cache: bool,
    stream: bool,
}

impl Target {
    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(HOST, self.authority.as_str())
            .header(AUTHORIZATION, self.bearer.as_str())
            .header(CONTENT_TYPE, "application/json");
        if self.no_cache {
            builder = builder.header(CACHE_CONTROL, "no-cache");
        }
        Ok(builder.body(Full::new(self.body.clone()))?)
    }
}

/// The measured window, shared by every worker.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

/// One worker's tally.
struct Tally {
    latency_us: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    /// One response body per failing status, to say why.
    samples: BTreeMap<String, String>,
    last_finish: Option<Instant>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
            ok: 0,
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
            last_finish: None,
        })
    }

    fn error(&mut self, kind: String, sample: Option<String>) {
        if let Some(sample) = sample {
            self.samples.entry(kind.clone()).or_insert(sample);
        }
        *self.errors.entry(kind).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us)?;
        self.ok += other.ok;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (kind, sample) in other.samples {
            self.samples.entry(kind).or_insert(sample);
        }
        self.last_finish = self.last_finish.max(other.last_finish);
        Ok(())
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// How one request ended.
enum Outcome {
    Ok,
    /// The server answered, but not with what was asked for.
    Failed {
        kind: String,
        sample: String,
    },
    /// The connection broke or timed out; it is replaced.
    Broken(String),
}

pub async fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    let target = Arc::new(target(&args).await?);

    // Connect everything up front: a server that is not there fails the run here, clearly.
    let mut senders = Vec::with_capacity(usize::from(args.concurrency));
    for _ in 0..args.concurrency {
        senders.push(connect(target.addr).await.with_context(|| {
            format!(
                "cannot connect to {} (is `tollgate serve` running?)",
                target.addr
            )
        })?);
    }

    let start = Instant::now();
    let measure_from = start + args.warmup;
    let window = Window {
        measure_from,
        end: measure_from + args.duration,
    };
    let workers: Vec<_> = senders
        .into_iter()
        .map(|sender| tokio::spawn(worker(target.clone(), sender, window)))
        .collect();
    let mut total = Tally::new()?;
    for worker in workers {
        total.merge(worker.await.context("load worker panicked")??)?;
    }

    let elapsed = total
        .last_finish
        .map_or(args.duration, |last| {
            last.saturating_duration_since(measure_from)
        })
        .max(args.duration);
    let summary = Summary::new(&args, &total, elapsed);
    print_report(&args, &target, &summary, &total);

    let errors = total.error_count();
    if errors > 0 {
        bail!("{errors} of {} requests failed", summary.requests);
    }
    if summary.requests == 0 {
        bail!("no request completed in the measured window");
    }
    Ok(())
}

/// Resolves and checks the target, and renders the one request body every worker sends.
async fn target(args: &LoadtestArgs) -> anyhow::Result<Target> {
    let url = &args.url;
    match url.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("--url: scheme {other} is not supported (plain http only)"),
        None => bail!("--url must be absolute, e.g. http://127.0.0.1:9000"),
    }
    let authority = url
        .authority()
        .context("--url has no host")?
        .as_str()
        .to_owned();
    let host = url.host().context("--url has no host")?;
    let port = url.port_u16().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    let Some(addr) = addrs.first().copied() else {
        bail!("{host} resolves to no address");
    };
    if !args.allow_remote
        && let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback())
    {
        bail!(
            "refusing to load-test {host} ({}): only loopback targets are allowed; \
             pass --allow-remote if you are sure",
            remote.ip()
        );
    }
    let base = url.path().trim_end_matches('/');
    let body = serde_json::json!({
        "model": args.model,
        "messages": [{"role": "user", "content": "Hello! What can you do?"}],
        "stream": args.stream,
    });
    Ok(Target {
        addr,
        authority,
        path: format!("{base}/v1/chat/completions"),
        body: Bytes::from(serde_json::to_vec(&body)?),
        bearer: format!("Bearer {}", args.key),
        no_cache: args.no_cache,
        stream: args.stream,
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr).await?;
    // Requests are small single writes; Nagle would only add delay.
    tcp.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; a broken connection shows up
        // as the next request's error.
        let _ = connection.await;
    });
    Ok(sender)
}

/// One connection's closed loop: send, read the whole response, repeat until the window ends.
async fn worker(
    target: Arc<Target>,
    sender: SendRequest<Full<Bytes>>,
    window: Window,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut sender = Some(sender);
    loop {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let counted = started >= window.measure_from;
        let conn = match sender.as_mut() {
            Some(conn) => conn,
            None => match connect(target.addr).await {
                Ok(conn) => sender.insert(conn),
                Err(err) => {
                    if counted {
                        tally.error(format!("connect: {err}"), None);
                    }
                    // Do not spin on a refused connection.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, send(conn, &target))
            .await
            .unwrap_or_else(|_| Outcome::Broken("timeout".into()));
        let finished = Instant::now();
        if matches!(outcome, Outcome::Broken(_)) {
            sender = None;
        }
        if !counted {
            continue;
        }
        tally.last_finish = Some(finished);
        match outcome {
            Outcome::Ok => {
                tally.ok += 1;
                tally
                    .latency_us
                    .saturating_record(micros(finished - started));
            }
            Outcome::Failed { kind, sample } => tally.error(kind, Some(sample)),
            Outcome::Broken(kind) => tally.error(kind, None),
        }
    }
    Ok(tally)
}

async fn send(conn: &mut SendRequest<Full<Bytes>>, target: &Target) -> Outcome {
    let request = match target.request() {
        Ok(request) => request,
        Err(err) => return Outcome::Broken(format!("request: {err}")),
    };
    if let Err(err) = conn.ready().await {
        return Outcome::Broken(format!("connection: {err}"));
    }
    let response = match conn.send_request(request).await {
        Ok(response) => response,
        Err(err) => return Outcome::Broken(format!("send: {err}")),
    };
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => return Outcome::Broken(format!("body: {err}")),
    };
    if status != StatusCode::OK {
        return Outcome::Failed {
            kind: format!("HTTP {}", status.as_u16()),
            sample: sample(&body),
        };
    }
    // A stream that stops without its terminator was cut off after the 200 header.
    if target.stream && !body.ends_with(b"data: [DONE]\n\n") {
        return Outcome::Failed {
            kind: "stream ended without [DONE]".into(),
            sample: sample(&body),
        };
    }
    Outcome::Ok
}

fn sample(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(300).collect()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Accepts `250ms`, `10s`, `2m`, or a bare number of seconds.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration (try 500ms, 10s, 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{raw:?}: {e}"))
}

/// The numbers a run is judged by.
struct Summary {
    requests: u64,
    errors: u64,
    duration_s: f64,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    concurrency: u16,
    stream: bool,
    no_cache: bool,
}

impl Summary {
    fn new(args: &LoadtestArgs, tally: &Tally, elapsed: Duration) -> Self {
        let h = &tally.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let errors = tally.error_count();
        let requests = tally.ok + errors;
        let duration_s = elapsed.as_secs_f64();
        Self {
            requests,
            errors,
            duration_s,
            rps: requests as f64 / duration_s,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            concurrency: args.concurrency,
            stream: args.stream,
            no_cache: args.no_cache,
        }
    }

    /// The single line scripts read.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "errors": self.errors,
            "duration_s": self.duration_s,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "concurrency": self.concurrency,
            "stream": self.stream,
            "no_cache": self.no_cache,
        })
    }
}

#[allow(clippy::print_stdout)] // The report is this command's output.
fn print_report(args: &LoadtestArgs, target: &Target, s: &Summary, tally: &Tally) {
    println!(
        "tollgate loadtest: POST http://{}{} model {} ({}{})",
        target.authority,
        target.path,
        args.model,
        if args.stream { "streamed" } else { "buffered" },
        if args.no_cache {
            ", cache bypassed"
        } else {
            ""
        },
    );
    println!(
        "{} connections, {:?} warm-up, {:?} measured",
        args.concurrency, args.warmup, args.duration
    );
    println!("  requests   {:>10}", s.requests);
    println!("  errors     {:>10}", s.errors);
    println!("  duration   {:>10.2} s", s.duration_s);
    println!("  req/s      {:>10.1}", s.rps);
    println!("  p50        {:>10.3} ms", s.p50_ms);
    println!("  p90        {:>10.3} ms", s.p90_ms);
    println!("  p99        {:>10.3} ms", s.p99_ms);
    println!("  max        {:>10.3} ms", s.max_ms);
    for (kind, n) in &tally.errors {
        println!("  error      {n:>10} × {kind}");
        if let Some(sample) = tally.samples.get(kind) {
            println!("             e.g. {sample}");
        }
    }
    println!("{}", s.json());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten seconds").is_err());
        assert!(parse_duration("5h").is_err());
    }

    fn args(url: &str, allow_remote: bool) -> LoadtestArgs {
        LoadtestArgs {
            url: url.parse().unwrap(),
            key: "tg_test".into(),
            model: "gpt-4o".into(),
            concurrency: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            stream: false,
            no_cache: false,
            allow_remote,
        }
    }

    #[tokio::test]
    async fn loopback_targets_are_accepted_with_their_base_path() {
        let v4 = target(&args("http://127.0.0.1:9000/prod/", false))
            .await
            .unwrap();
        assert!(v4.addr.ip().is_loopback());
        assert_eq!(v4.path, "/prod/v1/chat/completions");
        let v6 = target(&args("http://[::1]:9000", false)).await.unwrap();
        assert_eq!(v6.addr.port(), 9000);
    }

    #[tokio::test]
    async fn a_remote_target_is_refused_without_allow_remote() {
        let err = target(&args("http://10.1.2.3:9000", false))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("only loopback"), "{err}");
        assert!(target(&args("http://10.1.2.3:9000", true)).await.is_ok());
        assert!(
            target(&args("https://127.0.0.1:9000", false))
                .await
                .is_err()
        );
    }
}
