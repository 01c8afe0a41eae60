import { createHash } from 'node:crypto';
import { createServer, request, type IncomingHttpHeaders } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentRing } from '../../common/agent-ring.js';
import { AgentView } from '../../common/agent-view.js';
import { agentKey, workerKey } from '../../common/keys.js';
import { createLogger } from '../../common/log.js';
import { connectNats, encodeJson, type EdgeBuckets, type Presence, type WorkerConfig } from '../../common/nats.js';
import { provisionNats } from '../../common/nats-provision.js';
import { Agent } from '../../node-agent/agent.js';
import { encodeForwardMeta, FORWARD_META_HEADER, SERVE_PATH } from '../../node-agent/peer/forward-request.js';
import { startNats, type TestNats } from '../harness/nats.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EDGE_BIN } from '../../cli/local/cluster.js';
import { freePort } from '../../cli/local/ports.js';
import { ManagedProcess } from '../../cli/local/process.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { connect } from './actor-agent.js';

// Shards with real agents (docs/shards.md): three in-process agents of one region on a real
// nats-server, each worker's shard two of them. A request that lands on the third is
// served by a member, exactly as the client sent it (method, headers, a large streamed
// body, a streamed response, a WebSocket); a forwarded request is never forwarded again;
// a member that died (its presence still live, its port gone: the state right after a
// SIGKILL) does not fail the request: the first agent serves it itself.

const REGION = 'shard-1';
const TOKEN = 'shards-test-peer-token-0123456789';
const HOST = 'shard.test';

const SOURCE = `
export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (request.headers.get('upgrade') === 'websocket') {
      const [client, server] = Object.values(new WebSocketPair());
      server.accept();
      server.addEventListener('message', (e) => server.send('echo:' + e.data));
      return new Response(null, { status: 101, webSocket: client });
    }
    if (url.pathname === '/hold') {
      await new Promise((r) => setTimeout(r, 1500));
      return new Response('held');
    }
    if (url.pathname === '/stream') {
      let i = 0;
      const enc = new TextEncoder();
      return new Response(new ReadableStream({ pull(c) { if (i < 50) c.enqueue(enc.encode('chunk ' + i++ + '\\n')); else c.close(); } }));
    }
    const buf = new Uint8Array(await request.arrayBuffer());
    const hex = [...new Uint8Array(await crypto.subtle.digest('SHA-256', buf))].map((b) => b.toString(16).padStart(2, '0')).join('');
    return Response.json({
      method: request.method, url: request.url, test: request.headers.get('x-test'), len: buf.length, sha: hex,
      forward: request.headers.get('${FORWARD_META_HEADER}'), token: request.headers.get('x-edge-peer-token'),
    }, { headers: { 'x-answer': 'yes' } });
  },
};`;

interface Res { status: number; headers: IncomingHttpHeaders; body: Buffer }

