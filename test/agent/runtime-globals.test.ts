import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync, gzipSync, deflateRawSync, inflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { startTestAgent, type TestAgent } from './agent-harness.js';

// The runtime globals Workers has (issue 15, item 3), in real isolates behind the real HTTP
// front: scheduler.wait, navigator, request.signal on client disconnect, request.cf,
// Compression/DecompressionStream, EventTarget and structuredClone details, and what a
// client sees when a response stream fails before and after its first byte.

/** What a raw HTTP client saw: the status (0: no response at all), the bytes, and whether the body ended cleanly. */
interface RawOutcome { status: number; body: string; ended: boolean; error: string | undefined }

function rawGet(port: number, host: string, path = '/'): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host } }, (res: IncomingMessage) => {
      let body = '';
      let ended = false;
      res.setEncoding('latin1');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => { ended = true; });
      res.on('error', (err) => resolve({ status: res.statusCode ?? 0, body, ended, error: err.message }));
      res.on('close', () => resolve({ status: res.statusCode ?? 0, body, ended, error: undefined }));
    });
    req.on('error', (err) => resolve({ status: 0, body: '', ended: false, error: err.message }));
    req.end();
  });
}

const GLOBALS = `
export default {
  async fetch(request) {
    const out = {};
    out.userAgent = navigator.userAgent;
    out.hardwareConcurrency = navigator.hardwareConcurrency;
    out.cf = request.cf;
    out.connectingIp = request.headers.get('cf-connecting-ip');
    out.country = request.headers.get('cf-ipcountry');
    await scheduler.wait(5);
    out.waited = true;
    out.preAborted = await scheduler.wait(10, { signal: AbortSignal.abort('no') }).then(() => 'resolved', (e) => String(e));
    const ac = new AbortController();
    const w = scheduler.wait(60000, { signal: ac.signal }).then(() => 'resolved', (e) => e.name);
    ac.abort();
    out.midAborted = await w;
    out.copySignal = new Request(request).signal instanceof AbortSignal;
    out.types = ['TextEncoderStream', 'TextDecoderStream', 'CompressionStream', 'DecompressionStream'].map((n) => typeof globalThis[n]);
    return Response.json(out);
  },
};`;

const SCHEDULER_FLOOD = `
export default {
  async fetch() {
    // Long enough that every wait is still pending when the last is asked for, however slowly
    // the host takes them in (with 50 ms, a CI run under load saw the first ones fire before
    // the later ones arrived, and none refused).
    const results = await Promise.allSettled(Array.from({ length: 5000 }, () => scheduler.wait(3000)));
    const refused = results.filter((r) => r.status === 'rejected');
    return Response.json({ fulfilled: results.length - refused.length, refused: refused.length, reason: refused[0] ? String(refused[0].reason) : '' });
  },
};`;

const COMPRESSION = `
async function pipe(bytes, stream) {
  return new Uint8Array(await new Response(new Response(bytes).body.pipeThrough(stream)).arrayBuffer());
}
export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/roundtrip') {
      const text = 'hello compression '.repeat(1000);
      const out = {};
      for (const f of ['gzip', 'deflate', 'deflate-raw']) {
        const packed = await pipe(new TextEncoder().encode(text), new CompressionStream(f));
        const back = new TextDecoder().decode(await pipe(packed, new DecompressionStream(f)));
        out[f] = { packed: packed.length, same: back === text };
      }
      out.badFormat = (() => { try { new CompressionStream('brotli'); return 'accepted'; } catch (e) { return e.name; } })();
      out.corrupt = await pipe(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), new DecompressionStream('gzip')).then(() => 'accepted', (e) => e.name);
      return Response.json(out);
    }
    if (url.pathname === '/gunzip') {
      return new Response(request.body.pipeThrough(new DecompressionStream(url.searchParams.get('f') ?? 'gzip')));
    }
    if (url.pathname === '/gunzip-whole') {
      const bytes = await new Response(request.body.pipeThrough(new DecompressionStream('gzip'))).arrayBuffer();
      return new Response(String(bytes.byteLength));
    }
    if (url.pathname === '/gzip') {
      return new Response(request.body.pipeThrough(new CompressionStream(url.searchParams.get('f') ?? 'gzip')));
    }
    return new Response('ok');
  },
};`;

