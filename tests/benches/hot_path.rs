#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! The gateway's own overhead, in process: one `POST /v1/chat/completions` through the invoke
//! handler on the real embedded stack (auth → config → prompt → route → simulated provider at
//! 0 ms → price → usage record → EMF rendered into `io::sink`). No sockets: what is left is
//! Tollgate's code.
//!
//! Two measurements per case:
//! - criterion's mean and confidence interval (`hot_path/<case>`), for regressions;
//! - p50/p90/p99/max over 20,000 sequential calls timed one by one into an HDR histogram,
//!   because the target (p99 under 1 ms on the 2-core dev machine) is about the tail, which
//!   criterion's per-batch timing cannot show.
//!
//! Run: `cargo bench -p tollgate-tests --bench hot_path`. Under `cargo test` the bench binary
//! runs every case once as a smoke test and the percentile pass shrinks to a few calls.
//!
//! The `tokenizer` group times `count_tokens` on 256 KiB of one run ("x" repeated, the input
//! that used to take seconds) next to 256 KiB of prose. `-- tokenizer` runs that group alone.
//!
//! `HOT_PATH_CASE=buffered` (or another case name) runs the percentile pass for that case
//! alone and skips the ingest pass: for profiling one path (`perf record` on the bench binary).
//!
//! The runtime is current-thread on purpose: the handler spawns (buffered provider call,
//! metering), and on a current-thread runtime those tasks cost their own work only, not a
//! cross-thread wake-up whose price depends on what else the shared machine is doing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use hdrhistogram::Histogram;
use http::{Request, StatusCode};
use invoke::InvokeState;
use tokio::runtime::Runtime;
use tollgate::adapters::aws::AwsConfigSource;
use tollgate::adapters::emf::EmfSink;
use tollgate::bootstrap::Stores;
use tollgate::config::{ProviderMode, Settings};
use tollgate::ports::{Clock, MetricsSink};
use tollgate::service::RequestContext;

const PERCENTILE_CALLS: u64 = 20_000;
const PERCENTILE_WARMUP: u64 = 2_000;

/// One request shape the bench measures.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    stream: bool,
    /// Sends `Cache-Control: no-cache`, so the provider is called every time.
    bypass_cache: bool,
    /// The `x-tollgate-cache` header every measured response must carry (none when grounded:
    /// grounded requests never use the response cache).
    expect_cache: Option<&'static str>,
    /// Asks for retrieval (`"retrieval": {"top_k": 4}`) over 1,000 stored chunks.
    grounded: bool,
}

const CASES: [Case; 4] = [
    Case {
        name: "buffered",
        stream: false,
        bypass_cache: true,
        expect_cache: Some("bypass"),
        grounded: false,
    },
    Case {
        name: "streamed",
        stream: true,
        bypass_cache: true,
        expect_cache: Some("bypass"),
        grounded: false,
    },
    // The buffered case plus retrieval: query embedding, search, excerpts in the prompt.
    Case {
        name: "grounded",
        stream: false,
        bypass_cache: true,
        expect_cache: None,
        grounded: true,
    },
    // acme has the response cache on: after the first call the provider is skipped.
    Case {
        name: "cache_hit",
        stream: false,
        bypass_cache: false,
        expect_cache: Some("hit"),
        grounded: false,
    },
];

/// The real stack for one case: a fresh store, so usage events from one case do not grow the
/// next case's log.
struct Gateway {
    state: InvokeState,
    acme_key: String,
}

