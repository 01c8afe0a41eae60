import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { crPath, KubeClient } from '../operator/runtime/kube-client.js';
import { LocalCluster, QUICK_FAILOVER, type LocalAgent, type LocalOperator } from '../cli/local/cluster.js';
import { agentMetricSums } from './agent.js';
import type { BenchConfig } from './config.js';
import { httpRequest, summarize, type Summary } from './http.js';
import { treeCpuSeconds } from './cpu.js';
import { cpuTimes, processMemKiB, sleep, type Proc } from './procs.js';
import { NOT_APPLICABLE, type Cell, type Row } from './report.js';
import { namedBody, namedSource } from './workloads.js';

// The operator phases (issue 4). There is no peer: workerd has no control plane, so its
// column says "not applicable". Everything runs in an LocalCluster from the test harness:
// a real etcd + kube-apiserver + nats-server, labelled Node objects, one `edge agent --nats`
// and one `edge operator`, all real processes on loopback; the bench talks to them the way
// a user does (kube API for EdgeWorkers, HTTP with a Host header for the agent).

const log = (msg: string): void => { process.stderr.write(`${msg}\n`); };
const MiB = 1024;
const NS = 'bench';
const REGION = 'bench-1';
/** Polling of the apiserver list in the 1,000-worker phase. */
const LIST_POLL_MS = 500;
/** Sampling of the operator's and agent's memory. */
const RSS_SAMPLE_MS = 250;
/** Polling of one EdgeWorker's Ready condition after its first response (create phase, info row). */
const READY_POLL_MS = 20;

export interface OpCtx {
  cfg: BenchConfig;
  raw: Record<string, unknown>;
  /** A fresh numbered directory under the bench temp dir. */
  dir(what: string): string;
  warn(msg: string): void;
  /** Why the edge side cannot run at all (an ERROR cell), or undefined. */
  down: string | undefined;
  /** Why the operator phases are not run (a skipped cell), or undefined. */
  skip: string | undefined;
}

interface Ew {
  metadata: { name: string; generation?: number; finalizers?: string[]; deletionTimestamp?: string };
  status?: { observedGeneration?: number; conditions?: { type: string; status: string; reason?: string; message?: string; observedGeneration?: number }[] };
}

const errCell = (err: unknown): Cell => ({ error: err instanceof Error ? err.message : String(err) });
const na: Cell = { skipped: NOT_APPLICABLE };

function readyCond(ew: Ew) { return ew.status?.conditions?.find((c) => c.type === 'Ready'); }
/** Ready=True for the current generation (the condition's and the status's observedGeneration). */
function isReady(ew: Ew): boolean {
  const gen = ew.metadata.generation;
  const c = readyCond(ew);
  return c?.status === 'True' && c.observedGeneration === gen && ew.status?.observedGeneration === gen;
}

function edgeWorker(name: string, host: string, source: string): Record<string, unknown> {
  return {
    apiVersion: 'edge.isolates.dev/v1alpha1', kind: 'EdgeWorker',
    metadata: { name, namespace: NS },
    spec: { routes: [{ host }], source: { inline: source } },
  };
}

