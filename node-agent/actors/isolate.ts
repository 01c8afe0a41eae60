import { hostBindings } from '../bindings/host-bindings.js';
import type { HibernationCalls } from '../bindings/host-callbacks.js';
import type { HibernationEvent } from '../sockets/hibernation.js';
import type { ActorRequest, ActorResponse, ActorRouter } from '../bindings/actor-binding.js';
import type { ActorStorage } from '../bindings/actor-storage.js';
import type { ServiceRouter } from '../bindings/service-binding.js';
import type { LoaderRouter } from '../bindings/worker-loader.js';
import type { DispatchRequest, DispatchResponse } from '../abi/bridge.js';
import { PulledBody, type BodyStream } from '../../common/body-stream.js';
import type { WarmIsolate } from '../isolate/pool.js';
import {
  STARTUP_CPU_MS, STARTUP_WALL_MS, WorkerIsolate, WorkerScriptError,
  type DisposalReason, type IsolateHooks, type WorkerDefinition,
} from '../isolate/worker-isolate.js';
import { EdgeError } from '../../common/errors.js';
import { ActorDeactivationReasons as Why, type ActorDeactivationReason } from '../../common/reasons.js';

// One actor activation in one isolate: the DurableActor's worker bundle loaded in actor
// mode, `new namespace[className](state, env)` constructed, and events delivered to the
// instance one at a time (the isolate runs one event at a time, like a worker's; the
// host's input gate orders them). Built on WorkerIsolate: the same limits watchdog (CPU
// and wall budgets per event, memory limit), dispose, and request dispatch (streamed or
// whole bodies, the synchronous fast path for quick handlers).
//
// Life of an activation (the actor host drives it):
//   const a = await ActorIsolate.activate(def, { id, name?, storage }, pool.take(mem), hooks)
//       resolves once the constructor ran and every blockConcurrencyWhile it started has
//       settled: nothing may be delivered before. Commit storage.takePending() next (the
//       constructor may have written).
//   per request:  await a.fetch(req) (bodies whole or streamed: a streamed response's
//                 `ended` says when the request is over), or a.begin(req) ... a.finish(id);
//                 then commit storage.takePending(); release the response head only after.
//   per alarm:    await a.alarm({ retryCount, isRetry }); then commit.
//   a.dispose(reason) when evicted.
// Any rejection: drop the event's writes (storage.discardPending()). When the error is an
// ActorResetError, or a.dead is true (a limit was hit), the isolate is gone: the actor must
// be activated afresh (from its committed state) for the next event.

const DISPOSAL_REASONS = new Set<string>(['cpu', 'memory', 'wall', 'crash', 'idle', 'replaced', 'shutdown', 'reset'] satisfies DisposalReason[]);
/** Planned hand-overs are not failures: they must not read as resets in the logs. */
const PLANNED = new Set<string>([Why.Idle, Why.RingChange, Why.NewVersion, Why.Deleted] satisfies ActorDeactivationReason[]);

/**
 * The isolate's disposal reason for a host's deactivation reason: 'drain' counts as
 * 'shutdown' (sockets close with 1001), the other planned hand-overs as 'replaced',
 * anything else ('fenced', 'write-failed') as 'reset'.
 */
export function disposalReasonOf(reason: DisposalReason | ActorDeactivationReason): DisposalReason {
  if (DISPOSAL_REASONS.has(reason)) return reason as DisposalReason;
  if (reason === Why.Drain) return 'shutdown';
  return PLANNED.has(reason) ? 'replaced' : 'reset';
}

/** How long a blockConcurrencyWhile callback may run before the actor is reset (Durable Objects' 30 s). */
export const BLOCK_CONCURRENCY_TIMEOUT_MS = 30_000;

/**
 * The actor must be reset: a blockConcurrencyWhile callback threw or did not settle in
 * time. The isolate is already disposed when this is thrown; the host drops the actor's
 * uncommitted writes (storage.discardPending()) and activates it afresh for the next event.
 */
