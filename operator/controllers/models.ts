import type { AiBinding, EdgeModel, EdgeWorker } from '../../common/api/index.js';
import { ConditionReasons as R } from '../../common/reasons.js';
import type { ModelServerBinding } from './inference.js';
import { PolicyViolation, type EffectivePolicy } from './policy.js';
import { claimOrder } from './routes.js';
import { aiServerKey } from '../../common/resolve-bindings.js';

// The model catalogue (EdgeModel, cluster-scoped) and the GPU quota of a namespace. An ai
// binding names a model; what runs on the GPU nodes (image, GPUs, arguments) comes only
// from the catalogue entry, never from the tenant. Pure.

/** Catalogue entries by model id; two entries for one id: the first by name counts. */
export function catalogue(models: readonly EdgeModel[]): Map<string, EdgeModel> {
  const out = new Map<string, EdgeModel>();
  for (const m of [...models].filter((x) => !x.metadata.deletionTimestamp).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))) {
    if (!out.has(m.spec.model)) out.set(m.spec.model, m);
  }
  return out;
}

/**
 * The model servers a worker's ai bindings ask for, as the catalogue defines them: one for
 * each binding's `model` and one for each model of its `models` (keyed by aiServerKey).
 * Throws PolicyViolation(ModelNotAllowed) for a model outside the catalogue, one the
 * namespace's policy does not allow, or an `image` other than the catalogue's.
 */
export function modelServers(
  namespace: string, bindings: readonly AiBinding[], cat: Map<string, EdgeModel>, pol: EffectivePolicy, defaultImage: string,
): ModelServerBinding[] {
  return bindings.flatMap((b) => {
    const wanted = [b.model, ...(b.models ?? []).filter((m) => m !== b.model)];
    return wanted.map((model, i) => {
      const field = i === 0 ? `spec.bindings.ai ${b.name}` : `spec.bindings.ai ${b.name} models`;
      const entry = cat.get(model);
      if (!entry) {
        const offered = [...cat.keys()];
        throw new PolicyViolation(R.ModelNotAllowed, `${field}: model ${model} is not in the cluster's catalogue (EdgeModels: ${offered.join(', ') || 'none'})`, { binding: b.name });
      }
      if (pol.models && !pol.models.includes(model)) {
        throw new PolicyViolation(R.ModelNotAllowed, `${field}: ${pol.source} does not allow model ${model} in namespace ${namespace} (allowed: ${pol.models.join(', ') || 'none'})`, { binding: b.name });
      }
      const image = entry.spec.image ?? defaultImage;
      if (i === 0 && b.image !== undefined && b.image !== image) {
        throw new PolicyViolation(R.ModelNotAllowed, `${field}: image ${b.image} is not the catalogue's image for ${model} (EdgeModel ${entry.metadata.name}: ${image}); leave image unset`, { binding: b.name });
      }
      return {
        name: aiServerKey(b.name, model, i === 0), model, image, gpus: entry.spec.gpus, replicasPerRegion: b.replicasPerRegion,
        task: entry.spec.task,
        ...(entry.spec.source ? { source: entry.spec.source } : {}),
        ...(entry.spec.args ? { args: entry.spec.args } : {}),
      };
    });
  });
}

/** GPUs the servers hold: gpus x replicasPerRegion x regions, summed. */
export const gpusOf = (servers: readonly ModelServerBinding[], regions: number): number =>
  servers.reduce((n, s) => n + s.gpus * s.replicasPerRegion * regions, 0);

/**
 * Checks the namespace's GPU quota for `worker`. Workers of the namespace take their GPUs
 * in age order (claimOrder), so a newer worker never takes an older one's share; a worker
 * that does not fit (or whose models are refused) holds none. `need(w)` says what a worker
 * of the namespace would hold, or undefined when it holds nothing.
 */
export function checkGpuQuota(
  worker: EdgeWorker, namespaceWorkers: readonly EdgeWorker[], pol: EffectivePolicy, need: (w: EdgeWorker) => number | undefined,
): void {
  const ref = (w: EdgeWorker) => `${w.metadata.namespace ?? 'default'}/${w.metadata.name}`;
  const mine = need(worker) ?? 0;
  if (mine === 0) return;
  let held = 0;
  for (const w of [...namespaceWorkers].filter((x) => !x.metadata.deletionTimestamp && ref(x) !== ref(worker)).sort(claimOrder)) {
    if (claimOrder(w, worker) > 0) break;
    const n = need(w) ?? 0;
    if (held + n <= pol.maxGpus) held += n;
  }
  if (held + mine > pol.maxGpus) {
    throw new PolicyViolation(R.GpuQuotaExceeded, `spec.bindings.ai needs ${mine} GPUs (gpus x replicasPerRegion x regions); namespace ${worker.metadata.namespace ?? 'default'} may hold ${pol.maxGpus} (${pol.source}) and older workers hold ${held}`);
  }
}
