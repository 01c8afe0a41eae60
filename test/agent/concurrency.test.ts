import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { startTestAgent, type TestAgent } from './agent-harness.js';
import { RUNNING_ISOLATES } from '../../node-agent/serving/worker-host.js';

// A worker waiting on subrequests serves many requests at once: the upstream below only
// answers once RELEASE_AT requests are waiting on it together, so the test passes only
// if the agent really has that many in flight for one worker.

const RELEASE_AT = 12;

/**
 * A loopback upstream that keeps every request it gets in `held` (the test decides when
 * to answer), and an agent whose worker `name` fetches it for each request.
 */
function proxyToHeldUpstream(name: string, agentOpts: Parameters<typeof startTestAgent>[1] = {}, onHeld = (_held: ServerResponse[]) => {}) {
  const held: ServerResponse[] = [];
  const upstream = createServer((_req, res) => { held.push(res); onHeld(held); });
  const ctx = { held, agent: undefined as TestAgent | undefined };
  beforeAll(async () => {
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    const port = (upstream.address() as AddressInfo).port;
    ctx.agent = await startTestAgent([{
      name,
      source: `export default { async fetch() { const r = await fetch('http://127.0.0.1:${port}/'); return new Response(await r.text()); } }`,
      limits: { subrequests: 1, wallMsPerRequest: 20_000 },
    }], { ...agentOpts, egressAllow: [`127.0.0.1:${port}`] });
  });
  afterAll(async () => {
    for (const r of held.splice(0)) r.end('test over');
    upstream.close();
    await ctx.agent?.stop();
  });
  return ctx;
}

describe('concurrency of one worker', () => {
  // The upstream answers only once RELEASE_AT requests wait on it together.
  const ctx = proxyToHeldUpstream('proxy', {}, (held) => {
    if (held.length >= RELEASE_AT) for (const r of held.splice(0)) r.end(`released with ${RELEASE_AT} waiting`);
  });

  it(`keeps ${RELEASE_AT} requests waiting on subrequests in flight at once`, async () => {
    const replies = await Promise.all(Array.from({ length: RELEASE_AT }, () => ctx.agent!.get('proxy.test').then(async (r) => `${r.status} ${await r.text()}`)));
    expect(replies).toEqual(Array(RELEASE_AT).fill(`200 released with ${RELEASE_AT} waiting`));
  });
});

describe('a worker with every isolate busy and a full queue', () => {
  const ctx = proxyToHeldUpstream('slow', { maxIsolatesPerWorker: 1, maxQueuedPerWorker: 2 });
  const held = ctx.held;
  const get = () => ctx.agent!.get('slow.test');

  it('refuses the request past the queue with a 503 and serves the queued ones once it frees up', async () => {
    const first = get();
    await waitFor('the first request to reach the upstream', async () => held.length === 1, 5000, 10);
    const queued = [get(), get()];
    await new Promise((r) => setTimeout(r, 100));
    const refused = await get();
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(await refused.text()).toMatch(/^worker default\/slow is overloaded: all its isolates are busy and 2 requests are already waiting \(ray [0-9a-f]+\)/);
    // Each request reaches the upstream in turn once the one before it is answered.
    for (let answered = 0; answered < 3; answered++) {
      await waitFor('a request at the upstream', async () => held.length === 1, 5000, 10);
      held.shift()!.end(`answer ${answered}`);
    }
    expect(await Promise.all([first, ...queued].map(async (p) => `${(await p).status} ${await (await p).text()}`)))
      .toEqual(['200 answer 0', '200 answer 1', '200 answer 2']);
  });
});

describe('a worker with room to grow and a full queue', () => {
  const ctx = proxyToHeldUpstream('grow', { maxIsolatesPerWorker: 3, maxQueuedPerWorker: 2 });
  const held = ctx.held;
  const get = () => ctx.agent!.get('grow.test');

  it('takes as many requests as maxIsolates running plus maxQueued waiting, even while its isolates are still growing', async () => {
    // All at once, before a second isolate could load: the queue's bound counts the
    // isolates that could still load, as if each request past the busy ones had loaded its own.
    const replies = Array.from({ length: 7 }, () => get().then(async (r) => (r.status === 503 ? 'refused' : `${r.status} ${await r.text()}`)));
    // The upstream answers once the isolates have grown: three requests there at once.
    await waitFor('three requests at the upstream', async () => held.length === 3, 5000, 10);
    for (let answered = 0; answered < 5; answered++) {
      await waitFor('a request at the upstream', async () => held.length > 0, 5000, 10);
      held.shift()!.end('answered');
    }
    const all = await Promise.all(replies);
    expect(all.filter((r) => r === 'refused')).toHaveLength(2);
    expect(all.filter((r) => r === '200 answered')).toHaveLength(5);
  });
});

describe('a CPU-bound worker under concurrency', () => {
  // Each request spins ~3 ms of CPU and waits on nothing: more isolates than can run at
  // once would only take turns on the cores (worker-host.ts, GROW_AFTER_MS), so the host
  // keeps RUNNING_ISOLATES of them running, however many requests wait. On a machine busy
  // with other work a look can mistake a finished handler for a stalled one (its result
  // not yet taken), so two over that are allowed; one isolate per request was 16.
  let agent: TestAgent | undefined;
  beforeAll(async () => {
    agent = await startTestAgent([{
      name: 'spin',
      source: `export default { async fetch() { const end = Date.now() + 3; let n = 0; while (Date.now() < end) n++; return new Response(String(n > 0)); } }`,
    }]);
  });
  afterAll(async () => { await agent?.stop(); });

  it(`serves 32 requests at once with about ${RUNNING_ISOLATES} isolates, not one per request, and a deep queue is saturated`, async () => {
    for (let round = 0; round < 3; round++) {
      const replies = await Promise.all(Array.from({ length: 32 }, () => agent!.get('spin.test').then(async (r) => `${r.status} ${await r.text()}`)));
      // Only the replies that differ, so a failure shows them whole.
      expect(replies.filter((r) => r !== '200 true')).toEqual([]);
    }
    // Its queue, not whether more isolates could load, says when a shard member should send
    // a forwarded request back: 16 waiting (the default maxIsolates) is saturated.
    let saturated = false;
    const burst = Promise.all(Array.from({ length: 40 }, () => agent!.get('spin.test').then((r) => r.status)));
    const poll = setInterval(() => { saturated ||= agent!.agent.saturated('default/spin'); }, 1);
    try { expect(await burst).toEqual(Array(40).fill(200)); } finally { clearInterval(poll); }
    expect(saturated).toBe(true);
    const state = agent!.agent.status().find((s) => s.key === 'default/spin');
    expect(state?.state).toBe('ready');
    expect(state && 'isolates' in state ? state.isolates : undefined).toBeLessThanOrEqual(RUNNING_ISOLATES + 2);
  });
});
