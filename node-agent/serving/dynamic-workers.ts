import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../../common/log.js';
import type { IsolatePool } from '../isolate/pool.js';
import type { IsolateHooks, WorkerDefinition } from '../isolate/worker-isolate.js';
import { WorkerHost, type InternalRequest, type InternalResponse } from './worker-host.js';

// Dynamic workers (Worker Loader bindings, bindings/worker-loader.ts): each runs in a
// WorkerHost of its own with one isolate, taken from the agent's pre-warmed pool, in this
// process beside its caller, so a load is one module compile and a call is one dispatch,
// with no hop across processes. It is contained as a deployed worker is (the same
// WorkerIsolate limits, disposal and replacement); its console lines and CPU go to its
// caller's name, tagged with its id. get()'s workers are kept per agent in an LRU keyed by
// (caller, caller's version, binding, id), bounded by a count and by the heap they hold;
// an evicted one is loaded again, through the caller's callback, when next asked for.
// load()'s live until the caller's request that made them ends.

/** get()'s warm dynamic workers kept per agent, at most. */
export const DEFAULT_DYNAMIC_CACHE_ENTRIES = 256;
/** Heap the cached ones may hold together before the least recently used go. */
export const DEFAULT_DYNAMIC_CACHE_BYTES = 512 * 1024 * 1024;
/**
 * The part of the cache (entries, and heap) one calling worker may hold: a caller looping
 * over fresh ids evicts its own dynamic workers first, never more than this of other callers'.
 */
export const DEFAULT_DYNAMIC_CACHE_CALLER_SHARE = 0.25;
/** Calls that may wait for a dynamic worker's one isolate; past that a call fails at once. */
const MAX_QUEUED_CALLS = 1000;

export interface DynamicWorkersOptions {
  pool: IsolatePool;
  /** The agent's isolate hooks: logs, CPU and disposals are reported under the caller's name. */
  hooks: IsolateHooks;
  log: Logger;
  registry: Registry;
  maxEntries?: number;
  maxBytes?: number;
  /** DEFAULT_DYNAMIC_CACHE_CALLER_SHARE */
  callerShare?: number;
}

interface Entry {
  readonly host: WorkerHost;
  readonly parent: string;
  /** Cache key; null for a load()'s. */
  readonly key: string | null;
  bytes: number;
  gone: boolean;
  readonly dead: boolean;
}

const cacheKey = (parent: string, parentDigest: string, binding: string, id: string) => `${parent}\n${parentDigest}\n${binding}\n${id}`;

export class DynamicWorkers {
  /** get()'s, least recently used first (a Map iterates in insertion order). */
  private readonly cache = new Map<string, Entry>();
  /** get()'s loading now: a second get() of the id joins the first. */
  private readonly loading = new Map<string, Promise<Entry>>();
  private readonly live = new Set<Entry>();
  private cachedBytes = 0;
  /** Per calling worker: its cached entries and their heap. */
  private readonly byCaller = new Map<string, { entries: number; bytes: number }>();
  private closed = false;
  private readonly loads: Counter<'worker' | 'kind'>;
  private readonly hits: Counter<'worker'>;
  private readonly misses: Counter<'worker'>;
  private readonly evictions: Counter<'worker' | 'reason'>;
  private readonly loadSeconds: Histogram;