impl Gateway {
    /// `case`'s gateway: acme's documents are ingested only for a grounded case.
    fn start(rt: &Runtime, case: Case) -> Self {
        let settings =
            Settings::from_lookup(ProviderMode::Simulated, AwsConfigSource::LAMBDA, |_| None)
                .unwrap();
        let metrics: Arc<dyn MetricsSink> = Arc::new(EmfSink::new(Box::new(std::io::sink())));
        let store = Arc::new(tollgate::adapters::memory::MemoryStore::new());
        let stores = Stores::embedded(store.clone());
        let index = Arc::new(tollgate::adapters::vector_memory::MemoryVectorIndex::new());
        let (state, _) =
            InvokeState::build(&settings, &stores, metrics.clone(), Some(index.clone())).unwrap();
        let now = tollgate::ports::clock::SystemClock.now();
        let demo = rt
            .block_on(tollgate::demo::seed_with_limits(
                store.as_ref(),
                now,
                Some(tollgate::demo::UNLIMITED),
            ))
            .unwrap();
        let acme_key = demo
            .iter()
            .find(|(tenant, _)| tenant.as_str() == "acme")
            .map(|(_, key)| key.expose().to_owned())
            .expect("the demo seed issues an acme key");
        // 1,000 chunks for acme to retrieve from (250 documents of 4 short chunks each).
        let batches = if case.grounded { 5 } else { 0 };
        let ingest = ingest::IngestState::build(&settings, &stores, metrics, index).unwrap();
        let caller = rt
            .block_on(ingest.callers.resolve(
                Some(&acme_key),
                Some(tollgate::domain::keys::KeyScope::Documents),
            ))
            .unwrap();
        let ctx = RequestContext::new(tollgate::domain::ids::RequestId::generate());
        for batch in 0..batches {
            let documents: Vec<_> = (0..50)
                .map(|d| {
                    let text = (0..4)
                        .map(|c| {
                            format!(
                                "Launch {batch}-{d}-{c}: rockets, fuel, schedules and refunds. "
                            )
                            .repeat(60)
                        })
                        .collect::<Vec<_>>()
                        .join("\n\n");
                    serde_json::json!({"id": format!("doc-{batch}-{d}"), "text": text})
                })
                .collect();
            let body = serde_json::to_vec(&serde_json::json!({"documents": documents})).unwrap();
            rt.block_on(ingest.ingest.ingest(&ctx, &caller, &body))
                .unwrap();
        }
        Self { state, acme_key }
    }

