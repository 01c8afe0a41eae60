import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createLogger, type LogFields } from '../../common/log.js';
import { Agent } from '../../node-agent/agent.js';
import { MAX_SERVICE_DEPTH } from '../../node-agent/bindings/service-binding.js';
import { send } from './agent-harness.js';

// Service bindings (spec.bindings.services) in an in-process agent serving a directory:
// env.<binding>.fetch() and RPC to another worker of the namespace (its default
// WorkerEntrypoint or a named one), a chain A -> B -> C, a worker calling itself bounded
// in depth with an error it catches, and no way to reach another namespace's worker.

const worker = (name: string, namespace: string, source: string, services?: { name: string; worker: string; entrypoint?: string }[]) => stringify({
  apiVersion: 'edge.isolates.dev/v1alpha1',
  kind: 'EdgeWorker',
  metadata: { name, namespace },
  spec: {
    routes: [{ host: `${name}.${namespace}.test` }],
    placement: { minWarmIsolates: 1 },
    limits: { cpuMsPerRequest: 200, memoryMiB: 64, subrequests: 20, wallMsPerRequest: 10_000 },
    ...(services ? { bindings: { services } } : {}),
    source: { inline: source },
  },
});

const FRONT = `
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const show = (e) => ({ name: e.name, message: e.message });
    switch (url.pathname) {
      case '/fetch': {
        const r = await env.MATH.fetch('http://math/hello?x=1', { method: 'POST', body: 'ping', headers: { 'x-a': 'b' } });
        const g = await env.GREETER.fetch('http://greeter/hi');
        return new Response(r.status + ' ' + await r.text() + ' | ' + await g.text());
      }
      case '/rpc': {
        const out = { sum: await env.MATH.add(2, 3), named: await env.GREETER.greet('Ada'), chain: await env.MATH.viaLast(4) };
        try { await env.MATH.nope(); } catch (e) { out.missing = show(e); }
        try { await env.MATH.fails(); } catch (e) { out.thrown = show(e); }
        try { await env.PLAIN.anything(); } catch (e) { out.plain = show(e); }
        return Response.json(out);
      }
      case '/other': {
        try { return new Response(await (await env.OTHER.fetch('http://x/')).text()); } catch (e) { return Response.json(show(e)); }
      }
      default: return new Response('no route', { status: 404 });
    }
  },
};`;

const MATH = `
import { WorkerEntrypoint } from 'cloudflare:workers';
export class Greeter extends WorkerEntrypoint {
  fetch(request) { return new Response('greeter fetch ' + new URL(request.url).pathname); }
  greet(name) { return 'hello ' + name + ', LAST.fetch is a ' + typeof this.env.LAST.fetch; }
}
export default class Math extends WorkerEntrypoint {
  async fetch(request) { return new Response(request.method + ' ' + new URL(request.url).pathname + ' ' + request.headers.get('x-a') + ' ' + await request.text()); }
  add(a, b) { return a + b; }
  async viaLast(n) { return 'math>' + await this.env.LAST.square(n); }
  fails() { throw new RangeError('math is hard'); }
}`;

const LAST = `
import { WorkerEntrypoint } from 'cloudflare:workers';
// RPC only: no fetch() method, as a WorkerEntrypoint may be.
export default class extends WorkerEntrypoint { square(n) { return 'last:' + n * n; } }`;

const PLAIN = `export default { fetch() { return new Response('plain'); } };`;

const LOOP = `
import { WorkerEntrypoint } from 'cloudflare:workers';
export default class extends WorkerEntrypoint {
  async fetch() {
    try { return new Response('unbounded: ' + await this.env.SELF.down(1)); }
    catch (e) { return Response.json({ name: e.name, message: e.message }); }
  }
  async down(n) { return this.env.SELF.down(n + 1); }
}`;

