import ivm from 'isolated-vm';
import type { SHIM_GLOBALS, DispatchAnswer, HostCallbacks, UrlRecord, WireResponse } from '../abi/bridge.js';
import { shimSource } from './shim-bundle.js';
import { EdgeError } from '../../common/errors.js';
import { LOAD_ROOT_IMPORTS, LOAD_ROOT_SOURCE, LOADED_MODULE_SOURCE } from '../../common/builtin-modules.js';

// Pre-warmed isolates. Each is made from a V8 snapshot that already holds the Workers API
// shim, has its context created and its host callbacks installed, and is primed (one
// request through the shim's own handler, primeIsolate) so placing a worker in one only
// has to compile the worker's module, and its first request compiles nothing of the
// shim's request path. The pool refills in the background.

export type EntryPoint = (typeof SHIM_GLOBALS)[number];

/** Host-side state a pooled isolate's callbacks consult; set when a worker takes it. */
export interface IsolateOwner {
  callbacks(): HostCallbacks;
  /** The shim's answer to a request begun with __edgeDispatch. */
  answer: DispatchAnswer;
}

export interface WarmIsolate {
  isolate: ivm.Isolate;
  context: ivm.Context;
  entry: Record<Exclude<EntryPoint, '__edgeInstall' | '__edgeWarm'>, ivm.Reference<(...args: unknown[]) => unknown>>;
  memoryMiB: number;
  /** Who the callbacks act for; null while pooled. */
  owner: { current: IsolateOwner | null };
  /** __edgeWarm, until primeIsolate has run it. */
  prime?: ivm.Reference<(step: 'begin' | 'end') => Promise<void>>;
  /** The load's root module and its hand-over import, compiled ahead (common/builtin-modules.ts LOAD_ROOT_SOURCE). */
  root: { root: ivm.Module; loaded: ivm.Module };
}

/** The shim snapshot is unfit to make isolates from (see checkSnapshot). */
export class SnapshotError extends EdgeError {}

let snapshot: ivm.ExternalCopy<ArrayBuffer> | undefined;
function shimSnapshot(): ivm.ExternalCopy<ArrayBuffer> {
  if (!snapshot) {
    const made = ivm.Isolate.createSnapshot([{ code: shimSource(), filename: 'edge-shim.js' }]);
    checkSnapshot(made);
    snapshot = made;
  }
  return snapshot;
}

/**
 * Refuses a snapshot that holds an ArrayBuffer backing store (a typed array over 64 bytes
 * made at the shim's top level). `new ivm.Isolate({ snapshot })` deserializes the snapshot's
 * context before it enters the new isolate, so the backing store is allocated by the new
 * isolate's LimitedAllocator while the *agent's* isolate is V8's current one; its Check()
 * (isolated-vm 5.0.4 src/isolate/allocator_nortti.cc:54, `Isolate::GetCurrent()`) weighs
 * the agent's heap against the new isolate's memoryLimit, refuses the allocation once the
 * agent's heap is larger than that limit, and V8 aborts the process
 * (`Check failed: (backing_store) != nullptr`). With no backing store in the snapshot the
 * allocator is never called there. A snapshot made at start-up is probed while the
 * agent's heap is small, so this check itself is safe.
 */
function checkSnapshot(made: ivm.ExternalCopy<ArrayBuffer>): void {
  const probe = new ivm.Isolate({ memoryLimit: 8, snapshot: made });
  try {
    const external = probe.getHeapStatisticsSync().externally_allocated_size;
    if (external > 0) {
      throw new SnapshotError(`the Workers API shim snapshot holds ${external} bytes of ArrayBuffer backing stores; every new isolate would allocate them before isolated-vm counts its memory correctly, which can abort the agent. Make typed arrays over 64 bytes in node-agent/shim/ lazily, not at the top level.`);
    }
  } finally {
    probe.dispose();
  }
}

const unowned = (name: string) => () => { throw new Error(`host callback ${name} called by an isolate no worker owns`); };

