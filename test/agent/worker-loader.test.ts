import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createLogger, type LogFields } from '../../common/log.js';
import { Agent } from '../../node-agent/agent.js';
import { OUTBOUND_BLOCKED } from '../../node-agent/bindings/host-bindings.js';
import { send } from './agent-harness.js';
import { startActorAgent, type ActorAgent } from './actor-agent.js';
import { SUBJECTS, type LogLine } from '../../common/nats.js';

// Worker Loader bindings (Dynamic Workers, issue 16) in an in-process agent serving a
// directory: load() and get(id) with fetch and RPC to the dynamic worker's entrypoints,
// WorkerCode.env values and capabilities, globalOutbound, and every sandbox guarantee:
// nothing of the parent or of another dynamic worker is visible, hostile dynamic code is
// contained with an exception the parent catches, console lines reach the parent's log
// tagged with the dynamic id, and another tenant's ids are its own.

const worker = (name: string, namespace: string, source: string, bindings?: Record<string, unknown>, memoryMiB = 64) => stringify({
  apiVersion: 'edge.isolates.dev/v1alpha1',
  kind: 'EdgeWorker',
  metadata: { name, namespace },
  spec: {
    routes: [{ host: `${name}.${namespace}.test` }],
    placement: { minWarmIsolates: 1 },
    limits: { cpuMsPerRequest: 500, memoryMiB, subrequests: 20, wallMsPerRequest: 10_000 },
    ...(bindings ? { bindings } : {}),
    source: { inline: source },
  },
});

// The parent: each path loads some dynamic code and reports what happened, as JSON.
const PARENT = `
import { RpcTarget } from 'cloudflare:workers';
class Tools extends RpcTarget {
  constructor() { super(); this.calls = 0; }
  lookup(key) { this.calls++; return 'tool ' + key + ' #' + this.calls; }
  fails() { throw new TypeError('tool refused'); }
}
globalThis.PARENT_GLOBAL = 'parent global';
let parentState = 'parent module state';
const code = (src, extra = {}) => ({ compatibilityDate: '2025-06-01', mainModule: 'index.js', modules: { 'index.js': src }, ...extra });
const show = (e) => ({ name: e.name, message: e.message });
let callbacks = 0;
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const q = url.searchParams;
    const body = request.method === 'POST' ? await request.json() : {};
    const out = {};
    try {
      switch (url.pathname) {
        case '/load': {
          const w = env.LOADER.load(code(body.src, { env: body.env ?? {}, ...(body.limits ? { limits: body.limits } : {}) }));
          const r = await w.getEntrypoint().fetch('http://dynamic/' + (q.get('p') ?? ''));
          out.status = r.status; out.text = await r.text();
          break;
        }
        case '/rpc': {
          const w = env.LOADER.load(code(body.src));
          const e = w.getEntrypoint();
          out.sum = await e.add(2, 3);
          out.named = await w.getEntrypoint('Named').hello('Ada');
          out.obj = await e.data();
          try { await e.fails(); } catch (err) { out.thrown = show(err); }
          try { await e.missing(); } catch (err) { out.missing = show(err); }
          break;
        }
        case '/get': {
          const id = q.get('id');
          const w = env.LOADER.get(id, async () => { callbacks++; return code(body.src); });
          const r = await w.getEntrypoint().fetch('http://dynamic/' + (q.get('p') ?? ''));
          out.text = await r.text(); out.callbacks = callbacks;
          break;
        }
        case '/caps': {
          const tools = new Tools();
          const w = env.LOADER.load(code(body.src, { env: { MATH: env.MATH, PLAIN: { n: 1, list: [1, 2], when: new Date(0), map: new Map([['k', 'v']]) }, TOOLS: tools, ADD: (a, b) => a + b } }));
          out.text = await (await w.getEntrypoint().fetch('http://dynamic/')).text();
          out.toolCalls = tools.calls;
          try { env.LOADER.load(code(body.src, { env: { F: { nested: () => 1 } } })); } catch (err) { out.fn = show(err); }
          break;
        }
        case '/outbound': {
          const mode = q.get('mode');
          const extra = mode === 'null' ? { globalOutbound: null } : mode === 'gate' ? { globalOutbound: env.GATE } : {};
          const w = env.LOADER.load(code(body.src, { env: { TARGET: body.target }, ...extra }));
          out.text = await (await w.getEntrypoint().fetch('http://dynamic/')).text();
          break;
        }
        case '/modules': {
          const wasm = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 96, 2, 127, 127, 1, 127, 3, 2, 1, 0, 7, 7, 1, 3, 97, 100, 100, 0, 0, 10, 9, 1, 7, 0, 32, 0, 32, 1, 106, 11]);
          const w = env.LOADER.load({ compatibilityDate: '2025-06-01', mainModule: 'src/main.js', modules: {
            'src/main.js': "import helper from './lib/helper.cjs'; import greeting from './greeting.txt'; import cfg from './cfg.json'; import add from './add.wasm'; import raw from './raw.bin'; import { shout } from './lib/shout.mjs';\\n"
              + "export default { fetch() { const i = new WebAssembly.Instance(add); return new Response([helper(2), shout(greeting), cfg.name, i.exports.add(20, 22), new Uint8Array(raw).length].join(' ')); } };",
            'src/lib/helper.cjs': 'module.exports = (x) => x * 10;',
            'src/lib/shout.mjs': 'export const shout = (s) => s.toUpperCase();',
            'src/greeting.txt': 'hello',
            'src/cfg.json': { json: { name: 'cfg' } },
            'src/add.wasm': { wasm: wasm.buffer },
            'src/raw.bin': { data: new Uint8Array([1, 2, 3]) },
          } });
          out.text = await (await w.getEntrypoint().fetch('http://dynamic/')).text();
          break;
        }
        case '/load-loop': {
          const n = Number(q.get('n'));
          const results = await Promise.allSettled(Array.from({ length: n }, () => env.LOADER.load(code('export default { fetch() { return new Response("x"); } };')).getEntrypoint().fetch('http://x/')));
          out.ok = results.filter((r) => r.status === 'fulfilled').length;
          out.errors = [...new Set(results.filter((r) => r.status === 'rejected').map((r) => r.reason.name + ': ' + r.reason.message.replace(/\\d+/g, 'N')))];
          break;
        }
        case '/get-loop': {
          const n = Number(q.get('n'));
          const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => env.LOADER.get('loop-' + i + '-' + Math.random(), async () => code(body.src)).getEntrypoint().fetch('http://x/')));
          out.errors = [...new Set(results.filter((r) => r.status === 'rejected').map((r) => r.reason.name + ': ' + r.reason.message))];
          break;
        }
        case '/neighbour': out.text = 'parent ok ' + parentState; break;
        default: return new Response('no route', { status: 404 });
      }
    } catch (err) {
      out.error = show(err);
    }
    return Response.json(out);
  },
};`;

