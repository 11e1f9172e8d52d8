#!/usr/bin/env bash
# Fails on an import that goes against the module dependency direction of DESIGN.md §2:
#   attest <- coordinator <- cli;  attest <- initializer <- webhook <- cli;  integration may import all.
# Nothing imports integration or cli, and attest imports nothing of Kubernetes.
# Besides whole modules, a module may import exact package trees of another (allowed_packages):
# the Initializer (and so the webhook) uses the Coordinator's generated gRPC API, coordinator/api/...,
# never the rest of the coordinator module.
# Checks the transitive dependencies of every package, tests included.
# Usage: hack/check-imports.sh [MODULE...]   (default: every module)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=github.com/contrast-cc/contrast
declare -A allowed=(
  [attest]=""
  [coordinator]="attest"
  [initializer]="attest"
  [webhook]="attest initializer"
  [cli]="attest coordinator initializer webhook"
  [integration]="attest coordinator initializer webhook cli"
)
# Package trees (module/path, matching the path and everything below it) allowed in addition.
declare -A allowed_packages=(
  [initializer]="coordinator/api"
  [webhook]="coordinator/api"
)
declare -A forbidden_external=(
  [attest]="k8s.io/ sigs.k8s.io/"
)
modules=("$@")
((${#modules[@]})) || modules=("${!allowed[@]}")
status=0
for m in "${modules[@]}"; do
  [[ -v "allowed[$m]" ]] || { echo "unknown module $m"; exit 2; }
  deps=$(cd "$m" && go list -deps -test -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./... | sort -u)
  while IFS= read -r dep; do
    dep=${dep%% *}                       # "pkg [pkg.test]": the test variant of pkg
    [[ -z "$dep" || "$dep" == *.test ]] && continue   # generated test main packages
    dep=${dep%_test}                     # external test package of pkg
    if [[ "$dep" == "$prefix/"* ]]; then
      target=${dep#"$prefix/"}; target=${target%%/*}
      [[ "$target" == "$m" ]] && continue
      ok=false
      for a in ${allowed[$m]}; do [[ "$a" == "$target" ]] && ok=true; done
      pkg=${dep#"$prefix/"}
      for a in ${allowed_packages[$m]:-}; do [[ "$pkg" == "$a" || "$pkg" == "$a/"* ]] && ok=true; done
      if ! $ok; then echo "wrong-way import: module $m depends on $dep (allowed: ${allowed[$m]:-none}${allowed_packages[$m]:+; packages ${allowed_packages[$m]}/...})"; status=1; fi
    fi
    for f in ${forbidden_external[$m]:-}; do
      if [[ "$dep" == "$f"* ]]; then echo "forbidden import: module $m depends on $dep"; status=1; fi
    done
  done <<<"$deps"
done
[[ $status -eq 0 ]] && echo "module imports follow DESIGN.md §2"
exit $status
