import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runWorker, TestWorker } from './run-worker.js';

// A local origin for subrequests: /echo answers with what it received, /redirect sends
// to /echo, /slow answers late, /record remembers bodies posted to it.
let server: Server;
let origin = '';
const recorded: string[] = [];

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

beforeAll(async () => {
  server = createServer((req, res) => {
    void (async () => {
      const body = await readBody(req);
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/redirect') {
        res.writeHead(302, { location: '/echo' }).end();
      } else if (path === '/see-other') {
        res.writeHead(303, { location: '/echo' }).end();
      } else if (path === '/temporary') {
        res.writeHead(307, { location: '/echo' }).end();
      } else if (path === '/large') {
        // 1 MiB without a content-length: the host streams it.
        for (let i = 0; i < 16; i++) res.write(Buffer.alloc(64 * 1024, 97 + i));
        res.end();
      } else if (path === '/slow') {
        setTimeout(() => res.end('late'), 500);
      } else if (path === '/record') {
        recorded.push(body);
        res.writeHead(204).end();
      } else {
        res.writeHead(200, { 'content-type': 'application/json', 'x-origin': 'yes', 'set-cookie': ['a=1', 'b=2'] });
        res.end(JSON.stringify({ method: req.method, path, test: req.headers['x-test'] ?? null, body }));
      }
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

const env = () => ({ ORIGIN: origin });
/** The local origin is loopback: the default egress policy refuses it, so these workers are allowed it explicitly. */
const egress = () => ({ publicInternet: true, allow: [origin.replace('http://', '')] });

describe('fetch (subrequests through the host)', () => {
  it('sends method, headers and body, and resolves a Response with immutable headers', async () => {
    const reply = await runWorker(`export default { async fetch(request, env) {
      const res = await fetch(env.ORIGIN + '/echo', { method: 'POST', headers: { 'X-Test': 'yes' }, body: 'payload' });
      let immutable;
      try { res.headers.set('x', '1'); } catch (e) { immutable = e.constructor.name; }
      return Response.json({ status: res.status, ok: res.ok, url: res.url, redirected: res.redirected, ct: res.headers.get('content-type'),
        cookies: res.headers.getSetCookie(), immutable, echo: await res.json() });
    } }`, {}, { env: env(), egress: egress() });
    expect(JSON.parse(reply.text)).toEqual({
      status: 200, ok: true, url: `${origin}/echo`, redirected: false, ct: 'application/json', cookies: ['a=1', 'b=2'], immutable: 'TypeError',
      echo: { method: 'POST', path: '/echo', test: 'yes', body: 'payload' },
    });
  });

  it('proxies: a fetched Response can be returned as it is', async () => {
    const reply = await runWorker(`export default { fetch(request, env) { return fetch(env.ORIGIN + '/echo', request); } }`,
      { method: 'POST', headers: [['x-test', 'passed through']], body: 'proxied' }, { env: env(), egress: egress() });
    expect(reply.status).toBe(200);
    expect(reply.headers).toContainEqual(['x-origin', 'yes']);
    expect(reply.headers.filter(([k]) => k === 'set-cookie')).toEqual([['set-cookie', 'a=1'], ['set-cookie', 'b=2']]);
    expect(JSON.parse(reply.text)).toEqual({ method: 'POST', path: '/echo', test: 'passed through', body: 'proxied' });
  });

  it('follows redirects and reports them; redirect: manual returns the 3xx', async () => {
    const reply = await runWorker(`export default { async fetch(request, env) {
      const followed = await fetch(new Request(env.ORIGIN + '/redirect'));
      const manual = await fetch(env.ORIGIN + '/redirect', { redirect: 'manual' });
      return Response.json({ url: followed.url, redirected: followed.redirected, path: (await followed.json()).path,
        manual: [manual.status, manual.headers.get('location'), await manual.text()] });
    } }`, {}, { env: env(), egress: egress() });
    expect(JSON.parse(reply.text)).toEqual({ url: `${origin}/echo`, redirected: true, path: '/echo', manual: [302, '/echo', ''] });
  });

  it('streams a ReadableStream request body to the origin', async () => {
    const reply = await runWorker(`export default { async fetch(request, env) {
      const res = await fetch(env.ORIGIN + '/echo', { method: 'PUT', body: request.body });
      return new Response((await res.json()).body);
    } }`, { method: 'POST', chunks: ['streamed ', 'request ', 'body'] }, { env: env(), egress: egress() });
    expect(reply.text).toBe('streamed request body');
  });

  it('follows redirects with Workers\' method rules: 303 drops the body, 307 re-sends a whole one, not a streamed one', async () => {
    const reply = await runWorker(`export default { async fetch(request, env) {
      const seeOther = await (await fetch(env.ORIGIN + '/see-other', { method: 'POST', body: request.body })).json();
      const whole = await (await fetch(env.ORIGIN + '/temporary', { method: 'PUT', body: 'again' })).json();
      let streamed;
      try { await fetch(env.ORIGIN + '/temporary', { method: 'PUT', body: new Response('x').body }); } catch (e) { streamed = e.message; }
      return Response.json({ seeOther: [seeOther.method, seeOther.body], whole: [whole.method, whole.body], streamed });
    } }`, { method: 'POST', chunks: ['a', 'b'] }, { env: env(), egress: egress() });
    const out = JSON.parse(reply.text) as { seeOther: string[]; whole: string[]; streamed: string };
    expect(out.seeOther).toEqual(['GET', '']);
    expect(out.whole).toEqual(['PUT', 'again']);
    expect(out.streamed).toMatch(/cannot follow a 307 redirect with a streamed request body/);
  });

  it('streams a large response body to the worker in pieces', async () => {
    const reply = await runWorker(`export default { async fetch(request, env) {
      const res = await fetch(env.ORIGIN + '/large');
      const reader = res.body.getReader();
      let pieces = 0, bytes = 0, first = -1, last = -1;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pieces++; bytes += value.byteLength;
        if (first < 0) first = value[0];
        last = value[value.byteLength - 1];
      }
      return Response.json({ pieces, bytes, first, last });
    } }`, {}, { env: env(), egress: egress() });
    const out = JSON.parse(reply.text) as { pieces: number; bytes: number; first: number; last: number };
    expect(out.bytes).toBe(1024 * 1024);
    expect(out.pieces).toBeGreaterThan(1);
    expect([out.first, out.last]).toEqual([97, 97 + 15]);
  });

  it('refuses a loopback origin the worker\'s policy does not allow, naming it and the policy', async () => {
    const reply = await runWorker(`export default { async fetch(request, env) {
      try { await fetch(env.ORIGIN + '/echo'); return new Response('reached'); } catch (e) { return new Response(e.constructor.name + ': ' + e.message); }
    } }`, {}, { env: env() });
    expect(reply.text).toMatch(/^TypeError: fetch http:\/\/127\.0\.0\.1:\d+\/echo failed: egress to 127\.0\.0\.1:\d+ \(loopback\) is not allowed by the egress policy of namespace "test"/);
  });

  it('counts subrequests against limits.subrequests: the (N+1)th fails', async () => {
    const reply = await runWorker(`export default { async fetch(request, env) {
      const results = [];
      for (let i = 0; i < 3; i++) {
        try { results.push((await fetch(env.ORIGIN + '/echo')).status); } catch (e) { results.push(e.constructor.name + ': ' + e.message); }
      }
      return Response.json(results);
    } }`, {}, { env: env(), egress: egress(), limits: { subrequests: 2 } });
    const results = JSON.parse(reply.text) as unknown[];
    expect(results.slice(0, 2)).toEqual([200, 200]);
    expect(results[2]).toMatch(/^TypeError: fetch .* failed: worker test-worker exceeded its subrequest limit \(2 per request\)$/);
  });

  it('the subrequest budget is per request', async () => {
    const w = await TestWorker.load(`export default { async fetch(request, env) { return new Response(String((await fetch(env.ORIGIN + '/echo')).status)); } }`,
      { env: env(), egress: egress(), limits: { subrequests: 1 } });
    try {
      expect((await w.fetch()).text).toBe('200');
      expect((await w.fetch()).text).toBe('200');
    } finally {
      w.dispose();
    }
  });

  it('rejects with TypeError on bad URLs and schemes, and with the reason when aborted', async () => {
    const reply = await runWorker(`export default { async fetch(request, env) {
      const out = [];
      for (const attempt of [
        () => fetch('/relative'),
        () => fetch('ftp://example.com/'),
        () => fetch(env.ORIGIN + '/slow', { signal: AbortSignal.timeout(20) }),
        () => fetch(env.ORIGIN + '/echo', { signal: AbortSignal.abort() }),
      ]) {
        try { await attempt(); out.push('resolved'); } catch (e) { out.push(e.constructor.name + '/' + e.name); }
      }
      return Response.json(out);
    } }`, {}, { env: env(), egress: egress() });
    expect(JSON.parse(reply.text)).toEqual(['TypeError/TypeError', 'TypeError/TypeError', 'DOMException/TimeoutError', 'DOMException/AbortError']);
  });
});

describe('ctx.waitUntil', () => {
  it('keeps work going after the response until the request is finished', async () => {
    const w = await TestWorker.load(`export default { fetch(request, env, ctx) {
      ctx.waitUntil(new Promise((r) => setTimeout(r, 30)).then(() => fetch(env.ORIGIN + '/record', { method: 'POST', body: 'after response' })));
      ctx.waitUntil(Promise.reject(new Error('ignored failure')));
      return new Response('early');
    } }`, { env: env(), egress: egress() });
    try {
      recorded.length = 0;
      const { id, response } = await w.start();
      expect(response.status).toBe(200);
      expect(recorded).toEqual([]);
      await w.isolate.finish(id);
      expect(recorded).toEqual(['after response']);
      expect(w.logs.some((l) => l.level === 'error' && l.message.includes('ignored failure'))).toBe(true);
    } finally {
      w.dispose();
    }
  });
});
