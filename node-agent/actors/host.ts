import type { Logger } from '../../common/log.js';
import { errorMessage } from '../../common/log.js';
import type { ActorConfig } from '../../common/nats.js';
import { FencedError, type ActorAddress, type ActorState, type StorageOp } from '../../common/actor-ops.js';
import { ActorResetError } from './isolate.js';
import { WorkerScriptError } from '../isolate/worker-isolate.js';
import { ActorExceptionError } from '../abi/bridge.js';
import { actorClassKey, actorInstanceKey } from '../../common/keys.js';
import { ActorDeactivationReasons as Why, type ActorDeactivationReason } from '../../common/reasons.js';
import { NotHereError, type PeerRequest, type PeerResponse } from '../peer/protocol.js';
import type { HibernationEvent } from '../sockets/hibernation.js';
import { ACTOR_NAME_HEADER } from '../bindings/actor-binding.js';
import { ActorIds } from '../bindings/actor-id.js';
import { ArraySet } from '../../common/array-set.js';

// The actors this agent hosts. Each live actor (an activation) has its own isolate, its
// storage in memory and its claim on the actor's durable log. Requests, alarms and socket
// events run one at a time in arrival order (the input gate). A request's writes are
// committed to the log in one fenced write when it ends (also when its code threw: the
// exception reaches the caller after the commit), and its response is released
// only once that write is durable (the output gate): if the write is refused because
// another agent claimed the actor meanwhile, the response is discarded and the actor
// deactivated here, so a stale owner can never have a write acknowledged.
//
// Commits are pipelined, as workerd's are: the input gate opens when a request's handler
// returns, not when its commit is acknowledged, so the next request runs while the commit
// is in flight. Its writes wait for that commit and then go in the next one, with those of
// every request that ended meanwhile (one log write for many requests). A response waits
// for the commit holding its own writes, or, when it wrote nothing, for the newest commit
// of writes it may have read; a failed commit fails every response behind it, and the
// activation with them.
//
// A request that wrote nothing is fenced too (the read barrier): its response is released
// only after a log check sent after the read ran shows the log still ends at one of this
// activation's own writes since, i.e. nobody claimed or wrote the actor in between (reads
// that finish together share one check, outside the input gate). A superseded activation (its owner was paused, partitioned, or
// behind on the ring) therefore answers nothing from its stale memory: it deactivates and
// the call goes back to the router (421, certainly without a write). The same proof is
// made before an alarm() handler runs, and after the event loop was stalled (SIGSTOP,
// a long pause) before anything else runs on an activation; every activation is then
// checked at once so a superseded one leaves `/status` without waiting for traffic.
// Why not a lease that skips the check while it holds: claims here do not wait for the
// previous owner's lease (a claim is a compare-and-set on the log, made by whoever the
// caller's ring names), so a lease on the owner's side alone would not stop a stale read.
// See docs/actors.md, "Consistency".

/** The durable log, as actor-log.ts provides it. */
export interface ActorLogPort {
  load(addr: ActorAddress): Promise<{ state: ActorState; lastSeq: number; owner: { agent: string; epoch: number } | null }>;
  claim(addr: ActorAddress, agent: string, lastSeq: number, prevEpoch: number): Promise<{ epoch: number; seq: number }>;
  commit(addr: ActorAddress, epoch: number, expectedSeq: number, ops: StorageOp[]): Promise<number>;
  release(addr: ActorAddress, agent: string, epoch: number, expectedSeq: number): Promise<number>;
  compact(addr: ActorAddress, epoch: number, expectedSeq: number, state: ActorState, agent?: string): Promise<{ seq: number }>;
  /** The last sequence on the actor's log (0: none): the read barrier compares it with the owner's own last write. */
  lastSequence(addr: ActorAddress): Promise<number>;
}

