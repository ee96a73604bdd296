#!/usr/bin/env bash
# Runs every check Tollgate has: formatting, clippy, the SAM template (cfn-lint, sam validate
# --lint, a least-privilege check), the Rust test suites (the store contract
# suites against DynamoDB in moto included), and the official OpenAI and Anthropic Python SDKs and the usage
# dashboard (headless Chromium) against a live `tollgate serve`. Installs what it needs (a Python
# venv from PyPI, Debian's chromium) and starts and stops every server it uses. Screenshots go to
# target/artifacts/. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
if [ "${CI:-}" = "true" ]; then
  # A fresh clone builds everything once: incremental caches (a third of a cold target) and pip's
  # download cache would only cost disk, which CI machines may have little of.
  export CARGO_INCREMENTAL=0 PIP_NO_CACHE_DIR=1
fi

step() { printf '\n== %s\n' "$*"; }

step "disk: $(df -h . | awk 'NR==2 {print $4 " free on " $6}')"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "module layering: no cycle among service::*, none between domain::* and error"
python3 infra/check_modules.py shared/src

step "template.yaml: cfn-lint, sam validate --lint, least privilege"
infra_venv="$root/target/infra-venv"
if [ ! -x "$infra_venv/bin/python" ]; then
  python3 -m venv "$infra_venv"
fi
"$infra_venv/bin/pip" install --quiet --disable-pip-version-check -r infra/requirements.txt
"$infra_venv/bin/cfn-lint" template.yaml
AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 "$infra_venv/bin/sam" validate --lint
"$infra_venv/bin/python" infra/check_policies.py template.yaml

work=$(mktemp -d)
serve_pid=""
moto_pid=""
standins_pid=""
watch_pgid=""
stop() { if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi; }
cleanup() {
  # cargo lambda watch runs each function as a child process: stop the whole group.
  if [ -n "$watch_pgid" ]; then kill -- "-$watch_pgid" 2>/dev/null || true; fi
  stop "$standins_pid"
  stop "$serve_pid"
  stop "$moto_pid"
  rm -rf "$work"
}
trap cleanup EXIT

step "Python venv (OpenAI and Anthropic SDK suites, moto)"
venv="$root/target/py-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt \
  'moto[server]==5.2.5'

step "Chromium and ChromeDriver (dashboard test; Debian packages)"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null
mkdir -p "$root/target/artifacts"

step "moto (DynamoDB emulator, single-threaded)"
# Single-threaded so conditional writes are atomic, as in DynamoDB (see infra/moto_server.py).
moto_port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/python" infra/moto_server.py "$moto_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
moto_url="http://127.0.0.1:$moto_port"
for _ in $(seq 1 150); do
  curl -fsS -o /dev/null "$moto_url/moto-api/" 2>/dev/null && break
  if ! kill -0 "$moto_pid" 2>/dev/null; then cat "$work/moto.log"; echo "moto exited"; exit 1; fi
  sleep 0.1
done
curl -fsS -o /dev/null "$moto_url/moto-api/" || { cat "$work/moto.log"; echo "moto did not answer on $moto_url"; exit 1; }
echo "moto listening on $moto_url"

step "cargo test (workspace; DynamoDB contract suites against moto)"
TOLLGATE_TEST_DYNAMODB_ENDPOINT="$moto_url" TOLLGATE_TEST_MOTO_PYTHON="$venv/bin/python" \
AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
  cargo test --workspace --locked

# Every binary in one build, with the feature set `cargo lambda watch` uses too (the whole
# workspace, no dev-dependencies), so the functions, the CLI and the stand-ins are built once.
cargo build --workspace --bins --locked

step "Bedrock through tollgate serve: a Bedrock route, streamed too, and an Anthropic 529 storm served by Bedrock (stand-ins)"
TOLLGATE_BIN_DIR="$root/target/debug" bash infra/bedrock-demo.sh

# Runs the Python SDK suites (OpenAI, Anthropic, the dashboard) against `tollgate serve "$@"`, then stops it.
sdk_suite() {
  local suite=$1
  local log="$work/serve-$1.out"
  shift
  # --port 0: the OS picks a free port; the banner says which.
  TOLLGATE_PROVIDERS=simulated "$root/target/debug/tollgate" serve --port 0 "$@" >"$log" 2>"$log.err" &
  serve_pid=$!
  for _ in $(seq 1 300); do
    grep -q '^demo tenant globex key ' "$log" 2>/dev/null && break
    if ! kill -0 "$serve_pid" 2>/dev/null; then cat "$log.err"; echo "tollgate serve exited"; exit 1; fi
    sleep 0.1
  done
  local base_url acme_key globex_key
  base_url=$(sed -n 's/^tollgate serve: listening on \(http:\/\/[^ ]*\).*/\1/p' "$log")
  acme_key=$(awk '/^demo tenant acme key /{print $5}' "$log")
  globex_key=$(awk '/^demo tenant globex key /{print $5}' "$log")
  if [ -z "$base_url" ] || [ -z "$acme_key" ] || [ -z "$globex_key" ]; then
    echo "could not read the serve banner:"; cat "$log" "$log.err"; exit 1
  fi
  curl -fsS "$base_url/healthz" >/dev/null
  TOLLGATE_BASE_URL="$base_url" TOLLGATE_ACME_KEY="$acme_key" TOLLGATE_GLOBEX_KEY="$globex_key" \
  TOLLGATE_EMF_LOG="$log" TOLLGATE_SUITE="$suite" TOLLGATE_ARTIFACTS_DIR="$root/target/artifacts" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/python
  stop "$serve_pid"
  serve_pid=""
}