    fn request(&self, case: Case) -> Request<Bytes> {
        let mut body = serde_json::json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": format!("Hello from the {} bench about rocket schedules", case.name)}],
            "stream": case.stream,
        });
        if case.grounded {
            body["retrieval"] = serde_json::json!({"top_k": 4});
        }
        let mut builder = Request::post("/v1/chat/completions")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.acme_key),
            )
            .header(http::header::CONTENT_TYPE, "application/json");
        if case.bypass_cache {
            builder = builder.header(http::header::CACHE_CONTROL, "no-cache");
        }
        builder
            .body(Bytes::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    /// One call, body read to the end (a stream is drained, so it is metered).
    async fn call(&self, request: Request<Bytes>) -> (StatusCode, Option<String>, Bytes) {
        let response = invoke::handle(&self.state, request).await;
        let status = response.status();
        let cache = response
            .headers()
            .get("x-tollgate-cache")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, cache, response.into_body().collect().await)
    }

    /// Fails the bench loudly if the case does not take the path it claims to measure.
    fn check(&self, rt: &Runtime, case: Case) {
        // The cache-hit case needs one miss to fill the cache.
        if !case.bypass_cache {
            rt.block_on(self.call(self.request(case)));
        }
        let (status, cache, body) = rt.block_on(self.call(self.request(case)));
        assert_eq!(status, StatusCode::OK, "{}: {body:?}", case.name);
        assert_eq!(cache.as_deref(), case.expect_cache, "{}", case.name);
        if case.stream {
            assert!(
                body.ends_with(b"data: [DONE]\n\n"),
                "{}: {body:?}",
                case.name
            );
        }
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bench_hot_path(c: &mut Criterion) {
    let rt = runtime();
    // The BPE tables load lazily (about 100 ms); keep that out of every measurement.
    tollgate::tokenizer::count_tokens("warm up");
    let mut group = c.benchmark_group("hot_path");
    group.throughput(Throughput::Elements(1));
    for case in CASES {
        let gateway = Gateway::start(&rt, case);
        gateway.check(&rt, case);
        group.bench_function(case.name, |b| {
            b.to_async(&rt).iter(|| async {
                let (status, _, body) = gateway.call(gateway.request(case)).await;
                std::hint::black_box((status, body))
            });
        });
    }
    group.finish();
}

/// Token counting on one request-sized text, pathological and ordinary.
fn bench_tokenizer(c: &mut Criterion) {
    const LEN: usize = 256 * 1024;
    tollgate::tokenizer::count_tokens("warm up");
    let one_run = "x".repeat(LEN);
    let line = "Rockets need fuel, schedules, launch windows and careful refunds policy. ";
    let mut prose = line.repeat(LEN / line.len() + 1);
    prose.truncate(LEN);
    let mut group = c.benchmark_group("tokenizer");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.bench_function("count_256KiB_x", |b| {
        b.iter(|| tollgate::tokenizer::count_tokens(std::hint::black_box(&one_run)));
    });
    group.bench_function("count_256KiB_prose", |b| {
        b.iter(|| tollgate::tokenizer::count_tokens(std::hint::black_box(&prose)));
    });
    group.finish();
}

/// p50/p90/p99/max of single calls, timed one by one (request built outside the timing).
fn percentiles(calls: u64, warmup: u64) {
    let rt = runtime();
    tollgate::tokenizer::count_tokens("warm up");
    println!(
        "\nhot_path percentiles: {calls} sequential calls per case after {warmup} warm-up, µs"
    );
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "case", "mean", "p50", "p90", "p99", "max", "calls/s"
    );
    let only = std::env::var("HOT_PATH_CASE").ok();
    for case in CASES {
        if only.as_deref().is_some_and(|name| name != case.name) {
            continue;
        }
        let gateway = Gateway::start(&rt, case);
        gateway.check(&rt, case);
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let wall = rt.block_on(async {
            for _ in 0..warmup {
                gateway.call(gateway.request(case)).await;
            }
            let started = Instant::now();
            for _ in 0..calls {
                let request = gateway.request(case);
                let t = Instant::now();
                let (status, _, body) = gateway.call(request).await;
                let elapsed = t.elapsed();
                assert_eq!(status, StatusCode::OK, "{}: {body:?}", case.name);
                histogram.saturating_record(micros(elapsed));
            }
            started.elapsed()
        });
        println!(
            "{:<10} {:>8.1} {:>8} {:>8} {:>8} {:>8} {:>9.0}",
            case.name,
            histogram.mean(),
            histogram.value_at_quantile(0.50),
            histogram.value_at_quantile(0.90),
            histogram.value_at_quantile(0.99),
            histogram.max(),
            calls as f64 / wall.as_secs_f64(),
        );
    }
    println!();
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Ingest throughput on the embedded default: documents of ~2,000 tokens through the real
/// ingest service (chunking, local embedder, index, registry, metering).
fn ingest_throughput(docs: usize) {
    let rt = runtime();
    let settings =
        Settings::from_lookup(ProviderMode::Simulated, AwsConfigSource::LAMBDA, |_| None).unwrap();
    let metrics: Arc<dyn MetricsSink> = Arc::new(EmfSink::new(Box::new(std::io::sink())));
    let store = Arc::new(tollgate::adapters::memory::MemoryStore::new());
    let now = tollgate::ports::clock::SystemClock.now();
    let demo = rt
        .block_on(tollgate::demo::seed_with_limits(
            store.as_ref(),
            now,
            Some(tollgate::demo::UNLIMITED),
        ))
        .unwrap();
    let key = demo[0].1.expose().to_owned();
    let mut config = tollgate::demo::acme_config().unwrap();
    config.limits = tollgate::demo::UNLIMITED;
    config.limits.storage_chunks = Some(u64::MAX >> 1);
    rt.block_on(tollgate::ports::TenantAdmin::put_tenant_config(
        store.as_ref(),
        config,
    ))
    .unwrap();
    let index = Arc::new(tollgate::adapters::vector_memory::MemoryVectorIndex::new());
    let ingest =
        ingest::IngestState::build(&settings, &Stores::embedded(store), metrics, index).unwrap();
    let caller = rt
        .block_on(ingest.callers.resolve(
            Some(&key),
            Some(tollgate::domain::keys::KeyScope::Documents),
        ))
        .unwrap();
    let text =
        "Rockets need fuel, schedules, launch windows and careful refunds policy. ".repeat(160);
    let ctx = RequestContext::new(tollgate::domain::ids::RequestId::generate());
    let started = Instant::now();
    let mut chunks = 0;
    for batch in 0..docs.div_ceil(20) {
        let documents: Vec<_> = (0..20)
            .map(|d| serde_json::json!({"id": format!("d{batch}-{d}"), "text": text}))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"documents": documents})).unwrap();
        let report = rt
            .block_on(ingest.ingest.ingest(&ctx, &caller, &body))
            .unwrap();
        chunks += report.data.iter().filter_map(|d| d.chunks).sum::<u32>();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingest: {} documents, {chunks} chunks in {secs:.2} s = {:.0} chunks/s ({:.0} documents/s)",
        docs.div_ceil(20) * 20,
        chunks as f64 / secs,
        (docs.div_ceil(20) * 20) as f64 / secs
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (smoke mode).
    let bench_mode = std::env::args().any(|arg| arg == "--bench");
    let list_only = std::env::args().any(|arg| arg == "--list");
    // `-- tokenizer` skips the gateway passes, which take minutes in bench mode.
    let tokenizer_only = std::env::args().any(|arg| arg.starts_with("tokenizer"));
    if !list_only && !tokenizer_only {
        if bench_mode {
            if std::env::var_os("HOT_PATH_CASE").is_none() {
                ingest_throughput(400);
            }
            percentiles(PERCENTILE_CALLS, PERCENTILE_WARMUP);
        } else {
            ingest_throughput(20);
            percentiles(10, 1);
        }
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench_tokenizer(&mut criterion);
    if !tokenizer_only {
        bench_hot_path(&mut criterion);
    }
    criterion.final_summary();
}
