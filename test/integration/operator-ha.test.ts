import { AppsV1Api, CoordinationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EdgeWorker } from '../../common/api/index.js';
import { FINALIZER } from '../../common/labels.js';
import { openBuckets, type EdgeBuckets } from '../../common/nats.js';
import { workerKey } from '../../common/keys.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER, type LocalOperator } from '../../cli/local/cluster.js';
import { get } from '../harness/http.js';
import { waitFor } from '../../cli/local/ports.js';

// Invariant 5: the operator is level-triggered and idempotent. Kill it in the middle of
// reconciling a batch and start it again; run two replicas and kill the leader. The state
// converges and nothing is duplicated: one config per worker, one bundle per distinct
// source, one finalizer, one Deployment and Service per ai binding and region.

const NS = 'ha';
const REGIONS = ['eu-west', 'us-east'];
const COUNT = 40;

const source = (i: number) => `export default { async fetch() { return new Response('worker ${i % 10}'); } };`;

describe('operator restarts and leader failover', () => {
  let cluster: LocalCluster;
  let kube: KubeClient;
  let nc: NatsConnection;
  let buckets: EdgeBuckets;

  const list = async () => (await kube.request<{ items: EdgeWorker[] }>('GET', crPath('edgeworkers', NS))).items;
  const allReady = async (n: number) => {
    const items = await list();
    return items.length === n && items.every((w) => w.status?.observedGeneration === w.metadata.generation
      && w.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True');
  };
  const kvKeys = async () => {
    const keys: string[] = [];
    for await (const k of await buckets.workers.keys()) keys.push(k);
    return keys.sort();
  };
  async function assertNothingDuplicated(names: string[]): Promise<void> {
    expect(await kvKeys()).toEqual(names.map((n) => workerKey(NS, n)).sort());
    const items = await list();
    for (const w of items) expect(w.metadata.finalizers).toEqual([FINALIZER]);
    const digests = new Set(items.map((w) => w.status?.bundleDigest));
    const objects = (await buckets.bundles.list()).filter((o) => !o.deleted).map((o) => o.name);
    expect(objects.sort()).toEqual([...digests].sort());
    const aiWorkers = items.filter((w) => (w.spec.bindings?.ai ?? []).length > 0).length;
    const deps = (await cluster.kubeConfig.makeApiClient(AppsV1Api).listNamespacedDeployment({ namespace: NS })).items;
    const svcs = (await cluster.kubeConfig.makeApiClient(CoreV1Api).listNamespacedService({ namespace: NS })).items;
    expect(deps).toHaveLength(aiWorkers * REGIONS.length);
    expect(svcs).toHaveLength(aiWorkers * REGIONS.length);
    expect(new Set(deps.map((d) => d.metadata?.name)).size).toBe(deps.length);
  }

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: REGIONS, catalogue: ['m'] });
    kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    // Five ai workers in two regions hold 10 GPUs, past the built-in quota of 8.
    await kube.request('POST', crPath('edgepolicies'), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgePolicy', metadata: { name: 'default' }, spec: { namespaces: ['*'], gpu: { maxGpus: 64 } } },
    });
    nc = await connect(cluster.cp.natsOptions());
    buckets = await openBuckets(nc);
  }, 240_000);

  afterAll(async () => {
    await nc?.close();
    await cluster?.stop();
  });

  it('converges after the operator is killed mid-reconcile and started again', async () => {
    const names = Array.from({ length: COUNT }, (_, i) => `w${i}`);
    for (const [i, name] of names.entries()) {
      await kube.request('POST', crPath('edgeworkers', NS), {
        body: {
          apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker', metadata: { name, namespace: NS },
          spec: {
            source: { inline: source(i) }, routes: [{ host: `${name}.test` }],
            ...(i % 8 === 0 ? { bindings: { ai: [{ name: 'AI', model: 'm', gpus: 1 }] } } : {}),
          },
        },
      });
    }
    const first = await cluster.startOperator('op-1');
    // Kill it while it is part-way through the batch.
    await waitFor('some workers published', async () => (await kvKeys()).length >= 3, 60_000, 20);
    first.proc.killNow();
    await first.proc.wait();
    const published = (await kvKeys()).length;
    expect(published).toBeGreaterThan(0);
    expect(published, 'the kill should land mid-batch').toBeLessThan(COUNT);

    await cluster.startOperator('op-2');
    await waitFor(`all ${COUNT} workers Ready`, () => allReady(COUNT), 90_000, 250);
    await assertNothingDuplicated(names);
    for (const i of [0, 7, 39]) expect(await get(cluster.agent('us-east'), `w${i}.test`)).toEqual({ status: 200, text: `worker ${i % 10}` });
  });

  it('fails over to the other replica when the leader is killed, with one leader at a time', async () => {
    const op3 = await cluster.startOperator('op-3');
    const operators = cluster.operators.filter((o) => o.proc.running);
    expect(operators).toHaveLength(2);
    // Sample the replicas' own view: never two leaders at once.
    let sampling = true;
    const overlaps: string[] = [];
    const sampler = (async () => {
      while (sampling) {
        const states = await Promise.all(operators.map((o) => cluster.operatorStatus(o)));
        if (states.filter((s) => s?.leader).length > 1) overlaps.push(JSON.stringify(states));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const coord = cluster.kubeConfig.makeApiClient(CoordinationV1Api);
    const holder = async () => (await coord.readNamespacedLease({ namespace: 'default', name: 'edge-isolates-operator' })).spec?.holderIdentity;
    const leaderId = await holder();
    const leader = operators.find((o) => o.identity === leaderId) as LocalOperator;
    const follower = operators.find((o) => o.identity !== leaderId) as LocalOperator;
    expect(leader).toBeDefined();
    expect(follower.identity).toBe(op3.identity);
    const transitionsBefore = (await coord.readNamespacedLease({ namespace: 'default', name: 'edge-isolates-operator' })).spec?.leaseTransitions ?? 0;

    leader.proc.killNow();
    await leader.proc.wait();
    // Work arrives while nobody leads: the new leader must pick it up from the apiserver.
    await kube.request('PATCH', crPath('edgeworkers', NS, 'w1'), { patch: 'merge', body: { spec: { source: { inline: "export default { async fetch() { return new Response('after failover'); } };" } } } });
    await kube.request('DELETE', crPath('edgeworkers', NS, 'w2'));
    await waitFor('follower takes the Lease', async () => (await holder()) === follower.identity, 30_000, 100);
    await waitFor('w1 updated by the new leader', async () => (await get(cluster.agent('eu-west'), 'w1.test')).text === 'after failover', 30_000, 100);
    await waitFor(`all ${COUNT - 1} workers Ready`, () => allReady(COUNT - 1), 60_000, 250);
    sampling = false;
    await sampler;
    expect(overlaps).toEqual([]);
    const lease = await coord.readNamespacedLease({ namespace: 'default', name: 'edge-isolates-operator' });
    expect(lease.spec?.leaseTransitions).toBeGreaterThan(transitionsBefore);
    await assertNothingDuplicated(Array.from({ length: COUNT }, (_, i) => `w${i}`).filter((n) => n !== 'w2'));
    expect((await get(cluster.agent('eu-west'), 'w2.test')).status).toBe(404);
  });
});
