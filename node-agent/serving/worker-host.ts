import { availableParallelism } from 'node:os';
import type { Logger } from '../../common/log.js';
import type { IsolatePool } from '../isolate/pool.js';
import { ActorExceptionError } from '../abi/bridge.js';
import { WorkerIsolate, WorkerLimitError, WorkerScriptError, type IsolateHooks, type SocketOwner, type WorkerDefinition } from '../isolate/worker-isolate.js';
import type { SocketEvent } from '../sockets/isolate-sockets.js';
import { EdgeError } from '../../common/errors.js';

// One version of one worker, served by a set of isolates that grows with concurrency (up
// to maxIsolates) and shrinks back to minWarm when idle. Each isolate runs one request
// at a time; a request that finds them all busy waits in order, and the set grows only
// when the waiting stalls (see GROW_AFTER_MS).
//
// WebSocket events for an isolate (its sockets' messages and closes) take turns with
// requests: they queue per isolate and run while the isolate is not serving a request,
// a batch at a time, so a chatty socket cannot starve the requests waiting for it. An
// isolate with open sockets is never reaped as idle, and after a version swap it stays
// (serving only its sockets' events) until they are all closed.

/** Bytes of socket messages one isolate may have waiting; past that, the socket sending more is closed with 1013. */
const MAX_QUEUED_EVENT_BYTES = 16 * 1024 * 1024;
/** Socket events run back to back before a waiting request gets the isolate. */
const EVENT_BATCH = 64;

interface QueuedEvent { socketId: number; event: SocketEvent; bytes: number }

/**
 * A request that finds every isolate busy waits, and every GROW_AFTER_MS while requests
 * wait the host looks at its busy isolates: while fewer than RUNNING_ISOLATES of them are
 * running (or about to run) code rather than waiting outside the isolate (a subrequest, a
 * timer, an actor: WorkerIsolate.stalledOutside), one more is loaded, up to maxIsolates.
 * Growing on every busy moment instead (one isolate per concurrent request) cost half the
 * throughput of a CPU-bound worker: with 32 connections, 16 isolates took turns on one
 * core, each its own thread and its own cold JIT, where two kept up (a hello-world through
 * the front: 2.0k against 3.8k requests per CPU-second). A worker whose requests wait on
 * I/O still grows to as many isolates as it has requests waiting.
 */
export const GROW_AFTER_MS = 1;
/** Isolates of one worker that may run code at once: each runs on a thread of its own, so one per core this process may use, and at least two. */
export const RUNNING_ISOLATES = Math.max(2, availableParallelism());

export interface WorkerHostOptions {
  pool: IsolatePool;
  hooks: IsolateHooks;
  log: Logger;
  /** Isolates kept loaded even when idle (spec.placement.minWarmIsolates). */
  minWarm: number;
  maxIsolates: number;
  /** Idle isolates above minWarm are disposed after this long. */
  idleMs: number;
  /** Requests that may wait for a busy isolate; past that a request is refused at once. */
  maxQueued: number;
  onColdStart?: (worker: string) => void;
  onIsolates?: (worker: string, count: number) => void;
  /** WorkerIsolate's LoadOptions.pipelineInit for every load (a dynamic worker's host); a cold start's always is. */
  pipelineInit?: boolean;
}

export class WorkerHostClosedError extends EdgeError {}

/** A service call's request and response, bodies buffered (see bindings/service-binding.ts). */
export interface InternalRequest { url: string; method: string; headers: [string, string][]; body: Uint8Array | null }
export interface InternalResponse { status: number; statusText: string; headers: [string, string][]; body: Uint8Array }

/** A service call's response body is buffered; this bounds it. */
const MAX_INTERNAL_BODY_BYTES = 32 * 1024 * 1024;

/** An internal call could not be answered as one (a WebSocket, a body over the limit). */
export class InternalCallError extends EdgeError {}

