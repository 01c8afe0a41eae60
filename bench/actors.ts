import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { actorInstanceKey } from '../common/keys.js';
import { ActorIds } from '../node-agent/bindings/actor-id.js';
import { crPath, KubeClient } from '../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER, type LocalAgent } from '../cli/local/cluster.js';
import type { BenchConfig } from './config.js';
import { cpuWindow, type CpuWindow } from './operator.js';
import { httpRequest, keepAliveAgent, summarize, type Summary } from './http.js';
import { runLoad, type Loadgen, type LoadResult } from './load.js';
import { sleep } from './procs.js';
import { NOT_APPLICABLE, type Cell, type Row } from './report.js';
import { capnpString, startWorkerd, type Workerd } from './workerd.js';
import { HELLO_BODY, HELLO_SOURCE } from './workloads.js';

// The actor phase (issue 5): a Durable-Object-style counter, one durable put per call, on
// edge-isolates (a real cluster: etcd + kube-apiserver + nats-server with JetStream, three
// `edge agent --nats` processes in one region, `edge operator`) and on workerd (one
// process, the same worker and class byte for byte, its local-disk Durable Object storage).
// Then recovery: the agent owning the most of N actors is killed (SIGKILL, and in a second
// round stopped with SIGTERM), and the bench times how long until every one of its actors
// answers again through the surviving agents. workerd has no equivalent of that.

const log = (msg: string): void => { process.stderr.write(`${msg}\n`); };
const NS = 'bench';
const REGION = 'bench-1';
const DA = 'counters';
const HOST = 'counter.bench';
const PLAIN_HOST = 'plain.bench';
/** Presence TTL of the agents: how long a killed agent stays in the others' rings at most. */
const PRESENCE_TTL_MS = 1000;
/** workerd's Durable Object namespace key (its on-disk directory name). */
const WD_UNIQUE_KEY = 'edge-bench-counters';

/** One durable read and one durable put per call; the response is the new count. */
export const COUNTER_SOURCE = `export class Counter {
  constructor(state, env) { this.state = state; }
  async fetch(request) {
    const n = ((await this.state.storage.get("n")) ?? 0) + 1;
    await this.state.storage.put("n", n);
    return new Response(String(n));
  }
}
export default {
  async fetch(request, env) {
    const name = new URL(request.url).searchParams.get("name") ?? "bench";
    return env.COUNTER.get(env.COUNTER.idFromName(name)).fetch(request);
  },
};
`;

export interface ActorCtx {
  cfg: BenchConfig;
  raw: Record<string, unknown>;
  tool: Loadgen;
  /** A fresh numbered directory under the bench temp dir. */
  dir(what: string): string;
  warn(msg: string): void;
  /** Why a side cannot run (an ERROR cell) or is not selected (a skipped cell). */
  agent: { down?: string; skip?: string };
  workerd: { bin: string | null; down?: string; skip?: string };
}

const errCell = (err: unknown): Cell => ({ error: err instanceof Error ? err.message : String(err) });
const firstLine = (err: unknown): string => (err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err));
const na: Cell = { skipped: NOT_APPLICABLE };

// ---------------------------------------------------------------- calls

interface SeqResult { summary: Summary; samples: number[]; firstCount: number; lastCount: number; cpu?: CpuWindow }

/**
 * `warmup` then `n` sequential calls over one keep-alive connection; each must answer 200
 * with the previous count + 1 (nothing lost, nothing applied twice). Client-side times.
 */
async function sequentialCalls(what: string, port: number, host: string | undefined, path: string, warmup: number, n: number, expectCount: boolean, pids?: Record<string, number>): Promise<SeqResult> {
  const keep = keepAliveAgent();
  let cpu: (() => CpuWindow) | undefined;
  const samples: number[] = [];
  let prev: number | undefined;
  let firstCount = NaN;
  try {
    for (let i = 0; i < warmup + n; i++) {
      if (i === warmup && pids) cpu = cpuWindow(pids);
      const r = await httpRequest({ port, host, path, agent: keep, timeoutMs: 30_000 });
      if (r.status !== 200) throw new Error(`${what}: call ${i + 1} answered ${r.status} ${JSON.stringify(r.body.slice(0, 300))}`);
      if (expectCount) {
        const c = Number(r.body);
        if (!Number.isInteger(c) || (prev !== undefined && c !== prev + 1)) {
          throw new Error(`${what}: call ${i + 1} answered ${JSON.stringify(r.body.slice(0, 100))} after ${prev ?? 'nothing'} (expected the previous count + 1)`);
        }
        if (i === 0) firstCount = c;
        prev = c;
      } else if (r.body !== HELLO_BODY) {
        throw new Error(`${what}: expected ${JSON.stringify(HELLO_BODY)}, got ${JSON.stringify(r.body.slice(0, 100))}`);
      }
      if (i >= warmup) samples.push(r.ms);
    }
  } finally { keep.destroy(); }
  return { summary: summarize(samples), samples, firstCount, lastCount: prev ?? NaN, ...(cpu ? { cpu: cpu() } : {}) };
}

