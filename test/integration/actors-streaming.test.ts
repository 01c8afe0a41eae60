import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { WebSocket } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { ActorIds } from '../../node-agent/bindings/actor-id.js';
import type { Agent } from '../../node-agent/agent.js';
import { open, startActorAgents, startRendezvous, text, type ActorAgents, type Rendezvous } from '../harness/actor-agents.js';
import { streamingWorkers } from '../harness/streaming-sources.js';

// Issue 14, item 5, across agents: two agents over a real nats-server, the actor on one and
// its caller on the other, so every stub.fetch() here crosses the peer channel. The actor's
// response streams over it (the caller's first chunk arrives before the actor made its
// second: a handshake), the caller's body streams to the actor, a cancel on the caller's
// agent reaches the actor's stream on the owner, a slow reader holds the producer back
// (the bound is looser than in one agent: the sockets between the agents hold some), and a
// caller that never reads ends the actor's stream when its request ends.

const NS = 'xstream';
const FRONT = 'front.test';

function chunks(res: IncomingMessage): { next(): Promise<string | null> } {
  const it = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  return { next: async () => { const r = await it.next(); return r.done ? null : r.value.toString('utf8'); } };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms))]);
}

/** A WebSocket through the front to the actor: the echo of one message. */
async function echo(port: number, actor: string): Promise<string> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?actor=${actor}`, undefined, { headers: { host: FRONT } });
  try {
    await once(ws, 'open');
    ws.send('hi');
    const [data] = await once(ws, 'message') as [Buffer];
    return data.toString('utf8');
  } finally {
    ws.close();
  }
}

describe('stub.fetch() streams between worker and actor across agents', () => {
  let env: ActorAgents;
  let rv: Rendezvous;
  const get = async (a: Agent, path: string) => text(await open(a.port, FRONT, path));

  /** Activates `actor` and answers the agent that does not own it (calls through it are forwarded). */
  async function caller(actor: string): Promise<Agent> {
    expect(JSON.parse(await get(env.agents[0]!, `/get?actor=${actor}&tag=none`))).toBeNull();
    const hex = new ActorIds(env.uid('streamers')).idFromName(actor).hex;
    const owner = await env.ownerOf(`${NS}/streamers/${hex}`);
    return env.agents.find((a) => a !== owner)!;
  }
  const waitCancelled = async (via: Agent, tag: string) => {
    let rec: { reason: string; produced: number } | null = null;
    await waitFor(`the actor's stream ${tag} cancelled`, async () => (rec = JSON.parse(await get(via, `/get?actor=${tag}&tag=${tag}`)) as typeof rec) !== null, 15_000, 50);
    return rec!;
  };

  beforeAll(async () => {
    rv = await startRendezvous();
    const { workers, actors } = streamingWorkers(`http://127.0.0.1:${rv.port}`);
    env = await startActorAgents({ namespace: NS, region: 'xs-1', workers, actors, agents: 2, egressAllow: [`127.0.0.1:${rv.port}`] });
    await waitFor('front served with its actor on both agents', async () => {
      const rs = await Promise.all(env.agents.map((a) => open(a.port, FRONT, '/get?actor=warm&tag=x')));
      return rs.every((r) => r.statusCode === 200);
    }, 60_000, 100);
  }, 120_000);

  afterAll(async () => {
    rv?.close();
    await env?.stop();
  });

  it('streams the actor\'s response over the peer channel as it is produced, past the actor\'s wall limit', async () => {
    const via = await caller('s1');
    const res = await open(via.port, FRONT, '/stream?actor=s1&tag=s1&n=100&ms=15');
    expect(res.statusCode).toBe(200);
    const body = chunks(res);
    expect(await within(body.next(), 10_000, 'the first chunk')).toBe('chunk 0\n');
    rv.release('s1-first');
    let rest = '';
    for (let c = await body.next(); c !== null; c = await body.next()) rest += c;
    expect(('chunk 0\n' + rest).trim().split('\n')).toEqual(Array.from({ length: 100 }, (_, i) => `chunk ${i}`));
  });

  it('streams the caller\'s request body to the actor on the other agent as it is produced', async () => {
    const via = await caller('u1');
    let firstSeen = false;
    async function* upload() {
      yield new Uint8Array(70 * 1024).fill(1);
      await within(rv.waitHits('u1-actor-first'), 10_000, 'the actor reading the first chunk');
      firstSeen = true;
      for (let i = 0; i < 3; i++) yield new Uint8Array(64 * 1024).fill(2);
    }
    const res = await open(via.port, FRONT, '/upload?actor=u1&tag=u1', { method: 'POST', body: upload() });
    const out = JSON.parse(await text(res)) as { bytes: number };
    expect(firstSeen).toBe(true);
    expect(out.bytes).toBe(70 * 1024 + 3 * 64 * 1024);
  });

  it('reader.cancel() on the caller\'s agent reaches the actor\'s stream on its owner', async () => {
    const via = await caller('c1');
    expect(await get(via, '/cancel-after?actor=c1&tag=c1&n=3')).toBe('cancelled');
    const rec = await waitCancelled(via, 'c1');
    expect(rec.reason).toMatch(/cancel|closed/);
  });

  it('a slow reader on the other agent holds the producer back', async () => {
    const via = await caller('b1');
    expect(await get(via, '/cancel-after?actor=b1&tag=b1&n=2&pause=500')).toBe('cancelled');
    const rec = await waitCancelled(via, 'b1');
    // The TCP connection between the agents holds 16 KiB chunks in its kernel buffers: the
    // sender's grows to tcp_wmem's 4 MiB and the receiver's with autotuning (tcp_rmem's max
    // is 32 MiB here), so how many depends on the kernel, not on the agents. CI runs on this
    // machine saw 267 to 457 (a bound of 400 failed twice, at 428 and 457). An unbounded
    // pipeline produces without end for the whole pause (the old one failed at 32 MiB: 2048).
    console.log(`across agents: ${rec.produced} chunks produced for 2 read`);
    expect(rec.produced).toBeLessThanOrEqual(2 + 1000);
  });

  it('a caller that never reads: its request ending ends the actor\'s stream on the other agent', async () => {
    const via = await caller('h1');
    expect(await get(via, '/never-read?actor=h1&tag=h1')).toBe('not reading');
    const rec = await waitCancelled(via, 'h1');
    expect(rec.produced).toBeLessThanOrEqual(400);
  });

  it('an endless body from a caller on the other agent: the actor reads what it wants, the caller\'s source is cancelled', async () => {
    const via = await caller('u2');
    const out = JSON.parse(await get(via, '/endless-upload?actor=u2&tag=u2&n=3')) as { answer: { bytes: number }; pulled: number; cancelled: string | null };
    expect(out.answer.bytes).toBe(3 * 16384);
    expect(out.cancelled).not.toBeNull();
    console.log(`across agents: the caller's endless body was pulled ${out.pulled} times for 3 chunks read`);
    expect(out.pulled).toBeLessThanOrEqual(3 + 400);
  });

  it('a WebSocket upgrade through stub.fetch() still reaches the actor (the 101 path)', async () => {
    const via = await caller('w1');
    expect(await echo(via.port, 'w1')).toBe('echo hi');
  });
});
