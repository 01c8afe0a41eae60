import { describe, expect, it } from 'vitest';
import { API_VERSION, DurableActorSchema, type DurableActor, type EdgeWorker } from '../../common/api/index.js';
import { FakeAgentView } from '../../common/fake/agent-view.js';
import { FakeKvStore } from '../../common/fake/kv-store.js';
import { FINALIZER, POOL_ISOLATE, POOL_LABEL, REGION_LABEL } from '../../common/labels.js';
import { createLogger } from '../../common/log.js';
import { DA_PLURAL, DurableActorReconciler } from '../../operator/controllers/durableactor.js';
import type { NodeInfo } from '../../operator/controllers/placement.js';
import type { ReconcileContext } from '../../operator/runtime/controller.js';
import { FakeEventSink } from '../../operator/runtime/fake/events.js';
import { FakeKubeApi } from '../../operator/runtime/fake/kube-api.js';
import { crPath } from '../../operator/runtime/kube-client.js';

// The DurableActor reconciler against fakes: the apiserver, KV `edge-actors`, the agents'
// reports and Events; its worker comes from a map as the EdgeWorker informer's cache would.

const NS = 'shop';
const isolate = (name: string, region: string): NodeInfo => ({ name, labels: { [REGION_LABEL]: region, [POOL_LABEL]: POOL_ISOLATE } });

function setup(nodes: NodeInfo[] = [isolate('n1', 'eu'), isolate('n2', 'us')]) {
  const api = new FakeKubeApi();
  const kv = new FakeKvStore('edge-actors');
  const agents = new FakeAgentView();
  const events = new FakeEventSink();
  const workers = new Map<string, EdgeWorker>();
  const order: string[] = [];
  const ctx: ReconcileContext = { log: createLogger({}, () => undefined, 'error'), signal: new AbortController().signal };
  const reconciler = new DurableActorReconciler({
    client: api, actorConfigs: kv, agents, events,
    getActor: (ns, name) => {
      const raw = api.get(crPath(DA_PLURAL, ns, name));
      return raw ? DurableActorSchema.parse(raw) : undefined;
    },
    getWorker: (_ns, name) => workers.get(name),
    nodes: () => nodes,
    purgeActorData: (ns, name) => { order.push(`purge data ${ns}/${name} (config ${kv.json(`${ns}.${name}`) ? 'present' : 'gone'})`); return Promise.resolve(); },
  });
  const path = (name: string) => crPath(DA_PLURAL, NS, name);
  const actor = (name: string, spec: Record<string, unknown> = {}) => api.seed(path(name), {
    apiVersion: API_VERSION, kind: 'DurableActor',
    metadata: { name, namespace: NS, uid: `uid-${name}`, generation: 1 },
    spec: { workerRef: { name: 'app' }, className: 'Counter', ...spec },
  });
  const worker = (regions: string[], ready: boolean) => workers.set('app', {
    apiVersion: API_VERSION, kind: 'EdgeWorker', metadata: { name: 'app', namespace: NS },
    spec: { source: { inline: 'x' }, placement: { regions, minWarmIsolates: 1 }, limits: { cpuMsPerRequest: 50, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 } },
    status: { conditions: [{ type: 'Ready', status: ready ? 'True' : 'False', reason: 'r', message: '', lastTransitionTime: '2026-01-01T00:00:00Z' }] },
  } as EdgeWorker);
  const read = (name: string) => DurableActorSchema.parse(api.get(path(name))) as DurableActor;
  const condition = (name: string, type: string) => read(name).status?.conditions?.find((c) => c.type === type);
  const reconcile = (name: string) => reconciler.reconcile(ctx, { namespace: NS, name });
  return { api, kv, agents, events, order, actor, worker, read, condition, reconcile, path };
}

