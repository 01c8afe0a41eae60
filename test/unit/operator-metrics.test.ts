import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../common/log.js';
import { waitFor } from '../../cli/local/ports.js';
import { Controller, TerminalError } from '../../operator/runtime/controller.js';
import { OperatorMetrics } from '../../operator/runtime/metrics.js';

// The operator exports controller-runtime's and client-go's work queue metrics under their
// names and labels (pkg/internal/controller/metrics, pkg/metrics/workqueue.go), beside its
// own edge_operator_* ones: a stock controller-runtime dashboard reads them unchanged.

interface Obj { metadata: { name: string; namespace?: string } }

/** The value of one sample of the exposition text, or undefined. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v) && Object.keys(got).length === Object.keys(labels).length) return Number(m[3]);
  }
  return undefined;
}

const controllers: Controller<Obj>[] = [];
afterEach(async () => { await Promise.all(controllers.splice(0).map((c) => c.stop())); });

describe('operator metrics under controller-runtime names', () => {
  it('counts reconciles by result, errors, retries, adds, and reads depth, workers and unfinished work when scraped', async () => {
    const metrics = new OperatorMetrics();
    let failures = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const c = new Controller<Obj>({
      name: 'edgeworker', log: createLogger({}, () => {}, 'error'), concurrency: 3, baseDelayMs: 5, maxDelayMs: 5,
      onMetrics: (e) => metrics.observeQueue(e),
      reconciler: {
        reconcile: async (_ctx, key) => {
          switch (key.name) {
            case 'later': return { requeueAfter: 600_000 };
            case 'flaky': if (failures++ < 2) throw new Error('apiserver away'); return {};
            case 'broken': throw new TerminalError('bundle refused');
            case 'slow': await gate; return {};
            default: return {};
          }
        },
      },
    });
    controllers.push(c);
    metrics.setControllers([c]);
    const q = { name: 'edgeworker', controller: 'edgeworker' };
    const before = await metrics.registry.metrics();
    expect(sample(before, 'controller_runtime_reconcile_total', { controller: 'edgeworker', result: 'success' })).toBe(0);
    expect(sample(before, 'controller_runtime_max_concurrent_reconciles', { controller: 'edgeworker' })).toBe(3);

    c.enqueue({ namespace: 'ns', name: 'slow' });
    c.start();
    for (const name of ['ok', 'later', 'flaky', 'broken']) c.enqueue({ namespace: 'ns', name });
    await waitFor('the reconciles', async () => {
      const t = await metrics.registry.metrics();
      return sample(t, 'controller_runtime_reconcile_total', { controller: 'edgeworker', result: 'success' }) === 2;
    }, 10_000, 5);

    const text = await metrics.registry.metrics();
    const get = (name: string, labels: Record<string, string>) => sample(text, name, labels);
    // ok and flaky's third run succeed; later asks to come back; flaky failed twice, broken once (terminal).
    expect(get('controller_runtime_reconcile_total', { controller: 'edgeworker', result: 'requeue_after' })).toBe(1);
    expect(get('controller_runtime_reconcile_total', { controller: 'edgeworker', result: 'error' })).toBe(3);
    expect(get('controller_runtime_reconcile_errors_total', { controller: 'edgeworker' })).toBe(3);
    expect(get('controller_runtime_terminal_reconcile_errors_total', { controller: 'edgeworker' })).toBe(1);
    expect(get('controller_runtime_reconcile_time_seconds_count', { controller: 'edgeworker' })).toBe(6);
    expect(get('controller_runtime_active_workers', { controller: 'edgeworker' })).toBe(1);
    expect(get('workqueue_adds_total', q)).toBe(7);
    expect(get('workqueue_retries_total', q)).toBe(2);
    expect(get('workqueue_depth', { ...q, priority: '' })).toBe(0);
    expect(get('workqueue_queue_duration_seconds_count', q)).toBe(6);
    expect(get('workqueue_work_duration_seconds_count', q)).toBe(6);
    expect(get('workqueue_work_duration_seconds_bucket', { ...q, le: '1e-8' })).toBeDefined();
    // slow is still running: its time so far is unfinished work.
    expect(get('workqueue_unfinished_work_seconds', q)).toBeGreaterThan(0);
    expect(get('workqueue_longest_running_processor_seconds', q)).toBeGreaterThan(0);
    // The project's own names stay.
    expect(get('edge_operator_reconciles_total', { kind: 'edgeworker', result: 'ok' })).toBe(3);

    release();
    await waitFor('slow done', async () => sample(await metrics.registry.metrics(), 'controller_runtime_active_workers', { controller: 'edgeworker' }) === 0, 10_000, 5);
    const after = await metrics.registry.metrics();
    expect(sample(after, 'workqueue_unfinished_work_seconds', q)).toBe(0);
    expect(sample(after, 'workqueue_longest_running_processor_seconds', q)).toBe(0);
  });

  it('reads the queue depth of keys waiting for a worker', async () => {
    const metrics = new OperatorMetrics();
    const c = new Controller<Obj>({ name: 'durableactor', log: createLogger({}, () => {}, 'error'), reconciler: { reconcile: () => Promise.resolve({}) } });
    controllers.push(c);
    metrics.setControllers([c]);
    for (const name of ['a', 'b', 'c']) c.enqueue({ namespace: 'ns', name });
    expect(sample(await metrics.registry.metrics(), 'workqueue_depth', { name: 'durableactor', controller: 'durableactor', priority: '' })).toBe(3);
  });
});
