import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { waitFor } from '../../cli/local/ports.js';
import { startTestAgent, workerManifest, type TestAgent } from './agent-harness.js';

// WebSockets through the agent, with a real `ws` client on loopback: the worker answers
// the upgrade with a WebSocketPair, the agent completes the handshake and carries the
// messages; limits and faults close the socket with the code that says why, and other
// workers never notice.
//
// Module state is per isolate, so a worker that broadcasts to the sockets it holds needs
// them all on one isolate: this agent runs every worker with at most one isolate.

const ECHO = (prefix: string) => `
export default {
  async fetch(request) {
    if (request.headers.get('Upgrade') !== 'websocket') return new Response('plain ${prefix}');
    if (new URL(request.url).pathname === '/decline') return new Response('no sockets here', { status: 403 });
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    server.addEventListener('message', (e) => {
      if (e.data === 'spin') for (;;) {}
      server.send(typeof e.data === 'string' ? '${prefix}:' + e.data : e.data);
    });
    server.addEventListener('close', (e) => console.log('${prefix} closed', e.code, e.reason));
    return new Response(null, { status: 101, webSocket: client });
  },
};`;

const ROOM = `
const sockets = new Set();
export default {
  async fetch(request) {
    if (request.headers.get('Upgrade') !== 'websocket') return Response.json({ open: sockets.size });
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    sockets.add(server);
    const name = new URL(request.url).searchParams.get('name');
    server.addEventListener('message', (e) => {
      for (const s of sockets) s.send(name + ': ' + e.data);
    });
    server.addEventListener('close', (e) => {
      sockets.delete(server);
      console.log('room: ' + name + ' left', e.code, e.reason);
      for (const s of sockets) s.send(name + ' left');
    });
    return new Response(null, { status: 101, webSocket: client, headers: { 'x-room': 'lobby' } });
  },
};`;

interface Client {
  ws: WebSocket;
  /** The next message not taken yet (waits for it). */
  next(): Promise<string>;
  closed: Promise<{ code: number; reason: string }>;
}

function connect(port: number, host: string, path = '/'): Promise<Client> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, undefined, { headers: { host } });
    const inbox: string[] = [];
    const waiting: ((m: string) => void)[] = [];
    ws.on('message', (data, isBinary) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer);
      const m = isBinary ? `bytes:${[...buf].join(',')}` : buf.toString('utf8');
      const w = waiting.shift();
      if (w) w(m); else inbox.push(m);
    });
    const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
    ws.on('error', reject);
    ws.on('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
    ws.on('open', () => resolve({
      ws,
      closed,
      next: () => {
        const m = inbox.shift();
        if (m !== undefined) return Promise.resolve(m);
        return new Promise((r) => waiting.push(r));
      },
    }));
  });
}

/** An upgrade request the worker may decline: its status, headers and body. */
function rawUpgrade(port: number, host: string, path: string, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host, connection: 'Upgrade', upgrade: 'websocket', ...headers } });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('upgrade', () => reject(new Error('unexpected upgrade')));
    req.on('error', reject);
    req.end();
  });
}

