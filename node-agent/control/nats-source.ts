import { createHash } from 'node:crypto';
import { followBucket, type BucketFollower } from '../../common/kv-follower.js';
import type { Logger } from '../../common/log.js';
import { type EdgeBuckets, type WorkerConfig } from '../../common/nats.js';
import { decodeJson, WorkerConfigSchema } from '../../common/nats-messages.js';
import { workerRef } from '../../common/keys.js';
import { openEnv } from '../../common/resolve-bindings.js';
import { SealedValueError, type SecretSealer } from '../../common/sealing.js';
import type { DesiredStateSource, DesiredWorker } from '../serving/desired.js';
import { Router } from '../serving/router.js';
import { aiUrlFromTemplate, isolateWorkerEnv, type AiUrl } from './worker-env.js';

// Desired state from the operator, over NATS (`edge agent --nats`): the KV bucket of
// worker configs, and bundles from the object store by digest. The agent never talks to
// the kube-apiserver; everything it needs (sources, secrets, AI endpoints) the operator
// resolved before publishing (common/resolve-bindings.ts).

export interface NatsSourceOptions {
  buckets: EdgeBuckets;
  /** This agent's region: only workers placed here are served. */
  region: string;
  log: Logger;
  /** How this agent reaches a model server's Service (cluster DNS by default). */
  aiUrl?: AiUrl;
  /** Opens the Secret values the operator sealed (none: a worker with secret bindings is not served). */
  sealer?: SecretSealer;
  /**
   * Reads a bundle by digest (null: not there); default the object store's getBlob. The
   * agent passes a direct-get reader (common/nats.ts readObjectDirect): no consumer per bundle.
   */
  readBundle?: (digest: string) => Promise<Uint8Array | null>;
}

/** Retry delay for a bundle that could not be fetched (the operator writes bundles before configs, so this is rare). */
const BUNDLE_RETRY_MS = 1_000;

export class NatsSource implements DesiredStateSource {
  private readonly configs = new Map<string, WorkerConfig>();
  private readonly bundles = new Map<string, string>();
  /** What was last handed to the agent per worker, kept when a new bundle cannot be fetched yet. */
  private readonly lastGood = new Map<string, DesiredWorker>();
  private follower: BucketFollower | undefined;
  private timer: NodeJS.Timeout | undefined;
  private building = Promise.resolve();
  private stopped = false;
  private readonly aiUrl: AiUrl;
  /** Workers placed in other regions only, by route (built when first asked after a change). */
  private elsewhere: Router<string[]> | undefined;

  constructor(private readonly opts: NatsSourceOptions) {
    this.aiUrl = opts.aiUrl ?? aiUrlFromTemplate();
  }

  async start(onUpdate: (workers: DesiredWorker[]) => void): Promise<void> {
    let synced = false;
    this.follower = followBucket(this.opts.buckets.workers, {
      put: (key, value) => { this.applyConfig(key, value); if (synced) this.schedule(onUpdate); },
      delete: (key) => { this.configs.delete(key); this.elsewhere = undefined; if (synced) this.schedule(onUpdate); },
    }, { log: this.opts.log, name: 'workers' });
    await this.follower.initial;
    synced = true;
    await this.rebuild(onUpdate);
  }

  private applyConfig(key: string, value: Uint8Array): void {
    try {
      const cfg = decodeJson(WorkerConfigSchema, value, `worker config ${key}`);
      this.configs.set(key, cfg);
      this.elsewhere = undefined;
    } catch (err) {
      // Keep what was there: a config we cannot read must not take a running worker down.
      this.opts.log.error('ignoring unreadable worker config', { key, error: err });
    }
  }

  placedElsewhere(host: string, path: string): { key: string; regions: string[] } | undefined {
    this.elsewhere ??= Router.build([...this.configs.values()]
      .filter((c) => !c.regions.includes(this.opts.region))
      .map((c) => ({ key: workerRef(c.namespace, c.name), routes: c.routes, target: c.regions })));
    const m = this.elsewhere.match(host, path);
    return m ? { key: m.key, regions: m.target } : undefined;
  }

  private schedule(onUpdate: (workers: DesiredWorker[]) => void, delayMs = 20): void {
    if (this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.rebuild(onUpdate);
    }, delayMs);
  }

  private rebuild(onUpdate: (workers: DesiredWorker[]) => void): Promise<void> {
    this.building = this.building.then(async () => {
      if (this.stopped) return;
      const { workers, retry } = await this.build();
      if (this.stopped) return;
      onUpdate(workers);
      if (retry) this.schedule(onUpdate, BUNDLE_RETRY_MS);
    });
    return this.building;
  }

  private async build(): Promise<{ workers: DesiredWorker[]; retry: boolean }> {
    const out: DesiredWorker[] = [];
    const wanted = new Set<string>();
    let retry = false;
    for (const cfg of this.configs.values()) {
      if (!cfg.regions.includes(this.opts.region)) continue;
      const key = workerRef(cfg.namespace, cfg.name);
      wanted.add(key);
      try {
        const env = isolateWorkerEnv(openEnv(cfg.env, cfg.namespace, cfg.name, this.opts.sealer), this.opts.region, this.aiUrl);
        const source = await this.bundle(cfg);
        const w: DesiredWorker = {
          key,
          routes: cfg.routes,
          minWarmIsolates: cfg.minWarmIsolates,
          ...(cfg.shard ? { shard: cfg.shard } : {}),
          def: { key, name: key, source, limits: cfg.limits, digest: cfg.version, env, ...(cfg.egress ? { egress: cfg.egress } : {}),
            ...(cfg.compatibilityFlags?.length ? { compatibilityFlags: cfg.compatibilityFlags } : {}) },
        };
        this.lastGood.set(key, w);
        out.push(w);
      } catch (err) {
        if (err instanceof SealedValueError) {
          // Waiting does not help (another key, or a config not written by the operator).
          this.opts.log.error('worker secrets do not open; keeping the previous version', { worker: key, error: err });
          const prev = this.lastGood.get(key);
          if (prev) out.push(prev);
          continue;
        }
        retry = true;
        this.opts.log.error('worker bundle unavailable; keeping the previous version', { worker: key, bundle: cfg.bundleDigest, error: err });
        const prev = this.lastGood.get(key);
        if (prev) out.push(prev);
      }
    }
    for (const k of [...this.lastGood.keys()]) if (!wanted.has(k)) this.lastGood.delete(k);
    const live = new Set([...this.configs.values()].map((c) => c.bundleDigest));
    for (const d of [...this.bundles.keys()]) if (!live.has(d)) this.bundles.delete(d);
    return { workers: out, retry };
  }

  private async bundle(cfg: WorkerConfig): Promise<string> {
    const cached = this.bundles.get(cfg.bundleDigest);
    if (cached !== undefined) return cached;
    const bytes = await (this.opts.readBundle ? this.opts.readBundle(cfg.bundleDigest) : this.opts.buckets.bundles.getBlob(cfg.bundleDigest));
    if (bytes === null) throw new Error(`bundle ${cfg.bundleDigest} is not in the object store`);
    const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (actual !== cfg.bundleDigest) throw new Error(`bundle ${cfg.bundleDigest} has digest ${actual}`);
    const source = new TextDecoder().decode(bytes);
    this.bundles.set(cfg.bundleDigest, source);
    return source;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.follower?.stop();
    await this.building;
  }
}
