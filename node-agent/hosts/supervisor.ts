import { refNamespace } from '../../common/keys.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { EdgeError } from '../../common/errors.js';
import { FrameClient } from './frame-relay.js';
import type { Logger } from '../../common/log.js';
import { Router } from '../serving/router.js';
import type { ServedRoutes } from '../serving/worker-server.js';
import { CordonPolicy, type CordonChange, type CordonOptions } from './cordon.js';
import type { FrontMetrics } from './metrics.js';
import { asFromHost, type FromHost, type HostStatus, type MetricsJson, type ToHost } from './protocol.js';

// Keeps an agent's isolate-host processes running (docs/isolate-hosts.md): N hosts, each
// serving the namespaces assigned to its index, plus pre-booted spares (processes that have
// loaded every module and wait to be told which host to be), so replacing a crashed host is
// a promotion rather than a cold process start. By default there is a spare only for a while
// after a crash (CRASH_SPARE_MS): an idle spare is a fifth of an idle node's memory, and a
// crash is rare until a tenant finds a way to crash its host, when the next ones come soon.
// A host that keeps crashing is restarted with exponential backoff; while a host is down its
// workers stay in the route table, so the front answers 503 (not 404) for them.

export interface HostSupervisorOptions<Config> {
  /** How many hosts (namespaces are spread over them by common/isolate-hosts.ts). */
  count: number;
  /** Pre-booted spare processes kept ready at all times (0: only after a crash, see crashSpareMs). */
  spares: number;
  /** How long after a host's crash one spare is kept even with `spares` 0 (default CRASH_SPARE_MS; 0: never). */
  crashSpareMs?: number;
  /** argv of an isolate-host process (`edge isolate-host`): the executable first. */
  command: readonly string[];
  /** The private (0700) directory the hosts' Unix sockets go in. */
  socketDir: string;
  /** What host `index` is started with. */
  config(index: number): Config;
  log: Logger;
  metrics: FrontMetrics;
  env?: NodeJS.ProcessEnv;
  /** The CPU host `index` is told to pin itself to (hosts/cpu-affinity.ts); undefined, or absent: none. Never the cordon host. */
  cpuOf?(index: number): number | undefined;
  /** Run a cordon host (index = count) for tenants over their CPU share (hosts/cordon.ts); undefined: none. */
  cordon?: CordonOptions;
  /** How long the cordon host's process outlives the last namespace it serves (default CORDON_LINGER_MS). */
  cordonLingerMs?: number;
  /** How long a released namespace stays loaded in the cordon host (default RELEASE_GRACE_MS). */
  releaseGraceMs?: number;
}

/** How often the cordon is evaluated besides on each usage report (releases, decay). */
const CORDON_TICK_MS = 500;
/**
 * A released namespace stays loaded in the cordon host this long after the front stops
 * routing to it, so requests already on their way there are answered, not 404.
 */
const RELEASE_GRACE_MS = 10_000;
/**
 * The cordon host's process runs only while it serves something: it is started (from a
 * spare, when there is one) at the first cordon and stopped once it has served nothing for
 * this long. Most of the time nobody is cordoned, and an idle host process is ~40 MiB of a
 * node's memory (docs/agent.md, "Memory of an idle agent").
 */
const CORDON_LINGER_MS = 60_000;
/** The longest a request waits for its cordoned worker to load in the cordon host; then its home host serves it. */
const MOVE_WAIT_MS = 3_000;

/** Where a request goes; `moving`: wait for it, then ask again (its worker is moving to the cordon host). */
export interface HostRoute { index: number; worker: string; moving?: Promise<void> }

/**
 * After a host crashes, one spare is kept booted this long (from the latest crash), so the
 * crashes that follow are promotions: ~55 ms from the crash to serving again against
 * ~250 ms for a fresh process, with one small worker and no NATS (by hand, 2-core machine).
 * Then it is stopped: a booted spare holds ~17 MiB of private memory for nothing.
 */
