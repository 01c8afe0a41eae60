import { describe, expect, it } from 'vitest';
import {
  API_VERSION, EdgeModelSchema, EdgePolicySchema, EdgeWorkerSchema, GROUP, VERSION, type EdgeWorker,
} from '../../common/api/index.js';
import { FakeAgentView } from '../../common/fake/agent-view.js';
import { POOL_ISOLATE, POOL_LABEL, REGION_LABEL } from '../../common/labels.js';
import { createLogger } from '../../common/log.js';
import { EdgeWorkerReconciler, PLURAL } from '../../operator/controllers/edgeworker.js';
import { FakeInference } from '../../operator/controllers/fake/inference.js';
import { FakeWorkerStore } from '../../operator/controllers/fake/worker-store.js';
import { hostGranted, hostRefusal, hostsOverlap, policyFor } from '../../operator/controllers/policy.js';
import { decideRoutes } from '../../operator/controllers/routes.js';
import type { ReconcileContext } from '../../operator/runtime/controller.js';
import { FakeEventSink } from '../../operator/runtime/fake/events.js';
import { FakeKubeApi } from '../../operator/runtime/fake/kube-api.js';
import { crPath } from '../../operator/runtime/kube-client.js';
import { SecretSealer } from '../../common/sealing.js';

// The cluster admin's EdgePolicy and EdgeModel catalogue as the EdgeWorker reconciler
// applies them, against fakes of the apiserver, the worker store and the model servers:
// limits (defaults and ceilings), route ownership across namespaces, the catalogue and the
// GPU quota. test/security/policy.test.ts plays the same attacks against real processes.

const SOURCE = 'export default { fetch() { return new Response("hi"); } }';
const ROOT = `/apis/${GROUP}/${VERSION}`;

function setup(regions = ['eu']) {
  const api = new FakeKubeApi();
  const store = new FakeWorkerStore();
  const inference = new FakeInference();
  const ctx: ReconcileContext = { log: createLogger({}, () => {}, 'error'), signal: new AbortController().signal };
  let clock = 0;
  const reconciler = new EdgeWorkerReconciler({
    client: api, store, agents: new FakeAgentView(), events: new FakeEventSink(), inference, defaultAiImage: 'registry.example/vllm:1', sealer: new SecretSealer(Buffer.alloc(32, 7)),
    getWorker: (ns, name) => {
      const raw = api.get(crPath(PLURAL, ns, name));
      return raw ? EdgeWorkerSchema.parse(raw) : undefined;
    },
    getActor: () => undefined,
    listWorkers: () => api.created<{ kind?: string }>(`${ROOT}/namespaces`).filter((o) => o.kind === 'EdgeWorker').map((raw) => EdgeWorkerSchema.parse(raw)),
    policies: () => api.created(`${ROOT}/edgepolicies`).map((raw) => EdgePolicySchema.parse(raw)),
    models: () => api.created(`${ROOT}/edgemodels`).map((raw) => EdgeModelSchema.parse(raw)),
    nodes: () => regions.map((r) => ({ name: `n-${r}`, labels: { [REGION_LABEL]: r, [POOL_LABEL]: POOL_ISOLATE } })),
  });
  /** Creates an EdgeWorker, each one a second younger than the one before. */
  const worker = (ns: string, name: string, spec: Record<string, unknown> = {}) => api.seed(crPath(PLURAL, ns, name), {
    apiVersion: API_VERSION, kind: 'EdgeWorker',
    metadata: { name, namespace: ns, uid: `uid-${ns}-${name}`, generation: 1, creationTimestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, clock++)).toISOString().replace(/\.\d{3}Z$/, 'Z') },
    spec: { source: { inline: SOURCE }, ...spec },
  });
  const policy = (name: string, spec: Record<string, unknown>) => api.seed(`${ROOT}/edgepolicies/${name}`, {
    apiVersion: API_VERSION, kind: 'EdgePolicy', metadata: { name }, spec,
  });
  const model = (name: string, spec: Record<string, unknown>) => api.seed(`${ROOT}/edgemodels/${name}`, {
    apiVersion: API_VERSION, kind: 'EdgeModel', metadata: { name }, spec,
  });
  const read = (ns: string, name: string) => EdgeWorkerSchema.parse(api.get(crPath(PLURAL, ns, name))) as EdgeWorker;
  const ready = (ns: string, name: string) => read(ns, name).status?.conditions?.find((c) => c.type === 'Ready');
  const reconcile = (ns: string, name: string) => reconciler.reconcile(ctx, { namespace: ns, name });
  const config = (ns: string, name: string) => store.get(`${ns}.${name}`);
  return { api, store, inference, worker, policy, model, read, ready, reconcile, config };
}