function send(port: number, opts: { method?: string; path?: string; host?: string; headers?: Record<string, string>; body?: Buffer; chunk?: number }): Promise<Res> {
  return new Promise((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path ?? '/', headers: { host: opts.host ?? HOST, ...opts.headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    r.on('error', reject);
    if (opts.body) {
      // Written in pieces, chunked: the body streams through the first agent.
      const step = opts.chunk ?? 64 * 1024;
      for (let i = 0; i < opts.body.length; i += step) r.write(opts.body.subarray(i, i + step));
    }
    r.end();
  });
}

async function until<T>(what: string, f: () => T | undefined | Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const counter = async (c: { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> }, labels: Record<string, string> = {}): Promise<number> =>
  (await c.get()).values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((n, v) => n + v.value, 0);

const digest = (s: string | Uint8Array) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

let nats: TestNats;
let nc: NatsConnection;
let buckets: EdgeBuckets;
let view: AgentView;
const agents = new Map<string, Agent>();
const quiet = createLogger({}, () => undefined);

async function publish(namespace: string, name: string, shard?: { min: number; max: number }): Promise<void> {
  const bytes = new TextEncoder().encode(SOURCE);
  const bundleDigest = digest(bytes);
  await buckets.bundles.putBlob({ name: bundleDigest }, bytes);
  const cfg: WorkerConfig = {
    namespace, name, uid: `uid-${namespace}-${name}`, generation: 1, version: digest(`${bundleDigest}/${JSON.stringify(shard)}`), bundleDigest,
    regions: [REGION], routes: [{ host: `${name}.${namespace}.${HOST}`, pathPrefix: '/' }],
    limits: { cpuMsPerRequest: 2000, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 },
    minWarmIsolates: 1, env: { text: {}, sealed: {}, actors: {}, ai: {} }, ...(shard ? { shard } : {}),
  };
  await buckets.workers.put(workerKey(namespace, name), encodeJson(cfg));
}

/** Every agent serves the worker and computes the same two-member shard; returns the members and the one outside. */
async function shardOf(ref: string, size = 2): Promise<{ members: string[]; outsider: string }> {
  const members = await until(`the agents to agree on ${ref}'s shard`, () => {
    const seen = [...agents.values()].map((a) => a.server.shardMembers(ref));
    if (seen.some((m) => m?.length !== size)) return undefined;
    const first = JSON.stringify([...seen[0]!].sort());
    return seen.every((m) => JSON.stringify([...m!].sort()) === first) ? seen[0] : undefined;
  });
  return { members, outsider: [...agents.keys()].find((a) => !members.includes(a))! };
}

const metricsOf = (name: string) => agents.get(name)!.server.metrics;
const peerAddressOf = (name: string): string => view.agents(REGION).find((p) => p.agent === name)!.peerAddress!;

beforeAll(async () => {
  nats = await startNats();
  nc = await connectNats(nats.url, 'shards test');
  buckets = await provisionNats(nc, { log: quiet });
  for (const name of ['a1', 'a2', 'a3']) {
    agents.set(name, await Agent.start({
      log: quiet,
      source: { kind: 'nats', url: nats.url, region: REGION, node: `node-${name}` },
      agentName: name,
      listen: { host: '127.0.0.1', port: 0 },
      peerListen: { host: '127.0.0.1', port: 0 },
      peerToken: TOKEN, shards: { enabled: true },
      presenceTtlMs: 5_000,
      actorLogReplicas: 1,
      maxBodyBytes: 64 * 1024 * 1024,
      maxWebSocketMessageBytes: 1024 * 1024,
      poolSize: 2,
    }));
  }
  view = new AgentView(buckets, quiet);
  await view.start();
  await until('three agents in the view', () => view.agents(REGION).length === 3);
  await publish('ns', 'w');
}, 60_000);

afterAll(async () => {
  await view?.stop();
  for (const a of agents.values()) await a.stop();
  await nc?.close();
  await nats?.stop();
});

describe('shards across agents', () => {
  it('serves a request that lands outside the shard on a member, with method, headers and a large streamed body intact', async () => {
    const { members, outsider } = await shardOf('ns/w');
    const port = agents.get(outsider)!.port;
    const forwards = await counter(metricsOf(outsider).shardForwards);
    const inBefore = await Promise.all(members.map((m) => counter(metricsOf(m).shardForwardedIn)));
    const body = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
    const res = await send(port, { method: 'PUT', path: '/echo?q=1', host: `w.ns.${HOST}`, headers: { 'x-test': 'kept', [FORWARD_META_HEADER]: 'forged', 'x-edge-peer-token': 'forged' }, body });
    expect(res.status).toBe(200);
    expect(res.headers['x-answer']).toBe('yes');
    const out = JSON.parse(res.body.toString()) as Record<string, unknown>;
    expect(out).toMatchObject({ method: 'PUT', url: `http://w.ns.${HOST}/echo?q=1`, test: 'kept', len: body.length, sha: createHash('sha256').update(body).digest('hex') });
    // A client's own copies of the peer headers never reach the worker.
    expect(out.forward).toBeNull();
    expect(out.token).toBeNull();
    expect(await counter(metricsOf(outsider).shardForwards)).toBe(forwards + 1);
    const inAfter = await Promise.all(members.map((m) => counter(metricsOf(m).shardForwardedIn)));
    expect(inAfter.reduce((a, b) => a + b, 0)).toBe(inBefore.reduce((a, b) => a + b, 0) + 1);
    // It ran on a member, not here: the outsider keeps no isolate of the worker.
    expect(await counter(metricsOf(outsider).starts, { worker: 'ns/w' })).toBe(0);
    expect(agents.get(outsider)!.server.status().find((s) => s.key === 'ns/w')).toMatchObject({ state: 'ready', isolates: 0 });
    for (const m of members) expect(agents.get(m)!.server.status().find((s) => s.key === 'ns/w')).toMatchObject({ state: 'ready', isolates: 1 });
    // The reports the operator reads say who is in the shard.
    await until('the reports to name the shard', () => {
      const said = view.reportsFor(workerKey('ns', 'w'), REGION).filter((r) => r.report?.shardMember).map((r) => r.agent).sort();
      return JSON.stringify(said) === JSON.stringify([...members].sort());
    });
  });

  it('streams a response back through the first agent, and spreads requests over both members', async () => {
    const { members, outsider } = await shardOf('ns/w');
    const before = await Promise.all(members.map((m) => counter(metricsOf(m).shardForwardedIn)));
    for (let i = 0; i < 4; i++) {
      const res = await send(agents.get(outsider)!.port, { path: '/stream', host: `w.ns.${HOST}` });
      expect(res.status).toBe(200);
      expect(res.headers['transfer-encoding']).toBe('chunked');
      expect(res.body.toString()).toBe(Array.from({ length: 50 }, (_, j) => `chunk ${j}\n`).join(''));
    }
    const after = await Promise.all(members.map((m) => counter(metricsOf(m).shardForwardedIn)));
    for (let i = 0; i < members.length; i++) expect(after[i]! - before[i]!).toBe(2);
  });

  it('carries a WebSocket through the first agent to a member', async () => {
    const { outsider } = await shardOf('ns/w');
    const forwards = await counter(metricsOf(outsider).shardForwards);
    const c = await connect(agents.get(outsider)!.port, `w.ns.${HOST}`, '/ws');
    for (const m of ['one', 'two', 'x'.repeat(100_000)]) {
      c.ws.send(m);
      expect(await c.next()).toBe(`echo:${m}`);
    }
    c.ws.close(1000, 'done');
    expect((await c.closed).code).toBe(1000);
    expect(await counter(metricsOf(outsider).shardForwards)).toBe(forwards + 1);
  });

  it('never forwards a forwarded request again, even to a host whose view says it is not a member', async () => {
    const { outsider } = await shardOf('ns/w');
    const forwards = await counter(metricsOf(outsider).shardForwards);
    const runs = await counter(metricsOf(outsider).starts, { worker: 'ns/w' });
    const meta = encodeForwardMeta({ url: `http://w.ns.${HOST}/echo`, headers: [['x-test', 'direct']], cf: {} });
    const res = await new Promise<Res>((resolve, reject) => {
      const u = new URL(SERVE_PATH, peerAddressOf(outsider));
      const r = request({ host: u.hostname, port: u.port, method: 'POST', path: SERVE_PATH, headers: { host: `w.ns.${HOST}`, 'x-edge-peer-token': TOKEN, [FORWARD_META_HEADER]: meta, 'content-length': 3 } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      });
      r.on('error', reject);
      r.end('abc');
    });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString())).toMatchObject({ method: 'POST', test: 'direct', len: 3 });
    expect(await counter(metricsOf(outsider).shardForwards)).toBe(forwards);
    expect(await counter(metricsOf(outsider).starts, { worker: 'ns/w' })).toBe(runs + 1);
  });

  it('refuses a forwarded request without the peer token, and ignores the forward header on the public port', async () => {
    const { outsider } = await shardOf('ns/w');
    const u = new URL(SERVE_PATH, peerAddressOf(outsider));
    const meta = encodeForwardMeta({ url: `http://w.ns.${HOST}/echo`, headers: [], cf: {} });
    const refused = await send(Number(u.port), { method: 'POST', path: SERVE_PATH, host: `w.ns.${HOST}`, headers: { [FORWARD_META_HEADER]: meta, 'x-edge-peer-token': 'wrong-token-wrong-token' }, body: Buffer.from('x') });
    expect(refused.status).toBe(401);
    // A client's forged meta names another URL: the public front routes on the real one.
    const forged = encodeForwardMeta({ url: 'http://other.test/admin', headers: [['x-test', 'forged']], cf: {} });
    const res = await send(agents.get(outsider)!.port, { path: '/real', host: `w.ns.${HOST}`, headers: { [FORWARD_META_HEADER]: forged } });
    expect(JSON.parse(res.body.toString())).toMatchObject({ url: `http://w.ns.${HOST}/real`, test: null });
  });

  it('serves the request itself when the member it picked is dead (presence still live, port gone)', async () => {
    // A ghost agent: its presence says it is live, nothing listens on its peer port, as
    // for the presence TTL after a SIGKILL.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const deadPort = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const ghost: Presence = {
      agent: 'ghost', node: 'ghost', region: REGION, address: 'http://127.0.0.1:1', peerAddress: `http://127.0.0.1:${deadPort}`,
      ttlMs: 60_000, startedAt: new Date().toISOString(), draining: false,
    };
    await buckets.agents.put(agentKey(REGION, 'ghost'), encodeJson(ghost));
    try {
      await until('the ghost in every view', () => view.agents(REGION).length === 4);
      // A worker whose one-member shard is the ghost.
      const ring = new AgentRing(view);
      let name = '';
      for (let i = 0; i < 200 && !name; i++) if (ring.members(REGION, `ns/g${i}`, 1)[0]?.agent === 'ghost') name = `g${i}`;
      expect(name).not.toBe('');
      await publish('ns', name, { min: 1, max: 1 });
      await until('every agent to see the ghost as the member', () => [...agents.values()].every((a) => a.server.shardMembers(`ns/${name}`)?.[0] === 'ghost'));
      for (const [n, a] of agents) {
        const fallbacks = await counter(metricsOf(n).shardFallbacks, { reason: 'unreachable' });
        const res = await send(a.port, { method: 'POST', path: '/echo', host: `${name}.ns.${HOST}`, body: Buffer.from('payload') });
        expect(res.status).toBe(200);
        expect(JSON.parse(res.body.toString())).toMatchObject({ method: 'POST', len: 7 });
        expect(await counter(metricsOf(n).shardFallbacks, { reason: 'unreachable' })).toBe(fallbacks + 1);
        expect(await counter(metricsOf(n).starts, { worker: `ns/${name}`, start: 'cold' })).toBe(1);
      }
    } finally {
      await buckets.agents.delete(agentKey(REGION, 'ghost'));
    }
  });

  it('a stalled member (connects, never says 100 Continue, then says it late) never gets to run the request: it runs here, once', async () => {
    // A stopped process's kernel still accepts connections: this member reads the request,
    // says 100 Continue only after the first agent gave up on it, and records what it got.
    const got: Buffer[] = [];
    const stalled = createNetServer((sock) => {
      sock.on('data', (c: Buffer) => got.push(c));
      sock.on('error', () => undefined);
      setTimeout(() => { if (!sock.destroyed) sock.write('HTTP/1.1 100 Continue\r\n\r\n'); }, 3_000);
    });
    await new Promise<void>((r) => stalled.listen(0, '127.0.0.1', r));
    const port = (stalled.address() as { port: number }).port;
    const ghost: Presence = {
      agent: 'stalled', node: 'stalled', region: REGION, address: 'http://127.0.0.1:1', peerAddress: `http://127.0.0.1:${port}`,
      ttlMs: 60_000, startedAt: new Date().toISOString(), draining: false,
    };
    await buckets.agents.put(agentKey(REGION, 'stalled'), encodeJson(ghost));
    try {
      await until('the stalled member in the view', () => view.agents(REGION).some((p) => p.agent === 'stalled'));
      const ring = new AgentRing(view);
      let name = '';
      for (let i = 0; i < 300 && !name; i++) if (ring.members(REGION, `ns/s${i}`, 1)[0]?.agent === 'stalled') name = `s${i}`;
      expect(name).not.toBe('');
      await publish('ns', name, { min: 1, max: 1 });
      const [n, a] = [...agents][0]!;
      await until('the agent to see the stalled member', () => a.server.shardMembers(`ns/${name}`)?.[0] === 'stalled');
      const timeouts = await counter(metricsOf(n).shardFallbacks, { reason: 'timeout' });
      // Bodiless and not safe: the member must not be able to run it before the 100.
      const del = await send(a.port, { method: 'DELETE', path: '/echo', host: `${name}.ns.${HOST}` });
      expect(del.status).toBe(200);
      expect(JSON.parse(del.body.toString())).toMatchObject({ method: 'DELETE', len: 0 });
      const post = await send(a.port, { method: 'POST', path: '/echo', host: `${name}.ns.${HOST}`, body: Buffer.from('only once') });
      expect(JSON.parse(post.body.toString())).toMatchObject({ method: 'POST', len: 9 });
      expect(await counter(metricsOf(n).shardFallbacks, { reason: 'timeout' })).toBe(timeouts + 2);
      expect(await counter(metricsOf(n).starts, { worker: `ns/${name}` })).toBe(2);
      // What the member got: two heads, neither request complete (no last chunk, no body).
      await new Promise((r) => setTimeout(r, 3_200));
      const wire = Buffer.concat(got).toString('latin1');
      expect(wire.match(/^(DELETE|POST) \/serve HTTP\/1\.1\r\n/gm)).toHaveLength(2);
      expect(wire).toContain('transfer-encoding: chunked');
      expect(wire).not.toContain('only once');
      expect(wire).not.toMatch(/\r\n\r\n0\r\n\r\n/);
    } finally {
      stalled.close();
      await buckets.agents.delete(agentKey(REGION, 'stalled'));
    }
  }, 30_000);

  it('forwards a bodiless request that is not safe (DELETE) and the member runs it once', async () => {
    const { members, outsider } = await shardOf('ns/w');
    const before = await Promise.all(members.map((m) => counter(metricsOf(m).starts, { worker: 'ns/w' })));
    const res = await send(agents.get(outsider)!.port, { method: 'DELETE', path: '/echo', host: `w.ns.${HOST}`, headers: { 'x-test': 'del' } });
    expect(JSON.parse(res.body.toString())).toMatchObject({ method: 'DELETE', len: 0, test: 'del' });
    const after = await Promise.all(members.map((m) => counter(metricsOf(m).starts, { worker: 'ns/w' })));
    expect(after.reduce((x, y) => x + y, 0)).toBe(before.reduce((x, y) => x + y, 0) + 1);
  });

  it('keeps an unsharded worker (shard.min 0) warm on every agent and serves it where it lands', async () => {
    await publish('ns', 'all', { min: 0, max: 1 });
    await until('every agent to serve ns/all with all three in its shard', () => [...agents.values()].every((a) => a.server.shardMembers('ns/all')?.length === 3));
    await until('a warm isolate of ns/all on every agent', () => [...agents.values()].every((a) => a.server.status().find((s) => s.key === 'ns/all' && s.state === 'ready' && s.isolates === 1)));
    for (const [n, a] of agents) {
      const forwards = await counter(metricsOf(n).shardForwards);
      expect((await send(a.port, { path: '/', host: `all.ns.${HOST}` })).status).toBe(200);
      expect(await counter(metricsOf(n).shardForwards)).toBe(forwards);
      expect(await counter(metricsOf(n).starts, { worker: 'ns/all', start: 'warm' })).toBe(1);
    }
  });

  it('grows a worker\'s shard when the region reports load for it, and shrinks it back when the load is gone', async () => {
    const { outsider } = await shardOf('ns/w');
    // Load as another process of the region reports it in its presence (draining: in no ring).
    const loaded: Presence = {
      agent: 'loaded', node: 'loaded', region: REGION, address: 'http://127.0.0.1:1', ttlMs: 60_000,
      startedAt: new Date().toISOString(), draining: true, shardLoad: { 'ns/w': 11 },
    };
    await buckets.agents.put(agentKey(REGION, 'loaded'), encodeJson(loaded));
    try {
      // 11 in flight at 4 per member: 3 members, the outsider among them, warm.
      await shardOf('ns/w', 3);
      await until('the outsider to warm the worker', () => agents.get(outsider)!.server.status().find((s) => s.key === 'ns/w' && s.state === 'ready' && s.isolates >= 1));
      expect(await metricsOf(outsider).registry.getSingleMetricAsString('edge_shard_size_hosts')).toMatch(/edge_shard_size_hosts\{worker="ns\/w"[^}]*\} 3\n/);
      expect(await metricsOf(outsider).registry.getSingleMetricAsString('edge_shard_member')).toMatch(/edge_shard_member\{worker="ns\/w"[^}]*\} 1\n/);
      const forwards = await counter(metricsOf(outsider).shardForwards);
      expect((await send(agents.get(outsider)!.port, { path: '/', host: `w.ns.${HOST}` })).status).toBe(200);
      expect(await counter(metricsOf(outsider).shardForwards)).toBe(forwards);
    } finally {
      await buckets.agents.delete(agentKey(REGION, 'loaded'));
    }
    const back = await shardOf('ns/w', 2);
    expect(back.outsider).toBe(outsider);
  });

  it('moves the shard when a member leaves: the host that takes its place warms the worker up', async () => {
    await publish('ns', 'm');
    const { members, outsider } = await shardOf('ns/m');
    await until('the members to keep a warm isolate', () => members.every((m) => agents.get(m)!.server.status().find((s) => s.key === 'ns/m' && s.state === 'ready' && s.isolates === 1)));
    expect(agents.get(outsider)!.server.status().find((s) => s.key === 'ns/m')).toMatchObject({ isolates: 0 });
    const leaving = members[0]!;
    await agents.get(leaving)!.stop();
    agents.delete(leaving);
    const after = await shardOf('ns/m');
    expect(after.members.sort()).toEqual([outsider, members[1]!].sort());
    await until('the new member to keep a warm isolate', () => agents.get(outsider)!.server.status().find((s) => s.key === 'ns/m' && s.state === 'ready' && s.isolates === 1));
    const runs = await counter(metricsOf(outsider).starts, { worker: 'ns/m', start: 'warm' });
    expect((await send(agents.get(outsider)!.port, { path: '/', host: `m.ns.${HOST}` })).status).toBe(200);
    expect(await counter(metricsOf(outsider).starts, { worker: 'ns/m', start: 'warm' })).toBe(runs + 1);
  });
});

