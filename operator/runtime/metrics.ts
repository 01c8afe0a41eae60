import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { WorkQueueMetricsEvent } from './workqueue.js';

// The operator's Prometheus metrics (one registry per operator, so tests can run several).

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
  }

  observeQueue(e: WorkQueueMetricsEvent): void {
    if (e.kind === 'retry') this.queueRetries.inc();
    else if (e.kind === 'done') {
      this.queueWait.observe(e.waitMs / 1000);
      // One queue per controller: the queue names the kind.
      const kind = e.queue;
      this.reconciles.inc({ kind, result: e.ok ? 'ok' : 'error' });
      this.reconcileDuration.observe({ kind }, e.workMs / 1000);
    }
  }
}
