import { decodeResponse, encodeRequestHead, isolateEnv, wireBody, type DispatchRequest, type DispatchResponse, type HostCallbacks, type WireResponse, type WorkerEnv } from '../abi/bridge.js';
import type { Limits } from '../../common/api/index.js';
import type { EgressPolicy } from '../../common/api/policy.js';
import type { ActorInitOptions } from '../abi/bridge.js';
import type { IsolateOwner, WarmIsolate } from './pool.js';
import { IsolateSockets, type SocketEvent } from '../sockets/isolate-sockets.js';
import { SocketRegistry } from '../sockets/sockets.js';
import { EdgeError } from '../../common/errors.js';

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
  constructor(readonly worker: string, message: string) { super(message, { context: { worker } }); }
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
}

export interface IsolateBindings {
  callbacks: HostCallbacks;
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


/**
 * How requests enter a worker's isolates; shared by all isolates of one worker version.
 * Starts synchronous (fastest for quick handlers: the call runs on the agent's event
 * loop), and drops to asynchronous for good once the handler's synchronous time
 * averages over SYNC_AVG_MS, or a single call takes over SYNC_MAX_MS, or it hits a
 * limit; the odd garbage-collection pause does not count against it.
 */
export class DispatchMode {
  sync = true;
  private avgMs = 0;
  observe(ms: number): void {
    this.avgMs = this.avgMs * 0.95 + ms * 0.05;
    if (ms > SYNC_MAX_MS || this.avgMs > SYNC_AVG_MS) this.sync = false;
  }
}
const SYNC_AVG_MS = 0.5;
const SYNC_MAX_MS = 20;
/** The wall-time bound of a synchronous dispatch: room for preemption above the CPU budget. */
const syncTimeoutMs = (cpuMs: number) => Math.max(cpuMs * 3, cpuMs + 50);
/** Modules up to this size are compiled on the event loop (well under a millisecond). */
const SYNC_LOAD_MAX_CHARS = 64 * 1024;

const active = new Set<WorkerIsolate>();
let watchdog: NodeJS.Timeout | undefined;
const WATCHDOG_MS = 5;

function ensureWatchdog(): void {
  if (watchdog) return;
  watchdog = setInterval(() => {
    if (active.size === 0) { clearInterval(watchdog); watchdog = undefined; return; }
    const now = performance.now();
    for (const w of active) w.checkBudgets(now);
  }, WATCHDOG_MS);
  watchdog.unref();
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class WorkerIsolate implements IsolateOwner {
  private nextId = 1;
  /** The request in flight: budgets are measured from its start. */
  private inflight: { id: number; cpuStart: bigint; wallStart: number; subrequests: number; settled: boolean } | undefined;
  private killedFor: LimitReason | undefined;
  private disposed = false;
  private readonly cbs: HostCallbacks;
  /** The host side of env.* for this isolate: told when a request ends and when the isolate goes. */
  private readonly bindings: IsolateBindings;
  /** WebSockets whose server end is in this isolate. */
  private readonly sockets: IsolateSockets;
  private socketOwner: SocketOwner | undefined;
  /** Sockets actors handed this isolate (by registry id): the only foreign ones it may return. */
  private readonly grantedSockets = new Set<number>();
  readonly createdAt = performance.now();
  lastUsed = performance.now();

  private constructor(
    readonly def: WorkerDefinition,
    private readonly warm: WarmIsolate,
    private readonly hooks: IsolateHooks,
    private readonly mode: DispatchMode,
    private readonly actor?: ActorMode,
  ) {
    this.sockets = new IsolateSockets(hooks.sockets ?? new SocketRegistry(), def.name, (socket, event) => {
      if (this.dead) return;
      if (this.socketOwner) this.socketOwner.socketEvent(this, socket.id, event);
      else hooks.onLog(def.name, 'error', `a WebSocket event arrived for an isolate nobody runs events for; socket ${socket.id} dropped it`);
    }, () => this.socketOwner?.socketsClosed?.(this));
    this.bindings = hooks.bindings({
      def,
      sockets: this.sockets,
      grantSocket: (id) => this.grantedSockets.add(id),
      onLog: (level, message) => hooks.onLog(def.name, level, message),
      countSubrequest: () => {
        const r = this.inflight;
        if (!r) throw new Error(`worker ${def.name}: subrequest (fetch, ai run) outside a request`);
        r.subrequests += 1;
        if (r.subrequests > def.limits.subrequests) {
          throw new Error(`worker ${def.name} exceeded its subrequest limit (${def.limits.subrequests} per request)`);
        }
      },
    });
    this.cbs = this.bindings.callbacks;
  }

  callbacks(): HostCallbacks { return this.cbs; }

  /** Bytes the host holds for this isolate outside its heap (see IsolateBindings.hostBytes). */
  hostBytes(): number { return this.bindings.hostBytes?.() ?? 0; }

  /**
   * Actor isolates (see actor-isolate.ts): runs `__edgeActor(op, arg)` as an event, under
   * the same CPU and wall budgets as a request; the isolate is busy until it settles.
   * Rejects like a request (WorkerLimitError, WorkerScriptError) when the call fails.
   */
  async actorEvent(op: 'construct' | 'alarm' | 'gate', arg: unknown): Promise<{ reset: string | null; error: string | null }> {
    if (!this.actor) throw new Error(`worker ${this.def.name}: not an actor isolate`);
    if (this.dead) throw new WorkerScriptError(this.def.name, `worker ${this.def.name}: isolate already disposed`);
    if (this.inflight) throw new Error(`worker ${this.def.name}: isolate is busy`);
    const id = this.nextId++;
    this.inflight = { id, cpuStart: this.warm.isolate.cpuTime, wallStart: performance.now(), subrequests: 0, settled: true };
    active.add(this);
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

  /** Loads the worker's module into a warm isolate; throws BundleError when it cannot. */
  static async load(def: WorkerDefinition, warm: WarmIsolate, hooks: IsolateHooks, mode: DispatchMode = new DispatchMode(), actor?: ActorMode): Promise<WorkerIsolate> {
    const w = new WorkerIsolate(def, warm, hooks, mode, actor);
    warm.owner.current = w;
    try {
      // A small module loads with synchronous calls (no thread hops: this is the cold
      // path a first request waits on); a big bundle compiles off the event loop.
      const small = def.source.length <= SYNC_LOAD_MAX_CHARS;
      const filename = `worker:${def.name}.js`;
      const module = await (small ? Promise.resolve().then(() => warm.isolate.compileModuleSync(def.source, { filename })) : warm.isolate.compileModule(def.source, { filename }))
        .catch((err: unknown) => { throw new BundleError(def.name, `does not compile: ${errorText(err)}`, { cause: err }); });
      const refuseImport = (specifier: string): never => {
        throw new BundleError(def.name, `imports "${specifier}", but a worker must be a single bundled module (no imports)`);
      };
      try {
        if (small) module.instantiateSync(warm.context, refuseImport);
        else await module.instantiate(warm.context, refuseImport);
      } catch (err) {
        throw err instanceof BundleError ? err : new BundleError(def.name, errorText(err), { cause: err });
      }
      // Top-level code runs under a CPU bound too: a module that spins at load is refused.
      const loadTimeout = Math.max(def.limits.cpuMsPerRequest, 1000);
      try {
        if (small) module.evaluateSync({ timeout: loadTimeout });
        else await module.evaluate({ timeout: loadTimeout });
      } catch (err) {
        throw new BundleError(def.name, `threw while loading: ${errorText(err)}`, { cause: err });
      }
      // The isolate gets the env less what the worker must not see (ai server URLs).
      const actorInit: ActorInitOptions | undefined = actor && { className: actor.className, id: actor.id, name: actor.name, blockTimeoutMs: actor.blockTimeoutMs };
      const initArgs = [module.namespace.derefInto(), isolateEnv(def.env), actorInit ? { workerName: def.name, actor: actorInit } : { workerName: def.name }];
      const initOpts = { arguments: { copy: true }, result: { copy: true }, timeout: 1000 } as const;
      const handlers = (small ? warm.entry.__edgeInit.applySync(undefined, initArgs, initOpts)
        : await warm.entry.__edgeInit.apply(undefined, initArgs, initOpts)) as string[];
      if (!actor && !handlers.includes('fetch')) {
        throw new BundleError(def.name, 'has no fetch handler: export default { async fetch(request, env, ctx) { ... } }');
      }
      return w;
    } catch (err) {
      w.dispose('crash');
      throw err instanceof BundleError ? err : new BundleError(def.name, errorText(err), { cause: err });
    }
  }

  get dead(): boolean { return this.disposed || this.warm.isolate.isDisposed; }
  get busy(): boolean { return this.inflight !== undefined; }

  /** Called by the watchdog. */
  checkBudgets(now: number): void {
    const r = this.inflight;
    if (!r || this.dead) return;
    const cpuMs = Number(this.warm.isolate.cpuTime - r.cpuStart) / 1e6;
    if (cpuMs > this.def.limits.cpuMsPerRequest) this.kill('cpu');
    else if (now - r.wallStart > this.def.limits.wallMsPerRequest) this.kill('wall');
  }

  private kill(reason: LimitReason): void {
    this.killedFor = reason;
    this.dispose(reason);
  }

  /** Maps a failure of a call into the isolate onto what happened. */
  private failure(err: unknown): Error {
    if (this.killedFor) return new WorkerLimitError(this.def.name, this.killedFor, this.def.limits);
    const msg = errorText(err);
    if (/disposed during execution due to memory limit/.test(msg) || (this.warm.isolate.isDisposed && /memory/i.test(msg))) {
      this.killedFor = 'memory';
      this.dispose('memory');
      return new WorkerLimitError(this.def.name, 'memory', this.def.limits);
    }
    if (this.warm.isolate.isDisposed) {
      this.dispose('crash');
      return new WorkerScriptError(this.def.name, `worker ${this.def.name}: its isolate died: ${msg}`);
    }
    return new WorkerScriptError(this.def.name, msg);
  }

  /**
   * Starts a request and returns its id at once (so a streamed body can be pushed while
   * the handler runs) with the promise of its response. The isolate stays busy until
   * finish(id) is called.
   */
  begin(req: DispatchRequest): { id: number; response: Promise<DispatchResponse>; ready?: DispatchResponse } {
    if (this.dead) throw new WorkerScriptError(this.def.name, `worker ${this.def.name}: isolate already disposed`);
    if (this.inflight) throw new Error(`worker ${this.def.name}: isolate is busy`);
    const id = this.nextId++;
    this.inflight = { id, cpuStart: this.warm.isolate.cpuTime, wallStart: performance.now(), subrequests: 0, settled: false };
    active.add(this);
    ensureWatchdog();
    const head = encodeRequestHead(req);
    // Strings, numbers and null pass as they are; only a large body's ArrayBuffer is copied.
    const body = wireBody(req.body);
    const args = [id, head, body] as [number, string, null];
    const argOpts = body instanceof ArrayBuffer ? { arguments: { copy: true } } as const : {};
    const decode = (r: WireResponse) => this.withSocket(this.settledIfDone(decodeResponse(r)));
    const failed = (err: unknown): never => { throw this.failure(err); };
    if (this.mode.sync && req.body !== 'stream') {
      // Two synchronous calls on this thread: no thread hop for a handler that answers
      // without waiting on the host. Bounded by the CPU budget; a worker whose handler
      // takes longer than SYNC_SLOW_MS is moved to the asynchronous path for good, so
      // no worker can keep the agent's event loop busy.
      const t0 = performance.now();
      try {
        // V8's timeout is wall time, and on a loaded machine the thread can be preempted
        // in the middle of a quick handler: the bound leaves room above the CPU budget so
        // only a handler that really spins is killed for it.
        this.warm.entry.__edgeStart.applySync(undefined, args, { ...argOpts, timeout: syncTimeoutMs(this.def.limits.cpuMsPerRequest) });
        const r = this.warm.entry.__edgePoll.applySync(undefined, [id], { result: { copy: true } }) as WireResponse | null;
        this.mode.observe(performance.now() - t0);
        if (r !== null) {
          const ready = decode(r);
          return { id, response: Promise.resolve(ready), ready };
        }
      } catch (err) {
        // A handler that throws is the worker's business (a 500); one that hit a limit
        // on the event loop must never get the chance again.
        if (/Script execution timed out/.test(errorText(err))) this.kill('cpu');
        const failure = this.failure(err);
        if (failure instanceof WorkerLimitError) this.mode.sync = false;
        return { id, response: Promise.reject(failure) };
      }
      const waiting = this.warm.entry.__edgeWait.apply(undefined, [id], { result: { promise: true, copy: true } }) as Promise<WireResponse>;
      return { id, response: waiting.then(decode, failed) };
    }
    const response = (this.warm.entry.__edgeDispatch.apply(undefined, args, {
      ...argOpts, result: { promise: true, copy: true },
    }) as Promise<WireResponse>).then(decode, failed);
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
    active.add(this);
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
      }) as ArrayBuffer | null;
      return ab === null ? null : new Uint8Array(ab);
    } catch (err) {
      throw this.failure(err);
    }
  }

  cancel(id: number, reason: string): void {
    if (this.dead) return;
    this.warm.entry.__edgeCancel.applyIgnored(undefined, [id, reason], { arguments: { copy: true } });
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
    // Nothing a request started outlives it: an ai stream it left open is aborted.
    this.bindings.requestEnded();
    this.inflight = undefined;
    active.delete(this);
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

  dispose(reason: DisposalReason): void {
    if (this.disposed) return;
    this.disposed = true;
    active.delete(this);
    this.bindings.dispose();
    // Nothing is left to answer the isolate's WebSockets: their clients see them close.
    this.sockets.closeAll(reason === 'shutdown' ? 1001 : 1011, reason === 'shutdown' ? 'the edge agent is shutting down' : `the worker's isolate was disposed (${reason})`);
    this.warm.owner.current = null;
    if (!this.warm.isolate.isDisposed) {
      try { this.warm.isolate.dispose(); } catch { /* already gone */ }
    }
    this.hooks.onDispose(this.def.name, reason);
  }
}