/**
 * The steady series: `cfg.actorSteadyAfterCalls` more unmeasured calls right after `first`,
 * then `cfg.actorCalls` measured ones, the count continuing from `first`'s last.
 */
async function steadyCalls(cfg: BenchConfig, what: string, port: number, first: SeqResult, pids: Record<string, number>): Promise<SeqResult | undefined> {
  if (cfg.actorSteadyAfterCalls === 0) return undefined;
  const r = await sequentialCalls(what, port, HOST, '/', cfg.actorSteadyAfterCalls, cfg.actorCalls, true, pids);
  if (r.firstCount !== first.lastCount + 1) throw new Error(`${what}: the calls started at ${r.firstCount}, not at ${first.lastCount + 1}`);
  return r;
}

async function countNow(port: number, host: string | undefined, path: string): Promise<number> {
  const r = await httpRequest({ port, host, path, timeoutMs: 30_000 });
  const c = Number(r.body);
  if (r.status !== 200 || !Number.isInteger(c)) throw new Error(`count read answered ${r.status} ${JSON.stringify(r.body.slice(0, 200))}`);
  return c;
}

interface ThroughputResult { load: LoadResult; warmupRequests: number; countBefore: number; countAfter: number }

/**
 * Concurrent calls to the one actor `bench` (wrk/autocannon, the warm phase's settings).
 * Every 2xx answer is a committed increment, so the count after must be at least the
 * count before plus every 2xx answer (warm-up included): acknowledged writes are not lost.
 */
async function throughput(ctx: ActorCtx, what: string, port: number, host: string | undefined, tmp: string): Promise<ThroughputResult> {
  const { cfg } = ctx;
  const countBefore = await countNow(port, host, '/');
  const spec = { port, host, method: 'GET' as const, connections: cfg.connections, durationS: cfg.durationS, threads: cfg.threads };
  let warmupRequests = 0;
  if (cfg.warmupS > 0) {
    const w = await runLoad(ctx.tool, { ...spec, durationS: cfg.warmupS }, tmp);
    if (w.non2xx + w.errors > 0) throw new Error(`${what}: ${w.non2xx} non-2xx and ${w.errors} socket errors in the warm-up load`);
    warmupRequests = w.requests;
  }
  const load = await runLoad(ctx.tool, spec, tmp);
  if (load.non2xx + load.errors > load.requests * 0.001) throw new Error(`${what}: ${load.non2xx} non-2xx and ${load.errors} socket errors in ${load.requests} requests`);
  const countAfter = await countNow(port, host, '/');
  const acked = warmupRequests + load.requests - load.non2xx;
  if (countAfter - 1 < countBefore + acked) throw new Error(`${what}: the count went from ${countBefore} to ${countAfter} over ${acked} acknowledged calls: increments were lost`);
  log(`  ${what}: ${Math.round(load.rps)} calls/s, p50 ${load.p50Ms.toFixed(2)} ms, p99 ${load.p99Ms.toFixed(2)} ms (${cfg.connections} connections, one actor)`);
  return { load, warmupRequests, countBefore, countAfter };
}

/** Logs where the CPU went during a measured series; warns when other work took over 15 % of the machine. */
function cpuNote(ctx: ActorCtx, what: string, r: SeqResult): void {
  const c = r.cpu;
  if (!c) return;
  log(`    CPU during ${what} (${c.seconds.toFixed(1)} s): ${Object.entries(c.byProcess).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(', ')}; other work ${c.otherWorkCpuS.toFixed(2)} s; machine ${Math.round(c.machineBusyFraction * 100)} % busy`);
  if (c.otherWorkCpuS > 0.15 * c.seconds * cpus().length) ctx.warn(`actors, ${what}: other work used ${c.otherWorkCpuS.toFixed(1)} CPU-seconds during the ${c.seconds.toFixed(1)} s of measured calls (${Math.round((100 * c.otherWorkCpuS) / (c.seconds * cpus().length))} % of the machine): the latencies, p99 most, are noisy`);
}

// ---------------------------------------------------------------- edge-isolates cluster

interface Cluster { cluster: LocalCluster; kube: KubeClient; ids: ActorIds }

