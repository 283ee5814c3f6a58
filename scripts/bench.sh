#!/usr/bin/env bash
# The benchmark suite: builds in release, starts the real server on a temp database, and
# prints a table of figures beside baselines from the same run (also bench/results*.json;
# a full run also writes bench/RESULTS.md).
# Usage: scripts/bench.sh [--quick]     (--quick: every phase 3 s, the run under two minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

step "release build"
cargo build --release --locked -p st-peter-server -p st-peter-bench

args=(--server-bin target/release/st-peter "$@")
if [[ -z "${ST_PETER_BENCH_POSTGRES_URL:-}" && -x scripts/pg.sh ]]; then
  step "benchmarks (SQLite, and PostgreSQL on a throwaway cluster)"
  scripts/pg.sh run -- bash -c \
    'ST_PETER_BENCH_POSTGRES_URL="$ST_PETER_TEST_POSTGRES_URL" ST_PETER_TOTP_KEY="$(head -c 32 /dev/urandom | base64)" target/release/st-peter-bench "$@"' \
    bench "${args[@]}"
else
  step "benchmarks"
  target/release/st-peter-bench "${args[@]}"
fi
