#!/usr/bin/env bash
# DynamoDB numbers against moto (single-threaded, as the tests use it): limiter decisions per
# second, over-admission under contention, and round trips per invoke request.
# moto is a Python emulator serving one request at a time: its throughput says nothing about
# DynamoDB's; the round-trip counts and the over-admission do carry over.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
echo "machine: $(nproc) cores; $(uptime)"
venv="$root/target/py-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/python" infra/moto_server.py "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do curl -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/" 2>/dev/null && break; sleep 0.1; done
export TOLLGATE_BENCH_DYNAMODB_ENDPOINT="http://127.0.0.1:$port"
cargo bench -p tollgate-tests --bench limiter
TOLLGATE_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$port" \
  cargo test -p tollgate-tests --test suite -- --nocapture dynamodb_invoke::dynamodb_round_trips dynamodb_invoke::dynamodb_fifty 2>&1 | grep -E '^dynamodb|test result'
echo "machine: $(uptime)"