async function startCluster(cfg: BenchConfig): Promise<Cluster> {
  const t0 = performance.now();
  const cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: [REGION], agentsPerRegion: cfg.actorAgents, presenceTtlMs: PRESENCE_TTL_MS });
  try {
    const kube = new KubeClient(cluster.kubeConfig);
    await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: NS } } });
    const op = await cluster.startOperator('bench-operator');
    const post = (plural: string, kind: string, name: string, spec: Record<string, unknown>) => kube.request('POST', crPath(plural, NS), {
      body: { apiVersion: 'edge.isolates.dev/v1alpha1', kind, metadata: { name, namespace: NS }, spec }, query: { fieldValidation: 'Strict' },
    });
    // idleTimeoutSeconds: long enough that no actor is evicted between the bench's steps.
    await post('durableactors', 'DurableActor', DA, { workerRef: { name: 'counter' }, className: 'Counter', locationHint: REGION, idleTimeoutSeconds: 600 });
    // Served by every agent (no shard, docs/shards.md): with the default shard of two of the
    // three agents, the actor's owner is outside its worker's shard one time in three, and
    // its "same agent" calls would go owner -> a shard member -> owner (two hops, both ways).
    const everyAgent = { placement: { shard: { min: 0, max: 8 } } };
    await post('edgeworkers', 'EdgeWorker', 'counter', { source: { inline: COUNTER_SOURCE }, routes: [{ host: HOST }], bindings: { actors: [{ name: 'COUNTER', actor: DA }] }, ...everyAgent });
    await post('edgeworkers', 'EdgeWorker', 'plain', { source: { inline: HELLO_SOURCE }, routes: [{ host: PLAIN_HOST }], ...everyAgent });
    type Obj = { metadata: { generation: number; uid?: string }; status?: { observedGeneration?: number; conditions?: { type: string; status: string; reason?: string; message?: string }[] } };
    const ready = async (plural: string, name: string): Promise<Obj | undefined> => {
      const o = await kube.request<Obj>('GET', crPath(plural, NS, name));
      return o.status?.observedGeneration === o.metadata.generation && o.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True' ? o : undefined;
    };
    let da: Obj | undefined;
    const deadline = performance.now() + 120_000;
    for (;;) {
      op.proc.assertRunning();
      da = await ready('durableactors', DA);
      if (da && (await ready('edgeworkers', 'counter')) && (await ready('edgeworkers', 'plain'))) break;
      if (performance.now() > deadline) {
        const o = await kube.request<Obj>('GET', crPath('durableactors', NS, DA));
        throw new Error(`DurableActor ${DA} and its EdgeWorkers not Ready within 120 s (DurableActor status ${JSON.stringify(o.status?.conditions)})`);
      }
      await sleep(100);
    }
    const uid = da.metadata.uid;
    if (!uid) throw new Error(`DurableActor ${DA} has no uid`);
    // Ready says one agent serves it; the bench needs every agent to, and every agent's ring to hold all of them.
    for (const a of cluster.agents) {
      const until = performance.now() + 60_000;
      for (;;) {
        a.proc.assertRunning();
        const r = await httpRequest({ port: a.port, host: PLAIN_HOST, timeoutMs: 10_000 }).catch(() => undefined);
        if (r?.status === 200) break;
        if (performance.now() > until) throw new Error(`agent ${a.node} does not serve ${PLAIN_HOST} within 60 s`);
        await sleep(50);
      }
    }
    await sleep(2 * PRESENCE_TTL_MS);
    log(`  actors: control plane, ${cfg.actorAgents} agents, the operator, the DurableActor and its worker up in ${((performance.now() - t0) / 1000).toFixed(1)} s (logs in ${cluster.cp.dir})`);
    return { cluster, kube, ids: new ActorIds(uid) };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}

const live = (c: Cluster): LocalAgent[] => c.cluster.agents.filter((a) => a.proc.running);

/** Pids of the cluster's running processes, by name, for CPU accounting. */
function clusterPids(c: Cluster): Record<string, number> {
  const pids: Record<string, number> = {};
  for (const a of live(c)) pids[`agent ${a.node}`] = a.proc.pid;
  for (const o of c.cluster.operators) if (o.proc.running) pids.operator = o.proc.pid;
  for (const p of c.cluster.cp.processes) pids[p.name] = p.pid;
  return pids;
}
const actorKeyOf = (c: Cluster, name: string): string => actorInstanceKey(NS, DA, c.ids.idFromName(name).hex);

/** Which live agent hosts each named actor now (from every agent's admin /status `actors`). */
async function owners(c: Cluster, names: string[]): Promise<Map<string, LocalAgent>> {
  const byKey = new Map(names.map((n) => [actorKeyOf(c, n), n]));
  const out = new Map<string, LocalAgent>();
  for (const a of live(c)) {
    const status = await c.cluster.agentStatus<{ actors?: string[] }>(a);
    for (const k of status.actors ?? []) {
      const n = byKey.get(k);
      if (n === undefined) continue;
      const seen = out.get(n);
      if (seen) throw new Error(`actor ${n} is active on two agents at once: ${seen.node} and ${a.node}`);
      out.set(n, a);
    }
  }
  return out;
}

interface Counts { last: Map<string, number>; unknown: Map<string, number> }

/**
 * One call to actor `name` through `agent`; checks the count against what the bench knows:
 * the previous acknowledged count + 1, up to the number of calls since whose outcome is
 * unknown (they failed, but may have run).
 */