/** The storage an actor isolate reads and writes (actor-storage.ts). */
export interface ActorStoragePort {
  /** Clears the alarm when it is still `time` (alarm() ran and did not set a new one). */
  clearAlarmIf(time: number): void;
  takePending(): StorageOp[];
  discardPending(): void;
  snapshot(): ActorState;
  readonly alarm: number | null;
  /** Set by a storage that decides when to compact (SQLite: by log size); otherwise every compactEvery commits. */
  wantsCompaction?(): boolean;
}

/** A running actor instance in its isolate. */
export interface ActorInstancePort {
  fetch(req: PeerRequest): Promise<PeerResponse>;
  alarm(retryCount: number): Promise<void>;
  dispose(reason: ActorDeactivationReason): void;
  readonly dead: boolean;
  /** Open WebSockets accepted by the actor: it stays active while any is open. */
  readonly openSockets: number;
  /** Brings state the storage snapshots from the isolate (a SQLite database file), before a compaction. */
  prepareSnapshot?(): Promise<void>;
  /** Runs the class's handler for an event of a hibernatable WebSocket (actors/hibernation.ts). */
  hibernationEvent?(event: HibernationEvent): Promise<void>;
}

/** Builds an activation's storage and instance; the agent wires it to the isolate machinery. */
export interface ActorFactory {
  storage(state: ActorState, config: ActorConfig): ActorStoragePort;
  /** `name`: the name the id was made from, when the call that activates it knows it (state.id.name). */
  instance(config: ActorConfig, id: string, storage: ActorStoragePort, name?: string): Promise<ActorInstancePort>;
}

export { ActorResetError } from './isolate.js';

/** What the router and the alarms need of the host: run a call or an alarm on an actor here. */
export interface ActorRunner {
  call(config: ActorConfig, id: string, req: PeerRequest): Promise<PeerResponse>;
  /** `name`: the id's name the alarm was set under (ActorAlarm.name), for an activation it starts. */
  alarm(config: ActorConfig, id: string, time: number, retryCount: number, name?: string): Promise<boolean>;
}

export interface ActorHostOptions {
  agent: string;
  log: Logger;
  durable: ActorLogPort;
  factory: ActorFactory;
  /** Compact an actor's log after this many commits. */
  compactEvery?: number;
  onActiveChange?(): void;
  /** Alarm index: where an alarm of an actor not in memory is remembered. */
  onAlarmSet?(config: ActorConfig, id: string, time: number | null, name?: string): void;
  /**
   * The id's name an activation made without a call gets (prewarm after a handover): the
   * alarm index's, so the alarm that follows finds an instance with ctx.id.name.
   */
  knownName?(config: ActorConfig, id: string): string | undefined;
  /**
   * Hibernatable WebSockets (actors/hibernation.ts): an actor whose only open sockets are
   * those is evicted after `idleMs` without events (or its idleTimeoutSeconds if shorter).
   */
  hibernation?: { holds(key: string): boolean; idleMs: number };
}

type Task<T> = () => Promise<T>;

/**
 * An event-loop gap longer than this (SIGSTOP, a stalled process) makes every activation
 * prove it still owns its actor before it runs anything again. Measured on the monotonic
 * clock, which keeps running while the process is stopped.
 */
export const STALL_MS = 1000;
const TICK_MS = 200;

/** How many of an activation's own log sequences a read barrier can recognise. */
const OWN_SEQS = 64;
const noop = () => undefined;

class Activation {
  private queue: Promise<unknown> = Promise.resolve();
  private pending = 0;
  lastUsed = Date.now();
  commits = 0;
  closed = false;
  /** May have been superseded without noticing (the process was stalled): prove ownership before running anything. */
  suspect = false;
  private lastSeq = 0;
  /** This activation's own records on the log (claim, commits, snapshots), newest last. */
  private readonly own: number[] = [];
  private inflight: Promise<number> | undefined;
  private queued: Promise<number> | undefined;
  /** Reads waiting for their barrier: a hand-over answers them before it releases. */
  private readonly reads = new ArraySet<Promise<unknown>>();
  /** The newest commit not yet acknowledged (in flight, or waiting for the one in flight). */
  private tail: Promise<void> | undefined;
  /** The writes of the commit waiting for the one in flight: later writes fold into it. */
  private batch: StorageOp[] | undefined;
  /** Why a commit failed: every later one fails with it (the activation is going). */
  failure: Error | undefined;
  /** A compaction is queued on the input gate. */
  compacting = false;

