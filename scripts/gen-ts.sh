#!/usr/bin/env bash
# Regenerates the TypeScript stubs in client/ts/src/genpb from proto/ (committed; CI checks
# they are fresh with scripts/check-generated.sh). buf and protoc-gen-es come from the npm
# packages pinned in client/ts/package-lock.json (installed with `npm ci` when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_buf

out=client/ts/src/genpb
rm -rf "$out"
mkdir -p "$out"
"$BUF" generate proto --path proto/st_peter/auth/v1/auth.proto --template "$(cat <<YAML
version: v2
plugins:
  - local: client/ts/node_modules/.bin/protoc-gen-es
    out: $out
    opt:
      - target=ts
      - import_extension=js
YAML
)"
echo "generated $(find "$out" -name '*.ts' | sort | tr '\n' ' ')"
