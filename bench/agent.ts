import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { httpRequest, isOk } from './http.js';
import { maybePinned } from './cpu.js';
import { freePort, Proc, waitUntil } from './procs.js';

// Our node agent, the other peer: EdgeWorker manifests in a directory and
// `edge agent --workers DIR --listen ... --admin ...`, ready when /readyz answers 200.

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** BENCH_EDGE_ENTRY swaps the entry script (e.g. a stub, or a built agent); default bin/edge.mjs. */
const EDGE = process.env.BENCH_EDGE_ENTRY ? resolve(process.env.BENCH_EDGE_ENTRY) : join(ROOT, 'bin', 'edge.mjs');
const NODE_ARGS = ['--no-node-snapshot', EDGE, 'agent'];

export interface AgentWorker { name: string; host: string; source: string; minWarmIsolates: number; bindings?: Record<string, unknown>; namespace?: string }

export function manifest(w: AgentWorker): Record<string, unknown> {
  return {
    apiVersion: 'edge.isolates.dev/v1alpha1',
    kind: 'EdgeWorker',
    metadata: { name: w.name, ...(w.namespace ? { namespace: w.namespace } : {}) },
    spec: {
      compatibilityDate: '2025-01-01',
      routes: [{ host: w.host }],
      placement: { minWarmIsolates: w.minWarmIsolates },
      ...(w.bindings ? { bindings: w.bindings } : {}),
      source: { inline: w.source },
    },
  };
}

/** Writes the workers as multi-document YAML files of `perFile` documents each. */
export function writeWorkerDir(dir: string, workers: AgentWorker[], perFile = 100): void {
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < workers.length; i += perFile) {
    const docs = workers.slice(i, i + perFile).map((w) => stringify(manifest(w), { lineWidth: 0 }));
    writeFileSync(join(dir, `workers-${String(i / perFile).padStart(3, '0')}.yaml`), docs.join('---\n'));
  }
}

/**
 * The agent as it ships: `npm run build` (type check, then the minified bundle) into dist/,
 * which bin/edge.mjs then runs. Otherwise the first `edge` would make a --quick build, whose
 * source maps every process of the agent parses (~25 MiB more PSS at idle, by hand). Not with
 * BENCH_EDGE_ENTRY, whose entry is what it is.
 */
export function buildForBench(): string | null {
  if (process.env.BENCH_EDGE_ENTRY) return null;
  try {
    execFileSync(process.execPath, [join(ROOT, 'scripts', 'build.mjs')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'], timeout: 300_000 });
    return null;
  } catch (err) {
    return `npm run build failed: ${(err as { stderr?: Buffer }).stderr?.toString().trim().split('\n').slice(-3).join(' / ') ?? String(err)}`;
  }
}

/** Null when `edge agent --help` works; otherwise why the agent cannot be benchmarked. */
export function agentUnavailable(): Promise<string | null> {
  return new Promise((resolveWhy) => {
    execFile(process.execPath, [...NODE_ARGS, '--help'], { cwd: ROOT, timeout: 60_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) { resolveWhy(null); return; }
      const lines = `${stderr}${stdout}`.split('\n').map((l) => l.trim()).filter(Boolean);
      const errors = lines.filter((l) => /error|unknown|usage/i.test(l));
      const out = (errors.length ? errors : lines).slice(0, 3).join(' / ');
      resolveWhy(`\`edge agent --help\` failed (${err.killed ? 'timed out' : `exit ${String(err.code)}`}): ${out}`);
    });
  });
}

export interface Agent { proc: Proc; port: number; adminPort: number; spawnToReadyMs: number }

/**
 * Fixed ports (to restart an agent where its clients expect it), extra `edge agent` flags,
 * its --isolate-hosts (default: the agent's own, as shipped), and a taskset CPU list the
 * agent and every process it starts run on (bench/percore.ts).
 */
export interface StartOptions { port?: number; adminPort?: number; extraArgs?: string[]; isolateHosts?: number; cpus?: string }

export async function startAgent(workersDir: string, logFile: string, readyTimeoutMs: number, name = 'agent', opts: StartOptions = {}): Promise<Agent> {
  const port = opts.port ?? await freePort();
  const adminPort = opts.adminPort ?? await freePort();
  const [cmd, args] = maybePinned(opts.cpus, process.execPath, [
    ...NODE_ARGS, '--workers', workersDir, '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${adminPort}`,
    // No load balancer to wait for: stopping takes no drain delay.
    '--drain-delay-ms', '0',
    ...(opts.isolateHosts !== undefined ? ['--isolate-hosts', String(opts.isolateHosts)] : []), ...opts.extraArgs ?? [],
  ]);
  const proc = new Proc(name, cmd, args, { logFile, cwd: ROOT });
  try {
    await waitUntil(`${name} /readyz`, () => isOk(adminPort, '/readyz'), readyTimeoutMs, proc, 25);
  } catch (err) {
    const tail = proc.logTail();
    await proc.stop();
    throw new Error(`${(err as Error).message}${tail && !(err as Error).message.includes(tail) ? `\nlast log lines:\n${tail}` : ''}`);
  }
  return { proc, port, adminPort, spawnToReadyMs: performance.now() - proc.spawnedAt };
}

/**
 * Sums of the agent's Prometheus series by metric name (labels summed away), best effort:
 * the bench only uses them as a sanity check of what it measures (e.g. isolates loaded).
 */
export async function agentMetricSums(adminPort: number): Promise<Record<string, number>> {
  const sums: Record<string, number> = {};
  try {
    const r = await httpRequest({ port: adminPort, path: '/metrics', timeoutMs: 5000 });
    if (r.status !== 200) return sums;
    for (const line of r.body.split('\n')) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m || !m[1] || !m[2]) continue;
      const v = Number(m[2]);
      if (Number.isFinite(v)) sums[m[1]] = (sums[m[1]] ?? 0) + v;
    }
  } catch { /* metrics are optional here */ }
  return sums;
}
