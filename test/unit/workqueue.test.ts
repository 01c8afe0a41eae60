import { afterEach, describe, expect, it, vi } from 'vitest';
import { WorkQueue, type WorkQueueMetricsEvent } from '../../operator/runtime/workqueue.js';

// The queue's contract is what makes reconcilers safe to write naively: one worker per key
// at a time, no lost re-adds, per-key backoff. Tests drive the handlers with explicit
// promises (gates) so orderings are forced, not hoped for; fake timers only where delays
// are the subject.

interface Gate { promise: Promise<void>; open(): void; fail(err: Error): void }
function gate(): Gate {
  let open!: () => void;
  let fail!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => { open = res; fail = rej; });
  return { promise, open, fail };
}

/** Lets pending promise callbacks (handler continuations, worker loops) run. */
const flush = async (rounds = 10): Promise<void> => {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
};

const queues: WorkQueue[] = [];
function newQueue(opts: Partial<ConstructorParameters<typeof WorkQueue>[0]> = {}): WorkQueue {
  const q = new WorkQueue({ name: 'test', ...opts });
  queues.push(q);
  return q;
}

afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(queues.splice(0).map((q) => q.shutDown()));
});

describe('WorkQueue', () => {
  it('dedupes a key while it is queued and hands keys out in FIFO order', async () => {
    const q = newQueue();
    q.add('a'); q.add('b'); q.add('a'); q.add('c'); q.add('b');
    expect(q.len).toBe(3);
    expect(q.stats.adds).toBe(3);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
    expect(await q.get()).toBe('c');
    expect(q.len).toBe(0);
    expect(q.inFlight).toBe(3);
  });

  it('never hands one key to two workers at once, and processes a key re-added meanwhile exactly once more', async () => {
    const q = newQueue();
    const runs: string[] = [];
    const gates: Gate[] = [];
    const active = new Map<string, number>();
    let maxActiveSameKey = 0;
    void q.run(4, async (key) => {
      const n = (active.get(key) ?? 0) + 1;
      active.set(key, n);
      maxActiveSameKey = Math.max(maxActiveSameKey, n);
      runs.push(key);
      const g = gate();
      gates.push(g);
      try { await g.promise; } finally { active.set(key, (active.get(key) ?? 1) - 1); }
    });

    q.add('a');
    await flush();
    expect(runs).toEqual(['a']);
    // Re-added three times while its handler runs: idle workers must not pick it up, and
    // it is not in the ready queue yet.
    q.add('a'); q.add('a'); q.add('a');
    await flush();
    expect(runs).toEqual(['a']);
    expect(q.len).toBe(0);
    // Other keys still flow to the idle workers.
    q.add('b');
    await flush();
    expect(runs).toEqual(['a', 'b']);

    gates[0]!.open();
    await flush();
    expect(runs).toEqual(['a', 'b', 'a']);
    gates[1]!.open();
    gates[2]!.open();
    await flush();
    expect(runs).toEqual(['a', 'b', 'a']);
    expect(maxActiveSameKey).toBe(1);
    expect(q.inFlight).toBe(0);
  });

  it('keeps one key serialized under heavy concurrent adds', async () => {
    const q = newQueue();
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    const finished = q.run(8, async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      runs++;
      await new Promise((r) => setTimeout(r, 2));
      active--;
    });
    for (let i = 0; i < 200; i++) {
      q.add('hot');
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    await vi.waitFor(() => { expect(q.len + q.inFlight).toBe(0); }, { timeout: 10_000 });
    expect(maxActive).toBe(1);
    expect(runs).toBeGreaterThanOrEqual(2);
    expect(runs).toBeLessThanOrEqual(200);
    await q.shutDown();
    await finished;
  });

  it('backs off a failing key exponentially up to the cap, and forget resets it', async () => {
    vi.useFakeTimers();
    const events: WorkQueueMetricsEvent[] = [];
    const q = newQueue({ baseDelayMs: 50, maxDelayMs: 400, onMetrics: (e) => events.push(e) });
    const delays = (): number[] => events.flatMap((e) => (e.kind === 'retry' ? [e.delayMs] : []));

    for (let i = 0; i < 6; i++) q.addRateLimited('k');
    expect(delays()).toEqual([50, 100, 200, 400, 400, 400]);
    expect(q.numRequeues('k')).toBe(6);
    // The pending delays collapse to the earliest one.
    expect(q.delayedCount).toBe(1);
    await vi.advanceTimersByTimeAsync(49);
    expect(q.len).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(q.len).toBe(1);
    expect(await q.get()).toBe('k');
    q.done('k');

    q.forget('k');
    expect(q.numRequeues('k')).toBe(0);
    q.addRateLimited('k');
    expect(delays().at(-1)).toBe(50);
    // Backoff is per key: another key starts at the base.
    q.addRateLimited('other');
    expect(delays().at(-1)).toBe(50);
  });

  it('retries a throwing handler with growing delays and forgets the key once it succeeds', async () => {
    vi.useFakeTimers();
    const q = newQueue({ baseDelayMs: 100, maxDelayMs: 10_000 });
    const runAt: number[] = [];
    let calls = 0;
    void q.run(2, async (key) => {
      expect(key).toBe('flaky');
      runAt.push(Date.now());
      calls++;
      if (calls <= 3) throw new Error(`attempt ${calls} fails`);
    });
    const t0 = Date.now();
    q.add('flaky');
    await vi.advanceTimersByTimeAsync(0);
    expect(calls).toBe(1);
    expect(q.numRequeues('flaky')).toBe(1);
    await vi.advanceTimersByTimeAsync(99);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toBe(2);
    await vi.advanceTimersByTimeAsync(200);
    expect(calls).toBe(3);
    await vi.advanceTimersByTimeAsync(399);
    expect(calls).toBe(3);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls).toBe(4);
    expect(runAt.map((t) => t - t0)).toEqual([0, 100, 300, 700]);
    expect(q.numRequeues('flaky')).toBe(0);
    const s = q.stats;
    expect(s.failed).toBe(3);
    expect(s.succeeded).toBe(1);
    expect(s.retries).toBe(3);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls).toBe(4);
  });

  it('addAfter keeps the earliest pending time and dedupes with queued keys', async () => {
    vi.useFakeTimers();
    const q = newQueue();
    q.addAfter('x', 1000);
    q.addAfter('x', 300);
    q.addAfter('x', 5000);
    expect(q.delayedCount).toBe(1);
    await vi.advanceTimersByTimeAsync(299);
    expect(q.len).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(q.len).toBe(1);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(q.len).toBe(1);
    q.addAfter('y', 0);
    expect(q.len).toBe(2);
  });

  it('shutDown waits for running handlers, starts no queued key, and ignores later adds', async () => {
    const q = newQueue();
    const started: string[] = [];
    const gates = new Map<string, Gate>();
    const finishedKeys: string[] = [];
    const workersDone = q.run(2, async (key) => {
      started.push(key);
      const g = gate();
      gates.set(key, g);
      await g.promise;
      finishedKeys.push(key);
    });
    q.add('a'); q.add('b'); q.add('c');
    await flush();
    expect(started).toEqual(['a', 'b']);
    expect(q.len).toBe(1);

    let shutDownResolved = false;
    const stopping = q.shutDown().then(() => { shutDownResolved = true; });
    q.add('d');
    q.addAfter('e', 1);
    q.addRateLimited('f');
    expect(q.len).toBe(0);
    expect(q.delayedCount).toBe(0);
    await flush();
    expect(shutDownResolved).toBe(false);
    gates.get('a')!.open();
    await flush();
    expect(shutDownResolved).toBe(false);
    gates.get('b')!.open();
    await stopping;
    await workersDone;
    expect(shutDownResolved).toBe(true);
    expect(finishedKeys.sort()).toEqual(['a', 'b']);
    expect(started).toEqual(['a', 'b']);
    await new Promise((r) => setTimeout(r, 20));
    expect(started).toEqual(['a', 'b']);
    expect(await q.get()).toBeUndefined();
  });

  it('a handler failing during shutdown is not re-queued', async () => {
    const q = newQueue();
    const g = gate();
    let runs = 0;
    const done = q.run(1, async () => { runs++; await g.promise; });
    q.add('a');
    await flush();
    const stopping = q.shutDown();
    g.fail(new Error('interrupted'));
    await stopping;
    await done;
    expect(runs).toBe(1);
    expect(q.delayedCount).toBe(0);
    expect(q.stats.failed).toBe(1);
  });

  it('reports wait and work time per processed key', async () => {
    const events: WorkQueueMetricsEvent[] = [];
    const q = newQueue({ onMetrics: (e) => events.push(e) });
    q.add('slow');
    await new Promise((r) => setTimeout(r, 30));
    void q.run(1, async () => { await new Promise((r) => setTimeout(r, 30)); });
    await vi.waitFor(() => { expect(events.some((e) => e.kind === 'done')).toBe(true); }, { timeout: 5000 });
    const done = events.find((e) => e.kind === 'done');
    expect(done).toMatchObject({ kind: 'done', key: 'slow', ok: true });
    if (done?.kind !== 'done') throw new Error('unreachable');
    expect(done.waitMs).toBeGreaterThanOrEqual(20);
    expect(done.workMs).toBeGreaterThanOrEqual(20);
    expect(events[0]).toMatchObject({ kind: 'add', key: 'slow', depth: 1 });
    expect(q.stats.processingMsMax).toBeGreaterThanOrEqual(20);
  });

  it('refuses nonsensical settings', () => {
    expect(() => new WorkQueue({ name: 'bad', baseDelayMs: 0 })).toThrow(/baseDelayMs/);
    expect(() => new WorkQueue({ name: 'bad', baseDelayMs: 100, maxDelayMs: 10 })).toThrow(/maxDelayMs/);
    expect(() => newQueue().run(0, async () => {})).toThrow(/concurrency/);
  });
});
