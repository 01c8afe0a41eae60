import { once } from 'node:events';
import { createServer, ServerResponse, type IncomingMessage, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../common/log.js';
import { errorMessage } from '../../common/log.js';
import { WebSocketServer, type WebSocket } from 'ws';
import type { DispatchRequest, DispatchResponse } from '../abi/bridge.js';
import { bridge, fromWebSocket, type HostSocket, type SocketRegistry } from '../sockets/sockets.js';
import type { AgentMetrics } from './metrics.js';
import type { WorkerHost } from './worker-host.js';
import { WorkerHostClosedError, WorkerOverloadedError } from './worker-host.js';
import { WorkerLimitError, WorkerScriptError, BundleError, type WorkerIsolate } from '../isolate/worker-isolate.js';
import { DEFAULT_SLOW_CLIENT_LIMITS, HttpError, RequestBody, type SlowClientLimits } from './request-body.js';
import { InFlight, stopAccepting } from './graceful.js';
import { clientOrigin, FORWARDING_HEADERS, GEO_HEADERS, TrustedProxies, type ForwardingHeaders } from './trusted-proxy.js';
import { FORWARD_META_HEADER, SHARD_REFUSAL_HEADER, decodeForwardMeta, forwardRequest, type ForwardMeta } from '../peer/forward-request.js';
import { askedHeartbeat, HEARTBEAT_HEADER, SILENCE_MARGIN_MS } from '../peer/protocol.js';
import type { LoadMeter, Shards } from './shard.js';
import { FrameServer } from './host-frames.js';

// The agent's public HTTP server: routes each request by Host and path to a worker,
// streams bodies in and out of the worker's isolate, and turns every failure into a
// response that says what happened without exposing the worker's internals.

export interface HttpFrontOptions {
  /** Finds the current version of the worker for a request; undefined = no route. */
  resolve(host: string, path: string): WorkerHost | undefined;
  log: Logger;
  metrics: AgentMetrics;
  /** Largest request body accepted (413 above). */
  maxBodyBytes: number;
  /** The agent's sockets: a worker's 101 response names the client end of its WebSocketPair here. */
  sockets: SocketRegistry;
  /** Bounds on clients that send their request slowly (DEFAULT_SLOW_CLIENT_LIMITS). */
  slowClients?: Partial<SlowClientLimits>;
  /** Peers whose CF-Connecting-IP / X-Forwarded-* headers are believed (default: none). */
  trustedProxies?: TrustedProxies;
  /** Told each request routed to a worker (the per-tenant usage the agent's cordon weighs). */
  onRequest?(worker: string): void;
  /** request.cf.colo: where the agent runs (its region's name; none: the field is left out). */
  colo?: string;
  /** Workers' shards (docs/shards.md): a request for a worker this host is not a member of is forwarded to one. */
  shards?: { shards: Shards; peerToken: string; meter: LoadMeter; connectTimeoutMs?: number };
  /** Told each request a worker served here, once its response ended (`edge logs --requests`). */
  onServed?(r: ServedRequest): void;
  /** Told each uncaught exception of a worker's code; answers it as the worker's author reads it (message, own frames). */
  onException?(worker: string, error: WorkerScriptError, ray: string): WorkerException;
  /**
   * A worker's uncaught exception is answered with its message and stack (an HTML page to
   * a browser) instead of a bare 500: `edge dev` only (`edge agent --dev-error-pages`),
   * never in a cluster, where the client is not the worker's author.
   */
  devErrorPages?: boolean;
  /** A host that routes to no worker here: why not, when some region serves it (`edge dev`'s agents: "not placed in this region"). */
  notHere?(host: string, path: string): string | undefined;
}

/** A request a worker served, as `edge logs --requests` prints it. */
export interface ServedRequest { worker: string; method: string; url: string; status: number; durationMs: number; cpuMs?: number; ray?: string }

/** An uncaught exception as its author reads it: the error's text and the worker's own stack frames. */
export interface WorkerException { message: string; stack: string }

const escapeHtml = (t: string) => t.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** `edge dev`'s error page (devErrorPages): what a browser shows for a worker's uncaught exception. */
function devErrorPage(worker: string, ray: string, e: WorkerException, method: string, url: string): string {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${escapeHtml(e.message.split('\n')[0]!)}</title>
<style>body{font:14px/1.5 system-ui,sans-serif;margin:2rem;color:#222}h1{font-size:1.3rem;color:#b00020}pre{background:#f6f6f6;padding:1rem;overflow:auto}small{color:#666}</style></head>
<body><h1>${escapeHtml(e.message)}</h1>
<p>worker <b>${escapeHtml(worker)}</b> threw an uncaught exception while handling <code>${escapeHtml(method)} ${escapeHtml(url)}</code></p>
<pre>${escapeHtml(e.stack || '(no stack frames in the worker\'s own code)')}</pre>
<p><small>ray ${escapeHtml(ray)} &middot; edge dev shows this page; in a cluster the client gets a plain 500. The same exception is in <code>edge logs ${escapeHtml(worker.slice(worker.indexOf('/') + 1))}</code>.</small></p>
</body></html>
`;
}

/** A request another host forwarded here (it arrived on the peer port): served here, never forwarded again. */
/** `beatMs`: the forwarding host's HEARTBEAT_HEADER (102 Processing until the answer's head). */
interface Forwarded { meta: ForwardMeta; expectContinue: boolean; beatMs?: number }

const beatOf = (req: IncomingMessage): { beatMs?: number } =>
  req.headers[HEARTBEAT_HEADER] === undefined ? {} : { beatMs: askedHeartbeat(req.headers[HEARTBEAT_HEADER]) };

/** The raw connection of an `Upgrade: websocket` request, for completing the handshake. */
interface Upgrade { socket: Socket; head: Buffer }

/**
 * Why a WebSocket handshake request is malformed (ws would refuse it the same way), or
 * undefined. The method is not checked: as on Workers, a non-GET upgrade reaches the
 * worker, which decides (acceptWebSocket completes it like a GET's).
 */
function handshakeProblem(req: IncomingMessage): string | undefined {
  // Node hands the connection over at the headers: a body would never reach the worker.
  if (Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined) return 'a WebSocket upgrade request cannot carry a body';
  const key = req.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !/^[+/0-9A-Za-z]{22}==$/.test(key)) return 'a WebSocket upgrade needs a valid Sec-WebSocket-Key header';
  const version = req.headers['sec-websocket-version'];
  if (version !== '13' && version !== '8') return 'a WebSocket upgrade needs Sec-WebSocket-Version: 13';
  return undefined;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer']);

const rayId = () => randomBytes(8).toString('hex');
/** A streamed request body the handler has not asked for is read from the client up to this much, then held. */
export const UNREAD_BODY_BYTES = 1024 * 1024;

/** Characters that would end or change a URL's authority if a Host header carried them. */
const NOT_A_HOST = /[/?#@\\\s]/;

/**
 * The request's URL, WHATWG-normalized (dot segments resolved, percent-encoding and host
 * canonical), built from the Host header and an origin-form target only: "//evil/x" is a
 * path on this host, never another host, and "/public/../admin" is "/admin" for the
 * router and the worker alike.
 */
export function requestUrl(proto: string, hostHeader: string | undefined, target: string): URL {
  const host = hostHeader ?? 'localhost';
  if (host === '' || NOT_A_HOST.test(host)) throw new HttpError(400, `Host header "${host}" is not a host`);
  if (!target.startsWith('/')) throw new HttpError(400, `request target "${target}" is not a path`);
  try {
    return new URL(`${proto}://${host}${target}`);
  } catch {
    throw new HttpError(400, `request target "${target}" with host "${host}" is not a valid URL`);
  }
}

/**
 * How long a streamed response's head waits for the body's first chunk. Within it, a body
 * that fails is answered 500; past it the head goes out alone (a stream that only later has
 * something to say, server-sent events, must not keep its client waiting for the head).
 */
export const FIRST_BYTE_HOLD_MS = 250;

/** The outcome of `p` if it settles within `ms` (rejecting if it rejects), else undefined. */
async function holdFor<T>(p: Promise<T>, ms: number): Promise<{ chunk: T } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p.then((chunk) => ({ chunk })), new Promise<undefined>((r) => { timer = setTimeout(r, ms, undefined); })]);
  } finally {
    clearTimeout(timer);
  }
}