const CRASH_SPARE_MS = 10 * 60_000;
/** Crashes within this window count towards the backoff. */
const CRASH_WINDOW_MS = 30_000;
/** Crashes in the window restarted at once; each one after doubles the delay from BACKOFF_FIRST_MS. */
const FREE_RESTARTS = 3;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** A host that stays silent this long on a status or metrics request is left out of the answer. */
const ASK_TIMEOUT_MS = 2_000;
/** How long stop() waits for a host to exit before SIGKILL. */
const STOP_GRACE_MS = 5_000;
/** Initial start: a host that fails this many times in a row fails the agent's start. */
const START_ATTEMPTS = 3;

export class IsolateHostStartError extends EdgeError {}

/** One child process: a spare, or the one behind a slot. */
class HostProcess {
  readonly booted: Promise<boolean>;
  readonly exited: Promise<void>;
  readonly startedAt = performance.now();
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly waiters = new Map<string, Set<(m: FromHost) => void>>();
  private readonly answers = new Map<number, (m: FromHost) => void>();
  private nextId = 1;
  onMessage: ((m: FromHost) => void) | undefined;

  constructor(readonly child: ChildProcess) {
    this.exited = new Promise((resolveExit) => child.once('exit', (code, signal) => { this.exit = { code, signal }; resolveExit(); }));
    this.booted = Promise.race([this.next('booted').then(() => true), this.exited.then(() => false)]);
    child.on('message', (raw) => {
      const m = asFromHost(raw);
      if (!m) return;
      if ((m.type === 'status' || m.type === 'metrics') && this.answers.has(m.id)) {
        this.answers.get(m.id)!(m);
        this.answers.delete(m.id);
        return;
      }
      for (const w of this.waiters.get(m.type) ?? []) w(m);
      this.waiters.delete(m.type);
      this.onMessage?.(m);
    });
    // The channel breaks when the child dies; its exit is what the supervisor acts on.
    child.on('error', () => { /* seen as exit */ });
  }

  get pid(): number | undefined { return this.child.pid; }
  get running(): boolean { return this.exit === undefined; }

  send(m: ToHost): void {
    if (!this.running || !this.child.connected) return;
    this.child.send(m, (err) => { if (err) { /* it died: its exit handler runs */ } });
  }

  /** The next message of a type; rejects when the process exits first. */
  next<T extends FromHost['type']>(type: T): Promise<Extract<FromHost, { type: T }>> {
    return new Promise((resolveMsg, reject) => {
      const set = this.waiters.get(type) ?? new Set();
      set.add((m) => resolveMsg(m as Extract<FromHost, { type: T }>));
      this.waiters.set(type, set);
      void this.exited.then(() => reject(new IsolateHostStartError(`isolate host process ${this.pid ?? '?'} exited (${describeExit(this.exit)})`)));
    });
  }

  /** Asks for status or metrics; undefined when it does not answer in time. */
  ask(type: 'status' | 'metrics'): Promise<FromHost | undefined> {
    const id = this.nextId++;
    return new Promise((resolveAsk) => {
      const timer = setTimeout(() => { this.answers.delete(id); resolveAsk(undefined); }, ASK_TIMEOUT_MS);
      this.answers.set(id, (m) => { clearTimeout(timer); resolveAsk(m); });
      void this.exited.then(() => { clearTimeout(timer); this.answers.delete(id); resolveAsk(undefined); });
      this.send({ type, id });
    });
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal);
  }

  private stopped: Promise<void> | undefined;

  /** Tells it to stop, SIGKILL after STOP_GRACE_MS; resolves once it exited. Idempotent. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.send({ type: 'stop' });
      const timer = setTimeout(() => this.kill('SIGKILL'), STOP_GRACE_MS);
      await this.exited;
      clearTimeout(timer);
    })();
    return this.stopped;
  }
}

function describeExit(e: { code: number | null; signal: NodeJS.Signals | null } | undefined): string {
  if (!e) return 'running';
  return e.signal ? `signal ${e.signal}` : `code ${e.code ?? '?'}`;
}

function closeTarget(t: HostTarget | undefined): void {
  if (!t) return;
  // Requests still on it fail (the host is gone or the agent stops): proxy.ts answers them.
  t.frames.close();
}

/** What the front needs to reach a host that is up. */
export interface HostTarget {
  index: number;
  /** The host's HTTP socket: WebSocket upgrades, each on a connection of its own. */
  socketPath: string;
  /** Every other request, as frames on one connection (frame-relay.ts). */
  frames: FrameClient;
}

