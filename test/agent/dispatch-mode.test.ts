import { afterAll, describe, expect, it } from 'vitest';
import { hostBindings } from '../../node-agent/bindings/host-bindings.js';
import { IsolatePool } from '../../node-agent/isolate/pool.js';
import { DispatchMode, WorkerIsolate, WorkerLimitError, WorkerScriptError, type WorkerDefinition } from '../../node-agent/isolate/worker-isolate.js';

// Which path a worker's requests take: a version starts asynchronous, quick handlers move
// to the synchronous path once proven (thrown errors keep them there), and a worker that
// runs long there or hits a limit leaves it for good.

const pool = new IsolatePool({ size: 0, defaultMemoryMiB: 64 });
const hooks = { onLog: () => {}, onDispose: () => {}, bindings: hostBindings() };
const def = (source: string): WorkerDefinition => ({
  key: 'default/mode', name: 'default/mode', digest: 'sha256:x', env: { text: {} }, source,
  limits: { cpuMsPerRequest: 50, memoryMiB: 64, subrequests: 1, wallMsPerRequest: 5000 },
});
const get = { url: 'http://mode.test/', method: 'GET', headers: [] as [string, string][], body: null };

async function run(w: WorkerIsolate, url = get.url) {
  const call = w.begin({ ...get, url });
  try { return await call.response; } finally { await w.finish(call.id); }
}

/** Quick requests until the worker is on the synchronous path (a slow machine may need a few more). */
async function promote(w: WorkerIsolate, mode: DispatchMode) {
  for (let i = 0; i < 500 && !mode.sync; i++) expect((await run(w)).status).toBe(200);
  expect(mode.sync).toBe(true);
}

describe('dispatch mode', () => {
  afterAll(() => pool.close());

  it('keeps a worker that throws on the synchronous path', async () => {
    const mode = new DispatchMode();
    const w = await WorkerIsolate.load(def(`export default { async fetch(r) { if (r.url.endsWith('/boom')) throw new Error('boom'); return new Response('ok'); } }`), pool.take(64), hooks, mode);
    expect(mode.sync).toBe(false);
    await promote(w, mode);
    await expect(run(w, 'http://mode.test/boom')).rejects.toBeInstanceOf(WorkerScriptError);
    expect((await run(w)).status).toBe(200);
    expect(mode.sync).toBe(true);
    w.dispose('shutdown');
  });

  it('cuts a proven-quick worker that spins on the event loop at SYNC_TIMEOUT_MS, whatever its CPU limit, and moves it for good', async () => {
    const mode = new DispatchMode();
    const slowLimits = { cpuMsPerRequest: 30_000, memoryMiB: 64, subrequests: 1, wallMsPerRequest: 60_000 };
    const w = await WorkerIsolate.load({ ...def(`export default { async fetch(r) { if (r.url.endsWith('/spin')) for (;;) {} return new Response('ok'); } }`), limits: slowLimits }, pool.take(64), hooks, mode);
    await promote(w, mode);
    const err = await run(w, 'http://mode.test/spin').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerLimitError);
    expect((err as WorkerLimitError).reason).toBe('sync');
    expect(mode.sync).toBe(false);
    expect(w.dead).toBe(true);
    // A fresh isolate of the same version stays asynchronous: it is not promoted again.
    const w2 = await WorkerIsolate.load({ ...def(`export default { async fetch() { return new Response('ok'); } }`), limits: slowLimits }, pool.take(64), hooks, mode);
    for (let i = 0; i < 40; i++) expect((await run(w2)).status).toBe(200);
    expect(mode.sync).toBe(false);
    w2.dispose('shutdown');
  });

  it('promotes only after enough quick requests in a row, and moves a worker whose handler is slow on average', () => {
    const mode = new DispatchMode();
    for (let i = 0; i < 31; i++) mode.observeAsync(0.05);
    mode.observeAsync(5); // a slow one starts the count again
    for (let i = 0; i < 31; i++) mode.observeAsync(0.05);
    expect(mode.sync).toBe(false);
    mode.observeAsync(0.05);
    expect(mode.sync).toBe(true);
    for (let i = 0; i < 5; i++) mode.observe(0.05);
    mode.observe(1.5); // one GC-like pause does not count
    expect(mode.sync).toBe(true);
    for (let i = 0; i < 100; i++) mode.observe(1);
    expect(mode.sync).toBe(false);
  });
});
