import { refNamespace } from '../../common/keys.js';
import type { Logger } from '../../common/log.js';
import { errorMessage } from '../../common/log.js';
import type { DesiredStateSource, DesiredWorker } from './desired.js';
import { HttpFront, type ServedRequest, type WorkerException } from './http-front.js';
import { inlineSourceMap, workerStack, type SourceMap } from '../../common/source-map.js';
import type { SlowClientLimits } from './request-body.js';
import { TrustedProxies } from './trusted-proxy.js';
import { IsolatePool } from '../isolate/pool.js';
import { AgentMetrics } from './metrics.js';
import { Router } from './router.js';
import { DEFAULT_MAX_MESSAGE_BYTES, SocketRegistry } from '../sockets/sockets.js';
import { DynamicWorkers } from './dynamic-workers.js';
import { WorkerHost, type InternalRequest, type InternalResponse } from './worker-host.js';
import { type BindingsFactory, type IsolateHooks, type WorkerDefinition, type WorkerScriptError } from '../isolate/worker-isolate.js';
import { EdgeError } from '../../common/errors.js';
import { DEFAULT_SHARD_POLICY, LoadMeter, type ShardPolicy, type Shards } from './shard.js';
import { DEFAULT_IDLE_ISOLATE_MS, DEFAULT_MAX_ISOLATES_PER_WORKER } from './defaults.js';

/** How often in-flight counts are folded into the published loads and shard sizes recomputed. */
const SHARD_TICK_MS = 500;

// The node agent: follows a DesiredStateSource, keeps one WorkerHost per worker version,
// and swaps versions without dropping requests (the new version is loaded first; the old
// one finishes what it has and is then disposed).

export { DEFAULT_IDLE_ISOLATE_MS, DEFAULT_MAX_ISOLATES_PER_WORKER } from './defaults.js';
/** Requests that may queue for a busy worker before the agent answers 503. */
export const DEFAULT_MAX_QUEUED_PER_WORKER = 1000;

/** A service binding named a worker this agent does not serve. */
export class WorkerNotServedError extends EdgeError {}

export type { InternalRequest, InternalResponse } from './worker-host.js';

export interface WorkerServerOptions {
  source: DesiredStateSource;
  log: Logger;
  /** Builds each isolate's host side of env.* and fetch (bindings/hostBindings). */
  bindings: BindingsFactory;
  maxBodyBytes?: number;
  /** Pre-warmed isolates kept ready for new workers. */
  poolSize?: number;
  /** Bounds on the Worker Loader get()'s kept warm (DynamicWorkers' defaults). */
  dynamicCache?: { maxEntries?: number; maxBytes?: number; callerShare?: number };
  maxIsolatesPerWorker?: number;
  maxQueuedPerWorker?: number;
  idleIsolateMs?: number;
  /** Labels on every metric (region, node). */
  metricLabels?: Record<string, string>;
  /** Largest WebSocket message either way (default 1 MiB); a bigger one from a client closes its socket with 1009. */
  maxWebSocketMessageBytes?: number;
  /** Peers whose CF-Connecting-IP / X-Forwarded-* headers are believed: CIDRs, addresses or "unix" (default none). */
  trustedProxies?: string[];
  /** request.cf.colo of every request (the agent's region; default: left out). */
  colo?: string;
  /** Bounds on clients that send their requests slowly (DEFAULT_SLOW_CLIENT_LIMITS in request-body.ts). */
  slowClients?: Partial<SlowClientLimits>;
  /** Bytes a worker's socket may hold for a slow client (default 8 MiB): see SocketRegistryOptions. */
  maxWebSocketBacklogBytes?: number;
  /** Bytes all sockets of one isolate may hold for slow clients (default 32 MiB, at most memoryMiB / 4). */
  maxIsolateWebSocketBacklogBytes?: number;
  /**
   * `edge dev` only (`edge agent --dev-error-pages`): an uncaught exception is answered with
   * its message and stack, and a host routed only in other regions with a 404 that says so.
   */
  devErrorPages?: boolean;
}

/** Source maps decoded from bundles, by digest (null: the bundle has none); a few are kept. */
const MAX_SOURCE_MAPS = 32;

/** What a namespace's isolates used since the last takeUsage() (told to the agent's front by an isolate host). */
export interface NamespaceUsage {
  /** CPU time of its isolates (ms). */
  cpuMs: number;
  /** Requests routed to its workers (the host's own work for each is not in cpuMs). */
  requests: number;
  /**
   * Limits the tenant ran into: isolates killed for their CPU or memory limit, WebSockets
   * closed because the worker sent more than a client would read (work the host did for it).
   */
  limitHits: number;
}