describe('shards: a saturated member', () => {
  const region = 'shard-2';
  const pair = new Map<string, Agent>();
  afterAll(async () => { for (const a of pair.values()) await a.stop(); });

  it('refuses the forward before reading its body, and the first agent serves the request itself', async () => {
    for (const name of ['b1', 'b2']) {
      pair.set(name, await Agent.start({
        log: quiet, source: { kind: 'nats', url: nats.url, region, node: `node-${name}` }, agentName: name,
        listen: { host: '127.0.0.1', port: 0 }, peerListen: { host: '127.0.0.1', port: 0 }, peerToken: TOKEN, shards: { enabled: true }, presenceTtlMs: 5_000,
        actorLogReplicas: 1, maxBodyBytes: 1024 * 1024, maxWebSocketMessageBytes: 1024 * 1024, poolSize: 1,
        // One isolate per worker: one request running and one waiting saturate it.
        maxIsolatesPerWorker: 1,
      }));
    }
    const bytes = new TextEncoder().encode(SOURCE);
    const bundleDigest = digest(bytes);
    await buckets.bundles.putBlob({ name: bundleDigest }, bytes);
    const cfg: WorkerConfig = {
      namespace: 'ns', name: 'busy', uid: 'uid-busy', generation: 1, version: digest(`${bundleDigest}/busy`), bundleDigest,
      regions: [region], routes: [{ host: `busy.${HOST}`, pathPrefix: '/' }],
      limits: { cpuMsPerRequest: 2000, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 },
      minWarmIsolates: 1, env: { text: {}, sealed: {}, actors: {}, ai: {} }, shard: { min: 1, max: 1 },
    };
    await buckets.workers.put(workerKey('ns', 'busy'), encodeJson(cfg));
    const member = await until('both agents to agree on the one member', () => {
      const seen = [...pair.values()].map((a) => a.server.shardMembers('ns/busy')?.join());
      return seen[0] !== undefined && seen[0] !== '' && seen.every((m) => m === seen[0]) ? seen[0] : undefined;
    });
    const outsider = [...pair.keys()].find((n) => n !== member)!;
    const m = pair.get(member)!;
    const o = pair.get(outsider)!;
    const holds = [send(m.port, { path: '/hold', host: `busy.${HOST}` }), send(m.port, { path: '/hold', host: `busy.${HOST}` })];
    await until('the member to be saturated', () => m.server.saturated('ns/busy'), 10_000);
    const overloaded = await counter(o.server.metrics.shardFallbacks, { reason: 'overloaded' });
    const res = await send(o.port, { method: 'POST', path: '/echo', host: `busy.${HOST}`, body: Buffer.alloc(200_000, 7) });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString())).toMatchObject({ method: 'POST', len: 200_000 });
    expect(await counter(o.server.metrics.shardFallbacks, { reason: 'overloaded' })).toBe(overloaded + 1);
    expect(await counter(o.server.metrics.starts, { worker: 'ns/busy', start: 'cold' })).toBe(1);
    for (const h of await Promise.all(holds)) expect(h.body.toString()).toBe('held');
  });

  it('a draining member takes no forwarded request: it says not-here before the body, and the first agent serves it', async () => {
    const member = [...pair.keys()].find((n) => pair.get(n)!.server.shardMembers('ns/busy')?.includes(n))!;
    const m = pair.get(member)!;
    const o = pair.get([...pair.keys()].find((n) => n !== member)!)!;
    // The first step of a drain (SIGTERM); its presence still says live, so o still forwards to it.
    m.server.front.drain();
    const notHere = await counter(o.server.metrics.shardFallbacks, { reason: 'not-here' });
    const inBefore = await counter(m.server.metrics.shardForwardedIn);
    const res = await send(o.port, { method: 'POST', path: '/echo', host: `busy.${HOST}`, body: Buffer.alloc(1000, 7) });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body.toString())).toMatchObject({ method: 'POST', len: 1000 });
    expect(await counter(o.server.metrics.shardFallbacks, { reason: 'not-here' })).toBe(notHere + 1);
    expect(await counter(m.server.metrics.shardForwardedIn)).toBe(inBefore);
  });
});