describe('EdgePolicy limits', () => {
  it('applies the built-in defaults without a policy, and the policy\'s defaults to unset fields', async () => {
    const t = setup();
    t.worker('shop', 'plain');
    await t.reconcile('shop', 'plain');
    expect(t.config('shop', 'plain')).toMatchObject({ limits: { cpuMsPerRequest: 50, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 }, minWarmIsolates: 1 });
    expect(t.config('shop', 'plain')?.egress).toBeUndefined();

    t.policy('default', {
      namespaces: ['*'],
      limits: { defaults: { cpuMsPerRequest: 20, memoryMiB: 64, minWarmIsolates: 0 } },
      egress: { publicInternet: false, allow: ['10.0.0.0/8'] },
    });
    t.worker('shop', 'set', { limits: { cpuMsPerRequest: 100 } });
    await t.reconcile('shop', 'plain');
    await t.reconcile('shop', 'set');
    expect(t.config('shop', 'plain')).toMatchObject({ limits: { cpuMsPerRequest: 20, memoryMiB: 64, subrequests: 50 }, minWarmIsolates: 0 });
    expect(t.config('shop', 'set')).toMatchObject({ limits: { cpuMsPerRequest: 100, memoryMiB: 64 } });
    // The egress policy goes into each worker's config, and into its version.
    expect(t.config('shop', 'plain')?.egress).toEqual({ publicInternet: false, allow: ['10.0.0.0/8'] });
  });

  it('refuses a spec over a ceiling with LimitExceeded naming field, value and ceiling, and keeps the last good version', async () => {
    const t = setup();
    t.policy('default', { namespaces: ['*'], limits: { max: { cpuMsPerRequest: 1000, memoryMiB: 256, minWarmIsolates: 4 } } });
    t.worker('shop', 'w', { limits: { cpuMsPerRequest: 500 } });
    await t.reconcile('shop', 'w');
    const good = t.config('shop', 'w');
    expect(good?.limits.cpuMsPerRequest).toBe(500);

    await t.api.request('PATCH', crPath(PLURAL, 'shop', 'w'), { patch: 'merge', body: { spec: { limits: { cpuMsPerRequest: 30_000, memoryMiB: 2048 }, placement: { minWarmIsolates: 64 } }, metadata: { generation: 2 } } });
    await t.reconcile('shop', 'w');
    expect(t.config('shop', 'w')).toEqual(good);
    expect(t.ready('shop', 'w')).toMatchObject({
      status: 'False', reason: 'LimitExceeded',
      message: 'spec.limits.cpuMsPerRequest 30000 exceeds the ceiling 1000; spec.limits.memoryMiB 2048 exceeds the ceiling 256; spec.placement.minWarmIsolates 64 exceeds the ceiling 4 set by EdgePolicy default',
    });
  });

  it('lets the policy naming a namespace win over the "*" one', async () => {
    const t = setup();
    t.policy('default', { namespaces: ['*'], limits: { max: { cpuMsPerRequest: 100 } } });
    t.policy('trusted', { namespaces: ['batch'], limits: { max: { cpuMsPerRequest: 10_000 } } });
    t.worker('batch', 'w', { limits: { cpuMsPerRequest: 5000 } });
    t.worker('shop', 'w', { limits: { cpuMsPerRequest: 5000 } });
    await t.reconcile('batch', 'w');
    await t.reconcile('shop', 'w');
    expect(t.config('batch', 'w')?.limits.cpuMsPerRequest).toBe(5000);
    expect(t.config('shop', 'w')).toBeUndefined();
    expect(t.ready('shop', 'w')?.message).toContain('exceeds the ceiling 100 set by EdgePolicy default');
  });
});

