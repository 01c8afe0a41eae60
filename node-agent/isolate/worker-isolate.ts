import { ActorExceptionError, EXCEPTION_MARK, decodeResponse, encodeRequestHead, exceptionFromRejection, type ActorException, isolateEnv, wireBody, type DispatchRequest, type DispatchResponse, type HostCallbacks, type Settled, type WireResponse, type WorkerEnv } from '../abi/bridge.js';
import type { Limits } from '../../common/api/index.js';
import type { EgressPolicy } from '../../common/api/policy.js';
import type { ActorInitOptions } from '../abi/bridge.js';
import type { IsolateOwner, WarmIsolate } from './pool.js';
import { IsolateSockets, type SocketEvent } from '../sockets/isolate-sockets.js';
import { SocketRegistry } from '../sockets/sockets.js';
import { EdgeError } from '../../common/errors.js';
import { availableParallelism } from 'node:os';
import type ivm from 'isolated-vm';
import { BUILTIN_MODULES, LOAD_ROOT_IMPORTS, NODEJS_COMPAT_FLAG, isBuiltinModule, isNodeBuiltinSpecifier, nodeImportRefusal, nodeModuleName } from '../../common/builtin-modules.js';
import { hideNodeModules, installNodeCompat, nodeModuleCode } from './node-compat.js';
import { htmlRewriterModule } from './html-rewriter.js';
import { libModule } from './libs.js';
import { compileCached, SYNC_COMPILE_MAX_CHARS } from './code-cache.js';
import { chargedNs, CpuLedger, type CpuSeen } from './cpu-ledger.js';
import { decodeModuleMap, isModuleMapSource } from '../../common/module-map.js';
import { ModuleImportError, ModuleMapLoader, moduleMapBytes, prepareModuleMap, type PreparedModuleMap } from './module-map-loader.js';

// One worker's module loaded into one isolate, running one request at a time. It enforces
// the per-request CPU and wall budgets (a shared watchdog samples isolate.cpuTime) and
// the memory limit (V8's, set on the isolate); crossing one disposes the isolate and the
// request fails with a WorkerLimitError naming the limit.

export type LimitReason = 'cpu' | 'memory' | 'wall';
export type DisposalReason = LimitReason | 'crash' | 'idle' | 'replaced' | 'shutdown' | 'reset';

export class WorkerLimitError extends EdgeError {
  constructor(readonly worker: string, readonly reason: LimitReason, limits: Limits) {
    const what = {
      cpu: `its CPU limit (${limits.cpuMsPerRequest} ms per request)`,
      memory: `its memory limit (${limits.memoryMiB} MiB)`,
      wall: `its wall-time limit (${limits.wallMsPerRequest} ms per request)`,
    }[reason];
    super(`worker ${worker} exceeded ${what}`, { context: { worker } });
  }
}

/** The worker's own code failed: threw, returned a non-Response, or has no handler. */
export class WorkerScriptError extends EdgeError {
  constructor(
    readonly worker: string,
    message: string,
    /** When the worker's own code threw: that exception's name and message (for an actor's caller). */
    readonly exception?: ActorException,
  ) { super(message, { context: { worker } }); }
}

/** The module could not be compiled or evaluated, or exports no handler. */
export class BundleError extends EdgeError {
  constructor(readonly worker: string, message: string, options?: ErrorOptions) { super(`worker ${worker}: ${message}`, { ...options, context: { worker } }); }
}

export interface WorkerDefinition {
  /** namespace/name */
  key: string;
  name: string;
  source: string;
  /** sha256:<hex> of the source and the config that shapes the isolate. */
  digest: string;
  limits: Limits;
  env: WorkerEnv;
  /** Where the worker's fetch() may connect (absent: DEFAULT_EGRESS_POLICY); enforced by the bindings. */
  egress?: EgressPolicy;
  /** spec.compatibilityFlags: nodejs_compat makes node:* modules and the Buffer/process globals exist. */
  compatibilityFlags?: readonly string[];
}

/** An actor isolate (see actors/isolate.ts): the exported class and the actor's id. */
export type ActorMode = ActorInitOptions;

/**
 * What the isolate core is handed to serve one isolate's host callbacks: the host side of
 * env.*, fetch and state.storage lives in bindings/, built by the embedder (the agent, an
 * actor activation, a test), so this layer never constructs a binding (workerd's
 * workerd-api.h seam).
 */
export interface BindingContext {
  def: WorkerDefinition;
  /** console output of the worker. */
  onLog(level: string, message: string): void;
  /** Called before each subrequest; throws when the request's budget is spent. */
  countSubrequest(): void;
  /** The isolate's WebSockets (server ends bridged to the host). */
  sockets: IsolateSockets;
  /** A socket an actor handed this isolate: the only foreign one its response may return. */
  grantSocket(registryId: number): void;
  /** The service-binding depth of the request in flight (DispatchRequest.depth; 0 outside one). */
  requestDepth?(): number;
  /** Runs an RPC callee's call on a function or RpcTarget this isolate passed as an argument (WorkerIsolate.rpcLocal). */
  invokeLocal?(message: string): Promise<string>;
  /** Hands the isolate an asynchronous callback's outcome (HostAsync in bridge.ts); dropped once the isolate is gone. */
  settleHost(ticket: number, outcome: Settled<unknown>): void;
}

export interface IsolateBindings {
  /** bodyDemand is the isolate core's own. */
  callbacks: Omit<HostCallbacks, 'bodyDemand' | 'htmlRewriter' | 'lib'>;
  /** The request in flight ended: nothing it started may outlive it. */
  requestEnded(): void;
  /** The isolate is gone. */
  dispose(): void;
  /** Bytes the host holds for this isolate outside its heap (subrequest bodies in flight). */
  hostBytes?(): number;
}

export type BindingsFactory = (ctx: BindingContext) => IsolateBindings;

export interface IsolateHooks {
  onLog(worker: string, level: string, message: string): void;
  onDispose(worker: string, reason: DisposalReason): void;
  /** CPU time one request (or the module's top level) used, when it ends: the agent's per-tenant CPU accounting. */
  onCpu?(worker: string, cpuMs: number): void;
  /** Builds each isolate's host callbacks (bindings/hostBindings in the agent). */
  bindings: BindingsFactory;
  /** The agent's sockets; WebSockets the isolate accepts are registered here (default: a registry of its own). */
  sockets?: SocketRegistry;
}