async function callActor(counts: Counts, agent: LocalAgent, name: string, timeoutMs: number): Promise<{ ok: boolean; status: number | string }> {
  let status: number | string;
  try {
    const r = await httpRequest({ port: agent.port, host: HOST, path: `/?name=${encodeURIComponent(name)}`, timeoutMs });
    status = r.status;
    if (r.status === 200) {
      const c = Number(r.body);
      const last = counts.last.get(name) ?? 0;
      const unknown = counts.unknown.get(name) ?? 0;
      if (!Number.isInteger(c) || c < last + 1 || c > last + 1 + unknown) {
        throw new Error(`actor ${name} answered ${JSON.stringify(r.body.slice(0, 100))} through ${agent.node}; the last acknowledged count was ${last} and ${unknown} calls since failed (expected ${last + 1}${unknown ? `..${last + 1 + unknown}` : ''}): an acknowledged write was lost or one was applied twice`);
      }
      counts.last.set(name, c);
      counts.unknown.set(name, 0);
      return { ok: true, status };
    }
  } catch (err) {
    if ((err as Error).message.startsWith(`actor ${name} answered`)) throw err;
    status = firstLine(err).slice(0, 80);
  }
  counts.unknown.set(name, (counts.unknown.get(name) ?? 0) + 1);
  return { ok: false, status };
}

/** Activates every named actor (one call each, spread over the live agents) and returns where each one lives. */
async function activate(c: Cluster, counts: Counts, names: string[]): Promise<Map<string, LocalAgent>> {
  const deadline = performance.now() + 60_000;
  let prev = '';
  for (let round = 0; ; round++) {
    const agents = live(c);
    const where = await owners(c, names);
    const missing = names.filter((n) => !where.has(n));
    // Stable: every actor active somewhere, and the same answer twice in a row.
    const sig = names.map((n) => where.get(n)?.node ?? '-').join(',');
    if (missing.length === 0 && sig === prev) return where;
    prev = sig;
    if (performance.now() > deadline) throw new Error(`${missing.length} of ${names.length} actors not active on any agent after 60 s (e.g. ${missing[0]})`);
    for (const [i, n] of missing.entries()) {
      const r = await callActor(counts, agents[(i + round) % agents.length]!, n, 30_000);
      if (!r.ok) log(`    activating ${n}: ${r.status}`);
    }
    await sleep(300);
  }
}

interface RecoveryResult {
  signal: 'SIGKILL' | 'SIGTERM';
  actors: number;
  victim: string;
  victimActors: number;
  perAgent: Record<string, number>;
  /** Seconds from the signal until every one of the victim's actors had answered 200. */
  allBackS: number;
  firstBackS: number;
  p50BackS: number;
  /** Per actor: seconds to its first 200, the polls it took and the failed answers seen. */
  samples: { name: string; s: number; polls: number; failures: (number | string)[] }[];
  /** Seconds from the signal to each surviving agent logging the victim's presence expired (SIGKILL). */
  expiredS: Record<string, number | null>;
  /** The other actors (not on the victim) after recovery: each one answered once, exactly. */
  othersChecked: number;
  /** CPU by process (and other work) in the 0.5 s before the signal and from the signal to all back. */
  cpuBefore: CpuWindow;
  cpuDuring: CpuWindow;
}

/** Seconds from `killedAtMs` (Date.now()) to the first `agent presence expired` line naming `victim` in `logFile`. */
function presenceExpiredS(logFile: string, victim: string, killedAtMs: number): number | null {
  try {
    for (const line of readFileSync(logFile, 'utf8').split('\n')) {
      if (!line.includes('agent presence expired') || !line.includes(`"${victim}"`)) continue;
      const rec = JSON.parse(line) as { ts?: string; agent?: string };
      const t = Date.parse(rec.ts ?? '');
      if (Number.isFinite(t) && t >= killedAtMs - 5) return (t - killedAtMs) / 1000;
    }
  } catch { /* no log */ }
  return null;
}

