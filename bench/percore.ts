import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isolateHostIndex } from '../common/isolate-hosts.js';
import type { ActorCtx } from './actors.js';
import { agentMetricSums, startAgent, writeWorkerDir, type Agent, type AgentWorker } from './agent.js';
import { cpuDelta, maybePinned, descendants, expandCpuList, readAllProcStats, readCpuStat, readThreadTicks, tasksetMissing, threadSplit, ticksPerSecond, treeAffinity, treeTicks, type Affinity, type CpuTicks, type ProcStat } from './cpu.js';
import { expectBody, httpRequest } from './http.js';
import { freePort, Proc, waitUntil } from './procs.js';
import { runLoadApart, type LoadResult, type LoadSpec } from './load.js';
import { NOT_APPLICABLE, type Cell, type Row } from './report.js';
import { capnpConfig, startWorkerd, type Workerd } from './workerd.js';
import { HELLO_BODY, HELLO_SOURCE, JSON_REPLY, JSON_REQUEST, JSON_SOURCE } from './workloads.js';

// Issue 19's "measure per core, not per box" (BENCH_ONLY=percore): the server under test
// pinned to one core with taskset, the load generator to the other, for the agent and for
// workerd alike; req/s, p50/p99 and requests per CPU-second of the server's whole process
// tree (utime + stime from /proc, read across exactly the measured window). Then the
// agent unpinned with 1 and with 2 isolate hosts: how it scales on this machine.

const log = (msg: string): void => { process.stderr.write(`${msg}\n`); };

/** The context bench/run.ts hands a phase that runs both peers: the actors phase's. */
export type PercoreCtx = ActorCtx;

interface Script { key: 'hello' | 'json'; label: string; host: string; method: 'GET' | 'POST'; body?: string; reply: string }
const SCRIPTS: Script[] = [
  { key: 'hello', label: 'hello-world (GET)', host: 'hello.bench', method: 'GET', reply: HELLO_BODY },
  { key: 'json', label: `JSON transform (POST ${JSON_REQUEST.length} B)`, host: 'json.bench', method: 'POST', body: JSON_REQUEST, reply: JSON_REPLY },
];

/** One measured load and what the server's process tree spent on it. */
export interface Measured {
  /** The load, or several at once combined (combineLoads). */
  load: LoadResult;
  /** The loads run at once, when there were several. */
  parts?: LoadResult[];
  connections: number;
  /** CPU seconds of the server's whole tree (all processes, all threads) in the measured window. */
  serverCpuS: number;
  /** Seconds from the window's opening to the load's result. */
  wallS: number;
  /** serverCpuS / wallS: how many cores the server kept busy. */
  coresUsed: number;
  /** Requests answered per CPU-second of the server. */
  perCpuS: number;
  /** Each process's share of serverCpuS (comm and pid), largest first. */
  byProcess: { pid: number; comm: string; cpuS: number }[];
  /** CPU seconds by process role (the server's own process, or a child) and thread name, largest first. */
  byThread: { what: string; cpuS: number }[];
  /** Where each of the tree's processes may run, read at the end of the window. */
  affinity: Affinity[];
  /** The load generator's CPU seconds / its measured seconds, where known. */
  loadgenBusy?: number;
  /**
   * The server's CPUs (pinned) or all CPUs (unpinned) in the window, in cores: processes
   * other than the server (and, unpinned, the load generator: the machine is shared),
   * interrupts (softirq: loopback TCP of both ends, charged to no process), and steal.
   */
  otherCores: number;
  irqCores: number;
  stealCores: number;
}

const ticksOf = (p: ProcStat): number => p.utime + p.stime + p.cutime + p.cstime;