/**
 * Whoever runs an isolate's socket events: a WorkerHost for plain workers, an actor's
 * input gate for actors. Events run user code, so they are never run beside a request:
 * the owner queues them and calls deliver(socketId, event) for each, in order, whenever
 * the isolate is not busy.
 */
export interface SocketOwner {
  /** An event for one of the isolate's sockets (socketId: its SocketRegistry id). */
  socketEvent(isolate: WorkerIsolate, socketId: number, event: SocketEvent): void;
  /** The isolate's last open socket is over (it may now be reaped, or disposed after a version swap). */
  socketsClosed?(isolate: WorkerIsolate): void;
}


// Tenant code never runs on the agent's event loop: every call into an isolate that can
// run worker code is asynchronous (isolated-vm's threads), so a tenant spins at most until
// its own CPU limit without holding up anyone else. There used to be a synchronous fast
// path for handlers that answer without waiting (two applySync calls, no thread hop). It
// cannot be bounded: applySync first waits for the isolate's lock, and an isolate can be
// running worker code on one of isolated-vm's threads between requests (a timer or a
// fetch's continuation, a FinalizationRegistry callback, a WebAssembly.compile
// continuation), so a quick handler's next request froze the event loop for as long as
// that code spun. See docs/agent.md, "Dispatch".

/** How WorkerIsolate.load loads. */
export interface LoadOptions {
  /**
   * Answer once init (the env, the handlers) is queued on the isolate's thread, with the
   * first request to be queued behind it: a load whose first request follows at once (a
   * dynamic worker's, a cold start's) skips the round trips. A single module without
   * nodejs_compat has its evaluation queued with init too; others answer once it is done.
   * A module that fails to evaluate or init fails that request instead of the load. Not
   * for actors.
   */
  pipelineInit?: boolean;
}

/**
 * Workers' limit on a worker's startup (its module's top level, the global scope): 1 s of
 * CPU, as on Cloudflare (developers.cloudflare.com/workers/platform/limits, "Worker
 * startup time"). Fixed rather than the tenant's cpuMsPerRequest (up to 30 s) because
 * startup is not a request the tenant is billed for, and a version that cannot start in a
 * second is refused before it serves anything. It runs off the event loop either way.
 */
export const STARTUP_CPU_MS = 1000;
/** Startup's wall-time bound: a top level awaiting a timer that never fires is refused too. */
export const STARTUP_WALL_MS = 10_000;

/**
 * Module loads running at once, agent-wide. A top level may spin for its whole startup
 * budget on one of isolated-vm's threads, and the OS shares the cores between threads, not
 * tenants: eleven loads of a worker that spins 950 ms at startup left the event loop one
 * twelfth of two cores and the neighbour's throughput fell a hundredfold. Loads beyond
 * this wait their turn, taken round-robin across workers so one tenant's queue of loads
 * delays another tenant's cold start by one load at most.
 */
export const MAX_CONCURRENT_LOADS = Math.max(1, availableParallelism() - 1);

class LoadGate {
  private running = 0;
  /** worker key -> loads waiting, in order; a Map iterates in insertion order. */
  private readonly waiting = new Map<string, (() => void)[]>();

  async acquire(worker: string): Promise<void> {
    if (this.running < MAX_CONCURRENT_LOADS && this.waiting.size === 0) {
      this.running += 1;
      return;
    }
    await new Promise<void>((resolve) => {
      const queue = this.waiting.get(worker);
      if (queue) queue.push(resolve);
      else this.waiting.set(worker, [resolve]);
    });
  }

  release(): void {
    const next = this.waiting.entries().next();
    if (next.done) { this.running -= 1; return; }
    const [worker, queue] = next.value;
    const resolve = queue.shift()!;
    // The worker goes to the back of the rotation.
    this.waiting.delete(worker);
    if (queue.length > 0) this.waiting.set(worker, queue);
    resolve();
  }
}
const loads = new LoadGate();

/** This process's CPU time (all threads), in ns: what the CPU limit is charged from (cpu-ledger.ts). */
function processCpuNs(): bigint {
  const u = process.cpuUsage();
  return BigInt(u.user + u.system) * 1000n;
}

/** processCpuNs() read once per watchdog tick. */
let tickProcCpu: bigint | undefined;
const procCpu = (): bigint => (tickProcCpu ??= processCpuNs());

/** Every isolate's time and the main thread's, for the share of the process's CPU each request is charged. */
const ledger = new CpuLedger(() => performance.eventLoopUtilization().active);

/**
 * The isolates with a request or a load in flight, for the watchdog: an array with each
 * isolate's index on it (WorkerIsolate.activeAt), not a Set, which V8 rebuilt in old space
 * at every request's end (docs/agent.md, "Old-space garbage per request").
 */
const active: WorkerIsolate[] = [];

function addActive(w: WorkerIsolate): void {
  if (w.activeAt >= 0) return;
  w.activeAt = active.length;
  active.push(w);
}

function removeActive(w: WorkerIsolate): void {
  const at = w.activeAt;
  if (at < 0) return;
  const last = active.pop()!;
  if (last !== w) { active[at] = last; last.activeAt = at; }
  w.activeAt = -1;
}

let watchdog: NodeJS.Timeout | undefined;
const WATCHDOG_MS = 5;

function ensureWatchdog(): void {
  if (watchdog) return;
  watchdog = setInterval(() => {
    if (active.length === 0) { clearInterval(watchdog); watchdog = undefined; return; }
    tickProcCpu = undefined;
    // Everyone's time first, so each request's share is taken against the same look.
    ledger.observeMain();
    for (const w of active) w.observeCpu();
    const now = performance.now();
    // Backwards: an isolate killed here leaves the list, and the one moved into its place was already checked.
    for (let i = active.length - 1; i >= 0; i--) active[i]?.checkBudgets(now);
  }, WATCHDOG_MS);
  watchdog.unref();
}

/** What a request's answer fails with when its isolate is gone: isolated-vm's words for it, which failure() reads. */
const ISOLATE_GONE = 'Isolate was disposed during execution';
const ISOLATE_GONE_MEMORY = 'Isolate was disposed during execution due to memory limit';

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

