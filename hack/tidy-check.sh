#!/usr/bin/env bash
# Fails when a module's go.mod or go.sum is not what `go mod tidy` would write.
# Modules are checked on their own (GOWORK=off), as a consumer of the module would build them.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for m in "$@"; do
  if ! out=$(cd "$m" && GOWORK=off GOFLAGS=-mod=mod go mod tidy -diff 2>&1); then
    echo "$m: go.mod/go.sum are not tidy (run 'make tidy'):"; echo "$out"; status=1
  fi
done
[[ $status -eq 0 ]] && echo "all modules tidy"
exit $status
