import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../common/log.js';
import { Controller, TerminalError, type ObjectKey, type ReconcileContext, type Result } from '../../operator/runtime/controller.js';
import { FakeInformer } from '../../operator/runtime/fake/informer.js';
import type { WorkQueueMetricsEvent } from '../../operator/runtime/workqueue.js';

// The controller's contract: what a reconcile returns or throws decides when its key comes
// back. Handlers are driven with explicit gates so orderings are forced; fake timers only
// where delays are the subject.

interface Obj { metadata: { name: string; namespace?: string; generation?: number } }
const obj = (name: string, generation = 1, namespace = 'ns'): Obj => ({ metadata: { name, namespace, generation } });

const flush = async (rounds = 10): Promise<void> => {
  for (let i = 0; i < rounds; i++) await Promise.resolve();
};

type Step = (ctx: ReconcileContext, key: ObjectKey) => Promise<Result>;

function harness(step: Step, opts: { concurrency?: number; baseDelayMs?: number } = {}) {
  const lines: Record<string, unknown>[] = [];
  const metrics: WorkQueueMetricsEvent[] = [];
  const runs: string[] = [];
  const c = new Controller<Obj>({
    name: 'things',
    log: createLogger({}, (l) => lines.push(JSON.parse(l) as Record<string, unknown>), 'debug'),
    concurrency: opts.concurrency ?? 1,
    baseDelayMs: opts.baseDelayMs ?? 100,
    maxDelayMs: 10_000,
    onMetrics: (e) => metrics.push(e),
    reconciler: { reconcile: (ctx, key) => { runs.push(`${key.namespace}/${key.name}`); return step(ctx, key); } },
  });
  controllers.push(c);
  return { c, lines, metrics, runs };
}

const controllers: Controller<Obj>[] = [];
afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(controllers.splice(0).map((c) => c.stop()));
});

