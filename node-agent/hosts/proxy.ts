import { once } from 'node:events';
import { createServer, request, ServerResponse, type ClientRequest, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../common/log.js';
import type { FrontMetrics } from './metrics.js';
import type { HostRoute, HostTarget } from './supervisor.js';
import { InFlight, stopAccepting } from '../serving/graceful.js';
import { spliceUpgrade } from '../../common/upgrade-splice.js';

// The public HTTP listener of an agent whose isolates run in isolate-host processes
// (docs/isolate-hosts.md): it routes each request by Host and path to the host serving the
// worker's namespace and relays it as frames on that host's connection (frame-relay.ts),
// bodies streamed both ways; a WebSocket upgrade goes over the host's HTTP socket and is
// spliced. Everything about HTTP semantics (limits, the worker's view of
// the request, error bodies) stays in the host's HttpFront, so a request means the same with
// or without hosts. What the front answers itself: 404 (no route), 503 with Retry-After
// (the worker's host is down or died under the request), 400 (malformed HTTP).

export interface HostProxyOptions {
  log: Logger;
  metrics: FrontMetrics;
  /** The host serving a request, by Host header and path; undefined: no worker is routed. */
  route(host: string, path: string): HostRoute | undefined;
  /** How to reach host `index`; undefined while it is down. */
  target(index: number): HostTarget | undefined;
  /**
   * `edge dev` (--dev-error-pages): a request no worker here is routed for goes to host 0,
   * whose HttpFront knows every worker of the region's feed and can say "placed elsewhere".
   */
  unroutedToHost0?: boolean;
}

// Connection-level headers are the front's and the host's business, not the worker's: node's
// client writes its own. Upgrade and Connection travel on an upgrade request.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']);

const rayId = () => randomBytes(8).toString('hex');

function plain(res: ServerResponse, status: number, body: string, extra: Record<string, string> = {}): void {
  if (res.headersSent) { res.destroy(); return; }
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

/**
 * The request's headers for the host: hop-by-hop ones dropped (kept for an upgrade), and
 * Expect (this front's server answered it); CF-Connecting-IP set by us. Transfer-Encoding
 * stays on a framed request: it tells the host's HttpFront that a body of unknown length
 * follows (the front has already decoded the chunks). Null when the request carries more
 * than one Host: refused here, as the host's HttpFront would.
 */
function forwardHeaders(req: IncomingMessage, upgrade: boolean): string[] | null {
  const out: string[] = [];
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    // The host takes the client address from this header (only the front reaches the host):
    // a client's own must not pass through as if the front had set it.
    if (k === 'cf-connecting-ip' || k === 'expect' || (upgrade && k === 'transfer-encoding')) continue;
    if (HOP_BY_HOP.has(k) && !(upgrade && (k === 'upgrade' || k === 'connection'))) continue;
    if (k === 'host' && ++hosts > 1) return null;
    out.push(raw[i]!, raw[i + 1]!);
  }
  const addr = req.socket.remoteAddress;
  if (addr) out.push('cf-connecting-ip', addr);
  return out;
}

function responseHeaders(res: IncomingMessage): string[] {
  const out: string[] = [];
  const raw = res.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

export class HostProxy {
  readonly server: Server;
  private readonly sockets = new Set<Socket>();
  /** Spliced WebSocket connections (client socket, host socket), closed with the front. */
  private readonly tunnels = new Set<Socket>();
  /** Requests being relayed: a drain waits for them before it closes their connections. */
  private readonly inflight = new InFlight();

  constructor(private readonly opts: HostProxyOptions) {
    this.server = createServer({ keepAliveTimeout: 5000, headersTimeout: 5_000, requestTimeout: 0, connectionsCheckingInterval: 1_000 }, (req, res) => {
      this.inflight.track(res);
      this.forward(req, res);
    });
    this.server.on('connection', (s: Socket) => { this.sockets.add(s); s.once('close', () => this.sockets.delete(s)); });
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      socket.on('error', () => { /* closed; whoever uses it sees that */ });
      const res = new ServerResponse(req);
      res.shouldKeepAlive = false;
      res.assignSocket(socket);
      res.once('finish', () => { res.detachSocket(socket); socket.end(); });
      this.forward(req, res, { socket, head });
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') { socket.destroy(); return; }
      if (socket.writable && !('_httpMessage' in socket && socket._httpMessage)) {
        const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
        socket.end(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 12\r\n\r\nbad request\n`);
      } else {
        socket.destroy();
      }
    });
  }

  async listen(port: number, host: string): Promise<number> {
    this.server.listen(port, host);
    await once(this.server, 'listening');
    const addr = this.server.address();
    if (addr === null || typeof addr === 'string') throw new Error('the agent front has no TCP address');
    return addr.port;
  }

  /** Draining: every response from now on closes its connection (the listener stays open). */
  drain(): void { this.inflight.drain(); }

  /**
   * Stops listening, lets requests in flight finish for at most `graceMs`, then closes
   * every connection and WebSocket tunnel. Returns how many requests were cut at the bound.
   */
  async close(graceMs = 0): Promise<number> {
    const { cut, closed } = await stopAccepting(this.server, this.inflight, graceMs);
    for (const s of this.tunnels) s.destroy();
    for (const s of this.sockets) s.destroy();
    await closed;
    return cut;
  }

  private unavailable(res: ServerResponse, worker: string, why: string): void {
    const ray = rayId();
    this.opts.metrics.unavailable.inc({ worker });
    plain(res, 503, `worker ${worker} is unavailable: ${why}; retry shortly (ray ${ray})\n`, { 'retry-after': '1', 'x-edge-ray': ray });
  }

  private forward(req: IncomingMessage, res: ServerResponse, upgrade?: { socket: Socket; head: Buffer }): void {
    const hostHeader = req.headers.host ?? '';
    const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
    const r = this.opts.route(hostHeader, path) ?? (this.opts.unroutedToHost0 && this.opts.target(0) ? { index: 0, worker: '' } : undefined);
    if (!r) {
      plain(res, 404, `no worker is routed for host "${hostHeader}" and path "${path}"\n`);
      req.resume();
      return;
    }
    if (r.moving) {
      // Its body waits unread in the socket meanwhile; the client may give up.
      void r.moving.then(() => { if (!res.destroyed && !req.destroyed) this.forward(req, res, upgrade); });
      return;
    }
    const t = this.opts.target(r.index);
    if (!t) {
      this.unavailable(res, r.worker, 'its isolate host is restarting');
      req.resume();
      return;
    }
    const headers = forwardHeaders(req, upgrade !== undefined);
    if (headers === null) {
      plain(res, 400, 'a request must carry one Host header\n', { connection: 'close' });
      req.resume();
      return;
    }
    if (upgrade) this.relayUpgrade(req, res, r, t, headers, upgrade);
    else this.relay(req, res, r, t, headers);
  }

  /**
   * Relays a WebSocket upgrade with node's HTTP client, on a connection of its own: on a 101
   * the host's socket is handed over and spliced to the client's for good.
   */
  private relayUpgrade(req: IncomingMessage, res: ServerResponse, r: HostRoute, t: HostTarget, headers: string[], upgrade: { socket: Socket; head: Buffer }): void {
    const preq: ClientRequest = request({ socketPath: t.socketPath, agent: false, method: req.method, path: req.url, headers, setHost: false });
    let answered = false;
    let clientGone = false;
    // The host refused the upgrade with an ordinary response (a 404, a worker's 426).
    preq.on('response', (pres) => {
      answered = true;
      res.writeHead(pres.statusCode ?? 502, pres.statusMessage, responseHeaders(pres));
      pres.pipe(res);
      // The host died or dropped the stream mid-body: a truncated response is the honest signal.
      pres.on('aborted', () => res.destroy());
      pres.on('error', () => res.destroy());
    });
    preq.on('upgrade', (pres, hostSocket, hostHead) => {
      answered = true;
      spliceUpgrade(res, upgrade, pres, hostSocket, hostHead, this.tunnels);
    });
    preq.on('error', (err) => {
      // We cut it ourselves: the client went away.
      if (clientGone) return;
      if (answered) { res.destroy(); return; }
      answered = true;
      // The host died under the request (or its socket is gone): nothing reached the client yet.
      this.opts.log.warn('isolate host failed a request', { host: r.index, worker: r.worker, error: err });
      this.unavailable(res, r.worker, 'its isolate host went away');
    });
    // The client gave up: stop the host's work on it.
    res.on('close', () => { if (!res.writableFinished) { clientGone = true; preq.destroy(); } });
    req.on('error', () => { clientGone = true; preq.destroy(); });
    preq.end();
  }

  /**
   * Relays a request that is not an upgrade as frames on the host's one connection
   * (frame-relay.ts): the host neither parses nor writes HTTP for it, which took about a
   * third of a relayed request's CPU (docs/agent.md, "Throughput against workerd").
   */
  private relay(req: IncomingMessage, res: ServerResponse, r: HostRoute, t: HostTarget, headers: string[]): void {
    t.frames.relay(req, res, headers, (err) => {
      // The host died under the request (or its socket is gone): nothing reached the client yet.
      this.opts.log.warn('isolate host failed a request', { host: r.index, worker: r.worker, error: err });
      this.unavailable(res, r.worker, 'its isolate host went away');
      req.resume();
    });
  }
}
