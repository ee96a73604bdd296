#!/usr/bin/env bash
# The gateway through a real HTTP upstream, side by side: nginx on loopback answers every
# `POST /v1/chat/completions` with one fixed OpenAI reply (zero latency, usage included);
# `tollgate serve` calls it through the real OpenAI adapter (reqwest, JSON both ways, the
# limiter, metering, and an EMF line per request written to a file as Lambda's stdout would be;
# METRICS=off turns EMF off); wrk drives the gateway with buffered,
# cache-bypassing chats from CONNECTIONS keep-alive connections.
#
# Each binary given is measured in turn, ROUNDS times alternating, in one run, so a
# before/after comparison shares the machine state (printed with the numbers). nginx alone is
# measured first: the upstream's own capacity on this machine.
#
# Usage: infra/bench-upstream.sh [label=path/to/tollgate ...]
#   default: head=target/release/tollgate (built here with `cargo build --release`)
#   CONNECTIONS=16 DURATION=10s ROUNDS=2 to change the load; PERF_DIR=dir records each
#   gateway with `perf record --call-graph dwarf` during its measured run (dir/<label>.data).
# Needs nginx and wrk (Debian: apt-get install nginx-light wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS="${CONNECTIONS:-16}"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-2}"

for tool in nginx wrk; do
    if ! command -v "$tool" >/dev/null && [[ ! -x "/usr/sbin/$tool" ]]; then
        echo "$tool is not installed (apt-get install nginx-light wrk)" >&2
        exit 1
    fi
done
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

binaries=("$@")
if [[ ${#binaries[@]} -eq 0 ]]; then
    cargo build --release -p tollgate-cli
    binaries=("head=target/release/tollgate")
fi

machine() { echo "machine: $(nproc) cores; $(uptime)"; }
# shellcheck source=infra/serve-wait.sh
source infra/serve-wait.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- the upstream -------------------------------------------------------------------------
upstream_port="$(free_port)"
reply='{"id":"chatcmpl-upstream","object":"chat.completion","created":1767225600,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the zero-latency upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":21,"completion_tokens":8,"total_tokens":29}}'
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$upstream_port;
        location = /v1/chat/completions {
            default_type application/json;
            return 200 '$reply';
        }
    }
}
CONF
"$nginx_bin" -c "$work/nginx.conf" -p "$work" &
pids+=($!)
for _ in $(seq 1 50); do
    curl -sf -X POST "http://127.0.0.1:$upstream_port/v1/chat/completions" -d '{}' >/dev/null && break
    sleep 0.1
done

body='{"model":"gpt-4o","messages":[{"role":"user","content":"Hello from the upstream bench, how are you today?"}]}'
cat >"$work/chat.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Cache-Control"] = "no-cache"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
LUA

results="$work/results"
# wrk's summary as one line: requests/s, p50, p90, p99, and any non-2xx count.
run_wrk() {
    local label="$1" url="$2"
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/chat.lua" "$url" >"$work/wrk.out"
    local rps p50 p90 p99 bad
    rps="$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")"
    p50="$(awk '$1=="50%" {print $2}' "$work/wrk.out")"
    p90="$(awk '$1=="90%" {print $2}' "$work/wrk.out")"
    p99="$(awk '$1=="99%" {print $2}' "$work/wrk.out")"
    bad="$(awk '/Non-2xx/ {print $5}' "$work/wrk.out")"
    printf '%-12s %10s req/s  p50 %-8s p90 %-8s p99 %-8s non-2xx %s\n' \
        "$label" "$rps" "$p50" "$p90" "$p99" "${bad:-0}" | tee -a "$results"
    if [[ -n "$bad" && "$bad" != "0" ]]; then
        echo "non-2xx responses from $label:" >&2
        cat "$work/wrk.out" >&2
        exit 1
    fi
}

echo "== machine at start"
machine
echo "== nginx alone on 127.0.0.1:$upstream_port (the upstream's capacity)"
BENCH_KEY=none run_wrk "nginx" "http://127.0.0.1:$upstream_port/v1/chat/completions"

# --- the gateways -------------------------------------------------------------------------
serve_and_measure() {
    local label="$1" bin="$2"
    local out="$work/$label.out" err="$work/$label.err"
    TOLLGATE_PROVIDERS=real OPENAI_API_KEY=sk-bench-local-upstream \
        OPENAI_BASE_URL="http://127.0.0.1:$upstream_port/v1" RUST_LOG=warn \
        "$bin" serve --port 0 --metrics "${METRICS:-stderr}" --demo-unlimited >"$out" 2>"$err" &
    local server=$!
    wait_for_serve "$server" "$out" "$err"
    local key="$SERVE_KEY" url="$SERVE_URL"
    # Warm up (tokenizer tables, connection pool), then measure.
    BENCH_KEY="$key" wrk -t1 -c4 -d1s -s "$work/chat.lua" "$url/v1/chat/completions" >/dev/null
    local perf=""
    if [[ -n "${PERF_DIR:-}" ]]; then
        perf record -F 499 --call-graph dwarf,16384 -p "$server" -o "$PERF_DIR/$label.data" \
            -- sleep "${DURATION%s}" >/dev/null 2>&1 &
        perf=$!
    fi
    BENCH_KEY="$key" run_wrk "$label" "$url/v1/chat/completions"
    [[ -n "$perf" ]] && wait "$perf" || true
    kill -INT "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
}

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round ($CONNECTIONS connections, $DURATION each)"
    for entry in "${binaries[@]}"; do
        serve_and_measure "${entry%%=*}" "${entry#*=}"
    done
    machine
done

echo
echo "== summary"
cat "$results"
machine
