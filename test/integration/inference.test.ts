import {
  AppsV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Deployment, type V1Service,
} from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { API_VERSION, EdgeModelSchema, GROUP, VERSION } from '../../common/api/index.js';
import { SPEC_HASH_ANNOTATION, WORKER_LABEL } from '../../common/labels.js';
import {
  deleteInference, inferenceSelector, reconcileInference, type ModelServerBinding, type InferenceWorker,
} from '../../operator/controllers/inference.js';
import { inferenceName } from '../../common/model-servers.js';
import { catalogue, modelServers } from '../../operator/controllers/models.js';
import { policyFor } from '../../operator/controllers/policy.js';
import { freshNamespace, sharedControlPlane } from '../harness/shared.js';

// The inference Deployments and Services against a real apiserver: what it stores is what
// the operator meant, a second reconcile writes nothing, changes and removals converge, and
// concurrent reconciles neither duplicate nor fail. (No kube-controller-manager runs here,
// so no pods appear and ownerReferences are never acted on; deleteInference does the cleanup.)

const IMAGE = 'registry.example/vllm:test';
const opts = { defaultImage: 'vllm/vllm-openai:v0.11.0' };
// What the EdgeWorker reconciler hands over once the catalogue resolved the binding.
const ai = (b: Partial<ModelServerBinding> & { name: string }): ModelServerBinding => ({ model: 'llama-3.1-8b', gpus: 1, replicasPerRegion: 1, ...b });

const bindings = (aiReplicas = 1, aiGpus = 1): ModelServerBinding[] => [
  ai({ name: 'AI', model: 'meta-llama/Llama-3.1-8B-Instruct', image: IMAGE, gpus: aiGpus, replicasPerRegion: aiReplicas }),
  ai({ name: 'EMBED', model: 'BAAI/bge-m3', gpus: 0, replicasPerRegion: 2 }),
];

async function createWorker(kc: KubeConfig, namespace: string, name: string): Promise<InferenceWorker> {
  const created = await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
    group: GROUP, version: VERSION, namespace, plural: 'edgeworkers', fieldValidation: 'Strict',
    body: {
      apiVersion: API_VERSION, kind: 'EdgeWorker', metadata: { name },
      spec: {
        source: { inline: 'export default { fetch() { return new Response("hi") } }' },
        bindings: { ai: bindings().map((b) => ({ ...b })) },
      },
    },
  }) as { metadata: { uid: string } };
  expect(created.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
  return { name, namespace, uid: created.metadata.uid };
}

interface Snapshot { deployments: Map<string, V1Deployment>; services: Map<string, V1Service> }

async function snapshot(kc: KubeConfig, w: { name: string; namespace: string }): Promise<Snapshot> {
  const labelSelector = inferenceSelector(w.name);
  const [d, s] = await Promise.all([
    kc.makeApiClient(AppsV1Api).listNamespacedDeployment({ namespace: w.namespace, labelSelector }),
    kc.makeApiClient(CoreV1Api).listNamespacedService({ namespace: w.namespace, labelSelector }),
  ]);
  return {
    deployments: new Map(d.items.map((o) => [o.metadata!.name!, o])),
    services: new Map(s.items.map((o) => [o.metadata!.name!, o])),
  };
}

const versions = (s: Snapshot) => ({
  deployments: Object.fromEntries([...s.deployments].map(([n, o]) => [n, o.metadata!.resourceVersion])),
  services: Object.fromEntries([...s.services].map(([n, o]) => [n, o.metadata!.resourceVersion])),
});

const ids = (worker: string, binding: string, regions: string[]) =>
  regions.flatMap((r) => [`deployment/${inferenceName(worker, binding, r)}`, `service/${inferenceName(worker, binding, r)}`]);

