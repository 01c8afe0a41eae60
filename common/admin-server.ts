import { createHash, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

// The admin port of every long-running component (agent, operator), separate from user
// traffic: /metrics, /healthz, /readyz and /status. Bind it where only the kubelet and
// Prometheus reach it (the chart's NetworkPolicies); a component whose status names
// tenants' objects gives the full /status to a bearer token only.

export interface AdminHandlers {
  /** A prom-client Registry, or anything that renders one (an agent front sums its hosts'). */
  registry: Pick<Registry, 'metrics' | 'contentType'>;
  /** undefined when ready, else why not (the 503 body). */
  notReady(): string | undefined;
  /** /status in full (a promise is awaited). With `summary`, only for a caller with the bearer token. */
  status(): unknown;
  /**
   * /status for everyone else, when status() lists what only an operator of the cluster
   * may read (tenants' workers, live actor ids): aggregate health only.
   */
  summary?(): unknown;
  /** The bearer token that reads the full status; without one nobody does (when summary is given). */
  statusToken?: string;
}

/** What one admin listener serves: /metrics; /healthz and /readyz; /status. Default all three. */
export type AdminPath = 'metrics' | 'probes' | 'status';
const ALL_PATHS: readonly AdminPath[] = ['metrics', 'probes', 'status'];

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** True when the request carries `Authorization: Bearer <token>` (compared in constant time). */
export function bearerMatches(header: string | undefined, token: string | undefined): boolean {
  if (!token || typeof header !== 'string') return false;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m !== null && timingSafeEqual(digest(m[1]!), digest(token));
}

export async function startAdminServer(h: AdminHandlers, port: number, host = '127.0.0.1', serve: readonly AdminPath[] = ALL_PATHS): Promise<{ server: Server; port: number }> {
  const served = (path: string | undefined): boolean => {
    if (path === '/metrics') return serve.includes('metrics');
    if (path === '/healthz' || path === '/readyz') return serve.includes('probes');
    return path !== '/status' || serve.includes('status');
  };
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') { send(405, 'method not allowed\n'); return; }
    switch (served(path) ? path : undefined) {
      case '/healthz': send(200, 'ok\n'); return;
      case '/readyz': {
        const why = h.notReady();
        if (why === undefined) send(200, 'ready\n'); else send(503, `${why}\n`);
        return;
      }
      case '/status': {
        const full = !h.summary || bearerMatches(req.headers.authorization, h.statusToken);
        Promise.resolve(full ? h.status() : h.summary!()).then((st) => send(200, `${JSON.stringify(st)}\n`, 'application/json'), (err: unknown) => send(500, `${String(err)}\n`));
        return;
      }
      case '/metrics':
        h.registry.metrics().then((text) => send(200, text, h.registry.contentType), (err: unknown) => send(500, `${String(err)}\n`));
        return;
      default: send(404, `not found: try ${serve.map((p) => (p === 'probes' ? '/healthz, /readyz' : `/${p}`)).join(', ')}\n`);
    }
  });
  server.listen(port, host);
  await once(server, 'listening');
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('admin server has no TCP address');
  return { server, port: addr.port };
}
