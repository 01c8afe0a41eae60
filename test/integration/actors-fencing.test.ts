import { readFileSync } from 'node:fs';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Condition } from '../../common/api/index.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER, type LocalAgent } from '../../cli/local/cluster.js';
import { get } from '../harness/http.js';
import { waitFor } from '../../cli/local/ports.js';

// Issue 13, items 1 and 2: a superseded activation serves nothing. Three real agents, the
// real operator and nats-server; the owner of an actor is paused with SIGSTOP long enough
// for the region to drop it (presence TTL 1 s) and for another agent to claim the actor,
// then resumed with SIGCONT. Its in-memory activation is stale from then on: no read may
// come from it, and an alarm that the new owner already ran must not run again on it.

const NS = 'fence';
const REGION = 'eu-west';

// A list-append actor: /append adds a value, /read returns the list. alarm() logs one
// console line per run (captured in the agent's log), so runs whose writes were fenced
// are counted too.
const WORKER = `
export class List {
  constructor(state) { this.state = state; }
  async fetch(request) {
    const url = new URL(request.url);
    const s = this.state.storage;
    switch (url.pathname) {
      case '/append': {
        const list = (await s.get('list')) ?? [];
        list.push(url.searchParams.get('v'));
        await s.put('list', list);
        return Response.json(list);
      }
      case '/read':
        return Response.json((await s.get('list')) ?? []);
      case '/arm':
        await s.put('token', url.searchParams.get('token'));
        await s.setAlarm(Date.now() + Number(url.searchParams.get('ms')));
        return new Response('armed');
      case '/alarms':
        return Response.json({ fired: (await s.get('fired')) ?? 0, alarm: await s.getAlarm() });
      default:
        return new Response('no such route', { status: 404 });
    }
  }
  async alarm() {
    console.log('alarm-ran ' + (await this.state.storage.get('token')));
    await this.state.storage.put('fired', ((await this.state.storage.get('fired')) ?? 0) + 1);
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const id = env.LISTS.idFromName(url.searchParams.get('actor'));
    if (url.pathname === '/id') return new Response(id.toString());
    return env.LISTS.get(id).fetch(request);
  },
};`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a superseded activation serves nothing', () => {
  let cluster: LocalCluster;

  const call = (a: LocalAgent, path: string) => get(a, 'lists.test', path);
  const idOf = async (actor: string) => (await call(cluster.agents[0]!, `/id?actor=${actor}`)).text;
  /** The agents whose /status lists the actor as active. */
  async function hosting(id: string, agents: LocalAgent[]): Promise<string[]> {
    const out: string[] = [];
    for (const a of agents) if ((await cluster.agentStatus(a)).actors.includes(`${NS}/lists/${id}`)) out.push(a.node);
    return out;
  }
  async function ownerOf(actor: string): Promise<LocalAgent> {
    const id = await idOf(actor);
    let owner: LocalAgent | undefined;
    await waitFor(`an agent hosting ${actor}`, async () => {
      const [node] = await hosting(id, cluster.agents);
      owner = cluster.agents.find((a) => a.node === node);
      return owner !== undefined;
    }, 10_000, 100);
    return owner!;
  }
  /** A write through `a`, retried while the region settles (a 5xx there certainly did not append). */
  async function append(a: LocalAgent, actor: string, v: string): Promise<string[]> {
    let list: string[] | undefined;
    await waitFor(`append ${v} through ${a.node}`, async () => {
      const r = await call(a, `/append?actor=${actor}&v=${v}`);
      if (r.status === 200) list = JSON.parse(r.text) as string[];
      return list !== undefined;
    }, 20_000, 100);
    return list!;
  }
  /** Pauses the owner until the others have dropped it from their rings (TTL 1 s). */
  async function pause(owner: LocalAgent): Promise<void> {
    owner.proc.signal('SIGSTOP');
    await sleep(2500);
  }
  const logOf = (a: LocalAgent) => readFileSync(a.proc.logFile, 'utf8');

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: [REGION], agentsPerRegion: 3 });
    const kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    await cluster.startOperator('operator');
    const post = (plural: string, kind: string, name: string, spec: Record<string, unknown>) => kube.request('POST', crPath(plural, NS), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind, metadata: { name, namespace: NS }, spec }, query: { fieldValidation: 'Strict' },
    });
    await post('durableactors', 'DurableActor', 'lists', { workerRef: { name: 'list' }, className: 'List', locationHint: REGION, idleTimeoutSeconds: 300 });
    await post('edgeworkers', 'EdgeWorker', 'list', {
      source: { inline: WORKER }, routes: [{ host: 'lists.test' }], limits: { cpuMsPerRequest: 500 },
      bindings: { actors: [{ name: 'LISTS', actor: 'lists' }] },
    });
    const ready = async (plural: string, name: string) => {
      const o = await kube.request<{ metadata: { generation: number }; status?: { observedGeneration?: number; conditions?: Condition[] } }>('GET', crPath(plural, NS, name));
      return o.status?.observedGeneration === o.metadata.generation && o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    };
    await waitFor('worker and actor class Ready', async () => (await ready('edgeworkers', 'list')) && (await ready('durableactors', 'lists')), 60_000, 200);
  }, 300_000);

  afterAll(async () => { await cluster?.stop(); });

  it('a resumed owner serves no stale read: after SIGSTOP, a takeover and SIGCONT every read through every agent sees the takeover\'s write', async () => {
    const agents = cluster.agents;
    const id = await idOf('l1');
    await append(agents[0]!, 'l1', 'a1');
    const owner = await ownerOf('l1');
    const other = agents.find((a) => a !== owner)!;
    await pause(owner);
    // A new owner claims the actor and acknowledges a2.
    expect(await append(other, 'l1', 'a2')).toEqual(['a1', 'a2']);
    expect((await hosting(id, agents.filter((a) => a !== owner))).length).toBe(1);
    owner.proc.signal('SIGCONT');

    // Reads through every agent, the woken owner first, for three seconds after the wake.
    const reads: { agent: string; status: number; list?: string[] }[] = [];
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      for (const a of [owner, ...agents.filter((x) => x !== owner)]) {
        const r = await call(a, '/read?actor=l1');
        reads.push({ agent: a.node, status: r.status, ...(r.status === 200 ? { list: JSON.parse(r.text) as string[] } : {}) });
      }
    }
    const stale = reads.filter((r) => r.status === 200 && !r.list!.includes('a2'));
    expect(stale, 'reads that missed the acknowledged a2').toEqual([]);
    for (const a of agents) expect(reads.some((r) => r.agent === a.node && r.status === 200), `a read through ${a.node} succeeded`).toBe(true);

    // The woken owner noticed it was superseded, and from then on the actor is active on one agent only.
    await waitFor('the woken owner notices it was superseded', async () => /actor superseded/.test(logOf(owner)), 10_000, 100);
    await waitFor('the actor active on exactly one agent', async () => (await hosting(id, agents)).length === 1, 10_000, 100);
    for (let i = 0; i < 10; i++) {
      expect((await hosting(id, agents)).length).toBeLessThanOrEqual(1);
      await sleep(100);
    }
    expect(await append(owner, 'l1', 'a3')).toEqual(['a1', 'a2', 'a3']);
  });

  it('an alarm due while its owner is paused runs once: on the new owner, not again on the woken one', async () => {
    const agents = cluster.agents;
    const token = `t${Date.now()}`;
    expect((await call(agents[0]!, `/arm?actor=al1&token=${token}&ms=1500`)).text).toBe('armed');
    const owner = await ownerOf('al1');
    // The alarm index write follows the commit: let it land before the pause.
    await sleep(300);
    await pause(owner);
    // Due at 1.5 s; the others dropped the owner at about 1 s and one of them runs it.
    await waitFor('the alarm ran on another agent', async () => agents.some((a) => a !== owner && logOf(a).includes(`alarm-ran ${token}`)), 15_000, 100);
    owner.proc.signal('SIGCONT');
    // The woken owner's timer for the alarm is overdue and fires at once: give it time to.
    await sleep(3000);
    const runs = agents.map((a) => logOf(a).split(`alarm-ran ${token}`).length - 1);
    expect(runs.reduce((s, n) => s + n, 0), `alarm handler runs per agent: ${runs.join(', ')}`).toBe(1);
    const r = await call(agents[0]!, '/alarms?actor=al1');
    expect(JSON.parse(r.text)).toEqual({ fired: 1, alarm: null });
  });
});