  constructor(
    readonly config: ActorConfig,
    readonly addr: ActorAddress,
    readonly key: string,
    readonly storage: ActorStoragePort,
    readonly instance: ActorInstancePort,
    public epoch: number,
    seq: number,
    /** The id's name the activation was made with (ctx.id.name), if it was known. */
    readonly name?: string,
  ) {
    this.seq = seq;
  }

  /** The sequence of this activation's last write: what its next fenced write expects. */
  get seq(): number { return this.lastSeq; }
  set seq(s: number) {
    this.lastSeq = s;
    this.own.push(s);
    if (this.own.length > OWN_SEQS) this.own.shift();
  }

  /**
   * Whether a log that ends at `last` proves that nothing but this activation wrote since
   * its sequence was `since`: every write of ours is fenced on the one before, so when the
   * log ends at one of ours, no other writer got in between.
   */
  current(last: number, since: number): boolean {
    return last >= since && this.own.includes(last);
  }

  /**
   * The log's last sequence, from a check sent after this call. Concurrent callers share
   * one check: while one is in flight, later callers wait for the next, which starts when
   * it returns, so a burst of reads costs two round trips, not one each.
   */
  barrier(lastSequence: () => Promise<number>): Promise<number> {
    const launch = (): Promise<number> => {
      const p = lastSequence();
      this.inflight = p;
      const clear = () => { if (this.inflight === p) this.inflight = undefined; };
      p.then(clear, clear);
      return p;
    };
    if (!this.inflight) return launch();
    this.queued ??= this.inflight.then(noop, noop).then(() => { this.queued = undefined; return launch(); });
    return this.queued;
  }

  get busy(): boolean { return this.pending > 0 || this.reads.size > 0; }

  /** The input gate: one task at a time, in arrival order. */
  run<T>(task: Task<T>): Promise<T> {
    this.pending += 1;
    const next = this.queue.then(task);
    this.queue = next.catch(() => undefined).finally(() => { this.pending -= 1; this.lastUsed = Date.now(); });
    return next;
  }

  /** Keeps a read's barrier in what idle() waits for. */
  hold<T>(read: Promise<T>): Promise<T> {
    this.reads.add(read);
    const done = () => { this.reads.delete(read); this.lastUsed = Date.now(); };
    read.then(done, done);
    return read;
  }

  /** Settles once the tasks queued now are done, and then what they left: their commits and read barriers. */
  async idle(): Promise<void> {
    await Promise.allSettled([this.queue, ...this.reads]);
    await Promise.allSettled([...this.reads]);
  }

  /**
   * Sends `ops` as a commit now when none is in flight; otherwise they go, with whatever
   * else ends meanwhile, in the commit that follows the one in flight. Resolves when they
   * are durable.
   */
  enqueue(ops: StorageOp[], send: (ops: StorageOp[]) => Promise<void>): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.batch) {
      for (const op of ops) this.batch.push(op);
      return this.tail!;
    }
    let p: Promise<void>;
    if (this.tail) {
      const batch = ops.slice();
      this.batch = batch;
      p = this.tail.then(() => {
        if (this.batch === batch) this.batch = undefined;
        return send(batch);
      });
    } else {
      p = send(ops);
    }
    this.tail = p;
    const clear = () => { if (this.tail === p) this.tail = undefined; };
    p.then(clear, (err: unknown) => { this.failure ??= err instanceof Error ? err : new Error(String(err)); clear(); });
    return p;
  }

  /** The newest commit not yet acknowledged, if any: what a read of the actor's memory depends on. */
  get unacknowledged(): Promise<void> | undefined { return this.tail; }
}