describe('inference Deployments and Services of a worker', () => {
  const { kubeConfig: kc } = sharedControlPlane();
  const apps = kc.makeApiClient(AppsV1Api);
  let w: InferenceWorker;

  beforeAll(async () => {
    const namespace = await freshNamespace(kc, 'inference');
    w = await createWorker(kc, namespace, 'chat');
  });

  it('creates one Deployment and one Service per binding and region, as meant', async () => {
    const res = await reconcileInference(kc, w, bindings(), ['us-east', 'eu-west'], opts);
    expect(res.created).toEqual([...ids('chat', 'AI', ['eu-west', 'us-east']), ...ids('chat', 'EMBED', ['eu-west', 'us-east'])].sort());
    expect(res.updated).toEqual([]);
    expect(res.deleted).toEqual([]);
    expect(res.ready).toEqual({
      AI: { 'eu-west': { readyReplicas: 0, replicas: 1 }, 'us-east': { readyReplicas: 0, replicas: 1 } },
      EMBED: { 'eu-west': { readyReplicas: 0, replicas: 2 }, 'us-east': { readyReplicas: 0, replicas: 2 } },
    });

    const snap = await snapshot(kc, w);
    expect(snap.deployments.size).toBe(4);
    expect(snap.services.size).toBe(4);

    for (const [binding, region] of [['AI', 'eu-west'], ['AI', 'us-east'], ['EMBED', 'eu-west'], ['EMBED', 'us-east']] as const) {
      const name = inferenceName('chat', binding, region);
      expect(res.refs[binding]?.[region]).toEqual({ service: name, namespace: w.namespace, port: 8000 });
      const d = snap.deployments.get(name)!;
      const s = snap.services.get(name)!;
      for (const o of [d, s]) {
        expect(o.metadata!.labels).toMatchObject({
          'app.kubernetes.io/name': 'edge-inference', 'app.kubernetes.io/managed-by': 'edge-isolates',
          'edge.isolates.dev/worker': 'chat', 'edge.isolates.dev/ai-binding': binding, 'edge.isolates.dev/region': region,
        });
        expect(o.metadata!.ownerReferences).toEqual([{
          apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker', name: 'chat', uid: w.uid, controller: true, blockOwnerDeletion: true,
        }]);
      }
      const pod = d.spec!.template.spec!;
      const c = pod.containers[0]!;
      expect(d.spec!.replicas).toBe(binding === 'AI' ? 1 : 2);
      expect(pod.nodeSelector).toEqual({ 'topology.kubernetes.io/region': region, 'edge.isolates.dev/pool': 'gpu' });
      expect(pod.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
      expect(c.image).toBe(binding === 'AI' ? IMAGE : opts.defaultImage);
      const model = binding === 'AI' ? 'meta-llama/Llama-3.1-8B-Instruct' : 'BAAI/bge-m3';
      expect(c.args).toEqual(['--model', model, '--port', '8000', '--served-model-name', model]);
      expect(c.ports).toEqual([{ name: 'http', containerPort: 8000, protocol: 'TCP' }]);
      if (binding === 'AI') expect(c.resources?.limits).toEqual({ 'nvidia.com/gpu': '1' });
      else expect(c.resources?.limits).toBeUndefined();
      expect(c.readinessProbe?.httpGet).toMatchObject({ path: '/health', port: 'http' });
      expect(c.startupProbe?.httpGet).toMatchObject({ path: '/health', port: 'http' });
      expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });

      expect(s.spec!.type).toBe('ClusterIP');
      expect(s.spec!.clusterIP).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
      expect(s.spec!.ports).toEqual([{ name: 'http', port: 8000, targetPort: 'http', protocol: 'TCP' }]);
      expect(s.spec!.selector).toEqual(d.spec!.selector.matchLabels);
      // The pods the Deployment makes are the ones its Service selects.
      expect(d.spec!.template.metadata!.labels).toMatchObject(d.spec!.selector.matchLabels!);
    }
  });

  it('writes nothing when nothing changed', async () => {
    const before = versions(await snapshot(kc, w));
    const res = await reconcileInference(kc, w, bindings(), ['eu-west', 'us-east'], opts);
    expect(res).toMatchObject({ created: [], updated: [], deleted: [] });
    expect(versions(await snapshot(kc, w))).toEqual(before);
  });

  it('updates a changed replica count, and only the objects it concerns', async () => {
    const before = versions(await snapshot(kc, w));
    const res = await reconcileInference(kc, w, bindings(3), ['eu-west', 'us-east'], opts);
    expect(res.updated).toEqual(['eu-west', 'us-east'].map((r) => `deployment/${inferenceName('chat', 'AI', r)}`).sort());
    expect(res.created).toEqual([]);
    expect(res.ready.AI?.['eu-west']).toEqual({ readyReplicas: 0, replicas: 3 });
    const after = await snapshot(kc, w);
    for (const r of ['eu-west', 'us-east']) expect(after.deployments.get(inferenceName('chat', 'AI', r))!.spec!.replicas).toBe(3);
    expect(versions(after).services).toEqual(before.services);
    for (const r of ['eu-west', 'us-east']) {
      const n = inferenceName('chat', 'EMBED', r);
      expect(versions(after).deployments[n]).toBe(before.deployments[n]);
    }
    expect((await reconcileInference(kc, w, bindings(3), ['eu-west', 'us-east'], opts)).updated).toEqual([]);
  });

  it('removes a field it stopped setting (gpus 1 -> 0 drops the GPU limit), then is quiet again', async () => {
    const res = await reconcileInference(kc, w, bindings(3, 0), ['eu-west', 'us-east'], opts);
    expect(res.updated).toHaveLength(2);
    const snap = await snapshot(kc, w);
    const d = snap.deployments.get(inferenceName('chat', 'AI', 'eu-west'))!;
    expect(d.spec!.template.spec!.containers[0]!.resources?.limits).toBeUndefined();
    const before = versions(snap);
    expect(await reconcileInference(kc, w, bindings(3, 0), ['eu-west', 'us-east'], opts)).toMatchObject({ created: [], updated: [], deleted: [] });
    expect(versions(await snapshot(kc, w))).toEqual(before);
  });

  it('puts back a hand edit of a field it owns', async () => {
    const name = inferenceName('chat', 'EMBED', 'us-east');
    const d = await apps.readNamespacedDeployment({ namespace: w.namespace, name });
    d.spec!.replicas = 9;
    d.spec!.template.spec!.containers[0]!.image = 'someone/else:1';
    await apps.replaceNamespacedDeployment({ namespace: w.namespace, name, body: d });
    const res = await reconcileInference(kc, w, bindings(3, 0), ['eu-west', 'us-east'], opts);
    expect(res.updated).toEqual([`deployment/${name}`]);
    const back = await apps.readNamespacedDeployment({ namespace: w.namespace, name });
    expect(back.spec!.replicas).toBe(2);
    expect(back.spec!.template.spec!.containers[0]!.image).toBe(opts.defaultImage);
  });

  it('takes back an object of its own whose labels were edited away (found by its owner reference)', async () => {
    const core = kc.makeApiClient(CoreV1Api);
    const name = inferenceName('chat', 'AI', 'us-east');
    const s = await core.readNamespacedService({ namespace: w.namespace, name });
    s.metadata!.labels = { unrelated: 'yes' };
    await core.replaceNamespacedService({ namespace: w.namespace, name, body: s });
    expect((await snapshot(kc, w)).services.has(name)).toBe(false);
    const res = await reconcileInference(kc, w, bindings(3, 0), ['eu-west', 'us-east'], opts);
    expect(res).toMatchObject({ created: [], updated: [`service/${name}`], deleted: [] });
    const back = await core.readNamespacedService({ namespace: w.namespace, name });
    expect(back.metadata!.labels).toMatchObject({ unrelated: 'yes', [WORKER_LABEL]: 'chat' });
  });

  it('reports readiness from the Deployment status', async () => {
    const name = inferenceName('chat', 'AI', 'eu-west');
    const d = await apps.readNamespacedDeployment({ namespace: w.namespace, name });
    d.status = { observedGeneration: d.metadata!.generation!, replicas: 3, updatedReplicas: 3, readyReplicas: 2, availableReplicas: 2 };
    await apps.replaceNamespacedDeploymentStatus({ namespace: w.namespace, name, body: d });
    const res = await reconcileInference(kc, w, bindings(3, 0), ['eu-west', 'us-east'], opts);
    expect(res).toMatchObject({ created: [], updated: [], deleted: [] });
    expect(res.ready.AI).toEqual({ 'eu-west': { readyReplicas: 2, replicas: 3 }, 'us-east': { readyReplicas: 0, replicas: 3 } });
  });

  it('deletes the pair of a dropped region, and of a removed binding', async () => {
    const res = await reconcileInference(kc, w, bindings(3, 0), ['eu-west'], opts);
    expect(res.deleted).toEqual([...ids('chat', 'AI', ['us-east']), ...ids('chat', 'EMBED', ['us-east'])].sort());
    expect(res).toMatchObject({ created: [], updated: [] });
    expect(Object.keys(res.refs.AI!)).toEqual(['eu-west']);
    let snap = await snapshot(kc, w);
    expect([...snap.deployments.keys()].sort()).toEqual([inferenceName('chat', 'AI', 'eu-west'), inferenceName('chat', 'EMBED', 'eu-west')].sort());
    expect([...snap.services.keys()].sort()).toEqual([...snap.deployments.keys()].sort());

    const res2 = await reconcileInference(kc, w, bindings(3, 0).filter((b) => b.name === 'AI'), ['eu-west'], opts);
    expect(res2.deleted).toEqual(ids('chat', 'EMBED', ['eu-west']).sort());
    snap = await snapshot(kc, w);
    expect([...snap.deployments.keys()]).toEqual([inferenceName('chat', 'AI', 'eu-west')]);
    expect([...snap.services.keys()]).toEqual([inferenceName('chat', 'AI', 'eu-west')]);
  });

  it('deleteInference removes everything, and again is a no-op', async () => {
    await reconcileInference(kc, w, bindings(), ['eu-west', 'us-east'], opts);
    expect((await snapshot(kc, w)).deployments.size).toBe(4);
    const res = await deleteInference(kc, w);
    expect(res.deleted).toHaveLength(8);
    const snap = await snapshot(kc, w);
    expect(snap.deployments.size + snap.services.size).toBe(0);
    expect((await deleteInference(kc, w)).deleted).toEqual([]);
  });
});

