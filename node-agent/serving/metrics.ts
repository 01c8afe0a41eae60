import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

// The agent's Prometheus metrics, one registry per agent so several agents can run in one
// process (tests). Units are in the names.

export class AgentMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'worker' | 'status'>;
  readonly requestDuration: Histogram<'worker'>;
  readonly poolSize: Gauge;
  readonly workerIsolates: Gauge<'worker'>;
  readonly coldStarts: Counter<'worker'>;
  readonly disposals: Counter<'worker' | 'reason'>;
  readonly workersLoaded: Gauge;
  readonly bundleErrors: Counter<'worker'>;
  readonly webSocketBacklog: Gauge<'worker'>;
  readonly webSocketBacklogCloses: Counter<'worker'>;
  readonly subrequestHostBytes: Gauge<'worker'>;
  readonly starts: Counter<'worker' | 'start'>;
  readonly shardForwards: Counter;
  readonly shardFallbacks: Counter<'reason'>;
  readonly shardForwardedIn: Counter;
  readonly shardSize: Gauge<'worker'>;
  readonly shardMember: Gauge<'worker'>;
  /** Read when /metrics is scraped: each worker's shard as this host computes it. */
  shardSource: () => ReadonlyMap<string, { size: number; member: boolean }> = () => new Map();
  /** Read when /metrics is scraped: bytes workers sent on WebSockets that wait for the network. */
  webSocketBacklogSource: () => ReadonlyMap<string, number> = () => new Map();
  /** Read when /metrics is scraped: bytes the host holds for workers' subrequests, by worker. */
  subrequestBytesSource: () => ReadonlyMap<string, number> = () => new Map();

  constructor(labels: Record<string, string> = {}) {
    this.registry.setDefaultLabels(labels);
    const registers = [this.registry];
    const requestCounts = this.requestCounts;
    this.requests = new Counter({
      name: 'edge_requests_total', help: 'Requests answered, by worker and HTTP status.', labelNames: ['worker', 'status'], registers,
      collect() {
        this.reset();
        for (const [worker, byStatus] of requestCounts) for (const [status, n] of byStatus) this.inc({ worker, status }, n);
      },
    });
    this.requestDuration = new Histogram({
      name: 'edge_request_duration_seconds', help: 'Time from request to response headers, by worker.', labelNames: ['worker'], registers,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    });
    this.poolSize = new Gauge({ name: 'edge_isolate_pool_ready', help: 'Pre-warmed isolates waiting for a worker.', registers });
    this.workerIsolates = new Gauge({ name: 'edge_worker_isolates', help: 'Isolates loaded with a worker, by worker.', labelNames: ['worker'], registers });
    this.coldStarts = new Counter({ name: 'edge_cold_starts_total', help: 'Requests that had to load the worker into an isolate first.', labelNames: ['worker'], registers });
    this.disposals = new Counter({ name: 'edge_isolate_disposals_total', help: 'Isolates disposed, by worker and reason (cpu, memory, wall, crash, idle, replaced, shutdown).', labelNames: ['worker', 'reason'], registers });
    this.workersLoaded = new Gauge({ name: 'edge_workers_loaded', help: 'Worker versions currently served.', registers });
    this.bundleErrors = new Counter({ name: 'edge_bundle_errors_total', help: 'Worker versions refused because their module did not load.', labelNames: ['worker'], registers });
    const backlogSource = () => this.webSocketBacklogSource();
    this.webSocketBacklog = new Gauge({
      name: 'edge_websocket_outgoing_backlog_bytes', help: 'Bytes workers sent on WebSockets that are not written to the network yet (clients reading slowly), by worker.', labelNames: ['worker'], registers,
      collect() {
        this.reset();
        for (const [worker, bytes] of backlogSource()) this.set({ worker }, bytes);
      },
    });
    this.webSocketBacklogCloses = new Counter({ name: 'edge_websocket_backlog_closes_total', help: 'WebSockets the agent closed because their client did not read what the worker sent (or the isolate held too much for slow clients), by worker.', labelNames: ['worker'], registers });
    const subrequestSource = () => this.subrequestBytesSource();
    this.subrequestHostBytes = new Gauge({
      name: 'edge_subrequest_host_bytes', help: 'Bytes the agent holds for workers\' subrequests outside their isolates (bodies and stream windows in flight), by worker.', labelNames: ['worker'], registers,
      collect() {
        this.reset();
        for (const [worker, bytes] of subrequestSource()) if (bytes > 0) this.set({ worker }, bytes);
      },
    });
    const startCounts = this.startCounts;
    this.starts = new Counter({
      name: 'edge_worker_starts_total', help: 'Requests run on this host, by worker and whether an idle isolate took them (warm) or one was loaded for them (cold).', labelNames: ['worker', 'start'], registers,
      collect() {
        this.reset();
        for (const [worker, n] of startCounts) {
          if (n.warm > 0) this.inc({ worker, start: 'warm' }, n.warm);
          if (n.cold > 0) this.inc({ worker, start: 'cold' }, n.cold);
        }
      },
    });
    this.shardForwards = new Counter({ name: 'edge_shard_forwards_total', help: 'Requests forwarded to a member of their worker\'s shard (docs/shards.md).', registers });
    this.shardFallbacks = new Counter({ name: 'edge_shard_fallbacks_total', help: 'Forwards a shard member did not take (unreachable, timeout, overloaded, not-here): the next member or this host served the request.', labelNames: ['reason'], registers });
    this.shardForwardedIn = new Counter({ name: 'edge_shard_forwarded_in_total', help: 'Requests other hosts forwarded here as a shard member.', registers });
    const shardSource = () => this.shardSource();
    this.shardSize = new Gauge({
      name: 'edge_shard_size_hosts', help: 'Hosts in each worker\'s shard, as this host computes it.', labelNames: ['worker'], registers,
      collect() {
        this.reset();
        for (const [worker, s] of shardSource()) this.set({ worker }, s.size);
      },
    });
    this.shardMember = new Gauge({
      name: 'edge_shard_member', help: '1 for each worker whose shard this host is in (it keeps the worker warm).', labelNames: ['worker'], registers,
      collect() {
        this.reset();
        for (const [worker, s] of shardSource()) if (s.member) this.set({ worker }, 1);
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'edge_agent_' });
  }

  // prom-client hashes the label object on every inc and observe, even on a child it handed
  // out (a string built and looked up: ~0.6 µs, three times per request). The counters are
  // plain numbers here, which their collect() hands to prom-client when /metrics is read;
  // the histogram, which prom-client gives no way to fill in bulk, keeps a child per worker.
  private readonly requestCounts = new Map<string, Map<number, number>>();
  private readonly startCounts = new Map<string, { warm: number; cold: number }>();
  private readonly durationChildren = new Map<string, { observe(v: number): void }>();

  /** Counts one request run here, warm or cold. */
  observeStart(worker: string, cold: boolean): void {
    let n = this.startCounts.get(worker);
    if (!n) { n = { warm: 0, cold: 0 }; this.startCounts.set(worker, n); }
    if (cold) n.cold += 1; else n.warm += 1;
  }

  /** Counts one answered request and its time to response headers. */
  observeRequest(worker: string, status: number, seconds: number | undefined): void {
    let byStatus = this.requestCounts.get(worker);
    if (!byStatus) { byStatus = new Map(); this.requestCounts.set(worker, byStatus); }
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
    if (seconds === undefined) return;
    let h = this.durationChildren.get(worker);
    if (!h) { h = this.requestDuration.labels({ worker }); this.durationChildren.set(worker, h); }
    h.observe(seconds);
  }
}