export class ActorHost implements ActorRunner {
  private readonly active = new Map<string, Activation>();
  private readonly activating = new Map<string, Promise<Activation>>();
  /** Per DurableActor uid: checks the names calls carry (takeName). */
  private readonly ids = new Map<string, ActorIds>();
  private sweeper: NodeJS.Timeout | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private lastTick = performance.now();
  private draining = false;

  constructor(private readonly opts: ActorHostOptions) {
    this.sweeper = setInterval(() => this.evictIdle(), 1000);
    this.sweeper.unref();
    this.ticker = setInterval(() => this.checkStall(), TICK_MS);
    this.ticker.unref();
  }

  /** Active actors per DurableActor (actorClassKey), for the agent's report. */
  counts(): Record<string, { active: number }> {
    const out: Record<string, { active: number }> = {};
    for (const a of this.active.values()) {
      const k = actorClassKey(a.config.namespace, a.config.name);
      out[k] = { active: (out[k]?.active ?? 0) + 1 };
    }
    return out;
  }

  get size(): number { return this.active.size; }
  isActive(key: string): boolean { return this.active.has(key); }
  keys(): string[] { return [...this.active.keys()]; }

  /**
   * The id's name the calling binding put on the request (ACTOR_NAME_HEADER), checked
   * against the id, and the request without it: the actor never sees the header.
   */
  private takeName(config: ActorConfig, id: string, req: PeerRequest): { req: PeerRequest; name?: string } {
    const i = req.headers.findIndex(([k]) => k === ACTOR_NAME_HEADER);
    if (i < 0) return { req };
    const headers = req.headers.filter(([k]) => k !== ACTOR_NAME_HEADER);
    let name: string | undefined;
    try { name = decodeURIComponent(req.headers[i]![1]); } catch { /* not ours: no name */ }
    name = this.nameOf(config, id, name);
    return { req: { ...req, headers }, ...(name !== undefined ? { name } : {}) };
  }

  /** `name` when it is the name `id` was made from, else undefined. */
  private nameOf(config: ActorConfig, id: string, name: string | undefined): string | undefined {
    if (name === undefined) return undefined;
    let ids = this.ids.get(config.uid);
    if (!ids) {
      if (this.ids.size >= 1024) this.ids.clear();
      ids = new ActorIds(config.uid);
      this.ids.set(config.uid, ids);
    }
    return ids.idFromName(name).hex === id ? name : undefined;
  }

