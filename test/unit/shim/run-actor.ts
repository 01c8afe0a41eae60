import type { Limits } from '../../../common/api/index.js';
import type { ActorState, StorageOp } from '../../../common/actor-ops.js';
import type { ActorCallOptions, ActorRequest, ActorResponse, ActorRouter, ActorTarget } from '../../../node-agent/bindings/actor-binding.js';
import { ActorIsolate, type ActorDefinition, type ActorHooks } from '../../../node-agent/actors/isolate.js';
import { hostBindings } from '../../../node-agent/bindings/host-bindings.js';
import { ActorStorage } from '../../../node-agent/bindings/actor-storage.js';
import { SqlActorStorage } from '../../../node-agent/bindings/sql-storage.js';
import type { WorkerEnv } from '../../../node-agent/abi/bridge.js';
import { IsolatePool } from '../../../node-agent/isolate/pool.js';
import { WorkerIsolate, type IsolateHooks, type WorkerDefinition } from '../../../node-agent/isolate/worker-isolate.js';

// Actors in real isolates for the unit tests: ActorIsolate activations over ActorStorage,
// a worker with actor bindings (WorkerIsolate), and FakeActorHost, an in-process test
// double of the agent's actor router: one activation per id, events one at a time,
// writes "committed" to an in-memory log after each event (takePending), activations
// rebuilt from that log.

export const TEST_LIMITS: Limits = { cpuMsPerRequest: 2000, memoryMiB: 128, subrequests: 50, wallMsPerRequest: 30_000 };

let pool: IsolatePool | undefined;
export async function actorPool(): Promise<IsolatePool> {
  if (!pool) {
    pool = new IsolatePool({ size: 1, defaultMemoryMiB: 128 });
    await pool.start();
  }
  return pool;
}

export interface Logs {
  lines: { level: string; message: string }[];
  disposals: string[];
}

export function testHooks(router?: ActorRouter): IsolateHooks & ActorHooks & Logs {
  const lines: Logs['lines'] = [];
  const disposals: string[] = [];
  return {
    lines,
    disposals,
    onLog: (_w, level, message) => lines.push({ level, message }),
    onDispose: (_w, reason) => disposals.push(reason),
    bindings: hostBindings(router ? { actorRouter: router } : {}),
    ...(router ? { actorRouter: router } : {}),
  };
}

export function workerDef(source: string, opts: { name?: string; limits?: Partial<Limits>; env?: Partial<WorkerEnv> } = {}): WorkerDefinition {
  const name = opts.name ?? 'test-actor';
  return {
    key: `test/${name}`, name, source, digest: 'sha256:test',
    limits: { ...TEST_LIMITS, ...opts.limits }, env: { text: {}, ...opts.env },
  };
}

/** Applies committed ops to a state (what the durable log does). */
export function applyOps(state: ActorState, ops: StorageOp[]): ActorState {
  const values = new Map(state.values);
  let alarm = state.alarm;
  for (const op of ops) {
    if (op.op === 'put') values.set(op.key, op.value);
    else if (op.op === 'delete') values.delete(op.key);
    else if (op.op === 'deleteAll') values.clear();
    else alarm = op.time;
  }
  return { values, alarm };
}

export const emptyState = (): ActorState => ({ values: new Map(), alarm: null });

