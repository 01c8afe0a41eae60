import { createHash } from 'node:crypto';
import { Agent as HttpAgent, request } from 'node:http';
import { join } from 'node:path';
import { workerKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { connectNats, encodeJson, type WorkerConfig } from '../common/nats.js';
import { provisionNats } from '../common/nats-provision.js';
import { startNats, type TestNats } from '../test/harness/nats.js';
import type { BenchConfig } from './config.js';
import { httpRequest, isOk, summarize, type Summary } from './http.js';
import { freePort, processTree, Proc, sleep, waitUntil } from './procs.js';
import { NOT_APPLICABLE, type Cell, type Row } from './report.js';
import { namedBody, namedSource } from './workloads.js';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Issue 17's bench (docs/shards.md): one region of N `edge agent --nats` processes on
// loopback sharing one nats-server, W workers, requests Zipf-distributed over the workers
// (s = 1.0) and spread uniformly over the agents as a load balancer would, at a fixed rate
// (open loop), once with every agent started `--shards on` and once `--shards off`, the
// same workers, rate, idle timeout and minWarmIsolates in both. Per mode: a warm-up, then a
// measured window: warm and cold starts from the agents' edge_worker_starts_total, client-
// side latency, RSS of every agent's process tree; then, with shards, the forward overhead:
// the hottest worker called on a member (run there, warm) and on a non-member (forwarded to a
// member, warm there), interleaved.
//
// Workers reach the agents the way the operator publishes them: configs in the NATS KV
// bucket and bundles in the object store (common/nats.ts), written here directly (no
// apiserver, no operator: 10,000 puts take seconds; the directory source `--workers DIR`
// cannot be combined with --nats, and shards need the region's presence in NATS).

const log = (msg: string): void => { process.stderr.write(`${msg}\n`); };
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const EDGE = process.env.BENCH_EDGE_ENTRY ? resolve(process.env.BENCH_EDGE_ENTRY) : join(ROOT, 'bin', 'edge.mjs');
const REGION = 'bench-shards';
const TOKEN = 'bench-shards-peer-token-0123456789abcdef';
/** Workers spread over this many namespaces (with isolate hosts, namespaces are what spreads them over the hosts). */
const NAMESPACES = 100;
const LIMITS = { cpuMsPerRequest: 50, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 };

export interface ShardCtx {
  cfg: BenchConfig;
  raw: Record<string, unknown>;
  dir(what: string): string;
  warn(msg: string): void;
  down?: string;
  skip?: string;
}

const digest = (s: string | Uint8Array): string => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const nameOf = (i: number): string => `w-${String(i).padStart(5, '0')}`;
const nsOf = (i: number): string => `t-${String(i % NAMESPACES).padStart(2, '0')}`;
const hostOf = (i: number): string => `${nameOf(i)}.${nsOf(i)}.shards.bench`;
const refOf = (i: number): string => `${nsOf(i)}/${nameOf(i)}`;

/** Zipf(s) over ranks 0..n-1: rank k drawn with probability proportional to 1/(k+1)^s. */
export class Zipf {
  private readonly cdf: Float64Array;
  constructor(n: number, s: number, private readonly random: () => number = Math.random) {
    this.cdf = new Float64Array(n);
    let sum = 0;
    for (let k = 0; k < n; k++) { sum += 1 / (k + 1) ** s; this.cdf[k] = sum; }
    for (let k = 0; k < n; k++) this.cdf[k]! /= sum;
  }

  next(): number {
    const u = this.random();
    let lo = 0;
    let hi = this.cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.cdf[mid]! < u) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
}

/** A small seeded generator (mulberry32), so both modes see the same request sequence. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- workers in NATS

async function publishWorkers(nats: TestNats, n: number, minWarm: number): Promise<number> {
  const t0 = performance.now();
  const nc = await connectNats(nats.url, 'bench shards');
  try {
    const buckets = await provisionNats(nc, { log: createLogger({}, () => undefined) });
    let next = 0;
    const one = async (i: number): Promise<void> => {
      const bytes = new TextEncoder().encode(namedSource(nameOf(i)));
      const bundleDigest = digest(bytes);
      await buckets.bundles.putBlob({ name: bundleDigest }, bytes);
      const cfg: WorkerConfig = {
        namespace: nsOf(i), name: nameOf(i), uid: `uid-${i}`, generation: 1, version: digest(`${bundleDigest}/${minWarm}`), bundleDigest,
        regions: [REGION], routes: [{ host: hostOf(i), pathPrefix: '/' }], limits: LIMITS, minWarmIsolates: minWarm,
        env: { text: {}, sealed: {}, actors: {}, ai: {} },
      };
      await buckets.workers.put(workerKey(nsOf(i), nameOf(i)), encodeJson(cfg));
    };
    await Promise.all(Array.from({ length: 32 }, async () => {
      for (let i = next++; i < n; i = next++) await one(i);
    }));
  } finally { await nc.close(); }
  return performance.now() - t0;
}

// ---------------------------------------------------------------- agents

interface RegionAgent { name: string; proc: Proc; port: number; adminPort: number }

async function startRegion(ctx: ShardCtx, dir: string, shards: boolean, natsUrl: string): Promise<{ agents: RegionAgent[]; readyMs: number }> {
  const { cfg } = ctx;
  const t0 = performance.now();
  const agents: RegionAgent[] = [];
  try {
    for (let i = 0; i < cfg.shardAgents; i++) {
      const name = `a${i}`;
      const [port, adminPort] = [await freePort(), await freePort()];
      const proc = new Proc(`agent ${name} (shards ${shards ? 'on' : 'off'})`, process.execPath, [
        '--no-node-snapshot', EDGE, 'agent', '--nats', natsUrl, '--region', REGION, '--node', `node-${name}`, '--agent-name', name,
        '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${adminPort}`, '--peer-listen', '127.0.0.1:0',
        '--drain-delay-ms', '0', '--isolate-hosts', String(cfg.shardIsolateHosts), '--shards', shards ? 'on' : 'off',
        '--idle-isolate-ms', String(cfg.shardIdleMs),
      ], { logFile: join(dir, `${name}.log`), cwd: ROOT, env: { ...process.env, EDGE_PEER_TOKEN: TOKEN } });
      agents.push({ name, proc, port, adminPort });
    }
    await Promise.all(agents.map((a) => waitUntil(`${a.proc.name} /readyz`, () => isOk(a.adminPort, '/readyz'), cfg.readyTimeoutMs, a.proc, 100)));
    // Every agent serves every worker once ready; the last one to come up must be in everyone's
    // ring before the measured traffic starts (presence refreshes within its TTL).
    const probe = agents.map((a) => a.port);
    await waitUntil('every agent to answer the last worker', async () => {
      const rs = await Promise.all(probe.map((port) => httpRequest({ port, host: hostOf(cfg.shardWorkers - 1), timeoutMs: 10_000 })));
      return rs.every((r) => r.status === 200 && r.body === namedBody(nameOf(cfg.shardWorkers - 1)));
    }, 60_000);
    await sleep(6_000);
    return { agents, readyMs: performance.now() - t0 };
  } catch (err) {
    await Promise.all(agents.map((a) => a.proc.stop()));
    throw err;
  }
}

/** Sums of the agent's series by metric name and, where asked, by one label (`name{label}`). */
async function scrape(a: RegionAgent, byLabel: Record<string, string> = {}): Promise<Record<string, number>> {
  const r = await httpRequest({ port: a.adminPort, path: '/metrics', timeoutMs: 60_000 });
  if (r.status !== 200) throw new Error(`${a.name} /metrics answered ${r.status}`);
  const out: Record<string, number> = {};
  for (const line of r.body.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || !m[1] || !m[3]) continue;
    const v = Number(m[3]);
    if (!Number.isFinite(v)) continue;
    out[m[1]] = (out[m[1]] ?? 0) + v;
    const label = byLabel[m[1]];
    if (label && m[2]) {
      const l = new RegExp(`[{,]${label}="([^"]*)"`).exec(m[2]);
      if (l) out[`${m[1]}{${l[1]}}`] = (out[`${m[1]}{${l[1]}}`] ?? 0) + v;
    }
  }
  return out;
}

