import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { startAgentProcess, type AgentProcess } from './agent-process.js';

// Issue 12, item 1: making an isolate while the agent's own heap was large aborted the
// whole agent (`Check failed: (backing_store) != nullptr` in IsolateHandle::New ->
// NewContext -> snapshot deserialization). isolated-vm's LimitedAllocator::Check weighs
// the *current* isolate's heap, which during `new ivm.Isolate({ snapshot })` is the
// agent's, against the new isolate's memoryLimit; the shim snapshot held a 128-byte
// Uint8Array, so every new isolate asked that allocator for a backing store. The snapshot
// now holds none (and the pool refuses one that does), and tenant timers no longer grow
// the agent's heap. Each case runs in a child process: an abort fails the test.

const TIMERS = `
export default { async fetch(request) {
  if (new URL(request.url).pathname === '/spin') for (;;) {}
  let armed = 0;
  try {
    for (let i = 0; i < 200; i++) { setTimeout(() => {}, 3_600_000); armed += 1; }
  } catch (err) {
    return new Response('capped after ' + armed + ': ' + err.message);
  }
  return new Response('armed ' + armed);
} };`;
const HEALTHY = `export default { async fetch() { return new Response('healthy'); } };`;

describe('isolate crash (issue 12, item 1)', () => {
  it('makes isolates with a 16 MiB limit from the snapshot while the host heap is 96 MiB', () => {
    const r = spawnSync(process.execPath, ['--no-node-snapshot', '--import', 'tsx', join(REPO_ROOT, 'test/security/fixtures/big-host-heap.ts'), '96'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr).not.toContain('Check failed');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/made isolates with \d+ MiB of host heap/);
  });

  describe("the issue's recipe against the agent binary", () => {
    let agent: AgentProcess;
    beforeAll(async () => {
      agent = await startAgentProcess([
        { name: 'timers', source: TIMERS, limits: { cpuMsPerRequest: 50, memoryMiB: 16, wallMsPerRequest: 30_000 }, minWarmIsolates: 1 },
        { name: 'healthy', source: HEALTHY },
      ]);
    });
    afterAll(() => agent?.stop());

    it('300 requests arming 200 long timers each, then one over its CPU limit: only that isolate dies', async () => {
      const answers = new Map<string, number>();
      for (let i = 0; i < 300; i++) {
        const r = await agent.get('timers.test');
        const key = `${r.status} ${r.text.replace(/\d+/g, 'N')}`;
        answers.set(key, (answers.get(key) ?? 0) + 1);
      }
      // The isolate's timers are capped: the flood gets a clear error, not the agent's memory.
      expect([...answers.keys()].some((k) => k.startsWith('200 capped after N: setTimeout: worker default/timers already has N pending timers')), JSON.stringify([...answers])).toBe(true);
      const spin = await agent.get('timers.test', '/spin');
      expect(spin.status).toBe(503);
      expect(spin.text).toContain('exceeded its CPU limit');
      // A fresh isolate is made for the next request, and the agent is still there.
      for (let i = 0; i < 5; i++) expect((await agent.get('timers.test')).status).toBe(200);
      expect(await agent.get('healthy.test')).toEqual({ status: 200, text: 'healthy' });
      expect(agent.exitCode(), agent.output().slice(-2000)).toBeNull();
      expect(agent.output()).not.toContain('Check failed');
    });
  });
});
