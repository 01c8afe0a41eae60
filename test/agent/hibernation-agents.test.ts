import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { send } from './agent-harness.js';
import { connect, startActorAgent, type ActorAgent } from './actor-agent.js';

// Hibernation across agents: the client is connected to one agent, the actor lives on
// another (its owner on the ring), and the socket is carried between them over NATS. The
// owner holds the hibernatable socket (tags, attachment), evicts the actor, and a message
// from the client's agent wakes it there; close codes and reasons cross both ways.

const HOST = 'hib2.test';

const ROOM = `
export class Room {
  constructor(ctx) { this.ctx = ctx; }
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/closed') return Response.json((await this.ctx.storage.get('closed')) ?? null);
    if (request.headers.get('Upgrade') !== 'websocket') return new Response('ok');
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server, ['t']);
    server.serializeAttachment({ name: url.searchParams.get('name') });
    return new Response(null, { status: 101, webSocket: client });
  }
  async webSocketMessage(ws, message) {
    if (message.startsWith('close:')) { const [, code, reason] = message.split(':'); ws.close(Number(code), reason); return; }
    ws.send(JSON.stringify({ att: ws.deserializeAttachment(), tags: this.ctx.getTags(ws), message, n: this.ctx.getWebSockets('t').length }));
  }
  async webSocketClose(ws, code, reason, wasClean) {
    await this.ctx.storage.put('closed', [code, reason, wasClean]);
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const stub = env.ROOMS.get(env.ROOMS.idFromName(url.searchParams.get('room')));
    if (url.pathname === '/closed') return stub.fetch('http://do/closed');
    return stub.fetch(request);
  },
};`;

describe('WebSocket hibernation across agents', () => {
  let a: ActorAgent;
  let b: ActorAgent;
  /** A room whose owner is agent b (the client connects to agent a). */
  let room = '';

  beforeAll(async () => {
    a = await startActorAgent({ name: 'agent-a' });
    b = await startActorAgent({ name: 'agent-b', nats: a.nats });
    await a.publish({ namespace: 'tenant-x', name: 'rooms', host: HOST, source: ROOM, actors: { ROOMS: { name: 'rooms', className: 'Room' } } });
    // Until both agents see each other, every room lands on the agent called.
    await waitFor('a room owned by agent b, reached through agent a', async () => {
      for (let i = 0; i < 20; i++) {
        const r = `room-${i}`;
        const res = await send(a.port, HOST, `/?room=${r}`);
        if (res.status !== 200) return false;
        if (b.agent.actors().length > 0) { room = r; return true; }
      }
      return false;
    }, 60_000, 500);
  }, 90_000);

  afterAll(async () => {
    await b?.stop();
    await a?.stop();
  });

  it('holds the socket on the owner, evicts the actor there, and wakes it for the client on the other agent', async () => {
    const c = await connect(a.port, HOST, `/?room=${room}&name=far`);
    expect(b.agent.hibernation()!.sockets).toBe(1);
    expect(a.agent.hibernation()!.sockets).toBe(0);
    await waitFor('the actor to be evicted on agent b', async () => b.agent.actors().length === 0, 20_000);
    c.ws.send('hello');
    expect(JSON.parse(await c.next())).toEqual({ att: { name: 'far' }, tags: ['t'], message: 'hello', n: 1 });
    expect(b.agent.hibernation()!.wakes).toBeGreaterThanOrEqual(1);

    // Server close over NATS: the client sees the actor's code and reason.
    c.ws.send('close:4005:far away bye');
    expect(await c.closed).toEqual({ code: 4005, reason: 'far away bye' });

    // Client close over NATS: webSocketClose on the owner hears it.
    const d = await connect(a.port, HOST, `/?room=${room}&name=near`);
    await waitFor('the actor to be evicted on agent b', async () => b.agent.actors().length === 0, 20_000);
    d.ws.close(4006, 'client far bye');
    await waitFor('webSocketClose', async () => (await (await send(a.port, HOST, `/closed?room=${room}`)).text()) === JSON.stringify([4006, 'client far bye', true]), 15_000);
    await waitFor('the socket to be gone', async () => b.agent.hibernation()!.sockets === 0, 10_000);
  }, 90_000);

  it('moves the socket to the next owner when the owner drains; the client stays connected', async () => {
    const c = await connect(a.port, HOST, `/?room=${room}&name=mover`);
    c.ws.send('first');
    expect(JSON.parse(await c.next()).att).toEqual({ name: 'mover' });
    expect(b.agent.hibernation()!.sockets).toBe(1);
    await b.agent.drain();
    await waitFor('the socket to move to agent a', async () => a.agent.hibernation()!.sockets === 1, 20_000);
    expect(c.ws.readyState).toBe(1);
    c.ws.send('after');
    expect(JSON.parse(await c.next())).toEqual({ att: { name: 'mover' }, tags: ['t'], message: 'after', n: 1 });
    expect(a.agent.actors()).toHaveLength(1);
    c.ws.close();
  }, 60_000);
});