const LABELS = { edge_worker_starts_total: 'start', edge_shard_fallbacks_total: 'reason' };

async function scrapeAll(agents: RegionAgent[]): Promise<Record<string, number>> {
  const all = await Promise.all(agents.map((a) => scrape(a, LABELS)));
  const out: Record<string, number> = {};
  for (const m of all) for (const [k, v] of Object.entries(m)) out[k] = (out[k] ?? 0) + v;
  return out;
}

function rssMiB(agents: RegionAgent[]): { total: number; perAgent: number[]; processes: number } {
  const perAgent = agents.map((a) => processTree(a.proc.pid).reduce((n, p) => n + p.rssKiB, 0) / 1024);
  const processes = agents.reduce((n, a) => n + processTree(a.proc.pid).length, 0);
  return { total: perAgent.reduce((a, b) => a + b, 0), perAgent, processes };
}

// ---------------------------------------------------------------- load

interface LoadStats { sent: number; ok: number; bad: number; errors: number; skipped: number; latencies: number[]; firstError?: string }

/**
 * Open loop: `rate` requests a second for `seconds`, each to a Zipf-drawn worker on a
 * uniformly drawn agent, at most `maxInFlight` at once (a send that finds them all busy is
 * skipped and counted: the agents are not keeping up).
 */