const EVENTS_AND_CLONE = `
export default {
  async fetch() {
    const out = {};
    const t = new EventTarget();
    const seen = [];
    t.addEventListener('x', () => seen.push('once'), { once: true });
    const ac = new AbortController();
    t.addEventListener('x', () => seen.push('signal'), { signal: ac.signal });
    t.addEventListener('x', { handleEvent(e) { seen.push('handleEvent:' + e.type); } });
    t.addEventListener('x', (e) => { seen.push('stopper'); e.stopImmediatePropagation(); });
    t.addEventListener('x', () => seen.push('never'));
    t.dispatchEvent(new Event('x'));
    ac.abort();
    t.dispatchEvent(new Event('x'));
    out.events = seen;

    const cyc = { name: 'root' };
    cyc.self = cyc;
    const sparse = [1, , 3];
    sparse[10] = 'ten';
    const buf = new ArrayBuffer(8);
    new Uint8Array(buf).set([1, 2, 3, 4, 5, 6, 7, 8]);
    const src = {
      date: new Date(1234567890), re: /a+b/gi, map: new Map([[1, { a: 1 }]]), set: new Set(['s']),
      buf, view: new DataView(buf, 2, 4), u16: new Uint16Array(buf, 2, 2), big: 12345678901234567890n,
      boxed: [Object(1), Object('s'), Object(true), Object(5n)], err: new RangeError('r', { cause: 'c' }),
      blob: new Blob(['blob text'], { type: 'text/plain' }), sparse, cyc,
    };
    const c = structuredClone(src);
    out.clone = {
      date: c.date instanceof Date && c.date.getTime() === 1234567890 && c.date !== src.date,
      re: c.re instanceof RegExp && c.re.source === 'a+b' && c.re.flags === 'gi',
      map: c.map.get(1).a === 1 && c.map.get(1) !== src.map.get(1),
      set: c.set.has('s'),
      shared: c.view.buffer === c.buf && c.u16.buffer === c.buf && c.buf !== buf,
      view: c.view.getUint8(0) === 3 && c.u16[0] === new Uint16Array(buf, 2, 2)[0],
      big: c.big === src.big,
      boxed: c.boxed.map((b) => typeof b + ':' + b.valueOf()),
      err: c.err instanceof RangeError && c.err.message === 'r' && c.err.cause === 'c',
      blob: c.blob instanceof Blob && (await c.blob.text()) === 'blob text' && c.blob.type === 'text/plain',
      sparse: c.sparse.length === 11 && !(1 in c.sparse) && c.sparse[10] === 'ten',
      cycle: c.cyc.self === c.cyc && c.cyc !== cyc,
    };
    out.refused = [() => {}, Symbol('s'), new WeakMap(), Promise.resolve(), new Request('https://x.test/')].map((v) => {
      try { structuredClone(v); return 'cloned'; } catch (e) { return e.name; }
    });
    return Response.json(out);
  },
};`;

const STREAM_FAILURES = `
export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/before') {
      return new Response(new ReadableStream({ pull() { throw new Error('failed before the first byte'); } }));
    }
    if (url.pathname === '/before-later') {
      return new Response(new ReadableStream({ async pull(c) { await scheduler.wait(20); c.error(new Error('failed a little later')); } }));
    }
    if (url.pathname === '/after') {
      let n = 0;
      return new Response(new ReadableStream({
        async pull(c) {
          if (n++ === 0) { c.enqueue(new TextEncoder().encode('first part;')); return; }
          await scheduler.wait(5);
          throw new Error('failed after the first byte');
        },
      }));
    }
    return new Response('ok');
  },
};`;

let upstreamHeld: IncomingMessage[] = [];
let upstreamClosed = 0;
const upstream = createServer((req) => {
  upstreamHeld.push(req);
  req.socket.once('close', () => { upstreamClosed += 1; });
});

const disconnectSource = (upstreamPort: number) => `
export default {
  async fetch(request) {
    const url = new URL(request.url);
    request.signal.addEventListener('abort', () => {
      console.log('request aborted: ' + request.signal.reason.name + ': ' + request.signal.reason.message);
    });
    if (url.pathname === '/fetch') {
      try {
        await fetch('http://127.0.0.1:${upstreamPort}/', { signal: request.signal });
      } catch (e) {
        console.log('fetch cancelled: ' + e.name);
      }
      return new Response('late');
    }
    await scheduler.wait(60000, { signal: request.signal }).catch((e) => console.log('wait cancelled: ' + e.name));
    return new Response('late');
  },
};`;

