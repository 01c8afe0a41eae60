import { ErrorCode, NatsError, type KV, type KvEntry, type NatsConnection, type QueuedIterator } from 'nats';
import { EdgeError } from './errors.js';
import type { Logger } from './log.js';

// Following a KV bucket, the NATS counterpart of operator/runtime/informer.ts: deliver
// the bucket's current values, say when they have all been applied, then deliver every
// change; and when the watch throws or ends, watch again (with backoff) and re-list, so a
// consumer converges on what the bucket holds instead of silently freezing.
//
// What a re-list delivers: a put for each key whose revision differs from the one last
// delivered, and a delete for each key delivered earlier that the bucket no longer holds,
// whether it left a DEL/PURGE marker or none at all (markers purged, bucket re-created).
// Deletes are only delivered for keys whose put was, so the markers of keys deleted long
// ago are not replayed as deletes at start.
//
// When the initial values are applied (nats.js 2.29, jetstream/kv.js watch()): the
// consumer's `initializedFn` fires either from inside watch() itself, before the iterator
// is returned (an empty bucket, or every value already received), or as a marker queued
// behind the last initial value, run by the iterator when it is reached. The first case
// comes before a single value was applied, so the follower then waits until it has applied
// as many entries as the watch had received; for an empty bucket that is none, and the
// list is complete at once. Waiting until the iterator has nothing pending instead never
// finishes on an empty bucket (nothing is ever iterated to check it).
//
// nats.js's ordered consumer already recovers by itself from a lost connection, a server
// restart or a deleted consumer (it recreates the consumer from the last sequence it saw,
// after two missed idle heartbeats, 10 s); the watch only ends when that recreation fails,
// when its subscription closes, or when a callback throws, and those are what this restarts.
// Ten seconds is too long to be deaf after a NATS restart (issue 13): given the
// connection, the follower also watches again and re-lists at once on every reconnect,
// and resync() lets a reader that noticed it hears nothing (AgentView) ask for the same.

export interface BucketHandler {
  /** A key's current value: at each (re)list, and on every later write; `revision` is the entry's stream sequence. */
  put(key: string, value: Uint8Array, revision: number): void;
  /** A key delivered by put() was deleted, purged, or is gone from the bucket at a re-list. */
  delete(key: string): void;
}

export interface FollowBucketOptions {
  log: Logger;
  /** Names the bucket in logs. */
  name: string;
  /** Keys to follow (NATS wildcards). Default '>'. */
  key?: string;
  /** Delay before watching again after a watch ended. Default 250 ms doubling to 10 s. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** The bucket's connection: on each reconnect the follower watches again and re-lists at once. */
  connection?: Pick<NatsConnection, 'status'>;
  /** Called after each list (the initial one and every re-list) was applied. */
  onListed?(): void;
}

export interface BucketFollowerStats {
  /** Lists completed: the initial one, then one per restarted watch. */
  lists: number;
  /** Watches that ended or failed and were started again. */
  restarts: number;
}

export interface BucketFollower {
  /**
   * Resolves once the bucket's values at start have all been handed to the handler;
   * rejects if stop() comes first or the connection closes for good before that.
   */
  readonly initial: Promise<void>;
  readonly stats: Readonly<BucketFollowerStats>;
  /** Ends the current watch and watches again at once, re-listing (a no-op before the first list). */
  resync(): void;
  /** Ends the watch; no handler is called after the returned promise resolves. */
  stop(): Promise<void>;
}

export class BucketFollowerStoppedError extends EdgeError {
  constructor(bucket: string, cause?: unknown) {
    super(`following KV bucket ${bucket}: stopped before its current values were applied`, { cause, context: { bucket } });
  }
}

/** Only watch() is used, so a test can hand in a bucket whose watches it can break. */
export type WatchableBucket = Pick<KV, 'watch'>;

/** Starts following `kv`; see the file comment. */
export function followBucket(kv: WatchableBucket, handler: BucketHandler, opts: FollowBucketOptions): BucketFollower {
  return new Follower(kv, handler, opts);
}

class Follower implements BucketFollower {
  readonly initial: Promise<void>;
  private resolveInitial!: () => void;
  private rejectInitial!: (err: Error) => void;
  private initialDone = false;
  /** Keys last delivered by put(), with the revision delivered. */
  private readonly revisions = new Map<string, number>();
  private watch: QueuedIterator<KvEntry> | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
  private stopSignal!: () => void;
  /** Resolves on stop(), so a watch() still being created does not hold stop() up. */
  private readonly stopping = new Promise<undefined>((r) => { this.stopSignal = () => r(undefined); });
  private readonly loop: Promise<void>;
  private readonly counters: BucketFollowerStats = { lists: 0, restarts: 0 };
  private readonly log: Logger;
  /** resync() was asked for: the next watch starts without backoff. */
  private resyncing = false;

  constructor(private readonly kv: WatchableBucket, private readonly handler: BucketHandler, private readonly opts: FollowBucketOptions) {
    this.log = opts.log.child({ bucket: opts.name });
    this.initial = new Promise<void>((resolve, reject) => {
      this.resolveInitial = resolve;
      this.rejectInitial = reject;
    });
    // Marked handled so a follower stopped before its first list, with nobody awaiting
    // `initial`, is no unhandled rejection; those who await still see the error.
    this.initial.catch(() => undefined);
    this.loop = this.run();
    if (opts.connection) void this.followConnection(opts.connection);
  }