async function drive(agents: RegionAgent[], zipf: Zipf, pickAgent: () => number, rate: number, seconds: number, maxInFlight: number, record: boolean, onTick?: () => void): Promise<LoadStats> {
  const pools = agents.map(() => new HttpAgent({ keepAlive: true, maxSockets: maxInFlight }));
  const stats: LoadStats = { sent: 0, ok: 0, bad: 0, errors: 0, skipped: 0, latencies: [] };
  let inFlight = 0;
  const pending = new Set<Promise<void>>();
  const one = (i: number, a: number, retried = false): Promise<void> => new Promise((done) => {
    const t0 = performance.now();
    if (!retried) inFlight++;
    const req = request({ host: '127.0.0.1', port: agents[a]!.port, path: '/', headers: { host: hostOf(i) }, agent: pools[a], timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        inFlight--;
        const ms = performance.now() - t0;
        if (res.statusCode === 200 && Buffer.concat(chunks).toString() === namedBody(nameOf(i))) {
          stats.ok++;
          if (record) stats.latencies.push(ms);
        } else {
          stats.bad++;
          stats.firstError ??= `${hostOf(i)} on ${agents[a]!.name}: ${res.statusCode} ${Buffer.concat(chunks).toString().slice(0, 200)}`;
        }
        done();
      });
    });
    req.on('timeout', () => req.destroy(new Error('no response within 30 s')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      // A kept-alive connection the agent closed as idle just as this request went out on it
      // (Node's keep-alive race): sent again once on a fresh one, as HTTP clients do for GET.
      if (req.reusedSocket && !retried && (err.code === 'ECONNRESET' || err.message === 'socket hang up')) {
        void one(i, a, true).then(done);
        return;
      }
      inFlight--;
      stats.errors++;
      stats.firstError ??= `${hostOf(i)} on ${agents[a]!.name}: ${err.message}`;
      done();
    });
    req.end();
  });
  const t0 = performance.now();
  const total = Math.round(rate * seconds);
  let lastTick = t0;
  try {
    for (let n = 0; n < total; n++) {
      const due = t0 + (n * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await sleep(wait);
      if (onTick && performance.now() - lastTick > 5000) { lastTick = performance.now(); onTick(); }
      const i = zipf.next();
      const a = pickAgent();
      if (inFlight >= maxInFlight) { stats.skipped++; continue; }
      stats.sent++;
      const p = one(i, a);
      pending.add(p);
      void p.then(() => pending.delete(p));
    }
    await Promise.all(pending);
  } finally { for (const p of pools) p.destroy(); }
  return stats;
}

/** The hottest worker on a member (run there) and on a non-member (forwarded), interleaved, over warm keep-alive connections. */
async function forwardOverhead(agents: RegionAgent[], calls: number): Promise<{ local: Summary; forwarded: Summary; paired: Summary; member: string; outsider: string }> {
  const ref = refOf(0);
  const isMember = await Promise.all(agents.map(async (a) => {
    const r = await httpRequest({ port: a.adminPort, path: '/metrics', timeoutMs: 60_000 });
    return new RegExp(`^edge_shard_member\\{[^}]*worker="${ref}"[^}]*\\} 1$`, 'm').test(r.body);
  }));
  const member = agents.find((_, i) => isMember[i]);
  const outsider = agents.find((_, i) => !isMember[i]);
  if (!member || !outsider) throw new Error(`no member and non-member of ${ref}'s shard (members: ${agents.filter((_, i) => isMember[i]).map((a) => a.name).join(', ') || 'none'})`);
  const keepLocal = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  const keepFwd = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  const local: number[] = [];
  const fwd: number[] = [];
  const paired: number[] = [];
  try {
    for (let i = 0; i < calls + 20; i++) {
      const l = await httpRequest({ port: member.port, host: hostOf(0), agent: keepLocal, timeoutMs: 30_000 });
      const f = await httpRequest({ port: outsider.port, host: hostOf(0), agent: keepFwd, timeoutMs: 30_000 });
      for (const r of [l, f]) if (r.status !== 200 || r.body !== namedBody(nameOf(0))) throw new Error(`forward overhead: ${r.status} ${r.body.slice(0, 200)}`);
      if (i < 20) continue;
      local.push(l.ms);
      fwd.push(f.ms);
      paired.push(f.ms - l.ms);
    }
  } finally { keepLocal.destroy(); keepFwd.destroy(); }
  return { local: summarize(local), forwarded: summarize(fwd), paired: summarize(paired), member: member.name, outsider: outsider.name };
}

