import { createLogger, type LogFields } from '../../common/log.js';
import type { ActorConfig } from '../../common/nats.js';
import { ActorHost } from '../../node-agent/actors/host.js';
import { ActorIsolate } from '../../node-agent/actors/isolate.js';
import { FakeActorLog } from '../../node-agent/actors/fake/log.js';
import type { ActorRouter, ActorTarget } from '../../node-agent/bindings/actor-binding.js';
import { ActorStorage } from '../../node-agent/bindings/actor-storage.js';
import { hostBindings } from '../../node-agent/bindings/host-bindings.js';
import { IsolatePool } from '../../node-agent/isolate/pool.js';
import { WorkerIsolate, WorkerScriptError, type WorkerDefinition } from '../../node-agent/isolate/worker-isolate.js';
import type { ServiceRouter } from '../../node-agent/bindings/service-binding.js';
import { ActorExceptionError } from '../../node-agent/abi/bridge.js';
import type { Limits } from '../../common/api/index.js';

// Real isolates behind the agent's real ActorHost (single activation, input gate, output
// gate: a call's writes are committed to the log before its answer is released), the log
// an in-memory FakeActorLog. A worker with an actor binding calls through a router that
// hands every call to that host, as the agent's router does for an actor it owns.

export const LIMITS: Limits = { cpuMsPerRequest: 2000, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 };
export const TARGET: ActorTarget = { namespace: 'rpc', actor: 'objects', uid: 'aaaabbbb-0000-4000-8000-000000000001' };

export interface RpcRig {
  host: ActorHost;
  log: FakeActorLog;
  logs: LogFields[];
  /** Calls the worker made to the actor so far (each an actor request: one round trip). */
  actorCalls(): number;
  /** Runs a request on the caller worker; answers its status and body text. */
  call(path: string, method?: string): Promise<{ status: number; text: string }>;
  close(): Promise<void>;
}

/**
 * `services`: service binding name -> the bound worker's source, each loaded in one isolate
 * of its own (calls to it run one at a time).
 */
export async function startRpcRig(source: string, className: string, binding = 'OBJ', services: Record<string, string> = {}): Promise<RpcRig> {
  const pool = new IsolatePool({ size: 2, defaultMemoryMiB: 128 });
  await pool.start();
  const logs: LogFields[] = [];
  const log = createLogger({}, (line) => { logs.push(JSON.parse(line) as LogFields); }, 'debug');
  const durable = new FakeActorLog();
  const worker: WorkerDefinition = {
    key: 'rpc/app', name: 'app', source, digest: 'sha256:test', limits: LIMITS,
    env: {
      text: { GREETING: 'hi' }, actors: { [binding]: TARGET },
      services: Object.fromEntries(Object.keys(services).map((name) => [name, { namespace: 'rpc', worker: name.toLowerCase() }])),
    },
  };
  const cfg: ActorConfig = {
    namespace: TARGET.namespace, name: TARGET.actor, uid: TARGET.uid, generation: 1, className, worker: 'app',
    region: 'r1', idleTimeoutSeconds: 60, maxBytesPerActor: 1024 * 1024,
  };
  const onLog = (_w: string, level: string, message: string) => logs.push({ level, msg: message } as unknown as LogFields);
  const isolates: WorkerIsolate[] = [];
  // eslint-disable-next-line prefer-const
  let host: ActorHost;
  let actorCalls = 0;
  const router: ActorRouter = {
    fetch: (_target, id, req) => { actorCalls++; return host.call(cfg, id, req); },
  };
  const bound = new Map<string, WorkerIsolate>();
  const serviceRouter: ServiceRouter = {
    async call(target, req, depth) {
      const iso = bound.get(target.worker);
      if (!iso) throw new Error(`no worker ${target.worker}`);
      const { id, response } = iso.begin({ ...req, depth, ...(target.entrypoint ? { entrypoint: target.entrypoint } : {}) });
      try {
        const res = await response;
        const chunks: Uint8Array[] = [];
        if (res.body === 'stream') for (let c = await iso.pullBody(id); c !== null; c = await iso.pullBody(id)) chunks.push(c);
        else if (res.body !== null) chunks.push(new Uint8Array(res.body));
        return { status: res.status, statusText: res.statusText, headers: res.headers, body: Buffer.concat(chunks) };
      } catch (err) {
        if (err instanceof WorkerScriptError && err.exception) throw new ActorExceptionError(err.exception, target.worker);
        throw err;
      } finally {
        await iso.finish(id);
      }
    },
  };
  for (const [name, src] of Object.entries(services)) {
    const def: WorkerDefinition = { key: `rpc/${name.toLowerCase()}`, name: name.toLowerCase(), source: src, digest: 'sha256:svc', limits: LIMITS, env: { text: {} } };
    const iso = await WorkerIsolate.load(def, pool.take(LIMITS.memoryMiB), { onLog, onDispose: () => undefined, bindings: hostBindings() });
    bound.set(name.toLowerCase(), iso);
    isolates.push(iso);
  }
  host = new ActorHost({
    agent: 'a1', log, durable,
    factory: {
      storage: (state, c) => new ActorStorage(state, { maxBytes: c.maxBytesPerActor, actor: `${c.namespace}/${c.name}` }),
      instance: (c, id, storage) => ActorIsolate.activate(
        { worker, className: c.className, actor: `${c.namespace}/${c.name}` },
        { id, storage: storage as ActorStorage },
        pool.take(LIMITS.memoryMiB), { onLog, onDispose: () => undefined, actorRouter: router, serviceRouter },
      ),
    },
  });
  const caller = await WorkerIsolate.load(worker, pool.take(LIMITS.memoryMiB), { onLog, onDispose: () => undefined, bindings: hostBindings({ actorRouter: router, serviceRouter }) });
  isolates.push(caller);
  const dec = new TextDecoder();
  return {
    host, log: durable, logs, actorCalls: () => actorCalls,
    async call(path, method = 'GET') {
      const { id, response } = caller.begin({ url: `http://app.test${path}`, method, headers: [], body: null });
      try {
        const res = await response;
        const chunks: Uint8Array[] = [];
        if (res.body === 'stream') for (let c = await caller.pullBody(id); c !== null; c = await caller.pullBody(id)) chunks.push(c);
        else if (res.body !== null) chunks.push(new Uint8Array(res.body));
        return { status: res.status, text: dec.decode(Buffer.concat(chunks)) };
      } finally {
        await caller.finish(id);
      }
    },
    async close() {
      for (const i of isolates) i.dispose('shutdown');
      await host.stop();
      pool.close();
    },
  };
}
