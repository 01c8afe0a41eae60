import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorClassKey, workerKey } from '../../common/keys.js';
import { createLogger } from '../../common/log.js';
import { connectNats, encodeJson, type ActorConfig, type EdgeBuckets, type WorkerConfig } from '../../common/nats.js';
import { provisionNats } from '../../common/nats-provision.js';
import { ActorLog } from '../../common/actor-log.js';
import { EDGE_BIN } from '../../cli/local/cluster.js';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { ManagedProcess } from '../../cli/local/process.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { startNats, type TestNats } from '../harness/nats.js';

// A SQLite-backed actor's database is exact after its owner is killed (SIGKILL) or paused
// (SIGSTOP) with INSERTs in flight, against three real `edge agent --nats` processes and
// a real nats-server (the configs published to KV as the operator would). The checker,
// in the counter-exactness style of actors-availability: every acknowledged INSERT is in
// the database exactly once, the row count agrees with a counter updated in the same
// request (a statement replayed twice or half a request would break it), and every row a
// read ever saw is still there at the end.

const NS = 'sqlf';
const REGION = 'sq-1';
const UID = 'uid-sqlite-faults';
const PEER_TOKEN = 'sqlite-faults-peer-token';
const ADMIN_TOKEN = 'sqlite-faults-admin-token';
const TTL_MS = 1000;
const HOST = 'sq.test';

const WORKER = `
export class Ledger {
  constructor(state) {
    this.sql = state.storage.sql;
    this.sql.exec('CREATE TABLE IF NOT EXISTS ops (token TEXT, at TEXT, r INTEGER)');
    this.sql.exec('CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, n INTEGER)');
    this.sql.exec("INSERT OR IGNORE INTO meta VALUES ('n', 0)");
  }
  async fetch(request) {
    const url = new URL(request.url);
    const sql = this.sql;
    switch (url.pathname) {
      case '/ins': case '/slowins': {
        sql.exec("INSERT INTO ops VALUES (?, datetime('now'), random())", url.searchParams.get('t'));
        sql.exec("UPDATE meta SET n = n + 1 WHERE k = 'n'");
        if (url.pathname === '/slowins') await new Promise((r) => setTimeout(r, Number(url.searchParams.get('ms'))));
        return new Response(String(sql.exec("SELECT n FROM meta WHERE k = 'n'").one().n));
      }
      case '/dump':
        return Response.json({ n: sql.exec("SELECT n FROM meta WHERE k = 'n'").one().n, tokens: sql.exec('SELECT token FROM ops').raw().toArray().map((r) => r[0]) });
      default: return new Response('no such route', { status: 404 });
    }
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const id = env.LEDGERS.idFromName(url.searchParams.get('actor') ?? 'l1');
    if (url.pathname === '/id') return new Response(id.toString());
    try { return await env.LEDGERS.get(id).fetch(request); } catch (err) { return new Response(String(err), { status: 503 }); }
  },
};`;

const digest = (s: string | Uint8Array) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const quiet = createLogger({}, () => undefined);

async function publish(buckets: EdgeBuckets): Promise<void> {
  const bytes = new TextEncoder().encode(WORKER);
  const bundleDigest = digest(bytes);
  await buckets.bundles.putBlob({ name: bundleDigest }, bytes);
  const worker: WorkerConfig = {
    namespace: NS, name: 'ledger', uid: 'uid-sqlite-faults-worker', generation: 1, version: digest(`${bundleDigest}/v1`), bundleDigest,
    regions: [REGION], routes: [{ host: HOST, pathPrefix: '/' }],
    limits: { cpuMsPerRequest: 500, memoryMiB: 64, subrequests: 50, wallMsPerRequest: 60_000 },
    minWarmIsolates: 1, env: { text: {}, sealed: {}, actors: { LEDGERS: { namespace: NS, actor: 'ledgers', uid: UID } }, ai: {} },
  };
  const actor: ActorConfig = {
    namespace: NS, name: 'ledgers', uid: UID, generation: 1, className: 'Ledger', worker: 'ledger', region: REGION,
    idleTimeoutSeconds: 300, maxBytesPerActor: 10 * 1024 * 1024, storageBackend: 'sqlite',
  };
  await buckets.actors.put(actorClassKey(NS, 'ledgers'), encodeJson(actor));
  await buckets.workers.put(workerKey(NS, 'ledger'), encodeJson(worker));
}

