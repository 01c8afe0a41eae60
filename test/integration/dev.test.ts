import { spawn, execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { send } from '../agent/agent-harness.js';
import { kubectl } from '../harness/kubectl.js';
import { freePort, waitFor } from '../harness/ports.js';
import { REPO_ROOT } from '../harness/tools.js';

/** Running, not merely an exited process waiting to be reaped (a zombie is dead). */
const alive = (pid: number) => {
  try {
    return !/^\d+ \([^)]*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};
const childPids = (pid: number): number[] => {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
  } catch { return []; }
};

describe('edge dev', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-dev-examples-'));
  cpSync(join(REPO_ROOT, 'examples'), dir, { recursive: true });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('starts the control plane and an agent, serves the examples, reloads an edit and stops cleanly on SIGINT', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['--no-node-snapshot', join(REPO_ROOT, 'bin/edge.mjs'), 'dev', dir, '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await waitFor('edge dev to be ready', async () => {
        if (child.exitCode !== null) throw new Error(`edge dev exited early:\n${out}`);
        return out.includes('Ctrl-C stops everything');
      }, 120_000, 100);
      const kubeconfig = /^kubeconfig\s+(\S+)$/m.exec(out)?.[1];
      expect(kubeconfig).toBeTruthy();
      const got = await kubectl(kubeconfig!, ['get', 'edgeworkers,durableactors', '-o', 'name']);
      expect(got.stdout.split('\n').filter(Boolean).sort()).toEqual([
        'durableactor.edge.isolates.dev/counters',
        'edgeworker.edge.isolates.dev/counter',
        'edgeworker.edge.isolates.dev/hello',
      ]);
      expect(out).toContain(`http://hello.localhost:${port}/`);
      const hello = await send(port, 'hello.localhost', '/abc');
      expect(await hello.text()).toBe('Hello from /abc\n');
      const file = join(dir, 'hello.yaml');
      writeFileSync(file, readFileSync(file, 'utf8').replace('GREETING: Hello', 'GREETING: Bonjour'));
      await waitFor('the edited worker to answer', async () => (await (await send(port, 'hello.localhost', '/x')).text()) === 'Bonjour from /x\n', 15_000, 100);
      const pids = childPids(child.pid!);
      expect(pids.length).toBeGreaterThanOrEqual(3);
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      const left = pids.filter(alive).map((p) => `${p} ${execFileSync('ps', ['-o', 'stat=,args=', '-p', String(p)], { encoding: 'utf8' }).trim()}`);
      expect(left).toEqual([]);
      expect(out).toContain('nothing left running');
    } finally {
      child.kill('SIGKILL');
    }
  });
});
