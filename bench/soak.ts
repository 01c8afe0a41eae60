import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, freemem, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentMetricSums, agentUnavailable, buildForBench, startAgent, type Agent } from './agent.js';
import { httpRequest } from './http.js';
import { cpuTimes, freePort, killChildrenOnSignals, Proc, processCpuTicks, processTree, sleep, type TreeProcess } from './procs.js';
import { writeResults } from './report.js';
import type { AttackerSpec, AttackersConfig, AttackersResult, HealthyConfig, HealthyResult, Outcomes, SlowConn } from './soak-load.js';
import { egressTargets, HEALTHY_NAME, hostOf, namespaceOf, soakManifests, soakWorkers, type AttackKind, type SoakWorker } from './soak-workers.js';

// `BENCH_ONLY=soak npm run bench` or `npm run bench:soak`: issue 12's soak. Every hostile
// tenant hammers one `edge agent` (directory mode, started as users start it) for several
// minutes while a healthy worker on the same agent is measured at a steady rate. Floors:
// the agent process never dies or restarts; the healthy worker's p99 < 50 ms and none of
// its requests fail; the RSS of the agent and all its descendants stays under the sum of
// the tenants' memory limits plus a fixed base. See bench/README.md.

const log = (msg: string): void => { process.stderr.write(`${msg}\n`); };
const BENCH = dirname(fileURLToPath(import.meta.url));
const ROOT = join(BENCH, '..');
const MiB = 1024;
const CLK_TCK = 100;

export const HEALTHY_P99_FLOOR_MS = 50;

export interface SoakConfig {
  quick: boolean;
  durationS: number;
  healthyRps: number;
  healthyTimeoutMs: number;
  /** `edge agent --max-isolates-per-worker`: with memoryMiB, what bounds a tenant's memory. */
  maxIsolates: number;
  /** The fixed part of the RSS bound. */
  baseMiB: number;
  /** Above this the soak SIGKILLs the agent, so a bomb cannot take the machine down (0: twice the bound, at most 40 % of free memory). */
  safetyMiB: number;
  sampleMs: number;
  restart: boolean;
  maxRestarts: number;
  sinkMiB: number;
  concurrency: number;
  slowConns: number;
  wsConns: number;
  readyTimeoutMs: number;
  /** Seconds of the healthy client alone before the attack (0: none). */
  controlS: number;
  keepTmp: boolean;
  /** SOAK_ATTACKS: only these attack loops (every worker is still deployed); undefined = all. */
  attacks?: string[];
}

function num(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min || v > max) throw new Error(`${name}=${raw}: expected a number from ${min} to ${max}`);
  return v;
}

export function loadSoakConfig(): SoakConfig {
  const quick = process.env.BENCH_QUICK === '1' || process.env.BENCH_QUICK === 'true';
  const maxIsolates = num('SOAK_MAX_ISOLATES', 4, 1, 64);
  const baseMiB = num('SOAK_RSS_BASE_MIB', 512, 64, 65_536);
  return {
    quick,
    durationS: num('SOAK_DURATION_S', quick ? 30 : 180, 5, 3600),
    healthyRps: num('SOAK_HEALTHY_RPS', 200, 1, 5000),
    healthyTimeoutMs: num('SOAK_HEALTHY_TIMEOUT_S', 10, 1, 120) * 1000,
    maxIsolates,
    baseMiB,
    safetyMiB: num('SOAK_SAFETY_RSS_MIB', 0, 0, 1_000_000),
    sampleMs: num('SOAK_SAMPLE_MS', 250, 50, 5000),
    restart: process.env.SOAK_RESTART !== '0',
    maxRestarts: num('SOAK_MAX_RESTARTS', 20, 0, 1000),
    sinkMiB: num('SOAK_SINK_MIB', 8, 1, 32),
    concurrency: num('SOAK_ATTACK_CONCURRENCY', 2, 1, 64),
    slowConns: num('SOAK_SLOW_CONNS', 16, 0, 1000),
    wsConns: num('SOAK_WS_CONNS', 8, 0, 1000),
    readyTimeoutMs: num('BENCH_READY_TIMEOUT_S', 240, 5, 1800) * 1000,
    controlS: num('SOAK_CONTROL_S', quick ? 5 : 15, 0, 600),
    keepTmp: process.env.BENCH_KEEP_TMP === '1',
    ...(process.env.SOAK_ATTACKS?.trim() ? { attacks: process.env.SOAK_ATTACKS.split(',').map((x) => x.trim()).filter(Boolean) } : {}),
  };
}

