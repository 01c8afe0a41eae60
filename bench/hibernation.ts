import { join } from 'node:path';
import { WebSocket } from 'ws';
import type { ActorCtx } from './actors.js';
import { summarize } from './http.js';
import type { Cell, Row } from './report.js';
import { capnpString, startWorkerd, type Workerd } from './workerd.js';
import { waitFor } from '../cli/local/ports.js';
import { startActorAgent } from '../test/agent/actor-agent.js';
import { send } from '../test/agent/agent-harness.js';

// The hibernation phase (issue 14): a broadcast from a hibernated Durable Object to 1,000
// WebSockets, timed from the request that triggers it until every client has the message,
// on edge-isolates (one in-process agent following nats-server, the actor evicted before
// each broadcast, so each one wakes it) and on workerd (the same source, in-memory
// Durable Object storage; workerd decides itself whether its object is still in memory).

const SOCKETS = Number(process.env.BENCH_HIBERNATION_SOCKETS ?? 1000);
const ROUNDS = 5;
const HOST = 'hib.bench';
const WD_UNIQUE_KEY = 'edge-bench-hibernation';

export const BROADCAST_SOURCE = `
export class Room {
  constructor(ctx) { this.ctx = ctx; }
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/broadcast') {
      const all = this.ctx.getWebSockets();
      const m = url.searchParams.get('m');
      for (const ws of all) ws.send(m);
      return new Response(String(all.length));
    }
    const [client, server] = Object.values(new WebSocketPair());
    this.ctx.acceptWebSocket(server);
    return new Response(null, { status: 101, webSocket: client });
  }
  async webSocketMessage(ws, message) { ws.send(message); }
}
export default { fetch(request, env) { return env.ROOMS.get(env.ROOMS.idFromName('room')).fetch(request); } };`;

const log = (msg: string): void => { process.stderr.write(`${msg}\n`); };
const firstLine = (err: unknown): string => (err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err));

interface Clients { sockets: WebSocket[]; received(m: string): Promise<void>; close(): void }