interface Slot {
  index: number;
  proc: HostProcess | undefined;
  target: HostTarget | undefined;
  /** What the host served last: kept while it is down, so its workers answer 503. */
  routes: ServedRoutes[];
  crashes: number[];
  restarts: number;
  timer: NodeJS.Timeout | undefined;
  ready: boolean;
  /** performance.now() when it went down (for the restart-time metric). */
  downSince: number | undefined;
  /** A restart is scheduled or under way. */
  pending: boolean;
  /** The CPU its process pinned itself to (its `ready` says; hosts/cpu-affinity.ts). */
  cpu: number | undefined;
}

/** The front's view of one host, for /status. */
export interface HostInfo {
  index: number;
  pid: number | undefined;
  up: boolean;
  restarts: number;
  workers: string[];
  /** The cordon host (hosts/cordon.ts): serves the cordoned namespaces at the lowest CPU priority. */
  cordon?: true;
  /** The CPU it pinned itself to (hosts/cpu-affinity.ts); absent: unpinned. */
  cpu?: number;
}

export class HostSupervisor<Config> {
  private readonly slots: Slot[];
  private readonly spares: HostProcess[] = [];
  private stopping = false;
  private router = Router.build<number>([]);
  private spareTimer: NodeJS.Timeout | undefined;
  /** Runs from a host's crash until CRASH_SPARE_MS after the latest: meanwhile one spare is kept. */
  private crashSpareTimer: NodeJS.Timeout | undefined;
  /** Decides which namespaces the cordon host serves; undefined without one. */
  readonly cordon: CordonPolicy | undefined;
  private cordonTimer: NodeJS.Timeout | undefined;
  /** Namespaces released from the cordon, and when (see RELEASE_GRACE_MS). */
  private readonly released = new Map<string, number>();
  /** What the hosts were last told (see tellHosts). */
  private cordonTold = '';
  /** Workers on their way to the cordon host (see moving()). */
  private readonly moves = new Map<string, { promise: Promise<void>; resolve(): void; expired: boolean }>();
  /** Since when the cordon host has had nothing to serve (see CORDON_LINGER_MS); undefined while it serves or is down. */
  private cordonIdleSince: number | undefined;
  /** Cordon host processes told to stop for having nothing to serve, until they exit (stop() waits for them too). */
  private readonly retiring = new Set<HostProcess>();

  constructor(private readonly opts: HostSupervisorOptions<Config>) {
    const n = opts.count + (opts.cordon ? 1 : 0);
    this.slots = Array.from({ length: n }, (_, index) => ({
      index, proc: undefined, target: undefined, routes: [], crashes: [], restarts: 0, timer: undefined, ready: false, downSince: undefined, pending: false, cpu: undefined,
    }));
    if (opts.cordon) {
      this.cordon = new CordonPolicy(opts.cordon);
      this.cordonTimer = setInterval(() => this.evaluateCordon(), CORDON_TICK_MS);
      this.cordonTimer.unref();
    }
  }

  private get cordonSlot(): Slot | undefined { return this.cordon ? this.slots[this.opts.count] : undefined; }

