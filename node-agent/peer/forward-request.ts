import { Agent as HttpAgent, request, type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { z } from 'zod';
import { spliceUpgrade } from '../../common/upgrade-splice.js';

// A client's request for a worker, forwarded to a member of the worker's shard
// (docs/shards.md) on that host's peer port: the request as the client sent it (method,
// headers and its framing, the body streamed as it arrives; an Upgrade too), plus what the
// first host already decided about it (x-edge-forward: the URL, the headers the worker
// sees, the client address, request.cf). The response comes back as the member wrote it,
// streamed, or a 101 and the connection spliced.
//
// Being on the peer port is the marker that it was forwarded (a client cannot reach that
// port without the region's peer token; the public front never reads x-edge-forward), and
// a forwarded request is always served where it lands: never forwarded twice.
//
// A member may refuse before it reads the body, with 503 or 421 and x-edge-shard (the
// worker is saturated there, or not served there): then, and when the member cannot be
// reached at all, the first host serves the request itself (a cold start beats an error).
//
// Serving it here must not run it twice. A request with a body, or with a method that is
// not safe (anything but GET, HEAD, OPTIONS), asks for 100 Continue, and the member runs
// nothing before it sent it (as actor calls do: protocol.ts): until the 100 arrives, any
// failure means the member did not take it, and after it, a failure is a 502, never a
// second run. A safe bodiless request (and a WebSocket handshake) skips that round trip:
// one whose connection fails before any answer may be run here again, as HTTP allows for
// safe methods (and as the front's proxy to its isolate hosts does). The member still
// acknowledges it at once with an unasked-for 100 Continue (HTTP lets a server send one;
// clients must read it), so a member that is stopped (SIGSTOP) or wedged is given up on
// after the same timeout instead of holding the request until it resumes.

export const SERVE_PATH = '/serve';
/** The first host's view of the request (base64url JSON, ForwardMetaSchema). */
export const FORWARD_META_HEADER = 'x-edge-forward';
/** On a member's refusal: why (`overloaded`, `not-here`). */
export const SHARD_REFUSAL_HEADER = 'x-edge-shard';
const TOKEN_HEADER = 'x-edge-peer-token';

export const ForwardMetaSchema = z.object({
  url: z.string().regex(/^https?:\/\//),
  headers: z.array(z.tuple([z.string(), z.string()])),
  clientAddress: z.string().optional(),
  cf: z.record(z.string(), z.string()),
});
export type ForwardMeta = z.infer<typeof ForwardMetaSchema>;

export const encodeForwardMeta = (m: ForwardMeta): string => Buffer.from(JSON.stringify(m), 'utf8').toString('base64url');
/** The meta of a forwarded request, or undefined when it is missing or malformed. */
export function decodeForwardMeta(h: string | string[] | undefined): ForwardMeta | undefined {
  if (typeof h !== 'string') return undefined;
  try {
    const r = ForwardMetaSchema.safeParse(JSON.parse(Buffer.from(h, 'base64url').toString('utf8')));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

export type FallbackReason = 'unreachable' | 'timeout' | 'overloaded' | 'not-here';
/** done: the member answered (the response is written or being written); else why the caller should serve it itself. */
export type ForwardOutcome = { done: true } | { done: false; reason: FallbackReason };

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']);

const pool = new HttpAgent({ keepAlive: true, maxSockets: 256, keepAliveMsecs: 10_000 });

export interface ForwardOptions {
  token: string;
  meta: ForwardMeta;
  /**
   * A connection not made within this long counts as unreachable, and a member that has
   * not said 100 Continue within it (stopped, stalled) as not taking the request (default 1 s).
   */
  connectTimeoutMs?: number;
  /** The client's connection of an Upgrade request (the response was assigned to it). */
  upgrade?: { socket: Socket; head: Buffer };
  /** Spliced WebSocket connections, so the front can close them when it stops. */
  tunnels?: Set<Socket>;
}

/** Methods HTTP calls safe: run again after a connection that failed before the answer. */
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

function requestHeaders(req: IncomingMessage, opts: ForwardOptions, expectContinue: boolean, hasBody: boolean): string[] {
  const out: string[] = [];
  const raw = req.rawHeaders;
  // A bodiless request that waits for 100 Continue goes chunked, its last (only) chunk sent
  // after the 100: the member cannot run it before then, even if the 100 came too late for us.
  const emptyChunked = expectContinue && !hasBody;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    if (k === TOKEN_HEADER || k === FORWARD_META_HEADER || k === 'expect') continue;
    if (emptyChunked && k === 'content-length') continue;
    if (HOP_BY_HOP.has(k) && !(opts.upgrade && (k === 'upgrade' || k === 'connection'))) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  out.push(TOKEN_HEADER, opts.token, FORWARD_META_HEADER, encodeForwardMeta(opts.meta));
  if (expectContinue) out.push('expect', '100-continue');
  if (emptyChunked) out.push('transfer-encoding', 'chunked');
  return out;
}

function responseHeaders(res: IncomingMessage): string[] {
  const out: string[] = [];
  const raw = res.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  return out;
}

const hasBodyOf = (req: IncomingMessage): boolean =>
  req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');

/**
 * Forwards a client's request to a shard member's peer port (`peerAddress`). Resolves once
 * the member has answered (done) or certainly has not taken the request (not done: the
 * caller serves it, its body still unread).
 */
export function forwardRequest(peerAddress: string, req: IncomingMessage, res: ServerResponse, opts: ForwardOptions): Promise<ForwardOutcome> {
  const target = new URL(SERVE_PATH, peerAddress);
  const hasBody = !opts.upgrade && hasBodyOf(req);
  /** The member says when it takes the request (100 Continue): until then nothing ran there. */
  const handshake = !opts.upgrade && (hasBody || !SAFE.has(req.method ?? 'GET'));
  return new Promise((resolve) => {
    let settled = false;
    /** The member sent 100 Continue: it took the request (the body follows, if any). */
    let bodySent = false;
    let clientGone = false;
    const settle = (o: ForwardOutcome) => { if (!settled) { settled = true; resolve(o); } };
    const preq: ClientRequest = request({
      host: target.hostname, port: target.port, method: req.method, path: SERVE_PATH,
      // An upgraded connection is handed over for good: not one of the pool's.
      agent: opts.upgrade ? false : pool,
      headers: requestHeaders(req, opts, handshake, hasBody),
      setHost: false,
    });
    const connectMs = opts.connectTimeoutMs ?? 1000;
    let connectTimer: NodeJS.Timeout | undefined;
    preq.on('socket', (s: Socket) => {
      if (!s.connecting) return;
      connectTimer = setTimeout(() => { if (!settled) { settle({ done: false, reason: 'timeout' }); preq.destroy(); } }, connectMs);
      s.once('connect', () => clearTimeout(connectTimer));
    });
    /** Given up on the member: the caller serves the request, and what happens to this one is nobody's business. */
    let abandoned = false;
    const fallBack = (reason: FallbackReason) => {
      clearTimeout(connectTimer);
      clearTimeout(continueTimer);
      abandoned = true;
      settle({ done: false, reason });
      preq.destroy();
    };
    let continueTimer: NodeJS.Timeout | undefined;
    /** A safe request is acknowledged by an early 100 Continue from the member (it asked for none). */
    let acked = false;
    if (!opts.upgrade) {
      continueTimer = setTimeout(() => { if (!settled && !bodySent && !acked) fallBack('timeout'); }, connectMs + (opts.connectTimeoutMs ?? 1000));
    }
    preq.on('continue', () => {
      clearTimeout(continueTimer);
      if (!handshake) { acked = true; return; }
      if (settled || bodySent) return;
      bodySent = true;
      if (hasBody) req.pipe(preq);
      else preq.end();
    });
    preq.on('response', (pres) => {
      clearTimeout(connectTimer);
      clearTimeout(continueTimer);
      if (abandoned) { pres.resume(); return; }
      const refusal = pres.headers[SHARD_REFUSAL_HEADER];
      if (!bodySent && (pres.statusCode === 503 || pres.statusCode === 421) && (refusal === 'overloaded' || refusal === 'not-here')) {
        pres.resume();
        fallBack(refusal);
        return;
      }
      settle({ done: true });
      res.writeHead(pres.statusCode ?? 502, pres.statusMessage, responseHeaders(pres));
      pres.pipe(res);
      // The member died or dropped the stream mid-body: a truncated response is the honest signal.
      pres.on('aborted', () => res.destroy());
      pres.on('error', () => res.destroy());
      // Answered before the client finished its body: the rest is nobody's.
      if (hasBody) res.on('finish', () => { if (!req.complete) req.socket.destroy(); });
    });
    preq.on('upgrade', (pres, peerSocket: Socket, peerHead: Buffer) => {
      clearTimeout(connectTimer);
      if (abandoned) { peerSocket.destroy(); return; }
      settle({ done: true });
      if (!opts.upgrade) { peerSocket.destroy(); res.destroy(); return; }
      spliceUpgrade(res, opts.upgrade, pres, peerSocket, peerHead, opts.tunnels);
    });
    preq.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(connectTimer);
      clearTimeout(continueTimer);
      if (abandoned || clientGone) return;
      if (settled) { res.destroy(); return; }
      // Not taken: the connection was refused, or the member never said 100 Continue; or a
      // safe request's connection failed before any answer.
      if (!handshake || !bodySent) {
        fallBack('unreachable');
        return;
      }
      settle({ done: true });
      if (!res.headersSent) {
        const body = `the shard member serving this worker went away mid-request: ${err.message}\n`;
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else {
        res.destroy();
      }
    });
    res.on('close', () => { if (settled && !abandoned && !res.writableFinished && !opts.upgrade) { clientGone = true; preq.destroy(); } });
    req.on('error', () => { if (settled && !abandoned) { clientGone = true; preq.destroy(); } });
    if (!handshake) preq.end();
    else preq.flushHeaders();
  });
}