/** Every isolate is busy and the queue is full: the request is refused (503). */
export class WorkerOverloadedError extends EdgeError {
  constructor(readonly worker: string, queued: number) {
    super(`worker ${worker} is overloaded: all its isolates are busy and ${queued} requests are already waiting`, { context: { worker } });
  }
}

export class WorkerHost {
  private readonly idle: WorkerIsolate[] = [];
  private readonly all = new Set<WorkerIsolate>();
  private loading = 0;
  private readonly waiters: { resolve: (w: WorkerIsolate) => void; reject: (e: Error) => void }[] = [];
  private growthArmed = false;
  private closed = false;
  private reaper: NodeJS.Timeout | undefined;
  private drained: (() => void) | undefined;
  /** Set while its namespace runs in the agent's cordon host: no isolates kept warm here. */
  private dormant = false;
  /** Socket events waiting, per isolate (an entry exists only while some wait). */
  private readonly events = new Map<WorkerIsolate, { queue: QueuedEvent[]; bytes: number }>();
  private readonly socketOwner: SocketOwner = {
    socketEvent: (w, socketId, event) => this.socketEvent(w, socketId, event),
    socketsClosed: () => this.checkDrained(),
  };

  constructor(readonly def: WorkerDefinition, private readonly opts: WorkerHostOptions) {}

  get isolates(): number { return this.all.size; }

  /** Bytes the host holds for this worker's isolates outside their heaps (subrequest bodies in flight). */
  hostBytes(): number {
    let n = 0;
    for (const w of this.all) n += w.hostBytes();
    return n;
  }

  /** The heap its isolates hold (WorkerIsolate.heapBytes). */
  async heapBytes(): Promise<number> {
    let n = 0;
    for (const w of this.all) n += await w.heapBytes();
    return n;
  }

  /** Set while this host is not in the worker's shard (docs/shards.md): loaded on demand, none kept warm. */
  private cold = false;

  /** Isolates kept loaded when idle: minWarmIsolates, or none while dormant or outside the worker's shard. */
  private get minWarm(): number { return this.dormant || this.cold ? 0 : this.opts.minWarm; }

  /**
   * Every isolate is busy and as many requests as it may ever have isolates already wait: a
   * shard member refuses a forwarded request then, and the first host serves it. Whether
   * more could be loaded does not matter: a CPU-bound worker is not grown (GROW_AFTER_MS),
   * and its queue is as long a wait.
   */
  get saturated(): boolean {
    return this.idle.length === 0 && this.waiters.length >= this.opts.maxIsolates;
  }

  /**
   * Whether this host is in the worker's shard: out of it, its isolates are no longer kept
   * warm (idle ones go after idleMs, as above minWarm; a fallback request loads one on
   * demand); back in, minWarmIsolates are loaded.
   */
  setMember(member: boolean): void {
    if (this.cold === !member || this.closed) return;
    this.cold = !member;
    if (member) this.warmUp();
  }

  private warmUp(): void {
    for (let n = this.all.size + this.loading; n < this.minWarm; n++) {
      this.load().then((w) => this.release(w), (err: unknown) => {
        this.opts.log.error('could not load a warm isolate', { worker: this.def.name, error: err });
      });
    }
  }

  /**
   * Dormant: the agent's cordon host serves this worker's namespace now (hosts/cordon.ts),
   * so its idle isolates here go at once rather than after idleMs, and none are kept warm;
   * awake again, minWarmIsolates are loaded back.
   */
  setDormant(dormant: boolean): void {
    if (this.dormant === dormant || this.closed) return;
    this.dormant = dormant;
    if (dormant) {
      for (let i = this.idle.length - 1; i >= 0; i--) {
        const w = this.idle[i]!;
        if (w.openSockets > 0) continue;
        this.idle.splice(i, 1);
        w.dispose('idle');
        this.forget(w);
      }
      return;
    }
    this.warmUp();
  }

