import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../cli/local/ports.js';
import { treeAffinity } from '../../bench/cpu.js';
import { expandCpuList } from '../../common/cpu-list.js';
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

/**
 * Where the threads of process `pid` may run (bench/cpu.ts's /proc walk): the CPU list ("0,1")
 * when every thread has the same one, "mixed" when they differ; and how many threads it has.
 */
function threadsOn(pid: number): { cpus: string; threads: number } {
  const a = treeAffinity(pid).find((x) => x.pid === pid)!;
  return { cpus: a.threadsElsewhere === 0 ? expandCpuList(a.cpus).join(',') : 'mixed', threads: a.threads };
}

async function serveEveryWorker(agent: AgentProcess): Promise<void> {
  for (const ns of NAMESPACES) {
    const r = await agent.get(`w-${ns}.test`);
    expect(r, ns).toEqual({ status: 200, text: ns });
  }
}

const allowed = allowedCpus()!;
const ALL = allowed.join(',');

/** The agent of a describe block (two isolate hosts and `args`), started before its tests, every worker served once. */
function agentFor(args: string[], env: NodeJS.ProcessEnv = {}): () => AgentProcess {
  let agent: AgentProcess | undefined;
  beforeAll(async () => {
    agent = await startAgentProcess(workers, ['--isolate-hosts', '2', ...args], { EDGE_ADMIN_TOKEN: ADMIN_TOKEN, ...env });
    await serveEveryWorker(agent);
  }, 90_000);
  afterAll(() => agent?.stop());
  return () => agent!;
}

describe('isolate hosts pinned one per CPU (--pin-hosts on)', () => {
  const agent = agentFor(['--pin-hosts', 'on']);

  it('pins host i, every thread of it, to the i-th CPU the agent may use; the front stays on all of them', async () => {
    const hs = await hosts(agent());
    const ordinary = hs.filter((h) => !h.cordon);
    expect(ordinary.map((h) => h.cpu)).toEqual([0, 1].map((i) => allowed[i % allowed.length]));
    for (const h of ordinary) {
      const on = threadsOn(h.pid);
      // The main thread, V8's and libuv's, and isolated-vm's pool (started by the requests above).
      expect(on.threads).toBeGreaterThan(4);
      expect(on.cpus, `host ${h.index}`).toBe(String(h.cpu));
    }
    // The cordon host (started at the first cordon: test/security/cordon.test.ts checks its CPUs) is never given one.
    expect(hs.find((h) => h.cordon)).toMatchObject({ up: false });
    expect(hs.find((h) => h.cordon)!.cpu).toBeUndefined();
    expect(threadsOn(agent().child.pid!).cpus).toBe(ALL);
  });

  it('pins the process that replaces a crashed host to the same CPU', async () => {
    const before = (await hosts(agent())).find((h) => h.index === 0)!;
    process.kill(before.pid, 'SIGKILL');
    let after: HostInfo | undefined;
    await waitFor('host 0 back', async () => {
      after = (await hosts(agent())).find((h) => h.index === 0 && h.up && h.pid !== before.pid);
      return after !== undefined;
    }, 30_000, 50);
    await serveEveryWorker(agent());
    expect(after!.cpu).toBe(before.cpu);
    expect(threadsOn(after!.pid).cpus).toBe(String(before.cpu));
  });
});

describe('isolate hosts that cannot be pinned', () => {
  // No taskset on the PATH (the agent and its hosts start from process.execPath).
  const agent = agentFor(['--pin-hosts', 'on'], { PATH: '/nonexistent' });

  it('serve unpinned and say so, in the log and in /status', async () => {
    for (const h of (await hosts(agent())).filter((x) => !x.cordon)) {
      expect(h.cpu, `host ${h.index}`).toBeUndefined();
      expect(threadsOn(h.pid).cpus, `host ${h.index}`).toBe(ALL);
    }
    expect(agent().output()).toContain('isolate host could not be pinned to its CPU; it runs unpinned');
  });
});

describe('--pin-hosts off', () => {
  const agent = agentFor(['--pin-hosts', 'off']);

  it('leaves every host on every CPU the agent may use', async () => {
    // The cordon host has no process until someone is cordoned.
    const up = (await hosts(agent())).filter((x) => x.up);
    expect(up).toHaveLength(2);
    for (const h of up) {
      expect(h.cpu).toBeUndefined();
      expect(threadsOn(h.pid).cpus, `host ${h.index}`).toBe(ALL);
    }
  });
});