/** Idle keep-alive time of a Unix-socket listener (an isolate host's, which only its front reaches). */
export const HOST_SOCKET_KEEPALIVE_MS = 120_000;

/** The response a body is pumped into: node's ServerResponse, or the frame relay's look-alike. */
export type PumpTarget = Pick<ServerResponse, 'write' | 'end' | 'writableFinished'> & NodeJS.EventEmitter;

/**
 * Pumps a streamed response body into `res`, one pull at a time, waiting for 'drain' when
 * the client reads slowly. `first` is the first pull, already started. The client going
 * away cancels the body (its source, an actor's stream through stub.fetch(), is told).
 * That is checked after every pull, not only before it: 'close' can come while a pull
 * waits, and a write refused after it would wait for a 'drain' or 'close' that never comes
 * again, so the body was never cancelled and an actor streaming it kept its input gate
 * closed for good. Rejects when the body fails.
 */
export async function pumpResponseBody(res: PumpTarget, body: { pull(): Promise<Uint8Array | null>; cancel(reason: string): void }, discard: boolean, first: Promise<Uint8Array | null>): Promise<void> {
  let clientGone = false;
  const onClose = () => { if (!res.writableFinished) clientGone = true; };
  res.once('close', onClose);
  let next: Promise<Uint8Array | null> | undefined = first;
  try {
    for (;;) {
      if (clientGone) { body.cancel('client closed the connection'); return; }
      const chunk = await (next ?? body.pull());
      next = undefined;
      if (chunk === null) break;
      if (discard) continue;
      if (clientGone) { body.cancel('client closed the connection'); return; }
      if (!res.write(chunk)) {
        // The listener of whichever did not happen goes too: a long response waits for
        // drain many times, and would pile up a listener per wait.
        const ac = new AbortController();
        try {
          await Promise.race([once(res, 'drain', { signal: ac.signal }), once(res, 'close', { signal: ac.signal })]);
        } finally {
          ac.abort();
        }
      }
    }
    res.end();
  } finally {
    res.off('close', onClose);
  }
}

