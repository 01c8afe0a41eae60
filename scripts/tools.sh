#!/usr/bin/env bash
# Builds the real components the tests and `edge dev` run (kube-apiserver, etcd,
# nats-server, helm) from pinned Go module versions, once, and caches them outside the
# repo in $EDGE_TOOLS_DIR (default ~/.cache/edge-isolates/bin) as <tool>-<version>, each with
# a <tool>-<version>.recipe stamp: a hash of the build function below, so changing how a tool
# is built (flags, say) rebuilds it even though its version did not change.
#
#   scripts/tools.sh            build whatever is missing or built by an older recipe
#   scripts/tools.sh --check    exit 1 (and say which) when something is missing or stale
#   scripts/tools.sh --path T   print the cached path of tool T
#   scripts/tools.sh --path-dir print a folder holding `helm` (a link to the cached one),
#                               for PATH: export PATH="$(scripts/tools.sh --path-dir):$PATH"
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

# The user-facing names (`helm`), as links to the versioned binaries, in a folder of their own
# so that putting it on PATH adds nothing else.
path_dir=${EDGE_TOOLS_PATH_DIR:-$(dirname "$cache")/path}
linked=(helm)

# A hash of what builds the tool: its version and its build function's text.
recipe_of() { { version_of "$1"; declare -f "build_${1//-/_}"; } | sha256sum | cut -c1-16; }

# Binaries built before recipe stamps existed: kept as they are (and stamped) unless their
# recipe changed since. helm's did (the Kubernetes version ldflags), so an unstamped helm
# is rebuilt.
unstamped_stale=(helm)

# current TOOL: the cached binary exists and was built by today's recipe. An unstamped
# one that is still good gets its stamp here.
current() {
  local dst stamp
  dst=$(path_of "$1"); stamp="$dst.recipe"
  [ -x "$dst" ] || return 1
  if [ -f "$stamp" ]; then [ "$(cat "$stamp")" = "$(recipe_of "$1")" ]; return; fi
  local t; for t in "${unstamped_stale[@]}"; do [ "$t" = "$1" ] && return 1; done
  recipe_of "$1" > "$stamp"
}

link_names() {
  local t; mkdir -p "$path_dir"
  for t in "${linked[@]}"; do ln -sfn "$(path_of "$t")" "$path_dir/$t"; done
}

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
  local dst=$1 gobin major modjson gomod clientgo k8smajor k8sminor ld p
  gobin=$(mktemp -d)
  major=${HELM_VERSION%%.*}
  # The ldflags of Helm's Makefile for a tagged release. Without the Kubernetes version ones
  # helm assumes v1.20 wherever it has no cluster to ask (helm template, lint), and refuses a
  # chart with kubeVersion >= 1.30. The Makefile takes them from the client-go it builds
  # with (v0.37.x -> 1.37), so read that from helm's go.mod.
  modjson=$(go mod download -json "helm.sh/helm/$major@$HELM_VERSION") || {
    log "FAILED building helm: go mod download helm.sh/helm/$major@$HELM_VERSION"; echo "$modjson" >&2; exit 1; }
  gomod=$(printf '%s' "$modjson" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  clientgo=$(sed -n 's#^[[:space:]]*k8s\.io/client-go v\([0-9]*\)\.\([0-9]*\)\..*#\1 \2#p' "$gomod" | head -n1)
  [ -n "$clientgo" ] || { log "FAILED building helm: no k8s.io/client-go in $gomod"; exit 1; }
  k8smajor=$(( ${clientgo% *} + 1 )); k8sminor=${clientgo#* }
  p=helm.sh/helm/$major
  ld="-s -w -X $p/internal/version.version=$HELM_VERSION -X $p/internal/version.metadata="
  ld+=" -X $p/internal/version.gitTreeState=clean"
  ld+=" -X $p/pkg/lint/rules.k8sVersionMajor=$k8smajor -X $p/pkg/lint/rules.k8sVersionMinor=$k8sminor"
  ld+=" -X $p/pkg/chartutil.k8sVersionMajor=$k8smajor -X $p/pkg/chartutil.k8sVersionMinor=$k8sminor"
  step helm env GOBIN="$gobin" go install -ldflags "$ld" "$p/cmd/helm@$HELM_VERSION"
  mv "$gobin/helm" "$dst"; rmdir "$gobin"
  log "  helm assumes Kubernetes v$k8smajor.$k8sminor.0 when no cluster is given (from client-go v${clientgo/ /.})"
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
  if current "$tool"; then return 0; fi
  mkdir -p "$cache" "$work"
  start=$(date +%s)
  if [ -x "$dst" ]; then log "rebuilding $tool $(version_of "$tool"): its build recipe changed (takes minutes)"
  else log "building $tool $(version_of "$tool") from Go modules (first time only; takes minutes)"; fi
  # go build says nothing until it is done: a line every 30 s says it is still going.
  ( while sleep 30; do log "  still building $tool ($(( $(date +%s) - start ))s)"; done ) &
  ticker=$!
  trap 'kill "$ticker" 2>/dev/null' EXIT
  case "$tool" in
    kube-apiserver) build_kube_apiserver "$dst.tmp" ;;
    etcd) build_etcd "$dst.tmp" ;;
    nats-server) build_nats_server "$dst.tmp" ;;
    helm) build_helm "$dst.tmp" ;;
  esac
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true; trap - EXIT
  mv "$dst.tmp" "$dst"
  recipe_of "$tool" > "$dst.recipe"
  log "built $tool in $(( $(date +%s) - start ))s -> $dst"
}

case "${1:-}" in
  --check)
    missing=0
    for t in "${tools[@]}"; do
      if [ ! -x "$(path_of "$t")" ]; then echo "missing: $t $(version_of "$t")"; missing=1
      elif ! current "$t"; then echo "stale (built by an older recipe): $t $(version_of "$t")"; missing=1; fi
    done
    exit $missing ;;
  --path)
    path_of "${2:?--path needs a tool name}" ;;
  --path-dir)
    for t in "${linked[@]}"; do build "$t"; done
    link_names; echo "$path_dir" ;;
  "")
    command -v go >/dev/null || { log "go is not on PATH: the tools are built from Go modules"; exit 1; }
    for t in "${tools[@]}"; do build "$t"; done
    link_names ;;
  *)
    for t in "$@"; do version_of "$t" >/dev/null; build "$t"; done
    link_names ;;
esac