describe('inference objects under contention', () => {
  const { kubeConfig: kc } = sharedControlPlane();
  let namespace: string;

  beforeAll(async () => {
    namespace = await freshNamespace(kc, 'inference-race');
  });

  it('concurrent reconciles create each object once and neither fails', async () => {
    const w = await createWorker(kc, namespace, 'race');
    const runs = await Promise.all([1, 2, 3].map(() => reconcileInference(kc, w, bindings(), ['eu-west', 'us-east'], opts)));
    const created = runs.flatMap((r) => r.created);
    expect(created.sort()).toEqual([...ids('race', 'AI', ['eu-west', 'us-east']), ...ids('race', 'EMBED', ['eu-west', 'us-east'])].sort());
    for (const r of runs) expect(r.refs).toEqual(runs[0]!.refs);
    const snap = await snapshot(kc, w);
    expect(snap.deployments.size).toBe(4);
    expect(snap.services.size).toBe(4);

    // Concurrent updates of the same objects: optimistic-concurrency conflicts are retried.
    const updates = await Promise.all([1, 2, 3].map(() => reconcileInference(kc, w, bindings(4), ['eu-west', 'us-east'], opts)));
    expect(updates.flatMap((r) => r.updated).sort()).toEqual(['eu-west', 'us-east'].map((r) => `deployment/${inferenceName('race', 'AI', r)}`).sort());
    expect((await snapshot(kc, w)).deployments.get(inferenceName('race', 'AI', 'eu-west'))!.spec!.replicas).toBe(4);
    expect(await reconcileInference(kc, w, bindings(4), ['eu-west', 'us-east'], opts)).toMatchObject({ created: [], updated: [], deleted: [] });

    await Promise.all([deleteInference(kc, w), deleteInference(kc, w)]);
    const after = await snapshot(kc, w);
    expect(after.deployments.size + after.services.size).toBe(0);
  });

  it('leaves alone what is not its own', async () => {
    const w = await createWorker(kc, namespace, 'careful');
    const apps = kc.makeApiClient(AppsV1Api);
    const core = kc.makeApiClient(CoreV1Api);
    // Something else the operator made for this worker (not inference): never deleted here.
    const other: V1Deployment = {
      metadata: { name: 'careful-other', labels: { [WORKER_LABEL]: 'careful', 'app.kubernetes.io/managed-by': 'edge-isolates', 'app.kubernetes.io/name': 'something-else' } },
      spec: {
        selector: { matchLabels: { app: 'other' } },
        template: { metadata: { labels: { app: 'other' } }, spec: { containers: [{ name: 'c', image: 'x' }] } },
      },
    };
    await apps.createNamespacedDeployment({ namespace, body: other });
    // A Service someone else made, under the name a binding wants.
    const taken = inferenceName('careful', 'AI', 'eu-west');
    await core.createNamespacedService({ namespace, body: { metadata: { name: taken }, spec: { ports: [{ port: 80 }] } } });

    await expect(reconcileInference(kc, w, bindings(), ['eu-west'], opts)).rejects.toThrow(/service .*not an inference object of EdgeWorker careful/);
    const svc = await core.readNamespacedService({ namespace, name: taken });
    expect(svc.spec!.ports![0]!.port).toBe(80);
    expect(svc.metadata!.annotations?.[SPEC_HASH_ANNOTATION]).toBeUndefined();
    // The rest was still converged.
    const snap = await snapshot(kc, w);
    expect(snap.deployments.size).toBe(2);
    expect(snap.services.size).toBe(1);

    // No bindings left: its own objects go, the others stay.
    expect((await reconcileInference(kc, w, [], ['eu-west'], opts)).deleted).toEqual(ids('careful', 'EMBED', ['eu-west']).concat(`deployment/${taken}`).sort());
    expect((await deleteInference(kc, w)).deleted).toEqual([]);
    await expect(apps.readNamespacedDeployment({ namespace, name: 'careful-other' })).resolves.toBeDefined();
    await expect(core.readNamespacedService({ namespace, name: taken })).resolves.toBeDefined();
  });
});

