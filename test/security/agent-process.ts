import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { send, workerManifest, type WorkerSpecInput } from '../agent/agent-harness.js';

// The real `edge agent` binary in a child process, serving a directory of manifests: an
// attack that aborts the process (a V8 fatal error) then fails the test instead of killing
// vitest, and the neighbour is measured across the process boundary.

export interface AgentProcess {
  port: number;
  admin: number;
  child: ChildProcess;
  /** Everything the agent wrote (its JSON logs, and a fatal error's report). */
  output(): string;
  /** Null while the agent runs. */
  exitCode(): number | null;
  get(host: string, path?: string): Promise<{ status: number; text: string }>;
  /** The agent's resident set, from /proc (Linux). */
  rssBytes(): number;
  stop(): void;
}

export async function startAgentProcess(workers: WorkerSpecInput[], extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<AgentProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'edge-security-'));
  for (const w of workers) writeFileSync(join(dir, `${w.name}.yaml`), workerManifest(w));
  const [port, admin] = await Promise.all([freePort(), freePort()]);
  let output = '';
  const child = spawn(process.execPath, ['--no-node-snapshot', join(REPO_ROOT, 'bin/edge.mjs'), 'agent', '--workers', dir, '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`, ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  child.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor('agent /readyz', async () => {
      if (child.exitCode !== null) throw new Error(`agent exited: ${output}`);
      return (await fetch(`http://127.0.0.1:${admin}/readyz`)).status === 200;
    }, 60_000, 100);
  } catch (err) {
    stop();
    throw err;
  }
  return {
    port, admin, child,
    output: () => output,
    exitCode: () => child.exitCode ?? (child.signalCode ? 128 : null),
    get: async (host, path = '/') => {
      const r = await send(port, host, path);
      return { status: r.status, text: await r.text() };
    },
    rssBytes: () => {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : 0;
    },
    stop,
  };
}

/**
 * Requests the neighbour answers correctly, one at a time, until `until` settles: the
 * count is compared with a baseline taken the same way, never with an absolute figure.
 */
export async function countServed(agent: AgentProcess, host: string, expected: string, until: Promise<unknown>): Promise<{ served: number; failed: number }> {
  let done = false;
  void until.finally(() => { done = true; });
  let served = 0;
  let failed = 0;
  while (!done) {
    try {
      const r = await agent.get(host);
      if (r.status === 200 && r.text === expected) served += 1;
      else failed += 1;
    } catch {
      failed += 1;
    }
  }
  return { served, failed };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