function plain(res: ServerResponse, status: number, body: string, extra: Record<string, string> = {}): void {
  if (res.headersSent) { res.destroy(); return; }
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

export class HttpFront {
  readonly server: Server;
  private readonly sockets = new Set<Socket>();
  /** Completes WebSocket handshakes the worker accepted (its messages are bounded by the registry's limit). */
  private readonly wss: WebSocketServer;
  private readonly webSockets = new Set<WebSocket>();
  /** The handshake being completed (handleUpgrade calls back synchronously): the worker's headers and subprotocol. */
  private upgrading: { req: IncomingMessage; headers: string[]; protocol: string | undefined } | undefined;
  private readonly limits: SlowClientLimits;
  private readonly trusted: TrustedProxies;
  /** Request bodies still arriving: checked against the slow-client bounds by one timer. */
  private readonly bodies = new Set<RequestBody>();
  private readonly bodyTimer: NodeJS.Timeout;
  /** Requests being answered: a drain waits for them before it closes their connections. */
  private readonly inflight = new InFlight();
  /** WebSocket connections spliced to a shard member. */
  private readonly tunnels = new Set<Socket>();
  /** An isolate host's listener for the front's framed requests (listenFrames). */
  private frames: FrameServer | undefined;

  constructor(private readonly opts: HttpFrontOptions) {
    this.limits = { ...DEFAULT_SLOW_CLIENT_LIMITS, ...opts.slowClients };
    this.trusted = opts.trustedProxies ?? new TrustedProxies();
    this.server = createServer({
      keepAliveTimeout: 5000,
      // Node checks headersTimeout (and requestTimeout) only every connectionsCheckingInterval
      // (30 s by default): a connection that trickles its headers, or sends nothing at all,
      // is closed with 408 within a second of the bound instead.
      headersTimeout: this.limits.headersTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, this.limits.headersTimeoutMs),
      // Bodies are bounded by RequestBody (idle time and minimum rate), not by a total time.
      requestTimeout: 0,
    }, (req, res) => {
      this.inflight.track(res);
      void this.handle(req, res);
    });
    const sweepMs = Math.max(50, Math.min(1000, this.limits.bodyIdleTimeoutMs / 4));
    let lastSweep = performance.now();
    this.bodyTimer = setInterval(() => {
      const now = performance.now();
      // A sweep this late means the agent was not running (SIGSTOP, a blocked loop): timers
      // run before the sockets are read, so without this the client would be blamed.
      const stall = now - lastSweep - sweepMs;
      lastSweep = now;
      for (const b of this.bodies) {
        if (stall > sweepMs) b.stalled(stall);
        b.check(now);
      }
    }, sweepMs);
    this.bodyTimer.unref();
    this.server.on('connection', (s: Socket) => { this.sockets.add(s); s.once('close', () => this.sockets.delete(s)); });
    this.wss = new WebSocketServer({
      noServer: true, clientTracking: false, perMessageDeflate: false, maxPayload: opts.sockets.maxMessageBytes,
      // Workers: the worker picks the subprotocol by setting Sec-WebSocket-Protocol on its 101.
      handleProtocols: (offered, req) => {
        const chosen = this.upgrading?.req === req ? this.upgrading.protocol : undefined;
        return chosen !== undefined && offered.has(chosen) ? chosen : false;
      },
    });
    this.wss.on('headers', (headers, req) => {
      if (this.upgrading?.req === req) headers.push(...this.upgrading.headers);
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.upgrade(req, socket, head));
    // Malformed HTTP never reaches a worker: answer 400 and close, as the parser wants.
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      // A client hanging up mid-request is routine (load generators do it at the end).
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') { socket.destroy(); return; }
      const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
      if (timeout) opts.log.info('closed a connection that did not send its request headers in time', { timeoutMs: this.limits.headersTimeoutMs });
      else opts.log.warn('malformed HTTP request', { code: err.code, error: err });
      if (socket.writable && !('_httpMessage' in socket && socket._httpMessage)) {
        const status = timeout ? '408 Request Timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
        const body = timeout ? 'request timeout\n' : 'bad request\n';
        socket.end(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      } else {
        socket.destroy();
      }
    });
  }

  /** Turns shard forwarding on (the agent does once its ring exists: NATS mode). */
  enableShards(shards: NonNullable<HttpFrontOptions['shards']>): void { this.opts.shards = shards; }

  /** Listens on TCP, or on a Unix socket (`{ path }`, port 0 returned). */
  async listen(port: number | { path: string }, host = '127.0.0.1'): Promise<number> {
    if (typeof port === 'object') {
      // Behind the agent's front (docs/isolate-hosts.md) the only client is the front, which
      // sends WebSocket upgrades here, each on a connection of its own (everything else
      // comes as frames: listenFrames). A long idle bound keeps this side from closing a
      // connection the front is writing a request on.
      this.server.keepAliveTimeout = HOST_SOCKET_KEEPALIVE_MS;
      this.server.listen(port.path);
      await once(this.server, 'listening');
      return 0;
    }
    this.server.listen(port, host);
    await once(this.server, 'listening');
    const addr = this.server.address();
    if (addr === null || typeof addr === 'string') throw new Error('HTTP front has no TCP address');
    return addr.port;
  }

  /**
   * An isolate host's second listener (serving/host-frames.ts): the agent's front relays
   * ordinary requests here as frames; upgrades still come to the HTTP listener.
   */
  async listenFrames(path: string): Promise<void> {
    const frames = new FrameServer((req, res) => {
      this.inflight.track(res);
      void this.handle(req, res);
    }, this.opts.log);
    await frames.listen(path);
    this.frames = frames;
  }

  /** Draining: every response from now on closes its connection (the listener stays open). */
  drain(): void { this.inflight.drain(); }

  /** Requests being answered now. */
  get inFlight(): number { return this.inflight.count; }

  /**
   * Stops listening, lets requests in flight finish for at most `graceMs`, then closes
   * every connection and WebSocket (1001). Returns how many requests were cut at the bound.
   */
  async close(graceMs = 0): Promise<number> {
    clearInterval(this.bodyTimer);
    this.frames?.server.close();
    const { cut, closed } = await stopAccepting(this.server, this.inflight, graceMs);
    this.frames?.close();
    for (const ws of this.webSockets) ws.close(1001, 'the edge agent is shutting down');
    for (const t of this.tunnels) t.destroy();
    for (const s of this.sockets) s.destroy();
    await closed;
    return cut;
  }

  /**
   * A request another host forwarded here as a shard member of its worker (the peer port's
   * SERVE_PATH, authenticated by the peer token): its meta says what the first host made of it.
   */
  serveForwarded(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void {
    const meta = decodeForwardMeta(req.headers[FORWARD_META_HEADER]);
    if (!meta) { plain(res, 400, 'malformed forwarded request\n'); req.resume(); return; }
    this.inflight.track(res);
    void this.handle(req, res, undefined, { meta, expectContinue, ...beatOf(req) });
  }

  /** A WebSocket upgrade another host forwarded here (see serveForwarded). */
  serveForwardedUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const meta = decodeForwardMeta(req.headers[FORWARD_META_HEADER]);
    if (!meta) { socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n'); return; }
    this.upgrade(req, socket, head, { meta, expectContinue: false, ...beatOf(req) });
  }

  /**
   * A request with an Upgrade header. A WebSocket handshake is routed and dispatched like
   * any request; when the worker answers 101 with a WebSocket, the handshake is completed
   * and the connection bridged to the client end of the worker's pair. Any other answer
   * (or any other kind of upgrade) is written as a plain response and the connection closed.
   */
  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer, fwd?: Forwarded): void {
    socket.on('error', () => { /* the connection is closed; whoever uses it sees that */ });
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    res.once('finish', () => { res.detachSocket(socket); socket.end(); });
    const webSocket = (req.headers.upgrade ?? '').toLowerCase() === 'websocket';
    const problem = webSocket ? handshakeProblem(req) : undefined;
    if (problem) {
      this.opts.metrics.observeRequest('', 400, undefined);
      plain(res, 400, `${problem}\n`);
      return;
    }
    void this.handle(req, res, webSocket ? { socket, head } : undefined, fwd);
  }

  /** Completes the handshake of an upgrade the worker accepted, and joins the connection to the worker's socket. */
  private acceptWebSocket(req: IncomingMessage, res: ServerResponse, up: Upgrade, socket: HostSocket, response: DispatchResponse): void {
    res.detachSocket(up.socket);
    const headers: string[] = [];
    let protocol: string | undefined;
    for (const [k, v] of response.headers) {
      if (k === 'sec-websocket-protocol') protocol = v;
      else if (!HOP_BY_HOP.has(k) && k !== 'content-length' && !k.startsWith('sec-websocket-')) headers.push(`${k}: ${v}`);
    }
    let accepted = false;
    this.upgrading = { req, headers, protocol };
    // ws completes only GET handshakes (RFC 6455 4.1); the worker accepted this one.
    const method = req.method;
    req.method = 'GET';
    try {
      this.wss.handleUpgrade(req, up.socket, up.head, (ws) => {
        accepted = true;
        this.webSockets.add(ws);
        ws.once('close', () => this.webSockets.delete(ws));
        bridge(socket, fromWebSocket(ws));
      });
    } finally {
      this.upgrading = undefined;
      req.method = method;
    }
    if (!accepted) socket.close(1006, 'the WebSocket handshake with the client failed');
  }

  private async handle(req: IncomingMessage, res: ServerResponse, upgrade?: Upgrade, fwd?: Forwarded): Promise<void> {
    const started = performance.now();
    // One pass over the raw headers (req.headers would build a second object per request).
    const raw = req.rawHeaders;
    const headers: [string, string][] = [];
    let hostHeader: string | undefined;
    let hosts = 0;
    let contentLength: string | undefined;
    let chunked = false;
    const forwarded: ForwardingHeaders = {};
    let sawForwarding = false;
    for (let i = 0; i < raw.length; i += 2) {
      const k = raw[i]!.toLowerCase();
      const v = raw[i + 1]!;
      if (k === 'host') { hostHeader = v; hosts += 1; }
      else if (k === 'content-length') contentLength = v;
      else if (k === 'transfer-encoding') chunked = true;
      // The peer port's own headers: never the worker's to see (nor a client's to set).
      else if (k === FORWARD_META_HEADER || k === 'x-edge-peer-token') continue;
      else if (FORWARDING_HEADERS.has(k)) {
        // Set below from the connection (or, from a trusted proxy, from these).
        sawForwarding = true;
        if (k === 'cf-connecting-ip' || k === 'x-forwarded-for' || k === 'x-forwarded-proto') forwarded[k] = v;
        continue;
      }
      // A WebSocket handshake shows the worker its Upgrade and Connection headers, as on Workers.
      if (!HOP_BY_HOP.has(k) || (upgrade !== undefined && (k === 'upgrade' || k === 'connection'))) headers.push([k, v]);
    }
    const peer = req.socket.remoteAddress;
    const origin = clientOrigin(peer, forwarded, this.trusted);
    // request.cf (RequestCf in abi/bridge.ts): no tlsVersion, TLS ends before the agent.
    const cf: Record<string, string> = { httpProtocol: `HTTP/${req.httpVersion}` };
    if (this.opts.colo !== undefined) cf.colo = this.opts.colo;
    if (sawForwarding && this.trusted.trusts(peer)) {
      // A trusted proxy's own headers reach the worker as it sent them (the address is CF-Connecting-IP).
      for (let i = 0; i < raw.length; i += 2) {
        const k = raw[i]!.toLowerCase();
        if (FORWARDING_HEADERS.has(k) && k !== 'cf-connecting-ip' && k !== 'x-forwarded-for' && k !== 'x-forwarded-proto') {
          headers.push([k, raw[i + 1]!]);
          const field = GEO_HEADERS.get(k);
          if (field !== undefined) cf[field] = raw[i + 1]!;
        }
      }
    }
    if (origin.forwardedFor !== undefined) headers.push(['x-forwarded-for', origin.forwardedFor]);
    headers.push(['x-forwarded-proto', origin.proto]);
    // The one URL: routed on, and given to the worker as request.url.
    let url: URL;
    try {
      if (hosts > 1) throw new HttpError(400, 'a request must carry one Host header');
      url = requestUrl(origin.proto, hostHeader, req.url ?? '/');
    } catch (err) {
      this.opts.metrics.observeRequest('', 400, undefined);
      plain(res, 400, `${errorMessage(err)}\n`, { connection: 'close' });
      req.resume();
      return;
    }
    let clientAddress = origin.address;
    let dheaders = headers;
    let dcf = cf;
    if (fwd) {
      // What the first host made of the client's request: it was the one the client reached.
      url = new URL(fwd.meta.url);
      dheaders = fwd.meta.headers;
      dcf = fwd.meta.cf;
      clientAddress = fwd.meta.clientAddress;
    }
    const hostname = url.hostname;
    const path = url.pathname;
    let worker = this.opts.resolve(hostname, path);
    if (fwd && (!worker || worker.saturated || this.inflight.isDraining)) {
      // Refused before its body was read: the first host serves it itself. A draining host
      // takes no new work from its peers (they drop it from the ring once they see it
      // draining; until then, and until its listener closes, it says not-here).
      const why = worker && !this.inflight.isDraining ? 'overloaded' : 'not-here';
      plain(res, why === 'overloaded' ? 503 : 421, `this host does not take this request now (${why})\n`, { [SHARD_REFUSAL_HEADER]: why });
      if (!fwd.expectContinue) req.resume();
      return;
    }
    // Taken: said at once, asked for or not, then heartbeats until the answer's head
    // (forward-request.ts: a stopped member is given up on either way).
    if (fwd) {
      res.writeContinue();
      if (fwd.beatMs !== undefined) {
        // One at once: the sender bounds our silence only once it saw we send them.
        res.writeProcessing();
        // An accepted WebSocket detaches the response from its socket: no more beats then.
        const beat = setInterval(() => { if (res.headersSent || res.destroyed || !res.socket) clearInterval(beat); else res.writeProcessing(); }, fwd.beatMs);
        res.once('close', () => clearInterval(beat));
      }
    }
    if (!worker) {
      this.opts.metrics.observeRequest('', 404, undefined);
      const elsewhere = this.opts.notHere?.(hostname, path);
      plain(res, 404, elsewhere !== undefined ? `${elsewhere}\n` : `no worker is routed for host "${hostname}" and path "${path}"\n`);
      req.resume();
      return;
    }
    const name = worker.def.name;
    const sh = this.opts.shards;
    if (sh && !fwd) {
      const route = sh.shards.route(name);
      if (!route.local) {
        const meta: ForwardMeta = { url: url.href, headers, cf, ...(origin.address !== undefined ? { clientAddress: origin.address } : {}) };
        // The first member that answers; one unreachable or refusing, the next; none: here.
        for (const member of route.members.slice(0, 2)) {
          if (!member.peerAddress) continue;
          const out = await forwardRequest(member.peerAddress, req, res, {
            token: sh.peerToken, meta, tunnels: this.tunnels, silenceMs: member.ttlMs + SILENCE_MARGIN_MS,
            ...(upgrade ? { upgrade } : {}), ...(sh.connectTimeoutMs !== undefined ? { connectTimeoutMs: sh.connectTimeoutMs } : {}),
          });
          if (out.done) {
            // Counted in edge_requests_total where it ran, once.
            this.opts.metrics.shardForwards.inc();
            return;
          }
          this.opts.metrics.shardFallbacks.inc({ reason: out.reason });
          this.opts.log.info('shard member did not take a request; trying the next or serving it here', { worker: name, member: member.agent, reason: out.reason });
        }
      }
    }
    if (fwd) this.opts.metrics.shardForwardedIn.inc();
    this.opts.onRequest?.(name);
    const served: ServedRequest = { worker: name, method: req.method ?? 'GET', url: url.href, status: 0, durationMs: 0 };
    const finish = (status: number) => {
      served.durationMs = performance.now() - started;
      served.status = status;
      this.opts.metrics.observeRequest(name, status, served.durationMs / 1000);
    };
    try {
      const declared = contentLength === undefined ? undefined : Number(contentLength);
      if (declared !== undefined && declared > this.opts.maxBodyBytes) {
        throw new HttpError(413, `request body of ${declared} bytes is over the ${this.opts.maxBodyBytes}-byte limit`);
      }
      const hasBody = (declared !== undefined && declared > 0) || chunked;
      // No isolate is taken before the body's head is here (or all of it, when it is small).
      let body: RequestBody | undefined;
      let head: { whole: boolean; bytes: Buffer } | undefined;
      if (hasBody) {
        body = new RequestBody(req, this.limits, this.opts.maxBodyBytes, (b) => this.bodies.delete(b));
        this.bodies.add(body);
        head = await body.head();
      }
      const streamBody = head !== undefined && !head.whole;
      const inline = head?.whole ? head.bytes : null;

      const dreq: DispatchRequest = {
        // Serialized by the WHATWG parser here, so the shim can take it as it is instead of
        // calling back to the host to parse it on every request.
        url: url.href,
        method: req.method ?? 'GET',
        headers: dheaders,
        body: streamBody ? 'stream' : inline && inline.length > 0 ? inline : null,
        clientAddress,
        cf: dcf,
      };

      // A version swap can close the host between routing and acquiring: retry once on
      // the version now routed, so no request fails because of a deploy.
      let iso: WorkerIsolate;
      const start = { cold: false };
      try {
        // Most requests find an idle isolate: take it without a trip through a promise.
        iso = worker.tryAcquire() ?? await worker.acquire(start);
      } catch (err) {
        if (!(err instanceof WorkerHostClosedError)) throw err;
        worker = this.opts.resolve(hostname, path);
        if (!worker) throw new HttpError(404, `no worker is routed for host "${hostname}" and path "${path}"`);
        iso = await worker.acquire(start);
      }
      this.opts.metrics.observeStart(name, start.cold);
      const host = worker;
      const meter = sh?.meter;
      meter?.begin(name);
      let id: number | undefined;
      try {
        const call = iso.begin(dreq);
        id = call.id;
        if (streamBody) this.pumpRequestBody(body!, head!.bytes, iso, call.id);
        // The client hanging up while the worker works aborts request.signal (and the
        // fetch() calls made with it), as on Workers.
        const onGone = () => { if (!res.writableFinished) iso.cancel(call.id, 'the client closed the connection'); };
        res.once('close', onGone);
        let response: DispatchResponse;
        /** A streamed body's first pull: its outcome, when it came within FIRST_BYTE_HOLD_MS. */
        let first: Promise<Uint8Array | null> | undefined;
        let firstChunk: { chunk: Uint8Array | null } | undefined;
        try {
          response = await call.response.catch((err: unknown) => {
            throw body?.failure ?? err;
          });
          if (response.body === 'stream' && response.webSocket === undefined) {
            // The head waits for the body's first chunk (for a while): a stream that fails
            // before its first byte is then still answered with a 500, not a dropped connection.
            first = iso.pullBody(call.id);
            firstChunk = await holdFor(first, FIRST_BYTE_HOLD_MS);
          }
        } finally {
          res.off('close', onGone);
        }
        if (streamBody && body!.failure) throw body!.failure;
        if (response.webSocket !== undefined) {
          const socket = this.opts.sockets.get(response.webSocket);
          if (upgrade && socket) {
            this.acceptWebSocket(req, res, upgrade, socket, response);
            finish(101);
            return;
          }
          socket?.close(1011, 'the request was not a WebSocket upgrade');
          throw new WorkerScriptError(name, `worker ${name} answered 101 with a WebSocket to a request that is not a WebSocket upgrade`);
        }
        const outHeaders: string[] = [];
        for (const [k, v] of response.headers) {
          if (!HOP_BY_HOP.has(k) && k !== 'content-length') outHeaders.push(k, v);
        }
        const noBody = req.method === 'HEAD' || response.status === 204 || response.status === 304;
        if (response.body === null) outHeaders.push('content-length', '0');
        else if (response.body !== 'stream') outHeaders.push('content-length', String(response.body.byteLength));
        res.writeHead(response.status, response.statusText || undefined, outHeaders);
        finish(response.status);
        if (response.body === 'stream') {
          // writeHead only buffers the head: with no first chunk yet it must go out alone
          // now, or a body that fails later leaves the client with no response at all.
          if (firstChunk === undefined) res.flushHeaders();
          await this.pumpResponseBody(res, iso, call.id, noBody, firstChunk !== undefined ? Promise.resolve(firstChunk.chunk) : first!);
        } else if (response.body !== null && !noBody) {
          res.end(Buffer.from(response.body));
        } else {
          res.end();
        }
      } finally {
        meter?.end(name);
        if (id !== undefined) {
          const cpu = iso.cpuMsOf(id);
          if (cpu !== undefined) served.cpuMs = cpu;
          if (!iso.finishNow(id)) await iso.finish(id);
        }
        host.release(iso);
      }
    } catch (err) {
      served.ray = this.fail(res, name, err, finish, served);
      req.resume();
    }
    if (served.status !== 0) this.opts.onServed?.(served);
  }

  /**
   * Feeds the rest of a streamed request body into the isolate (after its head). A body
   * that fails (over the size limit, too slow, the client gone) errors the worker's
   * stream, and the request is answered with the body's failure (unless the worker
   * already answered without reading it).
   */
  private pumpRequestBody(body: RequestBody, headBytes: Buffer, iso: WorkerIsolate, id: number): void {
    // Paced by the handler's reads (its body stream's pull(): WorkerIsolate.bodyWanted):
    // past UNREAD_BODY_BYTES it has not asked for, the client is not read, so a handler
    // that reads slowly (an actor it streams the body to, a slow upstream) does not fill
    // its isolate's heap with the client's body.
    let unread = headBytes.length;
    iso.pushBody(id, headBytes);
    void (async () => {
      while (await iso.bodyWanted(id)) { unread = 0; body.release(); }
    })();
    body.forward((chunk) => {
      iso.pushBody(id, chunk);
      if (chunk === null) return;
      unread += chunk.length;
      if (unread >= UNREAD_BODY_BYTES) body.hold();
    }, (err) => iso.cancel(id, err.message));
  }

  /**
   * Streams the response body after its head (pumpResponseBody). A body that fails now
   * ends the response without its last chunk (no terminating zero-length chunk): the client
   * sees a truncated transfer, never a clean end.
   */
  private async pumpResponseBody(res: ServerResponse, iso: WorkerIsolate, id: number, discard: boolean, first: Promise<Uint8Array | null>): Promise<void> {
    try {
      await pumpResponseBody(res, { pull: () => iso.pullBody(id), cancel: (reason) => iso.cancel(id, reason) }, discard, first);
    } catch (err) {
      // Headers are gone already: the only honest signal left is a truncated response.
      this.opts.log.warn('response body stream failed', { worker: iso.def.name, error: err });
      res.destroy();
    }
  }

  /** Answers a request that failed; returns the ray id the client was given. */
  private fail(res: ServerResponse, worker: string, err: unknown, finish: (status: number) => void, served: ServedRequest): string {
    const ray = rayId();
    let status = 500;
    let body: string;
    const extra: Record<string, string> = { 'x-edge-ray': ray };
    if (err instanceof HttpError) {
      status = err.status;
      body = `${err.message}\n`;
      // The rest of an oversized or stalled body is never read: the connection cannot be reused.
      if (status === 413 || status === 408 || status === 400) extra.connection = 'close';
      if (status === 408) this.opts.log.info('request body too slow', { worker, reason: err.message, ray });
    } else if (err instanceof WorkerOverloadedError) {
      status = 503;
      body = `${err.message} (ray ${ray})\n`;
      extra['retry-after'] = '1';
      this.opts.log.warn('worker overloaded', { worker, ray });
    } else if (err instanceof WorkerLimitError) {
      status = err.reason === 'wall' ? 504 : 503;
      body = `${err.message}; the isolate was replaced (ray ${ray})\n`;
      this.opts.log.warn('worker exceeded a limit', { worker, reason: err.reason, ray });
    } else if (err instanceof BundleError) {
      status = 503;
      body = `worker ${worker} failed to load (ray ${ray})\n`;
      this.opts.log.error('worker failed to load', { worker, error: err, ray });
    } else if (err instanceof WorkerScriptError) {
      body = `worker ${worker} threw an exception (ray ${ray})\n`;
      this.opts.log.error('worker threw an exception', { worker, error: err, ray });
      const e = this.opts.onException?.(worker, err, ray);
      if (this.opts.devErrorPages && !res.headersSent) {
        const shown = e ?? { message: err.message, stack: '' };
        finish(status);
        if (/\btext\/html\b/.test(String(res.req.headers.accept ?? ''))) {
          res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'x-edge-ray': ray, 'cache-control': 'no-store' });
          res.end(devErrorPage(worker, ray, shown, served.method, served.url));
        } else {
          plain(res, status, `${body}${shown.message}\n${shown.stack ? `${shown.stack}\n` : ''}`, extra);
        }
        return ray;
      }
    } else {
      body = `internal error in the edge agent (ray ${ray})\n`;
      this.opts.log.error('agent error while handling a request', { worker, error: err, ray });
    }
    finish(status);
    plain(res, status, body, extra);
    return ray;
  }
}
