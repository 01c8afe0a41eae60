import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Condition } from '../../common/api/index.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER, type LocalAgent } from '../../cli/local/cluster.js';
import { get } from '../harness/http.js';
import { waitFor } from '../../cli/local/ports.js';

// Durable Objects' write and exception semantics, with real agents and NATS, the actor on
// one agent and called through it (local) and through another (forwarded):
// - writes an actor made before it threw persist (the output gate confirms writes; it does
//   not roll them back), while storage.transaction() still rolls its own back;
// - the actor's exception rejects the caller's stub.fetch() with the same name and message
//   wherever the actor lives (`remote` set, as on Workers), and a worker that does not catch
//   it answers the usual 500 with a ray id: no stack, no message reaches the client.

const NS = 'sem';
const REGION = 'eu-west';

const WORKER = `
export class Thrower {
  constructor(state) { this.state = state; }
  async fetch(request) {
    const url = new URL(request.url);
    const s = this.state.storage;
    const v = url.searchParams.get('v');
    switch (url.pathname) {
      case '/put2throw':
        await s.put('a', v);
        await s.put('b', v);
        throw new TypeError('boom ' + v);
      case '/txnthrow':
        try {
          await s.transaction(async (txn) => { await txn.put('t', v); throw new Error('abort'); });
        } catch {}
        return new Response('rolled back');
      case '/custom': {
        class Nope extends Error { constructor(m) { super(m); this.name = 'Nope'; } }
        await s.put('c', v);
        throw new Nope('custom ' + v);
      }
      case '/read':
        return Response.json({ a: (await s.get('a')) ?? null, b: (await s.get('b')) ?? null, c: (await s.get('c')) ?? null, t: (await s.get('t')) ?? null });
      default:
        return new Response('no such route', { status: 404 });
    }
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const id = env.T.idFromName(url.searchParams.get('actor'));
    if (url.pathname === '/id') return new Response(id.toString());
    const stub = env.T.get(id);
    if (!url.searchParams.has('catch')) return stub.fetch(request);
    try {
      const r = await stub.fetch(request);
      return new Response('no exception: ' + r.status);
    } catch (e) {
      return Response.json({ name: e.name, message: e.message, remote: e.remote === true, isTypeError: e instanceof TypeError });
    }
  },
};`;

describe('DurableActor write and exception semantics, local and forwarded', () => {
  let cluster: LocalCluster;
  let owner: LocalAgent;
  let other: LocalAgent;
  const call = (a: LocalAgent, path: string) => get(a, 'sem.test', path);
  const read = async (a: LocalAgent, actor: string) => JSON.parse((await call(a, `/read?actor=${actor}`)).text) as Record<string, string | null>;

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: [REGION], agentsPerRegion: 2, isolateHosts: 0 });
    const kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    await cluster.startOperator('operator');
    const post = (plural: string, kind: string, name: string, spec: Record<string, unknown>) => kube.request('POST', crPath(plural, NS), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind, metadata: { name, namespace: NS }, spec }, query: { fieldValidation: 'Strict' },
    });
    await post('durableactors', 'DurableActor', 'throwers', { workerRef: { name: 'sem' }, className: 'Thrower', locationHint: REGION, idleTimeoutSeconds: 300 });
    await post('edgeworkers', 'EdgeWorker', 'sem', { source: { inline: WORKER }, routes: [{ host: 'sem.test' }], bindings: { actors: [{ name: 'T', actor: 'throwers' }] } });
    const ready = async (plural: string, name: string) => {
      const o = await kube.request<{ metadata: { generation: number }; status?: { observedGeneration?: number; conditions?: Condition[] } }>('GET', crPath(plural, NS, name));
      return o.status?.observedGeneration === o.metadata.generation && o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    };
    await waitFor('worker and actor class Ready', async () => (await ready('edgeworkers', 'sem')) && (await ready('durableactors', 'throwers')), 60_000, 200);
    for (const a of cluster.agents) await waitFor(`sem served on ${a.node}`, async () => (await call(a, '/id?actor=x')).status === 200, 30_000, 100);
    // Activate the actor and find its owner: calls through it are local, through the other forwarded.
    const id = (await call(cluster.agents[0]!, '/id?actor=x1')).text;
    await waitFor('the actor active somewhere', async () => (await call(cluster.agents[0]!, '/read?actor=x1')).status === 200, 20_000, 100);
    let found: LocalAgent | undefined;
    await waitFor('the owner of x1', async () => {
      for (const a of cluster.agents) if ((await cluster.agentStatus(a)).actors.includes(`${NS}/throwers/${id}`)) found = a;
      return found !== undefined;
    }, 10_000, 100);
    owner = found!;
    other = cluster.agents.find((a) => a !== owner)!;
  }, 300_000);

  afterAll(async () => { await cluster?.stop(); });

  it('keeps the writes an actor made before it threw, read through either agent', async () => {
    for (const [via, v] of [[owner, 'local'], [other, 'forwarded']] as const) {
      const r = await call(via, `/put2throw?actor=x1&v=${v}&catch=1`);
      expect(r.status).toBe(200);
      expect(JSON.parse(r.text)).toEqual({ name: 'TypeError', message: `boom ${v}`, remote: true, isTypeError: true });
      for (const reader of [owner, other]) expect(await read(reader, 'x1')).toMatchObject({ a: v, b: v });
    }
  });

  it('still rolls back what storage.transaction() wrote when its closure threw', async () => {
    expect((await call(other, '/txnthrow?actor=x1&v=t1')).text).toBe('rolled back');
    expect((await read(owner, 'x1')).t).toBeNull();
  });

  it('rejects stub.fetch() with the same name and message, local or forwarded, for any error class', async () => {
    const seen = await Promise.all([owner, other].map(async (via) => JSON.parse((await call(via, '/custom?actor=x1&v=z&catch=1')).text) as unknown));
    // A class of the actor's own arrives as an Error with its message, as on Workers.
    expect(seen[0]).toEqual({ name: 'Error', message: 'custom z', remote: true, isTypeError: false });
    expect(seen[1]).toEqual(seen[0]);
    expect((await read(other, 'x1')).c).toBe('z');
  });

  it('answers an uncaught actor exception with the usual 500 and a ray id, no stack, either way', async () => {
    for (const via of [owner, other]) {
      const r = await call(via, '/put2throw?actor=x1&v=leak');
      expect(r.status).toBe(500);
      expect(r.text).toMatch(/^worker \S+ threw an exception \(ray [0-9a-f]+\)\n$/);
      expect(r.text).not.toContain('boom');
      expect(r.text).not.toMatch(/\s+at\s/);
    }
    // The stack is in the owner's log.
    await waitFor('the owner logs the exception', async () => {
      const { readFileSync } = await import('node:fs');
      return /actor threw an exception/.test(readFileSync(owner.proc.logFile, 'utf8'));
    }, 10_000, 100);
  });
});
