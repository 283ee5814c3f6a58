# Shared helpers for the scripts in this folder. Source it; do not run it.

# A Go tool built from source with the Go toolchain (no prebuilt download) into GOBIN,
# which goes on PATH: ensure_go_tool NAME MODULE/PATH@VERSION.
ensure_go_tool() {
  local name=$1 package=$2 gobin
  gobin="$(go env GOPATH)/bin"
  export PATH="$gobin:$PATH"
  if ! command -v "$name" >/dev/null 2>&1; then
    echo "installing $name with go install $package"
    go install "$package"
  fi
}

# promcheck (tools/promcheck): the Prometheus project's own metrics linter, promlint, as
# `promtool check metrics` runs it, with common/expfmt's text parser; the metrics tests
# feed it a real scrape. Built from this repository each run (quick once cached), so a
# change to it is never hidden by an older binary; promtool's own module takes far longer.
ensure_promcheck() {
  export PATH="$(go env GOPATH)/bin:$PATH"
  echo "installing promcheck with go install (tools/promcheck)"
  (cd tools/promcheck && go install .)
}

# grpcurl, for the reflection tests.
ensure_grpcurl() {
  ensure_go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
  grpcurl -version 2>&1 | head -n 1
}

# Jaeger (v2, built on the OpenTelemetry Collector), the real OTLP receiver of
# server/tests/api/traces.rs. Its go.mod has replace directives, so `go install M@V` refuses
# it: it is built as a tool of a throwaway module instead (its replaces then do not apply;
# the versions the proxy resolves build and run). About 4 min of CPU from nothing.
JAEGER_VERSION=v1.75.0
ensure_jaeger() {
  local gobin module
  gobin="$(go env GOPATH)/bin"
  export PATH="$gobin:$PATH"
  if ! command -v jaeger >/dev/null 2>&1; then
    echo "building jaeger $JAEGER_VERSION with go build (as a tool of a scratch module)"
    module="$(mktemp -d)"
    (cd "$module" && go mod init st-peter-jaeger >/dev/null 2>&1 &&
      go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" &&
      go build -o "$gobin/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger) || return 1
    rm -rf "$module"
  fi
  echo "jaeger $JAEGER_VERSION: $(command -v jaeger)"
}

# Test counts summed over every runner, printed as one closing line by `summary`.
TESTS_PASSED=0
TESTS_FAILED=0
TEST_LOG_DIR="$(mktemp -d)"

# Runs a command, showing its output, and adds the counts of its `test result:` lines.
run_cargo_tests() {
  local log="$TEST_LOG_DIR/cargo-$RANDOM.log"
  "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  local passed failed
  passed=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
  failed=$(grep -oE '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
  # A runner that failed without reporting a failed test (a build error) counts as one.
  if [[ $status -ne 0 && $failed -eq 0 ]]; then
    failed=1
  fi
  TESTS_PASSED=$((TESTS_PASSED + passed))
  TESTS_FAILED=$((TESTS_FAILED + failed))
  return "$status"
}

# Runs `go test -v ./...` in a folder, showing its output, and adds its `--- PASS` and
# `--- FAIL` lines (tests and subtests) to the counts.
run_go_tests() {
  local dir=$1 log="$TEST_LOG_DIR/go-$RANDOM.log"
  (cd "$dir" && go test -v -count=1 ./...) 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  local failed
  failed=$(grep -cE '^[[:space:]]*--- FAIL' "$log" || true)
  if [[ $status -ne 0 && $failed -eq 0 ]]; then
    failed=1 # a build error or a panic outside a test
  fi
  TESTS_PASSED=$((TESTS_PASSED + $(grep -cE '^[[:space:]]*--- PASS' "$log" || true)))
  TESTS_FAILED=$((TESTS_FAILED + failed))
  return "$status"
}

# Runs `npm ci && npm test` in a folder, showing its output, and adds node's test runner
# totals (`# pass N` / `# fail N` from the TAP reporter, `ℹ pass N` from the spec one).
run_node_tests() {
  local dir=$1 log="$TEST_LOG_DIR/node-$RANDOM.log"
  (cd "$dir" && npm ci --no-audit --no-fund && npm test) 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  local passed failed
  passed=$(grep -oE '^(# |ℹ )pass [0-9]+' "$log" | awk '{s+=$3} END {print s+0}')
  failed=$(grep -oE '^(# |ℹ )fail [0-9]+' "$log" | awk '{s+=$3} END {print s+0}')
  if [[ $status -ne 0 && $failed -eq 0 ]]; then
    failed=1 # npm ci or the TypeScript build failed
  fi
  TESTS_PASSED=$((TESTS_PASSED + passed))
  TESTS_FAILED=$((TESTS_FAILED + failed))
  return "$status"
}

# Runs pytest (arguments as given), showing its output, and adds the counts of its closing
# line (`N passed, N failed, N errors in ...s`; errors count as failures). Exit code 5 (no
# tests collected) is a failure too.
run_pytest() {
  local log="$TEST_LOG_DIR/pytest-$RANDOM.log"
  "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  local closing passed failed
  # `|| true`: a grep that finds nothing (no failures) must not end the script (pipefail).
  closing=$(grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected)|no tests ran' "$log" | tail -n 1 || true)
  passed=$( (grep -oE '[0-9]+ passed' <<<"$closing" || true) | awk '{s+=$1} END {print s+0}')
  failed=$( (grep -oE '[0-9]+ (failed|errors?)' <<<"$closing" || true) | awk '{s+=$1} END {print s+0}')
  if [[ $status -ne 0 && $failed -eq 0 ]]; then
    failed=1 # no tests ran (exit 5), or pytest itself failed
  fi
  TESTS_PASSED=$((TESTS_PASSED + passed))
  TESTS_FAILED=$((TESTS_FAILED + failed))
  return "$status"
}

# A Python venv for the Telepact adapter: maturin, pytest and telepact (a pre-release,
# pinned because its API still moves), then the adapter's wheel built from client/telepact.
TELEPACT_VENV=target/telepact-venv
TELEPACT_VERSION=1.0.0a339
ensure_telepact_venv() {
  if [[ ! -x "$TELEPACT_VENV/bin/python" ]]; then
    if ! python3 -m venv "$TELEPACT_VENV"; then
      echo "installing python3-venv with apt-get"
      apt-get update -qq && apt-get install -y -qq python3-venv python3-pip
      python3 -m venv "$TELEPACT_VENV"
    fi
  fi
  "$TELEPACT_VENV/bin/pip" install -q "maturin>=1.5,<2" "pytest>=8" "telepact==$TELEPACT_VERSION"
  # The dev profile shares compiled dependencies with cargo's debug builds; a release
  # wheel (plain `pip install ./client/telepact`) takes several times as long to build.
  PATH="$PWD/$TELEPACT_VENV/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev" \
    "$TELEPACT_VENV/bin/pip" install -q --force-reinstall --no-deps --no-build-isolation \
    ./client/telepact
}

# A Python venv with independent password hashers (bcrypt, passlib, argon2-cffi): the
# import tests (server/tests/api/import.rs) make the hashes they import with it, so the
# verifiers are checked against other implementations than the ones they use.
HASH_TOOLS_VENV=target/hash-tools-venv
ensure_hash_tools_venv() {
  if [[ ! -x "$HASH_TOOLS_VENV/bin/python" ]]; then
    if ! python3 -m venv "$HASH_TOOLS_VENV"; then
      echo "installing python3-venv with apt-get"
      apt-get update -qq && apt-get install -y -qq python3-venv python3-pip
      python3 -m venv "$HASH_TOOLS_VENV"
    fi
  fi
  "$HASH_TOOLS_VENV/bin/pip" install -q "bcrypt==5.0.0" "passlib==1.7.4" "argon2-cffi==25.1.0"
}

# Steps that failed. A failing step does not end the run: every later step still runs and
# is counted, and `summary` reports them all and sets the exit status.
FAILED_STEPS=()
CURRENT_STEP=""
step() {
  CURRENT_STEP="$*"
  printf '\n==> %s\n' "$*"
}
# Usage: COMMAND || step_failed
step_failed() {
  FAILED_STEPS+=("$CURRENT_STEP")
  printf '\n!!! step failed: %s\n' "$CURRENT_STEP"
}

summary() {
  echo
  if [[ ${#FAILED_STEPS[@]} -gt 0 ]]; then
    echo "failed steps:"
    printf '  - %s\n' "${FAILED_STEPS[@]}"
    # A step that failed outside any test runner (fmt, clippy, a check script) still fails.
    if [[ $TESTS_FAILED -eq 0 ]]; then
      TESTS_FAILED=${#FAILED_STEPS[@]}
    fi
  fi
  echo "summary: $TESTS_PASSED passed, $TESTS_FAILED failed"
  [[ ${#FAILED_STEPS[@]} -eq 0 ]]
}

# Code generators for the Go and TypeScript clients, pinned so generation is deterministic.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
GO_PLUGIN_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/st-peter/go-plugins/$PROTOC_GEN_GO_VERSION-$PROTOC_GEN_GO_GRPC_VERSION"
ensure_go_plugins() {
  if [[ ! -x "$GO_PLUGIN_BIN/protoc-gen-go" || ! -x "$GO_PLUGIN_BIN/protoc-gen-go-grpc" ]]; then
    echo "installing protoc-gen-go $PROTOC_GEN_GO_VERSION and protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION with go install"
    GOBIN="$GO_PLUGIN_BIN" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
    GOBIN="$GO_PLUGIN_BIN" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  fi
}

# buf and protoc-gen-es from client/ts's lock file (npm ci installs them when missing).
BUF=client/ts/node_modules/.bin/buf
ensure_buf() {
  if [[ ! -x "$BUF" || ! -x client/ts/node_modules/.bin/protoc-gen-es ]]; then
    (cd client/ts && npm ci --ignore-scripts --no-audit --no-fund)
  fi
}

# ghz (a grpc-go load tool), for the stock-client tests and the bench.
ensure_ghz() {
  ensure_go_tool ghz github.com/bojand/ghz/cmd/ghz@v0.120.0
}

# h2load (nghttp2's HTTP/2 load tool), from the Debian package nghttp2-client.
ensure_h2load() {
  if ! command -v h2load >/dev/null 2>&1; then
    echo "installing h2load (nghttp2-client) with apt-get"
    apt-get update -qq && apt-get install -y -qq nghttp2-client
  fi
  h2load --version 2>&1 | head -n 1
}

# Chromium (Debian's package) for the example web app's browser test, driven by
# playwright-core through its executablePath (Playwright downloads no browser).
CHROMIUM_BIN=/usr/bin/chromium
# OpenSSL's headers and pkg-config: webauthn-rs (passkeys) links the system OpenSSL through
# openssl-sys. Debian's machines here have them; a bare one gets them from apt.
ensure_openssl_dev() {
  if ! pkg-config --exists openssl 2>/dev/null; then
    echo "installing libssl-dev and pkg-config with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev pkg-config || return 1
  fi
  pkg-config --modversion openssl | sed 's/^/openssl /'
}

ensure_chromium() {
  if [[ ! -x "$CHROMIUM_BIN" ]]; then
    echo "installing chromium with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium || return 1
  fi
  "$CHROMIUM_BIN" --version 2>/dev/null | head -n 1
  [[ -x "$CHROMIUM_BIN" ]]
}
