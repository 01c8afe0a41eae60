# syntax=docker/dockerfile:1
# Images of the operator and the node agent, from one build:
#   docker build --target operator -t edge-isolates/operator:0.1.0 .
#   docker build --target agent    -t edge-isolates/agent:0.1.0 .
# Both run the bundled JavaScript of `npm run build` (dist/, the Workers API shim prebuilt in
# it) through bin/edge.mjs, with production dependencies only: no TypeScript sources, no tsx,
# no esbuild. The agent's node_modules also leave out client-node, which only the operator
# and the CLI's cluster commands load (test/agent/built-agent.test.ts runs the agent so).
# isolated-vm is a native addon, compiled against the same Node major as the runtime.
# Only `edge operator` and `edge agent` run from these images (`edge dev` and `edge deploy`
# run from a checkout).

ARG NODE_MAJOR=20

# ---- build: dist/ bundled with the dev dependencies (tsc, esbuild) ----------------------
FROM node:${NODE_MAJOR}-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: compiling does not load isolated-vm, so it is not built here.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.mjs ./scripts/
COPY cli ./cli
COPY common ./common
COPY operator ./operator
COPY node-agent ./node-agent
RUN npm run build

# ---- the operator's files: production node_modules, isolated-vm compiled from source ----
FROM node:${NODE_MAJOR}-bookworm AS operator-files
WORKDIR /app
# node:*-bookworm has python3, make and g++ for node-gyp, and Node's headers under
# /usr/local/include/node (so node-gyp downloads none).
ENV npm_config_nodedir=/usr/local
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && node --no-node-snapshot -e "require('isolated-vm')" \
 && npm cache clean --force
COPY bin ./bin
COPY --from=build /app/dist ./dist
# Fail the build, not the pod, if a module does not load.
RUN node --no-node-snapshot bin/edge.mjs operator --help >/dev/null

# ---- the agent's: the same less client-node and what only it pulls in -------------------
FROM operator-files AS agent-files
RUN npm pkg delete 'dependencies.@kubernetes/client-node' \
 && npm prune --omit=dev --no-audit --no-fund \
 && npm cache clean --force \
 && ! node -e "require.resolve('@kubernetes/client-node')" 2>/dev/null \
 && node --no-node-snapshot bin/edge.mjs agent --help >/dev/null

# ---- runtime: distroless Node (glibc, no shell, no package manager), non-root ----------
FROM gcr.io/distroless/nodejs${NODE_MAJOR}-debian12:nonroot AS runtime
WORKDIR /app
ENV NODE_ENV=production
# The chart runs the pods as 10001:10001 with a read-only root filesystem and /tmp on an
# emptyDir; the same numeric user here, so runAsNonRoot holds outside the chart too.
USER 10001:10001
# --no-node-snapshot: isolated-vm cannot run inside Node's start-up snapshot (Node >= 20).
ENTRYPOINT ["/nodejs/bin/node", "--no-node-snapshot", "bin/edge.mjs"]

FROM runtime AS operator
LABEL org.opencontainers.image.title="edge-isolates operator"
# package.json: "type": "module" for dist/; no package-lock, no sources.
COPY --from=operator-files --chown=0:0 /app/package.json ./
COPY --from=operator-files --chown=0:0 /app/bin ./bin
COPY --from=operator-files --chown=0:0 /app/dist ./dist
COPY --from=operator-files --chown=0:0 /app/node_modules ./node_modules
EXPOSE 9091
CMD ["operator", "--help"]

FROM runtime AS agent
LABEL org.opencontainers.image.title="edge-isolates node agent"
COPY --from=agent-files --chown=0:0 /app/package.json ./
COPY --from=agent-files --chown=0:0 /app/bin ./bin
COPY --from=agent-files --chown=0:0 /app/dist ./dist
COPY --from=agent-files --chown=0:0 /app/node_modules ./node_modules
# taskset (util-linux; glibc only): the agent pins each isolate host to a CPU with it
# (--pin-hosts, node-agent/hosts/cpu-affinity.ts). Without it the hosts run unpinned.
COPY --from=agent-files --chown=0:0 /usr/bin/taskset /usr/bin/taskset
EXPOSE 8080 8081 9090
CMD ["agent", "--help"]
