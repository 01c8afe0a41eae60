import type { NatsConnection } from 'nats';
import { AgentView } from '../common/agent-view.js';
import { parseEgressRule } from '../common/egress.js';
import { isCordonShare } from '../common/isolate-hosts.js';
import { agentKey, workerRef } from '../common/keys.js';
import { BUNDLES_BUCKET, readObjectDirect, type EdgeBuckets } from '../common/nats.js';
import { natsClientOptions } from '../common/nats-auth.js';
import { bindBuckets } from '../common/nats-provision.js';
import { connectNatsWaiting, Startup, untilNats } from '../common/nats-startup.js';
import { SecretSealer } from '../common/sealing.js';
import { startAdminServer } from './admin-server.js';
import { ActorRuntime } from './actors/runtime.js';
import type { HibernationStats } from './actors/hibernation.js';
import { registerHibernationMetrics } from './actors/hibernation-metrics.js';
import { hostBindings } from './bindings/host-bindings.js';
import type { LoaderRouter } from './bindings/worker-loader.js';
import type { ServiceRouter } from './bindings/service-binding.js';
import { ConsoleStream } from './control/console-stream.js';
import { DirectorySource } from './control/desired-state.js';
import { NatsSource } from './control/nats-source.js';
import { AgentPresence } from './control/presence.js';
import { aiUrlFromTemplate } from './control/worker-env.js';
import { MIN_PEER_TOKEN_LENGTH, PeerTokenError, startPeerServer, type PeerServer } from './peer/peer-server.js';
import { SharedSource, servesShare } from './hosts/assignment.js';
import type { DesiredStateSource } from './serving/desired.js';
import { WorkerServer, DEFAULT_MAX_ISOLATES_PER_WORKER } from './serving/worker-server.js';
import { DEFAULT_SHARD_POLICY, regionLoads, Shards } from './serving/shard.js';
import { DEFAULT_DRAIN_DELAY_MS, DEFAULT_DRAIN_TIMEOUT_MS, DrainClock, sleep, startOrUndo, within, type AgentConfig, type RunningAgent } from './agent-config.js';

// The composition root of an agent whose isolates run in this process (and of each isolate
// host, which is one): the one place that builds every component, wires them together and
// owns the order of start, drain and stop. `edge agent` only parses flags into an
// AgentConfig; with isolate hosts it starts an AgentFront (front.ts) instead.

export { DEFAULT_DRAIN_DELAY_MS, DEFAULT_DRAIN_TIMEOUT_MS, type AgentConfig, type HostPort, type IsolateHostConfig, type RunningAgent } from './agent-config.js';

/**
 * EDGE_TEST_CRASH_TOKEN=<token> (tests only; unset in every shipped configuration): a worker
 * that logs `edge-test-crash <token>` aborts the process running its isolates, as a V8 fatal
 * error does, so test/security/isolate-hosts.test.ts can show what such a crash takes down
 * without depending on a live V8 bug.
 */
const CRASH_TOKEN = process.env.EDGE_TEST_CRASH_TOKEN;

/** A draining agent waits this long without a forwarded call before it lets go of its peer port. */
const PEER_QUIET_MS = 250;
/** ... but never longer than this (other agents drop a draining agent from their rings at once). */
const PEER_QUIET_MAX_MS = 3_000;
/** How long a drain waits for its own presence change to come back through the KV watch. */
const DRAIN_SEEN_MAX_MS = 2_000;

interface NatsParts {
  nc: NatsConnection;
  buckets: EdgeBuckets;
  region: string;
  node: string;
  view: AgentView;
  runtime: ActorRuntime;
  consoleStream: ConsoleStream;
  peer: PeerServer;
  presence: AgentPresence;
}

export class Agent implements RunningAgent {
  private stopping: Promise<void> | undefined;
  private readonly clock: DrainClock;

  private constructor(
    private readonly cfg: AgentConfig,
    readonly server: WorkerServer,
    readonly port: number,
    readonly adminPort: number | undefined,
    private readonly admin: { close(): void } | undefined,
    private readonly nats: NatsParts | undefined,
    private readonly shared: SharedSource | undefined,
  ) {
    this.clock = new DrainClock(cfg.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS);
  }

  /**
   * An isolate host's cordoned namespaces, from its front (hosts/cordon.ts): the cordon host
   * serves them; their home host keeps their workers loaded (their actors run there) but no
   * isolates warm.
   */
  setCordoned(namespaces: readonly string[]): void {
    const share = this.cfg.isolateHost;
    if (share && isCordonShare(share)) this.shared?.setCordoned(namespaces);
    else this.server.setDormant(new Set(namespaces));
  }