function callbacksFor(owner: WarmIsolate['owner']): Record<keyof HostCallbacks | 'respond', ivm.Callback> {
  const cb = <K extends keyof HostCallbacks>(name: K) => (...args: Parameters<HostCallbacks[K]>) => {
    const target = owner.current?.callbacks()[name] ?? unowned(name);
    return (target as (...a: unknown[]) => unknown)(...args);
  };
  return {
    log: new ivm.Callback(cb('log')),
    randomBytes: new ivm.Callback(cb('randomBytes')),
    parseURL: new ivm.Callback(cb('parseURL')),
    setURL: new ivm.Callback(cb('setURL')),
    digest: new ivm.Callback(cb('digest')),
    crypto: new ivm.Callback(cb('crypto'), { async: true }),
    cryptoRelease: new ivm.Callback(cb('cryptoRelease')),
    // Synchronous, so a setTimeout over the isolate's timer cap throws at the call.
    sleep: new ivm.Callback(cb('sleep')),
    timerCancel: new ivm.Callback(cb('timerCancel')),
    fetch: new ivm.Callback(cb('fetch'), { async: true }),
    // Async like fetch, so the host sees a subrequest's calls in the order the isolate made them.
    fetchWrite: new ivm.Callback(cb('fetchWrite'), { async: true }),
    fetchRead: new ivm.Callback(cb('fetchRead'), { async: true }),
    fetchCancel: new ivm.Callback(cb('fetchCancel'), { async: true }),
    aiRun: new ivm.Callback(cb('aiRun'), { async: true }),
    aiRead: new ivm.Callback(cb('aiRead'), { async: true }),
    aiCancel: new ivm.Callback(cb('aiCancel')),
    actorId: new ivm.Callback(cb('actorId')),
    actorFetch: new ivm.Callback(cb('actorFetch'), { async: true }),
    serviceCall: new ivm.Callback(cb('serviceCall'), { async: true }),
    rpcCallback: new ivm.Callback(cb('rpcCallback'), { async: true }),
    // Async like fetchWrite/fetchRead: the host sees a call's body operations in order.
    actorWrite: new ivm.Callback(cb('actorWrite'), { async: true }),
    actorRead: new ivm.Callback(cb('actorRead'), { async: true }),
    actorCancel: new ivm.Callback(cb('actorCancel'), { async: true }),
    bodyDemand: new ivm.Callback(cb('bodyDemand'), { async: true }),
    storage: new ivm.Callback(cb('storage')),
    socketSend: new ivm.Callback(cb('socketSend')),
    socketClose: new ivm.Callback(cb('socketClose')),
    hibernation: new ivm.Callback(cb('hibernation')),
    htmlRewriter: new ivm.Callback(cb('htmlRewriter')),
    lib: new ivm.Callback(cb('lib')),
    loaderGet: new ivm.Callback(cb('loaderGet')),
    loaderLoad: new ivm.Callback(cb('loaderLoad'), { async: true }),
    loaderCall: new ivm.Callback(cb('loaderCall'), { async: true }),
    // Ignored: the isolate goes on at once, and the host runs it as its next task. An answer
    // for an isolate nobody owns any more (disposed, its requests already failed) is dropped.
    respond: new ivm.Callback((...args: Parameters<DispatchAnswer>) => { owner.current?.answer(...args); }, { ignored: true }),
  };
}

