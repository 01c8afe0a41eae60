import { afterAll, describe, expect, it } from 'vitest';
import { hostBindings } from '../../node-agent/bindings/host-bindings.js';
import { IsolatePool } from '../../node-agent/isolate/pool.js';
import { DispatchMode, WorkerIsolate, WorkerLimitError, WorkerScriptError, type WorkerDefinition } from '../../node-agent/isolate/worker-isolate.js';

// Which path a worker's requests take: quick handlers stay on the synchronous path
// (thrown errors included), a worker that hits a limit leaves it for good.

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

describe('dispatch mode', () => {
  afterAll(() => pool.close());

  it('keeps a worker that throws on the synchronous path', async () => {
    const mode = new DispatchMode();
    const w = await WorkerIsolate.load(def(`export default { async fetch(r) { if (r.url.endsWith('/boom')) throw new Error('boom'); return new Response('ok'); } }`), pool.take(64), hooks, mode);
    for (let i = 0; i < 20; i++) expect((await run(w)).status).toBe(200);
    await expect(run(w, 'http://mode.test/boom')).rejects.toBeInstanceOf(WorkerScriptError);
    expect((await run(w)).status).toBe(200);
    expect(mode.sync).toBe(true);
    w.dispose('shutdown');
  });

  it('moves a worker that runs out of CPU on the event loop to the asynchronous path for good', async () => {
    const mode = new DispatchMode();
    const w = await WorkerIsolate.load(def(`export default { async fetch(r) { if (r.url.endsWith('/spin')) for (;;) {} return new Response('ok'); } }`), pool.take(64), hooks, mode);
    expect((await run(w)).status).toBe(200);
    expect(mode.sync).toBe(true);
    await expect(run(w, 'http://mode.test/spin')).rejects.toBeInstanceOf(WorkerLimitError);
    expect(mode.sync).toBe(false);
    expect(w.dead).toBe(true);
  });

  it('moves a worker whose handler is slow on average', () => {
    const mode = new DispatchMode();
    for (let i = 0; i < 5; i++) mode.observe(0.05);
    mode.observe(3); // one GC-like pause does not count
    expect(mode.sync).toBe(true);
    for (let i = 0; i < 100; i++) mode.observe(1);
    expect(mode.sync).toBe(false);
  });
});