interface Inflight {
  id: number;
  cpuStart: bigint;
  /**
   * This process's CPU time at the first watchdog tick after the start (procCpu()), unset
   * until then, with the isolate's and the ledger's readings at that tick: the CPU kill
   * charges the request its share of the process's CPU since (cpu-ledger.ts). Read per
   * tick, not per request: getrusage cost ~8 µs a request, 9 % of a busy host's main
   * thread. Taken after the start, the process time since it is never more than since the
   * start, so the kill can only come later (one tick at most), never sooner.
   */
  procStart?: { procNs: bigint; ownNs: bigint; allNs: bigint };
  wallStart: number;
  subrequests: number;
  settled: boolean;
  /** Set while the module loads: the startup budgets apply, and no I/O is allowed. */
  startup?: boolean;
  /** Budgets of a platform event (a SQLite actor opening its database) instead of the request's. */
  budget?: EventBudget;
  /** The handler returned and its body streams to a caller who reads at its pace: no wall limit (see bodyStreaming). */
  wallFree?: boolean;
  /** CPU time up to which hooks.onCpu was told (cpuStart until the first report). */
  cpuCounted?: bigint;
  /** DispatchRequest.depth. */
  depth?: number;
  /** isolate.cpuTime at the last look of stalledOutside(), and how many looks in a row saw it unchanged. */
  cpuSeen?: bigint;
  stillLooks?: number;
}

/** CPU and wall budgets of one actor event when they are not a request's (see actorEvent). */
export interface EventBudget { cpuMs: number; wallMs: number }

/** A request still running is counted (hooks.onCpu) in steps of at least this much CPU, so a spinning tenant shows within a watchdog tick. */
const CPU_REPORT_STEP_NS = 20_000_000n;

export class WorkerIsolate implements IsolateOwner {
  private nextId = 1;
  /** The request in flight: budgets are measured from its start. */
  private inflight: Inflight | undefined;
  /** A pipelined init still running (LoadOptions.pipelineInit): the first request's answer waits for it. */
  private initPending: Promise<void> | undefined;
  /** Its failure: the isolate served nothing and is gone; it is not replaced (WorkerHost). */
  initFailed = false;
  private killedFor: LimitReason | undefined;
  /** The kill came while the module or init still ran (a request queued behind a pipelined load): the load's error is the answer. */
  private killedInStartup = false;
  private disposed = false;
  private readonly cbs: HostCallbacks;
  /** The host side of env.* for this isolate: told when a request ends and when the isolate goes. */
  private readonly bindings: IsolateBindings;
  /** WebSockets whose server end is in this isolate. */
  private readonly sockets: IsolateSockets;
  private socketOwner: SocketOwner | undefined;
  /** Sockets actors handed this isolate (by registry id): the only foreign ones it may return. */
  private readonly grantedSockets = new Set<number>();
  /**
   * The request begun and not answered yet (answer(), the shim's respond callback): an
   * isolate runs one at a time (begin() refuses a second). A field, not a Map keyed by id: a
   * long-lived Map emptied at every request's end has V8 rebuild its table in old space each
   * time (docs/agent.md, "Old-space garbage per request").
   */
  private unanswered: { id: number; resolve(r: WireResponse): void; reject(err: unknown): void } | undefined;
  /** Where this isolate is in `active` (the watchdog's list); -1: not there. */
  activeAt = -1;
  /** The streamed request body's demand (bodyDemand calls) for the request in flight. */
  private demand: { id: number; wanted: boolean; waiter?: ((ok: boolean) => void) | undefined } | undefined;
  readonly createdAt = performance.now();
  lastUsed = performance.now();
  /** Its cpuTime at the ledger's last look (observeCpu). */
  private readonly cpuSeen: CpuSeen;

  private constructor(
    readonly def: WorkerDefinition,
    private readonly warm: WarmIsolate,
    private readonly hooks: IsolateHooks,
    private readonly actor?: ActorMode,
  ) {
    this.cpuSeen = { cpuNs: warm.isolate.cpuTime };
    this.sockets = new IsolateSockets(hooks.sockets ?? new SocketRegistry(), def.name, (socket, event) => {
      if (this.dead) return;
      if (this.socketOwner) this.socketOwner.socketEvent(this, socket.id, event);
      else hooks.onLog(def.name, 'error', `a WebSocket event arrived for an isolate nobody runs events for; socket ${socket.id} dropped it`);
    }, () => this.socketOwner?.socketsClosed?.(this), def.limits.memoryMiB);
    this.bindings = hooks.bindings({
      def,
      sockets: this.sockets,
      grantSocket: (id) => this.grantedSockets.add(id),
      requestDepth: () => this.inflight?.depth ?? 0,
      invokeLocal: (message) => this.rpcLocal(message),
      settleHost: (ticket, outcome) => this.settleHost(ticket, outcome),
      onLog: (level, message) => hooks.onLog(def.name, level, message),
      countSubrequest: () => {
        const r = this.inflight;
        if (!r) throw new Error(`worker ${def.name}: subrequest (fetch, ai run) outside a request`);
        if (r.startup) throw new Error(`worker ${def.name}: subrequests (fetch, ai run, actor calls) are not allowed at the top level (global scope); make them inside a handler`);
        r.subrequests += 1;
        if (r.subrequests > def.limits.subrequests) {
          throw new Error(`worker ${def.name} exceeded its subrequest limit (${def.limits.subrequests} per request)`);
        }
      },
    });
    this.cbs = {
      ...this.bindings.callbacks,
      bodyDemand: (id) => this.onBodyDemand(Number(id)),
      htmlRewriter: (op, pages) => this.onHtmlRewriter(String(op), Number(pages)),
      lib: (name) => libModule(this.warm, String(name)),
    };
  }

  callbacks(): HostCallbacks { return this.cbs; }

  private settleHost(ticket: number, outcome: Settled<unknown>): void {
    if (this.dead) return;
    try {
      this.warm.entry.__edgeHostSettle.applyIgnored(undefined, [ticket, outcome], { arguments: { copy: true } });
    } catch (err) {
      // Disposed meanwhile (a limit): nobody waits for the outcome any more.
      if (!this.warm.isolate.isDisposed) this.hooks.onLog(this.def.name, 'error', `an outcome of a host call could not be handed to the isolate: ${errorText(err)}`);
    }
  }