/** Which load loop plays which hostile worker, and how many at once. */
function attackers(cfg: SoakConfig): (AttackerSpec & { worker: string })[] {
  const c = cfg.concurrency;
  const list: [string, AttackKind, string, number][] = [
    ['cpu', 'cpu', 'cpu', c],
    ['freeze', 'freeze', 'freeze', c],
    ['memory', 'memory', 'memory', c],
    ['wasm', 'wasm', 'wasm', c],
    ['timers', 'timers', 'timers', c],
    ['websocket', 'websocket', 'websocket', cfg.wsConns],
    ['subrequests', 'subrequests', 'subrequests', c],
    ['egress', 'egress', 'egress', 1],
    ['slow-body', 'slow-body', 'slow', cfg.slowConns],
    ['slow-header', 'slow-header', 'slow', cfg.slowConns],
  ];
  // `none`: the healthy client alone, the control run (what this machine gives without attacks).
  const picked = cfg.attacks?.filter((a) => a !== 'none') ?? list.map(([name]) => name);
  for (const p of picked) {
    if (!list.some(([name]) => name === p)) throw new Error(`SOAK_ATTACKS: unknown attack "${p}" (expected none or some of ${list.map(([name]) => name).join(',')})`);
  }
  return list.filter(([name, , , n]) => n > 0 && picked.includes(name))
    .map(([name, kind, worker, concurrency]) => ({ name, kind, worker, host: hostOf(worker), concurrency }));
}

// ---------------------------------------------------------------- watching the agent

interface Death { atS: number; pid: number; exit: string; cause: string; safetyKill: boolean; restartedInS?: number; restartError?: string }

interface Watch {
  t0: number;
  agent: Agent;
  generation: number;
  deaths: Death[];
  rssMaxKiB: number;
  rssMaxAtS: number;
  /** [seconds, MiB of the whole tree, processes]. */
  timeline: [number, number, number][];
  /** Every process seen in the agent's tree, by pid. */
  seen: Map<number, { comm: string; ppid: number; firstS: number; lastS: number; cpuTicks: number; maxRssKiB: number; generation: number }>;
  safetyKilled: boolean;
  stopped: boolean;
}

const FATAL = /Check failed|FATAL|Fatal error|Fatal JavaScript|Aborted|Segmentation fault|out of memory|heap limit|uncaught|unhandled/i;

/** The lines of an agent log that say why it died (V8 fatal errors, uncaught exceptions), else its tail. */
function deathCause(logFile: string): string {
  let text = '';
  try { text = readFileSync(logFile, 'utf8'); } catch { return 'no log'; }
  const lines = text.split('\n').filter(Boolean);
  const fatal = lines.filter((l) => FATAL.test(l) && !l.startsWith('{"level":"warn"'));
  const pick = (fatal.length ? fatal.slice(0, 3) : lines.slice(-3)).map((l) => l.trim().slice(0, 300));
  return pick.join(' / ');
}

function sample(w: Watch, cfg: SoakConfig): void {
  const tree = processTree(w.agent.proc.pid);
  const t = (performance.now() - w.t0) / 1000;
  if (!tree.length) return;
  const kib = tree.reduce((a, p) => a + p.rssKiB, 0);
  w.timeline.push([Math.round(t * 100) / 100, Math.round((kib / MiB) * 10) / 10, tree.length]);
  if (kib > w.rssMaxKiB) { w.rssMaxKiB = kib; w.rssMaxAtS = t; }
  for (const p of tree) {
    const s = w.seen.get(p.pid);
    if (s) { s.lastS = t; s.cpuTicks = p.cpuTicks; s.maxRssKiB = Math.max(s.maxRssKiB, p.rssKiB); }
    else w.seen.set(p.pid, { comm: p.comm, ppid: p.ppid, firstS: t, lastS: t, cpuTicks: p.cpuTicks, maxRssKiB: p.rssKiB, generation: w.generation });
  }
  if (kib / MiB > cfg.safetyMiB && !w.safetyKilled) {
    w.safetyKilled = true;
    log(`  soak: agent tree RSS ${(kib / MiB).toFixed(0)} MiB is over the safety limit ${cfg.safetyMiB} MiB: SIGKILL`);
    killTree(w.agent.proc, tree);
  }
}

function killTree(proc: Proc, tree: TreeProcess[]): void {
  proc.killNow();
  for (const p of tree) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }
}

