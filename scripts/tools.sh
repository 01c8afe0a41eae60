#!/usr/bin/env bash
# Builds the real components the tests and `edge dev` run (kube-apiserver, etcd,
# nats-server, helm) from pinned Go module versions, once, and caches them outside the
# repo in $EDGE_TOOLS_DIR (default ~/.cache/edge-isolates/bin) as <tool>-<version>.
#
#   scripts/tools.sh            build whatever is missing
#   scripts/tools.sh --check    exit 1 (and say which) when something is missing
#   scripts/tools.sh --path T   print the cached path of tool T
#
# Nothing is downloaded but Go modules through the module proxy.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../tools/versions.env
. "$repo/tools/versions.env"

cache=${EDGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-isolates/bin}
work=${EDGE_TOOLS_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-isolates/build}
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod

tools=(nats-server etcd helm kube-apiserver)

version_of() {
  case "$1" in
    kube-apiserver) echo "$KUBE_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    nats-server) echo "$NATS_SERVER_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    *) echo "unknown tool: $1" >&2; return 1 ;;
  esac
}

path_of() { echo "$cache/$1-$(version_of "$1")"; }

log() { printf '[tools] %s\n' "$*" >&2; }

# Runs a build step; on failure names the tool and shows the Go error.
step() {
  local tool=$1; shift
  local out
  if ! out=$("$@" 2>&1); then
    printf '[tools] FAILED building %s: %s\n%s\n' "$tool" "$*" "$out" >&2
    exit 1
  fi
}

build_nats_server() {
  local dst=$1 gobin
  gobin=$(mktemp -d)
  step nats-server env GOBIN="$gobin" go install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION"
  mv "$gobin/nats-server" "$dst"; rmdir "$gobin"
}

build_helm() {
  local dst=$1 gobin major
  gobin=$(mktemp -d)
  major=${HELM_VERSION%%.*}
  step helm env GOBIN="$gobin" go install \
    -ldflags "-X helm.sh/helm/$major/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
  mv "$gobin/helm" "$dst"; rmdir "$gobin"
}

build_etcd() {
  local dst=$1 dir="$work/etcd-$ETCD_VERSION"
  rm -rf "$dir"; mkdir -p "$dir"
  sed "s/@ETCD_VERSION@/$ETCD_VERSION/g" "$repo/tools/etcd/go.mod.in" > "$dir/go.mod"
  cp "$repo/tools/etcd/tools.go" "$dir/"
  (cd "$dir" && step etcd go mod tidy && step etcd go build -trimpath -o "$dst" go.etcd.io/etcd/server/v3)
}

build_kube_apiserver() {
  local dst=$1 dir="$work/kube-$KUBE_VERSION" modjson kgomod staging minor
  rm -rf "$dir"; mkdir -p "$dir"
  # The staging list changes between minors: read it from the k8s.io/kubernetes go.mod
  # that the proxy serves instead of hard-coding it.
  modjson=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION") || {
    log "FAILED building kube-apiserver: go mod download k8s.io/kubernetes@$KUBE_VERSION"; echo "$modjson" >&2; exit 1; }
  kgomod=$(printf '%s' "$modjson" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [ -f "$kgomod" ] || { log "FAILED building kube-apiserver: no go.mod in download output"; echo "$modjson" >&2; exit 1; }
  staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$kgomod" | sort -u)
  [ -n "$staging" ] || { log "FAILED building kube-apiserver: no staging replaces found in $kgomod"; exit 1; }
  minor=${KUBE_VERSION#v1.}
  local stagever="v0.$minor"
  sed "s/@KUBE_VERSION@/$KUBE_VERSION/g" "$repo/tools/kube/go.mod.in" > "$dir/go.mod"
  cp "$repo/tools/kube/tools.go" "$dir/"
  log "  pinning $(echo "$staging" | wc -l) staging modules at $stagever; checking each resolves"
  # The proxy here is a partial mirror. A staging module it does not serve gets an empty
  # placeholder module: kube-apiserver imports none of them (they are the sample-* ones),
  # and if it ever does, the build fails naming the missing package.
  local m err replaces=""
  for m in $staging; do
    if err=$(cd "$dir" && go mod download "$m@$stagever" 2>&1); then
      replaces+="	$m => $m $stagever"$'\n'
    else
      log "  $m@$stagever is not served ($(echo "$err" | head -n1)); using an empty placeholder module"
      mkdir -p "$dir/unserved/${m#k8s.io/}"
      printf 'module %s\n\ngo 1.24\n' "$m" > "$dir/unserved/${m#k8s.io/}/go.mod"
      replaces+="	$m => ./unserved/${m#k8s.io/}"$'\n'
    fi
  done
  printf '\nreplace (\n%s)\n' "$replaces" >> "$dir/go.mod"
  local mj=${minor%%.*}
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$mj -X $pkg.gitTreeState=clean"
    ld+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$dir" && step kube-apiserver go mod tidy && \
    step kube-apiserver go build -trimpath -ldflags "$ld" -o "$dst" k8s.io/kubernetes/cmd/kube-apiserver)
}

build() {
  local tool=$1 dst start
  dst=$(path_of "$tool")
  if [ -x "$dst" ]; then return 0; fi
  mkdir -p "$cache" "$work"
  start=$(date +%s)
  log "building $tool $(version_of "$tool") from Go modules (first time only; takes minutes)"
  case "$tool" in
    kube-apiserver) build_kube_apiserver "$dst.tmp" ;;
    etcd) build_etcd "$dst.tmp" ;;
    nats-server) build_nats_server "$dst.tmp" ;;
    helm) build_helm "$dst.tmp" ;;
  esac
  mv "$dst.tmp" "$dst"
  log "built $tool in $(( $(date +%s) - start ))s -> $dst"
}

case "${1:-}" in
  --check)
    missing=0
    for t in "${tools[@]}"; do [ -x "$(path_of "$t")" ] || { echo "missing: $t $(version_of "$t")"; missing=1; }; done
    exit $missing ;;
  --path)
    path_of "${2:?--path needs a tool name}" ;;
  "")
    command -v go >/dev/null || { log "go is not on PATH: the tools are built from Go modules"; exit 1; }
    for t in "${tools[@]}"; do build "$t"; done ;;
  *)
    for t in "$@"; do version_of "$t" >/dev/null; build "$t"; done ;;
esac