  /** The shim's answer to a request (IsolateOwner.answer): its rejection carries the exception as a dispatch rejection did. */
  answer(id: number, response: WireResponse | null, error: string | null, exception: string | null): void {
    const a = this.unanswered;
    if (a?.id !== id) return;
    this.unanswered = undefined;
    if (error === null) { a.resolve(response as WireResponse); return; }
    const err = new Error(String(error));
    err.stack = EXCEPTION_MARK + String(exception);
    a.reject(err);
  }

  /**
   * Fails the request still waiting for an answer once the isolate is gone: nothing in it
   * will answer it. `cause` reads as isolated-vm's own rejection did (failure() maps it).
   */
  private failUnanswered(cause: string): void {
    const a = this.unanswered;
    if (!a) return;
    this.unanswered = undefined;
    a.reject(new Error(cause));
  }

  /**
   * HTMLRewriter's host side: the wasm bytes, or word that its instance trapped. A trapped
   * instance cannot be trusted again, so the isolate goes once the current call returns
   * (disposing it from inside its own callback is not safe); the request fails with it.
   */
  private onHtmlRewriter(op: string, pages: number): object | undefined {
    // The shim's budget (shim/web/wasm.js): the worker's memoryMiB in 64 KiB pages.
    if (op === 'module') return htmlRewriterModule(pages, Math.floor((this.def.limits.memoryMiB * 1024 * 1024) / 65536));
    if (op === 'exhausted' || op === 'crashed') {
      this.hooks.onLog(this.def.name, 'error', `HTMLRewriter: its wasm instance trapped (${op === 'exhausted' ? 'memory limit' : 'crash'}); the isolate is retired`);
      setImmediate(() => {
        if (op === 'exhausted') this.kill('memory');
        else this.dispose('crash');
      });
      return undefined;
    }
    throw new TypeError(`htmlRewriter: unknown op ${op}`);
  }

  /**
   * A call from an RPC callee on a function or RpcTarget this isolate passed as an argument
   * (__edgeRpcLocal). It runs beside the request waiting on that RPC, inside its budgets (the
   * watchdog measures the isolate's CPU). Rejects with the callback's exception
   * (ActorExceptionError: the callee rethrows it as itself) or a WorkerScriptError.
   */
  async rpcLocal(message: string): Promise<string> {
    if (this.dead || !this.inflight) throw new WorkerScriptError(this.def.name, `worker ${this.def.name}: the RPC caller is no longer waiting`);
    try {
      return await this.warm.entry.__edgeRpcLocal.apply(undefined, [message], { arguments: { copy: true }, result: { promise: true, copy: true } }) as string;
    } catch (err) {
      const failure = this.failure(err);
      if (failure instanceof WorkerScriptError && failure.exception) throw new ActorExceptionError(failure.exception, this.def.key, { cause: err });
      throw failure;
    }
  }

  /** The isolate's V8 heap in use plus what it allocated outside it (ArrayBuffers). */
  async heapBytes(): Promise<number> {
    if (this.dead) return 0;
    const h = await this.warm.isolate.getHeapStatistics();
    return h.used_heap_size + h.externally_allocated_size;
  }

  /** Bytes the host holds for this isolate outside its heap (see IsolateBindings.hostBytes). */
  hostBytes(): number { return this.bindings.hostBytes?.() ?? 0; }

  /**
   * Actor isolates (see actor-isolate.ts): runs `__edgeActor(op, arg)` as an event, under
   * the same CPU and wall budgets as a request; the isolate is busy until it settles.
   * Rejects like a request (WorkerLimitError, WorkerScriptError) when the call fails.
   */
  async actorEvent(op: 'construct' | 'alarm' | 'gate' | 'sqlOpen' | 'sqlExport' | 'ws', arg: unknown, budget?: EventBudget): Promise<{ reset: string | null; error: string | null }> {
    if (!this.actor) throw new Error(`worker ${this.def.name}: not an actor isolate`);
    if (this.dead) throw new WorkerScriptError(this.def.name, `worker ${this.def.name}: isolate already disposed`);
    if (this.inflight) throw new Error(`worker ${this.def.name}: isolate is busy`);
    const id = this.nextId++;
    this.inflight = { id, cpuStart: this.warm.isolate.cpuTime, wallStart: performance.now(), subrequests: 0, settled: true, ...(budget ? { budget } : {}) };
    addActive(this);
    ensureWatchdog();
    try {
      return await this.warm.entry.__edgeActor.apply(undefined, [op, arg], {
        arguments: { copy: true }, result: { promise: true, copy: true },
      }) as { reset: string | null; error: string | null };
    } catch (err) {
      throw this.failure(err);
    } finally {
      if (this.inflight?.id === id) this.free();
    }
  }

  /**
   * Loads the worker's module into a warm isolate; throws BundleError when it cannot.
   * Every step that runs tenant code (evaluation, the shim's look at the exports, which may
   * be getters or proxies) runs on isolated-vm's threads, never on the event loop, under the
   * fixed startup budgets (STARTUP_CPU_MS, STARTUP_WALL_MS) that the watchdog enforces.
   */
  static async load(def: WorkerDefinition, warm: WarmIsolate, hooks: IsolateHooks, actor?: ActorMode, opts?: LoadOptions): Promise<WorkerIsolate> {
    await loads.acquire(def.key);
    let w: WorkerIsolate;
    try {
      w = await WorkerIsolate.loadNow(def, warm, hooks, actor, opts);
    } catch (err) {
      loads.release();
      throw err;
    }
    // A pipelined load's top level may still be running: its turn at the gate ends with its init.
    const pending = w.initPending;
    if (pending) pending.then(() => loads.release(), () => loads.release());
    else loads.release();
    return w;
  }

