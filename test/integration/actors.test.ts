import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Condition } from '../../common/api/index.js';
import { crPath, KubeClient } from '../../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER, type LocalAgent } from '../../cli/local/cluster.js';
import { get } from '../harness/http.js';
import { waitFor } from '../../cli/local/ports.js';

// DurableActors on three agents of one region, with the real operator, NATS and
// processes: the invariants of DESIGN.md section 6 under load, SIGKILL, SIGTERM and
// SIGSTOP. Every increment carries a token the actor records with the count it produced,
// so "lost" and "applied twice" are both visible in the actor's own storage.

const NS = 'act';
const REGION = 'eu-west';

const WORKER = `
export class Counter {
  constructor(state) { this.state = state; }
  async fetch(request) {
    const url = new URL(request.url);
    const s = this.state.storage;
    switch (url.pathname) {
      case '/inc': {
        const n = ((await s.get('count')) ?? 0) + 1;
        await s.put({ count: n, ['op:' + url.searchParams.get('t') + ':' + n]: 1 });
        return new Response(String(n));
      }
      case '/slowinc': {
        // The write is made, then the request waits before it ends (and commits).
        const n = ((await s.get('count')) ?? 0) + 1;
        await s.put({ count: n, ['op:' + url.searchParams.get('t') + ':' + n]: 1 });
        await new Promise((r) => setTimeout(r, Number(url.searchParams.get('ms'))));
        return new Response(String(n));
      }
      case '/dump': {
        const ops = await s.list({ prefix: 'op:' });
        return Response.json({ count: (await s.get('count')) ?? 0, ops: [...ops.keys()] });
      }
      case '/arm':
        await s.setAlarm(Date.now() + Number(url.searchParams.get('ms')));
        return new Response('armed');
      case '/alarms':
        return Response.json({ fired: (await s.get('fired')) ?? 0, alarm: await s.getAlarm() });
      default:
        return new Response('no such route', { status: 404 });
    }
  }
  async alarm() {
    await this.state.storage.put('fired', ((await this.state.storage.get('fired')) ?? 0) + 1);
  }
}
export class ChatRoom {
  constructor(state) { this.state = state; this.sessions = new Set(); }
  async fetch(request) {
    if (request.headers.get('Upgrade') !== 'websocket') return new Response('expected a WebSocket', { status: 426 });
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    this.sessions.add(server);
    server.addEventListener('message', async (e) => {
      const n = ((await this.state.storage.get('messages')) ?? 0) + 1;
      await this.state.storage.put('messages', n);
      for (const s of this.sessions) { try { s.send(n + ' ' + e.data); } catch {} }
    });
    server.addEventListener('close', () => this.sessions.delete(server));
    server.send('welcome');
    return new Response(null, { status: 101, webSocket: client });
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === '/chat') return env.ROOMS.get(env.ROOMS.idFromName(url.searchParams.get('room'))).fetch(request);
    const id = env.COUNTERS.idFromName(url.searchParams.get('actor') ?? 'c1');
    if (url.pathname === '/id') return new Response(id.toString());
    return env.COUNTERS.get(id).fetch(request);
  },
};`;

interface Outcome { token: string; ok: boolean; agent: string; error?: string }

