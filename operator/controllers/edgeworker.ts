import * as z from 'zod';
import {
  API_VERSION, EdgeWorkerSchema, type Condition, type DurableActor, type EdgeModel, type EdgePolicy, type EdgeWorker, type EdgeWorkerStatus,
} from '../../common/api/index.js';
import type { WorkerConfig } from '../../common/nats.js';
import { workerKey, workerRef } from '../../common/keys.js';
import { ConditionReasons as R, ConditionTypes as T, type ConditionReason } from '../../common/reasons.js';
import {
  BindingResolutionError, decodeBinaryData, resolveEnv, resolveSource, sealEnv, sha256Digest, workerVersion, type BindingLookup,
} from '../../common/resolve-bindings.js';
import type { SecretSealer } from '../../common/sealing.js';
import type { WorkerConfigs } from './worker-store.js';
import type { AgentReports } from '../../common/agent-view.js';
import { checkBundle } from './bundle-check.js';
import { sameStatus, setConditions, transitions, type ConditionInput } from './conditions.js';
import type { EventSink } from '../runtime/events.js';
import { InvalidInference, type Inference, type InferenceResult, type ModelServerBinding } from './inference.js';
import { PolicyViolation, hostRefusal, policyFor, resolveRun, type EffectivePolicy } from './policy.js';
import { decideRoutes, type RouteRefusal } from './routes.js';
import { catalogue, checkGpuQuota, gpusOf, modelServers } from './models.js';
import { ensureFinalizer, hasFinalizer, removeFinalizer, writeStatus } from '../runtime/cr-writes.js';
import { isNotFound, type KubeApi } from '../runtime/kube-client.js';
import { TerminalError, type ObjectKey, type ReconcileContext, type Reconciler, type Result } from '../runtime/controller.js';
import { place, regionsColumn, regionsOf, type NodeInfo } from './placement.js';
import { EdgeError } from '../../common/errors.js';

// The EdgeWorker reconciler: reads the CR (from the informer cache), the Nodes and the
// agents' reports, and converges NATS (config in KV, bundle in the object store), the
// inference Deployments/Services and the CR's status on them. Idempotent: a reconcile that
// finds everything in place writes nothing.

export const PLURAL = 'edgeworkers';

export interface EdgeWorkerDeps {
  client: KubeApi;
  agents: AgentReports;
  events: EventSink;
  inference: Inference;
  getWorker(namespace: string, name: string): EdgeWorker | undefined;
  getActor(namespace: string, name: string): DurableActor | undefined;
  /** Every EdgeWorker (the cache): route ownership and GPU quotas are decided across them. */
  listWorkers(): EdgeWorker[];
  /** The cluster admin's EdgePolicies and model catalogue (cluster-scoped kinds). */
  policies(): EdgePolicy[];
  models(): EdgeModel[];
  nodes(): NodeInfo[];
  defaultAiImage: string;
  store: WorkerConfigs;
  /** Secret values are sealed with it before they are published (common/sealing.ts). */
  sealer: SecretSealer;
}

/** Why a worker cannot be published: a Ready=False reason and a message for the user. */
class NotServable extends EdgeError {
  constructor(readonly reason: ConditionReason, message: string) { super(message); }
}

const SecretSchema = z.object({ data: z.record(z.string(), z.string()).optional() });
const ConfigMapSchema = z.object({ data: z.record(z.string(), z.string()).optional(), binaryData: z.record(z.string(), z.string()).optional() });

export class EdgeWorkerReconciler implements Reconciler {
  constructor(private readonly d: EdgeWorkerDeps) {}

  async reconcile(ctx: ReconcileContext, { namespace, name }: ObjectKey): Promise<Result> {
    const ew = this.d.getWorker(namespace, name);
    if (!ew) {
      // Gone without our finalizer running (created and deleted while no leader ran, or the
      // finalizer was removed by hand): remove what may be left of it.
      await this.removeNatsState(ctx, namespace, name);
      return {};
    }
    if (ew.metadata.deletionTimestamp) {
      await this.finalize(ctx, ew);
      return {};
    }
    await this.converge(ctx, await ensureFinalizer(this.d.client, PLURAL, ew, (raw: unknown) => EdgeWorkerSchema.parse(raw)));
    return {};
  }