describe('route ownership', () => {
  async function victimAndAttacker(attackerRoutes: { host: string; pathPrefix?: string }[]) {
    const t = setup();
    t.worker('victim', 'shop', { routes: [{ host: 'shop.localhost', pathPrefix: '/' }] });
    t.worker('attacker', 'evil', { routes: attackerRoutes });
    await t.reconcile('victim', 'shop');
    await t.reconcile('attacker', 'evil');
    return t;
  }

  it.each([
    ['a longer prefix', [{ host: 'shop.localhost', pathPrefix: '/login' }]],
    ['an identical route', [{ host: 'shop.localhost', pathPrefix: '/' }]],
  ])('refuses %s under another namespace\'s host with RouteConflict naming the owner', async (_, routes) => {
    const t = await victimAndAttacker(routes);
    expect(t.config('victim', 'shop')?.routes).toEqual([{ host: 'shop.localhost', pathPrefix: '/' }]);
    const ready = t.ready('attacker', 'evil');
    expect(ready).toMatchObject({ status: 'False', reason: 'RouteConflict' });
    expect(ready?.message).toContain('shop.localhost belongs to namespace victim (EdgeWorker victim/shop, which claimed it first)');
    // Left out of what the agents get.
    expect(t.config('attacker', 'evil')?.routes.some((r) => r.host === 'shop.localhost')).toBe(false);
    expect(t.ready('victim', 'shop')?.reason).not.toBe('RouteConflict');
  });

  it('refuses a wildcard over another namespace\'s host, and a host under its wildcard', async () => {
    const t = setup();
    t.worker('victim', 'shop', { routes: [{ host: 'shop.example.com', pathPrefix: '/' }, { host: '*.victim.example.com', pathPrefix: '/' }] });
    t.worker('attacker', 'evil', { routes: [{ host: '*.example.com', pathPrefix: '/' }, { host: 'x.victim.example.com', pathPrefix: '/' }, { host: 'own.test', pathPrefix: '/' }] });
    await t.reconcile('victim', 'shop');
    await t.reconcile('attacker', 'evil');
    expect(t.config('victim', 'shop')?.routes).toHaveLength(2);
    expect(t.config('attacker', 'evil')?.routes).toEqual([{ host: 'own.test', pathPrefix: '/' }]);
    expect(t.ready('attacker', 'evil')).toMatchObject({ status: 'False', reason: 'RouteConflict' });
    expect(t.ready('attacker', 'evil')?.message).toContain('route *.example.com/: shop.example.com belongs to namespace victim');
    expect(t.ready('attacker', 'evil')?.message).toContain('route x.victim.example.com/: *.victim.example.com belongs to namespace victim');
  });

  it('refuses a bare top-level-domain wildcard of an object the CRD let in before', async () => {
    const t = setup();
    t.worker('attacker', 'evil', { routes: [{ host: '*.com', pathPrefix: '/' }] });
    await t.reconcile('attacker', 'evil');
    expect(t.ready('attacker', 'evil')).toMatchObject({ status: 'False', reason: 'RouteNotAllowed' });
    expect(t.config('attacker', 'evil')?.routes).toEqual([]);
  });

  it('never lets a later object steal: the next claimant takes over only once the owner is being deleted', async () => {
    const t = setup();
    t.worker('victim', 'shop', { routes: [{ host: 'shop.localhost', pathPrefix: '/' }] });
    t.worker('other', 'late', { routes: [{ host: 'shop.localhost', pathPrefix: '/' }] });
    await t.reconcile('other', 'late');
    expect(t.config('other', 'late')?.routes).toEqual([]);
    await t.api.request('PATCH', crPath(PLURAL, 'victim', 'shop'), { patch: 'merge', body: { metadata: { deletionTimestamp: '2026-02-01T00:00:00Z' } } });
    await t.reconcile('other', 'late');
    expect(t.config('other', 'late')?.routes).toEqual([{ host: 'shop.localhost', pathPrefix: '/' }]);
    expect(t.ready('other', 'late')?.reason).not.toBe('RouteConflict');
  });

  it('shares a host within a namespace, but an identical route goes to the older worker', async () => {
    const t = setup();
    t.worker('shop', 'site', { routes: [{ host: 'shop.localhost', pathPrefix: '/' }] });
    t.worker('shop', 'api', { routes: [{ host: 'shop.localhost', pathPrefix: '/api' }] });
    t.worker('shop', 'copy', { routes: [{ host: 'shop.localhost', pathPrefix: '/' }] });
    for (const n of ['site', 'api', 'copy']) await t.reconcile('shop', n);
    expect(t.config('shop', 'api')?.routes).toEqual([{ host: 'shop.localhost', pathPrefix: '/api' }]);
    expect(t.ready('shop', 'copy')).toMatchObject({ reason: 'RouteConflict', message: 'route shop.localhost/: is served by EdgeWorker shop/site' });
  });

  it('keeps hosts an EdgePolicy grants to named namespaces for them, whoever came first', async () => {
    const t = setup();
    t.policy('shop', { namespaces: ['victim'], routes: { hosts: ['shop.localhost', '*.shop.example.com'] } });
    t.worker('attacker', 'early', { routes: [{ host: 'a.shop.example.com', pathPrefix: '/' }] });
    t.worker('victim', 'shop', { routes: [{ host: 'a.shop.example.com', pathPrefix: '/' }, { host: 'elsewhere.example.com', pathPrefix: '/' }] });
    await t.reconcile('attacker', 'early');
    await t.reconcile('victim', 'shop');
    expect(t.ready('attacker', 'early')).toMatchObject({ reason: 'RouteNotAllowed' });
    expect(t.ready('attacker', 'early')?.message).toContain('granted to namespaces victim by EdgePolicy shop');
    expect(t.config('victim', 'shop')?.routes).toEqual([{ host: 'a.shop.example.com', pathPrefix: '/' }]);
    expect(t.ready('victim', 'shop')?.message).toContain('elsewhere.example.com is not among the hosts EdgePolicy shop grants namespace victim');
  });

  it('decides overlapping wildcards and hosts in age order, whatever order they are listed in', () => {
    const w = (ns: string, name: string, created: string, host: string) => EdgeWorkerSchema.parse({
      apiVersion: API_VERSION, kind: 'EdgeWorker', metadata: { name, namespace: ns, creationTimestamp: created },
      spec: { source: { inline: SOURCE }, routes: [{ host }] },
    });
    const list = [
      w('c', 'x', '2026-01-03T00:00:00Z', 'b.example.com'),
      w('b', 'x', '2026-01-02T00:00:00Z', '*.example.com'),
      w('a', 'x', '2026-01-01T00:00:00Z', 'a.example.com'),
    ];
    const d = decideRoutes(list, () => undefined);
    expect(d.get('a/x')?.allowed).toHaveLength(1);
    // The wildcard came after a.example.com's owner: it loses, so it holds nothing and c keeps b.example.com.
    expect(d.get('b/x')?.refused[0]?.owner).toBe('a/x');
    expect(d.get('c/x')?.allowed).toHaveLength(1);
  });

  it('matches host patterns the way routes do', () => {
    expect(hostGranted('a.example.com', '*.example.com')).toBe(true);
    expect(hostGranted('*.a.example.com', '*.example.com')).toBe(true);
    expect(hostGranted('example.com', '*.example.com')).toBe(false);
    expect(hostGranted('*.example.com', 'a.example.com')).toBe(false);
    expect(hostsOverlap('*.example.com', 'x.y.example.com')).toBe(true);
    expect(hostsOverlap('a.example.com', 'b.example.com')).toBe(false);
    expect(hostRefusal('ns', '*.com', [])).toContain('whole top-level domain');
  });
});

