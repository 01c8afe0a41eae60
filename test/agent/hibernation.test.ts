import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { send } from './agent-harness.js';
import { connect, startActorAgent, type ActorAgent } from './actor-agent.js';

// The Durable Objects WebSocket Hibernation API on a real agent (in process, following a
// real nats-server, the real actor log), with real `ws` clients: sockets accepted with
// state.acceptWebSocket() stay open on the agent while the actor's isolate is evicted; a
// message wakes it (its constructor runs again) and reaches webSocketMessage; tags and
// attachments outlive the isolate; the auto-response is answered without waking it; close
// codes and reasons cross both ways; limits and floods are refused as workerd refuses them.

const HOST = 'hib.test';

const ROOM = `
export class Room {
  constructor(ctx, env) {
    this.ctx = ctx;
    // Counts constructions in storage: how many times the actor was (re)activated.
    ctx.blockConcurrencyWhile(async () => {
      await ctx.storage.put('constructed', ((await ctx.storage.get('constructed')) ?? 0) + 1);
    });
  }
  async fetch(request) {
    const url = new URL(request.url);
    const ctx = this.ctx;
    this.seen = [...request.headers.keys()].filter((k) => k.startsWith('x-edge'));
    switch (url.pathname) {
      case '/constructed': return new Response(String(await ctx.storage.get('constructed')));
      case '/sockets': {
        const tag = url.searchParams.get('tag');
        return Response.json(ctx.getWebSockets(tag ?? undefined).map((ws) => ({ tags: ctx.getTags(ws), att: ws.deserializeAttachment() })));
      }
      case '/auto': {
        ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair('ping', 'pong'));
        const p = ctx.getWebSocketAutoResponse();
        return new Response(p.request + '/' + p.response);
      }
      case '/events': return Response.json(Object.fromEntries(await ctx.storage.list({ prefix: 'ev:' })));
      case '/broadcast': {
        const all = ctx.getWebSockets();
        for (const ws of all) ws.send(url.searchParams.get('m'));
        return new Response(String(all.length));
      }
      case '/method': return new Response(request.method);
      case '/hoard': {
        // Accepts without handing the other ends out, until the agent refuses.
        let n = 0;
        try {
          for (;;) { ctx.acceptWebSocket(new WebSocketPair()[1]); n++; }
        } catch (err) {
          return new Response(n + ' ' + err.name + ': ' + err.message);
        }
      }
    }
    if (request.headers.get('Upgrade') !== 'websocket') return new Response('expected a WebSocket', { status: 426 });
    const [client, server] = Object.values(new WebSocketPair());
    try {
      if (url.pathname === '/plain') {
        server.accept();
        server.addEventListener('message', (e) => {
          if (e.data === 'close') server.close(4002, 'plain server bye');
          else server.send('plain:' + e.data);
        });
        server.addEventListener('close', (e) => ctx.storage.put('ev:plain', [e.code, e.reason, e.wasClean]));
        return new Response(null, { status: 101, webSocket: client });
      }
      ctx.acceptWebSocket(server, url.searchParams.getAll('tag'));
      if (url.pathname === '/twice') ctx.acceptWebSocket(server);
    } catch (err) {
      return new Response(err.name + ': ' + err.message, { status: 400 });
    }
    server.serializeAttachment({ name: url.searchParams.get('name'), n: 0 });
    return new Response(null, { status: 101, webSocket: client, headers: { 'x-method': request.method } });
  }
  async webSocketMessage(ws, message) {
    const att = ws.deserializeAttachment();
    if (typeof message !== 'string') { ws.send(message); return; }
    if (message === 'whoami') {
      ws.send(JSON.stringify({ att, tags: this.ctx.getTags(ws), constructed: await this.ctx.storage.get('constructed'), name: this.ctx.id.name ?? null, headers: [...this.seen ?? []] }));
    } else if (message === 'bump') {
      att.n += 1;
      ws.serializeAttachment(att);
      ws.send('n=' + att.n);
    } else if (message.startsWith('close:')) {
      const [, code, reason] = message.split(':');
      ws.close(Number(code), reason);
    } else if (message === 'big') {
      try { ws.serializeAttachment({ blob: 'x'.repeat(20000) }); ws.send('stored'); } catch (err) { ws.send(err.name + ': ' + err.message); }
    } else if (message === 'fn') {
      try { ws.serializeAttachment({ f() {} }); ws.send('stored'); } catch (err) { ws.send(err.name + ': ' + err.message); }
    } else if (message === 'autots') {
      const t = this.ctx.getWebSocketAutoResponseTimestamp(ws);
      ws.send(t === null ? 'null' : String(t.getTime()));
    } else {
      ws.send('echo:' + message);
    }
  }
  async webSocketClose(ws, code, reason, wasClean) {
    const att = ws.deserializeAttachment();
    await this.ctx.storage.put('ev:close:' + att.name, [code, reason, wasClean]);
  }
  async webSocketError(ws, error) {
    const att = ws.deserializeAttachment();
    await this.ctx.storage.put('ev:error:' + att.name, String(error.message));
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const id = env.ROOMS.idFromName(url.searchParams.get('room') ?? 'lobby');
    return env.ROOMS.get(id).fetch(request);
  },
};`;