describe('DurableActors across three agents', () => {
  let cluster: LocalCluster;
  let kube: KubeClient;
  let seq = 0;

  const live = () => cluster.agents.filter((a) => a.proc.running);
  const call = (a: LocalAgent, path: string) => get(a, 'counter.test', path);
  const idOf = async (actor: string) => (await call(live()[0]!, `/id?actor=${actor}`)).text;
  async function ownerOf(actor: string): Promise<LocalAgent> {
    const id = await idOf(actor);
    let owner: LocalAgent | undefined;
    await waitFor(`an agent hosting ${actor}`, async () => {
      for (const a of live()) {
        const st = await cluster.agentStatus(a);
        if (st.actors.includes(`${NS}/counters/${id}`)) { owner = a; return true; }
      }
      return false;
    }, 10_000, 100);
    return owner!;
  }
  async function dump(actor: string): Promise<{ count: number; ops: string[] }> {
    let out: { count: number; ops: string[] } | undefined;
    await waitFor(`dump of ${actor}`, async () => {
      const r = await call(live()[0]!, `/dump?actor=${actor}`);
      if (r.status !== 200) return false;
      out = JSON.parse(r.text) as { count: number; ops: string[] };
      return true;
    }, 20_000, 100);
    return out!;
  }
  /** Runs `clients` sequential clients per target agent until `stop()` says so. */
  function hammer(actor: string, targets: () => LocalAgent[], clients: number) {
    const outcomes: Outcome[] = [];
    let running = true;
    const loops = targets().flatMap((a) => Array.from({ length: clients }, async () => {
      while (running && a.proc.running) {
        const token = `${a.node}-${seq++}`;
        try {
          const r = await call(a, `/inc?actor=${actor}&t=${token}`);
          outcomes.push({ token, ok: r.status === 200, agent: a.node, ...(r.status === 200 ? {} : { error: `${r.status} ${r.text.slice(0, 200)}` }) });
        } catch (err) {
          outcomes.push({ token, ok: false, agent: a.node, error: String(err) });
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }));
    return { outcomes, stop: async () => { running = false; await Promise.all(loops); } };
  }
  /** The invariants: every acknowledged increment is there exactly once; nothing applied twice. */
  async function checkExact(actor: string, outcomes: Outcome[]): Promise<void> {
    const { count, ops } = await dump(actor);
    const byToken = new Map<string, number>();
    for (const op of ops) {
      const token = op.split(':')[1]!;
      byToken.set(token, (byToken.get(token) ?? 0) + 1);
    }
    const twice = [...byToken].filter(([, n]) => n > 1);
    expect(twice, 'increments applied twice').toEqual([]);
    const acked = outcomes.filter((o) => o.ok);
    const lost = acked.filter((o) => !byToken.has(o.token));
    expect(lost, 'acknowledged increments lost').toEqual([]);
    // Every applied increment was either acknowledged or failed (unknown outcome): none from nowhere.
    expect(ops.length).toBe(count);
    expect(count).toBeGreaterThanOrEqual(acked.length);
    expect(count).toBeLessThanOrEqual(outcomes.length);
  }

  beforeAll(async () => {
    cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: [REGION], agentsPerRegion: 3 });
    kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    await cluster.startOperator('operator');
    const post = (plural: string, kind: string, name: string, spec: Record<string, unknown>) => kube.request('POST', crPath(plural, NS), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind, metadata: { name, namespace: NS }, spec }, query: { fieldValidation: 'Strict' },
    });
    await post('durableactors', 'DurableActor', 'counters', { workerRef: { name: 'counter' }, className: 'Counter', locationHint: REGION, idleTimeoutSeconds: 300 });
    await post('durableactors', 'DurableActor', 'rooms', { workerRef: { name: 'counter' }, className: 'ChatRoom', locationHint: REGION, idleTimeoutSeconds: 2 });
    await post('edgeworkers', 'EdgeWorker', 'counter', {
      source: { inline: WORKER }, routes: [{ host: 'counter.test' }], limits: { cpuMsPerRequest: 500 },
      bindings: { actors: [{ name: 'COUNTERS', actor: 'counters' }, { name: 'ROOMS', actor: 'rooms' }] },
    });
    const ready = async (plural: string, name: string) => {
      const o = await kube.request<{ metadata: { generation: number }; status?: { observedGeneration?: number; conditions?: Condition[] } }>('GET', crPath(plural, NS, name));
      return o.status?.observedGeneration === o.metadata.generation && o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
    };
    await waitFor('worker and actor classes Ready', async () => (await ready('edgeworkers', 'counter')) && (await ready('durableactors', 'counters')) && (await ready('durableactors', 'rooms')), 60_000, 200);
  }, 300_000);

  afterAll(async () => { await cluster?.stop(); });

  it('counts exactly under concurrent clients on all three agents', async () => {
    const h = hammer('c1', live, 4);
    await waitFor('300 increments', async () => h.outcomes.length >= 300, 60_000, 50);
    await h.stop();
    expect(h.outcomes.filter((o) => !o.ok)).toEqual([]);
    await checkExact('c1', h.outcomes);
    expect((await dump('c1')).count).toBe(h.outcomes.length);
  });

  it('loses no acknowledged increment when the owner is killed with SIGKILL mid-traffic', async () => {
    await call(live()[0]!, '/inc?actor=k1&t=warmup');
    const owner = await ownerOf('k1');
    const h = hammer('k1', () => live().filter((a) => a !== owner), 3);
    await waitFor('traffic before the kill', async () => h.outcomes.filter((o) => o.ok).length >= 50, 30_000, 20);
    owner.proc.killNow();
    await owner.proc.wait();
    const before = h.outcomes.length;
    await waitFor('traffic after the kill', async () => h.outcomes.slice(before).filter((o) => o.ok).length >= 100, 60_000, 50);
    await h.stop();
    await checkExact('k1', [{ token: 'warmup', ok: true, agent: '' }, ...h.outcomes]);
    await cluster.startAgent(REGION, owner.node);
  });

  it('loses nothing when the owner drains on SIGTERM: in-flight calls finish, actors move', async () => {
    await call(live()[0]!, '/inc?actor=d1&t=warmup');
    const owner = await ownerOf('d1');
    const h = hammer('d1', () => live().filter((a) => a !== owner), 3);
    await waitFor('traffic before the drain', async () => h.outcomes.filter((o) => o.ok).length >= 50, 30_000, 20);
    const before = h.outcomes.length;
    await owner.proc.stop(10_000);
    await waitFor('traffic after the drain', async () => h.outcomes.slice(before).filter((o) => o.ok).length >= 100, 60_000, 50);
    await h.stop();
    // A drain hands over cleanly: callers on the other agents see no failure at all.
    expect(h.outcomes.filter((o) => !o.ok)).toEqual([]);
    await checkExact('d1', [{ token: 'warmup', ok: true, agent: '' }, ...h.outcomes]);
    await cluster.startAgent(REGION, owner.node);
  });

  it('fences a paused owner: after SIGSTOP and takeover, its write is refused and the count stays exact', async () => {
    await call(live()[0]!, '/inc?actor=s1&t=warmup');
    const owner = await ownerOf('s1');
    const others = live().filter((a) => a !== owner);
    // A request that is inside the actor on its owner, with its write made but not yet
    // committed, when the owner is paused.
    const stale = call(others[0]!, '/slowinc?actor=s1&t=stale&ms=1500')
      .then((r) => ({ token: 'stale', ok: r.status === 200, agent: others[0]!.node }), () => ({ token: 'stale', ok: false, agent: others[0]!.node }));
    await new Promise((r) => setTimeout(r, 300));
    owner.proc.signal('SIGSTOP');
    await new Promise((r) => setTimeout(r, 2500)); // presence TTL 1 s: the others drop it from their rings
    const outcomes: Outcome[] = [{ token: 'warmup', ok: true, agent: '' }];
    for (let i = 0; i < 20; i++) {
      const a = others[i % others.length]!;
      const r = await call(a, `/inc?actor=s1&t=after-${i}`);
      outcomes.push({ token: `after-${i}`, ok: r.status === 200, agent: a.node });
    }
    expect(outcomes.filter((o) => !o.ok)).toEqual([]);
    owner.proc.signal('SIGCONT');
    outcomes.push(await stale);
    // The woken owner's commit carried its old claim: the log refused it.
    await waitFor('the woken owner logs the fenced write', async () => /actor write fenced/.test(readFileSync(owner.proc.logFile, 'utf8')), 20_000, 100);
    await checkExact('s1', outcomes);
  });

  it('fires alarms once per set, and at least once when the owner dies before they fire', async () => {
    for (const [i, name] of ['a1', 'a2', 'a3'].entries()) {
      expect((await call(live()[i % live().length]!, `/arm?actor=${name}&ms=500`)).text).toBe('armed');
    }
    await new Promise((r) => setTimeout(r, 3000));
    for (const name of ['a1', 'a2', 'a3']) {
      expect(JSON.parse((await call(live()[0]!, `/alarms?actor=${name}`)).text)).toEqual({ fired: 1, alarm: null });
    }

    await call(live()[0]!, '/arm?actor=a9&ms=3000');
    const owner = await ownerOf('a9');
    owner.proc.killNow();
    await owner.proc.wait();
    await waitFor('alarm fired on the new owner', async () => {
      const r = await call(live()[0]!, '/alarms?actor=a9');
      return r.status === 200 && (JSON.parse(r.text) as { fired: number }).fired >= 1;
    }, 20_000, 200);
    await cluster.startAgent(REGION, owner.node);
  });

  it('runs a chat room: three WebSocket clients on different agents see every message', async () => {
    const agents = live();
    expect(agents.length).toBe(3);
    const clients = agents.map((a) => {
      const ws = new WebSocket(`ws://127.0.0.1:${a.port}/chat?room=lobby`, [], { headers: { host: 'counter.test' } });
      const got: string[] = [];
      ws.on('message', (d) => got.push(d.toString()));
      return { ws, got, opened: new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); }) };
    });
    await Promise.all(clients.map((c) => c.opened));
    await waitFor('welcome on every socket', async () => clients.every((c) => c.got.includes('welcome')), 10_000, 50);
    for (const [i, c] of clients.entries()) c.ws.send(`hello from ${i}`);
    await waitFor('every message on every socket', async () => clients.every((c) => c.got.length >= 4), 10_000, 50);
    for (const c of clients) {
      const msgs = c.got.filter((m) => m !== 'welcome');
      expect(msgs.map((m) => m.split(' ')[0]).sort()).toEqual(['1', '2', '3']);
      expect(msgs.map((m) => m.slice(m.indexOf(' ') + 1)).sort()).toEqual(['hello from 0', 'hello from 1', 'hello from 2']);
    }
    // Every client saw the messages in the same order: the actor ran one event at a time.
    const order = clients.map((c) => c.got.filter((m) => m !== 'welcome').join('|'));
    expect(new Set(order).size).toBe(1);
    await Promise.all(clients.map((c) => new Promise<void>((resolve) => { c.ws.once('close', () => resolve()); c.ws.close(1000, 'bye'); })));

    // With its sockets closed the room is evicted after idleTimeoutSeconds (2 s); its
    // storage stays, and the next connection reactivates it.
    const hosting = async () => {
      const lists = await Promise.all(live().map(async (a) => (await cluster.agentStatus(a)).actors));
      return lists.flat().filter((k) => k.startsWith(`${NS}/rooms/`)).length;
    };
    await waitFor('the idle room evicted', async () => (await hosting()) === 0, 15_000, 200);
    const again = new WebSocket(`ws://127.0.0.1:${agents[0]!.port}/chat?room=lobby`, [], { headers: { host: 'counter.test' } });
    const got: string[] = [];
    again.on('message', (d) => got.push(d.toString()));
    await new Promise<void>((resolve, reject) => { again.once('open', () => resolve()); again.once('error', reject); });
    again.send('back');
    await waitFor('the reactivated room answers', async () => got.includes('4 back'), 10_000, 50);
    again.close(1000, 'bye');
  });
});
