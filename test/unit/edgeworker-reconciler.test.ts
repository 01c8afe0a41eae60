import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { bundleWorker } from '../../cli/deploy.js';
import {
  API_VERSION, EdgeModelSchema, EdgePolicySchema, EdgeWorkerSchema, GROUP, MAX_SOURCE_BYTES, VERSION, type EdgeWorker,
} from '../../common/api/index.js';
import { FakeAgentView } from '../../common/fake/agent-view.js';
import { FINALIZER, POOL_ISOLATE, POOL_LABEL, REGION_LABEL } from '../../common/labels.js';
import { createLogger } from '../../common/log.js';
import { EdgeWorkerReconciler, PLURAL } from '../../operator/controllers/edgeworker.js';
import { FakeInference } from '../../operator/controllers/fake/inference.js';
import { FakeWorkerStore } from '../../operator/controllers/fake/worker-store.js';
import { InvalidInference } from '../../operator/controllers/inference.js';
import type { NodeInfo } from '../../operator/controllers/placement.js';
import { TerminalError, type ReconcileContext } from '../../operator/runtime/controller.js';
import { FakeEventSink } from '../../operator/runtime/fake/events.js';
import { FakeKubeApi } from '../../operator/runtime/fake/kube-api.js';
import { crPath } from '../../operator/runtime/kube-client.js';
import { openEnv } from '../../common/resolve-bindings.js';
import { SecretSealer } from '../../common/sealing.js';
import { encodeModuleMap, MODULE_MAP_HEADER } from '../../common/module-map.js';

const sealer = new SecretSealer(Buffer.alloc(32, 7));

// The EdgeWorker reconciler against fakes of everything it touches: the apiserver (finalizer
// and status writes, ConfigMaps, Secrets), the worker store in NATS, the agents' reports,
// the model servers and Events. The cache is the fake apiserver itself, as an informer's
// would be once its events arrived.

const NS = 'shop';
const SOURCE = 'export default { fetch() { return new Response("hi"); } }';

function setup(nodes: NodeInfo[] = [{ name: 'n1', labels: { [REGION_LABEL]: 'eu', [POOL_LABEL]: POOL_ISOLATE } }]) {
  const api = new FakeKubeApi();
  const store = new FakeWorkerStore();
  const agents = new FakeAgentView();
  const events = new FakeEventSink();
  const inference = new FakeInference();
  const lines: string[] = [];
  const ctx: ReconcileContext = { log: createLogger({}, (l) => lines.push(l), 'debug'), signal: new AbortController().signal };
  const reconciler = new EdgeWorkerReconciler({
    client: api, store, agents, events, inference, defaultAiImage: 'img',
    getWorker: (ns, name) => {
      const raw = api.get(crPath(PLURAL, ns, name));
      return raw ? EdgeWorkerSchema.parse(raw) : undefined;
    },
    getActor: () => undefined,
    listWorkers: () => api.created<{ kind?: string }>(`/apis/${GROUP}/${VERSION}/namespaces`).filter((o) => o.kind === 'EdgeWorker').map((raw) => EdgeWorkerSchema.parse(raw)),
    policies: () => api.created(`/apis/${GROUP}/${VERSION}/edgepolicies`).map((raw) => EdgePolicySchema.parse(raw)),
    models: () => api.created(`/apis/${GROUP}/${VERSION}/edgemodels`).map((raw) => EdgeModelSchema.parse(raw)),
    nodes: () => nodes,
    sealer,
  });
  const path = (name: string) => crPath(PLURAL, NS, name);
  const worker = (name: string, spec: Record<string, unknown> = {}) => api.seed(path(name), {
    apiVersion: API_VERSION, kind: 'EdgeWorker',
    metadata: { name, namespace: NS, uid: `uid-${name}`, generation: 1 },
    spec: { source: { inline: SOURCE }, ...spec },
  });
  const model = (name: string, spec: Record<string, unknown>) => api.seed(`/apis/${GROUP}/${VERSION}/edgemodels/${name}`, {
    apiVersion: API_VERSION, kind: 'EdgeModel', metadata: { name, uid: `uid-${name}` }, spec,
  });
  const policy = (name: string, spec: Record<string, unknown>) => api.seed(`/apis/${GROUP}/${VERSION}/edgepolicies/${name}`, {
    apiVersion: API_VERSION, kind: 'EdgePolicy', metadata: { name, uid: `uid-${name}` }, spec,
  });
  const read = (name: string) => EdgeWorkerSchema.parse(api.get(path(name))) as EdgeWorker;
  const condition = (name: string, type: string) => read(name).status?.conditions?.find((c) => c.type === type);
  const reconcile = (name: string) => reconciler.reconcile(ctx, { namespace: NS, name });
  return { api, store, agents, events, inference, lines, worker, model, policy, read, condition, reconcile, path };
}