/** Runs `fn` over `items`, at most `limit` at once; the first failure rejects after the others in flight settle. */
async function pool<T>(items: T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const lane = async (): Promise<void> => {
    while (failed === undefined && next < items.length) {
      const i = next++;
      try { await fn(items[i]!, i); } catch (err) { failed ??= err; }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (failed !== undefined) throw failed;
}

async function startCluster(ctx: OpCtx, what: string): Promise<{ cluster: LocalCluster; kube: KubeClient; agent: LocalAgent; op: LocalOperator }> {
  const t0 = performance.now();
  const cluster = await LocalCluster.start({ ...QUICK_FAILOVER, regions: [REGION] });
  try {
    const kube = new KubeClient(cluster.kubeConfig);
    await kube.request('POST', '/api/v1/namespaces', { body: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } } });
    const op = await cluster.startOperator('bench-operator');
    // Leader with its caches synced: what is timed from here on is reconciling, not starting.
    const deadline = performance.now() + 60_000;
    while (!(await cluster.operatorStatus(op))?.active) {
      op.proc.assertRunning();
      if (performance.now() > deadline) throw new Error('operator not active (leader with caches synced) within 60 s');
      await sleep(50);
    }
    log(`  ${what}: control plane, 1 agent and the operator up in ${((performance.now() - t0) / 1000).toFixed(1)} s (logs in ${cluster.cp.dir})`);
    return { cluster, kube, agent: cluster.agent(REGION), op };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}

/** Copies the cluster's logs into the bench dir (the cluster's own temp dir goes at stop). */
function keepLogs(cluster: LocalCluster, dest: string): void {
  try {
    mkdirSync(dest, { recursive: true });
    for (const f of readdirSync(cluster.cp.dir)) if (f.endsWith('.log')) copyFileSync(join(cluster.cp.dir, f), join(dest, f));
  } catch (err) { log(`  could not copy the cluster logs: ${(err as Error).message}`); }
}

async function stopCluster(cluster: LocalCluster, dest: string): Promise<void> {
  keepLogs(cluster, dest);
  await cluster.stop();
}

/** Selected operator series from /metrics (summed over labels), for the JSON record and the log. */
async function operatorMetrics(op: LocalOperator): Promise<Record<string, number>> {
  const all = await agentMetricSums(op.admin);
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(all)) {
    if (/^edge_operator_(reconcile|workqueue|edgeworkers|process_cpu_seconds_total|nodejs_eventloop_lag_(p50|p99|max)_seconds)/.test(k)) out[k] = v;
  }
  return out;
}

/** Polls the agent over fresh connections until it answers 200 with `body`; ms from `t0` to the end of that response. */
async function firstOk(agent: LocalAgent, host: string, body: string, t0: number, pollMs: number, timeoutMs: number, proc: Proc): Promise<{ ms: number; polls: number }> {
  let polls = 0;
  let last = '';
  for (;;) {
    const sent = performance.now();
    polls++;
    try {
      const r = await httpRequest({ port: agent.port, host, timeoutMs: 10_000 });
      const now = performance.now();
      if (r.status === 200 && r.body === body) return { ms: now - t0, polls };
      last = `${r.status} ${JSON.stringify(r.body.slice(0, 120))}`;
    } catch (err) { last = (err as Error).message; }
    if (performance.now() - t0 > timeoutMs) throw new Error(`${host}: no 200 ${JSON.stringify(body)} from the agent within ${timeoutMs} ms of the POST (last answer: ${last})`);
    proc.assertRunning();
    const wait = pollMs - (performance.now() - sent);
    if (wait > 0) await sleep(wait);
  }
}

// ---------------------------------------------------------------- create -> first response

interface CreateResult { firstOk: Summary; ready: Summary; post: Summary; samples: { name: string; postMs: number; firstOkMs: number; polls: number; readyMs: number }[]; operatorMetrics: Record<string, number> }