  private async finalize(ctx: ReconcileContext, ew: EdgeWorker): Promise<void> {
    const { namespace = 'default', name } = ew.metadata;
    if (!hasFinalizer(ew)) return;
    // Only a worker that has (or had published) ai bindings owns inference objects.
    const published = this.d.store.get(workerKey(namespace, name));
    if ((ew.spec.bindings?.ai ?? []).length > 0 || Object.keys(published?.env.ai ?? {}).length > 0 || !published) {
      await this.d.inference.delete({ name, namespace, uid: ew.metadata.uid ?? '' });
    }
    await this.removeNatsState(ctx, namespace, name);
    await removeFinalizer(this.d.client, PLURAL, ew);
    ctx.log.info('worker deleted; NATS state removed', { worker: workerRef(namespace, name) });
  }

  private async removeNatsState(ctx: ReconcileContext, namespace: string, name: string): Promise<void> {
    if (await this.d.store.remove(workerKey(namespace, name))) {
      ctx.log.info('worker config removed from NATS', { worker: workerRef(namespace, name) });
    }
  }

  /**
   * Answers the resolver from the apiserver (ConfigMaps, Secrets), the informer cache
   * (DurableActors) and the model servers it converges; onModelServers is told which of
   * them are not ready.
   */
  private lookup(
    ew: EdgeWorker, placed: string[], published: WorkerConfig | undefined, servers: ModelServerBinding[], onModelServers: (notReady: string[]) => void,
  ): BindingLookup {
    return {
      configMap: async (namespace, name) => {
        const cm = await this.getObject(`/api/v1/namespaces/${namespace}/configmaps/${name}`, ConfigMapSchema);
        return cm && { data: cm.data ?? {}, binaryData: decodeBinaryData(cm.binaryData) };
      },
      secret: async (namespace, name) => {
        const secret = await this.getObject(`/api/v1/namespaces/${namespace}/secrets/${name}`, SecretSchema);
        if (!secret) return undefined;
        return Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
      },
      durableActorUid: (namespace, name) => Promise.resolve(this.d.getActor(namespace, name)?.metadata.uid),
      // The bindings as the catalogue defines them (servers), not as the tenant wrote them.
      aiServices: async (namespace, name) => {
        const bindings = servers;
        // Model servers first: the config we publish points at their Services. A worker that
        // had ai bindings and has none now still goes through, so its model servers are removed.
        if (bindings.length === 0 && Object.keys(published?.env.ai ?? {}).length === 0) return {};
        let inf: InferenceResult;
        try {
          inf = await this.d.inference.reconcile({ name, namespace, uid: ew.metadata.uid ?? '' }, bindings, placed, { defaultImage: this.d.defaultAiImage });
        } catch (err) {
          // Only a change to the spec can fix these, and a spec change is an event.
          if (err instanceof InvalidInference) throw new TerminalError(`ai bindings: ${err.message}`, { cause: err });
          throw err;
        }
        onModelServers(bindings.flatMap((b) => placed
          .filter((r) => (inf.ready[b.name]?.[r]?.readyReplicas ?? 0) < 1)
          .map((r) => `${b.name} in ${r}`)));
        return inf.refs;
      },
    };
  }

