import { mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api } from '@kubernetes/client-node';
import { actorInstanceKey } from '../common/keys.js';
import { ActorIds } from '../node-agent/bindings/actor-id.js';
import { crPath, KubeClient } from '../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER } from '../cli/local/cluster.js';
import { loadConfig } from './config.js';
import { httpRequest, keepAliveAgent, summarize, type Summary } from './http.js';
import { pickLoadgen, runLoad, type Loadgen, type LoadResult } from './load.js';
import { sleep } from './procs.js';
import type { Cell, Row } from './report.js';
import { capnpString, startWorkerd, workerdBinary, type Workerd } from './workerd.js';
import type { ActorCtx } from './actors.js';

// The SQLite-backed actor case of the actor phase (issue 14): one INSERT per call into the
// actor's SQLite database (ctx.storage.sql), on edge-isolates (a DurableActor with
// spec.storage.backend: sqlite; SQLite in the actor's isolate, each call's statements in
// one fenced JetStream commit) and on workerd (the same worker and class byte for byte, a
// SQLite-backed Durable Object namespace, enableSql, on local disk). Sequential calls
// (p50/p99) and concurrent calls/s on one actor; every answer is the row count, which must
// grow by one per acknowledged call.
//
// Alone (no other phase): `npx tsx bench/actors-sqlite.ts` (NODE_OPTIONS=--no-node-snapshot).

const log = (msg: string): void => { process.stderr.write(`${msg}\n`); };
const NS = 'bench-sql';
const REGION = 'bench-1';
const DA = 'ledgers';
const HOST = 'ledger.bench';
const WD_UNIQUE_KEY = 'edge-bench-ledgers';

export const LEDGER_SOURCE = `export class Ledger {
  constructor(ctx, env) {
    this.sql = ctx.storage.sql;
    this.sql.exec("CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, at TEXT NOT NULL, body TEXT)");
  }
  async fetch(request) {
    this.sql.exec("INSERT INTO entries (at, body) VALUES (datetime('now'), ?)", request.url);
    return new Response(String(this.sql.exec("SELECT max(id) AS n FROM entries").one().n));
  }
}
export default {
  async fetch(request, env) {
    const name = new URL(request.url).searchParams.get("name") ?? "bench";
    return env.LEDGER.get(env.LEDGER.idFromName(name)).fetch(request);
  },
};
`;

/** The same ledger on KV storage: one put per call (BENCH_SQL_KV=1). */
const KV_LEDGER_SOURCE = LEDGER_SOURCE.replace(/export class Ledger \{[\s\S]*?\n\}\n/, `export class Ledger {
  constructor(ctx, env) { this.storage = ctx.storage; }
  async fetch(request) {
    const n = ((await this.storage.get("n")) ?? 0) + 1;
    await this.storage.put({ n, ["e" + n]: request.url });
    return new Response(String(n));
  }
}
`);

interface Side { seq: Summary; throughput?: LoadResult | { error: string } }

/** Sequential calls over one keep-alive connection; each answer must be the previous + 1. */
async function sequential(what: string, port: number, warmup: number, n: number): Promise<Summary> {
  const keep = keepAliveAgent();
  const samples: number[] = [];
  let prev: number | undefined;
  try {
    for (let i = 0; i < warmup + n; i++) {
      const r = await httpRequest({ port, host: HOST, path: '/', agent: keep, timeoutMs: 30_000 });
      const c = Number(r.body);
      if (r.status !== 200 || !Number.isInteger(c) || (prev !== undefined && c !== prev + 1)) {
        throw new Error(`${what}: call ${i + 1} answered ${r.status} ${JSON.stringify(r.body.slice(0, 200))} after ${prev ?? 'nothing'}`);
      }
      prev = c;
      if (i >= warmup) samples.push(r.ms);
    }
  } finally { keep.destroy(); }
  return summarize(samples);
}

async function count(port: number): Promise<number> {
  const r = await httpRequest({ port, host: HOST, path: '/', timeoutMs: 30_000 });
  return Number(r.body);
}

/** Concurrent calls on the one actor; no acknowledged INSERT may be lost. */
async function concurrent(tool: Loadgen, port: number, connections: number, durationS: number, threads: number, tmp: string): Promise<LoadResult> {
  const before = await count(port);
  const load = await runLoad(tool, { port, host: HOST, method: 'GET', connections, durationS, threads }, tmp);
  const after = await count(port);
  const acked = load.requests - load.non2xx;
  if (after - 1 < before + acked) throw new Error(`rows went from ${before} to ${after} over ${acked} acknowledged calls: INSERTs were lost`);
  return load;
}

