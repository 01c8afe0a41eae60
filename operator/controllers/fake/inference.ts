import {
  desiredInference, type Inference, type InferenceOptions, type InferenceResult, type InferenceWorker, type ModelServerBinding,
} from '../inference.js';

// Model servers without an apiserver: the Services a worker would get come from the real
// (pure) desiredInference, so invalid input fails as it would; readiness is what the test
// sets. Every call is recorded.

export class FakeInference implements Inference {
  readonly calls: string[] = [];
  /** `${binding}/${region}` -> readyReplicas; absent means 0. */
  readonly ready = new Map<string, number>();
  /** The model servers of the last reconcile, as handed over. */
  servers: ModelServerBinding[] = [];

  reconcile(worker: InferenceWorker, bindings: readonly ModelServerBinding[], regions: readonly string[], opts: InferenceOptions): Promise<InferenceResult> {
    this.calls.push(`reconcile ${worker.namespace}/${worker.name} ${bindings.map((b) => b.name).join(',')} in ${regions.join(',')}`);
    this.servers = structuredClone([...bindings]);
    let want: ReturnType<typeof desiredInference>;
    // The real one is async: invalid input rejects, it does not throw.
    try { want = desiredInference(worker, bindings, regions, opts); } catch (err) { return Promise.reject(err as Error); }
    const ready: InferenceResult['ready'] = {};
    for (const b of bindings) {
      ready[b.name] = Object.fromEntries(Object.keys(want.refs[b.name] ?? {}).map((r) => [r, { readyReplicas: this.ready.get(`${b.name}/${r}`) ?? 0, replicas: b.replicasPerRegion }]));
    }
    return Promise.resolve({ created: [], updated: [], deleted: [], refs: want.refs, ready });
  }

  delete(worker: { name: string; namespace: string }): Promise<{ deleted: string[] }> {
    this.calls.push(`delete ${worker.namespace}/${worker.name}`);
    return Promise.resolve({ deleted: [] });
  }
}
