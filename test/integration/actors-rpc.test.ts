import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Condition } from '../../common/api/index.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER, type LocalAgent } from '../../cli/local/cluster.js';
import { get } from '../harness/http.js';
import { waitFor } from '../../cli/local/ports.js';

// JS RPC across agents: real operator, NATS and two `edge agent` processes; the actor lives
// on one agent and is called by RPC through both (local, and forwarded over the peer
// channel). Results, pipelined RpcTargets, errors and writes are the same either way, and
// an agent forwarding RPC adds nothing a client could forge.

const NS = 'rpc';
const REGION = 'eu-west';

const WORKER = `
import { DurableObject, RpcTarget } from 'cloudflare:workers';
class Tally extends RpcTarget {
  constructor(obj) { super(); this.obj = obj; }
  async add(n) { const v = ((await this.obj.ctx.storage.get('n')) ?? 0) + n; await this.obj.ctx.storage.put('n', v); return v; }
}
export class Counter extends DurableObject {
  async increment(by) {
    const v = ((await this.ctx.storage.get('n')) ?? 0) + by;
    await this.ctx.storage.put('n', v);
    return { value: v, at: new Date(0), tags: new Set(['x']) };
  }
  tally() { return new Tally(this); }
  async read() { return (await this.ctx.storage.get('n')) ?? 0; }
  fail() { throw new RangeError('no such thing'); }
  whoami() { return this.ctx.id.toString(); }
  async append(token) {
    const log = (await this.ctx.storage.get('log')) ?? [];
    log.push(token);
    await this.ctx.storage.put('log', log);
    return log.length;
  }
  async applyTo(fn) { return fn(21); }
  async log() { return (await this.ctx.storage.get('log')) ?? []; }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const stub = env.C.getByName(url.searchParams.get('actor'));
    const show = (e) => ({ name: e.name, message: e.message });
    switch (url.pathname) {
      case '/id': return new Response(env.C.idFromName(url.searchParams.get('actor')).toString());
      case '/inc': {
        const r = await stub.increment(Number(url.searchParams.get('by')));
        return Response.json({ value: r.value, date: r.at instanceof Date, set: r.tags.has('x') });
      }
      case '/tally': return Response.json(await stub.tally().add(Number(url.searchParams.get('by'))));
      case '/read': return Response.json(await stub.read());
      case '/append': return Response.json(await stub.append(url.searchParams.get('t')));
      case '/log': return Response.json(await stub.log());
      case '/callback': try { return Response.json(await stub.applyTo((x) => x * 2)); } catch (e) { return Response.json(show(e)); }
      case '/errors': {
        const out = {};
        try { await stub.fail(); } catch (e) { out.fail = show(e); }
        try { await stub.missing(); } catch (e) { out.missing = show(e); }
        return Response.json(out);
      }
      default: return new Response('no route', { status: 404 });
    }
  },
};`;

