import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleWorker } from '../../cli/deploy.js';
import { createLogger } from '../../common/log.js';
import { SUBJECTS, type LogLine } from '../../common/nats.js';
import { decodeJson, LogLineSchema } from '../../common/nats-messages.js';
import { ConsoleStream } from '../../node-agent/control/console-stream.js';
import type { ServedRequest, WorkerException } from '../../node-agent/serving/http-front.js';
import { startNats, type TestNats } from '../harness/nats.js';
import { startTestAgent, type TestAgent } from './agent-harness.js';

// A worker's uncaught exception as its author sees it (issue 18, item 1): the message and
// the worker's own frames (mapped through the bundle's inline source map), the ray id the
// client got, told to the listeners behind `edge logs`; one line per request with status,
// duration and CPU; the stack in the response only with --dev-error-pages (edge dev), never
// from a default agent; and what goes to NATS bounded against a flooding or hostile worker.

const THROWS = `function inner(x) {
  throw new TypeError('bad <script>alert(1)</script> ' + x);
}
export default {
  async fetch(request) {
    const u = new URL(request.url);
    if (u.pathname === '/string') throw 'a bare string';
    if (u.pathname === '/ok') return new Response('fine');
    return inner(1);
  },
};
`;

interface Seen { exceptions: (WorkerException & { worker: string; ray: string })[]; requests: ServedRequest[] }

function listen(a: TestAgent): Seen {
  const seen: Seen = { exceptions: [], requests: [] };
  a.agent.exceptionListeners.add((worker, e) => seen.exceptions.push({ worker, ...e }));
  a.agent.requestListeners.add((r) => seen.requests.push(r));
  return seen;
}

describe('uncaught exceptions, default agent', () => {
  let a: TestAgent;
  let seen: Seen;
  beforeAll(async () => {
    a = await startTestAgent([{ name: 'boom', source: THROWS }]);
    seen = listen(a);
  });
  afterAll(() => a.stop());

  it('answers a bare 500 with the ray id (no message, no stack, also to a browser) and tells the listeners the message, own frames and ray', async () => {
    const r = await a.get('boom.test', '/x', { headers: { accept: 'text/html,*/*' } });
    expect(r.status).toBe(500);
    const ray = r.headers.get('x-edge-ray')!;
    const body = await r.text();
    expect(body).toBe(`worker default/boom threw an exception (ray ${ray})\n`);
    expect(r.headers.get('content-type')).toContain('text/plain');
    const e = seen.exceptions.find((x) => x.ray === ray)!;
    expect(e.worker).toBe('default/boom');
    expect(e.message).toBe('TypeError: bad <script>alert(1)</script> 1');
    // The worker's frames, in the made-up file V8 compiled it as; the runtime's shim frames left out.
    expect(e.stack.split('\n')).toEqual(['    at inner (worker:default/boom.js:2:9)', '    at Object.fetch (worker:default/boom.js:9:12)']);
    const req = seen.requests.find((x) => x.ray === ray)!;
    expect(req).toMatchObject({ worker: 'default/boom', method: 'GET', url: 'http://boom.test/x', status: 500 });
    expect(req.durationMs).toBeGreaterThan(0);
    expect(req.cpuMs).toBeGreaterThan(0);
  });

  it('a thrown non-Error is an exception too; a served request is a line with its status and no ray', async () => {
    const r = await a.get('boom.test', '/string');
    expect(r.status).toBe(500);
    expect(seen.exceptions.find((x) => x.ray === r.headers.get('x-edge-ray'))?.message).toContain('a bare string');
    const ok = await a.get('boom.test', '/ok');
    expect(await ok.text()).toBe('fine');
    const line = seen.requests.find((x) => x.url === 'http://boom.test/ok')!;
    expect(line).toMatchObject({ status: 200, method: 'GET' });
    expect(line.ray).toBeUndefined();
  });
});

