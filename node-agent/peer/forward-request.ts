import { Agent as HttpAgent, request, type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import * as z from 'zod';
import { spliceUpgrade } from '../../common/upgrade-splice.js';
import { hasRequestBody } from '../../common/http-message.js';
import { HEARTBEAT_HEADER, heartbeatFor } from './protocol.js';

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
// Serving it here must not run it twice. Every request (the bodiless GETs too) asks for 100
// Continue, and sends its body, or for a bodiless one its only (empty) chunk, only once the
// member said it: a member cannot run a request before it has all of it, so until the 100
// arrives any failure means the member did not take it and the request runs here. A safe
// GET sent whole would not do: to a stopped member (SIGSTOP) it waits in the kernel's
// buffer, and the member, resumed after we gave up on it and ran it here, would run it
// again (GETs that write are common: a counter's /inc). After the 100 the member has it:
// a failure is a 502 saying the outcome is unknown, never a second run here. While it
// runs, the member sends 102 Processing at once and then every so often (HEARTBEAT_HEADER),
// so a member that took the request and then stopped is given up on after `silenceMs` (its
// presence TTL plus a margin, as for actor calls) instead of holding the client until it
// resumes.
// A WebSocket handshake cannot wait for a last chunk (the connection is handed over at its
// headers): it is acknowledged by a 100 too, and given up on without one, so it may run a
// second time on a member that was stopped with it and then resumed (its 101 then goes to
// a closed connection).

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
   * not said 100 Continue within twice it since the forward began (stopped, stalled) as not
   * taking the request (default 1 s).
   */
  connectTimeoutMs?: number;
  /**
   * Once the member took the request (its 100 Continue), how long it may be silent (no 102
   * heartbeat, no answer) before the request fails with a 502: the member's presence TTL
   * plus SILENCE_MARGIN_MS. Until the response head only; undefined: no bound.
   */
  silenceMs?: number;
  /** The client's connection of an Upgrade request (the response was assigned to it). */
  upgrade?: { socket: Socket; head: Buffer };
  /** Spliced WebSocket connections, so the front can close them when it stops. */
  tunnels?: Set<Socket>;
}

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
  if (opts.silenceMs !== undefined) out.push(HEARTBEAT_HEADER, String(heartbeatFor(opts.silenceMs)));
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

/**
 * Forwards a client's request to a shard member's peer port (`peerAddress`). Resolves once
 * the member has answered (done) or certainly has not taken the request (not done: the
 * caller serves it, its body still unread).
 */
export function forwardRequest(peerAddress: string, req: IncomingMessage, res: ServerResponse, opts: ForwardOptions): Promise<ForwardOutcome> {
  const target = new URL(SERVE_PATH, peerAddress);
  const hasBody = !opts.upgrade && hasRequestBody(req);
  /** The member says when it takes the request (100 Continue): until then nothing ran there. */
  const handshake = !opts.upgrade;
  return new Promise((resolve) => {
    let settled = false;
    /** The member sent 100 Continue: it took the request (the body, or the last chunk, follows). */
    let taken = false;
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
    // Not taken within twice the connect timeout since it began (a stopped or wedged member):
    // given up on, and run here.
    const continueTimer = setTimeout(() => { if (!settled && !taken) fallBack('timeout'); }, 2 * connectMs);
    // Taken and then silent (no heartbeat): the member stopped or is wedged with it.
    // Armed by the member's first 102, which it sends right after its 100: a member of an
    // older version (a rolling update) sends none, and is waited for as before.
    const silenceMs = opts.silenceMs;
    let silent = false;
    let armed = false;
    let headIn = false;
    preq.on('information', (info: { statusCode: number }) => {
      if (info.statusCode !== 102 || armed || headIn || silenceMs === undefined) return;
      armed = true;
      preq.setTimeout(silenceMs, () => { silent = true; preq.destroy(new Error(`silent for ${silenceMs} ms`)); });
    });
    const headDone = (s: Socket | null) => { headIn = true; if (armed) s?.setTimeout(0); };
    preq.on('continue', () => {
      clearTimeout(continueTimer);
      if (settled || taken) return;
      taken = true;
      if (!handshake) return;
      if (hasBody) req.pipe(preq);
      else preq.end();
    });
    preq.on('response', (pres) => {
      clearTimeout(connectTimer);
      clearTimeout(continueTimer);
      headDone(pres.socket);
      if (abandoned) { pres.resume(); return; }
      const refusal = pres.headers[SHARD_REFUSAL_HEADER];
      if (!taken && (pres.statusCode === 503 || pres.statusCode === 421) && (refusal === 'overloaded' || refusal === 'not-here')) {
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
      clearTimeout(continueTimer);
      headDone(peerSocket);
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
      // Not taken: the connection was refused or failed, or the member never said 100 Continue.
      if (!taken) {
        fallBack(silent ? 'timeout' : 'unreachable');
        return;
      }
      settle({ done: true });
      if (!res.headersSent) {
        const body = `the shard member serving this worker took the request and then went away or stopped answering (${err.message}); it may or may not have run (outcome unknown)\n`;
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
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