describe('shards: an `edge agent` process with isolate hosts, SIGKILLed', () => {
  const region = 'shard-3';
  let local: Agent | undefined;
  let proc: ManagedProcess | undefined;
  let procPort = 0;
  let dir = '';
  let regionView: AgentView | undefined;
  afterAll(async () => {
    proc?.killNow();
    await regionView?.stop();
    await local?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A worker of namespace ns whose one-member shard is the process named `who` (by ring), published to the region. */
  async function workerOn(who: (p: Presence) => boolean, tag: string): Promise<string> {
    const ring = new AgentRing(regionView!);
    let name = '';
    for (let i = 0; i < 300 && !name; i++) { const m = ring.members(region, `ns/${tag}${i}`, 1)[0]; if (m && who(m)) name = `${tag}${i}`; }
    expect(name).not.toBe('');
    const bytes = new TextEncoder().encode(SOURCE);
    const bundleDigest = digest(bytes);
    await buckets.bundles.putBlob({ name: bundleDigest }, bytes);
    const cfg: WorkerConfig = {
      namespace: 'ns', name, uid: `uid-${name}`, generation: 1, version: digest(`${bundleDigest}/${name}`), bundleDigest,
      regions: [region], routes: [{ host: `${name}.${HOST}`, pathPrefix: '/' }],
      limits: { cpuMsPerRequest: 2000, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 },
      minWarmIsolates: 1, env: { text: {}, sealed: {}, actors: {}, ai: {} }, shard: { min: 1, max: 1 },
    };
    await buckets.workers.put(workerKey('ns', name), encodeJson(cfg));
    return name;
  }

  it('forwards from an isolate host to another agent, and to one; a SIGKILLed member means the request runs here', async () => {
    dir = mkdtempSync(join(tmpdir(), 'edge-shards-'));
    local = await Agent.start({
      log: quiet, source: { kind: 'nats', url: nats.url, region, node: 'node-c1' }, agentName: 'c1',
      listen: { host: '127.0.0.1', port: 0 }, peerListen: { host: '127.0.0.1', port: 0 }, peerToken: TOKEN, shards: { enabled: true }, presenceTtlMs: 5_000,
      actorLogReplicas: 1, maxBodyBytes: 1024 * 1024, maxWebSocketMessageBytes: 1024 * 1024, poolSize: 1,
    });
    procPort = await freePort();
    proc = new ManagedProcess('agent-c2', process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'agent', '--nats', nats.url, '--region', region, '--node', 'node-c2', '--agent-name', 'c2',
      '--listen', `127.0.0.1:${procPort}`, '--peer-listen', '127.0.0.1:0', '--admin', `127.0.0.1:${await freePort()}`, '--pool-size', '1',
      // A long TTL: after the kill its presence stays live, as it would for up to a TTL.
      '--presence-ttl-ms', '30000', '--shards', 'on', '--isolate-hosts', '1', '--isolate-host-spares', '0', '--no-cordon',
    ], { logFile: join(dir, 'agent-c2.log'), cwd: REPO_ROOT, env: { ...process.env, EDGE_PEER_TOKEN: TOKEN } });
    regionView = new AgentView(buckets, quiet);
    await regionView.start();
    // c1, c2's front and its host c2~h0 (the front is in no ring).
    await until('c2 and its isolate host in the view', () => { proc!.assertRunning(); return regionView!.agents(region).some((p) => p.isolateHost?.of === 'c2'); }, 90_000);

    // Served by c1, reached through c2's front and its isolate host.
    const onLocal = await workerOn((p) => p.agent === 'c1', 'l');
    await until('c1 to serve it', () => local!.server.status().some((s) => s.key === `ns/${onLocal}` && s.state === 'ready'));
    const inBefore = await counter(local.server.metrics.shardForwardedIn);
    const viaProc = await until('c2 to serve it', async () => {
      const r = await send(procPort, { method: 'PATCH', path: '/echo', host: `${onLocal}.${HOST}`, headers: { 'x-test': 'through-hosts' }, body: Buffer.from('from c2') });
      return r.status === 200 ? r : undefined;
    });
    expect(JSON.parse(viaProc.body.toString())).toMatchObject({ method: 'PATCH', test: 'through-hosts', len: 7 });
    expect(await counter(local.server.metrics.shardForwardedIn)).toBe(inBefore + 1);

    // Served by c2's isolate host, reached through c1.
    const onProc = await workerOn((p) => p.isolateHost?.of === 'c2', 'p');
    await until('c1 to know the worker', () => local!.server.shardMembers(`ns/${onProc}`)?.[0]?.startsWith('c2~'));
    const forwards = await counter(local.server.metrics.shardForwards);
    const taken = await until('c2 to take it', async () => {
      const r = await send(local!.port, { path: '/echo', host: `${onProc}.${HOST}` });
      return r.status === 200 ? r : undefined;
    });
    expect(JSON.parse(taken.body.toString())).toMatchObject({ method: 'GET' });
    expect(await counter(local.server.metrics.shardForwards)).toBeGreaterThan(forwards);
    expect(await counter(local.server.metrics.starts, { worker: `ns/${onProc}` })).toBe(0);

    // Stopped (SIGSTOP: its connections stay open, nothing answers): a safe GET, which asks
    // for no 100 Continue, is still given up on when the member's acknowledgement does not
    // come, and runs here, instead of waiting for the member to be resumed.
    const timeouts = await counter(local.server.metrics.shardFallbacks, { reason: 'timeout' });
    proc.signal('SIGSTOP');
    try {
      const r = await send(local.port, { path: '/echo', host: `${onProc}.${HOST}`, headers: { 'x-test': 'while-stopped' } });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body.toString())).toMatchObject({ method: 'GET', test: 'while-stopped' });
      expect(await counter(local.server.metrics.shardFallbacks, { reason: 'timeout' })).toBe(timeouts + 1);
    } finally {
      proc.signal('SIGCONT');
    }

    proc.killNow();
    proc = undefined;
    const fallbacks = await counter(local.server.metrics.shardFallbacks, { reason: 'unreachable' });
    // Its presence is still live: c1 still sees c2's host as the member, and falls back.
    await until('the killed host to stop answering', async () => {
      const r = await send(local!.port, { method: 'POST', path: '/echo', host: `${onProc}.${HOST}`, body: Buffer.from('after the kill') });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body.toString())).toMatchObject({ method: 'POST', len: 14 });
      return await counter(local!.server.metrics.shardFallbacks, { reason: 'unreachable' }) > fallbacks;
    });
    expect(local.server.shardMembers(`ns/${onProc}`)?.[0]?.startsWith('c2~')).toBe(true);
    // One cold start here for the stopped member's GET; the killed member's POST found it warm.
    expect(await counter(local.server.metrics.starts, { worker: `ns/${onProc}`, start: 'cold' })).toBe(1);
  }, 150_000);
});
