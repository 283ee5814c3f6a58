#!/usr/bin/env bash
# Regenerates the Go stubs in client/go/genpb from proto/ (committed; CI checks they are
# fresh with scripts/check-generated.sh). Installs what it needs:
# - protoc-gen-go and protoc-gen-go-grpc at pinned versions with `go install`;
# - buf (the proto compiler) from the npm package pinned in client/ts/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_go_plugins
ensure_buf

out=client/go/genpb
rm -rf "$out"
mkdir -p "$out"
"$BUF" generate proto --path proto/st_peter/auth/v1/auth.proto --template "$(cat <<YAML
version: v2
plugins:
  - local: $GO_PLUGIN_BIN/protoc-gen-go
    out: $out
    opt: module=github.com/st-peter/st-peter/client/go/genpb
  - local: $GO_PLUGIN_BIN/protoc-gen-go-grpc
    out: $out
    opt: module=github.com/st-peter/st-peter/client/go/genpb
YAML
)"
echo "generated $(find "$out" -name '*.go' | sort | tr '\n' ' ')"
