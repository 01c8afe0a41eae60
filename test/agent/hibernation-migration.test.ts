import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EDGE_BIN } from '../../cli/local/cluster.js';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { ManagedProcess } from '../../cli/local/process.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { send } from './agent-harness.js';
import { connect, REGION, startActorAgent, type ActorAgent } from './actor-agent.js';

// A hibernated WebSocket survives the death of its actor's owner when the client's agent
// lives: the client is on agent A (in process), the actor on agent B (an `edge agent`
// process), and B is killed with SIGKILL. A kept the socket's state (tags, attachment,
// the id's name: B sends it on every change), notices B is gone (the NATS socket's
// silence), re-creates the socket on the actor's next owner (here A itself) and carries
// on: the client's connection never closes, and the woken actor sees the last attachment.

const HOST = 'mig.test';
const PEER_TOKEN = 'actor-agent-test-peer-token';

const ROOM = `
export class Room {
  constructor(ctx) { this.ctx = ctx; }
  async fetch(request) {
    const url = new URL(request.url);
    if (request.headers.get('Upgrade') !== 'websocket') return new Response('ok');
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server, ['t', url.searchParams.get('name')]);
    server.serializeAttachment({ name: url.searchParams.get('name'), n: 0 });
    return new Response(null, { status: 101, webSocket: client });
  }
  async webSocketMessage(ws, message) {
    const att = ws.deserializeAttachment();
    if (message === 'bump') { att.n += 1; ws.serializeAttachment(att); ws.send('n=' + att.n); return; }
    ws.send(JSON.stringify({ att, tags: this.ctx.getTags(ws), name: this.ctx.id.name ?? null, sockets: this.ctx.getWebSockets('t').length }));
  }
}
export default { fetch(request, env) { return env.ROOMS.getByName(new URL(request.url).searchParams.get('room')).fetch(request); } };`;

describe('a hibernated WebSocket outlives its owner agent (SIGKILL)', () => {
  let a: ActorAgent;
  let b: ManagedProcess | undefined;
  let dir: string;
  let room = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edge-hib-mig-'));
    a = await startActorAgent({ name: 'agent-a' });
    await a.publish({ namespace: 'tenant-m', name: 'rooms', host: HOST, source: ROOM, actors: { ROOMS: { name: 'rooms', className: 'Room' } } });
    const port = await freePort();
    b = new ManagedProcess('agent-b', process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'agent', '--nats', a.nats.url, '--region', REGION, '--node', 'node-b',
      '--listen', `127.0.0.1:${port}`, '--peer-listen', '127.0.0.1:0', '--admin', `127.0.0.1:${await freePort()}`, '--pool-size', '1', '--presence-ttl-ms', '1000', '--isolate-hosts', '0',
    ], { logFile: join(dir, 'agent-b.log'), cwd: REPO_ROOT, env: { ...process.env, EDGE_PEER_TOKEN: PEER_TOKEN } });
    // A room whose owner is agent b, reached through agent a (until a sees b, a owns them all).
    await waitFor('a room owned by agent b', async () => {
      b!.assertRunning();
      for (let i = 0; i < 20; i++) {
        const r = `room-${i}`;
        const res = await send(a.port, HOST, `/?room=${r}`);
        if (res.status !== 200) return false;
        if (!a.agent.actors().some((k) => k.startsWith('tenant-m/rooms/'))) { room = r; return true; }
        await waitFor('a to evict its rooms', async () => a.agent.actors().length === 0, 10_000);
      }
      return false;
    }, 90_000, 500);
  }, 120_000);

  afterAll(async () => {
    b?.killNow();
    await a?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('moves the socket to the next owner with its tags, attachment and name; the client stays connected', async () => {
    const c = await connect(a.port, HOST, `/?room=${room}&name=survivor`);
    expect(a.agent.hibernation()!.sockets).toBe(0);
    c.ws.send('bump');
    expect(await c.next()).toBe('n=1');
    c.ws.send('bump');
    expect(await c.next()).toBe('n=2');

    b!.killNow();
    await waitFor('the socket to move to agent a', async () => a.agent.hibernation()!.sockets === 1, 80_000, 200);
    expect(c.ws.readyState).toBe(1);
    c.ws.send('whoami');
    expect(JSON.parse(await c.next())).toEqual({ att: { name: 'survivor', n: 2 }, tags: ['t', 'survivor'], name: room, sockets: 1 });
    expect(a.agent.actors()).toHaveLength(1);
    c.ws.close(1000, 'done');
    expect((await c.closed).code).toBe(1000);
  }, 120_000);
});