export class ActorResetError extends EdgeError {
  constructor(readonly actor: string, readonly id: string, readonly reason: string) {
    super(`actor ${actor} ${id} was reset: ${reason}`, { context: { actor: `${actor}/${id}` } });
  }
}

/** A DurableActor's class in a worker bundle. */
export interface ActorDefinition {
  /**
   * The EdgeWorker version whose bundle exports the class: its source, limits (per event:
   * CPU, wall, subrequests; memory per isolate) and env (vars, secrets, ai and actor
   * bindings), which is the actor's env. Its `name` labels logs and errors.
   */
  worker: WorkerDefinition;
  className: string;
  /** "<namespace>/<DurableActor name>", for messages. */
  actor: string;
  /** Default BLOCK_CONCURRENCY_TIMEOUT_MS. */
  blockConcurrencyTimeoutMs?: number;
  /** SQLite-backed (spec.storage.backend: sqlite): the activation's storage is a SqlActorStorage. */
  sqlite?: boolean;
}

/** Which actor an activation is, and its storage (built by the host from the committed state). */
export interface ActorActivation {
  /** 64 hex */
  id: string;
  /** The name the id was made from, when known: state.id.name. */
  name?: string;
  storage: ActorStorage;
}

/** An actor isolate's hooks: its bindings are built here, around its storage. */
export type ActorHooks = Omit<IsolateHooks, 'bindings'> & {
  /** Where the actor's own env.<actor binding>.get(id).fetch() calls go. */
  actorRouter?: ActorRouter;
  /** The agent's egress allowances on top of the worker's policy (HostBindingsOptions.egressAllow). */
  egressAllow?: readonly string[];
  /** Where the actor's env.<service binding> calls go (the agent's worker server). */
  serviceRouter?: ServiceRouter;
  /** Where env.<worker loader> runs dynamic workers (the agent's DynamicWorkers). */
  loaderRouter?: LoaderRouter;
  /** The actor's hibernatable WebSockets on the agent (actors/hibernation.ts). */
  hibernation?: HibernationCalls;
};

export interface AlarmInfo {
  /** 0 on the first run of an alarm, then 1, 2, ... */
  retryCount: number;
  /** Default: retryCount > 0. */
  isRetry?: boolean;
}

export class ActorIsolate {
  private constructor(
    readonly def: ActorDefinition,
    readonly id: string,
    readonly storage: ActorStorage,
    /** The worker isolate in actor mode (for socket events: deliver(), setSocketOwner()). */
    readonly isolate: WorkerIsolate,
  ) {}

  /**
   * Loads the bundle in actor mode, constructs the instance and waits for the
   * blockConcurrencyWhile work its constructor started. Rejects with a BundleError (the
   * class is not exported, or not a class; the bundle does not load), a WorkerScriptError
   * (the constructor threw), an ActorResetError (a blockConcurrencyWhile callback threw or
   * timed out) or a WorkerLimitError; the isolate is disposed in every case.
   */
  static async activate(def: ActorDefinition, activation: ActorActivation, warm: WarmIsolate, hooks: ActorHooks): Promise<ActorIsolate> {
    const { actorRouter, egressAllow, serviceRouter, loaderRouter, hibernation, ...isolateHooks } = hooks;
    const bindings = hostBindings({ storage: activation.storage, ...(actorRouter ? { actorRouter } : {}), ...(egressAllow ? { egressAllow } : {}), ...(serviceRouter ? { serviceRouter } : {}), ...(loaderRouter ? { loaderRouter } : {}), ...(hibernation ? { hibernation } : {}) });
    const w = await WorkerIsolate.load(def.worker, warm, { ...isolateHooks, bindings }, {
      className: def.className,
      id: activation.id,
      name: activation.name,
      blockTimeoutMs: def.blockConcurrencyTimeoutMs ?? BLOCK_CONCURRENCY_TIMEOUT_MS,
      sqlite: def.sqlite === true,
    });
    const a = new ActorIsolate(def, activation.id, activation.storage, w);
    try {
      if (def.sqlite) {
        // Opening the database (compiling SQLite's module, restoring the snapshot, replaying
        // the log after it) is the platform's work, not the first request's: it runs under
        // the startup budget on top of a request's (replay is bounded by the snapshot
        // policy, bindings/sql-storage.ts, to about that).
        const limits = def.worker.limits;
        const r = await w.actorEvent('sqlOpen', null, { cpuMs: STARTUP_CPU_MS + limits.cpuMsPerRequest, wallMs: STARTUP_WALL_MS + limits.wallMsPerRequest });
        if (r.error !== null) throw new WorkerScriptError(def.worker.name, `actor ${def.actor} ${a.id}: ${r.error}`);
      }
      const r = await w.actorEvent('construct', null);
      if (r.error !== null) throw new WorkerScriptError(def.worker.name, `actor ${def.actor} ${a.id}: ${r.error}`);
      a.checkReset(r.reset);
    } catch (err) {
      a.dispose('crash');
      throw err;
    }
    return a;
  }

