import { followBucket, type BucketFollower } from '../../common/kv-follower.js';
import type { Logger } from '../../common/log.js';
import { encodeJson, type EdgeBuckets, type WorkerConfig } from '../../common/nats.js';
import { decodeJson, WorkerConfigSchema } from '../../common/nats-messages.js';

// The leader's writes to NATS: worker configs in KV and bundles in the object store.
// Only the leader writes here, so an index of which worker uses which bundle, loaded
// from the KV bucket when leadership starts and updated as we write, is exact; bundle
// deletion decides on it. Operations on one digest run one at a time, so a bundle is
// never deleted between another worker's check that it exists and its config landing.
//
// The leader keeps following the bucket: a config that someone else wrote, changed or
// deleted (NATS is not trusted to be written only by us, docs/security-nats.md) replaces
// the index entry with what KV holds and is handed to onForeignChange, so the owner is
// reconciled and its config written back. Our own writes come back through the watch too:
// those are told apart by content (what we are writing) and by revision (an older write
// of ours arriving after a newer one).

/** The one serialization configs are compared in: the schema's key order, whatever order the object was built in. */
const canonical = (cfg: WorkerConfig) => JSON.stringify(WorkerConfigSchema.parse(cfg));

export class WorkerStore {
  /** workerKey -> config as published (or as found in KV, after a foreign change). */
  private readonly index = new Map<string, WorkerConfig>();
  /** workerKey -> revision of our last write: deliveries up to it are ours or older. */
  private readonly written = new Map<string, number>();
  /** workerKey -> canonical JSON of a write in flight. */
  private readonly writing = new Map<string, string>();
  /** Keys we are removing. */
  private readonly removing = new Set<string>();
  /** Digests a reconcile is about to publish: counted as used. */
  private readonly pending = new Map<string, number>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private follower: BucketFollower | undefined;
  private synced = false;

  constructor(
    private readonly buckets: EdgeBuckets,
    private readonly log: Logger,
    /** A key whose KV entry we did not write, changed or deleted after start. */
    private readonly onForeignChange: (key: string) => void = () => {},
  ) {}

  /** Loads every published config (the bucket is the state; nothing else survives a restart) and keeps following it. */
  async start(): Promise<void> {
    this.index.clear();
    this.synced = false;
    this.follower = followBucket(this.buckets.workers, {
      put: (key, value, revision) => this.observePut(key, value, revision),
      delete: (key) => this.observeDelete(key),
    }, { log: this.log, name: 'workers' });
    await this.follower.initial;
    this.synced = true;
  }

  async stop(): Promise<void> {
    await this.follower?.stop();
  }

  private observePut(key: string, value: Uint8Array, revision: number): void {
    if (revision <= (this.written.get(key) ?? 0)) return;
    let cfg: WorkerConfig | undefined;
    try { cfg = decodeJson(WorkerConfigSchema, value, `worker config ${key}`); } catch (err) {
      this.log.warn('unreadable worker config in KV; it will be rewritten or removed', { key, error: err });
    }
    const mine = this.index.get(key);
    const json = cfg && canonical(cfg);
    if (json !== undefined && (json === this.writing.get(key) || (mine && json === canonical(mine)))) return;
    if (cfg) this.index.set(key, cfg); else this.index.delete(key);
    if (!this.synced) return;
    this.log.warn('worker config in KV changed by someone other than this operator; restoring it', { key, revision });
    this.onForeignChange(key);
  }

  private observeDelete(key: string): void {
    if (this.removing.has(key) || !this.index.has(key)) return;
    this.index.delete(key);
    if (!this.synced) return;
    this.log.warn('worker config deleted from KV by someone other than this operator; restoring it', { key });
    this.onForeignChange(key);
  }

  get(key: string): WorkerConfig | undefined { return this.index.get(key); }
  keys(): string[] { return [...this.index.keys()]; }

  private withLock<T>(digest: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(digest) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(digest, tail);
    void tail.then(() => { if (this.locks.get(digest) === tail) this.locks.delete(digest); });
    return next;
  }

  private used(digest: string): boolean {
    if ((this.pending.get(digest) ?? 0) > 0) return true;
    for (const c of this.index.values()) if (c.bundleDigest === digest) return true;
    return false;
  }

  /** Publishes a config (and its bundle) unless it is already what KV holds. Returns true when written. */
  async publish(key: string, cfg: WorkerConfig, source: string): Promise<boolean> {
    const prev = this.index.get(key);
    const json = canonical(cfg);
    if (prev && canonical(prev) === json) return false;
    const d = cfg.bundleDigest;
    this.pending.set(d, (this.pending.get(d) ?? 0) + 1);
    try {
      await this.withLock(d, async () => {
        const info = await this.buckets.bundles.info(d);
        // A deleted object still has info (with deleted set): it must be uploaded again.
        if (!info || info.deleted) {
          await this.buckets.bundles.putBlob({ name: d, description: `EdgeWorker bundle (${key})` }, new TextEncoder().encode(source));
        }
      });
      this.writing.set(key, json);
      try {
        const revision = await this.buckets.workers.put(key, encodeJson(cfg));
        this.written.set(key, Math.max(revision, this.written.get(key) ?? 0));
      } finally {
        if (this.writing.get(key) === json) this.writing.delete(key);
      }
      this.index.set(key, cfg);
    } finally {
      const n = (this.pending.get(d) ?? 1) - 1;
      if (n > 0) this.pending.set(d, n); else this.pending.delete(d);
    }
    if (prev && prev.bundleDigest !== d) await this.dropIfUnused(prev.bundleDigest);
    return true;
  }

  /**
   * Rewrites a published config's routes only (its bundle is in the store already): a
   * worker whose spec is refused keeps its last good version, minus routes it lost since.
   */
  async setRoutes(key: string, routes: WorkerConfig['routes']): Promise<boolean> {
    const prev = this.index.get(key);
    if (!prev || JSON.stringify(prev.routes) === JSON.stringify(routes)) return false;
    const cfg = { ...prev, routes };
    await this.buckets.workers.put(key, encodeJson(cfg));
    this.index.set(key, cfg);
    return true;
  }

  /** Removes a worker's config and, when no other worker uses it, its bundle. */
  async remove(key: string): Promise<boolean> {
    const existing = await this.buckets.workers.get(key);
    const had = this.index.get(key);
    if ((!existing || existing.operation !== 'PUT') && !had) return false;
    this.removing.add(key);
    try {
      await this.buckets.workers.purge(key);
    } finally {
      this.removing.delete(key);
    }
    this.index.delete(key);
    this.written.delete(key);
    if (had) await this.dropIfUnused(had.bundleDigest);
    return true;
  }

  private dropIfUnused(digest: string): Promise<void> {
    return this.withLock(digest, async () => {
      if (this.used(digest)) return;
      await this.buckets.bundles.delete(digest).catch((err: unknown) => {
        this.log.warn('could not delete unused bundle', { bundle: digest, error: err });
      });
    });
  }

  /** Deletes bundles no config refers to (left by a leader that died mid-way). */
  async sweep(): Promise<number> {
    let n = 0;
    for (const info of await this.buckets.bundles.list()) {
      if (info.deleted || this.used(info.name)) continue;
      await this.dropIfUnused(info.name);
      n++;
    }
    return n;
  }
}

/** What the EdgeWorker reconciler needs of the store; fake/worker-store.ts is an in-memory one. */
export type WorkerConfigs = Pick<WorkerStore, 'get' | 'publish' | 'setRoutes' | 'remove'>;