export async function operatorCreatePhase(ctx: OpCtx): Promise<Row[]> {
  const { cfg } = ctx;
  const n = cfg.opCreateWorkers;
  log(`[op-create] 1 region, 1 agent, 1 operator: ${n} EdgeWorkers created one after another; POST returned -> first 200 with the worker's body from the agent (new connection per poll, every ${cfg.opPollMs} ms)`);
  let res: CreateResult | Cell;
  if (ctx.skip) res = { skipped: ctx.skip };
  else if (ctx.down) res = { error: ctx.down };
  else {
    const d = ctx.dir('op-create');
    let c: Awaited<ReturnType<typeof startCluster>> | undefined;
    try {
      c = await startCluster(ctx, 'op-create');
      const { kube, agent, op } = c;
      const samples: CreateResult['samples'] = [];
      for (let i = 0; i < n; i++) {
        const name = `first-${String(i).padStart(3, '0')}`;
        const host = `${name}.bench`;
        const p0 = performance.now();
        await kube.request('POST', crPath('edgeworkers', NS), { body: edgeWorker(name, host, namedSource(name)), query: { fieldValidation: 'Strict' } });
        const t0 = performance.now();
        const first = await firstOk(agent, host, namedBody(name), t0, cfg.opPollMs, cfg.opTimeoutMs, op.proc);
        // Then Ready=True in the API (an info row; polled only after the first 200, so it cannot slow that).
        let readyMs = NaN;
        const deadline = performance.now() + cfg.opTimeoutMs;
        for (;;) {
          const ew = await kube.request<Ew>('GET', crPath('edgeworkers', NS, name));
          if (isReady(ew)) { readyMs = performance.now() - t0; break; }
          if (performance.now() > deadline) throw new Error(`${name}: served, but not Ready=True within ${cfg.opTimeoutMs} ms; status ${JSON.stringify(ew.status)}`);
          await sleep(READY_POLL_MS);
        }
        samples.push({ name, postMs: t0 - p0, firstOkMs: first.ms, polls: first.polls, readyMs });
      }
      const r: CreateResult = {
        firstOk: summarize(samples.map((s) => s.firstOkMs)), ready: summarize(samples.map((s) => s.readyMs)), post: summarize(samples.map((s) => s.postMs)),
        samples, operatorMetrics: await operatorMetrics(op),
      };
      log(`  create -> first 200: p50 ${r.firstOk.p50.toFixed(1)} ms, max ${r.firstOk.max.toFixed(1)} ms, min ${r.firstOk.min.toFixed(1)} ms; -> Ready=True p50 ${r.ready.p50.toFixed(1)} ms; POST itself p50 ${r.post.p50.toFixed(1)} ms`);
      log(`  samples (ms): ${samples.map((s) => s.firstOkMs.toFixed(0)).join(' ')}`);
      res = r;
    } catch (err) {
      log(`  op-create: FAILED: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
      res = errCell(err);
    } finally {
      if (c) await stopCluster(c.cluster, join(d, 'cluster'));
    }
  }
  ctx.raw.operatorCreate = {
    measures: 'time from the EdgeWorker POST returning to the end of the first 200 response with the expected body from the agent (Host header routing, a new TCP connection per poll)',
    regions: 1, agents: 1, pollMs: cfg.opPollMs, workers: n, result: res,
  };
  const get = (f: (r: CreateResult) => number): Cell => ('firstOk' in res ? { value: f(res) } : res);
  return [
    {
      metric: `operator: EdgeWorker create to first 200 from the agent, p50 (n=${n}, 1 region)`, unit: 'ms', better: 'lower',
      agent: get((r) => r.firstOk.p50), workerd: na,
      floor: { text: 'p50 <= 1000 ms', check: (a) => a !== undefined && a <= 1000 },
    },
    { metric: `operator: EdgeWorker create to first 200, p99 (n=${n}: the slowest)`, unit: 'ms', better: 'lower', agent: get((r) => r.firstOk.p99), workerd: na },
    { metric: 'operator: EdgeWorker create to Ready=True in its status, p50 (same workers)', unit: 'ms', better: 'info', agent: get((r) => r.ready.p50), workerd: na },
  ];
}

// ---------------------------------------------------------------- 1,000 workers

interface MemPoint { t: number; rss: number; hwm: number }
/** Peak RSS of one process over a window: VmHWM when it rose during the window (exact), else the highest sampled VmRSS. */
interface MemWindow { peakKiB: number; sampledMaxKiB: number; hwmKiB: number; samples: number }

class MemTracker {
  readonly points: MemPoint[] = [];
  comm = '?';
  constructor(readonly pid: number) {}
  sample(): void {
    const m = processMemKiB(this.pid);
    if (!m) return;
    this.comm = m.comm;
    this.points.push({ t: performance.now(), rss: m.rss, hwm: m.hwm });
  }
  window(from: number, to: number): MemWindow {
    const inside = this.points.filter((p) => p.t >= from && p.t <= to);
    const before = this.points.filter((p) => p.t < from).at(-1)?.hwm ?? 0;
    const sampledMaxKiB = Math.max(0, ...inside.map((p) => p.rss));
    const hwmKiB = inside.at(-1)?.hwm ?? 0;
    return { peakKiB: hwmKiB > before ? hwmKiB : sampledMaxKiB, sampledMaxKiB, hwmKiB, samples: inside.length };
  }
}

export interface CpuWindow { seconds: number; machineBusyFraction: number; byProcess: Record<string, number>; otherWorkCpuS: number }

/** CPU seconds each of our processes (with its children) used over a window, and what the rest of the machine used. */
export function cpuWindow(procs: Record<string, number>): () => CpuWindow {
  const hz = 100; // USER_HZ: /proc/stat and /proc/PID/stat count in the same ticks
  const m0 = cpuTimes();
  const t0 = performance.now();
  const self0 = process.cpuUsage();
  // A process with its children: an agent's isolate hosts do its tenants' work.
  const seconds = (pid: number): number => {
    const tree = treeCpuSeconds(pid);
    return tree.processes === 0 ? NaN : tree.seconds;
  };
  const p0 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, seconds(pid)]));
  return () => {
    const m1 = cpuTimes();
    const self = process.cpuUsage(self0);
    const byProcess: Record<string, number> = { bench: (self.user + self.system) / 1e6 };
    for (const [k, pid] of Object.entries(procs)) byProcess[k] = seconds(pid) - (p0[k] ?? NaN);
    const busyS = (m1.busy - m0.busy) / hz;
    const ours = Object.values(byProcess).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
    return {
      seconds: (performance.now() - t0) / 1000,
      machineBusyFraction: m1.total > m0.total ? (m1.busy - m0.busy) / (m1.total - m0.total) : 0,
      byProcess, otherWorkCpuS: Math.max(0, busyS - ours),
    };
  };
}

interface ScaleResult {
  workers: number; concurrency: number;
  /** VmRSS just before the first POST. */
  startRss: { operatorKiB: number; agentKiB: number };
  postsDoneS: number; readyS: number; deletePostsDoneS: number; deletedS: number;
  /** Peak RSS (KiB) from the first POST to all Ready, and from the first DELETE to all gone. */
  operatorMem: { comm: string; create: MemWindow; delete: MemWindow };
  agentMem: { comm: string; create: MemWindow; delete: MemWindow };
  /** Every RSS sample: [seconds from the first POST, operator MiB, agent MiB]. */
  rssTimeline: [number, number, number][];
  timeline: { s: number; items: number; ready: number }[];
  deleteTimeline: { s: number; items: number }[];
  cpuCreate: CpuWindow; cpuDelete: CpuWindow;
  eventsAtReady: Record<string, number>;
  operatorMetricsAtReady: Record<string, number>; operatorMetricsAfterDelete: Record<string, number>;
  agentMetricsAtReady: Record<string, number>;
  spotChecks: number;
}

export async function operatorScalePhase(ctx: OpCtx): Promise<Row[]> {
  const { cfg } = ctx;
  const N = cfg.opScaleWorkers;
  log(`[op-scale] fresh cluster, 1 region, 1 agent, 1 operator: ${N} EdgeWorkers POSTed ${cfg.opConcurrency} at a time; first POST -> all Ready=True (list polled every ${LIST_POLL_MS} ms); then all deleted; operator and agent RSS sampled every ${RSS_SAMPLE_MS} ms`);
  let res: ScaleResult | Cell;
  if (ctx.skip) res = { skipped: ctx.skip };
  else if (ctx.down) res = { error: ctx.down };
  else {
    const d = ctx.dir('op-scale');
    let c: Awaited<ReturnType<typeof startCluster>> | undefined;
    let sampler: NodeJS.Timeout | undefined;
    try {
      c = await startCluster(ctx, 'op-scale');
      const { cluster, kube, agent, op } = c;
      const names = Array.from({ length: N }, (_, i) => `w-${String(i).padStart(5, '0')}`);
      const opMem = new MemTracker(op.proc.pid);
      const agentMem = new MemTracker(agent.proc.pid);
      opMem.sample(); agentMem.sample();
      const startRss = { operatorKiB: processMemKiB(op.proc.pid)?.rss ?? NaN, agentKiB: processMemKiB(agent.proc.pid)?.rss ?? NaN };
      log(`  RSS before the first POST: operator ${(startRss.operatorKiB / MiB).toFixed(1)} MiB, agent ${(startRss.agentKiB / MiB).toFixed(1)} MiB`);
      const opComm = opMem.comm;
      // ManagedProcess spawns `setpriv ... -- node ...`, and setpriv exec()s node: same pid.
      if (opComm !== 'node') ctx.warn(`op-scale: the operator's pid ${op.proc.pid} is "${opComm}", not node: its RSS may not be the operator's`);
      sampler = setInterval(() => { opMem.sample(); agentMem.sample(); }, RSS_SAMPLE_MS);
      const pids: Record<string, number> = { operator: op.proc.pid, agent: agent.proc.pid };
      for (const p of cluster.cp.processes) pids[p.name] = p.pid;

      const list = async (): Promise<Ew[]> => (await kube.request<{ items: Ew[] }>('GET', crPath('edgeworkers', NS))).items;

      // Create.
      const cpuCreate = cpuWindow(pids);
      opMem.sample(); agentMem.sample();
      const t0 = performance.now();
      let postsDoneS = NaN;
      const posts = pool(names, cfg.opConcurrency, async (name) => {
        await kube.request('POST', crPath('edgeworkers', NS), { body: edgeWorker(name, `${name}.bench`, namedSource(name)) });
      }).then(() => { postsDoneS = (performance.now() - t0) / 1000; });
      let postError: unknown;
      posts.catch((err: unknown) => { postError = err; });
      const timeline: ScaleResult['timeline'] = [];
      let readyS = NaN;
      let lastNotReady: Ew | undefined;
      for (;;) {
        if (postError !== undefined) throw postError;
        op.proc.assertRunning(); agent.proc.assertRunning();
        const items = await list();
        const ready = items.filter(isReady).length;
        const s = (performance.now() - t0) / 1000;
        timeline.push({ s: Math.round(s * 100) / 100, items: items.length, ready });
        if (ready === N) { readyS = s; opMem.sample(); agentMem.sample(); break; }
        lastNotReady = items.find((x) => !isReady(x));
        if (s * 1000 > cfg.opTimeoutMs) {
          throw new Error(`${ready} of ${N} EdgeWorkers Ready after ${s.toFixed(0)} s (${items.length} exist); one not ready: ${lastNotReady?.metadata.name} ${JSON.stringify(readyCond(lastNotReady ?? { metadata: { name: '' } }))}`);
        }
        if (timeline.length % 10 === 0) log(`    ${s.toFixed(1)} s: ${items.length} created, ${ready} Ready`);
        await sleep(LIST_POLL_MS);
      }
      await posts;
      const cpuC = cpuCreate();
      log(`  ${N} Ready=True ${readyS.toFixed(1)} s after the first POST (POSTs done at ${postsDoneS.toFixed(1)} s)`);
      log(`  CPU during create: ${Object.entries(cpuC.byProcess).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(', ')}; other work ${cpuC.otherWorkCpuS.toFixed(1)} s; machine ${Math.round(cpuC.machineBusyFraction * 100)} % busy over ${cpuC.seconds.toFixed(1)} s`);
      if (cpuC.otherWorkCpuS > 0.15 * cpuC.seconds * cpus().length) ctx.warn(`op-scale: other work used ${cpuC.otherWorkCpuS.toFixed(1)} CPU-seconds while the ${N} workers were reconciled (${cpuC.seconds.toFixed(0)} s): the time is noisy`);
      const operatorMetricsAtReady = await operatorMetrics(op);
      // Events the operator wrote meanwhile (each one an apiserver write), by type and reason.
      const eventsAtReady: Record<string, number> = {};
      for (const e of (await kube.request<{ items: { type?: string; reason?: string }[] }>('GET', `/api/v1/namespaces/${NS}/events`)).items) {
        const k = `${e.type ?? '?'} ${e.reason ?? '?'}`;
        eventsAtReady[k] = (eventsAtReady[k] ?? 0) + 1;
      }
      log(`  Events in ${NS} at Ready: ${Object.entries(eventsAtReady).map(([k, v]) => `${v} ${k}`).join(', ') || 'none'}`);
      const agentMetricsAtReady = await agentMetricSums(agent.admin);

      // The agent really serves them: a spread of workers answer their own body.
      let spotChecks = 0;
      for (let i = 0; i < N; i += Math.max(1, Math.floor(N / 20))) {
        const name = names[i]!;
        const r = await httpRequest({ port: agent.port, host: `${name}.bench`, timeoutMs: 10_000 });
        if (r.status !== 200 || r.body !== namedBody(name)) throw new Error(`${name} is Ready but the agent answers ${r.status} ${JSON.stringify(r.body.slice(0, 200))}`);
        spotChecks++;
      }

      // Delete.
      const cpuDelete = cpuWindow(pids);
      const tReady = performance.now();
      opMem.sample(); agentMem.sample();
      const t1 = performance.now();
      let deletePostsDoneS = NaN;
      await pool(names, cfg.opConcurrency, async (name) => {
        await kube.request('DELETE', crPath('edgeworkers', NS, name));
      });
      deletePostsDoneS = (performance.now() - t1) / 1000;
      const deleteTimeline: ScaleResult['deleteTimeline'] = [];
      let deletedS = NaN;
      for (;;) {
        op.proc.assertRunning();
        const items = await list();
        const s = (performance.now() - t1) / 1000;
        deleteTimeline.push({ s: Math.round(s * 100) / 100, items: items.length });
        if (items.length === 0) { deletedS = s; break; }
        if (s * 1000 > cfg.opTimeoutMs) throw new Error(`${items.length} of ${N} EdgeWorkers still exist ${s.toFixed(0)} s after the first DELETE (finalizers: ${JSON.stringify(items[0]?.metadata.finalizers)})`);
        await sleep(LIST_POLL_MS);
      }
      const cpuD = cpuDelete();
      if (cpuD.otherWorkCpuS > 0.15 * cpuD.seconds * cpus().length) ctx.warn(`op-scale: other work used ${cpuD.otherWorkCpuS.toFixed(1)} CPU-seconds while the ${N} workers were deleted (${cpuD.seconds.toFixed(0)} s): the delete time is noisy`);
      opMem.sample(); agentMem.sample();
      const tDeleted = performance.now();
      clearInterval(sampler);
      sampler = undefined;
      log(`  ${N} deleted (finalizers removed) ${deletedS.toFixed(1)} s after the first DELETE (DELETEs done at ${deletePostsDoneS.toFixed(1)} s)`);
      const r: ScaleResult = {
        workers: N, concurrency: cfg.opConcurrency, startRss, postsDoneS, readyS, deletePostsDoneS, deletedS,
        operatorMem: { comm: opMem.comm, create: opMem.window(t0, tReady), delete: opMem.window(t1, tDeleted) },
        agentMem: { comm: agentMem.comm, create: agentMem.window(t0, tReady), delete: agentMem.window(t1, tDeleted) },
        rssTimeline: opMem.points.map((p, i) => [
          Math.round((p.t - t0) / 10) / 100, Math.round(p.rss / 102.4) / 10, Math.round((agentMem.points[i]?.rss ?? NaN) / 102.4) / 10,
        ]),
        timeline, deleteTimeline,
        cpuCreate: cpuC, cpuDelete: cpuD, eventsAtReady, operatorMetricsAtReady, operatorMetricsAfterDelete: await operatorMetrics(op), agentMetricsAtReady, spotChecks,
      };
      const mib = (k: number): string => (k / MiB).toFixed(1);
      log(`  operator peak RSS: ${mib(r.operatorMem.create.peakKiB)} MiB until all Ready, ${mib(r.operatorMem.delete.peakKiB)} MiB while deleting (highest samples ${mib(r.operatorMem.create.sampledMaxKiB)} / ${mib(r.operatorMem.delete.sampledMaxKiB)} MiB); agent ${mib(r.agentMem.create.peakKiB)} MiB`);
      const m = operatorMetricsAtReady;
      const rc = m.edge_operator_reconcile_duration_seconds_count ?? NaN;
      log(`  operator /metrics at Ready: ${rc} reconciles, mean ${(((m.edge_operator_reconcile_duration_seconds_sum ?? NaN) / rc) * 1000).toFixed(1)} ms each, mean queue wait ${(((m.edge_operator_workqueue_wait_seconds_sum ?? NaN) / (m.edge_operator_workqueue_wait_seconds_count ?? NaN)) * 1000).toFixed(0)} ms, ${m.edge_operator_workqueue_retries_total ?? 0} retries`);
      res = r;
    } catch (err) {
      log(`  op-scale: FAILED: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
      res = errCell(err);
    } finally {
      if (sampler) clearInterval(sampler);
      if (c) await stopCluster(c.cluster, join(d, 'cluster'));
    }
  }
  ctx.raw.operatorScale = {
    measures: 'seconds from the first POST to the list showing every EdgeWorker Ready=True with observedGeneration == generation (list polled every 500 ms); peak RSS is VmHWM of the operator/agent node process, sampled every 250 ms',
    regions: 1, agents: 1, listPollMs: LIST_POLL_MS, rssSampleMs: RSS_SAMPLE_MS, result: res,
  };
  const get = (f: (r: ScaleResult) => number): Cell => ('readyS' in res ? { value: f(res) } : res);
  const full = N >= 1000;
  return [
    {
      metric: `operator: ${N} EdgeWorkers, first POST to all Ready=True (observedGeneration current; ${cfg.opConcurrency} POSTs at a time, 1 agent)`, unit: 's', better: 'lower',
      agent: get((r) => r.readyS), workerd: na,
      ...(full ? { floor: { text: '<= 60 s', check: (a: number | undefined) => a !== undefined && a <= 60 } } : {}),
    },
    {
      metric: `operator: peak RSS, first POST to all ${N} Ready (VmHWM)`, unit: 'MiB', better: 'lower',
      agent: get((r) => r.operatorMem.create.peakKiB / MiB), workerd: na,
      ...(full ? { floor: { text: '<= 300 MiB', check: (a: number | undefined) => a !== undefined && a <= 300 } } : {}),
    },
    { metric: `operator: all ${N} POSTs answered (context for the Ready time)`, unit: 's', better: 'info', agent: get((r) => r.postsDoneS), workerd: na },
    { metric: `agent: peak RSS, first POST to all ${N} Ready (minWarmIsolates 1)`, unit: 'MiB', better: 'info', agent: get((r) => r.agentMem.create.peakKiB / MiB), workerd: na },
    { metric: `operator: delete ${N} EdgeWorkers, first DELETE to all gone (finalizers removed)`, unit: 's', better: 'info', agent: get((r) => r.deletedS), workerd: na },
    { metric: `operator: peak RSS while deleting ${N} EdgeWorkers`, unit: 'MiB', better: 'info', agent: get((r) => r.operatorMem.delete.peakKiB / MiB), workerd: na },
  ];
}
