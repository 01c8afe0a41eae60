import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentRing } from '../../common/agent-ring.js';
import { AgentView } from '../../common/agent-view.js';
import { workerKey } from '../../common/keys.js';
import { createLogger } from '../../common/log.js';
import { connectNats, encodeJson, type EdgeBuckets, type WorkerConfig } from '../../common/nats.js';
import { provisionNats } from '../../common/nats-provision.js';
import { EDGE_BIN } from '../../cli/local/cluster.js';
import { freePort } from '../../cli/local/ports.js';
import { ManagedProcess } from '../../cli/local/process.js';
import { REPO_ROOT } from '../../cli/local/tools.js';
import { Agent } from '../../node-agent/agent.js';
import { startNats, type TestNats } from '../harness/nats.js';

// A worker's one-member shard is an `edge agent` process that is paused (SIGSTOP: the kernel
// still accepts its connections and buffers what is sent, nothing answers), and clients
// reach another agent (docs/shards.md):
//  - requests sent while it is stopped (GET, POST, a WebSocket handshake) are served by the
//    agent they reached, while the member is still stopped, and a GET or POST that way runs
//    exactly once: the member, resumed, does not run the copy it had in its buffer (each
//    run hits a sink server here, with the request's token);
//  - a request the member took and was running when it stopped is answered (502, outcome
//    unknown) while it is still stopped, not held until it resumes; one that runs longer
//    than that bound on a live member is kept by its heartbeats.
// Without the 100 Continue before a GET's last chunk, the resumed member ran the GET a
// second time; without its heartbeats the held request waited for SIGCONT.

const REGION = 'stop-1';
const TOKEN = 'shard-sigstop-test-peer-token-0123';
const HOST = 'stop.test';
const TTL_MS = 1000;
/** How long the test waits for an answer before it resumes the member anyway (then fails). */
const GIVE_UP_MS = 30_000;
const quiet = createLogger({}, () => undefined);
const digest = (s: string | Uint8Array) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const source = (sink: number) => `
export default {
  async fetch(request) {
    const url = new URL(request.url);
    const t = url.searchParams.get('t');
    if (t) await fetch('http://127.0.0.1:${sink}/hit?t=' + t);
    if (request.headers.get('upgrade') === 'websocket') {
      const [client, server] = Object.values(new WebSocketPair());
      server.accept();
      server.addEventListener('message', (e) => server.send('echo:' + e.data));
      return new Response(null, { status: 101, webSocket: client });
    }
    if (url.pathname === '/hold') await new Promise((r) => setTimeout(r, 5000));
    return new Response('ran ' + t + ' ' + request.method);
  },
};`;

interface Res { status: number; body: string }
function send(port: number, host: string, path: string, method = 'GET', body?: string): Promise<Res> {
  return new Promise((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port, method, path, headers: { host }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    r.on('error', reject);
    r.end(body);
  });
}

