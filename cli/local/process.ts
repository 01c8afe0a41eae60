import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { existsSync, openSync, readFileSync, closeSync } from 'node:fs';

// Child processes that never outlive the process that started them (the test harness,
// `edge dev`): each runs in its own process group, under `setpriv --pdeathsig KILL` where
// available so even a SIGKILLed parent takes them down, and an exit hook kills whatever
// is still running.

const live = new Set<ManagedProcess>();
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => { for (const p of live) p.killNow(); });
}

/** setpriv(1), to give a child a parent-death signal; undefined where there is none. */
export const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

export interface SpawnOptions {
  /** stdout and stderr go here (appended). */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Open a pipe as the child's fd 3 (workerd's --control-fd=3). */
  controlPipe?: boolean;
}

/** Kills every managed process now (for a signal handler that is about to exit). */
export function killAllManaged(): number {
  const n = live.size;
  for (const p of live) p.killNow();
  return n;
}

export class ManagedProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** performance.now() just before spawn(). */
  readonly spawnedAt: number;
  readonly logFile: string;
  private readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(readonly name: string, bin: string, args: string[], opts: SpawnOptions) {
    hookExit();
    this.logFile = opts.logFile;
    const fd = openSync(opts.logFile, 'a');
    const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', bin, ...args]] : [bin, args];
    const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', fd, fd];
    if (opts.controlPipe) stdio.push('pipe');
    this.spawnedAt = performance.now();
    this.child = spawn(cmd, argv, { detached: true, stdio, env: opts.env ?? process.env, cwd: opts.cwd });
    closeSync(fd);
    if (this.child.pid === undefined) throw new Error(`${name}: spawning ${bin} failed`);
    this.pid = this.child.pid;
    live.add(this);
    this.exited = new Promise((resolveExit) => {
      this.child.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        live.delete(this);
        resolveExit(this.exitCode);
      });
      this.child.once('error', () => { live.delete(this); this.exitCode = -1; resolveExit(-1); });
    });
  }

  /** The readable end of the child's fd 3, when spawned with controlPipe. */
  get control(): Readable {
    const s = this.child.stdio[3];
    if (!s || !('read' in s)) throw new Error(`${this.name}: no control pipe`);
    return s as Readable;
  }

  get running(): boolean { return this.exitCode === undefined; }

  /** The tail of the process's log, for error messages. */
  logTail(lines = 30): string {
    try { return readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n'); } catch { return ''; }
  }

  /** Fails with the log tail when the process has already exited. */
  assertRunning(): void {
    if (!this.running) throw new Error(`${this.name} exited with ${this.exitCode}; last log lines:\n${this.logTail()}`);
  }

  killNow(): void {
    if (!this.running) return;
    try { process.kill(-this.pid, 'SIGKILL'); } catch { /* already gone */ }
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.running) return;
    try { process.kill(-this.pid, sig); } catch { /* already gone */ }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.killNow(), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  wait(): Promise<number | null> { return this.exited; }
}
