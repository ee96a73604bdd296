#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! What failing over costs a request: the latency of a chat route with a fallback, through the
//! invoke handler and the real OpenAI and Anthropic adapters against the loopback stand-ins
//! (which answer at once), with the default retry policy (3 attempts per target, full-jitter
//! backoff from 200 ms).
//!
//! Cases, each `FAILOVER_SAMPLES` requests (default 40) in a row:
//! - `primary`: the route's own target answers;
//! - `5xx storm`: the primary answers 503 three times (full-jitter backoff between: up to 200
//!   then 400 ms), Claude answers;
//! - `429, retry-after 0`: the primary's 429s ask for no wait, Claude answers;
//! - `open circuit`: the primary's circuit is open, Claude answers at once.
//!
//! Run: `cargo bench -p tollgate-tests --bench failover`. Under `cargo test` each case runs
//! twice as a smoke test.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tollgate::adapters::retry::RetryPolicy;
use tollgate::domain::tenant::{ProviderKind, Target};
use tollgate::ports::TenantAdmin;
use tollgate::service::failover::Breakers;
use tollgate_tests::harness::{Gateway, chat_body};
use tollgate_tests::{AnthropicStandIn, Behavior, OpenAiStandIn};

fn samples() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        std::env::var("FAILOVER_SAMPLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40)
    } else {
        2
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let openai = OpenAiStandIn::start().await;
    let anthropic = AnthropicStandIn::start().await;
    let mut gw = Gateway::with_standins(&openai, &anthropic).await;
    gw.state.chat.retry = RetryPolicy::default();
    let mut config = tollgate::demo::acme_config().unwrap();
    config.response_cache.enabled = false;
    config.routes.get_mut("gpt-4o-mini").unwrap().fallbacks = vec![Target {
        provider: ProviderKind::Anthropic,
        model: "claude-haiku-4-5".into(),
    }];
    gw.store.put_tenant_config(config).await.unwrap();
    let body = chat_body("gpt-4o-mini", "Where is my order?");
    let n = samples();

    println!("| case | requests | p50 ms | p90 ms | max ms | served by |");
    println!("|---|---|---|---|---|---|");
    let cases: [(&str, Vec<Behavior>, bool); 4] = [
        ("primary", vec![], false),
        ("5xx storm", vec![Behavior::status(503); 3], false),
        (
            "429, retry-after 0",
            vec![Behavior::rate_limited(Duration::ZERO); 3],
            false,
        ),
        ("open circuit", vec![], true),
    ];
    for (name, primary_fails, open) in cases {
        // A fresh breaker per case. The storms must reach the primary every time (a circuit
        // that opened would skip it and leave its scripted failures queued), so their breaker
        // never opens; the open case opens it first (threshold 1, a long cool-down).
        gw.state.chat.breakers = std::sync::Arc::new(if open {
            Breakers::new(1, Duration::from_secs(3600))
        } else {
            Breakers::new(u32::MAX, Duration::from_secs(30))
        });
        if open {
            gw.state.chat.breakers.failed(&Target {
                provider: ProviderKind::Openai,
                model: "gpt-4o-mini".into(),
            });
        }
        let mut latency = Histogram::<u64>::new(3).unwrap();
        let mut served = String::new();
        for _ in 0..n {
            for behavior in &primary_fails {
                openai.push(behavior.clone());
            }
            let started = Instant::now();
            let res = gw.chat("acme", body.clone()).await;
            latency
                .record(started.elapsed().as_micros() as u64)
                .unwrap();
            assert_eq!(res.status, 200, "{name}: {}", res.text());
            served = res
                .header("x-tollgate-served-by")
                .unwrap_or_default()
                .to_owned();
        }
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {name} | {n} | {:.1} | {:.1} | {:.1} | {served} |",
            ms(0.5),
            ms(0.9),
            latency.max() as f64 / 1000.0
        );
    }
}
