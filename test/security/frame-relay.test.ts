import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { waitFor } from '../../cli/local/ports.js';
import { startAgentProcess, type AgentProcess } from './agent-process.js';

// The front relays every tenant of an isolate host on one connection, as frames
// (node-agent/serving/host-frames.ts). A tenant whose clients never read an endless response
// must hold no more than a window per request in the agent's processes, and must not slow its
// neighbour on the same connection; its requests end when its clients go away.

const FLOOD = `export default {
  async fetch() {
    const chunk = new Uint8Array(64 * 1024).fill(120);
    return new Response(new ReadableStream({
      pull(controller) { controller.enqueue(chunk); },
      cancel() { console.log('flood: cancelled'); },
    }));
  },
};`;

const CALM = `export default { async fetch() { return new Response('calm'); } };`;

/** The resident set of the agent's whole process tree (its front and isolate hosts), from /proc. */
function treeRss(pid: number): number {
  let total = 0;
  const visit = (p: number): void => {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) total += Number(m[1]) * 1024;
      for (const t of readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) visit(Number(t));
    } catch { /* gone */ }
  };
  visit(pid);
  return total;
}

describe('the frame relay under a tenant whose clients never read', () => {
  let agent: AgentProcess;

  beforeAll(async () => {
    agent = await startAgentProcess([
      { name: 'flood', source: FLOOD, namespace: 'attacker', host: 'flood.test', limits: { cpuMsPerRequest: 30_000, wallMsPerRequest: 60_000, memoryMiB: 128 } },
      { name: 'calm', source: CALM, namespace: 'neighbour', host: 'calm.test' },
    ], ['--isolate-hosts', '1', '--isolate-host-spares', '0', '--no-cordon']);
    await waitFor('workers served', async () => (await agent.get('calm.test')).status === 200, 30_000, 50);
  }, 120_000);

  afterAll(() => agent?.stop());

  it('holds the endless responses to a window each, the neighbour on the same host keeps answering, and closing the clients ends them', async () => {
    const clients: Socket[] = [];
    const heads: Promise<string>[] = [];
    for (let i = 0; i < 16; i++) {
      const s = connect(agent.port, '127.0.0.1');
      s.on('error', () => undefined);
      heads.push(new Promise((resolve) => s.once('data', (d: Buffer) => { s.pause(); resolve(d.toString('latin1').split('\r\n', 1)[0]!); })));
      s.write('GET / HTTP/1.1\r\nhost: flood.test\r\n\r\n');
      clients.push(s);
    }
    // Without the window the relay drowns in the first bodies and even the heads stall.
    const headsOrTimeout = await Promise.race([Promise.all(heads), new Promise<string[]>((r) => setTimeout(() => r(['no head within 10 s']), 10_000))]);
    expect(new Set(headsOrTimeout)).toEqual(new Set(['HTTP/1.1 200 OK']));
    // The clients read nothing more: what the worker can produce is held back by the relay's
    // window, so the agent's memory stops growing once the buffers on the way are full.
    // Measured with nothing else running, so the neighbour's own garbage is not counted.
    await new Promise((r) => setTimeout(r, 1500));
    const before = treeRss(agent.child.pid!);
    await new Promise((r) => setTimeout(r, 3000));
    const after = treeRss(agent.child.pid!);
    console.log('RSS growth MiB', (after - before) / 1048576);
    expect(after - before).toBeLessThan(64 * 1024 * 1024);
    const neighbour: string[] = [];
    for (let i = 0; i < 200; i++) {
      const r = await agent.get('calm.test');
      neighbour.push(`${r.status} ${r.text}`);
    }
    expect(neighbour.filter((x) => x !== '200 calm')).toEqual([]);

    for (const s of clients) s.destroy();
    await waitFor('the flood worker sees its streams cancelled', async () => (agent.output().match(/flood: cancelled/g) ?? []).length >= 16, 10_000, 50);
    expect(agent.exitCode()).toBeNull();
  }, 60_000);
});