  /** Starts every host (the cordon host waits for a cordon) and the spares; resolves when each host has loaded its initial desired state. */
  async start(): Promise<void> {
    // Standing spares boot beside the hosts: the first crash already finds one.
    this.fillSpares();
    await Promise.all(this.slots.filter((s) => s !== this.cordonSlot).map(async (slot) => {
      let last: unknown;
      for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
        try {
          await this.launch(slot);
          return;
        } catch (err) {
          last = err;
          if (this.stopping) throw err;
          this.opts.log.warn('isolate host failed to start', { host: slot.index, attempt, error: err });
        }
      }
      throw new IsolateHostStartError(`isolate host ${slot.index} failed to start ${START_ATTEMPTS} times`, { cause: last, context: { host: slot.index } });
    }));
  }

  /** Whether every host has served at least once (the front's /readyz); the cordon host is started only when needed. */
  get ready(): boolean { return this.slots.every((s) => s.ready || s === this.cordonSlot); }

  /** The host that serves a request, by the route table the hosts reported; undefined = no route. */
  route(host: string, path: string): HostRoute | undefined {
    const m = this.router.match(host, path);
    if (!m) return undefined;
    const moving = m.target !== this.opts.count ? this.moving(m.key) : undefined;
    return { index: m.target, worker: m.key, ...(moving ? { moving } : {}) };
  }

  /**
   * While a cordoned namespace's worker is loading in the cordon host, its requests wait
   * here rather than run in the home host: at normal priority the tenant would out-compete
   * the cordon host that is loading it, and the move would take as long as it spins.
   */
  private moving(key: string): Promise<void> | undefined {
    const slot = this.cordonSlot;
    // Held while the cordon host is up or starting; a cordon host that is down serves nobody.
    if (!slot || !(slot.target || slot.pending) || !this.cordon!.isCordoned(refNamespace(key))) return undefined;
    let m = this.moves.get(key);
    if (!m) {
      let resolveMove!: () => void;
      const promise = new Promise<void>((r) => { resolveMove = r; });
      const timer = setTimeout(() => { m!.expired = true; resolveMove(); }, MOVE_WAIT_MS);
      timer.unref();
      m = { promise, resolve: () => { clearTimeout(timer); resolveMove(); }, expired: false };
      this.moves.set(key, m);
    }
    return m.expired ? undefined : m.promise;
  }

  /** How to reach host `index`, or undefined while it is down. */
  target(index: number): HostTarget | undefined {
    return this.slots[index]?.target;
  }

  /** The CPU host `index` is told to pin itself to; none for the cordon host (index = count). */
  private cpuOf(index: number): number | undefined {
    return index < this.opts.count ? this.opts.cpuOf?.(index) : undefined;
  }

  hosts(): HostInfo[] {
    return this.slots.map((s) => ({
      index: s.index, pid: s.proc?.pid, up: s.target !== undefined, restarts: s.restarts, workers: s.routes.map((r) => r.key),
      ...(s === this.cordonSlot ? { cordon: true as const } : {}),
      ...(s.cpu !== undefined ? { cpu: s.cpu } : {}),
    }));
  }

  /** Every host's status (hosts that are down or silent are left out). */
  async status(): Promise<HostStatus[]> {
    const answers = await Promise.all(this.slots.map((s) => s.target && s.proc ? s.proc.ask('status') : undefined));
    return answers.flatMap((a) => a?.type === 'status' ? [a.status] : []);
  }

  async metrics(): Promise<MetricsJson[]> {
    const answers = await Promise.all(this.slots.map((s) => s.target && s.proc ? s.proc.ask('metrics') : undefined));
    return answers.flatMap((a) => a?.type === 'metrics' ? [a.metrics] : []);
  }

  /** Every host drains (hands its actors over) and keeps serving until stop(). */
  async drain(): Promise<void> {
    await Promise.all(this.slots.map(async (s) => {
      const p = s.proc;
      if (!p || !s.target) return;
      const drained = p.next('drained').catch(() => undefined);
      p.send({ type: 'drain' });
      await drained;
    }));
  }

  /** Stops every host and spare (SIGKILL after a grace period); no restarts from here on. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.spareTimer) clearTimeout(this.spareTimer);
    if (this.crashSpareTimer) clearTimeout(this.crashSpareTimer);
    if (this.cordonTimer) clearInterval(this.cordonTimer);
    for (const m of this.moves.values()) { m.expired = true; m.resolve(); }
    for (const s of this.slots) if (s.timer) clearTimeout(s.timer);
    const procs = [...this.slots.flatMap((s) => s.proc ? [s.proc] : []), ...this.spares.splice(0), ...this.retiring];
    await Promise.all(procs.map((p) => p.stop()));
    for (const s of this.slots) closeTarget(s.target);
  }

  private spawn(): HostProcess {
    const [cmd, ...args] = this.opts.command;
    const child = spawn(cmd!, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: this.opts.env ?? process.env, serialization: 'json' });
    return new HostProcess(child);
  }

  /** The booted (or booting) spares' pids. */
  spareProcesses(): number[] {
    return this.spares.flatMap((p) => p.pid !== undefined ? [p.pid] : []);
  }

  /** The standing spares, plus one while a crash is recent (CRASH_SPARE_MS). */
  private get sparesWanted(): number {
    return Math.max(this.opts.spares, this.crashSpareTimer ? 1 : 0);
  }

  private get crashSpareMs(): number { return this.opts.crashSpareMs ?? CRASH_SPARE_MS; }

  /** A host crashed: keep a spare from now until CRASH_SPARE_MS after the latest crash. */
  private crashed(): void {
    if (this.crashSpareMs <= 0) return;
    if (this.crashSpareTimer) clearTimeout(this.crashSpareTimer);
    this.crashSpareTimer = setTimeout(() => { this.crashSpareTimer = undefined; this.trimSpares(); }, this.crashSpareMs);
    this.crashSpareTimer.unref();
    // Spawned now only when no host is being replaced; otherwise once the replacement serves
    // (launch), so the two do not compete for the CPU.
    if (!this.slots.some((s) => s.pending)) this.fillSpares();
  }

  /** Stops the spares beyond what is wanted (the crash spare, once its time is over). */
  private trimSpares(): void {
    while (!this.stopping && this.spares.length > this.sparesWanted) {
      const p = this.spares.pop()!;
      this.retiring.add(p);
      void p.stop().then(() => this.retiring.delete(p));
      this.opts.log.info('spare isolate host stopped: no crash for a while', { pid: p.pid, afterMs: this.crashSpareMs });
    }
  }

  private fillSpares(): void {
    if (this.stopping) return;
    while (this.spares.length < this.sparesWanted) {
      const p = this.spawn();
      this.spares.push(p);
      void p.exited.then(() => {
        const i = this.spares.indexOf(p);
        if (i < 0) return; // promoted: its slot watches it
        this.spares.splice(i, 1);
        this.opts.log.warn('spare isolate host exited', { pid: p.pid, exit: describeExit(p.exit) });
        // A spare that cannot even boot must not be respawned in a tight loop.
        if (!this.spareTimer) this.spareTimer = setTimeout(() => { this.spareTimer = undefined; this.fillSpares(); }, 1_000);
      });
    }
  }

  /** A booted spare if there is one (it is replaced at once), else a fresh process. */
  private async takeProcess(): Promise<HostProcess> {
    // The used spare is replaced once the host it became serves (launch), so the two do not
    // compete for the CPU while the restart is under way.
    while (this.spares.length > 0) {
      const p = this.spares.shift()!;
      if (await p.booted) return p;
    }
    const p = this.spawn();
    if (!(await p.booted)) throw new IsolateHostStartError(`isolate host process ${p.pid ?? '?'} exited while booting (${describeExit(p.exit)})`);
    return p;
  }

  /** Makes a process host `slot`, and resolves once it serves. */
  private async launch(slot: Slot): Promise<void> {
    const p = await this.takeProcess();
    if (this.stopping) { p.kill('SIGKILL'); throw new IsolateHostStartError('the agent is stopping'); }
    slot.proc = p;
    p.onMessage = (m) => {
      if (m.type === 'routes') this.setRoutes(slot, m.routes);
      else if (m.type === 'usage' && this.cordon) {
        this.cordon.report(performance.now(), m.usage);
        this.evaluateCordon();
      }
    };
    void p.exited.then(() => this.exited(slot, p));
    const ready = p.next('ready');
    const cpu = this.cpuOf(slot.index);
    p.send({ type: 'start', index: slot.index, count: this.opts.count, socketDir: this.opts.socketDir, config: this.opts.config(slot.index), ...(cpu !== undefined ? { cpu } : {}) });
    const m = await ready;
    // No timeouts on the relay: the host bounds a request by the worker's wall limit, and a
    // streamed body may pause for as long as its worker waits.
    slot.target = { index: slot.index, socketPath: m.socketPath, frames: new FrameClient(m.framesPath, this.opts.log) };
    slot.ready = true;
    slot.cpu = m.cpu;
    this.setRoutes(slot, m.routes);
    if (this.cordon) this.tellHosts(true);
    this.countHostsUp();
    this.fillSpares();
    if (slot.downSince !== undefined) {
      this.opts.metrics.restartSeconds.observe((performance.now() - slot.downSince) / 1000);
      this.opts.log.info('isolate host restarted', { host: slot.index, pid: p.pid, downMs: Math.round(performance.now() - slot.downSince) });
      slot.downSince = undefined;
    } else {
      this.opts.log.info('isolate host ready', { host: slot.index, pid: p.pid, workers: m.routes.length });
    }
  }

  private countHostsUp(): void {
    this.opts.metrics.hostsUp.set(this.slots.filter((s) => s.target).length);
  }

  private setRoutes(slot: Slot, routes: ServedRoutes[]): void {
    slot.routes = routes;
    this.rebuildRouter();
  }

  /**
   * One claimant per worker: a cordoned namespace's workers go to the cordon host once it has
   * loaded them, and to their home host until then (and again once released), so a move
   * never leaves a moment with no host for them.
   */
  private rebuildRouter(): void {
    const cordonSlot = this.cordonSlot;
    const inCordon = new Set(cordonSlot?.routes.map((r) => r.key) ?? []);
    const cordoned = (key: string) => this.cordon?.isCordoned(refNamespace(key)) === true;
    this.router = Router.build(this.slots.flatMap((s) => s.routes
      .filter((r) => s === cordonSlot ? cordoned(r.key) : !(cordoned(r.key) && inCordon.has(r.key)))
      .map((r) => ({ key: r.key, routes: r.routes, target: s.index }))));
    // Moves that are over: loaded in the cordon host, or released (or timed out) and home again.
    for (const [key, m] of this.moves) {
      if (inCordon.has(key) || !cordoned(key)) {
        m.resolve();
        this.moves.delete(key);
      }
    }
  }

  private evaluateCordon(): void {
    if (!this.cordon || this.stopping) return;
    const now = performance.now();
    const changes = this.cordon.evaluate(now);
    for (const c of changes) {
      this.logCordon(c);
      if (c.cordoned) this.released.delete(c.namespace); else this.released.set(c.namespace, now);
    }
    for (const [ns, at] of this.released) if (now - at >= (this.opts.releaseGraceMs ?? RELEASE_GRACE_MS)) this.released.delete(ns);
    const cordoned = this.cordon.cordoned();
    this.opts.metrics.cordoned.set(cordoned.length);
    if (changes.length > 0) this.rebuildRouter();
    this.tellHosts();
    this.scaleCordonHost(now, cordoned.length > 0 || this.released.size > 0);
  }

  /** Starts the cordon host when it has something to serve; stops it once it has had nothing for CORDON_LINGER_MS. */
  private scaleCordonHost(now: number, serves: boolean): void {
    const slot = this.cordonSlot;
    if (!slot || this.stopping) return;
    if (serves) {
      this.cordonIdleSince = undefined;
      // A crashed one is already being restarted (slot.pending); the first cordon starts it.
      if (!slot.proc && !slot.pending) {
        this.opts.log.info('starting the cordon host', { namespaces: this.cordon!.cordoned() });
        this.scheduleRestart(slot, false);
      }
      return;
    }
    if (!slot.target || slot.pending) { this.cordonIdleSince = undefined; return; }
    this.cordonIdleSince ??= now;
    if (now - this.cordonIdleSince < (this.opts.cordonLingerMs ?? CORDON_LINGER_MS)) return;
    this.cordonIdleSince = undefined;
    const p = slot.proc!;
    // Forgotten before it is told to stop: its exit is not a crash (exited() ignores it).
    slot.proc = undefined;
    closeTarget(slot.target);
    slot.target = undefined;
    slot.ready = false;
    slot.routes = [];
    this.rebuildRouter();
    this.countHostsUp();
    this.retiring.add(p);
    void p.stop().then(() => this.retiring.delete(p));
    this.opts.log.info('cordon host stopped: nothing to serve', { pid: p.pid, idleMs: this.opts.cordonLingerMs ?? CORDON_LINGER_MS });
  }

  /**
   * The cordon host serves the cordoned namespaces and, for a grace period, the ones just
   * released; the home hosts let their warm isolates of the cordoned ones go.
   */
  private tellHosts(force = false): void {
    const cordoned = this.cordon!.cordoned();
    const serve = [...new Set([...cordoned, ...this.released.keys()])].sort();
    const told = `${serve.join(',')};${cordoned.join(',')}`;
    if (!force && told === this.cordonTold) return;
    this.cordonTold = told;
    for (const s of this.slots) s.proc?.send({ type: 'cordon', namespaces: s === this.cordonSlot ? serve : cordoned });
  }

  private logCordon(c: CordonChange): void {
    if (c.cordoned) {
      this.opts.metrics.cordons.inc({ namespace: c.namespace, reason: c.reason ?? 'cpu-share' });
      this.opts.log.warn('namespace cordoned: its workers move to the low-priority isolate host', { namespace: c.namespace, reason: c.reason, cpuCores: c.cpuCores });
    } else {
      this.opts.log.info('namespace released from the cordon', { namespace: c.namespace, cpuCores: c.cpuCores });
    }
  }

  private exited(slot: Slot, p: HostProcess): void {
    if (slot.proc !== p) return;
    const served = slot.target !== undefined;
    slot.proc = undefined;
    closeTarget(slot.target);
    slot.target = undefined;
    this.countHostsUp();
    if (this.stopping) return;
    slot.downSince ??= performance.now();
    const reason = p.exit?.signal ?? `exit ${p.exit?.code ?? '?'}`;
    this.opts.metrics.hostCrashes.inc({ host: String(slot.index), reason });
    // Its tenants are the ones it took down: name them, they are who to look at.
    this.opts.log.error('isolate host died; its workers answer 503 until it is back', {
      host: slot.index, pid: p.pid, exit: describeExit(p.exit), workers: slot.routes.map((r) => r.key),
    });
    // A death before it served is a failed launch: launch()'s caller reschedules.
    if (served) this.scheduleRestart(slot);
    this.crashed();
  }

  /**
   * Restarts a host: at once for the first few crashes in the window, then with doubling
   * delays. `crashed` false: the cordon host's start at a cordon (no crash to count).
   */
  private scheduleRestart(slot: Slot, crashed = true): void {
    if (this.stopping || slot.pending) return;
    slot.pending = true;
    const now = performance.now();
    slot.crashes = slot.crashes.filter((t) => now - t < CRASH_WINDOW_MS);
    if (crashed) {
      slot.crashes.push(now);
      slot.restarts++;
    }
    const n = slot.crashes.length;
    const delay = n <= FREE_RESTARTS ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (n - FREE_RESTARTS - 1));
    if (delay > 0) this.opts.log.warn('isolate host keeps crashing; backing off', { host: slot.index, crashes: n, restartInMs: delay });
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (this.stopping) return;
      this.launch(slot).then(() => { slot.pending = false; }, (err: unknown) => {
        slot.pending = false;
        if (this.stopping) return;
        this.opts.log.warn('isolate host restart failed', { host: slot.index, error: err });
        this.scheduleRestart(slot);
      });
    }, delay);
  }
}
