import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Condition, EdgeWorker } from '../../common/api/index.js';
import { FINALIZER, GPU_TAINT_KEY, POOL_GPU, POOL_LABEL, REGION_LABEL } from '../../common/labels.js';
import { openBuckets, type EdgeBuckets } from '../../common/nats.js';
import { workerKey } from '../../common/keys.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER } from '../../cli/local/cluster.js';
import { get } from '../harness/http.js';
import { waitFor } from '../../cli/local/ports.js';

// The operator end to end: a control plane, Nodes in three regions, an `edge agent --nats`
// process per region, fake model servers, and `edge operator`. Everything a user does
// goes through the kube API; everything checked is what a user would see (HTTP answers
// from the agents, CR status, Events, Deployments) plus the NATS state.

const NS = 'shop';
const REGIONS = ['ap-south', 'eu-west', 'us-east'];
const MODEL = 'tiny-llama';

const hello = (text: string) => `export default { async fetch(request, env) { return new Response(${JSON.stringify(text)} + (env.SUFFIX ?? '')); } };`;

function worker(name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return { apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker', metadata: { name, namespace: NS }, spec };
}

describe('edge operator with agents in three regions', () => {
  let cluster: LocalCluster;
  let kube: KubeClient;
  let nc: NatsConnection;
  let buckets: EdgeBuckets;

  const read = (name: string) => kube.request<EdgeWorker>('GET', crPath('edgeworkers', NS, name));
  const cond = (ew: EdgeWorker, type: string): Condition | undefined => ew.status?.conditions?.find((c) => c.type === type);
  const create = (name: string, spec: Record<string, unknown>) => kube.request('POST', crPath('edgeworkers', NS), { body: worker(name, spec), query: { fieldValidation: 'Strict' } });
  const patchSpec = (name: string, spec: Record<string, unknown>) => kube.request('PATCH', crPath('edgeworkers', NS, name), { patch: 'merge', body: { spec } });
  async function waitCondition(name: string, type: string, status: string, reason?: string, timeoutMs = 30_000): Promise<EdgeWorker> {
    let last: EdgeWorker | undefined;
    await waitFor(`${name} ${type}=${status}${reason ? ` (${reason})` : ''}`, async () => {
      last = await read(name);
      const c = cond(last, type);
      return c?.status === status && (!reason || c.reason === reason) && c.observedGeneration === last.metadata.generation;
    }, timeoutMs, 100).catch((err: unknown) => { throw new Error(`${String(err)}; last status: ${JSON.stringify(last?.status)}`); });
    return last!;
  }

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: REGIONS, models: { model: MODEL } });
    kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    nc = await connect(cluster.cp.natsOptions());
    buckets = await openBuckets(nc);
    await cluster.startOperator('operator-a');
  }, 240_000);

  afterAll(async () => {
    await nc?.close();
    await cluster?.stop();
  });

  it('serves a worker only in the regions it names, and reports them in status', async () => {
    await create('hello', { source: { inline: hello('v1') }, routes: [{ host: 'hello.test' }], placement: { regions: ['eu-west', 'us-east'] } });
    const ew = await waitCondition('hello', 'Ready', 'True');
    expect(ew.metadata.finalizers).toEqual([FINALIZER]);
    expect(ew.status?.regions).toMatchObject([
      { name: 'eu-west', desiredAgents: 1, readyAgents: 1 },
      { name: 'us-east', desiredAgents: 1, readyAgents: 1 },
    ]);
    // Shards are on by default: a one-agent region's shard is that agent.
    expect(ew.status?.regions?.map((r) => r.shard?.length)).toEqual([1, 1]);
    expect(ew.status?.bundleDigest).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(cond(ew, 'Placed')).toMatchObject({ status: 'True', reason: 'Placed' });
    expect(cond(ew, 'Degraded')).toMatchObject({ status: 'False' });
    expect(await get(cluster.agent('eu-west'), 'hello.test')).toEqual({ status: 200, text: 'v1' });
    expect(await get(cluster.agent('us-east'), 'hello.test')).toEqual({ status: 200, text: 'v1' });
    expect((await get(cluster.agent('ap-south'), 'hello.test')).status).toBe(404);

    const entry = await buckets.workers.get(workerKey(NS, 'hello'));
    expect(entry?.operation).toBe('PUT');
    expect((await buckets.bundles.info(ew.status!.bundleDigest!))?.deleted).toBe(false);
  });

  it('swaps to a new version with no failed request, and status follows the generation', async () => {
    const targets = [cluster.agent('eu-west'), cluster.agent('us-east')];
    const seen: { agent: string; status: number; text: string }[] = [];
    let stop = false;
    const hammer = targets.flatMap((a) => [0, 1, 2].map(async () => {
      while (!stop) seen.push({ agent: a.node, ...(await get(a, 'hello.test')) });
    }));
    await waitFor('some v1 traffic', async () => seen.length > 30, 10_000);
    await patchSpec('hello', { source: { inline: hello('v2') } });
    await waitFor('v2 on both agents', async () => targets.every((a) => seen.some((s) => s.agent === a.node && s.text === 'v2')), 30_000);
    const after = seen.length;
    await waitFor('more v2 traffic', async () => seen.length > after + 30, 10_000);
    stop = true;
    await Promise.all(hammer);
    const failed = seen.filter((s) => s.status !== 200 || (s.text !== 'v1' && s.text !== 'v2'));
    expect(failed).toEqual([]);
    for (const a of targets) {
      const mine = seen.filter((s) => s.agent === a.node);
      const firstV2 = mine.findIndex((s) => s.text === 'v2');
      // Sequential clients per agent: once one client saw v2, v1 only from requests already in flight.
      expect(mine.slice(firstV2 + 6).filter((s) => s.text === 'v1')).toEqual([]);
    }
    const ew = await waitCondition('hello', 'Ready', 'True');
    expect(ew.status?.observedGeneration).toBe(2);
    expect(ew.status?.regions?.every((r) => r.readyAgents === 1)).toBe(true);
  });

  it('refuses a bundle that does not compile, keeps the previous version serving, and says why', async () => {
    const before = (await read('hello')).status?.bundleDigest;
    await patchSpec('hello', { source: { inline: 'export default { fetch( {' } });
    const ew = await waitCondition('hello', 'Ready', 'False', 'BundleInvalid');
    expect(cond(ew, 'Ready')?.message).toMatch(/does not compile: Unexpected end of input \[worker:shop\/hello.js:1:\d+\]/);
    expect(ew.status?.bundleDigest).toBe(before);
    expect(await get(cluster.agent('eu-west'), 'hello.test')).toEqual({ status: 200, text: 'v2' });
    const events = await cluster.kubeConfig.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: NS });
    expect(events.items.some((e) => e.involvedObject.name === 'hello' && e.reason === 'BundleInvalid' && e.type === 'Warning')).toBe(true);

    // A module that compiles but fails when the agents load it: the agents' reports say so.
    await patchSpec('hello', { source: { inline: 'export const notAWorker = 1;' } });
    const ew2 = await waitCondition('hello', 'Ready', 'False', 'BundleInvalid');
    expect(cond(ew2, 'Ready')?.message).toMatch(/agent isolate-(eu-west|us-east) \((eu-west|us-east)\): .*fetch/);
    expect(await get(cluster.agent('us-east'), 'hello.test')).toEqual({ status: 200, text: 'v2' });

    await patchSpec('hello', { source: { inline: hello('v3') } });
    await waitCondition('hello', 'Ready', 'True');
    expect(await get(cluster.agent('eu-west'), 'hello.test')).toEqual({ status: 200, text: 'v3' });
  });

  it('reports a requested region without isolate nodes instead of dropping it', async () => {
    await create('partial', { source: { inline: hello('partial') }, routes: [{ host: 'partial.test' }], placement: { regions: ['eu-west', 'mars'] } });
    const ew = await waitCondition('partial', 'Placed', 'False', 'RegionUnavailable');
    expect(cond(ew, 'Placed')?.message).toContain('mars');
    await waitCondition('partial', 'Ready', 'True');
    const ew2 = await read('partial');
    expect(cond(ew2, 'Degraded')).toMatchObject({ status: 'True', reason: 'RegionUnavailable' });
    expect(ew2.status?.regions?.map((r) => r.name)).toEqual(['eu-west']);
    expect(await get(cluster.agent('eu-west'), 'partial.test')).toEqual({ status: 200, text: 'partial' });
  });

  it('resolves ConfigMap sources and Secret bindings itself, and follows their changes', async () => {
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    await create('from-cm', {
      source: { configMapRef: { name: 'code', key: 'worker.js' } },
      routes: [{ host: 'cm.test' }],
      placement: { regions: ['ap-south'] },
      bindings: { secrets: [{ name: 'SUFFIX', secretKeyRef: { name: 'creds', key: 'suffix' } }] },
    });
    const missing = await waitCondition('from-cm', 'Ready', 'False', 'SourceNotFound');
    expect(cond(missing, 'Ready')?.message).toContain(`ConfigMap ${NS}/code not found`);
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'code' }, data: { 'worker.js': hello('from a ConfigMap') } } });
    await waitCondition('from-cm', 'Ready', 'False', 'SecretNotFound');
    await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 'creds' }, stringData: { suffix: ' + secret' } } });
    await waitCondition('from-cm', 'Ready', 'True');
    expect(await get(cluster.agent('ap-south'), 'cm.test')).toEqual({ status: 200, text: 'from a ConfigMap + secret' });
    await kube.request('PATCH', `/api/v1/namespaces/${NS}/configmaps/code`, { patch: 'merge', body: { data: { 'worker.js': hello('edited') } } });
    await waitFor('edited ConfigMap served', async () => (await get(cluster.agent('ap-south'), 'cm.test')).text === 'edited + secret', 30_000, 100);
  });

  it('runs a model server per region for an ai binding and streams env.AI completions from the nearest one', async () => {
    await create('chat', {
      source: {
        inline: `export default { async fetch(request, env) {
          const stream = await env.AI.run(${JSON.stringify(MODEL)}, { messages: [{ role: 'user', content: 'hello there' }], stream: true });
          return new Response(stream, { headers: { 'content-type': 'text/event-stream' } });
        } };`,
      },
      routes: [{ host: 'chat.test' }],
      placement: { regions: ['eu-west', 'ap-south'] },
      limits: { cpuMsPerRequest: 200 },
      bindings: { ai: [{ name: 'AI', model: MODEL, gpus: 1, replicasPerRegion: 1 }] },
    });
    await waitCondition('chat', 'Ready', 'True');
    const ew = await read('chat');
    const apps = cluster.kubeConfig.makeApiClient(AppsV1Api);
    const deps = (await apps.listNamespacedDeployment({ namespace: NS })).items;
    const svcs = (await cluster.kubeConfig.makeApiClient(CoreV1Api).listNamespacedService({ namespace: NS })).items;
    expect(deps).toHaveLength(2);
    expect(svcs).toHaveLength(2);
    const regionsOfDeps = deps.map((d) => d.spec?.template.spec?.nodeSelector?.[REGION_LABEL]).sort();
    expect(regionsOfDeps).toEqual(['ap-south', 'eu-west']);
    for (const d of deps) {
      const pod = d.spec!.template.spec!;
      expect(pod.nodeSelector?.[POOL_LABEL]).toBe(POOL_GPU);
      expect(pod.tolerations?.some((t) => t.key === GPU_TAINT_KEY && t.effect === 'NoSchedule')).toBe(true);
      expect(pod.containers[0]!.resources?.limits?.['nvidia.com/gpu']).toBe('1');
      expect(pod.containers[0]!.readinessProbe?.httpGet?.path).toBeTruthy();
      expect(d.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'EdgeWorker', name: 'chat', uid: ew.metadata.uid, controller: true });
    }
    // No kubelet runs here, so the model servers are never Ready: the worker says so.
    expect(cond(ew, 'Degraded')?.message).toContain('model servers not ready');

    for (const region of ['eu-west', 'ap-south']) {
      const res = await get(cluster.agent(region), 'chat.test');
      expect(res.status).toBe(200);
      const events = res.text.split('\n\n').filter(Boolean);
      expect(events.at(-1)).toBe('data: [DONE]');
      const tokens = events.slice(0, -1).map((e) => (JSON.parse(e.replace(/^data: /, '')) as { response: string }).response);
      expect(tokens.length).toBeGreaterThan(2);
      expect(tokens.join('')).toContain(`[${region}]`);
    }
  });

  it('places a DurableActor in its region and says when what it refers to is missing', async () => {
    const actor = (name: string, spec: Record<string, unknown>) => kube.request('POST', crPath('durableactors', NS), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'DurableActor', metadata: { name, namespace: NS }, spec }, query: { fieldValidation: 'Strict' },
    });
    type DA = { metadata: { generation: number }; status?: { region?: string; observedGeneration?: number; conditions?: Condition[] } };
    const placedOf = async (name: string, reason: string) => {
      let last: DA | undefined;
      await waitFor(`${name} Placed reason ${reason}`, async () => {
        last = await kube.request<DA>('GET', crPath('durableactors', NS, name));
        return last.status?.observedGeneration === last.metadata.generation && last.status?.conditions?.find((c) => c.type === 'Placed')?.reason === reason;
      }, 30_000, 100);
      return last!;
    };
    await actor('rooms', { workerRef: { name: 'hello' }, className: 'ChatRoom', locationHint: 'us-east' });
    const ok = await placedOf('rooms', 'Placed');
    expect(ok.status?.region).toBe('us-east');
    await actor('orphans', { workerRef: { name: 'nope' }, className: 'ChatRoom' });
    const missing = await placedOf('orphans', 'WorkerNotFound');
    expect(missing.status?.conditions?.find((c) => c.type === 'Placed')?.message).toContain(`EdgeWorker ${NS}/nope not found`);
    await actor('elsewhere', { workerRef: { name: 'hello' }, className: 'ChatRoom', locationHint: 'ap-south' });
    await placedOf('elsewhere', 'WorkerNotInRegion');
  });

  it('deletes a worker: its NATS state goes, agents stop serving it, the finalizer lets go', async () => {
    const ew = await read('partial');
    const digest = ew.status!.bundleDigest!;
    await kube.request('DELETE', crPath('edgeworkers', NS, 'partial'));
    await waitFor('partial gone from the apiserver', async () => {
      try { await read('partial'); return false; } catch { return true; }
    }, 30_000, 100);
    const entry = await buckets.workers.get(workerKey(NS, 'partial'));
    expect(entry === null || entry.operation !== 'PUT').toBe(true);
    const info = await buckets.bundles.info(digest);
    expect(info === null || info.deleted).toBe(true);
    await waitFor('agent stops serving partial', async () => (await get(cluster.agent('eu-west'), 'partial.test')).status === 404, 10_000, 100);

    await kube.request('DELETE', crPath('edgeworkers', NS, 'chat'));
    await waitFor('chat deployments removed', async () => (await cluster.kubeConfig.makeApiClient(AppsV1Api).listNamespacedDeployment({ namespace: NS })).items.length === 0, 30_000, 100);
  });
});