// ---------------------------------------------------------------- one mode

export interface ModeResult {
  shards: boolean;
  readyMs: number;
  requests: number;
  rps: number;
  skipped: number;
  bad: number;
  errors: number;
  firstError?: string;
  latency: Summary;
  warm: number;
  cold: number;
  warmRate: number;
  coldPerMinute: number;
  forwards: number;
  forwardedIn: number;
  fallbacks: Record<string, number>;
  isolatesAtEnd: number;
  rss: { total: number; perAgent: number[]; processes: number; peakTotal: number };
  overhead?: { local: Summary; forwarded: Summary; paired: Summary; member: string; outsider: string };
  overheadError?: string;
}

async function runMode(ctx: ShardCtx, shards: boolean, natsUrl: string): Promise<ModeResult> {
  const { cfg } = ctx;
  const d = ctx.dir(`agent-shards-${shards ? 'on' : 'off'}`);
  log(`  shards ${shards ? 'on' : 'off'}: starting ${cfg.shardAgents} agents`);
  const { agents, readyMs } = await startRegion(ctx, d, shards, natsUrl);
  try {
    log(`  shards ${shards ? 'on' : 'off'}: ${cfg.shardAgents} agents serve ${cfg.shardWorkers} workers ${(readyMs / 1000).toFixed(1)} s after spawn; ${cfg.shardWarmupS} s warm-up, ${cfg.shardDurationS} s measured at ${cfg.shardRate} req/s`);
    // The same request sequence in both modes.
    const rnd = seeded(17);
    const zipf = new Zipf(cfg.shardWorkers, 1.0, rnd);
    const pickAgent = (): number => Math.floor(rnd() * agents.length);
    const maxInFlight = 256;
    if (cfg.shardWarmupS > 0) await drive(agents, zipf, pickAgent, cfg.shardRate, cfg.shardWarmupS, maxInFlight, false);
    const before = await scrapeAll(agents);
    let peakTotal = 0;
    const sample = (): void => { peakTotal = Math.max(peakTotal, rssMiB(agents).total); };
    const t0 = performance.now();
    const load = await drive(agents, zipf, pickAgent, cfg.shardRate, cfg.shardDurationS, maxInFlight, true, sample);
    const seconds = (performance.now() - t0) / 1000;
    const after = await scrapeAll(agents);
    const rss = rssMiB(agents);
    peakTotal = Math.max(peakTotal, rss.total);
    const delta = (k: string): number => (after[k] ?? 0) - (before[k] ?? 0);
    const warm = delta('edge_worker_starts_total{warm}');
    const cold = delta('edge_worker_starts_total{cold}');
    const fallbacks: Record<string, number> = {};
    for (const k of Object.keys(after)) {
      const m = /^edge_shard_fallbacks_total\{(.*)\}$/.exec(k);
      if (m?.[1]) fallbacks[m[1]] = delta(k);
    }
    let overhead: ModeResult['overhead'];
    let overheadError: string | undefined;
    if (shards) {
      try { overhead = await forwardOverhead(agents, cfg.shardOverheadCalls); } catch (err) {
        overheadError = err instanceof Error ? err.message : String(err);
        ctx.warn(`shards on: forward overhead not measured: ${overheadError}`);
      }
    }
    const r: ModeResult = {
      shards, readyMs, requests: load.ok, rps: load.ok / seconds, skipped: load.skipped, bad: load.bad, errors: load.errors,
      ...(load.firstError ? { firstError: load.firstError } : {}),
      latency: summarize(load.latencies), warm, cold, warmRate: warm + cold > 0 ? (100 * warm) / (warm + cold) : NaN,
      coldPerMinute: (cold * 60) / seconds, forwards: delta('edge_shard_forwards_total'), forwardedIn: delta('edge_shard_forwarded_in_total'),
      fallbacks, isolatesAtEnd: after.edge_worker_isolates ?? NaN,
      rss: { ...rss, peakTotal }, ...(overhead ? { overhead } : {}), ...(overheadError ? { overheadError } : {}),
    };
    log(`  shards ${shards ? 'on' : 'off'}: ${Math.round(r.rps)} req/s (${load.skipped} skipped, ${load.bad} non-200, ${load.errors} errors), warm ${r.warmRate.toFixed(2)} % (${warm} warm, ${cold} cold = ${r.coldPerMinute.toFixed(0)}/min), p50 ${r.latency.p50.toFixed(2)} ms, p99 ${r.latency.p99.toFixed(2)} ms, ${r.forwards} forwarded, ${r.isolatesAtEnd} isolates, RSS ${r.rss.total.toFixed(0)} MiB (${r.rss.perAgent.map((x) => x.toFixed(0)).join(' / ')}; peak ${peakTotal.toFixed(0)})`);
    if (overhead) log(`  shards on: ${refOf(0)} on member ${overhead.member} p50 ${overhead.local.p50.toFixed(3)} ms, forwarded from ${overhead.outsider} p50 ${overhead.forwarded.p50.toFixed(3)} ms, paired difference p50 ${overhead.paired.p50.toFixed(3)} ms`);
    return r;
  } finally {
    await Promise.all(agents.map((a) => a.proc.stop()));
  }
}

