import { createHash } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { z } from 'zod';
import {
  API_VERSION, EdgeWorkerSchema, type Condition, type DurableActor, type EdgeWorker, type EdgeWorkerStatus,
} from '../../common/api/index.js';
import type { Logger } from '../../common/log.js';
import { workerKey, type WorkerConfig } from '../../common/nats.js';
import type { WorkerStore } from './worker-store.js';
import type { AgentView } from '../../common/agent-view.js';
import { checkBundle } from './bundle-check.js';
import { setConditions, transitions, type ConditionInput } from './conditions.js';
import type { EventRecorder } from '../runtime/events.js';
import { deleteInference, reconcileInference } from './inference.js';
import { ensureFinalizer, hasFinalizer, removeFinalizer, writeStatus } from '../runtime/cr-writes.js';
import { isNotFound, type KubeClient } from '../runtime/kube-client.js';
import { place, regionsOf, type NodeInfo } from './placement.js';
import { EdgeError } from '../../common/errors.js';

// The EdgeWorker reconciler: reads the CR (from the informer cache), the Nodes and the
// agents' reports, and converges NATS (config in KV, bundle in the object store), the
// inference Deployments/Services and the CR's status on them. Idempotent: a reconcile that
// finds everything in place writes nothing.

export const PLURAL = 'edgeworkers';

export interface EdgeWorkerDeps {
  kc: KubeConfig;
  client: KubeClient;
  agents: AgentView;
  events: EventRecorder;
  log: Logger;
  getWorker(namespace: string, name: string): EdgeWorker | undefined;
  getActor(namespace: string, name: string): DurableActor | undefined;
  nodes(): NodeInfo[];
  defaultAiImage: string;
  store: WorkerStore;
}