/** Follows the agent: records a death (and why), and restarts it on the same ports while the soak runs. */
async function followAgent(w: Watch, cfg: SoakConfig, workersDir: string, tmp: string, extraArgs: string[], endAt: number): Promise<void> {
  while (!w.stopped) {
    const proc = w.agent.proc;
    await proc.wait();
    // The soak's own stop at the end is no death; a safety kill in the last sample is one.
    if (w.stopped && !w.safetyKilled) return;
    const atS = (performance.now() - w.t0) / 1000;
    const sig = proc.child.signalCode;
    const death: Death = {
      atS: Math.round(atS * 100) / 100, pid: proc.pid, exit: sig ? sig : `exit ${String(proc.child.exitCode)}`,
      cause: w.safetyKilled ? `killed by the soak: RSS over the safety limit of ${cfg.safetyMiB} MiB` : deathCause(proc.logFile),
      safetyKill: w.safetyKilled,
    };
    w.deaths.push(death);
    log(`  soak: the agent (pid ${proc.pid}) died at ${atS.toFixed(1)} s (${death.exit}): ${death.cause.slice(0, 300)}`);
    // Whatever it left behind (a host process that outlived it) goes too.
    for (const [pid, s] of w.seen) if (s.generation === w.generation) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    if (w.stopped || !cfg.restart || w.deaths.length > cfg.maxRestarts || performance.now() > endAt - 3000) return;
    const t = performance.now();
    try {
      w.generation++;
      w.safetyKilled = false;
      w.agent = await startAgent(workersDir, join(tmp, `agent-${w.generation}.log`), 60_000, `agent-${w.generation}`,
        { port: w.agent.port, adminPort: w.agent.adminPort, extraArgs });
      death.restartedInS = Math.round((performance.now() - t) / 10) / 100;
      log(`  soak: restarted the agent (pid ${w.agent.proc.pid}) in ${death.restartedInS} s`);
    } catch (err) {
      death.restartError = (err as Error).message.split('\n')[0] ?? String(err);
      log(`  soak: could not restart the agent: ${death.restartError}`);
      return;
    }
  }
}

// ---------------------------------------------------------------- report

const fmtMs = (v: number): string => (Number.isFinite(v) ? (v < 10 ? v.toFixed(2) : v < 1000 ? v.toFixed(1) : Math.round(v).toLocaleString('en-US')) : 'n/a');
const n0 = (v: number): string => Math.round(v).toLocaleString('en-US');
const floorText = (met: boolean | null): string => (met === null ? 'not measured' : met ? '**met**' : '**MISSED**');

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

function topDetail(o: Outcomes, k = 2): string {
  return Object.entries(o.detail).sort((a, b) => b[1] - a[1]).slice(0, k)
    .map(([d, n]) => `${n}x \`${d.replace(/\|/g, '/').replace(/`/g, "'").slice(0, 90)}\``).join('; ');
}

interface Floors { agentAlive: boolean | null; healthyNoFailures: boolean | null; healthyP99: boolean | null; rss: boolean | null }

// ---------------------------------------------------------------- main

