#!/usr/bin/env bash
# The gateway's own overhead, with the simulated provider answering in 0 ms:
#   1. `tollgate serve` (release build) under `tollgate loadtest` over loopback: buffered,
#      streamed, and response-cache hits;
#   2. the in-process hot path (`cargo bench -p tollgate-tests --bench hot_path`).
# Targets (2-core dev machine): in-process p99 < 1 ms; serve >= 5,000 req/s with p99 < 5 ms.
# The load generator shares the machine with the server, so the machine state is printed with
# the numbers: a loaded machine makes every number here worse.
#
# Usage: infra/bench.sh            (CONCURRENCY=32 DURATION=10s WARMUP=2s to change the load)
set -euo pipefail
cd "$(dirname "$0")/.."

CONCURRENCY="${CONCURRENCY:-32}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"

machine() {
    echo "machine: $(nproc) cores; $(uptime)"
}

echo "== machine at start"
machine

echo "== building tollgate (release)"
cargo build --release -p tollgate-cli
bin=target/release/tollgate

work="$(mktemp -d)"
server=""
stop_server() {
    if [[ -n "$server" ]] && kill -0 "$server" 2>/dev/null; then
        kill -INT "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    server=""
}
trap 'stop_server; rm -rf "$work"' EXIT

# Simulated providers whatever keys the environment holds, 0 ms latency, no metrics output.
# Port 0: the kernel picks a free port and the banner says which.
TOLLGATE_PROVIDERS=simulated TOLLGATE_SIMULATED_LATENCY_MS=0 TOLLGATE_SIMULATED_CHUNK_MS=0 \
    RUST_LOG="${RUST_LOG:-info}" \
    "$bin" serve --port 0 --metrics off --demo-unlimited >"$work/serve.out" 2>"$work/serve.err" &
server=$!

# shellcheck source=infra/serve-wait.sh
source infra/serve-wait.sh
wait_for_serve "$server" "$work/serve.out" "$work/serve.err"
key="$SERVE_KEY"
url="$SERVE_URL"
echo "== tollgate serve on $url (pid $server)"

results="$work/results.jsonl"
loadtest() {
    local label="$1"
    shift
    echo
    echo "== loadtest: $label"
    "$bin" loadtest --url "$url" --key "$key" --model gpt-4o \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" "$@" \
        | tee "$work/last.out"
    printf '%s %s\n' "$label" "$(tail -n 1 "$work/last.out")" >>"$results"
    # The 1-minute load average now mostly reflects the run that just ended.
    machine
}

loadtest "buffered" --no-cache
loadtest "streamed" --no-cache --stream
loadtest "cache-hit"

stop_server
if [[ -s "$work/serve.err" ]]; then
    echo "== tollgate serve stderr"
    cat "$work/serve.err"
fi

echo
echo "== in-process hot path (cargo bench)"
machine
cargo bench -p tollgate-tests --bench hot_path

echo
echo "== summary"
cat "$results"
machine
