import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { AggregatorRegistry } from 'prom-client';
import { AgentView } from '../common/agent-view.js';
import { parseEgressRule } from '../common/egress.js';
import { startAdminServer as startAdminEndpoints } from '../common/admin-server.js';
import { isCordonShare, isolateHostName } from '../common/isolate-hosts.js';
import { agentKey, workerRef } from '../common/keys.js';
import type { Logger } from '../common/log.js';
import { BUNDLES_BUCKET, readObjectDirect, type EdgeBuckets } from '../common/nats.js';
import { natsClientOptions, type NatsClientAuth } from '../common/nats-auth.js';
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
import type { Resolver } from './bindings/subrequests.js';
import { ConsoleStream } from './control/console-stream.js';
import { DirectorySource } from './control/desired-state.js';
import { NatsSource } from './control/nats-source.js';
import { AgentPresence } from './control/presence.js';
import { aiUrlFromTemplate } from './control/worker-env.js';
import { MIN_PEER_TOKEN_LENGTH, PeerTokenError, startPeerServer, type PeerServer } from './peer/peer-server.js';
import { SharedSource, servesShare, type HostShare } from './hosts/assignment.js';
import { allowedCpus, hostCpuPlan, type PinHosts } from './hosts/cpu-affinity.js';
import { FrontMetrics } from './hosts/metrics.js';
import { HostProxy } from './hosts/proxy.js';
import { HostSupervisor } from './hosts/supervisor.js';
import type { DesiredStateSource } from './serving/desired.js';
import { WorkerServer, DEFAULT_MAX_ISOLATES_PER_WORKER } from './serving/worker-server.js';
import { DEFAULT_SHARD_POLICY, regionLoads, Shards } from './serving/shard.js';

// The composition root of the node agent: the one place that builds every component, wires
// them together and owns the order of start, drain and stop. `edge agent` only parses
// flags into an AgentConfig.

export interface HostPort { host: string; port: number }

