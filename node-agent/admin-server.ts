import type { Server } from 'node:http';
import { startAdminServer as start } from '../common/admin-server.js';
import type { WorkerServer } from './serving/worker-server.js';

// The agent's admin port: /metrics, /healthz, /readyz and /status (the per-worker state as JSON).

export function startAdminServer(agent: WorkerServer, port: number, host = '127.0.0.1', extra?: () => Record<string, unknown>): Promise<{ server: Server; port: number }> {
  return start({
    registry: agent.metrics.registry,
    notReady: () => (agent.ready ? undefined : 'loading workers'),
    status: () => ({ ready: agent.ready, workers: agent.status(), ...extra?.() }),
  }, port, host);
}