describe('runtime globals', () => {
  let a: TestAgent;
  beforeAll(async () => {
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    const upstreamPort = (upstream.address() as AddressInfo).port;
    a = await startTestAgent([
      { name: 'globals', source: GLOBALS },
      { name: 'flood', source: SCHEDULER_FLOOD, limits: { cpuMsPerRequest: 2000, wallMsPerRequest: 15_000 } },
      { name: 'zip', source: COMPRESSION, limits: { cpuMsPerRequest: 2000, memoryMiB: 64 } },
      { name: 'clone', source: EVENTS_AND_CLONE, limits: { cpuMsPerRequest: 500 } },
      { name: 'streams', source: STREAM_FAILURES },
      { name: 'gone', source: disconnectSource(upstreamPort), limits: { wallMsPerRequest: 60_000, subrequests: 2 } },
    ], { trustedProxies: ['127.0.0.1'], colo: 'eu-test-1', egressAllow: [`127.0.0.1:${upstreamPort}`] });
  });
  afterAll(async () => {
    await a?.stop();
    for (const r of upstreamHeld) r.socket.destroy();
    upstream.close();
  });

  it('has navigator, scheduler.wait (with its signal) and request.cf with what the agent knows', async () => {
    const res = await a.get('globals.test', '/', { headers: { 'cf-ipcountry': 'NL', 'cf-region': 'North Holland', 'cf-connecting-ip': '203.0.113.9' } });
    expect(res.status).toBe(200);
    const out = await res.json() as Record<string, unknown>;
    expect(out).toMatchObject({
      userAgent: 'Cloudflare-Workers', hardwareConcurrency: 1, waited: true, preAborted: 'no', midAborted: 'AbortError', copySignal: true,
      connectingIp: '203.0.113.9', country: 'NL',
      cf: { httpProtocol: 'HTTP/1.1', colo: 'eu-test-1', country: 'NL', region: 'North Holland' },
      types: ['function', 'function', 'function', 'function'],
    });
    // Workers has no tlsVersion for plain HTTP, and the agent does not terminate TLS.
    expect(out.cf).not.toHaveProperty('tlsVersion');
  });

  it('believes location headers only from a trusted proxy: from anyone else they are dropped', async () => {
    const untrusted = await startTestAgent([{ name: 'globals', source: GLOBALS }]);
    try {
      const res = await untrusted.get('globals.test', '/', { headers: { 'cf-ipcountry': 'XX', 'cf-region': 'Forged' } });
      const out = await res.json() as { cf: Record<string, string>; country: string | null };
      expect(out.cf).toEqual({ httpProtocol: 'HTTP/1.1' });
      expect(out.country).toBeNull();
    } finally {
      await untrusted.stop();
    }
  });

  it('holds a scheduler.wait flood to the per-isolate timer bound, and the isolate serves on', async () => {
    const res = await a.get('flood.test');
    expect(res.status).toBe(200);
    const out = await res.json() as { fulfilled: number; refused: number; reason: string };
    expect(out.refused).toBeGreaterThan(0);
    expect(out.fulfilled).toBeGreaterThan(0);
    expect(out.reason).toMatch(/pending timers/);
    expect((await a.get('flood.test')).status).toBe(200);
  });

  it('compresses and decompresses gzip, deflate and deflate-raw, interoperating with zlib', async () => {
    const out = await (await a.get('zip.test', '/roundtrip')).json() as Record<string, unknown>;
    for (const f of ['gzip', 'deflate', 'deflate-raw']) expect(out[f]).toMatchObject({ same: true });
    expect(out.badFormat).toBe('TypeError');
    expect(out.corrupt).toBe('TypeError');

    const text = 'from node zlib '.repeat(5000);
    const unzipped = await a.get('zip.test', '/gunzip', { method: 'POST', body: gzipSync(text) });
    expect(await unzipped.text()).toBe(text);
    const zipped = await a.get('zip.test', '/gzip', { method: 'POST', body: text });
    expect(gunzipSync(Buffer.from(await zipped.arrayBuffer())).toString()).toBe(text);
    const raw = await a.get('zip.test', '/gzip?f=deflate', { method: 'POST', body: text });
    expect(inflateSync(Buffer.from(await raw.arrayBuffer())).toString()).toBe(text);
    const fromRaw = await a.get('zip.test', '/gunzip?f=deflate-raw', { method: 'POST', body: deflateRawSync(text) });
    expect(await fromRaw.text()).toBe(text);
  });

  it('contains a gzip bomb in DecompressionStream within the worker (its memory and CPU), and serves on', async () => {
    // 1 GiB of zeros in about 1 MiB: read whole, it is far past the worker's 64 MiB.
    const bomb = gzipSync(Buffer.alloc(1024 * 1024 * 1024), { level: 9 });
    // Streamed out, the bomb is cut when the isolate hits a limit: a 5xx or a truncated body, never 1 GiB.
    const bytes = await a.get('zip.test', '/gunzip', { method: 'POST', body: bomb })
      .then(async (res) => res.status === 200 ? (await res.arrayBuffer()).byteLength : 0, () => 0);
    expect(bytes).toBeLessThan(1024 * 1024 * 1024);
    // Read whole inside the worker, it meets the worker's memory limit: its buffers stop
    // being allocated (a RangeError the worker could catch, here a 500) or the isolate is
    // replaced (503).
    const whole = await a.get('zip.test', '/gunzip-whole', { method: 'POST', body: bomb });
    expect([500, 503]).toContain(whole.status);
    expect(a.logs.some((l) => l.worker === 'default/zip' && /Array buffer allocation failed|exceeded/.test(JSON.stringify(l)))).toBe(true);
    expect((await a.get('zip.test', '/')).status).toBe(200);
  });

  it('supports EventTarget once/signal/handleEvent/stopImmediatePropagation and structuredClone of every cloneable type', async () => {
    const res = await a.get('clone.test');
    const out = await res.json() as { events: string[]; clone: Record<string, unknown>; refused: string[] };
    expect(out.events).toEqual(['once', 'signal', 'handleEvent:x', 'stopper', 'handleEvent:x', 'stopper']);
    expect(out.clone).toEqual({
      date: true, re: true, map: true, set: true, shared: true, view: true, big: true,
      boxed: ['object:1', 'object:s', 'object:true', 'object:5'], err: true, blob: true, sparse: true, cycle: true,
    });
    expect(out.refused).toEqual(['DataCloneError', 'DataCloneError', 'DataCloneError', 'DataCloneError', 'DataCloneError']);
  });

  it('answers 500 when a response stream fails before its first byte', async () => {
    for (const path of ['/before', '/before-later']) {
      const out = await rawGet(a.port, 'streams.test', path);
      expect(out.status, path).toBe(500);
      expect(out.body, path).toMatch(/threw an exception/);
      expect(out.ended, path).toBe(true);
    }
  });

  it('aborts the chunked body (no clean end) when a response stream fails after its first byte', async () => {
    const out = await rawGet(a.port, 'streams.test', '/after');
    expect(out.status).toBe(200);
    expect(out.body).toBe('first part;');
    expect(out.ended).toBe(false);
    expect((await a.get('streams.test')).status).toBe(200);
  });

  it('aborts request.signal when the client disconnects, cancelling a fetch made with it', async () => {
    const logged = (text: string) => a.logs.some((l) => JSON.stringify(l).includes(text));
    // A request waiting on scheduler.wait(…, { signal: request.signal }).
    const waiting = httpRequest({ host: '127.0.0.1', port: a.port, path: '/', headers: { host: 'gone.test' } });
    waiting.on('error', () => {});
    waiting.end();
    await new Promise((r) => setTimeout(r, 300));
    waiting.destroy();
    await waitFor('the wait to be cancelled', async () => logged('wait cancelled: AbortError'), 10_000, 20);
    expect(logged('request aborted: AbortError')).toBe(true);

    // A request whose fetch() holds an upstream connection: the upstream sees it closed.
    upstreamHeld = [];
    const closedBefore = upstreamClosed;
    const fetching = httpRequest({ host: '127.0.0.1', port: a.port, path: '/fetch', headers: { host: 'gone.test' } });
    fetching.on('error', () => {});
    fetching.end();
    await waitFor('the upstream to be reached', async () => upstreamHeld.length === 1, 10_000, 20);
    fetching.destroy();
    await waitFor('the upstream fetch to be cancelled', async () => upstreamClosed > closedBefore, 10_000, 20);
    await waitFor('the fetch to reject', async () => logged('fetch cancelled: AbortError'), 10_000, 20);
  });
});
