import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { actorsPhase } from './actors.js';
import { sqliteActorRows } from './actors-sqlite.js';
import { hibernationPhase } from './hibernation.js';
import { agentMetricSums, agentUnavailable, buildForBench, startAgent, writeWorkerDir, type Agent, type AgentWorker } from './agent.js';
import { loadConfig, PEER_PHASES, type BenchConfig, type PeerName } from './config.js';
import { expectBody, httpRequest, keepAliveAgent, summarize, type Summary } from './http.js';
import { pickLoadgen, runLoad, type LoadResult, type Loadgen, type LoadSpec } from './load.js';
import { percorePhase } from './percore.js';
import { shardsPhase } from './shards.js';
import { soakMain } from './soak.js';
import { operatorCreatePhase, operatorScalePhase, type OpCtx } from './operator.js';
import { killChildrenOnSignals, machineBusy, settledRssKiB, sleep, type Proc } from './procs.js';
import { evaluate, markdownTable, NOT_APPLICABLE, problems, writeResults, type Cell, type Row } from './report.js';
import { DYNAMIC_BODY, DYNAMIC_MODULE, HELLO_BODY, HELLO_SOURCE, JSON_REPLY, JSON_REQUEST, JSON_SOURCE, LOADER_SOURCE, namedBody, namedSource } from './workloads.js';
import { capnpConfig, capnpString, routedConfig, startWorkerd, workerdBinary, workerdVersion, type Workerd } from './workerd.js';

// `npm run bench`: the node agent against workerd on this machine, same load generator,
// same worker sources, same connections and duration; then the operator on its own (no
// peer has a control plane); then actors, a cluster of agents against workerd's Durable
// Objects. See bench/README.md.

const log = (msg: string): void => { process.stderr.write(`${msg}\n`); };
const MiB = 1024;

interface Ctx {
  cfg: BenchConfig;
  tmp: string;
  tool: Loadgen;
  wdBin: string | null;
  /** Why a peer cannot run at all (set before the phases). */
  down: Partial<Record<PeerName, string>>;
  raw: Record<string, unknown>;
  /** Things that look wrong with what was measured; printed under the table. */
  warnings: string[];
  seq: number;
}

function warn(ctx: Ctx, msg: string): void {
  ctx.warnings.push(msg);
  log(`  WARNING: ${msg}`);
}

const ISOLATES = 'edge_worker_isolates';
const COLD_STARTS = 'edge_cold_starts_total';

const errCell = (err: unknown): Cell => ({ error: err instanceof Error ? err.message : String(err) });

function dir(ctx: Ctx, what: string): string {
  const d = join(ctx.tmp, `${String(++ctx.seq).padStart(2, '0')}-${what}`);
  mkdirSync(d, { recursive: true });
  return d;
}

