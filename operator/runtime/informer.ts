import { Watch, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';
import { KubeClient, KubeError } from './kube-client.js';

// A list+watch cache in the manner of client-go's reflector and informer, on raw JSON.
//
// Why not client-node's ListWatch/makeInformer: its LIST goes through the typed client
// (deserialized models: camelCase keys, Date objects) while WATCH events are raw JSON, so
// one cache holds objects of two shapes; and it stops for good on any error other than 410.
//
// How it works: LIST (paged, consistent read) -> replace the cache, emitting add/update for
// what changed and delete for what vanished -> WATCH from the list's resourceVersion with
// bookmarks -> on a clean close watch again from the last resourceVersion seen; on 410 Gone
// list again; on any other error back off (250 ms doubling to 10 s) and retry, forever,
// until stop(). The resourceVersion only advances for events that were handled, so
// nothing is skipped across reconnects.
//
// The LIST goes through KubeClient (raw JSON over node:https with the kubeconfig's
// credentials; Node's global fetch would ignore the agent carrying the cluster CA).

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string; [k: string]: unknown };
  [k: string]: unknown;
}

export interface InformerOptions<T extends KubeObject> {
  kc: KubeConfig;
  /** Collection path, e.g. '/apis/edge.isolates.dev/v1alpha1/edgeworkers', '/api/v1/namespaces/ns/configmaps', '/api/v1/nodes'. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /**
   * Parses/validates each object. Returning undefined (or throwing) keeps the object out
   * of the cache with a logged warning naming it; an object already cached whose new
   * version is rejected is removed (with a 'delete' event), so the cache only ever holds
   * objects that parse. Without `parse`, anything with a string metadata.name is accepted
   * as T unchecked.
   */
  parse?: (raw: unknown) => T | undefined;
  /** Drops fields the operator never reads before an object is cached (memory). Runs after parse. */
  transform?: (obj: T) => T;
  log: Logger;
  /** Names this informer in logs and stats. */
  name: string;
  /** Server-side watch timeout; each watch asks for a random value in [n, 2n) seconds. Default 300. */
  watchTimeoutSeconds?: number;
  /** LIST page size. Default 500. */
  pageSize?: number;
  /** Retry backoff after errors. Default 250 ms doubling to 10 s. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Client-side limit for one LIST page request. Default 60 s. */
  listTimeoutMs?: number;
}

export type InformerEventType = 'add' | 'update' | 'delete';
export type InformerHandler<T> = (obj: T, old?: T) => void;

export interface InformerStats {
  /** Completed LISTs (each may span several pages). */
  lists: number;
  /** Watch requests started. */
  watches: number;
  /** Relists caused by 410 Gone. */
  expired: number;
  /** Failed LIST or WATCH attempts (each followed by a backoff). */
  errors: number;
  /** add/update/delete events emitted. */
  events: number;
  /** Objects skipped because parse rejected them. */
  rejected: number;
}

interface ListResult {
  items: unknown[];
  resourceVersion: string;
}

type WatchOutcome =
  | { kind: 'closed' }
  | { kind: 'gone' }
  | { kind: 'stopped' }
  | { kind: 'error'; err: unknown };

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function isKubeObject(v: unknown): v is KubeObject {
  return isRecord(v) && isRecord(v.metadata) && typeof v.metadata.name === 'string';
}

/** 'ns/name' or 'name' of a raw object, for log lines about objects that may not parse. */
function describeRaw(raw: unknown): string {
  if (!isRecord(raw) || !isRecord(raw.metadata)) return '<object without metadata>';
  const { name, namespace } = raw.metadata;
  const n = typeof name === 'string' ? name : '<no name>';
  return typeof namespace === 'string' && namespace !== '' ? `${namespace}/${n}` : n;
}

function rawResourceVersion(raw: unknown): string | undefined {
  if (!isRecord(raw) || !isRecord(raw.metadata)) return undefined;
  const rv = raw.metadata.resourceVersion;
  return typeof rv === 'string' && rv !== '' ? rv : undefined;
}

/** The HTTP status an error from client-node's Watch (or from this module) carries, if any. */
export function statusCodeOf(err: unknown): number | undefined {
  if (err instanceof KubeError) return err.code;
  if (!isRecord(err)) return undefined;
  // Watch sets `statusCode` on a non-200 answer; ApiException from the typed API uses `code`
  // (Node's system errors also have a `code`, but a string one).
  for (const v of [err.statusCode, err.code]) if (typeof v === 'number') return v;
  return undefined;
}