  private static async loadNow(def: WorkerDefinition, warm: WarmIsolate, hooks: IsolateHooks, actor?: ActorMode, opts?: LoadOptions): Promise<WorkerIsolate> {
    const w = new WorkerIsolate(def, warm, hooks, actor);
    warm.owner.current = w;
    w.inflight = { id: 0, cpuStart: warm.isolate.cpuTime, wallStart: performance.now(), subrequests: 0, settled: true, startup: true };
    addActive(w);
    ensureWatchdog();
    try {
      const filename = `worker:${def.name}.js`;
      const nodeCompat = def.compatibilityFlags?.includes(NODEJS_COMPAT_FLAG) === true;
      if (nodeCompat) {
        await installNodeCompat(warm, isolateEnv(def.env).text, () => w.cbs.digest, STARTUP_WALL_MS)
          .catch((err: unknown) => { throw new BundleError(def.name, w.killedFor ? w.startupLimitText() : `${NODEJS_COMPAT_FLAG}: the Node modules did not load: ${errorText(err)}`, { cause: err }); });
      }
      // A module map (common/module-map.ts): its modules resolve among themselves.
      const modules = await loadModuleMap(def, warm, nodeCompat);
      // A small single module compiles and links here, on the event loop (SYNC_COMPILE_MAX_CHARS: no worker code runs in either step).
      const inline = !modules && !nodeCompat && def.source.length <= SYNC_COMPILE_MAX_CHARS;
      const module = await (modules ? modules.main() : compileCached(warm.isolate, def.source, def.digest, filename, inline))
        .catch((err: unknown) => { throw new BundleError(def.name, err instanceof ModuleImportError ? err.message : `does not compile: ${errorText(err)}`, { cause: err }); });
      // Built-in modules (cloudflare:workers, node:* with nodejs_compat) and the map's own; each is compiled once per load.
      const builtins = new Map<string, Promise<ivm.Module>>();
      const resolveImport = (specifier: string, referrer: ivm.Module): Promise<ivm.Module> => {
        const nodeName = nodeCompat ? nodeModuleName(specifier) : null;
        if (nodeName !== null) {
          const key = `node:${nodeName}`;
          let m = builtins.get(key);
          if (!m) {
            m = nodeModuleCode(warm, nodeName, STARTUP_WALL_MS).then((code) => warm.isolate.compileModule(code, { filename: key }));
            builtins.set(key, m);
          }
          return m;
        }
        if (isNodeBuiltinSpecifier(specifier)) throw new BundleError(def.name, nodeImportRefusal(specifier, def.compatibilityFlags));
        if (modules && !isBuiltinModule(specifier)) {
          return modules.resolve(specifier, referrer).catch((err: unknown) => { throw new BundleError(def.name, errorText(err), { cause: err }); });
        }
        if (!isBuiltinModule(specifier)) {
          throw new BundleError(def.name, `imports "${specifier}", but a worker must be a single bundled module (no imports but ${Object.keys(BUILTIN_MODULES).join(', ')})`);
        }
        let m = builtins.get(specifier);
        if (!m) {
          m = warm.isolate.compileModule(BUILTIN_MODULES[specifier]!, { filename: specifier }).then((b) => { builtinModules.add(b); return b; });
          builtins.set(specifier, m);
        }
        return m;
      };
      /** The built-in modules compiled for this load: they may import the root's hand-over module (cloudflare:workers does). */
      const builtinModules = new Set<ivm.Module>();
      // The worker's module is evaluated under the root (LOAD_ROOT_SOURCE), which hands its namespace to the shim.
      const { root, loaded } = warm.root;
      const resolveRoot = (specifier: string, referrer: ivm.Module): ivm.Module | Promise<ivm.Module> => {
        if (specifier === LOAD_ROOT_IMPORTS.loaded && (referrer === root || builtinModules.has(referrer))) return loaded;
        if (referrer !== root) return resolveImport(specifier, referrer);
        if (specifier === LOAD_ROOT_IMPORTS.worker) return module;
        throw new Error(`the load's root module imports ${specifier}`);
      };
      try {
        if (inline && module.dependencySpecifiers.length === 0) root.instantiateSync(warm.context, resolveRoot as (specifier: string, referrer: ivm.Module) => ivm.Module);
        else await root.instantiate(warm.context, resolveRoot);
      } catch (err) {
        throw err instanceof BundleError ? err : new BundleError(def.name, errorText(err), { cause: err });
      }
      // V8's timeout (wall time) backs up the watchdog's CPU budget.
      const evaluated = root.evaluate({ timeout: STARTUP_WALL_MS, promise: true }).then(() => {}, (err: unknown) => {
        // isolated-vm disposes an isolate over its memory limit itself (no watchdog kill).
        if (!w.killedFor && warm.isolate.isDisposed && /memory limit/.test(errorText(err))) w.markKilled('memory');
        throw new BundleError(def.name, w.killedFor ? w.startupLimitText() : `threw while loading: ${errorText(err)}`, { cause: err });
      });
      // Init can be queued behind the evaluation at once where nothing runs between the two on this side.
      const pipelined = opts?.pipelineInit === true && !actor && !nodeCompat && !modules;
      if (!pipelined) {
        await evaluated;
        if (nodeCompat) await hideNodeModules(warm);
        await modules?.finish();
      }
      // The isolate gets the env less what the worker must not see (ai server URLs).
      const actorInit: ActorInitOptions | undefined = actor && { className: actor.className, id: actor.id, name: actor.name, blockTimeoutMs: actor.blockTimeoutMs, sqlite: actor.sqlite === true };
      // A worker whose source names HTMLRewriter loads lol-html now, under the startup
      // budgets, not in its first request's 50 ms (a first use costs 10-30 ms of CPU). Not
      // in a SQLite-backed actor: sql.js's memory reserves the whole wasm budget when the
      // actor activates, which lol-html's share would then not leave it.
      const htmlRewriter = def.source.includes('HTMLRewriter') && actor?.sqlite !== true;
      // null: the namespace the root handed to the shim.
      const initArgs = [null, isolateEnv(def.env), actorInit ? { workerName: def.name, actor: actorInit, htmlRewriter } : { workerName: def.name, htmlRewriter }];
      const initOpts = { arguments: { copy: true }, result: { copy: true }, timeout: STARTUP_WALL_MS } as const;
      const initCall = (warm.entry.__edgeInit.apply(undefined, initArgs, initOpts) as Promise<string[]>).then((handlers) => {
        if (!actor && !handlers.includes('fetch') && !handlers.includes('rpc')) {
          throw new BundleError(def.name, 'has no fetch handler: export default { async fetch(request, env, ctx) { ... } }');
        }
        if (w.dead) throw new BundleError(def.name, w.killedFor ? w.startupLimitText() : 'its isolate died while loading');
      }, (err: unknown) => {
        throw w.killedFor ? new BundleError(def.name, w.startupLimitText(), { cause: err }) : new BundleError(def.name, errorText(err), { cause: err });
      });
      const inited = pipelined ? evaluated.then(() => initCall) : initCall;
      if (pipelined) {
        // A module that threw: its error, not init's (which then finds no namespace).
        initCall.catch(() => {});
        // The load is done here: the evaluation and init are queued on the isolate's thread,
        // and a first request begun now is queued right behind them, so they run back to
        // back there while this thread routes the call (two round trips of a dynamic
        // worker's first response). The startup budgets hold until init is done, the
        // request's own from then on; a module that fails to evaluate or init fails the
        // first request with that error.
        w.initPending = inited.then(() => {
          w.initPending = undefined;
          const r = w.inflight;
          if (r?.id === 0) w.free();
          else if (r?.startup) w.startRequestClock(r);
        }, (err: unknown) => {
          w.initFailed = true;
          w.dispose('crash');
          throw err;
        });
        w.initPending.catch(() => {});
        return w;
      }
      await inited;
      w.free();
      return w;
    } catch (err) {
      const killed = w.killedFor !== undefined || (warm.isolate.isDisposed && /memory limit/.test(errorText(err)));
      if (!w.killedFor && killed) w.markKilled('memory');
      w.dispose('crash');
      throw err instanceof BundleError && !killed ? err : new BundleError(def.name, killed ? w.startupLimitText() : errorText(err), { cause: err });
    }
  }

