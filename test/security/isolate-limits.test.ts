import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pendingHostTimers, MAX_PENDING_TIMERS } from '../../node-agent/bindings/host-timers.js';
import { startTestAgent, type TestAgent } from '../agent/agent-harness.js';
import { countServed, sleep, startAgentProcess, type AgentProcess } from './agent-process.js';

// Issue 12, items 2 and 3: a tenant cannot freeze the agent's event loop whatever its own
// limits (module evaluation, first requests and every later one run on isolated-vm's
// threads; startup has a fixed 1 s CPU cap), cannot make the host hold WebAssembly memory
// past its memoryMiB, and cannot leave host timers behind. Each attack runs beside a
// healthy neighbour that must keep answering; speed is compared with a baseline taken in
// the same test, never with an absolute figure.

const HEALTHY = `export default { async fetch() { return new Response('healthy'); } };`;
const spinFor = (ms: number) => `{ const t0 = Date.now(); while (Date.now() - t0 < ${ms}); }`;

/** Neighbour requests per second while `attack` runs, and in a quiet window as long. */
async function neighbourRates(agent: AgentProcess, attack: () => Promise<unknown>): Promise<{ baseline: number; attacked: number; failed: number }> {
  const t0 = performance.now();
  const during = await countServed(agent, 'healthy.test', 'healthy', attack());
  const attackedMs = performance.now() - t0;
  const t1 = performance.now();
  const quiet = await countServed(agent, 'healthy.test', 'healthy', sleep(Math.max(1000, attackedMs)));
  const quietMs = performance.now() - t1;
  return { baseline: quiet.served / quietMs, attacked: during.served / attackedMs, failed: during.failed + quiet.failed };
}

describe('freeze (issue 12, item 2)', () => {
  let agent: AgentProcess;
  beforeAll(async () => {
    agent = await startAgentProcess([
      { name: 'healthy', source: HEALTHY },
      // Its top level spins 950 ms: just under the startup cap, so every new isolate pays it.
      { name: 'slow-start', source: `${spinFor(950)}\nexport default { async fetch() { return new Response('started'); } };`, minWarmIsolates: 0 },
      // A tenant that gave itself 30 s of CPU per request, and uses it.
      { name: 'greedy', source: `export default { async fetch() { ${spinFor(1500)} return new Response('done'); } };`, limits: { cpuMsPerRequest: 30_000, wallMsPerRequest: 60_000 } },
    ]);
  });
  afterAll(() => agent?.stop());

  it('11 requests to a worker whose top level spins 950 ms leave the neighbour answering', async () => {
    const rates = await neighbourRates(agent, () => Promise.all(Array.from({ length: 11 }, async () => {
      // The attacker's own requests wait for loads one at a time (some may fail); only the
      // neighbour is measured.
      const r = await agent.get('slow-start.test');
      expect([200, 503]).toContain(r.status);
    })));
    expect(rates.failed).toBe(0);
    // Before: ~2 % of the baseline (the event loop held 950 ms per isolate). Generous: the
    // spinning threads and the neighbour share this machine's cores, and a CI run on a machine
    // busy with other work saw 17.5 %; a frozen event loop is still far below 8 %.
    expect(rates.attacked, JSON.stringify(rates)).toBeGreaterThan(rates.baseline * 0.08);
  });

  it('a worker with a 30 s CPU limit spinning in its first requests leaves the neighbour answering', async () => {
    const rates = await neighbourRates(agent, async () => {
      for (let i = 0; i < 3; i++) expect(await agent.get('greedy.test')).toEqual({ status: 200, text: 'done' });
    });
    expect(rates.failed).toBe(0);
    expect(rates.attacked, JSON.stringify(rates)).toBeGreaterThan(rates.baseline * 0.2);
    expect(agent.exitCode()).toBeNull();
  });

  it('a top level over the 1 s startup cap is refused, whatever the tenant\'s CPU limit', async () => {
    const a = await startTestAgent([
      { name: 'healthy', source: HEALTHY },
      { name: 'forever', source: `for (;;) {}\nexport default { fetch() { return new Response('never'); } };`, limits: { cpuMsPerRequest: 30_000, wallMsPerRequest: 60_000 } },
    ]);
    try {
      // The version is refused, so nothing serves its route.
      const r = await a.get('forever.test');
      expect([404, 503]).toContain(r.status);
      expect((await a.get('healthy.test')).status).toBe(200);
      expect(a.logs.some((l) => /startup CPU limit \(1000 ms\)/.test(JSON.stringify(l)))).toBe(true);
    } finally {
      await a.stop();
    }
  });
});

