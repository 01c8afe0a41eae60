import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { send } from './agent-harness.js';
import { startActorAgent, type ActorAgent } from './actor-agent.js';

// 10,000 hibernated WebSockets on one actor, its isolate evicted, on one in-process agent:
// every socket stays open, the agent's memory per socket is measured (and printed), and
// a broadcast wakes the actor and reaches every client. The clients run in a child process:
// this machine's file-descriptor limit (ulimit -n, soft = hard = 20,000) would not hold
// both ends of 10,000 connections (20,000 fds) plus NATS and the rest in one process.
// Nothing here asserts speed (bench/ does); the figures are printed.

const SOCKETS = Number(process.env.EDGE_HIBERNATION_SOCKETS ?? 10_000);
const HOST = 'big.test';

const BIG_ROOM = `
export class BigRoom {
  constructor(ctx) { this.ctx = ctx; }
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/broadcast') {
      const all = this.ctx.getWebSockets();
      for (const ws of all) ws.send('B');
      return new Response(String(all.length));
    }
    if (url.pathname === '/count') return new Response(String(this.ctx.getWebSockets().length));
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server, ['all']);
    server.serializeAttachment({ n: Number(url.searchParams.get('n')) });
    return new Response(null, { status: 101, webSocket: client });
  }
  async webSocketMessage(ws, message) { ws.send(JSON.stringify(ws.deserializeAttachment())); }
}
export default { fetch(request, env) { return env.ROOMS.get(env.ROOMS.idFromName('big')).fetch(request); } };`;

// The clients: N sockets opened in parallel batches; "B" messages counted; a line of JSON
// on stdout per milestone; "close" on stdin ends them.
const CLIENTS = `
import { WebSocket } from 'ws';
const [port, host, n, batch] = process.argv.slice(1).map((v, i) => (i === 1 ? v : Number(v)));
const sockets = [];
let received = 0;
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const open = (i) => new Promise((resolve, reject) => {
  const ws = new WebSocket('ws://127.0.0.1:' + port + '/?n=' + i, { headers: { host }, perMessageDeflate: false });
  ws.on('open', () => resolve(ws));
  ws.on('error', reject);
  ws.on('message', (d) => { if (d.toString() === 'B' && ++received % n === 0) say({ received }); });
  ws.on('close', (code) => say({ closed: code, i }));
});
const start = performance.now();
for (let i = 0; i < n; i += batch) {
  const got = await Promise.all(Array.from({ length: Math.min(batch, n - i) }, (_, j) => open(i + j)));
  sockets.push(...got);
}
say({ opened: sockets.length, ms: Math.round(performance.now() - start) });
process.stdin.on('data', (d) => {
  if (d.toString().includes('close')) { for (const ws of sockets) ws.terminate(); process.exit(0); }
});
`;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const settle = async () => { for (let i = 0; i < 3; i++) { gc(); await new Promise((r) => setTimeout(r, 100)); } };
const mib = (b: number) => Math.round((b / 1024 / 1024) * 10) / 10;

describe(`${SOCKETS} hibernated WebSockets on one actor`, () => {
  let h: ActorAgent;
  let clients: ChildProcess | undefined;
  const lines: Record<string, unknown>[] = [];
  const waiters: { test: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  const expectLine = (test: (l: Record<string, unknown>) => boolean, ms: number): Promise<Record<string, unknown>> => {
    const seen = lines.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`clients said nothing matching within ${ms} ms; last: ${JSON.stringify(lines.slice(-3))}`)), ms);
      waiters.push({ test, resolve: (l) => { clearTimeout(t); resolve(l); } });
    });
  };

  beforeAll(async () => {
    h = await startActorAgent();
    await h.publish({ namespace: 'scale', name: 'big', host: HOST, source: BIG_ROOM, cpuMsPerRequest: 5000, actors: { ROOMS: { name: 'big', className: 'BigRoom' } } });
    await waitFor('the worker to be served', async () => (await send(h.port, HOST, '/count')).status === 200, 30_000);
  }, 60_000);

  afterAll(async () => {
    clients?.stdin?.write('close\n');
    clients?.kill('SIGKILL');
    await h?.stop();
  });

  it('keeps them open with the isolate evicted, measures the agent memory per socket, and reaches all with a broadcast', async () => {
    // Evicted before measuring, so the baseline holds no actor isolate either.
    await waitFor('the actor to be evicted', async () => h.agent.actors().length === 0, 20_000);
    await settle();
    const before = process.memoryUsage();

    clients = spawn(process.execPath, ['--input-type=module', '-e', CLIENTS, String(h.port), HOST, String(SOCKETS), '250'], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: clients.stdout! }).on('line', (text) => {
      const l = JSON.parse(text) as Record<string, unknown>;
      lines.push(l);
      for (const w of [...waiters]) if (w.test(l)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(l); }
    });
    const opened = await expectLine((l) => 'opened' in l, 240_000);
    expect(opened.opened).toBe(SOCKETS);
    expect(h.agent.hibernation()!.sockets).toBe(SOCKETS);

    await waitFor('the actor to be evicted with its sockets open', async () => h.agent.actors().length === 0, 30_000);
    await settle();
    const after = process.memoryUsage();
    expect(h.agent.hibernation()!.sockets).toBe(SOCKETS);
    expect(lines.filter((l) => 'closed' in l)).toEqual([]);
    const perSocket = {
      rssBytes: Math.round((after.rss - before.rss) / SOCKETS),
      heapBytes: Math.round((after.heapUsed - before.heapUsed) / SOCKETS),
      externalBytes: Math.round((after.external + after.arrayBuffers - before.external - before.arrayBuffers) / SOCKETS),
    };
    console.log(`hibernation scale: ${SOCKETS} sockets opened in ${String(opened.ms)} ms; agent RSS ${mib(before.rss)} -> ${mib(after.rss)} MiB, per socket: ${JSON.stringify(perSocket)}`);

    // A broadcast wakes the actor; every client gets it.
    expect(h.agent.actors()).toEqual([]);
    const start = performance.now();
    const res = await send(h.port, HOST, '/broadcast');
    expect(await res.text()).toBe(String(SOCKETS));
    await expectLine((l) => l.received === SOCKETS, 60_000);
    console.log(`hibernation scale: broadcast from an evicted actor to ${SOCKETS} sockets, all received in ${Math.round(performance.now() - start)} ms`);
  }, 400_000);
});