const sha256 = (data: string | Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Why a worker cannot be published: a Ready=False reason and a message for the user. */
class NotServable extends EdgeError {
  constructor(readonly reason: string, message: string) { super(message); }
}

const SecretSchema = z.object({ data: z.record(z.string(), z.string()).optional() });
const ConfigMapSchema = z.object({ data: z.record(z.string(), z.string()).optional() });

export class EdgeWorkerReconciler {
  constructor(private readonly d: EdgeWorkerDeps) {}

  async reconcile(namespace: string, name: string): Promise<void> {
    const ew = this.d.getWorker(namespace, name);
    if (!ew) {
      // Gone without our finalizer running (created and deleted while no leader ran, or the
      // finalizer was removed by hand): remove what may be left of it.
      await this.removeNatsState(namespace, name);
      return;
    }
    if (ew.metadata.deletionTimestamp) {
      await this.finalize(ew);
      return;
    }
    await this.converge(await ensureFinalizer(this.d.client, PLURAL, ew, (raw: unknown) => EdgeWorkerSchema.parse(raw)));
  }

  private async finalize(ew: EdgeWorker): Promise<void> {
    const { namespace = 'default', name } = ew.metadata;
    if (!hasFinalizer(ew)) return;
    // Only a worker that has (or had published) ai bindings owns inference objects.
    const published = this.d.store.get(workerKey(namespace, name));
    if ((ew.spec.bindings?.ai ?? []).length > 0 || Object.keys(published?.env.ai ?? {}).length > 0 || !published) {
      await deleteInference(this.d.kc, { name, namespace, uid: ew.metadata.uid ?? '' });
    }
    await this.removeNatsState(namespace, name);
    await removeFinalizer(this.d.client, PLURAL, ew);
    this.d.log.info('worker deleted; NATS state removed', { worker: `${namespace}/${name}` });
  }

  private async removeNatsState(namespace: string, name: string): Promise<void> {
    if (await this.d.store.remove(workerKey(namespace, name))) {
      this.d.log.info('worker config removed from NATS', { worker: `${namespace}/${name}` });
    }
  }

  private async resolveSource(ew: EdgeWorker): Promise<string> {
    const { namespace = 'default' } = ew.metadata;
    const src = ew.spec.source;
    if (src.inline !== undefined) return src.inline;
    const ref = src.configMapRef!;
    const cm = await this.getObject(`/api/v1/namespaces/${namespace}/configmaps/${ref.name}`, ConfigMapSchema);
    const text = cm?.data?.[ref.key];
    if (text === undefined) {
      throw new NotServable('SourceNotFound', cm
        ? `spec.source.configMapRef: ConfigMap ${namespace}/${ref.name} has no key "${ref.key}"`
        : `spec.source.configMapRef: ConfigMap ${namespace}/${ref.name} not found`);
    }
    return text;
  }

  private async resolveSecrets(ew: EdgeWorker): Promise<Record<string, string>> {
    const { namespace = 'default' } = ew.metadata;
    const out: Record<string, string> = {};
    for (const s of ew.spec.bindings?.secrets ?? []) {
      const secret = await this.getObject(`/api/v1/namespaces/${namespace}/secrets/${s.secretKeyRef.name}`, SecretSchema);
      const raw = secret?.data?.[s.secretKeyRef.key];
      if (raw === undefined) {
        throw new NotServable('SecretNotFound', secret
          ? `spec.bindings.secrets ${s.name}: Secret ${namespace}/${s.secretKeyRef.name} has no key "${s.secretKeyRef.key}"`
          : `spec.bindings.secrets ${s.name}: Secret ${namespace}/${s.secretKeyRef.name} not found`);
      }
      out[s.name] = Buffer.from(raw, 'base64').toString('utf8');
    }
    return out;
  }

  private async getObject<T extends z.ZodType>(path: string, schema: T): Promise<z.infer<T> | undefined> {
    try {
      return schema.parse(await this.d.client.request('GET', path));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async converge(ew: EdgeWorker): Promise<void> {
    const { namespace = 'default', name } = ew.metadata;
    const key = workerKey(namespace, name);
    const spec = ew.spec;
    const aiBindings = spec.bindings?.ai ?? [];
    const placement = place(spec.placement.regions, regionsOf(this.d.nodes()), aiBindings.length > 0);
    let published = this.d.store.get(key);

    let notServable: NotServable | undefined;
    let aiDegraded: string[] = [];
    try {
      const source = await this.resolveSource(ew);
      const secrets = await this.resolveSecrets(ew);
      const bundleDigest = sha256(source);
      const problem = await checkBundle(bundleDigest, source, `worker:${namespace}/${name}.js`);
      if (problem) throw new NotServable('BundleInvalid', `bundle ${bundleDigest.slice(0, 19)}… ${problem}`);

      // Model servers first: the config we publish points at their Services.
      let aiEnv: WorkerConfig['env']['ai'] = {};
      if (aiBindings.length > 0 || Object.keys(published?.env.ai ?? {}).length > 0) {
        const inf = await reconcileInference(this.d.kc, { name, namespace, uid: ew.metadata.uid ?? '' }, aiBindings, placement.placed, { defaultImage: this.d.defaultAiImage });
        aiEnv = Object.fromEntries(aiBindings.map((b) => [b.name, { model: b.model, services: inf.refs[b.name] ?? {} }]));
        aiDegraded = aiBindings.flatMap((b) => placement.placed
          .filter((r) => (inf.ready[b.name]?.[r]?.readyReplicas ?? 0) < 1)
          .map((r) => `${b.name} in ${r}`));
      }

      const actors: WorkerConfig['env']['actors'] = {};
      for (const b of spec.bindings?.actors ?? []) {
        const da = this.d.getActor(namespace, b.actor);
        if (!da?.metadata.uid) throw new NotServable('ActorNotFound', `spec.bindings.actors ${b.name}: DurableActor ${namespace}/${b.actor} not found`);
        actors[b.name] = { namespace, actor: b.actor, uid: da.metadata.uid };
      }
      const env = { text: { ...spec.bindings?.vars, ...secrets }, actors, ai: aiEnv };
      const version = sha256(JSON.stringify({ bundleDigest, limits: spec.limits, env, compatibilityDate: spec.compatibilityDate ?? null, minWarm: spec.placement.minWarmIsolates }));
      const cfg: WorkerConfig = {
        namespace, name, uid: ew.metadata.uid ?? '', generation: ew.metadata.generation ?? 0,
        version, bundleDigest, regions: placement.placed, routes: spec.routes ?? [], limits: spec.limits,
        minWarmIsolates: spec.placement.minWarmIsolates,
        ...(spec.compatibilityDate ? { compatibilityDate: spec.compatibilityDate } : {}),
        env,
      };
      if (await this.d.store.publish(key, cfg, source)) {
        this.d.log.info('worker config published', { worker: `${namespace}/${name}`, version, regions: cfg.regions });
      }
      published = cfg;
    } catch (err) {
      if (!(err instanceof NotServable)) throw err;
      notServable = err;
    }

    await this.updateStatus(ew, placement, published, notServable, aiDegraded);
  }

  private async updateStatus(
    ew: EdgeWorker,
    placement: ReturnType<typeof place>,
    published: WorkerConfig | undefined,
    notServable: NotServable | undefined,
    aiDegraded: string[],
  ): Promise<void> {
    const { namespace = 'default', name } = ew.metadata;
    const key = workerKey(namespace, name);
    const generation = ew.metadata.generation ?? 0;
    // Readiness is of the version published now; while a new one rolls out, agents
    // still on the old one do not count.
    const regions = placement.placed.map((r) => {
      const reports = published ? this.d.agents.reportsFor(key, r) : [];
      const ready = reports.filter((x) => x.report?.state === 'ready' && x.report.version === published?.version).length;
      return { name: r, desiredAgents: placement.desiredAgents[r] ?? 0, readyAgents: ready };
    });
    const agentErrors = published
      ? placement.placed.flatMap((r) => this.d.agents.reportsFor(key, r)
        .filter((x) => x.report?.state === 'error' && x.report.version === published.version)
        .map((x) => `agent ${x.agent} (${r}): ${x.report?.error ?? 'failed'}`))
      : [];

    const placed: ConditionInput = placement.placed.length === 0
      ? { type: 'Placed', status: 'False', reason: 'NoRegions', message: placement.missing.length > 0 ? `no isolate nodes in the requested regions: ${placement.missing.join(', ')}` : 'no region has isolate nodes' }
      : placement.missing.length > 0
        ? { type: 'Placed', status: 'False', reason: 'RegionUnavailable', message: `no isolate nodes in ${placement.missing.join(', ')}; placed in ${placement.placed.join(', ')}` }
        : { type: 'Placed', status: 'True', reason: 'Placed', message: `placed in ${placement.placed.join(', ')}` };

    const progress = regions.map((r) => `${r.name} ${r.readyAgents}/${r.desiredAgents}`).join(', ');
    let ready: ConditionInput;
    if (notServable) ready = { type: 'Ready', status: 'False', reason: notServable.reason, message: notServable.message };
    else if (agentErrors.length > 0) ready = { type: 'Ready', status: 'False', reason: 'BundleInvalid', message: agentErrors.join('; ') };
    else if (regions.length === 0) ready = { type: 'Ready', status: 'False', reason: 'NoRegions', message: placed.message };
    else if (regions.every((r) => r.readyAgents > 0)) ready = { type: 'Ready', status: 'True', reason: 'Serving', message: `serving in ${progress} agents` };
    else ready = { type: 'Ready', status: 'False', reason: 'AgentsNotReady', message: `waiting for agents: ${progress}` };

    const problems: string[] = [];
    if (placement.missing.length > 0) problems.push(`no isolate nodes in ${placement.missing.join(', ')}`);
    if (notServable) problems.push(notServable.message);
    problems.push(...agentErrors);
    const short = regions.filter((r) => r.readyAgents < r.desiredAgents);
    if (short.length > 0 && !notServable) problems.push(`agents ready: ${short.map((r) => `${r.name} ${r.readyAgents}/${r.desiredAgents}`).join(', ')}`);
    if (placement.missingGpu.length > 0) problems.push(`no GPU nodes for inference in ${placement.missingGpu.join(', ')}`);
    if (aiDegraded.length > 0) problems.push(`model servers not ready: ${aiDegraded.join(', ')}`);
    const degraded: ConditionInput = problems.length > 0
      ? { type: 'Degraded', status: 'True', reason: notServable?.reason ?? (agentErrors.length > 0 ? 'BundleInvalid' : placement.missing.length > 0 ? 'RegionUnavailable' : 'NotFullyAvailable'), message: problems.join('; ') }
      : { type: 'Degraded', status: 'False', reason: 'AsExpected', message: 'serving on every agent of every placed region' };

    const wanted = [ready, placed, degraded].map((c) => ({ ...c, observedGeneration: generation }));
    const conditions = setConditions(ew.status?.conditions, wanted, new Date());
    const status: EdgeWorkerStatus = {
      observedGeneration: generation,
      ...(published?.bundleDigest ? { bundleDigest: published.bundleDigest } : ew.status?.bundleDigest ? { bundleDigest: ew.status.bundleDigest } : {}),
      conditions,
      regions,
    };
    if (JSON.stringify(status) === JSON.stringify(ew.status ?? {})) return;
    if (!(await writeStatus(this.d.client, PLURAL, ew, status))) return;
    this.emitEvents(ew, ew.status?.conditions, conditions);
  }

  private emitEvents(ew: EdgeWorker, before: Condition[] | undefined, after: Condition[]): void {
    const obj = { apiVersion: API_VERSION, kind: 'EdgeWorker', name: ew.metadata.name, namespace: ew.metadata.namespace ?? 'default', uid: ew.metadata.uid };
    for (const c of transitions(before, after)) {
      // A worker rolling out is short of agents for a moment: not worth an Event each time.
      if ((c.type === 'Degraded' && c.status === 'False') || c.reason === 'AgentsNotReady' || c.reason === 'NotFullyAvailable') continue;
      const warn = (c.type === 'Degraded' && c.status === 'True') || (c.type !== 'Degraded' && c.status === 'False' && c.reason !== 'AgentsNotReady');
      void this.d.events.record(obj, warn ? 'Warning' : 'Normal', c.reason, `${c.type}=${c.status}: ${c.message}`);
    }
  }
}