  private async followConnection(nc: Pick<NatsConnection, 'status'>): Promise<void> {
    try {
      for await (const s of nc.status()) {
        if (this.stopped) return;
        if (s.type === 'reconnect') this.resync();
      }
    } catch (err) {
      this.log.debug('NATS status stream ended', { error: err });
    }
  }

  resync(): void {
    if (this.stopped || !this.initialDone) return;
    this.resyncing = true;
    this.watch?.stop();
    this.wake?.();
  }

  get stats(): Readonly<BucketFollowerStats> { return { ...this.counters }; }

  async stop(): Promise<void> {
    if (!this.stopped) {
      this.stopped = true;
      this.failInitial(new BucketFollowerStoppedError(this.opts.name));
      this.stopSignal();
      this.watch?.stop();
      this.wake?.();
    }
    await this.loop;
  }

  private failInitial(err: Error): void {
    if (this.initialDone) return;
    this.initialDone = true;
    this.rejectInitial(err);
  }

  private async run(): Promise<void> {
    const initialMs = this.opts.backoff?.initialMs ?? 250;
    const maxMs = this.opts.backoff?.maxMs ?? 10_000;
    let backoffMs = initialMs;
    while (!this.stopped) {
      let listed = false;
      try {
        listed = await this.watchOnce();
        if (this.stopped) break;
        if (!this.resyncing) this.log.warn('KV watch ended; watching again', { retryInMs: backoffMs });
      } catch (err) {
        if (this.stopped) break;
        if (err instanceof NatsError && err.code === ErrorCode.ConnectionClosed) {
          // Closed by its owner (nats.js reconnects on its own otherwise): nothing to retry.
          this.log.warn('NATS connection closed; no longer following the bucket');
          this.failInitial(new BucketFollowerStoppedError(this.opts.name, err));
          break;
        }
        this.log.warn('KV watch failed; watching again', { error: err, retryInMs: backoffMs });
      }
      // A watch that got through its list proves the bucket is reachable; one that fails
      // at once, repeatedly, must not turn into a hot loop.
      if (listed) backoffMs = initialMs;
      if (this.resyncing) {
        // Reconnected (or asked to): list again now; a failure from here backs off as usual.
        this.resyncing = false;
        backoffMs = initialMs;
        this.log.info('watching the bucket again and re-listing at once');
        if (!this.stopped) this.counters.restarts++;
        continue;
      }
      await this.sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, maxMs);
      if (!this.stopped) this.counters.restarts++;
    }
  }

  /** One watch, from its list to its end. Returns whether its list completed; throws what ended it. */
  private async watchOnce(): Promise<boolean> {
    /** Keys the list delivered as present: known keys outside it are gone. */
    const seen = new Set<string>();
    let listing = true;
    let iterating = false;
    let signalledEarly = false;
    const listed = (): void => {
      if (!listing || this.stopped) return;
      listing = false;
      for (const key of [...this.revisions.keys()]) if (!seen.has(key)) this.remove(key);
      this.counters.lists++;
      if (!this.initialDone) {
        this.initialDone = true;
        this.resolveInitial();
      }
      try { this.opts.onListed?.(); } catch (err) { this.log.error('onListed failed', { error: err }); }
    };
    const creating = this.kv.watch({
      key: this.opts.key ?? '>',
      // Run by the iterator only after every value before it was applied, except when it
      // fires inside watch() (see the file comment).
      initializedFn: () => { if (iterating) listed(); else signalledEarly = true; },
    });
    const w = await Promise.race([creating, this.stopping]);
    if (w === undefined || this.stopped) {
      void creating.then((late) => late.stop(), () => undefined);
      return false;
    }
    this.watch = w;
    // Everything received by now is queued in the iterator and is the list.
    const target = signalledEarly ? w.getReceived() : -1;
    if (target === 0) listed();
    let applied = 0;
    iterating = true;
    for await (const e of w) {
      if (this.stopped) break;
      if (listing && e.operation === 'PUT') seen.add(e.key);
      this.apply(e);
      applied++;
      if (listing && target > 0 && applied >= target) listed();
    }
    return !listing;
  }

  private apply(e: KvEntry): void {
    if (this.stopped) return;
    if (e.operation !== 'PUT') { this.remove(e.key); return; }
    // A re-list hands back every key; only those written meanwhile are news.
    if (this.revisions.get(e.key) === e.revision) return;
    this.revisions.set(e.key, e.revision);
    try {
      this.handler.put(e.key, e.value, e.revision);
    } catch (err) {
      this.log.error('KV handler failed on a put', { key: e.key, error: err });
    }
  }

  private remove(key: string): void {
    if (this.stopped || !this.revisions.delete(key)) return;
    try {
      this.handler.delete(key);
    } catch (err) {
      this.log.error('KV handler failed on a delete', { key, error: err });
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopped) { resolve(); return; }
      const timer = setTimeout(() => { this.wake = undefined; resolve(); }, ms);
      this.wake = () => { clearTimeout(timer); this.wake = undefined; resolve(); };
    });
  }
}
