import type { NatsConnection } from 'nats';
import { AgentView } from '../common/agent-view.js';
import { parseEgressRule } from '../common/egress.js';
import type { Logger } from '../common/log.js';
import { connectNats, type EdgeBuckets } from '../common/nats.js';
import { natsClientOptions, type NatsClientAuth } from '../common/nats-auth.js';
import { bindBuckets } from '../common/nats-provision.js';
import type { SecretSealer } from '../common/sealing.js';
import { startAdminServer } from './admin-server.js';
import { ActorRuntime } from './actors/runtime.js';
import { hostBindings } from './bindings/host-bindings.js';
import type { Resolver } from './bindings/subrequests.js';
import { ConsoleStream } from './control/console-stream.js';
import { DirectorySource } from './control/desired-state.js';
import { NatsSource } from './control/nats-source.js';
import { AgentPresence } from './control/presence.js';
import { aiUrlFromTemplate } from './control/worker-env.js';
import { MIN_PEER_TOKEN_LENGTH, PeerTokenError, startPeerServer, type PeerServer } from './peer/peer-server.js';
import type { DesiredStateSource } from './serving/desired.js';
import { WorkerServer, DEFAULT_MAX_ISOLATES_PER_WORKER } from './serving/worker-server.js';

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
  };
  agentName: string;
  listen: HostPort;
  admin: HostPort;
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
  maxBodyBytes: number;
  maxWebSocketMessageBytes: number;
  poolSize: number;
  maxIsolatesPerWorker?: number;
  /** Peers whose CF-Connecting-IP / X-Forwarded-* are believed: CIDRs, addresses or "unix" (default none). */
  trustedProxies?: string[];
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

export class Agent {
  private stopping: Promise<void> | undefined;

  private constructor(
    private readonly cfg: AgentConfig,
    readonly server: WorkerServer,
    readonly port: number,
    readonly adminPort: number,
    private readonly admin: { close(): void },
    private readonly nats: NatsParts | undefined,
  ) {}

