import type { Logger } from '../../common/log.js';

// A rate-limited work queue with client-go's workqueue semantics, so reconcilers can be
// written the controller-runtime way: events only enqueue keys, a key is never reconciled
// by two workers at once, and a failing key backs off on its own without stalling others.
//
// Differences from client-go, on purpose:
// - shutDown() stops handing out keys at once and waits only for handlers already running;
//   keys still queued are dropped. The operator shuts down when it stops leading, and a
//   level-triggered successor relists everything anyway, so finishing the backlog would
//   only mean acting after losing the lease.
// - No overall token bucket on top of the per-key backoff: the operator's write rate is
//   bounded by the number of objects, and client-node has its own connection limits.
//
// Timing uses the global `performance` (not node:perf_hooks) so fake timers in tests move it too.

export interface WorkQueueOptions {
  /** Used in logs and in metrics events. */
  name: string;
  log?: Logger;
  /** First retry delay of a failing key (doubles per failure). Default 50 ms. */
  baseDelayMs?: number;
  /** Cap of the per-key retry delay. Default 30 s. */
  maxDelayMs?: number;
  /** Called synchronously on every queue event; it must not throw (errors are logged). */
  onMetrics?: (event: WorkQueueMetricsEvent) => void;
}

export type WorkQueueMetricsEvent =
  /** A key was accepted (not deduped); `depth` is the queue length afterwards. */
  | { kind: 'add'; queue: string; key: string; depth: number }
  /** A key was scheduled again after a failure, `delayMs` from now (its `requeues`-th retry). */
  | { kind: 'retry'; queue: string; key: string; delayMs: number; requeues: number }
  /**
   * A handler finished: time spent queued before it started, time in the handler, outcome
   * (`result` in controller-runtime's words: success, requeue_after, error; terminal is an
   * error that is not retried).
   */
  | { kind: 'done'; queue: string; key: string; waitMs: number; workMs: number; ok: boolean; result: WorkOutcome };

export type WorkOutcome = 'success' | 'requeue_after' | 'error' | 'terminal';

export interface WorkQueueStats {
  /** Keys accepted by add() (deduped adds are not counted). */
  adds: number;
  /** addRateLimited() calls (explicit or from a failed handler). */
  retries: number;
  /** Handler runs that resolved (not counting `terminal` results). */
  succeeded: number;
  /** Handler runs that threw or rejected, or resolved `terminal`. */
  failed: number;
  /** Sum of handler run times in ms (divide by succeeded + failed for a mean). */
  processingMsTotal: number;
  /** Longest single handler run in ms. */
  processingMsMax: number;
}

/**
 * What a handler may ask of the queue besides the default (resolved: done, backoff reset;
 * thrown: re-added with backoff). The controller's reconcile result maps onto it.
 */
export interface WorkResult {
  /** Process the key again this long from now (its backoff is reset as on success). */
  requeueAfter?: number;
  /** The run failed but retrying cannot help: counted as failed, not re-added. */
  terminal?: boolean;
}

export type WorkHandler = (key: string) => Promise<void | WorkResult>;

export class WorkQueue {
  readonly name: string;
  private readonly log: Logger | undefined;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly onMetrics: ((event: WorkQueueMetricsEvent) => void) | undefined;

  /** FIFO of keys ready to hand out; a key is in here at most once. */
  private readonly queue: string[] = [];
  /** Keys that need processing (queued, or re-added while being processed). */
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  /** When each running handler started (workqueue_unfinished_work_seconds). */
  private readonly started = new Map<string, number>();
  /** When each dirty key was accepted, for the wait-time metric. */
  private readonly addedAt = new Map<string, number>();
  /** addAfter timers; only the earliest pending deadline per key is kept. */
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  /** Workers blocked in get(), woken one per key. */
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  private shuttingDown = false;
  private workers: Promise<void>[] = [];
  private readonly counters: WorkQueueStats = {
    adds: 0, retries: 0, succeeded: 0, failed: 0, processingMsTotal: 0, processingMsMax: 0,
  };

  constructor(opts: WorkQueueOptions) {
    this.name = opts.name;
    this.log = opts.log?.child({ queue: opts.name });
    this.baseDelayMs = opts.baseDelayMs ?? 50;
    this.maxDelayMs = opts.maxDelayMs ?? 30_000;
    this.onMetrics = opts.onMetrics;
    if (!(this.baseDelayMs > 0) || !(this.maxDelayMs >= this.baseDelayMs)) {
      throw new Error(`workqueue ${opts.name}: need 0 < baseDelayMs (${this.baseDelayMs}) <= maxDelayMs (${this.maxDelayMs})`);
    }
  }

  /** Keys waiting to be handed out (not counting those being processed or delayed). */
  get len(): number { return this.queue.length; }
  /** Keys whose handler is running now. */
  get inFlight(): number { return this.processing.size; }
  /** Keys scheduled by addAfter/addRateLimited that are not due yet. */
  get delayedCount(): number { return this.delayed.size; }
  get isShuttingDown(): boolean { return this.shuttingDown; }
  get stats(): Readonly<WorkQueueStats> { return { ...this.counters }; }

  /**
   * Work in progress, as client-go's workqueue metrics report it: the seconds all running
   * handlers have run so far, and the longest of them.
   */
  unfinishedWork(now = performance.now()): { seconds: number; longestSeconds: number } {
    let total = 0;
    let longest = 0;
    for (const t of this.started.values()) {
      total += now - t;
      longest = Math.max(longest, now - t);
    }
    return { seconds: total / 1000, longestSeconds: longest / 1000 };
  }

