#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! Limiter decisions per second: one decision is what invoke does before a provider call, a
//! snapshot read (one BatchGetItem) and a conditional reservation (one TransactWriteItems).
//! Runs on the embedded store and, when `TOLLGATE_BENCH_DYNAMODB_ENDPOINT` names a DynamoDB
//! endpoint (`infra/bench-dynamodb.sh` starts moto and sets it), on DynamoDB.
//!
//! Run: `cargo bench -p tollgate-tests --bench limiter`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use tollgate::adapters::dynamodb::{DynamoStore, TableNames};
use tollgate::adapters::memory::MemoryStore;
use tollgate::domain::ids::TenantId;
use tollgate::domain::limits::{Limits, Shards};
use tollgate::domain::tenant::ProviderKind;
use tollgate::ports::LimiterStore;
use tollgate::service::limiter::{Demand, Limiter, Scope};

const LIMITS: Limits = Limits {
    tokens_per_minute: 1 << 40,
    requests_per_minute: 1 << 40,
    tokens_per_day: 1 << 40,
};

async fn decide(limiter: &Limiter, tenant: &TenantId, tokens: u64, limits: Limits) -> bool {
    let now = chrono::Utc::now().timestamp();
    let route = (ProviderKind::Openai, "gpt-4o-mini");
    let scope = Scope::tokens_only(tenant, Shards::ONE, limits);
    let snapshot = limiter.snapshot(&scope, &[route], now).await.unwrap();
    limiter
        .reserve(&scope, &snapshot, Demand::tokens(tokens), route)
        .await
        .unwrap()
        .is_ok()
}

async fn run(
    label: &str,
    store: Arc<dyn LimiterStore>,
    sequential: u64,
    concurrent: u64,
    tasks: u64,
) {
    let limiter = Arc::new(Limiter::new(store, Default::default(), 1024));
    let tenant = TenantId::parse(format!("bench-{}", std::process::id())).unwrap();

    let mut hist = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    for _ in 0..sequential {
        let t = Instant::now();
        assert!(decide(&limiter, &tenant, 100, LIMITS).await);
        hist.record(t.elapsed().as_micros() as u64).unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{label}: sequential {sequential} decisions in {:.2} s = {:.0}/s; p50 {:.2} ms, p99 {:.2} ms",
        elapsed.as_secs_f64(),
        sequential as f64 / elapsed.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    );

    let left = Arc::new(AtomicU64::new(concurrent));
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (limiter, tenant, left) = (limiter.clone(), tenant.clone(), left.clone());
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    decide(&limiter, &tenant, 100, LIMITS).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{label}: {tasks} concurrent callers, {concurrent} decisions in {:.2} s = {:.0}/s",
        elapsed.as_secs_f64(),
        concurrent as f64 / elapsed.as_secs_f64()
    );

    // Over-admission under contention: 50 concurrent reservations of 1,000 against 10,000.
    let tight = Limits {
        tokens_per_minute: 10_000,
        ..LIMITS
    };
    let tenant = TenantId::parse(format!("bench-tight-{}", std::process::id())).unwrap();
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (limiter, tenant) = (limiter.clone(), tenant.clone());
            tokio::spawn(async move { decide(&limiter, &tenant, 1_000, tight).await })
        })
        .collect();
    let mut admitted = 0;
    for c in calls {
        admitted += u64::from(c.await.unwrap());
    }
    println!(
        "{label}: 50 concurrent reservations of 1000 against 10000 TPM: admitted {admitted} (exact: 10, over-admission {})",
        admitted.saturating_sub(10)
    );
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n = if quick { 20 } else { 20_000 };
        run("memory", Arc::new(MemoryStore::new()), n, n, 16).await;
        match std::env::var("TOLLGATE_BENCH_DYNAMODB_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => {
                let names = TableNames::with_prefix(&format!("bench{}", std::process::id()));
                let store = DynamoStore::emulator(&endpoint, names);
                store.create_tables().await.unwrap();
                let (seq, conc) = if quick { (5, 5) } else { (300, 600) };
                let before = store.round_trips();
                run("dynamodb", Arc::new(store.clone()), seq, conc, 16).await;
                let trips = store.round_trips() - before;
                println!("dynamodb: {trips} round trips for {} decisions", seq + conc + 50);
            }
            _ => println!("dynamodb: skipped (set TOLLGATE_BENCH_DYNAMODB_ENDPOINT; infra/bench-dynamodb.sh does)"),
        }
    });
}