export interface AgentConfig {
  log: Logger;
  /**
   * Standalone (a directory of manifests; region only names the model-server Services ai
   * bindings reach, default STANDALONE_REGION) or following the operator over NATS.
   */
  source: { kind: 'directory'; dir: string; region?: string } | {
    kind: 'nats'; url: string; region: string; node: string;
    /** Credentials (role agent) and the server's CA; none for a server without auth. */
    auth?: Omit<NatsClientAuth, 'role'>;
    /** Opens the Secret values the operator sealed. */
    sealer?: SecretSealer;
    /** Where the sealer's key is: what isolate hosts get, since a SecretSealer cannot cross IPC. */
    sealingKeyFile?: string;
  };
  agentName: string;
  /** The public HTTP listener; an isolate host's is a Unix socket (`path`) only its front reaches. */
  listen: HostPort | { path: string };
  /** /metrics, /healthz, /readyz, /status (an isolate host has none: its front asks it over IPC). */
  admin?: HostPort;
  /** The address other agents and the operator reach this agent's HTTP front at (default: listen). */
  advertise?: string;
  /** NATS mode: the port other agents forward actor calls to. */
  peerListen: HostPort;
  peerAdvertise?: string;
  /**
   * NATS mode: the secret every agent of the region sends on, and requires of, peer calls
   * (at least MIN_PEER_TOKEN_LENGTH characters). Required: the agent refuses to start in
   * NATS mode without one.
   */
  peerToken?: string;
  /** The bearer token that reads the admin port's full /status (tenants' workers, actor ids); without one, /status gives counts only. */
  adminToken?: string;
  /** Egress allowances every worker gets on top of its namespace's policy (`--egress-allow`). */
  egressAllow?: readonly string[];
  /** How workers' fetch() looks names up (default: the system resolver); a seam for tests. */
  resolve?: Resolver;
  presenceTtlMs: number;
  /** How to reach a model server's Service; {service}, {namespace}, {port} and {binding} are substituted. */
  aiUrlTemplate?: string;
  actorLogReplicas: number;
  /** A SQLite-backed actor's log is snapshotted after this many statements (default SQL_SNAPSHOT_LOG_ENTRIES). */
  sqlSnapshotEntries?: number;
  maxBodyBytes: number;
  maxWebSocketMessageBytes: number;
  poolSize: number;
  maxIsolatesPerWorker?: number;
  /** Idle isolates of a worker above its minWarmIsolates (all of them outside its shard) are disposed after this long (default 60 s). */
  idleIsolateMs?: number;
  /** Worker Loader get()'s kept warm per process: at most this many, holding at most this much heap (serving/dynamic-workers.ts defaults). */
  dynamicCache?: { maxEntries?: number; maxBytes?: number; callerShare?: number };
  /** Peers whose CF-Connecting-IP / X-Forwarded-* are believed: CIDRs, addresses or "unix" (default none). */
  trustedProxies?: string[];
  /** `edge dev` only: uncaught exceptions answered with their stack, "not placed in this region" 404s (WorkerServerOptions.devErrorPages). */
  devErrorPages?: boolean;
  /**
   * Run tenants' isolates in this many isolate-host processes, this process being only the
   * front (docs/isolate-hosts.md); 0 or absent: in this process. startAgent() picks.
   */
  isolateHosts?: number;
  /** Pre-booted spare host processes, so a crashed host is replaced by a promotion (default 1). */
  isolateHostSpares?: number;
  /** argv that starts an isolate-host process (`edge isolate-host`), the executable first. */
  isolateHostCommand?: readonly string[];
  /**
   * With isolate hosts: a cordon host for tenants over their share of the CPU or that keep
   * hitting their limits, at the lowest CPU priority (hosts/cordon.ts; default true).
   */
  isolateHostCordon?: boolean;
  /** With isolate hosts: pin host i to one CPU (hosts/cpu-affinity.ts; default auto). */
  pinHosts?: PinHosts;
  /**
   * Drain (SIGTERM): how long /readyz says 503 while everything is still served, before
   * actors are handed over and listeners closed: the time load balancers and Kubernetes
   * endpoints take to stop sending here (default DEFAULT_DRAIN_DELAY_MS).
   */
  drainDelayMs?: number;
  /**
   * Drain: the bound on what follows the delay (actors handed over, requests in flight
   * answered; default DEFAULT_DRAIN_TIMEOUT_MS). Past it, what still runs is cut: its
   * connection closes, and an actor not yet released is left to the next owner's claim.
   */
  drainTimeoutMs?: number;
  /** Set in an isolate-host process: which agent it belongs to and its share of namespaces. */
  isolateHost?: HostShare & { of: string };
  /**
   * Workers' shards (docs/shards.md; NATS mode): on unless `enabled` is false (`--shards
   * off`: every host serves every worker); min/max the default range of a worker without
   * spec.placement.shard; targetConcurrency the in-flight requests per member a shard aims at.
   */
  shards?: { enabled?: boolean; min?: number; max?: number; targetConcurrency?: number; connectTimeoutMs?: number };
}

