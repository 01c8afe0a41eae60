import { describe, expect, it } from 'vitest';
import { hostBindings } from '../../../node-agent/bindings/host-bindings.js';
import { warmIsolate, primeIsolate } from '../../../node-agent/isolate/pool.js';
import { WorkerIsolate } from '../../../node-agent/isolate/worker-isolate.js';
import { SocketRegistry } from '../../../node-agent/sockets/sockets.js';

// A URL parse through the host is a synchronous round trip to its thread: plain http(s)
// URLs are parsed in the isolate (shim/web/url-fast.js), and each isolate keeps its last
// few parses of the rest (shim/web/url.js parseURL). The answers must be the host's,
// whatever was parsed before, and the host asked once per distinct string it must parse.

async function run(source: string): Promise<{ body: unknown; parses: string[] }> {
  const parses: string[] = [];
  const base = hostBindings();
  const warm = warmIsolate(128);
  await primeIsolate(warm);
  const w = await WorkerIsolate.load({
    key: 'test/urls', name: 'urls', source, digest: 'sha256:urls',
    limits: { cpuMsPerRequest: 2000, memoryMiB: 128, subrequests: 5, wallMsPerRequest: 30_000 }, env: { text: {} },
  }, warm, {
    onLog: () => {}, onDispose: () => {}, sockets: new SocketRegistry({}),
    bindings: (ctx) => {
      const b = base(ctx);
      const parse = b.callbacks.parseURL;
      return { ...b, callbacks: { ...b.callbacks, parseURL: (input: string, against?: string) => { parses.push(against === undefined ? input : `${input} against ${against}`); return parse(input, against); } } };
    },
  });
  try {
    const { id, response } = w.begin({ url: 'http://probe.test/', method: 'GET', headers: [], body: null });
    const res = await response;
    await w.finish(id);
    return { body: JSON.parse(typeof res.body === 'string' ? res.body : new TextDecoder().decode(res.body as ArrayBuffer)) as unknown, parses };
  } finally {
    w.dispose('shutdown');
  }
}

describe('URL parses kept per isolate', () => {
  it('asks the host once per string, and answers as the host does', async () => {
    const { body, parses } = await run(`export default { fetch() {
      const out = [];
      for (let i = 0; i < 3; i++) {
        out.push(new URL('https://API.example.com/a/../b?q=1#h').href);
        out.push(new URL('c d', 'https://api.example.com/x/').href);
        out.push(new URL('https://api.example.com/x/c d').href);
        out.push(new Request('https://api.example.com/r').url);
        out.push(URL.canParse('http://[::1'), URL.canParse('http://ok/'));
        const u = new URL('https://api.example.com/s');
        u.search = 'changed=' + i;
        out.push(u.href, new URL('https://api.example.com/s').href);
      }
      return Response.json(out);
    } };`);
    const once = ['https://api.example.com/b?q=1#h', 'https://api.example.com/x/c%20d', 'https://api.example.com/x/c%20d', 'https://api.example.com/r', false, true];
    expect(body).toEqual([0, 1, 2].flatMap((i) => [...once, `https://api.example.com/s?changed=${i}`, 'https://api.example.com/s']));
    // The plain http(s) URLs never reach the host; the rest once per distinct string (the relative one against its base is its own).
    expect(parses.filter((p) => !p.startsWith('http://probe.test'))).toEqual([
      'https://API.example.com/a/../b?q=1#h', 'c d against https://api.example.com/x/', 'https://api.example.com/x/c d', 'http://[::1',
    ]);
  });

  it('keeps a bounded number: forty distinct URLs, then the first again, asks the host again', async () => {
    const { body, parses } = await run(`export default { fetch() {
      for (let i = 0; i < 40; i++) new URL('https://h.example/ ' + i);
      return Response.json([new URL('https://h.example/ 0').pathname, new URL('https://h.example/ 39').pathname]);
    } };`);
    expect(body).toEqual(['/%200', '/%2039']);
    const asked = parses.filter((p) => p.startsWith('https://h.example/'));
    expect(asked.length).toBe(41);
    expect(asked.at(-1)).toBe('https://h.example/ 0');
  });
});
