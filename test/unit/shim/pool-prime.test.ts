import { afterAll, describe, expect, it } from 'vitest';
import { hostBindings } from '../../../node-agent/bindings/host-bindings.js';
import { IsolatePool, primeIsolate, warmIsolate, type WarmIsolate } from '../../../node-agent/isolate/pool.js';
import { WorkerIsolate, type WorkerDefinition } from '../../../node-agent/isolate/worker-isolate.js';
import { SocketRegistry } from '../../../node-agent/sockets/sockets.js';

// The pool primes each isolate it keeps ready (__edgeWarm: one request through the shim's
// own handler, so a worker's first request does not compile the request path). A primed
// isolate must be indistinguishable to the worker from an unprimed one: no entry point
// left, ctx.waitUntil still refused at the top level, no handler of the warm-up reachable,
// and the platform globals open to the module, at its top level and in its requests, as on
// Workers.

const PROBE = `
import { waitUntil } from 'cloudflare:workers';
let topWaitUntil;
try { waitUntil(Promise.resolve()); topWaitUntil = 'allowed'; } catch (e) { topWaitUntil = e.message; }
// A top-level polyfill of a platform global works, and so does a patch made in a request.
Response.polyfilled = () => 'static';
ReadableStream.prototype.polyfilledMethod = function () { return 'proto'; };
const edge = Object.getOwnPropertyNames(globalThis).filter((n) => n.startsWith('__edge'));
export default {
  async fetch(request) {
    let assign;
    try { Headers.prototype.probed = () => 'patched'; assign = new Headers().probed(); } catch (e) { assign = e.constructor.name; }
    return Response.json({
      topWaitUntil, edge, assign,
      polyfill: Response.polyfilled() + ' ' + new ReadableStream().polyfilledMethod(),
      frozen: [Object.isFrozen(Response), Object.isFrozen(Headers.prototype), Object.isFrozen(URL), Object.isFrozen(console.log), Object.isFrozen(crypto.subtle), Object.isFrozen(performance.now)],
      url: request.url, accept: request.headers.get('accept'), body: await request.text(),
    });
  },
};`;

const def = (source: string, name: string): WorkerDefinition => ({
  key: `test/${name}`, name, source, digest: `sha256:${name}`,
  limits: { cpuMsPerRequest: 2000, memoryMiB: 128, subrequests: 5, wallMsPerRequest: 30_000 },
  env: { text: {} },
});
const hooks = () => ({ onLog: () => {}, onDispose: () => {}, sockets: new SocketRegistry({}), bindings: hostBindings() });

async function serve(source: string, warm: WarmIsolate, name: string): Promise<unknown> {
  const w = await WorkerIsolate.load(def(source, name), warm, hooks());
  try {
    const { id, response } = w.begin({ url: 'http://probe.test/p?q=1', method: 'POST', headers: [['accept', 'text/probe']], body: new TextEncoder().encode('sent').buffer as ArrayBuffer });
    const res = await response;
    await w.finish(id);
    return JSON.parse(new TextDecoder().decode(res.body as ArrayBuffer)) as unknown;
  } finally {
    w.dispose('shutdown');
  }
}

describe('pooled isolates are primed, and a primed isolate is a fresh one to its worker', () => {
  const pool = new IsolatePool({ size: 2, defaultMemoryMiB: 128 });
  afterAll(() => pool.close());

  it('a worker sees the same platform in a primed isolate as in an unprimed one', async () => {
    const unprimed = warmIsolate(128);
    const primed = warmIsolate(128);
    await primeIsolate(primed);
    expect(primed.prime).toBeUndefined();
    expect(primed.owner.current).toBeNull();
    const a = await serve(PROBE, unprimed, 'unprimed');
    const b = await serve(PROBE, primed, 'primed');
    expect(b).toEqual(a);
    expect(b).toEqual({
      topWaitUntil: 'waitUntil() can only be called while a request is being handled', edge: [], assign: 'patched',
      polyfill: 'static proto', frozen: [false, false, false, false, false, false], url: 'http://probe.test/p?q=1', accept: 'text/probe', body: 'sent',
    });
  });

  it('the warm-up\'s handler is not reachable: a worker without fetch is still refused', async () => {
    const primed = warmIsolate(128);
    await primeIsolate(primed);
    await expect(WorkerIsolate.load(def('export default { scheduled() {} };', 'nofetch'), primed, hooks())).rejects.toThrow(/has no fetch handler/);
  });

  it('an isolate a worker owns is never primed, and none twice', async () => {
    const owned = warmIsolate(128);
    const owner = {
      callbacks: () => { throw new Error('the worker\'s callbacks were used by the warm-up'); },
      answer: () => { throw new Error('the warm-up answered for the worker'); },
    };
    owned.owner.current = owner;
    await primeIsolate(owned);
    expect(owned.prime).toBeDefined();
    expect(owned.owner.current).toBe(owner);
    owned.isolate.dispose();
    const once = warmIsolate(128);
    await primeIsolate(once);
    await primeIsolate(once);
    expect(once.owner.current).toBeNull();
    once.isolate.dispose();
  });

  it('the pool hands out primed isolates, and refills with primed ones', async () => {
    await pool.start();
    const first = pool.take(128);
    expect(first.prime).toBeUndefined();
    first.isolate.dispose();
    for (let i = 0; i < 200 && pool.size < 2; i++) await new Promise((r) => setTimeout(r, 10));
    expect(pool.size).toBe(2);
    const again = pool.take(128);
    expect(again.prime).toBeUndefined();
    expect(await serve(PROBE, again, 'refilled')).toMatchObject({ edge: [], polyfill: 'static proto' });
  });
});