interface Agent { node: string; port: number; admin: number; proc: ManagedProcess }
interface Call { path: string; agent: string; start: number; end: number; status: number; text: string }

function timed(a: Agent, path: string): Promise<Call> {
  const start = performance.now();
  return new Promise((resolve) => {
    const done = (status: number, text: string) => resolve({ path, agent: a.node, start, end: performance.now(), status, text });
    const req = request({ host: '127.0.0.1', port: a.port, path, headers: { host: HOST }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => done(res.statusCode ?? 0, text));
      res.on('error', (err) => done(0, String(err)));
    });
    req.on('error', (err) => done(0, String(err)));
    req.setTimeout(150_000, () => req.destroy(new Error('no answer in 150 s')));
    req.end();
  });
}

describe('SQLite-backed actor: exact after SIGKILL and SIGSTOP of the owner with INSERTs in flight', () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let dir: string;
  const agents: Agent[] = [];
  let seq = 0;

  async function startAgent(node: string): Promise<Agent> {
    const [port, admin] = await Promise.all([freePort(), freePort()]);
    const proc = new ManagedProcess(node, process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'agent', '--nats', nats.url, '--region', REGION, '--node', node,
      '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`, '--peer-listen', '127.0.0.1:0',
      '--pool-size', '1', '--presence-ttl-ms', String(TTL_MS), '--isolate-hosts', '0',
      // Snapshots every few dozen INSERTs: owners change while snapshots and log tails are both in play.
      '--sql-snapshot-entries', '40',
    ], { logFile: join(dir, `${node}.log`), cwd: REPO_ROOT, env: { ...process.env, EDGE_PEER_TOKEN: PEER_TOKEN, EDGE_ADMIN_TOKEN: ADMIN_TOKEN } });
    const a = { node, port, admin, proc };
    agents.push(a);
    await waitFor(`${node} /readyz`, async () => { proc.assertRunning(); return (await fetch(`http://127.0.0.1:${admin}/readyz`)).ok; }, 90_000, 100);
    return a;
  }
  const live = () => agents.filter((a) => a.proc.running);
  async function ownerOf(actor: string, among: Agent[]): Promise<Agent> {
    const key = `${NS}/ledgers/${(await timed(among[0]!, `/id?actor=${actor}`)).text}`;
    let owner: Agent | undefined;
    await waitFor(`the agent hosting ${actor}`, async () => {
      for (const a of among) {
        const st = await (await fetch(`http://127.0.0.1:${a.admin}/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json() as { actors?: string[] };
        if (st.actors?.includes(key)) { owner = a; return true; }
      }
      return false;
    }, 20_000, 100);
    return owner!;
  }

  /** Sequential INSERT clients through `targets`, and a reader recording every token it saw. */
  function traffic(targets: Agent[], actor: string) {
    const calls: Call[] = [];
    const seen = new Set<string>();
    let running = true;
    const writers = targets.flatMap((a) => [0, 1].map(async () => {
      while (running && a.proc.running) {
        const c = await timed(a, `/ins?actor=${actor}&t=${a.node}-${seq++}`);
        calls.push(c);
        if (c.status !== 200) await sleep(20);
      }
    }));
    const reader = (async () => {
      while (running) {
        const a = targets.find((x) => x.proc.running);
        if (!a) break;
        const r = await timed(a, `/dump?actor=${actor}`);
        if (r.status === 200) for (const t of (JSON.parse(r.text) as { tokens: string[] }).tokens) seen.add(t);
        await sleep(50);
      }
    })();
    return { calls, seen, stop: async () => { running = false; await Promise.all([...writers, reader]); } };
  }

  async function checkExact(actor: string, calls: Call[], seen: Set<string>, through: Agent): Promise<void> {
    // A write first: an owner superseded while paused is fenced by it.
    await waitFor(`a write to ${actor}`, async () => (await timed(through, `/ins?actor=${actor}&t=final-${seq++}`)).status === 200, 30_000, 100);
    let dump: { n: number; tokens: string[] } | undefined;
    await waitFor(`dump of ${actor}`, async () => {
      const r = await timed(through, `/dump?actor=${actor}`);
      if (r.status === 200) dump = JSON.parse(r.text) as { n: number; tokens: string[] };
      return r.status === 200;
    }, 30_000, 100);
    const tokens = dump!.tokens;
    expect(tokens.length - new Set(tokens).size, 'INSERTs applied twice').toBe(0);
    const acked = calls.filter((c) => c.status === 200).map((c) => /[?&]t=([^&]+)/.exec(c.path)![1]!);
    expect(acked.filter((t) => !tokens.includes(t)), 'acknowledged INSERTs lost').toEqual([]);
    expect([...seen].filter((t) => !tokens.includes(t)), 'rows a read saw, lost').toEqual([]);
    // The counter is updated in the same request as the INSERT: half a request never survives.
    expect(dump!.n).toBe(tokens.length);
    console.log(`${actor}: ${acked.length} acknowledged, ${calls.length - acked.length} failed, ${tokens.length} rows at the end`);
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'edge-sqlf-'));
    nats = await startNats();
    nc = await connectNats(nats.url, 'sqlite-faults test');
    await publish(await provisionNats(nc, { log: quiet }));
    await Promise.all(['sq-a', 'sq-b', 'sq-c'].map((n) => startAgent(n)));
    await waitFor('the worker served with actors on every agent', async () => {
      const rs = await Promise.all(agents.map((a) => timed(a, `/ins?actor=warm&t=warm-${a.node}`)));
      return rs.every((r) => r.status === 200);
    }, 60_000, 200);
  }, 180_000);

  afterAll(async () => {
    for (const a of agents) { a.proc.signal('SIGCONT'); a.proc.killNow(); }
    await Promise.all(agents.map((a) => a.proc.wait()));
    await nc?.close();
    await nats?.stop();
    if (process.env.EDGE_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
  });

  it('SIGKILL of the owner, then SIGSTOP of the next one, with INSERTs in flight: every acknowledged row exactly once', async () => {
    const actor = 'l1';
    await timed(live()[0]!, `/ins?actor=${actor}&t=warm-l1`);
    const all: Call[] = [{ path: '?t=warm-l1', agent: '', start: 0, end: 0, status: 200, text: '' }];
    const seen = new Set<string>();

    // 1. kill -9 of the owner while INSERTs flow through the two other agents.
    const owner = await ownerOf(actor, live());
    const others = live().filter((a) => a !== owner);
    const t1 = traffic(others, actor);
    const inside = timed(others[0]!, `/slowins?actor=${actor}&t=inside-kill-${seq++}&ms=2000`);
    await sleep(1_000);
    owner.proc.signal('SIGKILL');
    await sleep(4_000);
    await t1.stop();
    all.push(...t1.calls, await inside);
    for (const t of t1.seen) seen.add(t);
    expect(t1.calls.filter((c) => c.status === 200 && c.start > t1.calls[0]!.start).length).toBeGreaterThan(0);

    // 2. SIGSTOP of the new owner (one of the two left) with INSERTs in flight, then SIGCONT.
    const next = await ownerOf(actor, live());
    const caller = live().find((a) => a !== next)!;
    const t2 = traffic([caller], actor);
    const inside2 = timed(caller, `/slowins?actor=${actor}&t=inside-stop-${seq++}&ms=2000`);
    await sleep(700);
    next.proc.signal('SIGSTOP');
    await sleep(5_000);
    next.proc.signal('SIGCONT');
    await sleep(1_500);
    await t2.stop();
    all.push(...t2.calls, await inside2);
    for (const t of t2.seen) seen.add(t);

    await checkExact(actor, all, seen, caller);
    // Snapshots were taken along the way (every 40 statements), so a new owner reads the
    // database file and a short tail of the log, not the whole history.
    const loaded = await (await ActorLog.open({ nc, log: quiet })).load({ namespace: NS, actor: 'ledgers', id: (await timed(caller, `/id?actor=${actor}`)).text });
    expect(loaded.snapshot).not.toBeNull();
    expect(loaded.state.values.has('sql.db')).toBe(true);
    expect([...loaded.state.values.keys()].filter((k) => k.startsWith('sql.log.')).length).toBeLessThan(200);
    console.log(`${actor}: snapshot of ${loaded.snapshot!.bytes} bytes, ${loaded.commitsSinceSnapshot} commits after it`);
  });
});
