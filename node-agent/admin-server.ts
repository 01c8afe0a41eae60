import type { Server } from 'node:http';
import { Registry } from 'prom-client';
import { startAdminServer as start } from '../common/admin-server.js';
import type { Startup } from '../common/nats-startup.js';
import type { WorkerServer } from './serving/worker-server.js';

// The agent's admin port: /metrics, /healthz, /readyz and /status. The full /status (every
// tenant's workers, their errors and the live actor ids) goes only to a caller with the
// admin token (`Authorization: Bearer`, $EDGE_ADMIN_TOKEN); anyone else gets counts.

export interface AgentAdminOptions {
  /** More fields of the full status (the live actors). */
  extra?: () => Record<string, unknown>;
  /** More counts for the summary. */
  extraSummary?: () => Record<string, number>;
  /** Reads the full /status; without one, nobody does. */
  token?: string;
  /** What start-up still waits for (NATS): /readyz says it until start-up is done. */
  startup?: Startup;
}

/**
 * `agent` may be a getter: the port is up from the first start-up step (so /readyz can say
 * what start-up waits for) and the worker server comes later.
 */
export function startAdminServer(agent: WorkerServer | (() => WorkerServer | undefined), port: number, host = '127.0.0.1', opts: AgentAdminOptions = {}): Promise<{ server: Server; port: number }> {
  const get = typeof agent === 'function' ? agent : () => agent;
  const starting = () => opts.startup?.waiting ?? 'starting';
  return start({
    registry: {
      contentType: Registry.PROMETHEUS_CONTENT_TYPE,
      metrics: () => get()?.metrics.registry.metrics() ?? Promise.resolve(''),
    },
    notReady: () => {
      const a = get();
      return opts.startup?.waiting ?? (!a ? 'starting' : a.notReady);
    },
    status: () => {
      const a = get();
      return a ? { ready: a.ready && !opts.startup?.waiting, workers: a.status(), ...opts.extra?.() } : { ready: false, starting: starting() };
    },
    summary: () => {
      const a = get();
      if (!a) return { ready: false, starting: starting() };
      const workers = a.status();
      return { ready: a.ready && !opts.startup?.waiting, workers: { total: workers.length, ready: workers.filter((w) => w.state === 'ready').length, error: workers.filter((w) => w.state === 'error').length }, ...opts.extraSummary?.() };
    },
    ...(opts.token ? { statusToken: opts.token } : {}),
  }, port, host);
}
