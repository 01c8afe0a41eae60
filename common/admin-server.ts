import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

// The admin port of every long-running component (agent, operator), separate from user
// traffic: /metrics, /healthz, /readyz and /status.

export interface AdminHandlers {
  /** A prom-client Registry, or anything that renders one (an agent front sums its hosts'). */
  registry: Pick<Registry, 'metrics' | 'contentType'>;
  /** undefined when ready, else why not (the 503 body). */
  notReady(): string | undefined;
  /** The /status body (a promise is awaited). */
  status(): unknown;
}

export async function startAdminServer(h: AdminHandlers, port: number, host = '127.0.0.1'): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') { send(405, 'method not allowed\n'); return; }
    switch (path) {
      case '/healthz': send(200, 'ok\n'); return;
      case '/readyz': {
        const why = h.notReady();
        if (why === undefined) send(200, 'ready\n'); else send(503, `${why}\n`);
        return;
      }
      case '/status':
        Promise.resolve(h.status()).then((st) => send(200, `${JSON.stringify(st)}\n`, 'application/json'), (err: unknown) => send(500, `${String(err)}\n`));
        return;
      case '/metrics':
        h.registry.metrics().then((text) => send(200, text, h.registry.contentType), (err: unknown) => send(500, `${String(err)}\n`));
        return;
      default: send(404, 'not found: try /metrics, /healthz, /readyz or /status\n');
    }
  });
  server.listen(port, host);
  await once(server, 'listening');
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('admin server has no TCP address');
  return { server, port: addr.port };
}
