import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { maybePinned } from './cpu.js';

// The load generator, the same for both peers: wrk when installed, else autocannon
// (programmatic, in this process, which makes it the weaker client of the two).

export type Loadgen = 'wrk' | 'autocannon';

export interface LoadSpec {
  port: number;
  host?: string;
  method: 'GET' | 'POST';
  body?: string;
  connections: number;
  durationS: number;
  threads: number;
  /** taskset CPU list the load generator runs on (bench/percore.ts); unset: wherever the kernel puts it. */
  cpus?: string;
}

export interface LoadResult {
  tool: Loadgen;
  requests: number;
  durationS: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Socket errors and timeouts. */
  errors: number;
  non2xx: number;
  /** CPU seconds the load generator used in the measured window, where known (a child autocannon). */
  loadgenCpuS?: number;
}

export const WRK_INSTALL_HINT = 'wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu) gives the preferred load generator';

export function pickLoadgen(choice: 'auto' | Loadgen): { tool: Loadgen; note?: string } {
  const hasWrk = spawnSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8', timeout: 5000 }).status === 0;
  if (choice === 'wrk' && !hasWrk) throw new Error(WRK_INSTALL_HINT);
  if (choice === 'autocannon') return { tool: 'autocannon' };
  if (hasWrk) return { tool: 'wrk' };
  return { tool: 'autocannon', note: `${WRK_INSTALL_HINT}; falling back to autocannon` };
}

function luaLongString(s: string): string {
  let eq = '=';
  while (s.includes(`]${eq}]`)) eq += '=';
  return `[${eq}[${s}]${eq}]`;
}

function wrkScript(spec: LoadSpec): string {
  return [
    `wrk.method = "${spec.method}"`,
    spec.body !== undefined ? `wrk.body = ${luaLongString(spec.body)}` : '',
    spec.body !== undefined ? 'wrk.headers["Content-Type"] = "application/json"' : '',
    spec.host ? `wrk.headers["Host"] = "${spec.host}"` : '',
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format(\'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n\',',
    '    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))',
    'end',
    '',
  ].join('\n');
}

async function runWrk(spec: LoadSpec, tmpDir: string): Promise<LoadResult> {
  const script = join(tmpDir, `wrk-${spec.method}-${spec.host ?? 'direct'}-${spec.port}.lua`);
  writeFileSync(script, wrkScript(spec));
  const args = ['-t', String(Math.min(spec.threads, spec.connections)), '-c', String(spec.connections), '-d', `${spec.durationS}s`,
    '--timeout', '5s', '-s', script, `http://127.0.0.1:${spec.port}/`];
  const out = await new Promise<string>((resolveOut, reject) => {
    const [cmd, argv] = maybePinned(spec.cpus, 'wrk', args);
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (c: Buffer) => { text += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { text += c.toString(); });
    const kill = setTimeout(() => child.kill('SIGKILL'), (spec.durationS + 30) * 1000);
    child.on('error', (err) => { clearTimeout(kill); reject(err); });
    child.on('close', (code) => {
      clearTimeout(kill);
      if (code === 0) resolveOut(text); else reject(new Error(`wrk exited ${code}: ${text.slice(-500)}`));
    });
  });
  const line = out.split('\n').find((l) => l.startsWith('BENCH_JSON '));
  if (!line) throw new Error(`wrk printed no summary: ${out.slice(-500)}`);
  const j = JSON.parse(line.slice('BENCH_JSON '.length)) as Record<string, number>;
  const n = (k: string): number => j[k] ?? 0;
  const durationS = n('duration_us') / 1e6;
  return {
    tool: 'wrk', requests: n('requests'), durationS, rps: n('requests') / durationS,
    p50Ms: n('p50_us') / 1000, p99Ms: n('p99_us') / 1000,
    errors: n('connect') + n('read') + n('write') + n('timeout'), non2xx: n('status'),
  };
}

async function runAutocannon(spec: LoadSpec): Promise<LoadResult> {
  const { default: autocannon } = await import('autocannon');
  const headers: Record<string, string> = {};
  if (spec.host) headers.host = spec.host;
  if (spec.body !== undefined) headers['content-type'] = 'application/json';
  const opts = {
    url: `http://127.0.0.1:${spec.port}/`, connections: spec.connections, duration: spec.durationS,
    method: spec.method, headers, timeout: 5, ...(spec.body !== undefined ? { body: spec.body } : {}),
  };
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    autocannon(opts),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('autocannon did not finish in time')), (spec.durationS + 30) * 1000); }),
  ]).finally(() => clearTimeout(timer));
  return {
    tool: 'autocannon', requests: r.requests.total, durationS: r.duration, rps: r.requests.total / r.duration,
    p50Ms: r.latency.p50, p99Ms: r.latency.p99, errors: r.errors, non2xx: r.non2xx,
  };
}

export function runLoad(tool: Loadgen, spec: LoadSpec, tmpDir: string): Promise<LoadResult> {
  return tool === 'wrk' ? runWrk(spec, tmpDir) : runAutocannon(spec);
}

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'loadgen-child.ts');

/**
 * A warm-up, then a measured load, with the generator in a process of its own pinned to
 * `spec.cpus` (wrk is one anyway; autocannon runs in bench/loadgen-child.ts under this
 * process's tsx loader). `onStart` runs just before the measured window opens, so a
 * caller can read the server's CPU time across exactly that window.
 */
export async function runLoadApart(tool: Loadgen, spec: LoadSpec, warmupS: number, tmpDir: string, onStart: () => void): Promise<LoadResult> {
  if (tool === 'wrk') {
    if (warmupS > 0) await runWrk({ ...spec, durationS: warmupS }, tmpDir);
    onStart();
    return runWrk(spec, tmpDir);
  }
  const [cmd, argv] = maybePinned(spec.cpus, process.execPath, [...process.execArgv, CHILD, JSON.stringify({ spec, warmupS })]);
  return new Promise<LoadResult>((resolveResult, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let result: LoadResult | undefined;
    let errText = '';
    child.stderr.on('data', (c: Buffer) => { errText = (errText + c.toString()).slice(-2000); });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line === 'BENCH_LOAD_START') onStart();
      else if (line.startsWith('BENCH_LOAD_RESULT ')) result = JSON.parse(line.slice('BENCH_LOAD_RESULT '.length)) as LoadResult;
    });
    const kill = setTimeout(() => child.kill('SIGKILL'), (warmupS + spec.durationS + 60) * 1000);
    child.on('error', (err) => { clearTimeout(kill); reject(err); });
    child.on('close', (code) => {
      clearTimeout(kill);
      if (code === 0 && result) resolveResult(result);
      else reject(new Error(`load generator exited ${code}${result ? '' : ' without a result'}: ${errText.slice(-500)}`));
    });
  });
}