describe('WebSockets through the agent', () => {
  let a: TestAgent;
  beforeAll(async () => {
    a = await startTestAgent([
      { name: 'echo', source: ECHO('echo') },
      { name: 'room', source: ROOM },
      { name: 'spin', source: ECHO('spin'), limits: { cpuMsPerRequest: 50 } },
      { name: 'other', source: 'export default { fetch() { return new Response("other ok"); } };' },
    ], { maxIsolatesPerWorker: 1, maxWebSocketMessageBytes: 64 * 1024 });
  });
  afterAll(async () => { await a?.stop(); });

  it('echoes text and binary messages, and plain requests to the same worker still work', async () => {
    const c = await connect(a.port, 'echo.test');
    c.ws.send('hello');
    expect(await c.next()).toBe('echo:hello');
    c.ws.send(Buffer.from([1, 2, 3]));
    expect(await c.next()).toBe('bytes:1,2,3');
    const plain = await a.get('echo.test');
    expect(await plain.text()).toBe('plain echo');
    c.ws.close(1000, 'done');
    expect(await c.closed).toEqual({ code: 1000, reason: 'done' });
    await waitFor('worker saw the close', async () => a.logs.some((l) => l.msg === 'echo closed 1000 done'), 5000, 20);
    await waitFor('socket forgotten', async () => a.agent.sockets.size === 0, 5000, 20);
  });

  it('writes the answer of a worker that declines the upgrade, and refuses malformed handshakes', async () => {
    const key = Buffer.alloc(16, 1).toString('base64');
    const declined = await rawUpgrade(a.port, 'echo.test', '/decline', { 'sec-websocket-key': key, 'sec-websocket-version': '13' });
    expect(declined.status).toBe(403);
    expect(declined.body).toBe('no sockets here');
    expect(declined.headers.connection).toBe('close');
    const bad = await rawUpgrade(a.port, 'echo.test', '/', { 'sec-websocket-key': 'short', 'sec-websocket-version': '13' });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatch(/Sec-WebSocket-Key/);
    const nowhere = await rawUpgrade(a.port, 'nowhere.test', '/', { 'sec-websocket-key': key, 'sec-websocket-version': '13' });
    expect(nowhere.status).toBe(404);
  });

  it('broadcasts to every socket a worker holds in module state, and hears a client leave', async () => {
    const names = ['ann', 'bob', 'cy'];
    const clients = await Promise.all(names.map((n) => connect(a.port, 'room.test', `/?name=${n}`)));
    expect(await (await a.get('room.test')).json()).toEqual({ open: 3 });
    clients[0]!.ws.send('hi all');
    for (const c of clients) expect(await c.next()).toBe('ann: hi all');
    clients[2]!.ws.send('hey');
    for (const c of clients) expect(await c.next()).toBe('cy: hey');
    clients[1]!.ws.close(4000, 'gone');
    expect(await clients[1]!.closed).toEqual({ code: 4000, reason: 'gone' });
    for (const c of [clients[0]!, clients[2]!]) expect(await c.next()).toBe('bob left');
    expect(a.logs.some((l) => l.msg === 'room: bob left 4000 gone')).toBe(true);
    expect(await (await a.get('room.test')).json()).toEqual({ open: 2 });
    for (const c of [clients[0]!, clients[2]!]) c.ws.close();
    await Promise.all(clients.map((c) => c.closed));
  });

  it('passes the worker\'s 101 headers to the client', async () => {
    const headers = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${a.port}/?name=h`, undefined, { headers: { host: 'room.test' } });
      ws.on('upgrade', (res) => resolve(res.headers));
      ws.on('open', () => ws.close());
      ws.on('error', reject);
    });
    expect(headers['x-room']).toBe('lobby');
  });

  it('closes a socket whose message handler burns its CPU budget with 1011, replaces the isolate, and nothing else notices', async () => {
    const victim = await connect(a.port, 'spin.test');
    const bystander = await connect(a.port, 'echo.test');
    victim.ws.send('ping');
    expect(await victim.next()).toBe('spin:ping');
    victim.ws.send('spin');
    const closed = await victim.closed;
    expect(closed.code).toBe(1011);
    expect(closed.reason).toMatch(/cpu/);
    bystander.ws.send('still here');
    expect(await bystander.next()).toBe('echo:still here');
    expect(await (await a.get('other.test')).text()).toBe('other ok');
    // A fresh isolate serves the worker again.
    const again = await connect(a.port, 'spin.test');
    again.ws.send('back');
    expect(await again.next()).toBe('spin:back');
    expect(await a.agent.metrics.registry.metrics()).toMatch(/edge_isolate_disposals_total\{worker="default\/spin",reason="cpu"\} 1/);
    again.ws.close();
    bystander.ws.close();
    await Promise.all([again.closed, bystander.closed]);
  });

  it('closes a socket that sends a message over the size limit with 1009', async () => {
    const c = await connect(a.port, 'echo.test');
    c.ws.send('x'.repeat(64 * 1024 + 1));
    const closed = await c.closed;
    expect(closed.code).toBe(1009);
    await waitFor('worker saw the close', async () => a.logs.some((l) => l.msg === 'echo closed 1009 '), 5000, 20);
    // A message at the limit goes through.
    const ok = await connect(a.port, 'echo.test');
    ok.ws.send('y'.repeat(64 * 1024 - 5));
    expect((await ok.next()).length).toBe(64 * 1024);
    ok.ws.close();
    await ok.closed;
  });

  it('keeps a socket on the old version across a version swap until it closes', async () => {
    const old = await connect(a.port, 'echo.test');
    old.ws.send('before');
    expect(await old.next()).toBe('echo:before');
    a.write('echo.yaml', workerManifest({ name: 'echo', source: ECHO('echo2') }));
    await waitFor('v2 served', async () => (await (await a.get('echo.test')).text()) === 'plain echo2', 10_000, 50);
    const replaced = () => a.agent.metrics.registry.metrics().then((m) => /edge_isolate_disposals_total\{worker="default\/echo",reason="replaced"\} 1/.test(m));
    old.ws.send('after');
    expect(await old.next()).toBe('echo:after');
    const fresh = await connect(a.port, 'echo.test');
    fresh.ws.send('new');
    expect(await fresh.next()).toBe('echo2:new');
    expect(await replaced()).toBe(false);
    old.ws.close(1000, 'bye');
    await old.closed;
    await waitFor('old isolate disposed once its socket closed', replaced, 5000, 20);
    fresh.ws.close();
    await fresh.closed;
  });

  it('closes open sockets with 1001 when the agent stops', async () => {
    const b = await startTestAgent([{ name: 'echo', source: ECHO('echo') }]);
    const c = await connect(b.port, 'echo.test');
    c.ws.send('x');
    expect(await c.next()).toBe('echo:x');
    await b.stop();
    const closed = await c.closed;
    expect([1001, 1006]).toContain(closed.code);
  });
});