async function recovery(ctx: ActorCtx, c: Cluster, signal: 'SIGKILL' | 'SIGTERM', prefix: string): Promise<RecoveryResult> {
  const { cfg } = ctx;
  const names = Array.from({ length: cfg.actorRecoveryActors }, (_, i) => `${prefix}-${String(i).padStart(3, '0')}`);
  const counts: Counts = { last: new Map(), unknown: new Map() };
  const where = await activate(c, counts, names);
  const perAgent: Record<string, number> = {};
  for (const a of live(c)) perAgent[a.node] = 0;
  for (const a of where.values()) perAgent[a.node] = (perAgent[a.node] ?? 0) + 1;
  const victim = live(c).reduce((best, a) => ((perAgent[a.node] ?? 0) > (perAgent[best.node] ?? 0) ? a : best));
  const survivors = live(c).filter((a) => a !== victim);
  const mine = names.filter((n) => where.get(n) === victim);
  if (mine.length === 0) throw new Error(`${signal}: no agent hosts any of the ${names.length} actors`);
  log(`  ${signal}: ${names.length} actors active (${Object.entries(perAgent).map(([k, v]) => `${k} ${v}`).join(', ')}); ${signal} to ${victim.node}, polling its ${mine.length} actors through ${survivors.map((a) => a.node).join(' and ')} every ${cfg.actorPollMs} ms`);
  // What the rest of the machine was doing just before, and during, the recovery.
  const pids = clusterPids(c);
  const idle = cpuWindow(pids);
  await sleep(500);
  const cpuBefore = idle();
  const during = cpuWindow(pids);

  const t0 = performance.now();
  const killedAtMs = Date.now();
  if (signal === 'SIGKILL') victim.proc.killNow(); else victim.proc.signal('SIGTERM');
  const deadline = t0 + cfg.actorRecoveryTimeoutMs;
  const samples: RecoveryResult['samples'] = [];
  await Promise.all(mine.map(async (name, i) => {
    const failures: (number | string)[] = [];
    for (let polls = 1; ; polls++) {
      const sent = performance.now();
      const via = survivors[(i + polls) % survivors.length]!;
      const r = await callActor(counts, via, name, Math.max(1000, deadline - sent));
      if (r.ok) { samples.push({ name, s: (performance.now() - t0) / 1000, polls, failures }); return; }
      if (failures.length < 20) failures.push(r.status);
      if (performance.now() > deadline) throw new Error(`${signal}: actor ${name} did not answer 200 through the surviving agents within ${cfg.actorRecoveryTimeoutMs} ms of the signal (answers: ${failures.slice(-5).join(', ')})`);
      const wait = cfg.actorPollMs - (performance.now() - sent);
      if (wait > 0) await sleep(wait);
    }
  }));
  const cpuDuring = during();
  const times = samples.map((s) => s.s);
  const sum = summarize(times);
  // Its process is gone (SIGKILL) or drained and exited (SIGTERM).
  const exited = await Promise.race([victim.proc.wait().then(() => true), sleep(15_000).then(() => false)]);
  if (!exited) { ctx.warn(`actors ${signal}: ${victim.node} had not exited 15 s after the signal; killed`); victim.proc.killNow(); await victim.proc.wait(); }
  const expiredS: Record<string, number | null> = {};
  if (signal === 'SIGKILL') for (const a of survivors) expiredS[a.node] = presenceExpiredS(a.proc.logFile, victim.node, killedAtMs);

  // Every actor, moved or not, still counts exactly.
  let othersChecked = 0;
  for (const [i, n] of names.entries()) {
    const r = await callActor(counts, survivors[i % survivors.length]!, n, 30_000);
    if (!r.ok) throw new Error(`${signal}: after recovery, actor ${n} answered ${r.status}`);
    if (!mine.includes(n)) othersChecked++;
  }
  const res: RecoveryResult = {
    signal, actors: names.length, victim: victim.node, victimActors: mine.length, perAgent,
    allBackS: sum.max, firstBackS: sum.min, p50BackS: sum.p50,
    samples: samples.sort((a, b) => a.s - b.s), expiredS, othersChecked, cpuBefore, cpuDuring,
  };
  const polls = samples.reduce((a, s) => a + s.polls, 0);
  const failed = samples.flatMap((s) => s.failures);
  const failedText = failed.length === 0 ? 'none failed' : `${failed.length} failed: ${[...new Set(failed.map(String))].join(', ')}`;
  log(`  ${signal}: all ${mine.length} actors of ${victim.node} answer again ${sum.max.toFixed(2)} s after the signal (first ${sum.min.toFixed(2)} s, p50 ${sum.p50.toFixed(2)} s; ${polls} polls, ${failedText})${signal === 'SIGKILL' ? `; survivors logged its presence expired at ${Object.entries(expiredS).map(([k, v]) => `${k} ${v === null ? '?' : `${v.toFixed(2)} s`}`).join(', ')}` : ''}`);
  const detected = Object.values(expiredS).filter((v): v is number => v !== null);
  if (detected.length > 0) log(`    so: ${Math.min(...detected).toFixed(2)} s until the first survivor dropped ${victim.node} from its ring (presence TTL ${PRESENCE_TTL_MS} ms), then ${(sum.max - Math.min(...detected)).toFixed(2)} s until the last actor answered from its new owner`);
  const share = (w: CpuWindow): number => w.otherWorkCpuS / (w.seconds * cpus().length);
  // (After SIGTERM the drained agent's own CPU, once it has exited, cannot be told from other work: only the time before counts.)
  const duringShare = signal === 'SIGKILL' ? share(cpuDuring) : 0;
  if (share(cpuBefore) > 0.15 || duringShare > 0.15) {
    ctx.warn(`actors ${signal}: other work kept ${Math.round(share(cpuBefore) * 100)} % of the machine busy in the 0.5 s before the signal${signal === 'SIGKILL' ? ` and ${Math.round(duringShare * 100)} % during the recovery` : ''}: the recovery time is noisy`);
  }
  return res;
}

interface EdgeResult {
  owner: string;
  forwarder: string;
  same: SeqResult;
  /** The same path again after cfg.actorSteadyAfterCalls more calls (absent when that is 0). */
  steady?: SeqResult;
  forwarded: SeqResult;
  plain: SeqResult;
  throughput?: ThroughputResult | { error: string };
  kill?: RecoveryResult | { error: string };
  term?: RecoveryResult | { error: string };
}

