#!/usr/bin/env bash
# Regenerates the Go and TypeScript stubs and fails when they differ from what is
# committed (changed, deleted or new files), so the committed stubs always match proto/.
set -euo pipefail
cd "$(dirname "$0")/.."

dirs=(client/go/genpb client/ts/src/genpb)
scripts/gen-go.sh
scripts/gen-ts.sh

status=0
if ! git diff --exit-code --stat -- "${dirs[@]}"; then
  status=1
fi
untracked=$(git ls-files --others --exclude-standard -- "${dirs[@]}")
if [[ -n "$untracked" ]]; then
  echo "generated files not committed:"
  echo "$untracked"
  status=1
fi
if [[ $status -ne 0 ]]; then
  echo "generated code is stale: run scripts/gen-go.sh and scripts/gen-ts.sh and commit the result" >&2
else
  echo "generated code is fresh"
fi
exit "$status"
