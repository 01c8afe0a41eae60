import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestAgent, type TestAgent } from './agent-harness.js';

// A hostile or broken worker is contained: its request fails with a status and a body
// that say which limit or fault, its isolate is replaced, and a healthy worker keeps
// answering correctly the whole time.

const HEALTHY = `
let n = 0;
export default { async fetch(request) { n += 1; return new Response('healthy ' + n); } };
`;

const hostile = (body: string) => `export default { async fetch(request, env, ctx) { ${body} } };`;

describe('containment', () => {
  let a: TestAgent;
  beforeAll(async () => {
    a = await startTestAgent([
      { name: 'healthy', source: HEALTHY },
      { name: 'echo', source: hostile('return new Response(await request.arrayBuffer());') },
      { name: 'spin', source: hostile('for (;;) {}') },
      { name: 'spin-later', source: hostile('await null; for (;;) {}') },
      { name: 'bomb', source: hostile('const keep = []; for (;;) keep.push(new Array(1e6).fill(7));'), limits: { memoryMiB: 32, cpuMsPerRequest: 10_000 } },
      // A generous CPU limit: this is about the 500 and what it says, not the CPU limit (a
      // deep stack on a loaded machine can take longer than the default 50 ms to overflow).
      { name: 'recurse', source: hostile('const f = (x) => f(x + 1) + 1; return new Response(String(f(0)));'), limits: { cpuMsPerRequest: 2000 } },
      { name: 'throws', source: hostile('throw new Error("secret internal detail");') },
      { name: 'hangs', source: hostile('return new Promise(() => {});'), limits: { wallMsPerRequest: 300 } },
      { name: 'not-a-response', source: hostile('return "just a string";') },
      { name: 'hostile-error', source: hostile('throw { get stack() { for (;;) {} }, get message() { for (;;) {} } };') },
      {
        name: 'map-trap',
        source: hostile(`
          const spin = function () { for (;;) {} };
          Map.prototype.get = spin; Map.prototype.set = spin; Map.prototype.delete = spin;
          return new Response('trapped');
        `),
      },
      {
        name: 'huge-stream',
        // 100 MB streamed in 64 KiB chunks: it must flow through without the agent or the
        // isolate holding it all.
        source: hostile(`
          let sent = 0;
          const chunk = new Uint8Array(65536).fill(120);
          return new Response(new ReadableStream({
            pull(c) { if (sent >= 100 * 1024 * 1024) { c.close(); return; } c.enqueue(chunk); sent += chunk.length; },
          }));
        `),
        limits: { memoryMiB: 64, cpuMsPerRequest: 20_000, wallMsPerRequest: 60_000 },
      },
      { name: 'huge-string', source: hostile('return new Response("x".repeat(100 * 1024 * 1024));'), limits: { memoryMiB: 64, cpuMsPerRequest: 10_000 } },
      {
        name: 'escape',
        source: hostile(`
          const out = {};
          try { out.ctorProcess = (function () { return this; }).constructor.constructor('return typeof process')(); } catch (e) { out.ctorProcess = 'threw ' + e.name; }
          try { out.ctorGlobalProcess = typeof ({}).constructor.constructor('return globalThis.process')(); } catch (e) { out.ctorGlobalProcess = 'threw ' + e.name; }
          out.require = typeof require;
          out.process = typeof process;
          try { await import('node:fs'); out.dynamicImport = 'loaded'; } catch (e) { out.dynamicImport = 'refused'; }
          out.globals = Object.getOwnPropertyNames(globalThis).filter((k) => k.startsWith('__edge') || k === 'host' || k === 'ivm');
          return Response.json(out);
        `),
      },
      {
        name: 'tamper',
        source: `const Real = Response;
        export default { async fetch(request) {
          const url = new URL(request.url);
          if (url.pathname === '/tamper') {
            const attempts = {};
            Object.prototype.polluted = 'yes';
            Array.prototype.push = function () { return -1; };
            try { Response.json = () => 'fake'; attempts.responseJson = 'replaced'; } catch (e) { attempts.responseJson = e.name; }
            try { Headers.prototype.get = () => 'fake'; attempts.headersGet = 'replaced'; } catch (e) { attempts.headersGet = e.name; }
            try { globalThis.Response = function Fake() {}; attempts.response = 'replaced'; } catch (e) { attempts.response = e.name; }
            return new Real(JSON.stringify(attempts));
          }
          return new Real(JSON.stringify({ headersGet: new Headers({ a: '1' }).get('a'), response: globalThis.Response.name, polluted: ({}).polluted }), { headers: { 'x-after': 'tamper' } });
        } };`,
      },
      {
        name: 'observer',
        source: hostile(`
          const probe = [];
          probe.push(1);
          return Response.json({ polluted: ({}).polluted ?? null, pushWorks: probe.length === 1 });
        `),
      },
    ], { maxBodyBytes: 1024 * 1024 });
  });
  afterAll(async () => { await a?.stop(); });

  /** Runs `attack` while a healthy worker is hammered; every healthy answer must be right. */
  async function whileHealthy<T>(attack: () => Promise<T>): Promise<T> {
    let stop = false;
    const seen: string[] = [];
    const loop = (async () => {
      while (!stop) {
        const r = await a.get('healthy.test');
        seen.push(`${r.status} ${(await r.text()).replace(/\d+$/, 'N')}`);
      }
    })();
    try {
      return await attack();
    } finally {
      stop = true;
      await loop;
      expect(seen.length).toBeGreaterThan(0);
      expect(new Set(seen)).toEqual(new Set(['200 healthy N']));
    }
  }

  it('an infinite loop gets a 503 naming the CPU limit, and the next request works again', async () => {
    const r = await whileHealthy(() => a.get('spin.test'));
    expect(r.status).toBe(503);
    expect(await r.text()).toMatch(/worker default\/spin exceeded its CPU limit \(50 ms per request\)/);
    const r2 = await a.get('spin-later.test');
    expect(r2.status).toBe(503);
    expect(await r2.text()).toContain('CPU limit');
  });

  it('a memory bomb gets a 503 naming the memory limit', async () => {
    const r = await whileHealthy(() => a.get('bomb.test'));
    expect(r.status).toBe(503);
    expect(await r.text()).toMatch(/exceeded its memory limit \(32 MiB\)/);
  });

  it('a 100 MB streamed response reaches the client whole while a 64 MiB isolate serves it', async () => {
    const received = await whileHealthy(() => new Promise<number>((resolveSize, reject) => {
      const r = httpRequest({ host: '127.0.0.1', port: a.port, path: '/', headers: { host: 'huge-stream.test' } }, (res) => {
        let size = 0;
        res.on('data', (c: Buffer) => { size += c.length; });
        res.on('end', () => resolveSize(size));
        res.on('error', reject);
      });
      r.on('error', reject);
      r.end();
    }));
    expect(received).toBe(100 * 1024 * 1024);
  });

  it('a 100 MB string body hits the memory limit instead of the agent', async () => {
    const r = await whileHealthy(() => a.get('huge-string.test'));
    expect(r.status).toBe(503);
    expect(await r.text()).toContain('memory limit');
  });

  it('deep recursion and a thrown error are 500s that do not leak the error text', async () => {
    for (const name of ['recurse', 'throws']) {
      const r = await whileHealthy(() => a.get(`${name}.test`));
      expect(r.status).toBe(500);
      const body = await r.text();
      expect(body).toMatch(new RegExp(`worker default/${name} threw an exception \\(ray [0-9a-f]+\\)`));
      expect(body).not.toContain('secret internal detail');
    }
    expect(a.logs.some((l) => l.msg === 'worker threw an exception' && String(l.error).includes('secret internal detail'))).toBe(true);
    expect(a.logs.some((l) => l.worker === 'default/recurse' && /Maximum call stack/.test(String(l.error)))).toBe(true);
  });

  it('a promise that never settles is cut at the wall-time limit with a 504', async () => {
    const t0 = performance.now();
    const r = await whileHealthy(() => a.get('hangs.test'));
    expect(r.status).toBe(504);
    expect(await r.text()).toContain('wall-time limit (300 ms per request)');
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('a handler returning something else than a Response is a 500', async () => {
    const r = await a.get('not-a-response.test');
    expect(r.status).toBe(500);
    expect(a.logs.some((l) => l.worker === 'default/not-a-response' && /returned string, not a Response/.test(String(l.error)))).toBe(true);
  });

  it('an error object with hostile getters or trapped intrinsics cannot hang the agent', async () => {
    const r = await whileHealthy(() => a.get('hostile-error.test'));
    expect(r.status).toBe(503);
    expect(await r.text()).toContain('CPU limit');
    // Trapping Map hurts only the worker that did it: its request runs into the CPU limit.
    const m = await whileHealthy(() => a.get('map-trap.test'));
    expect(m.status).toBe(503);
    expect(await m.text()).toContain('CPU limit');
  });

  it('worker code cannot reach the host: no process, no require, no import, no bridge globals', async () => {
    const r = await a.get('escape.test');
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({
      ctorProcess: 'undefined', ctorGlobalProcess: 'undefined', require: 'undefined', process: 'undefined',
      dynamicImport: 'refused', globals: [],
    });
  });

  it('tampering with globals stays in the worker\'s own isolate, and its requests are still served', async () => {
    const t = await a.get('tamper.test', '/tamper');
    expect(t.status).toBe(200);
    // Its globals are its own to change, as on Workers.
    expect(await t.json()).toEqual({ response: 'replaced', responseJson: 'replaced', headersGet: 'replaced' });
    // Its next request sees its own changes; the runtime still reads the response it returns.
    const again = await a.get('tamper.test', '/again');
    expect(again.status).toBe(200);
    expect(again.headers.get('x-after')).toBe('tamper');
    expect(await again.json()).toEqual({ headersGet: 'fake', response: 'Fake', polluted: 'yes' });
    // Another worker never sees the pollution.
    const other = await a.get('observer.test');
    expect(await other.json()).toEqual({ polluted: null, pushWorks: true });
  });

  it('a request body over the limit gets a 413, declared or streamed', async () => {
    const big = new Uint8Array(2 * 1024 * 1024);
    const declared = await whileHealthy(() => a.get('healthy.test', '/', { method: 'POST', body: big }));
    expect(declared.status).toBe(413);
    expect(await declared.text()).toMatch(/over the 1048576-byte limit/);
    const streamed = await a.get('echo.test', '/', {
      method: 'POST',
      body: new ReadableStream({ start(c) { c.enqueue(big); c.close(); } }),
      duplex: 'half',
    } as RequestInit);
    expect(streamed.status).toBe(413);
  });

  it('malformed HTTP gets a 400 and never reaches a worker', async () => {
    const reply = await new Promise<string>((resolveReply, reject) => {
      const s = connect(a.port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: healthy.test\r\nBad Header Line\r\n\r\n'));
      let data = '';
      s.on('data', (d) => { data += d.toString(); });
      s.on('end', () => resolveReply(data));
      s.on('error', reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 400 Bad Request/);
  });

  it('counts disposals by reason in /metrics', async () => {
    const text = await a.agent.metrics.registry.metrics();
    expect(text).toMatch(/edge_isolate_disposals_total\{worker="default\/spin",reason="cpu"\} [1-9]/);
    expect(text).toMatch(/edge_isolate_disposals_total\{worker="default\/bomb",reason="memory"\} [1-9]/);
    expect(text).toMatch(/edge_isolate_disposals_total\{worker="default\/hangs",reason="wall"\} [1-9]/);
  });
});