function copyLogs(cluster: LocalCluster, dest: string): void {
  try {
    mkdirSync(dest, { recursive: true });
    for (const f of readdirSync(cluster.cp.dir)) if (f.endsWith('.log')) copyFileSync(join(cluster.cp.dir, f), join(dest, f));
  } catch (err) { log(`  could not copy the cluster logs: ${(err as Error).message}`); }
}

async function edgeSide(ctx: ActorCtx, d: string): Promise<EdgeResult> {
  const { cfg } = ctx;
  let c: Cluster | undefined;
  try {
    c = await startCluster(cfg);
    const agents = live(c);
    const counts: Counts = { last: new Map(), unknown: new Map() };
    const where = await activate(c, counts, ['bench']);
    const owner = where.get('bench')!;
    const forwarder = agents.find((a) => a !== owner)!;
    log(`  actor "bench" lives on ${owner.node}; forwarding agent ${forwarder.node}`);
    const pids: Record<string, number> = {};
    for (const a of agents) pids[a.node === owner.node ? 'owner agent' : a.node === forwarder.node ? 'forwarding agent' : `agent ${a.node}`] = a.proc.pid;
    for (const o of c.cluster.operators) pids.operator = o.proc.pid;
    for (const p of c.cluster.cp.processes) pids[p.name] = p.pid;
    const same = await sequentialCalls('agent, same agent', owner.port, HOST, '/', cfg.actorWarmupCalls, cfg.actorCalls, true, pids);
    const steady = await steadyCalls(cfg, 'agent, same agent, steady', owner.port, same, pids);
    const last = steady ?? same;
    const forwarded = await sequentialCalls('agent, through a forwarding agent', forwarder.port, HOST, '/', cfg.actorWarmupCalls, cfg.actorCalls, true, pids);
    if (forwarded.firstCount !== last.lastCount + 1) throw new Error(`the forwarded calls started at ${forwarded.firstCount}, not at ${last.lastCount + 1}`);
    const plain = await sequentialCalls('agent, worker without actor', owner.port, PLAIN_HOST, '/', cfg.actorWarmupCalls, cfg.actorCalls, false, pids);
    for (const [what, r] of [['same agent', same], ['same agent, steady', steady], ['forwarded', forwarded]] as const) if (r) cpuNote(ctx, `agent ${what}`, r);
    const after = await owners(c, ['bench']);
    if (after.get('bench') !== owner) throw new Error(`actor "bench" moved from ${owner.node} to ${after.get('bench')?.node ?? 'nowhere'} during the calls`);
    log(`  agent: same agent p50 ${same.summary.p50.toFixed(2)} ms p99 ${same.summary.p99.toFixed(2)} ms${steady ? ` (steady: p50 ${steady.summary.p50.toFixed(2)} ms p99 ${steady.summary.p99.toFixed(2)} ms)` : ''}; forwarded p50 ${forwarded.summary.p50.toFixed(2)} ms p99 ${forwarded.summary.p99.toFixed(2)} ms; worker without actor p50 ${plain.summary.p50.toFixed(2)} ms`);
    const res: EdgeResult = { owner: owner.node, forwarder: forwarder.node, same, ...(steady ? { steady } : {}), forwarded, plain };
    try {
      res.throughput = await throughput(ctx, 'agent, concurrent calls on the owner', owner.port, HOST, d);
    } catch (err) { log(`  agent throughput: FAILED: ${firstLine(err)}`); res.throughput = { error: (err as Error).message }; }

    try {
      res.kill = await recovery(ctx, c, 'SIGKILL', 'kill');
    } catch (err) { log(`  SIGKILL recovery: FAILED: ${firstLine(err)}`); res.kill = { error: (err as Error).message }; }
    // Back to full strength, then the same with a drain.
    try {
      const gone = c.cluster.agents.filter((a) => !a.proc.running);
      for (const a of gone) await c.cluster.startAgent(REGION, a.node);
      await sleep(2 * PRESENCE_TTL_MS);
      res.term = await recovery(ctx, c, 'SIGTERM', 'term');
    } catch (err) { log(`  SIGTERM recovery: FAILED: ${firstLine(err)}`); res.term = { error: (err as Error).message }; }
    return res;
  } finally {
    if (c) { copyLogs(c.cluster, join(d, 'cluster')); await c.cluster.stop(); }
  }
}

// ---------------------------------------------------------------- workerd

