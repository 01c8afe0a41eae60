import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { WebSocket } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { open, startActorAgents, startRendezvous, text, type ActorAgents, type Rendezvous } from '../harness/actor-agents.js';
import { streamingWorkers } from '../harness/streaming-sources.js';

// Issue 14, item 5: stub.fetch() streams both ways between a worker and an actor (real
// isolates, one in-process agent over a real nats-server): the actor's response reaches the
// caller chunk by chunk, past the actor's wall limit (which bounds its handler, not the
// life of its stream); the caller's request body reaches the actor as it is produced;
// cancelling (reader.cancel(), the client going away, the caller's own limits) reaches the
// actor's stream, whose request then ends and whose input gate opens; and nothing runs
// ahead of a slow reader. Orders are proven by handshakes (test/harness/actor-agents.ts,
// Rendezvous), never by timing.

const NS = 'stream';
const FRONT = 'front.test';

/** Reads a response chunk by chunk. */
function chunks(res: IncomingMessage): { next(): Promise<string | null> } {
  const it = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  return { next: async () => { const r = await it.next(); return r.done ? null : r.value.toString('utf8'); } };
}

/** Rejects after `ms` naming what did not happen (so a broken handshake fails, not hangs). */
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

describe('stub.fetch() streams between worker and actor (one agent)', () => {
  let env: ActorAgents;
  let rv: Rendezvous;
  let port: number;
  const get = async (path: string) => text(await open(port, FRONT, path));
  /** What the actor's stream recorded when it was cancelled (null until then). */
  const cancelled = (tag: string) => get(`/get?actor=${tag}&tag=${tag}`).then((t) => JSON.parse(t) as { reason: string; produced: number } | null);
  const waitCancelled = async (tag: string) => {
    let rec: { reason: string; produced: number } | null = null;
    await waitFor(`the actor's stream ${tag} cancelled`, async () => (rec = await cancelled(tag)) !== null, 15_000, 50);
    return rec!;
  };

  beforeAll(async () => {
    rv = await startRendezvous();
    const { workers, actors } = streamingWorkers(`http://127.0.0.1:${rv.port}`);
    env = await startActorAgents({ namespace: NS, region: 'st-1', workers, actors, agents: 1, egressAllow: [`127.0.0.1:${rv.port}`] });
    port = env.agents[0]!.port;
    await waitFor('front served with its actor', async () => (await open(port, FRONT, '/get?actor=warm&tag=x')).statusCode === 200, 60_000, 100);
  }, 120_000);

  afterAll(async () => {
    rv?.close();
    await env?.stop();
  });

  it('the caller gets the first chunk before the actor produced the second, and the stream outlives the actor\'s wall limit', async () => {
    const res = await open(port, FRONT, '/stream?actor=s1&tag=s1&n=100&ms=15');
    expect(res.statusCode).toBe(200);
    const body = chunks(res);
    // The actor waits for this release before it makes chunk 1: a buffered response never gets here.
    const first = await within(body.next(), 10_000, 'the first chunk');
    expect(first).toBe('chunk 0\n');
    rv.release('s1-first');
    let rest = '';
    for (let c = await body.next(); c !== null; c = await body.next()) rest += c;
    const lines = (first + rest).trim().split('\n');
    // 99 gaps of 15 ms: well past the actor's 1 s wall limit, and not cut.
    expect(lines).toEqual(Array.from({ length: 100 }, (_, i) => `chunk ${i}`));
    expect(rv.timedOut.has('s1-first')).toBe(false);
  });

  it('streams the caller\'s request body to the actor as it is produced', async () => {
    const sent: Uint8Array[] = [];
    let firstSeen = false;
    async function* upload() {
      // Over the front's 64 KiB head, so the worker starts with it.
      const head = new Uint8Array(70 * 1024).fill(1);
      sent.push(head);
      yield head;
      // The rest only once the actor has read the first chunk: a buffered upload never gets there.
      await within(rv.waitHits('u1-actor-first'), 10_000, 'the actor reading the first chunk');
      firstSeen = true;
      for (let i = 0; i < 3; i++) { const c = new Uint8Array(64 * 1024).fill(2); sent.push(c); yield c; }
    }
    const res = await open(port, FRONT, '/upload?actor=u1&tag=u1', { method: 'POST', body: upload() });
    const out = JSON.parse(await text(res)) as { bytes: number; reads: number };
    expect(res.statusCode).toBe(200);
    expect(firstSeen).toBe(true);
    expect(out.bytes).toBe(sent.reduce((n, c) => n + c.byteLength, 0));
    expect(out.reads).toBeGreaterThan(1);
  });

  it('reader.cancel() in the caller reaches the actor\'s stream, and the actor then serves the next request', async () => {
    expect(await get('/cancel-after?actor=c1&tag=c1&n=3')).toBe('cancelled');
    // Read through the actor itself: its input gate is open again and cancel()'s write committed.
    const rec = await waitCancelled('c1');
    expect(rec.reason).toMatch(/cancel/);
  });

  it('aborting the caller\'s AbortSignal cancels the actor\'s stream, and the caller\'s reads reject with the abort', async () => {
    expect(await get('/abort-after?actor=a1&tag=a1')).toBe('aborted: AbortError');
    const rec = await waitCancelled('a1');
    expect(rec.reason).toMatch(/abort/);
  });

  it('the caller\'s client going away cancels the actor\'s stream through the worker', async () => {
    const res = await open(port, FRONT, '/infinite?actor=c2&tag=c2');
    const body = chunks(res);
    await body.next();
    res.destroy();
    const rec = await waitCancelled('c2');
    expect(rec.reason).toMatch(/cancel|closed|gone/);
  });

  it('a slow reader holds the producer back: bounded buffering end to end', async () => {
    expect(await get('/cancel-after?actor=b1&tag=b1&n=2&pause=500')).toBe('cancelled');
    const rec = await waitCancelled('b1');
    // Two chunks read; the rest of the pipeline holds a chunk or two per hop. Unbounded
    // buffering would have run 16 KiB chunks ahead for the whole pause.
    expect(rec.produced).toBeLessThanOrEqual(8);
  });

  it('a client uploading through a worker to an actor that stops reading: the agent stops reading the client', async () => {
    const TOTAL = 40 * 1024 * 1024;
    let yielded = 0;
    async function* upload() {
      while (yielded < TOTAL) { const c = new Uint8Array(64 * 1024).fill(3); yielded += c.byteLength; yield c; }
    }
    const pending = open(port, FRONT, '/upload-slow?actor=p1&tag=p1&n=3', { method: 'POST', body: upload() });
    // Release the actor once the client is held (no progress for a second) or sent it all.
    let last = -1;
    await waitFor('the upload held or done', async () => {
      const stalled = yielded === last;
      last = yielded;
      return stalled || yielded >= TOTAL;
    }, 60_000, 1_000);
    const held = yielded;
    rv.release('p1-go');
    const res = await pending;
    expect(res.statusCode).toBe(200);
    expect((JSON.parse(await text(res)) as { bytes: number }).bytes).toBeGreaterThan(0);
    console.log(`upload held after ${(held / 1024 / 1024).toFixed(1)} MiB of ${TOTAL / 1024 / 1024} MiB`);
    // The front's window (1 MiB), the actor call's (256 KiB) and the sockets' buffers.
    expect(held).toBeLessThan(16 * 1024 * 1024);
  });

  describe('hostile callers', () => {
    it('an actor streaming forever to a caller that never reads: the caller\'s request ending stops it', async () => {
      expect(await get('/never-read?actor=h1&tag=h1')).toBe('not reading');
      const rec = await waitCancelled('h1');
      expect(rec.produced).toBeLessThanOrEqual(4);
    });

    it('a caller holding the actor\'s body forever: its own wall limit ends it, and that reaches the actor', async () => {
      const res = await open(port, 'holder.test', '/hold?actor=h2&tag=h2');
      expect(res.statusCode).toBe(504);
      await text(res);
      const rec = await waitCancelled('h2');
      expect(rec.produced).toBeLessThanOrEqual(4);
    });

    it('a caller streaming an endless body to an actor that stops reading: the caller\'s source is cancelled, its reads bounded', async () => {
      const out = JSON.parse(await get('/endless-upload?actor=u2&tag=u2&n=3')) as { answer: { bytes: number }; pulled: number; cancelled: string | null };
      expect(out.answer.bytes).toBe(3 * 16384);
      expect(out.cancelled).not.toBeNull();
      // The host's window (256 KiB) is 16 chunks, plus one in each hop.
      expect(out.pulled).toBeLessThanOrEqual(3 + 16 + 4);
    });
  });

  it('a WebSocket upgrade through stub.fetch() still reaches the actor (the 101 path)', async () => {
    expect(await echo(port, 'w1')).toBe('echo hi');
  });
});