async function openClients(port: number): Promise<Clients> {
  const sockets: WebSocket[] = [];
  const counts = new Map<string, number>();
  const waiting = new Map<string, () => void>();
  const onMessage = (data: Buffer) => {
    const m = data.toString();
    const n = (counts.get(m) ?? 0) + 1;
    counts.set(m, n);
    if (n === SOCKETS) waiting.get(m)?.();
  };
  for (let i = 0; i < SOCKETS; i += 100) {
    sockets.push(...await Promise.all(Array.from({ length: Math.min(100, SOCKETS - i) }, () => new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`, undefined, { headers: { host: HOST }, perMessageDeflate: false });
      ws.on('open', () => resolve(ws));
      ws.on('error', reject);
      ws.on('message', (d) => onMessage(d as Buffer));
    }))));
  }
  return {
    sockets,
    received: (m) => (counts.get(m) === SOCKETS ? Promise.resolve() : new Promise((r) => waiting.set(m, r))),
    close: () => { for (const ws of sockets) ws.terminate(); },
  };
}

/** One timed broadcast: the request, then every client's copy. */
async function broadcast(port: number, clients: Clients, round: number): Promise<number> {
  const m = `b${round}`;
  const start = performance.now();
  const got = clients.received(m);
  const res = await send(port, HOST, `/broadcast?m=${m}`);
  const n = await res.text();
  if (n !== String(SOCKETS)) throw new Error(`the broadcast reached ${n} sockets, not ${SOCKETS}`);
  await got;
  return performance.now() - start;
}

async function edgeSide(): Promise<{ ms: number[]; perSocketBytes: number }> {
  const h = await startActorAgent();
  let clients: Clients | undefined;
  try {
    await h.publish({ namespace: 'bench', name: 'hib', host: HOST, source: BROADCAST_SOURCE, cpuMsPerRequest: 5000, actors: { ROOMS: { name: 'hib', className: 'Room' } } });
    await waitFor('the worker to be served', async () => (await send(h.port, HOST, '/broadcast?m=x')).status === 200, 30_000);
    const before = process.memoryUsage().rss;
    clients = await openClients(h.port);
    const ms: number[] = [];
    let perSocketBytes = 0;
    for (let r = 0; r < ROUNDS; r++) {
      await waitFor('the actor to be evicted', async () => h.agent.actors().length === 0, 30_000, 100);
      if (r === 0) perSocketBytes = Math.round((process.memoryUsage().rss - before) / SOCKETS);
      ms.push(await broadcast(h.port, clients, r));
    }
    return { ms, perSocketBytes };
  } finally {
    clients?.close();
    await h.stop();
  }
}

function workerdConfig(): string {
  return [
    'using Workerd = import "/workerd/workerd.capnp";',
    '',
    'const config :Workerd.Config = (',
    '  services = [',
    `    (name = "hib", worker = (modules = [(name = "worker.js", esModule = ${capnpString(BROADCAST_SOURCE)})], compatibilityDate = "2025-01-01",`,
    `      durableObjectNamespaces = [(className = "Room", uniqueKey = ${capnpString(WD_UNIQUE_KEY)})],`,
    '      durableObjectStorage = (inMemory = void),',
    '      bindings = [(name = "ROOMS", durableObjectNamespace = "Room")])),',
    '  ],',
    '  sockets = [(name = "hib", address = "127.0.0.1:0", http = (), service = "hib")],',
    ');',
    '',
  ].join('\n');
}

async function workerdSide(ctx: ActorCtx): Promise<number[]> {
  const d = ctx.dir('workerd-hibernation');
  let w: Workerd | undefined;
  let clients: Clients | undefined;
  try {
    w = await startWorkerd(ctx.workerd.bin ?? '', join(d, 'config.capnp'), workerdConfig(), ['hib'], join(d, 'workerd.log'), 60_000);
    const port = w.ports.get('hib') ?? 0;
    clients = await openClients(port);
    const ms: number[] = [];
    for (let r = 0; r < ROUNDS; r++) ms.push(await broadcast(port, clients, r));
    return ms;
  } finally {
    clients?.close();
    await w?.proc.stop();
  }
}

export async function hibernationPhase(ctx: ActorCtx): Promise<Row[]> {
  log(`[hibernation] broadcast from a hibernated Durable Object to ${SOCKETS} WebSockets, ${ROUNDS} rounds; edge-isolates: one in-process agent, the actor evicted before each round; workerd: in-memory storage`);
  let edge: Cell = { skipped: ctx.agent.skip ?? '' };
  if (ctx.agent.down) edge = { error: ctx.agent.down };
  else if (!ctx.agent.skip) {
    try {
      const r = await edgeSide();
      const s = summarize(r.ms);
      log(`  edge-isolates: p50 ${s.p50.toFixed(1)} ms (rounds: ${r.ms.map((v) => v.toFixed(1)).join(', ')}); agent RSS per hibernated socket ${r.perSocketBytes} B (its clients in the same process)`);
      ctx.raw.hibernation = { ...(ctx.raw.hibernation as object), agent: r };
      edge = { value: s.p50 };
    } catch (err) {
      log(`  edge-isolates: FAILED: ${firstLine(err)}`);
      edge = { error: (err as Error).message };
    }
  }
  let wd: Cell = { skipped: ctx.workerd.skip ?? '' };
  if (ctx.workerd.down) wd = { error: ctx.workerd.down };
  else if (!ctx.workerd.skip) {
    try {
      const ms = await workerdSide(ctx);
      const s = summarize(ms);
      log(`  workerd: p50 ${s.p50.toFixed(1)} ms (rounds: ${ms.map((v) => v.toFixed(1)).join(', ')})`);
      ctx.raw.hibernation = { ...(ctx.raw.hibernation as object), workerd: ms };
      wd = { value: s.p50 };
    } catch (err) {
      log(`  workerd: FAILED: ${firstLine(err)}`);
      wd = { error: (err as Error).message };
    }
  }
  return [
    { metric: `broadcast from a hibernated actor to ${SOCKETS} WebSockets, until every client has it (p50 of ${ROUNDS})`, unit: 'ms', better: 'lower', agent: edge, workerd: wd },
  ];
}