function workerdActorConfig(diskPath: string): string {
  return [
    'using Workerd = import "/workerd/workerd.capnp";',
    '',
    'const config :Workerd.Config = (',
    '  services = [',
    `    (name = "counter", worker = (modules = [(name = "worker.js", esModule = ${capnpString(COUNTER_SOURCE)})], compatibilityDate = "2025-01-01",`,
    `      durableObjectNamespaces = [(className = "Counter", uniqueKey = ${capnpString(WD_UNIQUE_KEY)})],`,
    '      durableObjectStorage = (localDisk = "do-disk"),',
    '      bindings = [(name = "COUNTER", durableObjectNamespace = "Counter")])),',
    `    (name = "plain", worker = (modules = [(name = "worker.js", esModule = ${capnpString(HELLO_SOURCE)})], compatibilityDate = "2025-01-01")),`,
    `    (name = "do-disk", disk = (path = ${capnpString(diskPath)}, writable = true)),`,
    '  ],',
    '  sockets = [',
    '    (name = "counter", address = "127.0.0.1:0", http = (), service = "counter"),',
    '    (name = "plain", address = "127.0.0.1:0", http = (), service = "plain"),',
    '  ],',
    ');',
    '',
  ].join('\n');
}

interface WorkerdResult { seq: SeqResult; steady?: SeqResult; plain: SeqResult; throughput?: ThroughputResult | { error: string }; diskFiles: string[] }

async function workerdSide(ctx: ActorCtx, d: string): Promise<WorkerdResult> {
  const { cfg } = ctx;
  const disk = join(d, 'do');
  mkdirSync(disk, { recursive: true });
  let w: Workerd | undefined;
  try {
    w = await startWorkerd(ctx.workerd.bin ?? '', join(d, 'config.capnp'), workerdActorConfig(disk), ['counter', 'plain'], join(d, 'workerd.log'), 60_000);
    const port = w.ports.get('counter') ?? 0;
    const pids = { workerd: w.proc.pid };
    const seq = await sequentialCalls('workerd', port, HOST, '/', cfg.actorWarmupCalls, cfg.actorCalls, true, pids);
    const steady = await steadyCalls(cfg, 'workerd, steady', port, seq, pids);
    const plain = await sequentialCalls('workerd, worker without actor', w.ports.get('plain') ?? 0, PLAIN_HOST, '/', cfg.actorWarmupCalls, cfg.actorCalls, false, pids);
    cpuNote(ctx, 'workerd', seq);
    if (steady) cpuNote(ctx, 'workerd steady', steady);
    log(`  workerd: p50 ${seq.summary.p50.toFixed(2)} ms p99 ${seq.summary.p99.toFixed(2)} ms${steady ? ` (steady: p50 ${steady.summary.p50.toFixed(2)} ms p99 ${steady.summary.p99.toFixed(2)} ms)` : ''}; worker without actor p50 ${plain.summary.p50.toFixed(2)} ms`);
    const res: WorkerdResult = { seq, ...(steady ? { steady } : {}), plain, diskFiles: [] };
    try {
      res.throughput = await throughput(ctx, 'workerd, concurrent calls', port, HOST, d);
    } catch (err) { log(`  workerd throughput: FAILED: ${firstLine(err)}`); res.throughput = { error: (err as Error).message }; }
    // The state really is on disk (one SQLite file per object under the namespace's directory).
    try { res.diskFiles = readdirSync(join(disk, WD_UNIQUE_KEY)); } catch { /* none */ }
    if (!res.diskFiles.some((f) => f.endsWith('.sqlite'))) throw new Error(`workerd wrote no .sqlite file under ${join(disk, WD_UNIQUE_KEY)}: its Durable Object storage is not on disk`);
    return res;
  } finally { await w?.proc.stop(); }
}

// ---------------------------------------------------------------- the phase