async function edgeSide(ctx: ActorCtx, d: string): Promise<Side> {
  const { cfg } = ctx;
  const cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: [REGION], agentsPerRegion: 1, presenceTtlMs: 1000 });
  try {
    const kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    const op = await cluster.startOperator('bench-sql-operator');
    const post = (plural: string, kind: string, name: string, spec: Record<string, unknown>) => kube.request('POST', crPath(plural, NS), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind, metadata: { name, namespace: NS }, spec }, query: { fieldValidation: 'Strict' },
    });
    // BENCH_SQL_KV=1: the same calls on a KV-backed class (one put per call), for comparison on the same machine.
    const kv = process.env.BENCH_SQL_KV === '1';
    await post('durableactors', 'DurableActor', DA, { workerRef: { name: 'ledger' }, className: 'Ledger', locationHint: REGION, idleTimeoutSeconds: 600, storage: { backend: kv ? 'kv' : 'sqlite', maxBytesPerActor: 64 * 1024 * 1024 } });
    await post('edgeworkers', 'EdgeWorker', 'ledger', { source: { inline: kv ? KV_LEDGER_SOURCE : LEDGER_SOURCE }, routes: [{ host: HOST }], bindings: { actors: [{ name: 'LEDGER', actor: DA }] } });
    const agent = cluster.agents[0]!;
    const deadline = performance.now() + 30_000;
    for (;;) {
      op.proc.assertRunning();
      const r = await httpRequest({ port: agent.port, host: HOST, path: '/', timeoutMs: 10_000 }).catch(() => undefined);
      if (r?.status === 200) break;
      if (performance.now() > deadline) {
        const why = readdirSync(cluster.cp.dir).filter((f) => f.endsWith('.log')).flatMap((f) => readFileSync(join(cluster.cp.dir, f), 'utf8').split('\n').filter((l) => /"level":"(warn|error)"|cordon/i.test(l))).slice(-8).join('\n');
        const da = await kube.request<{ status?: unknown }>('GET', crPath('durableactors', NS, DA));
        throw new Error(`the SQLite actor does not answer within 30 s (last: ${r?.status} ${r?.body.slice(0, 200)}); DurableActor status ${JSON.stringify(da.status)}; the agent logged:\n${why}`);
      }
      await sleep(200);
    }
    const uid = (await kube.request<{ metadata: { uid: string } }>('GET', crPath('durableactors', NS, DA))).metadata.uid;
    const key = actorInstanceKey(NS, DA, new ActorIds(uid).idFromName('bench').hex);
    const status = await cluster.agentStatus<{ actors?: string[] }>(agent);
    if (!status.actors?.includes(key)) throw new Error(`actor "bench" is not active on ${agent.node}`);
    const seq = await sequential('agent, SQLite actor', agent.port, cfg.actorWarmupCalls, cfg.actorCalls);
    log(`  agent SQLite actor: p50 ${seq.p50.toFixed(2)} ms p99 ${seq.p99.toFixed(2)} ms`);
    const res: Side = { seq };
    try {
      res.throughput = await concurrent(ctx.tool, agent.port, cfg.connections, cfg.durationS, cfg.threads, d);
      log(`  agent SQLite actor: ${Math.round(res.throughput.rps)} calls/s (${cfg.connections} connections)`);
    } catch (err) { res.throughput = { error: (err as Error).message }; }
    return res;
  } finally { await cluster.stop(); }
}

function workerdConfig(diskPath: string): string {
  return [
    'using Workerd = import "/workerd/workerd.capnp";',
    'const config :Workerd.Config = (',
    '  services = [',
    `    (name = "ledger", worker = (modules = [(name = "worker.js", esModule = ${capnpString(LEDGER_SOURCE)})], compatibilityDate = "2025-01-01",`,
    `      durableObjectNamespaces = [(className = "Ledger", uniqueKey = ${capnpString(WD_UNIQUE_KEY)}, enableSql = true)],`,
    '      durableObjectStorage = (localDisk = "do-disk"),',
    '      bindings = [(name = "LEDGER", durableObjectNamespace = "Ledger")])),',
    `    (name = "do-disk", disk = (path = ${capnpString(diskPath)}, writable = true)),`,
    '  ],',
    '  sockets = [(name = "ledger", address = "127.0.0.1:0", http = (), service = "ledger")],',
    ');',
    '',
  ].join('\n');
}