const TIMERS = `
const ids = [];
export default { async fetch(request) {
  const url = new URL(request.url);
  if (url.pathname === '/spin') for (;;) {}
  if (url.pathname === '/clear') { for (const id of ids.splice(0)) clearTimeout(id); return new Response('cleared'); }
  if (url.pathname === '/interval') { ids.push(setInterval(() => {}, 3_600_000)); return new Response('interval'); }
  const n = Number(url.searchParams.get('n'));
  try {
    for (let i = 0; i < n; i++) ids.push(setTimeout(() => {}, 3_600_000));
  } catch (err) {
    return new Response(err.name + ': ' + err.message);
  }
  return new Response('armed ' + ids.length);
} };`;

describe('timers (issue 12, item 3)', () => {
  let a: TestAgent;
  const text = async (path: string) => { const r = await a.get('timers.test', path); return `${r.status} ${await r.text()}`; };
  const neighbourOk = async () => expect(await (await a.get('healthy.test')).text()).toBe('healthy');
  beforeAll(async () => {
    a = await startTestAgent([{ name: 'healthy', source: HEALTHY }, { name: 'timers', source: TIMERS }], { maxIsolatesPerWorker: 1 });
  });
  afterAll(() => a?.stop());

  it('clearTimeout and clearInterval cancel the host timer at once', async () => {
    const before = pendingHostTimers();
    for (let i = 0; i < 4; i++) await text('/?n=200');
    expect(await text('/interval')).toBe('200 interval');
    expect(pendingHostTimers() - before).toBe(801);
    expect(await text('/clear')).toBe('200 cleared');
    expect(pendingHostTimers()).toBe(before);
    await neighbourOk();
  });

  it(`a timer flood stops at ${MAX_PENDING_TIMERS} pending timers with a clear error in the isolate`, async () => {
    const before = pendingHostTimers();
    const answers: string[] = [];
    for (let i = 0; i < 8; i++) answers.push(await text('/?n=200'));
    expect(answers.slice(0, 5)).toEqual(['200 armed 200', '200 armed 400', '200 armed 600', '200 armed 800', '200 armed 1000']);
    expect(answers[5]).toBe(`200 RangeError: setTimeout: worker default/timers already has ${MAX_PENDING_TIMERS} pending timers, the most one isolate may hold; clear some first`);
    expect(pendingHostTimers() - before).toBe(MAX_PENDING_TIMERS);
    await neighbourOk();
  });

  it('a disposed isolate leaves no host timer behind', async () => {
    expect(pendingHostTimers()).toBeGreaterThan(0);
    const r = await a.get('timers.test', '/spin');
    expect(r.status).toBe(503);
    expect(pendingHostTimers()).toBe(0);
    expect(await text('/?n=10')).toBe('200 armed 10');
    await neighbourOk();
  });
});

// Hand-assembled modules. GROW: one memory (1 page, no maximum) exported as "mem", and
// grow(n) = memory.grow(n). BIG: one memory of 1024 pages (64 MiB), no maximum.
const GROW = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 6, 1, 0x60, 1, 0x7f, 1, 0x7f, 3, 2, 1, 0, 5, 3, 1, 0, 1,
  7, 14, 2, 3, 0x6d, 0x65, 0x6d, 2, 0, 4, 0x67, 0x72, 0x6f, 0x77, 0, 0, 10, 8, 1, 6, 0, 0x20, 0, 0x40, 0, 0x0b];