export async function actorsPhase(ctx: ActorCtx): Promise<Row[]> {
  const { cfg } = ctx;
  log(`[actors] one durable put per call: ${cfg.actorWarmupCalls} warm-up + ${cfg.actorCalls} sequential calls (keep-alive); edge-isolates: 1 region, ${cfg.actorAgents} agents, presence TTL ${PRESENCE_TTL_MS} ms; workerd: local-disk Durable Object storage; then recovery of ${cfg.actorRecoveryActors} actors after SIGKILL / SIGTERM of their busiest agent`);
  let edge: EdgeResult | Cell;
  if (ctx.agent.skip) edge = { skipped: ctx.agent.skip };
  else if (ctx.agent.down) edge = { error: ctx.agent.down };
  else {
    const d = ctx.dir('act-cluster');
    try { edge = await edgeSide(ctx, d); } catch (err) {
      log(`  agent: FAILED: ${firstLine(err)}`);
      edge = errCell(err);
    }
  }
  let wd: WorkerdResult | Cell;
  if (ctx.workerd.skip) wd = { skipped: ctx.workerd.skip };
  else if (ctx.workerd.down) wd = { error: ctx.workerd.down };
  else {
    const d = ctx.dir('workerd-actors');
    try { wd = await workerdSide(ctx, d); } catch (err) {
      log(`  workerd: FAILED: ${firstLine(err)}`);
      wd = errCell(err);
    }
  }
  ctx.raw.actors = {
    measures: 'client-side time of sequential calls over one keep-alive connection to a worker whose fetch calls one actor; the actor reads its count and puts count + 1 (one durable write per call)',
    source: COUNTER_SOURCE, regions: 1, agents: cfg.actorAgents, presenceTtlMs: PRESENCE_TTL_MS,
    calls: cfg.actorCalls, warmupCalls: cfg.actorWarmupCalls, steadyAfterCalls: cfg.actorSteadyAfterCalls, recoveryActors: cfg.actorRecoveryActors, pollMs: cfg.actorPollMs,
    agent: edge, workerd: wd,
  };

  const e = (f: (r: EdgeResult) => number | Cell | undefined): Cell => {
    if (!('same' in edge)) return edge;
    const v = f(edge);
    if (v === undefined) return { error: 'not measured' };
    return typeof v === 'number' ? { value: v } : v;
  };
  const w = (f: (r: WorkerdResult) => number | Cell | undefined): Cell => {
    if (!('seq' in wd)) return wd;
    const v = f(wd);
    if (v === undefined) return { error: 'not measured' };
    return typeof v === 'number' ? { value: v } : v;
  };
  const tp = (t: ThroughputResult | { error: string } | undefined, f: (x: ThroughputResult) => number): number | Cell | undefined => (t === undefined ? undefined : 'error' in t ? { error: t.error } : f(t));
  const rec = (r: RecoveryResult | { error: string } | undefined, f: (x: RecoveryResult) => number): number | Cell | undefined => (r === undefined ? undefined : 'error' in r ? { error: r.error } : f(r));
  const n = cfg.actorCalls;
  const victimN = (r: RecoveryResult | { error: string } | undefined): string => (r && !('error' in r) ? `${r.victimActors} of ${r.actors}` : `of ${cfg.actorRecoveryActors}`);
  const kill = 'same' in edge ? edge.kill : undefined;
  const term = 'same' in edge ? edge.term : undefined;
  return [
    {
      metric: `actor call p50, one durable put per call, same agent (n=${n} sequential after ${cfg.actorWarmupCalls}: the isolates' code still tiering up; workerd: one process, local disk)`, unit: 'ms', better: 'lower',
      agent: e((r) => r.same.summary.p50), workerd: w((r) => r.seq.summary.p50),
    },
    {
      metric: 'actor call p99, same agent (same samples)', unit: 'ms', better: 'lower',
      agent: e((r) => r.same.summary.p99), workerd: w((r) => r.seq.summary.p99),
      // A p99 means something from 1,000 samples on (quick mode's 300 make it the 3rd slowest).
      ...(n >= 1000 ? { floor: { text: 'agent p99 <= 5 ms', check: (a: number | undefined) => a !== undefined && a <= 5 } } : {}),
    },
    ...(cfg.actorSteadyAfterCalls > 0 ? ([
      {
        metric: `actor call p50, same agent, steady (the next n=${n} after ${cfg.actorSteadyAfterCalls} more calls)`, unit: 'ms', better: 'lower',
        agent: e((r) => r.steady?.summary.p50), workerd: w((r) => r.steady?.summary.p50),
      },
      {
        metric: 'actor call p99, same agent, steady (same samples)', unit: 'ms', better: 'lower',
        agent: e((r) => r.steady?.summary.p99), workerd: w((r) => r.steady?.summary.p99),
        ...(n >= 1000 ? { floor: { text: 'agent p99 <= 3 ms', check: (a: number | undefined) => a !== undefined && a <= 3 } } : {}),
      },
    ] satisfies Row[]) : []),
    {
      metric: `actor call p50, through a forwarding agent (n=${n}; workerd: the same one-process numbers)`, unit: 'ms', better: 'lower',
      agent: e((r) => r.forwarded.summary.p50), workerd: w((r) => r.seq.summary.p50),
    },
    {
      metric: 'actor call p99, through a forwarding agent', unit: 'ms', better: 'lower',
      agent: e((r) => r.forwarded.summary.p99), workerd: w((r) => r.seq.summary.p99),
    },
    {
      metric: 'same client, worker without an actor call, p50 (what the client and the worker add)', unit: 'ms', better: 'info',
      agent: e((r) => r.plain.summary.p50), workerd: w((r) => r.plain.summary.p50),
    },
    {
      metric: `actor calls/s, one actor, ${cfg.connections} connections (same agent)`, unit: 'req/s', better: 'info',
      agent: e((r) => tp(r.throughput, (t) => t.load.rps)), workerd: w((r) => tp(r.throughput, (t) => t.load.rps)),
    },
    {
      metric: `actor recovery after SIGKILL of its agent: signal to all ${victimN(kill)} actors answering 200 through the others (presence TTL ${PRESENCE_TTL_MS / 1000} s)`, unit: 's', better: 'lower',
      agent: e((r) => rec(r.kill, (x) => x.allBackS)), workerd: na,
      floor: { text: '<= 3 s', check: (a) => a !== undefined && a <= 3 },
    },
    {
      metric: `actor recovery after SIGTERM (drain) of its agent: signal to all ${victimN(term)} actors answering 200`, unit: 's', better: 'info',
      agent: e((r) => rec(r.term, (x) => x.allBackS)), workerd: na,
    },
  ];
}