/** Several loads run at once as one: requests and req/s summed, the worst p50 and p99. */
export function combineLoads(loads: readonly LoadResult[]): LoadResult {
  const [first, ...rest] = loads;
  if (!first) throw new Error('no load to combine');
  if (rest.length === 0) return first;
  const sum = (f: (l: LoadResult) => number): number => loads.reduce((a, l) => a + f(l), 0);
  const cpu = loads.every((l) => l.loadgenCpuS !== undefined) ? { loadgenCpuS: sum((l) => l.loadgenCpuS ?? 0) } : {};
  return {
    tool: first.tool, requests: sum((l) => l.requests), durationS: Math.max(...loads.map((l) => l.durationS)), rps: sum((l) => l.rps),
    p50Ms: Math.max(...loads.map((l) => l.p50Ms)), p99Ms: Math.max(...loads.map((l) => l.p99Ms)), errors: sum((l) => l.errors), non2xx: sum((l) => l.non2xx), ...cpu,
  };
}

/**
 * `specs` at once (each a warm-up, then its measured load, in a load generator process of its
 * own), with the server tree's CPU read when the first measured window opens and when the
 * last load has answered.
 */
async function measure(ctx: PercoreCtx, what: string, pid: number, specs: LoadSpec[], serverCpus: string | undefined, tmpDir: string): Promise<Measured> {
  let before: ProcStat[] = [];
  let cpusBefore = new Map<number, CpuTicks>();
  let threadsBefore = new Map<string, { ticks: number }>();
  let t0 = 0;
  const onStart = (): void => {
    if (t0 !== 0) return;
    before = descendants(readAllProcStats(), pid);
    threadsBefore = readThreadTicks(before.map((p) => p.pid));
    cpusBefore = readCpuStat();
    t0 = performance.now();
  };
  const loads = await Promise.all(specs.map((spec) => runLoadApart(ctx.tool, spec, ctx.cfg.warmupS, tmpDir, onStart)));
  const load = combineLoads(loads);
  const spec = { connections: specs.reduce((a, x) => a + x.connections, 0), cpus: specs[0]?.cpus };
  const after = descendants(readAllProcStats(), pid);
  const threadsAfter = readThreadTicks(after.map((p) => p.pid));
  const cpusAfter = readCpuStat();
  const wallS = (performance.now() - t0) / 1000;
  const affinity = treeAffinity(pid);
  if (after.length === 0) throw new Error(`${what}: the server (pid ${pid}) is gone`);
  const bad = load.non2xx + load.errors;
  if (bad > load.requests * 0.001) throw new Error(`${what}: ${load.non2xx} non-2xx and ${load.errors} socket errors in ${load.requests} requests`);
  const hz = ticksPerSecond();
  const serverCpuS = (treeTicks(after) - treeTicks(before)) / hz;
  const was = new Map(before.map((p) => [p.pid, ticksOf(p)]));
  const byProcess = after.map((p) => ({ pid: p.pid, comm: p.comm, cpuS: (ticksOf(p) - (was.get(p.pid) ?? 0)) / hz })).sort((a, b) => b.cpuS - a.cpuS);
  // Pinned: what else ran on the server's core. Unpinned: on any core, less the load generator.
  const cores = cpuDelta(cpusBefore, cpusAfter, serverCpus !== undefined ? expandCpuList(serverCpus) : [...cpusAfter.keys()]);
  const others = cores.busy / hz - serverCpuS - (serverCpus === undefined ? load.loadgenCpuS ?? 0 : 0);
  const m: Measured = {
    load, ...(loads.length > 1 ? { parts: loads } : {}), connections: spec.connections, serverCpuS, wallS, coresUsed: serverCpuS / wallS,
    perCpuS: serverCpuS > 0 ? load.requests / serverCpuS : NaN, byProcess, affinity,
    byThread: threadSplit(threadsBefore, threadsAfter, (p) => (p === pid ? 'server' : `child ${p}`)).map((t) => ({ what: t.what, cpuS: t.ticks / hz })),
    ...(load.loadgenCpuS !== undefined ? { loadgenBusy: load.loadgenCpuS / load.durationS } : {}),
    otherCores: Math.max(0, others) / wallS, irqCores: cores.irq / hz / wallS, stealCores: cores.steal / hz / wallS,
  };
  const split = byProcess.filter((p) => p.cpuS >= 0.01).map((p) => `${p.comm}[${p.pid}] ${p.cpuS.toFixed(2)}`).join(', ');
  const threads = m.byThread.slice(0, 6).map((t) => `${t.what} ${t.cpuS.toFixed(2)}`).join(', ');
  log(`  ${what}, ${spec.connections} conn: ${Math.round(load.rps)} req/s, p50 ${load.p50Ms.toFixed(2)} ms, p99 ${load.p99Ms.toFixed(2)} ms; server ${serverCpuS.toFixed(2)} CPU-s in ${wallS.toFixed(1)} s (${m.coresUsed.toFixed(2)} cores: ${split}), ${Math.round(m.perCpuS)} req/CPU-s${m.loadgenBusy !== undefined ? `; load generator ${Math.round(m.loadgenBusy * 100)} % of a core` : ''}; busiest threads (CPU-s): ${threads}; other processes ${m.otherCores.toFixed(2)} cores, irq/softirq ${m.irqCores.toFixed(2)}, steal ${m.stealCores.toFixed(2)} ${serverCpus !== undefined ? `on CPU ${serverCpus}` : 'on all CPUs'}`);
  if (serverCpus !== undefined && m.otherCores + m.stealCores > 0.1) {
    ctx.warn(`percore ${what}, ${spec.connections} connections: CPU ${serverCpus} spent ${Math.round((m.otherCores + m.stealCores) * 100)} % of the window on other processes or steal, not the server: its figures are low by about that much`);
  }
  if (serverCpus === undefined && m.otherCores > 0.2) {
    ctx.warn(`percore ${what}: other processes kept ${m.otherCores.toFixed(2)} cores busy beside the agent and the load generator: the unpinned figures are noisy`);
  }
  if (spec.cpus !== undefined && m.loadgenBusy !== undefined && m.loadgenBusy > 0.9) {
    ctx.warn(`percore ${what}, ${spec.connections} connections: the load generator kept its core ${Math.round(m.loadgenBusy * 100)} % busy, so req/s may be the client's limit, not the server's (requests per CPU-second still holds)`);
  }
  return m;
}

