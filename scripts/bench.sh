#!/usr/bin/env bash
# The benchmark suite: builds in release, starts the real server on a temp database, and
# prints a table of figures beside baselines from the same run (also bench/results*.json;
# a full run also writes bench/RESULTS.md).
# Stock clients (ghz, h2load) are installed when missing: ghz with `go install`, h2load from
# the Debian package nghttp2-client. The revocation rows also build the client probes:
# bench/probes/go (`go build`, on client/go through a replace) and client/ts/dist (`npm ci`
# when its node_modules is missing or stale, then `npm run build`) for bench/probes/ts.
# Usage: scripts/bench.sh [--quick] [--revocation-only]
#        scripts/bench.sh --sizing [--no-memory | --no-throughput] [--sizing-sessions N,N,..]
#   --quick: every phase 3 s, the flood 6 s, fewer revocations timed
#   --revocation-only: only rows 7 and 7b (prints the table, writes no results file)
#   --sizing: only the sizing table of the README (bench/results-sizing.json): logins and
#     VerifyToken per core (server pinned to core 1 with taskset), then peak RSS and database
#     size at 1 thousand, 1 million and 10 million live sessions on SQLite (10 million takes
#     minutes and about 3 GiB of disk in $TMPDIR). --no-memory: the throughput part alone
#     (about a minute). PostgreSQL too when ST_PETER_BENCH_POSTGRES_URL is set, e.g.
#     scripts/pg.sh run -- bash -c 'ST_PETER_BENCH_POSTGRES_URL="$ST_PETER_TEST_POSTGRES_URL" scripts/bench.sh --sizing'
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [[ " $* " == *" --sizing "* ]]; then
  step "release build"
  cargo build --release --locked -p st-peter-server -p st-peter-bench
  step "sizing"
  if [[ -n "${ST_PETER_BENCH_POSTGRES_URL:-}" && -z "${ST_PETER_TOTP_KEY:-}" ]]; then
    ST_PETER_TOTP_KEY="$(head -c 32 /dev/urandom | base64)"
    export ST_PETER_TOTP_KEY
  fi
  exec target/release/st-peter-bench --server-bin target/release/st-peter "$@"
fi

step "stock load tools (ghz, h2load)"
ensure_openssl_dev
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
