import { createHash } from 'node:crypto';
import type { NatsConnection } from 'nats';
import { WebSocket } from 'ws';
import { actorClassKey, workerKey } from '../../common/keys.js';
import { createLogger, type LogFields } from '../../common/log.js';
import { connectNats, encodeJson, type ActorConfig, type EdgeBuckets, type WorkerConfig } from '../../common/nats.js';
import { provisionNats } from '../../common/nats-provision.js';
import { Agent } from '../../node-agent/agent.js';
import { startNats, type TestNats } from '../harness/nats.js';

// One in-process Agent following a real nats-server (JetStream), with EdgeWorkers and their
// DurableActors published to its buckets as the operator would: for tests of actors that
// need real isolates, the real actor log and real WebSocket clients, without a cluster.

export const REGION = 'hib-1';

export interface ActorWorker {
  namespace: string;
  name: string;
  source: string;
  host: string;
  /** binding name -> DurableActor { name, className } of this worker. */
  actors: Record<string, { name: string; className: string; idleTimeoutSeconds?: number; storageBackend?: 'kv' | 'sqlite' }>;
  cpuMsPerRequest?: number;
  memoryMiB?: number;
  compatibilityFlags?: string[];
  /** Worker Loader binding names. */
  workerLoaders?: string[];
}

export interface ActorAgent {
  agent: Agent;
  nats: TestNats;
  nc: NatsConnection;
  buckets: EdgeBuckets;
  logs: LogFields[];
  port: number;
  publish(w: ActorWorker): Promise<void>;
  stop(): Promise<void>;
}

const digest = (s: string | Uint8Array) => `sha256:${createHash('sha256').update(s).digest('hex')}`;

/** `nats`: share another test agent's nats-server (a second agent of the same region) instead of starting one. */
export async function startActorAgent(opts: { maxWebSocketMessageBytes?: number; nats?: TestNats; name?: string } = {}): Promise<ActorAgent> {
  const nats = opts.nats ?? await startNats();
  const name = opts.name ?? 'agent-1';
  const nc = await connectNats(nats.url, 'actor-agent test');
  const quiet = createLogger({}, () => undefined);
  const buckets = await provisionNats(nc, { log: quiet });
  const logs: LogFields[] = [];
  const agent = await Agent.start({
    log: createLogger({}, (line) => { logs.push(JSON.parse(line) as LogFields); }, 'debug'),
    source: { kind: 'nats', url: nats.url, region: REGION, node: `node-${name}` },
    agentName: name,
    listen: { host: '127.0.0.1', port: 0 },
    peerListen: { host: '127.0.0.1', port: 0 },
    peerToken: 'actor-agent-test-peer-token',
    presenceTtlMs: 5_000,
    actorLogReplicas: 1,
    maxBodyBytes: 1024 * 1024,
    maxWebSocketMessageBytes: opts.maxWebSocketMessageBytes ?? 1024 * 1024,
    poolSize: 2,
  });
  const publish = async (w: ActorWorker): Promise<void> => {
    const bytes = new TextEncoder().encode(w.source);
    const bundleDigest = digest(bytes);
    await buckets.bundles.putBlob({ name: bundleDigest }, bytes);
    const actors: Record<string, { namespace: string; actor: string; uid: string }> = {};
    for (const [binding, a] of Object.entries(w.actors)) {
      const uid = `uid-${w.namespace}-${a.name}`;
      actors[binding] = { namespace: w.namespace, actor: a.name, uid };
      const cfg: ActorConfig = {
        namespace: w.namespace, name: a.name, uid, generation: 1, className: a.className, worker: w.name, region: REGION,
        idleTimeoutSeconds: a.idleTimeoutSeconds ?? 1, maxBytesPerActor: 10 * 1024 * 1024,
        ...(a.storageBackend ? { storageBackend: a.storageBackend } : {}),
      };
      await buckets.actors.put(actorClassKey(w.namespace, a.name), encodeJson(cfg));
    }
    const worker: WorkerConfig = {
      namespace: w.namespace, name: w.name, uid: `uid-${w.namespace}-${w.name}`, generation: 1, version: digest(`${bundleDigest}/v1`), bundleDigest,
      regions: [REGION], routes: [{ host: w.host, pathPrefix: '/' }],
      limits: { cpuMsPerRequest: w.cpuMsPerRequest ?? 200, memoryMiB: w.memoryMiB ?? 128, subrequests: 50, wallMsPerRequest: 30_000 },
      minWarmIsolates: 1, env: { text: {}, sealed: {}, actors, ai: {}, ...(w.workerLoaders ? { workerLoaders: w.workerLoaders } : {}) },
      ...(w.compatibilityFlags ? { compatibilityFlags: w.compatibilityFlags } : {}),
    };
    await buckets.workers.put(workerKey(w.namespace, w.name), encodeJson(worker));
  };
  return {
    agent, nats, nc, buckets, logs, port: agent.port, publish,
    stop: async () => {
      await agent.stop();
      await nc.close();
      if (!opts.nats) await nats.stop();
    },
  };
}

export interface Client {
  ws: WebSocket;
  /** The next message not taken yet (waits for it). */
  next(): Promise<string>;
  closed: Promise<{ code: number; reason: string }>;
}

export function connect(port: number, host: string, path = '/'): Promise<Client> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, undefined, { headers: { host } });
    const inbox: string[] = [];
    const waiting: ((m: string) => void)[] = [];
    ws.on('message', (data, isBinary) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer);
      const m = isBinary ? `bytes:${[...buf].join(',')}` : buf.toString('utf8');
      const w = waiting.shift();
      if (w) w(m); else inbox.push(m);
    });
    const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
    ws.on('error', reject);
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => reject(new Error(`unexpected response ${res.statusCode}: ${body}`)));
    });
    ws.on('open', () => resolve({
      ws,
      closed,
      next: () => {
        const m = inbox.shift();
        if (m !== undefined) return Promise.resolve(m);
        return new Promise((r) => waiting.push(r));
      },
    }));
  });
}