describe('the model catalogue and GPU quota', () => {
  const attack = { name: 'AI', model: 'miner', image: 'registry.attacker.example/cryptominer:latest', gpus: 8, replicasPerRegion: 16 };

  it('refuses a model outside the catalogue: ModelNotAllowed, no model server', async () => {
    const t = setup();
    t.worker('attacker', 'miner', { bindings: { ai: [attack] } });
    await t.reconcile('attacker', 'miner');
    expect(t.ready('attacker', 'miner')).toMatchObject({ status: 'False', reason: 'ModelNotAllowed' });
    expect(t.ready('attacker', 'miner')?.message).toContain('model miner is not in the cluster\'s catalogue');
    expect(t.inference.calls).toEqual([]);
    expect(t.config('attacker', 'miner')).toBeUndefined();
  });

  it('refuses a catalogue model with a foreign image, and runs the catalogue\'s image and GPUs otherwise', async () => {
    const t = setup();
    t.model('llama', { model: 'llama-3.1-8b', image: 'registry.example/vllm:2', gpus: 2, args: ['--max-model-len', '8192'] });
    t.worker('shop', 'foreign', { bindings: { ai: [{ name: 'AI', model: 'llama-3.1-8b', image: 'registry.attacker.example/cryptominer:latest' }] } });
    await t.reconcile('shop', 'foreign');
    expect(t.ready('shop', 'foreign')).toMatchObject({ reason: 'ModelNotAllowed' });
    expect(t.ready('shop', 'foreign')?.message).toContain('image registry.attacker.example/cryptominer:latest is not the catalogue\'s image');
    expect(t.inference.calls).toEqual([]);

    t.worker('shop', 'ok', { bindings: { ai: [{ name: 'AI', model: 'llama-3.1-8b', gpus: 8 }] } });
    await t.reconcile('shop', 'ok');
    expect(t.inference.calls).toEqual(['reconcile shop/ok AI in eu']);
    expect(t.inference.servers).toEqual([{ name: 'AI', model: 'llama-3.1-8b', image: 'registry.example/vllm:2', gpus: 2, replicasPerRegion: 1, task: 'text-generation', args: ['--max-model-len', '8192'] }]);
  });

  it('a binding calls its model and its `models`: one server each, with the catalogue\'s task and weights, published for the agents', async () => {
    const t = setup(['eu', 'us']);
    t.model('llama', { model: '@cf/meta/llama-3.1-8b-instruct', source: 'meta-llama/Llama-3.1-8B-Instruct' });
    t.model('bge', { model: '@cf/baai/bge-base-en-v1.5', task: 'text-embeddings', source: 'BAAI/bge-base-en-v1.5', gpus: 0, args: ['--runner', 'pooling'] });
    t.model('sdxl', { model: '@cf/stabilityai/stable-diffusion-xl-base-1.0', task: 'text-to-image', image: 'registry.example/sdxl:1' });
    t.worker('shop', 'w', { bindings: { ai: [{ name: 'AI', model: '@cf/meta/llama-3.1-8b-instruct', models: ['@cf/baai/bge-base-en-v1.5', '@cf/stabilityai/stable-diffusion-xl-base-1.0'] }] } });
    await t.reconcile('shop', 'w');
    expect(t.inference.calls).toEqual(['reconcile shop/w AI,AI/@cf/baai/bge-base-en-v1.5,AI/@cf/stabilityai/stable-diffusion-xl-base-1.0 in eu,us']);
    expect(t.inference.servers.map((s) => [s.name, s.model, s.task, s.source, s.image, s.gpus])).toEqual([
      ['AI', '@cf/meta/llama-3.1-8b-instruct', 'text-generation', 'meta-llama/Llama-3.1-8B-Instruct', 'registry.example/vllm:1', 1],
      ['AI/@cf/baai/bge-base-en-v1.5', '@cf/baai/bge-base-en-v1.5', 'text-embeddings', 'BAAI/bge-base-en-v1.5', 'registry.example/vllm:1', 0],
      ['AI/@cf/stabilityai/stable-diffusion-xl-base-1.0', '@cf/stabilityai/stable-diffusion-xl-base-1.0', 'text-to-image', undefined, 'registry.example/sdxl:1', 1],
    ]);
    const ai = t.config('shop', 'w')?.env.ai.AI;
    expect(ai?.model).toBe('@cf/meta/llama-3.1-8b-instruct');
    expect(ai?.services.eu?.task).toBeUndefined();
    expect(ai?.models?.['@cf/baai/bge-base-en-v1.5']?.eu).toMatchObject({ task: 'text-embeddings', namespace: 'shop' });
    expect(ai?.models?.['@cf/stabilityai/stable-diffusion-xl-base-1.0']?.us).toMatchObject({ task: 'text-to-image' });
    // Three distinct Services in each region.
    for (const region of ['eu', 'us']) {
      const services = new Set([ai!.services[region]!.service, ...Object.values(ai?.models ?? {}).map((r) => r[region]!.service)]);
      expect(services.size).toBe(3);
    }
  });

  it('refuses a `models` entry outside the catalogue or the policy, naming the field; its GPUs count against the quota', async () => {
    const t = setup();
    t.model('llama', { model: '@cf/meta/llama-3.1-8b-instruct', gpus: 2 });
    t.model('bge', { model: '@cf/baai/bge-base-en-v1.5', task: 'text-embeddings', gpus: 2 });
    t.worker('shop', 'unknown', { bindings: { ai: [{ name: 'AI', model: '@cf/meta/llama-3.1-8b-instruct', models: ['@hf/thebloke/miner'] }] } });
    await t.reconcile('shop', 'unknown');
    expect(t.ready('shop', 'unknown')).toMatchObject({ reason: 'ModelNotAllowed' });
    expect(t.ready('shop', 'unknown')?.message).toContain('spec.bindings.ai AI models: model @hf/thebloke/miner is not in the cluster\'s catalogue');

    t.policy('default', { namespaces: ['*'], gpu: { maxGpus: 3, models: ['@cf/meta/llama-3.1-8b-instruct', '@cf/baai/bge-base-en-v1.5'] } });
    t.worker('shop', 'big', { bindings: { ai: [{ name: 'AI', model: '@cf/meta/llama-3.1-8b-instruct', models: ['@cf/baai/bge-base-en-v1.5'] }] } });
    await t.reconcile('shop', 'big');
    expect(t.ready('shop', 'big')).toMatchObject({ reason: 'GpuQuotaExceeded' });
    expect(t.ready('shop', 'big')?.message).toContain('needs 4 GPUs');
  });

  it('refuses a model the namespace\'s policy does not allow', async () => {
    const t = setup();
    t.model('llama', { model: 'llama-3.1-8b' });
    t.model('big', { model: 'llama-3.1-405b', gpus: 8 });
    t.policy('default', { namespaces: ['*'], gpu: { models: ['llama-3.1-8b'] } });
    t.worker('shop', 'w', { bindings: { ai: [{ name: 'AI', model: 'llama-3.1-405b' }] } });
    await t.reconcile('shop', 'w');
    expect(t.ready('shop', 'w')).toMatchObject({ reason: 'ModelNotAllowed', message: 'spec.bindings.ai AI: EdgePolicy default does not allow model llama-3.1-405b in namespace shop (allowed: llama-3.1-8b)' });
  });

  it('holds a namespace to its GPU quota, oldest worker first', async () => {
    const t = setup(['eu', 'us']);
    t.model('big', { model: 'big', gpus: 4 });
    t.policy('default', { namespaces: ['*'], gpu: { maxGpus: 8 } });
    t.worker('shop', 'first', { bindings: { ai: [{ name: 'AI', model: 'big' }] } }); // 4 x 1 x 2 = 8
    t.worker('shop', 'second', { bindings: { ai: [{ name: 'AI', model: 'big' }] } });
    t.worker('other', 'w', { bindings: { ai: [{ name: 'AI', model: 'big' }] } });
    // Reconciled newest first: the order of reconciles does not decide, age does.
    for (const [ns, n] of [['shop', 'second'], ['shop', 'first'], ['other', 'w']] as const) await t.reconcile(ns, n);
    expect(t.ready('shop', 'second')).toMatchObject({
      reason: 'GpuQuotaExceeded',
      message: 'spec.bindings.ai needs 8 GPUs (gpus x replicasPerRegion x regions); namespace shop may hold 8 (EdgePolicy default) and older workers hold 8',
    });
    expect(t.inference.calls.sort()).toEqual(['reconcile other/w AI in eu,us', 'reconcile shop/first AI in eu,us']);
  });

  it('refuses the cryptominer of issue 12 even when its model is in the catalogue (16 replicas x 8 GPUs)', async () => {
    const t = setup();
    t.model('miner', { model: 'miner', gpus: 8 });
    t.worker('attacker', 'miner', { bindings: { ai: [{ ...attack, image: undefined }] } });
    await t.reconcile('attacker', 'miner');
    expect(t.ready('attacker', 'miner')).toMatchObject({ reason: 'GpuQuotaExceeded' });
    expect(t.inference.calls).toEqual([]);
    expect(policyFor('attacker', []).maxGpus).toBe(8);
  });
});