async function until<T>(what: string, f: () => T | undefined | false | Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('shards: a member stopped with SIGSTOP', () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let buckets: EdgeBuckets;
  let view: AgentView;
  let local: Agent;
  let proc: ManagedProcess;
  let procPort = 0;
  let dir = '';
  let sink: Server;
  let sinkPort = 0;
  const hits = new Map<string, number>();
  let name = '';
  let stopped = false;

  beforeAll(async () => {
    sink = createServer((req, res) => {
      const t = new URL(req.url ?? '/', 'http://sink').searchParams.get('t') ?? '';
      hits.set(t, (hits.get(t) ?? 0) + 1);
      res.end('ok');
    });
    sink.listen(0, '127.0.0.1');
    await once(sink, 'listening');
    sinkPort = (sink.address() as { port: number }).port;
    nats = await startNats();
    nc = await connectNats(nats.url, 'shard sigstop test');
    buckets = await provisionNats(nc, { log: quiet });
    dir = mkdtempSync(join(tmpdir(), 'edge-shard-stop-'));
    local = await Agent.start({
      log: quiet, source: { kind: 'nats', url: nats.url, region: REGION, node: 'node-s1' }, agentName: 's1',
      listen: { host: '127.0.0.1', port: 0 }, peerListen: { host: '127.0.0.1', port: 0 }, peerToken: TOKEN, presenceTtlMs: 5_000,
      actorLogReplicas: 1, maxBodyBytes: 1024 * 1024, maxWebSocketMessageBytes: 1024 * 1024, poolSize: 1, egressAllow: [`127.0.0.1:${sinkPort}`],
    });
    procPort = await freePort();
    // Shards are on by default: no --shards flag.
    proc = new ManagedProcess('agent-s2', process.execPath, [
      '--no-node-snapshot', EDGE_BIN, 'agent', '--nats', nats.url, '--region', REGION, '--node', 'node-s2', '--agent-name', 's2',
      '--listen', `127.0.0.1:${procPort}`, '--peer-listen', '127.0.0.1:0', '--admin', `127.0.0.1:${await freePort()}`, '--pool-size', '1', '--presence-ttl-ms', String(TTL_MS),
      '--isolate-hosts', '0', '--egress-allow', `127.0.0.1:${sinkPort}`,
    ], { logFile: join(dir, 'agent-s2.log'), cwd: REPO_ROOT, env: { ...process.env, EDGE_PEER_TOKEN: TOKEN } });
    view = new AgentView(buckets, quiet);
    await view.start();
    await until('s2 in the view', () => { proc.assertRunning(); return view.agents(REGION).some((p) => p.agent === 's2'); }, 90_000);
    // A worker whose one-member shard is s2.
    const ring = new AgentRing(view);
    for (let i = 0; i < 300 && !name; i++) if (ring.members(REGION, `ns/w${i}`, 1)[0]?.agent === 's2') name = `w${i}`;
    expect(name).not.toBe('');
    const bytes = new TextEncoder().encode(source(sinkPort));
    const bundleDigest = digest(bytes);
    await buckets.bundles.putBlob({ name: bundleDigest }, bytes);
    const cfg: WorkerConfig = {
      namespace: 'ns', name, uid: `uid-${name}`, generation: 1, version: digest(`${bundleDigest}/${name}`), bundleDigest,
      regions: [REGION], routes: [{ host: `${name}.${HOST}`, pathPrefix: '/' }],
      limits: { cpuMsPerRequest: 2000, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 },
      minWarmIsolates: 1, env: { text: {}, sealed: {}, actors: {}, ai: {} }, shard: { min: 1, max: 1 },
    };
    await buckets.workers.put(workerKey('ns', name), encodeJson(cfg));
  }, 120_000);

  afterAll(async () => {
    proc?.signal('SIGCONT');
    proc?.killNow();
    await view?.stop();
    await local?.stop();
    await nc?.close();
    await nats?.stop();
    sink?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const host = () => `${name}.${HOST}`;
  /** s1 forwards the worker's requests to s2 (both see s2 live, s2 serves it). */
  async function forwarding(): Promise<void> {
    await until('s1 to forward to s2', async () => {
      if (local.server.shardMembers(`ns/${name}`)?.[0] !== 's2') return false;
      const before = await forwards();
      const r = await send(local.port, host(), '/');
      return r.status === 200 && (await forwards()) > before;
    });
  }
  const fallbacks = async (reason: string) => (await local.server.metrics.shardFallbacks.get()).values.filter((v) => v.labels.reason === reason).reduce((n, v) => n + v.value, 0);
  const forwards = async () => (await local.server.metrics.shardForwards.get()).values.reduce((n, v) => n + v.value, 0);
  /** Runs `f` with s2 stopped; resumes it after `f`, or after GIVE_UP_MS if `f` is still waiting then. */
  async function whileStopped<T>(f: () => Promise<T>): Promise<{ value: T; answeredWhileStopped: boolean }> {
    proc.signal('SIGSTOP');
    stopped = true;
    let answered = false;
    const giveUp = setTimeout(() => { stopped = false; proc.signal('SIGCONT'); }, GIVE_UP_MS);
    try {
      const value = await f();
      answered = stopped;
      return { value, answeredWhileStopped: answered };
    } finally {
      clearTimeout(giveUp);
      stopped = false;
      proc.signal('SIGCONT');
    }
  }

  it('serves requests sent while the member is stopped where they landed, each run once', async () => {
    await forwarding();
    const timeouts = await fallbacks('timeout');
    const { value, answeredWhileStopped } = await whileStopped(async () => {
      // The view still names s2 for a TTL: s1 forwards, s2 never says 100 Continue.
      const get = await send(local.port, host(), '/?t=g1');
      const post = await send(local.port, host(), '/?t=p1', 'POST', 'body');
      const ws = new WebSocket(`ws://127.0.0.1:${local.port}/?t=ws1`, [], { headers: { host: host() } });
      const echo = await new Promise<string>((resolve, reject) => {
        ws.once('open', () => ws.send('hi'));
        ws.once('message', (d) => resolve(d.toString()));
        ws.once('error', reject);
      });
      ws.close();
      return { get, post, echo };
    });
    expect(answeredWhileStopped).toBe(true);
    expect(value.get).toEqual({ status: 200, body: 'ran g1 GET' });
    expect(value.post).toEqual({ status: 200, body: 'ran p1 POST' });
    expect(value.echo).toBe('echo:hi');
    // At least the GET went to s2 first and was given up on.
    expect(await fallbacks('timeout')).toBeGreaterThan(timeouts);
    // Resumed, s2 reads what was in its buffers; it answers a request of its own after them.
    await until('s2 to answer again', async () => (await send(procPort, host(), '/?t=after')).status === 200);
    await until('the sink to see s2\'s request', () => hits.get('after') === 1);
    await sleep(1000);
    expect(hits.get('g1')).toBe(1);
    expect(hits.get('p1')).toBe(1);
  }, 120_000);

  it('keeps a long request on a live member: its heartbeats outlast the silence bound (TTL + 1 s)', async () => {
    await until('s2 back in s1\'s view', () => view.agents(REGION).some((p) => p.agent === 's2'));
    await forwarding();
    const before = await forwards();
    expect(await send(local.port, host(), '/hold?t=h0')).toEqual({ status: 200, body: 'ran h0 GET' });
    expect(await forwards()).toBe(before + 1);
    expect(hits.get('h0')).toBe(1);
  }, 60_000);

  it('answers a request the member took and then stopped on, while it is still stopped', async () => {
    await forwarding();
    const held = send(local.port, host(), '/hold?t=h1');
    await until('s2 to run the held request', () => hits.get('h1') === 1);
    const { value, answeredWhileStopped } = await whileStopped(() => held);
    expect(answeredWhileStopped).toBe(true);
    expect(value.status).toBe(502);
    expect(value.body).toMatch(/outcome unknown/);
    expect(hits.get('h1')).toBe(1);
  }, 120_000);
});
