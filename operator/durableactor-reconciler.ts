import { API_VERSION, type DurableActor, type DurableActorStatus, type EdgeWorker } from '../common/api/index.js';
import type { Logger } from '../common/log.js';
import { setConditions, transitions, type ConditionInput } from './conditions.js';
import type { EventRecorder } from './events.js';
import { crPath, isConflict, isNotFound, type KubeClient } from './kube-client.js';
import { regionsOf, type NodeInfo } from './placement.js';

// The DurableActor reconciler: resolves the region an actor class lives in and checks
// what it refers to. The actor runtime on the agents (single activation, storage,
// migration) is issue 5; until it lands, Ready says so instead of pretending.

export const DA_PLURAL = 'durableactors';

export interface DurableActorDeps {
  client: KubeClient;
  events: EventRecorder;
  log: Logger;
  getActor(namespace: string, name: string): DurableActor | undefined;
  getWorker(namespace: string, name: string): EdgeWorker | undefined;
  nodes(): NodeInfo[];
}

export class DurableActorReconciler {
  constructor(private readonly d: DurableActorDeps) {}

  async reconcile(namespace: string, name: string): Promise<void> {
    const da = this.d.getActor(namespace, name);
    if (!da || da.metadata.deletionTimestamp) return;
    const generation = da.metadata.generation ?? 0;
    const worker = this.d.getWorker(namespace, da.spec.workerRef.name);
    const regions = regionsOf(this.d.nodes());
    const workerRegions = worker?.spec.placement.regions ?? [...regions.keys()].filter((r) => (regions.get(r)?.isolate.length ?? 0) > 0).sort();
    const region = da.spec.locationHint ?? workerRegions[0];

    let placed: ConditionInput;
    if (!worker) placed = { type: 'Placed', status: 'False', reason: 'WorkerNotFound', message: `spec.workerRef: EdgeWorker ${namespace}/${da.spec.workerRef.name} not found` };
    else if (!region) placed = { type: 'Placed', status: 'False', reason: 'NoRegions', message: 'no region has isolate nodes' };
    else if ((regions.get(region)?.isolate.length ?? 0) === 0) placed = { type: 'Placed', status: 'False', reason: 'RegionUnavailable', message: `no isolate nodes in ${region}` };
    else if (!workerRegions.includes(region)) placed = { type: 'Placed', status: 'False', reason: 'WorkerNotInRegion', message: `EdgeWorker ${da.spec.workerRef.name} is not placed in ${region} (it runs in ${workerRegions.join(', ') || 'no region'})` };
    else placed = { type: 'Placed', status: 'True', reason: 'Placed', message: `actors of class ${da.spec.className} live in ${region}` };
    const ready: ConditionInput = { type: 'Ready', status: 'False', reason: 'ActorRuntimeUnavailable', message: 'this version of the agents does not run actors yet' };

    const wanted = [ready, placed].map((c) => ({ ...c, observedGeneration: generation }));
    const conditions = setConditions(da.status?.conditions, wanted, new Date());
    const status: DurableActorStatus = { observedGeneration: generation, conditions, ...(region ? { region } : {}), activeActors: da.status?.activeActors ?? 0 };
    if (JSON.stringify(status) === JSON.stringify(da.status ?? {})) return;
    try {
      await this.d.client.request('PATCH', crPath(DA_PLURAL, namespace, name, 'status'), { patch: 'merge', body: { status } });
    } catch (err) {
      if (isNotFound(err) || isConflict(err)) return;
      throw err;
    }
    const obj = { apiVersion: API_VERSION, kind: 'DurableActor', name, namespace, uid: da.metadata.uid };
    for (const c of transitions(da.status?.conditions, conditions)) {
      if (c.type === 'Placed') void this.d.events.record(obj, c.status === 'True' ? 'Normal' : 'Warning', c.reason, c.message);
    }
  }
}
