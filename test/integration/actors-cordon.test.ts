import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorClassKey, workerKey } from '../../common/keys.js';
import { createLogger } from '../../common/log.js';
import { connectNats, encodeJson, type ActorConfig, type WorkerConfig } from '../../common/nats.js';
import { provisionNats } from '../../common/nats-provision.js';
import { EDGE_BIN } from '../../cli/local/cluster.js';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { ManagedProcess } from '../../cli/local/process.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { startNats, type TestNats } from '../harness/nats.js';

// A cordoned tenant's workers run in the agent's cordon host (node-agent/hosts/cordon.ts),
// which hosts no DurableActors; its actors stay in their home host. A worker in the cordon
// host must still reach them: before the fix, every actor call of a cordoned namespace
// failed "DurableActor ... is not available" until the cordon was lifted. The shipped layout
// (a front, isolate hosts and the cordon host), a real nats-server.

const NS = 'cordoned';
const REGION = 'co-1';
const UID = 'uid-cordon-counters';
const ADMIN_TOKEN = 'actors-cordon-admin-token';
const HOST = 'co.test';

const WORKER = `
export class Counter {
  constructor(state) { this.state = state; }
  async fetch() {
    const n = ((await this.state.storage.get('n')) ?? 0) + 1;
    await this.state.storage.put('n', n);
    return new Response(String(n));
  }
}
export default {
  async fetch(request, env) {
    if (new URL(request.url).pathname === '/spin') { const t0 = Date.now(); while (Date.now() - t0 < 2000); }
    try { return await env.COUNTERS.get(env.COUNTERS.idFromName('c')).fetch(request); }
    catch (err) { return new Response(String(err), { status: 503 }); }
  },
};`;

const digest = (s: string | Uint8Array) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

describe('a cordoned namespace keeps its DurableActors', () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let dir: string;
  let agent: ManagedProcess;
  let port: number;
  let admin: number;
  // node:http, not fetch: undici refuses a Host header.
  const get = (path: string) => new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host: HOST }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
  const status = async () => await (await fetch(`http://127.0.0.1:${admin}/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json() as {
    hosts: { workers: string[]; cordon?: true }[]; cordon?: { namespaces: string[] };
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edge-cordon-actors-'));
    nats = await startNats();
    nc = await connectNats(nats.url, 'actors-cordon test');
    const buckets = await provisionNats(nc, { log: createLogger({}, () => undefined) });
    const bytes = new TextEncoder().encode(WORKER);
    const bundleDigest = digest(bytes);
    await buckets.bundles.putBlob({ name: bundleDigest }, bytes);
    const worker: WorkerConfig = {
      namespace: NS, name: 'counter', uid: 'uid-cordon-worker', generation: 1, version: digest(`${bundleDigest}/v1`), bundleDigest,
      regions: [REGION], routes: [{ host: HOST, pathPrefix: '/' }],
      limits: { cpuMsPerRequest: 200, memoryMiB: 64, subrequests: 50, wallMsPerRequest: 30_000 },
      minWarmIsolates: 1, env: { text: {}, sealed: {}, actors: { COUNTERS: { namespace: NS, actor: 'counters', uid: UID } }, ai: {} },
    };
    const actor: ActorConfig = {
      namespace: NS, name: 'counters', uid: UID, generation: 1, className: 'Counter', worker: 'counter', region: REGION,
      idleTimeoutSeconds: 300, maxBytesPerActor: 1024 * 1024,
    };
    await buckets.actors.put(actorClassKey(NS, 'counters'), encodeJson(actor));
    await buckets.workers.put(workerKey(NS, 'counter'), encodeJson(worker));
    [port, admin] = await Promise.all([freePort(), freePort()]);
    agent = new ManagedProcess('cordon-agent', process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'agent', '--nats', nats.url, '--region', REGION, '--node', 'co-a',
      '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`, '--peer-listen', '127.0.0.1:0', '--isolate-hosts', '2',
    ], { logFile: join(dir, 'agent.log'), cwd: REPO_ROOT, env: { ...process.env, EDGE_PEER_TOKEN: 'actors-cordon-peer-token', EDGE_ADMIN_TOKEN: ADMIN_TOKEN } });
    await waitFor('the actor served through the worker', async () => { agent.assertRunning(); return (await get('/inc')).status === 200; }, 90_000, 200);
  }, 120_000);

  afterAll(async () => {
    agent?.killNow();
    await agent?.wait();
    await nc?.close();
    await nats?.stop();
    if (process.env.EDGE_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
  });

  it('serves the actor to the worker running in the cordon host', async () => {
    const before = Number((await get('/inc')).text);
    // Killed for its CPU limit: cordoned at once (a limit hit).
    expect((await get('/spin')).status).toBe(503);
    await waitFor('the worker loaded in the cordon host', async () => {
      const s = await status();
      return !!s.cordon?.namespaces.includes(NS) && s.hosts.some((h) => h.cordon && h.workers.includes(`${NS}/counter`));
    }, 20_000, 100);
    const after = [await get('/inc'), await get('/inc')];
    expect(after.map((r) => r.status), after.map((r) => r.text).join('; ')).toEqual([200, 200]);
    expect(after.map((r) => Number(r.text))).toEqual([before + 1, before + 2]);
  }, 60_000);
});
