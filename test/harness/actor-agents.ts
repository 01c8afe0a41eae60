import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { NatsConnection } from 'nats';
import { actorClassKey, workerKey } from '../../common/keys.js';
import { createLogger, type LogFields } from '../../common/log.js';
import { connectNats, encodeJson, type ActorConfig, type EdgeBuckets, type WorkerConfig } from '../../common/nats.js';
import { provisionNats } from '../../common/nats-provision.js';
import { freePort, waitFor } from '../../cli/local/ports.js';
import { Agent } from '../../node-agent/agent.js';
import { startNats, type TestNats } from './nats.js';

// In-process agents (real isolates, real HTTP, the real peer port) over a real nats-server,
// the workers and DurableActors published to KV as the operator would: for actor tests that
// need more than one agent without a whole cluster. And a rendezvous server the tests'
// workers and actors fetch(), for handshakes between the test and code inside isolates
// (never timing).

export const PEER_TOKEN = 'actor-agents-test-peer-token';
export const ADMIN_TOKEN = 'actor-agents-test-admin-token';

const digest = (s: string | Uint8Array) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const quiet = createLogger({}, () => undefined);

export interface TestWorker {
  name: string;
  source: string;
  host: string;
  limits?: Partial<WorkerConfig['limits']>;
  /** binding name -> DurableActor name */
  actors?: Record<string, string>;
}

export interface TestActorClass { name: string; className: string; worker: string }

export interface ActorAgents {
  nats: TestNats;
  nc: NatsConnection;
  agents: Agent[];
  logs: LogFields[][];
  region: string;
  namespace: string;
  uid(actor: string): string;
  /** The agent whose /status lists the actor `key` (namespace/actor/id). */
  ownerOf(key: string): Promise<Agent>;
  stop(): Promise<void>;
}