const BIG = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 5, 4, 1, 0, 0x80, 0x08];
const WASM = `
const GROW = new Uint8Array(${JSON.stringify(GROW)});
const BIG = new Uint8Array(${JSON.stringify(BIG)});
const keep = [];
export default { async fetch(request) {
  const out = { bytes: 0 };
  try {
    switch (new URL(request.url).pathname) {
      case '/memories':
        for (let i = 0; i < 12; i++) { const m = new WebAssembly.Memory({ initial: 1024 }); new Uint8Array(m.buffer).fill(1); keep.push(m); out.bytes += m.buffer.byteLength; }
        break;
      case '/small-memories':
        for (let i = 0; i < 1000; i++) { const m = new WebAssembly.Memory({ initial: 16, maximum: 16 }); new Uint8Array(m.buffer).fill(1); keep.push(m); out.bytes += m.buffer.byteLength; }
        break;
      case '/grow-in-wasm': {
        const { instance } = await WebAssembly.instantiate(GROW);
        keep.push(instance);
        for (let i = 0; i < 1000 && instance.exports.grow(16) >= 0; i++);
        out.bytes = instance.exports.mem.buffer.byteLength;
        new Uint8Array(instance.exports.mem.buffer).fill(1);
        break;
      }
      case '/grow-in-js': {
        const m = new WebAssembly.Memory({ initial: 1 });
        keep.push(m);
        try { for (let i = 0; i < 1000; i++) m.grow(16); } catch (err) { out.growError = err.name; }
        out.bytes = m.buffer.byteLength;
        break;
      }
      case '/declared':
        keep.push(new WebAssembly.Instance(new WebAssembly.Module(BIG)));
        break;
      case '/original-constructor': {
        const Original = Object.getPrototypeOf(new WebAssembly.Memory({ initial: 1, maximum: 1 })).constructor;
        out.same = Original === WebAssembly.Memory;
        keep.push(new Original({ initial: 1024 }));
        break;
      }
    }
  } catch (err) {
    out.error = err.name + ': ' + err.message;
  }
  return Response.json(out);
} };`;

describe('WebAssembly memory (issue 12, item 3)', () => {
  let agent: AgentProcess;
  const MiB = 1024 * 1024;
  // One worker per case, so each starts with its isolate's whole budget.
  const CASES = ['memories', 'small-memories', 'grow-in-wasm', 'grow-in-js', 'declared', 'original-constructor'];
  beforeAll(async () => {
    agent = await startAgentProcess([
      { name: 'healthy', source: HEALTHY },
      ...CASES.map((name) => ({ name, source: WASM, limits: { memoryMiB: 32, cpuMsPerRequest: 5000 }, minWarmIsolates: 1 })),
    ]);
  });
  afterAll(() => agent?.stop());

  it('a wasm bomb stays within the worker\'s 32 MiB, the neighbour answers and the agent\'s RSS stays bounded', async () => {
    const rss0 = agent.rssBytes();
    const results: Record<string, { bytes: number; error?: string; growError?: string; same?: boolean }> = {};
    for (const name of CASES) {
      const r = await agent.get(`${name}.test`, `/${name}`);
      expect(r.status, r.text).toBe(200);
      results[name] = JSON.parse(r.text) as (typeof results)[string];
      expect(results[name]!.bytes, name).toBeLessThanOrEqual(32 * MiB);
      expect(await agent.get('healthy.test')).toEqual({ status: 200, text: 'healthy' });
    }
    expect(results.memories!.error).toMatch(/^RangeError: new WebAssembly.Memory: 64.0 MiB of WebAssembly memory would put this worker over its memory limit \(32.0 MiB/);
    expect(results['small-memories']!.error).toMatch(/over its memory limit/);
    expect(results['small-memories']!.bytes).toBeGreaterThan(16 * MiB);
    // Grown from wasm code: memory.grow answers -1 at the maximum the shim gave the memory.
    expect(results['grow-in-wasm']!.bytes).toBeGreaterThan(16 * MiB);
    expect(results['grow-in-js']!.growError).toBe('RangeError');
    expect(results.declared!.error).toMatch(/^RangeError: .*64.0 MiB of WebAssembly memory would put this worker over its memory limit/);
    expect(results['original-constructor']!.same).toBe(true);
    expect(results['original-constructor']!.error).toMatch(/over its memory limit/);
    // Before: 12 x 64 MiB = 768 MiB more for the first case alone. Now at most 32 MiB of
    // wasm per isolate (six here), plus their JS heaps and slack for the agent.
    expect(agent.rssBytes() - rss0).toBeLessThan(300 * MiB);
    expect(agent.exitCode()).toBeNull();
  });
});
