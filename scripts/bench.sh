#!/usr/bin/env bash
# The benchmark suite: builds in release, starts the real server on a temp database, and
# prints a table of figures beside baselines from the same run (also bench/results*.json;
# a full run also writes bench/RESULTS.md).
# Stock clients (ghz, h2load) are installed when missing: ghz with `go install`, h2load from
# the Debian package nghttp2-client. The revocation rows also build the client probes:
# bench/probes/go (`go build`, on client/go through a replace) and client/ts/dist (`npm ci`
# when its node_modules is missing or stale, then `npm run build`) for bench/probes/ts.
# Usage: scripts/bench.sh [--quick] [--revocation-only]
#   --quick: every phase 3 s, the flood 6 s, fewer revocations timed
#   --revocation-only: only rows 7 and 7b (prints the table, writes no results file)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

step "stock load tools (ghz, h2load)"
ensure_ghz
ensure_h2load

step "release build"
cargo build --release --locked -p st-peter-server -p st-peter-bench

step "client probes for the revocation rows (Go, TypeScript)"
(cd bench/probes/go && go build -o ../../../target/bench-probes/go-probe .)
if [[ ! -f client/ts/node_modules/.package-lock.json ||
  client/ts/package-lock.json -nt client/ts/node_modules/.package-lock.json ]]; then
  (cd client/ts && npm ci --no-audit --no-fund)
fi
(cd client/ts && npm run --silent build)

args=(--server-bin target/release/st-peter --ghz "$(command -v ghz)" --h2load "$(command -v h2load)"
  --go-probe target/bench-probes/go-probe --ts-probe bench/probes/ts/probe.mjs --node "$(command -v node)"
  "$@")
if [[ -z "${ST_PETER_BENCH_POSTGRES_URL:-}" && -x scripts/pg.sh ]]; then
  step "benchmarks (SQLite, and PostgreSQL on a throwaway cluster)"
  scripts/pg.sh run -- bash -c \
    'ST_PETER_BENCH_POSTGRES_URL="$ST_PETER_TEST_POSTGRES_URL" ST_PETER_TOTP_KEY="$(head -c 32 /dev/urandom | base64)" target/release/st-peter-bench "$@"' \
    bench "${args[@]}"
else
  step "benchmarks"
  target/release/st-peter-bench "${args[@]}"
fi
