# Shared helpers for the scripts in this folder. Source it; do not run it.

step() { printf '\n==> %s\n' "$*"; }

# grpcurl, built from source with the Go toolchain (no prebuilt download), into GOBIN.
GRPCURL_VERSION=v1.9.3
ensure_grpcurl() {
  local gobin
  gobin="$(go env GOPATH)/bin"
  export PATH="$gobin:$PATH"
  if ! command -v grpcurl >/dev/null 2>&1; then
    echo "installing grpcurl $GRPCURL_VERSION with go install"
    go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
  fi
  grpcurl -version 2>&1 | head -n 1
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
  TESTS_PASSED=$((TESTS_PASSED + passed))
  TESTS_FAILED=$((TESTS_FAILED + failed))
  return "$status"
}

summary() {
  echo
  echo "summary: $TESTS_PASSED passed, $TESTS_FAILED failed"
}
