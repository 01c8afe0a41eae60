import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { waitFor } from '../../cli/local/ports.js';
import { startTestAgent, type TestAgent } from '../agent/agent-harness.js';

// Issue 12 item 3, the outgoing WebSocket backlog: a worker that sends faster than its
// client reads made the agent hold every message it could not write yet (+100-400 MB per
// request). Now what a socket, and what an isolate's sockets together, may have waiting
// for the network is bounded: past the bound the socket is closed (the worker hears 1006,
// the client 1008), past the isolate's bound send() throws, and the bytes are a metric.

const MiB = 1024 * 1024;

const FLOOD = `
export default {
  async fetch(request) {
    if (request.headers.get('Upgrade') !== 'websocket') return new Response('flood alive');
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    const chunk = 'x'.repeat(512 * 1024);
    server.addEventListener('message', (e) => {
      let sent = 0;
      let threw = '';
      try { for (let i = 0; i < Number(e.data); i++) { server.send(chunk); sent++; } } catch (err) { threw = err.name + ': ' + err.message; }
      console.log('flood sent ' + sent + ' ' + threw);
    });
    server.addEventListener('close', (e) => console.log('flood closed ' + e.code + ' ' + e.reason));
    return new Response(null, { status: 101, webSocket: client });
  },
};`;

/** Module state holds every socket of its (one) isolate; GET /?rounds=N broadcasts N half-MiB rounds. */
const BROADCAST = `
const sockets = new Set();
export default {
  async fetch(request) {
    if (request.headers.get('Upgrade') === 'websocket') {
      const [client, server] = Object.values(new WebSocketPair());
      server.accept();
      sockets.add(server);
      server.addEventListener('close', () => sockets.delete(server));
      return new Response(null, { status: 101, webSocket: client });
    }
    const rounds = Number(new URL(request.url).searchParams.get('rounds') ?? 0);
    const chunk = 'y'.repeat(512 * 1024);
    let sent = 0;
    let threw = '';
    try { for (let i = 0; i < rounds; i++) for (const s of sockets) { s.send(chunk); sent++; } } catch (err) { threw = err.name + ': ' + err.message; }
    return Response.json({ open: sockets.size, sent, threw });
  },
};`;

const NEIGHBOUR = 'export default { fetch() { return new Response("neighbour ok"); } };';

/** A client that opens the socket, asks for `count` half-MiB messages, and never reads them. */
function deafClient(port: number, count: number | undefined, host = 'flood.test'): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, undefined, { headers: { host } });
    ws.on('error', () => { /* the agent may cut the connection */ });
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
    ws.once('open', () => {
      if (count !== undefined) ws.send(String(count));
      ws.pause();
      resolve(ws);
    });
  });
}

