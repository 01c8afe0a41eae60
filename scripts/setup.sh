#!/usr/bin/env bash
# One-time set-up a fresh machine needs before `make test` or `make dev`: npm packages
# (isolated-vm compiles from source) and the real control-plane binaries (built from Go
# modules into ~/.cache/edge-isolates/bin). Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

command -v node >/dev/null || { say "node is not on PATH (Node >= 20 is needed)"; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { say "Node >= 20 is needed, this is $(node --version)"; exit 1; }
command -v kubectl >/dev/null || { say "kubectl is not on PATH: the tests and 'edge dev' use it"; exit 1; }
command -v openssl >/dev/null || { say "openssl is not on PATH: the test control plane makes its certificates with it"; exit 1; }

# isolated-vm has no prebuilt binary reachable here, so node-gyp compiles it and needs
# Node's headers. Use the ones installed beside this node when they match its version,
# instead of letting node-gyp try to download them.
node_prefix=$(dirname "$(dirname "$(command -v node)")")
hdr="$node_prefix/include/node/node_version.h"
if [ -z "${npm_config_nodedir:-}" ] && [ -f "$hdr" ]; then
  hv=$(awk '/define NODE_(MAJOR|MINOR|PATCH)_VERSION/ {printf "%s.", $3}' "$hdr"); hv=${hv%.}
  if [ "v$hv" = "$(node --version)" ]; then export npm_config_nodedir="$node_prefix"; fi
fi

stamp=node_modules/.edge-setup-stamp
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  say "step 1/2: npm packages. The first time this takes about 4 minutes on 2 cores, nearly all"
  say "  of it compiling isolated-vm from C++ (no prebuilt binary is reachable); later runs skip it."
  # --foreground-scripts: the install scripts' output (node-gyp's) comes through, for
  # npm-progress.mjs to turn into a line per compiled file; the whole of it goes to a log.
  npmlog=$(mktemp "${TMPDIR:-/tmp}/edge-setup-npm.XXXXXX.log")
  if ! npm ci --no-audit --no-fund --foreground-scripts 2>&1 | node scripts/npm-progress.mjs "$npmlog"; then
    say "npm ci failed; the last lines of its output (all of it: $npmlog):"
    tail -n 30 "$npmlog" >&2
    exit 1
  fi
  node --no-node-snapshot -e "require('isolated-vm')" || { say "isolated-vm did not build; its build output: $npmlog"; exit 1; }
  rm -f "$npmlog"
  touch "$stamp"
else
  say "step 1/2: npm packages: installed"
fi

if bash scripts/tools.sh --check >/dev/null; then say "step 2/2: kube-apiserver, etcd, nats-server, helm: built"
else say "step 2/2: kube-apiserver, etcd, nats-server, helm from Go modules (the first time: minutes each, kube-apiserver longest)"; fi
bash scripts/tools.sh