  /** Runs one request on the actor, activating it here if needed. */
  async call(config: ActorConfig, id: string, request: PeerRequest): Promise<PeerResponse> {
    if (this.draining) throw new NotHereError(`agent ${this.opts.agent} is draining`);
    this.checkStall();
    const { req, name } = this.takeName(config, id, request);
    const act = await this.activation(config, id, name);
    const task = act.run(async () => {
      if (act.closed) throw new NotHereError(`actor ${act.key} was deactivated here`);
      if (act.suspect) await this.prove(act);
      let res: PeerResponse;
      try {
        res = await act.instance.fetch(req);
      } catch (err) {
        // A commit behind which it ran failed, and took the activation with it.
        if (act.failure) {
          act.storage.discardPending();
          throw act.failure;
        }
        const exception = err instanceof WorkerScriptError ? err.exception : undefined;
        if (exception && !act.instance.dead) {
          // The actor's code threw. As on Workers, the output gate confirms the writes it
          // made before (it does not roll them back; storage.transaction() rolled back its
          // own already): they are committed, fenced like any, and then the caller sees the
          // exception. Its stack stays here, in the owner's log.
          this.opts.log.warn('actor threw an exception', { actor: act.key, error: err });
          await this.commit(act);
          throw new ActorExceptionError(exception, act.key, { cause: err });
        }
        // A reset (a limit, a failed blockConcurrencyWhile) or an agent error: the actor
        // did not finish cleanly, and whatever it wrote is dropped with it.
        act.storage.discardPending();
        if (err instanceof ActorResetError || act.instance.dead) {
          await this.deactivate(act, Why.Reset, false);
          throw err;
        }
        // An error is an answer too, computed from the actor's state: fenced like a read.
        await this.prove(act);
        throw err;
      }
      // The output gate: a write is proven current by its fenced commit; a read waits, out
      // of the input gate, for the read barrier.
      if (!res.ended) {
        // Pipelined: the input gate opens now, and the response waits outside it.
        const readAt = act.seq;
        return { res, readAt, durable: act.hold(this.commit(act)) };
      }
      // A streamed body follows its head, and the input gate stays closed until it is over.
      let wrote: boolean;
      try {
        wrote = await this.commit(act);
      } catch (err) {
        await this.dropBody(act, res, 'the actor\'s writes could not be committed');
        throw err;
      }
      const out = { res, readAt: act.seq, durable: Promise.resolve(wrote) };
      headReady(out);
      await this.afterBody(act, res.ended);
      return out;
    });
    let headReady!: (head: Awaited<typeof task>) => void;
    const head = new Promise<Awaited<typeof task>>((resolve) => { headReady = resolve; });
    const done = await Promise.race([head, task]);
    try {
      // true: its writes, or those it may have read, are durable (a fenced commit proves it current).
      const proven = await done.durable;
      if (!proven) await act.hold(this.prove(act, done.readAt));
    } catch (err) {
      if (done.res.stream) done.res.stream.cancel('the actor moved to another agent');
      throw err;
    }
    return done.res;
  }

  /** A streamed body nobody will read: cancelled, and its request ended. */
  private async dropBody(act: Activation, res: PeerResponse, reason: string): Promise<void> {
    res.stream?.cancel(reason);
    await res.ended?.catch((err: unknown) => this.opts.log.warn('actor request failed while its body was dropped', { actor: act.key, error: err }));
  }

  /**
   * The tail of a request whose body streamed: once it is over, what the actor wrote
   * meanwhile (in its stream's pull() or cancel()) is committed before the next event.
   */
  private async afterBody(act: Activation, ended: Promise<void>): Promise<void> {
    try {
      await ended;
    } catch (err) {
      act.storage.discardPending();
      this.opts.log.warn('actor failed while streaming a response body', { actor: act.key, error: err });
      if (err instanceof ActorResetError || act.instance.dead) await this.deactivate(act, Why.Reset, false);
      return;
    }
    try {
      await this.commit(act);
    } catch (err) {
      this.opts.log.warn('actor writes made while streaming a response body could not be committed', { actor: act.key, error: err });
    }
  }

  /**
   * Runs the actor's alarm() handler for the alarm set for `time` (the caller retries with
   * backoff on failure). Returns false when the alarm is no longer set for that time.
   */
  async alarm(config: ActorConfig, id: string, time: number, retryCount: number, name?: string): Promise<boolean> {
    if (this.draining) throw new NotHereError(`agent ${this.opts.agent} is draining`);
    this.checkStall();
    const act = await this.activation(config, id, this.nameOf(config, id, name));
    return act.run(async () => {
      if (act.closed) throw new NotHereError(`actor ${act.key} was deactivated here`);
      // A handler's effects are not all in storage (fetch, logs, other actors): it runs only
      // on an activation the log still names, so a superseded owner (woken from a pause,
      // or whose ring lags) never runs an alarm its successor already ran.
      await this.prove(act);
      if (act.storage.alarm !== time) return false;
      try {
        await act.instance.alarm(retryCount);
      } catch (err) {
        act.storage.discardPending();
        if (err instanceof ActorResetError || act.instance.dead) await this.deactivate(act, Why.Reset, false);
        throw err;
      }
      act.storage.clearAlarmIf(time);
      await this.commit(act);
      return true;
    });
  }