/** Throws unless every process and thread of the tree may run only on `cpus`; logs the list. */
function checkPinned(what: string, affinity: Affinity[], cpus: string): void {
  log(`  ${what} affinity: ${affinity.map((a) => `${a.comm}[${a.pid}] Cpus_allowed_list ${a.cpus} (${a.threads} threads${a.threadsElsewhere ? `, ${a.threadsElsewhere} elsewhere` : ''})`).join('; ')}`);
  const off = affinity.filter((a) => a.cpus !== cpus || a.threadsElsewhere > 0);
  if (off.length) throw new Error(`${what}: not all pinned to CPU ${cpus}: ${off.map((a) => `${a.comm}[${a.pid}] ${a.cpus}, ${a.threadsElsewhere} threads elsewhere`).join('; ')}`);
}

interface Server { pid: number; target(s: Script): { port: number; host?: string }; stop(): Promise<void>; afterLoads?(): Promise<void> }
type Runs = Record<Script['key'], { tput: Measured; p99?: Measured }>;

/** Both scripts against one server: `connections` (and, when given, `p99Connections`), each a warm-up then a measured window. */
async function runServer(ctx: PercoreCtx, what: string, server: Server, loadCpus: string | undefined, serverCpus: string | undefined, p99Connections: number | undefined, tmpDir: string): Promise<Runs> {
  const out: Partial<Runs> = {};
  for (const s of SCRIPTS) {
    const t = server.target(s);
    const first = await httpRequest({ port: t.port, host: t.host, method: s.method, body: s.body });
    expectBody(`${what} ${s.key}`, first, s.reply);
    const spec: LoadSpec = {
      port: t.port, host: t.host, method: s.method, body: s.body, connections: ctx.cfg.percoreConnections, durationS: ctx.cfg.durationS,
      threads: loadCpus === undefined ? ctx.cfg.threads : 1, cpus: loadCpus,
    };
    const tput = await measure(ctx, `${what} ${s.key}`, server.pid, [spec], serverCpus, tmpDir);
    if (serverCpus !== undefined) checkPinned(`${what} ${s.key}`, tput.affinity, serverCpus);
    const p99 = p99Connections === undefined ? undefined : await measure(ctx, `${what} ${s.key}`, server.pid, [{ ...spec, connections: p99Connections }], serverCpus, tmpDir);
    const after = await httpRequest({ port: t.port, host: t.host, method: s.method, body: s.body });
    expectBody(`${what} ${s.key} after load`, after, s.reply);
    out[s.key] = { tput, ...(p99 ? { p99 } : {}) };
  }
  await server.afterLoads?.();
  return out as Runs;
}