let h: ActorAgent;
const activeRooms = () => h.agent.actors().length;
const get = async (path: string, host = HOST) => (await send(h.port, host, path)).text();

async function evicted(): Promise<void> {
  await waitFor('the actor to be evicted', async () => activeRooms() === 0, 20_000);
}

describe('WebSocket hibernation', () => {
  beforeAll(async () => {
    h = await startActorAgent();
    await h.publish({ namespace: 'tenant-a', name: 'rooms', host: HOST, source: ROOM, cpuMsPerRequest: 5000, actors: { ROOMS: { name: 'rooms', className: 'Room' } } });
    // The same worker and DurableActor names in another namespace.
    await h.publish({ namespace: 'tenant-b', name: 'rooms', host: 'other.test', source: ROOM, actors: { ROOMS: { name: 'rooms', className: 'Room' } } });
    await waitFor('the worker to be served', async () => (await send(h.port, HOST, '/constructed?room=warmup')).status === 200, 30_000);
    await waitFor('the other worker to be served', async () => (await send(h.port, 'other.test', '/constructed?room=warmup')).status === 200, 30_000);
  }, 60_000);

  afterAll(async () => { await h?.stop(); });

  it('keeps accepted sockets open while the actor is evicted; a message wakes it, with its tags and attachment', async () => {
    const a = await connect(h.port, HOST, '/?room=r1&name=alice&tag=red&tag=blue&tag=red');
    const b = await connect(h.port, HOST, '/?room=r1&name=bob&tag=blue');
    expect(JSON.parse(await get('/sockets?room=r1&tag=blue'))).toHaveLength(2);
    expect(JSON.parse(await get('/sockets?room=r1&tag=red'))).toEqual([{ tags: ['red', 'blue'], att: { name: 'alice', n: 0 } }]);
    a.ws.send('bump');
    expect(await a.next()).toBe('n=1');
    const before = h.agent.hibernation()!;
    expect(before.sockets).toBe(2);

    await evicted();
    expect(h.agent.hibernation()!.sockets).toBe(2);
    expect(a.ws.readyState).toBe(1);
    // A message wakes the actor: the constructor ran again, the attachment and tags are there.
    a.ws.send('whoami');
    // state.id.name too: the name the worker's idFromName() carried, kept for the woken actor.
    expect(JSON.parse(await a.next())).toEqual({ att: { name: 'alice', n: 1 }, tags: ['red', 'blue'], constructed: 2, name: 'r1', headers: [] });
    expect(h.agent.hibernation()!.wakes).toBe(before.wakes + 1);
    // getWebSockets after the eviction: both sockets, the same way as before.
    expect(JSON.parse(await get('/sockets?room=r1&tag=blue')).map((s: { att: { name: string } }) => s.att.name).sort()).toEqual(['alice', 'bob']);

    // Messages of one socket arrive at the handler in order, one at a time.
    for (let i = 0; i < 50; i++) b.ws.send(`m${i}`);
    for (let i = 0; i < 50; i++) expect(await b.next()).toBe(`echo:m${i}`);
    // Binary messages round-trip.
    b.ws.send(Buffer.from([1, 2, 3]));
    expect(await b.next()).toBe('bytes:1,2,3');

    // A broadcast from the actor reaches every socket.
    expect(await get('/broadcast?room=r1&m=hello-all')).toBe('2');
    expect(await a.next()).toBe('hello-all');
    expect(await b.next()).toBe('hello-all');
    a.ws.close();
    b.ws.close();
  }, 60_000);

  it('answers the auto-response on the agent without waking the actor, and records when', async () => {
    expect(await get('/auto?room=r2')).toBe('ping/pong');
    const c = await connect(h.port, HOST, '/?room=r2&name=carol');
    await evicted();
    const { wakes, autoResponses } = h.agent.hibernation()!;
    const sentAt = Date.now();
    for (let i = 0; i < 5; i++) c.ws.send('ping');
    for (let i = 0; i < 5; i++) expect(await c.next()).toBe('pong');
    const after = h.agent.hibernation()!;
    expect(after.autoResponses).toBe(autoResponses + 5);
    expect(after.wakes).toBe(wakes);
    expect(activeRooms()).toBe(0);
    const metrics = await h.agent.server.metrics.registry.metrics();
    expect(metrics).toMatch(new RegExp(`^edge_hibernation_auto_responses_total\\{[^}]*\\} ${after.autoResponses}$`, 'm'));
    expect(metrics).toMatch(/^edge_hibernated_websockets\{[^}]*\} [1-9]\d*$/m);
    // Another message wakes it; it sees when the agent last answered.
    c.ws.send('autots');
    const ts = Number(await c.next());
    expect(ts).toBeGreaterThanOrEqual(sentAt - 5);
    expect(ts).toBeLessThanOrEqual(Date.now());
    // Two activations of r2: /auto, then the wake (the auto-responses constructed nothing).
    expect(await get('/constructed?room=r2')).toBe('2');
    c.ws.close(1000);
  }, 60_000);

  it('carries close codes and reasons both ways, hibernated and plain', async () => {
    // Client -> server: webSocketClose hears the client's code and reason, even when asleep.
    const d = await connect(h.port, HOST, '/?room=r3&name=dave');
    await evicted();
    d.ws.close(4000, 'client says bye');
    expect(await d.closed).toEqual({ code: 4000, reason: 'client says bye' });
    await waitFor('webSocketClose', async () => JSON.parse(await get('/events?room=r3'))['ev:close:dave'] !== undefined, 10_000);
    expect(JSON.parse(await get('/events?room=r3'))['ev:close:dave']).toEqual([4000, 'client says bye', true]);
    expect(JSON.parse(await get('/sockets?room=r3'))).toEqual([]);

    // Server -> client: ws.close(code, reason) in webSocketMessage reaches the client.
    const e = await connect(h.port, HOST, '/?room=r3&name=erin');
    e.ws.send('close:4001:server says bye');
    expect(await e.closed).toEqual({ code: 4001, reason: 'server says bye' });

    // A connection that dies without a close frame: 1006, not clean.
    const f = await connect(h.port, HOST, '/?room=r3&name=frank');
    f.ws.terminate();
    await waitFor('webSocketClose 1006', async () => JSON.parse(await get('/events?room=r3'))['ev:close:frank'] !== undefined, 10_000);
    expect(JSON.parse(await get('/events?room=r3'))['ev:close:frank']).toEqual([1006, 'WebSocket disconnected without sending Close frame.', false]);

    // The plain path (server.accept() and listeners) carries them too.
    const g = await connect(h.port, HOST, '/plain?room=r4');
    g.ws.send('hi');
    expect(await g.next()).toBe('plain:hi');
    g.ws.close(4003, 'plain client bye');
    expect((await g.closed).code).toBe(4003);
    await waitFor('plain close event', async () => JSON.parse(await get('/events?room=r4'))['ev:plain'] !== undefined, 10_000);
    expect(JSON.parse(await get('/events?room=r4'))['ev:plain']).toEqual([4003, 'plain client bye', true]);
    const g2 = await connect(h.port, HOST, '/plain?room=r4');
    g2.ws.send('close');
    expect(await g2.closed).toEqual({ code: 4002, reason: 'plain server bye' });
  }, 60_000);

  it('lets a non-GET upgrade request reach the worker', async () => {
    const res = await new Promise<{ status: number; body: string; upgraded: boolean; method?: string }>((resolve, reject) => {
      const req = httpRequest({
        host: '127.0.0.1', port: h.port, method: 'POST', path: '/method?room=r5',
        headers: { host: HOST, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' },
      });
      req.on('response', (r) => {
        let body = '';
        r.on('data', (c: Buffer) => { body += c.toString(); });
        r.on('end', () => resolve({ status: r.statusCode ?? 0, body, upgraded: false }));
      });
      req.on('upgrade', (r, socket) => { socket.destroy(); resolve({ status: r.statusCode ?? 0, body: '', upgraded: true, method: String(r.headers['x-method']) }); });
      req.on('error', reject);
      req.end();
    });
    // The worker (here its actor) sees the POST; /method answers it plainly...
    expect(res).toEqual({ status: 200, body: 'POST', upgraded: false });
    // ...and a POST upgrade the actor accepts is completed.
    const up = await new Promise<{ status: number; method: string }>((resolve, reject) => {
      const req = httpRequest({
        host: '127.0.0.1', port: h.port, method: 'POST', path: '/?room=r5&name=poster',
        headers: { host: HOST, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' },
      });
      req.on('upgrade', (r, socket) => { socket.destroy(); resolve({ status: r.statusCode ?? 0, method: String(r.headers['x-method']) }); });
      req.on('response', (r) => reject(new Error(`not upgraded: ${r.statusCode}`)));
      req.on('error', reject);
      req.end();
    });
    expect(up).toEqual({ status: 101, method: 'POST' });
    // A body could never reach the worker (the connection is handed over at the headers): refused, not left to hang.
    const withBody = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest({
        host: '127.0.0.1', port: h.port, method: 'POST', path: '/method?room=r5',
        headers: { host: HOST, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13', 'content-length': '5' },
      });
      req.on('response', (r) => {
        let body = '';
        r.on('data', (c: Buffer) => { body += c.toString(); });
        r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end('hello');
    });
    expect(withBody).toEqual({ status: 400, body: 'a WebSocket upgrade request cannot carry a body\n' });
  }, 30_000);

  it('refuses what workerd refuses: more than 10 tags, a tag over 256 characters, accepting twice, an attachment over 16 KiB', async () => {
    const tags11 = Array.from({ length: 11 }, (_, i) => `tag=t${i}`).join('&');
    await expect(connect(h.port, HOST, `/?room=r6&${tags11}`)).rejects.toThrow('unexpected response 400: Error: a Hibernatable WebSocket cannot have more than 10 tags');
    // Ten distinct tags (a duplicate does not count while under the limit, as in workerd) are fine.
    const ok = await connect(h.port, HOST, `/?room=r6&name=ten&tag=t0&${Array.from({ length: 10 }, (_, i) => `tag=t${i}`).join('&')}`);
    await expect(connect(h.port, HOST, `/?room=r6&tag=${'x'.repeat(257)}`)).rejects.toThrow(`is longer than the max tag length (256 characters).`);
    await expect(connect(h.port, HOST, '/twice?room=r6')).rejects.toThrow('Error: Cannot call `acceptWebSocket()` if the WebSocket was already accepted via `accept()`');
    ok.ws.send('big');
    expect(await ok.next()).toMatch(/^Error: A WebSocket 'attachment' cannot be larger than 16384 bytes\. 'attachment' was \d+ bytes\.$/);
    ok.ws.send('fn');
    expect(await ok.next()).toMatch(/^DataCloneError: .*could not be cloned/);
    // The refused attachment left the old one in place.
    ok.ws.send('whoami');
    expect(JSON.parse(await ok.next()).att).toEqual({ name: 'ten', n: 0 });
    ok.ws.close();
  }, 30_000);

  it('closes a socket that floods a hibernated actor (1013) instead of queueing without bound, and tells the actor', async () => {
    const flood = await connect(h.port, HOST, '/?room=r7&name=flooder');
    const calm = await connect(h.port, HOST, '/?room=r7&name=calm');
    await evicted();
    const { overflows } = h.agent.hibernation()!;
    const payload = 'y'.repeat(512);
    for (let i = 0; i < 5000 && flood.ws.readyState === 1; i++) flood.ws.send(payload);
    const closed = await flood.closed;
    expect(closed.code).toBe(1013);
    expect(h.agent.hibernation()!.overflows).toBe(overflows + 1);
    await waitFor('webSocketError', async () => JSON.parse(await get('/events?room=r7'))['ev:error:flooder'] !== undefined, 30_000);
    expect(JSON.parse(await get('/events?room=r7'))['ev:error:flooder']).toMatch(/did not keep up/);
    // The other socket of the actor is unaffected.
    calm.ws.send('still here');
    expect(await calm.next()).toBe('echo:still here');
    calm.ws.close();
  }, 60_000);

  it('refuses a 32,769th socket on one actor', async () => {
    const res = await get('/hoard?room=r8');
    expect(res).toBe('32768 Error: state.acceptWebSocket(): this Durable Object already holds 32768 WebSockets, the most one may');
  }, 60_000);

  it('closes hibernated sockets with 1012 when their worker is updated, as Cloudflare does on a code update; other workers\' stay', async () => {
    const old = await connect(h.port, 'other.test', '/?room=v1&name=old');
    const stays = await connect(h.port, HOST, '/?room=v1&name=stays');
    await h.publish({ namespace: 'tenant-b', name: 'rooms', host: 'other.test', source: `${ROOM}\n// v2`, actors: { ROOMS: { name: 'rooms', className: 'Room' } } });
    expect(await old.closed).toEqual({ code: 1012, reason: 'the worker was updated' });
    stays.ws.send('whoami');
    expect(JSON.parse(await stays.next()).att.name).toBe('stays');
    stays.ws.close();
  }, 30_000);

  it("never shows one namespace's sockets to another namespace's actor of the same names", async () => {
    const mine = await connect(h.port, HOST, '/?room=shared&name=mine&tag=t');
    expect(JSON.parse(await get('/sockets?room=shared'))).toHaveLength(1);
    expect(JSON.parse(await get('/sockets?room=shared', 'other.test'))).toEqual([]);
    expect(await get('/broadcast?room=shared&m=x', 'other.test')).toBe('0');
    mine.ws.send('whoami');
    expect(JSON.parse(await mine.next()).att.name).toBe('mine');
    mine.ws.close();
  }, 30_000);
});

