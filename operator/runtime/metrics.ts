import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { WorkQueueMetricsEvent } from './workqueue.js';

// The operator's Prometheus metrics (one registry per operator, so tests can run several).
//
// Two families: the project's own (edge_operator_*), and the ones controller-runtime and
// client-go's work queue export, under their names and labels
// (pkg/internal/controller/metrics/metrics.go, pkg/metrics/workqueue.go), so stock
// operator dashboards and alerts work unchanged: controller_runtime_reconcile_total
// {controller, result}, workqueue_depth{name, controller, priority}, ... Each controller
// has one queue named after it, so `name` and `controller` are equal, as there.

/** What the gauges read from a running controller when scraped. */
export interface ControllerGauges {
  readonly name: string;
  readonly queueLength: number;
  readonly maxConcurrentReconciles: number;
  readonly activeWorkers: number;
  unfinishedWork(): { seconds: number; longestSeconds: number };
}

/** controller-runtime's ReconcileTime buckets. */
const RECONCILE_TIME_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
  1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60];
/** client-go's workqueue buckets: ExponentialBuckets(10e-9, 10, 12), 10 ns to 1000 s. */
const WORKQUEUE_BUCKETS = Array.from({ length: 12 }, (_, i) => Number((1e-8 * 10 ** i).toPrecision(1)));

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles: Counter<'kind' | 'result'>;
  readonly reconcileDuration: Histogram<'kind'>;
  readonly queueDepth: Gauge;
  readonly queueRetries: Counter;
  readonly queueWait: Histogram;
  readonly leader: Gauge;
  readonly agentsLive: Gauge<'region'>;
  readonly workers: Gauge<'ready'>;

  // controller-runtime's names.
  private readonly crReconcileTotal: Counter<'controller' | 'result'>;
  private readonly crReconcileErrors: Counter<'controller'>;
  private readonly crTerminalErrors: Counter<'controller'>;
  private readonly crReconcileTime: Histogram<'controller'>;
  private readonly wqAdds: Counter<'name' | 'controller'>;
  private readonly wqRetries: Counter<'name' | 'controller'>;
  private readonly wqQueueDuration: Histogram<'name' | 'controller'>;
  private readonly wqWorkDuration: Histogram<'name' | 'controller'>;
  /** The controllers of the current leadership term, read at scrape time. */
  private controllers: ControllerGauges[] = [];

  constructor(labels: Record<string, string> = {}) {
    this.registry.setDefaultLabels(labels);
    const registers = [this.registry];
    this.reconciles = new Counter({ name: 'edge_operator_reconciles_total', help: 'Reconciles by kind and result (ok, error).', labelNames: ['kind', 'result'], registers });
    this.reconcileDuration = new Histogram({
      name: 'edge_operator_reconcile_duration_seconds', help: 'Time spent in one reconcile, by kind.', labelNames: ['kind'], registers,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    });
    this.queueDepth = new Gauge({ name: 'edge_operator_workqueue_depth', help: 'Keys waiting in the work queue.', registers });
    this.queueRetries = new Counter({ name: 'edge_operator_workqueue_retries_total', help: 'Keys re-queued after a failed reconcile.', registers });
    this.queueWait = new Histogram({
      name: 'edge_operator_workqueue_wait_seconds', help: 'Time a key waited in the queue before its reconcile started.', registers,
      buckets: [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    });
    this.leader = new Gauge({ name: 'edge_operator_leader', help: '1 while this replica holds the leader Lease.', registers });
    this.agentsLive = new Gauge({ name: 'edge_operator_agents_live', help: 'Agents with live presence, by region.', labelNames: ['region'], registers });
    this.workers = new Gauge({ name: 'edge_operator_edgeworkers', help: 'EdgeWorkers by Ready condition status.', labelNames: ['ready'], registers });
    collectDefaultMetrics({ register: this.registry, prefix: 'edge_operator_' });

    this.crReconcileTotal = new Counter({ name: 'controller_runtime_reconcile_total', help: 'Total number of reconciliations per controller', labelNames: ['controller', 'result'], registers });
    this.crReconcileErrors = new Counter({ name: 'controller_runtime_reconcile_errors_total', help: 'Total number of reconciliation errors per controller', labelNames: ['controller'], registers });
    this.crTerminalErrors = new Counter({ name: 'controller_runtime_terminal_reconcile_errors_total', help: 'Total number of terminal reconciliation errors per controller', labelNames: ['controller'], registers });
    this.crReconcileTime = new Histogram({ name: 'controller_runtime_reconcile_time_seconds', help: 'Length of time per reconciliation per controller', labelNames: ['controller'], buckets: RECONCILE_TIME_BUCKETS, registers });
    const controllers = () => this.controllers;
    const gauge = (name: string, help: string, labelNames: string[], value: (c: ControllerGauges) => Record<string, string | number>[]) => new Gauge({
      name, help, labelNames, registers,
      collect(this: Gauge) {
        this.reset();
        for (const c of controllers()) for (const { v, ...l } of value(c)) this.set(l as Record<string, string>, v as number);
      },
    });
    gauge('controller_runtime_max_concurrent_reconciles', 'Maximum number of concurrent reconciles per controller', ['controller'], (c) => [{ controller: c.name, v: c.maxConcurrentReconciles }]);
    gauge('controller_runtime_active_workers', 'Number of currently used workers per controller', ['controller'], (c) => [{ controller: c.name, v: c.activeWorkers }]);
    gauge('workqueue_depth', 'Current depth of workqueue by workqueue and priority', ['name', 'controller', 'priority'], (c) => [{ name: c.name, controller: c.name, priority: '', v: c.queueLength }]);
    gauge('workqueue_unfinished_work_seconds', 'How many seconds of work has been done that is in progress and hasn\'t been observed by work_duration. Large values indicate stuck threads. One can deduce the number of stuck threads by observing the rate at which this increases.',
      ['name', 'controller'], (c) => [{ name: c.name, controller: c.name, v: c.unfinishedWork().seconds }]);
    gauge('workqueue_longest_running_processor_seconds', 'How many seconds has the longest running processor for workqueue been running.',
      ['name', 'controller'], (c) => [{ name: c.name, controller: c.name, v: c.unfinishedWork().longestSeconds }]);
    this.wqAdds = new Counter({ name: 'workqueue_adds_total', help: 'Total number of adds handled by workqueue', labelNames: ['name', 'controller'], registers });
    this.wqRetries = new Counter({ name: 'workqueue_retries_total', help: 'Total number of retries handled by workqueue', labelNames: ['name', 'controller'], registers });
    this.wqQueueDuration = new Histogram({ name: 'workqueue_queue_duration_seconds', help: 'How long in seconds an item stays in workqueue before being requested', labelNames: ['name', 'controller'], buckets: WORKQUEUE_BUCKETS, registers });
    this.wqWorkDuration = new Histogram({ name: 'workqueue_work_duration_seconds', help: 'How long in seconds processing an item from workqueue takes.', labelNames: ['name', 'controller'], buckets: WORKQUEUE_BUCKETS, registers });
  }

  /** The controllers the gauges read (each leadership term builds new ones); their counters start at 0 in every series. */
  setControllers(controllers: ControllerGauges[]): void {
    this.controllers = controllers;
    for (const c of controllers) {
      const q = { name: c.name, controller: c.name };
      for (const result of ['success', 'error', 'requeue', 'requeue_after']) this.crReconcileTotal.inc({ controller: c.name, result }, 0);
      this.crReconcileErrors.inc({ controller: c.name }, 0);
      this.crTerminalErrors.inc({ controller: c.name }, 0);
      this.wqAdds.inc(q, 0);
      this.wqRetries.inc(q, 0);
    }
  }

  observeQueue(e: WorkQueueMetricsEvent): void {
    const q = { name: e.queue, controller: e.queue };
    if (e.kind === 'add') this.wqAdds.inc(q);
    else if (e.kind === 'retry') {
      this.queueRetries.inc();
      this.wqRetries.inc(q);
    } else {
      this.queueWait.observe(e.waitMs / 1000);
      // One queue per controller: the queue names the kind.
      const kind = e.queue;
      this.reconciles.inc({ kind, result: e.ok ? 'ok' : 'error' });
      this.reconcileDuration.observe({ kind }, e.workMs / 1000);
      // As controller-runtime's reconcileHandler counts: a terminal error is an error too.
      this.crReconcileTotal.inc({ controller: kind, result: e.result === 'terminal' ? 'error' : e.result });
      if (e.result === 'error' || e.result === 'terminal') this.crReconcileErrors.inc({ controller: kind });
      if (e.result === 'terminal') this.crTerminalErrors.inc({ controller: kind });
      this.crReconcileTime.observe({ controller: kind }, e.workMs / 1000);
      this.wqQueueDuration.observe(q, e.waitMs / 1000);
      this.wqWorkDuration.observe(q, e.workMs / 1000);
    }
  }
}