  private async getObject<T extends z.ZodType>(path: string, schema: T): Promise<z.infer<T> | undefined> {
    try {
      return schema.parse(await this.d.client.request('GET', path));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** What a worker of the namespace would hold in GPUs, or undefined when its models are refused. */
  private gpuNeed(w: EdgeWorker, pol: EffectivePolicy, cat: ReturnType<typeof catalogue>, regions: ReturnType<typeof regionsOf>): number | undefined {
    const ai = w.spec.bindings?.ai ?? [];
    if (ai.length === 0) return 0;
    try {
      const servers = modelServers(w.metadata.namespace ?? 'default', ai, cat, pol, this.d.defaultAiImage);
      return gpusOf(servers, place(w.spec.placement.regions, regions, true).placed.length);
    } catch (err) {
      if (err instanceof PolicyViolation) return undefined;
      throw err;
    }
  }

  private async converge(ctx: ReconcileContext, ew: EdgeWorker): Promise<void> {
    const { namespace = 'default', name } = ew.metadata;
    const key = workerKey(namespace, name);
    const spec = ew.spec;
    const regions = regionsOf(this.d.nodes());
    const placement = place(spec.placement.regions, regions, (spec.bindings?.ai ?? []).length > 0);
    let published = this.d.store.get(key);
    const policies = this.d.policies();
    const pol = policyFor(namespace, policies);
    const routes = decideRoutes(this.d.listWorkers(), (ns, host) => hostRefusal(ns, host, policies)).get(workerRef(namespace, name))
      ?? { allowed: [], refused: [] };

    let notServable: NotServable | undefined;
    let aiDegraded: string[] = [];
    try {
      // The admin's policy first: a spec over a ceiling, or asking for a model server the
      // catalogue or the GPU quota refuses, creates nothing.
      const run = resolveRun(spec, pol);
      const cat = catalogue(this.d.models());
      const servers = modelServers(namespace, spec.bindings?.ai ?? [], cat, pol, this.d.defaultAiImage);
      checkGpuQuota(ew, this.d.listWorkers().filter((w) => (w.metadata.namespace ?? 'default') === namespace), pol,
        (w) => (w === ew ? gpusOf(servers, placement.placed.length) : this.gpuNeed(w, pol, cat, regions)));
      const lookup = this.lookup(ew, placement.placed, published, servers, (notReady) => { aiDegraded = notReady; });
      const source = await resolveSource(namespace, spec, lookup);
      const bundleDigest = sha256Digest(source);
      // Before the bindings: a bundle that does not compile should not start model servers.
      const problem = await checkBundle(bundleDigest, source, `worker:${namespace}/${name}.js`, spec.compatibilityFlags);
      if (problem) throw new NotServable(R.BundleInvalid, `bundle ${bundleDigest.slice(0, 19)}… ${problem}`);
      // Sealed before anything is derived from it: not even the version digest is taken over clear values.
      const env = sealEnv(await resolveEnv(namespace, name, spec, lookup), namespace, name, this.d.sealer);
      const version = workerVersion(bundleDigest, spec, env, run);
      const cfg: WorkerConfig = {
        namespace, name, uid: ew.metadata.uid ?? '', generation: ew.metadata.generation ?? 0,
        // Only the routes this worker owns: a refused one never reaches an agent's route table.
        version, bundleDigest, regions: placement.placed, routes: routes.allowed, limits: run.limits,
        minWarmIsolates: run.minWarmIsolates,
        ...(spec.placement.shard ? { shard: spec.placement.shard } : {}),
        ...(spec.compatibilityDate ? { compatibilityDate: spec.compatibilityDate } : {}),
        ...(spec.compatibilityFlags?.length ? { compatibilityFlags: spec.compatibilityFlags } : {}),
        ...(run.egress ? { egress: run.egress } : {}),
        env,
      };
      if (await this.d.store.publish(key, cfg, source)) {
        ctx.log.info('worker config published', { worker: workerRef(namespace, name), version, regions: cfg.regions });
      }
      published = cfg;
    } catch (err) {
      if (err instanceof BindingResolutionError || err instanceof PolicyViolation) notServable = new NotServable(err.reason, err.message);
      else if (err instanceof NotServable) notServable = err;
      else throw err;
    }
    // A refused spec keeps its last good version; a route taken since by an older claimant
    // leaves that version's routes too.
    if (notServable && published && (await this.d.store.setRoutes(key, routes.allowed))) {
      published = { ...published, routes: routes.allowed };
      ctx.log.info('routes of the last good version narrowed', { worker: workerRef(namespace, name), routes: routes.allowed });
    }

    await this.updateStatus(ew, placement, published, notServable, aiDegraded, routes.refused);
  }

  private async updateStatus(
    ew: EdgeWorker,
    placement: ReturnType<typeof place>,
    published: WorkerConfig | undefined,
    notServable: NotServable | undefined,
    aiDegraded: string[],
    refusedRoutes: RouteRefusal[],
  ): Promise<void> {
    const { namespace = 'default', name } = ew.metadata;
    const key = workerKey(namespace, name);
    const generation = ew.metadata.generation ?? 0;
    // Readiness is of the version published now; while a new one rolls out, agents
    // still on the old one do not count.
    const regions = placement.placed.map((r) => {
      const reports = published ? this.d.agents.reportsFor(key, r) : [];
      const ready = reports.filter((x) => x.report?.state === 'ready' && x.report.version === published?.version).length;
      // The shard (docs/shards.md): the agents that say they keep the worker warm.
      const shard = reports.filter((x) => x.report?.shardMember === true).map((x) => x.agent).sort();
      return { name: r, desiredAgents: placement.desiredAgents[r] ?? 0, readyAgents: ready, ...(shard.length > 0 ? { shard } : {}) };
    });
    const agentErrors = published
      ? placement.placed.flatMap((r) => this.d.agents.reportsFor(key, r)
        .filter((x) => x.report?.state === 'error' && x.report.version === published.version)
        .map((x) => `agent ${x.agent} (${r}): ${x.report?.error ?? 'failed'}`))
      : [];

    const placed: ConditionInput = placement.placed.length === 0
      ? { type: T.Placed, status: 'False', reason: R.NoRegions, message: placement.missing.length > 0 ? `no isolate nodes in the requested regions: ${placement.missing.join(', ')}` : 'no region has isolate nodes' }
      : placement.missing.length > 0
        ? { type: T.Placed, status: 'False', reason: R.RegionUnavailable, message: `no isolate nodes in ${placement.missing.join(', ')}; placed in ${placement.placed.join(', ')}` }
        : { type: T.Placed, status: 'True', reason: R.Placed, message: `placed in ${placement.placed.join(', ')}` };

    const progress = regions.map((r) => `${r.name} ${r.readyAgents}/${r.desiredAgents}`).join(', ');
    let ready: ConditionInput;
    if (notServable) ready = { type: T.Ready, status: 'False', reason: notServable.reason, message: notServable.message };
    else if (refusedRoutes.length > 0) ready = { type: T.Ready, status: 'False', reason: refusedRoutes[0]!.reason, message: refusedRoutes.map((r) => r.message).join('; ') };
    else if (agentErrors.length > 0) ready = { type: T.Ready, status: 'False', reason: R.BundleInvalid, message: agentErrors.join('; ') };
    else if (regions.length === 0) ready = { type: T.Ready, status: 'False', reason: R.NoRegions, message: placed.message };
    else if (regions.every((r) => r.readyAgents > 0)) ready = { type: T.Ready, status: 'True', reason: R.Serving, message: `serving in ${progress} agents` };
    else ready = { type: T.Ready, status: 'False', reason: R.AgentsNotReady, message: `waiting for agents: ${progress}` };

    const problems: string[] = [];
    if (placement.missing.length > 0) problems.push(`no isolate nodes in ${placement.missing.join(', ')}`);
    if (notServable) problems.push(notServable.message);
    problems.push(...refusedRoutes.map((r) => r.message));
    problems.push(...agentErrors);
    const short = regions.filter((r) => r.readyAgents < r.desiredAgents);
    if (short.length > 0 && !notServable) problems.push(`agents ready: ${short.map((r) => `${r.name} ${r.readyAgents}/${r.desiredAgents}`).join(', ')}`);
    if (placement.missingGpu.length > 0) problems.push(`no GPU nodes for inference in ${placement.missingGpu.join(', ')}`);
    if (aiDegraded.length > 0) problems.push(`model servers not ready: ${aiDegraded.join(', ')}`);
    const degraded: ConditionInput = problems.length > 0
      ? { type: T.Degraded, status: 'True', reason: notServable?.reason ?? refusedRoutes[0]?.reason ?? (agentErrors.length > 0 ? R.BundleInvalid : placement.missing.length > 0 ? R.RegionUnavailable : R.NotFullyAvailable), message: problems.join('; ') }
      : { type: T.Degraded, status: 'False', reason: R.AsExpected, message: 'serving on every agent of every placed region' };

    const wanted = [ready, placed, degraded].map((c) => ({ ...c, observedGeneration: generation }));
    const conditions = setConditions(ew.status?.conditions, wanted, new Date());
    const status: EdgeWorkerStatus = {
      observedGeneration: generation,
      ...(published?.bundleDigest ? { bundleDigest: published.bundleDigest } : ew.status?.bundleDigest ? { bundleDigest: ew.status.bundleDigest } : {}),
      conditions,
      regions,
      // kubectl get's REGIONS column: a printer column prints a list as JSON, so the text is kept here.
      regionsText: regionsColumn(ew.spec.placement.regions),
    };
    if (sameStatus(status, ew.status)) return;
    if (!(await writeStatus(this.d.client, PLURAL, ew, status))) return;
    this.emitEvents(ew, ew.status?.conditions, conditions);
  }

  private emitEvents(ew: EdgeWorker, before: Condition[] | undefined, after: Condition[]): void {
    const obj = { apiVersion: API_VERSION, kind: 'EdgeWorker', name: ew.metadata.name, namespace: ew.metadata.namespace ?? 'default', uid: ew.metadata.uid };
    for (const c of transitions(before, after)) {
      // A worker rolling out is short of agents for a moment: not worth an Event each time.
      if ((c.type === T.Degraded && c.status === 'False') || c.reason === R.AgentsNotReady || c.reason === R.NotFullyAvailable) continue;
      const warn = (c.type === T.Degraded && c.status === 'True') || (c.type !== T.Degraded && c.status === 'False' && c.reason !== R.AgentsNotReady);
      void this.d.events.record(obj, warn ? 'Warning' : 'Normal', c.reason, `${c.type}=${c.status}: ${c.message}`);
    }
  }
}
