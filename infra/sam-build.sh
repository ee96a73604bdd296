#!/usr/bin/env bash
# `sam build` for arm64 (cargo-lambda cross-compiles with zig; no Docker) and the size of each
# function's bootstrap, which must stay under 10 MB (10 MiB). Not part of .ci/run: a cold
# release cross-build (fat LTO, one codegen unit) took 772 s here, on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/target/infra-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r infra/requirements.txt
# sam finds cargo-lambda, and cargo-zigbuild finds zig through this venv's python3.
export PATH="$venv/bin:$PATH" SAM_CLI_TELEMETRY=0
# Once, before SAM's parallel builds would each try (and race) to add it.
rustup target add aarch64-unknown-linux-gnu
start=$(date +%s)
sam build --beta-features --no-cached
echo "sam build took $(( $(date +%s) - start )) s"

limit=$((10 * 1024 * 1024))
status=0
printf '%-28s %12s\n' function "bootstrap"
for bootstrap in .aws-sam/build/*/bootstrap; do
  fn=$(basename "$(dirname "$bootstrap")")
  size=$(stat -c %s "$bootstrap")
  printf '%-28s %9s MB  %s\n' "$fn" "$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')" \
    "$( (file -b "$bootstrap" 2>/dev/null || true) | cut -d, -f1-2)"
  if [ "$size" -ge "$limit" ]; then
    echo "  $fn: over the 10 MB budget" >&2
    status=1
  fi
done
exit $status