  /** Activates an actor without a request (it just moved here). */
  async prewarm(config: ActorConfig, id: string): Promise<void> {
    if (this.draining) return;
    await this.activation(config, id, this.nameOf(config, id, this.opts.knownName?.(config, id)));
  }

  /**
   * Runs an event of a hibernatable WebSocket on the actor through its input gate,
   * activating it here if needed (waking it from hibernation), and commits what it wrote.
   */
  async socketEvent(config: ActorConfig, id: string, task: (instance: ActorInstancePort) => Promise<void>, name?: string): Promise<void> {
    if (this.draining) throw new NotHereError(`agent ${this.opts.agent} is draining`);
    this.checkStall();
    const act = await this.activation(config, id, name);
    await act.run(async () => {
      if (act.closed) throw new NotHereError(`actor ${act.key} was deactivated here`);
      if (act.suspect) await this.prove(act);
      try {
        await task(act.instance);
      } catch (err) {
        const exception = err instanceof WorkerScriptError && !act.instance.dead;
        if (!exception) {
          act.storage.discardPending();
          if (err instanceof ActorResetError || act.instance.dead) {
            await this.deactivate(act, Why.Reset, false);
            // Said as a reset whatever killed it (a limit, a crash): the socket's owner closes it.
            if (!(err instanceof ActorResetError)) throw new ActorResetError(`${config.namespace}/${config.name}`, id, (err as Error).message);
          }
          throw err;
        }
        // The handler threw: as for a request, what it wrote before is committed.
        await this.commit(act);
        throw err;
      }
      await this.commit(act);
    });
  }

  /** Runs a task (a socket event) through the actor's input gate, committing what it wrote. */
  async withActor(key: string, task: () => Promise<void>): Promise<void> {
    this.checkStall();
    const act = this.active.get(key);
    if (!act) throw new NotHereError(`actor ${key} is not active here`);
    await act.run(async () => {
      if (act.closed) throw new NotHereError(`actor ${key} was deactivated here`);
      if (act.suspect) await this.prove(act);
      try { await task(); } catch (err) { act.storage.discardPending(); throw err; }
      await this.commit(act);
    });
  }

  /**
   * Commits what the current task wrote (pipelined, see the top of this file). Resolves
   * true once that is durable. A task that wrote nothing may have read writes still in
   * flight: true once the newest commit is acknowledged, or false when none was
   * outstanding (nothing proved ownership then: the read barrier must).
   */
  private commit(act: Activation): Promise<boolean> {
    // A task that ran on top of a failed commit answers nothing from that memory.
    if (act.failure) return Promise.reject(act.failure);
    const ops = act.storage.takePending();
    if (ops.length === 0) {
      const last = act.unacknowledged;
      return last ? last.then(() => true) : Promise.resolve(false);
    }
    return act.enqueue(ops, (batch) => this.send(act, batch)).then(() => true);
  }

  /** One fenced log write of the writes of one or more tasks. */
  private async send(act: Activation, ops: StorageOp[]): Promise<void> {
    try {
      act.seq = await this.opts.durable.commit(act.addr, act.epoch, act.seq, ops);
    } catch (err) {
      act.storage.discardPending();
      if (err instanceof FencedError) {
        act.failure ??= new NotHereError(`actor ${act.key} moved to another agent`);
        this.opts.log.warn('actor write fenced: another agent owns it now; deactivating', { actor: act.key, epoch: act.epoch });
        await this.deactivate(act, Why.Fenced, false);
      } else {
        // The write's fate is unknown to us: restart the actor from the log.
        act.failure ??= new Error(`actor ${act.key}: storage write failed: ${errorMessage(err)}`, { cause: err });
        await this.deactivate(act, Why.WriteFailed, false);
      }
      throw act.failure;
    }
    act.commits += 1;
    for (const op of ops) if (op.op === 'alarm') this.scheduleAlarm(act, op.time);
    const compact = act.storage.wantsCompaction ? act.storage.wantsCompaction() : act.commits % (this.opts.compactEvery ?? 200) === 0;
    if (compact && !act.compacting) {
      act.compacting = true;
      // On the input gate, where no task can write while the snapshot is taken.
      act.run(() => this.compact(act)).catch(noop);
    }
  }