describe('the outgoing WebSocket backlog is bounded', () => {
  let a: TestAgent;
  beforeAll(async () => {
    a = await startTestAgent([
      { name: 'flood', source: FLOOD, limits: { cpuMsPerRequest: 5000, wallMsPerRequest: 20_000 } },
      { name: 'broadcast', source: BROADCAST, limits: { cpuMsPerRequest: 5000, wallMsPerRequest: 20_000 } },
      { name: 'neighbour', source: NEIGHBOUR },
      // memoryMiB 64 (the harness default): an isolate's sockets may hold 16 MiB, one socket 8 MiB.
    ], { maxIsolatesPerWorker: 1 });
  });
  afterAll(async () => { await a?.stop(); });

  const metrics = () => a.agent.metrics.registry.metrics();
  const backlogOf = async (worker: string) => Number(new RegExp(`edge_websocket_outgoing_backlog_bytes\\{worker="default/${worker}"\\} (\\d+)`).exec(await metrics())?.[1] ?? 0);

  it('a worker flooding sockets whose clients never read: RSS stays bounded, the sockets close, a neighbour keeps answering', async () => {
    const before = process.memoryUsage().rss;
    let peak = before;
    const sample = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
    // 6 sockets x 400 half-MiB messages: 1.2 GB asked for.
    const clients = await Promise.all(Array.from({ length: 6 }, () => deafClient(a.port, 400)));
    const answers: string[] = [];
    const floodLogs = () => a.logs.map((l) => l.msg).filter((m): m is string => typeof m === 'string' && m.startsWith('flood'));
    // Every socket's flood ends: either its socket is closed for its own backlog, or (once
    // the closed ones' bytes fill the isolate's bound) its send() throws before it holds any.
    const ended = () => floodLogs().filter((m) => m.startsWith('flood sent')).length;
    const closed = () => floodLogs().filter((m) => m.startsWith('flood closed')).length;
    await waitFor('every flood over, each socket closed or refused', async () => {
      answers.push(await (await a.get('neighbour.test')).text());
      return ended() === clients.length && closed() >= 1;
    }, 60_000, 50);
    for (const m of floodLogs().filter((l) => l.startsWith('flood sent') && !/^flood sent 400 $/.test(l))) {
      expect(m).toMatch(/RangeError: WebSocket\.send: .*wait for slow clients/);
    }
    clearInterval(sample);
    const grown = (peak - before) / MiB;
    console.log(`agent RSS grew by ${grown.toFixed(0)} MiB at peak\n${floodLogs().join('\n')}`);
    // 6 sockets x 8 MiB, the 16 MiB isolate bound, and the garbage of the copies.
    expect(grown).toBeLessThan(200);
    // The worker heard each socket fail, with the reason.
    for (const m of floodLogs().filter((l) => l.startsWith('flood closed'))) expect(m).toMatch(/^flood closed 1006 .*(not reading|slow clients)/);
    expect(await metrics()).toMatch(new RegExp(`edge_websocket_backlog_closes_total\\{worker="default/flood"\\} ${closed()}\\n`));
    expect(answers.length).toBeGreaterThan(0);
    expect(answers.every((t) => t === 'neighbour ok')).toBe(true);
    // The same worker still serves other clients.
    expect(await (await a.get('flood.test')).text()).toBe('flood alive');
    for (const c of clients) c.terminate();
    // Cut connections give back what they held.
    await waitFor('the backlog metric is back to 0', async () => await backlogOf('flood') === 0, 10_000, 50);
  });

  it('an isolate broadcasting to slow clients and one reader: the slow ones are closed, then send() throws rather than hold more', async () => {
    const deaf = await Promise.all(Array.from({ length: 4 }, () => deafClient(a.port, undefined, 'broadcast.test')));
    // The reader joins last, so each round sends to it after the slow ones.
    let received = 0;
    const reader = await new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${a.port}/`, undefined, { headers: { host: 'broadcast.test' } });
      ws.on('message', () => { received += 1; });
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
    // 5 sockets x 20 rounds x 0.5 MiB: the four slow ones fill the isolate's 16 MiB first.
    const res = await (await a.get('broadcast.test', '/?rounds=20')).json() as { open: number; sent: number; threw: string };
    expect(res.threw).toMatch(/^RangeError: WebSocket.send: .*wait for slow clients/);
    expect(await backlogOf('broadcast')).toBeLessThanOrEqual(16 * MiB);
    // The slowest was closed; the send that found the rest of the bound held by slow clients threw.
    expect(await metrics()).toMatch(/edge_websocket_backlog_closes_total\{worker="default\/broadcast"\} [1-4]\n/);
    expect(await (await a.get('neighbour.test')).text()).toBe('neighbour ok');
    for (const c of deaf) c.terminate();
    await waitFor('the backlog metric is back to 0', async () => await backlogOf('broadcast') === 0, 20_000, 50);
    await waitFor('the worker saw the slow clients go', async () => ((await (await a.get('broadcast.test', '/?rounds=0')).json()) as { open: number }).open === 1, 20_000, 50);
    // The reader was never closed: with the slow clients gone, the broadcast reaches it.
    const before = received;
    const again = await (await a.get('broadcast.test', '/?rounds=1')).json() as { open: number; threw: string };
    expect(again).toMatchObject({ open: 1, threw: '' });
    await waitFor('the reader got the new round', async () => received > before, 10_000, 20);
    reader.close();
  });
});
