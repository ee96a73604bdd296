#!/usr/bin/env bash
# Bedrock through `tollgate serve`, with the provider stand-ins (README "Bedrock"):
#
#   1. a chat on acme's `claude-bedrock` route (Bedrock's Converse, SigV4-signed),
#   2. the same route streamed (ConverseStream, AWS's binary event stream),
#   3. a chat on `claude-failover` (Anthropic) while Anthropic answers every call with 529:
#      served by its fallback, Bedrock's Claude.
#
# Prints each reply's status and `x-tollgate-served-by`, then acme's usage events, and fails
# unless every call was served by Bedrock at its exact price: the stand-in's default usage
# (20 prompt, 6 completion tokens) at us. Claude Sonnet 4.5's $3.30 / $16.50 per 1M is
# $0.000165, and the storm's event counts Anthropic's three attempts and Bedrock's answer.
#
# Usage: bash infra/bedrock-demo.sh   (builds the debug binaries first if they are missing)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="${TOLLGATE_BIN_DIR:-$root/target/debug}"
if [ ! -x "$bin/tollgate" ] || [ ! -x "$bin/standins" ]; then
  cargo build --locked -p tollgate-cli -p tollgate-tests --bins
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # file pattern what pid
  for _ in $(seq 1 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || { cat "$1" "$1.err" 2>/dev/null; echo "$3 exited"; exit 1; }
    sleep 0.1
  done
  cat "$1"; echo "$3 did not start"; exit 1
}

STANDIN_ANTHROPIC_STATUS=529 "$bin/standins" >"$work/standins" 2>"$work/standins.err" &
pids+=($!)
wait_for "$work/standins" '^qdrant ' "the stand-ins" "${pids[-1]}"
anthropic_url=$(awk '/^anthropic /{print $2}' "$work/standins")
read -r _ bedrock_url access_key secret_key session_token < <(grep '^bedrock ' "$work/standins")

TOLLGATE_PROVIDERS=auto \
ANTHROPIC_API_KEY=sk-demo-anthropic-0123456789 ANTHROPIC_BASE_URL="$anthropic_url" \
TOLLGATE_BEDROCK_REGION=us-east-1 AWS_REGION=us-east-1 \
AWS_ENDPOINT_URL_BEDROCK_RUNTIME="$bedrock_url" \
AWS_ACCESS_KEY_ID="$access_key" AWS_SECRET_ACCESS_KEY="$secret_key" AWS_SESSION_TOKEN="$session_token" \
  "$bin/tollgate" serve --port 0 >"$work/serve" 2>"$work/serve.err" &
pids+=($!)
wait_for "$work/serve" '^demo tenant globex key ' "tollgate serve" "${pids[-1]}"
grep -E '^(tollgate serve|provider)' "$work/serve"
base_url=$(sed -n 's/^tollgate serve: listening on \(http:\/\/[^ ]*\).*/\1/p' "$work/serve")
key=$(awk '/^demo tenant acme key /{print $5}' "$work/serve")

ask() { # model stream question (each question differs: acme's response cache is on)
  local body="{\"model\": \"$1\", \"messages\": [{\"role\": \"user\", \"content\": \"$3\"}]"
  [ "$2" = stream ] && body="$body, \"stream\": true, \"stream_options\": {\"include_usage\": true}"
  curl -sS -D "$work/headers" -o "$work/body" -H "Authorization: Bearer $key" \
    -H 'content-type: application/json' -d "$body}" "$base_url/v1/chat/completions"
  local status served
  status=$(awk 'NR==1 {print $2}' "$work/headers")
  served=$(awk 'tolower($1) == "x-tollgate-served-by:" {print $2}' "$work/headers" | tr -d '\r')
  echo "$1 ($2): HTTP $status, served by $served"
  [ "$status" = 200 ] || { cat "$work/body"; exit 1; }
}
ask claude-bedrock buffered "Where is my order?"
ask claude-bedrock stream "When does it ship?"
ask claude-failover buffered "Can I change the address?"

# The events index is eventually consistent: wait for the three.
for _ in $(seq 1 50); do
  curl -sS -H "Authorization: Bearer $key" "$base_url/v1/usage/events?limit=10" >"$work/events"
  python3 -c 'import json,sys; sys.exit(len(json.load(open(sys.argv[1]))["data"]) < 3)' "$work/events" && break
  sleep 0.1
done
python3 - "$work/events" <<'PY'
import json
import sys
from decimal import Decimal

events = json.load(open(sys.argv[1]))["data"]
print("acme's usage events, newest first:")
for e in events:
    print(f"  {e['model']:<15} served by {e['provider']}/{e['model_served']}  "
          f"{e['prompt_tokens']}+{e['completion_tokens']} tokens  attempts {e['attempts']}  "
          f"streamed {str(e['streamed']).lower():<5}  ${e['cost_usd']}")
assert len(events) == 3, events
assert [e["model"] for e in events] == ["claude-failover", "claude-bedrock", "claude-bedrock"], events
for e in events:
    assert e["provider"] == "bedrock", e
    assert e["model_served"] == "us.anthropic.claude-sonnet-4-5-20250929-v1:0", e
    assert Decimal(e["cost_usd"]) == Decimal("0.000165"), e
assert events[0]["attempts"] == 4, events[0]
print("ok: every call served by Bedrock at $0.000165 exactly; the 529 storm's event counts 4 attempts")
PY