  constructor(private readonly opts: DynamicWorkersOptions) {
    const registers = [opts.registry];
    this.loads = new Counter({ name: 'edge_dynamic_worker_loads_total', help: 'Dynamic workers started (Worker Loader load() and get() misses), by calling worker and kind.', labelNames: ['worker', 'kind'], registers });
    this.hits = new Counter({ name: 'edge_dynamic_worker_cache_hits_total', help: 'Worker Loader get() calls that found the dynamic worker warm, by calling worker.', labelNames: ['worker'], registers });
    this.misses = new Counter({ name: 'edge_dynamic_worker_cache_misses_total', help: 'Worker Loader get() calls that found no warm dynamic worker (the code callback runs), by calling worker.', labelNames: ['worker'], registers });
    this.evictions = new Counter({ name: 'edge_dynamic_worker_evictions_total', help: 'Cached dynamic workers let go, by calling worker and reason (entries, bytes: the agent\'s cache was full; caller: the caller was over its share; dead).', labelNames: ['worker', 'reason'], registers });
    this.loadSeconds = new Histogram({ name: 'edge_dynamic_worker_load_seconds', help: 'Time to start a dynamic worker (pooled isolate taken, module compiled and evaluated).', registers, buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2] });
    const cached = () => ({ entries: this.cache.size, bytes: this.cachedBytes });
    new Gauge({ name: 'edge_dynamic_worker_cached', help: 'Warm dynamic workers cached for Worker Loader get().', registers, collect() { this.set(cached().entries); } });
    new Gauge({ name: 'edge_dynamic_worker_cached_heap_bytes', help: 'V8 heap the cached dynamic workers held when loaded.', registers, collect() { this.set(cached().bytes); } });
  }

  warm(parent: string, parentDigest: string, binding: string, id: string): Entry | undefined {
    const key = cacheKey(parent, parentDigest, binding, id);
    const e = this.cache.get(key);
    if (e && !e.gone) {
      // Most recently used goes to the back.
      this.cache.delete(key);
      this.cache.set(key, e);
      this.hits.inc({ worker: parent });
      return e;
    }
    if (e) this.forget(e, 'dead');
    this.misses.inc({ worker: parent });
    return undefined;
  }

  touch(w: unknown): boolean {
    const e = w as Entry;
    if (e.gone || e.key === null || this.cache.get(e.key) !== e) return false;
    this.cache.delete(e.key);
    this.cache.set(e.key, e);
    this.hits.inc({ worker: e.parent });
    return true;
  }

  async load(l: { def: WorkerDefinition; parent: string; parentDigest: string; binding: string; id: string | null }): Promise<Entry> {
    if (l.id === null) {
      const e = await this.start(l.def, l.parent, null);
      this.loads.inc({ worker: l.parent, kind: 'load' });
      return e;
    }
    const key = cacheKey(l.parent, l.parentDigest, l.binding, l.id);
    const have = this.cache.get(key);
    if (have && !have.gone) return have;
    let p = this.loading.get(key);
    if (!p) {
      p = this.start(l.def, l.parent, key).finally(() => this.loading.delete(key));
      this.loading.set(key, p);
      const e = await p;
      this.loads.inc({ worker: l.parent, kind: 'get' });
      this.cache.set(key, e);
      this.cachedBytes += e.bytes;
      const mine = this.byCaller.get(e.parent) ?? { entries: 0, bytes: 0 };
      mine.entries += 1;
      mine.bytes += e.bytes;
      this.byCaller.set(e.parent, mine);
      this.evict(e);
      return e;
    }
    return p;
  }

  private async start(def: WorkerDefinition, parent: string, key: string | null): Promise<Entry> {
    if (this.closed) throw new Error('the agent is shutting down');
    const t0 = performance.now();
    const base = this.opts.hooks;
    const tag = `[dynamic ${def.name.slice(parent.length + 1)}] `;
    // Everything the isolate reports goes under the caller's name (metric labels, console streams, CPU per namespace).
    const hooks: IsolateHooks = {
      ...base,
      onLog: (_w, level, message) => base.onLog(parent, level, tag + message),
      onDispose: (_w, reason) => base.onDispose(parent, reason),
      ...(base.onCpu ? { onCpu: (_w: string, ms: number) => base.onCpu!(parent, ms) } : {}),
    };
    const host = new WorkerHost(def, {
      pool: this.opts.pool, hooks, log: this.opts.log,
      // One isolate, kept (and replaced when a limit kills it) until the entry goes.
      minWarm: 1, maxIsolates: 1, idleMs: 2 ** 30, maxQueued: MAX_QUEUED_CALLS,
      // Its first call follows at once: it runs behind init on the isolate's thread.
      pipelineInit: true,
    });
    await host.start();
    const entry: Entry = {
      host, parent, key, bytes: key === null ? 0 : await host.heapBytes(), gone: false,
      get dead() { return this.gone; },
    };
    this.live.add(entry);
    this.loadSeconds.observe((performance.now() - t0) / 1000);
    return entry;
  }

  call(w: unknown, req: InternalRequest, depth: number, entrypoint: string | undefined): Promise<InternalResponse> {
    const e = w as Entry;
    if (!this.live.has(e)) throw new Error('no such dynamic worker');
    return e.host.call(req, depth, entrypoint);
  }

  /** A load()'s worker: its caller's request ended. */
  release(w: unknown): void {
    const e = w as Entry;
    if (e.key === null) this.forget(e, null);
  }

  private forget(e: Entry, reason: 'entries' | 'bytes' | 'caller' | 'dead' | null): void {
    if (e.key !== null && this.cache.get(e.key) === e) {
      this.cache.delete(e.key);
      this.cachedBytes -= e.bytes;
      const mine = this.byCaller.get(e.parent);
      if (mine) {
        mine.entries -= 1;
        mine.bytes -= e.bytes;
        if (mine.entries <= 0) this.byCaller.delete(e.parent);
      }
      if (reason) this.evictions.inc({ worker: e.parent, reason });
    }
    if (e.gone) return;
    e.gone = true;
    this.live.delete(e);
    // Calls in flight finish first. Disposing an isolate takes ~0.5 ms of this thread: a
    // load()'s worker goes when its caller's request ends, and the response must not wait.
    setImmediate(() => void e.host.drain());
  }

  /**
   * Least recently used out until the cache fits: first the caller's own beyond its share,
   * then anyone's; never `keep`, the one its caller is about to use.
   */
  private evict(keep: Entry): void {
    const maxEntries = this.opts.maxEntries ?? DEFAULT_DYNAMIC_CACHE_ENTRIES;
    const maxBytes = this.opts.maxBytes ?? DEFAULT_DYNAMIC_CACHE_BYTES;
    const share = this.opts.callerShare ?? DEFAULT_DYNAMIC_CACHE_CALLER_SHARE;
    const callerEntries = Math.max(1, Math.floor(maxEntries * share));
    const callerBytes = maxBytes * share;
    for (const e of [...this.cache.values()]) {
      const mine = this.byCaller.get(keep.parent);
      if (!mine || (mine.entries <= callerEntries && mine.bytes <= callerBytes)) break;
      if (e !== keep && e.parent === keep.parent) this.forget(e, 'caller');
    }
    for (const e of [...this.cache.values()]) {
      if (this.cache.size <= maxEntries && this.cachedBytes <= maxBytes) break;
      if (e === keep) continue;
      this.forget(e, this.cache.size > maxEntries ? 'entries' : 'bytes');
    }
  }

  get size(): number { return this.cache.size; }

  close(): void {
    this.closed = true;
    for (const e of [...this.live]) {
      e.gone = true;
      e.host.dispose();
    }
    this.live.clear();
    this.cache.clear();
    this.byCaller.clear();
    this.cachedBytes = 0;
  }
}