  /** A request queued behind a pipelined load begins on the isolate's thread once init is done: its budgets count from here. */
  private startRequestClock(r: Inflight): void {
    delete r.startup;
    r.cpuStart = this.warm.isolate.cpuTime;
    delete r.procStart;
    r.wallStart = performance.now();
  }

  private startupLimitText(): string {
    return this.killedFor === 'memory' ? `ran out of memory while loading (its limit is ${this.def.limits.memoryMiB} MiB)`
      : this.killedFor === 'wall' ? `its top level (global scope) did not finish within ${STARTUP_WALL_MS} ms`
        : `its top level (global scope) exceeded the startup CPU limit (${STARTUP_CPU_MS} ms)`;
  }

  get dead(): boolean { return this.disposed || this.warm.isolate.isDisposed; }
  get busy(): boolean { return this.inflight !== undefined; }

  /**
   * Whether the request in flight waits outside the isolate (a subrequest, a timer, an
   * actor, its caller reading the body): its code has run since it began, and not since
   * the last two looks. One not yet begun on the isolate's thread, or running, is not
   * stalled; cpuTime counts a running slice's time as it goes (see processCpuNs), so a
   * slice still running looks like progress. Two looks, not one: a handler that just
   * returned also looks still until this thread takes its result, which a busy process
   * can leave for a look. Called by WorkerHost's growth check.
   */
  stalledOutside(): boolean {
    const r = this.inflight;
    if (!r || this.dead) return false;
    const cpu = this.warm.isolate.cpuTime;
    const still = cpu === (r.cpuSeen ?? r.cpuStart) && cpu > r.cpuStart;
    r.cpuSeen = cpu;
    r.stillLooks = still ? (r.stillLooks ?? 0) + 1 : 0;
    return r.stillLooks >= 2;
  }

  /**
   * Tells the ledger this isolate's time since its last look; returns its cpuTime, or its
   * last reading once isolated-vm has disposed it (over its memory limit), when cpuTime throws.
   */
  observeCpu(): bigint {
    if (this.warm.isolate.isDisposed) return this.cpuSeen.cpuNs;
    // isolated-vm may dispose it on its own thread between the check and the read.
    try { ledger.observe(this.cpuSeen, this.warm.isolate.cpuTime); } catch { /* disposed: its last reading stands */ }
    return this.cpuSeen.cpuNs;
  }

  /** Called by the watchdog, right after its observeCpu() of every active isolate: the reading it took is this one's cpuTime. */
  checkBudgets(now: number): void {
    const r = this.inflight;
    // isolated-vm disposes an isolate over its memory limit itself: a request it was
    // running has no promise of isolated-vm's to reject, so the watchdog fails it.
    if (this.warm.isolate.isDisposed && !this.disposed) this.failUnanswered(ISOLATE_GONE_MEMORY);
    if (!r || this.dead) return;
    const cpuNow = this.cpuSeen.cpuNs;
    const cpuMs = Number(cpuNow - r.cpuStart) / 1e6;
    if (this.hooks.onCpu && cpuNow - (r.cpuCounted ?? r.cpuStart) >= CPU_REPORT_STEP_NS) {
      this.hooks.onCpu(this.def.name, Number(cpuNow - (r.cpuCounted ?? r.cpuStart)) / 1e6);
      r.cpuCounted = cpuNow;
    }
    const limit = r.budget?.cpuMs ?? (r.startup ? STARTUP_CPU_MS : this.def.limits.cpuMsPerRequest);
    const from = r.procStart;
    if (from === undefined) r.procStart = { procNs: procCpu(), ownNs: cpuNow, allNs: ledger.totalNs };
    else if (cpuMs > limit && Number(chargedNs(procCpu() - from.procNs, cpuNow - from.ownNs, ledger.totalNs - from.allNs)) / 1e6 >= limit) { this.kill('cpu'); return; }
    if (!r.wallFree && now - r.wallStart > (r.budget?.wallMs ?? (r.startup ? STARTUP_WALL_MS : this.def.limits.wallMsPerRequest))) this.kill('wall');
  }

  private kill(reason: LimitReason): void {
    this.markKilled(reason);
    this.dispose(reason);
  }

  private markKilled(reason: LimitReason): void {
    this.killedFor = reason;
    this.killedInStartup = this.inflight?.startup === true;
  }

  /** Maps a failure of a call into the isolate onto what happened. */
  private failure(err: unknown): Error {
    if (this.killedFor) return new WorkerLimitError(this.def.name, this.killedFor, this.def.limits);
    const msg = errorText(err);
    if (/disposed during execution due to memory limit/.test(msg) || (this.warm.isolate.isDisposed && /memory/i.test(msg))) {
      this.markKilled('memory');
      this.dispose('memory');
      return new WorkerLimitError(this.def.name, 'memory', this.def.limits);
    }
    if (this.warm.isolate.isDisposed) {
      this.dispose('crash');
      return new WorkerScriptError(this.def.name, `worker ${this.def.name}: its isolate died: ${msg}`);
    }
    return new WorkerScriptError(this.def.name, msg, exceptionFromRejection(err));
  }