/** Makes one ready isolate: snapshot, context, entry points, callbacks. */
export function warmIsolate(memoryMiB: number): WarmIsolate {
  const isolate = new ivm.Isolate({ memoryLimit: memoryMiB, snapshot: shimSnapshot() });
  try {
    const context = isolate.createContextSync();
    const global = context.global;
    const ref = (name: EntryPoint) => {
      const r = global.getSync(name, { reference: true }) as ivm.Reference<(...args: unknown[]) => unknown>;
      if (r.typeof !== 'function') throw new Error(`the shim snapshot has no ${name}`);
      return r;
    };
    const install = ref('__edgeInstall');
    const prime = ref('__edgeWarm') as unknown as ivm.Reference<(step: 'begin' | 'end') => Promise<void>>;
    const entry = {
      __edgeInit: ref('__edgeInit'), __edgeDispatch: ref('__edgeDispatch'),
      __edgePushBody: ref('__edgePushBody'),
      __edgePullBody: ref('__edgePullBody'), __edgeCancel: ref('__edgeCancel'), __edgeSettle: ref('__edgeSettle'),
      __edgeActor: ref('__edgeActor'),
      __edgeHostSettle: ref('__edgeHostSettle'),
      __edgeSocketEvent: ref('__edgeSocketEvent'),
      __edgeRpcLocal: ref('__edgeRpcLocal'),
    };
    const owner: WarmIsolate['owner'] = { current: null };
    install.applySync(undefined, [callbacksFor(owner), memoryMiB], { arguments: { copy: true } });
    install.release();
    const root = {
      root: isolate.compileModuleSync(LOAD_ROOT_SOURCE, { filename: 'edge-internal:root' }),
      loaded: isolate.compileModuleSync(LOADED_MODULE_SOURCE, { filename: LOAD_ROOT_IMPORTS.loaded }),
    };
    return { isolate, context, entry, memoryMiB, owner, prime, root };
  } catch (err) {
    if (!isolate.isDisposed) isolate.dispose();
    throw err;
  }
}

// The one host callback the warm-up request needs (the URL parser), as host-callbacks.ts
// has it; nothing else is reachable while it runs.
const urlRecord = (u: URL): UrlRecord => ({
  href: u.href, origin: u.origin, protocol: u.protocol, username: u.username, password: u.password,
  host: u.host, hostname: u.hostname, port: u.port, pathname: u.pathname, search: u.search, hash: u.hash,
});
const PRIMING_CALLBACKS: Pick<IsolateOwner, 'callbacks'> = {
  callbacks: () => ({
    parseURL(input: string, base?: string) {
      try {
        return urlRecord(base === undefined ? new URL(String(input)) : new URL(String(input), String(base)));
      } catch {
        return null;
      }
    },
  }) as unknown as HostCallbacks,
};
/** The warm-up request's bound: it runs only the shim's own code. */
const PRIME_TIMEOUT_MS = 1000;
/** The request the warm-up sends through __edgeDispatch (encodeRequestHead's form): the shim's own handler answers it. */
const WARM_REQUEST_HEAD = 'GET\nhttp://warm.invalid/\n\n\naccept\n*/*';

/**
 * Runs the shim's own handler in a pooled isolate, on isolated-vm's thread, off the event
 * loop: once inside `__edgeWarm`, then once more through the `__edgeDispatch` entry point
 * (isolated-vm's first call of it has costs of its own), so the worker that takes it does
 * not compile the request path on its first request's clock. An isolate whose warm-up failed is still
 * usable (only slower); none is ever primed twice or once a worker owns it.
 */
export async function primeIsolate(warm: WarmIsolate): Promise<void> {
  const prime = warm.prime;
  if (!prime || warm.owner.current !== null) return;
  delete warm.prime;
  let answered: ((response: WireResponse | null, error: string | null) => void) | undefined;
  const priming: IsolateOwner = { ...PRIMING_CALLBACKS, answer: (_id, response, error) => answered?.(response, error) };
  warm.owner.current = priming;
  try {
    // The timeout bounds the synchronous part; the race, a promise that would never settle (the pool's refill waits on it).
    let timer: NodeJS.Timeout | undefined;
    const steps = (async () => {
      try {
        await prime.apply(undefined, ['begin'], { arguments: { copy: true }, result: { promise: true }, timeout: PRIME_TIMEOUT_MS });
        await new Promise<void>((resolve, reject) => {
          answered = (_response, error) => { if (error === null) resolve(); else reject(new Error(error)); };
          warm.entry.__edgeDispatch.applyIgnored(undefined, [-1, WARM_REQUEST_HEAD, null]);
        });
      } finally {
        await prime.apply(undefined, ['end'], { arguments: { copy: true }, result: { promise: true }, timeout: PRIME_TIMEOUT_MS });
      }
    })();
    await Promise.race([
      steps,
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('warm-up timed out')), 2 * PRIME_TIMEOUT_MS); }),
    ]).finally(() => clearTimeout(timer));
  } catch (err) {
    // A warm-up still running is never handed to a worker; one that failed leaves the
    // isolate unprimed (its worker's first request compiles the path, as before).
    if (err instanceof Error && err.message === 'warm-up timed out' && !warm.isolate.isDisposed) warm.isolate.dispose();
  } finally {
    prime.release();
    if (warm.owner.current === priming) warm.owner.current = null;
  }
}