/** What `edge agent` runs: an Agent, or an AgentFront with its isolate hosts. */
export interface RunningAgent {
  /** The public HTTP port. */
  readonly port: number;
  readonly adminPort: number | undefined;
  drain(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts the agent `cfg` describes: its isolates in this process, or in isolate-host processes behind a front. */
export function startAgent(cfg: AgentConfig): Promise<RunningAgent> {
  return (cfg.isolateHosts ?? 0) > 0 ? AgentFront.start(cfg) : Agent.start(cfg);
}

/**
 * EDGE_TEST_CRASH_TOKEN=<token> (tests only; unset in every shipped configuration): a worker
 * that logs `edge-test-crash <token>` aborts the process running its isolates, as a V8 fatal
 * error does, so test/security/isolate-hosts.test.ts can show what such a crash takes down
 * without depending on a live V8 bug.
 */
const CRASH_TOKEN = process.env.EDGE_TEST_CRASH_TOKEN;

/** See AgentConfig.drainDelayMs: about Kubernetes' endpoint propagation plus a probe period. */
export const DEFAULT_DRAIN_DELAY_MS = 5_000;
/** See AgentConfig.drainTimeoutMs; the chart's terminationGracePeriodSeconds covers delay + timeout. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 20_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `p`, or with `undefined` once `ms` passed (`p` runs on). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => { timer = setTimeout(() => r(undefined), Math.max(0, ms)); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** A drain's clock: the bound on what follows the delay, shared by drain() and stop(). */
class DrainClock {
  private deadline: number | undefined;
  constructor(private readonly timeoutMs: number) {}
  start(): void { this.deadline ??= performance.now() + this.timeoutMs; }
  /** Time left until the bound; none when no drain ran (a plain stop cuts at once). */
  left(): number { return this.deadline === undefined ? 0 : Math.max(0, this.deadline - performance.now()); }
}

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
  static async start(cfg: AgentConfig): Promise<Agent> {
    // What has started so far, undone in reverse when a later step fails, so a failed start
    // leaves no port, connection or timer behind.
    const undo: (() => unknown)[] = [];
    try {
      return await Agent.startSteps(cfg, undo);
    } catch (err) {
      for (const step of undo.reverse()) {
        try { await step(); } catch { /* best effort: the start error is the one to report */ }
      }
      throw err;
    }
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

/** What an isolate host is started with: the agent's config less what cannot cross IPC. */
export type IsolateHostConfig = Omit<AgentConfig, 'log'>;

/** The peer port of host `index`: the agent's peer port + 1 + index (a range the chart opens), or any free one. */
function hostPeer(cfg: AgentConfig, index: number): { peerListen: HostPort; peerAdvertise?: string } {
  const base = cfg.peerListen;
  if (base.port === 0) return { peerListen: base };
  const port = base.port + 1 + index;
  let peerAdvertise: string | undefined;
  if (cfg.peerAdvertise) {
    const u = new URL(cfg.peerAdvertise);
    u.port = String(port);
    peerAdvertise = u.href.replace(/\/$/, '');
  }
  return { peerListen: { host: base.host, port }, ...(peerAdvertise ? { peerAdvertise } : {}) };
}

/**
 * An agent whose tenants' isolates run in isolate-host processes (docs/isolate-hosts.md):
 * this process holds the public HTTP listener, the route table the hosts report, the admin
 * port and the agent's presence, and runs no tenant code, so a V8 fatal error in a tenant's
 * isolate takes down one host (the tenants of its namespaces, until it is restarted), never
 * the front or the other hosts. Each host is an Agent (isolate-host.ts) serving its share of
 * namespaces on a Unix socket in a private directory, with its own peer port and presence.
 */
export class AgentFront implements RunningAgent {
  private stopping: Promise<void> | undefined;
  private readonly clock: DrainClock;

  private constructor(
    private readonly cfg: AgentConfig,
    readonly port: number,
    readonly adminPort: number | undefined,
    private readonly parts: {
      proxy: HostProxy;
      supervisor: HostSupervisor<IsolateHostConfig>;
      admin: { close(): void } | undefined;
      socketDir: string;
      nats: { nc: NatsConnection; presence: AgentPresence } | undefined;
      state: { draining: boolean };
    },
  ) {
    this.clock = new DrainClock(cfg.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS);
  }

  /**
   * Start order: the public listener (answering 503 until the hosts serve), the admin port,
   * NATS (waited for, /readyz saying so), the hosts and a spare (each loads its initial
   * desired state), and last the presence.
   */
  static async start(cfg: AgentConfig): Promise<AgentFront> {
    const undo: (() => unknown)[] = [];
    try {
      return await AgentFront.startSteps(cfg, undo);
    } catch (err) {
      for (const step of undo.reverse()) {
        try { await step(); } catch { /* best effort: the start error is the one to report */ }
      }
      throw err;
    }
  }

  private static async startSteps(cfg: AgentConfig, undo: (() => unknown)[]): Promise<AgentFront> {
    const { log } = cfg;
    const count = cfg.isolateHosts ?? 0;
    const command = cfg.isolateHostCommand;
    if (!command || command.length === 0) throw new Error('isolateHosts needs isolateHostCommand (the argv of `edge isolate-host`)');
    if ('path' in cfg.listen) throw new Error('the agent front listens on TCP');
    const listen = cfg.listen;
    // The hosts' sockets: mkdtemp makes the directory 0700, so only this user reaches them.
    const socketDir = mkdtempSync(join(tmpdir(), 'edge-hosts-'));
    undo.push(() => rmSync(socketDir, { recursive: true, force: true }));
    const labels = cfg.source.kind === 'nats' ? { region: cfg.source.region, node: cfg.source.node } : undefined;
    const metrics = new FrontMetrics(labels);

    // Listening comes first (a taken port fails the start at once); until the hosts are
    // built every request is answered 404.
    const hosts: { sup?: HostSupervisor<IsolateHostConfig> } = {};
    const proxy = new HostProxy({
      log, metrics,
      route: (host, path) => hosts.sup?.route(host, path),
      target: (i) => hosts.sup?.target(i),
      ...(cfg.devErrorPages ? { unroutedToHost0: true } : {}),
    });
    const port = await proxy.listen(listen.port, listen.host);
    undo.push(() => proxy.close());
    const advertise = cfg.advertise ?? `http://${listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host}:${port}`;

    const { log: _log, admin: _admin, isolateHosts: _n, isolateHostSpares: _s, isolateHostCommand: _c, isolateHostCordon: _cordon, pinHosts: _pin, ...shared } = cfg;
    // A SecretSealer is an object with methods: the hosts open the key file themselves.
    if (shared.source.kind === 'nats') { const { sealer: _sealer, ...src } = shared.source; shared.source = src; }
    const allowed = allowedCpus();
    const cpus = hostCpuPlan(cfg.pinHosts ?? 'auto', count, allowed);
    log.info(cpus ? 'isolate hosts pinned one per CPU' : 'isolate hosts not pinned', { pinHosts: cfg.pinHosts ?? 'auto', hosts: count, allowedCpus: allowed?.join(','), ...(cpus ? { cpus: cpus.join(',') } : {}) });
    const sup = new HostSupervisor<IsolateHostConfig>({
      count,
      ...(cpus ? { cpuOf: (index: number) => cpus[index] } : {}),
      spares: cfg.isolateHostSpares ?? 1,
      command,
      socketDir,
      log,
      metrics,
      ...(cfg.isolateHostCordon !== false ? { cordon: { cores: availableParallelism() } } : {}),
      config: (index) => ({
        ...shared,
        // The cordon host (index = count) starts empty and loads only cordoned namespaces.
        ...(index === count ? { poolSize: Math.min(shared.poolSize, 1) } : {}),
        agentName: isolateHostName(cfg.agentName, index),
        // The front waits out the drain delay; a host drains as soon as it is told.
        drainDelayMs: 0,
        listen: { path: '' }, // the host names its socket in socketDir
        advertise,
        ...hostPeer(cfg, index),
        isolateHost: { of: cfg.agentName, index, count },
      }),
    });
    hosts.sup = sup;
    undo.push(() => sup.stop());
    // Set by drain(): /readyz says 503 from then on.
    const state = { draining: false };

    const startup = new Startup();
    startup.done();
    const admin = cfg.admin ? await startAdminEndpoints({
      registry: {
        contentType: metrics.registry.contentType,
        // The hosts' metrics summed (a worker's series come from the one host serving it) and the front's own.
        metrics: async () => AggregatorRegistry.aggregate([await metrics.registry.getMetricsAsJSON(), ...await sup.metrics()]).metrics(),
      },
      notReady: () => (state.draining ? 'draining' : startup.waiting ?? (sup.ready ? undefined : 'isolate hosts starting')),
      status: async () => {
        const hosts = await sup.status();
        return {
          ready: sup.ready,
          workers: hosts.flatMap((h) => h.workers).sort((a, b) => a.key.localeCompare(b.key)),
          actors: hosts.flatMap((h) => h.actors),
          hosts: sup.hosts(),
          ...(sup.cordon ? { cordon: { namespaces: sup.cordon.cordoned(), cpuCores: sup.cordon.rates(performance.now()) } } : {}),
        };
      },
      // Everyone else gets counts only: the full status names every tenant's workers and actors.
      summary: async () => {
        const hosts = await sup.status();
        const workers = hosts.flatMap((h) => h.workers);
        return {
          ready: sup.ready,
          workers: { total: workers.length, ready: workers.filter((w) => w.state === 'ready').length, error: workers.filter((w) => w.state === 'error').length },
          actors: hosts.reduce((n, h) => n + h.actors.length, 0),
        };
      },
      ...(cfg.adminToken ? { statusToken: cfg.adminToken } : {}),
    }, cfg.admin.port, cfg.admin.host) : undefined;
    if (admin) undo.push(() => admin.server.close());

    // NATS before the hosts (each connects on its own), so while it is away this /readyz says so.
    let conn: { nc: NatsConnection; buckets: EdgeBuckets } | undefined;
    if (cfg.source.kind === 'nats') {
      const waiting = { log, startup };
      const nc = await connectNatsWaiting(cfg.source.url, `edge-agent ${cfg.source.region}/${cfg.source.node} front`, natsClientOptions({ role: 'agent', ...cfg.source.auth }), waiting);
      undo.push(() => nc.close());
      const buckets = await untilNats('binding the NATS buckets', () => bindBuckets(nc, log, { onWait: (why) => startup.wait(why) }), waiting);
      startup.done();
      conn = { nc, buckets };
    }
    await sup.start();

    let nats: { nc: NatsConnection; presence: AgentPresence } | undefined;
    if (conn && cfg.source.kind === 'nats') {
      // The agent's own presence: the region sees the agent while a host restarts. It hosts
      // no actors (the hosts' presences do), so the rings leave it out.
      const { nc, buckets } = conn;
      const presence = new AgentPresence({
        nc, buckets, log, agent: cfg.agentName, node: cfg.source.node, region: cfg.source.region,
        address: advertise, ttlMs: cfg.presenceTtlMs, status: () => [], isolateHosts: count,
      });
      undo.push(() => presence.stop());
      await presence.start();
      nats = { nc, presence };
    }
    log.info('agent listening', {
      http: `http://${listen.host}:${port}`, ...(cfg.admin && admin ? { admin: `http://${cfg.admin.host}:${admin.port}` } : {}),
      isolateHosts: count, workers: cfg.source.kind === 'directory' ? cfg.source.dir : cfg.source.url,
    });
    return new AgentFront(cfg, port, admin?.port, { proxy, supervisor: sup, admin: admin?.server, socketDir, nats, state });
  }

  /** The front's view of its hosts (pid, up, restarts, workers). */
  hosts() { return this.parts.supervisor.hosts(); }

  /**
   * SIGTERM, as Agent.drain: /readyz says 503 at once and everything is served for
   * drainDelayMs; then the front's presence says draining and every host drains (hands its
   * actors over) while all keep serving, within drainTimeoutMs.
   */
  async drain(): Promise<void> {
    const { log } = this.cfg;
    this.parts.state.draining = true;
    this.parts.proxy.drain();
    const delay = this.cfg.drainDelayMs ?? DEFAULT_DRAIN_DELAY_MS;
    log.info('draining: not ready; serving until load balancers stopped sending', { delayMs: delay });
    await sleep(delay);
    this.clock.start();
    const done = await within((async () => {
      await this.parts.nats?.presence.drain();
      await this.parts.supervisor.drain();
      return true;
    })(), this.clock.left());
    if (done) log.info('isolate hosts drained');
    else log.warn('drain bound reached before every isolate host had handed its actors over; stopping');
  }

  /** Stops in reverse start order, the public listener once its requests in flight are answered; idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const { proxy, supervisor, admin, socketDir, nats } = this.parts;
      await nats?.presence.stop();
      const cut = await proxy.close(this.clock.left());
      if (cut > 0) this.cfg.log.warn('requests cut at the end of the drain', { requests: cut });
      await supervisor.stop();
      if (nats) await nats.nc.drain();
      admin?.close();
      rmSync(socketDir, { recursive: true, force: true });
    })();
    return this.stopping;
  }
}

async function waitFor(cond: () => boolean, maxMs: number): Promise<void> {
  const until = performance.now() + maxMs;
  while (!cond() && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
}