export async function startActorAgents(opts: {
  namespace: string;
  region: string;
  workers: TestWorker[];
  actors: TestActorClass[];
  agents: number;
  egressAllow?: string[];
}): Promise<ActorAgents> {
  const nats = await startNats();
  const nc = await connectNats(nats.url, 'actor-agents test');
  const buckets: EdgeBuckets = await provisionNats(nc, { log: quiet });
  const uid = (actor: string) => `uid-${opts.namespace}-${actor}`;
  for (const a of opts.actors) {
    const cfg: ActorConfig = {
      namespace: opts.namespace, name: a.name, uid: uid(a.name), generation: 1, className: a.className, worker: a.worker,
      region: opts.region, idleTimeoutSeconds: 300, maxBytesPerActor: 10 * 1024 * 1024,
    };
    await buckets.actors.put(actorClassKey(opts.namespace, a.name), encodeJson(cfg));
  }
  for (const w of opts.workers) {
    const bytes = new TextEncoder().encode(w.source);
    const bundleDigest = digest(bytes);
    await buckets.bundles.putBlob({ name: bundleDigest }, bytes);
    const actors: Record<string, { namespace: string; actor: string; uid: string }> = {};
    for (const [binding, actor] of Object.entries(w.actors ?? {})) actors[binding] = { namespace: opts.namespace, actor, uid: uid(actor) };
    const cfg: WorkerConfig = {
      namespace: opts.namespace, name: w.name, uid: `uid-worker-${w.name}`, generation: 1, version: digest(`${bundleDigest}/v1`), bundleDigest,
      regions: [opts.region], routes: [{ host: w.host, pathPrefix: '/' }],
      limits: { cpuMsPerRequest: 500, memoryMiB: 64, subrequests: 50, wallMsPerRequest: 30_000, ...w.limits },
      minWarmIsolates: 1, env: { text: {}, sealed: {}, actors, ai: {} },
    };
    await buckets.workers.put(workerKey(opts.namespace, w.name), encodeJson(cfg));
  }
  const agents: Agent[] = [];
  const logs: LogFields[][] = [];
  for (let i = 0; i < opts.agents; i++) {
    const lines: LogFields[] = [];
    logs.push(lines);
    const node = `node-${i}`;
    agents.push(await Agent.start({
      log: createLogger({ agent: node }, (line) => { lines.push(JSON.parse(line) as LogFields); }, 'info'),
      source: { kind: 'nats', url: nats.url, region: opts.region, node },
      agentName: node,
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: await freePort() },
      peerListen: { host: '127.0.0.1', port: 0 },
      peerToken: PEER_TOKEN,
      adminToken: ADMIN_TOKEN,
      presenceTtlMs: 2_000,
      actorLogReplicas: 1,
      maxBodyBytes: 64 * 1024 * 1024,
      maxWebSocketMessageBytes: 1024 * 1024,
      poolSize: 1,
      isolateHosts: 0,
      ...(opts.egressAllow ? { egressAllow: opts.egressAllow } : {}),
    }));
  }
  const ownerOf = async (key: string): Promise<Agent> => {
    let owner: Agent | undefined;
    await waitFor(`the agent hosting ${key}`, async () => {
      for (const a of agents) {
        const st = await (await fetch(`http://127.0.0.1:${a.adminPort}/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json() as { actors?: string[] };
        if (st.actors?.includes(key)) { owner = a; return true; }
      }
      return false;
    }, 10_000, 100);
    return owner!;
  };
  return {
    nats, nc, agents, logs, region: opts.region, namespace: opts.namespace, uid, ownerOf,
    stop: async () => {
      for (const a of agents) await a.stop().catch(() => undefined);
      await nc.close();
      await nats.stop();
    },
  };
}

/**
 * Named events between the test and code in isolates: `GET /hit?k=K&v=V` records V under K
 * (workers report what they saw), `GET /wait?k=K` answers once the test calls release(K)
 * (or "timeout" after `waitMs`, so a handshake that never comes fails the test instead of
 * hanging it).
 */
export interface Rendezvous {
  port: number;
  hits(k: string): string[];
  /** Resolves with the hits of K once there are `n` of them. */
  waitHits(k: string, n?: number): Promise<string[]>;
  release(k: string): void;
  /** Keys whose /wait ended in "timeout". */
  timedOut: Set<string>;
  close(): void;
}

export async function startRendezvous(waitMs = 15_000): Promise<Rendezvous> {
  const hits = new Map<string, string[]>();
  const released = new Set<string>();
  const waiters = new Map<string, (() => void)[]>();
  const hitWaiters: { k: string; n: number; resolve: (v: string[]) => void }[] = [];
  const timedOut = new Set<string>();
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const k = url.searchParams.get('k') ?? '';
    if (url.pathname === '/hit') {
      const list = hits.get(k) ?? [];
      list.push(url.searchParams.get('v') ?? '');
      hits.set(k, list);
      for (const w of [...hitWaiters]) if (w.k === k && list.length >= w.n) { hitWaiters.splice(hitWaiters.indexOf(w), 1); w.resolve([...list]); }
      res.end('ok');
      return;
    }
    if (url.pathname === '/wait') {
      if (released.has(k)) { res.end('released'); return; }
      const timer = setTimeout(() => { timedOut.add(k); res.end('timeout'); }, waitMs);
      const list = waiters.get(k) ?? [];
      list.push(() => { clearTimeout(timer); res.end('released'); });
      waiters.set(k, list);
      return;
    }
    res.statusCode = 404;
    res.end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return {
    port,
    hits: (k) => [...(hits.get(k) ?? [])],
    waitHits: (k, n = 1) => {
      const list = hits.get(k) ?? [];
      if (list.length >= n) return Promise.resolve([...list]);
      return new Promise((resolve) => hitWaiters.push({ k, n, resolve }));
    },
    release: (k) => {
      released.add(k);
      for (const w of waiters.get(k) ?? []) w();
      waiters.delete(k);
    },
    timedOut,
    close: () => { server.closeAllConnections(); server.close(); },
  };
}

/** A GET or POST to an agent's front with a Host header; the response is handed over as it streams. */
export function open(port: number, host: string, path: string, init: { method?: string; body?: AsyncIterable<Uint8Array> } = {}): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: init.method ?? 'GET', headers: { host }, agent: false }, resolve);
    req.on('error', reject);
    if (!init.body) { req.end(); return; }
    void (async () => {
      for await (const c of init.body!) if (!req.write(c)) await once(req, 'drain');
      req.end();
    })().catch((err: unknown) => req.destroy(err as Error));
  });
}

/** The whole body of a response, as text. */
export async function text(res: IncomingMessage): Promise<string> {
  let out = '';
  res.setEncoding('utf8');
  for await (const c of res) out += c as string;
  return out;
}