export class Informer<T extends KubeObject> {
  readonly name: string;
  private readonly opts: InformerOptions<T>;
  private readonly log: Logger;
  private readonly handlers: Record<InformerEventType, InformerHandler<T>[]> = { add: [], update: [], delete: [] };
  private store = new Map<string, T>();
  private synced = false;
  private lastResourceVersion = '';
  private stopped = false;
  private readonly stopController = new AbortController();
  private runLoop: Promise<void> | undefined;
  private startPromise: Promise<void> | undefined;
  private resolveSynced: (() => void) | undefined;
  private rejectSynced: ((err: Error) => void) | undefined;
  /** Ends the watch in progress (if any) as 'stopped'. */
  private endWatch: (() => void) | undefined;
  private readonly counters: InformerStats = { lists: 0, watches: 0, expired: 0, errors: 0, events: 0, rejected: 0 };
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;

  private readonly client: KubeClient;

  constructor(opts: InformerOptions<T>) {
    this.opts = opts;
    this.name = opts.name;
    this.log = opts.log.child({ informer: opts.name });
    this.initialBackoffMs = opts.backoff?.initialMs ?? 250;
    this.maxBackoffMs = opts.backoff?.maxMs ?? 10_000;
    this.client = new KubeClient(opts.kc);
    if (!opts.path.startsWith('/')) throw new Error(`informer ${opts.name}: path must start with '/', got '${opts.path}'`);
  }

  on(event: InformerEventType, cb: InformerHandler<T>): void {
    this.handlers[event].push(cb);
  }

  /** Starts listing and watching; resolves once the first LIST is in the cache, rejects if stop() comes first. */
  start(): Promise<void> {
    if (this.stopped) return Promise.reject(new Error(`informer ${this.name}: start() after stop()`));
    if (this.startPromise) return this.startPromise;
    this.startPromise = new Promise<void>((resolve, reject) => {
      this.resolveSynced = resolve;
      this.rejectSynced = reject;
    });
    // Marked handled so a caller that never awaits start() gets no unhandled rejection
    // when it stops before the first sync; callers that await still see the error.
    this.startPromise.catch(() => undefined);
    this.runLoop = this.run();
    return this.startPromise;
  }

  /** Ends the watch and the retry loop; no handler is called after the returned promise resolves. */
  async stop(): Promise<void> {
    if (this.stopped) { await this.runLoop; return; }
    this.stopped = true;
    this.stopController.abort();
    this.endWatch?.();
    await this.runLoop;
    if (!this.synced) this.rejectSynced?.(new Error(`informer ${this.name}: stopped before the first list completed`));
  }

  get hasSynced(): boolean { return this.synced; }

  /** resourceVersion the next watch starts from (the last one seen). */
  get resourceVersion(): string { return this.lastResourceVersion; }

  get stats(): Readonly<InformerStats> { return { ...this.counters }; }

  /** Cached objects are shared, not copies: treat them as read-only. */
  get(namespace: string | undefined, name: string): T | undefined {
    return this.store.get(namespace ? `${namespace}/${name}` : name);
  }

  /** All cached objects, or those in `namespace`. */
  list(namespace?: string): T[] {
    const all = [...this.store.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata.namespace === namespace);
  }

  key(obj: KubeObject): string {
    const ns = obj.metadata.namespace;
    return ns ? `${ns}/${obj.metadata.name}` : obj.metadata.name;
  }