/**
 * A namespace per script, chosen so that with `hosts` isolate hosts they land on different
 * ones (the agent places a namespace's isolates on one host: FNV-1a(namespace) mod N).
 */
export function spreadNamespaces(keys: readonly string[], hosts: number): Map<string, string> {
  const out = new Map<string, string>();
  const used = new Set<number>();
  let i = 0;
  for (const key of keys) {
    for (;; i++) {
      const ns = `bench-${i}`;
      const host = isolateHostIndex(ns, hosts);
      if (used.has(host) && used.size < hosts) continue;
      used.add(host);
      out.set(key, ns);
      i++;
      break;
    }
  }
  return out;
}

async function agentServer(ctx: PercoreCtx, d: string, name: string, cpus: string | undefined, isolateHosts: number | undefined): Promise<Server> {
  const namespaces = spreadNamespaces(SCRIPTS.map((s) => s.key), Math.max(2, ...ctx.cfg.percoreScaleHosts));
  const workers: AgentWorker[] = SCRIPTS.map((s) => ({
    name: s.key, namespace: namespaces.get(s.key), host: s.host, source: s.key === 'hello' ? HELLO_SOURCE : JSON_SOURCE, minWarmIsolates: ctx.cfg.agentWarmIsolates,
  }));
  writeWorkerDir(join(d, 'workers'), workers);
  const a: Agent = await startAgent(join(d, 'workers'), join(d, 'agent.log'), ctx.cfg.readyTimeoutMs, name, {
    ...(cpus !== undefined ? { cpus } : {}), ...(isolateHosts !== undefined ? { isolateHosts } : {}), extraArgs: ctx.cfg.percoreAgentArgs,
  });
  const afterLoads = async (): Promise<void> => {
    // The agent as shipped contains tenants: a load that trips a limit moves the namespace to
    // the low-priority isolate host (docs/isolate-hosts.md), which the figures then include.
    const m = await agentMetricSums(a.adminPort);
    if ((m.edge_cordons_total ?? 0) > 0) ctx.warn(`percore ${name}: the agent cordoned a namespace ${m.edge_cordons_total} time(s) during the loads (an isolate hit its CPU limit or went over its CPU share): later figures ran in the nice-19 cordon host`);
  };
  return { pid: a.proc.pid, target: (s) => ({ port: a.port, host: s.host }), stop: () => a.proc.stop(), afterLoads };
}

async function workerdServer(ctx: PercoreCtx, d: string, cpus: string): Promise<Server> {
  const config = capnpConfig(
    [{ name: 'hello', source: HELLO_SOURCE }, { name: 'json', source: JSON_SOURCE }],
    [{ name: 'hello', service: 'hello' }, { name: 'json', service: 'json' }],
  );
  const w: Workerd = await startWorkerd(ctx.workerd.bin ?? '', join(d, 'config.capnp'), config, ['hello', 'json'], join(d, 'workerd.log'), 60_000, 'workerd (pinned)', [], cpus);
  return { pid: w.proc.pid, target: (s) => ({ port: w.ports.get(s.key) ?? 0, host: s.host }), stop: () => w.proc.stop() };
}