describe('JS RPC across agents', () => {
  let cluster: LocalCluster;
  let owner: LocalAgent;
  let other: LocalAgent;
  const call = (a: LocalAgent, path: string) => get(a, 'rpc.test', path);

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: [REGION], agentsPerRegion: 2, isolateHosts: 0 });
    const kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    await cluster.startOperator('operator');
    const post = (plural: string, kind: string, name: string, spec: Record<string, unknown>) => kube.request('POST', crPath(plural, NS), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind, metadata: { name, namespace: NS }, spec }, query: { fieldValidation: 'Strict' },
    });
    await post('durableactors', 'DurableActor', 'counters', { workerRef: { name: 'rpc' }, className: 'Counter', locationHint: REGION, idleTimeoutSeconds: 300 });
    await post('edgeworkers', 'EdgeWorker', 'rpc', { source: { inline: WORKER }, routes: [{ host: 'rpc.test' }], bindings: { actors: [{ name: 'C', actor: 'counters' }] } });
    const ready = async (plural: string, name: string) => {
      const o = await kube.request<{ metadata: { generation: number }; status?: { observedGeneration?: number; conditions?: Condition[] } }>('GET', crPath(plural, NS, name));
      return o.status?.observedGeneration === o.metadata.generation && o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    };
    await waitFor('worker and actor class Ready', async () => (await ready('edgeworkers', 'rpc')) && (await ready('durableactors', 'counters')), 60_000, 200);
    for (const a of cluster.agents) await waitFor(`rpc served on ${a.node}`, async () => (await call(a, '/id?actor=x')).status === 200, 30_000, 100);
    const id = (await call(cluster.agents[0]!, '/id?actor=a1')).text;
    await waitFor('the actor active somewhere', async () => (await call(cluster.agents[0]!, '/read?actor=a1')).status === 200, 20_000, 100);
    let found: LocalAgent | undefined;
    await waitFor('the owner of a1', async () => {
      for (const a of cluster.agents) if ((await cluster.agentStatus(a)).actors.includes(`${NS}/counters/${id}`)) found = a;
      return found !== undefined;
    }, 10_000, 100);
    owner = found!;
    other = cluster.agents.find((a) => a !== owner)!;
  }, 300_000);

  afterAll(async () => { await cluster?.stop(); });

  it('calls methods with structured-cloned results, local and forwarded, one counter between them', async () => {
    expect(JSON.parse((await call(owner, '/inc?actor=a1&by=1')).text)).toEqual({ value: 1, date: true, set: true });
    expect(JSON.parse((await call(other, '/inc?actor=a1&by=10')).text)).toEqual({ value: 11, date: true, set: true });
    // Pipelined through an RpcTarget the actor returns, from the agent that does not own it.
    expect(JSON.parse((await call(other, '/tally?actor=a1&by=100')).text)).toBe(111);
    for (const via of [owner, other]) expect(JSON.parse((await call(via, '/read?actor=a1')).text)).toBe(111);
  });

  it('calls back into the caller on the owner\'s agent, and says so where it cannot (another agent)', async () => {
    expect(JSON.parse((await call(owner, '/callback?actor=a1')).text)).toBe(42);
    expect(JSON.parse((await call(other, '/callback?actor=a1')).text)).toEqual({
      name: 'Error', message: 'RPC stub used after the call it was passed to ended (or its caller is on another agent, where calling back is not supported)',
    });
  });

  it('rethrows errors with name and message across agents, and workerd\'s wording for a missing method', async () => {
    for (const via of [owner, other]) {
      const r = await call(via, '/errors?actor=a1');
      expect(r.status, r.text).toBe(200);
      expect(JSON.parse(r.text)).toEqual({
        fail: { name: 'RangeError', message: 'no such thing' },
        missing: { name: 'TypeError', message: 'The RPC receiver does not implement the method "missing".' },
      });
    }
  });

  it('loses and repeats no acknowledged RPC write when the owner is killed with SIGKILL mid-traffic', async () => {
    const actor = 'f1';
    const id = (await call(owner, `/id?actor=${actor}`)).text;
    await call(owner, `/append?actor=${actor}&t=warmup`);
    const holder = async () => {
      for (const a of cluster.agents) if ((await cluster.agentStatus(a).catch(() => ({ actors: [] as string[] }))).actors.includes(`${NS}/counters/${id}`)) return a;
      return undefined;
    };
    let found: LocalAgent | undefined;
    await waitFor(`the owner of ${actor}`, async () => (found = await holder()) !== undefined, 10_000, 100);
    const victim = found!;
    const via = cluster.agents.find((a) => a !== victim)!;
    const outcomes: { token: string; ok: boolean }[] = [];
    let stop = false;
    let n = 0;
    const worker = async () => {
      while (!stop) {
        const token = `t${n++}`;
        const r = await call(via, `/append?actor=${actor}&t=${token}`).catch(() => ({ status: 0, text: '' }));
        outcomes.push({ token, ok: r.status === 200 });
      }
    };
    const workers = [worker(), worker(), worker()];
    await waitFor('RPC writes before the kill', async () => outcomes.filter((o) => o.ok).length >= 30, 30_000, 20);
    victim.proc.killNow();
    await victim.proc.wait();
    const before = outcomes.length;
    await waitFor('RPC writes after the kill', async () => outcomes.slice(before).filter((o) => o.ok).length >= 30, 60_000, 50);
    stop = true;
    await Promise.all(workers);
    const log = JSON.parse((await call(via, `/log?actor=${actor}`)).text) as string[];
    console.log(`[rpc-kill] ${JSON.stringify({ sent: outcomes.length, acknowledged: outcomes.filter((o) => o.ok).length, failed: outcomes.filter((o) => !o.ok).length, inLog: log.length - 1 })}`);
    const counts = new Map<string, number>();
    for (const t of log) counts.set(t, (counts.get(t) ?? 0) + 1);
    // Exactly once for every acknowledged write; at most once for one whose outcome the caller never learned.
    expect([...counts].filter(([, c]) => c > 1)).toEqual([]);
    expect(outcomes.filter((o) => o.ok && !counts.has(o.token))).toEqual([]);
    const sent = new Set(['warmup', ...outcomes.map((o) => o.token)]);
    expect(log.filter((t) => !sent.has(t))).toEqual([]);
    await cluster.startAgent(REGION, victim.node);
  }, 180_000);
});
