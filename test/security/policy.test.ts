import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_VERSION, type Condition, type EdgeWorker } from '../../common/api/index.js';
import { MANAGED_BY, MANAGED_BY_LABEL } from '../../common/labels.js';
import { openBuckets, type EdgeBuckets } from '../../common/nats.js';
import { decodeJson, WorkerConfigSchema } from '../../common/nats-messages.js';
import { workerKey } from '../../common/keys.js';
import { LocalCluster, QUICK_FAILOVER } from '../../cli/local/cluster.js';
import { waitFor } from '../../cli/local/ports.js';
import { crPath, KubeError, KubeClient } from '../../operator/runtime/kube-client.js';
import { get } from '../harness/http.js';

// Issue 12, items 5, 10 and 11, played by a tenant in namespace `attacker` against the real
// kube-apiserver, operator, NATS and agent (cli/local): limits over the admin's ceiling, a
// cryptominer as a model server, GPUs past the namespace's quota, and three ways to take
// `shop.localhost` from namespace `victim`. Each is refused with a Ready=False reason from
// common/reasons.ts, nothing of it reaches the GPU nodes or the agents' route table, and the
// victim keeps serving its requests throughout.

const REGION = 'eu-west';
const MODEL = 'tiny-llama';
const ATTACKER = 'attacker';
const VICTIM = 'victim';
const POLICY_CEILING = 1000;

const respond = (text: string) => `export default { async fetch() { return new Response(${JSON.stringify(text)}); } };`;