describe('service bindings', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-services-'));
  const logs: LogFields[] = [];
  let agent: Agent;

  beforeAll(async () => {
    writeFileSync(join(dir, 'app.yaml'), [
      worker('front', 'app', FRONT, [
        { name: 'MATH', worker: 'math' }, { name: 'GREETER', worker: 'math', entrypoint: 'Greeter' },
        { name: 'PLAIN', worker: 'plain' }, { name: 'OTHER', worker: 'secret' },
      ]),
      worker('math', 'app', MATH, [{ name: 'LAST', worker: 'last' }]),
      worker('last', 'app', LAST),
      worker('plain', 'app', PLAIN),
      worker('loop', 'app', LOOP, [{ name: 'SELF', worker: 'loop' }]),
      // Another tenant's worker of the same name the front's OTHER binding names.
      worker('secret', 'tenant-b', 'export default { fetch() { return new Response("tenant-b secret"); } };'),
      // A binding naming another namespace's worker is refused by the schema.
      worker('sneaky', 'app', 'export default { fetch() { return new Response("x"); } };', [{ name: 'B', worker: 'tenant-b/secret' }]),
    ].join('---\n'));
    agent = await Agent.start({
      log: createLogger({}, (line) => { logs.push(JSON.parse(line) as LogFields); }, 'debug'),
      source: { kind: 'directory', dir },
      agentName: 'services',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      peerListen: { host: '127.0.0.1', port: 0 },
      presenceTtlMs: 5_000,
      actorLogReplicas: 1,
      maxBodyBytes: 1024 * 1024,
      maxWebSocketMessageBytes: 1024 * 1024,
      poolSize: 2,
    });
  });

  afterAll(async () => {
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const get = async (host: string, path: string) => {
    const res = await send(agent.port, host, path);
    return { status: res.status, text: await res.text() };
  };

  it('env.X.fetch() reaches the bound worker\'s default export, or the named entrypoint the binding names', async () => {
    expect(await get('front.app.test', '/fetch')).toEqual({ status: 200, text: '200 POST /hello b ping | greeter fetch /hi' });
    // A WorkerEntrypoint without fetch() loads (it serves RPC); a client request to it is an error.
    expect((await get('last.app.test', '/')).status).toBe(500);
  });

  it('RPC reaches the default and named entrypoints, chains A -> B -> C, and rethrows errors', async () => {
    const r = await get('front.app.test', '/rpc');
    expect(r.status, r.text).toBe(200);
    expect(JSON.parse(r.text)).toEqual({
      sum: 5,
      named: 'hello Ada, LAST.fetch is a function',
      chain: 'math>last:16',
      missing: { name: 'TypeError', message: 'The RPC receiver does not implement the method "nope".' },
      thrown: { name: 'RangeError', message: 'math is hard' },
      plain: { name: 'TypeError', message: 'worker app/plain cannot be called over RPC: its default export does not extend WorkerEntrypoint' },
    });
  });

  it('bounds a worker calling itself with an error its caller catches', async () => {
    const r = await get('loop.app.test', '/');
    expect(JSON.parse(r.text)).toMatchObject({ name: 'Error', message: expect.stringContaining(`Subrequest depth limit exceeded`) });
    expect(r.text).toContain(`${MAX_SERVICE_DEPTH} service-binding hops`);
  });

  it('never reaches another namespace\'s worker', async () => {
    // The binding's worker name is looked up in the binding worker's own namespace only.
    expect(await get('secret.tenant-b.test', '/')).toEqual({ status: 200, text: 'tenant-b secret' });
    const r = await get('front.app.test', '/other');
    expect(r.text).not.toContain('tenant-b secret');
    expect(JSON.parse(r.text)).toEqual({ name: 'Error', message: 'env.OTHER: worker app/secret is not served on this agent (a service binding reaches workers placed in the caller\'s region)' });
    // And a binding naming one is refused with the field.
    expect((await get('sneaky.app.test', '/')).status).toBe(404);
    const line = logs.find((l) => typeof l.worker === 'string' && String(l.worker).includes('sneaky') && /services/.test(JSON.stringify(l)));
    expect(JSON.stringify(line)).toMatch(/spec\.bindings\.services/);
  });
});