  /**
   * Start order: NATS and the desired-state source, the worker server's isolates, the
   * console stream, the actor runtime and its peer port, the admin port, the HTTP front
   * (once the initial desired state is loaded), and last the presence that tells the region
   * this agent serves.
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
    if (cfg.source.kind === 'directory') {
      source = new DirectorySource(cfg.source.dir, log, { aiUrl, ...(cfg.source.region ? { region: cfg.source.region } : {}) });
    } else {
      nc = await connectNats(cfg.source.url, `edge-agent ${cfg.source.region}/${cfg.source.node}`, natsClientOptions({ role: 'agent', ...cfg.source.auth }));
      const conn = nc;
      undo.push(() => conn.close());
      // An agent may not create streams: it waits for the operator to.
      buckets = await bindBuckets(nc, log);
      source = new NatsSource({ buckets, region: cfg.source.region, log, aiUrl, ...(cfg.source.sealer ? { sealer: cfg.source.sealer } : {}) });
    }
    // Workers' env.<actor binding> calls reach the actor runtime, built below (NATS mode
    // only: the runtime needs the ring and the fenced log). In directory mode the bindings
    // are still there and their calls fail naming the binding.
    let runtime: ActorRuntime | undefined;
    // Told when an actor activates or goes, so the region's reports follow at once.
    let presence: AgentPresence | undefined;
    const server = new WorkerServer({
      source,
      log,
      bindings: (ctx) => hostBindings({ egressAllow, ...(cfg.resolve ? { resolve: cfg.resolve } : {}), ...(runtime ? { actorRouter: runtime.isolateRouter } : {}) })(ctx),
      metricLabels: cfg.source.kind === 'nats' ? { region: cfg.source.region, node: cfg.source.node } : undefined,
      maxBodyBytes: cfg.maxBodyBytes,
      maxWebSocketMessageBytes: cfg.maxWebSocketMessageBytes,
      poolSize: cfg.poolSize,
      maxIsolatesPerWorker: cfg.maxIsolatesPerWorker ?? DEFAULT_MAX_ISOLATES_PER_WORKER,
      trustedProxies: cfg.trustedProxies,
    });
    // Its pool holds warm isolates from here on (stop is safe before start).
    undo.push(() => server.stop());

    let nats: Omit<NatsParts, 'presence'> | undefined;
    if (nc && buckets && cfg.source.kind === 'nats') {
      const { region, node } = cfg.source;
      const consoleStream = new ConsoleStream({ nc, region, node, log });
      await consoleStream.start();
      undo.push(() => consoleStream.stop());
      server.consoleListeners.add(consoleStream.listener);
      // Actors: the ring of this region, the durable log, and the peer port other agents forward to.
      const view = new AgentView(buckets, log, { reports: false });
      await view.start();
      undo.push(() => view.stop());
      runtime = new ActorRuntime({
        agent: cfg.agentName, region, nc, buckets, view, log,
        pool: server.pool, hooks: server.hooks, sockets: server.sockets, peerToken: cfg.peerToken, egressAllow,
        workerDefinition: (key) => server.workerDefinition(key),
        logReplicas: cfg.actorLogReplicas,
        onActiveChange: () => { void presence?.report(); },
      });
      const rt = runtime;
      server.versionListeners.add((key) => rt.workerChanged(key));
      await runtime.start();
      undo.push(() => rt.stop());
      const peer = await startPeerServer(runtime.router, log, cfg.peerListen.port, cfg.peerListen.host, cfg.peerToken!);
      undo.push(() => peer.close());
      nats = { nc, buckets, region, node, view, runtime, consoleStream, peer };
    }

    const admin = await startAdminServer(server, cfg.admin.port, cfg.admin.host, {
      extra: () => ({ actors: runtime?.host.keys() ?? [] }),
      extraSummary: () => ({ actors: runtime?.host.keys().length ?? 0 }),
      ...(cfg.adminToken ? { token: cfg.adminToken } : {}),
    });
    undo.push(() => admin.server.close());
    const port = await server.start(cfg.listen.port, cfg.listen.host);

    let parts: NatsParts | undefined;
    if (nats) {
      const rt = nats.runtime;
      const peerUrl = cfg.peerAdvertise ?? `http://${cfg.peerListen.host === '0.0.0.0' ? '127.0.0.1' : cfg.peerListen.host}:${nats.peer.port}`;
      presence = new AgentPresence({
        nc: nats.nc, buckets: nats.buckets, log,
        agent: cfg.agentName, node: nats.node, region: nats.region,
        address: cfg.advertise ?? `http://${cfg.listen.host}:${port}`,
        peerAddress: peerUrl,
        ttlMs: cfg.presenceTtlMs,
        status: () => server.status(),
        actors: () => rt.host.counts(),
      });
      parts = { ...nats, presence };
      const p = presence;
      undo.push(() => p.stop());
      await presence.start();
    }
    const agent = new Agent(cfg, server, port, admin.port, admin.server, parts);
    log.info('agent listening', {
      http: `http://${cfg.listen.host}:${port}`, admin: `http://${cfg.admin.host}:${admin.port}`,
      workers: cfg.source.kind === 'directory' ? cfg.source.dir : cfg.source.url,
    });
    return agent;
  }

  /**
   * Hands everything over before a stop: the region learns first (presence marked draining,
   * and the drain waits until that change has come back through the KV watch every ring
   * follows), then in-flight actor calls finish and every actor is released, then calls
   * other agents routed here in the meantime are answered (421: go elsewhere) until the
   * peer port has been quiet.
   */
  async drain(): Promise<void> {
    const n = this.nats;
    if (!n) return;
    await n.presence.drain();
    await waitFor(() => n.view.agents(n.region).find((a) => a.agent === this.cfg.agentName)?.draining !== false, DRAIN_SEEN_MAX_MS);
    const moved = await n.runtime.drain();
    this.cfg.log.info('actors handed over', { actors: moved });
    await n.peer.quiet(PEER_QUIET_MS, PEER_QUIET_MAX_MS);
  }

  /** Stops in reverse start order; idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const n = this.nats;
      await n?.presence.stop();
      await n?.runtime.stop();
      await n?.view.stop();
      n?.peer.close();
      await this.server.stop();
      if (n) {
        this.server.consoleListeners.delete(n.consoleStream.listener);
        n.consoleStream.stop();
        await n.nc.drain();
      }
      this.admin.close();
    })();
    return this.stopping;
  }
}

async function waitFor(cond: () => boolean, maxMs: number): Promise<void> {
  const until = performance.now() + maxMs;
  while (!cond() && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
}