describe('uncaught exceptions, --dev-error-pages (edge dev only)', () => {
  let a: TestAgent;
  const work = mkdtempSync(join(tmpdir(), 'edge-exc-'));
  beforeAll(async () => {
    // A TypeScript project bundled the way `edge deploy` does, with its inline source map.
    mkdirSync(join(work, 'src'));
    writeFileSync(join(work, 'src', 'lib.ts'), `export interface Item { id: number }\n\nexport function find(items: Item[], id: number): Item {\n  const hit = items.find((i) => i.id === id);\n  if (!hit) throw new RangeError(\`no item \${id}\`);\n  return hit;\n}\n`);
    writeFileSync(join(work, 'src', 'index.ts'), `import { find } from './lib';\n\nexport default {\n  async fetch(): Promise<Response> {\n    return Response.json(find([{ id: 1 }], 7));\n  },\n};\n`);
    const b = await bundleWorker(join(work, 'src', 'index.ts'), { sourceMap: true });
    if ('errors' in b) throw new Error(b.errors);
    expect(b.code).toMatch(/\/\/# sourceMappingURL=data:application\/json;base64,/);
    a = await startTestAgent([{ name: 'boom', source: THROWS }, { name: 'mapped', source: b.code }], { devErrorPages: true });
  });
  afterAll(async () => { await a.stop(); rmSync(work, { recursive: true, force: true }); });

  it('shows a browser an HTML page with the message and stack, escaped', async () => {
    const r = await a.get('boom.test', '/', { headers: { accept: 'text/html' } });
    expect(r.status).toBe(500);
    expect(r.headers.get('content-type')).toContain('text/html');
    const html = await r.text();
    expect(html).toContain('TypeError: bad &#60;script&#62;alert(1)&#60;/script&#62; 1');
    expect(html).not.toContain('<script>');
    expect(html).toContain('at inner (worker:default/boom.js:2:9)');
    expect(html).toContain(`ray ${r.headers.get('x-edge-ray')}`);
  });

  it('gives other clients the message and stack as text', async () => {
    const r = await a.get('boom.test', '/');
    const body = await r.text();
    expect(body.split('\n').slice(0, 3)).toEqual([
      `worker default/boom threw an exception (ray ${r.headers.get('x-edge-ray')})`,
      'TypeError: bad <script>alert(1)</script> 1',
      '    at inner (worker:default/boom.js:2:9)',
    ]);
  });

  it('maps a bundled worker\'s frames through its inline source map to the TypeScript it was built from', async () => {
    const r = await a.get('mapped.test', '/');
    const body = await r.text();
    expect(body).toContain('RangeError: no item 7');
    // Paths as esbuild writes them: relative to where `edge deploy` ran.
    expect(body).toMatch(/at find \(\S*\/src\/lib\.ts:5:19\)/);
    expect(body).toMatch(/at Object\.fetch \(\S*\/src\/index\.ts:5:\d+\)/);
    expect(body).not.toContain('worker:default/mapped.js');
  });
});

describe('what goes to NATS for edge logs', () => {
  let nats: TestNats;
  let nc: NatsConnection;
  beforeAll(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => { await nc.close(); await nats.stop(); });

  const collect = (subject: string) => {
    const got: LogLine[] = [];
    const sub = nc.subscribe(subject);
    void (async () => { for await (const m of sub) got.push(decodeJson(LogLineSchema, m.data, 'line')); })();
    return { got, sub };
  };

  it('publishes exceptions beside console lines and requests on their own subject, and bounds a flood of either', async () => {
    const stream = new ConsoleStream({ nc, region: 'eu-west', node: 'n1', log: createLogger({}, () => {}, 'error') });
    const logs = collect(SUBJECTS.logs('default', 'w'));
    const reqs = collect(SUBJECTS.requests('default', 'w'));
    // A hostile exception: a 1 MB message and stack.
    const huge = 'x'.repeat(1024 * 1024);
    stream.exceptionListener('default/w', { message: `Error: ${huge}`, stack: `    at f (${huge})`, ray: 'r1' });
    stream.requestListener({ worker: 'default/w', method: 'GET', url: 'http://w.test/', status: 200, durationMs: 1.234, cpuMs: 0.5 });
    // A flood of requests: far more than the burst.
    for (let i = 0; i < 2000; i++) stream.requestListener({ worker: 'default/w', method: 'GET', url: `http://w.test/${i}`, status: 503, durationMs: 1 });
    await nc.flush();
    await new Promise((r) => setTimeout(r, 200));
    expect(logs.got).toHaveLength(1);
    const e = logs.got[0]!;
    expect(e).toMatchObject({ kind: 'exception', level: 'error', ray: 'r1', worker: 'default/w', region: 'eu-west', node: 'n1' });
    expect(Buffer.byteLength(e.message)).toBeLessThan(17 * 1024);
    expect(Buffer.byteLength(e.stack!)).toBeLessThan(17 * 1024);
    expect(reqs.got[0]).toMatchObject({ kind: 'request', method: 'GET', url: 'http://w.test/', status: 200, durationMs: 1.23, cpuMs: 0.5, level: 'info' });
    expect(reqs.got.length).toBeLessThanOrEqual(260);
    expect(reqs.got.length).toBeGreaterThan(100);
    expect(reqs.got.filter((l) => l.status === 503).every((l) => l.level === 'error')).toBe(true);
    // Console lines keep their own budget: the request flood did not use it up.
    stream.listener('default/w', 'log', 'still heard');
    await nc.flush();
    await new Promise((r) => setTimeout(r, 100));
    expect(logs.got.at(-1)).toMatchObject({ message: 'still heard', level: 'log' });
    // After a pause, the next request line says how many were left out.
    await new Promise((r) => setTimeout(r, 300));
    stream.requestListener({ worker: 'default/w', method: 'POST', url: 'http://w.test/after', status: 201, durationMs: 2 });
    await nc.flush();
    await new Promise((r) => setTimeout(r, 100));
    expect(reqs.got.some((l) => /\[edge\] \d+ request lines left out on n1/.test(l.message))).toBe(true);
    expect(reqs.got.at(-1)).toMatchObject({ url: 'http://w.test/after', status: 201 });
    logs.sub.unsubscribe();
    reqs.sub.unsubscribe();
    stream.stop();
  });
});