const RELAY_FLOOR = join(dirname(fileURLToPath(import.meta.url)), 'relay-floor.ts');

type FloorRole = 'front' | 'frames' | 'single';

/**
 * bench/relay-floor.ts pinned to `cpus`: the agent's shape with none of its work (`front`:
 * an HTTP relay to a child process), the same with compact frames between the two
 * (`frames`), or the same isolate call in one process (`single`).
 */
async function relayFloorServer(d: string, cpus: string, role: FloorRole): Promise<Server> {
  const port = await freePort();
  const [cmd, args] = maybePinned(cpus, process.execPath, [...process.execArgv, RELAY_FLOOR, role, String(port), role === 'single' ? '-' : join(d, 'back.sock')]);
  const proc = new Proc(`relay floor (${role}, pinned)`, cmd, args, { logFile: join(d, 'relay-floor.log') });
  try {
    await waitUntil('the relay floor to answer', async () => (await httpRequest({ port, host: 'hello.bench' })).status === 200, 60_000, proc);
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return { pid: proc.pid, target: (s) => ({ port, host: s.host }), stop: () => proc.stop() };
}

type Outcome<T> = { ok: T } | { cell: Cell };

async function guarded<T>(side: { down?: string; skip?: string }, what: string, fn: () => Promise<T>): Promise<Outcome<T>> {
  if (side.skip) return { cell: { skipped: side.skip } };
  if (side.down) return { cell: { error: side.down } };
  try {
    return { ok: await fn() };
  } catch (err) {
    log(`  ${what}: FAILED: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
    return { cell: { error: err instanceof Error ? err.message : String(err) } };
  }
}

const rawOf = <T>(o: Outcome<T>): unknown => ('ok' in o ? o.ok : o.cell);

export async function percorePhase(ctx: PercoreCtx): Promise<Row[]> {
  const { cfg } = ctx;
  const sc = cfg.percoreServerCpus;
  const lc = cfg.percoreLoadCpus;
  log(`[percore] server pinned to CPU ${sc}, ${ctx.tool} on CPU ${lc} in a process of its own; ${cfg.percoreConnections} connections (req/s, p50, p99, CPU) and ${cfg.percoreP99Connections} (p99); ${cfg.warmupS} s warm-up + ${cfg.durationS} s measured each; then the agent unpinned with --isolate-hosts ${cfg.percoreScaleHosts.join(' and ') || '(none)'}`);
  const noTaskset = tasksetMissing();
  const pinnedSide = (side: { down?: string; skip?: string }): { down?: string; skip?: string } => (noTaskset && !side.skip ? { down: noTaskset } : side);
  const agent = await guarded(pinnedSide(ctx.agent), 'agent (pinned)', async () => {
    const s = await agentServer(ctx, ctx.dir('agent-percore'), 'agent (pinned)', sc, cfg.percoreAgentHosts);
    try { return await runServer(ctx, 'agent (pinned)', s, lc, sc, cfg.percoreP99Connections, ctx.dir('agent-percore-load')); } finally { await s.stop(); }
  });
  const workerd = await guarded(pinnedSide(ctx.workerd), 'workerd (pinned)', async () => {
    const s = await workerdServer(ctx, ctx.dir('workerd-percore'), sc);
    try { return await runServer(ctx, 'workerd (pinned)', s, lc, sc, cfg.percoreP99Connections, ctx.dir('workerd-percore-load')); } finally { await s.stop(); }
  });
  const floorOf = (role: FloorRole) => guarded(pinnedSide({}), `relay floor (${role}, pinned)`, async () => {
    const s = await relayFloorServer(ctx.dir(`relay-floor-${role}`), sc, role);
    try { return await runServer(ctx, `relay floor (${role}, pinned)`, s, lc, sc, undefined, ctx.dir(`relay-floor-${role}-load`)); } finally { await s.stop(); }
  });
  const floor = await floorOf('front');
  const frames = await floorOf('frames');
  const single = await floorOf('single');
  const scale = new Map<number, Outcome<Runs & { both: Measured }>>();
  for (const hosts of cfg.percoreScaleHosts) {
    const what = `agent (unpinned, ${hosts} hosts)`;
    scale.set(hosts, await guarded(ctx.agent, what, async () => {
      const s = await agentServer(ctx, ctx.dir(`agent-scale-${hosts}`), what, undefined, hosts);
      try {
        const tmpDir = ctx.dir(`agent-scale-${hosts}-load`);
        const runs = await runServer(ctx, what, s, undefined, undefined, undefined, tmpDir);
        // Both scripts at once, from two namespaces (on two hosts when there are two), half the connections each.
        const half = Math.max(1, Math.round(cfg.percoreConnections / 2));
        const specs = SCRIPTS.map((x): LoadSpec => {
          const t = s.target(x);
          return { port: t.port, host: t.host, method: x.method, body: x.body, connections: half, durationS: cfg.durationS, threads: 1 };
        });
        const both = await measure(ctx, `${what} hello + json at once`, s.pid, specs, undefined, tmpDir);
        return { ...runs, both };
      } finally { await s.stop(); }
    }));
  }
  ctx.raw.percore = {
    serverCpus: sc, loadCpus: lc, agentIsolateHosts: cfg.percoreAgentHosts ?? 'default', agentExtraArgs: cfg.percoreAgentArgs, clockTicksPerSecond: ticksPerSecond(),
    agent: rawOf(agent), workerd: rawOf(workerd), relayFloor: rawOf(floor), frameRelayFloor: rawOf(frames), oneProcessFloor: rawOf(single),
    scale: Object.fromEntries([...scale].map(([h, o]) => [String(h), rawOf(o)])),
  };

  const cell = (o: Outcome<Runs>, key: Script['key'], f: (r: Runs[Script['key']]) => number | undefined): Cell => {
    if ('cell' in o) return o.cell;
    const v = f(o.ok[key]);
    return v === undefined ? { error: 'not measured' } : { value: v };
  };
  const bothCell = (o: Outcome<{ both: Measured }>, f: (m: Measured) => number): Cell => ('cell' in o ? o.cell : { value: f(o.ok.both) });
  const rows: Row[] = [];
  const c = cfg.percoreConnections;
  const pin = `pinned (server CPU ${sc}, load CPU ${lc})`;
  for (const s of SCRIPTS) {
    rows.push({
      metric: `${pin}, ${s.label}, ${c} connections: throughput`, unit: 'req/s', better: 'higher',
      agent: cell(agent, s.key, (r) => r.tput.load.rps), workerd: cell(workerd, s.key, (r) => r.tput.load.rps),
      floor: { text: 'ratio >= 1.0', check: (_a, ratio) => ratio !== undefined && ratio >= 1.0 },
    });
    rows.push({
      metric: `${pin}, ${s.label}, ${c} connections: requests per server CPU-second (whole process tree)`, unit: 'per CPU-s', better: 'higher',
      agent: cell(agent, s.key, (r) => r.tput.perCpuS), workerd: cell(workerd, s.key, (r) => r.tput.perCpuS),
    });
    rows.push({
      metric: `${pin}, ${s.label}, ${c} connections: requests per server CPU-second of the shape's floor (bench/relay-floor.ts: a bare Node relay to one isolated-vm call, none of the agent's work) in the agent column`, unit: 'per CPU-s', better: 'higher',
      agent: cell(floor, s.key, (r) => r.tput.perCpuS), workerd: cell(workerd, s.key, (r) => r.tput.perCpuS),
    });
    rows.push({
      metric: `${pin}, ${s.label}, ${c} connections: requests per server CPU-second of the shape's floor with compact frames instead of HTTP between the processes (relay-floor.ts frames: the front parses HTTP once, the child has no HTTP stack) in the agent column`, unit: 'per CPU-s', better: 'higher',
      agent: cell(frames, s.key, (r) => r.tput.perCpuS), workerd: cell(workerd, s.key, (r) => r.tput.perCpuS),
    });
    rows.push({
      metric: `${pin}, ${s.label}, ${c} connections: requests per server CPU-second of the same isolate call answered by one process (relay-floor.ts single: no process boundary, none of the agent's work) in the agent column`, unit: 'per CPU-s', better: 'higher',
      agent: cell(single, s.key, (r) => r.tput.perCpuS), workerd: cell(workerd, s.key, (r) => r.tput.perCpuS),
    });
    rows.push({
      metric: `${pin}, ${s.label}, ${c} connections: server CPU used`, unit: 'cores', better: 'info',
      agent: cell(agent, s.key, (r) => r.tput.coresUsed), workerd: cell(workerd, s.key, (r) => r.tput.coresUsed),
    });
    rows.push({
      metric: `${pin}, ${s.label}, ${c} connections: CPU ${sc} busy with other processes or stolen (noise)`, unit: 'cores', better: 'info',
      agent: cell(agent, s.key, (r) => r.tput.otherCores + r.tput.stealCores), workerd: cell(workerd, s.key, (r) => r.tput.otherCores + r.tput.stealCores),
    });
    rows.push({
      metric: `${pin}, ${s.label}, ${c} connections: latency p50`, unit: 'ms', better: 'lower',
      agent: cell(agent, s.key, (r) => r.tput.load.p50Ms), workerd: cell(workerd, s.key, (r) => r.tput.load.p50Ms),
    });
    rows.push({
      metric: `${pin}, ${s.label}, ${cfg.percoreP99Connections} connections: latency p99`, unit: 'ms', better: 'lower',
      agent: cell(agent, s.key, (r) => r.p99?.load.p99Ms), workerd: cell(workerd, s.key, (r) => r.p99?.load.p99Ms),
      floor: { text: 'agent p99 < 10 ms', check: (a) => a !== undefined && a < 10 },
    });
  }
  const na: Cell = { skipped: NOT_APPLICABLE };
  for (const [hosts, o] of scale) {
    for (const s of SCRIPTS) {
      const head = `agent unpinned, --isolate-hosts ${hosts}, ${s.label}, ${c} connections`;
      rows.push({ metric: `${head}: throughput`, unit: 'req/s', better: 'info', agent: cell(o, s.key, (r) => r.tput.load.rps), workerd: na });
      rows.push({ metric: `${head}: agent CPU used`, unit: 'cores', better: 'info', agent: cell(o, s.key, (r) => r.tput.coresUsed), workerd: na });
      rows.push({ metric: `${head}: requests per agent CPU-second`, unit: 'per CPU-s', better: 'info', agent: cell(o, s.key, (r) => r.tput.perCpuS), workerd: na });
    }
    const half = Math.max(1, Math.round(c / 2));
    const head = `agent unpinned, --isolate-hosts ${hosts}, hello-world and JSON at once from two namespaces (${hosts > 1 ? 'two hosts' : 'one host'}), ${half} + ${half} connections`;
    rows.push({ metric: `${head}: throughput (both)`, unit: 'req/s', better: 'info', agent: bothCell(o, (m) => m.load.rps), workerd: na });
    rows.push({ metric: `${head}: agent CPU used`, unit: 'cores', better: 'info', agent: bothCell(o, (m) => m.coresUsed), workerd: na });
    rows.push({ metric: `${head}: requests per agent CPU-second`, unit: 'per CPU-s', better: 'info', agent: bothCell(o, (m) => m.perCpuS), workerd: na });
  }
  return rows;
}