export async function activate(def: ActorDefinition, id: string, opts: { state?: ActorState; maxBytes?: number; name?: string; hooks?: IsolateHooks } = {}): Promise<ActorIsolate> {
  const p = await actorPool();
  const storageOpts = { maxBytes: opts.maxBytes ?? 10 * 1024 * 1024, actor: `${def.actor} ${id}` };
  // A SQLite-backed class (def.sqlite) gets the storage the agent gives one.
  const storage = def.sqlite ? new SqlActorStorage(opts.state ?? emptyState(), storageOpts) : new ActorStorage(opts.state ?? emptyState(), storageOpts);
  return ActorIsolate.activate(def, { id, name: opts.name, storage }, p.take(def.worker.limits.memoryMiB), opts.hooks ?? testHooks());
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function request(url: string, init: { method?: string; headers?: [string, string][]; body?: string } = {}): ActorRequest {
  return { url, method: init.method ?? 'GET', headers: init.headers ?? [], body: init.body === undefined ? null : enc.encode(init.body) };
}

export const text = (r: ActorResponse): string => dec.decode(r.body);

/** A worker (not an actor) with actor bindings, answering whole requests. */
export class BoundWorker {
  private constructor(readonly isolate: WorkerIsolate, readonly hooks: IsolateHooks & Logs) {}

  static async load(source: string, actors: WorkerEnv['actors'], router: ActorRouter | undefined, limits: Partial<Limits> = {}): Promise<BoundWorker> {
    const p = await actorPool();
    const hooks = testHooks(router);
    const def = workerDef(source, { name: 'caller', limits, env: { actors } });
    return new BoundWorker(await WorkerIsolate.load(def, p.take(def.limits.memoryMiB), hooks), hooks);
  }

  async fetch(url: string): Promise<{ status: number; text: string }> {
    const { id, response } = this.isolate.begin({ url, method: 'GET', headers: [], body: null });
    try {
      const res = await response;
      const chunks: Uint8Array[] = [];
      if (res.body === 'stream') for (let c = await this.isolate.pullBody(id); c !== null; c = await this.isolate.pullBody(id)) chunks.push(c);
      else if (res.body !== null) chunks.push(new Uint8Array(res.body));
      return { status: res.status, text: dec.decode(Buffer.concat(chunks)) };
    } finally {
      await this.isolate.finish(id);
    }
  }

  dispose(): void { this.isolate.dispose('shutdown'); }
}

interface Hosted {
  def: ActorDefinition;
  /** Committed state per id (the "durable log"). */
  committed: Map<string, ActorState>;
  active: Map<string, ActorIsolate>;
  queues: Map<string, Promise<unknown>>;
}

/** A test double of the agent's actor host and router. */
export class FakeActorHost implements ActorRouter {
  private readonly byUid = new Map<string, Hosted>();
  readonly calls: { target: ActorTarget; id: string; url: string; opts?: ActorCallOptions }[] = [];
  readonly activations: string[] = [];

  /** Serves a DurableActor: calls for `target.uid` run `def`'s class. */
  serve(target: ActorTarget, def: ActorDefinition): void {
    this.byUid.set(target.uid, { def, committed: new Map(), active: new Map(), queues: new Map() });
  }

  private hosted(uid: string): Hosted {
    const h = this.byUid.get(uid);
    if (!h) throw new Error('no such DurableActor');
    return h;
  }

  /** Runs a task on the actor's activation, one at a time per id, committing its writes after. */
  run<T>(uid: string, id: string, name: string | undefined, task: (a: ActorIsolate) => Promise<T>): Promise<T> {
    const h = this.hosted(uid);
    const prev = h.queues.get(id) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(async () => {
      let a = h.active.get(id);
      if (!a || a.dead) {
        a = await activate(h.def, id, { state: h.committed.get(id), name });
        this.activations.push(id);
        h.active.set(id, a);
        this.commit(h, id, a);
      }
      try {
        const out = await task(a);
        this.commit(h, id, a);
        return out;
      } catch (err) {
        a.storage.discardPending();
        if (a.dead) h.active.delete(id);
        throw err;
      }
    });
    h.queues.set(id, next);
    return next;
  }

  private commit(h: Hosted, id: string, a: ActorIsolate): void {
    const ops = a.storage.takePending();
    h.committed.set(id, applyOps(h.committed.get(id) ?? emptyState(), ops));
  }

  fetch(target: ActorTarget, id: string, req: ActorRequest, opts?: ActorCallOptions): Promise<ActorResponse> {
    this.calls.push({ target, id, url: req.url, opts });
    return this.run(target.uid, id, opts?.name, (a) => a.fetch(req));
  }

  /** The live activation of an id, if any. */
  activation(uid: string, id: string): ActorIsolate | undefined {
    return this.hosted(uid).active.get(id);
  }

  committed(uid: string, id: string): ActorState | undefined {
    return this.hosted(uid).committed.get(id);
  }

  /** Evicts an activation (its committed state stays). */
  evict(uid: string, id: string): void {
    const h = this.hosted(uid);
    h.active.get(id)?.dispose('idle');
    h.active.delete(id);
  }

  close(): void {
    for (const h of this.byUid.values()) for (const a of h.active.values()) a.dispose('shutdown');
  }
}