  /**
   * Starts a request and returns its id at once (so a streamed body can be pushed while
   * the handler runs) with the promise of its response. The isolate stays busy until
   * finish(id) is called.
   */
  begin(req: DispatchRequest): { id: number; response: Promise<DispatchResponse> } {
    if (this.dead) throw new WorkerScriptError(this.def.name, `worker ${this.def.name}: isolate already disposed`);
    // A pipelined init's startup record gives way to the first request (LoadOptions.pipelineInit).
    if (this.inflight && !(this.inflight.startup && this.initPending)) throw new Error(`worker ${this.def.name}: isolate is busy`);
    const init = this.initPending;
    const id = this.nextId++;
    // Behind a pipelined load the request runs under the startup budgets until init is done (startRequestClock).
    const load = init ? this.inflight : undefined;
    this.inflight = load
      ? { id, cpuStart: load.cpuStart, ...(load.procStart !== undefined ? { procStart: load.procStart } : {}), wallStart: load.wallStart, subrequests: 0, settled: false, depth: req.depth ?? 0, startup: true }
      : { id, cpuStart: this.warm.isolate.cpuTime, wallStart: performance.now(), subrequests: 0, settled: false, depth: req.depth ?? 0 };
    addActive(this);
    ensureWatchdog();
    const head = encodeRequestHead(req);
    // Strings, numbers and null pass as they are; only a large body's ArrayBuffer is copied.
    const body = wireBody(req.body);
    // A service binding's fetch() to a named entrypoint names it (the shim's 4th argument).
    const args = (req.entrypoint === undefined ? [id, head, body] : [id, head, body, req.entrypoint]) as [number, string, null];
    const argOpts = body instanceof ArrayBuffer ? { arguments: { copy: true } } as const : {};
    const decode = (r: WireResponse) => this.withSocket(this.settledIfDone(decodeResponse(r)));
    const failed = (err: unknown): never => { throw this.failure(err); };
    const dispatched = new Promise<WireResponse>((resolve, reject) => {
      this.unanswered = { id, resolve, reject };
      try {
        this.warm.entry.__edgeDispatch.applyIgnored(undefined, args, argOpts);
      } catch (err) {
        this.unanswered = undefined;
        reject(err);
      }
    }).then(decode, failed);
    if (!init) return { id, response: dispatched };
    // The request ran after init on the isolate's thread: init's failure is the answer,
    // unless this request hit a limit of its own.
    dispatched.catch(() => {});
    const response = init.then(() => dispatched, (err: unknown) => dispatched.then(() => { throw err; }, (own: unknown) => { throw this.killedFor && !this.killedInStartup ? own : err; }));
    return { id, response };
  }

  /** A 101 carries the shim's number for its socket: outside the isolate it goes by its registry id. */
  private withSocket(r: DispatchResponse): DispatchResponse {
    if (r.webSocket !== undefined && r.webSocket < 0) {
      // A socket an actor accepted, passed on as it is.
      if (!this.grantedSockets.delete(-r.webSocket)) throw new WorkerScriptError(this.def.name, `worker ${this.def.name}: its response names a WebSocket it was not given`);
      r.webSocket = -r.webSocket;
    } else if (r.webSocket !== undefined) {
      const socket = this.sockets.forLocal(r.webSocket);
      if (!socket) throw new WorkerScriptError(this.def.name, `worker ${this.def.name}: its response names a WebSocket that is already closed`);
      r.webSocket = socket.id;
    }
    return r;
  }

  /** Sets who runs this isolate's socket events (see SocketOwner). */
  setSocketOwner(owner: SocketOwner): void { this.socketOwner = owner; }

  /**
   * Closes a socket from the host's side, as if the worker had: its client sees the close,
   * and the worker hears the client's answer as the socket's close event.
   */
  closeSocket(socketId: number, code: number, reason: string): void {
    this.sockets.get(socketId)?.closedByIsolate(code, reason);
  }

  /** WebSockets whose server end is in this isolate and not over yet: while any is, the isolate must be kept. */
  get openSockets(): number { return this.sockets.size; }

  /**
   * Runs one socket event in the isolate (the listeners, and the promises they return),
   * under the same CPU and wall budgets as a request. The isolate must not be busy: the
   * owner serializes events with requests. Rejects with a WorkerLimitError when the
   * event hit a limit (the isolate is then disposed, closing its sockets with 1011).
   */
  async deliver(socketId: number, event: SocketEvent): Promise<void> {
    const socket = this.sockets.get(socketId);
    if (!socket || this.dead) return;
    if (this.inflight) throw new Error(`worker ${this.def.name}: isolate is busy; socket events wait for the request in flight`);
    const id = this.nextId++;
    this.inflight = { id, cpuStart: this.warm.isolate.cpuTime, wallStart: performance.now(), subrequests: 0, settled: true };
    addActive(this);
    ensureWatchdog();
    const args = event.type === 'message'
      ? [socket.local, 'message', typeof event.data === 'string' ? event.data : event.data.buffer.slice(event.data.byteOffset, event.data.byteOffset + event.data.byteLength), 0, '']
      : [socket.local, 'close', null, event.code, event.reason];
    try {
      await this.warm.entry.__edgeSocketEvent.apply(undefined, args, { arguments: { copy: true }, result: { promise: true } });
    } catch (err) {
      throw this.failure(err);
    } finally {
      if (event.type === 'close') this.sockets.closeDelivered(socket);
      if (this.inflight?.id === id) this.free();
    }
  }

  /** A response the shim reports as done needs no settle(): free the isolate now. */
  private settledIfDone(r: DispatchResponse): DispatchResponse {
    if (r.done && this.inflight) this.inflight.settled = true;
    return r;
  }


