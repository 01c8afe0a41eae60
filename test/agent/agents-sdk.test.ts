import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AgentClient, agentFetch } from 'agents/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { MAX_INLINE_SOURCE_BYTES } from '../../common/api/index.js';
import { createLogger } from '../../common/log.js';
import { DirectorySource } from '../../node-agent/control/desired-state.js';
import type { DesiredWorker } from '../../node-agent/serving/desired.js';
import { INLINE_SOURCE_MAP, bundleWorker } from '../../cli/deploy.js';
import { waitFor } from '../../cli/local/ports.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { startActorAgent, type ActorAgent } from './actor-agent.js';
import { send } from './agent-harness.js';

// Issue 15's acceptance for the Agents SDK (`agents` on npm, unmodified): examples/agents, an
// Agent bundled as `edge deploy` bundles it (minified, nodejs_compat), on a SQLite-backed DurableActor, routed
// by routeAgentRequest, driven by the SDK's own client (AgentClient over WebSocket, agentFetch
// over HTTP). Node 20 has no global WebSocket: partysocket is handed `ws` through its options.

const HOST = '127.0.0.1';
const EXAMPLE = join(REPO_ROOT, 'examples/agents');
const bundle = await bundleWorker(join(EXAMPLE, 'src/server.ts'), { minify: true, compatibilityFlags: ['nodejs_compat'] });

const hostileBundle = await bundleWorker(join(REPO_ROOT, 'test/agent/fixtures/agents-hostile.ts'), { minify: true, compatibilityFlags: ['nodejs_compat'] });
const HOSTILE_HOST = 'hostile.test';

interface State { count: number; note: string }

/** `ws` sending another Host header: the hostile worker's route, on the same agent port. */
class HostileHostWebSocket extends WebSocket {
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols, { headers: { host: HOSTILE_HOST } });
  }
}

describe('the Agents SDK (agents on npm), unmodified', () => {
  let h: ActorAgent;
  let host: string;
  const clients: AgentClient[] = [];

  /** An AgentClient with every state it was sent, in order. */
  async function client(name: string): Promise<{ c: AgentClient; states: State[] }> {
    const states: State[] = [];
    const c = new AgentClient<State>({
      agent: 'CounterAgent', name, host, WebSocket: WebSocket as never,
      onStateUpdate: (s: State, source: string) => { if (source === 'server') states.push(s); },
    } as never);
    clients.push(c);
    await c.ready;
    return { c, states };
  }
  const fetchAgent = (name: string, path: string, init?: RequestInit) => agentFetch({ agent: 'CounterAgent', name, host, path } as never, init);

  beforeAll(async () => {
    if (!('code' in bundle)) throw new Error(`the Agents SDK did not bundle:\n${bundle.errors}`);
    h = await startActorAgent();
    host = `${HOST}:${h.port}`;
    await h.publish({
      namespace: 'agents', name: 'counter', host: HOST, source: bundle.code, compatibilityFlags: ['nodejs_compat'],
      cpuMsPerRequest: 2000, memoryMiB: 256,
      actors: { CounterAgent: { name: 'counter-agent', className: 'CounterAgent', storageBackend: 'sqlite' } },
    });
    if (!('code' in hostileBundle)) throw new Error(`the hostile Agent did not bundle:\n${hostileBundle.errors}`);
    await h.publish({
      namespace: 'agents', name: 'hostile', host: HOSTILE_HOST, source: hostileBundle.code, compatibilityFlags: ['nodejs_compat'],
      cpuMsPerRequest: 2000, memoryMiB: 128,
      actors: { HostileAgent: { name: 'hostile-agent', className: 'HostileAgent', storageBackend: 'sqlite' } },
    });
    // routeAgentRequest's 404 (the agent's own says no worker is routed).
    await waitFor('the workers to be served', async () => (await (await fetch(`http://${host}/nothing`)).text()) === 'Not found'
      && (await (await send(h.port, HOSTILE_HOST, '/nothing')).text()) === 'Not found', 60_000);
  }, 90_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await h?.stop();
  });

  it('syncs setState from another request to a connected client, and from one client to the agent and the others', async () => {
    const { states } = await client('room-1');
    expect(states.at(-1)).toEqual({ count: 0, note: '' });
    const res = await fetchAgent('room-1', 'count', { method: 'POST', body: JSON.stringify({ count: 7 }) });
    expect(await res.json()).toEqual({ count: 7, note: '' });
    await waitFor('the client to get the state', async () => states.at(-1)?.count === 7, 10_000);
    // And the other way: one client's setState reaches the agent and every other client.
    const other = await client('room-1');
    expect(other.states.at(-1)).toEqual({ count: 7, note: '' });
    other.c.setState({ count: 9, note: 'from a client' });
    await waitFor('the first client to get the other\'s state', async () => states.at(-1)?.count === 9, 10_000);
    expect(await (await fetchAgent('room-1', '')).json()).toEqual({ state: { count: 9, note: 'from a client' }, name: 'room-1' });
  }, 30_000);

  it('calls @callable methods from the client: a value back, a thrown error as an error', async () => {
    const { c, states } = await client('room-2');
    expect(await c.call('increment', [5])).toBe(5);
    expect(await c.call('increment', [2])).toBe(7);
    await waitFor('the state after the calls', async () => states.at(-1)?.count === 7, 10_000);
    await expect(c.call('fail', ['no'])).rejects.toThrow('refused: no');
    // The connection survives a failed call.
    expect(await c.call('increment', [1])).toBe(8);
  }, 30_000);

  it('survives a hostile Agent: a @callable that spins or allocates without bound fails, and the Agent and its neighbours go on', async () => {
    const hostile = new AgentClient<{ n: number }>({ agent: 'HostileAgent', name: 'h-1', host, WebSocket: HostileHostWebSocket as never } as never);
    clients.push(hostile);
    await hostile.ready;
    expect(await hostile.call('bump', [])).toBe(1);
    const { c: neighbour } = await client('neighbour-1');
    expect(await neighbour.call('increment', [1])).toBe(1);
    for (const method of ['spin', 'hog']) {
      // The runtime resets the Agent and closes the socket the call came on (1011): the SDK's
      // client fails the call at once rather than after its 30 s call timeout.
      await expect(hostile.call(method, [])).rejects.toThrow('Connection closed');
      // The client reconnects (PartySocket); the Agent's state was committed before.
      await hostile.ready;
      await waitFor(`the hostile Agent to answer after ${method}`, async () => typeof await hostile.call('bump', []).catch(() => undefined) === 'number', 30_000);
    }
    expect(hostile.state?.n).toBeGreaterThanOrEqual(3);
    expect(await neighbour.call('increment', [1])).toBe(2);
  }, 60_000);

  it('keeps this.sql rows across the actor being evicted and activated again', async () => {
    for (const text of ['one', 'two']) {
      expect((await fetchAgent('notes-1', 'notes', { method: 'POST', body: JSON.stringify({ text }) })).status).toBe(200);
    }
    // Every agent here idles out after 1 s (its clients' sockets hibernate: they hold nothing).
    await waitFor('the agents to be evicted', async () => h.agent.actors().length === 0, 20_000);
    const rows = await (await fetchAgent('notes-1', 'notes')).json();
    expect(rows).toEqual([{ id: 1, text: 'one' }, { id: 2, text: 'two' }]);
  }, 40_000);

  it('runs this.schedule callbacks, waking the evicted agent: the row and the state they write', async () => {
    const { c, states } = await client('sched-1');
    const id = await c.call('remindIn', [3, 'tea']);
    expect(typeof id).toBe('string');
    // Normally evicted well before the alarm: then the alarm is what activates it again, and
    // the state it sets reaches the client through its hibernated socket. (If eviction came
    // late the callback still runs, on the live instance; nothing here depends on the order.)
    await waitFor('the agents to be evicted', async () => h.agent.actors().length === 0, 20_000);
    await waitFor('the scheduled callback to set the state', async () => states.at(-1)?.note === 'tea', 30_000);
    expect(await (await fetchAgent('sched-1', 'notes')).json()).toEqual([{ id: 1, text: 'reminder: tea' }]);
  }, 60_000);
});

