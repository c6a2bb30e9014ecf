#!/usr/bin/env bash
# Builds the genuine Kubernetes-side test binaries (test tooling; the product stays Rust) from the Go tool
# modules under tools/ into "$NOVANET_CACHE/k8s/<key>/bin", where <key> spells the pinned versions. A binary
# already there is not rebuilt, so CI and later runs reuse it; the Go build and module caches live in
# "$NOVANET_CACHE/go" so a cold key still reuses compiled packages. Nothing is ever written to the clone.
#
# Usage: tools/build.sh [name...]          build the named binaries (default: all of them)
#        tools/build.sh --print-bin-dir    print the bin directory for the current pins and exit
#        tools/build.sh --list             print the names it knows
#
# Names: kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl e2e.test agnhost
#        etcd helm cnitool coredns registry
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../scripts/env.sh"

all_names=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm kubelet kube-proxy
           cnitool agnhost coredns registry e2e.test)

# The version a tool module pins for a module path (its `require` line).
pinned() { # <tool dir> <module path>
  awk -v m="$2" '!v && ($1 == m || ($1 == "require" && $2 == m)) { v = ($1 == "require") ? $3 : $2 } END { print v }' \
    "$here/$1/go.mod"
}

command -v go >/dev/null || { echo "tools/build.sh: Go (1.24 or newer) is needed on PATH" >&2; exit 1; }
k8s_ver=$(pinned k8s k8s.io/kubernetes)                     # v1.34.4
etcd_ver=$(pinned etcd go.etcd.io/etcd/server/v3)           # v3.6.6
helm_ver=$(pinned helm helm.sh/helm/v3)                     # v3.19.0
helm_k8s_ver=$(pinned helm k8s.io/client-go)                # v0.34.0: Helm's default capabilities
cni_ver=$(pinned cnitool github.com/containernetworking/cni) # v1.3.1
coredns_ver=$(pinned coredns github.com/coredns/coredns)    # v1.12.4
registry_ver=$(pinned registry github.com/distribution/distribution/v3) # v3.0.0
go_ver=$(go env GOVERSION)
# Any change to a go.mod/go.sum (an indirect bump, a replace) must not reuse old binaries: add a short hash.
sum=$(cat "$here"/*/go.mod "$here"/*/go.sum | sha256sum | cut -c1-8)
key="${k8s_ver}-etcd${etcd_ver#v}-helm${helm_ver#v}-cni${cni_ver#v}-coredns${coredns_ver#v}-registry${registry_ver#v}-${go_ver}-${sum}"
bin_dir="$NOVANET_CACHE/k8s/$key/bin"

case "${1:-}" in
  --print-bin-dir) echo "$bin_dir"; exit 0 ;;
  --list) printf '%s\n' "${all_names[@]}"; exit 0 ;;
  -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
esac
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${all_names[@]}")

export GOCACHE="$NOVANET_CACHE/go/build" GOMODCACHE="$NOVANET_CACHE/go/mod"
export GOFLAGS="-trimpath -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$bin_dir" "$GOCACHE" "$GOMODCACHE"

k8s_minor=$(echo "$k8s_ver" | cut -d. -f2)
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
helm_minor=$(echo "$helm_k8s_ver" | cut -d. -f2)
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_ver -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_minor"
done

# build <name> <tool dir> <ldflags> <go subcommand...>: builds into a temporary name, renamed when complete,
# so an interrupted build never leaves a binary that a later run would take as done.
build() {
  local name=$1 dir=$2 ldflags=$3; shift 3
  local out="$bin_dir/$name"
  if [ -x "$out" ]; then
    echo "tools/build.sh: $name: already built"
    return
  fi
  local start=$SECONDS
  echo "tools/build.sh: $name: building" >&2
  (cd "$here/$dir" && go "$@" -ldflags "$ldflags" -o "$out.partial" "${pkg_of[$name]}")
  mv -f "$out.partial" "$out"
  echo "tools/build.sh: $name: built in $((SECONDS - start)) s"
}

declare -A pkg_of=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubelet]=k8s.io/kubernetes/cmd/kubelet
  [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [agnhost]=k8s.io/kubernetes/test/images/agnhost
  [e2e.test]=k8s.io/kubernetes/test/e2e
  [etcd]=go.etcd.io/etcd/server/v3
  [helm]=helm.sh/helm/v3/cmd/helm
  [cnitool]=github.com/containernetworking/cni/cnitool
  [coredns]=github.com/coredns/coredns
  [registry]=github.com/distribution/distribution/v3/cmd/registry
)

echo "tools/build.sh: bin dir $bin_dir" >&2
for name in "${names[@]}"; do
  case "$name" in
    e2e.test) build "$name" k8s "$k8s_ldflags" test -c ;;
    kube-*|kubelet|kubectl|agnhost) build "$name" k8s "$k8s_ldflags" build ;;
    etcd) build "$name" etcd "-s -w" build ;;
    helm) build "$name" helm "$helm_ldflags" build ;;
    cnitool) build "$name" cnitool "-s -w" build ;;
    coredns) build "$name" coredns "-s -w" build ;;
    registry) build "$name" registry \
      "-s -w -X github.com/distribution/distribution/v3/version.version=$registry_ver" build ;;
    *) echo "tools/build.sh: unknown binary '$name' (known: ${all_names[*]})" >&2; exit 2 ;;
  esac
done