  /** Loads the warm isolates; rejects with a BundleError when the module is broken. */
  async start(member = true): Promise<void> {
    this.cold = !member;
    const loads: Promise<WorkerIsolate>[] = [];
    for (let i = 0; i < this.minWarm; i++) loads.push(this.load());
    const results = await Promise.allSettled(loads);
    for (const r of results) if (r.status === 'fulfilled') this.putIdle(r.value);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      this.close();
      throw failed.reason;
    }
    this.reaper = setInterval(() => this.reapIdle(), Math.max(1000, this.opts.idleMs / 2));
    this.reaper.unref();
  }

  /** `forRequest`: a request waits for it (a cold start), so its init is pipelined (LoadOptions.pipelineInit). */
  private async load(forRequest = false): Promise<WorkerIsolate> {
    this.loading += 1;
    try {
      const warm = this.opts.pool.take(this.def.limits.memoryMiB);
      const w = await WorkerIsolate.load(this.def, warm, this.opts.hooks, undefined, forRequest || this.opts.pipelineInit ? { pipelineInit: true } : undefined);
      w.setSocketOwner(this.socketOwner);
      this.all.add(w);
      this.opts.onIsolates?.(this.def.name, this.all.size);
      return w;
    } finally {
      this.loading -= 1;
    }
  }

  /**
   * An internal call (a service binding's, a dynamic worker's): runs `req` at service depth
   * `depth` in one of the isolates, as a client's request would be, body buffered. The
   * worker's own exception (an RPC method threw) rejects as ActorExceptionError, so the
   * caller rethrows it with its name and message.
   */
  async call(req: InternalRequest, depth: number, entrypoint?: string): Promise<InternalResponse> {
    const key = this.def.key;
    const iso = this.tryAcquire() ?? await this.acquire();
    let id: number | undefined;
    try {
      const call = iso.begin({ url: req.url, method: req.method, headers: req.headers, body: req.body, depth, ...(entrypoint !== undefined ? { entrypoint } : {}) });
      id = call.id;
      const res = await call.response;
      if (res.webSocket !== undefined) throw new InternalCallError(`worker ${this.def.name}: a WebSocket cannot be returned through a service binding here`, { context: { worker: key } });
      const chunks: Uint8Array[] = [];
      let size = 0;
      if (res.body === 'stream') {
        for (let c = await iso.pullBody(id); c !== null; c = await iso.pullBody(id)) {
          size += c.byteLength;
          if (size > MAX_INTERNAL_BODY_BYTES) {
            iso.cancel(id, 'response body over the limit');
            throw new InternalCallError(`worker ${this.def.name}: its response body is over the ${MAX_INTERNAL_BODY_BYTES}-byte limit of a service binding`, { context: { worker: key } });
          }
          chunks.push(c);
        }
      } else if (res.body !== null) {
        chunks.push(new Uint8Array(res.body));
      }
      return { status: res.status, statusText: res.statusText, headers: res.headers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) };
    } catch (err) {
      if (err instanceof WorkerScriptError && err.exception) throw new ActorExceptionError(err.exception, key, { cause: err });
      throw err;
    } finally {
      if (id !== undefined && !iso.finishNow(id)) await iso.finish(id);
      this.release(iso);
    }
  }

  /** An idle isolate, if there is one right now. */
  tryAcquire(): WorkerIsolate | undefined {
    if (this.closed) return undefined;
    for (;;) {
      const w = this.idle.pop();
      if (!w) return undefined;
      if (!w.dead) return w;
      this.forget(w);
    }
  }

  /** An isolate for one request: an idle one, a newly loaded one, or the next one freed. */
  async acquire(start?: { cold: boolean }): Promise<WorkerIsolate> {
    if (this.closed) throw new WorkerHostClosedError(`worker ${this.def.name} version ${this.def.digest} is shutting down`);
    for (;;) {
      const w = this.idle.pop();
      if (!w) break;
      if (!w.dead) return w;
      this.forget(w);
    }
    const loadable = this.loadable;
    if (loadable > 0 && this.all.size + this.loading === 0) {
      this.opts.onColdStart?.(this.def.name);
      if (start) start.cold = true;
      return this.load(true);
    }
    // The bound of when every request past the busy isolates loaded one of its own: the
    // isolates that could still load, plus maxQueued.
    if (this.waiters.length >= this.opts.maxQueued + Math.max(0, loadable)) throw new WorkerOverloadedError(this.def.name, this.waiters.length);
    const waited = new Promise<WorkerIsolate>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (loadable > 0) this.armGrowth();
    return waited;
  }

  /** Isolates that could still be loaded before maxIsolates. */
  private get loadable(): number { return this.opts.maxIsolates - this.all.size - this.loading; }

  /** While requests wait, the growth check of GROW_AFTER_MS runs every GROW_AFTER_MS. */
  private armGrowth(): void {
    if (this.growthArmed || this.closed) return;
    this.growthArmed = true;
    setTimeout(() => {
      // Checked after this turn's I/O: timers run before it, and a request that finished
      // while this process was descheduled is waiting there, not stalled.
      setImmediate(() => {
        this.growthArmed = false;
        if (this.closed || this.waiters.length === 0) return;
        let running = this.loading;
        // Every busy isolate is looked at, so each one's last look is one interval old.
        for (const w of this.all) if (w.busy && !w.stalledOutside()) running += 1;
        if (running < RUNNING_ISOLATES && this.loading < this.waiters.length && this.loadable > 0) this.grow();
        this.armGrowth();
      });
    }, GROW_AFTER_MS);
  }

  private grow(): void {
    this.opts.onColdStart?.(this.def.name);
    this.load(true).then((w) => this.release(w), (err: unknown) => {
      // As a cold start's own request would be: the first waiting request is told why.
      const waiter = this.waiters.shift();
      if (waiter) waiter.reject(err instanceof Error ? err : new Error(String(err)));
      else this.opts.log.error('could not load another isolate', { worker: this.def.name, error: err });
    });
  }

  /** Gives an isolate back after its request (and its waitUntil work) finished. */
  release(w: WorkerIsolate): void {
    if (w.dead) {
      this.events.delete(w);
      this.forget(w);
      // A module whose init failed would fail again: the next call loads it and is told so.
      if (!w.initFailed) this.replaceDead();
      return;
    }
    if (this.events.has(w)) { this.runEvents(w); return; }
    const next = this.waiters.shift();
    if (next && !this.closed) { next.resolve(w); return; }
    this.putIdle(w);
  }

  private putIdle(w: WorkerIsolate): void {
    // A replaced version keeps an isolate with open sockets (parked: no request reaches it).
    if (this.closed && w.openSockets === 0) { w.dispose('replaced'); this.forget(w); return; }
    this.idle.push(w);
    this.checkDrained();
  }

  /** A socket event for one of this version's isolates: queued, and run now if the isolate is idle. */
  private socketEvent(w: WorkerIsolate, socketId: number, event: SocketEvent): void {
    if (w.dead) return;
    let pending = this.events.get(w);
    if (!pending) { pending = { queue: [], bytes: 0 }; this.events.set(w, pending); }
    const bytes = event.type === 'message' ? (typeof event.data === 'string' ? event.data.length : event.data.byteLength) : 0;
    if (bytes > 0 && pending.bytes + bytes > MAX_QUEUED_EVENT_BYTES) {
      // Closes are always queued, so the isolate still hears the client's answer to this.
      w.closeSocket(socketId, 1013, 'the worker is not keeping up with incoming messages');
      return;
    }
    pending.queue.push({ socketId, event, bytes });
    pending.bytes += bytes;
    const i = this.idle.indexOf(w);
    if (i >= 0) {
      this.idle.splice(i, 1);
      this.runEvents(w);
    }
  }

  /** Runs a batch of the isolate's waiting socket events (it is taken: not idle, no request). */
  private runEvents(w: WorkerIsolate): void {
    void (async () => {
      const pending = this.events.get(w);
      for (let n = 0; pending && pending.queue.length > 0 && n < EVENT_BATCH && !w.dead; n++) {
        const { socketId, event, bytes } = pending.queue.shift()!;
        pending.bytes -= bytes;
        try {
          await w.deliver(socketId, event);
        } catch (err) {
          if (err instanceof WorkerLimitError) this.opts.log.warn('worker exceeded a limit in a WebSocket event', { worker: this.def.name, reason: err.reason, error: err });
          else this.opts.log.error('WebSocket event failed', { worker: this.def.name, error: err });
        }
      }
      if (w.dead || pending?.queue.length === 0) this.events.delete(w);
      this.afterEvents(w);
    })();
  }

  private afterEvents(w: WorkerIsolate): void {
    if (w.dead) {
      this.forget(w);
      this.replaceDead();
      return;
    }
    const next = this.closed ? undefined : this.waiters.shift();
    if (next) { next.resolve(w); return; }
    if (this.events.has(w)) { this.runEvents(w); return; }
    this.putIdle(w);
  }

  private forget(w: WorkerIsolate): void {
    this.all.delete(w);
    const i = this.idle.indexOf(w);
    if (i >= 0) this.idle.splice(i, 1);
    this.opts.onIsolates?.(this.def.name, this.all.size);
    this.checkDrained();
  }

  /** A dead isolate freed a slot: a waiting request gets a fresh one, or keep minWarm. */
  private replaceDead(): void {
    if (this.closed) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      this.opts.onColdStart?.(this.def.name);
      this.load().then(waiter.resolve, (err: unknown) => waiter.reject(err instanceof Error ? err : new Error(String(err))));
      return;
    }
    if (this.all.size + this.loading < this.minWarm) {
      // release(), not putIdle(): a request that arrived while this loaded is waiting for it.
      this.load().then((w) => this.release(w), (err: unknown) => {
        this.opts.log.error('could not replace a disposed isolate', { worker: this.def.name, error: err });
      });
    }
  }

  private reapIdle(): void {
    const now = performance.now();
    // Oldest-used first; keep minWarm; an isolate with open sockets stays until they close.
    this.idle.sort((a, b) => b.lastUsed - a.lastUsed);
    for (let i = this.idle.length - 1; i >= 0 && this.all.size > this.minWarm; i--) {
      const w = this.idle[i]!;
      if (now - w.lastUsed < this.opts.idleMs) break;
      if (w.openSockets > 0) continue;
      this.idle.splice(i, 1);
      w.dispose('idle');
      this.forget(w);
    }
  }

  private checkDrained(): void {
    if (!this.closed || !this.drained) return;
    // Idle isolates of a replaced version go now, except those whose sockets are still open.
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const w = this.idle[i]!;
      if (w.openSockets > 0 && !w.dead) continue;
      this.idle.splice(i, 1);
      w.dispose('replaced');
      this.all.delete(w);
    }
    if (this.all.size > 0) return;
    this.opts.onIsolates?.(this.def.name, 0);
    this.drained();
    this.drained = undefined;
  }

  /** Stops taking requests, lets in-flight ones finish, then disposes every isolate. */
  drain(): Promise<void> {
    this.close();
    return new Promise((resolve) => {
      this.drained = resolve;
      this.checkDrained();
    });
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reaper) clearInterval(this.reaper);
    const err = new WorkerHostClosedError(`worker ${this.def.name} version ${this.def.digest} was replaced`);
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  /** Disposes everything now (agent shutdown). */
  dispose(): void {
    this.close();
    for (const w of this.all) w.dispose('shutdown');
    this.all.clear();
    this.idle.length = 0;
    this.events.clear();
  }
}
