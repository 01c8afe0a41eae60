import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient, agentFetch } from 'agents/client';
import type { NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { bundleWorker } from '../../cli/deploy.js';
import { EDGE_BIN } from '../../cli/local/cluster.js';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { ManagedProcess } from '../../cli/local/process.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { actorClassKey, alarmKey, workerKey } from '../../common/keys.js';
import { createLogger } from '../../common/log.js';
import { connectNats, encodeJson, type ActorConfig, type EdgeBuckets, type WorkerConfig } from '../../common/nats.js';
import { decodeJson, ActorAlarmSchema } from '../../common/nats-messages.js';
import { provisionNats } from '../../common/nats-provision.js';
import { ActorIds } from '../../node-agent/bindings/actor-id.js';
import { startNats, type TestNats } from '../harness/nats.js';

// The Agents SDK's this.schedule() when the agent holding the Agent is killed (SIGKILL)
// before the schedule is due: examples/agents on two real `edge agent --nats` processes
// and a real nats-server (published to KV as the operator would). The alarm is in the
// actor's log and the alarm index; the survivor fires it, activating the Agent with its
// name (the SDK refuses to run a schedule without ctx.id.name), and the callback's row is
// there exactly once.

const NS = 'agentsf';
const REGION = 'ag-1';
const UID = 'uid-agents-faults';
const PEER_TOKEN = 'agents-faults-peer-token';
const ADMIN_TOKEN = 'agents-faults-admin-token';
const digest = (s: string | Uint8Array) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

interface Agent { node: string; port: number; admin: number; proc: ManagedProcess }

describe('the Agents SDK: a schedule survives SIGKILL of the agent holding the Agent', () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let dir: string;
  let buckets: EdgeBuckets;
  const agents: Agent[] = [];

  async function startAgent(node: string): Promise<Agent> {
    const [port, admin] = await Promise.all([freePort(), freePort()]);
    const proc = new ManagedProcess(node, process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'agent', '--nats', nats.url, '--region', REGION, '--node', node,
      '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`, '--peer-listen', '127.0.0.1:0',
      '--pool-size', '1', '--presence-ttl-ms', '1000', '--isolate-hosts', '0',
    ], { logFile: join(dir, `${node}.log`), cwd: REPO_ROOT, env: { ...process.env, EDGE_PEER_TOKEN: PEER_TOKEN, EDGE_ADMIN_TOKEN: ADMIN_TOKEN } });
    const a = { node, port, admin, proc };
    agents.push(a);
    await waitFor(`${node} /readyz`, async () => { proc.assertRunning(); return (await fetch(`http://127.0.0.1:${admin}/readyz`)).ok; }, 90_000, 100);
    return a;
  }
  const host = (a: Agent) => `127.0.0.1:${a.port}`;
  const notes = async (a: Agent, name: string) => {
    const res = await agentFetch({ agent: 'CounterAgent', name, host: host(a), path: 'notes' } as never);
    return res.status === 200 ? await res.json() as { id: number; text: string }[] : undefined;
  };
  async function ownerOf(name: string): Promise<Agent> {
    const key = `${NS}/counter-agent/${new ActorIds(UID).idFromName(name).hex}`;
    let owner: Agent | undefined;
    await waitFor(`the agent hosting ${name}`, async () => {
      for (const a of agents.filter((x) => x.proc.running)) {
        const st = await (await fetch(`http://127.0.0.1:${a.admin}/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json() as { actors?: string[] };
        if (st.actors?.includes(key)) { owner = a; return true; }
      }
      return false;
    }, 60_000, 100);
    return owner!;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edge-agentsf-'));
    const built = await bundleWorker(join(REPO_ROOT, 'examples/agents/src/server.ts'), { minify: true, compatibilityFlags: ['nodejs_compat'] });
    if (!('code' in built)) throw new Error(built.errors);
    nats = await startNats();
    nc = await connectNats(nats.url, 'agents-sdk faults test');
    buckets = await provisionNats(nc, { log: createLogger({}, () => undefined) });
    const bytes = new TextEncoder().encode(built.code);
    const bundleDigest = digest(bytes);
    await buckets.bundles.putBlob({ name: bundleDigest }, bytes);
    const actor: ActorConfig = {
      namespace: NS, name: 'counter-agent', uid: UID, generation: 1, className: 'CounterAgent', worker: 'counter', region: REGION,
      idleTimeoutSeconds: 300, maxBytesPerActor: 10 * 1024 * 1024, storageBackend: 'sqlite',
    };
    await buckets.actors.put(actorClassKey(NS, 'counter-agent'), encodeJson(actor));
    const worker: WorkerConfig = {
      namespace: NS, name: 'counter', uid: 'uid-agents-faults-worker', generation: 1, version: digest(`${bundleDigest}/v1`), bundleDigest,
      // The SDK's client sends Host: 127.0.0.1:PORT.
      regions: [REGION], routes: [{ host: '127.0.0.1', pathPrefix: '/' }], compatibilityFlags: ['nodejs_compat'],
      limits: { cpuMsPerRequest: 2000, memoryMiB: 256, subrequests: 50, wallMsPerRequest: 30_000 },
      minWarmIsolates: 1, env: { text: {}, sealed: {}, actors: { CounterAgent: { namespace: NS, actor: 'counter-agent', uid: UID } }, ai: {} },
    };
    await buckets.workers.put(workerKey(NS, 'counter'), encodeJson(worker));
    await Promise.all(['ag-a', 'ag-b'].map((n) => startAgent(n)));
    await waitFor('the Agent served through both agents', async () => {
      const rs = await Promise.all(agents.map((a) => notes(a, 'warm').catch(() => undefined)));
      return rs.every((r) => r !== undefined);
    }, 60_000, 200);
  }, 180_000);

  afterAll(async () => {
    for (const a of agents) a.proc.killNow();
    await Promise.all(agents.map((a) => a.proc.wait()));
    await nc?.close();
    await nats?.stop();
    if (process.env.EDGE_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
  });

  it('fires the schedule on the survivor, with the Agent\'s name, exactly once', async () => {
    const name = 'reminders-1';
    const id = new ActorIds(UID).idFromName(name).hex;
    const c = new AgentClient({ agent: 'CounterAgent', name, host: host(agents[0]!), WebSocket: WebSocket as never } as never);
    await c.ready;
    // Due well after the kill below (the SDK's schedule times are whole seconds).
    expect(typeof await c.call('remindIn', [8, 'tea'])).toBe('string');
    c.close();
    // The index is written after the commit: it carries the name the call brought.
    await waitFor('the alarm in the index', async () => {
      const e = await buckets.alarms.get(alarmKey(NS, 'counter-agent', id));
      return e !== null && e.operation === 'PUT' && decodeJson(ActorAlarmSchema, e.value, 'alarm').name === name;
    }, 10_000, 100);
    const owner = await ownerOf(name);
    owner.proc.signal('SIGKILL');
    const survivor = agents.find((a) => a !== owner)!;
    // Nothing calls the Agent until its alarm has run: a call would bring the name itself.
    // The index entry goes once an alarm() succeeded (a failing one is retried, and stays).
    await waitFor('the alarm to run on the survivor', async () => {
      const e = await buckets.alarms.get(alarmKey(NS, 'counter-agent', id));
      return e === null || e.operation !== 'PUT';
    }, 60_000, 200);
    expect(await ownerOf(name)).toBe(survivor);
    expect(await notes(survivor, name)).toEqual([{ id: 1, text: 'reminder: tea' }]);
  }, 90_000);
});
