import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { type Readable } from 'node:stream';
import { SETPRIV } from '../test/harness/process.js';

export { freePort } from '../test/harness/ports.js';

// Child processes of the bench: each in its own process group (detached), under
// `setpriv --pdeathsig KILL` where there is one, logged to a file, and killed as a group
// on stop, on error and on exit (SIGINT/SIGTERM included).

const live = new Set<Proc>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => { for (const p of live) p.killNow(); });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const p of live) p.killNow();
      process.stderr.write(`\nbench: ${sig}, killed ${live.size} child process group(s)\n`);
      process.exit(130);
    });
  }
}

export interface SpawnOptions {
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Open a pipe as the child's fd 3 (workerd's --control-fd=3). */
  controlPipe?: boolean;
}

export class Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  /** performance.now() just before spawn(). */
  readonly spawnedAt: number;
  private readonly exited: Promise<void>;
  private exitInfo: string | undefined;

  constructor(readonly name: string, bin: string, args: string[], private readonly opts: SpawnOptions) {
    hookExit();
    const fd = openSync(opts.logFile, 'a');
    const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', bin, ...args]] : [bin, args];
    const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', fd, fd];
    if (opts.controlPipe) stdio.push('pipe');
    this.spawnedAt = performance.now();
    this.child = spawn(cmd, argv, { detached: true, stdio, env: opts.env ?? process.env, cwd: opts.cwd });
    closeSync(fd);
    if (this.child.pid === undefined) throw new Error(`${name}: spawn ${bin} failed`);
    this.pid = this.child.pid;
    live.add(this);
    this.exited = new Promise((resolveExit) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        live.delete(this);
        resolveExit();
      });
      this.child.once('error', (err) => { this.exitInfo = `spawn error ${err.message}`; live.delete(this); resolveExit(); });
    });
  }

  get running(): boolean { return this.exitInfo === undefined; }

  /** The readable end of the child's fd 3, when spawned with controlPipe. */
  get control(): Readable {
    const s = this.child.stdio[3];
    if (!s || !('read' in s)) throw new Error(`${this.name}: no control pipe`);
    return s as Readable;
  }

  logTail(lines = 25): string {
    try { return readFileSync(this.opts.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n'); } catch { return ''; }
  }

  /** Throws (with the log tail) when the process has exited. */
  assertRunning(): void {
    if (!this.running) throw new Error(`${this.name} exited (${this.exitInfo}); last log lines:\n${this.logTail()}`);
  }

  /** Resolves when the process exits; the promise never rejects. */
  whenExited(): Promise<void> { return this.exited; }

  killNow(): void {
    if (!this.running) return;
    try { process.kill(-this.pid, 'SIGKILL'); } catch { /* group already gone */ }
  }

  /** SIGTERM to the group, SIGKILL after graceMs; resolves once the process is gone (bounded). */
  async stop(graceMs = 3000): Promise<void> {
    if (!this.running) return;
    try { process.kill(-this.pid, 'SIGTERM'); } catch { /* gone */ }
    const kill = setTimeout(() => this.killNow(), graceMs);
    const giveUp = new Promise<void>((r) => setTimeout(r, graceMs + 3000).unref());
    await Promise.race([this.exited, giveUp]);
    clearTimeout(kill);
  }
}

export async function stopAll(procs: Iterable<Proc | undefined>): Promise<void> {
  await Promise.all([...procs].map((p) => p?.stop()));
}

/** VmRSS in KiB of every process in process group `pgid` (the peer and any children). */
export function groupRssKiB(pgid: number): { kib: number; processes: number } {
  let kib = 0;
  let processes = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // fields after "(comm)": state ppid pgrp ...
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[2]) !== pgid) continue;
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'));
      if (!m) continue; // zombie or kernel thread
      kib += Number(m[1]);
      processes++;
    } catch { /* exited while we looked */ }
  }
  return { kib, processes };
}

/** Median RSS of `samples` reads `intervalMs` apart, after waiting `settleMs`. */
export async function settledRssKiB(proc: Proc, settleMs: number, samples = 5, intervalMs = 200): Promise<{ kib: number; processes: number }> {
  await sleep(settleMs);
  const reads: { kib: number; processes: number }[] = [];
  for (let i = 0; i < samples; i++) {
    proc.assertRunning();
    reads.push(groupRssKiB(proc.pid));
    if (i + 1 < samples) await sleep(intervalMs);
  }
  reads.sort((a, b) => a.kib - b.kib);
  const mid = reads[Math.floor(reads.length / 2)];
  if (!mid || mid.processes === 0) throw new Error(`${proc.name}: no RSS readable for pid ${proc.pid}`);
  return mid;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until true, the process dies, or `timeoutMs` passes. */
export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number, proc?: Proc, intervalMs = 50): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    proc?.assertRunning();
    try {
      if (await check()) return;
    } catch (err) { lastError = err; }
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${Math.round(timeoutMs)} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    }
    await sleep(intervalMs);
  }
}

function cpuTimes(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

/** Fraction (0-1) of all CPUs that something else kept busy during the next `ms`. */
export async function machineBusy(ms = 1000): Promise<number> {
  try {
    const a = cpuTimes();
    await sleep(ms);
    const b = cpuTimes();
    return b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : 0;
  } catch { return 0; }
}
