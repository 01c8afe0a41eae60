import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { startTestAgent, workerManifest, type TestAgent } from './agent-harness.js';

// Swapping a worker's version drops nothing: a request in flight on the old version
// finishes there, new requests go to the new one, and a client hammering the worker
// across the swap sees only successful answers from one version or the other.

const versioned = (v: string, busyMs: number) => `
export default {
  async fetch(request) {
    const until = Date.now() + (request.url.endsWith('/slow') ? ${busyMs} : 0);
    while (Date.now() < until) { /* a long request, still under the CPU limit */ }
    return new Response('${v}');
  },
};`;

describe('worker version swap', () => {
  let a: TestAgent;
  const manifest = (v: string) => workerManifest({
    name: 'swap', source: versioned(v, 400), limits: { cpuMsPerRequest: 2000, wallMsPerRequest: 5000 }, minWarmIsolates: 2,
  });

  beforeAll(async () => { a = await startTestAgent([]); a.write('swap.yaml', manifest('v1')); });
  afterAll(async () => { await a?.stop(); });

  it('finishes in-flight requests on the old version and sends new ones to the new version', async () => {
    await waitFor('v1 served', async () => (await (await a.get('swap.test')).text()) === 'v1', 10_000, 50);

    let stop = false;
    const answers: string[] = [];
    const hammer = (async () => {
      while (!stop) {
        const r = await a.get('swap.test');
        answers.push(`${r.status} ${await r.text()}`);
      }
    })();

    const inflight = a.get('swap.test', '/slow');
    await new Promise((r) => setTimeout(r, 100));
    a.write('swap.yaml', manifest('v2'));
    await waitFor('v2 served', async () => answers.at(-1) === '200 v2', 10_000, 20);
    const slow = await inflight;
    expect(slow.status).toBe(200);
    expect(await slow.text()).toBe('v1');

    await new Promise((r) => setTimeout(r, 200));
    stop = true;
    await hammer;
    expect(answers.length).toBeGreaterThan(10);
    expect(answers.filter((x) => x !== '200 v1' && x !== '200 v2')).toEqual([]);
    // Once v2 answered, v1 never answers again.
    expect(answers.slice(answers.indexOf('200 v2'))).not.toContain('200 v1');
    // The old version's isolates were disposed once it drained.
    await waitFor('old isolates disposed', async () => /edge_isolate_disposals_total\{worker="default\/swap",reason="replaced"\} 2/.test(await a.agent.metrics.registry.metrics()), 5000, 50);
  });
});
