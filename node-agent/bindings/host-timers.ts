import { EdgeError } from '../../common/errors.js';

// The host side of one isolate's setTimeout/setInterval: each pending timer is a host
// setTimeout the isolate is told about when it fires. They are the isolate's to hold, so
// they are counted and capped per isolate, cancelled when the worker clears them, and all
// cancelled when the isolate goes (a disposed isolate's timers used to run out on the host
// for up to MAX_SLEEP_MS, each holding its closure and an ivm.Reference).

/** The longest a timer may wait; setTimeout clamps to this (as browsers clamp to 2^31-1 ms). */
export const MAX_SLEEP_MS = 24 * 3600 * 1000;

/**
 * Pending timers one isolate may hold. Each costs the host about 2 KB (a Node timer, its
 * promise and an ivm.Reference); 300 requests arming 200 timers each grew the agent's heap
 * by 130 MB. A worker that needs more than this many timers at once is arming them in a
 * loop; Workers code rarely holds more than a handful per request.
 */
export const MAX_PENDING_TIMERS = 1_000;

export class TimerLimitError extends EdgeError {}

/** Pending host timers of every isolate in this process: tests and metrics read it. */
let pendingInProcess = 0;
export function pendingHostTimers(): number { return pendingInProcess; }

interface Pending {
  timer: NodeJS.Timeout;
  settle(fired: boolean): void;
}

export class HostTimers {
  private readonly pending = new Map<number, Pending>();
  private closed = false;

  constructor(private readonly workerName: string, private readonly max = MAX_PENDING_TIMERS) {}

  get size(): number { return this.pending.size; }

  /**
   * A timer the isolate knows by `id`: resolves true when it fires, false when cancelled.
   * Throws TimerLimitError when the isolate already holds `max` timers.
   */
  sleep(id: number, ms: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    if (!Number.isSafeInteger(id)) throw new TypeError(`setTimeout: malformed timer id from worker ${this.workerName}`);
    this.cancel(id);
    if (this.pending.size >= this.max) {
      throw new TimerLimitError(`setTimeout: worker ${this.workerName} already has ${this.max} pending timers, the most one isolate may hold; clear some first`, { context: { worker: this.workerName } });
    }
    const delay = Math.min(Math.max(0, Number(ms) || 0), MAX_SLEEP_MS);
    return new Promise<boolean>((resolve) => {
      const entry: Pending = {
        timer: setTimeout(() => entry.settle(true), delay).unref(),
        settle: (fired) => {
          if (this.pending.get(id) !== entry) return;
          this.pending.delete(id);
          pendingInProcess -= 1;
          if (!fired) clearTimeout(entry.timer);
          resolve(fired);
        },
      };
      this.pending.set(id, entry);
      pendingInProcess += 1;
    });
  }

  /** clearTimeout/clearInterval: the host timer goes at once. */
  cancel(id: number): void {
    this.pending.get(id)?.settle(false);
  }

  /** The isolate is gone: every timer it armed goes with it. */
  close(): void {
    this.closed = true;
    for (const entry of [...this.pending.values()]) entry.settle(false);
  }
}
