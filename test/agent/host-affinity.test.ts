import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { expandCpuList, parseCpusAllowed } from '../../common/cpu-list.js';
import { allowedCpus } from '../../node-agent/hosts/cpu-affinity.js';
import { startAgentProcess, type AgentProcess } from '../security/agent-process.js';

// One isolate host per CPU (node-agent/hosts/cpu-affinity.ts): the real `edge agent` with two
// hosts and --pin-hosts on; what is checked is every thread's allowed CPUs in /proc, the
// isolates' threads (started after the pin, by serving requests) included, and that a host
// started again after a crash is pinned as the one it replaces was. Speed is bench/'s.

const ADMIN_TOKEN = 'affinity-test-admin-token';
const NAMESPACES = ['ns-a', 'ns-b', 'ns-c', 'ns-d', 'ns-e', 'ns-f'];
const workers = NAMESPACES.map((ns) => ({ name: `w-${ns}`, namespace: ns, source: `export default { async fetch() { return new Response('${ns}'); } };` }));

interface HostInfo { index: number; pid: number; up: boolean; workers: string[]; cordon?: true; cpu?: number }

async function hosts(agent: AgentProcess): Promise<HostInfo[]> {
  const r = await fetch(`http://127.0.0.1:${agent.admin}/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  return (await r.json() as { hosts: HostInfo[] }).hosts;
}

/** Every thread's allowed CPUs, as CPU numbers. */
function threadCpus(pid: number): number[][] {
  return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      return [expandCpuList(parseCpusAllowed(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))!)];
    } catch { return []; } // the thread exited meanwhile
  });
}

async function serveEveryWorker(agent: AgentProcess): Promise<void> {
  for (const ns of NAMESPACES) {
    const r = await agent.get(`w-${ns}.test`);
    expect(r, ns).toEqual({ status: 200, text: ns });
  }
}

const allowed = allowedCpus()!;

describe('isolate hosts pinned one per CPU (--pin-hosts on)', () => {
  let agent: AgentProcess;
  beforeAll(async () => {
    agent = await startAgentProcess(workers, ['--isolate-hosts', '2', '--pin-hosts', 'on'], { EDGE_ADMIN_TOKEN: ADMIN_TOKEN });
    await serveEveryWorker(agent);
  }, 90_000);
  afterAll(() => agent?.stop());

  it('pins host i, every thread of it, to the i-th CPU the agent may use; the front and the cordon host stay on all of them', async () => {
    const hs = await hosts(agent);
    const ordinary = hs.filter((h) => !h.cordon);
    expect(ordinary.map((h) => h.cpu)).toEqual([0, 1].map((i) => allowed[i % allowed.length]));
    for (const h of ordinary) {
      const threads = threadCpus(h.pid);
      // The main thread, V8's and libuv's, and isolated-vm's pool (started by the requests above).
      expect(threads.length).toBeGreaterThan(4);
      expect(new Set(threads.map((c) => c.join(','))), `host ${h.index}`).toEqual(new Set([String(h.cpu)]));
    }
    const cordon = hs.find((h) => h.cordon)!;
    expect(cordon.cpu).toBeUndefined();
    expect(new Set(threadCpus(cordon.pid).map((c) => c.join(',')))).toEqual(new Set([allowed.join(',')]));
    expect(new Set(threadCpus(agent.child.pid!).map((c) => c.join(',')))).toEqual(new Set([allowed.join(',')]));
  });

  it('pins the process that replaces a crashed host to the same CPU', async () => {
    const before = (await hosts(agent)).find((h) => h.index === 0)!;
    process.kill(before.pid, 'SIGKILL');
    let after: HostInfo | undefined;
    await waitFor('host 0 back', async () => {
      after = (await hosts(agent)).find((h) => h.index === 0 && h.up && h.pid !== before.pid);
      return after !== undefined;
    }, 30_000, 50);
    await serveEveryWorker(agent);
    expect(after!.cpu).toBe(before.cpu);
    expect(new Set(threadCpus(after!.pid).map((c) => c.join(',')))).toEqual(new Set([String(before.cpu)]));
  });
});

describe('isolate hosts that cannot be pinned', () => {
  let agent: AgentProcess;
  beforeAll(async () => {
    // No taskset on the PATH (the agent and its hosts start from process.execPath).
    agent = await startAgentProcess(workers, ['--isolate-hosts', '2', '--pin-hosts', 'on'], { EDGE_ADMIN_TOKEN: ADMIN_TOKEN, PATH: '/nonexistent' });
  }, 90_000);
  afterAll(() => agent?.stop());

  it('serve unpinned and say so, in the log and in /status', async () => {
    await serveEveryWorker(agent);
    for (const h of (await hosts(agent)).filter((x) => !x.cordon)) {
      expect(h.cpu, `host ${h.index}`).toBeUndefined();
      expect(new Set(threadCpus(h.pid).map((c) => c.join(',')))).toEqual(new Set([allowed.join(',')]));
    }
    expect(agent.output()).toContain('isolate host could not be pinned to its CPU; it runs unpinned');
  });
});

describe('--pin-hosts off', () => {
  let agent: AgentProcess;
  beforeAll(async () => {
    agent = await startAgentProcess(workers, ['--isolate-hosts', '2', '--pin-hosts', 'off'], { EDGE_ADMIN_TOKEN: ADMIN_TOKEN });
    await serveEveryWorker(agent);
  }, 90_000);
  afterAll(() => agent?.stop());

  it('leaves every host on every CPU the agent may use', async () => {
    for (const h of await hosts(agent)) {
      expect(h.cpu).toBeUndefined();
      expect(new Set(threadCpus(h.pid).map((c) => c.join(',')))).toEqual(new Set([allowed.join(',')]));
    }
  });
});