describe('Controller', () => {
  it('reconciles again after requeueAfter, and not before', async () => {
    vi.useFakeTimers();
    let n = 0;
    const { c, runs } = harness(() => Promise.resolve(++n === 1 ? { requeueAfter: 1_000 } : {}));
    c.enqueue({ namespace: 'ns', name: 'a' });
    c.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toEqual(['ns/a']);
    await vi.advanceTimersByTimeAsync(999);
    expect(runs).toEqual(['ns/a']);
    await vi.advanceTimersByTimeAsync(1);
    expect(runs).toEqual(['ns/a', 'ns/a']);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(runs).toHaveLength(2);
  });

  it('retries an ordinary error with doubling backoff until it succeeds', async () => {
    vi.useFakeTimers();
    const at: number[] = [];
    let n = 0;
    const { c, metrics } = harness(() => {
      at.push(Date.now());
      if (++n <= 3) return Promise.reject(new Error(`flaky ${n}`));
      return Promise.resolve({});
    }, { baseDelayMs: 100 });
    const t0 = Date.now();
    c.enqueue({ namespace: 'ns', name: 'a' });
    c.start();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(at.map((t) => t - t0)).toEqual([0, 100, 300, 700]);
    expect(metrics.filter((e) => e.kind === 'done').map((e) => e.kind === 'done' && e.ok)).toEqual([false, false, false, true]);
  });

  it('does not retry a TerminalError, and logs it with its cause', async () => {
    vi.useFakeTimers();
    const { c, lines, runs, metrics } = harness(() => Promise.reject(
      new TerminalError('ai bindings: worker name "a.b" is not a DNS label', { cause: new RangeError('root cause here') }),
    ));
    c.enqueue({ namespace: 'ns', name: 'a' });
    c.start();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(runs).toEqual(['ns/a']);
    const errors = lines.filter((l) => l.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({
      controller: 'things', object: 'ns/a',
      error: 'ai bindings: worker name "a.b" is not a DNS label', errorClass: 'TerminalError',
      errorCauses: [{ class: 'RangeError', message: 'root cause here' }],
    });
    // Counted as a failure, but nothing was scheduled again.
    expect(metrics.filter((e) => e.kind === 'retry')).toHaveLength(0);
    expect(metrics.find((e) => e.kind === 'done')).toMatchObject({ ok: false });
    // The object changing (an event) brings it back.
    c.enqueue({ namespace: 'ns', name: 'a' });
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toEqual(['ns/a', 'ns/a']);
  });

  it('keeps a TerminalError subclass terminal and its name', () => {
    class BadSpec extends TerminalError {}
    const err = new BadSpec('x', { cause: 'y' });
    expect(err).toBeInstanceOf(TerminalError);
    expect(err.name).toBe('BadSpec');
    expect(err.cause).toBe('y');
  });

  it('deduplicates a key queued several times before it runs', async () => {
    const informer = new FakeInformer<Obj>();
    const { c, runs } = harness(() => Promise.resolve({}));
    c.watchFor(informer);
    informer.set(obj('a'));
    informer.set(obj('a', 2));
    c.enqueue({ namespace: 'ns', name: 'a' });
    informer.set(obj('b'));
    c.enqueueAll();
    c.start();
    await flush(50);
    expect(runs).toEqual(['ns/a', 'ns/b']);
  });

  it('never reconciles one key twice at once, and runs a key re-queued meanwhile once more after', async () => {
    const open: (() => void)[] = [];
    const active = new Map<string, number>();
    let maxSameKey = 0;
    let maxAll = 0;
    const { c, runs } = harness(async (_ctx, key) => {
      const k = key.name;
      active.set(k, (active.get(k) ?? 0) + 1);
      maxSameKey = Math.max(maxSameKey, active.get(k)!);
      maxAll = Math.max(maxAll, [...active.values()].reduce((a, b) => a + b, 0));
      await new Promise<void>((r) => open.push(r));
      active.set(k, active.get(k)! - 1);
      return {};
    }, { concurrency: 4 });
    c.start();
    c.enqueue({ namespace: 'ns', name: 'a' });
    c.enqueue({ namespace: 'ns', name: 'b' });
    await flush();
    expect(runs).toEqual(['ns/a', 'ns/b']);
    // Re-queued while running: it must wait for the running one, even with idle workers.
    c.enqueue({ namespace: 'ns', name: 'a' });
    c.enqueue({ namespace: 'ns', name: 'a' });
    await flush();
    expect(runs).toEqual(['ns/a', 'ns/b']);
    open.shift()!();
    await flush();
    expect(runs).toEqual(['ns/a', 'ns/b', 'ns/a']);
    while (open.length > 0) { open.shift()!(); await flush(); }
    expect(runs).toEqual(['ns/a', 'ns/b', 'ns/a']);
    expect(maxSameKey).toBe(1);
    expect(maxAll).toBe(2);
  });

  it('maps other sources to keys through watch, filtered by the predicate', async () => {
    const things = new FakeInformer<Obj>();
    const others = new FakeInformer<Obj & { spec: { thing: string } }>();
    const { c, runs } = harness(() => Promise.resolve({}));
    c.watchFor(things, (o, old) => !old || old.metadata.generation !== o.metadata.generation)
      .watch(others, (o) => [{ namespace: o.metadata.namespace ?? 'default', name: o.spec.thing }]);
    c.start();
    things.set(obj('a', 1));
    await flush();
    things.set(obj('a', 1)); // a status-only update: same generation
    await flush();
    expect(runs).toEqual(['ns/a']);
    things.set(obj('a', 2));
    await flush();
    others.set({ metadata: { name: 'o', namespace: 'ns' }, spec: { thing: 'x' } });
    await flush();
    things.remove(obj('a', 2));
    await flush();
    expect(runs).toEqual(['ns/a', 'ns/a', 'ns/x', 'ns/a']);
  });

  it('aborts the context signal on stop and waits for the running reconcile', async () => {
    let signal: AbortSignal | undefined;
    let finished = false;
    const { c } = harness(async (ctx) => {
      signal = ctx.signal;
      await new Promise<void>((r) => ctx.signal.addEventListener('abort', () => r()));
      finished = true;
      return {};
    });
    c.enqueue({ namespace: 'ns', name: 'a' });
    c.start();
    await flush();
    expect(signal?.aborted).toBe(false);
    await c.stop();
    expect(signal?.aborted).toBe(true);
    expect(finished).toBe(true);
  });
});