  pushBody(id: number, chunk: Uint8Array | null): void {
    if (this.dead || this.inflight?.id !== id) return;
    const ab = chunk === null ? null : chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.byteLength);
    this.warm.entry.__edgePushBody.applyIgnored(undefined, [id, ab], { arguments: { copy: true } });
  }

  async pullBody(id: number): Promise<Uint8Array | null> {
    try {
      const ab = await this.warm.entry.__edgePullBody.apply(undefined, [id], {
        arguments: { copy: true }, result: { promise: true, copy: true },
      }) as ArrayBuffer | null | 'done';
      if (ab === 'done') {
        // Nothing of the request is left in the isolate: finishNow() frees it without a settle() round trip.
        if (this.inflight?.id === id) this.inflight.settled = true;
        return null;
      }
      return ab === null ? null : new Uint8Array(ab);
    } catch (err) {
      throw this.failure(err);
    }
  }

  private onBodyDemand(id: number): void {
    if (this.inflight?.id !== id) return;
    const d = this.demand;
    if (d?.id !== id) { this.demand = { id, wanted: true }; return; }
    const w = d.waiter;
    if (w) { d.waiter = undefined; w(true); } else d.wanted = true;
  }

  /**
   * Resolves true once the handler of request `id` asks for more of its streamed request
   * body (its stream's pull()), false once the request is over: a host that pushes only
   * then holds nothing ahead of the handler's reads.
   */
  bodyWanted(id: number): Promise<boolean> {
    if (this.dead || this.inflight?.id !== id) return Promise.resolve(false);
    let d = this.demand;
    if (d?.id !== id) { d = { id, wanted: false }; this.demand = d; }
    if (d.wanted) { d.wanted = false; return Promise.resolve(true); }
    if (d.waiter) return Promise.reject(new Error(`worker ${this.def.name}: request ${id}'s body is fed by one pump`));
    const dd = d;
    return new Promise((resolve) => { dd.waiter = resolve; });
  }

  /**
   * The handler of request `id` returned and its response body streams to a caller that
   * reads it at its own pace: the wall limit, which bounds the handler, stops here (CPU
   * and memory still apply). Whoever streams it must end the request when its reader
   * goes (an actor's caller: actors/isolate.ts).
   */
  bodyStreaming(id: number): void {
    if (this.inflight?.id === id) this.inflight.wallFree = true;
  }

  private endDemand(): void {
    const w = this.demand?.waiter;
    this.demand = undefined;
    w?.(false);
  }

  cancel(id: number, reason: string): void {
    if (this.dead) return;
    this.warm.entry.__edgeCancel.applyIgnored(undefined, [id, reason], { arguments: { copy: true } });
  }

  /** CPU the isolate has used on request `id` so far (undefined when that is not the request it runs). */
  cpuMsOf(id: number): number | undefined {
    const r = this.inflight;
    if (r?.id !== id || this.warm.isolate.isDisposed) return undefined;
    try { return Number(this.warm.isolate.cpuTime - r.cpuStart) / 1e6; } catch { return undefined; }
  }

  /**
   * Frees the isolate at once when the request needs no settling (the common case);
   * false means the caller must await finish(id).
   */
  finishNow(id: number): boolean {
    const r = this.inflight;
    if (r?.id !== id || !(r.settled || this.dead)) return false;
    this.free();
    return true;
  }

  private free(): void {
    this.reportCpu();
    // Nothing a request started outlives it: an ai stream it left open is aborted.
    this.bindings.requestEnded();
    this.inflight = undefined;
    this.endDemand();
    removeActive(this);
    this.lastUsed = performance.now();
  }

  /** Waits for the request's ctx.waitUntil work, then frees the isolate for the next request. */
  async finish(id: number): Promise<void> {
    try {
      if (!this.dead && !this.inflight?.settled) {
        await this.warm.entry.__edgeSettle.apply(undefined, [id], { arguments: { copy: true }, result: { promise: true } });
      }
    } catch (err) {
      if (!this.dead) this.hooks.onLog(this.def.name, 'error', `settling request failed: ${this.failure(err).message}`);
    } finally {
      if (this.inflight?.id === id) this.free();
    }
  }

  /** At a request's end: its CPU to hooks.onCpu, and its isolate's time to the ledger, so other requests' shares count it without waiting for a tick. */
  private reportCpu(): void {
    const r = this.inflight;
    if (!r || this.warm.isolate.isDisposed) return;
    try {
      const now = this.observeCpu();
      if (!this.hooks.onCpu) return;
      this.hooks.onCpu(this.def.name, Number(now - (r.cpuCounted ?? r.cpuStart)) / 1e6);
      // Counted once, whether the request ends or the isolate is disposed under it.
      r.cpuCounted = now;
    } catch { /* the isolate went away under us: nothing to count */ }
  }

  dispose(reason: DisposalReason): void {
    if (this.disposed) return;
    this.disposed = true;
    removeActive(this);
    this.endDemand();
    this.bindings.dispose();
    // Nothing is left to answer the isolate's WebSockets: their clients see them close.
    this.sockets.closeAll(reason === 'shutdown' ? 1001 : 1011, reason === 'shutdown' ? 'the edge agent is shutting down' : `the worker's isolate was disposed (${reason})`);
    this.warm.owner.current = null;
    this.reportCpu();
    const byIvm = this.warm.isolate.isDisposed;
    if (!byIvm) {
      try { this.warm.isolate.dispose(); } catch { /* already gone */ }
    }
    this.failUnanswered(byIvm ? ISOLATE_GONE_MEMORY : ISOLATE_GONE);
    this.hooks.onDispose(this.def.name, reason);
  }
}

/**
 * The module map def.source carries, loaded into the isolate (null for a single ES module).
 * Modules that cannot fit the worker's memory limit are refused before any byte is copied
 * into the isolate.
 */
async function loadModuleMap(def: WorkerDefinition, warm: WarmIsolate, nodeCompat: boolean): Promise<ModuleMapLoader | null> {
  if (!isModuleMapSource(def.source)) return null;
  let prepared = preparedMaps.get(def);
  if (!prepared) {
    try {
      const map = decodeModuleMap(def.source)!;
      const size = moduleMapBytes(map);
      prepared = size > def.limits.memoryMiB * 1024 * 1024
        ? new BundleError(def.name, `its modules hold ${(size / 1048576).toFixed(1)} MiB, more than its memory limit (${def.limits.memoryMiB} MiB)`)
        : prepareModuleMap(map);
    } catch (err) {
      prepared = new BundleError(def.name, errorText(err), { cause: err });
    }
    preparedMaps.set(def, prepared);
  }
  if (prepared instanceof BundleError) throw prepared;
  return ModuleMapLoader.create(warm, prepared, { nodeCompat, timeoutMs: STARTUP_WALL_MS });
}

/** Each version's map decoded once, however many isolates load it (a host keeps one WorkerDefinition per version). */
const preparedMaps = new WeakMap<WorkerDefinition, PreparedModuleMap | BundleError>();
