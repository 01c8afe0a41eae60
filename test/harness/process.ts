import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, readFileSync, closeSync } from 'node:fs';

// Child processes that never outlive the harness: each runs in its own process group,
// under `setpriv --pdeathsig KILL` where available so even a SIGKILLed test runner takes
// them down, and an exit hook kills whatever is still running.

const live = new Set<ManagedProcess>();
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => { for (const p of live) p.killNow(); });
}

/** setpriv(1), to give a child a parent-death signal; undefined where there is none. */
export const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

export class ManagedProcess {
  readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(readonly name: string, bin: string, args: string[], readonly logFile: string, env?: NodeJS.ProcessEnv) {
    hookExit();
    const fd = openSync(logFile, 'a');
    const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', bin, ...args]] : [bin, args];
    this.child = spawn(cmd, argv, { detached: true, stdio: ['ignore', fd, fd], env: env ?? process.env });
    closeSync(fd);
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
    if (!this.running || this.child.pid === undefined) return;
    try { process.kill(-this.child.pid, 'SIGKILL'); } catch { /* already gone */ }
  }

  signal(sig: NodeJS.Signals): void {
    if (this.child.pid === undefined || !this.running) return;
    try { process.kill(-this.child.pid, sig); } catch { /* already gone */ }
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