/** Runs `fn` for a peer unless it was skipped or is down; failures become error cells. */
async function forPeer<T>(ctx: Ctx, peer: PeerName, fn: () => Promise<T>): Promise<{ ok: T } | { cell: Cell }> {
  if (!ctx.cfg.peers.has(peer)) return { cell: { skipped: 'not selected (BENCH_PEERS)' } };
  const down = ctx.down[peer];
  if (down) return { cell: { error: down } };
  try {
    return { ok: await fn() };
  } catch (err) {
    log(`  ${peer}: FAILED: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
    return { cell: errCell(err) };
  }
}

function pick<T>(r: { ok: T } | { cell: Cell }, f: (v: T) => number | Cell): Cell {
  if ('cell' in r) return r.cell;
  const v = f(r.ok);
  return typeof v === 'number' ? { value: v } : v;
}

// ---------------------------------------------------------------- warm throughput

interface Script { key: 'hello' | 'json'; label: string; host: string; method: 'GET' | 'POST'; body?: string; reply: string }
const SCRIPTS: Script[] = [
  { key: 'hello', label: 'hello-world (GET)', host: 'hello.bench', method: 'GET', reply: HELLO_BODY },
  { key: 'json', label: `JSON transform (POST ${JSON_REQUEST.length} B)`, host: 'json.bench', method: 'POST', body: JSON_REQUEST, reply: JSON_REPLY },
];

async function loadBoth(ctx: Ctx, peer: string, target: (s: Script) => { port: number; host?: string }, only?: Script['key'][]): Promise<Record<string, LoadResult>> {
  const out: Record<string, LoadResult> = {};
  for (const s of SCRIPTS) {
    if (only && !only.includes(s.key)) continue;
    const t = target(s);
    const r = await httpRequest({ port: t.port, host: t.host, method: s.method, body: s.body });
    expectBody(`${peer} ${s.key}`, r, s.reply);
    const spec: LoadSpec = { port: t.port, host: t.host, method: s.method, body: s.body, connections: ctx.cfg.connections, durationS: ctx.cfg.durationS, threads: ctx.cfg.threads };
    if (ctx.cfg.warmupS > 0) await runLoad(ctx.tool, { ...spec, durationS: ctx.cfg.warmupS }, ctx.tmp);
    const res = await runLoad(ctx.tool, spec, ctx.tmp);
    const after = await httpRequest({ port: t.port, host: t.host, method: s.method, body: s.body });
    expectBody(`${peer} ${s.key} after load`, after, s.reply);
    log(`  ${peer} ${s.key}: ${Math.round(res.rps)} req/s, p50 ${res.p50Ms.toFixed(2)} ms, p99 ${res.p99Ms.toFixed(2)} ms, ${res.non2xx} non-2xx, ${res.errors} socket errors`);
    out[s.key] = res;
  }
  return out;
}

async function warmPhase(ctx: Ctx): Promise<Row[]> {
  log(`[warm] ${ctx.tool}, ${ctx.cfg.connections} connections, ${ctx.cfg.threads} threads, ${ctx.cfg.warmupS} s warm-up + ${ctx.cfg.durationS} s measured per script`);
  const agent = await forPeer(ctx, 'agent', async () => {
    const d = dir(ctx, 'agent-warm');
    const workers: AgentWorker[] = [
      { name: 'hello', host: 'hello.bench', source: HELLO_SOURCE, minWarmIsolates: ctx.cfg.agentWarmIsolates },
      { name: 'json', host: 'json.bench', source: JSON_SOURCE, minWarmIsolates: ctx.cfg.agentWarmIsolates },
    ];
    writeWorkerDir(join(d, 'workers'), workers);
    let a: Agent | undefined;
    try {
      a = await startAgent(join(d, 'workers'), join(d, 'agent.log'), ctx.cfg.readyTimeoutMs);
      const port = a.port;
      const loads = await loadBoth(ctx, 'agent', (s) => ({ port, host: s.host }));
      return { loads, agentMetricsAfter: pickMetrics(await agentMetricSums(a.adminPort)) };
    } finally { await a?.proc.stop(); }
  });
  const workerd = await forPeer(ctx, 'workerd', async () => {
    const d = dir(ctx, 'workerd-warm');
    const config = capnpConfig(
      [{ name: 'hello', source: HELLO_SOURCE }, { name: 'json', source: JSON_SOURCE }],
      [{ name: 'hello', service: 'hello' }, { name: 'json', service: 'json' }],
    );
    let w: Workerd | undefined;
    try {
      w = await startWorkerd(ctx.wdBin ?? '', join(d, 'config.capnp'), config, ['hello', 'json'], join(d, 'workerd.log'), 60_000);
      const ports = w.ports;
      return { loads: await loadBoth(ctx, 'workerd', (s) => ({ port: ports.get(s.key) ?? 0, host: s.host })) };
    } finally { await w?.proc.stop(); }
  });
  ctx.raw.warm = { agent: 'ok' in agent ? agent.ok : agent.cell, workerd: 'ok' in workerd ? workerd.ok : workerd.cell };

  const rows: Row[] = [];
  for (const s of SCRIPTS) {
    const get = (r: { ok: { loads: Record<string, LoadResult> } } | { cell: Cell }, f: (l: LoadResult) => number): Cell => pick(r, (v) => {
      const l = v.loads[s.key];
      if (!l) return { error: 'no result' };
      const bad = l.non2xx + l.errors;
      if (bad > l.requests * 0.001) return { error: `${l.non2xx} non-2xx and ${l.errors} socket errors in ${l.requests} requests` };
      return f(l);
    });
    rows.push({
      metric: `warm throughput, ${s.label}`, unit: 'req/s', better: 'higher',
      agent: get(agent, (l) => l.rps), workerd: get(workerd, (l) => l.rps),
      floor: { text: 'ratio >= 1.0', check: (_a, ratio) => ratio !== undefined && ratio >= 1.0 },
    });
    rows.push({ metric: `warm latency p50, ${s.label}`, unit: 'ms', better: 'lower', agent: get(agent, (l) => l.p50Ms), workerd: get(workerd, (l) => l.p50Ms) });
    rows.push({ metric: `warm latency p99, ${s.label}`, unit: 'ms', better: 'lower', agent: get(agent, (l) => l.p99Ms), workerd: get(workerd, (l) => l.p99Ms) });
  }
  return rows;
}

// ---------------------------------------------------------------- cold start

async function warmBaseline(port: number, host: string | undefined, body: string, keep: ReturnType<typeof keepAliveAgent>): Promise<Summary> {
  const ms: number[] = [];
  for (let i = 0; i < 30; i++) {
    const r = await httpRequest({ port, host, agent: keep });
    expectBody('warm baseline', r, body);
    if (i >= 10) ms.push(r.ms);
  }
  return summarize(ms);
}

function pickMetrics(m: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of [ISOLATES, COLD_STARTS, 'edge_isolate_pool_ready', 'edge_workers_loaded']) if (m[k] !== undefined) out[k] = m[k];
  return out;
}

async function coldPhase(ctx: Ctx): Promise<Row[]> {
  const { cfg } = ctx;
  log(`[cold] agent: first request to each of ${cfg.coldAgentWorkers} unloaded workers (${cfg.coldGapMs} ms apart); workerd: ${cfg.coldWorkerdSpawns} fresh processes, spawn to first response`);
  const agent = await forPeer(ctx, 'agent', async () => {
    const d = dir(ctx, 'agent-cold');
    const names = Array.from({ length: cfg.coldAgentWorkers }, (_, i) => `cold-${String(i).padStart(4, '0')}`);
    const workers: AgentWorker[] = names.map((name) => ({ name, host: `${name}.bench`, source: namedSource(name), minWarmIsolates: 0 }));
    workers.push({ name: 'probe', host: 'probe.bench', source: HELLO_SOURCE, minWarmIsolates: 1 });
    writeWorkerDir(join(d, 'workers'), workers);
    let a: Agent | undefined;
    const keep = keepAliveAgent();
    try {
      a = await startAgent(join(d, 'workers'), join(d, 'agent.log'), cfg.readyTimeoutMs);
      await sleep(cfg.settleMs);
      const before = await agentMetricSums(a.adminPort);
      const baseline = await warmBaseline(a.port, 'probe.bench', HELLO_BODY, keep);
      const ms: number[] = [];
      for (const name of names) {
        await sleep(cfg.coldGapMs);
        const r = await httpRequest({ port: a.port, host: `${name}.bench`, agent: keep, timeoutMs: 30_000 });
        expectBody(`agent first request to ${name}`, r, namedBody(name));
        ms.push(r.ms);
      }
      const second = await httpRequest({ port: a.port, host: `${names[0]}.bench`, agent: keep });
      expectBody('agent second request', second, namedBody(names[0] ?? ''));
      // The same workers again, now loaded, with the same gap: what a request costs after the
      // machine sat idle that long, which the cold samples pay too (the back-to-back baseline
      // above does not).
      const again: number[] = [];
      for (const name of names) {
        await sleep(cfg.coldGapMs);
        const r = await httpRequest({ port: a.port, host: `${name}.bench`, agent: keep });
        expectBody(`agent second request to ${name}`, r, namedBody(name));
        again.push(r.ms);
      }
      const after = await agentMetricSums(a.adminPort);
      const isolatesBefore = before[ISOLATES];
      if (isolatesBefore !== undefined && isolatesBefore > 1) warn(ctx, `agent cold: ${isolatesBefore} worker isolates loaded before the first requests (expected 1, the probe): some minWarmIsolates-0 workers were compiled at load`);
      const coldStarts = (after[COLD_STARTS] ?? NaN) - (before[COLD_STARTS] ?? 0);
      if (Number.isFinite(coldStarts) && coldStarts < names.length) warn(ctx, `agent cold: /metrics counted ${coldStarts} cold starts for ${names.length} first requests`);
      const first = summarize(ms);
      const warmGapped = summarize(again);
      log(`  agent: first request p50 ${first.p50.toFixed(2)} ms, p99 ${first.p99.toFixed(2)} ms (warm request over the same connection: p50 ${baseline.p50.toFixed(2)} ms back to back, ${warmGapped.p50.toFixed(2)} ms ${cfg.coldGapMs} ms apart)`);
      return { first, baseline, warmGapped, samples: ms, startToReadyMs: a.spawnToReadyMs, metricsBefore: pickMetrics(before), metricsAfter: pickMetrics(after) };
    } finally { keep.destroy(); await a?.proc.stop(); }
  });
  const workerd = await forPeer(ctx, 'workerd', async () => {
    const d = dir(ctx, 'workerd-cold');
    const total: number[] = [];
    const listen: number[] = [];
    let baseline: Summary | undefined;
    for (let i = 0; i < cfg.coldWorkerdSpawns; i++) {
      const name = `cold-${String(i).padStart(4, '0')}`;
      const config = capnpConfig([{ name, source: namedSource(name) }], [{ name: 'http', service: name }]);
      let w: Workerd | undefined;
      const keep = keepAliveAgent();
      try {
        w = await startWorkerd(ctx.wdBin ?? '', join(d, `${name}.capnp`), config, ['http'], join(d, `${name}.log`), 30_000, `workerd ${name}`);
        const r = await httpRequest({ port: w.ports.get('http') ?? 0, agent: keep, timeoutMs: 30_000 });
        const doneAt = performance.now();
        expectBody(`workerd first response of ${name}`, r, namedBody(name));
        total.push(doneAt - w.proc.spawnedAt);
        listen.push(w.spawnToListenMs);
        if (i === cfg.coldWorkerdSpawns - 1) baseline = await warmBaseline(w.ports.get('http') ?? 0, undefined, namedBody(name), keep);
      } finally { keep.destroy(); await w?.proc.stop(); }
    }
    const first = summarize(total);
    const toListen = summarize(listen);
    log(`  workerd: spawn to first response p50 ${first.p50.toFixed(1)} ms, p99 ${first.p99.toFixed(1)} ms (spawn to listening p50 ${toListen.p50.toFixed(1)} ms)`);
    return { first, toListen, baseline, samples: total };
  });
  ctx.raw.cold = {
    agentMeasures: 'client-side time of the first request to a registered worker that was never compiled (minWarmIsolates 0), on a warm keep-alive connection',
    workerdMeasures: 'time from spawn() of a fresh workerd process whose config holds only that worker to the end of its first response (workerd cannot load a worker on demand)',
    gapMs: cfg.coldGapMs,
    agent: 'ok' in agent ? agent.ok : agent.cell,
    workerd: 'ok' in workerd ? workerd.ok : workerd.cell,
  };
  const n = (r: typeof agent | typeof workerd): string => ('ok' in r ? ` n=${r.ok.first.n}` : '');
  return [
    {
      metric: `cold start p50 (agent: first request to an unloaded worker${n(agent)}; workerd: process spawn to first response${n(workerd)})`,
      unit: 'ms', better: 'lower', agent: pick(agent, (v) => v.first.p50), workerd: pick(workerd, (v) => v.first.p50),
      floor: { text: 'agent p50 <= 5 ms', check: (a) => a !== undefined && a <= 5 },
    },
    { metric: 'cold start p99 (same samples)', unit: 'ms', better: 'lower', agent: pick(agent, (v) => v.first.p99), workerd: pick(workerd, (v) => v.first.p99) },
    { metric: 'warm single request p50, same client (what the client adds to the cold numbers)', unit: 'ms', better: 'info', agent: pick(agent, (v) => v.baseline.p50), workerd: pick(workerd, (v) => v.baseline?.p50 ?? { error: 'not measured' }) },
    {
      metric: `warm request p50, the same workers again, ${cfg.coldGapMs} ms apart as the cold ones (what idling between requests adds; cold start p50 minus this is the load's own cost)`,
      unit: 'ms', better: 'info', agent: pick(agent, (v) => v.warmGapped.p50), workerd: { skipped: NOT_APPLICABLE },
    },
    { metric: 'workerd: process spawn to socket listening p50', unit: 'ms', better: 'info', agent: { skipped: NOT_APPLICABLE }, workerd: pick(workerd, (v) => v.toListen.p50) },
  ];
}

// ---------------------------------------------------------------- memory

interface MemResult { agentMetrics?: Record<string, number>; baseKiB: number; basePssKiB: number; baseIdlePssKiB?: number; baseIdleOwnKiB?: number; loadedKiB: number; loadedPssKiB: number; touchedKiB: number; processes: number; workers: number; perWorkerIdleMiB: number; perWorkerTouchedMiB: number; loadedStartMs: number; touchFailures: number }

async function touchAll(port: number, names: string[]): Promise<number> {
  const keep = keepAliveAgent();
  let failures = 0;
  let firstErr = '';
  try {
    for (const name of names) {
      try {
        const r = await httpRequest({ port, host: `${name}.bench`, agent: keep, timeoutMs: 30_000 });
        expectBody(name, r, namedBody(name));
      } catch (err) {
        failures++;
        if (!firstErr) firstErr = (err as Error).message;
        if (failures >= 20) break;
      }
    }
  } finally { keep.destroy(); }
  if (failures) throw new Error(`${failures} of ${names.length} workers did not answer as expected (first: ${firstErr})`);
  return failures;
}

async function memoryPhase(ctx: Ctx): Promise<Row[]> {
  const { cfg } = ctx;
  const W = cfg.memoryWorkers;
  const names = Array.from({ length: W }, (_, i) => `mem-${String(i).padStart(4, '0')}`);
  log(`[memory] RSS of the whole process group: agent with ${W} idle workers (minWarmIsolates 1) vs 0; workerd with ${W} vs 1 (behind a router worker)`);
  interface Started { proc: Proc; port: number; startMs: number; adminPort?: number }
  const measure = async (peer: PeerName, start: (n: number, d: string) => Promise<Started>, baseWorkers: number): Promise<MemResult> => {
    const d0 = dir(ctx, `${peer}-mem-base`);
    const base = await start(baseWorkers, d0);
    let baseRss: { kib: number; pssKiB: number };
    let baseIdle: { pssKiB: number; ownKiB: number } | undefined;
    try {
      if (baseWorkers > 0) await touchAll(base.port, names.slice(0, baseWorkers));
      baseRss = await settledRssKiB(base.proc, cfg.settleMs);
      // V8 gives back what start-up left in its heaps (new space grown while modules
      // loaded) only once its memory reducer sees the process idle, some seconds later.
      if (cfg.memoryIdleS > 0) baseIdle = await settledRssKiB(base.proc, Math.max(0, cfg.memoryIdleS * 1000 - cfg.settleMs));
    } finally { await base.proc.stop(); }
    const d1 = dir(ctx, `${peer}-mem-loaded`);
    const loaded = await start(W, d1);
    try {
      const idle = await settledRssKiB(loaded.proc, cfg.settleMs);
      let agentMetrics: Record<string, number> | undefined;
      if (loaded.adminPort !== undefined) {
        agentMetrics = pickMetrics(await agentMetricSums(loaded.adminPort));
        const isolates = agentMetrics[ISOLATES];
        if (isolates !== undefined && isolates < W) warn(ctx, `agent memory: only ${isolates} worker isolates loaded for ${W} workers with minWarmIsolates 1 when RSS was read`);
      }
      log(`  ${peer}: ${W} workers ready in ${(loaded.startMs / 1000).toFixed(2)} s, RSS ${(idle.kib / MiB).toFixed(1)} MiB (base ${(baseRss.kib / MiB).toFixed(1)} MiB with ${baseWorkers})`);
      const touchFailures = await touchAll(loaded.port, names);
      const touched = await settledRssKiB(loaded.proc, Math.min(cfg.settleMs, 1000));
      const added = W - baseWorkers;
      return {
        ...(agentMetrics ? { agentMetrics } : {}),
        baseKiB: baseRss.kib, basePssKiB: baseRss.pssKiB, ...(baseIdle ? { baseIdlePssKiB: baseIdle.pssKiB, baseIdleOwnKiB: baseIdle.ownKiB } : {}), loadedKiB: idle.kib, loadedPssKiB: idle.pssKiB, touchedKiB: touched.kib, processes: idle.processes, workers: W,
        perWorkerIdleMiB: (idle.kib - baseRss.kib) / MiB / added, perWorkerTouchedMiB: (touched.kib - baseRss.kib) / MiB / added,
        loadedStartMs: loaded.startMs, touchFailures,
      };
    } finally { await loaded.proc.stop(); }
  };
  const agent = await forPeer(ctx, 'agent', () => measure('agent', async (n, d) => {
    writeWorkerDir(join(d, 'workers'), names.slice(0, n).map((name) => ({ name, host: `${name}.bench`, source: namedSource(name), minWarmIsolates: 1 })));
    const a = await startAgent(join(d, 'workers'), join(d, 'agent.log'), cfg.readyTimeoutMs);
    return { proc: a.proc, port: a.port, adminPort: a.adminPort, startMs: a.spawnToReadyMs };
  }, 0));
  const workerd = await forPeer(ctx, 'workerd', () => measure('workerd', async (n, d) => {
    const config = routedConfig(names.slice(0, n).map((name) => ({ name, source: namedSource(name) })));
    const w = await startWorkerd(ctx.wdBin ?? '', join(d, 'config.capnp'), config, ['http'], join(d, 'workerd.log'), cfg.readyTimeoutMs);
    return { proc: w.proc, port: w.ports.get('http') ?? 0, startMs: w.spawnToListenMs };
  }, 1));
  ctx.raw.memory = { agent: 'ok' in agent ? agent.ok : agent.cell, workerd: 'ok' in workerd ? workerd.ok : workerd.cell };
  return [
    {
      metric: `RSS per idle loaded worker (agent: (${W} - 0 workers) / ${W}; workerd: (${W} - 1) / ${W - 1})`,
      unit: 'MiB', better: 'lower', agent: pick(agent, (v) => v.perWorkerIdleMiB), workerd: pick(workerd, (v) => v.perWorkerIdleMiB),
      floor: { text: 'agent <= 3 MiB', check: (a) => a !== undefined && a <= 3 },
    },
    { metric: 'RSS per worker after one request to each', unit: 'MiB', better: 'lower', agent: pick(agent, (v) => v.perWorkerTouchedMiB), workerd: pick(workerd, (v) => v.perWorkerTouchedMiB) },
    { metric: 'RSS, base (agent: 0 workers; workerd: router + 1 worker; summed over the processes, so what they share is counted in each)', unit: 'MiB', better: 'info', agent: pick(agent, (v) => v.baseKiB / MiB), workerd: pick(workerd, (v) => v.baseKiB / MiB) },
    { metric: 'PSS, base (the same reading, each shared page counted once)', unit: 'MiB', better: 'lower', agent: pick(agent, (v) => v.basePssKiB / MiB), workerd: pick(workerd, (v) => v.basePssKiB / MiB) },
    ...(cfg.memoryIdleS > 0 ? [{
      metric: `PSS, base, ${cfg.memoryIdleS} s after ready (V8's memory reducer has run; shared pages also split with processes outside the group, this bench's own Node among them)`, unit: 'MiB', better: 'info', agent: pick(agent, (v) => (v.baseIdlePssKiB ?? NaN) / MiB), workerd: pick(workerd, (v) => (v.baseIdlePssKiB ?? NaN) / MiB),
    } satisfies Row, {
      metric: `memory, base, ${cfg.memoryIdleS} s after ready, counted on its own (private pages, plus each shared file's pages once; bench/procs.ts GroupMemory)`, unit: 'MiB', better: 'lower', agent: pick(agent, (v) => (v.baseIdleOwnKiB ?? NaN) / MiB), workerd: pick(workerd, (v) => (v.baseIdleOwnKiB ?? NaN) / MiB),
      floor: { text: 'agent <= 80 MiB', check: (a: number | undefined) => a !== undefined && a <= 80 },
    } satisfies Row] : []),
    { metric: `RSS with ${W} idle workers`, unit: 'MiB', better: 'info', agent: pick(agent, (v) => v.loadedKiB / MiB), workerd: pick(workerd, (v) => v.loadedKiB / MiB) },
    { metric: `PSS with ${W} idle workers`, unit: 'MiB', better: 'info', agent: pick(agent, (v) => v.loadedPssKiB / MiB), workerd: pick(workerd, (v) => v.loadedPssKiB / MiB) },
    { metric: `start to ready with ${W} workers (agent: /readyz 200; workerd: socket listening)`, unit: 's', better: 'info', agent: pick(agent, (v) => v.loadedStartMs / 1000), workerd: pick(workerd, (v) => v.loadedStartMs / 1000) },
  ];
}

// ---------------------------------------------------------------- dynamic workers

/**
 * The Worker Loader (docs/dynamic-workers.md), agent only: one caller worker
 * (LOADER_SOURCE), the same 1 KB module deployed as a plain worker it calls through a
 * service binding, one keep-alive client. Paced (so the pre-warmed pool has refilled) and
 * interleaved in pairs (each half first in turn), so a busy machine slows every path alike:
 * - load() to first response, from inside the caller (x-parent-ms, from the load() call to
 *   the response's body read; the isolate's clock ticks in whole ms, so its mean, which is
 *   unbiased, is reported) and through HTTP (a request that loads and calls it less one
 *   answered at once, round by round);
 * - get(id) warm call overhead over a plain deployed worker call: inside the caller, 20
 *   interleaved calls of each per request (below the clock's tick), and through HTTP (a
 *   request calling the warm one less one calling the deployed worker, round by round);
 * - load() back to back for 3 s (dynamic workers started per second: the agent's isolate
 *   host, one core's event loop, makes each pooled isolate); RSS per cached get() worker.
 */
async function dynamicPhase(ctx: Ctx): Promise<Row[]> {
  const { cfg } = ctx;
  const n = cfg.quick ? 60 : 300;
  // Under the agent's per-caller share of its get() cache (a quarter of 256), so every id stays cached.
  const cached = 60;
  log(`[dynamic] agent and workerd: ${n} paced rounds of load(), get() and a deployed worker's call, load() back to back for 3 s, RSS of ${cached} cached get() workers`);
  /** The same rounds against either peer: a caller at `port` (Host `host`), its process group `proc`. */
  const measure = async (who: PeerName, port: number, host: string, proc: Proc, cachedNow?: () => Promise<number>) => {
    const keep = keepAliveAgent();
    try {
      const one = async (path: string) => {
        const r = await httpRequest({ port, host, path, agent: keep, timeoutMs: 30_000 });
        if (path.startsWith('/calls')) {
          if (r.status !== 200) throw new Error(`${who} ${path}: ${r.status} ${r.body.slice(0, 300)}`);
        } else expectBody(`${who} ${path}`, r, DYNAMIC_BODY);
        return r;
      };
      const series = async (path: string, count: number): Promise<void> => { for (let i = 0; i < count; i++) await one(path); };
      await series('/noop', 20);
      await series('/get', 20);
      await series('/svc', 20);
      for (let i = 0; i < 10; i++) { await sleep(30); await one('/load'); }
      const ms: Record<'noop' | 'load' | 'get' | 'svc', number[]> = { noop: [], load: [], get: [], svc: [] };
      const loadInParent: number[] = [];
      // Each pair runs after a pause: the pool refills the isolate a load() took ~10 ms after it
      // (a few ms on the event loop), which must not land in either half of the next pair.
      for (let i = 0; i < n; i++) {
        for (const pair of [['noop', 'load'], ['get', 'svc']] as const) {
          await sleep(25);
          for (const k of i % 2 === 0 ? pair : [pair[1], pair[0]]) {
            const r = await one(`/${k}`);
            ms[k].push(r.ms);
            if (k === 'load') loadInParent.push(Number(r.headers['x-parent-ms']));
          }
        }
      }
      const calls: number[] = [];
      for (let i = 0; i < (cfg.quick ? 20 : 60); i++) {
        const r = JSON.parse((await one('/calls?n=20')).body) as { getMs: number; svcMs: number };
        calls.push(r.getMs - r.svcMs);
      }
      const paired = (x: number[], y: number[]) => summarize(x.map((v, i) => v - y[i]!));
      const loadHttp = paired(ms.load, ms.noop);
      const getHttp = paired(ms.get, ms.svc);
      const loadParent = summarize(loadInParent);
      const getParent = summarize(calls);
      let started = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < 3000) { await one('/load'); started++; }
      const perSecond = started / ((performance.now() - t0) / 1000);
      const before = await settledRssKiB(proc, cfg.settleMs);
      const cachedBefore = await cachedNow?.();
      for (let i = 0; i < cached; i++) await one(`/get?id=rss-${i}`);
      const after = await settledRssKiB(proc, cfg.settleMs);
      // Divided by what the cache says it added where it can say (the agent), else by the ids.
      const counted = cachedBefore !== undefined ? (await cachedNow!()) - cachedBefore : NaN;
      const added = Number.isFinite(counted) ? counted : cached;
      if (added < cached) warn(ctx, `${who} dynamic: ${cached} get() ids left only ${added} more cached`);
      log(`  ${who}: load() to first response in the caller mean ${loadParent.mean.toFixed(2)} ms, through HTTP p50 ${loadHttp.p50.toFixed(2)} p99 ${loadHttp.p99.toFixed(2)} ms; get() over a deployed worker in the caller p50 ${getParent.p50.toFixed(3)} ms, through HTTP p50 ${getHttp.p50.toFixed(3)} ms; ${perSecond.toFixed(0)} load()/s, RSS +${((after.kib - before.kib) / MiB).toFixed(1)} MiB for ${cached} cached`);
      return {
        noop: summarize(ms.noop), load: summarize(ms.load), get: summarize(ms.get), svc: summarize(ms.svc),
        loadHttp, getHttp, loadParent, getParent, perSecond, rssPerCachedMiB: (after.kib - before.kib) / MiB / Math.max(1, added),
      };
    } finally { keep.destroy(); }
  };
  const agent = await forPeer(ctx, 'agent', async () => {
    const d = dir(ctx, 'agent-dynamic');
    writeWorkerDir(join(d, 'workers'), [
      { name: 'loader', host: 'loader.bench', source: LOADER_SOURCE, minWarmIsolates: 1, bindings: { workerLoaders: [{ name: 'LOADER' }], services: [{ name: 'PLAIN', worker: 'plain' }] } },
      { name: 'plain', host: 'plain.bench', source: DYNAMIC_MODULE, minWarmIsolates: 1 },
    ]);
    let a: Agent | undefined;
    try {
      // As shipped: the dynamic workers run in their caller's isolate host (the RSS row reads the whole process group).
      a = await startAgent(join(d, 'workers'), join(d, 'agent.log'), cfg.readyTimeoutMs);
      await sleep(cfg.settleMs);
      const adminPort = a.adminPort;
      const out = await measure('agent', a.port, 'loader.bench', a.proc, async () => (await agentMetricSums(adminPort)).edge_dynamic_worker_cached ?? NaN);
      const metrics = await agentMetricSums(a.adminPort);
      return { ...out, metrics: Object.fromEntries(Object.entries(metrics).filter(([k]) => k.startsWith('edge_dynamic_worker'))) };
    } finally { await a?.proc.stop(); }
  });
  // workerd's own Worker Loader (a `workerLoader` binding; it needs --experimental).
  const workerd = await forPeer(ctx, 'workerd', async () => {
    const d = dir(ctx, 'workerd-dynamic');
    const config = [
      'using Workerd = import "/workerd/workerd.capnp";',
      'const config :Workerd.Config = (',
      '  services = [',
      `    (name = "loader", worker = (modules = [(name = "worker.js", esModule = ${capnpString(LOADER_SOURCE)})], compatibilityDate = "2025-06-01",`,
      '      bindings = [(name = "LOADER", workerLoader = ()), (name = "PLAIN", service = "plain")])),',
      `    (name = "plain", worker = (modules = [(name = "worker.js", esModule = ${capnpString(DYNAMIC_MODULE)})], compatibilityDate = "2025-06-01")),`,
      '  ],',
      '  sockets = [(name = "http", address = "127.0.0.1:0", http = (), service = "loader")],',
      ');',
    ].join('\n');
    const w = await startWorkerd(ctx.wdBin ?? '', join(d, 'config.capnp'), config, ['http'], join(d, 'workerd.log'), cfg.readyTimeoutMs, 'workerd', ['--experimental']);
    try {
      await sleep(cfg.settleMs);
      return await measure('workerd', w.ports.get('http') ?? 0, 'loader.bench', w.proc);
    } finally { await w.proc.stop(); }
  });
  ctx.raw.dynamic = { agent: 'ok' in agent ? agent.ok : agent.cell, workerd: 'ok' in workerd ? workerd.ok : workerd.cell };
  return [
    {
      metric: 'load() of a 1 KB module to first response, in the caller (load() call to body read; mean: the isolate clock ticks in ms)',
      unit: 'ms', better: 'lower', agent: pick(agent, (v) => v.loadParent.mean), workerd: pick(workerd, (v) => v.loadParent.mean),
      floor: { text: 'agent <= 2 ms', check: (x) => x !== undefined && x <= 2 },
    },
    {
      metric: 'load() to first response p50, through HTTP (a request that loads and calls it, less one answered at once, paired by round)',
      unit: 'ms', better: 'lower', agent: pick(agent, (v) => v.loadHttp.p50), workerd: pick(workerd, (v) => v.loadHttp.p50),
    },
    { metric: 'load() to first response p99, through HTTP (same)', unit: 'ms', better: 'lower', agent: pick(agent, (v) => v.loadHttp.p99), workerd: pick(workerd, (v) => v.loadHttp.p99) },
    {
      metric: 'get(id) warm call overhead over a plain deployed worker call p50, in the caller (20 interleaved calls of each per request)',
      unit: 'ms', better: 'lower', agent: pick(agent, (v) => v.getParent.p50), workerd: pick(workerd, (v) => v.getParent.p50),
      floor: { text: 'agent p50 <= 0.1 ms', check: (x) => x !== undefined && x <= 0.1 },
    },
    {
      metric: 'get(id) warm call overhead over a plain deployed worker call p50, through HTTP (paired by round)',
      unit: 'ms', better: 'lower', agent: pick(agent, (v) => v.getHttp.p50), workerd: pick(workerd, (v) => v.getHttp.p50),
    },
    { metric: 'dynamic workers started per second, load() per request, one client back to back (one isolate host: one core)', unit: 'per s', better: 'higher', agent: pick(agent, (v) => v.perSecond), workerd: pick(workerd, (v) => v.perSecond) },
    {
      metric: `RSS per cached dynamic worker (${cached} get() ids; agent: RSS added / workers its cache added)`,
      unit: 'MiB', better: 'lower', agent: pick(agent, (v) => v.rssPerCachedMiB), workerd: pick(workerd, (v) => v.rssPerCachedMiB),
      floor: { text: 'agent <= 2 MiB', check: (x) => x !== undefined && x <= 2 },
    },
  ];
}