  /** Replaces the actor's log with a snapshot of its state, once no commit is outstanding. */
  private async compact(act: Activation): Promise<void> {
    act.compacting = false;
    try {
      // The snapshot must hold exactly what the log does: no write of a task still in flight.
      while (act.unacknowledged) await act.unacknowledged;
      if (act.closed) return;
      if (act.storage.wantsCompaction) await act.instance.prepareSnapshot?.();
      act.seq = (await this.opts.durable.compact(act.addr, act.epoch, act.seq, act.storage.snapshot(), this.opts.agent)).seq;
    } catch (err) {
      if (!act.closed) this.opts.log.warn('actor log compaction failed', { actor: act.key, error: err });
    }
  }

  /**
   * The read barrier: resolves when the actor's log, read after this call, still ends at
   * one of this activation's own writes made since its sequence was `since` (default: its
   * last write), so nobody claimed or wrote the actor in between; otherwise deactivates it
   * and throws NotHereError (the router retries on the owner). When the log cannot be read
   * the activation stays, unproven, and the error propagates: nothing is answered that
   * could not be proven current.
   */
  private async prove(act: Activation, since = act.seq): Promise<void> {
    const last = await act.barrier(() => this.opts.durable.lastSequence(act.addr));
    // The log may end at a commit of ours whose acknowledgement is still on its way.
    if (!act.current(last, since) && act.unacknowledged) await act.unacknowledged.catch(noop);
    if (act.current(last, since)) {
      act.suspect = false;
      return;
    }
    // Released here meanwhile (hand-over) or fenced by a concurrent write: nothing stale to report.
    if (!act.closed) {
      this.opts.log.warn('actor superseded: the log moved on since this activation\'s last write; deactivating', {
        actor: act.key, epoch: act.epoch, seq: act.seq, logSeq: last,
      });
      await this.deactivate(act, Why.Fenced, false);
    }
    throw new NotHereError(`actor ${act.key} moved to another agent`);
  }

  /**
   * Notices an event-loop gap (the process was stopped or stalled): every activation may
   * have been superseded meanwhile, so each proves ownership before it runs anything
   * again, and is checked now so a superseded one is dropped without waiting for a call.
   */
  private checkStall(): void {
    const now = performance.now();
    const gap = now - this.lastTick;
    this.lastTick = now;
    if (gap <= STALL_MS || this.active.size === 0) return;
    this.opts.log.info('event loop was stalled: actors prove they are still owned here before serving', { gapMs: Math.round(gap), actors: this.active.size });
    for (const act of this.active.values()) {
      act.suspect = true;
      act.run(async () => { if (act.suspect && !act.closed) await this.prove(act); }).catch((err: unknown) => {
        if (!(err instanceof NotHereError)) this.opts.log.warn('actor ownership check after a stall failed; the next call retries it', { actor: act.key, error: err });
      });
    }
  }

  private scheduleAlarm(act: Activation, time: number | null): void {
    this.opts.onAlarmSet?.(act.config, act.addr.id, time, act.name);
  }

  private activation(config: ActorConfig, id: string, name?: string): Promise<Activation> {
    const key = actorInstanceKey(config.namespace, config.name, id);
    const cur = this.active.get(key);
    if (cur && !cur.closed && !cur.instance.dead) return Promise.resolve(cur);
    let p = this.activating.get(key);
    if (!p) {
      p = this.activate(config, id, key, name).finally(() => this.activating.delete(key));
      this.activating.set(key, p);
    }
    return p;
  }