describe('the Workers AI catalogue: one model server per model of a binding per region', () => {
  const { kubeConfig: kc } = sharedControlPlane();
  const custom = kc.makeApiClient(CustomObjectsApi);
  const LLM = '@cf/meta/llama-3.1-8b-instruct';
  const BGE = '@cf/baai/bge-base-en-v1.5';
  const SDXL = '@cf/stabilityai/stable-diffusion-xl-base-1.0';
  const suffix = Math.random().toString(36).slice(2, 8);
  const createModel = (name: string, spec: Record<string, unknown>) => custom.createClusterCustomObject({
    group: GROUP, version: VERSION, plural: 'edgemodels', fieldValidation: 'Strict',
    body: { apiVersion: API_VERSION, kind: 'EdgeModel', metadata: { name: `${name}-${suffix}` }, spec },
  });
  const refusal = async (p: Promise<unknown>): Promise<string> => {
    try {
      await p;
    } catch (err) {
      return String((err as { body?: unknown }).body ?? err);
    }
    throw new Error('expected the apiserver to refuse');
  };

  it('the apiserver takes @cf/@hf ids and task types, and refuses a malformed id or an image model without a server, naming the field', async () => {
    await createModel('llama', { model: LLM, source: 'meta-llama/Llama-3.1-8B-Instruct', gpus: 1 });
    await createModel('bge', { model: BGE, task: 'text-embeddings', gpus: 0, args: ['--runner', 'pooling'] });
    await createModel('sdxl', { model: SDXL, task: 'text-to-image', image: 'registry.example/sdxl:1' });
    await createModel('coder', { model: '@hf/thebloke/deepseek-coder-6.7b-instruct-awq' });
    expect(await refusal(createModel('bad', { model: '@cf/llama' }))).toMatch(/spec\.model/);
    expect(await refusal(createModel('img', { model: '@cf/x/img', task: 'text-to-image' }))).toMatch(/spec\.image: a text-to-image model needs an image/);
    expect(await refusal(createModel('asr', { model: '@cf/openai/whisper', task: 'automatic-speech-recognition' }))).toMatch(/spec\.task/);

    const namespace = await freshNamespace(kc, 'catalogue');
    const worker = (name: string, ai: unknown[]) => custom.createNamespacedCustomObject({
      group: GROUP, version: VERSION, namespace, plural: 'edgeworkers', fieldValidation: 'Strict',
      body: { apiVersion: API_VERSION, kind: 'EdgeWorker', metadata: { name }, spec: { source: { inline: 'export default {}' }, bindings: { ai } } },
    });
    await worker('ok', [{ name: 'AI', model: LLM, models: [BGE, SDXL] }]);
    expect(await refusal(worker('bad', [{ name: 'AI', model: LLM, models: ['@cf/baai'] }]))).toMatch(/spec\.bindings\.ai\[0\]\.models\[0\]/);
  });

  it('makes a Deployment and a Service per model per region, with the catalogue\'s weights, and removes a model\'s pair when the binding drops it', async () => {
    const items = (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: 'edgemodels' }) as { items: unknown[] }).items
      .map((raw) => EdgeModelSchema.parse(raw)).filter((m) => m.metadata.name.endsWith(suffix));
    const cat = catalogue(items);
    const namespace = await freshNamespace(kc, 'catalogue');
    const w = await createWorker(kc, namespace, 'assistant');
    const servers = (models: string[]) => modelServers(namespace, [{ name: 'AI', model: LLM, models, replicasPerRegion: 1 }], cat, policyFor(namespace, []), 'vllm:1');

    const res = await reconcileInference(kc, w, servers([BGE, SDXL]), ['eu-west', 'us-east'], opts);
    const snap = await snapshot(kc, w);
    expect(snap.deployments.size).toBe(6);
    expect(snap.services.size).toBe(6);
    expect(Object.keys(res.refs).sort()).toEqual(['AI', `AI/${BGE}`, `AI/${SDXL}`]);
    expect(res.refs[`AI/${BGE}`]?.['eu-west']?.task).toBe('text-embeddings');
    const byModel = new Map([...snap.deployments.values()].map((d) => [d.spec!.template.spec!.containers[0]!.args!.at(5)!, d]));
    expect(byModel.get(LLM)?.spec?.template.spec?.containers[0]?.args?.slice(0, 2)).toEqual(['--model', 'meta-llama/Llama-3.1-8B-Instruct']);
    expect(byModel.get(BGE)?.spec?.template.spec?.containers[0]?.resources?.limits).toBeUndefined();
    expect(byModel.get(SDXL)?.spec?.template.spec?.containers[0]?.image).toBe('registry.example/sdxl:1');

    const after = await reconcileInference(kc, w, servers([BGE]), ['eu-west', 'us-east'], opts);
    expect(after.deleted).toHaveLength(4);
    expect((await snapshot(kc, w)).deployments.size).toBe(4);
    await deleteInference(kc, w);
    // The catalogue is cluster-wide: leave none of it to other tests of this control plane.
    await Promise.all(items.map((m) => custom.deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: 'edgemodels', name: m.metadata.name })));
  });
});