describe('DurableActorReconciler', () => {
  it('publishes the class config in its worker\'s first region and turns Ready once the worker is Ready and an agent lives there', async () => {
    const t = setup();
    t.worker(['us', 'eu'], false);
    t.actor('counter');
    expect(await t.reconcile('counter')).toEqual({});
    expect(t.read('counter').metadata.finalizers).toEqual([FINALIZER]);
    expect(t.kv.json(`${NS}.counter`)).toMatchObject({ namespace: NS, name: 'counter', uid: 'uid-counter', className: 'Counter', worker: 'app', region: 'us', storageBackend: 'kv' });
    expect(t.condition('counter', 'Placed')).toMatchObject({ status: 'True', reason: 'Placed' });
    expect(t.condition('counter', 'Ready')).toMatchObject({ status: 'False', reason: 'WorkerNotReady' });

    t.worker(['us', 'eu'], true);
    await t.reconcile('counter');
    expect(t.condition('counter', 'Ready')).toMatchObject({ status: 'False', reason: 'NoAgents', message: 'no live agent in us' });

    t.agents.setAgent({ agent: 'a1', node: 'n2', region: 'us', address: 'http://a1', ttlMs: 5000, startedAt: 'now', draining: false });
    t.agents.setAgent({ agent: 'a2', node: 'n1', region: 'eu', address: 'http://a2', ttlMs: 5000, startedAt: 'now', draining: false });
    t.agents.setActiveActors('a1', `${NS}.counter`, 3);
    t.agents.setActiveActors('a2', `${NS}.counter`, 5);
    await t.reconcile('counter');
    expect(t.condition('counter', 'Ready')).toMatchObject({ status: 'True', reason: 'Serving' });
    // Only the actors of its own region count.
    expect(t.read('counter').status).toMatchObject({ region: 'us', activeActors: 3 });
    expect(t.events.summary()).toEqual(['Normal WorkerNotReady', 'Normal Placed', 'Warning NoAgents', 'Normal Serving']);

    const writes = [t.api.writes().length, t.kv.writes.length];
    await t.reconcile('counter');
    expect([t.api.writes().length, t.kv.writes.length]).toEqual(writes);
  });

  it('passes spec.storage.backend on to the agents', async () => {
    const t = setup();
    t.worker(['us'], true);
    t.actor('ledger', { storage: { backend: 'sqlite' } });
    await t.reconcile('ledger');
    expect(t.kv.json(`${NS}.ledger`)).toMatchObject({ className: 'Counter', storageBackend: 'sqlite' });
  });

  it('refuses a location hint outside the worker\'s regions and publishes nothing', async () => {
    const t = setup();
    t.worker(['eu'], true);
    t.actor('counter', { locationHint: 'us' });
    await t.reconcile('counter');
    expect(t.condition('counter', 'Placed')).toMatchObject({ status: 'False', reason: 'WorkerNotInRegion' });
    expect(t.kv.writes).toEqual([]);
  });

  it('reports a missing worker as WorkerNotFound', async () => {
    const t = setup();
    t.actor('counter');
    await t.reconcile('counter');
    expect(t.condition('counter', 'Placed')).toMatchObject({ status: 'False', reason: 'WorkerNotFound' });
    expect(t.condition('counter', 'Ready')).toMatchObject({ status: 'False', reason: 'WorkerNotFound' });
  });

  it('on deletion removes the config, then the actors\' storage, then the finalizer', async () => {
    const t = setup();
    t.worker(['eu'], true);
    t.actor('counter');
    await t.reconcile('counter');
    await t.api.request('PATCH', t.path('counter'), { patch: 'merge', body: { metadata: { deletionTimestamp: '2026-01-01T00:00:00Z' } } });
    await t.reconcile('counter');
    expect(t.order).toEqual([`purge data ${NS}/counter (config gone)`]);
    expect(t.kv.json(`${NS}.counter`)).toBeUndefined();
    expect(t.read('counter').metadata.finalizers).toBeUndefined();
  });

  it('rejects (to be retried) and keeps the finalizer when its removal fails', async () => {
    const t = setup();
    t.worker(['eu'], true);
    t.actor('counter');
    await t.reconcile('counter');
    await t.api.request('PATCH', t.path('counter'), { patch: 'merge', body: { metadata: { deletionTimestamp: '2026-01-01T00:00:00Z' } } });
    t.api.failNext('PATCH', t.path('counter'), new Error('apiserver down'));
    await expect(t.reconcile('counter')).rejects.toThrow('apiserver down');
    expect(t.read('counter').metadata.finalizers).toEqual([FINALIZER]);
  });

  it('purges the config of a DurableActor that is gone', async () => {
    const t = setup();
    t.worker(['eu'], true);
    t.actor('counter');
    await t.reconcile('counter');
    t.api.delete(t.path('counter'));
    await t.reconcile('counter');
    expect(t.kv.writes).toEqual([{ op: 'PUT', key: `${NS}.counter` }, { op: 'PURGE', key: `${NS}.counter` }]);
  });
});