  /**
   * Start order: the admin port (its /readyz says what start-up waits for), NATS (waited
   * for, never an exit) and the desired-state source, the worker server's isolates, the
   * console stream, the actor runtime and its peer port, the HTTP front (once the initial
   * desired state is loaded), and last the presence that tells the region this agent serves.
   */
  static start(cfg: AgentConfig): Promise<Agent> {
    return startOrUndo((undo) => Agent.startSteps(cfg, undo));
  }

  private static async startSteps(cfg: AgentConfig, undo: (() => unknown)[]): Promise<Agent> {
    const { log } = cfg;
    let nc: NatsConnection | undefined;
    let buckets: EdgeBuckets | undefined;
    let source: DesiredStateSource;
    const aiUrl = aiUrlFromTemplate(cfg.aiUrlTemplate);
    // Checked before anything starts: without a token any worker or pod that reaches the
    // peer port could run calls on any tenant's actors.
    if (cfg.source.kind === 'nats' && (!cfg.peerToken || cfg.peerToken.length < MIN_PEER_TOKEN_LENGTH)) {
      throw new PeerTokenError(`agent ${cfg.agentName}: NATS mode needs a peer token of at least ${MIN_PEER_TOKEN_LENGTH} characters ($EDGE_PEER_TOKEN, the same on every agent of region ${cfg.source.region})`);
    }
    for (const rule of cfg.egressAllow ?? []) parseEgressRule(rule);
    const egressAllow = cfg.egressAllow ?? [];
    // The admin port comes first, so /readyz says what start-up waits for (NATS) meanwhile.
    const startup = new Startup();
    const built: { server?: WorkerServer; runtime?: ActorRuntime } = {};
    const admin = cfg.admin ? await startAdminServer(() => built.server, cfg.admin.port, cfg.admin.host, {
      extra: () => ({ actors: built.runtime?.host.keys() ?? [] }),
      extraSummary: () => ({ actors: built.runtime?.host.keys().length ?? 0 }),
      startup,
      ...(cfg.adminToken ? { token: cfg.adminToken } : {}),
    }) : undefined;
    if (admin) undo.push(() => admin.server.close());
    const waiting = { log, startup };
    if (cfg.source.kind === 'directory') {
      source = new DirectorySource(cfg.source.dir, log, { aiUrl, ...(cfg.source.region ? { region: cfg.source.region } : {}) });
    } else {
      // NATS away at start (or going away during it) is waited for, never an exit.
      const conn = await connectNatsWaiting(cfg.source.url, `edge-agent ${cfg.source.region}/${cfg.source.node}${share0(cfg)}`, natsClientOptions({ role: 'agent', ...cfg.source.auth }), waiting);
      nc = conn;
      undo.push(() => conn.close());
      // An agent may not create streams: it waits for the operator to.
      buckets = await untilNats('binding the NATS buckets', () => bindBuckets(conn, log, { onWait: (why) => startup.wait(why) }), waiting);
      const sealer = cfg.source.sealer ?? (cfg.source.sealingKeyFile ? SecretSealer.fromFile(cfg.source.sealingKeyFile) : undefined);
      const jsm = await conn.jetstreamManager();
      source = new NatsSource({
        buckets, region: cfg.source.region, log, aiUrl, ...(sealer ? { sealer } : {}),
        readBundle: (digest) => readObjectDirect(jsm, BUNDLES_BUCKET, digest),
      });
    }
    // An isolate host serves only its share of the agent's tenants.
    const share = cfg.isolateHost;
    const shared = share ? new SharedSource(source, share) : undefined;
    if (shared) source = shared;
    // Workers' env.<actor binding> calls reach the actor runtime, built below (NATS mode
    // only: the runtime needs the ring and the fenced log). In directory mode the bindings
    // are still there and their calls fail naming the binding.
    let runtime: ActorRuntime | undefined;
    // Service bindings reach the workers this process serves (their namespace's share).
    const serviceRouter: ServiceRouter = {
      call: (target, req, depth) => server.serviceCall(workerRef(target.namespace, target.worker), req, depth, target.entrypoint),
    };
    // Worker Loader bindings run their dynamic workers in this process, beside the caller.
    const loaderRouter: LoaderRouter = {
      warm: (parent, digest, binding, id) => server.dynamic.warm(parent, digest, binding, id),
      touch: (w) => server.dynamic.touch(w),
      load: (l) => server.dynamic.load(l),
      call: (w, req, depth, entrypoint) => server.dynamic.call(w, req, depth, entrypoint),
      release: (w) => server.dynamic.release(w),
    };
    // Told when an actor activates or goes, so the region's reports follow at once.
    let presence: AgentPresence | undefined;
    const server = new WorkerServer({
      source,
      log,
      bindings: (ctx) => hostBindings({ egressAllow, serviceRouter, loaderRouter, ...(cfg.resolve ? { resolve: cfg.resolve } : {}), ...(runtime ? { actorRouter: runtime.isolateRouter } : {}) })(ctx),
      metricLabels: cfg.source.kind === 'nats' ? { region: cfg.source.region, node: cfg.source.node } : undefined,
      maxBodyBytes: cfg.maxBodyBytes,
      maxWebSocketMessageBytes: cfg.maxWebSocketMessageBytes,
      poolSize: cfg.poolSize,
      ...(cfg.dynamicCache ? { dynamicCache: cfg.dynamicCache } : {}),
      maxIsolatesPerWorker: cfg.maxIsolatesPerWorker ?? DEFAULT_MAX_ISOLATES_PER_WORKER,
      ...(cfg.idleIsolateMs !== undefined ? { idleIsolateMs: cfg.idleIsolateMs } : {}),
      // An isolate host believes the client address its front (its only peer, on a Unix socket) set.
      trustedProxies: share ? [...(cfg.trustedProxies ?? []), 'unix'] : cfg.trustedProxies,
      ...(cfg.source.region !== undefined ? { colo: cfg.source.region } : {}),
      ...(cfg.devErrorPages ? { devErrorPages: true } : {}),
    });
    // Its pool holds warm isolates from here on (stop is safe before start).
    undo.push(() => server.stop());
    built.server = server;
    if (CRASH_TOKEN) {
      server.consoleListeners.add((_worker, _level, message) => {
        if (message === `edge-test-crash ${CRASH_TOKEN}`) process.abort();
      });
    }

    let nats: Omit<NatsParts, 'presence'> | undefined;
    if (nc && buckets && cfg.source.kind === 'nats') {
      const { region, node } = cfg.source;
      const consoleStream = new ConsoleStream({ nc, region, node, log });
      await consoleStream.start();
      undo.push(() => consoleStream.stop());
      server.consoleListeners.add(consoleStream.listener);
      server.requestListeners.add(consoleStream.requestListener);
      server.exceptionListeners.add(consoleStream.exceptionListener);
      // Actors: the ring of this region, the durable log, and the peer port other agents forward to.
      // Given the connection and its own key, the view judges no agent while it cannot hear
      // (NATS down, its watch broken): a NATS outage no longer empties the ring.
      const view = new AgentView(buckets, log, { reports: false, connection: nc, self: agentKey(region, cfg.agentName) });
      startup.wait('waiting for NATS: following agent presence');
      await view.start();
      undo.push(() => view.stop());
      runtime = new ActorRuntime({
        agent: cfg.agentName, region, nc, buckets, view, log,
        pool: server.pool, hooks: server.hooks, sockets: server.sockets, peerToken: cfg.peerToken, egressAllow, serviceRouter, loaderRouter,
        workerDefinition: (key) => server.workerDefinition(key),
        logReplicas: cfg.actorLogReplicas,
        ...(cfg.sqlSnapshotEntries ? { sql: { snapshotLogEntries: cfg.sqlSnapshotEntries } } : {}),
        onActiveChange: () => { void presence?.report(); },
        ...(share ? { serves: servesShare(share) } : {}),
        startup,
      });
      built.runtime = runtime;
      const rt = runtime;
      registerHibernationMetrics(server.metrics.registry, () => rt.hibernation?.stats());
      server.versionListeners.add((key) => rt.workerChanged(key));
      await runtime.start();
      undo.push(() => rt.stop());
      // The cordon host runs namespaces moved off their home host: it serves what reaches it.
      const sc = cfg.shards ?? {};
      if (sc.enabled !== false && !(share && isCordonShare(share))) {
        const shards = new Shards({
          ring: rt.ring, region, self: cfg.agentName, loads: () => regionLoads(view.agents(region)),
          pendingSelf: () => !view.agents(region).some((p) => p.agent === cfg.agentName),
          ...(sc.targetConcurrency !== undefined ? { targetConcurrency: sc.targetConcurrency } : {}),
        });
        server.enableShards(shards, cfg.peerToken!, { min: sc.min ?? DEFAULT_SHARD_POLICY.min, max: sc.max ?? DEFAULT_SHARD_POLICY.max }, sc.connectTimeoutMs);
      }
      // Requests other hosts forward here as a shard member are taken whatever this host's own setting.
      const peer = await startPeerServer(runtime.router, log, cfg.peerListen.port, cfg.peerListen.host, cfg.peerToken!, {
        request: (req, res, expectContinue) => server.front.serveForwarded(req, res, expectContinue),
        upgrade: (req, socket, head) => server.front.serveForwardedUpgrade(req, socket, head),
      });
      undo.push(() => peer.close());
      nats = { nc, buckets, region, node, view, runtime, consoleStream, peer };
    }

    startup.done();
    const listen = cfg.listen;
    const port = 'path' in listen ? await server.start({ path: listen.path }) : await server.start(listen.port, listen.host);

    let parts: NatsParts | undefined;
    if (nats) {
      const rt = nats.runtime;
      const peerUrl = cfg.peerAdvertise ?? `http://${cfg.peerListen.host === '0.0.0.0' ? '127.0.0.1' : cfg.peerListen.host}:${nats.peer.port}`;
      presence = new AgentPresence({
        nc: nats.nc, buckets: nats.buckets, log,
        agent: cfg.agentName, node: nats.node, region: nats.region,
        address: cfg.advertise ?? ('path' in listen ? 'http://localhost/' : `http://${listen.host}:${port}`),
        peerAddress: peerUrl,
        ttlMs: cfg.presenceTtlMs,
        status: () => server.status(),
        statusVersion: () => server.statusVersion,
        actors: () => rt.host.counts(),
        shardLoad: () => server.meter.published(),
        ...(share ? { isolateHost: share } : {}),
      });
      parts = { ...nats, presence };
      const p = presence;
      undo.push(() => p.stop());
      await presence.start();
    }
    const agent = new Agent(cfg, server, port, admin?.port, admin?.server, parts, shared);
    log.info(share ? 'isolate host serving' : 'agent listening', {
      http: 'path' in listen ? listen.path : `http://${listen.host}:${port}`, ...(cfg.admin && admin ? { admin: `http://${cfg.admin.host}:${admin.port}` } : {}),
      workers: cfg.source.kind === 'directory' ? cfg.source.dir : cfg.source.url,
    });
    return agent;
  }