const MATH = `
import { WorkerEntrypoint } from 'cloudflare:workers';
export default class extends WorkerEntrypoint { add(a, b) { return a + b; } }`;

// The gate every outbound request of a dynamic worker goes through when it is globalOutbound:
// it injects a credential the dynamic code never sees.
const GATE = `
export default {
  async fetch(request) {
    const headers = new Headers(request.headers);
    headers.set('authorization', 'Bearer gate-s3cret');
    headers.set('x-gate-saw', request.url);
    return fetch(request.url, { headers });
  },
};`;

describe('Worker Loader bindings (Dynamic Workers)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-loader-'));
  const logs: LogFields[] = [];
  let agent: Agent;
  let echo: Server;
  let echoUrl = '';
  const seen: { url: string; authorization: string | undefined; gate: string | undefined }[] = [];

  beforeAll(async () => {
    echo = createServer((req, res) => {
      seen.push({ url: req.url ?? '', authorization: req.headers.authorization, gate: req.headers['x-gate-saw'] as string | undefined });
      res.end(`echo ${req.url} auth=${req.headers.authorization ? 'yes' : 'no'}`);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoUrl = `http://127.0.0.1:${(echo.address() as AddressInfo).port}`;
    writeFileSync(join(dir, 'app.yaml'), [
      worker('parent', 'app', PARENT, {
        vars: { PARENT_SECRET: 'p-secret' },
        workerLoaders: [{ name: 'LOADER' }],
        services: [{ name: 'MATH', worker: 'math' }, { name: 'GATE', worker: 'gate' }],
      }),
      worker('math', 'app', MATH),
      worker('gate', 'app', GATE),
      // Another tenant with the same worker and binding names.
      worker('parent', 'tenant-b', PARENT, { workerLoaders: [{ name: 'LOADER' }] }),
      worker('neighbour', 'app', 'export default { fetch() { return new Response("neighbour ok"); } };'),
    ].join('---\n'));
    agent = await Agent.start({
      log: createLogger({}, (line) => { logs.push(JSON.parse(line) as LogFields); }, 'debug'),
      source: { kind: 'directory', dir },
      agentName: 'loader',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      peerListen: { host: '127.0.0.1', port: 0 },
      presenceTtlMs: 5_000,
      actorLogReplicas: 1,
      maxBodyBytes: 1024 * 1024,
      maxWebSocketMessageBytes: 1024 * 1024,
      poolSize: 4,
      egressAllow: ['127.0.0.1/32'],
      // Small, so the eviction test below can fill it.
      dynamicCache: { maxEntries: 8, maxBytes: 64 * 1024 * 1024, callerShare: 0.5 },
    });
  });

  afterAll(async () => {
    await agent?.stop();
    echo?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = async (path: string, body?: unknown, host = 'parent.app.test') => {
    const res = await send(agent.port, host, path, body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) });
    const text = await res.text();
    expect(res.status, text).toBe(200);
    return JSON.parse(text) as Record<string, unknown>;
  };

  it('load() runs the code at once: fetch() reaches its default export, with the plain env values it was handed', async () => {
    const src = `export default { async fetch(request, env) { return new Response(new URL(request.url).pathname + ' ' + env.GREETING + ' ' + env.N * 2); } };`;
    const t0 = performance.now();
    const r = await call('/load?p=hello', { src, env: { GREETING: 'hi', N: 21 } });
    // A rough figure for the report (speed is measured in bench/, not asserted here).
    console.log(`load() + first fetch through the parent, one HTTP request: ${(performance.now() - t0).toFixed(1)} ms`);
    expect(r).toEqual({ status: 200, text: '/hello hi 42' });
  });

  it('modules: js, mjs, cjs, text, json, wasm and data modules resolve among themselves (a module map)', async () => {
    expect(await call('/modules')).toEqual({ text: '20 HELLO cfg 42 3' });
  });

  it('getEntrypoint() serves JS RPC to the default and named WorkerEntrypoints; errors keep their name and message', async () => {
    const src = `
      import { WorkerEntrypoint } from 'cloudflare:workers';
      export class Named extends WorkerEntrypoint { hello(n) { return 'hello ' + n; } }
      export default class extends WorkerEntrypoint {
        add(a, b) { return a + b; }
        data() { return { list: [1, 2], when: new Date(5), big: typeof 10n }; }
        fails() { throw new RangeError('dynamic says no'); }
      }`;
    const r = await call('/rpc', { src });
    expect(r).toMatchObject({
      sum: 5, named: 'hello Ada',
      thrown: { name: 'RangeError', message: 'dynamic says no' },
      missing: { name: 'TypeError', message: 'The RPC receiver does not implement the method "missing".' },
    });
    expect(r.obj).toEqual({ list: [1, 2], when: new Date(5).toISOString(), big: 'bigint' });
  });

  it('get(id) calls the callback only when no warm copy exists; the warm copy keeps its module state', async () => {
    const src = `let n = 0; export default { fetch() { n++; return new Response('calls ' + n); } };`;
    const a1 = await call('/get?id=counter', { src });
    const a2 = await call('/get?id=counter', { src });
    expect(a1.text).toBe('calls 1');
    expect(a2.text).toBe('calls 2');
    // One callback across both requests (the parent counts in its module state; it may have
    // more than one isolate, so compare the difference within one isolate's count).
    expect(Number(a2.callbacks) - Number(a1.callbacks)).toBeLessThanOrEqual(0);
    const metrics = await (await fetch(`http://127.0.0.1:${agent.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/edge_dynamic_worker_loads_total\{[^}]*worker="app\/parent"[^}]*kind="get"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/edge_dynamic_worker_cache_hits_total\{[^}]*worker="app\/parent"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/edge_dynamic_worker_loads_total\{[^}]*kind="load"[^}]*\} [1-9]/);
  });

  it('a dynamic worker sees none of the parent\'s env, globals or module state, nor another dynamic worker\'s', async () => {
    const probe = `
      globalThis.mine = globalThis.mine ?? ('set by ' + (typeof ID === 'undefined' ? '?' : ID));
      export default { fetch(request, env) {
        let ps; try { ps = typeof parentState; } catch (e) { ps = e.name; }
        return Response.json({ env: Object.keys(env), parentGlobal: typeof globalThis.PARENT_GLOBAL, parentState: ps, mine: globalThis.mine, others: globalThis.other ?? null });
      } };`;
    const r1 = await call('/load', { src: `globalThis.other = 'leak';\n${probe}`, env: { ONLY: 1 } });
    const seen1 = JSON.parse(String(r1.text)) as Record<string, unknown>;
    expect(seen1).toMatchObject({ env: ['ONLY'], parentGlobal: 'undefined', parentState: 'undefined', others: 'leak' });
    // The same code under two ids: two isolates, nothing shared.
    const setter = `export default { fetch() { globalThis.count = (globalThis.count ?? 0) + 1; return new Response(String(globalThis.count) + ' ' + (globalThis.other ?? 'clean')); } };`;
    expect((await call('/get?id=twin-a', { src: setter })).text).toBe('1 clean');
    expect((await call('/get?id=twin-a', { src: setter })).text).toBe('2 clean');
    expect((await call('/get?id=twin-b', { src: setter })).text).toBe('1 clean');
    // A later load() sees nothing of the first one's global.
    const r2 = await call('/load', { src: probe });
    expect(JSON.parse(String(r2.text))).toMatchObject({ env: [], others: null });
  });

  it('the parent\'s own bindings, RpcTargets and functions passed in env work inside the dynamic worker (calls run in the parent); plain values are structured-cloned; a function nested in a value is refused', async () => {
    const src = `export default { async fetch(request, env) {
      let toolError; try { await env.TOOLS.fails(); } catch (e) { toolError = e.name + ': ' + e.message; }
      return Response.json({
        sum: await env.MATH.add(40, 2), plain: env.PLAIN.n, list: env.PLAIN.list, when: env.PLAIN.when instanceof Date, map: env.PLAIN.map.get('k'), keys: Object.keys(env).sort(),
        tool: await env.TOOLS.lookup('a') + ', ' + await env.TOOLS.lookup('b'), add: await env.ADD(2, 5), toolError,
      });
    } };`;
    const r = await call('/caps', { src });
    expect(JSON.parse(String(r.text))).toEqual({
      sum: 42, plain: 1, list: [1, 2], when: true, map: 'v', keys: ['ADD', 'MATH', 'PLAIN', 'TOOLS'],
      tool: 'tool a #1, tool b #2', add: 7, toolError: 'TypeError: tool refused',
    });
    // The RpcTarget's calls ran in the parent, on its object.
    expect(r.toolCalls).toBe(2);
    expect(r.fn).toMatchObject({ name: 'DataCloneError' });
  });

  it('globalOutbound: null makes fetch() throw; a service binding of the parent receives every fetch and adds a credential the code never sees', async () => {
    const src = `export default { async fetch(request, env) {
      try { const r = await fetch(env.TARGET + '/from-dynamic'); return new Response('fetched: ' + await r.text()); }
      catch (e) { return new Response('refused: ' + e.name + ': ' + e.message); }
    } };`;
    const before = seen.length;
    const blocked = await call('/outbound?mode=null', { src, target: echoUrl });
    expect(blocked.text).toBe(`refused: TypeError: ${OUTBOUND_BLOCKED}`);
    expect(seen.length).toBe(before);

    const gated = await call('/outbound?mode=gate', { src, target: echoUrl });
    expect(gated.text).toBe('fetched: echo /from-dynamic auth=yes');
    expect(seen.at(-1)).toEqual({ url: '/from-dynamic', authorization: 'Bearer gate-s3cret', gate: `${echoUrl}/from-dynamic` });
    expect(String(gated.text)).not.toContain('s3cret');

    // Absent: the parent's egress policy (here the agent's allowance for 127.0.0.1).
    const open = await call('/outbound', { src, target: echoUrl });
    expect(open.text).toBe('fetched: echo /from-dynamic auth=no');
  });

  it('console output reaches the parent\'s log tagged with the dynamic id', async () => {
    const src = `export default { fetch() { console.log('hello from dynamic code'); return new Response('ok'); } };`;
    await call('/get?id=chatty', { src });
    const line = logs.find((l) => l.worker === 'app/parent' && String(l.msg ?? l.message ?? '').includes('hello from dynamic code'));
    expect(line, JSON.stringify(logs.slice(-5))).toBeDefined();
    expect(JSON.stringify(line)).toContain('[dynamic chatty] hello from dynamic code');
  });

  it('a module that does not compile, throws or awaits a timer at load is an error the parent catches; its top level runs under the startup budgets', async () => {
    const bad = await call('/load', { src: 'export default {' });
    expect((bad.error as { message: string }).message).toMatch(/does not compile/);
    const throws = await call('/load', { src: 'throw new Error("top-level boom"); export default {};' });
    expect((throws.error as { message: string }).message).toMatch(/top-level boom/);
    const handler = await call('/load', { src: 'export default { fetch() { throw new SyntaxError("handler boom"); } };' });
    expect(handler.error).toEqual({ name: 'SyntaxError', message: 'handler boom' });
    // A dynamic worker's init runs behind its evaluate and ahead of its first call, on the
    // isolate's thread (LoadOptions.pipelineInit): what init refuses is still the call's error,
    // and a get(id) that failed so is not kept.
    const noFetch = await call('/load', { src: 'export default { scheduled() {} };' });
    expect((noFetch.error as { message: string }).message).toMatch(/has no fetch handler/);
    for (let i = 0; i < 2; i++) {
      const again = await call('/get?id=nofetch', { src: 'export default { scheduled() {} };' });
      expect((again.error as { message: string }).message).toMatch(/has no fetch handler/);
    }
    // A top-level await: init waits for the whole module.
    const tla = await call('/load', { src: 'const v = await Promise.resolve("awaited"); globalThis.later = v; export default { fetch() { return new Response(globalThis.later); } };' });
    expect(tla).toEqual({ status: 200, text: 'awaited' });
    // One that awaits a timer is still evaluating when init runs (workerd refuses timers at global scope): the call says so.
    const tlaTimer = await call('/load', { src: 'await new Promise((r) => setTimeout(r, 5)); export default { fetch() { return new Response("late"); } };' });
    expect((tlaTimer.error as { message: string }).message).toMatch(/top level \(global scope\) had not finished/);
    // The module is evaluated under the runtime's root module, queued with init ahead of the
    // first call (LoadOptions.pipelineInit): the hand-over global the root takes is gone before
    // the worker's top level runs, and its specifiers are not the worker's to import.
    const top = await call('/load', { src: 'const seen = Object.getOwnPropertyNames(globalThis).filter((n) => n.startsWith("__edge")); export default { fetch() { return new Response(JSON.stringify(seen)); } };' });
    expect(top).toEqual({ status: 200, text: '[]' });
    const withWorkers = await call('/load', { src: 'import { WorkerEntrypoint } from "cloudflare:workers"; const seen = Object.getOwnPropertyNames(globalThis).filter((n) => n.startsWith("__edge")); export default class extends WorkerEntrypoint { fetch() { return new Response(JSON.stringify(seen)); } };' });
    expect(withWorkers).toEqual({ status: 200, text: '[]' });
    for (const specifier of ['edge-internal:loaded', 'edge-internal:worker']) {
      const imp = await call('/load', { src: `import x from '${specifier}'; export default { fetch() { return new Response(String(x)); } };` });
      expect((imp.error as { message: string }).message).toMatch(new RegExp(`imports "${specifier}"`));
    }
    // The top level runs under the startup budgets, not the first call's: 150 ms of CPU there
    // with a 50 ms request limit loads and serves; an endless one is stopped at the startup limit.
    const heavy = await call('/load', { src: 'const t = Date.now(); let n = 0; while (Date.now() - t < 150) n++; export default { fetch() { return new Response("heavy " + (n > 0)); } };', limits: { cpuMs: 50 } });
    expect(heavy).toEqual({ status: 200, text: 'heavy true' });
    const endless = await call('/load', { src: 'for (;;) {} export default { fetch() { return new Response("never"); } };', limits: { cpuMs: 50 } });
    expect((endless.error as { message: string }).message).toMatch(/top level \(global scope\) exceeded the startup CPU limit/);
    const hoard = await call('/load', { src: 'const a = []; for (;;) a.push(new Array(100000).fill(Math.random())); export default { fetch() { return new Response("never"); } };', limits: { memoryMiB: 32 } });
    expect((hoard.error as { message: string }).message).toMatch(/ran out of memory while loading \(its limit is 32 MiB\)/);
    // Tenant code inside init (a getter on the default export that spins) is stopped by its budgets.
    const getter = await call('/load', { src: 'export default { get fetch() { for (;;) {} } };', limits: { cpuMs: 50 } });
    expect((getter.error as { message: string }).message).toMatch(/CPU limit/);
    expect((await call('/neighbour')).text).toBe('parent ok parent module state');
  });

  it('hostile dynamic code (a loop, a memory bomb, a wasm bomb, a timer flood) is contained: the parent catches it and it and its neighbours keep serving', async () => {
    const loop = await call('/load', { src: 'export default { fetch() { for (;;) {} } };', limits: { cpuMs: 50 } });
    expect((loop.error as { message: string }).message).toMatch(/exceeded its CPU limit \(50 ms per request\)/);
    const bomb = await call('/load', { src: 'export default { fetch() { const a = []; for (;;) a.push(new Array(100000).fill(Math.random())); } };', limits: { memoryMiB: 32 } });
    expect((bomb.error as { message: string }).message).toMatch(/memory limit/);
    const wasm = await call('/load', {
      src: 'export default { fetch() { const keep = []; for (let i = 0; i < 12; i++) keep.push(new WebAssembly.Memory({ initial: 1024 })); return new Response(String(keep.length)); } };',
      limits: { memoryMiB: 32 },
    });
    expect(wasm.error).toMatchObject({ name: 'RangeError', message: expect.stringMatching(/WebAssembly memory would put this worker over its memory limit/) });
    const timers = await call('/load', { src: 'export default { fetch() { for (let i = 0; i < 100000; i++) setTimeout(() => {}, 3600000); return new Response("all set"); } };' });
    expect(timers.error).toMatchObject({ name: 'RangeError', message: expect.stringMatching(/pending timers/) });
    expect((await call('/neighbour')).text).toBe('parent ok parent module state');
    expect(await (await send(agent.port, 'neighbour.app.test', '/')).text()).toBe('neighbour ok');
    // A cached one killed for its limit is replaced: the next call is served.
    const spin = `let n = 0; export default { fetch(request) { if (request.url.endsWith('/spin')) for (;;) {} return new Response('served ' + ++n); } };`;
    expect((await call('/get?id=spinner', { src: spin })).text).toBe('served 1');
    const first = await call('/get?id=spinner&p=spin', { src: spin });
    expect((first.error as { message: string }).message).toMatch(/CPU limit/);
    // A fresh isolate from the same code (its module state starts again).
    expect((await call('/get?id=spinner', { src: spin })).text).toBe('served 1');
  });

  it('get()\'s LRU evicts by count and by heap, a flooding caller its own first; an evicted id is loaded again through its callback, its state fresh', async () => {
    const counter = `let n = 0; export default { fetch() { n++; return new Response('calls ' + n); } };`;
    // Another tenant's warm worker, which the flood below must not push out.
    expect((await call('/get?id=survivor', { src: counter }, 'parent.tenant-b.test')).text).toBe('calls 1');
    expect((await call('/get?id=lru-0', { src: counter })).text).toBe('calls 1');
    expect((await call('/get?id=lru-0', { src: counter })).text).toBe('calls 2');
    for (let i = 1; i <= 8; i++) await call(`/get?id=lru-${i}`, { src: counter });
    // lru-0 was app/parent's least recently used, over its half of the 8 entries: gone, so the callback runs and the state starts again.
    expect((await call('/get?id=lru-0', { src: counter })).text).toBe('calls 1');
    expect((await call('/get?id=survivor', { src: counter }, 'parent.tenant-b.test')).text).toBe('calls 2');
    // Three workers holding ~20 MiB each do not fit in the caller's 32 MiB: the oldest go, the newest is kept.
    const big = `const keep = new Array(20 * 1024 * 1024 / 8).fill(1.5); export default { fetch() { return new Response('big ' + keep.length); } };`;
    for (const id of ['big-1', 'big-2', 'big-3']) expect((await call(`/get?id=${id}`, { src: big })).text).toBe('big 2621440');
    expect((await call('/get?id=survivor', { src: counter }, 'parent.tenant-b.test')).text).toBe('calls 3');
    const metrics = await (await fetch(`http://127.0.0.1:${agent.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/edge_dynamic_worker_evictions_total\{[^}]*worker="app\/parent"[^}]*reason="caller"[^}]*\} [1-9]/);
    expect(metrics).not.toMatch(/edge_dynamic_worker_evictions_total\{[^}]*worker="tenant-b\/parent"/);
    const cached = /edge_dynamic_worker_cached_heap_bytes(?:\{[^}]*\})? (\d+)/.exec(metrics);
    expect(Number(cached?.[1])).toBeLessThanOrEqual(64 * 1024 * 1024);
  });

  it('a loop of loads in one request is bounded (16 started per request, each a subrequest); the parent catches it', async () => {
    const r = await call('/load-loop?n=40');
    // The parent's limits.subrequests is 20: each load and each call is one; at most 16 loads per request.
    expect(Number(r.ok)).toBeLessThanOrEqual(16);
    expect(Number(r.ok)).toBeGreaterThan(0);
    expect(String(r.errors)).toMatch(/the most one request may start/);
    // get() with fresh ids is bounded the same way.
    const src = 'export default { fetch() { return new Response("x"); } };';
    const many = await call('/get-loop?n=30', { src });
    expect(String(many.errors)).toMatch(/the most one request may start/);
    expect((await call('/neighbour')).text).toBe('parent ok parent module state');
  });

  it('another tenant\'s ids are its own: the same id in another namespace is another dynamic worker', async () => {
    const a = `export default { fetch() { return new Response('tenant app code'); } };`;
    const b = `export default { fetch() { return new Response('tenant b code'); } };`;
    expect((await call('/get?id=shared', { src: a })).text).toBe('tenant app code');
    expect((await call('/get?id=shared', { src: b }, 'parent.tenant-b.test')).text).toBe('tenant b code');
    expect((await call('/get?id=shared', { src: b })).text).toBe('tenant app code');
  });
});

// A Durable Object can hold a loader too: an agent keeping its generated tools warm.
const AGENT_WORKER = `
import { DurableObject } from 'cloudflare:workers';
export class Agent extends DurableObject {
  loads = 0;
  async fetch(request) {
    const w = this.env.LOADER.get('tool', async () => {
      this.loads++;
      return { compatibilityDate: '2025-06-01', mainModule: 't.js', modules: { 't.js': "let n = 0; export default { fetch() { console.log('tool ran'); return new Response('tool call ' + ++n); } };" } };
    });
    const r = await w.getEntrypoint().fetch('http://tool/');
    return new Response(await r.text() + ', loads ' + this.loads);
  }
}
export default { fetch(request, env) { return env.AGENTS.get(env.AGENTS.idFromName('a')).fetch(request); } };`;

describe('a Worker Loader in a Durable Object', () => {
  let a: ActorAgent;
  beforeAll(async () => {
    a = await startActorAgent({ name: 'loader-actor' });
    await a.publish({ namespace: 'app', name: 'agents', source: AGENT_WORKER, host: 'agents.test', actors: { AGENTS: { name: 'agents', className: 'Agent', idleTimeoutSeconds: 60 } }, workerLoaders: ['LOADER'] });
  });
  afterAll(async () => { await a?.stop(); });

  it('keeps its generated tool warm across its requests: one callback, the tool\'s state kept; its console lines are on the caller\'s `edge logs` stream', async () => {
    const lines: LogLine[] = [];
    const sub = a.nc.subscribe(SUBJECTS.logs('app', 'agents'), { callback: (_err, m) => { lines.push(JSON.parse(new TextDecoder().decode(m.data)) as LogLine); } });
    const get = async () => {
      for (let i = 0; ; i++) {
        const res = await send(a.port, 'agents.test', '/');
        if (res.status === 200 || i > 100) return { status: res.status, text: await res.text() };
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    expect(await get()).toEqual({ status: 200, text: 'tool call 1, loads 1' });
    expect(await get()).toEqual({ status: 200, text: 'tool call 2, loads 1' });
    await a.nc.flush();
    for (let i = 0; i < 50 && !lines.some((l) => l.message === '[dynamic tool] tool ran'); i++) await new Promise((r) => setTimeout(r, 50));
    sub.unsubscribe();
    expect(lines.find((l) => l.message === '[dynamic tool] tool ran')).toMatchObject({ worker: 'app/agents', level: 'log' });
  });
});
