import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { AggregatorRegistry } from 'prom-client';
import { startAdminServer as startAdminEndpoints } from '../common/admin-server.js';
import { isolateHostName } from '../common/isolate-hosts.js';
import type { EdgeBuckets } from '../common/nats.js';
import { natsClientOptions } from '../common/nats-auth.js';
import { bindBuckets } from '../common/nats-provision.js';
import { connectNatsWaiting, Startup, untilNats } from '../common/nats-startup.js';
import { AgentPresence } from './control/presence.js';
import { allowedCpus, hostCpuPlan } from './hosts/cpu-affinity.js';
import { FrontMetrics } from './hosts/metrics.js';
import { HostProxy } from './hosts/proxy.js';
import { HostSupervisor } from './hosts/supervisor.js';
import { DEFAULT_DRAIN_DELAY_MS, DEFAULT_DRAIN_TIMEOUT_MS, DrainClock, hostPeer, sleep, startOrUndo, within, type AgentConfig, type IsolateHostConfig, type RunningAgent } from './agent-config.js';

// The agent's front when its tenants' isolates run in isolate-host processes. This file
// and what it imports are all that process loads: no isolated-vm, no shim, no bindings
// (`edge agent`, cli/agent.ts, imports it or agent.ts, whichever it starts;
// test/agent/built-agent.test.ts checks the front's memory map).

/** A host's share of the node's warm pool: `poolSize` over `hosts`, rounded up, so none is left without one. */
export function hostPoolSize(poolSize: number, hosts: number): number {
  return poolSize <= 0 ? 0 : Math.ceil(poolSize / Math.max(1, hosts));
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
  static start(cfg: AgentConfig): Promise<AgentFront> {
    return startOrUndo((undo) => AgentFront.startSteps(cfg, undo));
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
      spares: cfg.isolateHostSpares ?? 0,
      command,
      socketDir,
      log,
      metrics,
      ...(cfg.isolateHostCordon !== false ? { cordon: { cores: availableParallelism() } } : {}),
      config: (index) => ({
        ...shared,
        // --pool-size is the node's: each host keeps its share ready (a host refills its own
        // between cold starts), not the whole pool once per host. The cordon host (index =
        // count) starts empty and loads only cordoned namespaces.
        poolSize: index === count ? Math.min(shared.poolSize, 1) : hostPoolSize(shared.poolSize, count),
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
          spares: sup.spareProcesses(),
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