// ---------------------------------------------------------------- isolate hosts

interface HostsRun { hosts: number; hello: LoadResult; cold: Summary; startToReadyMs: number }

/**
 * What the isolate-host split costs (docs/isolate-hosts.md): the same agent with its
 * isolates in its own process (--isolate-hosts 0) and behind its front in N host processes,
 * one hop more per request. Hello-world throughput and p99, and the first request to
 * never-loaded workers (the cold start now includes the relay).
 */
async function hostsPhase(ctx: Ctx): Promise<Row[]> {
  const { cfg } = ctx;
  const N = cfg.isolateHosts;
  log(`[hosts] agent with --isolate-hosts 0 vs ${N}: hello-world warm load, then first requests to ${cfg.coldAgentWorkers} unloaded workers`);
  const runs = new Map<number, { ok: HostsRun } | { cell: Cell }>();
  for (const hosts of [0, N]) {
    runs.set(hosts, await forPeer(ctx, 'agent', async () => {
      const d = dir(ctx, `agent-hosts-${hosts}`);
      const names = Array.from({ length: cfg.coldAgentWorkers }, (_, i) => `cold-${String(i).padStart(4, '0')}`);
      const workers: AgentWorker[] = [
        { name: 'hello', host: 'hello.bench', source: HELLO_SOURCE, minWarmIsolates: cfg.agentWarmIsolates },
        ...names.map((name) => ({ name, host: `${name}.bench`, source: namedSource(name), minWarmIsolates: 0 })),
      ];
      writeWorkerDir(join(d, 'workers'), workers);
      let a: Agent | undefined;
      const keep = keepAliveAgent();
      try {
        a = await startAgent(join(d, 'workers'), join(d, 'agent.log'), cfg.readyTimeoutMs, `agent (${hosts} hosts)`, { isolateHosts: hosts });
        const port = a.port;
        const hello = (await loadBoth(ctx, `agent (${hosts} hosts)`, () => ({ port, host: 'hello.bench' }), ['hello'])).hello!;
        await sleep(cfg.settleMs);
        const ms: number[] = [];
        for (const name of names) {
          await sleep(cfg.coldGapMs);
          const r = await httpRequest({ port, host: `${name}.bench`, agent: keep, timeoutMs: 30_000 });
          expectBody(`agent (${hosts} hosts) first request to ${name}`, r, namedBody(name));
          ms.push(r.ms);
        }
        const cold = summarize(ms);
        log(`  agent (${hosts} hosts): first request p50 ${cold.p50.toFixed(2)} ms, p99 ${cold.p99.toFixed(2)} ms; ready in ${(a.spawnToReadyMs / 1000).toFixed(2)} s`);
        return { hosts, hello, cold, startToReadyMs: a.spawnToReadyMs };
      } finally { keep.destroy(); await a?.proc.stop(); }
    }));
  }
  ctx.raw.hosts = Object.fromEntries([...runs].map(([h, r]) => [String(h), 'ok' in r ? r.ok : r.cell]));
  const na: Cell = { skipped: NOT_APPLICABLE };
  const rows: Row[] = [];
  const add = (what: string, unit: Row['unit'], f: (r: HostsRun) => number) => {
    const base = runs.get(0)!;
    const split = runs.get(N)!;
    const b = 'ok' in base ? f(base.ok) : undefined;
    const s = 'ok' in split ? f(split.ok) : undefined;
    const rel = b !== undefined && s !== undefined && b > 0 ? ` (${(s / b).toFixed(2)}x of in-process)` : '';
    rows.push({ metric: `isolate hosts 0 (in-process): ${what}`, unit, better: 'info', agent: pick(base, f), workerd: na });
    rows.push({ metric: `isolate hosts ${N} (one hop more): ${what}${rel}`, unit, better: 'info', agent: pick(split, f), workerd: na });
  };
  add('warm throughput, hello-world (GET)', 'req/s', (r) => r.hello.rps);
  add('warm latency p99, hello-world (GET)', 'ms', (r) => r.hello.p99Ms);
  add(`cold start p50, first request to an unloaded worker (n=${cfg.coldAgentWorkers})`, 'ms', (r) => r.cold.p50);
  add('start to ready, /readyz 200', 's', (r) => r.startToReadyMs / 1000);
  return rows;
}