  get dead(): boolean { return this.isolate.dead; }
  get busy(): boolean { return this.isolate.busy; }
  get lastUsed(): number { return this.isolate.lastUsed; }

  private checkReset(reason: string | null): void {
    if (reason === null) return;
    this.dispose('reset');
    throw new ActorResetError(this.def.actor, this.id, reason);
  }

  /**
   * Starts a request (see WorkerIsolate.begin); the isolate is busy until finish(id).
   * The response may come before the request is over: finish(id) says when it is.
   */
  begin(req: DispatchRequest): { id: number; response: Promise<DispatchResponse> } {
    return this.isolate.begin(req);
  }

  pushBody(id: number, chunk: Uint8Array | null): void { this.isolate.pushBody(id, chunk); }
  pullBody(id: number): Promise<Uint8Array | null> { return this.isolate.pullBody(id); }
  cancel(id: number, reason: string): void { this.isolate.cancel(id, reason); }

  /**
   * Ends a request: waits for its ctx.waitUntil / state.waitUntil work and the
   * blockConcurrencyWhile callbacks it started (the next event must not be delivered
   * before), then frees the isolate. Rejects with ActorResetError when one of those
   * callbacks threw or timed out, or when the isolate died meanwhile (a limit).
   */
  async finish(id: number): Promise<void> {
    if (this.isolate.finishNow(id)) return;
    await this.isolate.finish(id);
    if (this.dead) throw new ActorResetError(this.def.actor, this.id, 'its isolate was disposed while the request finished (a limit was hit)');
    const r = await this.isolate.actorEvent('gate', null);
    this.checkReset(r.reset);
  }

  /**
   * One request as an ActorRouter call carries it. A streamed request body (`stream`) is
   * fed to the handler only as it reads it (bodyWanted); a streamed response body comes
   * back as `stream`, pulled from the isolate as the caller reads, and `ended` settles once
   * the request is over (the body ended or was cancelled, then finish()): until then the
   * isolate is busy. The wall limit bounds the handler, up to its Response; the body then
   * streams for as long as the caller reads (CPU and memory limits still apply).
   * Rejects with a WorkerScriptError when the handler throws or returns no Response,
   * WorkerLimitError, or ActorResetError; the request is then over.
   */
  async fetch(req: ActorRequest): Promise<ActorResponse & { ended?: Promise<void> }> {
    const upload = req.stream;
    const { id, response } = this.begin({ url: req.url, method: req.method, headers: req.headers, body: upload ? 'stream' : req.body });
    if (upload) void this.feed(id, upload);
    const over = async () => {
      upload?.cancel('the actor\'s request is over');
      await this.finish(id);
    };
    let res: DispatchResponse;
    try {
      res = await response;
    } catch (err) {
      // The request failed; a reset found while ending it (thrown by finish) is the bigger news.
      await over();
      throw err;
    }
    const head = { status: res.status, statusText: res.statusText, headers: res.headers };
    const webSocket = (res as { webSocket?: number }).webSocket;
    if (res.body !== 'stream') {
      await over();
      return { ...head, body: res.body === null ? new Uint8Array(0) : new Uint8Array(res.body), ...(webSocket !== undefined ? { webSocket } : {}) };
    }
    this.isolate.bodyStreaming(id);
    const stream = new PulledBody(() => this.pullBody(id), (reason) => this.cancel(id, reason));
    const ended = stream.done.then(over);
    // Whoever runs the request awaits it (the actor host); a failure nobody awaited is not a crash.
    ended.catch(() => undefined);
    return { ...head, body: new Uint8Array(0), stream, ended };
  }