describe('the cluster admin\'s EdgePolicy, model catalogue and route ownership', () => {
  let cluster: LocalCluster;
  let kube: KubeClient;
  let nc: NatsConnection;
  let buckets: EdgeBuckets;

  const path = (ns: string, name?: string) => crPath('edgeworkers', ns, name);
  const read = (ns: string, name: string) => kube.request<EdgeWorker>('GET', path(ns, name));
  const create = (ns: string, name: string, spec: Record<string, unknown>) => kube.request('POST', path(ns), {
    body: { apiVersion: API_VERSION, kind: 'EdgeWorker', metadata: { name, namespace: ns }, spec }, query: { fieldValidation: 'Strict' },
  });
  const ready = (ew: EdgeWorker): Condition | undefined => ew.status?.conditions?.find((c) => c.type === 'Ready');
  async function waitReady(ns: string, name: string, status: 'True' | 'False', reason?: string): Promise<Condition> {
    let last: EdgeWorker | undefined;
    await waitFor(`${ns}/${name} Ready=${status}${reason ? ` (${reason})` : ''}`, async () => {
      last = await read(ns, name);
      const c = ready(last);
      return c?.status === status && (!reason || c.reason === reason) && c.observedGeneration === last.metadata.generation;
    }, 60_000, 100).catch((err: unknown) => { throw new Error(`${String(err)}; last status: ${JSON.stringify(last?.status)}`); });
    return ready(last!)!;
  }
  const published = async (ns: string, name: string) => {
    const e = await buckets.workers.get(workerKey(ns, name));
    return e && e.operation === 'PUT' ? decodeJson(WorkerConfigSchema, e.value, 'config') : undefined;
  };
  const agent = () => cluster.agent(REGION);
  /** The victim's site, as its users reach it through the agent. */
  async function victimServes(): Promise<void> {
    for (const p of ['/', '/login', '/login/x', '/cart']) expect(await get(agent(), 'shop.localhost', p), `shop.localhost${p}`).toEqual({ status: 200, text: 'victim' });
    expect(await get(agent(), 'www.victim.example'), 'www.victim.example').toEqual({ status: 200, text: 'victim' });
  }
  const modelServers = async () => (await cluster.kubeConfig.makeApiClient(AppsV1Api).listDeploymentForAllNamespaces({ labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY}` })).items;

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: [REGION], models: { model: MODEL } });
    kube = new KubeClient(cluster.kubeConfig);
    for (const name of [ATTACKER, VICTIM]) await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name } } });
    // The admin's default policy, before any tenant object exists.
    await kube.request('POST', crPath('edgepolicies'), {
      body: {
        apiVersion: API_VERSION, kind: 'EdgePolicy', metadata: { name: 'default' },
        spec: {
          namespaces: ['*'],
          limits: { defaults: { cpuMsPerRequest: 20, memoryMiB: 64 }, max: { cpuMsPerRequest: POLICY_CEILING, memoryMiB: 256, minWarmIsolates: 4 } },
          gpu: { maxGpus: 2 },
        },
      },
    });
    nc = await connect(cluster.cp.natsOptions());
    buckets = await openBuckets(nc);
    await cluster.startOperator('operator');
    await create(VICTIM, 'shop', { source: { inline: respond('victim') }, routes: [{ host: 'shop.localhost' }, { host: 'www.victim.example' }] });
    await waitReady(VICTIM, 'shop', 'True');
    await victimServes();
  }, 300_000);

  afterAll(async () => {
    await nc?.close();
    await cluster?.stop();
  });

  describe('limits (item 5)', () => {
    it('refuses a worker over the ceiling with LimitExceeded naming field, value and ceiling; nothing reaches the agents', async () => {
      await create(ATTACKER, 'hog', { source: { inline: respond('hog') }, routes: [{ host: 'hog.localhost' }], limits: { cpuMsPerRequest: 30_000, wallMsPerRequest: 30_000 } });
      const c = await waitReady(ATTACKER, 'hog', 'False', 'LimitExceeded');
      expect(c.message).toBe(`spec.limits.cpuMsPerRequest 30000 exceeds the ceiling ${POLICY_CEILING} set by EdgePolicy default`);
      expect(await published(ATTACKER, 'hog')).toBeUndefined();
      expect((await get(agent(), 'hog.localhost')).status).toBe(404);
      await victimServes();
    });

    it('applies the policy\'s defaults to limits the spec leaves unset', async () => {
      await create(ATTACKER, 'plain', { source: { inline: respond('plain') }, routes: [{ host: 'plain.localhost' }], limits: { subrequests: 5 } });
      await waitReady(ATTACKER, 'plain', 'True');
      expect((await published(ATTACKER, 'plain'))?.limits).toEqual({ cpuMsPerRequest: 20, memoryMiB: 64, subrequests: 5, wallMsPerRequest: 30_000 });
      // The apiserver stored no default: the policy decides unset fields.
      expect((await read(ATTACKER, 'plain')).spec.limits).toEqual({ subrequests: 5 });
      expect(await get(agent(), 'plain.localhost')).toEqual({ status: 200, text: 'plain' });
    });

    it('re-reconciles on a policy change: a raised ceiling deploys the refused worker', async () => {
      await kube.request('PATCH', crPath('edgepolicies', undefined, 'default'), { patch: 'merge', body: { spec: { limits: { max: { cpuMsPerRequest: 30_000 } } } } });
      await waitReady(ATTACKER, 'hog', 'True');
      expect((await published(ATTACKER, 'hog'))?.limits.cpuMsPerRequest).toBe(30_000);
      await kube.request('PATCH', crPath('edgepolicies', undefined, 'default'), { patch: 'merge', body: { spec: { limits: { max: { cpuMsPerRequest: POLICY_CEILING } } } } });
      await waitReady(ATTACKER, 'hog', 'False', 'LimitExceeded');
    });
  });

  describe('model servers (item 10)', () => {
    const miner = { name: 'AI', image: 'registry.attacker.example/cryptominer:latest', gpus: 8, replicasPerRegion: 16 };

    it('refuses a model outside the catalogue and creates no Deployment', async () => {
      await create(ATTACKER, 'miner', { source: { inline: respond('miner') }, bindings: { ai: [{ ...miner, model: 'xmrig' }] } });
      const c = await waitReady(ATTACKER, 'miner', 'False', 'ModelNotAllowed');
      expect(c.message).toContain('model xmrig is not in the cluster\'s catalogue');
      expect(await modelServers()).toEqual([]);
    });

    it('refuses a foreign image for a catalogue model and creates no Deployment', async () => {
      await create(ATTACKER, 'foreign', { source: { inline: respond('foreign') }, bindings: { ai: [{ ...miner, model: MODEL }] } });
      const c = await waitReady(ATTACKER, 'foreign', 'False', 'ModelNotAllowed');
      expect(c.message).toContain('image registry.attacker.example/cryptominer:latest is not the catalogue\'s image');
      expect(await modelServers()).toEqual([]);
    });

    it('refuses GPUs past the namespace\'s quota and creates no Deployment', async () => {
      await create(ATTACKER, 'greedy', { source: { inline: respond('greedy') }, bindings: { ai: [{ name: 'AI', model: MODEL, replicasPerRegion: 16 }] } });
      const c = await waitReady(ATTACKER, 'greedy', 'False', 'GpuQuotaExceeded');
      expect(c.message).toBe('spec.bindings.ai needs 16 GPUs (gpus x replicasPerRegion x regions); namespace attacker may hold 2 (EdgePolicy default) and older workers hold 0');
      expect(await modelServers()).toEqual([]);
      await victimServes();
    });
  });

  describe('route takeover (item 11)', () => {
    it.each([
      ['a longer prefix', 'login', 'shop.localhost', [{ host: 'shop.localhost', pathPrefix: '/login' }]],
      // Named to sort before victim/shop: the old agent gave an identical route to the first name.
      ['an identical route', 'aaa', 'shop.localhost', [{ host: 'shop.localhost', pathPrefix: '/' }]],
      ['a wildcard over one of its hosts', 'wild', 'www.victim.example', [{ host: '*.victim.example' }]],
    ])('refuses %s with RouteConflict naming the owner, and the victim keeps its traffic', async (_, name, owned, routes) => {
      await create(ATTACKER, name, { source: { inline: respond('attacker') }, routes });
      const c = await waitReady(ATTACKER, name, 'False', 'RouteConflict');
      expect(c.message).toContain(`${owned} belongs to namespace victim (EdgeWorker victim/shop, which claimed it first)`);
      expect((await published(ATTACKER, name))?.routes).toEqual([]);
      expect(ready(await read(VICTIM, 'shop'))).toMatchObject({ status: 'True', reason: 'Serving' });
      await victimServes();
    });

    it('refuses a wildcard over a whole top-level domain at the door (the CRD\'s validation)', async () => {
      for (const host of ['*.com', '*.localhost']) {
        const err = await create(ATTACKER, 'tld', { source: { inline: respond('attacker') }, routes: [{ host }] }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(KubeError);
        expect((err as KubeError).code).toBe(422);
        expect((err as Error).message).toContain('a wildcard needs at least two labels after "*."');
      }
      await victimServes();
    });

    it('hands the host to the next claimant only when the owner is deleted', async () => {
      await kube.request('DELETE', path(VICTIM, 'shop'));
      // The oldest remaining claimant of shop.localhost is attacker/login (/login); attacker/aaa
      // then shares the host with it (same namespace).
      await waitReady(ATTACKER, 'login', 'True');
      await waitReady(ATTACKER, 'aaa', 'True');
      await waitFor('the next claimant serves shop.localhost', async () => (await get(agent(), 'shop.localhost', '/login')).text === 'attacker', 30_000, 100);
    });
  });
});
