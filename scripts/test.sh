#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first.
# Usage: scripts/test.sh        (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

step "tools"
ensure_grpcurl
# ghz (grpc-go) drives the server in server/tests/api/stock_clients.rs.
ensure_ghz

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust tests (server, proto, clients)"
run_cargo_tests cargo test --workspace --locked

# The PostgreSQL-only tests are ignored in the SQLite pass above and asked for here, where
# they fail if the cluster is missing.
step "server integration suite again, on PostgreSQL 15 (scripts/pg.sh)"
run_cargo_tests scripts/pg.sh run -- cargo test -p st-peter-server --test api --locked -- --include-ignored

step "versions agree (VERSION, Cargo.toml, npm package, Go client)"
scripts/check-version.sh

step "generated Go and TypeScript stubs are fresh"
scripts/check-generated.sh

# The Go and TypeScript tests start this binary (a fresh build, not a stale one).
cargo build -p st-peter-server --bin st-peter --locked
export ST_PETER_BIN="$PWD/target/debug/st-peter"

step "Go client (client/go)"
run_go_tests client/go

step "TypeScript client (client/ts)"
run_node_tests client/ts

step "Telepact adapter wheel and the bakery example (pytest, in $TELEPACT_VENV)"
ensure_telepact_venv
run_pytest "$TELEPACT_VENV/bin/pytest" -p no:cacheprovider examples/bakery/tests

summary