// ---------------------------------------------------------------- main

/** Distinct warning/error lines the peers logged (numbers blanked), with counts, per peer. */
type LogSource = PeerName | 'operator';
const LOG_SOURCES: readonly LogSource[] = ['agent', 'workerd', 'operator'];

function logNotes(tmp: string): Record<LogSource, string[]> {
  const counts: Record<LogSource, Map<string, number>> = { agent: new Map(), workerd: new Map(), operator: new Map() };
  const scan = (source: LogSource, file: string): void => {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (!/\b(warn|warning|error|fatal)\b/i.test(line)) continue;
      // Numbers and timestamps blanked, so repeats of one message count together.
      const key = line.replace(/"(time|ts)":"[^"]*"/g, '').replace(/\d+(\.\d+)?/g, 'N').slice(0, 300);
      counts[source].set(key, (counts[source].get(key) ?? 0) + 1);
    }
  };
  for (const d of readdirSync(tmp)) {
    let files: string[];
    if (d.includes('-op-') || d.endsWith('-act-cluster')) {
      // An operator phase: the cluster's logs; only the agent's and the operator's are ours.
      try { files = readdirSync(join(tmp, d, 'cluster')); } catch { continue; }
      for (const f of files) {
        const source: LogSource | undefined = f.startsWith('agent-') ? 'agent' : f.startsWith('bench-operator') ? 'operator' : undefined;
        if (source && f.endsWith('.log')) scan(source, join(tmp, d, 'cluster', f));
      }
      continue;
    }
    const peer: PeerName | undefined = d.includes('agent') ? 'agent' : d.includes('workerd') ? 'workerd' : undefined;
    if (!peer) continue;
    try { files = readdirSync(join(tmp, d)).filter((f) => f.endsWith('.log')); } catch { continue; }
    for (const f of files) scan(peer, join(tmp, d, f));
  }
  const top = (m: Map<string, number>): string[] => [...m].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([l, n]) => `${n}x ${l}`);
  return { agent: top(counts.agent), workerd: top(counts.workerd), operator: top(counts.operator) };
}