const REFILL_GAP_MS = 10;

export interface IsolatePoolOptions {
  /** Ready isolates kept for the default memory limit. */
  size: number;
  defaultMemoryMiB: number;
  /** Ready isolates kept for each other memory limit once a worker has asked for it. */
  otherSize?: number;
  onChange?: (ready: number) => void;
}

/**
 * Ready isolates per memory limit (V8 fixes the limit when an isolate is made): `size`
 * for the default limit, `otherSize` for each other limit a worker has used.
 */
export class IsolatePool {
  private readonly ready = new Map<number, WarmIsolate[]>();
  private refilling = false;
  private closed = false;

  constructor(private readonly opts: IsolatePoolOptions) {
    this.ready.set(opts.defaultMemoryMiB, []);
  }

  /** Ready isolates across all memory limits. */
  get size(): number {
    let n = 0;
    for (const list of this.ready.values()) n += list.length;
    return n;
  }

  private target(memoryMiB: number): number {
    return memoryMiB === this.opts.defaultMemoryMiB ? this.opts.size : (this.opts.otherSize ?? 1);
  }

  /** Builds the snapshot and fills the default pool; resolves when it is full. */
  async start(): Promise<void> {
    shimSnapshot();
    const list = this.ready.get(this.opts.defaultMemoryMiB)!;
    while (!this.closed && list.length < this.opts.size) {
      const w = warmIsolate(this.opts.defaultMemoryMiB);
      await primeIsolate(w);
      if (this.closed) { if (!w.isolate.isDisposed) w.isolate.dispose(); break; }
      if (w.isolate.isDisposed) continue;
      list.push(w);
      this.opts.onChange?.(this.size);
      await new Promise((r) => setImmediate(r));
    }
  }

  /** A ready isolate with this memory limit: from the pool when it has one, else made now. */
  take(memoryMiB: number): WarmIsolate {
    let list = this.ready.get(memoryMiB);
    if (!list) { list = []; this.ready.set(memoryMiB, list); }
    const warm = list.pop();
    this.refill();
    if (warm) {
      this.opts.onChange?.(this.size);
      return warm;
    }
    return warmIsolate(memoryMiB);
  }

  private refill(): void {
    if (this.refilling || this.closed) return;
    this.refilling = true;
    // Making an isolate holds the event loop for ~2 ms (V8 deserializes the snapshot),
    // so refilling waits a little and goes one isolate at a time: the request that just
    // took an isolate is answered first.
    const step = () => {
      const short = [...this.ready].find(([mem, list]) => list.length < this.target(mem));
      if (this.closed || !short) { this.refilling = false; return; }
      const w = warmIsolate(short[0]);
      // Primed before it is offered: a worker never waits behind the warm-up.
      void primeIsolate(w).then(() => {
        if (this.closed) { if (!w.isolate.isDisposed) w.isolate.dispose(); this.refilling = false; return; }
        if (!w.isolate.isDisposed) short[1].push(w);
        this.opts.onChange?.(this.size);
        setTimeout(step, REFILL_GAP_MS).unref();
      });
    };
    setTimeout(step, REFILL_GAP_MS).unref();
  }

  close(): void {
    this.closed = true;
    for (const list of this.ready.values()) {
      for (const w of list.splice(0)) if (!w.isolate.isDisposed) w.isolate.dispose();
    }
    this.opts.onChange?.(0);
  }
}
