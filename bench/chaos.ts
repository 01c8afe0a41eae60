import { writeResults } from './report.js';
import { FAULT_KINDS, runChaos, type ChaosConfig, type ChaosResult, type FaultKind, type FaultReport } from '../test/chaos/run.js';

// `npm run bench:chaos`: issue 13's Jepsen-style soak (docs/chaos.md). The list-append
// workload through every agent of a region while faults come one after another, then the
// checker. Two runs: one nats-server (SIGKILL with the agents' default presence TTL,
// SIGSTOP, SIGTERM drain, nats-server kill -9, operator kill), then a 3-node JetStream
// cluster (kill -9 of a node, then of the node leading the actor stream). Prints a table
// per run and writes bench/results/chaos-<date>.json and chaos-latest.json.
//
// CHAOS_ROUNDS (default 3; 1 with BENCH_QUICK=1): how many times each fault kind comes.
// CHAOS_RUNS=single,cluster (default both). CHAOS_CLIENTS, CHAOS_KEYS, CHAOS_PRESENCE_TTL_MS,
// CHAOS_TIMEOUT_MS (the client timeout, default 5 s: an expired call is unknown).

const log = (msg: string): void => { process.stderr.write(`${msg}\n`); };

function num(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name}=${raw}: expected a non-negative number`);
  return v;
}

/** Issue 13's floors per fault kind, in ms after the fault healed or began. */
const FLOORS: Partial<Record<FaultKind, { text: string; ok: (f: FaultReport, ttlMs: number) => boolean }>> = {
  sigterm: { text: '0 failed or unknown calls', ok: (f) => f.failed + f.unknown === 0 },
  sigkill: { text: 'unavailable <= TTL + 1 s', ok: (f, ttl) => f.longestUnavailableMs <= ttl + 1000 },
  'nats-kill': { text: 'serving within 2 s of NATS', ok: (f) => f.longestUnavailableMs <= f.healedMs - f.startMs + 2000 },
};

function table(r: ChaosResult, ttlMs: number): string {
  const lines = [
    '| fault | n | longest unavailable per key (max) | ok | failed | unknown | alarm handler re-runs | floor |',
    '|---|---|---|---|---|---|---|---|',
  ];
  const kinds = [...new Set(r.faults.map((f) => f.kind))];
  for (const k of kinds) {
    const fs = r.faults.filter((f) => f.kind === k);
    const floor = FLOORS[k];
    const met = floor ? fs.every((f) => floor.ok(f, ttlMs)) : undefined;
    const sum = (g: (f: FaultReport) => number) => fs.reduce((a, f) => a + g(f), 0);
    lines.push(`| ${k} | ${fs.length} | ${(Math.max(...fs.map((f) => f.longestUnavailableMs)) / 1000).toFixed(2)} s | ${sum((f) => f.ok)} | ${sum((f) => f.failed)} | ${sum((f) => f.unknown)} | ${sum((f) => f.alarmDoubles)} | ${floor ? `${floor.text}: ${met ? 'met' : 'NOT MET'}` : ''} |`);
  }
  const c = r.check;
  lines.push('', `checker: ${c.ops} ops, ${c.acked} acknowledged appends, ${c.failed} failed, ${c.unknown} unknown; ` +
    `lost ${c.lost}, duplicated ${c.duplicated}, forked ${c.forked}, stale ${c.stale} (at most ${c.staleMaxMissing} missing), ` +
    `reordered ${c.reordered}, phantom ${c.phantom}, failed-but-applied ${c.failedApplied}` +
    (r.alarms ? `; alarms armed ${r.alarms.armed}, fired ${r.alarms.fired}, run twice ${r.alarms.doubles.length}` : ''));
  for (const e of c.examples.slice(0, 12)) lines.push(`  ${e.kind} ${e.key}: ${e.detail}`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const quick = process.env.BENCH_QUICK === '1' || process.env.BENCH_QUICK === 'true';
  const rounds = num('CHAOS_ROUNDS', quick ? 1 : 3);
  const runs = (process.env.CHAOS_RUNS ?? 'single,cluster').split(',');
  const ttl = num('CHAOS_PRESENCE_TTL_MS', 5000);
  const base = {
    agents: 3, isolateHosts: 0, keys: num('CHAOS_KEYS', 8), clients: num('CHAOS_CLIENTS', 12), appendRatio: 0.5, timeoutMs: num('CHAOS_TIMEOUT_MS', 5000),
    pauseMs: (quick ? [5000, 8000] : [5000, 20_000]) as [number, number], downMs: 2000, settleMs: 5000, alarms: true, presenceTtlMs: ttl,
    progress: (l: string) => log(`chaos: ${l}`),
  } satisfies Omit<ChaosConfig, 'natsServers' | 'faults'>;
  const repeat = (ks: FaultKind[]) => Array.from({ length: rounds }, () => ks).flat();
  const plans: { name: string; cfg: ChaosConfig }[] = [];
  if (runs.includes('single')) plans.push({ name: 'single', cfg: { ...base, natsServers: 1, faults: repeat(['sigkill', 'sigstop', 'sigterm', 'nats-kill', 'operator-kill']) } });
  if (runs.includes('cluster')) plans.push({ name: 'cluster', cfg: { ...base, natsServers: 3, faults: repeat(['nats-node-kill', 'nats-leader-kill', 'sigstop']) } });
  for (const p of plans) for (const k of p.cfg.faults) if (!FAULT_KINDS.includes(k)) throw new Error(`unknown fault ${k}`);

  const out: Record<string, unknown> = { startedAt: startedAt.toISOString(), presenceTtlMs: ttl, runs: {} };
  for (const p of plans) {
    log(`chaos: run "${p.name}" (${p.cfg.natsServers} nats-server${p.cfg.natsServers > 1 ? 's' : ''}, faults ${p.cfg.faults.join(', ')})`);
    const r = await runChaos(p.cfg);
    process.stdout.write(`\n### chaos: ${p.name} (${p.cfg.natsServers} nats-server${p.cfg.natsServers > 1 ? 's' : ''}, ${(r.durationMs / 1000).toFixed(0)} s)\n\n${table(r, ttl)}\n`);
    const { history: _history, ...rest } = r;
    (out.runs as Record<string, unknown>)[p.name] = { ...rest, config: { ...rest.config, progress: undefined } };
  }
  const file = writeResults(out, startedAt, 'chaos-');
  log(`chaos: wrote ${file} and bench/results/chaos-latest.json`);
}

main().then(() => process.exit(0), (err: unknown) => { log(`chaos: ${(err as Error).stack ?? String(err)}`); process.exit(1); });