step "OpenAI and Anthropic Python SDKs and the dashboard against tollgate serve (embedded store)"
sdk_suite memory

step "OpenAI and Anthropic Python SDKs and the dashboard against tollgate serve --store dynamodb (moto)"
# The same suite on DynamoDB: tables from `tollgate init`, demo tenants seeded into them.
export AWS_ENDPOINT_URL="$moto_url" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
"$root/target/debug/tollgate" init --table-prefix sdk-suite
sdk_suite dynamodb --store dynamodb --table-prefix sdk-suite --seed-demo

step "cargo lambda watch: the five function binaries end to end (moto, provider and Qdrant stand-ins)"
# The real binaries (invoke in its streaming runtime) under cargo-lambda's runtime emulator,
# routed as the REST API routes them; a tenant and key made with the CLI.
"$root/target/debug/standins" >"$work/standins.out" 2>&1 &
standins_pid=$!
for _ in $(seq 1 100); do
  grep -q '^qdrant ' "$work/standins.out" 2>/dev/null && break
  sleep 0.1
done
openai_url=$(awk '/^openai /{print $2}' "$work/standins.out")
anthropic_url=$(awk '/^anthropic /{print $2}' "$work/standins.out")
qdrant_url=$(awk '/^qdrant /{print $2}' "$work/standins.out")
[ -n "$qdrant_url" ] || { cat "$work/standins.out"; echo "stand-ins did not start"; exit 1; }
tollgate="$root/target/debug/tollgate"
"$tollgate" init --table-prefix lambda-e2e --qdrant-url "$qdrant_url"
"$tollgate" tenant create e2e --table-prefix lambda-e2e --name 'E2E Corp' --tier pro \
  --system-prompt 'You help {{tenant_name}} customers.' \
  --route gpt-4o-mini=openai:gpt-4o-mini --route claude-haiku=anthropic:claude-haiku-4-5
e2e_key=$("$tollgate" key create e2e --table-prefix lambda-e2e 2>/dev/null)
cat >"$work/lambda.env" <<ENV
AWS_ENDPOINT_URL=$moto_url
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=test
AWS_SECRET_ACCESS_KEY=test
TOLLGATE_STORE=dynamodb
TOLLGATE_TABLE_PREFIX=lambda-e2e
TOLLGATE_PROVIDERS=real
OPENAI_API_KEY=sk-e2e-openai-0123456789
OPENAI_BASE_URL=$openai_url
ANTHROPIC_API_KEY=sk-e2e-anthropic-0123456789
ANTHROPIC_BASE_URL=$anthropic_url
TOLLGATE_QDRANT_URL=$qdrant_url
RUST_LOG=info
ENV
watch_port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PATH="$infra_venv/bin:$PATH" setsid cargo lambda watch --invoke-address 127.0.0.1 \
  --invoke-port "$watch_port" --env-file "$work/lambda.env" --ignore-changes \
  >"$work/watch.log" 2>&1 &
watch_pgid=$!
for _ in $(seq 1 300); do
  curl -s -o /dev/null "http://127.0.0.1:$watch_port/" 2>/dev/null && break
  if ! kill -0 "$watch_pgid" 2>/dev/null; then cat "$work/watch.log"; echo "cargo lambda watch exited"; exit 1; fi
  sleep 0.2
done
LAMBDA_URL="http://127.0.0.1:$watch_port" TENANT_KEY="$e2e_key" REPO_ROOT="$root" \
CARGO_LAMBDA="$infra_venv/bin/cargo-lambda" \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/lambda_e2e \
  || { tail -50 "$work/watch.log"; exit 1; }
kill -- "-$watch_pgid" 2>/dev/null || true
watch_pgid=""
stop "$standins_pid"
standins_pid=""
unset AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION

step "artifacts (screenshots; a local run may list older ones, hence the times)"
find "$root/target/artifacts" -type f -printf '%TY-%Tm-%Td %TH:%TM  %p\n' | sort -k3

step "all checks passed (target/: $(du -sh target 2>/dev/null | cut -f1); $(df -h . | awk 'NR==2 {print $4}') free)"
