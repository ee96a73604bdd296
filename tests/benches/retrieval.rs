#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
//! Retrieval latency: one `VectorIndex::search` (top 5) for a random tenant, with 100,000
//! chunks across 100 tenants (1,000 each, in 10 documents) of random 256-dimensional unit
//! vectors from a fixed seed. Runs on the embedded index and on the Qdrant adapter against the
//! Qdrant gRPC stand-in (over loopback, in this process), and prints p50/p90/p99/max, the load
//! time, and the machine's load average before and after.
//!
//! The stand-in scans the tenant's points exactly (as Qdrant does below its indexing
//! threshold, where a filtered search on an `is_tenant` index is a scan of the tenant's
//! points), so its numbers are the adapter's and gRPC's overhead plus an exact scan; a real
//! Qdrant's are its own.
//!
//! Run: `cargo bench -p tollgate-tests --bench retrieval`. Under `cargo test --benches` (no
//! `--bench` argument) the sizes shrink to a smoke test.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tollgate::adapters::qdrant::QdrantIndex;
use tollgate::adapters::vector_memory::MemoryVectorIndex;
use tollgate::domain::documents::{Chunk, DocumentId};
use tollgate::domain::ids::TenantId;
use tollgate::ports::vector::{IndexedChunk, VectorIndex};
use tollgate_tests::QdrantStandIn;

const DIMS: usize = 256;
const DOCS_PER_TENANT: usize = 10;
const TOP_K: usize = 5;

struct Size {
    tenants: usize,
    chunks: usize,
    queries: usize,
}

/// splitmix64: a fixed-seed generator with no dependency, so every run searches the same data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit_interval(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1_u64 << 53) as f64
    }

    /// A uniformly random direction: Gaussian coordinates (Box-Muller), normalised.
    fn unit_vector(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIMS)
            .map(|_| {
                let (u1, u2) = (self.unit_interval(), self.unit_interval());
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn tenant(i: usize) -> TenantId {
    TenantId::parse(format!("tenant-{i:03}")).unwrap()
}

/// Loads the corpus one document at a time (as ingest does); returns the elapsed time.
async fn load(index: &dyn VectorIndex, size: &Size) -> Duration {
    let mut rng = Rng(0x5EED);
    let per_doc = size.chunks / size.tenants / DOCS_PER_TENANT;
    let started = Instant::now();
    for t in 0..size.tenants {
        let tenant_id = tenant(t);
        for d in 0..DOCS_PER_TENANT {
            let document_id = DocumentId::parse(format!("doc-{d}")).unwrap();
            let chunks = (0..per_doc)
                .map(|c| IndexedChunk {
                    chunk: Chunk {
                        tenant_id: tenant_id.clone(),
                        document_id: document_id.clone(),
                        chunk_index: c as u32,
                        title: format!("Document {d}"),
                        // About a 300-token chunk's worth of payload.
                        text: format!("chunk {c} of document {d} of {tenant_id} ").repeat(30),
                        metadata: Default::default(),
                    },
                    vector: rng.unit_vector(),
                })
                .collect();
            index
                .replace_document(&tenant_id, &document_id, chunks)
                .await
                .unwrap();
        }
    }
    started.elapsed()
}

async fn measure(label: &str, index: &dyn VectorIndex, size: &Size) {
    index.ensure_ready(DIMS).await.unwrap();
    let loaded = load(index, size).await;
    assert_eq!(
        index.count(&tenant(0)).await.unwrap() as usize,
        size.chunks / size.tenants
    );
    println!(
        "{label}: loaded {} chunks in {:.1} s ({:.0} chunks/s)",
        size.chunks,
        loaded.as_secs_f64(),
        size.chunks as f64 / loaded.as_secs_f64()
    );

    let mut rng = Rng(0xC0FFEE);
    let queries: Vec<(TenantId, Vec<f32>)> = (0..size.queries)
        .map(|_| (tenant(rng.below(size.tenants)), rng.unit_vector()))
        .collect();
    // Warm-up: connection set-up, allocator, caches.
    for (t, v) in queries.iter().take(20) {
        index.search(t, v, TOP_K).await.unwrap();
    }
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let started = Instant::now();
    for (t, v) in &queries {
        let begun = Instant::now();
        let results = index.search(t, v, TOP_K).await.unwrap();
        hist.record(begun.elapsed().as_micros() as u64).unwrap();
        assert_eq!(results.len(), TOP_K);
        assert!(results.iter().all(|r| &r.chunk.tenant_id == t));
    }
    let elapsed = started.elapsed();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{label}: {} searches (top {TOP_K}, {} chunks per tenant) in {:.2} s = {:.0}/s; \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        size.queries,
        size.chunks / size.tenants,
        elapsed.as_secs_f64(),
        size.queries as f64 / elapsed.as_secs_f64(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        hist.max() as f64 / 1000.0,
    );
}

fn machine_state() -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("load average {load}, {cpus} CPUs")
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let size = if quick {
        Size {
            tenants: 10,
            chunks: 2_000,
            queries: 50,
        }
    } else {
        Size {
            tenants: 100,
            chunks: 100_000,
            queries: 2_000,
        }
    };
    let profile = if cfg!(debug_assertions) {
        "debug (unoptimised) build"
    } else {
        "optimised build"
    };
    println!(
        "retrieval bench: {} chunks, {} tenants, {DIMS} dimensions, {profile}; before: {}",
        size.chunks,
        size.tenants,
        machine_state()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        measure("embedded", &MemoryVectorIndex::new(), &size).await;

        let standin = QdrantStandIn::start().await;
        let index = QdrantIndex::new(&standin.url(), None, "bench").unwrap();
        measure("qdrant stand-in", &index, &size).await;
    });
    println!("retrieval bench: after: {}", machine_state());
}
