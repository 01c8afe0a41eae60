#!/usr/bin/env bash
# End to end on a real multi-region cluster, for users (no kind or Docker engine runs on the
# project's own machines; CI uses the envtest control plane instead):
#
#   1. creates the kind cluster of kind-config.yaml (three regions, isolate and GPU pools),
#   2. builds the operator and agent images (Dockerfile) and loads them into the nodes,
#   3. installs the Helm chart with agents in the three regions and NATS from the official
#      NATS chart (`helm dependency build` packages the vendored charts/nats),
#   4. applies examples/ and checks the answers through each region's Service.
#
# Needs docker, kind, kubectl, helm (>= 3.14) and curl, and network access for the base
# images. Usage:
#
#   scripts/kind-e2e.sh                 # everything, cluster kept for poking around
#   CLEANUP=1 scripts/kind-e2e.sh       # delete the cluster at the end
#   SKIP_BUILD=1 scripts/kind-e2e.sh    # reuse images already loaded
#
# Environment: CLUSTER (default: the name in kind-config.yaml, "edge"), TAG (image tag,
# default: the chart's appVersion), NAMESPACE (default edge-system).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER=${CLUSTER:-edge}
NAMESPACE=${NAMESPACE:-edge-system}
RELEASE=edge-isolates
CHART=charts/edge-isolates
TAG=${TAG:-$(awk -F'"' '/^appVersion:/ {print $2}' "$CHART/Chart.yaml")}
REGIONS=(eu-west us-east ap-south)

say() { printf '\033[1m[kind-e2e]\033[0m %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

for tool in docker kind kubectl helm curl; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done

pids=()
tmp=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
  if [ "${CLEANUP:-0}" = 1 ]; then kind delete cluster --name "$CLUSTER" || true; fi
}
trap cleanup EXIT

# 1. The cluster.
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "kind cluster $CLUSTER exists; reusing it"
else
  say "creating kind cluster $CLUSTER from kind-config.yaml"
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 180s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

# 2. Images.
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  for target in operator agent; do
    say "building edge-isolates/$target:$TAG"
    docker build --target "$target" -t "edge-isolates/$target:$TAG" .
    kind load docker-image --name "$CLUSTER" "edge-isolates/$target:$TAG"
  done
fi

# 3. The chart: three regions, NATS with JetStream from the official chart.
say "helm dependency build (packages the vendored NATS chart)"
helm dependency build "$CHART"
cat > "$tmp/values.yaml" <<EOF
regions:
$(for r in "${REGIONS[@]}"; do echo "  - name: $r"; done)
image:
  tag: "$TAG"
  pullPolicy: Never
agent:
  resources:
    requests: { cpu: 100m, memory: 256Mi }
    limits: { memory: 2Gi }
nats:
  enabled: true
  config:
    jetstream:
      enabled: true
      fileStore:
        pvc:
          size: 1Gi
EOF
say "installing the chart into $NAMESPACE"
helm upgrade --install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --create-namespace \
  -f "$tmp/values.yaml" --wait --timeout 10m
kubectl -n "$NAMESPACE" get pods -o wide

for r in "${REGIONS[@]}"; do
  kubectl -n "$NAMESPACE" rollout status "daemonset/$RELEASE-agent-$r" --timeout 300s
done
kubectl -n "$NAMESPACE" rollout status "deployment/$RELEASE-operator" --timeout 300s

# 4. The examples, and an answer from every region.
say "applying examples/"
kubectl apply -f examples/
kubectl wait --for=condition=Ready ew/hello --timeout 180s

port=18080
run=$(date +%s)
for r in "${REGIONS[@]}"; do
  port=$((port + 1))
  kubectl -n "$NAMESPACE" port-forward "svc/$RELEASE-agent-$r" "$port:80" >"$tmp/pf-$r.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
  body=$(curl -sS --max-time 10 -H 'Host: hello.localhost' "http://127.0.0.1:$port/from-$r") \
    || die "no answer from $r (port-forward log: $(cat "$tmp/pf-$r.log"))"
  [ "$body" = "Hello from /from-$r" ] || die "$r answered \"$body\", expected \"Hello from /from-$r\""
  say "$r: $body"

  # counter is placed in eu-west and us-east only (examples/counter.yaml); its actors live
  # in eu-west, so us-east forwards. A fresh actor name per run: the count starts at 1.
  code=$(curl -s -o "$tmp/counter-$r" -w '%{http_code}' --max-time 10 -H 'Host: counter.localhost' "http://127.0.0.1:$port/e2e-$run-$r")
  case "$r" in
    eu-west|us-east)
      [ "$code" = 200 ] || die "counter in $r answered $code: $(cat "$tmp/counter-$r")"
      second=$(curl -sS --max-time 10 -H 'Host: counter.localhost' "http://127.0.0.1:$port/e2e-$run-$r")
      case "$second" in *'"value":2'*) ;; *) die "counter in $r did not count: $(cat "$tmp/counter-$r") then $second" ;; esac
      say "$r: counter $second" ;;
    *)
      [ "$code" = 404 ] || die "counter is not placed in $r but it answered $code"
      say "$r: counter not placed here (404), as its placement says" ;;
  esac
done

kubectl get ew,da -A
say "passed: every region answered through its own Service"