function gitCommit(): string | null {
  try { return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', timeout: 5000 }).trim(); } catch { return null; }
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const cfg = loadConfig();
  const { tool, note } = pickLoadgen(cfg.loadgen);
  if (note) log(`bench: ${note}`);
  const tmp = mkdtempSync(join(tmpdir(), 'edge-bench-'));
  const ctx: Ctx = { cfg, tmp, tool, wdBin: null, down: {}, raw: {}, warnings: [], seq: 0 };
  let wdVersion: string | null = null;
  const peerPhases = PEER_PHASES.some((p) => cfg.phases.has(p));
  if (peerPhases && cfg.peers.has('workerd')) {
    try {
      ctx.wdBin = workerdBinary();
      wdVersion = workerdVersion(ctx.wdBin);
    } catch (err) { ctx.down.workerd = `workerd unavailable: ${(err as Error).message}`; }
  }
  if (cfg.peers.has('agent')) {
    log('bench: building dist/ as it ships (npm run build)');
    const why = buildForBench() ?? await agentUnavailable();
    if (why) ctx.down.agent = `agent unavailable: ${why}`;
  }
  log(`bench: ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), node ${process.version}, ${wdVersion ?? 'no workerd'}, load generator ${tool}${cfg.quick ? ', QUICK mode' : ''}; logs in ${tmp}`);
  for (const [peer, why] of Object.entries(ctx.down)) log(`bench: ${peer} will be reported as ERROR: ${why}`);
  const busyBefore = await machineBusy();
  if (busyBefore > 0.15) warn(ctx, `the machine was ${Math.round(busyBefore * 100)} % busy with other work just before the run: numbers are noisy`);

  const rows: Row[] = [];
  let crashed: unknown;
  try {
    if (cfg.phases.has('warm')) rows.push(...await warmPhase(ctx));
    if (cfg.phases.has('cold')) rows.push(...await coldPhase(ctx));
    if (cfg.phases.has('memory')) rows.push(...await memoryPhase(ctx));
    if (cfg.phases.has('hosts')) rows.push(...await hostsPhase(ctx));
    if (cfg.phases.has('dynamic')) rows.push(...await dynamicPhase(ctx));
    const opCtx: OpCtx = {
      cfg, raw: ctx.raw, dir: (what) => dir(ctx, what), warn: (msg) => warn(ctx, msg),
      down: ctx.down.agent, skip: cfg.peers.has('agent') ? undefined : 'not selected (BENCH_PEERS has no agent)',
    };
    if (cfg.phases.has('op-create')) rows.push(...await operatorCreatePhase(opCtx));
    if (cfg.phases.has('op-scale')) rows.push(...await operatorScalePhase(opCtx));
    if (cfg.phases.has('actors')) {
      const side = (peer: PeerName): { down?: string; skip?: string } => (cfg.peers.has(peer) ? (ctx.down[peer] ? { down: ctx.down[peer] } : {}) : { skip: 'not selected (BENCH_PEERS)' });
      const actorCtx = {
        cfg, raw: ctx.raw, tool: ctx.tool, dir: (what: string) => dir(ctx, what), warn: (msg: string) => warn(ctx, msg),
        agent: side('agent'), workerd: { bin: ctx.wdBin, ...side('workerd') },
      };
      rows.push(...await actorsPhase(actorCtx));
      rows.push(...await sqliteActorRows(actorCtx));
    }
    if (cfg.phases.has('hibernation')) {
      const side = (peer: PeerName): { down?: string; skip?: string } => (cfg.peers.has(peer) ? (ctx.down[peer] ? { down: ctx.down[peer] } : {}) : { skip: 'not selected (BENCH_PEERS)' });
      rows.push(...await hibernationPhase({
        cfg, raw: ctx.raw, tool: ctx.tool, dir: (what) => dir(ctx, what), warn: (msg) => warn(ctx, msg),
        agent: side('agent'), workerd: { bin: ctx.wdBin, ...side('workerd') },
      }));
    }
    if (cfg.phases.has('percore')) {
      const side = (peer: PeerName): { down?: string; skip?: string } => (cfg.peers.has(peer) ? (ctx.down[peer] ? { down: ctx.down[peer] } : {}) : { skip: 'not selected (BENCH_PEERS)' });
      rows.push(...await percorePhase({
        cfg, raw: ctx.raw, tool: ctx.tool, dir: (what) => dir(ctx, what), warn: (msg) => warn(ctx, msg),
        agent: side('agent'), workerd: { bin: ctx.wdBin, ...side('workerd') },
      }));
    }
    if (cfg.phases.has('shards')) {
      rows.push(...await shardsPhase({
        cfg, raw: ctx.raw, dir: (what) => dir(ctx, what), warn: (msg) => warn(ctx, msg),
        down: ctx.down.agent, skip: cfg.peers.has('agent') ? undefined : 'not selected (BENCH_PEERS has no agent)',
      }));
    }
  } catch (err) {
    crashed = err;
    log(`bench: stopped early: ${err instanceof Error ? err.stack : String(err)}`);
  }

  const busyAfter = await machineBusy();
  if (busyAfter > 0.15) warn(ctx, `the machine was ${Math.round(busyAfter * 100)} % busy with other work just after the run: numbers may be noisy`);
  const evaluated = evaluate(rows);
  const table = markdownTable(rows, evaluated);
  const peerLogs = logNotes(tmp);
  const notes = [
    ...problems(rows),
    ...ctx.warnings.map((w) => `- WARNING ${w}`),
    ...LOG_SOURCES.flatMap((p) => peerLogs[p].map((l) => `- ${p} logged: ${l}`)),
  ];
  const parts = [
    ...(['warm', 'cold', 'memory'] as const).some((p) => cfg.phases.has(p)) ? ['edge agent vs workerd'] : [],
    ...cfg.phases.has('op-create') || cfg.phases.has('op-scale') ? ['the operator'] : [],
    ...cfg.phases.has('hosts') ? [`isolate hosts 0 vs ${cfg.isolateHosts}`] : [],
    ...cfg.phases.has('dynamic') ? ['dynamic workers'] : [],
    ...cfg.phases.has('actors') ? ['actors vs workerd Durable Objects'] : [],
    ...cfg.phases.has('hibernation') ? ['hibernated WebSockets vs workerd'] : [],
    ...cfg.phases.has('shards') ? ['shards on vs off'] : [],
    ...cfg.phases.has('percore') ? ['per core (pinned) agent vs workerd'] : [],
  ];
  const what = parts.length > 1 ? `${parts.slice(0, -1).join(', ')} and ${parts.at(-1) ?? ''}` : parts[0] ?? 'nothing';
  const onlyPercore = cfg.phases.size === 1 && cfg.phases.has('percore');
  const conns = onlyPercore ? `${cfg.percoreConnections} and ${cfg.percoreP99Connections}` : String(cfg.connections);
  const header = `## ${what} (${startedAt.toISOString()}, ${cpus().length} CPUs${peerPhases || cfg.phases.has('hosts') ? `, ${tool} ${conns} connections ${cfg.durationS} s` : ''}${cfg.quick ? ', quick mode' : ''})`;
  process.stdout.write(`\n${header}\n\n${table}\n${notes.length ? `\n${notes.join('\n')}\n` : ''}\n`);
  const failed = crashed !== undefined || rows.some((r) => 'error' in r.agent || 'error' in r.workerd);
  const file = writeResults({
    startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? null, memGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
    gitCommit: gitCommit(), workerd: wdVersion, loadgen: tool, otherCpuBusy: { before: busyBefore, after: busyAfter },
    config: { ...cfg, phases: [...cfg.phases], peers: [...cfg.peers] },
    jsonRequestBytes: JSON_REQUEST.length,
    rows: evaluated, warnings: ctx.warnings, peerLogs, raw: ctx.raw, crashed: crashed === undefined ? null : String(crashed),
  }, startedAt);
  log(`bench: wrote ${file} and bench/results/latest.json`);
  if (failed || process.env.BENCH_KEEP_TMP === '1') log(`bench: logs kept in ${tmp}`);
  else rmSync(tmp, { recursive: true, force: true });
  return failed ? 1 : 0;
}

/** BENCH_ONLY=soak runs bench/soak.ts instead (its own table and results file); it does not mix with other phases. */
async function entry(): Promise<number> {
  const only = (process.env.BENCH_ONLY ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (!only.includes('soak')) return main();
  if (only.length > 1) {
    log('bench: BENCH_ONLY=soak runs on its own (it loads the machine for minutes); run the other phases separately');
    return 2;
  }
  return soakMain();
}

killChildrenOnSignals();
process.exitCode = await entry();