// ---------------------------------------------------------------- phase

export async function shardsPhase(ctx: ShardCtx): Promise<Row[]> {
  const { cfg } = ctx;
  const na: Cell = { skipped: NOT_APPLICABLE };
  log(`[shards] ${cfg.shardAgents} agents (--isolate-hosts ${cfg.shardIsolateHosts}, --idle-isolate-ms ${cfg.shardIdleMs}), ${cfg.shardWorkers} workers (minWarmIsolates ${cfg.shardMinWarm}), Zipf s=1.0 at ${cfg.shardRate} req/s uniformly over the agents; --shards on, then off`);
  const results = new Map<boolean, { ok: ModeResult } | { cell: Cell }>();
  if (ctx.skip || ctx.down) {
    const c: Cell = ctx.skip ? { skipped: ctx.skip } : { error: ctx.down ?? '' };
    results.set(true, { cell: c });
    results.set(false, { cell: c });
  } else {
    let nats: TestNats | undefined;
    try {
      nats = await startNats({ keepDir: process.env.BENCH_KEEP_TMP === '1' });
      const ms = await publishWorkers(nats, cfg.shardWorkers, cfg.shardMinWarm);
      log(`  ${cfg.shardWorkers} worker configs and bundles written to NATS in ${(ms / 1000).toFixed(1)} s`);
      for (const shards of [true, false]) {
        try {
          results.set(shards, { ok: await runMode(ctx, shards, nats.url) });
        } catch (err) {
          log(`  shards ${shards ? 'on' : 'off'}: FAILED: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
          results.set(shards, { cell: { error: err instanceof Error ? err.message : String(err) } });
        }
      }
    } catch (err) {
      const c: Cell = { error: err instanceof Error ? err.message : String(err) };
      for (const s of [true, false]) if (!results.has(s)) results.set(s, { cell: c });
    } finally { await nats?.stop(); }
  }
  const on = results.get(true)!;
  const off = results.get(false)!;
  ctx.raw.shards = {
    measures: 'each mode: a fresh region of agents on the same NATS workers; warm-up, then the measured window: starts from edge_worker_starts_total deltas summed over the agents, latency client-side, RSS of each agent process tree (VmRSS) at the end and the largest 5 s sample',
    config: { agents: cfg.shardAgents, workers: cfg.shardWorkers, rate: cfg.shardRate, warmupS: cfg.shardWarmupS, durationS: cfg.shardDurationS, idleIsolateMs: cfg.shardIdleMs, minWarmIsolates: cfg.shardMinWarm, isolateHosts: cfg.shardIsolateHosts },
    on: 'ok' in on ? { ...on.ok, latency: on.ok.latency } : on.cell,
    off: 'ok' in off ? off.ok : off.cell,
  };
  for (const [s, r] of results) {
    if (!('ok' in r)) continue;
    const bad = r.ok.bad + r.ok.errors;
    if (bad > 0) ctx.warn(`shards ${s ? 'on' : 'off'}: ${r.ok.bad} non-200 answers and ${r.ok.errors} socket errors in ${r.ok.requests + bad} requests (first: ${r.ok.firstError ?? '?'})`);
    if (r.ok.skipped > 0) ctx.warn(`shards ${s ? 'on' : 'off'}: ${r.ok.skipped} requests not sent (256 already in flight): the agents did not keep up with ${cfg.shardRate} req/s`);
  }
  const get = (r: typeof on, f: (m: ModeResult) => number | undefined): Cell => {
    if ('cell' in r) return r.cell;
    const bad = r.ok.bad + r.ok.errors;
    if (bad > r.ok.requests * 0.001) return { error: `${r.ok.bad} non-200 and ${r.ok.errors} socket errors in ${r.ok.requests + bad} requests (first: ${r.ok.firstError ?? '?'})` };
    const v = f(r.ok);
    return v === undefined || !Number.isFinite(v) ? { error: 'not measured' } : { value: v };
  };
  const ratio = (f: (m: ModeResult) => number): Cell => {
    if ('cell' in on) return on.cell;
    if ('cell' in off) return off.cell;
    const a = f(off.ok);
    const b = f(on.ok);
    return b > 0 ? { value: a / b } : a > 0 ? { value: Infinity } : { error: 'none in either mode' };
  };
  const pair = (what: string, unit: Row['unit'], f: (m: ModeResult) => number | undefined, floorOn?: Row['floor']): Row[] => [
    { metric: `shards on: ${what}`, unit, better: floorOn ? 'higher' : 'info', agent: get(on, f), workerd: na, ...(floorOn ? { floor: floorOn } : {}) },
    { metric: `shards off: ${what}`, unit, better: 'info', agent: get(off, f), workerd: na },
  ];
  const w = `${cfg.shardWorkers} workers, ${cfg.shardAgents} agents`;
  return [
    ...pair(`requests answered (${w}, Zipf s=1.0, ${cfg.shardRate} req/s offered, ${cfg.shardDurationS} s)`, 'req/s', (m) => m.rps),
    ...pair('warm request rate (edge_worker_starts_total{start="warm"} / all)', '%', (m) => m.warmRate, { text: 'shards on >= 99.9 %', check: (a) => a !== undefined && a >= 99.9 }),
    ...pair('cold starts per minute (the region)', 'per min', (m) => m.coldPerMinute),
    { metric: 'cold starts, shards off / shards on', unit: 'x', better: 'higher', agent: ratio((m) => m.coldPerMinute), workerd: na, floor: { text: '>= 10x', check: (a) => a !== undefined && a >= 10 } },
    ...pair('latency p50, client to response (all requests)', 'ms', (m) => m.latency.p50),
    ...pair('latency p99 (same)', 'ms', (m) => m.latency.p99),
    {
      metric: 'shards on: forward overhead p50 (the hottest worker forwarded by a non-member less run on a member, warm, paired by round)',
      unit: 'ms', better: 'lower', agent: get(on, (m) => m.overhead?.paired.p50), workerd: na,
      floor: { text: '<= 0.3 ms', check: (a) => a !== undefined && a <= 0.3 },
    },
    ...pair('total RSS, every agent process tree, end of the window', 'MiB', (m) => m.rss.total),
    ...pair('per-agent RSS, largest', 'MiB', (m) => Math.max(...m.rss.perAgent)),
    ...pair('isolates loaded at the end (the region)', 'count', (m) => m.isolatesAtEnd),
    { metric: 'total RSS, shards off / shards on', unit: 'x', better: 'higher', agent: ratio((m) => m.rss.total), workerd: na, floor: { text: '>= 3x', check: (a) => a !== undefined && a >= 3 } },
    { metric: 'shards on: requests forwarded to a member, share', unit: '%', better: 'info', agent: get(on, (m) => (100 * m.forwards) / Math.max(1, m.requests)), workerd: na },
    { metric: 'shards on: forwards a member did not take (fallbacks), share', unit: '%', better: 'info', agent: get(on, (m) => (100 * Object.values(m.fallbacks).reduce((a, b) => a + b, 0)) / Math.max(1, m.forwards)), workerd: na },
  ];
}
