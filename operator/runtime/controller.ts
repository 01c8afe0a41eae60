import { EdgeError } from '../../common/errors.js';
import type { Logger } from '../../common/log.js';
import type { InformerEventType } from './informer.js';
import { WorkQueue, type WorkQueueMetricsEvent, type WorkResult } from './workqueue.js';

// A small controller-runtime (kubernetes-sigs/controller-runtime): a Reconciler is handed
// one object key at a time and converges that object; a Controller owns the work queue of
// one kind and the watches that turn informer events into keys of that kind. The outcome
// of a reconcile decides what happens to its key, as in controller-runtime's
// processNextWorkItem:
// - it throws: retried with the queue's per-key backoff;
// - it throws a TerminalError: logged with its cause and not retried (the next event on the
//   object, or the resync, brings it back);
// - it returns { requeueAfter }: reconciled again that long from now, backoff reset;
// - it returns {}: done, backoff reset.

/** The object a reconcile is about (controller-runtime's reconcile.Request). */
export interface ObjectKey { namespace: string; name: string }

export interface ReconcileContext {
  /** Carries the controller and object fields. */
  log: Logger;
  /** Aborted when the controller stops: a reconcile that waits long should give up. */
  signal: AbortSignal;
}

export interface Result {
  /** Reconcile this key again after this many ms (for state no event will announce). */
  requeueAfter?: number;
}

export interface Reconciler {
  reconcile(ctx: ReconcileContext, key: ObjectKey): Promise<Result>;
}

/** A failure that retrying cannot fix (only a change to the object can): logged, not retried. */
export class TerminalError extends EdgeError {}

/** The event side of an informer. */
export interface EventSource<T> {
  on(event: InformerEventType, cb: (obj: T, old?: T) => void): void;
}

/** An informer of the controller's own kind: its events and its cache. */
export interface ListSource<T> extends EventSource<T> {
  list(): T[];
}

/** Whether an event deserves a reconcile; `old` is set for updates only. */
export type Predicate<T> = (obj: T, old?: T) => boolean;
/** The keys of this controller's kind that an event on another object touches. */
export type MapFn<T> = (obj: T, old?: T) => Iterable<ObjectKey>;

interface Namespaced { metadata: { name: string; namespace?: string } }

export interface ControllerOptions {
  /** Names the queue in logs and metrics. */
  name: string;
  reconciler: Reconciler;
  log: Logger;
  /** Reconciles of this controller run at once (always for different keys). Default 1. */
  concurrency?: number;
  /** Backoff of a failing key; see WorkQueueOptions. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  onMetrics?: (event: WorkQueueMetricsEvent) => void;
}

// Namespaces and names are DNS names: neither holds a '/', so the first one splits them.
const queueKey = (k: ObjectKey) => `${k.namespace}/${k.name}`;
function objectKey(s: string): ObjectKey {
  const i = s.indexOf('/');
  return { namespace: s.slice(0, i), name: s.slice(i + 1) };
}
/** The key of a namespaced object (no namespace reads as `default`, as kubectl does). */
export const objectKeyOf = (obj: Namespaced): ObjectKey => ({ namespace: obj.metadata.namespace ?? 'default', name: obj.metadata.name });

const EVENTS: InformerEventType[] = ['add', 'update', 'delete'];

export class Controller<T extends Namespaced> {
  readonly name: string;
  private readonly queue: WorkQueue;
  private readonly log: Logger;
  private readonly abort = new AbortController();
  private primary: ListSource<T> | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly opts: ControllerOptions) {
    this.name = opts.name;
    this.log = opts.log.child({ controller: opts.name });
    this.queue = new WorkQueue({
      name: opts.name, log: opts.log,
      ...(opts.baseDelayMs !== undefined ? { baseDelayMs: opts.baseDelayMs } : {}),
      ...(opts.maxDelayMs !== undefined ? { maxDelayMs: opts.maxDelayMs } : {}),
      ...(opts.onMetrics ? { onMetrics: opts.onMetrics } : {}),
    });
  }

  /** Keys waiting (not counting those being reconciled or delayed). */
  get queueLength(): number { return this.queue.len; }
  /** Reconciles that may run at once (controller_runtime_max_concurrent_reconciles). */
  get maxConcurrentReconciles(): number { return this.opts.concurrency ?? 1; }
  /** Reconciles running now (controller_runtime_active_workers). */
  get activeWorkers(): number { return this.queue.inFlight; }
  /** Seconds of reconciles in progress, and the longest (the workqueue's unfinished-work gauges). */
  unfinishedWork(): { seconds: number; longestSeconds: number } { return this.queue.unfinishedWork(); }

  /** The kind this controller reconciles: each event passing `predicate` queues its object. */
  watchFor(source: ListSource<T>, predicate: Predicate<T> = () => true): this {
    if (this.primary) throw new Error(`controller ${this.name}: watchFor called twice`);
    this.primary = source;
    return this.watch(source, (obj) => [objectKeyOf(obj)], predicate);
  }

  /** Another source: each event passing `predicate` queues the keys `map` returns. */
  watch<U>(source: EventSource<U>, map: MapFn<U>, predicate: Predicate<U> = () => true): this {
    for (const event of EVENTS) {
      source.on(event, (obj, old) => {
        if (!predicate(obj, event === 'update' ? old : undefined)) return;
        for (const key of map(obj, event === 'update' ? old : undefined)) this.enqueue(key);
      });
    }
    return this;
  }

  enqueue(key: ObjectKey): void { this.queue.add(queueKey(key)); }

  /** Queues every object of the watched kind (start, resync, a change that touches all). */
  enqueueAll(): void {
    for (const obj of this.primary?.list() ?? []) this.enqueue(objectKeyOf(obj));
  }

  /** Starts the reconcile workers; keys queued before now are processed first. */
  start(): void {
    if (this.running) return;
    this.running = this.queue.run(this.opts.concurrency ?? 1, (k) => this.process(k));
  }

  /** Stops handing out keys and waits for the reconciles already running. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.queue.shutDown();
    await this.running;
  }

  private async process(k: string): Promise<WorkResult | undefined> {
    const log = this.log.child({ object: k });
    try {
      const { requeueAfter } = await this.opts.reconciler.reconcile({ log, signal: this.abort.signal }, objectKey(k));
      return requeueAfter !== undefined && requeueAfter > 0 ? { requeueAfter } : undefined;
    } catch (err) {
      if (!(err instanceof TerminalError)) throw err;
      // The logger writes the error's class, its cause chain and its stack.
      log.error('reconcile failed; not retrying until the object changes', { error: err });
      return { terminal: true };
    }
  }
}
