import type { KubeConfig } from '@kubernetes/client-node';
import type { EdgeWorker } from '../../common/api/index.js';
import type { Logger } from '../../common/log.js';
import { workerRef } from '../../common/keys.js';
import { Informer, type KubeObject } from '../runtime/informer.js';
import { objectKeyOf, type ObjectKey } from '../runtime/controller.js';

// Watches only the ConfigMaps that EdgeWorkers reference: one namespaced watch, only in
// namespaces that have references, keeping metadata only (the reconciler reads the data
// fresh when it needs it).
//
// Secrets are not watched: list/watch on Secrets would let the operator enumerate every
// Secret of the cluster, so its RBAC holds `get` only and it re-reads the Secrets workers
// bind by name every --secret-poll-interval (hasSecretRefs picks the workers to re-queue).

type Kind = 'configmaps';

export function referencesOf(ew: EdgeWorker): { kind: Kind; name: string }[] {
  return ew.spec.source.configMapRef ? [{ kind: 'configmaps', name: ew.spec.source.configMapRef.name }] : [];
}

/** Whether a worker binds Secrets, which are polled rather than watched. */
export const hasSecretRefs = (ew: EdgeWorker): boolean => (ew.spec.bindings?.secrets ?? []).length > 0;

const metadataOnly = (raw: unknown): KubeObject | undefined => {
  const m = (raw as { metadata?: { name?: unknown; namespace?: unknown; resourceVersion?: unknown; uid?: unknown } } | null)?.metadata;
  if (!m || typeof m.name !== 'string') return undefined;
  return { metadata: { name: m.name, namespace: typeof m.namespace === 'string' ? m.namespace : undefined, resourceVersion: typeof m.resourceVersion === 'string' ? m.resourceVersion : undefined, uid: typeof m.uid === 'string' ? m.uid : undefined } };
};

export class RefWatcher {
  /** `${kind}/${namespace}/${name}` -> the workers referencing it, by `ns/name`. */
  private refs = new Map<string, Map<string, ObjectKey>>();
  private readonly informers = new Map<string, Informer<KubeObject>>();

  constructor(
    private readonly kc: KubeConfig,
    private readonly log: Logger,
    private readonly enqueue: (worker: ObjectKey) => void,
  ) {}

  /** Recomputes the references from the current EdgeWorkers and starts/stops watches to match. */
  update(workers: EdgeWorker[]): void {
    const refs = new Map<string, Map<string, ObjectKey>>();
    /** `${kind}/${namespace}` -> what to watch. */
    const namespaces = new Map<string, { kind: Kind; ns: string }>();
    for (const ew of workers) {
      const ns = ew.metadata.namespace ?? 'default';
      for (const r of referencesOf(ew)) {
        const k = `${r.kind}/${ns}/${r.name}`;
        let set = refs.get(k);
        if (!set) { set = new Map(); refs.set(k, set); }
        set.set(workerRef(ns, ew.metadata.name), objectKeyOf(ew));
        namespaces.set(`${r.kind}/${ns}`, { kind: r.kind, ns });
      }
    }
    this.refs = refs;
    for (const [key, { kind, ns }] of namespaces) {
      if (this.informers.has(key)) continue;
      const inf = new Informer<KubeObject>({ kc: this.kc, path: `/api/v1/namespaces/${ns}/${kind}`, parse: metadataOnly, log: this.log, name: `${kind} in ${ns}` });
      const touched = (obj: KubeObject) => {
        for (const w of this.refs.get(`${kind}/${ns}/${obj.metadata.name}`)?.values() ?? []) this.enqueue(w);
      };
      inf.on('add', touched);
      inf.on('update', touched);
      inf.on('delete', touched);
      this.informers.set(key, inf);
      void inf.start();
    }
    for (const [key, inf] of this.informers) {
      if (!namespaces.has(key)) { this.informers.delete(key); void inf.stop(); }
    }
  }

  async stop(): Promise<void> {
    await Promise.all([...this.informers.values()].map((i) => i.stop()));
    this.informers.clear();
  }
}