describe('edge deploy of examples/agents (a wrangler project, its bundle over the inline limit)', () => {
  it('--dry-run stores the bundle gzip-compressed in a ConfigMap\'s binaryData, and `edge agent --workers DIR` resolves it to the bundle', async () => {
    if (!('code' in bundle)) throw new Error(`the Agents SDK did not bundle:\n${bundle.errors}`);
    expect(Buffer.byteLength(bundle.code)).toBeGreaterThan(MAX_INLINE_SOURCE_BYTES);
    const dir = mkdtempSync(join(tmpdir(), 'edge-agents-sdk-'));
    try {
      const { stdout } = await promisify(execFile)(process.execPath, [
        '--no-node-snapshot', join(REPO_ROOT, 'bin/edge.mjs'), 'deploy', '--dry-run',
      ], { cwd: EXAMPLE, env: { ...process.env, EDGE_DEV_STATE: join(dir, 'no-dev.json'), KUBECONFIG: join(dir, 'no-kubeconfig') }, maxBuffer: 16 * 1024 * 1024 });
      expect(stdout).toMatch(/^binaryData:\n {2}worker\.js\.gz: H4sI/m);
      expect(stdout).toMatch(/configMapRef:\n\s+name: agents-counter-bundle\n\s+key: worker\.js\.gz/);
      expect(stdout).toMatch(/kind: DurableActor\n[^]*className: CounterAgent\n\s+storage:\n\s+backend: sqlite/);
      writeFileSync(join(dir, 'counter.yaml'), stdout);
      const source = new DirectorySource(dir, createLogger({}, () => undefined, 'error'));
      const workers = await new Promise<DesiredWorker[]>((resolve) => { void source.start(resolve); });
      await source.stop();
      expect(workers.map((w) => w.key)).toEqual(['default/agents-counter']);
      // edge deploy adds its inline source map (for exception stacks); the code before it is the bundle.
      expect(workers[0]!.def.source).toMatch(INLINE_SOURCE_MAP);
      expect(workers[0]!.def.source.replace(INLINE_SOURCE_MAP, '\n')).toBe(bundle.code);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
