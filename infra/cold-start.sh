#!/usr/bin/env bash
# Cold start of each function binary (process start to ready for its first event), next to a
# hello-world Rust Lambda on the same machine: builds the release binaries and runs the
# cold_start bench. Every AWS endpoint and Qdrant point at a closed port, so a function that made
# a network call during init would fail to start.
# Not part of .ci/run: numbers go in notes, not in assertions. See tests/benches/cold_start.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p invoke -p ingest -p usage-report -p anomaly-scheduler -p admin
cargo build --release --locked -p tollgate-tests --bin hello_lambda
cargo bench --locked -p tollgate-tests --bench cold_start