describe('EdgeWorkerReconciler', () => {
  it('adds the finalizer, publishes the config and reports AgentsNotReady, then Serving once an agent runs that version', async () => {
    const t = setup();
    t.api.seed(`/api/v1/namespaces/${NS}/secrets/creds`, { metadata: { name: 'creds' }, data: { token: Buffer.from('s3cret').toString('base64') } });
    t.worker('hello', { bindings: { vars: { MODE: 'prod' }, secrets: [{ name: 'TOKEN', secretKeyRef: { name: 'creds', key: 'token' } }] } });

    expect(await t.reconcile('hello')).toEqual({});
    expect(t.read('hello').metadata.finalizers).toEqual([FINALIZER]);
    const cfg = t.store.get(`${NS}.hello`);
    expect(cfg).toMatchObject({ namespace: NS, name: 'hello', uid: 'uid-hello', regions: ['eu'], env: { text: { MODE: 'prod' } } });
    // The Secret value is published sealed, and opens with the agents' key.
    expect(JSON.stringify(cfg)).not.toContain('s3cret');
    expect(openEnv(cfg!.env, NS, 'hello', sealer).secrets).toEqual({ TOKEN: 's3cret' });
    expect(t.store.bundles.get(cfg!.bundleDigest)).toBe(SOURCE);
    expect(t.condition('hello', 'Ready')).toMatchObject({ status: 'False', reason: 'AgentsNotReady', message: 'waiting for agents: eu 0/1' });
    expect(t.condition('hello', 'Placed')).toMatchObject({ status: 'True', reason: 'Placed' });
    expect(t.read('hello').status?.bundleDigest).toBe(cfg!.bundleDigest);
    expect(t.events.summary()).toEqual(['Normal Placed']);

    // An agent reporting an older version does not count.
    t.agents.setAgent({ agent: 'a1', node: 'n1', region: 'eu', address: 'http://a1', ttlMs: 5000, startedAt: 'now', draining: false });
    t.agents.setWorkerReport('a1', `${NS}.hello`, { version: 'sha256:old', state: 'ready' });
    await t.reconcile('hello');
    expect(t.condition('hello', 'Ready')).toMatchObject({ status: 'False', reason: 'AgentsNotReady' });

    t.agents.setWorkerReport('a1', `${NS}.hello`, { version: cfg!.version, state: 'ready' });
    await t.reconcile('hello');
    expect(t.condition('hello', 'Ready')).toMatchObject({ status: 'True', reason: 'Serving' });
    expect(t.condition('hello', 'Degraded')).toMatchObject({ status: 'False', reason: 'AsExpected' });
    expect(t.read('hello').status?.regions).toEqual([{ name: 'eu', desiredAgents: 1, readyAgents: 1 }]);
    expect(t.events.summary()).toEqual(['Normal Placed', 'Normal Serving']);
  });

  it('writes nothing when everything is already in place', async () => {
    const t = setup();
    t.worker('hello');
    await t.reconcile('hello');
    const writes = t.api.writes().length;
    const published = t.store.writes.length;
    await t.reconcile('hello');
    await t.reconcile('hello');
    expect(t.api.writes()).toHaveLength(writes);
    expect(t.store.writes).toHaveLength(published);
  });

  it('reports a missing Secret as Ready=False SecretNotFound, publishes nothing, and succeeds (no retry)', async () => {
    const t = setup();
    t.worker('hello', { bindings: { secrets: [{ name: 'TOKEN', secretKeyRef: { name: 'absent', key: 'token' } }] } });
    expect(await t.reconcile('hello')).toEqual({});
    expect(t.store.writes).toEqual([]);
    expect(t.condition('hello', 'Ready')).toMatchObject({
      status: 'False', reason: 'SecretNotFound', message: `spec.bindings.secrets TOKEN: Secret ${NS}/absent not found`,
    });
    expect(t.events.summary()).toContain('Warning SecretNotFound');
  });

  it('reports a bundle that does not compile as BundleInvalid and keeps the published version', async () => {
    const t = setup();
    t.worker('hello');
    await t.reconcile('hello');
    const before = t.store.get(`${NS}.hello`);
    await t.api.request('PATCH', t.path('hello'), { patch: 'merge', body: { spec: { source: { inline: 'export default {' } }, metadata: { generation: 2 } } });
    await t.reconcile('hello');
    expect(t.store.get(`${NS}.hello`)).toEqual(before);
    expect(t.condition('hello', 'Ready')).toMatchObject({ status: 'False', reason: 'BundleInvalid', observedGeneration: 2 });
  });

  it('publishes a module map, and reports a malformed one as BundleInvalid naming the module', async () => {
    const t = setup();
    t.worker('mods', { source: { inline: encodeModuleMap({ mainModule: 'src/index.js', modules: { 'src/index.js': { js: 'import p from "../p.html";\nexport default { fetch() { return new Response(p); } }' }, 'p.html': { text: '<p>hi</p>' } } }) } });
    await t.reconcile('mods');
    expect(t.store.get(`${NS}.mods`)).toBeDefined();
    t.worker('broken', { source: { inline: `${MODULE_MAP_HEADER}{"mainModule":"index.js","modules":{"index.js":{"js":""},"w.wasm":{"wasm":"%%%"}}}` } });
    await t.reconcile('broken');
    expect(t.store.get(`${NS}.broken`)).toBeUndefined();
    expect(t.condition('broken', 'Ready')).toMatchObject({ status: 'False', reason: 'BundleInvalid' });
    expect(t.condition('broken', 'Ready')?.message).toContain('modules.w.wasm');
  });

  it('publishes nodejs_compat to the agents (a new version), and refuses a node: import without it as BundleInvalid naming the flag', async () => {
    const t = setup();
    const NODE_SOURCE = 'import { Buffer } from "node:buffer";\nexport default { fetch() { return new Response(Buffer.from("hi")); } }';
    t.worker('plain', { source: { inline: NODE_SOURCE } });
    await t.reconcile('plain');
    expect(t.store.get(`${NS}.plain`)).toBeUndefined();
    expect(t.condition('plain', 'Ready')).toMatchObject({ status: 'False', reason: 'BundleInvalid' });
    expect(t.condition('plain', 'Ready')?.message).toContain('needs the nodejs_compat compatibility flag');
    t.worker('compat', { source: { inline: NODE_SOURCE }, compatibilityFlags: ['nodejs_compat'] });
    await t.reconcile('compat');
    const cfg = t.store.get(`${NS}.compat`);
    expect(cfg?.compatibilityFlags).toEqual(['nodejs_compat']);
    t.worker('same', { source: { inline: SOURCE } });
    t.worker('flagged', { source: { inline: SOURCE }, compatibilityFlags: ['nodejs_compat'] });
    await t.reconcile('same');
    await t.reconcile('flagged');
    // The flag changes what the isolates run: the version (what agents report ready) changes.
    expect(t.store.get(`${NS}.flagged`)?.version).not.toBe(t.store.get(`${NS}.same`)?.version);
  });

  it('publishes a gzip-compressed bundle from a ConfigMap\'s binaryData (an Agents SDK worker), and refuses a gzip bomb there as BundleInvalid', async () => {
    const t = setup();
    // What `edge deploy` stores for a bundle over MAX_INLINE_SOURCE_BYTES: the Agents SDK bundles to ~1.1 MB.
    const built = await bundleWorker(fileURLToPath(new URL('../../examples/agents/src/server.ts', import.meta.url)), { minify: true, compatibilityFlags: ['nodejs_compat'] });
    if (!('code' in built)) throw new Error(built.errors);
    const member = gzipSync(Buffer.alloc(16 * 1024 * 1024), { level: 9 });
    t.api.seed(`/api/v1/namespaces/${NS}/configmaps/agent-bundle`, {
      metadata: { name: 'agent-bundle' },
      binaryData: {
        'worker.js.gz': gzipSync(built.code).toString('base64'),
        // 1 GiB of zeros in 64 KiB.
        'bomb.js.gz': Buffer.concat(Array.from({ length: 64 }, () => member)).toString('base64'),
      },
    });
    t.worker('agent', { source: { configMapRef: { name: 'agent-bundle', key: 'worker.js.gz' } }, compatibilityFlags: ['nodejs_compat'] });
    await t.reconcile('agent');
    const cfg = t.store.get(`${NS}.agent`);
    expect(t.store.bundles.get(cfg!.bundleDigest)).toBe(built.code);
    expect(t.condition('agent', 'Ready')).toMatchObject({ status: 'False', reason: 'AgentsNotReady' });

    t.worker('bomb', { source: { configMapRef: { name: 'agent-bundle', key: 'bomb.js.gz' } } });
    expect(await t.reconcile('bomb')).toEqual({});
    expect(t.store.get(`${NS}.bomb`)).toBeUndefined();
    expect(t.condition('bomb', 'Ready')).toMatchObject({
      status: 'False', reason: 'BundleInvalid',
      message: `spec.source.configMapRef: ConfigMap ${NS}/agent-bundle key "bomb.js.gz": decompresses to more than ${MAX_SOURCE_BYTES} bytes`,
    });
  }, 30_000);

  it('throws a TerminalError, with the InvalidInference as its cause, for ai bindings that can never be valid', async () => {
    const t = setup();
    const ai = { name: 'AI', model: 'm', gpus: 1, replicasPerRegion: 1 };
    t.model('m', { model: 'm' });
    t.worker('hello', { bindings: { ai: [ai, ai] } });
    const err = await t.reconcile('hello').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as TerminalError).cause).toBeInstanceOf(InvalidInference);
    expect((err as Error).message).toBe('ai bindings: ai binding "AI" appears twice');
    expect(t.store.writes).toEqual([]);
  });

  it('passes the model Services to the config and reports model servers not ready as Degraded', async () => {
    const t = setup();
    t.model('m', { model: 'm' });
    t.worker('hello', { bindings: { ai: [{ name: 'AI', model: 'm', gpus: 1, replicasPerRegion: 1 }] } });
    await t.reconcile('hello');
    expect(t.inference.calls).toEqual([`reconcile ${NS}/hello AI in eu`]);
    expect(Object.keys(t.store.get(`${NS}.hello`)?.env.ai.AI?.services ?? {})).toEqual(['eu']);
    expect(t.condition('hello', 'Degraded')?.message).toContain('model servers not ready: AI in eu');
  });

  it('on deletion removes the model servers and the NATS config, then the finalizer', async () => {
    const t = setup();
    t.worker('hello');
    await t.reconcile('hello');
    expect(t.store.get(`${NS}.hello`)).toBeDefined();
    await t.api.request('PATCH', t.path('hello'), { patch: 'merge', body: { metadata: { deletionTimestamp: '2026-01-01T00:00:00Z' } } });
    await t.reconcile('hello');
    expect(t.store.get(`${NS}.hello`)).toBeUndefined();
    expect(t.read('hello').metadata.finalizers).toBeUndefined();
    // No ai bindings now or published: no model servers to delete.
    expect(t.inference.calls).toEqual([]);
  });

  it('removes a published config whose EdgeWorker is gone', async () => {
    const t = setup();
    t.worker('hello');
    await t.reconcile('hello');
    t.api.delete(t.path('hello'));
    await t.reconcile('hello');
    expect(t.store.writes).toEqual([`publish ${NS}.hello`, `remove ${NS}.hello`]);
  });

  it('lets an apiserver failure through, so the controller retries', async () => {
    const t = setup();
    t.worker('hello');
    t.api.failNext('PATCH', t.path('hello'), new Error('connection reset'));
    await expect(t.reconcile('hello')).rejects.toThrow('connection reset');
    expect(t.store.writes).toEqual([]);
  });
});

describe('EdgeWorkerReconciler and shards (docs/shards.md)', () => {
  it('publishes spec.placement.shard and shows each region\'s shard from the agents\' reports', async () => {
    const t = setup();
    t.worker('hello', { placement: { shard: { min: 1, max: 3 } } });
    await t.reconcile('hello');
    const cfg = t.store.get(`${NS}.hello`)!;
    expect(cfg.shard).toEqual({ min: 1, max: 3 });
    for (const [agent, member] of [['a1', true], ['a2', false]] as const) {
      t.agents.setAgent({ agent, node: agent, region: 'eu', address: `http://${agent}`, ttlMs: 5000, startedAt: 'now', draining: false });
      t.agents.setWorkerReport(agent, `${NS}.hello`, { version: cfg.version, state: 'ready', shardMember: member });
    }
    await t.reconcile('hello');
    expect(t.read('hello').status?.regions).toEqual([{ name: 'eu', desiredAgents: 1, readyAgents: 2, shard: ['a1'] }]);
  });
});
