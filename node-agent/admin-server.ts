import type { Server } from 'node:http';
import { startAdminServer as start } from '../common/admin-server.js';
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
}

export function startAdminServer(agent: WorkerServer, port: number, host = '127.0.0.1', opts: AgentAdminOptions = {}): Promise<{ server: Server; port: number }> {
  return start({
    registry: agent.metrics.registry,
    notReady: () => agent.notReady,
    status: () => ({ ready: agent.ready, workers: agent.status(), ...opts.extra?.() }),
    summary: () => {
      const workers = agent.status();
      return { ready: agent.ready, workers: { total: workers.length, ready: workers.filter((w) => w.state === 'ready').length, error: workers.filter((w) => w.state === 'error').length }, ...opts.extraSummary?.() };
    },
    ...(opts.token ? { statusToken: opts.token } : {}),
  }, port, host);
}