  private async run(): Promise<void> {
    let backoffMs = this.initialBackoffMs;
    let needList = true;
    while (!this.stopped) {
      try {
        if (needList) {
          await this.listAndReplace();
          needList = false;
          backoffMs = this.initialBackoffMs;
          continue;
        }
        const started = Date.now();
        const { outcome, events } = await this.watchOnce();
        if (outcome.kind === 'stopped') break;
        // A watch that lived a while or delivered something proves the connection works;
        // one that ends at once, repeatedly, must not turn into a hot loop.
        const healthy = events > 0 || Date.now() - started >= 1000;
        if (healthy) backoffMs = this.initialBackoffMs;
        if (outcome.kind === 'gone') {
          this.counters.expired++;
          this.log.info('watch expired (410 Gone); listing again', { resourceVersion: this.lastResourceVersion });
          needList = true;
          if (healthy) continue;
        } else if (outcome.kind === 'closed') {
          this.log.debug('watch closed; watching again', { resourceVersion: this.lastResourceVersion, events });
          if (healthy) continue;
        } else {
          throw outcome.err;
        }
      } catch (err) {
        if (this.stopped) break;
        this.counters.errors++;
        this.log.warn(needList ? 'list failed; retrying' : 'watch failed; retrying', {
          path: this.opts.path, error: err, status: statusCodeOf(err), retryInMs: backoffMs,
        });
      }
      await this.sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, this.maxBackoffMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopController.signal.aborted) { resolve(); return; }
      const onAbort = (): void => { clearTimeout(timer); resolve(); };
      const timer = setTimeout(() => {
        this.stopController.signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      this.stopController.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private async listAndReplace(): Promise<void> {
    const { items, resourceVersion } = await this.listAll();
    if (this.stopped) return;
    const fresh = new Map<string, T>();
    for (const raw of items) {
      const obj = this.accept(raw);
      if (obj) fresh.set(this.key(obj), obj);
    }
    const old = this.store;
    this.store = fresh;
    this.lastResourceVersion = resourceVersion;
    this.counters.lists++;
    for (const [k, obj] of fresh) {
      const prev = old.get(k);
      if (!prev) this.emit('add', obj);
      else if (prev.metadata.resourceVersion !== obj.metadata.resourceVersion) this.emit('update', obj, prev);
    }
    for (const [k, prev] of old) if (!fresh.has(k)) this.emit('delete', prev);
    this.log.debug('listed', { objects: fresh.size, resourceVersion });
    if (!this.synced) {
      this.synced = true;
      this.resolveSynced?.();
    }
  }

  /** All pages of the collection at one resourceVersion. */
  private async listAll(): Promise<ListResult> {
    const pageSize = this.opts.pageSize ?? 500;
    const items: unknown[] = [];
    let cont: string | undefined;
    let paged = true;
    for (;;) {
      const q = new URLSearchParams();
      if (paged) q.set('limit', String(pageSize));
      if (cont) q.set('continue', cont);
      if (this.opts.labelSelector) q.set('labelSelector', this.opts.labelSelector);
      if (this.opts.fieldSelector) q.set('fieldSelector', this.opts.fieldSelector);
      let page: unknown;
      try {
        page = await this.getJson(q);
      } catch (err) {
        // A continue token outlives etcd compaction only so long; client-go's pager then
        // falls back to one unpaged LIST, and so does this.
        if (cont && statusCodeOf(err) === 410) {
          this.log.info('list continue token expired; listing again without paging', { path: this.opts.path });
          items.length = 0;
          cont = undefined;
          paged = false;
          continue;
        }
        throw err;
      }
      if (!isRecord(page) || !Array.isArray(page.items) || !isRecord(page.metadata)) {
        throw new Error(`LIST ${this.opts.path}: answer is not a list object (no items/metadata)`);
      }
      const rv = page.metadata.resourceVersion;
      if (typeof rv !== 'string' || rv === '') throw new Error(`LIST ${this.opts.path}: answer has no metadata.resourceVersion`);
      // List items come without apiVersion/kind for built-in types while watch events carry
      // them; fill them in so parse() sees one shape from both sources.
      const listKind = typeof page.kind === 'string' && page.kind.endsWith('List') ? page.kind.slice(0, -4) : undefined;
      const apiVersion = typeof page.apiVersion === 'string' ? page.apiVersion : undefined;
      for (const item of page.items) {
        if (isRecord(item)) {
          if (item.kind === undefined && listKind) item.kind = listKind;
          if (item.apiVersion === undefined && apiVersion) item.apiVersion = apiVersion;
        }
        items.push(item);
      }
      const next = page.metadata.continue;
      if (typeof next === 'string' && next !== '') { cont = next; continue; }
      return { items, resourceVersion: rv };
    }
  }

  private getJson(query: URLSearchParams): Promise<unknown> {
    const signal = AbortSignal.any([this.stopController.signal, AbortSignal.timeout(this.opts.listTimeoutMs ?? 60_000)]);
    return this.client.request('GET', this.opts.path, { query: Object.fromEntries(query), signal, timeoutMs: this.opts.listTimeoutMs ?? 60_000 });
  }

  /** One WATCH request from the last resourceVersion, until it closes, fails or is stopped. */
  private watchOnce(): Promise<{ outcome: WatchOutcome; events: number }> {
    const base = this.opts.watchTimeoutSeconds ?? 300;
    const timeoutSeconds = base + Math.floor(Math.random() * base);
    const params: Record<string, string | number | boolean | undefined> = {
      allowWatchBookmarks: true,
      resourceVersion: this.lastResourceVersion,
      timeoutSeconds,
      labelSelector: this.opts.labelSelector,
      fieldSelector: this.opts.fieldSelector,
    };
    this.counters.watches++;
    return new Promise((resolve) => {
      let settled = false;
      let events = 0;
      let controller: AbortController | undefined;
      const finish = (outcome: WatchOutcome): void => {
        if (settled) return;
        settled = true;
        clearTimeout(watchdog);
        this.endWatch = undefined;
        controller?.abort();
        resolve({ outcome, events });
      };
      // The server ends the watch after timeoutSeconds; a connection that died without a
      // FIN/RST would otherwise hang here until TCP keepalive notices (minutes).
      const watchdog = setTimeout(() => {
        finish({ kind: 'error', err: new Error(`watch ${this.opts.path} still open ${timeoutSeconds + 30} s after asking for a ${timeoutSeconds} s timeout`) });
      }, (timeoutSeconds + 30) * 1000);
      this.endWatch = () => finish({ kind: 'stopped' });
      if (this.stopped) { finish({ kind: 'stopped' }); return; }

      new Watch(this.opts.kc).watch(this.opts.path, params, (type: string, obj: unknown) => {
        // Events after we gave up on this watch are not applied and the resourceVersion does
        // not move past them, so the next watch delivers them again.
        if (settled) return;
        events++;
        let outcome: WatchOutcome | undefined;
        try {
          outcome = this.handleWatchEvent(type, obj);
        } catch (err) {
          // Watch swallows exceptions thrown by this callback; surface them.
          this.log.error('handling a watch event failed', { type, object: describeRaw(obj), error: err });
        }
        if (outcome) finish(outcome);
      }, (err: unknown) => {
        if (err === null || err === undefined) finish({ kind: 'closed' });
        else if (statusCodeOf(err) === 410) finish({ kind: 'gone' });
        else finish({ kind: 'error', err });
      }).then((c) => {
        controller = c;
        if (settled) c.abort();
      }, (err: unknown) => finish({ kind: 'error', err }));
    });
  }

  /** Applies one watch event; returns how the watch ends if this event ends it. */
  private handleWatchEvent(type: string, raw: unknown): WatchOutcome | undefined {
    if (type === 'ERROR') {
      const code = isRecord(raw) && typeof raw.code === 'number' ? raw.code : 0;
      if (code === 410) return { kind: 'gone' };
      const reason = isRecord(raw) && typeof raw.reason === 'string' ? raw.reason : undefined;
      const message = isRecord(raw) && typeof raw.message === 'string' ? raw.message : JSON.stringify(raw);
      return { kind: 'error', err: new KubeError(code, reason ?? String(code), `watch ${this.opts.path}: ERROR event ${code}${reason ? ` ${reason}` : ''}: ${message}`) };
    }
    const rv = rawResourceVersion(raw);
    if (type === 'BOOKMARK') {
      if (rv) this.lastResourceVersion = rv;
      return undefined;
    }
    if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') {
      this.log.warn('unknown watch event type; ignored', { type, object: describeRaw(raw) });
      return undefined;
    }
    const obj = this.accept(raw);
    const k = obj ? this.key(obj) : this.rawKey(raw);
    const prev = k === undefined ? undefined : this.store.get(k);
    if (type === 'DELETED') {
      if (k !== undefined && prev) {
        this.store.delete(k);
        this.emit('delete', obj ?? prev);
      }
    } else if (obj && k !== undefined) {
      this.store.set(k, obj);
      if (!prev) this.emit('add', obj);
      else if (prev.metadata.resourceVersion !== obj.metadata.resourceVersion) this.emit('update', obj, prev);
    } else if (k !== undefined && prev) {
      // The new version does not parse: the cache holds only objects that do.
      this.store.delete(k);
      this.emit('delete', prev);
    }
    if (rv) this.lastResourceVersion = rv;
    return undefined;
  }

  private rawKey(raw: unknown): string | undefined {
    return isKubeObject(raw) ? this.key(raw) : undefined;
  }

  /** parse + transform, or undefined (logged) when the object is rejected. */
  private accept(raw: unknown): T | undefined {
    let obj: T | undefined;
    try {
      if (this.opts.parse) obj = this.opts.parse(raw);
      // Without a parser the caller vouches for the shape; only what the cache needs is checked.
      else if (isKubeObject(raw)) obj = raw as T;
    } catch (err) {
      this.counters.rejected++;
      this.log.warn('object rejected by parse; skipped', { object: describeRaw(raw), error: err });
      return undefined;
    }
    if (obj === undefined) {
      this.counters.rejected++;
      this.log.warn('object rejected by parse; skipped', { object: describeRaw(raw) });
      return undefined;
    }
    if (!isKubeObject(obj)) {
      this.counters.rejected++;
      this.log.warn('parsed object has no metadata.name; skipped', { object: describeRaw(raw) });
      return undefined;
    }
    if (this.opts.transform) {
      try {
        obj = this.opts.transform(obj);
      } catch (err) {
        this.counters.rejected++;
        this.log.warn('transform threw; object skipped', { object: describeRaw(raw), error: err });
        return undefined;
      }
    }
    return obj;
  }

  private emit(event: InformerEventType, obj: T, old?: T): void {
    this.counters.events++;
    for (const cb of this.handlers[event]) {
      try {
        cb(obj, old);
      } catch (err) {
        this.log.error('informer handler threw', { event, object: this.key(obj), error: err });
      }
    }
  }
}