  /** Queues `key` unless it is already queued; a key being processed is queued again when its handler finishes. */
  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.add(key);
    this.addedAt.set(key, performance.now());
    this.counters.adds++;
    if (!this.processing.has(key)) this.push(key);
    this.emit({ kind: 'add', queue: this.name, key, depth: this.queue.length });
  }

  /** Adds `key` after `delayMs`; of several pending delays for one key, the earliest wins. */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) { this.add(key); return; }
    const at = performance.now() + delayMs;
    const pending = this.delayed.get(key);
    if (pending) {
      if (pending.at <= at) return;
      clearTimeout(pending.timer);
    }
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    this.delayed.set(key, { at, timer });
  }

  /** Adds `key` after its per-key backoff: baseDelayMs * 2^(failures so far), capped at maxDelayMs. */
  addRateLimited(key: string): void {
    if (this.shuttingDown) return;
    const requeues = this.failures.get(key) ?? 0;
    this.failures.set(key, requeues + 1);
    // 2 ** 1024 is Infinity, which Math.min caps; no overflow to worry about.
    const delayMs = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** requeues);
    this.counters.retries++;
    this.emit({ kind: 'retry', queue: this.name, key, delayMs, requeues: requeues + 1 });
    this.addAfter(key, delayMs);
  }

  /** Resets the backoff of `key` (call after it was processed successfully). */
  forget(key: string): void { this.failures.delete(key); }

  /** How many times `key` has been rate-limited since it was last forgotten. */
  numRequeues(key: string): number { return this.failures.get(key) ?? 0; }

  /**
   * Next key to process, waiting for one if the queue is empty; undefined once shut down.
   * The caller owns the key until it calls done(key).
   */
  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.queue.shift();
    if (key !== undefined) return Promise.resolve(this.take(key));
    return new Promise((resolveKey) => this.waiters.push(resolveKey));
  }

  /** Marks `key` as processed; if it was added meanwhile it is queued again now. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key) && !this.shuttingDown) this.push(key);
  }

  /**
   * Starts `concurrency` workers that run `handler` for each key: a resolved handler
   * forgets the key's backoff (and re-adds the key after `requeueAfter` when it asks), one
   * resolving `terminal` forgets it too but counts as failed, a rejected one re-adds it
   * rate-limited. The promise resolves
   * when every worker has stopped after shutDown(); it never rejects.
   */
  run(concurrency: number, handler: WorkHandler): Promise<void> {
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new Error(`workqueue ${this.name}: concurrency must be a positive integer, got ${concurrency}`);
    }
    const started = Array.from({ length: concurrency }, () => this.worker(handler));
    this.workers.push(...started);
    return Promise.all(started).then(() => undefined);
  }

  /**
   * Stops accepting and handing out keys, cancels delayed adds, and resolves once the
   * handlers already running have finished. Keys still queued are dropped.
   */
  async shutDown(): Promise<void> {
    if (!this.shuttingDown) {
      this.shuttingDown = true;
      for (const { timer } of this.delayed.values()) clearTimeout(timer);
      this.delayed.clear();
      for (const key of this.queue.splice(0)) { this.dirty.delete(key); this.addedAt.delete(key); }
      for (const wake of this.waiters.splice(0)) wake(undefined);
    }
    await Promise.all(this.workers);
  }

  private push(key: string): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(this.take(key));
    else this.queue.push(key);
  }

  private take(key: string): string {
    this.processing.add(key);
    this.dirty.delete(key);
    return key;
  }

  private async worker(handler: WorkHandler): Promise<void> {
    for (;;) {
      const key = await this.get();
      if (key === undefined) return;
      const queuedAt = this.addedAt.get(key);
      this.addedAt.delete(key);
      const start = performance.now();
      this.started.set(key, start);
      let ok = true;
      let result: WorkResult | undefined;
      try {
        result = (await handler(key)) ?? undefined;
      } catch (err) {
        ok = false;
        this.log?.warn('reconcile failed; retrying with backoff', { key, error: err, requeues: this.numRequeues(key) + 1 });
      }
      const workMs = performance.now() - start;
      this.started.delete(key);
      let outcome: WorkOutcome = 'success';
      if (!ok) { outcome = 'error'; this.counters.failed++; this.addRateLimited(key); } else if (result?.terminal) {
        ok = false;
        outcome = 'terminal';
        this.counters.failed++;
        this.forget(key);
      } else {
        this.counters.succeeded++;
        this.forget(key);
        if (result?.requeueAfter !== undefined && result.requeueAfter > 0) {
          outcome = 'requeue_after';
          this.addAfter(key, result.requeueAfter);
        }
      }
      this.counters.processingMsTotal += workMs;
      this.counters.processingMsMax = Math.max(this.counters.processingMsMax, workMs);
      // A key re-added while it ran got a fresh addedAt; keep that one for its next run.
      const waitMs = queuedAt === undefined ? 0 : start - queuedAt;
      this.emit({ kind: 'done', queue: this.name, key, waitMs, workMs, ok, result: outcome });
      this.done(key);
    }
  }

  private emit(event: WorkQueueMetricsEvent): void {
    if (!this.onMetrics) return;
    try {
      this.onMetrics(event);
    } catch (err) {
      this.log?.error('workqueue metrics hook threw', { error: err, event: event.kind });
    }
  }
}
