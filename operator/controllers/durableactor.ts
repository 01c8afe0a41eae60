import { API_VERSION, DurableActorSchema, type DurableActor, type DurableActorStatus, type EdgeWorker } from '../../common/api/index.js';
import { agentOf, servesNamespace } from '../../common/isolate-hosts.js';
import type { AgentReports } from '../../common/agent-view.js';
import type { KvStore } from '../../common/kv-store.js';
import { encodeJson, type ActorConfig } from '../../common/nats.js';
import { decodeJson, ActorConfigSchema } from '../../common/nats-messages.js';
import { actorClassKey, actorClassRef } from '../../common/keys.js';
import { ConditionReasons as R, ConditionTypes as T } from '../../common/reasons.js';
import { sameStatus, setConditions, transitions, type ConditionInput } from './conditions.js';
import type { EventSink } from '../runtime/events.js';
import { ensureFinalizer, hasFinalizer, removeFinalizer, writeStatus } from '../runtime/cr-writes.js';
import type { KubeApi } from '../runtime/kube-client.js';
import type { ObjectKey, ReconcileContext, Reconciler, Result } from '../runtime/controller.js';
import { regionsOf, type NodeInfo } from './placement.js';

// The DurableActor reconciler: resolves the region an actor class lives in, publishes the
// class's config to KV `edge-actors` (the agents of that region host its actors), and
// reports readiness and the number of active actors. Deleting the CR deletes the actors'
// durable state (the finalizer runs purgeActorData first).

export const DA_PLURAL = 'durableactors';

export interface DurableActorDeps {
  client: KubeApi;
  /** KV `edge-actors`: one config per DurableActor. */
  actorConfigs: KvStore;
  agents: AgentReports;
  events: EventSink;
  getActor(namespace: string, name: string): DurableActor | undefined;
  getWorker(namespace: string, name: string): EdgeWorker | undefined;
  nodes(): NodeInfo[];
  /** Removes every actor's storage of one DurableActor. */
  purgeActorData(namespace: string, name: string): Promise<void>;
}

export class DurableActorReconciler implements Reconciler {
  constructor(private readonly d: DurableActorDeps) {}

  async reconcile(ctx: ReconcileContext, { namespace, name }: ObjectKey): Promise<Result> {
    const key = actorClassKey(namespace, name);
    const da = this.d.getActor(namespace, name);
    if (!da) {
      await this.removeConfig(key);
      return {};
    }
    if (da.metadata.deletionTimestamp) {
      if (!hasFinalizer(da)) return {};
      await this.removeConfig(key);
      await this.d.purgeActorData(namespace, name);
      await removeFinalizer(this.d.client, DA_PLURAL, da);
      ctx.log.info('durable actor deleted with its storage', { actor: actorClassRef(namespace, name) });
      return {};
    }
    await this.converge(await ensureFinalizer(this.d.client, DA_PLURAL, da, (raw: unknown) => DurableActorSchema.parse(raw)));
    return {};
  }

  private async removeConfig(key: string): Promise<void> {
    const e = await this.d.actorConfigs.get(key);
    if (e && e.operation === 'PUT') await this.d.actorConfigs.purge(key);
  }

  private async converge(da: DurableActor): Promise<void> {
    const { namespace = 'default', name } = da.metadata;
    const generation = da.metadata.generation ?? 0;
    const worker = this.d.getWorker(namespace, da.spec.workerRef.name);
    const regions = regionsOf(this.d.nodes());
    const workerRegions = worker?.spec.placement.regions ?? [...regions.keys()].filter((r) => (regions.get(r)?.isolate.length ?? 0) > 0).sort();
    const region = da.spec.locationHint ?? workerRegions[0];

    let placed: ConditionInput;
    if (!worker) placed = { type: T.Placed, status: 'False', reason: R.WorkerNotFound, message: `spec.workerRef: EdgeWorker ${namespace}/${da.spec.workerRef.name} not found` };
    else if (!region) placed = { type: T.Placed, status: 'False', reason: R.NoRegions, message: 'no region has isolate nodes' };
    else if ((regions.get(region)?.isolate.length ?? 0) === 0) placed = { type: T.Placed, status: 'False', reason: R.RegionUnavailable, message: `no isolate nodes in ${region}` };
    else if (!workerRegions.includes(region)) placed = { type: T.Placed, status: 'False', reason: R.WorkerNotInRegion, message: `EdgeWorker ${da.spec.workerRef.name} is not placed in ${region} (it runs in ${workerRegions.join(', ') || 'no region'})` };
    else placed = { type: T.Placed, status: 'True', reason: R.Placed, message: `actors of class ${da.spec.className} live in ${region}` };

    const key = actorClassKey(namespace, name);
    if (placed.status === 'True' && region) {
      const cfg: ActorConfig = {
        namespace, name, uid: da.metadata.uid ?? '', generation, className: da.spec.className, worker: da.spec.workerRef.name,
        region, idleTimeoutSeconds: da.spec.idleTimeoutSeconds, maxBytesPerActor: da.spec.storage.maxBytesPerActor, storageBackend: da.spec.storage.backend,
      };
      const e = await this.d.actorConfigs.get(key);
      let cur: ActorConfig | undefined;
      if (e && e.operation === 'PUT') { try { cur = decodeJson(ActorConfigSchema, e.value, key); } catch { cur = undefined; } }
      if (JSON.stringify(cur) !== JSON.stringify(cfg)) await this.d.actorConfigs.put(key, encodeJson(cfg));
    }

    // Agents, not processes: an agent with isolate hosts counts once, when the host of this namespace is live.
    const agents = region ? [...new Set(this.d.agents.agents(region).filter((a) => !a.draining && servesNamespace(a, namespace)).map(agentOf))] : [];
    const workerReady = worker?.status?.conditions?.find((c) => c.type === T.Ready)?.status === 'True';
    let ready: ConditionInput;
    if (placed.status !== 'True') ready = { type: T.Ready, status: 'False', reason: placed.reason, message: placed.message };
    else if (!workerReady) ready = { type: T.Ready, status: 'False', reason: R.WorkerNotReady, message: `EdgeWorker ${da.spec.workerRef.name} is not Ready` };
    else if (agents.length === 0) ready = { type: T.Ready, status: 'False', reason: R.NoAgents, message: `no live agent in ${region}` };
    else ready = { type: T.Ready, status: 'True', reason: R.Serving, message: `${agents.length} agent(s) in ${region} host ${da.spec.className} actors` };
    let active = 0;
    if (region) for (const r of this.d.agents.reportsForActors(key, region)) active += r.active;

    const wanted = [ready, placed].map((c) => ({ ...c, observedGeneration: generation }));
    const conditions = setConditions(da.status?.conditions, wanted, new Date());
    const status: DurableActorStatus = { observedGeneration: generation, conditions, ...(region ? { region } : {}), activeActors: active };
    if (sameStatus(status, da.status)) return;
    if (!(await writeStatus(this.d.client, DA_PLURAL, da, status))) return;
    const obj = { apiVersion: API_VERSION, kind: 'DurableActor', name, namespace, uid: da.metadata.uid };
    for (const c of transitions(da.status?.conditions, conditions)) {
      const warn = c.status === 'False' && c.reason !== R.WorkerNotReady;
      void this.d.events.record(obj, warn ? 'Warning' : 'Normal', c.reason, `${c.type}=${c.status}: ${c.message}`);
    }
  }
}
