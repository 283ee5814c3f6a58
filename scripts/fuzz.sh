#!/usr/bin/env bash
# Fuzzes the token parser and request validation with cargo-fuzz (libFuzzer).
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60; test.sh runs a short smoke)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
seconds="${1:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# libFuzzer's instrumentation needs nightly flags: use the nightly toolchain where rustup
# has one, else let stable accept them (RUSTC_BOOTSTRAP) without a sanitizer.
if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
  sanitizer=address
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
  sanitizer=none
fi

cd fuzz
for target in token_parser request_validation; do
  step "fuzz $target for ${seconds}s (sanitizer: $sanitizer)"
  mkdir -p "corpus/$target"
  "${fuzz[@]}" run --sanitizer "$sanitizer" "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=4096 2>&1 | tail -n 4
done
