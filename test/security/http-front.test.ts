import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestAgent, type TestAgent } from '../agent/agent-harness.js';

// Issue 12 item 8, the HTTP front, with raw TCP requests (an HTTP client library would
// normalize what the attacker sends). The URL is built once, WHATWG-normalized against
// the Host header, and is both what the router matches and the worker's request.url; a
// client's CF-Connecting-IP / X-Forwarded-* count only from a configured trusted proxy;
// the agent sets CF-Connecting-IP; two Host headers are refused.

/** Says which worker answered and what it saw. */
const ECHO = (name: string) => `
export default {
  async fetch(request) {
    return Response.json({
      worker: '${name}',
      url: request.url,
      ip: request.headers.get('cf-connecting-ip'),
      xff: request.headers.get('x-forwarded-for'),
      proto: request.headers.get('x-forwarded-proto'),
      realIp: request.headers.get('x-real-ip'),
    });
  },
};`;

interface Seen { worker: string; url: string; ip: string | null; xff: string | null; proto: string | null; realIp: string | null }

/** Sends `head` (CRLF lines, no final blank line) on a fresh connection; status and body of the answer. */
function rawRequest(port: number, lines: string[]): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (d: Buffer) => { text += d.toString('utf8'); });
    socket.on('error', reject);
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      resolve({ status, body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
    socket.write(`${[...lines, 'Connection: close'].join('\r\n')}\r\n\r\n`);
  });
}

const seen = async (port: number, lines: string[]): Promise<Seen> => {
  const res = await rawRequest(port, lines);
  expect(res.status, res.body).toBe(200);
  return JSON.parse(res.body) as Seen;
};

const WORKERS = [
  { name: 'shop', source: ECHO('shop'), host: 'shop.test', pathPrefix: '/' },
  { name: 'public', source: ECHO('public'), host: 'shop.test', pathPrefix: '/public' },
  { name: 'admin', source: ECHO('admin'), host: 'shop.test', pathPrefix: '/admin' },
  { name: 'neighbour', source: ECHO('neighbour') },
];

describe('the HTTP front routes on the URL the worker gets and trusts no client about where it is', () => {
  let a: TestAgent;
  let proxied: TestAgent;
  beforeAll(async () => {
    a = await startTestAgent(WORKERS);
    // The same workers behind a trusted proxy (the test's own loopback connections).
    proxied = await startTestAgent(WORKERS, { trustedProxies: ['10.0.0.0/8', '127.0.0.1/32'] });
  });
  afterAll(async () => {
    await a?.stop();
    await proxied?.stop();
  });

  it('a path that starts with // stays a path on the Host the client named', async () => {
    const s = await seen(a.port, ['GET //evil.example/login HTTP/1.1', 'Host: shop.test']);
    expect(s.worker).toBe('shop');
    expect(s.url).toBe('http://shop.test//evil.example/login');
    expect(new URL(s.url).host).toBe('shop.test');
  });

  it('dot segments are resolved before routing: the worker that answers is the one the URL names', async () => {
    for (const target of ['/public/../admin', '/public/%2e%2e/admin', '/public/./../admin/']) {
      const s = await seen(a.port, [`GET ${target} HTTP/1.1`, 'Host: shop.test']);
      expect(s.worker, target).toBe('admin');
      expect(new URL(s.url).pathname, target).toMatch(/^\/admin\/?$/);
    }
    // And the other way round: a path that only looks like /admin is not routed there.
    const s = await seen(a.port, ['GET /admin/../public/x HTTP/1.1', 'Host: shop.test']);
    expect(s).toMatchObject({ worker: 'public', url: 'http://shop.test/public/x' });
  });

  it('a client\'s own CF-Connecting-IP, X-Forwarded-For, X-Forwarded-Proto and X-Real-IP are dropped; the agent sets the address', async () => {
    const s = await seen(a.port, [
      'GET /x HTTP/1.1', 'Host: shop.test',
      'CF-Connecting-IP: 6.6.6.6', 'X-Forwarded-For: 6.6.6.6, 7.7.7.7', 'X-Forwarded-Proto: https', 'X-Real-IP: 6.6.6.6',
    ]);
    expect(s).toMatchObject({ ip: '127.0.0.1', xff: null, proto: 'http', realIp: null, url: 'http://shop.test/x' });
  });

  it('from a trusted proxy they are believed: the address it names, its scheme, its X-Forwarded-For', async () => {
    const named = await seen(proxied.port, [
      'GET /x HTTP/1.1', 'Host: shop.test', 'CF-Connecting-IP: 203.0.113.7', 'X-Forwarded-For: 203.0.113.7', 'X-Forwarded-Proto: https',
    ]);
    expect(named).toMatchObject({ ip: '203.0.113.7', xff: '203.0.113.7', proto: 'https', url: 'https://shop.test/x' });
    // Without CF-Connecting-IP: the nearest X-Forwarded-For hop that is not a trusted proxy.
    const walked = await seen(proxied.port, ['GET /x HTTP/1.1', 'Host: shop.test', 'X-Forwarded-For: 6.6.6.6, 198.51.100.9, 10.1.2.3']);
    expect(walked).toMatchObject({ ip: '198.51.100.9', proto: 'http' });
    // A forged CF-Connecting-IP that is not an address is not taken.
    const junk = await seen(proxied.port, ['GET /x HTTP/1.1', 'Host: shop.test', 'CF-Connecting-IP: not-an-ip']);
    expect(junk.ip).toBe('127.0.0.1');
  });

  it('two Host headers, or a Host that is not a host, are refused with 400 before any worker runs', async () => {
    const two = await rawRequest(a.port, ['GET / HTTP/1.1', 'Host: shop.test', 'Host: neighbour.test']);
    expect(two.status).toBe(400);
    for (const host of ['evil.example/x', 'user@shop.test', 'shop.test?x', 'shop.test:99999']) {
      const bad = await rawRequest(a.port, ['GET / HTTP/1.1', `Host: ${host}`]);
      expect(bad.status, host).toBe(400);
    }
    // An absolute-form target is not a path on this agent.
    const absolute = await rawRequest(a.port, ['GET http://neighbour.test/ HTTP/1.1', 'Host: shop.test']);
    expect(absolute.status).toBe(400);
    // The neighbour answers throughout.
    expect((await seen(a.port, ['GET / HTTP/1.1', 'Host: neighbour.test'])).worker).toBe('neighbour');
  });
});
