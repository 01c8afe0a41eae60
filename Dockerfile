# syntax=docker/dockerfile:1
# Images of the operator and the node agent, from one build:
#   docker build --target operator -t edge-isolates/operator:0.1.0 .
#   docker build --target agent    -t edge-isolates/agent:0.1.0 .
# Both run the TypeScript sources through tsx (bin/edge.mjs), exactly as the tests do:
# the agent bundles its Workers API shim from node-agent/shim/ at start-up, so the sources
# ship anyway, and tsx compiles each module once per process (milliseconds). isolated-vm is a
# native addon, compiled in the build stage against the same Node major as the runtime.
# Only `edge operator` and `edge agent` run from these images (`edge dev` needs test/harness).

ARG NODE_MAJOR=20

# ---- build: production node_modules, isolated-vm compiled from source -------------------
FROM node:${NODE_MAJOR}-bookworm AS build
WORKDIR /app
# node:*-bookworm has python3, make and g++ for node-gyp, and Node's headers under
# /usr/local/include/node (so node-gyp downloads none).
ENV npm_config_nodedir=/usr/local
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && node --no-node-snapshot -e "require('isolated-vm')" \
 && npm cache clean --force
COPY bin ./bin
COPY cli ./cli
COPY common ./common
COPY operator ./operator
COPY node-agent ./node-agent
COPY tsconfig.json ./
# Fail the build, not the pod, if a module does not load.
RUN node --no-node-snapshot bin/edge.mjs operator --help >/dev/null \
 && node --no-node-snapshot bin/edge.mjs agent --help >/dev/null

# ---- runtime: distroless Node (glibc, no shell, no package manager), non-root ----------
FROM gcr.io/distroless/nodejs${NODE_MAJOR}-debian12:nonroot AS runtime
WORKDIR /app
COPY --from=build --chown=0:0 /app /app
ENV NODE_ENV=production
# The chart runs the pods as 10001:10001 with a read-only root filesystem and /tmp on an
# emptyDir; the same numeric user here, so runAsNonRoot holds outside the chart too.
USER 10001:10001
# --no-node-snapshot: isolated-vm cannot run inside Node's start-up snapshot (Node >= 20).
ENTRYPOINT ["/nodejs/bin/node", "--no-node-snapshot", "bin/edge.mjs"]

FROM runtime AS operator
LABEL org.opencontainers.image.title="edge-isolates operator"
EXPOSE 9091
CMD ["operator", "--help"]

FROM runtime AS agent
LABEL org.opencontainers.image.title="edge-isolates node agent"
EXPOSE 8080 8081 9090
CMD ["agent", "--help"]