  private async activate(config: ActorConfig, id: string, key: string, name?: string): Promise<Activation> {
    const addr: ActorAddress = { namespace: config.namespace, actor: config.name, id };
    // The log may move between reading it and claiming it (the previous owner's release
    // or last commit landing): read again and retry a few times before giving the call back.
    let loaded: Awaited<ReturnType<ActorLogPort['load']>> | undefined;
    let claim: { epoch: number; seq: number } | undefined;
    for (let attempt = 0; !claim; attempt++) {
      loaded = await this.opts.durable.load(addr);
      try {
        claim = await this.opts.durable.claim(addr, this.opts.agent, loaded.lastSeq, loaded.owner?.epoch ?? 0);
      } catch (err) {
        if (!(err instanceof FencedError)) throw err;
        if (attempt >= 3) throw new NotHereError(`actor ${key}: another agent keeps claiming it`);
        await new Promise((r) => setTimeout(r, 10 * (attempt + 1)));
      }
    }
    if (!loaded) throw new Error('unreachable');
    const storage = this.opts.factory.storage(loaded.state, config);
    const instance = await this.opts.factory.instance(config, id, storage, name);
    const act = new Activation(config, addr, key, storage, instance, claim.epoch, claim.seq, name);
    this.active.set(key, act);
    // The alarm index may have missed the last set (an owner killed between its commit and
    // the index write): the log is the truth, so re-announce it.
    this.opts.onAlarmSet?.(config, id, loaded.state.alarm, name);
    this.opts.onActiveChange?.();
    // Writes made by the constructor (blockConcurrencyWhile) are committed before any request.
    await act.run(() => this.commit(act));
    this.opts.log.debug('actor activated', { actor: key, epoch: claim.epoch });
    return act;
  }

  /**
   * Stops hosting an actor: waits for what is queued, disposes the isolate and, when
   * `release` is set, writes a release record so the next owner's claim needs no wait.
   */
  private async deactivate(act: Activation, reason: ActorDeactivationReason, release: boolean): Promise<void> {
    if (act.closed) return;
    act.closed = true;
    if (this.active.get(act.key) === act) this.active.delete(act.key);
    act.instance.dispose(reason);
    this.opts.onActiveChange?.();
    if (release) {
      try {
        await this.opts.durable.release(act.addr, this.opts.agent, act.epoch, act.seq);
      } catch (err) {
        // Someone claimed it already: nothing to release.
        if (!(err instanceof FencedError)) this.opts.log.warn('actor release failed', { actor: act.key, error: err });
      }
    }
    this.opts.log.debug('actor deactivated', { actor: act.key, reason });
  }

  /** Gracefully hands an actor over: finishes what is queued, then releases it. */
  async handOver(key: string, reason: ActorDeactivationReason): Promise<void> {
    const act = this.active.get(key);
    if (!act) return;
    await act.idle();
    await this.deactivate(act, reason, true);
  }

  private evictIdle(): void {
    const now = Date.now();
    for (const act of this.active.values()) {
      if (act.busy || act.instance.openSockets > 0) continue;
      let idleMs = act.config.idleTimeoutSeconds * 1000;
      if (this.opts.hibernation?.holds(act.key)) idleMs = Math.min(idleMs, this.opts.hibernation.idleMs);
      if (now - act.lastUsed > idleMs) void this.handOver(act.key, Why.Idle);
    }
  }

  /** Drain (SIGTERM): refuse new calls, finish in-flight ones, release every actor. */
  async drain(): Promise<string[]> {
    this.draining = true;
    const keys = this.keys();
    await Promise.all(keys.map((k) => this.handOver(k, Why.Drain)));
    return keys;
  }

  async stop(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    if (this.ticker) clearInterval(this.ticker);
    for (const act of [...this.active.values()]) await this.deactivate(act, Why.Shutdown, false);
  }
}
