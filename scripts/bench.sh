#!/usr/bin/env bash
# The benchmark suite: builds in release, starts the real server on a temp database, and
# prints a table of figures beside baselines from the same run (also bench/results*.json;
# a full run also writes bench/RESULTS.md).
# Stock clients (ghz, h2load) are installed when missing: ghz with `go install`, h2load from
# the Debian package nghttp2-client.
# Usage: scripts/bench.sh [--quick]     (--quick: every phase 3 s, the flood 6 s)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

step "stock load tools (ghz, h2load)"
ensure_ghz
ensure_h2load

step "release build"
cargo build --release --locked -p st-peter-server -p st-peter-bench

args=(--server-bin target/release/st-peter --ghz "$(command -v ghz)" --h2load "$(command -v h2load)" "$@")
if [[ -z "${ST_PETER_BENCH_POSTGRES_URL:-}" && -x scripts/pg.sh ]]; then
  step "benchmarks (SQLite, and PostgreSQL on a throwaway cluster)"
  scripts/pg.sh run -- bash -c \
    'ST_PETER_BENCH_POSTGRES_URL="$ST_PETER_TEST_POSTGRES_URL" ST_PETER_TOTP_KEY="$(head -c 32 /dev/urandom | base64)" target/release/st-peter-bench "$@"' \
    bench "${args[@]}"
else
  step "benchmarks"
  target/release/st-peter-bench "${args[@]}"
fi
