import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

// The front's own metrics (`edge agent --isolate-hosts N`): its hosts and what it answered
// itself. The hosts' metrics (requests per worker, isolates, ...) are summed into the same
// /metrics by the front (prom-client's AggregatorRegistry). Units are in the names.

export class FrontMetrics {
  readonly registry = new Registry();
  readonly hostsUp: Gauge;
  readonly hostCrashes: Counter<'host' | 'reason'>;
  readonly restartSeconds: Histogram;
  readonly unavailable: Counter<'worker'>;
  readonly cordoned: Gauge;
  readonly cordons: Counter<'namespace' | 'reason'>;

  constructor(labels: Record<string, string> = {}) {
    this.registry.setDefaultLabels(labels);
    const registers = [this.registry];
    this.hostsUp = new Gauge({ name: 'edge_isolate_hosts_up', help: 'Isolate-host processes serving now.', registers });
    this.hostCrashes = new Counter({ name: 'edge_isolate_host_crashes_total', help: 'Isolate-host processes that died, by host index and signal or exit code.', labelNames: ['host', 'reason'], registers });
    this.restartSeconds = new Histogram({
      name: 'edge_isolate_host_restart_seconds', help: 'From an isolate host dying to its replacement serving.', registers,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    });
    this.unavailable = new Counter({ name: 'edge_front_unavailable_total', help: 'Requests the front answered 503 because the isolate host of their worker was down.', labelNames: ['worker'], registers });
    this.cordoned = new Gauge({ name: 'edge_cordoned_namespaces', help: 'Namespaces whose workers run in the cordon host (lowest CPU priority) now.', registers });
    this.cordons = new Counter({ name: 'edge_cordons_total', help: 'Times a namespace was cordoned, by namespace and reason (cpu-share: over its share of the CPU; limit-hit: an isolate killed for its CPU or memory limit, or a WebSocket closed for a backlog its client did not read).', labelNames: ['namespace', 'reason'], registers });
    collectDefaultMetrics({ register: this.registry, prefix: 'edge_front_' });
  }
}