export async function soakMain(): Promise<number> {
  const startedAt = new Date();
  const cfg = loadSoakConfig();
  const tmp = mkdtempSync(join(tmpdir(), 'edge-soak-'));
  const why = buildForBench() ?? await agentUnavailable();
  if (why) {
    process.stdout.write(`\n## soak (${startedAt.toISOString()})\n\nERROR: agent unavailable: ${why}\n\n`);
    return 1;
  }
  const [port, adminPort, peerPort, sinkPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const targets = egressTargets({ port, adminPort, peerPort });
  const workers = soakWorkers({ sinkUrl: `http://127.0.0.1:${sinkPort}/sink`, sinkMiB: cfg.sinkMiB, targets });
  const tenantsMiB = workers.reduce((a, w) => a + w.limits.memoryMiB * cfg.maxIsolates, 0);
  const boundMiB = cfg.baseMiB + tenantsMiB;
  // The machine is shared: twice the bound, but never more than 40 % of the memory free now.
  if (!cfg.safetyMiB) cfg.safetyMiB = Math.round(Math.min(2 * boundMiB, (0.4 * freemem()) / 2 ** 20));
  const specs = attackers(cfg);
  const workersDir = join(tmp, 'workers');
  mkdirSync(workersDir, { recursive: true });
  writeFileSync(join(workersDir, 'soak.yaml'), soakManifests(workers));
  const extraArgs = ['--max-isolates-per-worker', String(cfg.maxIsolates), '--peer-listen', `127.0.0.1:${peerPort}`];
  log(`soak: ${cpus().length} CPUs, node ${process.version}, ${cfg.durationS} s${cfg.quick ? ' (quick)' : ''}; healthy ${cfg.healthyRps} req/s; ${specs.length} attack loops on ${workers.length - 1} hostile workers; RSS bound ${boundMiB} MiB (base ${cfg.baseMiB} + tenants ${tenantsMiB}), safety kill at ${cfg.safetyMiB} MiB; logs in ${tmp}`);

  const raw: Record<string, unknown> = {};
  const warnings: string[] = [];
  let agent: Agent;
  try {
    agent = await startAgent(workersDir, join(tmp, 'agent-0.log'), cfg.readyTimeoutMs, 'agent-0', { port, adminPort, extraArgs });
    const first = await httpRequest({ port, host: hostOf(HEALTHY_NAME), timeoutMs: 30_000 });
    if (first.status !== 200 || !first.body.startsWith('{"ok":true')) throw new Error(`the healthy worker answered ${first.status} ${first.body.slice(0, 200)}`);
  } catch (err) {
    process.stdout.write(`\n## soak (${startedAt.toISOString()})\n\nERROR: the agent did not start and serve the healthy worker: ${(err as Error).message}\n\nlogs in ${tmp}\n\n`);
    return 1;
  }
  try {
    const status = await httpRequest({ port: adminPort, path: '/status', timeoutMs: 5000 });
    const j = JSON.parse(status.body) as { workers?: { key: string; state: string; error?: string }[] };
    const notReady = (j.workers ?? []).filter((w) => w.state !== 'ready');
    raw.workersAtStart = j.workers ?? null;
    for (const w of notReady) warnings.push(`worker ${w.key} is not serving (${w.state}: ${w.error ?? ''}): its attack measures the refusal`);
    if (j.workers && j.workers.length < workers.length) warnings.push(`/status lists ${j.workers.length} of ${workers.length} workers`);
  } catch { /* /status may be closed to callers without a credential */ }
  await sleep(2000);
  const idleKiB = processTree(agent.proc.pid).reduce((a, p) => a + p.rssKiB, 0);
  const metricsBefore = await agentMetricSums(adminPort);

  // The load: attackers and the healthy client, each its own process.
  const durationMs = cfg.durationS * 1000;
  const attackCfg: AttackersConfig = {
    role: 'attackers', port, durationMs, out: join(tmp, 'attackers.json'), sinkPort, sinkMiB: cfg.sinkMiB,
    attackers: specs.map(({ name, kind, host, concurrency }) => ({ name, kind, host, concurrency })), egressTargets: Object.keys(targets),
  };
  const healthyCfg: HealthyConfig = {
    role: 'healthy', port, host: hostOf(HEALTHY_NAME), rps: cfg.healthyRps, durationMs, timeoutMs: cfg.healthyTimeoutMs,
    out: join(tmp, 'healthy.json'), samplesOut: join(tmp, 'healthy-samples.json'),
  };
  writeFileSync(join(tmp, 'attackers-config.json'), JSON.stringify(attackCfg));
  writeFileSync(join(tmp, 'healthy-config.json'), JSON.stringify(healthyCfg));

  const child = (name: string, configFile: string): Proc => new Proc(name, process.execPath, ['--import', 'tsx', join(BENCH, 'soak-load.ts'), configFile],
    { logFile: join(tmp, `${name}.log`), cwd: ROOT });
  // The control: the same client on the same agent with no attack, what this machine gives.
  let control: { p50: number; p99: number; max: number; failed: number; sent: number; otherCpuShare: number } | undefined;
  if (cfg.controlS > 0) {
    log(`soak: control, the healthy client alone for ${cfg.controlS} s`);
    const controlCfg: HealthyConfig = { ...healthyCfg, durationMs: cfg.controlS * 1000, out: join(tmp, 'control.json'), samplesOut: join(tmp, 'control-samples.json') };
    writeFileSync(join(tmp, 'control-config.json'), JSON.stringify(controlCfg));
    const c0 = cpuTimes();
    const agentTicks0 = processTree(agent.proc.pid).reduce((a, p) => a + p.cpuTicks, 0);
    const bench0 = process.cpuUsage();
    const proc = child('control', join(tmp, 'control-config.json'));
    let ticks = 0;
    const t = setInterval(() => { ticks = processCpuTicks(proc.pid) ?? ticks; }, 500);
    await proc.wait();
    clearInterval(t);
    const c1 = cpuTimes();
    try {
      const r = JSON.parse(readFileSync(controlCfg.out, 'utf8')) as HealthyResult;
      const ms = (JSON.parse(readFileSync(controlCfg.samplesOut, 'utf8')) as [number, number, number][]).map((x) => x[1]).sort((a, b) => a - b);
      const ours = (processTree(agent.proc.pid).reduce((a, p) => a + p.cpuTicks, 0) - agentTicks0 + ticks) / CLK_TCK + (process.cpuUsage(bench0).user + process.cpuUsage(bench0).system) / 1e6;
      const busyS = (c1.busy - c0.busy) / CLK_TCK;
      control = {
        p50: pct(ms, 50), p99: pct(ms, 99), max: ms[ms.length - 1] ?? NaN, failed: r.non2xx + r.errors + r.badBody, sent: r.sent,
        otherCpuShare: Math.max(0, busyS - ours) / Math.max(0.01, (c1.total - c0.total) / CLK_TCK),
      };
      log(`  control: p50 ${fmtMs(control.p50)} ms, p99 ${fmtMs(control.p99)} ms, ${control.failed} failed; other work ${Math.round(control.otherCpuShare * 100)} % of the machine`);
    } catch (err) { warnings.push(`the control run left no result: ${(err as Error).message}`); }
  }

  const cpu0 = cpuTimes();
  const benchCpu0 = process.cpuUsage();
  const t0 = performance.now();
  const w: Watch = {
    t0, agent, generation: 0, deaths: [], rssMaxKiB: idleKiB, rssMaxAtS: 0, timeline: [], seen: new Map(), safetyKilled: false, stopped: false,
  };
  const endAt = t0 + durationMs;
  const sampler = setInterval(() => { try { sample(w, cfg); } catch (err) { log(`  soak: sampling failed: ${String(err)}`); } }, cfg.sampleMs);
  const following = followAgent(w, cfg, workersDir, tmp, extraArgs, endAt);
  const attackProc = child('attackers', join(tmp, 'attackers-config.json'));
  const healthyProc = child('healthy', join(tmp, 'healthy-config.json'));
  const clientTicks = new Map<number, number>();
  const clientSampler = setInterval(() => {
    for (const p of [attackProc, healthyProc]) {
      const ticks = processCpuTicks(p.pid);
      if (ticks !== undefined) clientTicks.set(p.pid, ticks);
    }
  }, 1000);
  log(`soak: attacking for ${cfg.durationS} s`);
  const progress = setInterval(() => {
    const last = w.timeline[w.timeline.length - 1];
    log(`  ${((performance.now() - t0) / 1000).toFixed(0)} s: agent tree ${last ? `${last[1].toFixed(0)} MiB in ${last[2]} process(es)` : 'not running'}, deaths so far ${w.deaths.length}`);
  }, 15_000);
  const waitChild = async (p: Proc): Promise<number | null> => {
    const timer = setTimeout(() => p.killNow(), durationMs + cfg.healthyTimeoutMs + 60_000 - (performance.now() - t0));
    try { return await p.wait(); } finally { clearTimeout(timer); }
  };
  const [attackExit, healthyExit] = await Promise.all([waitChild(attackProc), waitChild(healthyProc)]);
  clearInterval(progress);
  clearInterval(clientSampler);
  clearInterval(sampler);
  sample(w, cfg);
  const cpu1 = cpuTimes();
  const benchCpu = process.cpuUsage(benchCpu0);
  const elapsedS = (performance.now() - t0) / 1000;
  const finalAgent = w.agent;
  const metricsAfter = finalAgent.proc.running ? await agentMetricSums(adminPort) : {};
  w.stopped = true;
  await sleep(100); // let a safety kill in the last sample be recorded as the death it is
  await finalAgent.proc.stop();
  await following;
  await w.agent.proc.stop(); // a restart that was under way when the soak ended

  const read = <T>(file: string, what: string, exit: number | null): T | undefined => {
    try { return JSON.parse(readFileSync(file, 'utf8')) as T; } catch (err) {
      warnings.push(`the ${what} process left no result (exit ${String(exit)}): ${(err as Error).message}; see its log in the temp dir`);
      return undefined;
    }
  };
  const healthy = read<HealthyResult>(healthyCfg.out, 'healthy client', healthyExit);
  const attack = read<AttackersResult>(attackCfg.out, 'attackers', attackExit);
  let samples: [number, number, number][] = [];
  try { samples = JSON.parse(readFileSync(healthyCfg.samplesOut, 'utf8')) as [number, number, number][]; } catch { /* reported above */ }
  const latencies = samples.map((s) => s[1]).sort((a, b) => a - b);
  const healthyStats = { n: latencies.length, p50: pct(latencies, 50), p99: pct(latencies, 99), p999: pct(latencies, 99.9), max: latencies[latencies.length - 1] ?? NaN };

  // CPU over the attack window: the agent's tree, the load processes, this process, the rest.
  const agentCpuS = [...w.seen.values()].reduce((a, s) => a + s.cpuTicks, 0) / CLK_TCK;
  const clientCpuS = [...clientTicks.values()].reduce((a, t) => a + t, 0) / CLK_TCK;
  const benchCpuS = (benchCpu.user + benchCpu.system) / 1e6;
  const machineBusyS = (cpu1.busy - cpu0.busy) / CLK_TCK;
  const machineTotalS = (cpu1.total - cpu0.total) / CLK_TCK;
  const otherCpuS = Math.max(0, machineBusyS - agentCpuS - clientCpuS - benchCpuS);
  if (otherCpuS / Math.max(1, machineTotalS) > 0.15) warnings.push(`other work on the machine used ${Math.round((100 * otherCpuS) / machineTotalS)} % of it during the soak: latency numbers are noisy`);

  // Descendants of the agent other than the agent itself: today none; isolate host processes later.
  // tsx's esbuild service is a child of an agent run from source (bin/edge.mjs without a
  // current dist/): in the RSS, but not an isolate host.
  const agentPids = new Set([agent.proc.pid, finalAgent.proc.pid, ...w.deaths.map((d) => d.pid)]);
  const descendants = [...w.seen.entries()].filter(([pid, s]) => !agentPids.has(pid) && s.comm !== 'esbuild');
  const helpers = [...w.seen.entries()].filter(([pid, s]) => !agentPids.has(pid) && s.comm === 'esbuild');
  // A descendant that vanished well before its own agent did: a host that crashed or was replaced.
  const descendantsGone = descendants.filter(([, s]) => s.lastS < (w.deaths[s.generation]?.atS ?? elapsedS) - 1);

  const logs = readdirSync(tmp).filter((f) => /^agent-\d+\.log$/.test(f)).map((f) => join(tmp, f));
  const logCounts = new Map<string, number>();
  for (const f of logs) {
    for (const line of readFileSync(f, 'utf8').split('\n')) {
      if (!/\b(warn|warning|error|fatal)\b|Check failed/i.test(line)) continue;
      const key = line.replace(/"(time|ts)":"[^"]*"/g, '').replace(/\d+(\.\d+)?/g, 'N').slice(0, 240);
      logCounts.set(key, (logCounts.get(key) ?? 0) + 1);
    }
  }
  const agentLogged = [...logCounts].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([l, n]) => `${n}x ${l}`);

  const healthyFailed = healthy ? healthy.non2xx + healthy.errors + healthy.badBody : NaN;
  const floors: Floors = {
    agentAlive: w.deaths.length === 0,
    healthyNoFailures: healthy ? healthyFailed === 0 : null,
    healthyP99: latencies.length ? healthyStats.p99 < HEALTHY_P99_FLOOR_MS : null,
    rss: w.rssMaxKiB > 0 ? w.rssMaxKiB / MiB < boundMiB : null,
  };

  // ------------------------------------------------ the tables
  const deathsText = w.deaths.length === 0
    ? `pid ${agent.proc.pid} ran the whole soak, never restarted`
    : `died ${w.deaths.length} time(s)${w.deaths.some((d) => d.safetyKill) ? ` (${w.deaths.filter((d) => d.safetyKill).length} by the soak's safety kill)` : ''}; first at ${w.deaths[0]?.atS.toFixed(1)} s (${w.deaths[0]?.exit}): \`${(w.deaths[0]?.cause ?? '').replace(/\|/g, '/').replace(/`/g, "'").slice(0, 200)}\`; ${cfg.restart ? 'the soak restarted it each time' : 'not restarted (SOAK_RESTART=0)'}`;
  const worst = healthy?.perSecond.slice().sort((a, b) => b.p99 - a.p99)[0];
  const rows: [string, string, string][] = [
    ['agent process', deathsText, `never dies or restarts: ${floorText(floors.agentAlive)}`],
    ['agent descendant processes (isolate hosts, if any)', `${descendants.length === 0 ? 'none' : `${descendants.length} seen (${[...new Set(descendants.map(([, s]) => s.comm))].join(', ')}), ${descendantsGone.length} exited while their agent lived`}${helpers.length ? ` (besides ${helpers.length} esbuild: tsx, the agent runs from source)` : ''}`, 'info'],
    [`healthy requests (${cfg.healthyRps} req/s, keep-alive, open loop)`, healthy ? `${n0(healthy.sent)} sent, ${n0(healthy.ok)} ok, ${n0(healthyFailed)} failed (${healthy.non2xx} non-2xx, ${healthy.errors} errors, ${healthy.badBody} wrong body)` : 'ERROR (no result)', `none fail: ${floorText(floors.healthyNoFailures)}`],
    ['healthy latency p50 / p99 / p99.9 / max (from when each request was due)', latencies.length ? `${fmtMs(healthyStats.p50)} / ${fmtMs(healthyStats.p99)} / ${fmtMs(healthyStats.p999)} / ${fmtMs(healthyStats.max)} ms` : 'ERROR (no samples)', `p99 < ${HEALTHY_P99_FLOOR_MS} ms: ${floorText(floors.healthyP99)}`],
    [`healthy without attacks (control, ${cfg.controlS} s just before): p50 / p99 / max`, control ? `${fmtMs(control.p50)} / ${fmtMs(control.p99)} / ${fmtMs(control.max)} ms, ${control.failed} failed of ${n0(control.sent)}; other work took ${Math.round(control.otherCpuShare * 100)} % of the machine` : 'not run', 'info: what this machine gives'],
    ['healthy, worst second', worst ? `at ${worst.s} s: ${worst.n} requests, p99 ${fmtMs(worst.p99)} ms, max ${fmtMs(worst.max)} ms, ${worst.failed} failed` : 'n/a', 'info'],
    ['healthy client timer lag p99 / max (its own starvation)', healthy ? `${fmtMs(healthy.clientLagMs.p99)} / ${fmtMs(healthy.clientLagMs.max)} ms` : 'n/a', 'info'],
    ['agent + descendants RSS, max (idle before the attack)', `${n0(w.rssMaxKiB / MiB)} MiB at ${w.rssMaxAtS.toFixed(0)} s (idle ${n0(idleKiB / MiB)} MiB)`, `< ${n0(boundMiB)} MiB (base ${cfg.baseMiB} + tenants ${tenantsMiB}): ${floorText(floors.rss)}`],
    ['CPU-seconds: agent tree / load processes / this process / other work', `${agentCpuS.toFixed(1)} / ${clientCpuS.toFixed(1)} / ${benchCpuS.toFixed(1)} / ${otherCpuS.toFixed(1)} of ${machineTotalS.toFixed(0)} available`, 'info'],
  ];
  const lines: string[] = [];
  lines.push(`## soak: ${!specs.length ? 'no attacks (SOAK_ATTACKS=none)' : cfg.attacks ? `attacks ${specs.map((x) => x.name).join(', ')}` : `${specs.length} attack loops`} vs a healthy neighbour on one agent (${startedAt.toISOString()}, ${cpus().length} CPUs, ${cfg.durationS} s${cfg.quick ? ', quick mode' : ''})`, '');
  lines.push('| measure | value | floor |', '|---|---|---|');
  for (const [m, v, f] of rows) lines.push(`| ${m} | ${v} | ${f} |`);
  if (specs.length) lines.push('', '| attacker (namespace) | finished | ok (2xx/101) | 4xx | 5xx | errors | closed | most frequent outcomes |', '|---|---:|---:|---:|---:|---:|---:|---|');
  for (const s of specs) {
    const o = attack?.attackers[s.name];
    const ns = namespaceOf({ name: s.worker });
    if (!o) { lines.push(`| ${s.name} (${ns}) | ERROR | | | | | | |`); continue; }
    const c = (k: string): number => o.byClass[k] ?? 0;
    lines.push(`| ${s.name} (${ns}) | ${n0(o.total)}${o.cutAtEnd ? ` (+${o.cutAtEnd} cut at end)` : ''} | ${n0(c('2xx') + c('101'))} | ${n0(c('4xx'))} | ${n0(c('5xx'))} | ${n0(c('error'))} | ${n0(c('closed'))} | ${topDetail(o)} |`);
  }
  if (attack) {
    if (specs.some((x) => x.kind === 'egress')) lines.push('', '| egress target (from the egress worker) | what the worker got |', '|---|---|');
    for (const [key, url] of specs.some((x) => x.kind === 'egress') ? Object.entries(targets) : []) {
      const got = attack.egress[key];
      const text = got ? Object.entries(got).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([g, n]) => `${n}x ${g.replace(/\|/g, '/').replace(/`/g, "'")}`).join('; ') : 'no answer recorded';
      lines.push(`| ${key} \`${url}\` | ${text} |`);
    }
    if (attack.slow.length) lines.push('', '| slow client | connections | closed by the agent (lifetime p50 / max) | reset | still open at the end (longest) |', '|---|---:|---|---:|---|');
    for (const kind of ['slow-body', 'slow-header'] as const) {
      const cs = attack.slow.filter((c) => c.kind === kind);
      if (!cs.length) continue;
      const closed = cs.filter((c) => c.end === 'server-closed').map((c) => c.lifetimeMs).sort((a, b) => a - b);
      const open = cs.filter((c) => c.end === 'open-at-end').map((c) => c.lifetimeMs).sort((a, b) => a - b);
      const reset = cs.filter((c) => c.end === 'server-reset').length;
      const lines1 = [...new Set(cs.map((c: SlowConn) => c.firstLine).filter(Boolean))].slice(0, 2).join(', ');
      lines.push(`| ${kind} | ${cs.length} | ${closed.length}${closed.length ? ` (${(pct(closed, 50) / 1000).toFixed(1)} s / ${((closed[closed.length - 1] ?? 0) / 1000).toFixed(1)} s)${lines1 ? `, answered \`${lines1}\`` : ''}` : ''} | ${reset} | ${open.length}${open.length ? ` (${((open[open.length - 1] ?? 0) / 1000).toFixed(0)} s)` : ''} |`);
    }
    if (specs.some((x) => x.kind === 'subrequests')) lines.push('', `Subrequest sink: ${n0(attack.sink.requests)} requests, ${n0(attack.sink.bytesIn / 2 ** 20)} MiB in, ${n0(attack.sink.bytesOut / 2 ** 20)} MiB out.`);
  }
  const met = Object.entries(floors).map(([k, v]) => `${k} ${v === null ? 'not measured' : v ? 'met' : 'MISSED'}`);
  lines.push('', `Floors: ${met.join(', ')}.`);
  const notes = [
    ...w.deaths.map((d, i) => `- agent death ${i + 1} at ${d.atS} s${d.atS > cfg.durationS ? ' (after the attack window, from work still in flight)' : ''}, pid ${d.pid}, ${d.exit}: ${d.cause.slice(0, 400)}${d.restartedInS !== undefined ? ` (restarted in ${d.restartedInS} s)` : d.restartError ? ` (restart failed: ${d.restartError})` : ''}`),
    ...warnings.map((x) => `- WARNING ${x}`),
    ...agentLogged.map((l) => `- agent logged: ${l}`),
  ];
  process.stdout.write(`\n${lines.join('\n')}\n${notes.length ? `\n${notes.join('\n')}\n` : ''}\n`);

  const file = writeResults({
    kind: 'soak',
    startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? null, memGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
    gitCommit: gitCommit(),
    config: cfg,
    rssBound: { baseMiB: cfg.baseMiB, tenantsMiB, boundMiB, rule: 'sum over workers of memoryMiB x --max-isolates-per-worker, plus the base' },
    workers: workers.map((x: SoakWorker) => ({ name: x.name, namespace: namespaceOf(x), what: x.what, limits: x.limits, minWarmIsolates: x.minWarmIsolates })),
    attackers: specs,
    floors,
    agent: { firstPid: agent.proc.pid, deaths: w.deaths, rssMaxMiB: w.rssMaxKiB / MiB, rssMaxAtS: w.rssMaxAtS, idleMiB: idleKiB / MiB, 
      processes: [...w.seen.entries()].map(([pid, s]) => ({ pid, ...s, maxRssMiB: s.maxRssKiB / MiB })), rssTimeline: w.timeline },
    healthy: healthy ? { ...healthy, summaryMs: healthyStats } : null,
    control: control ?? null,
    attack: attack ?? null,
    egressTargets: targets,
    cpuSeconds: { agentTree: agentCpuS, loadProcesses: clientCpuS, bench: benchCpuS, other: otherCpuS, machineAvailable: machineTotalS },
    metrics: { before: metricsBefore, after: metricsAfter },
    warnings, agentLogged, raw,
  }, startedAt, 'soak-');
  log(`soak: wrote ${file} and bench/results/soak-latest.json`);
  if (cfg.keepTmp || !healthy || !attack) log(`soak: logs and every healthy sample kept in ${tmp}`);
  else rmSync(tmp, { recursive: true, force: true });
  return healthy && attack ? 0 : 1;
}

function gitCommit(): string | null {
  try { return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8', timeout: 5000 }).trim(); } catch { return null; }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  killChildrenOnSignals();
  process.exitCode = await soakMain();
}