  /** The actors active here (instance keys). */
  actors(): string[] {
    return this.nats?.runtime.host.keys() ?? [];
  }

  /** The hibernatable WebSockets this agent holds for its actors (undefined without actors). */
  hibernation(): HibernationStats | undefined {
    return this.nats?.runtime.hibernation.stats();
  }

  /**
   * SIGTERM. Readiness first: /readyz says 503 at once, and for drainDelayMs everything is
   * served as before (load balancers take that long to stop sending). Then the region
   * learns (presence marked draining; the drain waits until that change has come back
   * through the KV watch every ring follows), in-flight actor calls finish and every actor
   * is released, and calls other agents routed here meanwhile are answered (421: go
   * elsewhere) until the peer port has been quiet. What follows the delay is bounded by
   * drainTimeoutMs, together with stop(): past it the drain goes on to stop.
   */
  async drain(): Promise<void> {
    const { log } = this.cfg;
    this.server.drain();
    const delay = this.cfg.drainDelayMs ?? DEFAULT_DRAIN_DELAY_MS;
    log.info('draining: not ready; serving until load balancers stopped sending', { delayMs: delay });
    await sleep(delay);
    this.clock.start();
    const n = this.nats;
    if (!n) return;
    const handedOver = await within((async () => {
      await n.presence.drain();
      await waitFor(() => n.view.agents(n.region).find((a) => a.agent === this.cfg.agentName)?.draining !== false, DRAIN_SEEN_MAX_MS);
      const moved = await n.runtime.drain();
      log.info('actors handed over', { actors: moved });
      await n.peer.quiet(PEER_QUIET_MS, PEER_QUIET_MAX_MS);
      return true;
    })(), this.clock.left());
    if (!handedOver) log.warn('drain bound reached before every actor was handed over; stopping (the next owners claim the rest)', { actors: n.runtime.host.keys().length });
  }

  /**
   * Stops in reverse start order; idempotent. The HTTP front stops listening first and lets
   * the requests it accepted finish (a worker's request may still call actors through the
   * runtime), within what is left of the drain bound; then the actors, NATS and isolates go.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const n = this.nats;
      await n?.presence.stop();
      await this.server.stop(this.clock.left());
      await n?.runtime.stop();
      await n?.view.stop();
      n?.peer.close();
      if (n) {
        this.server.consoleListeners.delete(n.consoleStream.listener);
        this.server.requestListeners.delete(n.consoleStream.requestListener);
        this.server.exceptionListeners.delete(n.consoleStream.exceptionListener);
        n.consoleStream.stop();
        await n.nc.drain();
      }
      this.admin?.close();
    })();
    return this.stopping;
  }
}

/** The NATS connection name of an isolate host says which one it is. */
const share0 = (cfg: AgentConfig): string => cfg.isolateHost ? `~h${cfg.isolateHost.index}` : '';

async function waitFor(cond: () => boolean, maxMs: number): Promise<void> {
  const until = performance.now() + maxMs;
  while (!cond() && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
}
