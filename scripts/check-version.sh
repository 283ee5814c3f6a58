#!/usr/bin/env bash
# One version for the server, the wire contract and every client: VERSION equals the
# workspace version in Cargo.toml, the npm package's version and the Go client's Version.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(tr -d '[:space:]' < VERSION)
cargo=$(awk '/^\[workspace\.package\]/ {in_section=1; next}
             /^\[/ {in_section=0}
             in_section && /^version *=/ {gsub(/.*= *"|".*/, ""); print; exit}' Cargo.toml)
npm=$(node -p 'require("./client/ts/package.json").version')
npm_lock=$(node -p 'require("./client/ts/package-lock.json").version')
ts_const=$(sed -n 's/^export const VERSION = "\(.*\)";$/\1/p' client/ts/src/version.ts)
go=$(sed -n 's/^const Version = "\(.*\)"$/\1/p' client/go/version.go)

status=0
check() {
  if [[ "$2" == "$version" ]]; then
    echo "ok    $1: $2"
  else
    echo "WRONG $1: '${2}' (VERSION is $version)"
    status=1
  fi
}
check "Cargo.toml [workspace.package] version" "$cargo"
check "client/ts/package.json version" "$npm"
check "client/ts/package-lock.json version" "$npm_lock"
check "client/ts/src/version.ts VERSION" "$ts_const"
check "client/go/version.go Version" "$go"
exit "$status"