async function workerdSide(ctx: ActorCtx, d: string): Promise<Side> {
  const { cfg } = ctx;
  const disk = join(d, 'do');
  mkdirSync(disk, { recursive: true });
  let w: Workerd | undefined;
  try {
    w = await startWorkerd(ctx.workerd.bin ?? '', join(d, 'config.capnp'), workerdConfig(disk), ['ledger'], join(d, 'workerd.log'), 60_000);
    const port = w.ports.get('ledger') ?? 0;
    const seq = await sequential('workerd, SQLite Durable Object', port, cfg.actorWarmupCalls, cfg.actorCalls);
    log(`  workerd SQLite Durable Object: p50 ${seq.p50.toFixed(2)} ms p99 ${seq.p99.toFixed(2)} ms`);
    const res: Side = { seq };
    try { res.throughput = await concurrent(ctx.tool, port, cfg.connections, cfg.durationS, cfg.threads, d); } catch (err) { res.throughput = { error: (err as Error).message }; }
    if (!readdirSync(join(disk, WD_UNIQUE_KEY)).some((f) => f.endsWith('.sqlite'))) throw new Error('workerd wrote no .sqlite file: its SQLite Durable Object storage is not on disk');
    return res;
  } finally { await w?.proc.stop(); }
}

/** The rows of the SQLite case, beside workerd. */
export async function sqliteActorRows(ctx: ActorCtx): Promise<Row[]> {
  const { cfg } = ctx;
  log(`[actors, SQLite] one INSERT per call: ${cfg.actorWarmupCalls} warm-up + ${cfg.actorCalls} sequential calls, then ${cfg.connections} connections for ${cfg.durationS} s`);
  const run = async (skip: string | undefined, down: string | undefined, f: () => Promise<Side>): Promise<Side | Cell> => {
    if (skip) return { skipped: skip };
    if (down) return { error: down };
    try { return await f(); } catch (err) { log(`  FAILED: ${(err as Error).message.split('\n')[0]}`); return { error: (err as Error).message }; }
  };
  const edge = await run(ctx.agent.skip, ctx.agent.down, () => edgeSide(ctx, ctx.dir('act-sqlite')));
  const wd = await run(ctx.workerd.skip, ctx.workerd.down, () => workerdSide(ctx, ctx.dir('workerd-sqlite')));
  ctx.raw.actorsSqlite = { source: LEDGER_SOURCE, calls: cfg.actorCalls, agent: edge, workerd: wd };
  const cell = (s: Side | Cell, f: (x: Side) => number | undefined): Cell => {
    if (!('seq' in s)) return s;
    const v = f(s);
    return v === undefined ? { error: 'not measured' } : { value: v };
  };
  const rps = (x: Side) => (x.throughput && !('error' in x.throughput) ? x.throughput.rps : undefined);
  return [
    { metric: `SQLite actor call p50, one INSERT per call (n=${cfg.actorCalls} sequential; workerd: enableSql, local disk)`, unit: 'ms', better: 'lower', agent: cell(edge, (x) => x.seq.p50), workerd: cell(wd, (x) => x.seq.p50) },
    { metric: 'SQLite actor call p99 (same samples)', unit: 'ms', better: 'lower', agent: cell(edge, (x) => x.seq.p99), workerd: cell(wd, (x) => x.seq.p99) },
    { metric: `SQLite actor calls/s, one actor, ${cfg.connections} connections`, unit: 'req/s', better: 'info', agent: cell(edge, rps), workerd: cell(wd, rps) },
  ];
}

// Alone: this case only, workerd when it is installed.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const cfg = loadConfig();
  const tmp = mkdtempSync(join(tmpdir(), 'edge-bench-sqlite-'));
  let n = 0;
  let bin: string | null = null;
  let down: string | undefined;
  try { bin = workerdBinary(); } catch (err) { down = (err as Error).message; }
  const ctx: ActorCtx = {
    cfg, raw: {}, tool: pickLoadgen(cfg.loadgen === 'auto' ? 'auto' : cfg.loadgen).tool,
    dir: (what) => { const p = join(tmp, `${String(++n).padStart(2, '0')}-${what}`); mkdirSync(p, { recursive: true }); return p; },
    warn: (msg) => log(`WARNING ${msg}`),
    agent: {}, workerd: { bin, ...(down ? { down } : {}) },
  };
  sqliteActorRows(ctx).then((rows) => { console.log(JSON.stringify(rows, null, 1)); process.exit(0); }, (err: unknown) => { console.error(err); process.exit(1); });
}