/** A worker's routes, as the route table has them (told to the agent's front by an isolate host). */
export interface ServedRoutes { key: string; routes: DesiredWorker['routes'] }

export type WorkerState =
  | { key: string; digest: string; state: 'ready'; isolates: number; shardMember?: boolean }
  | { key: string; digest: string; state: 'error'; error: string; servingDigest?: string };

interface Served { desired: DesiredWorker; host: WorkerHost }

export class WorkerServer {
  readonly metrics: AgentMetrics;
  readonly front: HttpFront;
  readonly pool: IsolatePool;
  /** Worker Loader bindings' dynamic workers, run in this process beside their callers. */
  readonly dynamic: DynamicWorkers;
  private readonly served = new Map<string, Served>();
  private readonly errors = new Map<string, { digest: string; error: string }>();
  private router = Router.build<WorkerHost>([]);
  private applying: Promise<void> = Promise.resolve();
  private initialLoad = false;
  private stopped = false;
  private draining = false;
  readonly hooks: IsolateHooks;
  /** Told the key of a worker whose served version changed (actors restart on new code). */
  readonly versionListeners = new Set<(key: string) => void>();
  /** Open WebSockets of this agent's isolates. */
  readonly sockets: SocketRegistry;
  /** Console output of workers, for `edge logs` and tests. */
  readonly consoleListeners = new Set<(worker: string, level: string, message: string) => void>();
  /** Each request a worker served here (`edge logs --requests`). */
  readonly requestListeners = new Set<(r: ServedRequest) => void>();
  /** Each uncaught exception of a worker's code (`edge logs`, `edge dev`'s terminal), its stack in the worker's source. */
  readonly exceptionListeners = new Set<(worker: string, e: WorkerException & { ray: string }) => void>();
  private readonly sourceMaps = new Map<string, SourceMap | null>();
  /** Told every served worker's routes whenever the route table is rebuilt. */
  readonly routeListeners = new Set<(routes: ServedRoutes[]) => void>();
  private usage = new Map<string, NamespaceUsage>();
  /** Namespaces the agent's cordon host serves now (this is their home host): kept loaded, not warm. */
  private dormant: ReadonlySet<string> = new Set();
  /** Requests in flight per worker, smoothed: published in the presence, shards grow with it. */
  readonly meter = new LoadMeter();
  private shards: Shards | undefined;
  private shardDefaults: ShardPolicy = DEFAULT_SHARD_POLICY;
  private shardTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: WorkerServerOptions) {
    this.metrics = new AgentMetrics(opts.metricLabels);
    this.pool = new IsolatePool({
      size: opts.poolSize ?? 4,
      defaultMemoryMiB: 128,
      onChange: (n) => this.metrics.poolSize.set(n),
    });
    const workerLog = opts.log.child({ source: 'worker' });
    this.sockets = new SocketRegistry({
      maxMessageBytes: opts.maxWebSocketMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
      maxSocketBacklogBytes: opts.maxWebSocketBacklogBytes,
      maxIsolateBacklogBytes: opts.maxIsolateWebSocketBacklogBytes,
      observer: {
        backlogClosed: (worker) => {
          this.usageOf(worker).limitHits++;
          this.metrics.webSocketBacklogCloses.inc({ worker });
          opts.log.warn('WebSocket closed: its client is not reading what the worker sends', { worker });
        },
      },
    });
    this.metrics.webSocketBacklogSource = () => this.sockets.backlogBytes();
    this.metrics.subrequestBytesSource = () => new Map([...this.served.values()].map((s) => [s.desired.key, s.host.hostBytes()]));
    this.hooks = {
      bindings: opts.bindings,
      sockets: this.sockets,
      onLog: (worker, level, message) => {
        const lvl = level === 'error' ? 'error' : level === 'warn' ? 'warn' : level === 'debug' ? 'debug' : 'info';
        workerLog[lvl](message, { worker, console: level });
        for (const l of this.consoleListeners) l(worker, level, message);
      },
      onCpu: (worker, cpuMs) => { this.usageOf(worker).cpuMs += cpuMs; },
      onDispose: (worker, reason) => {
        if (reason === 'cpu' || reason === 'memory') this.usageOf(worker).limitHits++;
        this.metrics.disposals.inc({ worker, reason });
        if (reason !== 'idle' && reason !== 'replaced' && reason !== 'shutdown') opts.log.warn('isolate disposed', { worker, reason });
      },
    };
    this.dynamic = new DynamicWorkers({ pool: this.pool, hooks: this.hooks, log: opts.log, registry: this.metrics.registry, ...opts.dynamicCache });
    this.front = new HttpFront({
      resolve: (host, path) => this.router.match(host, path)?.target,
      log: opts.log,
      metrics: this.metrics,
      maxBodyBytes: opts.maxBodyBytes ?? 100 * 1024 * 1024,
      sockets: this.sockets,
      slowClients: opts.slowClients,
      trustedProxies: new TrustedProxies(opts.trustedProxies),
      ...(opts.colo !== undefined ? { colo: opts.colo } : {}),
      onRequest: (worker) => { this.usageOf(worker).requests++; },
      onServed: (r) => { for (const l of this.requestListeners) l(r); },
      onException: (worker, err, ray) => this.exception(worker, err, ray),
      ...(opts.devErrorPages ? { devErrorPages: true, notHere: (host: string, path: string) => this.notHere(host, path) } : {}),
    });
  }

  /**
   * Shards on (docs/shards.md; the agent does this in NATS mode, before start): requests for
   * workers this host is not a member of are forwarded, and only members keep them warm.
   */
  enableShards(shards: Shards, peerToken: string, defaults: ShardPolicy = DEFAULT_SHARD_POLICY, connectTimeoutMs?: number): void {
    this.shards = shards;
    this.shardDefaults = defaults;
    this.front.enableShards({ shards, peerToken, meter: this.meter, ...(connectTimeoutMs !== undefined ? { connectTimeoutMs } : {}) });
    shards.onChange(() => this.applyMembership());
    this.metrics.shardSource = () => shards.snapshot();
    this.shardTimer = setInterval(() => { this.meter.sample(); shards.refresh(); }, SHARD_TICK_MS);
    this.shardTimer.unref();
  }

  private shardPolicy(w: DesiredWorker): ShardPolicy { return w.shard ?? this.shardDefaults; }

  /** Whether the worker's isolates here are all busy with a queue as long (a shard member then refuses forwards). */
  saturated(key: string): boolean { return this.served.get(key)?.host.saturated ?? false; }

  /** A worker's shard as this host computes it now (presence names), or undefined without shards. */
  shardMembers(key: string): string[] | undefined {
    if (!this.shards) return undefined;
    this.shards.isMember(key);
    return this.shards.snapshot().get(key)?.members;
  }

  private isMember(key: string): boolean { return this.shards?.isMember(key) ?? true; }

  /**
   * Bumped whenever status() may say something new but a worker's isolate count (a version
   * served or refused, a worker gone, a shard membership changed): the agent's report is
   * rebuilt only then.
   */
  get statusVersion(): number { return this.statusEpoch; }
  private statusEpoch = 0;

  /** Hosts joined or left, or a shard grew or shrank: members warm up, the others let go when idle. */
  private applyMembership(): void {
    this.statusEpoch++;
    for (const [key, s] of this.served) s.host.setMember(this.isMember(key));
  }

  get ready(): boolean { return this.initialLoad && !this.stopped && !this.draining; }

  /** Why /readyz says 503, if it does. */
  get notReady(): string | undefined {
    if (this.draining || this.stopped) return 'draining';
    return this.initialLoad ? undefined : 'loading workers';
  }

  /**
   * SIGTERM: /readyz turns 503 at once so load balancers stop sending, while every request
   * that still arrives is served as before (each response closes its connection).
   */
  drain(): void {
    this.draining = true;
    this.front.drain();
  }

  /** Namespaces whose workers the agent's cordon host serves now: their isolates here are let go. */
  setDormant(namespaces: ReadonlySet<string>): void {
    this.dormant = namespaces;
    for (const s of this.served.values()) s.host.setDormant(namespaces.has(refNamespace(s.desired.key)));
  }

  /** CPU and limit kills per namespace since the last call (the front's cordon decides with them). */
  takeUsage(): Record<string, NamespaceUsage> {
    const out = Object.fromEntries(this.usage);
    this.usage = new Map();
    return out;
  }

  private usageOf(worker: string): NamespaceUsage {
    const ns = refNamespace(worker);
    let u = this.usage.get(ns);
    if (!u) { u = { cpuMs: 0, requests: 0, limitHits: 0 }; this.usage.set(ns, u); }
    return u;
  }

  /** Listens on TCP (`listenPort`, `listenHost`) or on a Unix socket (`{ path }`; returns 0). */
  async start(listenPort: number | { path: string }, listenHost = '127.0.0.1'): Promise<number> {
    await this.pool.start();
    const port = await this.front.listen(listenPort, listenHost);
    await this.opts.source.start((workers) => { this.applying = this.applying.then(() => this.apply(workers)); });
    await this.applying;
    this.initialLoad = true;
    return port;
  }

  /** Converges the served set on the desired one. Level-triggered: safe to call again. */
  private async apply(workers: DesiredWorker[]): Promise<void> {
    if (this.stopped) return;
    const wanted = new Map(workers.map((w) => [w.key, w]));
    const starts: Promise<void>[] = [];
    for (const w of workers) {
      const cur = this.served.get(w.key);
      this.shards?.setPolicy(w.key, this.shardPolicy(w));
      if (cur && cur.desired.def.digest === w.def.digest) {
        cur.desired = w; // routes may have changed without touching the isolates
        cur.host.setMember(this.isMember(w.key));
        this.errors.delete(w.key);
        continue;
      }
      if (this.errors.get(w.key)?.digest === w.def.digest) continue; // known-bad version
      starts.push(this.startVersion(w, cur));
    }
    await Promise.all(starts);
    for (const [key, cur] of this.served) {
      if (!wanted.has(key)) {
        this.served.delete(key);
        this.shards?.setPolicy(key, undefined);
        void cur.host.drain();
        for (const l of this.versionListeners) l(key);
        this.opts.log.info('worker removed', { worker: key });
      }
    }
    for (const key of [...this.errors.keys()]) if (!wanted.has(key)) this.errors.delete(key);
    this.rebuildRouter();
  }

  private async startVersion(w: DesiredWorker, previous: Served | undefined): Promise<void> {
    const host = new WorkerHost(w.def, {
      pool: this.pool,
      hooks: this.hooks,
      log: this.opts.log,
      minWarm: w.minWarmIsolates,
      maxIsolates: Math.max(this.opts.maxIsolatesPerWorker ?? DEFAULT_MAX_ISOLATES_PER_WORKER, w.minWarmIsolates),
      idleMs: this.opts.idleIsolateMs ?? DEFAULT_IDLE_ISOLATE_MS,
      maxQueued: this.opts.maxQueuedPerWorker ?? DEFAULT_MAX_QUEUED_PER_WORKER,
      onColdStart: (worker) => this.metrics.coldStarts.inc({ worker }),
      onIsolates: (worker, n) => this.metrics.workerIsolates.set({ worker }, n),
    });
    try {
      // Outside the worker's shard no isolate is loaded until a request must run here.
      await host.start(this.isMember(w.key));
    } catch (err) {
      // The previous version, if any, keeps serving.
      this.errors.set(w.key, { digest: w.def.digest, error: errorMessage(err) });
      this.statusEpoch++;
      this.metrics.bundleErrors.inc({ worker: w.key });
      this.opts.log.error('worker version refused', { worker: w.key, digest: w.def.digest, error: err, previous: previous?.desired.def.digest });
      return;
    }
    this.errors.delete(w.key);
    host.setDormant(this.dormant.has(refNamespace(w.key)));
    this.served.set(w.key, { desired: w, host });
    // The previous version drains once the route table points at this one.
    this.scheduleRouter(() => {
      for (const l of this.versionListeners) l(w.key);
      if (previous) void previous.host.drain();
    });
    this.opts.log.info(previous ? 'worker updated' : 'worker loaded', { worker: w.key, digest: w.def.digest, isolates: host.isolates });
  }

  /**
   * The route table is rebuilt from every served worker (O(workers)), so versions loaded
   * one after another (10,000 workers at start) share rebuilds rather than each doing one:
   * the next rebuild waits ten times as long as the last one took (at least a tick), and
   * apply() rebuilds at once when it is done. `then` runs after the rebuild.
   */
  private scheduleRouter(then: () => void): void {
    this.afterRouter.push(then);
    if (this.routerTimer) return;
    this.routerTimer = setTimeout(() => this.rebuildRouter(), Math.min(1000, 10 * this.lastRouterBuildMs));
  }

  private routerTimer: NodeJS.Timeout | undefined;
  private lastRouterBuildMs = 0;
  private readonly afterRouter: (() => void)[] = [];

  private rebuildRouter(): void {
    if (this.routerTimer) { clearTimeout(this.routerTimer); this.routerTimer = undefined; }
    this.statusEpoch++;
    const t0 = performance.now();
    this.router = Router.build([...this.served.values()].map((s) => ({ key: s.desired.key, routes: s.desired.routes, target: s.host })));
    this.lastRouterBuildMs = performance.now() - t0;
    for (const c of this.router.conflicts) this.opts.log.warn('route conflict', { detail: c });
    this.metrics.workersLoaded.set(this.served.size);
    if (this.routeListeners.size > 0) {
      const routes = this.routes();
      for (const l of this.routeListeners) l(routes);
    }
    for (const then of this.afterRouter.splice(0)) then();
  }

  /** Every served worker's routes. */
  routes(): ServedRoutes[] {
    return [...this.served.values()].map((s) => ({ key: s.desired.key, routes: s.desired.routes }));
  }

  /**
   * A service binding's call: runs `req` on the version of the worker `key` served now, at
   * service depth `depth`, in one of its isolates (as a client's request would be). The
   * target's own exception (an RPC method threw) rejects as ActorExceptionError, so the
   * caller rethrows it with its name and message.
   */
  async serviceCall(key: string, req: InternalRequest, depth: number, entrypoint?: string): Promise<InternalResponse> {
    const served = this.served.get(key);
    if (!served) {
      throw new WorkerNotServedError(`worker ${key} is not served on this agent (a service binding reaches workers placed in the caller's region)`, { context: { worker: key } });
    }
    this.usageOf(key).requests++;
    return served.host.call(req, depth, entrypoint);
  }

  /** The definition of the version of a worker (`namespace/name`) served now. */
  /** An uncaught exception as the worker's author reads it (frames mapped through the bundle's source map), told to the listeners. */
  private exception(worker: string, err: WorkerScriptError, ray: string): WorkerException {
    const def = [...this.served.values()].find((s) => s.desired.def.name === worker)?.desired.def;
    let map: SourceMap | null | undefined;
    if (def) {
      map = this.sourceMaps.get(def.digest);
      if (map === undefined) {
        try { map = inlineSourceMap(def.source) ?? null; } catch { map = null; }
        if (this.sourceMaps.size >= MAX_SOURCE_MAPS) this.sourceMaps.delete(this.sourceMaps.keys().next().value!);
        this.sourceMaps.set(def.digest, map);
      }
    }
    const e = workerStack(err.message, `worker:${worker}.js`, map ?? undefined);
    for (const l of this.exceptionListeners) {
      try { l(worker, { ...e, ray }); } catch (listenerErr) { this.opts.log.warn('exception listener failed', { error: listenerErr }); }
    }
    return e;
  }

  private notHere(host: string, path: string): string | undefined {
    const w = this.opts.source.placedElsewhere?.(host, path);
    if (!w) return undefined;
    const here = this.opts.colo ?? 'this region';
    return `worker ${w.key} is routed for ${host}${path === '/' ? '' : path} but is not placed in region ${here}: it runs in ${w.regions.length > 0 ? w.regions.join(', ') : 'no region'} (spec.placement.regions; see edge status)`;
  }

  workerDefinition(key: string): WorkerDefinition | undefined {
    return this.served.get(key)?.desired.def;
  }

  /** Per-worker state, for /status and for reporting readiness upstream. */
  status(): WorkerState[] {
    const out: WorkerState[] = [];
    for (const [key, s] of this.served) {
      const err = this.errors.get(key);
      if (err) out.push({ key, digest: err.digest, state: 'error', error: err.error, servingDigest: s.desired.def.digest });
      else out.push({ key, digest: s.desired.def.digest, state: 'ready', isolates: s.host.isolates, ...(this.shards ? { shardMember: this.isMember(key) } : {}) });
    }
    for (const [key, err] of this.errors) if (!this.served.has(key)) out.push({ key, digest: err.digest, state: 'error', error: err.error });
    return out.sort((a, b) => a.key.localeCompare(b.key));
  }

  /**
   * Stops listening, lets requests in flight finish for at most `graceMs` (their isolates
   * are disposed only then), and disposes every isolate.
   */
  async stop(graceMs = 0): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.shardTimer) clearInterval(this.shardTimer);
    if (this.routerTimer) clearTimeout(this.routerTimer);
    await this.opts.source.stop();
    const cut = await this.front.close(graceMs);
    if (cut > 0) this.opts.log.warn('requests cut at the end of the drain', { requests: cut, graceMs });
    for (const s of this.served.values()) s.host.dispose();
    this.served.clear();
    this.dynamic.close();
    this.pool.close();
  }
}
