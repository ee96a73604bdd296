#!/usr/bin/env bash
# Cold start of each function binary (process start to ready for its first event), next to a
# hello-world Rust Lambda on the same machine: builds the release binaries, starts moto (the
# invoke and ingest functions read the operator catalog at init), runs the cold_start bench.
# Not part of .ci/run: numbers go in notes, not in assertions. See tests/benches/cold_start.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

cargo build --release --locked -p invoke -p ingest -p usage-report -p anomaly-scheduler \
  -p tollgate-cli
cargo build --release --locked -p tollgate-tests --bin hello_lambda

venv="$root/target/py-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/python" infra/moto_server.py "$port" >/dev/null 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/" 2>/dev/null && break
  sleep 0.1
done
AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test \
  AWS_SECRET_ACCESS_KEY=test target/release/tollgate init --table-prefix cold-start >/dev/null

TOLLGATE_BENCH_DYNAMODB_ENDPOINT="http://127.0.0.1:$port" \
  cargo bench --locked -p tollgate-tests --bench cold_start