  /** Feeds a streamed request body into request `id`, a chunk each time the handler asks for one. */
  private async feed(id: number, upload: BodyStream): Promise<void> {
    try {
      for (;;) {
        if (!(await this.isolate.bodyWanted(id))) { upload.cancel('the actor\'s request is over'); return; }
        const chunk = await upload.read();
        this.pushBody(id, chunk);
        if (chunk === null) return;
      }
    } catch (err) {
      // The caller's body failed (cancelled, its pump broke): the handler's read rejects.
      this.cancel(id, `the request body failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /**
   * Runs the instance's alarm() handler. The alarm is cleared first (getAlarm() in the
   * handler gives null, and setAlarm() there sets the next one), so on success storage
   * holds the next alarm or null; on failure, discardPending() restores the one that
   * fired, for a retry. Rejects with WorkerScriptError (alarm() threw, or the class has
   * none), WorkerLimitError or ActorResetError.
   */
  async alarm(info: AlarmInfo | number = { retryCount: 0 }): Promise<void> {
    const retryCount = typeof info === 'number' ? info : info.retryCount;
    const isRetry = typeof info === 'number' ? info > 0 : (info.isRetry ?? info.retryCount > 0);
    this.storage.setAlarm(null);
    const r = await this.isolate.actorEvent('alarm', { retryCount, isRetry });
    this.checkReset(r.reset);
    if (r.error !== null) throw new WorkerScriptError(this.def.worker.name, `actor ${this.def.actor} ${this.id}: ${r.error}`);
  }

  /**
   * A SQLite-backed actor hands its database file to its storage (sqlCheckpoint), for the
   * snapshot the host is about to write. Run between events only.
   */
  async prepareSnapshot(): Promise<void> {
    const r = await this.isolate.actorEvent('sqlExport', null);
    this.checkReset(r.reset);
  }

  /**
   * Runs the class's webSocketMessage / webSocketClose / webSocketError handler for one
   * event of a hibernatable socket (the host's input gate orders them). Rejects like
   * alarm(): WorkerScriptError when the handler threw, WorkerLimitError, ActorResetError.
   */
  async hibernationEvent(event: HibernationEvent): Promise<void> {
    // isolated-vm copies an ArrayBuffer, not a view into a larger one.
    const arg = event.type === 'message' && typeof event.data !== 'string'
      ? { ...event, data: event.data.buffer.slice(event.data.byteOffset, event.data.byteOffset + event.data.byteLength) }
      : event;
    const r = await this.isolate.actorEvent('ws', arg);
    this.checkReset(r.reset);
    if (r.error !== null) throw new WorkerScriptError(this.def.worker.name, `actor ${this.def.actor} ${this.id}: ${r.error}`);
  }

  /** WebSockets accepted by the actor and still open (the actor stays active while any is). */
  get openSockets(): number { return this.isolate.openSockets; }

  /** Disposes the isolate; the host's deactivation reasons map as disposalReasonOf says. */
  dispose(reason: DisposalReason | ActorDeactivationReason): void {
    this.isolate.dispose(disposalReasonOf(reason));
  }
}
