import type { WorkerConfig } from '../../../common/nats.js';
import type { WorkerConfigs } from '../worker-store.js';

// Published configs and their bundle sources in maps, with the real store's rule that
// publishing what is already there writes nothing.

export class FakeWorkerStore implements WorkerConfigs {
  readonly configs = new Map<string, WorkerConfig>();
  readonly bundles = new Map<string, string>();
  /** "publish key" / "remove key" for every write made. */
  readonly writes: string[] = [];

  get(key: string): WorkerConfig | undefined { return this.configs.get(key); }

  publish(key: string, cfg: WorkerConfig, source: string): Promise<boolean> {
    const prev = this.configs.get(key);
    if (prev && JSON.stringify(prev) === JSON.stringify(cfg)) return Promise.resolve(false);
    this.configs.set(key, structuredClone(cfg));
    this.bundles.set(cfg.bundleDigest, source);
    this.writes.push(`publish ${key}`);
    return Promise.resolve(true);
  }

  setRoutes(key: string, routes: WorkerConfig['routes']): Promise<boolean> {
    const prev = this.configs.get(key);
    if (!prev || JSON.stringify(prev.routes) === JSON.stringify(routes)) return Promise.resolve(false);
    this.configs.set(key, { ...prev, routes: structuredClone(routes) });
    this.writes.push(`routes ${key}`);
    return Promise.resolve(true);
  }

  remove(key: string): Promise<boolean> {
    if (!this.configs.delete(key)) return Promise.resolve(false);
    this.writes.push(`remove ${key}`);
    return Promise.resolve(true);
  }
}
